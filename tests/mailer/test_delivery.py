"""Outbox delivery against real aiosmtpd servers on loopback: retries, refusals, crashes, reuse, TLS."""

from __future__ import annotations

import email
import email.policy
import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import Session, SQLModel, select

from keydesk.database import make_engine
from mailer import delivery
from mailer.message import Mailbox, build_message
from mailer.outbox import enqueue
from mailer.settings import OutboxSettings, SmtpSettings
from mailer.smtp_client import SmtpConnectError, SmtpConnector, SmtpSession, prepare_data
from store.audit import verify_chain
from store.claim_owner import open_owner
from store.tables import AuditEvent, OutboxMessage
from tests.support.cli import invoke
from tests.support.smtp_servers import (
    CloseAfterEachMessage,
    DropAfterData,
    Recorder,
    RefusingRecipients,
    RefusingSender,
    Scripted,
    password_authenticator,
    XOAuth2Recorder,
    running,
    self_signed,
)

T0 = datetime(2026, 4, 6, 0, 30, tzinfo=timezone.utc)
DESK = "keiyaku@town.misato.example"
OUTBOX = OutboxSettings(first_retry_seconds=60, backoff_factor=2.0, max_retry_seconds=3600, give_up_after_hours=96)
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(database_url):
    """A fresh database with every table: SQLite, and PostgreSQL when the suite has one."""
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


def smtp(port: int, **overrides) -> SmtpSession:
    settings = SmtpSettings(host="127.0.0.1", port=port, security="plain", timeout_seconds=10, **overrides)
    return SmtpSession(SmtpConnector(settings))


def add(engine, n: int = 1, recipients=("contractor@builder.example",), key="notice") -> list[int]:
    ids = []
    with Session(engine) as session:
        for i in range(n):
            message = build_message(
                sender=Mailbox(DESK, "美郷町 契約窓口"),
                to=[Mailbox(r) for r in recipients],
                subject=f"【美郷町 契約窓口】お知らせ {i}",
                text=f"本文 {i}\n.\n.leading dot\n",
                now=T0,
            )
            row, _ = enqueue(
                session,
                desk="misato",
                idempotency_key=f"{key}:{i}",
                kind="notice",
                message=message,
                envelope_from=DESK,
                recipients=list(recipients),
            )
            ids.append(row.id)
        # Enqueued at T0: the give-up clock starts here.
        for row_id in ids:
            session.get(OutboxMessage, row_id).created_at = T0
            session.get(OutboxMessage, row_id).next_attempt_at = T0
        session.commit()
    return ids


def row(engine, row_id: int) -> OutboxMessage:
    with Session(engine) as session:
        return session.get(OutboxMessage, row_id)


def audit_actions(engine) -> list[str]:
    with Session(engine) as session:
        return [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]


def message_ids(received) -> list[str]:
    return [email.message_from_bytes(m.content, policy=email.policy.default)["Message-ID"] for m in received]


def test_a_batch_of_50_goes_over_one_connection_and_each_arrives_once(db):
    handler = Recorder()
    ids = add(db, 50)
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        received = handler.wait_for_messages(50)
    assert report.sent == 50 and handler.connections == 1
    assert {m.mail_from for m in received} == {DESK}  # bounces come back to the desk
    assert message_ids(received) == [row(db, i).message_id for i in ids]  # due at once: in the order they were queued
    assert all(row(db, i).state == "sent" and row(db, i).sent_at is not None for i in ids)
    assert all(row(db, i).last_error is None for i in ids)  # nothing for `outbox list` to show as a problem
    # Dot-stuffing survived the trip: the body arrives as written.
    body = email.message_from_bytes(received[0].content, policy=email.policy.default).get_content()
    assert "\n.\n.leading dot\n" in body


def test_rows_beyond_one_claimed_batch_go_out_in_the_same_round_oldest_first(db):
    handler = Recorder()
    ids = add(db, 5)
    with Session(db) as session:  # due in the reverse order of their ids
        for position, row_id in enumerate(ids):
            session.get(OutboxMessage, row_id).next_attempt_at = T0 - timedelta(minutes=position)
        session.commit()
    settings = OUTBOX.model_copy(update={"batch_size": 2})
    in_hand: list[int] = []  # rows this deliverer holds as each one's turn comes

    def count_claimed(_row_id):
        with Session(db) as session:
            in_hand.append(len(session.exec(select(OutboxMessage).where(OutboxMessage.state == "sending")).all()))

    with running(handler) as port:
        report = delivery.deliver_due(
            db, smtp(port), settings, now=T0, hooks=delivery.FaultHooks(after_claim=count_claimed)
        )
        received = handler.wait_for_messages(5)
    assert report.sent == 5 and report.ids == ids[::-1] and handler.connections == 1
    # Claimed two at a time: the rest stay pending, free for another deliverer meanwhile.
    assert in_hand == [2, 1, 2, 1, 1]
    assert message_ids(received) == [row(db, i).message_id for i in ids[::-1]]


def test_421_then_451_are_retried_with_growing_backoff_and_delivered_exactly_once(db):
    handler = Scripted(["421 4.3.2 shutting down", "451 4.3.0 try later"])
    [row_id] = add(db)
    with running(handler) as port:
        first = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        after_first = row(db, row_id)
        too_early = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(seconds=59))
        second = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(seconds=60))
        after_second = row(db, row_id)
        third = delivery.deliver_due(db, smtp(port), OUTBOX, now=after_second.next_attempt_at)
        received = handler.wait_for_messages(1)
    assert (first.retry_later, too_early.ids, second.retry_later, third.sent) == (1, [], 1, 1)
    assert after_first.next_attempt_at == T0 + timedelta(seconds=60) and "421" in after_first.last_error
    assert after_second.next_attempt_at == T0 + timedelta(seconds=60 + 120) and "451" in after_second.last_error
    final = row(db, row_id)
    assert (final.state, final.attempts, len(received)) == ("sent", 3, 1)
    # The same Message-ID on every attempt.
    assert message_ids(received) == [final.message_id]


def test_550_fails_at_once_and_is_audited(db):
    handler = Scripted(["550 5.7.1 rejected by policy"])
    [row_id] = add(db)
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        later = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(days=1))
    failed = row(db, row_id)
    assert (report.failed, later.ids, handler.messages) == (1, [], [])
    assert failed.state == "failed" and "550 5.7.1" in failed.last_error
    assert json.loads(failed.recipient_states_json) == {"contractor@builder.example": "failed"}
    assert handler.connections == 1  # the failed row was not tried again
    assert audit_actions(db) == ["outbox.failed"]
    with Session(db) as session:
        assert verify_chain(session).intact
        [event] = session.exec(select(AuditEvent))
    # What the staff digest lists: which desk's message, to whom, why, and when.
    assert (event.desk, event.subject, event.at.replace(tzinfo=timezone.utc)) == ("misato", f"outbox:{row_id}", T0)
    assert json.loads(event.detail_json) == {
        "recipients": ["contractor@builder.example"],
        "error": failed.last_error,
        "message_id": failed.message_id,
    }


def test_a_550_at_mail_from_fails_at_once_instead_of_waiting(db):
    handler = RefusingSender(["550 5.7.1 sender not allowed"])
    [row_id] = add(db)
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        later = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(days=5))
    failed = row(db, row_id)
    assert handler.refused == ["550 5.7.1 sender not allowed"] and handler.messages == []
    assert (report.failed, report.retry_later, later.ids) == (1, 0, [])
    assert failed.state == "failed" and "550 5.7.1" in failed.last_error
    assert json.loads(failed.recipient_states_json) == {"contractor@builder.example": "failed"}
    assert audit_actions(db) == ["outbox.failed"]


def test_a_451_at_mail_from_is_tried_again_later(db):
    handler = RefusingSender(["451 4.3.0 try later"])
    [row_id] = add(db)
    with running(handler) as port:
        first = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        waiting = row(db, row_id)
        second = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(seconds=60))
        handler.wait_for_messages(1)
    assert (first.retry_later, second.sent) == (1, 1)
    assert waiting.state == "pending" and waiting.next_attempt_at == T0 + timedelta(seconds=60)
    assert row(db, row_id).state == "sent"


@pytest.mark.parametrize("answer", ["500 5.0.0 command unrecognized", "554 5.0.0 transaction failed"])
def test_every_5xx_answer_to_data_is_permanent(db, answer):
    """500 is the lowest permanent code: it must not be taken for a temporary refusal."""
    handler = Scripted([answer])
    [row_id] = add(db)
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
    failed = row(db, row_id)
    assert (report.failed, report.retry_later) == (1, 0)
    assert failed.state == "failed" and json.loads(failed.recipient_states_json) == {
        "contractor@builder.example": "failed"
    }


def test_a_partial_refusal_is_handled_per_recipient(db):
    handler = RefusingRecipients(
        {"later@builder.example": ["450 4.2.1 mailbox busy"], "gone@builder.example": ["550 5.1.1 no such user"]}
    )
    recipients = ("ok@builder.example", "later@builder.example", "gone@builder.example")
    [row_id] = add(db, recipients=recipients)
    with running(handler) as port:
        first = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        middle = row(db, row_id)
        second = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(minutes=1))
        received = handler.wait_for_messages(2)
    assert json.loads(middle.recipient_states_json) == {
        "ok@builder.example": "sent",
        "later@builder.example": "pending",
        "gone@builder.example": "failed",
    }
    assert (
        middle.last_error
        == "later@builder.example: 450 4.2.1 mailbox busy; gone@builder.example: 550 5.1.1 no such user"
    )
    assert (first.retry_later, second.sent) == (1, 1)
    # The accepted recipient is never sent the message again; the 4xx one is retried alone.
    assert [m.rcpt_tos for m in received] == [("ok@builder.example",), ("later@builder.example",)]
    final = row(db, row_id)
    assert final.state == "sent" and json.loads(final.recipient_states_json)["later@builder.example"] == "sent"
    assert audit_actions(db) == ["outbox.recipient_failed"]


def test_the_rounds_report_counts_every_row_by_its_outcome(db):
    """What `keydesk outbox send` prints (送信済 N 件, 失敗 N 件 …) comes from these counts."""
    handler = RefusingRecipients(
        {
            "gone1@builder.example": ["550 5.1.1 no such user"],
            "gone2@builder.example": ["550 5.1.1 no such user"],
            "later1@builder.example": ["450 4.2.1 mailbox busy"],
            "later2@builder.example": ["450 4.2.1 mailbox busy"],
        }
    )
    for address in ("ok1", "gone1", "later1", "ok2", "gone2", "later2"):
        add(db, recipients=(f"{address}@builder.example",), key=address)
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        handler.wait_for_messages(2)
    assert (report.sent, report.failed, report.retry_later, report.unconfirmed) == (2, 2, 2, 0)
    assert len(report.ids) == 6


def test_at_most_once_every_unconfirmed_row_of_a_round_is_counted(db):
    handler = DropAfterData()
    add(db, 2)
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), AT_MOST_ONCE, now=T0)
    assert (report.unconfirmed, report.sent, len(handler.messages)) == (2, 0, 2)


def test_a_251_at_rcpt_is_an_acceptance(db):
    """RFC 5321's 251 (user not local; will forward) takes the message like a 250."""
    handler = RefusingRecipients({"moved@builder.example": ["251 2.1.5 user not local; will forward"]})
    [row_id] = add(db, recipients=("moved@builder.example", "ok@builder.example"))
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        [received] = handler.wait_for_messages(1)
    assert report.sent == 1 and received.rcpt_tos == ("moved@builder.example", "ok@builder.example")
    final = row(db, row_id)
    assert final.state == "sent"
    assert json.loads(final.recipient_states_json) == {"moved@builder.example": "sent", "ok@builder.example": "sent"}


class _ForwardingThenRefusingData(RefusingRecipients):
    """Accepts one recipient with 251 (forwarded), then refuses the message itself at the final dot."""

    async def handle_DATA(self, server, session, envelope) -> str:
        return "554 5.6.0 message refused"


def test_a_recipient_accepted_with_251_is_not_counted_as_sent_when_the_message_is_refused(db):
    handler = _ForwardingThenRefusingData({"moved@builder.example": ["251 2.1.5 user not local; will forward"]})
    [row_id] = add(db, recipients=("moved@builder.example",))
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
    failed = row(db, row_id)
    assert (report.sent, report.failed) == (0, 1) and failed.state == "failed"
    assert json.loads(failed.recipient_states_json) == {"moved@builder.example": "failed"}
    assert "554 5.6.0" in failed.last_error


def test_in_a_batch_a_message_refused_at_rcpt_waits_or_fails_alone_and_the_others_go(db):
    handler = RefusingRecipients(
        {"gone@builder.example": ["550 5.1.1 no such user"], "later@builder.example": ["450 4.2.1 mailbox busy"]}
    )
    addresses = ["a@builder.example", "gone@builder.example", "b@builder.example", "later@builder.example"]
    ids = [add(db, recipients=(address,), key=address)[0] for address in addresses]
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        received = handler.wait_for_messages(2)
    assert (report.sent, report.failed, report.retry_later) == (2, 1, 1) and handler.connections == 1
    # The refusals were reset on the same connection and the next messages went through it.
    assert [m.rcpt_tos for m in received] == [("a@builder.example",), ("b@builder.example",)]
    states = {address: row(db, row_id) for address, row_id in zip(addresses, ids)}
    assert [states[a].state for a in addresses] == ["sent", "failed", "sent", "pending"]
    assert "550 5.1.1" in states["gone@builder.example"].last_error
    assert states["later@builder.example"].next_attempt_at == T0 + timedelta(seconds=60)
    assert audit_actions(db) == ["outbox.failed"]


class _WriteRecorder(SmtpConnector):
    """Opens real connections and shows ``note`` every write our side makes on them, in order."""

    def __init__(self, settings: SmtpSettings, note) -> None:
        super().__init__(settings)
        self.note = note

    def open(self):
        client = super().open()
        send = client.send

        def noted(data):
            self.note(data if isinstance(data, bytes) else data.encode())
            return send(data)

        client.send = noted
        return client


@pytest.mark.parametrize("policy", ["again", "never"])
def test_the_body_goes_out_with_the_final_dot_unless_a_record_must_come_between(db, policy):
    """At least once, nothing is recorded before the dot: the check comes first and the body and the dot make
    one write. At most once, data_sent is committed after the whole body and before the dot, so it covers
    only the final dot."""
    [row_id] = add(db)
    steps: list = []
    state_at_the_dot: list[str] = []

    def note_write(data: bytes) -> None:
        steps.append(data)
        if data.endswith(b"\r\n.\r\n") or data == b".\r\n":
            state_at_the_dot.append(row(db, row_id).state)

    hooks = delivery.FaultHooks(before_final_dot=lambda _row_id: steps.append("check"))
    settings = OUTBOX.model_copy(update={"unknown_outcome": {"notice": policy}})
    with running(Recorder()) as port:
        connector = _WriteRecorder(SmtpSettings(host="127.0.0.1", port=port, security="plain"), note_write)
        report = delivery.deliver_due(db, SmtpSession(connector), settings, now=T0, hooks=hooks)
    assert report.sent == 1 and row(db, row_id).state == "sent"
    after_data = steps[steps.index(b"DATA\r\n") + 1 :]
    if policy == "again":
        check, body_and_dot = after_data[:2]
        assert check == "check" and b"Subject:" in body_and_dot and body_and_dot.endswith(b"\r\n.\r\n")
        assert state_at_the_dot == ["sending"]
    else:
        body, check, dot = after_data[:3]
        assert b"Subject:" in body and not body.endswith(b".\r\n") and (check, dot) == ("check", b".\r\n")
        assert state_at_the_dot == ["data_sent"]


def test_at_most_once_the_record_before_the_final_dot_names_every_accepted_recipient(db):
    """What a crash right after the dot leaves for recovery: the recipients accepted at RCPT (250 and 251) are
    in the transaction, so they are never sent it again; the refused one is still to be settled."""
    handler = RefusingRecipients(
        {"moved@builder.example": ["251 2.1.5 user not local; will forward"], "gone@builder.example": ["550 5.1.1 no"]}
    )
    recipients = ("ok@builder.example", "moved@builder.example", "gone@builder.example")
    [row_id] = add(db, recipients=recipients)
    at_the_dot: list[tuple[str, dict]] = []

    def note_write(data: bytes) -> None:
        if data == b".\r\n":
            kept = row(db, row_id)
            at_the_dot.append((kept.state, json.loads(kept.recipient_states_json)))

    with running(handler) as port:
        connector = _WriteRecorder(SmtpSettings(host="127.0.0.1", port=port, security="plain"), note_write)
        report = delivery.deliver_due(db, SmtpSession(connector), AT_MOST_ONCE, now=T0)
    assert at_the_dot == [
        (
            "data_sent",
            {"ok@builder.example": "in_data", "moved@builder.example": "in_data", "gone@builder.example": "pending"},
        )
    ]
    assert report.sent == 1 and json.loads(row(db, row_id).recipient_states_json) == {
        "ok@builder.example": "sent",
        "moved@builder.example": "sent",
        "gone@builder.example": "failed",
    }


@pytest.mark.parametrize("policy", ["again", "never"])
def test_only_an_at_least_once_outcome_skips_the_wait_for_the_postgresql_wal_flush(db, policy):
    """Losing an at-least-once outcome to a database crash means one more copy; losing an at-most-once
    record (data_sent, its outcome) could mean a second copy it promised never to send."""
    statements: list[str] = []

    def note(_conn, _cursor, statement, *_args) -> None:
        statements.append(" ".join(statement.split()))

    [row_id] = add(db)
    settings = OUTBOX.model_copy(update={"unknown_outcome": {"notice": policy}})
    event.listen(db, "before_cursor_execute", note)
    try:
        with running(Recorder()) as port:
            assert delivery.deliver_due(db, smtp(port), settings, now=T0).sent == 1
    finally:
        event.remove(db, "before_cursor_execute", note)
    assert row(db, row_id).state == "sent"
    no_wait = [i for i, s in enumerate(statements) if s == "SET LOCAL synchronous_commit = off"]
    if policy == "again" and db.dialect.name == "postgresql":
        # Right before the outcome's update, in its transaction: the claim was committed with the wait.
        [at] = no_wait
        assert statements[at + 1].startswith("UPDATE outbox") and "sent_at" in statements[at + 1]
    else:
        assert no_wait == []


@pytest.mark.parametrize(
    ("raw", "prepared"),
    [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb\rc", b"a\r\nb\r\nc\r\n"),
        (b".first\n.\n..two\nmid.dot\n", b"..first\r\n..\r\n...two\r\nmid.dot\r\n"),
        (b"x\r.y\r\n.z", b"x\r\n..y\r\n..z\r\n"),
        (b"", b"\r\n"),
    ],
)
def test_data_is_sent_with_crlf_line_ends_and_dot_stuffed(raw, prepared):
    assert prepare_data(raw) == prepared


def test_4xx_gives_up_after_the_configured_hours(db):
    handler = Scripted(["451 4.3.0 try later"] * 3)
    [row_id] = add(db)
    with running(handler) as port:
        delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(hours=96))
    final = row(db, row_id)
    assert report.failed == 1 and final.state == "failed"
    assert final.last_error == "gave up after 96 hours: contractor@builder.example: 451 4.3.0 try later"
    assert json.loads(final.recipient_states_json) == {"contractor@builder.example": "failed"}
    assert handler.messages == []


def test_the_backoff_is_capped():
    assert delivery.retry_delay(1, OUTBOX) == timedelta(seconds=60)
    assert delivery.retry_delay(3, OUTBOX) == timedelta(seconds=240)
    assert delivery.retry_delay(30, OUTBOX) == timedelta(seconds=3600)


@pytest.mark.parametrize(("timeout_seconds", "lease_seconds"), [(10, 300), (60, 600)])
def test_a_claim_is_held_for_five_minutes_or_ten_smtp_timeouts_whichever_is_longer(db, timeout_seconds, lease_seconds):
    """Nobody recovers a row before the claim's lease ends, so it must outlast a transaction on a slow server."""
    [row_id] = add(db)
    lease_ends = []
    hooks = delivery.FaultHooks(after_claim=lambda _row_id: lease_ends.append(row(db, row_id).next_attempt_at))
    with running(Recorder()) as port:
        session = SmtpSession(
            SmtpConnector(SmtpSettings(host="127.0.0.1", port=port, security="plain", timeout_seconds=timeout_seconds))
        )
        assert delivery.deliver_due(db, session, OUTBOX, now=T0, hooks=hooks).sent == 1
    assert [moment.replace(tzinfo=timezone.utc) for moment in lease_ends] == [T0 + timedelta(seconds=lease_seconds)]


CRASHING_DELIVERER = """
import os, sys
from datetime import datetime
from pathlib import Path
from keydesk.database import make_engine
from mailer import delivery
from mailer.settings import OutboxSettings, SmtpSettings
from mailer.smtp_client import SmtpConnector, SmtpSession
from store.claim_owner import open_owner

url, port, now, point, locks, policy = sys.argv[1:7]
die = lambda *args: os._exit(70)
hooks = delivery.FaultHooks(**{point: die})
engine = make_engine(url)
session = SmtpSession(SmtpConnector(SmtpSettings(host="127.0.0.1", port=int(port), security="plain", timeout_seconds=10)))
owner = open_owner(engine, Path(locks)) if locks != "-" else None
delivery.deliver_due(engine, session, OutboxSettings(unknown_outcome={"notice": policy}),
                     now=datetime.fromisoformat(now), hooks=hooks, owner=owner)
os._exit(0)
"""


def crash_deliverer(engine, port: int, point: str, locks: Path | None = None, policy: str = "again") -> None:
    """Run a deliverer in a process of its own that dies (os._exit) at ``point``."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_DELIVERER,
            engine.url.render_as_string(hide_password=False),
            str(port),
            T0.isoformat(),
            point,
            str(locks) if locks else "-",
            policy,
        ],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 70, done.stderr


AT_MOST_ONCE = OUTBOX.model_copy(update={"unknown_outcome": {"notice": "never"}})


def test_at_most_once_a_crash_after_the_server_accepted_and_before_the_commit_never_sends_twice(db):
    handler = Recorder()
    [row_id] = add(db)
    with running(handler) as port:
        crash_deliverer(db, port, "after_final_answer", policy="never")
        assert len(handler.wait_for_messages(1)) == 1
        assert row(db, row_id).state == "data_sent"
        # Without an owner to ask, while the dead deliverer's lease runs, nobody touches the row…
        assert delivery.deliver_due(db, smtp(port), AT_MOST_ONCE, now=T0 + timedelta(minutes=1)).ids == []
        # …then it is recognised as delivered-unconfirmed, not sent again.
        report = delivery.deliver_due(db, smtp(port), AT_MOST_ONCE, now=T0 + timedelta(hours=1))
    final = row(db, row_id)
    assert report.recovered == 1 and len(handler.messages) == 1
    assert final.state == "sent" and final.last_error.startswith("delivered-unconfirmed")
    assert json.loads(final.recipient_states_json) == {"contractor@builder.example": "unconfirmed"}
    assert audit_actions(db) == ["outbox.unconfirmed"]


def test_a_crash_after_the_server_accepted_sends_again_at_once_with_the_same_message_id(db, tmp_path):
    handler = Recorder()
    [row_id] = add(db)
    with running(handler) as port:
        crash_deliverer(db, port, "after_final_answer", locks=tmp_path / "locks")
        assert len(handler.wait_for_messages(1)) == 1 and row(db, row_id).state == "sending"
        # The restarted deliverer sees the owner is gone: no lease to wait for (same "now").
        with open_owner(db, tmp_path / "locks") as owner:
            report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0, owner=owner)
        received = handler.wait_for_messages(2)
    final = row(db, row_id)
    assert report.recovered == 1 and report.sent == 1
    assert message_ids(received) == [final.message_id, final.message_id]
    # The crash was not an attempt of the server's: one attempt counted, for the delivery that was recorded.
    assert final.state == "sent" and final.attempts == 1 and final.claimed_by is None


def test_a_crash_before_the_final_dot_is_sent_again_exactly_once_at_once(db, tmp_path):
    handler = Recorder()
    [row_id] = add(db)
    with running(handler) as port:
        crash_deliverer(db, port, "before_final_dot", locks=tmp_path / "locks")
        assert row(db, row_id).state == "sending" and handler.messages == []
        with open_owner(db, tmp_path / "locks") as owner:
            report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0, owner=owner)
        received = handler.wait_for_messages(1)
    assert report.recovered == 1 and report.sent == 1 and len(received) == 1
    assert row(db, row_id).state == "sent" and message_ids(received) == [row(db, row_id).message_id]


def test_the_claims_of_a_living_owner_are_left_alone(db, tmp_path):
    handler = Recorder()
    [row_id] = add(db)
    with (
        running(handler) as port,
        open_owner(db, tmp_path / "locks") as first,
        open_owner(db, tmp_path / "locks") as second,
    ):
        seen = []

        def other_deliverer_runs(_claimed_id):
            # A second live deliverer (another process in real life) must not take the row.
            seen.append(delivery.deliver_due(db, smtp(port), OUTBOX, now=T0, owner=second))

        delivery.deliver_due(
            db, smtp(port), OUTBOX, now=T0, owner=first, hooks=delivery.FaultHooks(after_claim=other_deliverer_runs)
        )
        received = handler.wait_for_messages(1)
    assert seen[0].recovered == 0 and seen[0].ids == []
    assert len(received) == 1 and row(db, row_id).state == "sent"


def test_an_owner_is_alive_while_its_process_lives(db, tmp_path):
    with open_owner(db, tmp_path / "locks") as watcher:
        other = open_owner(db, tmp_path / "locks")
        assert watcher.alive(other.id) and other.alive(watcher.id)
        other.close()
        assert not watcher.alive(other.id)
        assert not watcher.alive("0" * 32)


def test_at_most_once_a_server_that_drops_the_connection_after_data_gets_one_copy(db):
    handler = DropAfterData()
    [row_id] = add(db)
    with running(handler) as port:
        first = delivery.deliver_due(db, smtp(port), AT_MOST_ONCE, now=T0)
        later = delivery.deliver_due(db, smtp(port), AT_MOST_ONCE, now=T0 + timedelta(days=1))
    assert first.unconfirmed == 1 and later.ids == [] and len(handler.messages) == 1
    final = row(db, row_id)
    assert final.state == "sent" and final.last_error.startswith("delivered-unconfirmed")
    # The audit trail says which message may or may not have arrived, for staff to check with the contractor.
    with Session(db) as session:
        [event] = session.exec(select(AuditEvent))
    assert (event.action, event.subject) == ("outbox.unconfirmed", f"outbox:{row_id}")
    assert json.loads(event.detail_json) == {"message_id": final.message_id, "note": final.last_error}


def test_at_most_once_every_recipient_of_a_dropped_transaction_is_unconfirmed(db):
    handler = DropAfterData()
    recipients = ("first@builder.example", "second@builder.example")
    [row_id] = add(db, recipients=recipients)
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), AT_MOST_ONCE, now=T0)
    assert report.unconfirmed == 1
    # Neither address can be told apart from the other: both may have the message, neither is sent it again.
    assert json.loads(row(db, row_id).recipient_states_json) == dict.fromkeys(recipients, "unconfirmed")


def test_a_server_that_drops_the_connection_after_data_is_tried_again_with_the_same_message_id(db):
    handler = DropAfterData()
    [row_id] = add(db)
    with running(handler) as port:
        first = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        kept = row(db, row_id)
        later = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(minutes=1))
        received = handler.wait_for_messages(2)
    assert first.retry_later == 1 and first.unconfirmed == 0 and later.retry_later == 1
    assert kept.state == "pending" and kept.next_attempt_at == T0 + timedelta(minutes=1)
    assert (
        kept.last_error
        == "contractor@builder.example: 421 the connection ended before the server answered the final dot"
    )
    assert message_ids(received) == [kept.message_id, kept.message_id]


def test_a_dropped_idle_connection_is_reopened_without_losing_or_doubling_mail(db):
    handler = CloseAfterEachMessage()
    ids = add(db, 3)
    with running(handler) as port:
        report = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        received = handler.wait_for_messages(3)
    assert report.sent == 3 and len(received) == 3 and handler.connections == 3
    assert sorted(message_ids(received)) == sorted(row(db, i).message_id for i in ids)


def test_two_deliverers_at_once_send_each_row_once(db):
    handler = Recorder(keep_content=True)
    add(db, 40)
    with running(handler) as port:
        reports = []
        threads = [
            threading.Thread(target=lambda: reports.append(delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        received = handler.wait_for_messages(40)
    assert sum(r.sent for r in reports) == 40
    assert len(received) == 40 and len(set(message_ids(received))) == 40


def test_an_unreachable_server_keeps_the_rows_for_later(db):
    ids = add(db, 3)
    from tests.support.smtp_servers import free_port

    report = delivery.deliver_due(db, smtp(free_port()), OUTBOX, now=T0)
    assert report.connection_error and "cannot connect" in report.connection_error
    for row_id in ids:  # none is left stuck in "sending" until its lease ends
        kept = row(db, row_id)
        assert kept.state == "pending" and kept.next_attempt_at == T0 + timedelta(minutes=1)
    # Staff see why in `keydesk outbox list`: the first row was tried, the others were not.
    notes = [row(db, row_id).last_error for row_id in ids]
    assert "421" in notes[0] and "cannot connect" in notes[0]
    assert all(note.startswith("not tried: ") and "cannot connect" in note for note in notes[1:])


@pytest.mark.parametrize("policy", ["again", "never"])
def test_a_deliverer_whose_lease_ran_out_cannot_finish_a_second_copy(db, policy):
    """At least once, the check before the final dot finds the row taken; at most once, so does the record
    of data_sent that must precede the dot."""
    handler = Recorder()
    [row_id] = add(db)
    settings = OUTBOX.model_copy(update={"unknown_outcome": {"notice": policy}})
    with running(handler) as port:
        other = []

        def lease_runs_out(claimed_id):
            # Another deliverer takes the row over while this one is stalled after its claim.
            other.append(delivery.deliver_due(db, smtp(port), settings, now=T0 + timedelta(hours=1)))

        # The stall outlasts the stalled deliverer's lease on its own clock too (a 1 ms lease).
        stalled = _deliver_stalled(db, port, lease_runs_out, lease=timedelta(milliseconds=1), settings=settings)
        received = handler.wait_for_messages(1)
    assert other[0].recovered == 1 and other[0].sent == 1 and stalled.sent == 0
    assert len(received) == 1 and row(db, row_id).state == "sent"


def _deliver_stalled(db, port, after_claim, *, lease: timedelta, settings=OUTBOX):
    """One round at T0 by a deliverer with a short ``lease`` whose every claim is followed by
    ``after_claim`` (a stall on its own clock, another deliverer's takeover)."""
    return delivery.deliver_due(
        db, smtp(port), settings, now=T0, lease=lease, hooks=delivery.FaultHooks(after_claim=after_claim)
    )


def _stall(seconds: float) -> None:
    """The deliverer stops for ``seconds`` of its own monotonic clock (a paused VM, a slow disk)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time.sleep(0.001)


def test_a_deliverer_slower_than_half_its_lease_still_sends_a_row_nobody_took(db):
    """Past half its lease the deliverer asks the database before the final dot; the row is still its own,
    so the mail goes out once, on time, instead of waiting for a recovery."""
    handler = Recorder()
    [row_id] = add(db)
    with running(handler) as port:
        report = _deliver_stalled(db, port, lambda _row_id: _stall(0.01), lease=timedelta(milliseconds=2))
        received = handler.wait_for_messages(1)
    assert report.sent == 1 and report.ids == [row_id] and len(received) == 1
    final = row(db, row_id)
    assert final.state == "sent" and final.attempts == 1


def test_a_deliverer_stalled_past_its_whole_lease_sends_no_second_copy(db):
    """Taken over after its lease ended, a deliverer must ask, not trust its own clock, even if the stall
    lasted less than twice the lease."""
    handler = Recorder()
    [row_id] = add(db)
    lease = timedelta(seconds=0.4)
    with running(handler) as port:
        other = []

        def taken_over_while_stalled(_row_id):
            started = time.monotonic()
            other.append(delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(hours=1)))
            _stall(lease.total_seconds() * 1.25 - (time.monotonic() - started))

        stalled = _deliver_stalled(db, port, taken_over_while_stalled, lease=lease)
    assert other[0].sent == 1 and stalled.sent == 0
    assert len(handler.messages) == 1 and row(db, row_id).state == "sent"


def test_a_row_lost_to_another_deliverer_does_not_stop_the_round_for_the_rest_of_the_batch(db):
    handler = Recorder()
    lost, kept = add(db, 2)

    def another_deliverer_claims_the_first(row_id):
        if row_id == lost:  # its claim, as another deliverer's UPDATE would write it: a new token, a new owner
            with Session(db) as session:
                taken = session.get(OutboxMessage, lost)
                taken.next_attempt_at, taken.claimed_by = T0 + timedelta(hours=1), "f" * 32
                session.commit()
            _stall(0.01)

    with running(handler) as port:
        report = _deliver_stalled(db, port, another_deliverer_claims_the_first, lease=timedelta(milliseconds=2))
        [received] = handler.wait_for_messages(1)
    assert report.sent == 1 and report.ids == [kept] and report.connection_error is None
    assert message_ids([received]) == [row(db, kept).message_id] and row(db, kept).state == "sent"
    assert row(db, lost).state == "sending"  # left to its new holder


def test_a_row_taken_back_the_moment_its_lease_ended_is_not_sent_by_the_stalled_deliverer(db):
    """Recovery at the very end of the lease leaves the row pending with the claim's own token: only its
    state tells the stalled deliverer that the row is no longer its own."""
    handler = Recorder()
    [row_id] = add(db)
    lease = timedelta(milliseconds=2)

    def lease_ends_and_the_row_is_taken_back(_row_id):
        assert delivery.recover_stale(db, T0 + lease) == 1
        _stall(0.01)

    with running(handler) as port:
        stalled = _deliver_stalled(db, port, lease_ends_and_the_row_is_taken_back, lease=lease)
        assert handler.messages == [] and row(db, row_id).state == "pending"
        later = delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + lease)
        received = handler.wait_for_messages(1)
    assert stalled.ids == [] and later.sent == 1
    assert len(received) == 1 and row(db, row_id).state == "sent"


def test_a_deliverer_whose_lease_ran_out_sends_nothing_while_another_holds_the_row(db):
    """The row is in ``sending`` again, but under the other deliverer's claim: only the token tells."""
    handler = Recorder()
    [row_id] = add(db)
    claimed, go_on = threading.Event(), threading.Event()

    def hold(_row_id):
        claimed.set()
        assert go_on.wait(30)

    reports = []
    other = threading.Thread(
        target=lambda: reports.append(
            delivery.deliver_due(
                db, smtp(port), OUTBOX, now=T0 + timedelta(hours=1), hooks=delivery.FaultHooks(after_claim=hold)
            )
        )
    )

    def another_deliverer_takes_the_row(_row_id):
        other.start()
        assert claimed.wait(30)
        _stall(0.01)

    with running(handler) as port:
        try:
            stalled = _deliver_stalled(db, port, another_deliverer_takes_the_row, lease=timedelta(milliseconds=2))
            assert handler.messages == []
        finally:
            go_on.set()
            other.join(timeout=60)
        received = handler.wait_for_messages(1)
    assert stalled.sent == 0 and reports[0].sent == 1
    assert len(received) == 1 and row(db, row_id).state == "sent"


def test_starttls_with_auth(db, tmp_path):
    tls = self_signed(tmp_path)
    handler = Recorder()
    [row_id] = add(db)
    auth = password_authenticator({"keydesk": "s3cret"}, handler)
    with running(handler, tls_context=tls.server_context(), require_starttls=True, authenticator=auth) as port:
        settings = SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="starttls",
            username="keydesk",
            password_env="UNUSED_IN_TEST",
            timeout_seconds=10,
        )
        wrong = SmtpSession(SmtpConnector(settings, "wrong", ssl_context=tls.client_context()))
        refused = delivery.deliver_due(db, wrong, OUTBOX, now=T0)
        right = SmtpSession(SmtpConnector(settings, "s3cret", ssl_context=tls.client_context()))
        report = delivery.deliver_due(db, right, OUTBOX, now=T0 + timedelta(minutes=1))
        handler.wait_for_messages(1)
    assert "refused the login" in refused.connection_error and refused.sent == 0
    assert report.sent == 1 and handler.logins == ["keydesk"] and row(db, row_id).state == "sent"


def test_starttls_is_required_when_configured(tmp_path):
    with running(Recorder()) as port:
        settings = SmtpSettings(host="127.0.0.1", port=port, security="starttls", timeout_seconds=10)
        with pytest.raises(SmtpConnectError, match="does not offer STARTTLS"):
            SmtpConnector(settings).open()


def test_implicit_tls(db, tmp_path):
    tls = self_signed(tmp_path)
    handler = Recorder()
    add(db, 2)
    with running(handler, ssl_context=tls.server_context()) as port:
        settings = SmtpSettings(host="127.0.0.1", port=port, security="tls", timeout_seconds=10)
        report = delivery.deliver_due(
            db, SmtpSession(SmtpConnector(settings, ssl_context=tls.client_context())), OUTBOX, now=T0
        )
        handler.wait_for_messages(2)
    assert report.sent == 2 and handler.connections == 1


def test_an_untrusted_certificate_is_refused(db, tmp_path):
    tls = self_signed(tmp_path)
    add(db)
    with running(Recorder(), ssl_context=tls.server_context()) as port:
        settings = SmtpSettings(host="127.0.0.1", port=port, security="tls", timeout_seconds=10)
        report = delivery.deliver_due(db, SmtpSession(SmtpConnector(settings)), OUTBOX, now=T0)
    assert "CERTIFICATE_VERIFY_FAILED" in report.connection_error and report.sent == 0


def test_plain_smtp_is_only_for_loopback():
    # The settings refuse it (config check); the connector refuses it again for settings built by hand.
    with pytest.raises(ValueError, match="allowed only to loopback"):
        SmtpSettings(host="smtp.town.example", port=25, security="plain")
    unchecked = SmtpSettings.model_construct(host="smtp.town.example", port=25, security="plain")
    with pytest.raises(SmtpConnectError, match="only to a loopback"):
        SmtpConnector(unchecked)


def _token_command(token: str) -> list[str]:
    return [sys.executable, "-c", f"print({token!r})"]


def test_xoauth2_over_smtp_sends_the_token_from_the_token_command(db):
    handler = XOAuth2Recorder({"keiyaku@town.misato.example": "ya29.good-token"})
    [row_id] = add(db)
    with running(handler, auth_require_tls=False) as port:
        settings = SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="plain",
            auth="xoauth2",
            username="keiyaku@town.misato.example",
            token_command=_token_command("ya29.good-token"),
            timeout_seconds=10,
        )
        report = delivery.deliver_due(db, SmtpSession(SmtpConnector(settings)), OUTBOX, now=T0)
        received = handler.wait_for_messages(1)
    assert report.sent == 1 and handler.logins == ["keiyaku@town.misato.example"] and handler.exchanges == ["ok"]
    assert message_ids(received) == [row(db, row_id).message_id]


def test_xoauth2_over_smtp_a_refused_token_is_one_clear_error_without_the_token(db):
    handler = XOAuth2Recorder({"keiyaku@town.misato.example": "ya29.good-token"})
    [row_id] = add(db)
    with running(handler, auth_require_tls=False) as port:
        settings = SmtpSettings(
            host="127.0.0.1",
            port=port,
            security="plain",
            auth="xoauth2",
            username="keiyaku@town.misato.example",
            token_command=_token_command("ya29.stale-token"),
            timeout_seconds=10,
        )
        report = delivery.deliver_due(db, SmtpSession(SmtpConnector(settings)), OUTBOX, now=T0)
    assert handler.exchanges == ["ok"] and handler.logins == [] and handler.messages == []
    assert "refused the login" in report.connection_error and "ya29" not in report.connection_error
    assert row(db, row_id).state == "pending"


def test_xoauth2_needs_a_token_command():
    with pytest.raises(ValueError, match="token_command"):
        SmtpSettings(host="smtp.office365.com", auth="xoauth2", username="keiyaku@town.misato.example")


def test_retry_brings_back_failed_recipients_only(db):
    handler = RefusingRecipients({"gone@builder.example": ["550 5.1.1 no such user"]})
    [row_id] = add(db, recipients=("ok@builder.example", "gone@builder.example"))
    with running(handler) as port:
        delivery.deliver_due(db, smtp(port), OUTBOX, now=T0)
        assert delivery.retry(db, row_id, T0 + timedelta(hours=1)) == ["gone@builder.example"]
        delivery.deliver_due(db, smtp(port), OUTBOX, now=T0 + timedelta(hours=1))
        received = handler.wait_for_messages(2)
    assert [m.rcpt_tos for m in received] == [("ok@builder.example",), ("gone@builder.example",)]
    with pytest.raises(delivery.RetryRefused):
        delivery.retry(db, row_id, T0 + timedelta(hours=2))
    with pytest.raises(delivery.RetryRefused):
        delivery.retry(db, 999, T0)


# --- the CLI, on a tmp deployment -------------------------------------------------------------


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    monkeypatch.delenv("KEYDESK_CONFIG", raising=False)
    monkeypatch.delenv("KEYDESK_KEY_ENCRYPTION_KEY", raising=False)
    config = tmp_path / "config"
    assert invoke(config, "init", str(config)).exit_code == 0
    return config


def _point_smtp_at(config: Path, port: int) -> None:
    toml = config / "keydesk.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("port = 1025\n", f"port = {port}\n", 1), encoding="utf-8")


def test_cli_send_list_and_retry(deployment):
    config = deployment
    handler = RefusingRecipients({"gone@builder.example": ["550 5.1.1 no such user"]})
    with running(handler) as port:
        _point_smtp_at(config, port)

        def run(*args):
            return invoke(config, *args)

        assert run("db", "upgrade").exit_code == 0
        engine = make_engine(f"sqlite:///{config.parent}/var/keydesk.db")
        add(engine, 1, recipients=("ok@builder.example",), key="a")
        [bad] = add(engine, 1, recipients=("gone@builder.example",), key="b")
        engine.dispose()
        sent = run("outbox", "send")
        listed = run("outbox", "list")
        failed = run("outbox", "list", "--failed")
        retried = run("outbox", "retry", str(bad))
        unknown = run("outbox", "retry", "4242")
        handler.wait_for_messages(1)
    assert sent.exit_code == 0 and "送信済 1 件" in sent.output and "失敗 1 件" in sent.output
    assert "ok@builder.example(送信済)" in listed.output and "gone@builder.example(失敗)" in listed.output
    assert "gone@builder.example" in failed.output and "ok@builder.example" not in failed.output
    assert retried.exit_code == 0 and "gone@builder.example" in retried.output
    assert unknown.exit_code == 1 and unknown.refused_with("見つかりません")


def test_cli_send_reports_an_unreachable_server(deployment):
    from tests.support.smtp_servers import free_port

    config = deployment
    _point_smtp_at(config, free_port())
    assert invoke(config, "db", "upgrade").exit_code == 0
    engine = make_engine(f"sqlite:///{config.parent}/var/keydesk.db")
    add(engine, 1)
    engine.dispose()
    result = invoke(config, "outbox", "send")
    assert result.exit_code == 1 and result.refused_with("接続できませんでした")
