"""The local pipeline end to end from the user's own model (issue 12): a tiny, randomly initialised
transformers ViT saved with save_pretrained is the pipeline's `base_model_uri`; the first batch
imports it as the bootstrap champion instead of training one, forgets a request from it, and the
registry, the ledger and the proof name the imported model. One kfp.local run, its own file."""

from __future__ import annotations

import contextlib
import json

import pytest

from rfau.audit.trail import AuditTrail
from rfau.batch import champion_lineage
from rfau.data.datasets import load_dataset
from rfau.data.split import in_holdout
from rfau.io import sha256_file
from rfau.tracking import registry
from rfau.tracking.settings import TrackingSettings
from tests.conftest import run_cli, run_rfau
from tests.test_families import FAST_RFAU, request, save_vit


@pytest.mark.e2e
def test_local_pipeline_starts_from_an_imported_hf_model(tmp_path):
    vit = save_vit(tmp_path / "my-vit", [str(i) for i in range(10)])
    ds = load_dataset("digits")
    forget = [s for s in ds.split_ids("train") if not in_holdout(s, 0.1)][:20]
    env = {"RFAU_STATE_DIR": str(tmp_path / ".rfau")}
    with contextlib.chdir(tmp_path):
        added = run_cli("request", "add", str(request(tmp_path / "r1.json", "r1", forget)), **env)
    assert added.returncode == 0, added.stderr

    r = run_rfau(
        "pipeline", "run", "--local", "--no-demo", "--json",
        "--set", f"base_model_uri={vit.name}",  # relative: made absolute for the task processes
        "--set", f"method_config={json.dumps(FAST_RFAU)}",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]  # 1: a gate failed
    result = json.loads(r.stdout)["result"]

    # the registry: version 1 is the imported model (no original was trained), version 2 its child
    settings = TrackingSettings(state_dir=tmp_path / ".rfau")
    tags = registry.version_tags(settings)
    source_sha = sha256_file(vit / "model.safetensors")
    assert sorted(tags) == [1, 2] and result["version"] == 2
    assert tags[1]["rfau.method"] == "imported" and tags[1]["rfau.source_sha256"] == source_sha
    assert tags[2]["rfau.parent_weights_sha256"] == tags[1]["rfau.weights_sha256"]
    assert tags[2]["rfau.request_ids"] == "r1" and tags[2]["rfau.method"] == "rfau"
    champ, lineage = champion_lineage(settings)  # type: ignore[misc]
    assert champ.version == (2 if result["promoted"] else 1) and lineage[-1] == source_sha

    # the ledger: one record, from the imported version to the new one
    records = AuditTrail.open(str(tmp_path / ".rfau" / "store"), settings).records()
    assert [rec["request_ids"] for rec in records] == [["r1"]]
    assert records[0]["model"]["before"] == {"version": 1, "weights_sha256": tags[1]["rfau.weights_sha256"]}
    assert records[0]["model"]["after"]["version"] == 2 and records[0]["promoted"] == result["promoted"]

    # the proof of deletion, as a user reads it
    with contextlib.chdir(tmp_path):
        shown = run_cli("audit", "show", "r1", "--out", str(tmp_path / "proof"), **env)
    assert shown.returncode == 0, shown.stderr
    proof = (tmp_path / "proof" / "proof.md").read_text()
    assert "r1" in proof and tags[2]["rfau.weights_sha256"] in proof
