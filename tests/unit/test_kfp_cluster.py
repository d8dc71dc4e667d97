"""The cluster commands against a KFP API on loopback (tests/support/kfp_api.py): the server's version
checked before anything is sent, schedules unique by name (kept, replaced, paused, resumed,
deleted), the image references checked, and every error one line with its exit code."""

from __future__ import annotations

import json

import pytest

from rfau.devices import check_image_ref, kfp_cron
from rfau.errors import UsageError
from rfau.pipelines.run import compile_pipeline
from tests.support.cli import run_cli, run_rfau
from tests.support.kfp_api import KfpState, serve


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return str(compile_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml"))


@pytest.fixture
def kfp():
    """``kfp(**state)`` -> (the server's state, its URL); stopped after the test."""
    servers = []

    def start(**kw):
        state = KfpState(**kw)
        server, url = serve(state)
        servers.append(server)
        return state, url

    yield start
    for s in servers:
        s.shutdown()


def _schedule(url, package, *extra):
    return run_cli("pipeline", "schedule", "--endpoint", url, "--package", package, "--json", *extra)


def _one_error_line(r, code: int, *words: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines[0]


def test_a_schedule_is_unique_by_name(kfp, package):
    state, url = kfp()
    first = _schedule(url, package, "--cron", "0 2 * * *")
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout)
    assert made["action"] == "created" and made["cron"] == "0 0 2 * * *" and made["enabled"] is True
    assert made["kfp_version"] == "2.14.3" and made["name"] == "rfau-deletion-batch-schedule"
    (body,) = state.recurring.values()
    assert body["max_concurrency"] == "1" and body["no_catchup"] is True
    assert body["service_account"] == "rfau-pipeline" and "pipeline_spec" in body["pipeline_spec"]
    assert body["runtime_config"]["parameters"]["method"] == "rfau"  # the batch parameters, by name
    # the same settings again: the schedule is kept as it is, nothing created or deleted
    again = json.loads(_schedule(url, package, "--cron", "0 2 * * *").stdout)
    assert again["action"] == "kept" and again["recurring_run_id"] == made["recurring_run_id"]
    assert (
        len(state.recurring) == 1
        and ("DELETE", f"/apis/v2beta1/recurringruns/{made['recurring_run_id']}") not in state.calls
    )
    # new settings (weekdays at 02:00, by name): replaced, still one schedule of that name
    moved = json.loads(_schedule(url, package, "--cron", "0 2 * * MON-FRI").stdout)
    assert moved["action"] == "replaced" and moved["recurring_run_id"] != made["recurring_run_id"]
    assert [r["trigger"]["cron_schedule"]["cron"] for r in state.recurring.values()] == ["0 0 2 * * MON-FRI"]
    # a second name is a second schedule
    other = json.loads(_schedule(url, package, "--cron", "@daily", "--name", "nightly").stdout)
    assert other["action"] == "created" and other["cron"] == "@daily" and len(state.recurring) == 2


def test_list_pause_resume_and_delete(kfp, package):
    state, url = kfp(page_size=1)  # one recurring run a page: the list reads every page
    for name in ("a", "b"):
        assert _schedule(url, package, "--cron", "@hourly", "--name", name).returncode == 0
    rows = json.loads(run_cli("pipeline", "schedule", "list", "--endpoint", url, "--json").stdout)
    assert [(r["name"], r["enabled"], r["by_rfau"]) for r in rows] == [("a", True, True), ("b", True, True)]
    paused = run_cli("pipeline", "schedule", "pause", "--endpoint", url, "--name", "a", "--json")
    assert paused.returncode == 0 and json.loads(paused.stdout)[0]["enabled"] is False
    rows = json.loads(run_cli("pipeline", "schedule", "list", "--endpoint", url, "--json").stdout)
    assert {r["name"]: r["enabled"] for r in rows} == {"a": False, "b": True}
    # scheduling a paused one again with the same settings keeps it, paused
    kept = json.loads(_schedule(url, package, "--cron", "@hourly", "--name", "a").stdout)
    assert kept["action"] == "kept" and kept["enabled"] is False
    assert run_cli("pipeline", "schedule", "resume", "--endpoint", url, "--name", "a").returncode == 0
    assert all(r["status"] == "ENABLED" for r in state.recurring.values())
    assert run_cli("pipeline", "schedule", "delete", "--endpoint", url, "--name", "a").returncode == 0
    assert [r["display_name"] for r in state.recurring.values()] == ["b"]
    _one_error_line(
        run_cli("pipeline", "schedule", "pause", "--endpoint", url, "--name", "a"), 2, "no schedule named 'a'"
    )
    listed = run_cli("pipeline", "schedule", "list", "--endpoint", url)
    assert listed.returncode == 0 and "b" in listed.stdout and "@hourly" in listed.stdout


def test_a_failed_replacement_leaves_the_old_schedule_running(kfp, package):
    state, url = kfp()
    made = json.loads(_schedule(url, package, "--cron", "@daily").stdout)
    state.fail_next_create = True
    r = _schedule(url, package, "--cron", "@weekly")
    _one_error_line(r, 3, "HTTP 500", "is unchanged")
    (old,) = state.recurring.values()
    assert old["recurring_run_id"] == made["recurring_run_id"] and old["status"] == "ENABLED"


def test_the_server_version_is_checked_before_anything_is_sent(kfp, package):
    state, url = kfp(tag="2.5.0")
    r = run_cli("pipeline", "submit", "--endpoint", url, "--package", package)
    _one_error_line(r, 2, "runs KFP 2.5.0", "needs KFP 2.14.0 or later", "PipelineTaskFinalStatus")
    _one_error_line(_schedule(url, package, "--cron", "@daily"), 2, "needs KFP 2.14.0")
    assert not state.runs and not state.recurring and not state.experiments
    state.tag = None  # KFP 1.x: no v2beta1 API at all
    _one_error_line(
        run_cli("pipeline", "submit", "--endpoint", url, "--package", package), 2, "no v2beta1 API"
    )
    for tag in ("2.14.0", "v2.15.0-rc.1", "unknown"):  # a build without a release tag is let through
        state.tag = tag
        r = run_cli("pipeline", "submit", "--endpoint", url, "--package", package, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["kfp_version"] == tag, r.stderr
    assert len(state.runs) == 3 and len(state.experiments) == 1  # one experiment, found again by name
    (run, *_) = state.runs.values()
    assert run["service_account"] == "rfau-pipeline" and run["runtime_config"]["parameters"]["dataset"]


def test_a_token_is_sent_and_a_refusal_is_one_line(kfp, package):
    state, url = kfp(token="s3cret")
    _one_error_line(
        run_cli("pipeline", "schedule", "list", "--endpoint", url), 3, "HTTP 401", "Unauthenticated"
    )
    r = run_cli("pipeline", "schedule", "list", "--endpoint", url, "--json", KFP_TOKEN="s3cret")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    _one_error_line(run_cli("pipeline", "schedule", "list", "--endpoint", "localhost:8080"), 2, "not an http")
    _one_error_line(
        run_cli("pipeline", "submit", "--endpoint", url, "--package", "nope.yaml"),
        2,
        "not a compiled KFP pipeline",
    )


@pytest.mark.parametrize(
    "ref",
    [
        "ghcr.io/rfau/rfau:0.1.0",
        "localhost:5000/rfau:dev",
        "rfau",
        "registry.example.com/team/rfau@sha256:" + "a" * 64,
        "registry.example.com:443/rfau:0.1.0-cuda@sha256:" + "0" * 64,
    ],
)
def test_image_references_a_registry_takes(ref):
    assert check_image_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "ghcr.io/RFAU/rfau:0.1",
        "rfau:",
        "rfau:0.1 ",
        "https://ghcr.io/rfau",
        "rfau@sha256:abc",
        "a//b",
        "rfau:-x",
    ],
)
def test_image_references_a_registry_refuses(ref):
    with pytest.raises(UsageError, match="is not an image reference"):
        check_image_ref(ref)


def test_a_bad_rfau_image_fails_the_compile_with_one_line(tmp_path):
    r = run_rfau("pipeline", "compile", "--out", "p.yaml", cwd=tmp_path, RFAU_IMAGE="ghcr.io/Rfau/rfau 0.1")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "RFAU_IMAGE" in lines[0], r.stderr
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("@daily", "@daily"),
        ("@every 6h", "@every 6h"),
        ("0 2 * * MON-FRI", "0 0 2 * * MON-FRI"),
        ("0 0 2 ? JAN,JUL SUN", "0 0 2 ? JAN,JUL SUN"),
        ("*/15 * * * *", "0 */15 * * * *"),
    ],
)
def test_cron_as_kfp_takes_it(given, sent):
    assert kfp_cron(given) == sent
