"""retrain: the escalation ladder's exact rung, run when the approximate rungs failed their gates:
retraining from the model's recorded recipe on the retain set, from the same base and split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from rfau.components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def retrain(
    batch: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Dataset],
    retrained: Output[Model],
    metrics: Output[Metrics],
):
    from rfau.batch import release_on_sigterm
    from rfau.batch.ladder import next_rung
    from rfau.records import UnlearnInfo

    with release_on_sigterm(batch.path, "the retrain task"):  # a cancelled run releases its requests
        next_rung(batch.path, model.path, evaluation.path, retrained.path)
    info = UnlearnInfo.read(f"{retrained.path}/unlearn.json")
    retrained.metadata.update({"method": info.method, "framework": "pytorch", "format": "safetensors"})
    metrics.log_metric("seconds", float(info.seconds))
