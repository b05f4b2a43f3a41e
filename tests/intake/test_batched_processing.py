"""Stage 2 in batches: claims and commits per batch, a SAVEPOINT per mail, and several workers that
take different mails (issue 13's throughput work), without giving up a crash guarantee."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event
from sqlmodel import Session, SQLModel, func, select

from intake import intake_service
from intake.intake_service import IntakeService, PassReport
from intake.mailbox_lock import PostgresMailboxLock
from intake.poller import MailboxConnection
from intake.raw_store import DatabaseRawStore
from intake.recording import record_new
from intake.settings import Limits, PollSettings
from intake.worker import run_desk_worker
from keydesk.database import make_engine
from store.claim_owner import open_owner
from store.tables import InboundMessage, OutboxMessage, Submission
from tests.support.cli import wait_until
from tests.support.servers import DESK, IntakeHarness, make_mail, sample_process


def _submissions(engine) -> dict[int, int]:
    with Session(engine) as session:
        return dict(session.exec(select(Submission.inbound_id, func.count()).group_by(Submission.inbound_id)).all())


def _worker(engine, mailbox, owner, process) -> IntakeService:
    """One worker's intake service on the shared database (raw mail in it, as workers keep it)."""
    return IntakeService(
        desk=DESK,
        mailbox=mailbox,
        poll=PollSettings(),
        limits=Limits(),
        engine=engine,
        store=DatabaseRawStore(engine),
        process=process,
        owner=owner,
    )


def test_one_failing_mail_rolls_back_only_its_own_work_and_the_batch_commits_once(pymap_server, tmp_path):
    pymap_server.append_many([make_mail(n, body="[late-boom]\r\n" if n == 2 else None) for n in range(12)])

    def process(session, inbound, raw):
        outcome = sample_process(session, inbound, raw)
        session.flush()  # the submission and the reply are written before the failure
        if b"[late-boom]" in raw:
            raise RuntimeError("fails after writing")
        return outcome

    harness = IntakeHarness(tmp_path, pymap_server, process=process)
    commits = []
    event.listen(harness.engine, "commit", lambda _connection: commits.append(1))

    report = harness.poll_once()

    rows = harness.rows()
    failed = rows[2]
    assert report.failures == 1 and len(report.taken) == 11
    assert (failed.processed_at, failed.attempts, failed.interrupted, failed.processing_by) == (None, 1, 0, None)
    assert "fails after writing" in failed.last_error
    assert _submissions(harness.engine) == {row.id: 1 for row in rows if row.id != failed.id}
    assert harness.count(OutboxMessage) == 11
    assert all(row.interrupted == 0 and row.processing_by is None for row in rows)
    assert harness.audit_actions().count("intake.verdict") == 11
    # Recording, one claim, one processing batch, the mailbox actions, and the pass's own reads:
    # a handful of commits for twelve mails, not two or three per mail.
    assert len(commits) <= 6, len(commits)


def test_a_mail_that_kills_the_process_takes_its_batch_companions_down_once_only(pymap_server, tmp_path, monkeypatch):
    monkeypatch.setattr("intake.intake_service.MAX_INTERRUPTIONS", 3)
    pymap_server.append_many([make_mail(n, body="[poison]\r\n" if n == 1 else None) for n in range(3)])

    def process(session, inbound, raw):
        if b"[poison]" in raw:
            raise SystemExit("the worker died")  # like a kill: nothing is caught, nothing commits
        return sample_process(session, inbound, raw)

    harness = IntakeHarness(tmp_path, pymap_server, process=process)
    with pytest.raises(SystemExit):
        harness.poll_once()
    # The whole batch died with it: nothing processed, every claim on record as an interruption.
    assert [(r.processed_at, r.interrupted, r.attempts) for r in harness.rows()] == [(None, 1, 0)] * 3

    for _ in range(2):  # from now on each interrupted mail runs alone: the first one gets through
        with pytest.raises(SystemExit):
            harness.poll_once()
    report = harness.poll_once()

    first, poison, last = harness.rows()
    assert poison.state == "quarantined" and poison.interrupted == 3 and poison.attempts == 0
    assert (first.state, first.interrupted, last.state, last.interrupted) == ("processed", 1, "processed", 1)
    assert [t.state for t in report.taken] == ["quarantined", "processed"]
    assert _submissions(harness.engine) == {first.id: 1, last.id: 1}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_claim_different_mails_at_the_same_time(database_url, tmp_path, pymap_server):
    """Each worker's first mail waits until the other worker is processing too: that only ends
    when their claims run side by side, on different rows (FOR UPDATE SKIP LOCKED, committed claims)."""
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine)
    store = DatabaseRawStore(engine)
    mails = [make_mail(n) for n in range(50)]
    mailbox = pymap_server.mailbox_settings()
    with Session(engine) as session:
        for number, stored in enumerate(store.put_many(mails)):
            session.add(
                InboundMessage(
                    desk=DESK,
                    account=mailbox.username,
                    mailbox=mailbox.folder,
                    uidvalidity=1,
                    uid=number + 1,
                    sha256=stored.sha256,
                    size=stored.size,
                    raw_path=stored.relative_path,
                    state="new",
                )
            )
        session.commit()
    busy = {name: threading.Event() for name in ("a", "b")}
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def hook(name: str, other: str):
        def process(session, inbound, raw):
            busy[name].set()
            assert busy[other].wait(30), "the other worker never got a mail of its own"
            seen[name].append(inbound.id)
            return sample_process(session, inbound, raw)

        return process

    owners = [open_owner(engine, tmp_path / "locks") for _ in range(2)]
    services = [
        _worker(engine, mailbox, owner, hook(name, other))
        for name, other, owner in (("a", "b", owners[0]), ("b", "a", owners[1]))
    ]
    reports = {}
    threads = [
        threading.Thread(target=lambda s=service, n=name: reports.__setitem__(n, s.process_pending()))
        for service, name in zip(services, ("a", "b"))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        for owner in owners:
            owner.close()
    try:
        assert set(reports) == {"a", "b"} and seen["a"] and seen["b"]
        assert not set(seen["a"]) & set(seen["b"])  # never the same mail twice
        assert len(reports["a"].taken) + len(reports["b"].taken) == 50
        with Session(engine) as session:
            rows = session.exec(select(InboundMessage)).all()
        assert all(r.state == "processed" and r.interrupted == 0 and r.processing_by is None for r in rows)
        assert sorted(_submissions(engine).values()) == [1] * 50
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_standby_worker_starts_on_new_mail_when_the_holder_records_it(database_url, tmp_path, pymap_server):
    """The standby pause is two minutes here: only the holder's NOTIFY (sent with its recording
    commit) can make the standby worker take the mails within the deadline."""
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine)
    mailbox = pymap_server.mailbox_settings()
    owners = [open_owner(engine, tmp_path / "locks") for _ in range(2)]

    def refuse(session, inbound, raw):
        raise AssertionError("the holder only records in this test")

    holder, standby = _worker(engine, mailbox, owners[0], refuse), _worker(engine, mailbox, owners[1], sample_process)
    rounds = []
    first_round = threading.Event()
    plain_round = standby.process_pending

    def counted_round():
        report = plain_round()
        rounds.append(len(report.taken))
        first_round.set()
        return report

    standby.process_pending = counted_round
    held = PostgresMailboxLock(engine, DESK, mailbox.username, mailbox.folder)
    held.acquire()  # the holder's mailbox: the standby worker cannot take it over
    stop = threading.Event()
    lock = PostgresMailboxLock(engine, DESK, mailbox.username, mailbox.folder)
    worker = threading.Thread(
        target=run_desk_worker,
        args=(standby, lock, lambda: MailboxConnection(mailbox, password=pymap_server.password), PollSettings(), stop),
        kwargs={"standby_seconds": 120},
    )
    worker.start()
    try:
        assert first_round.wait(30) and rounds == [0]  # nothing recorded yet: it waits
        pymap_server.append_many([make_mail(n) for n in range(3)])
        with MailboxConnection(mailbox, password=pymap_server.password) as conn:
            selected = conn.select()
            report = PassReport(uidvalidity=selected.uidvalidity)
            record_new(holder, conn, selected.uidvalidity, conn.search_uids(), report)
        assert report.recorded == 3

        wait_until(lambda: sum(rounds) == 3, timeout=20, what="the standby worker to take the recorded mails")
        assert len(rounds) == 2  # one round woken by the NOTIFY, not by the two-minute pause
    finally:
        stop.set()
        worker.join(30)
        held.release()
        for owner in owners:
            owner.close()
        engine.dispose()
    assert not worker.is_alive()
    assert sorted(_submissions(engine).values()) == [1, 1, 1]


def test_the_holders_pass_waits_for_another_workers_batch_and_moves_its_mails_too(
    database_url, tmp_path, pymap_server, monkeypatch
):
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine)
    mailbox = pymap_server.mailbox_settings()
    owners = [open_owner(engine, tmp_path / "locks") for _ in range(2)]
    holder_waits = threading.Event()
    real_sleep = intake_service.time.sleep

    def noticed_sleep(seconds):
        holder_waits.set()
        real_sleep(seconds)

    monkeypatch.setattr(intake_service.time, "sleep", noticed_sleep)
    standby_in_hand = threading.Event()

    def slow_standby(session, inbound, raw):
        standby_in_hand.set()
        assert holder_waits.wait(30), "the holder's pass did not wait for this worker's batch"
        return sample_process(session, inbound, raw)

    holder, standby = (
        _worker(engine, mailbox, owners[0], sample_process),
        _worker(engine, mailbox, owners[1], slow_standby),
    )
    pymap_server.append_many([make_mail(n) for n in range(2)])
    try:
        with MailboxConnection(mailbox, password=pymap_server.password) as conn:
            selected = conn.select()
            recorded = PassReport(uidvalidity=selected.uidvalidity)
            record_new(holder, conn, selected.uidvalidity, conn.search_uids(), recorded)
            standby_reports = []
            worker = threading.Thread(target=lambda: standby_reports.append(standby.process_pending()))
            worker.start()
            assert standby_in_hand.wait(30)

            report = holder.run_pass(conn)

            worker.join(30)
        assert [len(r.taken) for r in standby_reports] == [2] and report.taken == []
        assert report.actions == 2 and pymap_server.uids("INBOX") == []
        with Session(engine) as session:
            assert all(row.mailbox_action_done for row in session.exec(select(InboundMessage)))
    finally:
        for owner in owners:
            owner.close()
        engine.dispose()


def test_each_committed_batch_is_announced_with_its_mails(pymap_server, tmp_path):
    """The daemon wakes the outbox on this hook: replies go out while the pass goes on."""
    pymap_server.append_many([make_mail(n) for n in range(25)])
    harness = IntakeHarness(tmp_path, pymap_server)
    announced: list[list[int]] = []
    committed_then: list[int] = []

    def on_batch(taken):
        announced.append([t.inbound_id for t in taken])
        committed_then.append(sum(1 for row in harness.rows() if row.processed_at is not None))

    harness.service.on_batch = on_batch

    report = harness.poll_once()

    assert len(announced) >= 2  # claims of at most 20 mails: at least two batches
    assert sorted(i for batch in announced for i in batch) == sorted(t.inbound_id for t in report.taken)
    # Each announcement comes after its batch's commit: those mails are processed in the database.
    assert committed_then == [sum(len(b) for b in announced[: n + 1]) for n in range(len(announced))]


def test_a_pass_does_not_wait_for_the_mail_another_desks_worker_has_in_hand(pymap_server, tmp_path):
    """The pass waits (up to 15 s) only for its own desk's mails held by other live workers."""
    pymap_server.append(make_mail(1))
    harness = IntakeHarness(tmp_path, pymap_server)
    with (
        open_owner(harness.engine, tmp_path / "locks") as ours,
        open_owner(harness.engine, tmp_path / "locks") as other,
    ):
        harness.service.owner = ours
        with Session(harness.engine) as session:  # another town's worker, alive, is processing a mail of its own
            session.add(
                InboundMessage(
                    desk="other",
                    account=harness.mailbox.username,
                    mailbox=harness.mailbox.folder,
                    uidvalidity=1,
                    uid=1,
                    sha256="0" * 64,
                    size=1,
                    processing_by=other.id,
                )
            )
            session.commit()
        started = time.monotonic()
        report = harness.poll_once()
        took = time.monotonic() - started
    assert [t.state for t in report.taken] == ["processed"] and report.actions == 1
    assert took < 10, took


def test_a_worker_takes_over_its_own_leftover_claims_and_a_dead_workers_at_once_but_not_a_live_ones(
    pymap_server, tmp_path
):
    pymap_server.append_many([make_mail(n) for n in range(4)])
    harness = IntakeHarness(tmp_path, pymap_server)
    locks = tmp_path / "locks"
    with open_owner(harness.engine, locks) as ours, open_owner(harness.engine, locks) as alive:
        gone = open_owner(harness.engine, locks)
        harness.service.owner = ours
        with harness.lock(), harness.connection() as conn:  # stage 1 only: the rows exist, nobody processed them
            record_new(harness.service, conn, conn.select().uidvalidity, conn.search_uids(), PassReport())
        mine, fresh, dead, held = harness.rows()  # fresh: claimed by nobody yet, between the others
        with Session(
            harness.engine
        ) as session:  # claims as a failed pass of ours, a killed and a live worker left them
            for row_id, holder in ((mine.id, ours.id), (dead.id, gone.id), (held.id, alive.id)):
                session.get(InboundMessage, row_id).processing_by = holder
            session.commit()
        gone.close()

        report = harness.service.process_pending()
        again = harness.service.process_pending()  # only the live worker's claim is left: nothing to take

    assert sorted(t.inbound_id for t in report.taken) == [mine.id, fresh.id, dead.id] and again.taken == []
    assert [(r.processed_at is not None, r.processing_by) for r in harness.rows()] == [
        (True, None),
        (True, None),
        (True, None),
        (False, alive.id),
    ]


class _NumberingProcess:
    """Like the pipeline: receipt numbers drawn in the claim's transaction, then each mail processed."""

    def __init__(self) -> None:
        self.reserved: list[list[int]] = []

    def reserve_receipt_nos(self, session, rows) -> None:
        self.reserved.append([row.id for row in rows])
        for row in rows:
            row.receipt_no = f"R-{row.id:04d}"
            session.add(row)

    def __call__(self, session, inbound, raw):
        assert inbound.receipt_no == f"R-{inbound.id:04d}"  # drawn and committed before the processing
        return sample_process(session, inbound, raw)


def test_receipt_numbers_are_drawn_for_each_claimed_batch_in_mail_order(pymap_server, tmp_path):
    pymap_server.append_many([make_mail(n) for n in range(25)])
    process = _NumberingProcess()
    harness = IntakeHarness(tmp_path, pymap_server, process=process)

    report = harness.poll_once()

    rows = harness.rows()
    assert report.failures == 0 and len(report.taken) == 25
    assert process.reserved == [[row.id for row in rows[:20]], [row.id for row in rows[20:]]]  # claims of 20
    assert [row.receipt_no for row in rows] == [f"R-{row.id:04d}" for row in rows]
