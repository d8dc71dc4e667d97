"""What a local pipeline run shows: a line per stage, each task's output in its own task.log, and a
failed task's last lines with its failure (quiet or not). A two-task toy pipeline through
kfp.local's subprocess runner, as rfau's own pipeline runs (about 3 s)."""

# no `from __future__ import annotations`: kfp reads the components' annotations as types
import io

import pytest
from kfp import dsl, local

from rfau.pipelines.task_logs import RUN_LOG, TASK_LOG, stage_lines


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def chatty(n: int) -> int:
    for i in range(n):
        print(f"chatty line {i}")
    return n


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def breaks(n: int):
    print("about to fail")
    raise ValueError(f"the loss diverged after {n} steps")


@dsl.pipeline(name="toy")
def ok_pipeline():
    chatty(n=200)


@dsl.pipeline(name="toy-failing")
def failing_pipeline():
    breaks(n=chatty(n=3).output)


def _run(tmp_path, pipeline, monkeypatch, quiet: bool):
    monkeypatch.setenv("RFAU_QUIET", "1" if quiet else "0")
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=False
    )
    shown = io.StringIO()
    with stage_lines(shown) as kfp_lines:
        pipeline()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (run_dir / RUN_LOG).write_text(kfp_lines.getvalue())
    return shown.getvalue().splitlines(), run_dir


def test_a_line_per_stage_and_the_output_in_the_task_log(tmp_path, monkeypatch, capfd):
    shown, run_dir = _run(tmp_path, ok_pipeline, monkeypatch, quiet=False)
    assert shown[0] == "chatty: started" and shown[1].startswith("chatty: done in ") and len(shown) == 2
    log = (run_dir / "chatty" / TASK_LOG).read_text()
    assert "chatty line 199" in log and "Task 'chatty' finished with status SUCCESS" in log
    assert "Pipeline 'toy' finished with status SUCCESS" in (run_dir / RUN_LOG).read_text()
    out, err = capfd.readouterr()
    assert "chatty line" not in out + err  # nothing of the task reached the terminal


@pytest.mark.parametrize("quiet", [False, True])
def test_a_failed_task_shows_the_end_of_its_log(tmp_path, monkeypatch, capfd, quiet):
    shown, run_dir = _run(tmp_path, failing_pipeline, monkeypatch, quiet=quiet)
    text = "\n".join(shown)
    # quiet: only the failure and its log's end; else the stages as they ran too
    assert ("chatty: started" in text) is not quiet and ("breaks: started" in text) is not quiet
    (failed,) = [ln for ln in shown if ln.startswith("breaks: failed after ")]
    assert str(run_dir / "breaks" / TASK_LOG) in failed
    assert "ValueError: the loss diverged after 3 steps" in text and "about to fail" in text
    assert len(shown) <= (1 if quiet else 5) + 25  # the tail is bounded
    out, err = capfd.readouterr()
    assert "diverged" not in out + err
