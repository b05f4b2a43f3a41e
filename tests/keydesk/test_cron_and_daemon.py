"""Cron and daemon alike: `poll --once` delivers what it queued, `--json` names every mail it
touched, `keydesk run` picks up a fixed secret on its next reconnect, and the backoff stays short."""

from __future__ import annotations

import json
import threading

from sqlmodel import Session, select

from intake.idle_loop import run_idle_loop
from intake.poller import MailboxError
from intake.settings import PollSettings
from keydesk import composition, daemon
from keydesk.runtime import Runtime
from store.tables import InboundMessage, OutboxMessage, Submission
from tests.support.cli import invoke, wait_until
from tests.support.deployment import edit_section, use_smtp
from tests.support.smtp_servers import Recorder, running
from tests.support.servers import deployment_for, make_mail, use_stand_in_pipeline


def _outbox_states(config) -> list[str]:
    with Session(Runtime(config).engine) as session:
        return [row.state for row in session.exec(select(OutboxMessage).order_by(OutboxMessage.id))]


def test_poll_once_delivers_the_replies_it_queued(imap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, imap_server)
    handler = Recorder()
    with running(handler) as port:
        use_smtp(config, port)
        imap_server.append(make_mail(1))
        result = invoke(config, "poll", "--once")
        assert result.exit_code == 0, result.output
        assert "送信: " in result.output
        [message] = handler.wait_for_messages(1)
    assert message.rcpt_tos == ("contractor@kensetsu.example",)
    assert _outbox_states(config) == ["sent"]


def test_poll_once_no_send_only_queues(pymap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, pymap_server)
    handler = Recorder()
    with running(handler) as port:
        use_smtp(config, port)
        pymap_server.append(make_mail(2))
        result = invoke(config, "poll", "--once", "--no-send")
        assert result.exit_code == 0, result.output
        assert _outbox_states(config) == ["pending"]
        assert invoke(config, "outbox", "send").exit_code == 0
        handler.wait_for_messages(1)
    assert _outbox_states(config) == ["sent"]


def test_poll_once_with_the_smtp_server_down_keeps_the_replies_and_warns(pymap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, pymap_server)
    use_smtp(config, 9)  # the discard port: nothing listens there
    pymap_server.append(make_mail(3))
    result = invoke(config, "poll", "--once")
    assert result.exit_code == 0
    assert "返信は送信待ちのままです" in result.stderr
    assert _outbox_states(config) == ["pending"]


def test_poll_json_prints_a_line_for_a_byte_identical_copy_too(pymap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, pymap_server)
    pymap_server.append_many([make_mail(4), make_mail(4)])
    result = invoke(config, "poll", "--once", "--json", "--no-send")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["state"] for line in lines) == ["duplicate_copy", "processed"]
    assert len({line["uid"] for line in lines}) == 2 and len({line["inbound_id"] for line in lines}) == 1
    assert pymap_server.uids("INBOX") == []  # the copy was filed with its original


def test_run_picks_up_a_fixed_password_file_without_a_restart(imap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    monkeypatch.setattr(daemon, "companions", lambda: ())
    config = deployment_for(tmp_path, imap_server)
    edit_section(config, "[poll]", reconnect_max_seconds="1")
    secret = tmp_path / "var" / "secrets" / "desk-mailbox.password"
    secret.write_text("a wrong password\n")
    runtime = Runtime(config)
    stop, failures = threading.Event(), []
    attempts = []
    original = composition.connector

    def counting_connector(settings, desk_id):
        connect = original(settings, desk_id)

        def counted():
            attempts.append(1)
            return connect()

        return counted

    monkeypatch.setattr(composition, "connector", counting_connector)

    def serve():
        try:
            daemon.serve(runtime, stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(attempts) >= 2, timeout=15, what="two refused logins")
        secret.write_text(imap_server.password + "\n")
        imap_server.append(make_mail(5))
        with Session(runtime.engine) as session:
            wait_until(
                lambda: session.exec(select(Submission)).all(), timeout=15, what="the mail to be taken after the fix"
            )
            assert session.exec(select(InboundMessage)).one().state == "processed"
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not failures


class _RecordingStop(threading.Event):
    """A stop event whose waits return at once and are remembered (no real sleeping)."""

    def __init__(self, waits_before_stop: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.limit = waits_before_stop

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


def test_reconnect_backoff_is_capped_at_thirty_seconds_by_default():
    assert PollSettings().reconnect_max_seconds == 30
    stop = _RecordingStop(waits_before_stop=9)

    def refuse():
        raise MailboxError("the IMAP server refused the login")

    service = type(
        "Service", (), {"desk": "misato", "account": "keiyaku", "mailbox": type("M", (), {"folder": "INBOX"})}
    )
    run_idle_loop(service, refuse, PollSettings(), stop)
    assert stop.waits == [1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_the_audit_trail_tells_the_whole_story_of_a_poll(pymap_server, tmp_path, monkeypatch):
    """Every mail taken (with the hash of its bytes), its verdict and the reply it queued are audited,
    so `audit verify` covers the intake, not only exceptional events."""
    from store.tables import AuditEvent

    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, pymap_server)
    pymap_server.append_many([make_mail(7), make_mail(8, body="[returned]\r\n")])
    assert invoke(config, "poll", "--once", "--no-send").exit_code == 0
    runtime = Runtime(config)
    with Session(runtime.engine) as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
        inbound = session.exec(select(InboundMessage).order_by(InboundMessage.id)).all()
        replies = session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    [recorded] = [json.loads(e.detail_json) for e in events if e.action == "intake.recorded"]
    assert [(m["inbound"], m["sha256"]) for m in recorded["mails"]] == [(row.id, row.sha256) for row in inbound]
    verdicts = [json.loads(e.detail_json) for e in events if e.action == "intake.verdict"]
    assert [v["verdict"] for v in verdicts] == ["accepted", "returned"]
    assert [v["replies"][0]["message_id"] for v in verdicts] == [reply.message_id for reply in replies]
    verify = invoke(config, "audit", "verify")
    assert verify.exit_code == 0 and "鍵付き" in verify.stdout


def test_poll_once_takes_a_backlog_larger_than_one_pass_whole(pymap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, pymap_server)
    edit_section(config, "[poll]", mails_per_pass="2")
    pymap_server.append_many([make_mail(n) for n in range(5)])

    result = invoke(config, "poll", "--once", "--no-send")

    assert result.exit_code == 0, result.output
    # Three passes of at most two mails, each reported as it ends.
    assert result.output.count("通を処理しました") == 3
    assert pymap_server.uids("INBOX") == []
    with Session(Runtime(config).engine) as session:
        assert len(session.exec(select(Submission)).all()) == 5
