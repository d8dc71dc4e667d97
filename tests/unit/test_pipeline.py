"""The Kubeflow pipeline: the compiled YAML (tasks, order, GPU placement, wiring), a local run
with kfp.local as a new user would start it, and the cluster commands' errors."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from rfau.audit.salt import require_shared_salt
from rfau.components.cleanup import cleanup
from rfau.data.request_store import RequestState, RequestStore
from rfau.errors import RfauError
from rfau.pipelines.deletion_batch import GpuSpec
from rfau.pipelines.run import compile_pipeline, schedule, submit
from rfau.records import BatchMeta
from tests.support.cli import run_cli, subprocess_env

BIN = Path(sys.executable).parent
STAGES = ["data-split", "unlearn", "evaluate", "register"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _dags(spec) -> dict[str, dict]:
    """{"root" or a sub-DAG's component name: its tasks}."""
    dags = {"root": spec["root"]["dag"]["tasks"]}
    dags.update({name: c["dag"]["tasks"] for name, c in spec["components"].items() if "dag" in c})
    return dags


def _task(spec, name):
    hits = [tasks[name] for tasks in _dags(spec).values() if name in tasks]
    assert len(hits) == 1, f"task {name} appears {len(hits)} times in the compiled pipeline"
    return hits[0]


def _executor(spec, name):
    comp = spec["components"][_task(spec, name)["componentRef"]["name"]]
    return comp["executorLabel"], spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]


def test_the_compiled_yaml_is_a_valid_pipeline_spec(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec, _ = compiled
    parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())  # strict: unknown fields fail
    assert parsed.pipeline_info.name == "rfau-deletion-batch"


def test_stages_in_order_inside_an_exit_handler(compiled):
    """data-split, then a sub-pipeline whose ExitHandler wraps unlearn -> evaluate -> register;
    the exit task (cleanup) reads the batch folder and runs whatever happened inside."""
    spec, _ = compiled
    dags = _dags(spec)
    assert set(dags["root"]) == {"data-split", "after-split"}
    assert dags["root"]["after-split"]["dependentTasks"] == ["data-split"]
    assert dags["root"]["after-split"]["inputs"]["artifacts"]["batch"]["taskOutputArtifact"] == {
        "producerTask": "data-split",
        "outputArtifactKey": "batch",
    }
    after = dags["comp-after-split"]
    assert set(after) == {"exit-handler-1", "cleanup"}
    inside = dags[after["exit-handler-1"]["componentRef"]["name"]]
    assert {n: set(t.get("dependentTasks", [])) for n, t in inside.items()} == {
        "unlearn": set(),
        "evaluate": {"unlearn"},
        "condition-branches-2": {"unlearn", "evaluate"},  # register, or retrain (tests/unit/test_pipeline.py)
    }
    exit_task = after["cleanup"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert exit_task["dependentTasks"] == ["exit-handler-1"]
    assert exit_task["inputs"]["parameters"]["status"] == {
        "taskFinalStatus": {"producerTask": "exit-handler-1"}
    }
    # the very batch folder data-split wrote, handed to the sub-pipeline as its input
    assert exit_task["inputs"]["artifacts"]["batch"] == {"componentInputArtifact": "batch"}
    handler = after["exit-handler-1"]["inputs"]["artifacts"]  # the handler's group passes it on
    assert handler["pipelinechannel--batch"] == {"componentInputArtifact": "batch"}
    for stage in ("unlearn", "evaluate", "register", "retrain", "evaluate-2", "register-2"):
        assert _task(spec, stage)["inputs"]["artifacts"]["batch"] == {
            "componentInputArtifact": "pipelinechannel--batch"
        }


def test_the_ladder_is_in_the_graph_gates_failed_then_retrain_on_a_gpu(compiled):
    """unlearn -> evaluate -> dsl.If (certified or final: register) / dsl.Else (gates failed and
    the exact rung remains: retrain on its own GPU node and deadline -> evaluate -> register)."""
    spec, platform = compiled
    branches = _dags(spec)["comp-condition-branches-2"]
    conditions = {n: t["triggerPolicy"]["condition"] for n, t in branches.items()}
    verdict = "inputs.parameter_values['pipelinechannel--evaluate-Output']"
    assert len(conditions) == 2 and all(verdict in c for c in conditions.values()), conditions
    certified, escalated = (_dags(spec)[branches[n]["componentRef"]["name"]] for n in sorted(branches))
    assert set(certified) == {"register"}
    assert {n: set(t.get("dependentTasks", [])) for n, t in escalated.items()} == {
        "retrain": set(),
        "evaluate-2": {"retrain"},
        "register-2": {"retrain", "evaluate-2"},
    }
    assert "'escalate'" in conditions[sorted(branches)[0]] and conditions[sorted(branches)[1]].startswith(
        "!("
    )
    assert _task(spec, "register-2")["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "producerTask": "retrain",
        "outputArtifactKey": "retrained",
    }
    label, container = _executor(spec, "retrain")
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(container["resources"]["accelerator"]["resourceCount"]) == 1
    assert platform[label]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert int(platform[label]["activeDeadlineSeconds"]) == GpuSpec().retrain_timeout_seconds
    assert container["image"].endswith("-cuda")


def test_every_task_has_requests_limits_labels_and_only_unlearn_a_gpu(compiled):
    spec, platform = compiled
    shown = {"evaluate-2": "evaluate-retrain", "register-2": "register-retrain"}  # their pod labels
    for name in [*STAGES, "cleanup", "retrain", *shown]:
        label, container = _executor(spec, name)
        res = container["resources"]
        for key in ("resourceCpuRequest", "resourceMemoryRequest", "resourceCpuLimit", "resourceMemoryLimit"):
            assert res.get(key), f"{name} has no {key}"
        assert res["cpuLimit"] >= res["cpuRequest"] and res["memoryLimit"] >= res["memoryRequest"], name
        plat = platform.get(label, {})
        # the NetworkPolicies of infra/k8s admit pods with this label to MLflow and MinIO
        assert plat["podMetadata"]["labels"] == {
            "rfau.io/client": "true",
            "rfau.io/task": shown.get(name, name),
        }
        if name in ("unlearn", "retrain"):
            assert (
                res["accelerator"]["resourceType"] == "nvidia.com/gpu"
                and int(res["accelerator"]["resourceCount"]) == 1
            )
            assert plat["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert plat["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
            deadline = GpuSpec().timeout_seconds if name == "unlearn" else GpuSpec().retrain_timeout_seconds
            assert int(plat["activeDeadlineSeconds"]) == deadline
            assert container["image"].endswith("-cuda")
        else:
            assert "accelerator" not in res, f"{name} asks for an accelerator"
            assert "nodeSelector" not in plat and "tolerations" not in plat, f"{name} is pinned to GPU nodes"
            assert "activeDeadlineSeconds" not in plat, f"{name} has a timeout"
            assert not container["image"].endswith("-cuda")
        # credentials come from Kubernetes objects, never from the pipeline spec
        assert {s["secretName"] for s in plat["secretAsEnv"]} >= {"rfau-s3"}
        assert {c["configMapName"] for c in plat["configMapAsEnv"]} == {"rfau-config"}


def test_register_requires_the_audit_salt_secret_and_gets_the_run_id(compiled):
    spec, platform = compiled
    label, _ = _executor(spec, "register")
    audit = [s for s in platform[label]["secretAsEnv"] if s["secretName"] == "rfau-audit"]
    assert audit and audit[0]["optional"] is False, "register must not start without the rfau-audit secret"
    for name in ("data-split", "unlearn", "evaluate", "cleanup"):
        lbl, _ = _executor(spec, name)
        assert "rfau-audit" not in {s["secretName"] for s in platform[lbl]["secretAsEnv"]}, name
    run_id = _task(spec, "register")["inputs"]["parameters"]["kfp_run_id"]
    assert run_id == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    # and it hands the batch's MLflow run id back to KFP as its output parameter
    comp = spec["components"][_task(spec, "register")["componentRef"]["name"]]
    assert comp["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"


def test_retries_everywhere_and_cache_only_on_pure_stages(compiled):
    spec, _ = compiled
    for name in [*STAGES, "cleanup"]:
        t = _task(spec, name)
        assert t["retryPolicy"]["maxRetryCount"] == 2 and t["retryPolicy"]["backoffFactor"] == 2.0
        assert bool(t["cachingOptions"].get("enableCache")) == (name in ("unlearn", "evaluate")), name


def test_parameters_and_artifacts_wire_through(compiled):
    spec, _ = compiled

    # the names and defaults themselves: tests/unit/test_params.py (they are rfau.params.BatchParams')
    def inputs(name):
        return _task(spec, name)["inputs"]

    for p in ("dataset", "store", "train", "holdout_fraction"):
        assert inputs("data-split")["parameters"][p]["componentInputParameter"] == p
    # data-split chooses the ladder's rungs for the requests it claims (batch.json's plan)
    for p in ("method", "method_config", "escalation", "deadline_days", "retrain_lead_days", "max_attempts"):
        assert inputs("data-split")["parameters"][p]["componentInputParameter"] == p
    root_params = _task(spec, "after-split")["inputs"]["parameters"]
    for p in ("gates", "store"):
        assert root_params[p]["componentInputParameter"] == p
    # inside the exit handler's group KFP names the sub-pipeline's inputs pipelinechannel--NAME
    for stage, p in [
        ("unlearn", "gates"),
        ("register", "gates"),
        ("register", "store"),
        ("evaluate", "gates"),
    ]:
        assert inputs(stage)["parameters"][p]["componentInputParameter"] == f"pipelinechannel--{p}"
    arts = {
        n: {
            k: (v["taskOutputArtifact"]["producerTask"], v["taskOutputArtifact"]["outputArtifactKey"])
            for k, v in inputs(n).get("artifacts", {}).items()
            if "taskOutputArtifact" in v
        }
        for n in STAGES
    }
    assert arts["evaluate"] == {"model": ("unlearn", "model")}
    # register sits in a branch of the ladder's condition: its inputs are the branch's, by producer
    assert {k: v["componentInputArtifact"] for k, v in inputs("register")["artifacts"].items()} == {
        "batch": "pipelinechannel--batch",
        "model": "pipelinechannel--unlearn-model",
        "evaluation": "pipelinechannel--evaluate-evaluation",
    }
    types = {
        k: v["artifactType"]["schemaTitle"]
        for k, v in spec["components"]["comp-evaluate"]["outputDefinitions"]["artifacts"].items()
    }
    assert types == {
        "evaluation": "system.Dataset",
        "metrics": "system.Metrics",
        "confusion": "system.ClassificationMetrics",
        "report": "system.Markdown",
        "plots": "system.HTML",
    }


def test_gpu_placement_is_configurable(tmp_path):
    gpu = GpuSpec(
        accelerator="nvidia.com/mig-1g.10gb",
        count=2,
        node_selector_key="pool",
        node_selector_value="a100",
        toleration_key="dedicated",
        timeout_seconds=600,
    )
    spec, platform = list(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", gpu).read_text()))
    label, container = _executor(spec, "unlearn")
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/mig-1g.10gb"
    plat = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label]
    assert plat["nodeSelector"]["labels"] == {"pool": "a100"} and plat["tolerations"][0]["key"] == "dedicated"
    assert int(plat["activeDeadlineSeconds"]) == 600


def _cli(*args, cwd):
    """`rfau ARGS` in-process in ``cwd`` (error paths: no process start needed)."""
    with contextlib.chdir(cwd):
        return run_cli(*args)


def test_cli_compile_writes_the_pipeline_and_rejects_bad_options(tmp_path):
    r = _cli("pipeline", "compile", "--out", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    r = _cli("pipeline", "compile", "--out", "q.yaml", "--node-selector", "novalue", cwd=tmp_path)
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr and not (tmp_path / "q.yaml").exists()


def test_cluster_commands_fail_clearly_without_an_endpoint(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = _cli("pipeline", "submit", "--endpoint", "http://127.0.0.1:9", cwd=tmp_path)
    assert r.returncode == 3 and "does not answer" in r.stderr
    # the error is the one line on stderr: kfp's client version notice is not shown before it
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    r = _cli("pipeline", "schedule", "--endpoint", "http://127.0.0.1:9", "--cron", "0 2 * *", cwd=tmp_path)
    assert r.returncode == 2 and "5 or 6 fields" in r.stderr
    r = _cli("pipeline", "run", cwd=tmp_path)
    assert r.returncode == 2 and "--local" in r.stderr


def test_bad_method_settings_stop_before_anything_is_queued(tmp_path):
    r = _cli("pipeline", "run", "--local", "--demo", "--set", 'method_config={"rank": 0}', cwd=tmp_path)
    assert r.returncode == 2 and "invalid settings for method 'rfau'" in r.stderr and "rank" in r.stderr
    # a layer the model does not have: checked against the model the batch would start from
    r = _cli(
        "pipeline",
        "run",
        "--local",
        "--demo",
        "--set",
        'method_config={"target_modules": ["nope"]}',
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "nope" in r.stderr, r.stderr
    # nothing was queued: the demo's request store was never even created
    listed = _cli("request", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 2 and "never been initialised" in listed.stderr, listed.stderr
    assert not (tmp_path / "runs" / "pipeline").exists()


# --- the exit task's release, on a real folder store -----------------------------------------------
def _claimed_batch(tmp_path, ids=("req-a", "req-b"), batch_id="batch-1"):
    store = tmp_path / "store"
    files = []
    for rid in ids:
        f = tmp_path / f"{rid}.json"
        f.write_text(
            json.dumps(
                {
                    "request_id": rid,
                    "sample_ids": ["digits/7"],
                    "reason": "erasure",
                    "received_at": "2026-11-27T09:00:00Z",
                }
            )
        )
        files.append(f)
    reqs = RequestStore.from_uri(store)
    reqs.add(files)
    assert [st.request_id for st in reqs.claim_pending(batch_id)] == list(ids)
    batch = tmp_path / "batch"
    batch.mkdir()
    # a batch.json as data-split writes it
    BatchMeta(
        batch_id=batch_id,
        dataset="digits",
        dataset_uri="digits",
        store=str(store),
        model="rfau-model",
        started_at="2026-11-27T09:00:00Z",
        code_version="test",
        request_ids=list(ids),
        rejected=[],
        empty=False,
    ).write(batch / "batch.json")
    return batch, reqs


def _states(reqs, ids=("req-a", "req-b")):
    return [reqs.get(rid).state for rid in ids]


class _Artifact:  # what KFP hands the component: an object with .path
    def __init__(self, path):
        self.path = str(path)


class _Status:  # dsl.PipelineTaskFinalStatus as the exit task receives it
    def __init__(self, state, error_message=None):
        self.state, self.error_message = state, error_message


def release_claims(batch, state, error_message=None, receipt=None) -> str:
    """Run the cleanup component's own function (what its pod runs) -> its receipt."""
    receipt = receipt or Path(batch).parent / "receipt.md"
    cleanup.python_func(
        batch=_Artifact(batch), status=_Status(state, error_message), receipt=_Artifact(receipt)
    )
    return receipt.read_text()


def test_cleanup_does_nothing_after_success(tmp_path):
    batch, reqs = _claimed_batch(tmp_path)
    assert release_claims(batch, "SUCCEEDED") == "Run succeeded: no request to release.\n"
    assert _states(reqs) == [RequestState.IN_PROGRESS] * 2


@pytest.mark.parametrize("state", ["FAILED", "CANCELED"])
def test_cleanup_releases_the_claims_of_a_failed_run_once(tmp_path, state):
    batch, reqs = _claimed_batch(tmp_path)
    receipt = release_claims(batch, state, "Task exit-handler-1 failed.")
    assert receipt == f"Run {state.lower()}: requests req-a, req-b are pending again.\n"
    assert _states(reqs) == [RequestState.PENDING] * 2
    assert "Task exit-handler-1 failed." in reqs.get("req-a").detail
    # a retried exit task releases nothing twice
    assert release_claims(batch, state) == f"Run {state.lower()}: no request to release.\n"


def test_cleanup_leaves_requests_settled_by_register_alone(tmp_path):
    batch, reqs = _claimed_batch(tmp_path)
    reqs.release("req-a", "batch-1", "a gate failed")  # what register does when a gate fails
    assert release_claims(batch, "FAILED") == "Run failed: requests req-b are pending again.\n"


def test_cleanup_of_a_batch_without_a_record_is_a_no_op(tmp_path):
    assert release_claims(tmp_path / "nothing", "FAILED") == "Run failed: no request to release.\n"


# --- namespaces, the salt, progress in logs ---------------------------------------------------------
@pytest.mark.parametrize("namespace", ["Kubeflow_User", "-x", "a" * 64, "ns/other"])
def test_a_bad_namespace_is_refused_before_any_connection(namespace):
    with pytest.raises(RfauError, match="not a Kubernetes namespace name"):
        submit("http://127.0.0.1:9", {}, namespace=namespace)
    with pytest.raises(RfauError, match="not a Kubernetes namespace name"):
        schedule("http://127.0.0.1:9", "0 2 * * *", {}, namespace=namespace)


def test_a_good_namespace_reaches_the_endpoint_check():
    with pytest.raises(RfauError, match="does not answer"):
        submit("http://127.0.0.1:9", {}, namespace="kubeflow-user-example-com")


def test_a_missing_salt_is_an_error_in_a_pod_or_on_a_remote_store(tmp_path, monkeypatch):
    monkeypatch.delenv("RFAU_AUDIT_SALT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    require_shared_salt(str(tmp_path / "store"))  # one machine, local store: the salt file is fine
    with pytest.raises(RfauError, match="is remote"):
        require_shared_salt("s3://rfau-requests/requests")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(RfauError, match="Kubernetes pod"):
        require_shared_salt(str(tmp_path / "store"))
    monkeypatch.setenv("RFAU_AUDIT_SALT", "a-shared-secret")
    require_shared_salt(str(tmp_path / "store"))
    require_shared_salt("s3://rfau-requests/requests")


def test_audit_trail_refuses_a_pod_local_salt(tmp_path, monkeypatch):
    from rfau.audit.trail import AuditTrail
    from rfau.tracking.settings import TrackingSettings

    monkeypatch.delenv("RFAU_AUDIT_SALT", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("RFAU_STATE_DIR", str(tmp_path / "state"))
    trail = AuditTrail.open(str(tmp_path / "store"), TrackingSettings.from_env())
    with pytest.raises(RfauError, match="RFAU_AUDIT_SALT is not set"):
        trail.salt()
    assert not (tmp_path / "state" / "audit" / "salt").exists()


def test_progress_is_one_plain_line_per_epoch_when_not_a_terminal(tmp_path):
    code = (
        "from rfau.progress import progress_bar\n"
        "with progress_bar(3, 'train') as advance:\n"
        "    for i in range(3):\n"
        "        advance(loss=1.0 / (i + 1))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(RFAU_QUIET="0"),
    )
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert [ln.split(" ")[:2] for ln in lines] == [["train:", "1/3"], ["train:", "2/3"], ["train:", "3/3"]]
    assert lines[-1].endswith("loss=0.3333") and not ANSI.search(r.stderr)
