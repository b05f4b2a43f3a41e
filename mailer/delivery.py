"""Delivering due outbox rows over SMTP: at least once, or at most once, per kind of mail.

States of a row (``OutboxMessage.state``)::

    pending ──claim──► sending ──(final dot)──► data_sent ──answer──► sent | failed | pending (4xx)

Claims and owners. Several deliverers may run at once (the daemon, ``keydesk outbox send``,
workers on other hosts). Due rows are claimed a batch at a time with ``UPDATE … SET
state='sending', claimed_by=<owner>, next_attempt_at=<lease end> WHERE id IN (…) AND
state='pending' RETURNING …``: each row goes to exactly one claimer. The owner id is backed by a
lock that dies with its process (store/claim_owner.py), so the claims of a killed deliverer are
recovered by the next round of any deliverer, a restarted ``keydesk run`` included, at once.
The lease end doubles as the claim token: every later update requires it unchanged, so a
deliverer that lost its claim changes nothing. The lease itself only matters for an owner that
lives but stalls.

The unknown outcome. Once the final dot is on the wire the server may take the message, and only
its answer tells us; a crash (or a dropped connection) between the dot and our commit of that
answer leaves us unable to know. What happens then is chosen per kind (``[outbox]
unknown_outcome``):

- ``again`` (the default for every kind): the row simply stays ``sending`` until its outcome is
  committed; a recovered row goes back to ``pending`` and is sent again with the same
  Message-ID. A contractor may, rarely, get two identical copies (only when the crash fell
  between the server's 250 and our commit); nobody is ever left without an answer. Before the
  final dot the deliverer checks that the row is still its own, so a deliverer that lost its
  claim abandons the transaction (the server discards it).
- ``never``: ``data_sent`` is committed (guarded by the claim) right before the final dot, so the
  row is ``data_sent`` only from the final dot to the recorded answer. A recovered ``data_sent``
  row, or a connection that ends after the dot without an answer, is *delivered-unconfirmed*:
  its recipients become ``unconfirmed``, the row ``sent`` with a note in ``last_error``, and an
  audit event is recorded. Staff can send it again with ``keydesk outbox retry ID``.

Each answer is committed on its own, right after it comes: grouping answers would leave several
messages in the unknown outcome at once (docs/delivery.md argues it). On PostgreSQL the answer of an
``again`` row does not wait for the WAL flush (losing it to a database crash means one more copy).

Per recipient (``recipient_states_json``): ``pending`` (to send; 4xx answers stay here),
``in_data`` (accepted by RCPT, in a ``never`` transaction now running), ``sent``,
``unconfirmed``, ``failed`` (5xx, or still 4xx when ``give_up_after_hours`` have passed since the
row was enqueued). Only ``pending`` recipients are ever part of a transaction, so an accepted
recipient whose answer was recorded is never sent the message twice. The row is ``pending``
while any recipient is, else ``sent`` if anyone got it, else ``failed``.

Attempts count the server's answers, not crashes: recovering a dead owner's row gives back the
attempt its claim counted. When the server cannot be reached, the rest of the claimed batch goes
back to ``pending`` at once, with the backoff.

The clock is a parameter (``now``): tests move time without sleeping.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from mailer.outbox_recovery import RetryRefused, recover_abandoned, recover_stale, retry  # noqa: F401 - re-exported
from mailer.outbox_rows import (
    DATA_SENT,
    FAILED,
    PENDING,
    R_FAILED,
    R_IN_DATA,
    R_PENDING,
    R_SENT,
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
from mailer.smtp_client import ClaimLost, SendResult, SmtpConnectError, SmtpSession
from store.claim_owner import ClaimOwner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultHooks:
    """Fault-injection points for tests (a hook may kill the process to simulate a crash)."""

    after_claim: Callable[[int], None] | None = None
    before_final_dot: Callable[[int], None] | None = None
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


@dataclass(frozen=True)
class Claim:
    """A row this deliverer holds: what to send, and the token proving the row is still ours."""

    row_id: int
    desk: str
    kind: str
    message_id: str
    envelope_from: str
    raw: bytes
    attempts: int
    created_at: datetime
    token: datetime  # the row's next_attempt_at as we claimed it
    states: dict[str, str]  # recipient → state when claimed
    claimed_monotonic: float  # when we claimed it, by this process's monotonic clock

    @classmethod
    def of(cls, row, claimed_monotonic: float) -> Claim:
        return cls(
            row.id,
            row.desk,
            row.kind,
            row.message_id,
            row.envelope_from,
            row.raw,
            row.attempts,
            aware(row.created_at),
            row.next_attempt_at,
            recipient_states(row),
            claimed_monotonic,
        )

    @property
    def targets(self) -> list[str]:
        return [r for r, s in self.states.items() if s == R_PENDING]


@dataclass
class Round:
    """One delivery round: where, with which settings, as whom, at what time, and its tally."""

    engine: Engine
    settings: OutboxSettings
    now: datetime
    lease: timedelta
    owner_id: str | None = None
    hooks: FaultHooks = FaultHooks()
    report: DeliveryReport = field(default_factory=DeliveryReport)
    _connection: Connection | None = None

    def connection(self) -> Connection:
        """One connection for the round's small statements (a pool checkout per message costs more than the
        statement); each statement still commits on its own."""
        if self._connection is None:
            self._connection = self.engine.connect()
        return self._connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def retry_delay(attempts: int, settings: OutboxSettings) -> timedelta:
    """Growing backoff: first_retry_seconds × backoff_factor^(attempts-1), capped."""
    seconds = settings.first_retry_seconds * settings.backoff_factor ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.max_retry_seconds))


def default_lease(timeout_seconds: int) -> timedelta:
    # A transaction is a handful of SMTP steps, each bounded by the socket timeout.
    return timedelta(seconds=max(300, 10 * timeout_seconds))


# -- claiming and sending -------------------------------------------------------------------------


def _claim(rnd: Round, ids: list[int]) -> list[Claim]:
    """The rows of ``ids`` that are now ours until ``now + lease`` (their ``next_attempt_at``).

    A batch is claimed in one statement; should the lease end before a row's turn comes, another
    deliverer may recover it, and our check before the final dot then abandons the transaction.
    """
    with rnd.engine.begin() as connection:
        rows = connection.execute(
            update(T)
            .where(T.c.id.in_(ids), T.c.state == PENDING, T.c.next_attempt_at <= rnd.now)
            .values(
                state=SENDING, next_attempt_at=rnd.now + rnd.lease, attempts=T.c.attempts + 1, claimed_by=rnd.owner_id
            )
            .returning(*T.c)
        ).all()
    claimed_at = time.monotonic()
    order = {row_id: position for position, row_id in enumerate(ids)}
    return [Claim.of(row, claimed_at) for row in sorted(rows, key=lambda r: order[r.id])]


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
    lease: timedelta | None = None,
    hooks: FaultHooks = FaultHooks(),
    owner: ClaimOwner | None = None,
) -> DeliveryReport:
    """Send every row due at ``now`` over ``session`` (one connection reused), then QUIT.

    First takes back the rows of deliverers that stopped (``owner`` tells which owners are gone;
    without one, only ended leases count). Stops early when the server cannot be reached; the
    rows keep their backoff.
    """
    lease = lease or default_lease(session.connector.settings.timeout_seconds)
    rnd = Round(engine, settings, now, lease, owner.id if owner else None, hooks)
    rnd.report.recovered = recover_abandoned(engine, settings, now, owner)
    seen: set[int] = set()
    try:
        while True:
            ids = [i for i in _due_ids(engine, now, settings.batch_size) if i not in seen]
            if not ids:
                break
            seen.update(ids)
            # Rows another deliverer claimed first are simply not among ours.
            claimed = _claim(rnd, ids)
            for index, claim in enumerate(claimed):
                if hooks.after_claim:
                    hooks.after_claim(claim.row_id)
                if not _deliver_one(rnd, session, claim):
                    _release(rnd, claimed[index + 1 :])
                    return rnd.report
    finally:
        session.close()
        rnd.close()
    return rnd.report


def _release(rnd: Round, claims: list[Claim]) -> None:
    """Claimed rows not tried because the server could not be reached: back to pending, with backoff."""
    for claim in claims:
        guarded_update(
            rnd.engine,
            claim.row_id,
            claim.token,
            SENDING,
            dict(
                state=PENDING,
                claimed_by=None,
                next_attempt_at=rnd.now + retry_delay(claim.attempts, rnd.settings),
                last_error=f"not tried: {rnd.report.connection_error}",
            ),
        )


def _still_ours(rnd: Round, claim: Claim) -> bool:
    """Whether nobody took the row over. Only a lease that ran out lets a living owner's row go, so
    while less than half the lease has passed on our own clock the answer is known without asking."""
    if time.monotonic() - claim.claimed_monotonic < rnd.lease.total_seconds() / 2:
        return True
    connection = rnd.connection()
    try:
        return (
            connection.execute(
                select(T.c.id).where(T.c.id == claim.row_id, T.c.state == SENDING, T.c.next_attempt_at == claim.token)
            ).first()
            is not None
        )
    finally:
        connection.rollback()  # end the read transaction: nothing is held while the server answers


def _deliver_one(rnd: Round, session: SmtpSession, claim: Claim) -> bool:
    """One claimed row; False when the connection failed and the batch should stop."""
    again = rnd.settings.sends_again(claim.kind)
    reached_data_sent: list[bool] = []

    def before_final_dot(answers: dict[str, tuple[int, str]]) -> bool:
        if rnd.hooks.before_final_dot:
            rnd.hooks.before_final_dot(claim.row_id)
        if again:  # at least once: nothing to record, only make sure nobody took the row over
            return _still_ours(rnd, claim)
        marked = dict(claim.states)
        for recipient, (code, _) in answers.items():
            if code in (250, 251):
                marked[recipient] = R_IN_DATA
        if not guarded_update(
            rnd.engine,
            claim.row_id,
            claim.token,
            SENDING,
            dict(state=DATA_SENT, recipient_states_json=dump_states(marked)),
            connection=rnd.connection(),
        ):
            return False
        reached_data_sent.append(True)
        return True

    try:
        # At least once, the check may come before the body, which then goes out with the final dot.
        result = session.send(
            claim.envelope_from, claim.targets, claim.raw, before_final_dot, write_body_first=not again
        )
    except SmtpConnectError as exc:
        rnd.report.connection_error = str(exc)
        log.warning("outbox %s: %s", claim.row_id, exc)
        _settle(rnd, claim, SENDING, SendResult(mail_code=(421, str(exc))))
        return False
    except ClaimLost:
        log.warning(
            "outbox %s: claim lost to another deliverer; transaction abandoned before the final dot", claim.row_id
        )
        return True
    if rnd.hooks.after_final_answer:
        rnd.hooks.after_final_answer(claim.row_id, result)
    _settle(rnd, claim, DATA_SENT if reached_data_sent else SENDING, result)
    return True


def _classify(code: int) -> str:
    return R_SENT if code in (250, 251) else R_FAILED if 500 <= code < 600 else R_PENDING


@dataclass(frozen=True)
class _Settlement:
    """What one transaction's answers mean for a row: new recipient states, the note, who failed."""

    states: dict[str, str]
    note: str | None
    newly_failed: list[str]
    unconfirmed: bool


def _settlement(rnd: Round, claim: Claim, result: SendResult) -> _Settlement:
    problems: list[str] = []
    new = dict(claim.states)
    # At least once: a connection that ended after the dot is sent again rather than left unconfirmed.
    unconfirmed = result.unconfirmed and not rnd.settings.sends_again(claim.kind)
    for recipient in claim.targets:
        if result.mail_code is not None:
            code, text = result.mail_code
        elif recipient not in result.recipients:
            code, text = 421, "not tried"
        else:
            code, text = result.recipients[recipient]
            if code in (250, 251):
                if unconfirmed:
                    new[recipient] = R_UNCONFIRMED
                    continue
                code, text = result.data_code or (421, "the connection ended before the server answered the final dot")
        new[recipient] = _classify(code)
        if code not in (250, 251):
            problems.append(f"{recipient}: {code} {text}")
    give_up_at = claim.created_at + timedelta(hours=rnd.settings.give_up_after_hours)
    gave_up = [r for r, s in new.items() if s == R_PENDING] if rnd.now >= give_up_at else []
    for recipient in gave_up:
        new[recipient] = R_FAILED
    note = "; ".join(problems)[:2000] or None
    if unconfirmed:
        note = (
            f"{UNCONFIRMED_NOTE}: the connection ended after the final dot, before the server answered; not sent again"
        )
    if gave_up:
        note = f"gave up after {rnd.settings.give_up_after_hours:g} hours: {note or ''}".strip()
    newly_failed = [r for r in claim.targets if new[r] == R_FAILED]
    return _Settlement(new, note, newly_failed, unconfirmed)


def _settle(rnd: Round, claim: Claim, phase: str, result: SendResult) -> None:
    """Turn the server's answers into recipient states, the row's state and audit events."""
    outcome = _settlement(rnd, claim, result)
    values = final_values(outcome.states, rnd.now, outcome.note)
    values.update(recipient_states_json=dump_states(outcome.states), last_error=outcome.note, claimed_by=None)
    if values["state"] == PENDING:
        values["next_attempt_at"] = rnd.now + retry_delay(
            claim.attempts, rnd.settings
        )  # the claim counted this attempt
    events: list[AuditEvent] = []
    if outcome.newly_failed:
        action = "outbox.failed" if values["state"] == FAILED else "outbox.recipient_failed"
        events.append(
            (
                action,
                f"outbox:{claim.row_id}",
                {"recipients": outcome.newly_failed, "error": outcome.note, "message_id": claim.message_id},
            )
        )
    if outcome.unconfirmed:
        events.append(
            ("outbox.unconfirmed", f"outbox:{claim.row_id}", {"message_id": claim.message_id, "note": outcome.note})
        )
    if not guarded_update(
        rnd.engine,
        claim.row_id,
        claim.token,
        phase,
        values,
        events,
        claim.desk,
        rnd.now,
        connection=None if events else rnd.connection(),
        # Losing an at-least-once outcome (only to a database server crash) means one more copy, no more.
        durable=not rnd.settings.sends_again(claim.kind),
    ):
        log.error("outbox %s: claim lost before the outcome was recorded (%s)", claim.row_id, values["state"])
        return
    _count_and_log(rnd.report, claim, values, outcome)


def _count_and_log(report: DeliveryReport, claim: Claim, values: dict, outcome: _Settlement) -> None:
    report.ids.append(claim.row_id)
    state = values["state"]
    if outcome.unconfirmed:
        report.unconfirmed += 1
        log.warning("outbox %s: %s (message-id %s)", claim.row_id, outcome.note, claim.message_id)
    elif state == SENT:
        report.sent += 1
        done = sum(1 for s in outcome.states.values() if s == R_SENT)
        log.info(
            "outbox %s sent to %d recipient(s) (message-id %s)%s",
            claim.row_id,
            done,
            claim.message_id,
            f"; failed: {', '.join(outcome.newly_failed)}" if outcome.newly_failed else "",
        )
    elif state == FAILED:
        report.failed += 1
        log.warning("outbox %s failed: %s", claim.row_id, outcome.note)
    else:
        report.retry_later += 1
        log.info(
            "outbox %s: temporary refusal, next attempt at %s: %s",
            claim.row_id,
            values["next_attempt_at"].isoformat(),
            outcome.note,
        )
