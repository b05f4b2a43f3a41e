"""Taking mail from a real IMAP server (pymap, and Dovecot when installed) exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from sqlmodel import Session, select

from intake.intake_service import header_summary
from intake.mailbox_lock import MailboxBusy
from intake.poller import MailboxConnection, MailboxError, fetch_oauth_token
from intake.raw_store import sha256_hex
from intake.settings import Limits, PollSettings
from store import stored_findings
from store.tables import AuditEvent, InboundMessage, OutboxMessage, Submission
from keydesk import composition
from keydesk.database import make_engine
from tests.support.cli import invoke
from tests.support.servers import IntakeHarness, deployment_for, sample_process, make_mail, use_stand_in_pipeline

ACCEPTED = "keydesk/受付済"
RETURNED = "keydesk/返送"


def test_new_mail_is_taken_once_and_a_second_pass_takes_nothing(imap_server, tmp_path):
    raw = make_mail(1)
    imap_server.append(raw)
    harness = IntakeHarness(tmp_path, imap_server)

    first = harness.poll_once()

    (row,) = harness.rows()
    assert [t.uid for t in first.taken] == [row.uid]
    assert (row.state, row.verdict, row.mailbox_action_done) == ("processed", "accepted", True)
    assert row.sender == "contractor@kensetsu.example"
    assert row.subject == "認証キーのお知らせ 1"
    stored = harness.store.read(row.raw_path)
    assert row.sha256 == sha256_hex(stored)
    assert stored.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")  # pymap keeps LF line ends
    assert imap_server.uids("INBOX") == []
    assert imap_server.folder_count(ACCEPTED) == 1

    second = harness.poll_once()

    assert (second.recorded, second.taken, second.actions) == (0, [], 0)
    assert harness.count(Submission) == 1
    assert harness.count(OutboxMessage) == 1


def test_each_verdict_is_audited_with_its_findings_receipt_and_the_reply_it_queued(pymap_server, tmp_path):
    pymap_server.append_many([make_mail(1), make_mail(2, body="[returned] 再送します\r\n")])

    def numbered(session, inbound, raw):
        inbound.receipt_no = f"K-{inbound.uid}"
        return sample_process(session, inbound, raw)

    harness = IntakeHarness(tmp_path, pymap_server, process=numbered)
    harness.poll_once()

    with Session(harness.engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "intake.verdict").order_by(AuditEvent.id))
        audited = [(e.desk, e.actor, e.subject, json.loads(e.detail_json)) for e in events]
        replies = {
            r.inbound_id: {"outbox": r.id, "message_id": r.message_id} for r in session.exec(select(OutboxMessage))
        }
    accepted, returned = harness.rows()
    assert audited == [
        (
            "misato",
            "intake",
            f"inbound:{accepted.id}",
            {
                "verdict": "accepted",
                "findings": [],
                "receipt_no": f"K-{accepted.uid}",
                "replies": [replies[accepted.id]],
            },
        ),
        (
            "misato",
            "intake",
            f"inbound:{returned.id}",
            {
                "verdict": "returned",
                "findings": ["key.missing"],
                "receipt_no": f"K-{returned.uid}",
                "replies": [replies[returned.id]],
            },
        ),
    ]
    assert (accepted.verdict, returned.verdict) == ("accepted", "returned")
    # The pipeline stand-in leaves the row's findings empty: the outcome's codes are stored for the listings.
    assert (stored_findings.codes(accepted.findings_json), stored_findings.codes(returned.findings_json)) == (
        [],
        ["key.missing"],
    )


def test_every_recorded_mail_is_in_the_audit_trail_with_the_hash_of_its_bytes(pymap_server, tmp_path):
    pymap_server.append_many([make_mail(n) for n in range(3)])
    harness = IntakeHarness(tmp_path, pymap_server)

    harness.poll_once()

    rows = harness.rows()
    with Session(harness.engine) as session:
        [event] = session.exec(select(AuditEvent).where(AuditEvent.action == "intake.recorded"))
    assert (event.desk, event.actor, event.subject) == ("misato", "intake", f"inbound:{rows[0].id}-{rows[-1].id}")
    assert json.loads(event.detail_json) == {
        "uidvalidity": pymap_server.uidvalidity(),
        "mails": [
            {
                "inbound": row.id,
                "uid": row.uid,
                "sha256": sha256_hex(harness.store.read(row.raw_path)),
                "size": row.size,
            }
            for row in rows
        ],
    }
    assert [row.size for row in rows] == [len(harness.store.read(row.raw_path)) for row in rows]


def _mixed_mails(count: int) -> tuple[list[bytes], int]:
    """Small, Japanese, returned, chunked (over 64 KiB) and over-size (over 512 KiB) mails."""
    mails, oversize = [], 0
    for number in range(count):
        if number % 50 == 7:
            mails.append(make_mail(number, body="添付が大きすぎます\r\n" + "A" * 76 + "\r\n" * 1, extra=b"B" * 700_000))
            oversize += 1
        elif number % 20 == 3:
            mails.append(make_mail(number, extra=(b"C" * 998 + b"\r\n") * 150))  # ~150 KB: partial fetches
        elif number % 5 == 1:
            mails.append(make_mail(number, body=f"[returned] 再送します {number}\r\n"))
        else:
            mails.append(make_mail(number))
    return mails, oversize


def test_two_hundred_mixed_mails_are_each_recorded_exactly_once(imap_server, tmp_path):
    mails, oversize = _mixed_mails(200)
    imap_server.append_many(mails)
    harness = IntakeHarness(
        tmp_path, imap_server, poll=PollSettings(fetch_chunk_bytes=65_536), limits=Limits(mail_max_bytes=512 * 1024)
    )

    first = harness.poll_once()

    rows = harness.rows()
    assert first.recorded == 200 and len(first.taken) == 200
    assert len(rows) == 200
    assert len({row.sha256 for row in rows}) == 200
    assert len({(row.uidvalidity, row.uid) for row in rows}) == 200
    assert sorted(row.message_id for row in rows) == sorted(f"<mail-{n}@kensetsu.example>" for n in range(200))
    assert sum(row.state == "too_large" for row in rows) == oversize
    assert all(row.processed_at is not None and row.mailbox_action_done for row in rows)
    assert harness.count(Submission) == 200 and harness.count(OutboxMessage) == 200
    assert imap_server.uids("INBOX") == []
    assert imap_server.folder_count(RETURNED) == sum(row.verdict == "returned" for row in rows) > 30
    assert imap_server.folder_count(ACCEPTED) + imap_server.folder_count(RETURNED) == 200

    second = harness.poll_once()

    assert (second.recorded, second.recognised, len(second.taken)) == (0, 0, 0)
    assert harness.count(Submission) == 200 and harness.count(OutboxMessage) == 200


def test_mails_around_the_first_fetch_prefix_are_stored_whole_and_recorded_in_arrival_order(imap_server, tmp_path):
    # The first FETCH reads each mail's size and first PREFIX_BYTES; longer mails are fetched again.
    # Sizes on both sides of that boundary, between short mails, must come out whole, and the rows
    # must follow the UIDs (a later mail of a contractor is judged after the earlier one).
    from intake.mail_download import PREFIX_BYTES

    mails = []
    for number, target in enumerate(range(PREFIX_BYTES - 24, PREFIX_BYTES + 25)):
        short = make_mail(number)
        mails.append(short if number % 3 == 0 else short + b"P" * (target - len(short)))
    imap_server.append_many(mails)
    harness = IntakeHarness(tmp_path, imap_server)

    report = harness.poll_once()

    rows = sorted(harness.rows(), key=lambda row: row.id)
    assert report.recorded == len(mails) and len(report.taken) == len(mails)
    assert [row.uid for row in rows] == sorted(row.uid for row in rows)
    assert [row.message_id for row in rows] == [f"<mail-{n}@kensetsu.example>" for n in range(len(mails))]
    for row, sent in zip(rows, mails):
        stored = harness.store.read(row.raw_path)
        assert stored.replace(b"\r\n", b"\n") == sent.replace(b"\r\n", b"\n")
    assert {row.state for row in rows} == {"processed"}


def test_a_pass_takes_at_most_its_window_of_new_mails_oldest_first(imap_server, tmp_path):
    imap_server.append_many([make_mail(n) for n in range(10)])
    uids = imap_server.uids("INBOX")
    harness = IntakeHarness(tmp_path, imap_server, poll=PollSettings(mails_per_pass=4))

    reports = [harness.poll_once() for _ in range(3)]

    assert [(report.recorded, len(report.taken), report.actions, report.more) for report in reports] == [
        (4, 4, 4, True),
        (4, 4, 4, True),
        (2, 2, 2, False),
    ]
    assert [taken.uid for report in reports for taken in report.taken] == uids  # arrival order
    assert imap_server.uids("INBOX") == [] and harness.count(Submission) == 10
    last = harness.poll_once()
    assert (last.recorded, last.taken, last.more) == (0, [], False)  # nothing left


def test_a_mail_over_the_size_limit_is_recorded_from_its_headers_only(imap_server, tmp_path):
    seen: list[bytes] = []

    def process(session, inbound, raw):
        from tests.support.servers import sample_process

        seen.append(raw)
        return sample_process(session, inbound, raw)

    big = make_mail(9, extra=b"Z" * 200_000)
    imap_server.append(big)
    harness = IntakeHarness(tmp_path, imap_server, process=process, limits=Limits(mail_max_bytes=100_000))

    report = harness.poll_once()

    (row,) = harness.rows()
    assert row.state == "too_large"
    assert row.size >= 200_000  # RFC822.SIZE, not what was downloaded
    assert row.subject == "認証キーのお知らせ 9"
    headers = harness.store.read(row.raw_path)
    assert b"Subject:" in headers and b"Z" * 100 not in headers and len(headers) < 2_000
    assert seen == [headers]  # the pipeline is called with the headers, to answer the sender
    assert report.taken[0].state == "too_large" and row.mailbox_action_done
    assert harness.poll_once().taken == []


def test_a_mail_of_exactly_the_size_limit_is_taken_whole_and_recorded_once(pymap_server, tmp_path):
    pymap_server.append(make_mail(11, extra=b"P" * 4000))
    with pymap_server.client() as client:
        client.select_folder("INBOX", readonly=True)
        [size] = [data[b"RFC822.SIZE"] for data in client.fetch(client.search("ALL"), ["RFC822.SIZE"]).values()]
    harness = IntakeHarness(tmp_path, pymap_server, limits=Limits(mail_max_bytes=size))

    report = harness.poll_once()

    (row,) = harness.rows()
    assert report.recorded == 1 and (row.state, row.size) == ("processed", size)
    assert harness.store.read(row.raw_path).endswith(b"P" * 4000)  # the whole mail, not its headers


def test_flag_action_leaves_the_mail_in_place_and_never_takes_it_again(imap_server, tmp_path):
    imap_server.append(make_mail(2))
    harness = IntakeHarness(tmp_path, imap_server, mailbox=imap_server.mailbox_settings(action="flag"))

    harness.poll_once()

    (uid,) = imap_server.uids("INBOX")
    with imap_server.client() as client:
        client.select_folder("INBOX", readonly=True)
        assert b"\\Seen" in client.get_flags([uid])[uid]
    second = harness.poll_once()
    assert (second.recorded, second.recognised, second.taken) == (0, 0, [])
    assert harness.count(Submission) == 1


def test_the_same_mail_delivered_twice_is_processed_once(imap_server, tmp_path):
    raw = make_mail(3)
    imap_server.append_many([raw, raw])
    harness = IntakeHarness(tmp_path, imap_server)

    report = harness.poll_once()

    assert (report.recorded, report.recognised, len(report.taken)) == (1, 1, 1)
    assert harness.count(Submission) == 1 and harness.count(OutboxMessage) == 1
    assert imap_server.uids("INBOX") == []  # the copy is filed with the original
    assert imap_server.folder_count(ACCEPTED) == 2
    assert "intake.duplicate_copy" in harness.audit_actions()


def test_the_same_mail_at_two_desks_is_each_desks_own_mail(imap_server, tmp_path):
    """Duplicates are found by hash within one desk: another town's copy is not a duplicate."""
    from intake.intake_service import IntakeService

    imap_server.append(make_mail(4))
    harness = IntakeHarness(tmp_path, imap_server, mailbox=imap_server.mailbox_settings(action="flag"))
    other = IntakeService(
        desk="other",
        mailbox=harness.mailbox,
        poll=harness.poll,
        limits=harness.limits,
        engine=harness.engine,
        store=harness.store,
        process=sample_process,
    )

    first = harness.poll_once()
    with harness.connection() as conn:
        second = other.run_pass(conn)

    assert (first.recorded, second.recorded, second.recognised, len(second.taken)) == (1, 1, 0, 1)
    rows = harness.rows()
    assert sorted(row.desk for row in rows) == ["misato", "other"]
    assert rows[0].sha256 == rows[1].sha256 and all(row.state == "processed" for row in rows)
    assert "intake.relocated" not in harness.audit_actions()


def test_a_failing_mail_is_quarantined_after_max_attempts_and_others_flow(imap_server, tmp_path):
    imap_server.append_many([make_mail(4, subject="壊れたメール", body="[boom]\r\n"), make_mail(5)])
    harness = IntakeHarness(tmp_path, imap_server, poll=PollSettings(max_attempts=3))

    first = harness.poll_once()
    assert first.failures == 1 and [t.verdict for t in first.taken] == ["accepted"]
    assert imap_server.folder_count(ACCEPTED) == 1 and len(imap_server.uids("INBOX")) == 1
    harness.poll_once()
    third = harness.poll_once()

    bad = next(row for row in harness.rows() if row.subject == "壊れたメール")
    assert (bad.state, bad.attempts, bad.mailbox_action_done) == ("quarantined", 3, True)
    assert "ValueError" in bad.last_error
    assert [t.state for t in third.taken] == ["quarantined"]
    assert imap_server.folder_count("keydesk/隔離") == 1
    assert imap_server.uids("INBOX") == []
    assert "intake.quarantined" in harness.audit_actions()
    assert harness.count(Submission) == 1
    assert harness.poll_once().taken == []


class _NoMoveConnection(MailboxConnection):
    """A server without MOVE (RFC 6851): COPY + \\Deleted + UID EXPUNGE instead."""

    def open(self):
        super().open()
        original = self.client.has_capability
        self.client.has_capability = lambda name: False if name.upper() == "MOVE" else original(name)
        return self


def test_without_move_the_mail_is_copied_flagged_deleted_and_expunged(imap_server, tmp_path):
    imap_server.append_many([make_mail(6), make_mail(7)])
    harness = IntakeHarness(tmp_path, imap_server, connection_class=_NoMoveConnection)

    harness.poll_once()

    assert imap_server.uids("INBOX") == []
    assert imap_server.folder_count(ACCEPTED) == 2


def test_the_lock_allows_one_poller_per_mailbox(pymap_server, tmp_path):
    harness = IntakeHarness(tmp_path, pymap_server)
    with harness.lock():
        with pytest.raises(MailboxBusy):
            harness.lock().acquire()
        # Another process is refused too (flock locks are per open file, across processes).
        code = textwrap.dedent(f"""
            import sys
            from intake.mailbox_lock import MailboxBusy, MailboxLock
            try:
                MailboxLock({str(harness.lock_directory)!r}, "misato", {pymap_server.user!r}, "INBOX").acquire()
            except MailboxBusy:
                sys.exit(3)
        """)
        assert subprocess.run([sys.executable, "-c", code], timeout=30, check=False).returncode == 3
    harness.lock().acquire()  # released: the next poller may run


def test_a_refused_login_is_a_clear_error_without_the_password(pymap_server, tmp_path):
    connection = MailboxConnection(pymap_server.mailbox_settings(), password="wrong-secret-123", timeout=10)
    with pytest.raises(MailboxError) as caught:
        connection.open()
    assert "refused the login" in str(caught.value)
    assert "wrong-secret-123" not in str(caught.value)


def test_plain_imap_is_refused_to_a_remote_host(pymap_server):
    settings = pymap_server.mailbox_settings().model_copy(update={"host": "imap.example.jp"})
    with pytest.raises(MailboxError, match="clear-text"):
        MailboxConnection(settings, password="x").open()


def test_oauth_token_command_output_is_returned_and_never_leaked(tmp_path):
    assert fetch_oauth_token([sys.executable, "-c", "print('ya29.token-value')"]) == "ya29.token-value"
    with pytest.raises(MailboxError) as failed:
        fetch_oauth_token([sys.executable, "-c", "import sys; print('ya29.secret'); sys.exit(2)"])
    assert "exit code 2" in str(failed.value) and "ya29" not in str(failed.value)
    with pytest.raises(MailboxError, match="single-line"):
        fetch_oauth_token([sys.executable, "-c", "print('two words')"])
    with pytest.raises(MailboxError, match="not found"):
        fetch_oauth_token([str(tmp_path / "no-such-helper")])
    with pytest.raises(MailboxError, match="did not finish"):
        fetch_oauth_token([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)


def test_xoauth2_login_refused_by_the_server_is_a_mailbox_error(pymap_server):
    settings = pymap_server.mailbox_settings(
        auth="xoauth2", password_env=None, token_command=[sys.executable, "-c", "print('ya29.tok')"]
    )
    with pytest.raises(MailboxError) as caught:
        MailboxConnection(settings, timeout=10).open()
    assert "xoauth2" in str(caught.value) and "ya29" not in str(caught.value)


@pytest.mark.parametrize(
    "headers",
    [
        b"From: =?utf-8?q?broken\r\nSubject: =?iso-2022-jp?B?GyRC?=\r\n\r\nbody",
        b"From: \x93\xfa\x96\x7b <a@b.example>\r\nSubject: \x82\xa0\r\n\r\n",
        b"\x00\xff\xfe garbage without structure",
        b"",
    ],
)
def test_header_summary_never_raises_on_hostile_headers(headers):
    message_id, sender, subject = header_summary(headers)
    for value in (message_id, sender, subject):
        assert value is None or isinstance(value.encode("utf-8"), bytes)  # storable: no lone surrogates


def test_header_summary_takes_the_header_block_only_and_cuts_long_values_for_the_listing():
    crlf = (
        b"Message-ID: <k-1@kensetsu.example>\r\nFrom: =?utf-8?b?5bu66Kit?= <a@kensetsu.example>\r\n"
        b"Subject: " + b"x" * 1500 + b"\r\n\r\nSubject: a line of the body\r\n"
    )
    assert header_summary(crlf) == ("<k-1@kensetsu.example>", "建設 <a@kensetsu.example>", "x" * 998)
    # LF line ends, no Subject header: a body line that looks like one is not taken for it.
    assert header_summary(b"From: a@kensetsu.example\n\nSubject: not a header\n") == (
        None,
        "a@kensetsu.example",
        None,
    )
    assert header_summary(b"Subject: \r\nFrom: a@kensetsu.example\r\n\r\n")[2] is None  # empty: nothing to list


def test_poll_once_json_prints_one_object_per_mail(pymap_server, tmp_path, monkeypatch):

    config = deployment_for(tmp_path, pymap_server)
    use_stand_in_pipeline(monkeypatch)
    pymap_server.append_many([make_mail(10), make_mail(11, body="[returned] 不備\r\n")])
    result = invoke(config, "poll", "--once", "--json")

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(m["sender"], m["verdict"], m["findings"]) for m in lines] == [
        ("contractor@kensetsu.example", "accepted", []),
        ("contractor@kensetsu.example", "returned", ["key.missing"]),
    ]
    assert all(isinstance(m["uid"], int) for m in lines)
    again = invoke(config, "poll", "--once", "--json")
    assert again.exit_code == 0 and not [line for line in again.stdout.splitlines() if line.startswith("{")]
    refused = invoke(config, "poll")
    assert refused.exit_code != 0


def test_keydesk_poll_once_records_two_hundred_mixed_mails_exactly_once(imap_server, tmp_path, monkeypatch):
    """The issue's "Done when", through the command a cron job would run."""
    config = deployment_for(tmp_path, imap_server)
    use_stand_in_pipeline(monkeypatch)
    mails, _ = _mixed_mails(200)
    imap_server.append_many(mails)
    first = invoke(config, "poll", "--once", "--json")

    assert first.exit_code == 0, first.output
    taken = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(taken) == 200 and len({m["uid"] for m in taken}) == 200
    engine = make_engine(f"sqlite:///{tmp_path}/var/keydesk.db")
    with Session(engine) as session:
        rows = session.exec(select(InboundMessage)).all()
        assert len(rows) == 200 and len({row.sha256 for row in rows}) == 200
        assert len(session.exec(select(Submission)).all()) == 200
    second = invoke(config, "poll", "--once", "--json")
    assert second.exit_code == 0 and not [line for line in second.stdout.splitlines() if line.startswith("{")]
    assert imap_server.uids("INBOX") == []


def test_poll_refuses_while_another_process_holds_the_mailbox(pymap_server, tmp_path, monkeypatch):
    config = deployment_for(tmp_path, pymap_server)
    use_stand_in_pipeline(monkeypatch)
    pymap_server.append(make_mail(12))
    from keydesk.runtime import Runtime

    with composition.mailbox_lock(Runtime(config).settings, "misato"):
        result = invoke(config, "poll", "--once")
    assert result.exit_code == 1 and result.refused_with("別の keydesk が受信中です")
    assert pymap_server.uids("INBOX") != []  # nothing was taken
