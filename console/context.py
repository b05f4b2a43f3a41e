"""What the console's service functions need, gathered once by the composition root (keydesk/)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Mapping

import jinja2
from sqlalchemy.engine import Engine

from console.settings import ConsoleSettings
from intake.pipeline import DeskProfile
from intake.raw_store import RawStore
from intake.settings import MailboxSettings
from rules.schema import DeskRules
from store.key_vault import KeyVault


@dataclass(frozen=True)
class DeskView:
    """One desk (town) as the console sees it."""

    profile: DeskProfile
    rules: DeskRules
    mailbox: MailboxSettings
    # The 認証キー pattern of rules.toml, to mask a key a sender typed into the mail body.
    key_pattern: re.Pattern[str] | None = None

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
    lookup_url: str  # the guarantor's look-up site, linked from each submission
    timezone: str = "Asia/Tokyo"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    # Called after a decision committed (the daemon wakes its outbox so the reply goes out at once).
    on_decision: Callable[[], None] = field(default=lambda: None)

    def desk(self, desk_id: str) -> DeskView:
        return self.desks[desk_id]

    @property
    def departments(self) -> dict[str, str]:
        """Every department id of every desk with its name (for filters)."""
        names: dict[str, str] = {}
        for view in self.desks.values():
            for department_id, department in view.rules.departments.items():
                names.setdefault(department_id, department.name)
        return names
