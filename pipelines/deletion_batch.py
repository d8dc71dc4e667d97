"""The deletion-batch pipeline: data-split -> [unlearn (GPU node) -> evaluate -> register, or when
the gates failed and the escalation ladder's exact rung remains: retrain (GPU node) -> evaluate ->
register], with
an exit task (cleanup) that releases the batch's claimed requests when anything after data-split
failed or the run was cancelled.

KFP forbids an exit task that depends on another task, so the three stages after data-split form
a sub-pipeline (``after_split``) that takes the batch folder as its input; inside it the ExitHandler
wraps them and the cleanup task reads that input. kfp.local runs the same structure.

Only unlearn asks for a GPU: an accelerator type and limit, a node selector, a toleration and a
timeout, set on the task (kfp-kubernetes) so that kfp.local can run the very same pipeline on a
laptop. Every task has CPU/memory requests and limits and carries the pod label
``rfau.io/client=true`` (infra/k8s NetworkPolicies let those pods reach MLflow and MinIO) and
``rfau.io/task=<stage>``. data-split and register change state outside KFP (request states,
registry, ledger), so they are never served from KFP's cache; unlearn and evaluate are pure
functions of their inputs and are. Every task retries transient faults with backoff on a
cluster; each stage is idempotent, so a retry is safe.
"""

# no "from __future__ import annotations": KFP reads the real annotations of the pipeline function

from kfp import dsl, kubernetes
from kfp.dsl import Dataset, Input
from pydantic import BaseModel

from rfau.components.cleanup import cleanup
from rfau.components.data_split import data_split
from rfau.components.evaluate import evaluate
from rfau.components.image import CUDA_IMAGE
from rfau.components.register import register
from rfau.components.retrain import retrain
from rfau.components.unlearn import unlearn
from rfau.params import defaults

ESCALATE = "escalate"  # the evaluate task's verdict when its rung failed and the exact one remains

# the pipeline's parameters are rfau.params.BatchParams' fields; KFP reads a literal signature,
# so the defaults below are read from BatchParams (tests/unit/test_params.py checks names and values)
DEFAULTS = defaults()

PIPELINE_NAME = "rfau-deletion-batch"
# infra/k8s: RFAU_TRACKING_URI and RFAU_MODEL_NAME (the registry: tracking settings, not batch
# parameters), RFAU_REQUEST_STORE (an empty `store` parameter), AWS_ENDPOINT_URL...
CONFIG_MAP = "rfau-config"
S3_SECRET = "rfau-s3"  # infra/k8s: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
AUDIT_SECRET = "rfau-audit"  # infra/k8s: RFAU_AUDIT_SALT (required by register: no silent new salt)
CLIENT_LABEL = ("rfau.io/client", "true")  # infra/k8s/mlflow/networkpolicies.yaml admits these pods
TASK_LABEL = "rfau.io/task"


class Resources(BaseModel):
    """CPU/memory of one task: requests (what the scheduler reserves) and limits (the cap)."""

    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str


# the stages without a GPU; the cleanup task only imports rfau and rewrites a few request files
CPU_TASKS = {
    "data-split": Resources(cpu="1", memory="4Gi", cpu_limit="2", memory_limit="8Gi"),
    "evaluate": Resources(cpu="2", memory="8Gi", cpu_limit="4", memory_limit="12Gi"),
    "register": Resources(cpu="1", memory="4Gi", cpu_limit="2", memory_limit="8Gi"),
    "cleanup": Resources(cpu="250m", memory="1Gi", cpu_limit="1", memory_limit="2Gi"),
}


class GpuSpec(BaseModel):
    """Where and how long the unlearn task runs. Defaults: NVIDIA's device plugin resource and
    the label that GPU feature discovery puts on GPU nodes; GPU node pools are usually tainted
    nvidia.com/gpu. ``timeout_seconds``: the pod's activeDeadlineSeconds, so a hung GPU job frees
    the GPU (and the cleanup task releases the requests)."""

    accelerator: str = "nvidia.com/gpu"
    count: int = 1
    node_selector_key: str = "nvidia.com/gpu.present"
    node_selector_value: str = "true"
    toleration_key: str = "nvidia.com/gpu"
    cpu: str = "4"
    memory: str = "16Gi"
    cpu_limit: str = "8"
    memory_limit: str = "24Gi"
    timeout_seconds: int = 2 * 3600
    retrain_timeout_seconds: int = 12 * 3600  # the exact rung trains a whole model again


def _common_settings(task: dsl.PipelineTask, name: str, res: Resources, retries: int) -> dsl.PipelineTask:
    task.set_display_name(name)
    task.set_cpu_request(res.cpu).set_memory_request(res.memory)
    task.set_cpu_limit(res.cpu_limit).set_memory_limit(res.memory_limit)
    if retries:
        task.set_retry(
            num_retries=retries, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="10m"
        )
    kubernetes.add_pod_label(task, *CLIENT_LABEL)
    kubernetes.add_pod_label(task, TASK_LABEL, name)
    kubernetes.use_config_map_as_env(
        task,
        CONFIG_MAP,
        {
            "RFAU_TRACKING_URI": "RFAU_TRACKING_URI",
            "RFAU_MODEL_NAME": "RFAU_MODEL_NAME",
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


def build_pipeline(gpu: GpuSpec | None = None, retries: int = 2, image: str | None = None):
    """The pipeline function, with the GPU placement of the unlearn task baked in. ``retries``:
    per task, for transient cluster faults (kfp.local honours them too; local runs use 0 so a
    real error is reported at once instead of after the backoff). ``image``: one image for every
    task instead of the CPU/CUDA pair (a local run in containers: the CPU image built here)."""
    gpu = gpu or GpuSpec()

    def _common(task: dsl.PipelineTask, name: str, res: Resources, retries: int) -> dsl.PipelineTask:
        placed = _common_settings(task, name, res, retries)
        return placed.set_container_image(image) if image else placed

    gpu_resources = Resources(
        cpu=gpu.cpu, memory=gpu.memory, cpu_limit=gpu.cpu_limit, memory_limit=gpu.memory_limit
    )

    def on_gpu(task: dsl.PipelineTask, name: str, timeout_seconds: int) -> dsl.PipelineTask:
        _common(task, name, gpu_resources, retries).set_caching_options(True)
        task.set_accelerator_type(gpu.accelerator).set_accelerator_limit(gpu.count)
        task.set_container_image(image or CUDA_IMAGE)
        kubernetes.add_node_selector(task, gpu.node_selector_key, gpu.node_selector_value)
        kubernetes.add_toleration(task, key=gpu.toleration_key, operator="Exists", effect="NoSchedule")
        kubernetes.set_timeout(task, timeout_seconds)
        return task

    def register_task(batch, model, evaluation, store: str, gates: dict, name: str):
        reg = register(
            batch=batch,
            model=model,
            evaluation=evaluation,
            store=store,
            gates=gates,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        _common(reg, name, CPU_TASKS["register"], retries).set_caching_options(False)
        # not optional: without the secret the pod fails to start instead of hashing subjects
        # with a fresh salt of its own (rfau.audit refuses a missing salt on a cluster too)
        kubernetes.use_secret_as_env(
            reg, AUDIT_SECRET, {"RFAU_AUDIT_SALT": "RFAU_AUDIT_SALT"}, optional=False
        )
        return reg

    @dsl.pipeline(
        name="after-split",
        description="unlearn -> evaluate -> register (or retrain -> evaluate -> register when the "
        "gates failed) for one claimed batch; "
        "its claims are released on failure.",
    )
    def after_split(batch: Input[Dataset], store: str, gates: dict):
        release = _common(cleanup(batch=batch), "cleanup", CPU_TASKS["cleanup"], retries)
        release.set_caching_options(False)
        with dsl.ExitHandler(release, name="release-on-failure"):
            # the escalation ladder's approximate rungs (the plan in batch.json, from data-split)
            forget = on_gpu(unlearn(batch=batch, gates=gates), "unlearn", gpu.timeout_seconds)
            ev = evaluate(batch=batch, model=forget.outputs["model"], gates=gates)
            _common(ev, "evaluate", CPU_TASKS["evaluate"], retries).set_caching_options(True)
            with dsl.If(ev.outputs["Output"] != ESCALATE, name="certified-or-final"):
                register_task(
                    batch, forget.outputs["model"], ev.outputs["evaluation"], store, gates, "register"
                )
            with dsl.Else(name="gates-failed-escalate"):
                # the exact rung: retrain without the data, on its own GPU node and deadline
                exact = on_gpu(
                    retrain(batch=batch, model=forget.outputs["model"], evaluation=ev.outputs["evaluation"]),
                    "retrain",
                    gpu.retrain_timeout_seconds,
                )
                ev_exact = evaluate(batch=batch, model=exact.outputs["retrained"], gates=gates)
                _common(ev_exact, "evaluate-retrain", CPU_TASKS["evaluate"], retries).set_caching_options(
                    True
                )
                register_task(
                    batch,
                    exact.outputs["retrained"],
                    ev_exact.outputs["evaluation"],
                    store,
                    gates,
                    "register-retrain",
                )

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Collect pending deletion requests, forget them with RFAU on a GPU node, "
        "evaluate, and register a version that is promoted only when its gates pass.",
    )
    def deletion_batch(
        dataset: str = DEFAULTS["dataset"],
        store: str = DEFAULTS["store"],
        method: str = DEFAULTS["method"],
        method_config: dict = DEFAULTS["method_config"],
        gates: dict = DEFAULTS["gates"],
        train: dict = DEFAULTS["train"],
        holdout_fraction: float = DEFAULTS["holdout_fraction"],
        base_model_uri: str = DEFAULTS["base_model_uri"],
        escalation: list = DEFAULTS["escalation"],
        deadline_days: int = DEFAULTS["deadline_days"],
        retrain_lead_days: int = DEFAULTS["retrain_lead_days"],
        max_attempts: int = DEFAULTS["max_attempts"],
    ):
        # data-split claims the requests and chooses the ladder's rungs for them (batch.json)
        split = data_split(
            dataset=dataset,
            store=store,
            train=train,
            holdout_fraction=holdout_fraction,
            base_model_uri=base_model_uri,
            method=method,
            method_config=method_config,
            escalation=escalation,
            deadline_days=deadline_days,
            retrain_lead_days=retrain_lead_days,
            max_attempts=max_attempts,
        )
        _common(split, "data-split", CPU_TASKS["data-split"], retries).set_caching_options(False)

        after_split(batch=split.outputs["batch"], store=store, gates=gates).set_display_name(
            "unlearn-evaluate-register"
        )

    return deletion_batch


deletion_batch = build_pipeline()
