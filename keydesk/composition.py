"""Wiring: the desk's pipeline and look-up built from the settings. No domain logic here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from guarantor.keys import load_trusted_keys
from guarantor.lookup_service import RegistryLookup
from intake.pipeline import DeskProfile, Pipeline
from intake.raw_store import RawStore, open_raw_store
from keydesk.runtime import Runtime
from mailer.reply import template_environment


def desk_profile(runtime: Runtime, desk_id: str) -> DeskProfile:
    settings = runtime.settings
    desk = settings.desks[desk_id]
    return DeskProfile(
        desk_id=desk_id, name=desk.name, address=desk.address, contact=tuple(desk.contact),
        authserv_id=desk.authserv_id, reply_charset=desk.reply_charset, receipt_prefix=desk.receipt_prefix,
        timezone=settings.timezone,
    )


def lookup_service(runtime: Runtime, desk_id: str) -> RegistryLookup:
    """The certificate look-up this deployment uses: the embedded guarantor's registry."""
    return RegistryLookup(runtime.engine, runtime.settings.guarantor, requester=desk_id, actor=f"desk:{desk_id}")


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
    )
