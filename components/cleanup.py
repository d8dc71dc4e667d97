"""cleanup: the pipeline's exit task. When any task after data-split failed (or the run was
cancelled), the batch's claimed requests go back to pending at once instead of staying
in-progress until the stale timeout; after a successful run it does nothing (register has already
settled every request: fulfilled, or pending again when a gate failed)."""

# no "from __future__ import annotations": KFP reads the real annotations of the component

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from rfau.components.image import CPU_IMAGE

SUCCEEDED = "SUCCEEDED"  # KFP's PipelineTaskFinalStatus.state of a run that went through


def release_claims(batch_dir: str, state: str, error_message: str | None = None) -> list[str]:
    """The requests put back to pending (none after success, none when the batch is empty or
    they were settled already: rfau.batch.abort releases only this batch's in-progress claims)."""
    if state == SUCCEEDED:
        return []
    from rfau.batch import abort

    reason = f"pipeline run {state.lower()}" + (f": {error_message}" if error_message else "")
    return abort(batch_dir, reason)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def cleanup(batch: Input[Dataset], status: dsl.PipelineTaskFinalStatus, receipt: Output[Markdown]):
    from pathlib import Path

    from rfau.components.cleanup import release_claims

    released = release_claims(batch.path, status.state, status.error_message)
    if released:
        text = f"Run {status.state.lower()}: requests {', '.join(released)} are pending again.\n"
    else:
        text = f"Run {status.state.lower()}: no request to release.\n"
    print(text, end="")
    Path(receipt.path).write_text(text)
