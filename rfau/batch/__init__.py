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

from rfau.lazy import lazy_exports

# the names below load on first use (PEP 562): a process that only settles a batch (a local
# pipeline run's abort, the exit task) or reads one does not import every stage, and torch with them
_EXPORTS = {
    "bootstrap": "rfau.batch.base_model",
    "champion_lineage": "rfau.batch.base_model",
    "ensure_base": "rfau.batch.base_model",
    "staged_base_model": "rfau.batch.base_model",
    "BATCH": "rfau.batch.common",
    "EVIDENCE": "rfau.batch.common",
    "new_batch_id": "rfau.batch.common",
    "read_batch": "rfau.batch.common",
    "BatchContext": "rfau.batch.context",
    "evaluate": "rfau.batch.evaluation",
    "_abandon_orphans": "rfau.batch.recovery",
    "abort": "rfau.batch.recovery",
    "recover": "rfau.batch.recovery",
    "release_on_sigterm": "rfau.batch.recovery",
    "register": "rfau.batch.registration",
    "check_before_claiming": "rfau.batch.preflight",
    "check_method_settings": "rfau.batch.preflight",
    "run_batch": "rfau.batch.runner",
    "data_split": "rfau.batch.splitting",
    "unlearn": "rfau.batch.unlearning",
    "default_store": "rfau.data.request_store",
    "md5_file": "rfau.io",
}


__getattr__ = lazy_exports(__name__, _EXPORTS, submodules=True)


__all__ = [
    "BATCH",
    "EVIDENCE",
    "BatchContext",
    "_abandon_orphans",
    "abort",
    "bootstrap",
    "champion_lineage",
    "check_before_claiming",
    "check_method_settings",
    "data_split",
    "default_store",
    "ensure_base",
    "evaluate",
    "md5_file",
    "new_batch_id",
    "read_batch",
    "recover",
    "register",
    "release_on_sigterm",
    "run_batch",
    "staged_base_model",
    "unlearn",
]
