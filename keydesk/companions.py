"""What runs beside the intake in `keydesk run`: outbox delivery and the digest schedule.

Each companion starts with the runtime and the daemon's stop event and returns a function that
stops it; the daemon stops them in reverse order on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from collections.abc import Callable

from intake.intake_service import PassReport
from intake.revocations import RecheckReport, recheck_accepted
from keydesk.composition import connector_for, lookup_service, targets_for
from keydesk.runtime import Runtime
from mailer.delivery import DeliveryReport, deliver_due
from mailer.reply import template_environment
from mailer.scheduler import digest_job, start_digest_scheduler
from mailer.smtp_client import SmtpSession
from store.claim_owner import ClaimOwner, open_owner

log = logging.getLogger(__name__)
Stopper = Callable[[], None]


def deliver_now(runtime: Runtime, owner: ClaimOwner | None = None) -> DeliveryReport:
    """One delivery round of everything due (the daemon loop, `poll --once` and the demo).

    With ``owner``, the claims of deliverers that died (a killed earlier ``keydesk run``, another
    worker) are taken back at once rather than when their lease ends.
    """
    report = deliver_due(
        runtime.engine,
        SmtpSession(connector_for(runtime.settings)),
        runtime.settings.outbox,
        now=datetime.now(timezone.utc),
        owner=owner,
    )
    if report.ids or report.connection_error:
        log.info(
            "outbox: %s%s",
            report.summary(),
            f" (server unreachable: {report.connection_error})" if report.connection_error else "",
        )
    return report


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
            except Exception:
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
    job = digest_job(
        runtime.engine,
        targets_for(settings, None),
        template_environment(settings.config_dir / "templates"),
        zone=settings.digest.timezone,
    )
    scheduler = start_digest_scheduler(settings.digest, job)
    log.info("staff digest scheduled: %s (%s)", settings.digest.schedule, settings.digest.timezone)
    return lambda: scheduler.shutdown(wait=True)


def console_companion(runtime: Runtime, stop: threading.Event) -> Stopper:
    """The staff console beside the daemon when [console] enabled = true; its decisions wake the outbox."""
    if not runtime.settings.console.enabled:
        return lambda: None
    from keydesk.composition import start_console

    served = start_console(runtime, on_decision=wake_outbox)
    log.info("staff console at %s", served.url)
    return served.stop


def recheck_now(runtime: Runtime) -> RecheckReport:
    """One re-check of the accepted guarantees through each desk's look-up adapter."""
    return recheck_accepted(
        runtime.engine,
        lambda desk: lookup_service(runtime, desk),
        runtime.key_vault,
        datetime.now(timezone.utc),
        desks=runtime.settings.desks,
    )


def revocation_companion(runtime: Runtime, stop: threading.Event) -> Stopper:
    """Accepted guarantees looked up again every ``poll.revocation_recheck_minutes`` (the first round
    one interval after start), so one revoked after acceptance reaches staff in the next digest."""
    minutes = runtime.settings.poll.revocation_recheck_minutes
    if minutes == 0:
        return lambda: None

    def loop() -> None:
        while not stop.wait(minutes * 60):
            try:
                report = recheck_now(runtime)
                if report.checked or report.not_checked:
                    log.info("revocation re-check: %s", report.summary())
            except Exception:
                log.exception("revocation re-check failed; trying again in %d min", minutes)

    thread = threading.Thread(target=loop, name="revocation-recheck", daemon=True)
    thread.start()
    log.info("accepted guarantees are looked up again every %d min", minutes)
    return lambda: thread.join(timeout=60)


HELD_LOOKUP_INTERVAL_SECONDS = 30


def guarantor_service_companion(runtime: Runtime, stop: threading.Event) -> Stopper:
    """The guarantor's look-up service beside the desk, when ``[guarantor.service] start_with_run``."""
    service = runtime.settings.guarantor.service
    if not service.start_with_run:
        return lambda: None
    from keydesk.composition import guarantor_service_app
    from web.server import Listen, ServedApp

    served = ServedApp(
        guarantor_service_app(runtime),
        Listen(service.host, service.port, service.tls_cert_file, service.tls_key_file, what="guarantor.service"),
    ).start()
    log.info("guarantor look-up service at %s", served.url)
    return served.stop


def held_lookup_companion(runtime: Runtime, stop: threading.Event) -> Stopper:
    """Held look-ups (the guarantor's service was unreachable) are tried again when their pause is over."""
    from keydesk.composition import retry_held_lookups  # late: the pipeline is built per round

    desks = [desk_id for desk_id, desk in runtime.settings.desks.items() if desk.lookup.mode != "manual"]

    def loop() -> None:
        while not stop.wait(HELD_LOOKUP_INTERVAL_SECONDS):
            for desk_id in desks:
                try:
                    if retry_held_lookups(runtime, desk_id).anything:
                        wake_outbox()
                except Exception:
                    log.exception(
                        "held look-ups of %s failed; trying again in %d s", desk_id, HELD_LOOKUP_INTERVAL_SECONDS
                    )

    thread = threading.Thread(target=loop, name="held-lookups", daemon=True)
    thread.start()
    return lambda: (stop.set(), thread.join(timeout=60))


COMPANIONS = (
    guarantor_service_companion,
    outbox_companion,
    digest_companion,
    revocation_companion,
    held_lookup_companion,
    console_companion,
)
