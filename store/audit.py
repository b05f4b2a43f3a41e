"""The audit trail: append-only, one hash chain per desk, each event's hash covering the previous one.

Keyed. In a deployment every hash is an HMAC-SHA256 under the *audit key*, a secret kept outside
the database (``[secrets] audit_key_file`` / ``audit_key_env``, created by ``keydesk init``). So
whoever can write the database but not read that key cannot rewrite history unnoticed: an edited,
deleted or reordered row, or a forged one, breaks the chain at that point. The key belongs to the
engine (:func:`use_chain_key`); an engine without one (tests, throwaway tools) writes a plain
SHA-256 chain, which still shows accidents but not a forger.

One chain per desk, not one for the whole database: two desks' writers never wait for each other.
Within a desk, ``prev_hash`` is unique, so two writers cannot both extend the same tail; the loser's
transaction runs again (:func:`store.retry.retry_on_conflict`). On PostgreSQL, where several
workers process one desk's mail at once, an append first takes a transaction-scoped advisory lock
on the desk's chain: a second appender then waits for the first one's commit and reads the new
tail, instead of losing at the unique index and running its whole transaction (a mail's
processing) again. The intake appends last, just before it commits, so the wait is one commit.
Each desk's chain starts from its own genesis value, derived from the desk id (and the key).

``verify_chain`` recomputes every desk's chain. The trail's *last* events could still be removed
without a trace inside the database; the count and tail printed by ``keydesk audit verify`` (and
kept in backups and logs) are the anchor for that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import weakref
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.claim_owner import advisory_key
from store.retry import retry_on_conflict
from store.tables import AuditEvent

GENESIS = "0" * 64  # kept for readers of old material; each desk's chain starts at genesis_for(desk)

_KEYS: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


def use_chain_key(engine: Engine, key: bytes | str | None) -> None:
    """Every event written or verified through ``engine`` is keyed with ``key`` (None: unkeyed)."""
    if key is None:
        _KEYS.pop(engine, None)
        return
    material = key.encode("utf-8") if isinstance(key, str) else key
    if len(material) < 16:
        raise ValueError("the audit key must be at least 16 bytes")
    _KEYS[engine] = material


def _key_of(session: Session) -> bytes | None:
    bind = session.get_bind()
    engine: Engine = bind.engine  # a Connection's engine, or the Engine itself
    return _KEYS.get(engine)


def _hash(key: bytes | None, material: bytes) -> str:
    if key is None:
        return hashlib.sha256(material).hexdigest()
    return hmac.new(key, material, hashlib.sha256).hexdigest()


def genesis_for(desk: str, key: bytes | None = None) -> str:
    """The value the first event of ``desk``'s chain points back to."""
    return _hash(key, json.dumps(["keydesk-audit-genesis", desk]).encode("utf-8"))


def _digest(
    key: bytes | None, prev_hash: str, desk: str, at: datetime, actor: str, action: str, subject: str, detail_json: str
) -> str:
    if at.tzinfo is None:  # SQLite hands datetimes back naive; they were written as UTC.
        at = at.replace(tzinfo=timezone.utc)
    material = json.dumps(
        [
            prev_hash,
            desk,
            at.astimezone(timezone.utc).isoformat(timespec="microseconds"),
            actor,
            action,
            subject,
            detail_json,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return _hash(key, material.encode("utf-8"))


def _tail_hash(session: Session, desk: str, key: bytes | None) -> str:
    last = session.exec(
        select(AuditEvent.hash).where(AuditEvent.desk == desk).order_by(col(AuditEvent.id).desc()).limit(1)
    ).first()
    return last if last else genesis_for(desk, key)


def record(
    session: Session,
    desk: str,
    actor: str,
    action: str,
    subject: str = "",
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Add an event to the session (committed with the caller's transaction)."""
    return record_many(session, desk, actor, [(action, subject, detail)], at=at)[0]


def record_many(
    session: Session,
    desk: str,
    actor: str,
    events: list[tuple[str, str, dict[str, Any] | None]],
    at: datetime | None = None,
) -> list[AuditEvent]:
    """Add several events ``(action, subject, detail)`` to the session, chained in this order: one
    lock, one read of the tail and one flush for all of them (the intake's batch of verdicts)."""
    at = at or datetime.now(timezone.utc)
    key = _key_of(session)
    if session.get_bind().dialect.name == "postgresql":
        # Held until this transaction ends: appenders of one desk queue here (see the module doc).
        session.connection().execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key("audit-chain", desk)}
        )
    prev_hash = _tail_hash(session, desk, key)
    added = []
    for action, subject, detail in events:
        detail_json = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, default=str)
        event = AuditEvent(
            desk=desk,
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            detail_json=detail_json,
            prev_hash=prev_hash,
            hash=_digest(key, prev_hash, desk, at, actor, action, subject, detail_json),
        )
        session.add(event)
        added.append(event)
        prev_hash = event.hash
    session.flush()
    return added


def record_now(
    engine: Engine, desk: str, actor: str, action: str, subject: str = "", detail: dict[str, Any] | None = None
) -> None:
    """Record in a transaction of its own, running it again when another writer extended the chain first."""

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
    # The newest event's hash per desk: written down elsewhere, it shows a trail cut at its end.
    tails: dict[str, str] | None = None
    keyed: bool = False

    @property
    def intact(self) -> bool:
        return self.first_broken_id is None


def verify_chain(session: Session) -> ChainReport:
    key = _key_of(session)
    expected: dict[str, str] = {}
    count = 0
    for event in session.exec(select(AuditEvent).order_by(col(AuditEvent.id)).execution_options(yield_per=1000)):
        count += 1
        previous = expected.get(event.desk) or genesis_for(event.desk, key)
        if event.prev_hash != previous:
            return ChainReport(
                count,
                event.id,
                "does not follow the previous event of its desk (deleted or reordered)",
                keyed=key is not None,
            )
        recomputed = _digest(
            key, event.prev_hash, event.desk, event.at, event.actor, event.action, event.subject, event.detail_json
        )
        if not hmac.compare_digest(recomputed, event.hash):
            return ChainReport(
                count,
                event.id,
                "its content was changed after it was written (or it was written without the audit key)",
                keyed=key is not None,
            )
        expected[event.desk] = event.hash
    return ChainReport(count, None, tails=expected, keyed=key is not None)
