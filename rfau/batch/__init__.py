"""One scheduled deletion batch: the pipeline's four stages over the request store, the model
registry and the audit ledger.

    data-split -> unlearn -> evaluate -> register

Each stage is one function from folders to a folder, given the batch's ``BatchContext`` (its
settings, registry, request store and ledger); the KFP components, ``dvc.yaml`` (through the CLI)
and ``rfau batch run`` are thin drivers of these that make the context. A batch

- claims every pending request (pending -> in-progress), rejects the ones that fail validation
  with their reason, and unions the rest into one forget set;
- starts from the registry's current champion (training and registering an original model
  only where the registry has none), keeping every sample forgotten by earlier batches out of
  the retain and calibration sets;
- marks its requests fulfilled only after the register stage has committed a version that
  passed its gates; when a gate fails, the requests go back to pending with the reason.

With nothing pending, every stage writes a small "empty" marker and returns at once.
"""

from rfau.batch.base_model import bootstrap, champion_lineage, ensure_base, staged_base_model
from rfau.batch.common import BATCH, EVIDENCE, new_batch_id, read_batch
from rfau.batch.context import BatchContext
from rfau.batch.evaluation import evaluate
from rfau.batch.recovery import _abandon_orphans, abort, recover
from rfau.batch.registration import register
from rfau.batch.runner import run_batch
from rfau.batch.splitting import data_split, requested_samples
from rfau.batch.unlearning import unlearn
from rfau.data.request_store import default_store
from rfau.io import md5_file

__all__ = [
    "BATCH",
    "EVIDENCE",
    "BatchContext",
    "_abandon_orphans",
    "abort",
    "bootstrap",
    "champion_lineage",
    "data_split",
    "default_store",
    "ensure_base",
    "evaluate",
    "md5_file",
    "new_batch_id",
    "read_batch",
    "recover",
    "register",
    "requested_samples",
    "run_batch",
    "staged_base_model",
    "unlearn",
]
