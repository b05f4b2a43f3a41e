"""A desk's intake when several `keydesk run` workers share one PostgreSQL database.

One worker at a time holds the desk's mailbox (the advisory lock of intake/mailbox_lock.py) and
runs the IDLE loop: it records new mail, processes it and files it. The others stand by: they
process mail the holder has recorded and not yet begun (each mail is claimed by one worker,
intake/intake_service.py), so a burst is shared, and they try the lock again and again, so when
the holder dies one of them takes the mailbox over within ``standby_seconds``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import OperationalError

from intake.idle_loop import run_idle_loop
from intake.intake_service import IntakeService, PassReport
from intake.mailbox_lock import MailboxLock, PostgresMailboxLock
from intake.poller import MailboxConnection
from intake.raw_store import RawStoreError
from intake.settings import PollSettings

log = logging.getLogger(__name__)

STANDBY_SECONDS = 0.5


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
    while not stop.is_set():
        if lock.try_acquire():
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
        stop.wait(standby_seconds)
