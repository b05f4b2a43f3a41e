"""The daemon behind `keydesk run`: embedded mail servers, one IDLE intake loop per desk, the
companions (outbox delivery, digests) and the metrics endpoint, until a stop event is set.

A service module: the CLI (``keydesk/cli_intake.py``) only installs the signal handlers and prints;
the parts are built by ``keydesk/composition.py``. ``companions`` is a seam the tests replace.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable

from intake.idle_loop import run_idle_loop
from intake.mailbox_lock import PostgresMailboxLock
from intake.worker import run_desk_worker
from intake.intake_service import PassReport
from keydesk import composition
from keydesk.embedded_imap import EmbeddedImap
from keydesk.runtime import Runtime
from keydesk.settings import read_secret
from keydesk.status import record_pass
from store.claim_owner import open_owner

log = logging.getLogger(__name__)

# A companion of `keydesk run` (outbox delivery, digests): started with the runtime and the stop
# event, it returns the function that stops it.
Companion = Callable[[Runtime, threading.Event], Callable[[], None]]
JOIN_SECONDS = 30


def _companions() -> tuple[Companion, ...]:
    from keydesk.companions import COMPANIONS  # late: the mailer's schedules load only for `run`

    return tuple(COMPANIONS)


companions: Callable[[], tuple[Companion, ...]] = _companions


def serve(runtime: Runtime, stop: threading.Event, ready: Callable[[], None] | None = None) -> None:
    """Everything `keydesk run` does, until ``stop`` is set (callable from tests and the demo)."""
    settings = runtime.settings
    with contextlib.ExitStack() as stack:
        if settings.embedded.enabled:
            start_embedded(runtime, stack)
        # This process's claim identity: another worker (or a restart) knows at once when it is gone.
        owner = stack.enter_context(open_owner(runtime.engine, composition.lock_directory(settings)))
        threads = []
        for desk_id in settings.desks:
            service = composition.build_service(runtime, desk_id, owner=owner, on_batch=_after_batch)
            lock = composition.mailbox_lock(settings, desk_id, runtime.engine)
            extra = {}
            if isinstance(lock, PostgresMailboxLock):
                # Several workers may share the database: the one without the mailbox stands by.
                connect = composition.connector(settings, desk_id)
                target, args = run_desk_worker, (service, lock, connect, settings.poll, stop)
                extra = {"on_standby": _after_standby}
            else:
                stack.enter_context(lock)  # MailboxBusy names the desk; keydesk.cli.main prints it
                target, args = run_idle_loop, (service, composition.connector(settings, desk_id), settings.poll, stop)
            mailbox = settings.desks[desk_id].mailbox
            thread = threading.Thread(
                target=target,
                name=f"intake-{desk_id}",
                daemon=True,
                args=args,
                kwargs={
                    "on_pass": functools.partial(_after_pass, runtime, desk_id),
                    "wake": arrival_signal(mailbox.username),
                    **extra,
                },
            )
            thread.start()
            threads.append(thread)
        for companion in companions():
            stack.callback(companion(runtime, stop))
        if settings.metrics.enabled:
            start_metrics(runtime, stack)
        if ready is not None:
            ready()
        while not stop.wait(1.0):
            if not any(thread.is_alive() for thread in threads):
                log.error("every intake loop has ended; stopping")
                break
        stop.set()
        for thread in threads:
            thread.join(JOIN_SECONDS)


# Per mailbox user: set by the embedded SMTP server right after it appended mail for that user, so
# the intake starts its pass at once instead of when the IMAP server announces it (pymap looks for
# new files about once a second).
_arrivals: dict[str, threading.Event] = {}


def arrival_signal(address: str) -> threading.Event:
    return _arrivals.setdefault(address.lower(), threading.Event())


def _after_pass(runtime: Runtime, desk_id: str, report: PassReport) -> None:
    """Replies enqueued by a pass go out at once (the outbox companion wakes up); the pass is noted
    for `keydesk status`."""
    from keydesk.companions import wake_outbox

    wake_outbox(report)
    try:
        record_pass(runtime.engine, desk_id, len(report.taken))
    except Exception:
        log.exception("could not note the intake pass of %s for keydesk status", desk_id)


def _after_batch(_taken: list) -> None:
    """A batch of mails committed: their replies can go out while the pass goes on with the rest."""
    from keydesk.companions import wake_outbox

    wake_outbox()


def _after_standby(report: PassReport) -> None:
    """A standby worker processed mail the mailbox's holder recorded: its replies go out at once."""
    from keydesk.companions import wake_outbox

    wake_outbox(report)


def start_metrics(runtime: Runtime, stack: contextlib.ExitStack):
    """Serve /metrics (web/metrics.py) beside the daemon, under web/server.py's listen rules."""
    from keydesk.status import gather
    from web.metrics import metrics_app
    from web.server import Listen, ServedApp

    metrics = runtime.settings.metrics
    listen = Listen(metrics.host, metrics.port, metrics.tls_cert_file, metrics.tls_key_file, what="metrics")
    listen.check()
    served = ServedApp(metrics_app(lambda: gather(runtime.settings, runtime.engine), metrics.cache_seconds), listen)
    served.start()
    stack.callback(served.stop)
    log.info("metrics at %s/metrics", served.url)
    return served


def start_embedded(runtime: Runtime, stack: contextlib.ExitStack) -> EmbeddedImap:
    """Start the embedded IMAP server (and the SMTP server that delivers into it)."""
    settings = runtime.settings
    embedded = settings.embedded
    users = {
        user.address: read_secret(user.password_env, user.password_file, f"embedded user {user.address}")
        for user in embedded.users
    }
    imap = EmbeddedImap(embedded.mail_directory, users, host=embedded.host, port=embedded.imap_port)
    imap.start()  # an EmbeddedImapError says what failed; keydesk.cli.main prints it
    stack.callback(imap.stop)
    _start_embedded_smtp(runtime, imap, stack)
    return imap


def _start_embedded_smtp(runtime: Runtime, imap: EmbeddedImap, stack: contextlib.ExitStack) -> None:
    """Hook for the embedded SMTP half (keydesk/embedded_smtp.py): local mail goes into ``imap``."""
    from keydesk.embedded_smtp import EmbeddedSmtp

    settings = runtime.settings
    embedded = settings.embedded

    def deliver(address: str, raw: bytes) -> None:
        imap.append(address, raw)
        arrival_signal(address).set()

    smtp = EmbeddedSmtp(
        embedded.host,
        embedded.smtp_port,
        dict.fromkeys(imap.users, deliver),
        embedded.mail_directory,
        max_bytes=settings.limits.mail_max_bytes * 2,
    )
    smtp.start()  # an EmbeddedSmtpError says what failed; keydesk.cli.main prints it
    stack.callback(smtp.stop)
