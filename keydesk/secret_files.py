"""Secret files keydesk creates itself: the key-encryption key and embedded mail passwords."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Callable

from store.files import write_private
from store.key_vault import KeyVault

log = logging.getLogger(__name__)


def write_private_file(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_private(path, (content + "\n").encode("utf-8"), replace=False)


def ensure_secret_file(path: Path, make: Callable[[], str], what: str) -> bool:
    """Create the file when missing; returns True when it was created."""
    if path.exists():
        return False
    write_private_file(path, make())
    log.info("created %s at %s (mode 0600)", what, path)
    return True


def ensure_key_encryption_key(env_name: str, path: Path) -> bool:
    if os.environ.get(env_name):
        return False
    return ensure_secret_file(path, KeyVault.new_key, "key-encryption key")


def new_password() -> str:
    return secrets.token_urlsafe(18)


def ensure_audit_key(env_name: str, path: Path) -> bool:
    if os.environ.get(env_name):
        return False
    return ensure_secret_file(path, lambda: secrets.token_urlsafe(32), "audit key")
