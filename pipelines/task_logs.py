"""What a local pipeline run shows while it works: one line per stage ("unlearn: started",
"unlearn: done in 14 s") instead of kfp.local's executor dumps. Each task's whole output (kfp.local's
own log lines and the task process's) goes to ``task.log`` in that task's folder; kfp.local's
pipeline-level lines go to ``kfp.log`` in the run folder. A failed task's last lines are shown
with its failure, quiet or not, so that its error is never lost."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

TASK_LOG = "task.log"  # in each task's folder, beside its outputs
RUN_LOG = "kfp.log"  # in the run folder: kfp.local's lines outside the tasks
TAIL_LINES = 25


def _quiet() -> bool:
    return os.environ.get("RFAU_QUIET", "") not in ("", "0")


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last ``lines`` non-blank lines of a task log (kfp.local indents them; the indent goes)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]


@contextlib.contextmanager
def stage_lines(progress: TextIO | None = None) -> Iterator[io.StringIO]:
    """Within this context, every task kfp.local runs writes its output to its own ``task.log``, and
    ``progress`` (default: this process's stderr as it is now) gets a line when a task starts and
    when it ends; a failure's line comes with the task log's tail even under RFAU_QUIET. Yields the
    buffer that collects kfp.local's other lines (the caller files it as the run's ``kfp.log``)."""
    from kfp.local import executor_input_utils, logging_utils, task_dispatcher

    shown = progress or sys.stderr
    run_one = task_dispatcher.run_single_task_implementation

    def say(line: str, always: bool = False) -> None:
        if always or not _quiet():
            print(line, file=shown, flush=True)

    def run_task(*args, **kwargs):
        component_name = kwargs.get("component_name", args[1] if len(args) > 1 else "task")
        name = executor_input_utils.get_local_task_resource_name(component_name)
        task_root = Path(
            executor_input_utils.construct_local_task_root(
                pipeline_root=kwargs["pipeline_root"],
                pipeline_resource_name=kwargs["pipeline_resource_name"],
                task_resource_name=name,
            )
        )
        task_root.mkdir(parents=True, exist_ok=True)
        log_path = task_root / TASK_LOG
        say(f"{name}: started")
        started = time.monotonic()
        # kfp.local prints the task's output and logs its own lines to sys.stdout as it is when
        # the task runs: pointed at the task's log file here
        with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            outputs, status = run_one(*args, **kwargs)
        seconds = time.monotonic() - started
        if status.name == "SUCCESS":
            say(f"{name}: done in {seconds:.0f} s")
        else:
            say(f"{name}: failed after {seconds:.0f} s; the end of its log ({log_path}):", always=True)
            for line in tail(log_path):
                say(f"  | {line}", always=True)
        return outputs, status

    collected = io.StringIO()
    task_dispatcher.run_single_task_implementation = run_task
    # kfp.local colours task names and states with ANSI escapes unconditionally: not in log files
    colour = logging_utils.color_text
    logging_utils.color_text = lambda text, color: text
    try:
        # kfp.local's own lines outside the tasks (pipeline started/finished, warnings) are kept
        # for the run's kfp.log: none reaches the terminal
        with contextlib.redirect_stdout(collected), contextlib.redirect_stderr(collected):
            yield collected
    finally:
        task_dispatcher.run_single_task_implementation = run_one
        logging_utils.color_text = colour
