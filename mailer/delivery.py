"""Delivering due outbox rows over SMTP, at most once per recipient.

States of a row (``OutboxMessage.state``)::

    pending ──claim──► sending ──body written──► data_sent ──answer──► sent | failed | pending (4xx)

Every arrow is its own commit, and every commit after the claim is guarded by the claim token
(see below), so a deliverer that lost its claim changes nothing.

Why ``data_sent``. Once the final dot is on the wire the server may take the message, and only
its answer tells us; a crash (or a dropped connection) between the dot and our commit of that
answer leaves us unable to know. Sending again could give the contractor two copies, so keydesk
chooses at-most-once for that window:

- ``data_sent`` is committed *before* the final dot is written (after MAIL, RCPT and the body);
- a row found in ``sending`` whose claim expired was abandoned before the final dot: the server
  cannot hold it, so it goes back to ``pending`` and is sent again;
- a row found in ``data_sent`` whose claim expired, or a connection that ends after the final dot
  without an answer, is *delivered-unconfirmed*: its recipients become ``unconfirmed``, the row
  ``sent`` with a note in ``last_error``, a warning is logged and an audit event recorded. Staff
  who learn it never arrived can send it again with ``keydesk outbox retry ID``.

Per recipient (``recipient_states_json``): ``pending`` (to send; 4xx answers stay here),
``in_data`` (accepted by RCPT, in the transaction now running), ``sent``, ``unconfirmed``,
``failed`` (5xx, or still 4xx when ``give_up_after_hours`` have passed since the row was
enqueued). Only ``pending`` recipients are ever part of a transaction, so an accepted recipient
is never sent the message twice and a refused one is retried alone. The row is ``pending`` while
any recipient is, else ``sent`` if anyone got it, else ``failed``.

Claims. Several deliverers may run at once (daemon, ``keydesk outbox send``, another host). Due
rows are claimed a batch at a time with ``UPDATE … SET state='sending', next_attempt_at=<lease
end> WHERE id IN (…) AND state='pending' RETURNING …``: each row goes to exactly one claimer. The
lease end doubles as the claim token: every later update requires it unchanged, so a deliverer
that stalled past its lease cannot write ``data_sent`` and abandons the transaction before the
final dot (the server discards it). A row whose lease ended in ``sending``/``data_sent`` is taken
as abandoned by a stopped deliverer and recovered as above. When the server cannot be reached,
the rest of the claimed batch goes back to ``pending`` at once, with the same backoff.

The clock is a parameter (``now``): tests move time without sleeping.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from mailer.settings import OutboxSettings
from mailer.smtp_client import ClaimLost, SendResult, SmtpConnectError, SmtpSession
from store import audit
from store.states import OutboxState, RecipientState
from store.tables import OutboxMessage

log = logging.getLogger(__name__)
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


@dataclass(frozen=True)
class FaultHooks:
    """Fault-injection points for tests (a hook may kill the process to simulate a crash)."""

    after_claim: Callable[[int], None] | None = None
    after_final_answer: Callable[[int, SendResult], None] | None = None


@dataclass
class DeliveryReport:
    sent: int = 0
    retry_later: int = 0
    failed: int = 0
    unconfirmed: int = 0
    recovered: int = 0
    connection_error: str | None = None
    ids: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"sent={self.sent} retry_later={self.retry_later} failed={self.failed} "
            f"unconfirmed={self.unconfirmed} recovered={self.recovered}"
        )


def retry_delay(attempts: int, settings: OutboxSettings) -> timedelta:
    """Growing backoff: first_retry_seconds × backoff_factor^(attempts-1), capped."""
    seconds = settings.first_retry_seconds * settings.backoff_factor ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.max_retry_seconds))


def default_lease(timeout_seconds: int) -> timedelta:
    # A transaction is a handful of SMTP steps, each bounded by the socket timeout.
    return timedelta(seconds=max(300, 10 * timeout_seconds))


def _states(row) -> dict[str, str]:
    states = json.loads(row.recipient_states_json or "{}")
    for recipient in json.loads(row.recipients_json):
        states.setdefault(recipient, R_PENDING)
    return states


def _guarded(
    engine: Engine,
    row_id: int,
    token: datetime,
    expected: str,
    values: dict,
    events: list[tuple[str, str, dict]] = (),
    desk: str = "",
    now: datetime | None = None,
) -> bool:
    """Apply ``values`` if the row is still ours; record audit events in the same transaction."""
    guarded = update(T).where(T.c.id == row_id, T.c.state == expected, T.c.next_attempt_at == token).values(**values)
    if not events:  # the common case, kept light: one statement, one commit
        with engine.begin() as connection:
            return connection.execute(guarded).rowcount == 1
    for _ in range(5):
        with Session(engine) as session:
            if session.connection().execute(guarded).rowcount != 1:
                session.rollback()
                return False
            for action, subject, detail in events:
                audit.record(session, desk, ACTOR, action, subject, detail, at=now)
            try:
                session.commit()
                return True
            except IntegrityError:  # another writer extended the audit chain first
                session.rollback()
    raise RuntimeError(f"outbox {row_id}: could not record the outcome (audit chain contention)")


def recover_stale(engine: Engine, now: datetime) -> int:
    """Rows whose deliverer stopped (lease ended in ``sending``/``data_sent``); see the docstring."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(T).where(T.c.state.in_((SENDING, DATA_SENT)), T.c.next_attempt_at <= now)
        ).all()
    recovered = 0
    for row in rows:
        states = _states(row)
        if row.state == SENDING:
            states = {r: (R_PENDING if s == R_IN_DATA else s) for r, s in states.items()}
            note = "a deliverer stopped before the final dot; sent again"
            values = dict(
                state=PENDING, next_attempt_at=now, recipient_states_json=json.dumps(states, ensure_ascii=False)
            )
            events = []
            log.warning("outbox %s: deliverer stopped before DATA ended; will send again", row.id)
        else:
            states = {r: (R_UNCONFIRMED if s == R_IN_DATA else s) for r, s in states.items()}
            note = f"{UNCONFIRMED_NOTE}: a deliverer stopped after the final dot, before the answer was recorded; not sent again"
            values = _final_values(states, now, note)
            values["recipient_states_json"] = json.dumps(states, ensure_ascii=False)
            events = [("outbox.unconfirmed", f"outbox:{row.id}", {"message_id": row.message_id, "note": note})]
            log.warning("outbox %s: %s (message-id %s)", row.id, note, row.message_id)
        values["last_error"] = note
        if _guarded(engine, row.id, row.next_attempt_at, row.state, values, events, row.desk, now):
            recovered += 1
    return recovered


def _final_values(states: dict[str, str], now: datetime, note: str) -> dict:
    if any(s == R_PENDING for s in states.values()):
        return dict(state=PENDING)
    delivered = any(s in (R_SENT, R_UNCONFIRMED) for s in states.values())
    return dict(state=SENT if delivered else FAILED, sent_at=now if delivered else None, last_error=note)


def _claim(engine: Engine, ids: list[int], now: datetime, lease: timedelta) -> list:
    """The rows of ``ids`` that are now ours until ``now + lease`` (their ``next_attempt_at``).

    A batch is claimed in one statement; should the lease end before a row's turn comes, another
    deliverer may recover it, and our guarded ``data_sent`` update then fails before the final dot.
    """
    with engine.begin() as connection:
        rows = connection.execute(
            update(T)
            .where(T.c.id.in_(ids), T.c.state == PENDING, T.c.next_attempt_at <= now)
            .values(state=SENDING, next_attempt_at=now + lease, attempts=T.c.attempts + 1)
            .returning(*T.c)
        ).all()
    return sorted(rows, key=lambda r: ids.index(r.id))


def _due_ids(engine: Engine, now: datetime, limit: int) -> list[int]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(T.c.id)
                .where(T.c.state == PENDING, T.c.next_attempt_at <= now)
                .order_by(T.c.next_attempt_at, T.c.id)
                .limit(limit)
            ).scalars()
        )


def deliver_due(
    engine: Engine,
    session: SmtpSession,
    settings: OutboxSettings,
    *,
    now: datetime,
    max_messages: int | None = None,
    lease: timedelta | None = None,
    hooks: FaultHooks = FaultHooks(),
) -> DeliveryReport:
    """Send every row due at ``now`` over ``session`` (one connection reused), then QUIT.

    Stops early when the server cannot be reached; the rows keep their backoff.
    """
    lease = lease or default_lease(session.connector.settings.timeout_seconds)
    report = DeliveryReport(recovered=recover_stale(engine, now))
    seen: set[int] = set()
    try:
        while max_messages is None or len(seen) < max_messages:
            room = settings.batch_size if max_messages is None else min(settings.batch_size, max_messages - len(seen))
            ids = [i for i in _due_ids(engine, now, room) if i not in seen]
            if not ids:
                break
            seen.update(ids)
            # Rows another deliverer claimed first are simply not among ours.
            claimed = _claim(engine, ids, now, lease)
            for index, row in enumerate(claimed):
                if hooks.after_claim:
                    hooks.after_claim(row.id)
                if not _deliver_one(engine, session, settings, row, now, hooks, report):
                    _release(engine, settings, claimed[index + 1 :], now, report.connection_error)
                    return report
    finally:
        session.close()
    return report


def _release(engine, settings: OutboxSettings, rows, now: datetime, reason: str | None) -> None:
    """Claimed rows not tried because the server could not be reached: back to pending, with backoff."""
    for row in rows:
        _guarded(
            engine,
            row.id,
            row.next_attempt_at,
            SENDING,
            dict(
                state=PENDING,
                next_attempt_at=now + retry_delay(row.attempts, settings),
                last_error=f"not tried: {reason}",
            ),
        )


def _deliver_one(engine, session: SmtpSession, settings, row, now, hooks, report) -> bool:
    """One claimed row; False when the connection failed and the batch should stop."""
    row_id, token = row.id, row.next_attempt_at
    states = _states(row)
    targets = [r for r, s in states.items() if s == R_PENDING]
    reached_data_sent: list[bool] = []

    def before_final_dot(answers: dict[str, tuple[int, str]]) -> bool:
        marked = dict(states)
        for recipient, (code, _) in answers.items():
            if code in (250, 251):
                marked[recipient] = R_IN_DATA
        values = dict(state=DATA_SENT, recipient_states_json=json.dumps(marked, ensure_ascii=False))
        if not _guarded(engine, row_id, token, SENDING, values):
            return False
        reached_data_sent.append(True)
        return True

    try:
        result = session.send(row.envelope_from, targets, row.raw, before_final_dot)
    except SmtpConnectError as exc:
        report.connection_error = str(exc)
        log.warning("outbox %s: %s", row_id, exc)
        _settle(
            engine, settings, row, token, SENDING, states, targets, SendResult(mail_code=(421, str(exc))), now, report
        )
        return False
    except ClaimLost:
        log.warning("outbox %s: claim lost to another deliverer; transaction abandoned before the final dot", row_id)
        return True
    if hooks.after_final_answer:
        hooks.after_final_answer(row_id, result)
    phase = DATA_SENT if reached_data_sent else SENDING
    _settle(engine, settings, row, token, phase, states, targets, result, now, report)
    return True


def _classify(code: int) -> str:
    return R_SENT if code in (250, 251) else R_FAILED if 500 <= code < 600 else R_PENDING


def _settle(
    engine, settings: OutboxSettings, row, token, phase, states, targets, result: SendResult, now, report
) -> None:
    """Turn the server's answers into recipient states, the row's state and audit events."""
    problems: list[str] = []
    new = dict(states)
    for recipient in targets:
        if result.mail_code is not None:
            code, text = result.mail_code
        elif recipient not in result.recipients:
            code, text = 421, "not tried"
        else:
            code, text = result.recipients[recipient]
            if code in (250, 251):
                if result.unconfirmed:
                    new[recipient] = R_UNCONFIRMED
                    continue
                code, text = result.data_code or (421, "no answer to DATA")
        new[recipient] = _classify(code)
        if code not in (250, 251):
            problems.append(f"{recipient}: {code} {text}")
    give_up_at = _aware(row.created_at) + timedelta(hours=settings.give_up_after_hours)
    gave_up = [r for r, s in new.items() if s == R_PENDING] if now >= give_up_at else []
    for recipient in gave_up:
        new[recipient] = R_FAILED
    note = "; ".join(problems)[:2000] or None
    if result.unconfirmed:
        note = (
            f"{UNCONFIRMED_NOTE}: the connection ended after the final dot, before the server answered; not sent again"
        )
    if gave_up:
        note = f"gave up after {settings.give_up_after_hours:g} hours: {note or ''}".strip()
    values = _final_values(new, now, note)
    values["recipient_states_json"] = json.dumps(new, ensure_ascii=False)
    values["last_error"] = note
    if values["state"] == PENDING:
        values["next_attempt_at"] = now + retry_delay(row.attempts, settings)  # the claim counted this attempt
    newly_failed = [r for r in targets if new[r] == R_FAILED]
    events = []
    if newly_failed:
        action = "outbox.failed" if values["state"] == FAILED else "outbox.recipient_failed"
        events.append(
            (action, f"outbox:{row.id}", {"recipients": newly_failed, "error": note, "message_id": row.message_id})
        )
    if result.unconfirmed:
        events.append(("outbox.unconfirmed", f"outbox:{row.id}", {"message_id": row.message_id, "note": note}))
    if not _guarded(engine, row.id, token, phase, values, events, row.desk, now):
        log.error("outbox %s: claim lost before the outcome was recorded (%s)", row.id, values["state"])
        return
    _count_and_log(row, values, new, newly_failed, note, result, report)


def _count_and_log(row, values, new, newly_failed, note, result, report) -> None:
    report.ids.append(row.id)
    state = values["state"]
    if result.unconfirmed:
        report.unconfirmed += 1
        log.warning("outbox %s: %s (message-id %s)", row.id, note, row.message_id)
    elif state == SENT:
        report.sent += 1
        done = sum(1 for s in new.values() if s == R_SENT)
        log.info(
            "outbox %s sent to %d recipient(s) (message-id %s)%s",
            row.id,
            done,
            row.message_id,
            f"; failed: {', '.join(newly_failed)}" if newly_failed else "",
        )
    elif state == FAILED:
        report.failed += 1
        log.warning("outbox %s failed: %s", row.id, note)
    else:
        report.retry_later += 1
        log.info(
            "outbox %s: temporary refusal, next attempt at %s: %s", row.id, values["next_attempt_at"].isoformat(), note
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class RetryRefused(Exception):
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
        states = _states(row)
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
