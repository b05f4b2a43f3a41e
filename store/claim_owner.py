"""Who holds a claim, and whether that process still lives.

A deliverer (or any worker that claims rows) writes its owner id on what it claims. The id is
backed by a lock the operating system or the database drops the moment the process dies:

- on PostgreSQL, a session advisory lock held on a connection of its own: when the process is
  killed its socket closes, the server ends the session and the lock is gone (this works for
  workers on several machines);
- on SQLite (one machine by nature), an ``flock`` on a file named after the id: the kernel
  releases it when the process dies.

So a restarted ``keydesk run`` (or another worker) sees at once that the claims of a dead owner
are abandoned, instead of waiting for a lease to end. Leases stay as the fallback for an owner
that lives but stalls.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

_OWNER_ID = re.compile(r"^[0-9a-f]{32}$")


def advisory_key(namespace: str, name: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key for ``name`` within ``namespace``."""
    digest = hashlib.sha256(f"keydesk\0{namespace}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class ClaimOwner:
    """This process's identity on the rows it claims. Use ``open_owner``; ``close`` at shutdown."""

    def __init__(self, owner_id: str) -> None:
        self.id = owner_id

    def alive(self, other_id: str) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> ClaimOwner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _PostgresOwner(ClaimOwner):
    def __init__(self, owner_id: str, engine: Engine) -> None:
        super().__init__(owner_id)
        self._engine = engine
        # A connection of our own, kept for the process's life: the lock lives as long as it does.
        self._holder: Connection | None = engine.connect()
        self._holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": advisory_key("owner", owner_id)})
        self._holder.commit()

    def alive(self, other_id: str) -> bool:
        if other_id == self.id:
            return True
        key = advisory_key("owner", other_id)
        with self._engine.connect() as connection:
            taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            if taken:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
        return not taken

    def close(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            # Unlocked first: the server ends a closed session a moment later, and until then the
            # lock would still say "alive". Then closed for real, not returned to the pool.
            try:
                holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_key("owner", self.id)})
                holder.commit()
            except Exception:
                log.debug("claim owner %s: unlock before close failed", self.id, exc_info=True)
            holder.invalidate()
            holder.close()


class _FileOwner(ClaimOwner):
    def __init__(self, owner_id: str, directory: Path) -> None:
        super().__init__(owner_id)
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._path = self._directory / f"owner-{owner_id}.lock"
        self._fd: int | None = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def alive(self, other_id: str) -> bool:
        if other_id == self.id:
            return True
        if not _OWNER_ID.match(other_id):
            return False
        path = self._directory / f"owner-{other_id}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False  # released and cleaned up, or from another machine's directory: gone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            path.unlink(missing_ok=True)  # a dead owner's file: tidy it away while we hold it
            return False
        finally:
            os.close(fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._path.unlink(missing_ok=True)
            os.close(fd)


def open_owner(engine: Engine, lock_directory: Path) -> ClaimOwner:
    """A fresh owner for this process: an advisory lock on PostgreSQL, a lock file otherwise."""
    owner_id = uuid.uuid4().hex
    owner: ClaimOwner = (
        _PostgresOwner(owner_id, engine) if is_postgres(engine) else _FileOwner(owner_id, lock_directory)
    )
    log.debug("claim owner %s (pid %d)", owner_id, os.getpid())
    return owner
