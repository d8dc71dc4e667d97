"""data-split: claim the pending deletion requests -> the batch folder (requests, split, base model)."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from rfau.components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def data_split(
    dataset: str,
    store: str,
    train: dict,
    holdout_fraction: float,
    base_model_uri: str,
    method: str,
    method_config: dict,
    escalation: list,
    deadline_days: int,
    retrain_lead_days: int,
    max_attempts: int,
    batch: Output[Dataset],
    summary: Output[Markdown],
):
    from rfau.batch import BatchContext
    from rfau.batch import data_split as stage
    from rfau.params import parse_params
    from rfau.signals import sigterm_raises
    from rfau.tracking.settings import TrackingSettings

    # the batch parameters by their own names (rfau.params.BatchParams); the registry and the
    # model's name come from the pod's environment (rfau-config)
    p = parse_params(
        {
            "dataset": dataset,
            "store": store,
            "train": train,
            "holdout_fraction": holdout_fraction,
            "base_model_uri": base_model_uri,
            "method": method,
            "method_config": method_config,
            "escalation": escalation,
            "deadline_days": deadline_days,
            "retrain_lead_days": retrain_lead_days,
            "max_attempts": max_attempts,
        }
    )
    ctx = BatchContext.open(p.store or None, TrackingSettings.from_env())
    with sigterm_raises("the data-split task"):  # its claims are released as on any failure
        meta = stage(
            batch.path,
            p.dataset,
            ctx,
            p.holdout_fraction,
            p.train or None,
            base_model_uri=p.base_model_uri,
            params=p,
        )
    batch.metadata.update(meta.model_dump(include={"batch_id", "empty", "forget_count", "forget_md5"}))
    lines = [
        f"# Batch {meta.batch_id}",
        "",
        f"Requests: {', '.join(meta.request_ids) or 'none pending'}",
    ]
    lines += [f"- rejected {r.request_id}: {r.reason}" for r in meta.rejected]
    if not meta.empty:
        lines.append(
            f"Forget set: {meta.forget_count} samples, md5 {meta.forget_md5}; "
            f"base: version {meta.require_base().version}"
        )
    with open(summary.path, "w") as f:
        f.write("\n".join(lines) + "\n")
