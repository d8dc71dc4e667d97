"""data-split: claim the pending deletion requests -> the batch folder (requests, split, base model)."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from rfau.components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def data_split(
    dataset_uri: str,
    requests_uri: str,
    model_name: str,
    tracking_uri: str,
    train_config: dict,
    holdout_fraction: float,
    batch: Output[Dataset],
    summary: Output[Markdown],
):
    from rfau.batch import data_split as stage
    from rfau.tracking.settings import TrackingSettings

    settings = TrackingSettings.from_env(model_name=model_name or None, tracking_uri=tracking_uri or None)
    meta = stage(
        batch.path, dataset_uri, requests_uri or None, settings, holdout_fraction, train_config or None
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
