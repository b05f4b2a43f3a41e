"""What the console's service functions need, gathered once by the composition root (keydesk/)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from collections.abc import Callable, Mapping

import jinja2
from sqlalchemy.engine import Engine

from console.settings import ConsoleSettings
from intake.desk_profile import DeskProfile
from intake.raw_store import RawStore
from intake.settings import MailboxSettings
from rules.schema import DeskRules
from rules.signatures import AccessKeyFormat
from store.key_vault import KeyVault
from formats.access_key import PROJECT_FORMAT


@dataclass(frozen=True)
class DeskView:
    """One desk (town) as the console sees it."""

    profile: DeskProfile
    rules: DeskRules
    mailbox: MailboxSettings
    # The 認証キー pattern of rules.toml, to mask a key a sender typed into the mail body.
    key_pattern: re.Pattern[str] | None = None
    # The 認証キー format of rules.toml [documents], to show a revealed key as the guarantor's site wants it.
    key_format: AccessKeyFormat = PROJECT_FORMAT
    # The guarantor's look-up site for this desk ([desks.<id>.lookup] lookup_site_url), when set.
    lookup_site_url: str | None = None

    def department_name(self, department_id: str) -> str:
        department = self.rules.departments.get(department_id)
        return department.name if department else department_id


@dataclass
class ConsoleContext:
    engine: Engine
    settings: ConsoleSettings
    desks: Mapping[str, DeskView]
    store: RawStore
    key_vault: KeyVault
    templates: jinja2.Environment  # the deployment's reply templates (config/templates)
    lookup_url: str  # the guarantor's look-up site, linked from each submission (a desk's own first)
    timezone: str = "Asia/Tokyo"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    # Called after a decision committed (the daemon wakes its outbox so the reply goes out at once).
    on_decision: Callable[[], None] = field(default=lambda: None)

    # The Prometheus text of /metrics when [metrics] enabled = true (None: no /metrics on the console).
    metrics: Callable[[], bytes] | None = None

    def desk(self, desk_id: str) -> DeskView:
        return self.desks[desk_id]

    def lookup_site(self, desk_id: str) -> str:
        view = self.desks.get(desk_id)
        return (view.lookup_site_url if view else None) or self.lookup_url

    @property
    def departments(self) -> dict[str, str]:
        """Every department id of every desk with its name (for filters)."""
        names: dict[str, str] = {}
        for view in self.desks.values():
            for department_id, department in view.rules.departments.items():
                names.setdefault(department_id, department.name)
        return names
