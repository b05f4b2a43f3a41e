"""Taking back rows a stopped deliverer left behind, and staff's "send it again".

A row in ``sending``/``data_sent`` is abandoned when its lease ran out or its claim owner's
process is gone (store/claim_owner.py). What recovery does with it follows ``[outbox]
unknown_outcome`` per kind; see ``mailer/delivery.py``.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from foundation.errors import OperationalError
from mailer.outbox_rows import (
    DATA_SENT,
    FAILED,
    PENDING,
    R_FAILED,
    R_IN_DATA,
    R_PENDING,
    R_UNCONFIRMED,
    SENDING,
    SENT,
    T,
    UNCONFIRMED_NOTE,
    AuditEvent,
    aware,
    dump_states,
    final_values,
    guarded_update,
    recipient_states,
)
from mailer.settings import OutboxSettings
from store import audit
from store.claim_owner import ClaimOwner
from store.tables import OutboxMessage

log = logging.getLogger(__name__)


def _abandoned(rows, now: datetime, owner: ClaimOwner | None) -> list:
    """Rows whose claim ended: the lease ran out, or the owner's process is gone."""
    verdicts: dict[str, bool] = {}

    def owner_gone(owner_id: str | None) -> bool:
        if owner_id is None or owner is None:
            return False
        if owner_id not in verdicts:
            verdicts[owner_id] = not owner.alive(owner_id)
        return verdicts[owner_id]

    return [row for row in rows if aware(row.next_attempt_at) <= now or owner_gone(row.claimed_by)]


def recover_abandoned(engine: Engine, settings: OutboxSettings, now: datetime, owner: ClaimOwner | None = None) -> int:
    """Take back rows left in ``sending``/``data_sent`` by a deliverer that stopped; see the docstring."""
    with engine.connect() as connection:
        # Every round looks at the rows in flight, other workers' included: not at their bodies.
        columns = [column for column in T.c if column.name != "raw"]
        rows = connection.execute(select(*columns).where(T.c.state.in_((SENDING, DATA_SENT)))).all()
    recovered = 0
    for row in _abandoned(rows, now, owner):
        states = recipient_states(row)
        events: list[AuditEvent] = []
        if row.state == SENDING or settings.sends_again(row.kind):
            states = {r: (R_PENDING if s == R_IN_DATA else s) for r, s in states.items()}
            note = (
                "a deliverer stopped before the final dot; sent again"
                if row.state == SENDING and not settings.sends_again(row.kind)
                else "a deliverer stopped before recording the answer; sent again with the same Message-ID"
            )
            # The crash was not the server's answer: give back the attempt the claim counted.
            values = dict(state=PENDING, next_attempt_at=now, attempts=max(row.attempts - 1, 0))
            log.warning("outbox %s: %s (message-id %s)", row.id, note, row.message_id)
        else:
            states = {r: (R_UNCONFIRMED if s == R_IN_DATA else s) for r, s in states.items()}
            note = f"{UNCONFIRMED_NOTE}: a deliverer stopped after the final dot, before the answer was recorded; not sent again"
            values = final_values(states, now, note)
            events = [("outbox.unconfirmed", f"outbox:{row.id}", {"message_id": row.message_id, "note": note})]
            log.warning("outbox %s: %s (message-id %s)", row.id, note, row.message_id)
        values.update(recipient_states_json=dump_states(states), last_error=note, claimed_by=None)
        if guarded_update(engine, row.id, row.next_attempt_at, row.state, values, events, row.desk, now):
            recovered += 1
    return recovered


def recover_stale(engine: Engine, now: datetime, settings: OutboxSettings = OutboxSettings()) -> int:
    """Rows whose lease ended (kept for callers that have no owner)."""
    return recover_abandoned(engine, settings, now)


class RetryRefused(OperationalError):
    """``retry`` was asked for a row that has nothing to send again (reason: unknown | nothing)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def retry(engine: Engine, row_id: int, now: datetime, actor: str = "cli") -> list[str]:
    """Staff's "send it again now": failed and unconfirmed recipients become pending.

    Recipients already ``sent`` are kept as they are. The give-up clock still runs from the
    enqueue time, so after four days this means one more attempt, not four more days.
    Returns the recipients that will be sent again.
    """
    with Session(engine) as session:
        row = session.get(OutboxMessage, row_id)
        if row is None:
            raise RetryRefused("unknown")
        if row.state not in (FAILED, SENT, PENDING):
            raise RetryRefused("busy")
        states = recipient_states(row)
        again = [r for r, s in states.items() if s in (R_FAILED, R_UNCONFIRMED, R_PENDING)]
        if not again:
            raise RetryRefused("nothing")
        for recipient in again:
            states[recipient] = R_PENDING
        result = session.connection().execute(
            update(T)
            .where(T.c.id == row_id, T.c.state == row.state)
            .values(state=PENDING, next_attempt_at=now, recipient_states_json=json.dumps(states, ensure_ascii=False))
        )
        if result.rowcount != 1:
            raise RetryRefused("busy")
        audit.record(session, row.desk, actor, "outbox.retry", f"outbox:{row_id}", {"recipients": again}, at=now)
        session.commit()
    log.info("outbox %s: retry requested by %s for %d recipient(s)", row_id, actor, len(again))
    return again
