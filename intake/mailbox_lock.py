"""One poller per mailbox across processes: an exclusive lock file per (desk, account, mailbox).

``flock`` locks are released by the kernel when the holder dies, so a crashed poller never
leaves a stale lock behind. The file name is a hash, so no configured name reaches the path.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from foundation.errors import OperationalError


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

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MailboxBusy(self.desk, f"another keydesk process is already taking mail from {self.label}") from None
        # The holder's pid, for a person wondering who holds it (the lock itself is the flock).
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

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
