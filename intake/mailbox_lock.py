"""One poller per mailbox across processes: an exclusive lock per (desk, account, mailbox).

With SQLite (one machine) it is an ``flock`` on a lock file; with PostgreSQL (workers on several
machines) a session advisory lock held on a connection of its own. Either is released by the
kernel or the server when the holder dies, so a crashed poller never leaves a stale lock behind.
The file name and the lock key are hashes, so no configured name reaches a path or a query.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from foundation.errors import OperationalError
from store.claim_owner import advisory_key, is_postgres


class MailboxBusy(OperationalError):
    """Another keydesk process is already taking mail from this mailbox."""

    def __init__(self, desk: str, detail: str) -> None:
        super().__init__(f"{desk}: 別の keydesk が受信中です ({detail})")
        self.desk = desk


def lock_path(lock_directory: Path, desk: str, account: str, mailbox: str) -> Path:
    digest = hashlib.sha256("\0".join((desk, account, mailbox)).encode("utf-8")).hexdigest()[:32]
    return Path(lock_directory) / f"mailbox-{digest}.lock"


class MailboxLock:
    def __init__(self, lock_directory: Path, desk: str, account: str, mailbox: str) -> None:
        self.path = lock_path(lock_directory, desk, account, mailbox)
        self.desk = desk
        self.label = f"{desk}: {account} {mailbox}"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        # The holder's pid, for a person wondering who holds it (the lock itself is the flock).
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def acquire(self) -> None:
        if not self.try_acquire():
            raise MailboxBusy(self.desk, f"another keydesk process is already taking mail from {self.label}")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> MailboxLock:
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()


class PostgresMailboxLock:
    """The same lock as a PostgreSQL advisory lock, for workers on several machines."""

    def __init__(self, engine: Engine, desk: str, account: str, mailbox: str) -> None:
        self.key = advisory_key("mailbox", "\0".join((desk, account, mailbox)))
        self.desk = desk
        self.label = f"{desk}: {account} {mailbox}"
        self._engine = engine
        self._holder: Connection | None = None

    def try_acquire(self) -> bool:
        connection = self._engine.connect()
        taken = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar()
        connection.commit()
        if not taken:
            connection.close()
            return False
        self._holder = connection
        return True

    def acquire(self) -> None:
        if not self.try_acquire():
            raise MailboxBusy(self.desk, f"another keydesk process is already taking mail from {self.label}")

    def release(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            # Closed for real, not returned to the pool: ending the session releases the lock.
            holder.invalidate()
            holder.close()

    def __enter__(self) -> PostgresMailboxLock:
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()


def mailbox_lock_for(
    engine: Engine | None, lock_directory: Path, desk: str, account: str, mailbox: str
) -> MailboxLock | PostgresMailboxLock:
    """An advisory lock when the database is PostgreSQL, else the lock file."""
    if engine is not None and is_postgres(engine):
        return PostgresMailboxLock(engine, desk, account, mailbox)
    return MailboxLock(lock_directory, desk, account, mailbox)
