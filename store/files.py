"""Writing files that hold secrets (keys, key notices, passwords): mode 0600 from the first byte,
fsynced, and either created new (never overwriting) or replaced atomically."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes, *, replace: bool, mode: int = 0o600) -> None:
    """``replace=False``: create ``path``, refusing to overwrite (FileExistsError).
    ``replace=True``: write a temporary file beside it and rename it over ``path``, so a reader
    sees the old content or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    if replace:
        target.unlink(missing_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(target, path)
    except BaseException:
        if replace:
            target.unlink(missing_ok=True)
        raise
