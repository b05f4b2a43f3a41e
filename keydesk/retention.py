"""`keydesk purge --before DATE`: raw mails and documents past the town's retention period go.

What stays: every row (inbound mail, documents, submissions, outbox) with its hashes, receipt
numbers and verdicts, and the whole audit trail, so `keydesk audit verify` stays green and the
history can still be told; the row is marked ``purged_at``. What goes: the stored files (the raw
``.eml`` and the extracted PDFs), unless a younger mail still refers to the same file (stored by
content hash, one PDF can belong to a returned mail and to its resend). The purge itself is an
audit event per desk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from foundation.errors import UsageProblem
from intake.raw_store import RawStore
from store.audit import record as audit
from store.retry import retry_on_conflict
from store.states import InboundState
from store.tables import Document, InboundMessage


@dataclass(frozen=True)
class PurgeReport:
    desk: str
    mails: int
    files_removed: int
    files_kept: int  # shared with a mail that is not purged


def latest_allowed(today: date, years: int) -> date:
    """The latest --before a retention of ``years`` allows: today, ``years`` years ago (29 Feb → 28 Feb)."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)


def check_before(before: date, today: date, years: int) -> None:
    limit = latest_allowed(today, years)
    if before > limit:
        raise UsageProblem(
            f"保存期間 ({years} 年) 内のメールは削除できません: --before は {limit.isoformat()} 以前に"
            f"してください (retention.years in keydesk.toml)"
        )


def purge(
    engine: Engine,
    store: RawStore,
    desk: str,
    before: date,
    zone: ZoneInfo,
    *,
    dry_run: bool = False,
    actor: str = "cli",
) -> PurgeReport:
    cutoff = datetime.combine(before, time.min, tzinfo=zone).astimezone(timezone.utc)
    with Session(engine) as session:
        old = list(
            session.exec(
                select(InboundMessage).where(
                    InboundMessage.desk == desk,
                    InboundMessage.received_at < cutoff,
                    InboundMessage.purged_at.is_(None),
                    InboundMessage.processed_at.is_not(None) | (InboundMessage.state == InboundState.QUARANTINED),
                )
            )
        )
        ids = [row.id for row in old]
        files = {row.raw_path for row in old if row.raw_path}
        documents = list(session.exec(select(Document).where(Document.inbound_id.in_(ids or [-1]))))
        files |= {document.stored_path for document in documents if document.stored_path}
        # A file stays while any mail that is not purged still refers to it.
        still_used = set(
            session.exec(
                select(InboundMessage.raw_path).where(
                    InboundMessage.raw_path.in_(files or {""}),
                    InboundMessage.id.not_in(ids or [-1]),
                    InboundMessage.purged_at.is_(None),
                )
            )
        )
        still_used |= set(
            session.exec(
                select(Document.stored_path)
                .join(InboundMessage, InboundMessage.id == Document.inbound_id)
                .where(
                    Document.stored_path.in_(files or {""}),
                    Document.inbound_id.not_in(ids or [-1]),
                    InboundMessage.purged_at.is_(None),
                )
            )
        )
    removable = sorted(files - still_used)
    report = PurgeReport(desk, len(ids), len(removable), len(files & still_used))
    if dry_run or not ids:
        return report
    now = datetime.now(timezone.utc)

    def mark() -> None:
        # Rows first (marked and audited in one commit), files after: a crash in between leaves
        # files that a second purge removes, never a row that claims a file that is gone unmarked.
        with Session(engine) as session:
            for row in session.exec(select(InboundMessage).where(InboundMessage.id.in_(ids))):
                row.purged_at = now
                session.add(row)
            audit(
                session,
                desk,
                actor,
                "retention.purged",
                f"before:{before.isoformat()}",
                {
                    "mails": len(ids),
                    "first_inbound": min(ids),
                    "last_inbound": max(ids),
                    "files_removed": len(removable),
                    "files_kept": report.files_kept,
                },
            )
            session.commit()

    retry_on_conflict(mark, what="marking purged mails")
    for relative in removable:
        store.remove(relative)
    return report
