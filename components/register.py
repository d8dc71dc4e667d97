"""register: a new registry version (champion only when the gates pass), the ledger record, and
the requests marked fulfilled (or back to pending when a gate failed)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from rfau.components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    batch: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Dataset],
    store: str,
    gates: dict,
    registered: Output[Artifact],
    receipt: Output[Markdown],
    kfp_run_id: str = "",
) -> str:
    """-> the batch's MLflow run id (its parent run), so the KFP run links to it; "" when the
    batch had nothing to register."""
    from pathlib import Path

    from rfau.batch import BatchContext, release_on_sigterm
    from rfau.batch import register as stage
    from rfau.params import parse_params
    from rfau.records import Skipped
    from rfau.tracking.settings import TrackingSettings

    p = parse_params({"store": store, "gates": gates})
    # the registry and the model's name: the pod's rfau-config; the store: the batch's
    ctx = BatchContext.of_batch(batch.path, TrackingSettings.from_env(), p.store or None)
    # a cancelled run releases its requests (none once the ledger holds the batch: see abort)
    with release_on_sigterm(batch.path, "the register task"):
        res = stage(
            batch.path, model.path, evaluation.path, registered.path, ctx, p.gates, kfp_run_id or None
        )
    if isinstance(res, Skipped):
        Path(receipt.path).write_text(f"Nothing registered: {res.reason}\n")
        return ""
    registered.metadata.update(res.model_dump(include={"version", "champion", "gates_passed", "ledger_seq"}))
    # the KFP run (dsl.PIPELINE_JOB_ID_PLACEHOLDER) that produced this version
    registered.metadata["kfp_run_id"] = kfp_run_id
    registered.metadata["mlflow_run_id"] = res.mlflow_run_id or ""
    if res.promoted:
        verdict = "promoted to champion"
    elif res.gates_passed:
        verdict = "gates passed, held back: the champion moved while the batch ran; requests pending"
    else:
        verdict = (
            "a gate failed: champion unchanged, requests pending (needs-retrain where no rung "
            "can certify them: `rfau request list`)"
        )
    Path(receipt.path).write_text(
        f"# {res.model} version {res.version}\n\n{verdict}; champion is version {res.champion}.\n\n"
        f"Ledger record {res.ledger_seq} ({res.ledger_hash}); "
        f"requests {', '.join(res.request_ids)}.\n"
        f"MLflow run {res.mlflow_run_id}. Proof of deletion: `rfau audit show REQUEST_ID`.\n"
    )
    return res.mlflow_run_id or ""
