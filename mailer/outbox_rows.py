"""Outbox rows as delivery and recovery see them: states, recipient states, guarded updates.

Every change a deliverer makes to a row it claimed is a *guarded update*: it applies only while
the row is still in the expected state with the claim token (``next_attempt_at``) it was claimed
with, so whoever lost the claim changes nothing. See ``mailer/delivery.py`` for the states.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import bindparam, text, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from store import audit
from store.retry import retry_on_conflict
from store.states import OutboxState, RecipientState
from store.tables import OutboxMessage

T = OutboxMessage.__table__
ACTOR = "mailer"

PENDING, SENDING, DATA_SENT, SENT, FAILED = (
    OutboxState.PENDING,
    OutboxState.SENDING,
    OutboxState.DATA_SENT,
    OutboxState.SENT,
    OutboxState.FAILED,
)
R_PENDING, R_IN_DATA, R_SENT, R_UNCONFIRMED, R_FAILED = (
    RecipientState.PENDING,
    RecipientState.IN_DATA,
    RecipientState.SENT,
    RecipientState.UNCONFIRMED,
    RecipientState.FAILED,
)
UNCONFIRMED_NOTE = "delivered-unconfirmed"

# An audit event to record with a guarded update: (action, subject, detail).
AuditEvent = tuple[str, str, dict]

# Built once: the SET clause comes from the parameters' column names, and SQLAlchemy caches the
# compiled form per set of names, so a guarded update costs no statement building per message.
_GUARDED = update(T).where(
    T.c.id == bindparam("guard_id"),
    T.c.state == bindparam("guard_state"),
    T.c.next_attempt_at == bindparam("guard_token"),
)

# An outcome whose loss would cost at most a second copy (at least once) need not wait for PostgreSQL's
# WAL flush: the commit is visible at once and outlives our process; only a crash of the database
# server within its WAL writer's delay (< 1 s) could undo it, and the row would then be sent again.
# SQLite already commits so (WAL, synchronous=NORMAL: durable across our crash, not a power cut).
_NO_FLUSH_WAIT = text("SET LOCAL synchronous_commit = off")


def recipient_states(row) -> dict[str, str]:
    states = json.loads(row.recipient_states_json or "{}")
    for recipient in json.loads(row.recipients_json):
        states.setdefault(recipient, R_PENDING)
    return states


def dump_states(states: dict[str, str]) -> str:
    return json.dumps(states, ensure_ascii=False)


def guarded_update(
    engine: Engine,
    row_id: int,
    token: datetime,
    expected: str,
    values: dict,
    events: list[AuditEvent] = (),
    desk: str = "",
    now: datetime | None = None,
    connection: Connection | None = None,
    durable: bool = True,
) -> bool:
    """Apply ``values`` if the row is still ours; record audit events in the same transaction.

    ``durable=False`` (an update without events whose loss only means sending again) lets PostgreSQL
    commit without waiting for the WAL flush.
    """
    params = dict(values, guard_id=row_id, guard_state=expected, guard_token=token)
    if not events:  # the common case, kept light: one statement, one commit
        if connection is not None:
            return _light(connection, params, durable)
        with engine.connect() as fresh:
            return _light(fresh, params, durable)

    def attempt() -> bool:
        with Session(engine) as session:
            if session.connection().execute(_GUARDED, params).rowcount != 1:
                session.rollback()
                return False
            for action, subject, detail in events:
                audit.record(session, desk, ACTOR, action, subject, detail, at=now)
            session.commit()
            return True

    return retry_on_conflict(attempt, what=f"outbox {row_id}: recording the outcome")


def _light(connection: Connection, params: dict, durable: bool) -> bool:
    try:
        if not durable and connection.dialect.name == "postgresql":
            connection.execute(_NO_FLUSH_WAIT)
        done = connection.execute(_GUARDED, params).rowcount == 1
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return done


def final_values(states: dict[str, str], now: datetime, note: str | None) -> dict:
    if any(s == R_PENDING for s in states.values()):
        return dict(state=PENDING)
    delivered = any(s in (R_SENT, R_UNCONFIRMED) for s in states.values())
    return dict(state=SENT if delivered else FAILED, sent_at=now if delivered else None, last_error=note)


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
