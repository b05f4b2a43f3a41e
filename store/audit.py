"""The audit trail: append-only, each event's hash covering the previous one.

``verify_chain`` recomputes every hash; an edited, deleted or reordered row breaks the chain at
that point. ``prev_hash`` is unique, so two writers cannot both extend the same tail.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timezone

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.retry import retry_on_conflict
from store.tables import AuditEvent

GENESIS = "0" * 64


def _digest(prev_hash: str, desk: str, at: datetime, actor: str, action: str, subject: str, detail_json: str) -> str:
    if at.tzinfo is None:  # SQLite hands datetimes back naive; they were written as UTC.
        at = at.replace(tzinfo=timezone.utc)
    material = json.dumps(
        [prev_hash, desk, at.astimezone(timezone.utc).isoformat(timespec="microseconds"), actor, action, subject, detail_json],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _tail_hash(session: Session) -> str:
    last = session.exec(select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(1)).first()
    return last.hash if last else GENESIS


def record(
    session: Session, desk: str, actor: str, action: str, subject: str = "", detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Add an event to the session (committed with the caller's transaction)."""
    at = at or datetime.now(timezone.utc)
    detail_json = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)
    prev_hash = _tail_hash(session)
    event = AuditEvent(
        desk=desk, at=at, actor=actor, action=action, subject=subject, detail_json=detail_json,
        prev_hash=prev_hash, hash=_digest(prev_hash, desk, at, actor, action, subject, detail_json),
    )
    session.add(event)
    session.flush()
    return event


def record_now(engine: Engine, desk: str, actor: str, action: str, subject: str = "",
               detail: dict[str, Any] | None = None) -> None:
    """Record in a transaction of its own, retrying when another writer extended the chain first."""
    def attempt() -> None:
        with Session(engine) as session:
            record(session, desk, actor, action, subject, detail)
            session.commit()

    retry_on_conflict(attempt, what="appending to the audit chain")


@dataclass(frozen=True)
class ChainReport:
    events: int
    first_broken_id: int | None
    reason: str = ""

    @property
    def intact(self) -> bool:
        return self.first_broken_id is None


def verify_chain(session: Session) -> ChainReport:
    expected_prev = GENESIS
    count = 0
    for event in session.exec(select(AuditEvent).order_by(col(AuditEvent.id))):
        count += 1
        if event.prev_hash != expected_prev:
            return ChainReport(count, event.id, "does not follow the previous event (deleted or reordered)")
        recomputed = _digest(event.prev_hash, event.desk, event.at, event.actor, event.action, event.subject, event.detail_json)
        if recomputed != event.hash:
            return ChainReport(count, event.id, "its content was changed after it was written")
        expected_prev = event.hash
    return ChainReport(count, None)
