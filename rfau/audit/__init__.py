"""Audit trail of deletions: the hash-chained ledger and the per-request proof of deletion."""

from rfau.audit.ledger import (
    GENESIS,
    Ledger,
    canonical,
    load_or_create_salt,
    parse_records,
    record_hash,
    subject_hash,
    verify,
    verify_bytes,
)
from rfau.audit.proof import render_proof

__all__ = [
    "GENESIS",
    "Ledger",
    "canonical",
    "load_or_create_salt",
    "parse_records",
    "record_hash",
    "render_proof",
    "subject_hash",
    "verify",
    "verify_bytes",
]
