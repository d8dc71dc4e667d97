"""unlearn: forget the batch's forget set from the champion (RFAU by default) -> model folder."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from rfau.components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def unlearn(
    batch: Input[Dataset], method: str, method_config: dict, model: Output[Model], metrics: Output[Metrics]
):
    from rfau.batch import unlearn as stage
    from rfau.params import parse_params
    from rfau.records import Skipped
    from rfau.signals import release_on_sigterm

    p = parse_params({"method": method, "method_config": method_config})
    with release_on_sigterm(batch.path, "the unlearn task"):  # a cancelled run releases its requests
        info = stage(batch.path, model.path, p.method, p.method_config or None)
    if isinstance(info, Skipped):
        metrics.log_metric("skipped", 1.0)
        return
    model.metadata.update({"method": p.method, "framework": "pytorch", "format": "safetensors"})
    cost = info.model_dump(include={"seconds", "trainable_params", "total_params", "trainable_share"})
    for k, v in cost.items():
        metrics.log_metric(k, float(v))
