"""Keep taking mail: IDLE (renewed in time), an interval poll when the server has no IDLE, and
reconnection with exponential backoff. A stop event ends the loop cleanly between passes.

The caller holds the mailbox lock for the loop's whole life, so passes never overlap with another
process's. Every network wait has a timeout: IDLE is renewed every ``idle_renew_seconds`` (at most
ten minutes, before servers drop it) and other commands use the socket timeout.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.exc import OperationalError

from intake.intake_service import IntakeService, PassReport
from intake.poller import TRANSIENT_ERRORS, MailboxConnection, MailboxError
from intake.raw_store import RawStoreError
from intake.settings import PollSettings

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 1.0


def run_idle_loop(
    service: IntakeService,
    connect: Callable[[], MailboxConnection],
    poll: PollSettings,
    stop: threading.Event,
    on_pass: Callable[[PassReport], None] | None = None,
    wake: threading.Event | None = None,
) -> None:
    """Run passes until ``stop`` is set. ``connect`` returns an unopened MailboxConnection; ``wake``,
    when set, starts a pass at once (new mail known before the server announces it)."""
    backoff = FIRST_BACKOFF_SECONDS
    label = f"{service.desk}: {service.account} {service.mailbox.folder}"
    while not stop.is_set():
        try:
            with connect() as conn:
                log.info("intake connected to %s (%s)", label, "IDLE" if conn.supports_idle else "polling")
                _catch_up(service, conn, stop, on_pass)
                backoff = FIRST_BACKOFF_SECONDS  # a full pass worked: the connection is healthy
                while not stop.is_set():
                    if conn.supports_idle:
                        # Mail that arrived during the pass was announced then, not in IDLE: look first.
                        if not conn.new_mail_announced():
                            conn.idle_wait(poll.idle_renew_seconds, stop, wake=wake)
                    elif stop.wait(poll.poll_interval_seconds):
                        break
                    if stop.is_set():
                        break
                    _catch_up(service, conn, stop, on_pass)
        except (MailboxError, RawStoreError, OperationalError, *TRANSIENT_ERRORS) as exc:
            if stop.is_set():
                break
            log.warning("intake for %s: %s: %s; reconnecting in %.0f s", label, type(exc).__name__, exc, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, float(poll.reconnect_max_seconds))
        except Exception:  # a daemon thread must not die silently
            if stop.is_set():
                break
            log.exception("intake for %s failed unexpectedly; retrying in %.0f s", label, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, float(poll.reconnect_max_seconds))
    log.info("intake for %s stopped", label)


def _catch_up(
    service: IntakeService, conn: MailboxConnection, stop: threading.Event, on_pass: Callable[[PassReport], None] | None
) -> None:
    """Take what is waiting: a backlog window after window without waiting for news; a stop is
    heard between windows."""
    for report in service.run_until_caught_up(conn):
        _report(report, on_pass)
        if stop.is_set():
            return


def _report(report: PassReport, on_pass: Callable[[PassReport], None] | None) -> None:
    for taken in report.taken:
        log.info("took UID %s from %s: %s %s", taken.uid, taken.sender, taken.state, taken.verdict or "")
    if on_pass is not None:
        on_pass(report)
