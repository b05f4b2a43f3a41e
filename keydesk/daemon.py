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
from intake.intake_service import PassReport
from keydesk import composition
from keydesk.embedded_imap import EmbeddedImap
from keydesk.runtime import Runtime
from keydesk.settings import read_secret
from keydesk.status import record_pass

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
    """Everything `keydesk run` does, until ``stop`` is set (``keydesk run``, the tests and the demo)."""
    settings = runtime.settings
    with contextlib.ExitStack() as stack:
        if settings.embedded.enabled:
            start_embedded(runtime, stack)
        threads = []
        for desk_id in settings.desks:
            stack.enter_context(composition.mailbox_lock(settings, desk_id))
            service = composition.build_service(runtime, desk_id)
            thread = threading.Thread(
                target=run_idle_loop,
                name=f"intake-{desk_id}",
                daemon=True,
                args=(service, composition.connector(settings, desk_id), settings.poll, stop),
                kwargs={"on_pass": functools.partial(_after_pass, runtime, desk_id)},
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


def _after_pass(runtime: Runtime, desk_id: str, report: PassReport) -> None:
    """Replies enqueued by a pass go out at once (the outbox companion wakes up); the pass is noted
    for `keydesk status`."""
    from keydesk.companions import wake_outbox

    wake_outbox(report)
    try:
        record_pass(runtime.engine, desk_id, len(report.taken))
    except Exception:
        log.exception("could not note the intake pass of %s for keydesk status", desk_id)


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
    imap.start()
    stack.callback(imap.stop)
    _start_embedded_smtp(runtime, imap, stack)
    return imap


def _start_embedded_smtp(runtime: Runtime, imap: EmbeddedImap, stack: contextlib.ExitStack) -> None:
    """Hook for the embedded SMTP half (keydesk/embedded_smtp.py): local mail goes into ``imap``."""
    from keydesk.embedded_smtp import EmbeddedSmtp

    settings = runtime.settings
    embedded = settings.embedded
    smtp = EmbeddedSmtp(
        embedded.host,
        embedded.smtp_port,
        dict.fromkeys(imap.users, imap.append),
        embedded.mail_directory,
        max_bytes=settings.limits.mail_max_bytes * 2,
    )
    smtp.start()
    stack.callback(smtp.stop)
