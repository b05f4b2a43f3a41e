"""Wiring: what the commands, the daemon and the demo run, built from the settings. No domain
logic here, and nothing printed: the CLI modules parse and print, this module builds.

``process_factory`` is the seam between the intake and the pipeline (tests plug a stand-in in).
"""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timezone
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from zoneinfo import ZoneInfo
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from console.context import ConsoleContext, DeskView
from foundation.config import ConfigError
from foundation.errors import UserFacingError
from guarantor.keys import load_trusted_keys
from guarantor.lookup_service import RegistryLookup
from intake.held_lookups import HeldReport, due_mails, retry_held
from intake.intake_service import AfterCommitHook, BatchCommittedHook, IntakeService, ProcessHook
from intake.lookup_client import HttpLookup, ManualLookup
from intake.mailbox_lock import MailboxLock, PostgresMailboxLock, mailbox_lock_for
from intake.manual_lookup import DeskContext
from intake.desk_profile import DeskProfile
from intake.pipeline import Pipeline
from intake.poller import MailboxConnection, MailboxError
from intake.raw_store import RawStore, open_raw_store
from intake.register_store import DbAcceptedIndex, DbContractRegister
from intake.verify_file import file_inputs, reply_preview
from intake.verify_inputs import key_patterns
from keydesk.runtime import Runtime
from keydesk.secret_files import ensure_secret_file
from keydesk.settings import Settings, read_secret
from mailer.digest import DigestTarget
from mailer.reply import template_environment
from mailer.smtp_client import SmtpConnectError, SmtpConnector
from store.claim_owner import ClaimOwner
from store.tls import client_ssl_context
from web.server import Listen, ServedApp
from verifier.lookup import CertificateLookup
from verifier.pdf_text import PdfTextWorker
from verifier.verify import MailVerdict, Ports, verify_mail


def desk_profile(runtime: Runtime, desk_id: str) -> DeskProfile:
    settings = runtime.settings
    desk = settings.desks[desk_id]
    return DeskProfile(
        desk_id=desk_id,
        name=desk.name,
        address=desk.address,
        contact=tuple(desk.contact),
        authserv_id=desk.authserv_id,
        reply_charset=desk.reply_charset,
        receipt_prefix=desk.receipt_prefix,
        timezone=settings.timezone,
        reply_to=desk.reply_to,
    )


def lookup_service(runtime: Runtime, desk_id: str, *, record: bool = True) -> CertificateLookup:
    """The certificate look-up the desk is configured for (``[desks.<id>.lookup]``).

    ``record=False`` (``keydesk verify``): the embedded registry writes nothing, failures included.
    """
    settings = runtime.settings.desks[desk_id].lookup
    if settings.mode == "manual":
        return ManualLookup()
    if settings.mode == "http":
        what = f"desks.{desk_id}.lookup"
        token = read_secret(settings.token_env, settings.token_file, f"{what} token")
        return HttpLookup(
            settings.url,
            token,
            ssl_context=client_ssl_context(settings.ca_file, f"{what}.ca_file"),
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.timeout_seconds,
            attempts=settings.attempts,
            backoff_seconds=settings.backoff_seconds,
        )
    return RegistryLookup(
        runtime.engine, runtime.settings.guarantor, requester=desk_id, actor=f"desk:{desk_id}", record=record
    )


@contextmanager
def dry_run_checker(runtime: Runtime, desk_id: str) -> Iterator[Callable[[Path], tuple[MailVerdict, dict | None]]]:
    """What ``keydesk verify`` runs on each file: the desk's verifier and rules, with the real register
    and look-up, recording nothing. ``check(path)`` gives the verdict and the reply the mail would get
    (None for a PDF); a file that cannot be read raises UserFacingError or OSError."""
    settings = runtime.settings
    desk = settings.desks[desk_id]
    trusted = load_trusted_keys(settings.guarantor.trust_directory)
    lookup = lookup_service(runtime, desk_id, record=False)  # records nothing, look-up failures included
    with PdfTextWorker(settings.limits.pdf_limits()) as worker, Session(runtime.engine) as session:
        ports = Ports(lookup, DbContractRegister(session), DbAcceptedIndex(session), trusted)

        def check(path: Path) -> tuple[MailVerdict, dict | None]:
            documents, context, mail = file_inputs(
                path,
                desk_id=desk_id,
                limits=settings.limits,
                authserv_id=desk.authserv_id,
                patterns=settings.rules.documents.patterns,
                read_pdf=worker.extract,
            )
            now = datetime.now(ZoneInfo(settings.timezone))
            result = verify_mail(
                documents, context, settings.rules.desks[desk_id], settings.rules.documents, ports, now
            )
            return result, reply_preview(mail, result, desk_address=desk.address, policy=desk.reply_to)

        try:
            yield check
        finally:
            session.rollback()  # nothing the adapters read is ever written back


def raw_store(runtime: Runtime) -> RawStore:
    storage = runtime.settings.storage
    return open_raw_store(storage.backend, storage.directory, runtime.engine)


def build_pipeline(
    runtime: Runtime, desk_id: str, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
) -> Pipeline:
    settings = runtime.settings
    return Pipeline(
        profile=desk_profile(runtime, desk_id),
        rules=settings.rules.desks[desk_id],
        signatures=settings.rules.documents,
        limits=settings.limits,
        lookup=lookup_service(runtime, desk_id),
        trusted_keys=load_trusted_keys(settings.guarantor.trust_directory),
        key_vault=runtime.key_vault,
        store=raw_store(runtime),
        templates=template_environment(settings.config_dir / "templates"),
        clock=clock,
        relay_hosts=(settings.smtp.host,),
        lookup_settings=settings.desks[desk_id].lookup,
    )


def desk_context(runtime: Runtime, desk_id: str) -> DeskContext:
    """What recording a manual look-up needs (``intake.manual_lookup``), for the CLI and the console."""
    settings = runtime.settings
    return DeskContext(
        profile=desk_profile(runtime, desk_id),
        rules=settings.rules.desks[desk_id],
        templates=template_environment(settings.config_dir / "templates"),
        lookup_site_url=settings.desks[desk_id].lookup.lookup_site_url,
        mailbox_moves=settings.desks[desk_id].mailbox.action != "flag",
    )


def retry_held_lookups(runtime: Runtime, desk_id: str, now: datetime | None = None) -> HeldReport:
    """Look the desk's held submissions up again whose pause is over (``intake.held_lookups``)."""
    now = now or datetime.now(timezone.utc)
    with Session(runtime.engine) as session:
        if not due_mails(session, desk_id, now):
            return HeldReport()  # the usual case: nothing held, no pipeline (or HTTP client) built
    pipeline = build_pipeline(runtime, desk_id)
    try:
        return retry_held(pipeline, runtime.engine, now)
    finally:
        close = getattr(pipeline.lookup, "close", None)
        if close is not None:
            close()


def guarantor_service_app(runtime: Runtime):
    """The guarantor's look-up service (``keydesk guarantor serve``) over this deployment's registry."""
    from guarantor.service.app import create_app  # late: FastAPI only for the commands that serve

    settings = runtime.settings
    return create_app(
        runtime.engine,
        settings.guarantor,
        load_trusted_keys(settings.guarantor.trust_directory),
        zone=settings.timezone,
    )


# -- the intake ----------------------------------------------------------------------------------


def desk_ids(settings: Settings, desk: str | None) -> list[str]:
    """Every desk, or the one named (``--desk``)."""
    if desk is None:
        return list(settings.desks)
    if desk not in settings.desks:
        raise UserFacingError(f"窓口 {desk!r} は設定にありません (設定済み: {', '.join(settings.desks)})")
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


ProcessFactory = Callable[[Runtime, str], ProcessHook]


def _pipeline_process(runtime: Runtime, desk_id: str) -> ProcessHook:
    """The seam to the pipeline: verify, decide, enqueue the reply."""
    return build_pipeline(runtime, desk_id)


process_factory: ProcessFactory = _pipeline_process


def build_service(
    runtime: Runtime,
    desk_id: str,
    after_commit: AfterCommitHook | None = None,
    owner: ClaimOwner | None = None,
    on_batch: BatchCommittedHook | None = None,
) -> IntakeService:
    settings = runtime.settings
    return IntakeService(
        desk=desk_id,
        mailbox=settings.desks[desk_id].mailbox,
        poll=settings.poll,
        limits=settings.limits,
        engine=runtime.engine,
        store=raw_store(runtime),
        process=process_factory(runtime, desk_id),
        after_commit=after_commit,
        on_batch=on_batch,
        owner=owner,
    )


# -- the mailer ----------------------------------------------------------------------------------


def connector_for(settings: Settings) -> SmtpConnector:
    """The SMTP connector of the outbox (password read now: a missing secret stops the command)."""
    smtp = settings.smtp
    needs_password = smtp.username and smtp.auth == "password"
    password = read_secret(smtp.password_env, smtp.password_file, "SMTP password") if needs_password else None
    context = client_ssl_context(smtp.ca_file, "smtp.ca_file")
    try:
        return SmtpConnector(smtp, password, ssl_context=context)
    except SmtpConnectError as exc:
        raise UserFacingError(f"SMTP の設定を確認してください: {exc}") from None


def targets_for(settings: Settings, desk: str | None) -> list[DigestTarget]:
    """The digests to build: every desk's, or the one named."""
    if desk is not None and desk not in settings.desks:
        raise UserFacingError(f"窓口 {desk!r} は設定にありません(設定済み: {', '.join(settings.desks)})")
    return [
        DigestTarget(
            desk_id,
            settings.desks[desk_id].name,
            settings.desks[desk_id].address,
            settings.rules.desks[desk_id],
            console_url=settings.console.public_url,
            lookup_site_url=settings.desks[desk_id].lookup.lookup_site_url,
        )
        for desk_id in ([desk] if desk else list(settings.desks))
    ]


# -- the staff console ---------------------------------------------------------------------------


def build_context(runtime: Runtime, on_decision=lambda: None) -> ConsoleContext:
    settings = runtime.settings
    patterns = key_patterns(settings.rules.documents.patterns)
    desks = {
        desk_id: DeskView(
            profile=desk_profile(runtime, desk_id),
            rules=settings.rules.desks[desk_id],
            mailbox=desk.mailbox,
            key_pattern=patterns[1],
            key_format=settings.rules.documents.access_key,
            lookup_site_url=desk.lookup.lookup_site_url,
        )
        for desk_id, desk in settings.desks.items()
    }
    metrics = None
    if settings.metrics.enabled:  # issue 16: /metrics wherever a web service runs, the console included
        from keydesk.status import gather
        from web.metrics import cached_metrics

        metrics = cached_metrics(lambda: gather(settings, runtime.engine), settings.metrics.cache_seconds)
    return ConsoleContext(
        engine=runtime.engine,
        settings=settings.console,
        desks=desks,
        store=raw_store(runtime),
        key_vault=runtime.key_vault,
        templates=template_environment(settings.config_dir / "templates"),
        lookup_url=settings.guarantor.lookup_url,
        timezone=settings.timezone,
        on_decision=on_decision,
        metrics=metrics,
    )


def session_secret(runtime: Runtime) -> str:
    console_settings = runtime.settings.console
    if not os.environ.get(console_settings.session_secret_env):
        ensure_secret_file(
            console_settings.session_secret_file, lambda: secrets.token_urlsafe(32), "console session secret"
        )
    return read_secret(
        console_settings.session_secret_env, console_settings.session_secret_file, "console session secret"
    )


def listen_for(runtime: Runtime, host: str | None = None, port: int | None = None) -> Listen:
    s = runtime.settings.console
    return Listen(host or s.host, s.port if port is None else port, s.tls_cert_file, s.tls_key_file, what="console")


def build_app(runtime: Runtime, on_decision=lambda: None):
    from console.web.app import create_app  # late: FastAPI only for the commands that serve

    return create_app(build_context(runtime, on_decision), session_secret(runtime))


def start_console(runtime: Runtime, on_decision=lambda: None) -> ServedApp:
    """The console in a thread beside the daemon (`keydesk run` with [console] enabled = true)."""
    return ServedApp(build_app(runtime, on_decision), listen_for(runtime)).start()
