"""Hash helpers used across the ledger (SHA-256 everywhere, as DESIGN.md fixes)."""

from __future__ import annotations

import hashlib


def sha256(data: bytes) -> bytes:
    """SHA-256 of *data*."""
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    """Double SHA-256 of *data* (address checksums)."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()
