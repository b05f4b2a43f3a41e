"""Wiring: the desk's pipeline and look-up built from the settings. No domain logic here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from sqlmodel import Session

from guarantor.keys import load_trusted_keys
from guarantor.lookup_service import RegistryLookup
from intake.held_lookups import HeldReport, due_mails, retry_held
from intake.lookup_client import HttpLookup, ManualLookup
from intake.manual_lookup import DeskContext
from intake.pipeline import DeskProfile, Pipeline
from intake.raw_store import RawStore, open_raw_store
from keydesk.runtime import Runtime
from keydesk.settings import read_secret
from mailer.reply import template_environment
from store.tls import client_ssl_context
from verifier.lookup import CertificateLookup


def desk_profile(runtime: Runtime, desk_id: str) -> DeskProfile:
    settings = runtime.settings
    desk = settings.desks[desk_id]
    return DeskProfile(
        desk_id=desk_id, name=desk.name, address=desk.address, contact=tuple(desk.contact),
        authserv_id=desk.authserv_id, reply_charset=desk.reply_charset, receipt_prefix=desk.receipt_prefix,
        timezone=settings.timezone, reply_to=desk.reply_to,
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
        return HttpLookup(settings.url, token, ssl_context=client_ssl_context(settings.ca_file, f"{what}.ca_file"),
                          connect_timeout=settings.connect_timeout_seconds, read_timeout=settings.timeout_seconds,
                          attempts=settings.attempts, backoff_seconds=settings.backoff_seconds)
    return RegistryLookup(runtime.engine, runtime.settings.guarantor, requester=desk_id, actor=f"desk:{desk_id}",
                          record=record)


def raw_store(runtime: Runtime) -> RawStore:
    storage = runtime.settings.storage
    return open_raw_store(storage.backend, storage.directory, runtime.engine)


def build_pipeline(runtime: Runtime, desk_id: str,
                   clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> Pipeline:
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
    return DeskContext(profile=desk_profile(runtime, desk_id), rules=settings.rules.desks[desk_id],
                       templates=template_environment(settings.config_dir / "templates"),
                       lookup_site_url=settings.desks[desk_id].lookup.lookup_site_url,
                       mailbox_moves=settings.desks[desk_id].mailbox.action != "flag")


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
    return create_app(runtime.engine, settings.guarantor, load_trusted_keys(settings.guarantor.trust_directory),
                      zone=settings.timezone)
