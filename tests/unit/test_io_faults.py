import os
import subprocess
import sys

import pytest

from rfau.devices import check_cron, check_device, kfp_cron
from rfau.errors import RfauError
from rfau.io import OUTPUT_MARKER, atomic_dir, output_kind, work_lock


def _no_temp_left(parent):
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


def test_atomic_dir_refuses_foreign_folder_and_keeps_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(RfauError, match="not an rfau output"):
        with atomic_dir(out, "split"):
            pass
    assert (out / "mine.txt").read_text() == "keep"
    assert _no_temp_left(tmp_path)


def test_atomic_dir_replaces_same_kind_refuses_other_kind(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out, "split") as tmp:
        (tmp / "a").write_text("1")
    assert output_kind(out) == "split" and (out / OUTPUT_MARKER).exists()
    with atomic_dir(out, "split") as tmp:
        (tmp / "b").write_text("2")
    assert not (out / "a").exists() and (out / "b").exists()
    with pytest.raises(RfauError, match="written by `rfau split`, not `rfau unlearn`"):
        with atomic_dir(out, "unlearn"):
            pass
    assert output_kind(out) == "split" and (out / "b").exists()
    assert _no_temp_left(tmp_path)


@pytest.mark.parametrize("name", [".", "sub/..", "file"])
def test_atomic_dir_refuses_dot_and_files(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RfauError, match="output folder"):
        with atomic_dir(name, "split"):
            pass
    assert (tmp_path / "file").read_text() == "x"
    assert _no_temp_left(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_atomic_dir_read_only_parent(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(RfauError, match="cannot write output folder"):
            with atomic_dir(ro / "out", "split"):
                pass
    finally:
        ro.chmod(0o700)
    assert list(ro.iterdir()) == []


def test_work_lock_second_process_gets_holder(tmp_path):
    code = (
        "import sys\nfrom rfau.io import work_lock\nfrom rfau.errors import RfauError\n"
        "try:\n    with work_lock(sys.argv[1], 'batch b2'):\n        print('got')\n"
        "except RfauError as e:\n    print(e)\n"
    )
    with work_lock(tmp_path, "batch b1"):
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert "in use by pid" in r.stdout and "batch b1" in r.stdout
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert r.stdout.strip() == "got"


@pytest.mark.parametrize("device", ["foo", "cuda:x", ""])
def test_check_device_rejects(device):
    with pytest.raises(RfauError, match="device"):
        check_device(device)


def test_check_device_cpu():
    assert check_device("cpu") == "cpu"


@pytest.mark.parametrize("expr", ["0 0 * * *", "61 0 0 * * *", "0 0 0 * * 9", "0 0 a * * *", "0 */0 * * * *"])
def test_check_cron_rejects(expr):
    with pytest.raises(RfauError, match="cron"):
        check_cron(expr)


def test_check_cron_accepts():
    assert check_cron("0 0 */6 * * 1-5") == "0 0 */6 * * 1-5"


@pytest.mark.parametrize(
    ("given", "kfp"),
    [
        ("@daily", "@daily"),
        ("@every 6h30m", "@every 6h30m"),
        ("0 2 * * MON-FRI", "0 0 2 * * MON-FRI"),
        ("0 0 2 1 jan,jul ?", "0 0 2 1 jan,jul ?"),
        ("*/15  * * * *", "0 */15 * * * *"),
    ],
)
def test_kfp_cron_takes_descriptors_names_and_five_fields(given, kfp):
    assert kfp_cron(given) == kfp


@pytest.mark.parametrize("expr", ["@reboot", "@every soon", "0 2 * * MON-FUN", "0 2 * * *  * *", "? 2 * * *"])
def test_kfp_cron_rejects_what_kfp_would_not_run(expr):
    with pytest.raises(RfauError, match="cron"):
        kfp_cron(expr)


def test_request_file_too_deep_and_too_big(tmp_path, monkeypatch):
    from rfau.data import requests as rq

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(RfauError, match="nested too deeply"):
        rq.load_requests([deep])
    monkeypatch.setattr(rq, "MAX_REQUEST_FILE_BYTES", 10)
    big = tmp_path / "big.json"
    big.write_text('{"request_id": "r1", "reason": "x"}')
    with pytest.raises(RfauError, match="byte limit"):
        rq.load_requests([big])


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"input_shape": []}, "input_shape"),
        ({"input_shape": [1, -28, 28]}, "input_shape"),
        ({"arch_kwargs": {"width": -4}}, "negative size for width"),
        ({"weights_sha256": ""}, "weights_sha256"),
    ],
)
def test_bad_model_card_refused(tmp_path, change, problem):
    import json

    from rfau.models.checkpoint import CARD, read_card

    card = {
        "architecture": "mlp",
        "classes": ["a", "b"],
        "input_shape": [1, 28, 28],
        "dataset": "d",
        "train_manifest_sha256": "0" * 64,
        "train_samples": 1,
        "holdout_fraction": 0.1,
        "holdout_salt": "s",
        "weights_sha256": "a" * 64,
    }
    (tmp_path / CARD).write_text(json.dumps({**card, **change}))
    with pytest.raises(RfauError, match=problem):
        read_card(tmp_path)
    (tmp_path / CARD).write_text(json.dumps(card))
    assert read_card(tmp_path).input_shape == [1, 28, 28]


def test_archive_member_with_dotdot_refused():
    from rfau.data.datasets import _parse_member

    with pytest.raises(RfauError, match="'..'"):
        _parse_member("train/../x.png")
    assert _parse_member("train/cat/x.png") == ("train", "cat")


def test_tracking_uri_credentials_moved_to_env(monkeypatch):
    from rfau.tracking.settings import TrackingSettings, redact

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    s = TrackingSettings(tracking_uri="http://alice:s%40cret@mlflow:5000/x")
    assert s.uri() == "http://mlflow:5000/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s@cret"
    assert redact("at http://alice:pw@h:1/a and s3://k:v@b/c") == "at http://***@h:1/a and s3://***@b/c"


@pytest.mark.parametrize("uri", ["not-a-uri", "foo://bar", "http://"])
def test_bad_tracking_uri(uri):
    from rfau.tracking.settings import TrackingSettings

    with pytest.raises(RfauError, match="use one of http"):
        TrackingSettings(tracking_uri=uri).uri()


def test_a_fault_point_acts_only_under_the_test_switch(monkeypatch):
    """RFAU_FAULT_AT alone (a stray variable in a pod) never kills a process; with the test switch
    it kills at the named commit point, and a point that does not exist is a usage error."""
    from rfau.errors import UsageError
    from rfau.faults import Fault, fault_point
    from tests.support.cli import subprocess_env

    code = "from rfau.faults import Fault, fault_point; fault_point(Fault.UNLEARNED); print('alive')"

    def run(**env):
        return subprocess.run([sys.executable, "-c", code], env=subprocess_env(**env), capture_output=True)

    stray = run(RFAU_FAULT_AT="unlearned")
    assert stray.returncode == 0 and b"alive" in stray.stdout
    assert run(RFAU_FAULT_AT="register:promoted", RFAU_TEST_FAULTS="1").returncode == 0  # another point
    assert run(RFAU_FAULT_AT="unlearned", RFAU_TEST_FAULTS="1").returncode == -9  # SIGKILL there
    monkeypatch.setenv("RFAU_TEST_FAULTS", "1")
    monkeypatch.setenv("RFAU_FAULT_AT", "register:version-creatd")
    with pytest.raises(UsageError, match="names no fault point"):
        fault_point(Fault.PROMOTED)
