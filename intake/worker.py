"""A desk's intake when several `keydesk run` workers share one PostgreSQL database.

One worker at a time holds the desk's mailbox (the advisory lock of intake/mailbox_lock.py) and
runs the IDLE loop: it records new mail, processes it and files it. The others stand by: they
process mail the holder has recorded and not yet begun (claimed in batches with ``FOR UPDATE SKIP
LOCKED``, so each mail is taken by one worker and the workers take different batches side by side,
intake/intake_service.py), so a burst is shared. A standby worker LISTENs for the holder's NOTIFY
sent with each recording commit, so it starts on a burst at once; it also tries the lock again
every ``standby_seconds``, so when the holder dies one of them takes the mailbox over within that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from intake.idle_loop import run_idle_loop
from intake.intake_service import IntakeService, PassReport
from intake.mailbox_lock import MailboxLock, PostgresMailboxLock
from intake.poller import MailboxConnection
from intake.raw_store import RawStoreError
from intake.recording import RECORDED_CHANNEL
from intake.settings import PollSettings
from store.claim_owner import is_postgres

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

STANDBY_SECONDS = 0.5
_STOP_SLICE_SECONDS = 0.5


def run_desk_worker(
    service: IntakeService,
    lock: MailboxLock | PostgresMailboxLock,
    connect: Callable[[], MailboxConnection],
    poll: PollSettings,
    stop: threading.Event,
    on_pass: Callable[[PassReport], None] | None = None,
    standby_seconds: float = STANDBY_SECONDS,
    wake: threading.Event | None = None,
    on_standby: Callable[[PassReport], None] | None = None,
) -> None:
    """Hold the mailbox when it is free; until then, help with the mail its holder recorded.

    ``on_pass`` follows each pass over the mailbox; ``on_standby`` (default: ``on_pass``) each
    standby round that processed mail, which is no pass over the mailbox (`keydesk status` must
    not see a fresh pass while nobody reads the mailbox).
    """
    on_standby = on_standby or on_pass
    standing_by = False
    listener = _Listener(service.engine)
    try:
        while not stop.is_set():
            if lock.try_acquire():
                listener.close()
                if standing_by:
                    log.info("intake for %s: took the mailbox over", lock.label)
                try:
                    run_idle_loop(service, connect, poll, stop, on_pass=on_pass, wake=wake)
                finally:
                    lock.release()
                return
            if not standing_by:
                log.info("intake for %s: another worker holds the mailbox; standing by", lock.label)
                standing_by = True
            try:
                report = service.process_pending()
            except (OperationalError, RawStoreError) as exc:
                log.warning("intake for %s: standby processing failed: %s", lock.label, exc)
            else:
                if report.taken and on_standby is not None:
                    on_standby(report)
            listener.wait(standby_seconds, stop)
    finally:
        listener.close()


class _Listener:
    """Waits for the holder's "new mail recorded" NOTIFY (PostgreSQL), or just for the time to pass.

    A connection of its own, outside the pool, in autocommit (LISTEN takes effect at once).
    Notifications sent while the worker was processing wait in the socket for the next ``wait``.
    If the connection fails, the worker goes on with the plain pause."""

    def __init__(self, engine: Engine) -> None:
        self._connection: psycopg.Connection[Any] | None = None
        if not is_postgres(engine):
            return
        import psycopg  # the [postgres] extra: only a PostgreSQL deployment has it

        self._errors: type[Exception] = psycopg.Error
        try:
            url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            self._connection = psycopg.connect(url, autocommit=True)
            self._connection.execute(f"LISTEN {RECORDED_CHANNEL}")
        except psycopg.Error as exc:
            log.warning("standby worker: no LISTEN connection (%s); looking for mail every round", exc)
            self.close()

    def wait(self, seconds: float, stop: threading.Event) -> None:
        if self._connection is None:
            stop.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        try:
            # In short slices, so a stop is seen within one of them.
            while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
                for _ in self._connection.notifies(timeout=min(remaining, _STOP_SLICE_SECONDS), stop_after=1):
                    return
        except self._errors as exc:
            log.warning("standby worker: the LISTEN connection failed (%s); looking for mail every round", exc)
            self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except self._errors:
                pass
