"""The staff digest: per department, what came in since the last digest, as mail and as a printout.

Order: what needs a person first, then accepted, returned, and failures (replies that could not
be delivered, mails the intake quarantined). Each line carries the receipt number, the time
received, contractor, work name, guarantee type, 保証契約番号, the masked 認証キー, the verdict
and the reasons (finding labels). A resend that answers a returned mail shows both receipt numbers.

Routing: a submission goes to ``Submission.department``, else to the department whose
``guarantee_types`` hold its type (``DeskRules.department_for``). What has no guarantee to route by
(a mail without a readable key notice, a quarantined mail) goes to the desk's first department,
the one that runs the mailbox.

The mail has text/plain and text/html alternatives (``digest.txt.j2``, ``digest.html.j2``; the
HTML template escapes everything) and a CSV attachment for Excel (UTF-8 with BOM, CRLF). It is
enqueued with the idempotency key ``digest:<desk>:<department>:<local date>``.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from email.message import EmailMessage
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from sqlalchemy import func
from sqlmodel import Session, select

from mailer.digest_rows import ALWAYS_SHOWN, SECTIONS, DigestLine, collect_lines
from mailer.message import Mailbox, build_message, clean_header_text
from mailer.outbox import enqueue
from mailer.reply import local_time_text, render_template
from mailer.reply_policy import mark
from rules.findings import WORDING
from rules.schema import DeskRules
from store.tables import OutboxMessage

log = logging.getLogger(__name__)

TEXT_TEMPLATE = "digest.txt.j2"
HTML_TEMPLATE = "digest.html.j2"
DIGEST_KIND = "digest"
# Section titles and tallies come from the one table of labels (rules.findings.WORDING).
SECTION_TITLES = {section: WORDING[section].section for section in SECTIONS}
SECTION_SHORT = {section: WORDING[section].tally for section in SECTIONS}
CSV_COLUMNS = [
    "区分",
    "受付番号",
    "受付日時",
    "受注者",
    "工事・業務名",
    "保証の種類",
    "保証契約番号",
    "認証キー(一部伏字)",
    "判定",
    "理由",
    "再送元の受付番号",
    "再送後の受付番号",
    "送信元",
    "契約番号",
    "請負代金額",
    "保証金額",
    "保証期間",
]
# Excel runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class DigestTarget:
    """A desk as the digest needs it (built from keydesk's DeskSettings + DeskRules)."""

    desk: str
    desk_name: str
    desk_address: str
    rules: DeskRules
    # The staff console's address ([console] public_url): each row links to its page there.
    console_url: str | None = None
    lookup_site_url: str | None = None  # the guarantor's site, for look-ups a clerk must do


@dataclass(frozen=True)
class Digest:
    target: DigestTarget
    department: str
    since: datetime
    until: datetime
    zone: str
    lines: Sequence[DigestLine] = field(default_factory=tuple)

    @property
    def department_name(self) -> str:
        return self.target.rules.departments[self.department].name

    @property
    def recipients(self) -> list[str]:
        return list(self.target.rules.departments[self.department].digest_recipients)

    def counts(self) -> dict[str, int]:
        """Lines per section; "revoked" only when there is one (an alert, not a routine zero)."""
        counts = {s: sum(1 for line in self.lines if line.section == s) for s in SECTIONS}
        return {s: n for s, n in counts.items() if s in ALWAYS_SHOWN or n}

    def local_date(self) -> str:
        return self.until.astimezone(ZoneInfo(self.zone)).date().isoformat()

    def idempotency_key(self) -> str:
        return digest_key(self.target.desk, self.department, self.until, self.zone)


def digest_key(desk: str, department: str, now: datetime, zone: str) -> str:
    """``digest:<desk>:<department>:<local date>``: one digest per department and day."""
    return f"digest:{desk}:{department}:{now.astimezone(ZoneInfo(zone)).date().isoformat()}"


def _short_time(moment: datetime, zone: str) -> str:
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local.month}/{local.day}({'月火水木金土日'[local.weekday()]}) {local:%H:%M}"


def default_since(session: Session, target: DigestTarget, department: str, now: datetime, zone: str) -> datetime:
    """Since the last digest enqueued for this department; the first one covers yesterday and today."""
    prefix = f"digest:{target.desk}:{department}:"
    last = session.exec(
        select(func.max(OutboxMessage.created_at)).where(
            OutboxMessage.kind == DIGEST_KIND, OutboxMessage.idempotency_key.startswith(prefix, autoescape=True)
        )
    ).first()
    if last is not None:
        return last
    local_today = now.astimezone(ZoneInfo(zone)).date()
    return datetime.combine(local_today - timedelta(days=1), time(0), tzinfo=ZoneInfo(zone))


def collect(
    session: Session,
    target: DigestTarget,
    *,
    now: datetime,
    zone: str,
    since: datetime | None = None,
    departments: Sequence[str] | None = None,
) -> list[Digest]:
    """One digest per department of the desk (in rules order), each over its own period."""
    digests = []
    for department in departments or list(target.rules.departments):
        start = since or default_since(session, target, department, now, zone)
        lines = [
            line
            for line in collect_lines(
                session,
                desk=target.desk,
                rules=target.rules,
                since=start,
                until=now,
                lookup_site_url=target.lookup_site_url,
            )
            if line.department == department
        ]
        digests.append(Digest(target, department, start, now, zone, tuple(lines)))
    return digests


def _context(digest: Digest) -> dict[str, Any]:
    counts = digest.counts()
    sections = []
    for key in SECTIONS:
        rows = [
            _line_view(line, digest.zone, digest.target.console_url) for line in digest.lines if line.section == key
        ]
        if key not in ALWAYS_SHOWN and not rows:
            continue
        sections.append({"key": key, "title": SECTION_TITLES[key], "short": SECTION_SHORT[key], "lines": rows})
    return {
        "town": digest.target.rules.town,
        "desk_name": digest.target.desk_name,
        "department_name": digest.department_name,
        "since": local_time_text(digest.since, digest.zone),
        "until": local_time_text(digest.until, digest.zone),
        "counts": counts,
        "total": sum(counts.values()),
        "sections": sections,
    }


def console_link(console_url: str | None, receipt_no: str) -> str:
    """The console page of a mail, or "" without [console] public_url."""
    if not console_url or not receipt_no:
        return ""
    return f"{console_url.rstrip('/')}/submissions/{quote(receipt_no, safe='')}"


def _line_view(line: DigestLine, zone: str, console_url: str | None = None) -> dict[str, Any]:
    # Values from senders and documents become one displayable line each (the HTML template
    # escapes them as well).
    def one(value: str, limit: int = 200) -> str:
        return clean_header_text(value, limit)

    return {
        "receipt_no": one(line.receipt_no, 32) or "—",
        "time": _short_time(line.at, zone),
        "contractor": one(line.contractor),
        "work_name": one(line.work_name),
        "guarantee_type": one(line.guarantee_type, 32),
        "guarantee_no": one(line.guarantee_no, 64),
        "masked_key": one(line.masked_key, 32),
        "verdict": line.verdict,
        "verdict_label": line.verdict_label,
        "reasons": [one(reason, 240) for reason in line.reasons],
        "sender": one(line.sender, 320),
        "resend_of": one(line.resend_of, 32),
        "resent_as": one(line.resent_as, 32),
        "url": console_link(console_url, line.receipt_no),
        "contract_no": one(line.contract_no, 64),
        "contract_amount": one(line.contract_amount, 32),
        "guarantee_amount": one(line.guarantee_amount, 32),
        "period": one(line.period, 64),
    }


def subject(digest: Digest) -> str:
    counts = digest.counts()
    local = digest.until.astimezone(ZoneInfo(digest.zone))
    tally = "・".join(f"{SECTION_SHORT[s]}{counts[s]}件" for s in SECTIONS if s in counts)
    return (
        f"【{digest.target.desk_name}】電子保証 受付状況 {local.month}月{local.day}日"
        f"({'月火水木金土日'[local.weekday()]}) {digest.department_name}({tally})"
    )


def render_text(digest: Digest, env: jinja2.Environment) -> str:
    return render_template(env, TEXT_TEMPLATE, _context(digest))


def render_html(digest: Digest, env: jinja2.Environment) -> str:
    return render_template(env, HTML_TEMPLATE, _context(digest))


def _cell(value: str) -> str:
    value = clean_header_text(value or "", 400)
    return "'" + value if value.startswith(_FORMULA_START) else value


def render_csv(digest: Digest) -> bytes:
    """UTF-8 with BOM and CRLF line ends, so Excel shows the Japanese columns as they are."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    zone = ZoneInfo(digest.zone)
    for key in SECTIONS:
        for line in (x for x in digest.lines if x.section == key):
            writer.writerow(
                [
                    _cell(v)
                    for v in (
                        SECTION_SHORT[key],
                        line.receipt_no,
                        f"{line.at.astimezone(zone):%Y-%m-%d %H:%M}",
                        line.contractor,
                        line.work_name,
                        line.guarantee_type,
                        line.guarantee_no,
                        line.masked_key,
                        line.verdict_label,
                        " / ".join(line.reasons),
                        line.resend_of,
                        line.resent_as,
                        line.sender,
                        line.contract_no,
                        line.contract_amount,
                        line.guarantee_amount,
                        line.period,
                    )
                ]
            )
    return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")


def csv_filename(digest: Digest) -> str:
    return f"keydesk-{digest.target.desk}-{digest.department}-{digest.local_date()}.csv"


def build_digest_message(digest: Digest, env: jinja2.Environment, *, now: datetime) -> EmailMessage:
    recipients = digest.recipients
    if not recipients:
        raise ValueError(f"department {digest.department} has no digest_recipients")
    message = build_message(
        sender=Mailbox(digest.target.desk_address, digest.target.desk_name),
        to=[Mailbox(address) for address in recipients],
        subject=subject(digest),
        text=render_text(digest, env),
        html=render_html(digest, env),
        now=now,
        charset="utf-8",
        auto_submitted="auto-generated",
    )
    message.add_attachment(
        render_csv(digest),
        maintype="text",
        subtype="csv",
        filename=csv_filename(digest),
        params={"charset": "utf-8"},
    )
    mark(message, kind=DIGEST_KIND, desk=digest.target.desk)
    return message


@dataclass(frozen=True)
class DigestOutcome:
    department: str
    key: str
    created: bool  # False: already enqueued for this date, or nothing to send to
    outbox_id: int | None
    reason: str


def enqueue_digests(
    session: Session,
    target: DigestTarget,
    env: jinja2.Environment,
    *,
    now: datetime,
    zone: str,
    since: datetime | None = None,
) -> list[DigestOutcome]:
    """Put today's digest of every department with recipients into the outbox (caller commits)."""
    outcomes = []
    for department, settings in target.rules.departments.items():
        key = digest_key(target.desk, department, now, zone)
        if not settings.digest_recipients:
            outcomes.append(DigestOutcome(department, key, False, None, "no digest_recipients"))
            continue
        existing = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == key)).first()
        if existing is not None:
            outcomes.append(DigestOutcome(department, key, False, existing.id, "already enqueued today"))
            continue
        [digest] = collect(session, target, now=now, zone=zone, since=since, departments=[department])
        message = build_digest_message(digest, env, now=now)
        row, created = enqueue(
            session,
            desk=target.desk,
            idempotency_key=key,
            kind=DIGEST_KIND,
            message=message,
            envelope_from=target.desk_address,
            recipients=digest.recipients,
        )
        log.info("digest %s enqueued: %d lines for %s", key, len(digest.lines), ", ".join(digest.recipients))
        outcomes.append(DigestOutcome(department, key, created, row.id, f"{len(digest.lines)} lines"))
    return outcomes
