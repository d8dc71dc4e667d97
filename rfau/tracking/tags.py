"""Every MLflow tag key rfau writes or reads: one place, so the registry, the batch and the audit
cannot drift apart on a spelling (torch- and mlflow-free)."""

from __future__ import annotations

PREFIX = "rfau."  # every key below; run params and metrics logged by rfau carry it too


class VersionTags:
    """The ``rfau.*`` tags of a registered model version."""

    WEIGHTS = "rfau.weights_sha256"
    PARENT = "rfau.parent_weights_sha256"
    FORGET = "rfau.forget_sha256"
    SOURCE = "rfau.source_sha256"  # what an imported bootstrap version was imported from
    REQUEST_IDS = "rfau.request_ids"
    METHOD = "rfau.method"
    REGIME = "rfau.regime"  # "none": the bootstrap original
    GATES_PASSED = "rfau.gates_passed"  # "true" / "false": the verdict computed at registration
    GATE_FAILURES = "rfau.gate_failures"  # why, or "none"
    BATCH_KEY = "rfau.batch_key"  # weights + forget set: registering the same batch again finds it
    BATCH_ID = "rfau.batch_id"  # the batch that created it (not `rfau register`)
    KFP_RUN_ID = "rfau.kfp_run_id"
    RUN_ID = "rfau.run_id"  # the MLflow run that logged it
    LEDGER_SEQ = "rfau.ledger_seq"  # the anchors: its ledger record's seq and hash
    LEDGER_HASH = "rfau.ledger_hash"
    ABANDONED = "rfau.abandoned"  # its batch failed: why
    ROLLED_BACK = "rfau.rolled_back"
    # the deletion frontier: a JSON list of the requests whose data this version no longer holds
    # (its base's frontier plus its own requests when it passed its gates); never truncated
    FRONTIER = "rfau.frontier"
    BASE_VERSION = "rfau.base_version"  # the version a batch unlearned it from
    MAX_VALUE = 100_000  # MLflow's limit for a model-version tag value


class RunTags:
    """The ``rfau.*`` tags of an MLflow run (a rung of the escalation ladder)."""

    FAILED_GATES = "rfau.failed_gates"
    WHY = "rfau.why"


def tag_key(name: str) -> str:
    """``name`` as a tag key: ``abandoned`` -> ``rfau.abandoned``; a full key stays as it is."""
    return name if name.startswith(PREFIX) else PREFIX + name
