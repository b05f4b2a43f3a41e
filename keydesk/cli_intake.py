"""`keydesk poll --once` and `keydesk run`: taking mail from the desks' mailboxes.

Composition only: settings and secrets are resolved here and handed to ``intake``. The pipeline
(verification + reply) is plugged in through ``process_factory``; companions of ``keydesk run``
(outbox delivery, digest schedules) through ``companions``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer
from sqlalchemy.engine import Engine

from intake.idle_loop import run_idle_loop
from intake.intake_service import AfterCommitHook, IntakeService, PassReport, ProcessHook
from intake.mailbox_lock import MailboxBusy, MailboxLock, PostgresMailboxLock, mailbox_lock_for
from intake.poller import TRANSIENT_ERRORS, MailboxConnection, MailboxError
from intake.worker import run_desk_worker
from keydesk.embedded_imap import EmbeddedImap, EmbeddedImapError
from keydesk.errors import UserError
from keydesk.runtime import Runtime
from keydesk.status import record_pass
from keydesk.settings import Settings, read_secret
from rules.config_base import ConfigError
from store.claim_owner import ClaimOwner, open_owner
from store.tls import client_ssl_context

log = logging.getLogger(__name__)

ProcessFactory = Callable[[Runtime, str], ProcessHook]
# A companion of `keydesk run` (outbox delivery, digests): started with the runtime and the stop
# event, it returns the function that stops it.
Companion = Callable[[Runtime, threading.Event], Callable[[], None]]
JOIN_SECONDS = 30


def _companions() -> tuple[Companion, ...]:
    from keydesk.companions import COMPANIONS  # late: the mailer's schedules load only for `run`

    return tuple(COMPANIONS)


companions: Callable[[], tuple[Companion, ...]] = _companions


def _pipeline_process(runtime: Runtime, desk_id: str) -> ProcessHook:
    """The seam to the pipeline: verify, decide, enqueue the reply (keydesk/composition.py)."""
    from keydesk.composition import build_pipeline  # late: only commands that process mail need it

    return build_pipeline(runtime, desk_id)


process_factory: ProcessFactory = _pipeline_process


def register(app: typer.Typer) -> None:
    app.command("poll")(poll)
    app.command("run")(run)


# -- building blocks ----------------------------------------------------------------------------

def _desk_ids(settings: Settings, desk: str | None) -> list[str]:
    if desk is None:
        return list(settings.desks)
    if desk not in settings.desks:
        raise UserError(f"窓口 {desk!r} は設定にありません (設定済み: {', '.join(settings.desks)})")
    return [desk]


def connector(settings: Settings, desk_id: str) -> Callable[[], MailboxConnection]:
    """A function that opens a fresh connection. The password (env or file) is read again for each
    connection, so an admin who fixes the secret file sees `keydesk run` log in without a restart."""
    mailbox = settings.desks[desk_id].mailbox
    what = f"desks.{desk_id}.mailbox password"

    def password() -> str | None:
        return read_secret(mailbox.password_env, mailbox.password_file, what) if mailbox.auth == "password" else None

    password()  # read once now: a missing secret stops the command before any mail is touched
    timeout = settings.poll.socket_timeout_seconds
    # Built now, not per connection: a bad ca_file stops the command before any mail is touched.
    context = client_ssl_context(mailbox.ca_file, f"desks.{desk_id}.mailbox.ca_file")

    def connect() -> MailboxConnection:
        try:
            secret = password()
        except ConfigError as exc:  # removed or emptied since the start: the loop retries
            raise MailboxError("; ".join(exc.lines)) from None
        return MailboxConnection(mailbox, password=secret, timeout=timeout, ssl_context=context)

    return connect


def mailbox_lock(settings: Settings, desk_id: str, engine: Engine | None = None) -> MailboxLock | PostgresMailboxLock:
    """The desk's mailbox lock: an advisory lock when ``engine`` is PostgreSQL, else a lock file."""
    mailbox = settings.desks[desk_id].mailbox
    return mailbox_lock_for(engine, lock_directory(settings), desk_id, mailbox.username, mailbox.folder)


def lock_directory(settings: Settings) -> Path:
    return settings.home / "var" / "locks"


def build_service(runtime: Runtime, desk_id: str, after_commit: AfterCommitHook | None = None,
                  owner: ClaimOwner | None = None) -> IntakeService:
    from keydesk.composition import raw_store  # late, like the pipeline

    settings = runtime.settings
    return IntakeService(desk=desk_id, mailbox=settings.desks[desk_id].mailbox, poll=settings.poll,
                         limits=settings.limits, engine=runtime.engine, store=raw_store(runtime),
                         process=process_factory(runtime, desk_id), after_commit=after_commit, owner=owner)


def _mailbox_problem(settings: Settings, desk_id: str, exc: BaseException) -> UserError:
    mailbox = settings.desks[desk_id].mailbox
    hint = ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        from keydesk.connection_check import certificate_problem

        # A wrong ca_file (another CA) gets another hint than a missing one.
        hint = f" ({certificate_problem(exc, mailbox.host, mailbox.ca_file, f'desks.{desk_id}.mailbox.ca_file')})"
    return UserError(f"{desk_id}: メールボックス {mailbox.host}:{mailbox.port} から受信できませんでした: {exc}{hint}")


# -- keydesk poll --once --------------------------------------------------------------------------

def poll(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Run one pass and exit (for cron)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per mail touched (copies included)."),
    desk: Optional[str] = typer.Option(None, "--desk", help="Only this desk (default: every desk)."),
    no_send: bool = typer.Option(False, "--no-send", help="Only queue the replies; leave them to `keydesk outbox "
                                 "send` (or `keydesk run`) instead of delivering what is due at the end."),
) -> None:
    """Take new mail from the desks' mailboxes once: store, verify, reply, file; then deliver what is due."""
    if not once:
        raise UserError("keydesk poll は --once を付けて実行してください (常時受信は keydesk run)")
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    # A claim identity like the daemon's: mail a live worker has in hand is left to it, and what a
    # killed `keydesk run` left (mail in process, replies in sending) is taken back at once.
    with open_owner(runtime.engine, lock_directory(settings)) as owner:
        for desk_id in _desk_ids(settings, desk):
            service = build_service(runtime, desk_id, owner=owner)
            try:
                with mailbox_lock(settings, desk_id, runtime.engine), connector(settings, desk_id)() as conn:
                    report = service.run_pass(conn)
            except MailboxBusy as exc:
                raise UserError(f"{desk_id}: 別の keydesk が受信中です ({exc})") from None
            except (MailboxError, *TRANSIENT_ERRORS) as exc:
                raise _mailbox_problem(settings, desk_id, exc) from None
            record_pass(runtime.engine, desk_id, len(report.taken))
            _print_report(settings, desk_id, report, as_json)
            _retry_held(runtime, desk_id, as_json)
        if not no_send:
            _deliver_after_poll(runtime, owner, as_json)


def _retry_held(runtime: Runtime, desk_id: str, as_json: bool) -> None:
    """Held look-ups whose pause is over are tried again after each pass (issue 10)."""
    from keydesk.composition import retry_held_lookups

    held = retry_held_lookups(runtime, desk_id)
    if held.anything and not as_json:
        typer.echo(f"  照会待ちだった {len(held.decided)} 通の結果を返信し、{len(held.given_up)} 通を職員の確認に回しました")


def _deliver_after_poll(runtime: Runtime, owner: ClaimOwner, as_json: bool) -> None:
    """A cron `poll --once` answers at once, like the daemon: everything due in the outbox goes out."""
    from keydesk.companions import deliver_now

    report = deliver_now(runtime, owner)
    if not as_json:
        typer.echo(f"送信: {report.summary()}")
    if report.connection_error:
        from keydesk.cli_outbox import smtp_hint

        # The mails were taken and their replies are safe in the outbox: a warning (cron mails it to
        # the admin), not a failure; the next poll or `keydesk outbox send` delivers them.
        typer.echo(f"警告: 返信は送信待ちのままです。SMTP サーバーに接続できませんでした: {report.connection_error}"
                   f"{smtp_hint(runtime.settings, report.connection_error)}", err=True)


def _print_report(settings: Settings, desk_id: str, report: PassReport, as_json: bool) -> None:
    if as_json:
        for taken in (*report.taken, *report.recognised_mails):
            typer.echo(json.dumps({"desk": desk_id, **taken.to_json()}, ensure_ascii=False))
        return
    name = settings.desks[desk_id].name
    typer.echo(f"{name}: {len(report.taken)} 通を処理しました"
               f"(新着 {report.recorded} 通、既知のメール {report.recognised} 通、失敗 {report.failures} 件)")
    for taken in (*report.taken, *report.recognised_mails):
        findings = ", ".join(taken.findings) or "-"
        typer.echo(f"  UID {taken.uid}  {taken.sender or '(差出人不明)'}  {taken.verdict or taken.state}  {findings}")


# -- keydesk run ---------------------------------------------------------------------------------

def run(ctx: typer.Context) -> None:
    """Run the desk: embedded mail servers (if enabled), IDLE intake per desk, until Ctrl-C/SIGTERM."""
    runtime: Runtime = ctx.obj
    stop = threading.Event()

    def _on_signal(signum, _frame) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve(runtime, stop, ready=lambda: typer.echo("keydesk を起動しました。Ctrl-C で停止します。"))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("keydesk を停止しました。")


def serve(runtime: Runtime, stop: threading.Event, ready: Callable[[], None] | None = None) -> None:
    """Everything `keydesk run` does, until ``stop`` is set (callable from tests and the demo)."""
    settings = runtime.settings
    with contextlib.ExitStack() as stack:
        if settings.embedded.enabled:
            start_embedded(runtime, stack)
        # This process's claim identity: another worker (or a restart) knows at once when it is gone.
        owner = stack.enter_context(open_owner(runtime.engine, lock_directory(settings)))
        threads = []
        for desk_id in settings.desks:
            service = build_service(runtime, desk_id, owner=owner)
            lock = mailbox_lock(settings, desk_id, runtime.engine)
            extra = {}
            if isinstance(lock, PostgresMailboxLock):
                # Several workers may share the database: the one without the mailbox stands by.
                target, args = run_desk_worker, (service, lock, connector(settings, desk_id), settings.poll, stop)
                extra = {"on_standby": _after_standby}
            else:
                try:
                    stack.enter_context(lock)
                except MailboxBusy as exc:
                    raise UserError(f"{desk_id}: 別の keydesk が受信中です ({exc})") from None
                target, args = run_idle_loop, (service, connector(settings, desk_id), settings.poll, stop)
            mailbox = settings.desks[desk_id].mailbox
            thread = threading.Thread(target=target, name=f"intake-{desk_id}", daemon=True, args=args,
                                      kwargs={"on_pass": functools.partial(_after_pass, runtime, desk_id),
                                              "wake": arrival_signal(mailbox.username), **extra})
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
    except Exception:  # noqa: BLE001 - a status note must never stop the intake
        log.exception("could not note the intake pass of %s for keydesk status", desk_id)


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
    users = {user.address: read_secret(user.password_env, user.password_file, f"embedded user {user.address}")
             for user in embedded.users}
    imap = EmbeddedImap(embedded.mail_directory, users, host=embedded.host, port=embedded.imap_port)
    try:
        imap.start()
    except EmbeddedImapError as exc:
        raise UserError(f"内蔵 IMAP サーバーを起動できませんでした: {exc}") from None
    stack.callback(imap.stop)
    _start_embedded_smtp(runtime, imap, stack)
    return imap


def _start_embedded_smtp(runtime: Runtime, imap: EmbeddedImap, stack: contextlib.ExitStack) -> None:
    """Hook for the embedded SMTP half (keydesk/embedded_smtp.py): local mail goes into ``imap``."""
    from keydesk.embedded_smtp import EmbeddedSmtp, EmbeddedSmtpError

    settings = runtime.settings
    embedded = settings.embedded
    def deliver(address: str, raw: bytes) -> None:
        imap.append(address, raw)
        arrival_signal(address).set()

    smtp = EmbeddedSmtp(embedded.host, embedded.smtp_port, {address: deliver for address in imap.users},
                        embedded.mail_directory, max_bytes=settings.limits.mail_max_bytes * 2)
    try:
        smtp.start()
    except EmbeddedSmtpError as exc:
        raise UserError(f"内蔵 SMTP サーバーを起動できませんでした: {exc}") from None
    stack.callback(smtp.stop)
