"""Registering a model version: its weights and served model logged, its lineage tags and the
verdict of its gates set at creation, and the ``champion`` alias moved only when every gate
passed. The verdict is the one evaluate computed (``rfau.gates.check_gates``): registering
records it and never judges the model again.

A batch is identified by the new weights' sha256 and the forget set's hash: registering it
again returns the same version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rfau.errors import RfauError
from rfau.models.card import WEIGHTS, read_card
from rfau.records import Evaluation, GateReport, Registration, UnlearnInfo
from rfau.tracking.registry import (
    CANDIDATE,
    CHAMPION,
    Registry,
    frontier_of,
    frontier_value,
    mlflow_module,
    prefixed_numbers,
    service_errors,
    tag_value,
)
from rfau.tracking.served_model import log_served_model
from rfau.tracking.tags import VersionTags, tag_key


def batch_key(model_dir: Path) -> str:
    card = read_card(model_dir)
    forget = card.lineage.get("forget_sha256", "")
    return hashlib.sha256(f"{card.weights_sha256}:{forget}".encode()).hexdigest()[:32]


def register(
    reg: Registry,
    model_dir: str | Path,
    evaluation: Evaluation,
    report: GateReport,
    tags: dict[str, str] | None = None,
    promote: bool = True,
) -> Registration:
    """Register a model as a new version of ``reg``'s model, with ``evaluation`` (the model on
    its split) and ``report``, the verdict of its gates on that evaluation; it becomes champion
    when the report passed. ``GateReport.original()``: an original model (nothing forgotten, no
    gates); it becomes champion only where the registry has none. ``promote=False``: leave the
    champion alias alone (a deletion batch moves it only after its ledger record exists, see
    ``rfau.batch.register``). ``tags``: the batch that registers it (``rfau.``-prefixed version
    tags, set at creation).

    The version is created with its tags in one call; registering the same model again completes
    the tags of a version whose tagging was interrupted and returns it.

    Everything is validated before the registry changes; a failure after the version is created
    deletes it again, so no half-registered version remains."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)  # validates the folder
    if not (model_dir / WEIGHTS).is_file():
        raise RfauError(f"cannot register: {model_dir / WEIGHTS} is missing")
    if evaluation.model_weights_sha256 and evaluation.model_weights_sha256 != card.weights_sha256:
        raise RfauError(f"the evaluation is of other weights than {model_dir}")
    bootstrap = report.regime == "none"
    if not bootstrap and report.regime != evaluation.regime:
        raise RfauError(
            f"the gate verdict is for a {report.regime!r} split, "
            f"the evaluation for a {evaluation.regime!r} one"
        )
    unlearned = model_dir / "unlearn.json"
    info = UnlearnInfo.read(unlearned) if unlearned.exists() else None
    passed, results = report.passed, report.gates

    client, name = reg.client, reg.name
    key = batch_key(model_dir)
    version_tags = {
        VersionTags.BATCH_KEY: key,
        VersionTags.WEIGHTS: card.weights_sha256,
        VersionTags.FORGET: card.lineage.get("forget_sha256", ""),
        VersionTags.PARENT: card.lineage.get("parent_weights_sha256", ""),
        VersionTags.REQUEST_IDS: ",".join(card.lineage.get("request_ids", [])),
        VersionTags.METHOD: card.lineage.get("method", card.lineage.get("kind", "")),
        VersionTags.REGIME: report.regime,
        **{tag_key(k): v for k, v in (tags or {}).items()},  # on the version from its creation
        VersionTags.GATES_PASSED: str(passed).lower(),
        VersionTags.GATE_FAILURES: "; ".join(
            f"{r.name}={r.value} > {r.bound} ({r.detail})" for r in report.failures
        )
        or "none",
    }
    if not bootstrap and VersionTags.FRONTIER not in version_tags:
        version_tags[VersionTags.FRONTIER] = _frontier_for(reg, card, version_tags, passed)
    elif bootstrap:
        version_tags.setdefault(VersionTags.FRONTIER, "[]")
    existing = reg.find_version(key)
    if existing is not None:
        if VersionTags.FRONTIER in existing.tags:  # requests added to it since are kept
            had = frontier_of({int(existing.version): dict(existing.tags)}, int(existing.version))
            now = set(json.loads(version_tags[VersionTags.FRONTIER]))
            version_tags[VersionTags.FRONTIER] = frontier_value(had | now)
        for k, v in version_tags.items():  # a registration interrupted while tagging is completed here
            if existing.tags.get(k) != tag_value(k, v):
                client.set_model_version_tag(name, existing.version, k, tag_value(k, v))
        if VersionTags.ABANDONED in existing.tags:  # the same weights, registered again by a live batch
            client.delete_model_version_tag(name, existing.version, VersionTags.ABANDONED)
        champ = reg.alias_version(CHAMPION)
        return Registration(
            model=name,
            version=int(existing.version),
            new=False,
            champion=int(champ.version) if champ else None,
            gates_passed=passed,
            gates=results,
        )

    mlflow = mlflow_module()
    version = None
    try:
        with reg.run("register") as run:
            mlflow.log_params(
                {
                    VersionTags.METHOD: info.method if info else card.lineage.get("kind", ""),
                    VersionTags.REGIME: report.regime,
                    **{f"rfau.gate.{k}": v for k, v in (report.settings or {}).items()},
                }
            )
            # the model before the metrics: MLflow links a logged model to the run's metrics
            # already there, one history request per metric (27 requests per batch)
            logged = log_served_model(model_dir)
            mlflow.log_metrics(prefixed_numbers(evaluation.model_dump()))
            mlflow.log_dict(evaluation.model_dump(), "evaluation.json")
            mlflow.log_dict([r.model_dump() for r in results], "gates.json")
            if (model_dir / "adapter").is_dir():
                mlflow.log_artifacts(str(model_dir / "adapter"), artifact_path="adapter")
            version_tags[VersionTags.RUN_ID] = run.info.run_id
            # created with its tags in one call: a server that dies here leaves no untagged version
            mv = mlflow.register_model(
                logged.model_uri,
                name,
                await_registration_for=60,
                tags={k: tag_value(k, v) for k, v in version_tags.items()},
            )
            version = mv.version
        if bootstrap:
            if reg.alias_version(CHAMPION) is None:
                client.set_registered_model_alias(name, CHAMPION, version)
        elif not passed:
            client.set_registered_model_alias(name, CANDIDATE, version)
        elif promote:
            reg.move_champion(version)
    except BaseException as e:
        if version is not None:  # no half-registered version, whatever stopped us
            try:
                client.delete_model_version(name, version)
            except service_errors():
                pass  # the store is what failed; the version's tags say it never passed
        if isinstance(e, (*service_errors(), OSError)):
            raise reg.failure("registration failed", e) from None
        raise
    champ = reg.alias_version(CHAMPION)
    return Registration(
        model=name,
        version=int(version),
        new=True,
        gates_passed=passed,
        gates=results,
        champion=int(champ.version) if champ else None,
    )


def _frontier_for(reg: Registry, card, tags: dict, passed: bool) -> str:
    """A new version's frontier: its base's (the ``rfau.base_version`` a batch names, else the
    version with its parent's weights) plus its own requests when it passed its gates."""
    all_tags = reg.version_tags()
    base = tags.get(VersionTags.BASE_VERSION)
    if base is None:
        parent = card.lineage.get("parent_weights_sha256")
        base = next((v for v, t in all_tags.items() if parent and t.get(VersionTags.WEIGHTS) == parent), None)
    ids = frontier_of(all_tags, int(base)) if base is not None else set()
    if passed:
        ids |= set(card.lineage.get("request_ids", []))
    return frontier_value(ids)
