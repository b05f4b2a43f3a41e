"""What a demo run produced: one outcome per scenario mail, the digests, the audit trail.

Shared by the run (``keydesk/demo/run.py``) and the console (``keydesk/demo/output.py``); it
imports neither, so they do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from keydesk.demo import scenario
from keydesk.demo.lookup import ManualCase

Notify = Callable[[str], None]


@dataclass(frozen=True)
class MailOutcome:
    mail: scenario.ScenarioMail
    sender: scenario.Contractor
    message_id: str
    receipt_no: str | None
    verdict: str | None
    codes: tuple[str, ...]
    resend_of_receipt: str | None  # the returned mail this one was linked to
    replied: bool  # the desk's reply left the outbox

    @property
    def as_expected(self) -> bool:
        linked = self.mail.resend_of is None or self.resend_of_receipt is not None
        return (
            self.verdict == self.mail.expected_verdict.value
            and self.mail.expected_codes <= set(self.codes)
            and linked
            and self.replied
        )


@dataclass(frozen=True)
class DigestFile:
    department: str
    recipients: tuple[str, ...]
    html: Path
    csv: Path
    text: str


@dataclass
class DemoReport:
    directory: Path
    config_dir: Path
    mail_directory: Path
    log_file: Path
    imap_port: int
    smtp_port: int
    passwords: dict[str, str] = field(default_factory=dict)  # embedded mail users
    issued: int = 0
    notices: int = 0
    replies: int = 0
    mails: list[MailOutcome] = field(default_factory=list)
    digests: list[DigestFile] = field(default_factory=list)
    audit_events: int = 0
    audit_intact: bool = False
    elapsed: float = 0.0
    console_url: str = ""  # the staff console of the demo deployment (`keydesk run` starts it)
    console_login: str = ""
    console_password: str = ""
    lookup_url: str = ""  # the guarantor's look-up service the desk asked over HTTP
    manual: ManualCase | None = None  # the case a clerk looked up by hand

    @property
    def all_as_expected(self) -> bool:
        return all(outcome.as_expected for outcome in self.mails) and (self.manual is None or self.manual.as_expected)
