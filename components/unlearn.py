"""unlearn: forget the batch's forget set from the champion -> model folder. The escalation
ladder's approximate rungs (RFAU by default) run here; the exact one runs in the retrain task."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from rfau.components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def unlearn(batch: Input[Dataset], gates: dict, model: Output[Model], metrics: Output[Metrics]):
    from rfau.batch import read_batch, release_on_sigterm
    from rfau.batch.ladder import approximate_rungs
    from rfau.params import parse_params
    from rfau.records import UnlearnInfo

    meta = read_batch(batch.path)
    if meta.empty:  # the skip marker, as the other stages write theirs
        from rfau.batch import unlearn as stage

        stage(batch.path, model.path)
        metrics.log_metric("skipped", 1.0)
        return
    # the rungs were chosen at data-split (batch.json's plan); the gates choose between them
    with release_on_sigterm(batch.path, "the unlearn task"):  # a cancelled run releases its requests
        approximate_rungs(batch.path, model.path, parse_params({"gates": gates}).gates)
    info = UnlearnInfo.read(f"{model.path}/unlearn.json")
    model.metadata.update({"method": info.method, "framework": "pytorch", "format": "safetensors"})
    cost = info.model_dump(include={"seconds", "trainable_params", "total_params", "trainable_share"})
    for k, v in cost.items():
        metrics.log_metric(k, float(v))
