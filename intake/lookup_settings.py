"""``[desks.<id>.lookup]``: how a desk looks certificates up.

- ``embedded``: the guarantor's registry in the same database (the quick start and the demo).
- ``http``: a guarantor's look-up service over HTTPS (``docs/lookup-protocol.md``), with a bearer
  token from ``token_env`` or ``token_file``, the CAs of ``ca_file`` trusted besides the system's.
- ``manual``: the guarantor has no API; a clerk looks each key up on ``lookup_site_url`` and records
  what the certificate says (``keydesk manual``); everything else is checked automatically.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from rules.config_base import HomePath, StrictModel

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class LookupSettings(StrictModel):
    mode: Literal["embedded", "http", "manual"] = "embedded"
    # http: the service's base URL (https://…; plain http only to a loopback address).
    url: str | None = None
    token_env: str | None = None
    token_file: HomePath | None = None
    ca_file: HomePath | None = None
    # Per request: connecting, and waiting for the answer.
    connect_timeout_seconds: float = Field(default=5, gt=0, le=120)
    timeout_seconds: float = Field(default=15, gt=0, le=300)
    # Tries per look-up while a mail is processed (refused, timeout, 5xx, 429), with doubling pauses.
    attempts: int = Field(default=3, ge=1, le=10)
    backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    # A look-up that stays unavailable is held and tried again after these pauses (minutes)…
    hold_retry_minutes: list[int] = Field(default_factory=lambda: [1, 5, 15, 60])
    # …then hourly for this many hours; after that staff decide (the digest lists it).
    hold_hourly_for_hours: int = Field(default=24, ge=0, le=24 * 14)
    # The guarantor's own look-up site, shown to clerks (manual mode, held items).
    lookup_site_url: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> "LookupSettings":
        if any(minutes < 1 for minutes in self.hold_retry_minutes):
            raise ValueError("hold_retry_minutes: every pause is at least 1 minute")
        if self.mode != "http":
            return self
        if not self.url:
            raise ValueError('mode = "http" needs url (the look-up service, e.g. "https://lookup.guarantor.example")')
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"url: must be an https:// address, got {self.url!r}")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"url: plain http is allowed only to a loopback address, got {self.url!r}")
        if not self.token_env and not self.token_file:
            raise ValueError('mode = "http" needs token_env or token_file (the desk\'s bearer token)')
        return self

    def hold_delays(self) -> list[timedelta]:
        return [timedelta(minutes=m) for m in self.hold_retry_minutes] + \
            [timedelta(hours=1)] * self.hold_hourly_for_hours

    def next_lookup_at(self, tries_so_far: int, now: datetime) -> datetime | None:
        """When to look a held submission up again after ``tries_so_far`` held tries; None: give up."""
        delays = self.hold_delays()
        return now + delays[tries_so_far] if tries_so_far < len(delays) else None
