"""The Kubeflow pipeline: the compiled YAML (tasks, order, GPU placement, wiring), a local run
with kfp.local as a new user would start it, and the cluster commands' errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rfau.pipelines.deletion_batch import GpuSpec
from rfau.pipelines.run import compile_pipeline
from tests.conftest import subprocess_env

BIN = Path(sys.executable).parent
STAGES = ["data-split", "unlearn", "evaluate", "register"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = compile_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _task(spec, name):
    return spec["root"]["dag"]["tasks"][name]


def _executor(spec, name):
    comp = spec["components"][_task(spec, name)["componentRef"]["name"]]
    return comp["executorLabel"], spec["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]


def test_four_tasks_in_order(compiled):
    spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(STAGES)
    deps = {n: set(t.get("dependentTasks", [])) for n, t in tasks.items()}
    assert deps == {
        "data-split": set(),
        "unlearn": {"data-split"},
        "evaluate": {"data-split", "unlearn"},
        "register": {"data-split", "unlearn", "evaluate"},
    }


def test_only_unlearn_asks_for_a_gpu_node(compiled):
    spec, platform = compiled
    for name in STAGES:
        label, container = _executor(spec, name)
        res = container["resources"]
        assert res.get("cpuRequest") and res.get("memoryRequest"), f"{name} has no CPU/memory request"
        plat = platform.get(label, {})
        if name == "unlearn":
            assert (
                res["accelerator"]["resourceType"] == "nvidia.com/gpu"
                and int(res["accelerator"]["resourceCount"]) == 1
            )
            assert plat["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
            assert plat["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
            assert container["image"].endswith("-cuda")
        else:
            assert "accelerator" not in res, f"{name} asks for an accelerator"
            assert "nodeSelector" not in plat and "tolerations" not in plat, f"{name} is pinned to GPU nodes"
            assert not container["image"].endswith("-cuda")
        # credentials come from Kubernetes objects, never from the pipeline spec
        assert {s["secretName"] for s in plat["secretAsEnv"]} >= {"rfau-s3"}
        assert {c["configMapName"] for c in plat["configMapAsEnv"]} == {"rfau-config"}


def test_retries_everywhere_and_cache_only_on_pure_stages(compiled):
    spec, _ = compiled
    for name in STAGES:
        t = _task(spec, name)
        assert t["retryPolicy"]["maxRetryCount"] == 2 and t["retryPolicy"]["backoffFactor"] == 2.0
        assert bool(t["cachingOptions"].get("enableCache")) == (name in ("unlearn", "evaluate")), name


def test_parameters_and_artifacts_wire_through(compiled):
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {
        "dataset_uri",
        "requests_uri",
        "method",
        "method_config",
        "model_name",
        "tracking_uri",
        "gates",
        "train_config",
        "holdout_fraction",
    }
    assert params["dataset_uri"]["defaultValue"] == "digits" and params["method"]["defaultValue"] == "rfau"

    def inputs(name):
        return _task(spec, name)["inputs"]

    assert inputs("unlearn")["parameters"]["method"]["componentInputParameter"] == "method"
    assert inputs("unlearn")["parameters"]["method_config"]["componentInputParameter"] == "method_config"
    assert inputs("register")["parameters"]["gates"]["componentInputParameter"] == "gates"
    assert inputs("evaluate")["parameters"]["gates"]["componentInputParameter"] == "gates"
    arts = {
        n: {
            k: (v["taskOutputArtifact"]["producerTask"], v["taskOutputArtifact"]["outputArtifactKey"])
            for k, v in inputs(n).get("artifacts", {}).items()
        }
        for n in STAGES
    }
    assert arts["unlearn"] == {"batch": ("data-split", "batch")}
    assert arts["evaluate"] == {"batch": ("data-split", "batch"), "model": ("unlearn", "model")}
    assert arts["register"] == {
        "batch": ("data-split", "batch"),
        "model": ("unlearn", "model"),
        "evaluation": ("evaluate", "evaluation"),
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
    )
    spec, platform = list(yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", gpu).read_text()))
    label, container = _executor(spec, "unlearn")
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/mig-1g.10gb"
    plat = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label]
    assert plat["nodeSelector"]["labels"] == {"pool": "a100"} and plat["tolerations"][0]["key"] == "dedicated"


def _rfau(*args, cwd, env=None, timeout=600):
    return subprocess.run(
        [str(BIN / "rfau"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**(env or {})),
    )


def test_cli_compile_writes_the_pipeline_and_rejects_bad_options(tmp_path):
    r = _rfau("pipeline", "compile", "--out", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    r = _rfau("pipeline", "compile", "--out", "q.yaml", "--node-selector", "novalue", cwd=tmp_path)
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr and not (tmp_path / "q.yaml").exists()


def test_local_run_as_a_new_user(tmp_path):
    """`rfau pipeline run --local --demo` in an empty folder: the four tasks run with kfp.local,
    each stage's outputs land in the pipeline root, and a new registry version appears."""
    t0 = time.time()
    r = _rfau("pipeline", "run", "--local", "--demo", cwd=tmp_path)
    seconds = time.time() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "version 2" in r.stdout and "champion is version 2" in r.stdout
    run_dir = next((tmp_path / "runs" / "pipeline").iterdir())
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == sorted(STAGES)
    assert (run_dir / "data-split" / "batch" / "split" / "forget.txt").stat().st_size > 0
    assert (run_dir / "unlearn" / "model" / "adapter" / "adapter_config.json").is_file()
    assert (run_dir / "evaluate" / "evaluation" / "metrics.json").is_file()
    assert (run_dir / "register" / "registered" / "registered.json").is_file()
    assert not (tmp_path / "mlruns").exists()  # artifacts go beside the store, not into the working folder
    models = _rfau("models", cwd=tmp_path)
    assert "champion" in models.stdout and "rfau" in models.stdout
    listed = _rfau("request", "list", "--json", cwd=tmp_path)
    assert '"fulfilled"' in listed.stdout
    print(f"local pipeline run (bootstrap + batch): {seconds:.0f} s")  # timing is reported, not asserted


def test_cluster_commands_fail_clearly_without_an_endpoint(tmp_path):
    r = _rfau("pipeline", "submit", "--endpoint", "http://127.0.0.1:9", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "does not answer" in r.stderr
    r = _rfau("pipeline", "schedule", "--endpoint", "http://127.0.0.1:9", "--cron", "0 2 * *", cwd=tmp_path)
    assert r.returncode == 2 and "5 or 6 fields" in r.stderr
    r = _rfau("pipeline", "run", cwd=tmp_path)
    assert r.returncode == 2 and "--local" in r.stderr


def test_bad_method_settings_stop_before_anything_is_queued(tmp_path):
    r = _rfau("pipeline", "run", "--local", "--demo", "--set", 'method_config={"rank": 0}', cwd=tmp_path)
    assert r.returncode == 2 and "invalid settings for method 'rfau'" in r.stderr and "rank" in r.stderr
    assert json.loads(_rfau("request", "list", "--json", cwd=tmp_path).stdout) == []
    assert not (tmp_path / "runs" / "pipeline").exists()


def test_a_failing_local_run_says_so_and_releases_its_requests(tmp_path):
    # valid settings that fail inside the unlearn task: a layer the model does not have
    r = _rfau(
        "pipeline",
        "run",
        "--local",
        "--demo",
        "--set",
        'method_config={"target_modules": ["nope"]}',
        cwd=tmp_path,
    )
    assert (
        r.returncode == 2 and "failed before the register stage" in r.stderr and "pending again" in r.stderr
    )
    listed = json.loads(_rfau("request", "list", "--json", cwd=tmp_path).stdout)
    assert [x["state"] for x in listed] == ["pending"] and "failed" in listed[0]["detail"]
