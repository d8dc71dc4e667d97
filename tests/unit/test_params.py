"""One parameter set for a batch: rfau.params.BatchParams' fields are the KFP pipeline's
parameters (names and defaults), params.yaml and dvc.yaml use them, the components take them by
the same names, and names from earlier versions are refused with the name to use instead."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from rfau.errors import RfauError
from rfau.params import BatchParams, defaults, load_params
from rfau.pipelines.run import compile_pipeline, pipeline_arguments
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
# the pipeline's inputs that are no batch parameters: KFP's own run id and the tasks' artifacts
KFP_INPUTS = {"kfp_run_id"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    path = compile_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    return next(yaml.safe_load_all(path.read_text()))


def test_the_compiled_pipeline_takes_exactly_the_batch_parameters_with_their_defaults(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(BatchParams.model_fields)
    assert {name: p["defaultValue"] for name, p in params.items()} == defaults()
    assert defaults()["gates"] and defaults()["holdout_fraction"] == 0.1  # real values, not {} and 0


def test_every_component_names_its_parameters_as_the_batch_does(spec):
    for comp in ("comp-data-split", "comp-unlearn", "comp-evaluate", "comp-register", "comp-after-split"):
        names = set(spec["components"][comp]["inputDefinitions"].get("parameters", {}))
        assert names, comp
        assert names - KFP_INPUTS <= set(BatchParams.model_fields), (comp, names)


def test_params_yaml_and_dvc_yaml_use_the_batch_parameters():
    p = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == set(BatchParams.model_fields), "params.yaml should show every parameter"
    assert p.method_config == {"rank": 4, "epochs": 30, "seed": 0} and p.store == ""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    used = {name for stage in dvc["stages"].values() for name in stage.get("params", [])}
    assert used and used <= set(BatchParams.model_fields)


def test_pipeline_arguments_are_the_parameters_by_name(tmp_path):
    p = BatchParams(store="rel/store", method_config={"rank": 2})
    cluster = pipeline_arguments(p, local=False)
    assert cluster == p.model_dump(mode="json") and cluster["store"] == "rel/store"
    assert pipeline_arguments(BatchParams(), local=False)["store"] == ""  # the pods' rfau-config
    with contextlib.chdir(tmp_path):
        local = pipeline_arguments(p, local=True)
    assert local["store"] == str(tmp_path / "rel" / "store")  # task subprocesses may run elsewhere
    assert local["method_config"] == {"rank": 2} and set(local) == set(BatchParams.model_fields)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("dataset_uri: digits\n", "'dataset_uri' is now 'dataset'"),
        ("requests_uri: /tmp/s\n", "'requests_uri' is now 'store'"),
        ("train_config: {}\n", "'train_config' is now 'train'"),
        ("model_name: m\n", "RFAU_MODEL_NAME"),
        ("tracking_uri: http://x\n", "RFAU_TRACKING_URI"),
        ("methd: rfau\n", "methd"),
        ("holdout_fraction: 0.7\n", "holdout_fraction"),
    ],
)
def test_old_or_unknown_names_and_bad_values_are_refused_by_name(tmp_path, text, needle):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(RfauError, match="invalid batch parameters") as e:
        load_params(path)
    assert needle in str(e.value) and str(path) in str(e.value)


def test_a_null_store_is_the_default_store():
    assert BatchParams.model_validate({"store": None}).store == ""


def test_the_cli_takes_the_same_names(tmp_path):
    with contextlib.chdir(tmp_path):
        r = run_cli("pipeline", "submit", "--endpoint", "http://127.0.0.1:9", "--set", "train_config={}")
        assert r.returncode == 2 and "'train_config' is now 'train'" in r.stderr
        r = run_cli("batch", "split", "--out", "b", "--set", "dataset_uri=digits")
        assert r.returncode == 2 and "'dataset_uri' is now 'dataset'" in r.stderr
    assert not (tmp_path / "b").exists()
