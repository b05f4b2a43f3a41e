"""Raw mails and extracted documents, stored by SHA-256: in files, or in the database.

Names come from the content hash only, never from anything a sender wrote. Two stores keep the
same interface (``put``, ``put_many``, ``read``) and the same names (``mail/ab/<sha256>.eml``):

- ``RawStore`` (``[storage] backend = "files"``, the default): a file is written to a temporary
  name, fsync'ed, renamed into place and its directory fsync'ed, so after ``put`` returns the
  bytes survive a crash or power loss, and a half-written file never has a final name.
- ``DatabaseRawStore`` (``backend = "database"``): the bytes go into the ``stored_blob`` table and
  are durable once its transaction commits. Every worker that reaches the database reaches the
  mail, which is what several ``keydesk run`` processes on several machines need.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from foundation.errors import OperationalError
from store.retry import retry_on_conflict
from store.tables import StoredBlob

_BLOB = StoredBlob.__table__

_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
_RELATIVE = re.compile(r"^[a-z]+/[0-9a-f]{2}/[0-9a-f]{64}\.[a-z0-9]{1,8}$")
KINDS = ("mail", "documents")
# fsyncs of one batch run side by side: the filesystem folds concurrent fsyncs into one journal
# commit (ext4's jbd2, XFS's log), about four times faster than one after the other, and every file
# is still fsync'ed before ``put_many`` returns. The threads only wait on the kernel.
_SYNC_THREADS = 8


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
        stored, touched, pending = [], set(), {}
        for data in items:
            digest = sha256_hex(data)
            relative = f"{kind}/{digest[:2]}/{digest}{suffix}"
            target = self.directory / relative
            stored.append(StoredFile(digest, relative, len(data)))
            # Content-addressed: a file of the right size under this name already holds these
            # bytes (only fully written files are ever renamed into place).
            if target in pending or (target.is_file() and target.stat().st_size == len(data)):
                continue
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True, exist_ok=True)
                touched.add(target.parent.parent)  # the new folder's own entry must survive too
            pending[target] = data
            touched.add(target.parent)
        # Every file is durable under its final name before any folder holding it is fsync'ed.
        _in_parallel(lambda item: _write_synced(*item), list(pending.items()))
        for depth in sorted({len(d.parts) for d in touched}, reverse=True):
            _in_parallel(_fsync_directory, [d for d in touched if len(d.parts) == depth])
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

    def remove(self, relative_path: str) -> None:
        """Remove a stored file (the retention purge); one already gone is no error."""
        self.path(relative_path).unlink(missing_ok=True)


class DatabaseRawStore(RawStore):
    """The same store kept in the database (``stored_blob``), for workers on several machines."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(Path("."))
        self.engine = engine

    def put_many(self, items: list[bytes], *, kind: str = "mail", suffix: str = ".eml") -> list[StoredFile]:
        """Store several blobs in one transaction: durable once it commits; known names are skipped."""
        if kind not in KINDS:
            raise RawStoreError(f"unknown kind {kind!r}")
        if not _SUFFIX.match(suffix):
            raise RawStoreError(f"a stored file's suffix is a short lower-case extension, not {suffix!r}")
        stored, blobs = [], {}
        for data in items:
            digest = sha256_hex(data)
            relative = f"{kind}/{digest[:2]}/{digest}{suffix}"
            stored.append(StoredFile(digest, relative, len(data)))
            blobs[relative] = data
        if not blobs:
            return stored

        def attempt() -> None:
            with self.engine.begin() as connection:
                known = set(connection.execute(select(_BLOB.c.name).where(_BLOB.c.name.in_(list(blobs)))).scalars())
                missing = [
                    {"name": name, "size": len(data), "data": data} for name, data in blobs.items() if name not in known
                ]
                if missing:
                    connection.execute(insert(_BLOB), missing)

        # Two workers storing the same bytes at once: the loser finds the winner's row next time.
        retry_on_conflict(attempt, what="storing raw mail in the database")
        return stored

    def path(self, relative_path: str) -> Path:
        raise RawStoreError("mail stored in the database has no file path; use read()")

    def read(self, relative_path: str) -> bytes:
        if not _RELATIVE.match(relative_path):
            raise RawStoreError(f"not a stored file name: {relative_path!r}")
        with self.engine.connect() as connection:
            data = connection.execute(select(_BLOB.c.data).where(_BLOB.c.name == relative_path)).scalar()
        if data is None:
            raise RawStoreError(f"stored blob {relative_path} is missing from the database")
        expected = relative_path.rsplit("/", 1)[1].split(".", 1)[0]
        if sha256_hex(bytes(data)) != expected:
            raise RawStoreError(f"stored blob {relative_path} does not match its hash (damaged storage)")
        return bytes(data)

    def remove(self, relative_path: str) -> None:
        if not _RELATIVE.match(relative_path):
            raise RawStoreError(f"not a stored file name: {relative_path!r}")
        with self.engine.begin() as connection:
            connection.execute(delete(_BLOB).where(_BLOB.c.name == relative_path))


def open_raw_store(backend: str, directory: Path, engine: Engine) -> RawStore:
    """The store ``[storage] backend`` names: "files" under ``directory``, or "database"."""
    return DatabaseRawStore(engine) if backend == "database" else RawStore(directory)


def _in_parallel(action, items: list) -> None:
    """Run ``action`` on every item, side by side when there are several; the first error is raised
    (after all have ended)."""
    if len(items) <= 1:
        for item in items:
            action(item)
        return
    with ThreadPoolExecutor(max_workers=min(_SYNC_THREADS, len(items))) as pool:
        for _ in pool.map(action, items):
            pass


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
