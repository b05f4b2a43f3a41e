"""Raw mails and extracted documents, stored by SHA-256 under the storage directory.

Names come from the content hash only, never from anything a sender wrote. A file is written to
a temporary name, fsync'ed, renamed into place and its directory fsync'ed, so after ``put``
returns the bytes survive a crash or power loss, and a half-written file never has a final name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from foundation.errors import OperationalError

_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
_RELATIVE = re.compile(r"^[a-z]+/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z0-9]{1,8}$")
KINDS = ("mail", "documents")


class RawStoreError(OperationalError):
    """The raw mail store cannot keep or give back a file (disk, permissions, a file changed)."""


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    relative_path: str  # what the database keeps: relative to the storage directory
    size: int


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RawStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def put(self, data: bytes, *, kind: str = "mail", suffix: str = ".eml") -> StoredFile:
        """Store ``data`` durably; storing the same bytes again is a no-op."""
        return self.put_many([data], kind=kind, suffix=suffix)[0]

    def put_many(self, items: list[bytes], *, kind: str = "mail", suffix: str = ".eml") -> list[StoredFile]:
        """Store several files durably: each file fsync'ed, then each folder touched fsync'ed once."""
        if kind not in KINDS:
            raise RawStoreError(f"unknown kind {kind!r}")
        if not _SUFFIX.match(suffix):
            raise RawStoreError(f"a stored file's suffix is a short lower-case extension, not {suffix!r}")
        stored, touched = [], set()
        for data in items:
            digest = sha256_hex(data)
            relative = f"{kind}/{digest[:2]}/{digest}{suffix}"
            target = self.directory / relative
            stored.append(StoredFile(digest, relative, len(data)))
            # Content-addressed: a file of the right size under this name already holds these
            # bytes (only fully written files are ever renamed into place).
            if target.is_file() and target.stat().st_size == len(data):
                continue
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True, exist_ok=True)
                touched.add(target.parent.parent)  # the new folder's own entry must survive too
            _write_synced(target, data)
            touched.add(target.parent)
        for directory in sorted(touched, key=lambda d: len(d.parts), reverse=True):
            _fsync_directory(directory)
        return stored

    def path(self, relative_path: str) -> Path:
        """The absolute path of a stored file; refuses anything but the store's own names."""
        if not _RELATIVE.match(relative_path):
            raise RawStoreError(f"not a stored file name: {relative_path!r}")
        return self.directory / relative_path

    def read(self, relative_path: str) -> bytes:
        data = self.path(relative_path).read_bytes()
        expected = relative_path.rsplit("/", 1)[1].split(".", 1)[0]
        if sha256_hex(data) != expected:
            raise RawStoreError(f"stored file {relative_path} does not match its hash (damaged storage)")
        return data


def _write_synced(target: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
