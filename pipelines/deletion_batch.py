"""The deletion-batch pipeline: data-split -> unlearn (GPU node) -> evaluate -> register.

Only unlearn asks for a GPU: an accelerator type and limit, a node selector and a toleration,
set on the task (kfp-kubernetes) so that kfp.local can run the very same pipeline on a laptop.
data-split and register change state outside KFP (request states, registry, ledger), so they are
never served from KFP's cache; unlearn and evaluate are pure functions of their inputs and are.
Every task retries transient faults with backoff on a cluster; each stage is idempotent, so a
retry is safe.
"""

# no "from __future__ import annotations": KFP reads the real annotations of the pipeline function

from kfp import dsl, kubernetes
from pydantic import BaseModel

from rfau.components.data_split import data_split
from rfau.components.evaluate import evaluate
from rfau.components.image import CUDA_IMAGE
from rfau.components.register import register
from rfau.components.unlearn import unlearn

PIPELINE_NAME = "rfau-deletion-batch"
CONFIG_MAP = "rfau-config"  # infra/k8s: RFAU_TRACKING_URI, RFAU_REQUEST_STORE, AWS_ENDPOINT_URL...
S3_SECRET = "rfau-s3"  # infra/k8s: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
AUDIT_SECRET = "rfau-audit"  # infra/k8s: RFAU_AUDIT_SALT


class GpuSpec(BaseModel):
    """Where the unlearn task runs. Defaults: NVIDIA's device plugin resource and the label that
    GPU feature discovery puts on GPU nodes; GPU node pools are usually tainted nvidia.com/gpu."""

    accelerator: str = "nvidia.com/gpu"
    count: int = 1
    node_selector_key: str = "nvidia.com/gpu.present"
    node_selector_value: str = "true"
    toleration_key: str = "nvidia.com/gpu"
    cpu: str = "4"
    memory: str = "16Gi"


def _common(task: dsl.PipelineTask, cpu: str, memory: str, retries: int) -> dsl.PipelineTask:
    task.set_cpu_request(cpu).set_memory_request(memory)
    if retries:
        task.set_retry(
            num_retries=retries, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="10m"
        )
    kubernetes.use_config_map_as_env(
        task,
        CONFIG_MAP,
        {
            "RFAU_TRACKING_URI": "RFAU_TRACKING_URI",
            "RFAU_REQUEST_STORE": "RFAU_REQUEST_STORE",
            "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION",
        },
        optional=True,
    )
    kubernetes.use_secret_as_env(
        task,
        S3_SECRET,
        {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"},
        optional=True,
    )
    return task


def build_pipeline(gpu: GpuSpec | None = None, retries: int = 2):
    """The pipeline function, with the GPU placement of the unlearn task baked in. ``retries``:
    per task, for transient cluster faults (kfp.local honours them too; local runs use 0 so a
    real error is reported at once instead of after the backoff)."""
    gpu = gpu or GpuSpec()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Collect pending deletion requests, forget them with RFAU on a GPU node, "
        "evaluate, and register a version that is promoted only when its gates pass.",
    )
    def deletion_batch(
        dataset_uri: str = "digits",
        requests_uri: str = "",
        method: str = "rfau",
        method_config: dict = {},
        model_name: str = "rfau-model",  # noqa: B006 (KFP defaults)
        tracking_uri: str = "",
        gates: dict = {},
        train_config: dict = {},  # noqa: B006
        holdout_fraction: float = 0.1,
    ):
        split = data_split(
            dataset_uri=dataset_uri,
            requests_uri=requests_uri,
            model_name=model_name,
            tracking_uri=tracking_uri,
            train_config=train_config,
            holdout_fraction=holdout_fraction,
        ).set_display_name("data-split")
        _common(split, "1", "4Gi", retries).set_caching_options(False)

        forget = unlearn(
            batch=split.outputs["batch"], method=method, method_config=method_config
        ).set_display_name("unlearn")
        _common(forget, gpu.cpu, gpu.memory, retries).set_caching_options(True)
        forget.set_accelerator_type(gpu.accelerator).set_accelerator_limit(gpu.count)
        forget.set_container_image(CUDA_IMAGE)
        kubernetes.add_node_selector(forget, gpu.node_selector_key, gpu.node_selector_value)
        kubernetes.add_toleration(forget, key=gpu.toleration_key, operator="Exists", effect="NoSchedule")

        ev = evaluate(
            batch=split.outputs["batch"], model=forget.outputs["model"], gates=gates
        ).set_display_name("evaluate")
        _common(ev, "2", "8Gi", retries).set_caching_options(True)

        reg = register(
            batch=split.outputs["batch"],
            model=forget.outputs["model"],
            evaluation=ev.outputs["evaluation"],
            model_name=model_name,
            tracking_uri=tracking_uri,
            requests_uri=requests_uri,
            gates=gates,
        ).set_display_name("register")
        _common(reg, "1", "4Gi", retries).set_caching_options(False)
        kubernetes.use_secret_as_env(reg, AUDIT_SECRET, {"RFAU_AUDIT_SALT": "RFAU_AUDIT_SALT"}, optional=True)

    return deletion_batch


deletion_batch = build_pipeline()
