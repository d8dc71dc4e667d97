"""The batch parameter ``base_model_uri``: the user's own model (a save_pretrained folder or an
`rfau model import` folder, local or s3://) becomes the bootstrap champion of a registry that has
none; a registry with a champion takes only a model of the champion's own lineage; a bad model
fails the batch before it claims anything (the requests stay pending, the registry unchanged)."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

import pytest

from rfau.batch import BatchContext, data_split, staged_base_model
from rfau.data.datasets import load_dataset
from rfau.data.request_store import RequestState, RequestStore
from rfau.data.split import in_holdout
from rfau.errors import RfauError
from rfau.io import sha256_file
from rfau.models.checkpoint import read_card
from rfau.models.importer import import_model
from rfau.params import BatchParams
from rfau.pipelines.run import pipeline_arguments
from rfau.tracking import registry
from rfau.tracking.settings import TrackingSettings
from tests.support.builders import request, save_vit

DS = load_dataset("digits")
POOL = [s for s in DS.split_ids("train") if not in_holdout(s, 0.1)]


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    return save_vit(tmp_path_factory.mktemp("vit"), [str(i) for i in range(10)])


def _queue(store: str, folder: Path, rid: str = "r1") -> None:
    RequestStore.from_uri(store).add([request(folder / f"{rid}.json", rid, POOL[:4])], DS)


def _upload(s3_server, folder: Path) -> str:
    prefix = f"models/{uuid.uuid4().hex[:8]}"
    for f in folder.iterdir():
        s3_server["client"].upload_file(str(f), s3_server["bucket"], f"{prefix}/{f.name}")
    return f"s3://{s3_server['bucket']}/{prefix}"


@pytest.fixture
def s3_env(monkeypatch, s3_server, tmp_path):
    from tests.support.services import S3_ENV

    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint"])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return s3_server


def test_an_s3_model_becomes_the_bootstrap_champion_and_its_lineage_is_accepted_again(
    s3_env, vit_dir, tmp_path
):
    uri = _upload(s3_env, vit_dir)
    settings = TrackingSettings(state_dir=tmp_path / ".rfau")
    store = str(tmp_path / "store")
    _queue(store, tmp_path)
    meta = data_split(tmp_path / "batch", "digits", BatchContext.open(store, settings), base_model_uri=uri)

    source_sha = sha256_file(vit_dir / "model.safetensors")
    base = read_card(tmp_path / "batch" / "base")
    assert meta.request_ids == ["r1"] and meta.base is not None and meta.base.version == 1
    assert (base.family, base.source, base.classes) == ("hf-image", uri, list(DS.classes))
    assert base.lineage["kind"] == "imported" and base.lineage["source_sha256"] == {
        "model.safetensors": source_sha
    }
    tags = registry.Registry(settings).version_tags()[1]
    assert tags["rfau.source_sha256"] == source_sha and tags["rfau.weights_sha256"] == base.weights_sha256
    assert registry.Registry(settings).champion().version == 1  # type: ignore[union-attr]

    # the champion's own model, named again (as every scheduled run of the pipeline does), as the
    # save_pretrained folder or as the folder `rfau model import` wrote: nothing new is imported
    imported = tmp_path / "imported"
    import_model(vit_dir, "hf-image", DS, imported)
    for again in (uri, str(vit_dir), str(imported)):
        with staged_base_model(again, DS, BatchContext.open(store, settings)) as original:
            assert original is None
    assert sorted(registry.Registry(settings).version_tags()) == [1]


def test_a_missing_s3_prefix_is_refused(s3_env, tmp_path):
    from rfau.models.importer import fetch_model_folder

    with pytest.raises(RfauError, match="no objects under that prefix"):
        fetch_model_folder(f"s3://{s3_env['bucket']}/models/none-{uuid.uuid4().hex[:8]}", tmp_path / "x")


def _pickle_only(root: Path) -> Path:
    folder = root / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"never read")
    return folder


BAD_MODELS = {
    "missing": (lambda root: root / "no-such-model", "no such folder"),
    "pickle-only": (_pickle_only, r"pytorch_model.bin is a pickle.*safe_serialization=True"),
    "wrong labels": (lambda root: save_vit(root / "vit", None), r"labels \['LABEL_0'.*do not match"),
    "not a model": (lambda root: (root / "empty").mkdir() or root / "empty", "neither an rfau model folder"),
    "other scheme": (lambda root: "https://example.org/model", "give a local folder or s3://"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_a_bad_base_model_fails_the_batch_before_anything_is_claimed(cli, tmp_path, case):
    make, problem = BAD_MODELS[case]
    uri = str(make(tmp_path))
    assert cli("request", "add", str(request(tmp_path / "r.json", "r1", POOL[:4]))).returncode == 0
    r = cli("batch", "run", "--set", f"base_model_uri={uri}", "--set", "method_config={}")
    assert r.returncode == 3, r.stderr
    assert __import__("re").search(problem, r.stderr), r.stderr
    state = RequestStore.from_uri(str(tmp_path / ".rfau" / "store")).get("r1")
    assert state.state is RequestState.PENDING and len(state.history) == 1  # never claimed
    assert not (tmp_path / ".rfau" / "mlflow.db").exists()  # no registry made


def test_a_champion_is_never_replaced_by_another_base_model(cli, seed_state, vit_dir, tmp_path):
    settings = seed_state(tmp_path / ".rfau")
    champion = registry.Registry(settings).champion()
    assert cli("request", "add", str(request(tmp_path / "r.json", "r1", POOL[:4]))).returncode == 0
    r = cli("batch", "run", "--set", f"base_model_uri={vit_dir}", "--json")
    assert r.returncode == 3, r.stderr
    vit_sha = sha256_file(vit_dir / "model.safetensors")
    assert vit_sha in r.stderr and champion.weights_sha256 in r.stderr, r.stderr  # type: ignore[union-attr]
    assert "never takes another base model" in r.stderr
    state = RequestStore.from_uri(str(tmp_path / ".rfau" / "store")).get("r1")
    assert state.state is RequestState.PENDING and len(state.history) == 1
    assert (
        sorted(registry.Registry(settings).version_tags()) == [1]
        and registry.Registry(settings).champion() == champion
    )


def test_base_model_uri_is_a_parameter_made_absolute_for_local_runs(tmp_path):
    assert BatchParams.model_validate({"base_model_uri": None}).base_model_uri == ""
    p = BatchParams(base_model_uri="models/mine")
    assert pipeline_arguments(p, local=False)["base_model_uri"] == "models/mine"
    with contextlib.chdir(tmp_path):
        assert pipeline_arguments(p, local=True)["base_model_uri"] == str(tmp_path / "models" / "mine")
    s3 = BatchParams(base_model_uri="s3://bucket/models/mine")
    assert pipeline_arguments(s3, local=True)["base_model_uri"] == "s3://bucket/models/mine"
    assert json.loads(BatchParams().model_dump_json())["base_model_uri"] == ""


def test_target_modules_are_checked_against_the_base_model_before_claiming(vit_dir, tmp_path):
    from rfau.batch.preflight import check_before_claiming
    from rfau.params import load_params

    settings = TrackingSettings(state_dir=tmp_path / ".rfau")
    vit = load_params(None, [f"base_model_uri={vit_dir}", 'method_config={"target_modules": ["v_proj"]}'])
    check_before_claiming(vit, settings, device_here=False)  # the ViT's attention, not small_cnn's
    bad = load_params(None, [f"base_model_uri={vit_dir}", 'method_config={"target_modules": ["conv1"]}'])
    with pytest.raises(RfauError, match="conv1"):
        check_before_claiming(bad, settings, device_here=False)
    assert not (tmp_path / ".rfau" / "mlflow.db").exists()
