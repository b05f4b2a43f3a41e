"""Nothing lost, nothing repeated: crashes, restarts and UIDVALIDITY resets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from intake.poller import TRANSIENT_ERRORS, MailboxConnection
from intake.raw_store import RawStore, RawStoreError, sha256_hex
from intake.settings import PollSettings
from store.tables import AuditEvent, InboundMessage, OutboxMessage, Submission
from tests.support.servers import IntakeHarness, make_mail, sample_process

ROOT = Path(__file__).resolve().parents[2]
ACCEPTED = "keydesk/受付済"
RETURNED = "keydesk/返送"

# Runs one pass in a child process; with CRASH set it dies (os._exit) right after the first
# processing commit (of a batch of BATCH mails), before any mailbox action: the worst moment for
# exactly-once.
_PASS_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    import intake.intake_service
    from tests.support.servers import IntakeHarness, _ServerBase
    if os.environ.get("BATCH"):
        intake.intake_service._PROCESS_BATCH = int(os.environ["BATCH"])

    def crash(_row):
        os._exit(17)

    server = _ServerBase({port})
    harness = IntakeHarness(Path({tmp!r}), server, after_commit=crash if os.environ.get("CRASH") else None)
    report = harness.poll_once()
    print(len(report.taken))
""")


def _run_pass_in_child(tmp_path: Path, port: int, crash: bool, batch: int | None = None) -> subprocess.CompletedProcess:
    script = _PASS_SCRIPT.format(root=str(ROOT), port=port, tmp=str(tmp_path))
    env = {key: value for key, value in os.environ.items() if key not in ("CRASH", "BATCH")}
    if crash:
        env["CRASH"] = "1"
    if batch is not None:
        env["BATCH"] = str(batch)
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _submissions_per_inbound(harness: IntakeHarness) -> dict[int, int]:
    with Session(harness.engine) as session:
        return dict(session.exec(select(Submission.inbound_id, func.count()).group_by(Submission.inbound_id)).all())


def test_killed_between_commit_and_mailbox_action_then_restarted(imap_server, tmp_path):
    # Batches of one mail (issue 13 batches the processing commits): the crash falls between the
    # first mail's commit and the others' processing.
    imap_server.append_many([make_mail(n) for n in range(3)])

    crashed = _run_pass_in_child(tmp_path, imap_server.port, crash=True, batch=1)

    assert crashed.returncode == 17, crashed.stderr
    harness = IntakeHarness(tmp_path, imap_server)
    rows = harness.rows()
    assert len(rows) == 3  # every mail was recorded before processing began
    first = rows[0]
    assert first.processed_at is not None and not first.mailbox_action_done
    assert [r.state for r in rows[1:]] == ["new", "new"]
    assert harness.count(Submission) == 1 and harness.count(OutboxMessage) == 1
    assert len(imap_server.uids("INBOX")) == 3  # the move never happened

    again = _run_pass_in_child(tmp_path, imap_server.port, crash=False, batch=1)

    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "2"  # only the two unprocessed mails were taken
    assert _submissions_per_inbound(harness) == {row.id: 1 for row in rows}
    with Session(harness.engine) as session:
        keys = sorted(session.exec(select(OutboxMessage.idempotency_key)).all())
    assert keys == sorted(f"reply:{row.id}" for row in rows)
    assert all(row.mailbox_action_done for row in harness.rows())
    assert imap_server.uids("INBOX") == [] and imap_server.folder_count(ACCEPTED) == 3


def test_killed_after_a_batch_commit_processes_nothing_twice(imap_server, tmp_path):
    """One transaction for the whole batch: a crash after its commit leaves every mail processed
    (each with its verdict in the audit trail) and none moved; the restart only moves them."""
    imap_server.append_many([make_mail(n) for n in range(3)])

    crashed = _run_pass_in_child(tmp_path, imap_server.port, crash=True)

    assert crashed.returncode == 17, crashed.stderr
    harness = IntakeHarness(tmp_path, imap_server)
    rows = harness.rows()
    assert [(r.state, r.interrupted, r.processing_by, r.mailbox_action_done) for r in rows] == [
        ("processed", 0, None, False)
    ] * 3
    assert harness.audit_actions().count("intake.verdict") == 3
    assert len(imap_server.uids("INBOX")) == 3

    again = _run_pass_in_child(tmp_path, imap_server.port, crash=False)

    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "0"
    assert _submissions_per_inbound(harness) == {row.id: 1 for row in rows}
    assert imap_server.uids("INBOX") == [] and imap_server.folder_count(ACCEPTED) == 3


def test_uidvalidity_reset_reprocesses_nothing(imap_server, tmp_path):
    folder = "desk-in"
    mails = [make_mail(n) for n in range(4)]
    imap_server.ensure_folder(folder)
    imap_server.append_many(mails, folder)
    harness = IntakeHarness(tmp_path, imap_server, mailbox=imap_server.mailbox_settings(folder=folder, action="flag"))
    assert len(harness.poll_once().taken) == 4
    old_uidvalidity = imap_server.uidvalidity(folder)

    # The folder is recreated (as after a server migration) and the same mails come back.
    imap_server.recreate_folder(folder)
    imap_server.append_many(mails, folder)
    new_uidvalidity = imap_server.uidvalidity(folder)
    assert new_uidvalidity != old_uidvalidity

    report = harness.poll_once()

    assert (report.recorded, report.recognised, report.taken) == (0, 4, [])
    assert harness.count(Submission) == 4 and harness.count(OutboxMessage) == 4
    assert {row.uidvalidity for row in harness.rows()} == {new_uidvalidity}
    assert harness.audit_actions().count("intake.relocated") == 4
    with imap_server.client() as client:
        client.select_folder(folder, readonly=True)
        flags = client.get_flags(client.search("ALL"))
    assert all(b"\\Seen" in f for f in flags.values())  # the copies got the mailbox action again
    third = harness.poll_once()
    assert (third.recorded, third.recognised, third.taken) == (0, 0, [])  # nothing downloaded again


def test_after_a_uidvalidity_reset_the_copies_of_processed_and_quarantined_mail_are_filed_again(pymap_server, tmp_path):
    folder = "desk-in"
    mails = [make_mail(1), make_mail(2, body="[boom]\r\n")]
    pymap_server.ensure_folder(folder)
    pymap_server.append_many(mails, folder)
    harness = IntakeHarness(
        tmp_path,
        pymap_server,
        mailbox=pymap_server.mailbox_settings(folder=folder),
        poll=PollSettings(max_attempts=1),
    )
    first = harness.poll_once()
    assert sorted(t.state for t in first.taken) == ["processed", "quarantined"]
    before = [(row.uidvalidity, row.uid) for row in harness.rows()]

    pymap_server.recreate_folder(folder)  # a server migration: the same mails come back under a new UIDVALIDITY
    pymap_server.append_many(mails, folder)
    report = harness.poll_once()

    # Each row follows its mail, and the audit trail records where from and where to.
    after = [(row.uidvalidity, row.uid) for row in harness.rows()]
    assert all(validity == pymap_server.uidvalidity(folder) for validity, _ in after)
    with Session(harness.engine) as session:
        moves = session.exec(select(AuditEvent).where(AuditEvent.action == "intake.relocated").order_by(AuditEvent.id))
        details = [json.loads(event.detail_json) for event in moves]
    assert details == [
        {
            "from": {"mailbox": folder, "uidvalidity": v0, "uid": u0},
            "to": {"mailbox": folder, "uidvalidity": v1, "uid": u1},
        }
        for (v0, u0), (v1, u1) in zip(before, after)
    ]

    assert (report.recorded, report.recognised, report.taken) == (0, 2, [])
    assert pymap_server.uids(folder) == []  # neither copy is left in the desk's folder
    assert pymap_server.folder_count(ACCEPTED) == 2 and pymap_server.folder_count("keydesk/隔離") == 2
    assert harness.count(Submission) == 1


class _DyingServerConnection(MailboxConnection):
    """Kills the server after a few mails were downloaded, in the middle of the record stage."""

    server = None
    after = 4

    def fetch_bodies(self, sizes, chunk_bytes, max_bytes):
        for count, item in enumerate(super().fetch_bodies(sizes, chunk_bytes, max_bytes), start=1):
            yield item
            if count == self.after:
                self.server.kill()


def test_server_restart_mid_run_loses_and_repeats_nothing(imap_server, tmp_path):
    # ~25 KB each: two mails per 64 KiB FETCH, so the server dies between FETCH commands.
    mails = [make_mail(n, extra=b"P" * 25_000) for n in range(20)]
    imap_server.append_many(mails)
    dying = type("Dying", (_DyingServerConnection,), {"server": imap_server})
    harness = IntakeHarness(tmp_path, imap_server, poll=PollSettings(fetch_chunk_bytes=65_536), connection_class=dying)

    with pytest.raises(TRANSIENT_ERRORS):
        harness.poll_once()

    recorded_before = len(harness.rows())
    assert 0 < recorded_before < 20
    assert harness.count(Submission) == 0  # recording comes first; processing had not begun
    imap_server.start()
    harness.connection_class = None

    report = harness.poll_once()

    assert report.recorded == 20 - recorded_before and len(report.taken) == 20
    assert len({row.sha256 for row in harness.rows()}) == 20
    assert _submissions_per_inbound(harness) == {row.id: 1 for row in harness.rows()}
    assert imap_server.uids("INBOX") == [] and imap_server.folder_count(ACCEPTED) == 20


def test_server_dying_before_the_mailbox_actions_only_delays_them(imap_server, tmp_path):
    imap_server.append_many([make_mail(n) for n in range(5)])
    calls = []

    def process(session, inbound, raw):
        calls.append(inbound.id)
        if len(calls) == 5:
            imap_server.kill()  # processing is database-only; the moves that follow will fail
        return sample_process(session, inbound, raw)

    harness = IntakeHarness(tmp_path, imap_server, process=process)
    with pytest.raises(TRANSIENT_ERRORS):
        harness.poll_once()
    assert all(row.processed_at is not None and not row.mailbox_action_done for row in harness.rows())
    imap_server.start()

    report = harness.poll_once()

    assert report.taken == [] and report.actions == 5 and len(calls) == 5
    assert imap_server.uids("INBOX") == [] and imap_server.folder_count(ACCEPTED) == 5
    assert harness.count(Submission) == 5 and harness.count(OutboxMessage) == 5


def test_a_run_killed_from_outside_is_not_the_mails_failure_but_is_bounded(pymap_server, tmp_path, monkeypatch):
    # Behaviour changed with issue 13: a process that dies with a mail in hand no longer counts an
    # attempt against it (a SIGKILL is not the mail's fault); the interruptions are counted apart
    # and only a mail that was in hand at every one of MAX_INTERRUPTIONS deaths is quarantined.
    monkeypatch.setattr("intake.intake_service.MAX_INTERRUPTIONS", 3)
    pymap_server.append(make_mail(1, body="[poison]\r\n"))
    calls = []

    def process(session, inbound, raw):
        calls.append(inbound.id)
        raise SystemExit("the worker died")  # not an Exception: like a crash, nothing is caught

    harness = IntakeHarness(tmp_path, pymap_server, process=process, poll=PollSettings(max_attempts=2))
    for _ in range(3):
        with pytest.raises(SystemExit):
            harness.poll_once()
    (row,) = harness.rows()
    assert (row.attempts, row.interrupted, row.state) == (0, 3, "new")  # max_attempts=2 did not apply

    report = harness.poll_once()

    assert len(calls) == 3  # the fourth pass gives up without calling the pipeline again
    assert [t.state for t in report.taken] == ["quarantined"]
    assert pymap_server.folder_count("keydesk/隔離") == 1
    # The audit trail says why: no failed attempt, but every run interrupted.
    assert _quarantine_records(harness) == [
        (f"inbound:{row.id}", {"attempts": 0, "interrupted": 3, "error": "processing was interrupted 3 times"})
    ]


def _quarantine_records(harness: IntakeHarness) -> list[tuple[str, dict]]:
    with Session(harness.engine) as session:
        events = session.exec(
            select(AuditEvent).where(AuditEvent.action == "intake.quarantined").order_by(AuditEvent.id)
        )
        return [(event.subject, json.loads(event.detail_json)) for event in events]


def _failing_the_first_time(error: BaseException):
    """A processing hook that raises ``error`` on its first call, then works like the pipeline stand-in."""
    calls = []

    def process(session, inbound, raw):
        calls.append(inbound.id)
        if len(calls) == 1:
            raise error
        return sample_process(session, inbound, raw)

    return process


def test_a_mail_processed_after_an_interruption_has_no_failed_attempt(pymap_server, tmp_path):
    pymap_server.append(make_mail(1))
    process = _failing_the_first_time(SystemExit("killed"))
    harness = IntakeHarness(tmp_path, pymap_server, process=process, poll=PollSettings(max_attempts=1))
    with pytest.raises(SystemExit):
        harness.poll_once()
    report = harness.poll_once()

    (row,) = harness.rows()
    assert [t.state for t in report.taken] == ["processed"]
    assert (row.attempts, row.interrupted) == (0, 1)  # max_attempts=1 did not apply; the death is on record


def test_a_mail_already_out_of_attempts_is_quarantined_at_its_next_claim_without_running_again(pymap_server, tmp_path):
    """A mail that failed as often as allowed (the limit lowered since, or the process stopped between the
    failure's commit and the quarantine) is quarantined when it is next claimed, not run once more."""
    pymap_server.append(make_mail(1, body="[boom]\r\n"))
    calls = []

    def process(session, inbound, raw):
        calls.append(inbound.id)
        return sample_process(session, inbound, raw)  # "[boom]" raises

    first = IntakeHarness(tmp_path, pymap_server, process=process, poll=PollSettings(max_attempts=3)).poll_once()
    lowered = IntakeHarness(tmp_path, pymap_server, process=process, poll=PollSettings(max_attempts=1))
    report = lowered.poll_once()

    (row,) = lowered.rows()
    assert first.failures == 1 and calls == [row.id]  # run in the first pass only
    assert [t.state for t in report.taken] == ["quarantined"] and report.failures == 0
    assert (row.state, row.attempts, row.interrupted) == ("quarantined", 1, 0)
    assert pymap_server.folder_count("keydesk/隔離") == 1 and pymap_server.uids("INBOX") == []


def test_a_mail_that_failed_once_and_then_went_through_keeps_no_error_and_its_attempt(pymap_server, tmp_path):
    pymap_server.append(make_mail(1))
    flaky = _failing_the_first_time(OSError("the register was briefly unreachable"))
    harness = IntakeHarness(tmp_path, pymap_server, process=flaky, poll=PollSettings(max_attempts=3))
    first = harness.poll_once()
    (failed,) = harness.rows()
    second = harness.poll_once()

    (row,) = harness.rows()
    assert (first.failures, failed.last_error) == (1, "OSError: the register was briefly unreachable")
    assert [t.state for t in second.taken] == ["processed"]
    assert (row.state, row.last_error, row.attempts, row.interrupted, row.processing_by) == (
        "processed",
        None,
        1,
        0,
        None,
    )


class _FailingWithAcknowledgement:
    """A process hook that always fails, and answers the quarantined mail like the pipeline does."""

    def __init__(self) -> None:
        self.acknowledged: list[int] = []
        self.read: list[bytes] = []

    def __call__(self, session, inbound, raw):
        raise RuntimeError("cannot read this mail")

    def acknowledge_quarantined(self, session, inbound, raw):
        self.acknowledged.append(inbound.id)
        self.read.append(raw)
        inbound.receipt_no = f"K-TEST-{inbound.id}"
        session.add(inbound)


def test_a_quarantined_mail_is_still_acknowledged_in_the_same_transaction(pymap_server, tmp_path):
    pymap_server.append(make_mail(1))
    process = _FailingWithAcknowledgement()
    harness = IntakeHarness(tmp_path, pymap_server, process=process, poll=PollSettings(max_attempts=2))

    harness.poll_once()
    report = harness.poll_once()

    (row,) = harness.rows()
    assert [t.state for t in report.taken] == ["quarantined"] and process.acknowledged == [row.id]
    # The answer is written from the mail itself (its sender, its subject): the stored bytes are handed over.
    assert (
        process.read == [harness.store.read(row.raw_path)] and b"From: contractor@kensetsu.example" in process.read[0]
    )
    assert row.state == "quarantined" and row.receipt_no == f"K-TEST-{row.id}" and row.attempts == 2
    assert _quarantine_records(harness) == [
        (f"inbound:{row.id}", {"attempts": 2, "interrupted": 0, "error": "RuntimeError: cannot read this mail"})
    ]
    assert "intake.quarantined" in harness.audit_actions()


def test_a_processing_failure_rolls_back_everything_it_wrote(pymap_server, tmp_path):
    pymap_server.append(make_mail(1))

    def process(session, inbound, raw):
        sample_process(session, inbound, raw)
        session.flush()
        raise RuntimeError("late failure after the reply was enqueued")

    harness = IntakeHarness(tmp_path, pymap_server, process=process)
    report = harness.poll_once()

    assert report.failures == 1
    assert harness.count(Submission) == 0 and harness.count(OutboxMessage) == 0
    (row,) = harness.rows()
    assert row.processed_at is None and row.attempts == 1 and "late failure" in row.last_error
    assert len(pymap_server.uids("INBOX")) == 1  # left in place for the next pass


def test_raw_store_names_files_by_hash_and_checks_them(tmp_path):
    store = RawStore(tmp_path / "store")
    data = b"From: a@example.jp\r\n\r\nbody\r\n"

    first = store.put(data)
    second = store.put(data)

    assert first == second and first.sha256 == sha256_hex(data)
    assert first.relative_path == f"mail/{first.sha256[:2]}/{first.sha256}.eml"
    assert store.read(first.relative_path) == data
    assert not list((tmp_path / "store").rglob(".incoming-*"))  # no temporary left behind
    store.path(first.relative_path).write_bytes(b"tampered")
    with pytest.raises(RawStoreError, match="does not match"):
        store.read(first.relative_path)
    for hostile in ("../../etc/passwd", "mail/aa/../../x.eml", "/etc/passwd"):
        with pytest.raises(RawStoreError):
            store.path(hostile)
    with pytest.raises(RawStoreError):
        store.put(data, suffix="/../x")


def test_rows_are_committed_before_processing_starts(pymap_server, tmp_path):
    pymap_server.append_many([make_mail(1), make_mail(2)])
    seen_in_database = []

    def process(session, inbound, raw):
        # Another connection sees both rows already: they were committed before any processing.
        with Session(harness.engine) as other:
            seen_in_database.append(other.exec(select(func.count()).select_from(InboundMessage)).one())
        return sample_process(session, inbound, raw)

    harness = IntakeHarness(tmp_path, pymap_server, process=process)
    harness.poll_once()

    assert seen_in_database == [2, 2]


def test_a_pending_mail_of_an_old_uidvalidity_never_moves_a_new_mail_with_its_uid(imap_server, tmp_path):
    # Mails recorded under one UIDVALIDITY but not yet processed, then the folder is recreated with
    # other mails: the same UID numbers now name other mails, and the old rows must not move them.
    folder = "keydesk-test-old-uidvalidity"
    imap_server.ensure_folder(folder)
    imap_server.append_many([make_mail(n, body="[returned] 番号のみ\r\n") for n in range(3)], folder)
    failing = {"on": True}

    def process(session, inbound, raw):
        if failing["on"]:
            raise ValueError("the pipeline is down")
        return sample_process(session, inbound, raw)

    mailbox = imap_server.mailbox_settings(folder=folder)
    harness = IntakeHarness(tmp_path, imap_server, mailbox=mailbox, process=process)
    first = harness.poll_once()
    assert first.recorded == 3 and first.failures == 3 and first.actions == 0
    old_uids = sorted(row.uid for row in harness.rows())

    imap_server.recreate_folder(folder)
    imap_server.append_many([make_mail(n) for n in range(10, 13)], folder)
    with imap_server.client() as client:
        client.select_folder(folder, readonly=True)
        assert sorted(client.search("ALL")) == old_uids  # the same numbers, other mails
    failing["on"] = False

    second = harness.poll_once()

    assert second.recorded == 3 and len(second.taken) == 6  # the old rows are processed too
    assert imap_server.folder_count(RETURNED) == 0  # no new mail was moved by an old row's verdict
    assert imap_server.folder_count(ACCEPTED) == 3 and imap_server.uids(folder) == []
