"""cleanup: the pipeline's exit task. When any task after data-split failed (or the run was
cancelled), the batch's claimed requests go back to pending at once instead of staying
in-progress until the stale timeout; after a successful run it does nothing (register has already
settled every request: fulfilled, or pending again when a gate failed)."""

# no "from __future__ import annotations": KFP reads the real annotations of the component

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from rfau.components.image import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def cleanup(batch: Input[Dataset], status: dsl.PipelineTaskFinalStatus, receipt: Output[Markdown]):
    # the body runs alone in the task's pod (KFP ships only this function): imports stay inside
    from pathlib import Path

    released = []
    if status.state != "SUCCEEDED":  # FAILED or CANCELED: release only this batch's in-progress claims
        from rfau.batch import abort  # only here: after a success the task ends without loading torch

        reason = f"pipeline run {status.state.lower()}"
        if status.error_message:
            reason += f": {status.error_message}"
        released = abort(batch.path, reason)
    if released:
        text = f"Run {status.state.lower()}: requests {', '.join(released)} are pending again.\n"
    else:
        text = f"Run {status.state.lower()}: no request to release.\n"
    print(text, end="")
    Path(receipt.path).write_text(text)
