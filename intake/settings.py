"""The intake's sections of keydesk.toml: a desk's mailbox, polling, and the safety limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from foundation.net import is_loopback
from foundation.config import HomePath, StrictModel
from verifier.pdf_text import PdfLimits


class MailboxFolders(StrictModel):
    """Where a processed mail is moved (a courtesy to humans; the database is the truth)."""

    accepted: str = "keydesk/受付済"
    needs_review: str = "keydesk/要確認"
    returned: str = "keydesk/返送"
    ignored: str = "keydesk/自動送信"
    quarantine: str = "keydesk/隔離"
    # A needs_review mail staff marked 対応済み in the console (handled outside keydesk).
    handled: str = "keydesk/対応済"


class MailboxSettings(StrictModel):
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["tls", "starttls", "plain"] = "tls"
    # A PEM bundle of CAs to trust in addition to the system's (for a server with a private CA).
    ca_file: HomePath | None = None
    username: str
    auth: Literal["password", "xoauth2"] = "password"
    password_env: str | None = None
    password_file: HomePath | None = None
    # XOAUTH2: a command that prints a fresh access token (e.g. a helper for Microsoft 365 or Gmail).
    token_command: list[str] | None = None
    folder: str = "INBOX"
    # "move" to the folders below, or only "flag" the mail as seen.
    action: Literal["move", "flag"] = "move"
    folders: MailboxFolders = MailboxFolders()

    @model_validator(mode="after")
    def _consistent(self) -> MailboxSettings:
        if self.security == "plain" and not is_loopback(self.host):
            raise ValueError(
                f'security = "plain" sends the password in clear text and is allowed only to '
                f'loopback (127.0.0.0/8, ::1, localhost), got host {self.host!r}: use "tls" or "starttls"'
            )
        if self.auth == "xoauth2" and not self.token_command:
            raise ValueError('auth = "xoauth2" needs token_command (a command that prints an access token)')
        if self.auth == "password" and not (self.password_env or self.password_file):
            raise ValueError('auth = "password" needs password_env or password_file')
        return self


class PollSettings(StrictModel):
    # IDLE is renewed well before servers drop it (RFC 2177 allows 29 minutes; many cut at 10).
    idle_renew_seconds: int = Field(default=540, ge=30, le=600)
    poll_interval_seconds: int = Field(default=60, ge=5)
    socket_timeout_seconds: int = Field(default=60, ge=5)
    # A desk wants mail soon after its server is back: the backoff stops growing here (and starts
    # again from 1 s after a pass that worked).
    reconnect_max_seconds: int = Field(default=30, ge=1)
    fetch_chunk_bytes: int = Field(default=1_048_576, ge=65_536)
    # One pass takes at most this many new mails; the next pass follows at once. What a pass holds
    # in memory grows with its mails, so a backlog (a desk pointed at a full mailbox) is taken in
    # windows and peak memory stays flat however many are waiting.
    mails_per_pass: int = Field(default=2_000, ge=1)
    # A mail whose processing fails this many times is quarantined and shown to staff.
    max_attempts: int = Field(default=3, ge=1)
    # `keydesk run` looks accepted guarantees up again this often, to tell staff of one revoked after
    # acceptance (0 = never).
    revocation_recheck_minutes: int = Field(default=360, ge=0)


class Limits(StrictModel):
    mail_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    attachments_max: int = Field(default=20, ge=1)
    archive_depth_max: int = Field(default=3, ge=0)
    archive_entries_max: int = Field(default=100, ge=1)
    archive_unpacked_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    pdf_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    pdf_cpu_seconds: int = Field(default=10, ge=1)
    pdf_memory_mb: int = Field(default=512, ge=64)
    # Counts only replies to mails that carried no new guarantee (questions, empty or repeated
    # mails): a contractor sending many guarantees in an hour is ordinary and always answered.
    replies_per_sender_per_hour: int = Field(default=5, ge=0)
    # All replies of one desk in the last hour, whatever they answer: a flood of forged senders
    # cannot make the town's domain send mail without bound. Held replies stay in the outbox.
    replies_per_desk_per_hour: int = Field(default=200, ge=0)
    # The bounded mail walk (intake/mime.py): over any of these the mail is kept, shown to staff
    # and answered "could not be read, please send the PDF again" (mail.unreadable).
    mime_parts_max: int = Field(default=500, ge=10)
    body_text_max_bytes: int = Field(default=512 * 1024, ge=4096)
    walk_seconds: float = Field(default=10.0, gt=0)
    # Look-ups of one mail; the remaining guarantees go to a person (lookup.refused).
    lookups_per_mail_max: int = Field(default=20, ge=1)
    # What one mail, and one sender in a day, may add to the document store (bytes).
    stored_bytes_per_mail_max: int = Field(default=50 * 1024 * 1024, ge=1024)
    stored_bytes_per_sender_per_day_max: int = Field(default=200 * 1024 * 1024, ge=1024)

    def pdf_limits(self) -> PdfLimits:
        """What the bounded PDF reader may spend on one file."""
        return PdfLimits(
            max_bytes=self.pdf_max_bytes,
            cpu_seconds=self.pdf_cpu_seconds,
            memory_bytes=self.pdf_memory_mb * 1024 * 1024,
        )
