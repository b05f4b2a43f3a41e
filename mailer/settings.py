"""The mailer's sections of keydesk.toml: SMTP, the outbox's retries, the staff digest."""

from __future__ import annotations

from typing import Literal
from pydantic import Field, field_validator, model_validator

from foundation.net import is_loopback
from foundation.config import HomePath, StrictModel, TimeZoneName


class SmtpSettings(StrictModel):
    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["tls", "starttls", "plain"] = "starttls"
    # A PEM bundle of CAs to trust in addition to the system's (for a server with a private CA).
    ca_file: HomePath | None = None
    username: str | None = None
    auth: Literal["password", "xoauth2"] = "password"
    password_env: str | None = None
    password_file: HomePath | None = None
    # XOAUTH2: the same kind of command as the mailbox's, printing a fresh access token.
    token_command: list[str] | None = None
    timeout_seconds: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _credentials(self) -> SmtpSettings:
        if self.security == "plain" and not is_loopback(self.host):
            raise ValueError(
                f'security = "plain" sends mail and the password in clear text and is allowed only to '
                f'loopback (127.0.0.0/8, ::1, localhost), got host {self.host!r}: use "tls" or "starttls"'
            )
        if self.auth == "xoauth2":
            if not (self.username and self.token_command):
                raise ValueError(
                    'auth = "xoauth2" needs username and token_command (a command that prints an access token)'
                )
        elif self.username and not (self.password_env or self.password_file):
            raise ValueError("username is set, so password_env or password_file is needed")
        return self


class OutboxSettings(StrictModel):
    first_retry_seconds: int = Field(default=60, ge=1)
    backoff_factor: float = Field(default=2.0, ge=1.0)
    max_retry_seconds: int = Field(default=3600, ge=1)
    give_up_after_hours: float = Field(default=96, gt=0)
    batch_size: int = Field(default=100, ge=1)
    # How often `keydesk run` looks for mail that is due (replies are also sent right after intake).
    deliver_interval_seconds: int = Field(default=15, ge=1)
    # Per kind of mail: what to do when a crash leaves its outcome unknown (the final dot may have
    # reached the server, its answer was never recorded). "again": send it again with the same
    # Message-ID (at least once; a duplicate is possible). "never": mark it delivered-unconfirmed
    # (at most once; it may be lost). Kinds not listed are sent again.
    unknown_outcome: dict[str, Literal["again", "never"]] = Field(
        default_factory=lambda: {"reply": "again", "digest": "again", "notice": "again"}
    )

    def sends_again(self, kind: str) -> bool:
        return self.unknown_outcome.get(kind, "again") == "again"


class DigestSettings(StrictModel):
    # crontab fields: minute hour day month day_of_week (APScheduler's CronTrigger.from_crontab).
    schedule: str = "30 8 * * mon-fri"
    timezone: TimeZoneName = "Asia/Tokyo"

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f'is not a crontab schedule such as "30 8 * * mon-fri": {exc}') from None
        return value
