"""What runs beside the intake in `keydesk run`: outbox delivery and the digest schedule.

Each companion starts with the runtime and the daemon's stop event and returns a function that
stops it; the daemon stops them in reverse order on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Callable

from intake.intake_service import PassReport
from keydesk.cli_digest import targets_for
from keydesk.cli_outbox import connector_for
from keydesk.runtime import Runtime
from mailer.delivery import deliver_due
from mailer.reply import template_environment
from mailer.scheduler import digest_job, start_digest_scheduler
from mailer.smtp_client import SmtpSession
from store.claim_owner import ClaimOwner, open_owner

log = logging.getLogger(__name__)
Stopper = Callable[[], None]


def deliver_now(runtime: Runtime, owner: ClaimOwner | None = None) -> None:
    """One delivery round of everything due (used by the daemon loop and the demo).

    With ``owner``, the claims of deliverers that died (a killed earlier ``keydesk run``, another
    worker) are taken back at once rather than when their lease ends.
    """
    report = deliver_due(runtime.engine, SmtpSession(connector_for(runtime.settings)), runtime.settings.outbox,
                         now=datetime.now(timezone.utc), owner=owner)
    if report.ids or report.connection_error:
        log.info("outbox: %s%s", report.summary(),
                 f" (server unreachable: {report.connection_error})" if report.connection_error else "")


# Set when the intake took mail, so its replies go out at once rather than at the next round.
_outbox_wake = threading.Event()


def wake_outbox(report: PassReport | None = None) -> None:
    """The intake loop's ``on_pass``: a pass that took mail has replies waiting in the outbox."""
    if report is None or report.taken:
        _outbox_wake.set()


def outbox_companion(runtime: Runtime, stop: threading.Event) -> Stopper:
    interval = runtime.settings.outbox.deliver_interval_seconds
    owner = open_owner(runtime.engine, runtime.settings.home / "var" / "locks")

    def loop() -> None:
        while not stop.is_set():
            _outbox_wake.clear()
            try:
                deliver_now(runtime, owner)
            except Exception:  # noqa: BLE001 - one bad round must not end delivery for good
                log.exception("outbox delivery round failed; trying again in %d s", interval)
            _outbox_wake.wait(interval)  # the schedule's pause, cut short by new replies or shutdown

    def stopper() -> None:
        stop.set()
        _outbox_wake.set()
        thread.join(timeout=60)
        owner.close()

    thread = threading.Thread(target=loop, name="outbox", daemon=True)
    thread.start()
    log.info("outbox delivery every %d s and right after mail is taken in", interval)
    return stopper


def digest_companion(runtime: Runtime, stop: threading.Event) -> Stopper:
    settings = runtime.settings
    job = digest_job(runtime.engine, targets_for(settings, None),
                     template_environment(settings.config_dir / "templates"), zone=settings.digest.timezone)
    scheduler = start_digest_scheduler(settings.digest, job)
    log.info("staff digest scheduled: %s (%s)", settings.digest.schedule, settings.digest.timezone)
    return lambda: scheduler.shutdown(wait=True)


COMPANIONS = (outbox_companion, digest_companion)
