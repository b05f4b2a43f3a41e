"""The IDLE loop: push, renewal, polling fallback, reconnection after a cut, clean stop."""

from __future__ import annotations

import socket
import threading

import pytest

from intake.idle_loop import run_idle_loop
from intake.poller import ConnectionLost, MailboxConnection
from intake.settings import PollSettings
from store.tables import Submission
from tests.support.servers import IntakeHarness, make_mail, wait_until, use_stand_in_pipeline

# Validation keeps real deployments sane (≥ 5 s polls); tests construct faster settings directly.
FAST = PollSettings.model_construct(
    **{
        **PollSettings().model_dump(),
        "poll_interval_seconds": 0.2,
        "reconnect_max_seconds": 1,
        "idle_renew_seconds": 30,
    }
)


class _Loop:
    """run_idle_loop in a thread; every connection it opens is remembered so a test can cut it."""

    def __init__(self, harness: IntakeHarness, poll: PollSettings = FAST, connection_class=None) -> None:
        self.harness = harness
        self.stop = threading.Event()
        self.connections: list[MailboxConnection] = []
        self.passes = 0
        self.idling = threading.Event()  # set while a connection is in IDLE
        cls = connection_class or MailboxConnection
        loop = self

        class Watched(cls):
            def open(self):
                super().open()
                start, done = self.client.idle, self.client.idle_done

                def idle():
                    start()
                    loop.idling.set()

                def idle_done():
                    loop.idling.clear()
                    return done()

                self.client.idle, self.client.idle_done = idle, idle_done
                return self

        def connect() -> MailboxConnection:
            connection = Watched(harness.mailbox, password=harness.server.password, timeout=10)
            self.connections.append(connection)
            return connection

        def on_pass(_report) -> None:
            self.passes += 1

        self.thread = threading.Thread(
            target=run_idle_loop,
            args=(harness.service, connect, poll, self.stop),
            kwargs={"on_pass": on_pass},
            daemon=True,
        )

    def __enter__(self) -> _Loop:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the loop did not stop within 15 s of the stop event"

    def taken(self) -> int:
        return self.harness.count(Submission)


def test_idle_takes_mail_as_it_arrives_and_stops_cleanly(imap_server, tmp_path):
    imap_server.append(make_mail(1))
    harness = IntakeHarness(tmp_path, imap_server)
    with _Loop(harness) as loop:
        wait_until(lambda: loop.taken() == 1, what="the mail waiting at start")
        wait_until(loop.idling.is_set, what="the connection to enter IDLE")
        imap_server.append(make_mail(2))
        wait_until(lambda: loop.taken() == 2, what="the mail pushed during IDLE")
        assert len(loop.connections) == 1  # one connection, kept open in IDLE
    assert loop.connections[0]._client is None  # logged out on stop


def test_connection_cut_during_idle_reconnects_and_takes_new_mail(imap_server, tmp_path):
    harness = IntakeHarness(tmp_path, imap_server)
    with _Loop(harness) as loop:
        wait_until(loop.idling.is_set, what="the connection to enter IDLE")
        imap_server.kill()  # the server dies under the IDLE connection
        imap_server.start()
        imap_server.append(make_mail(3))
        wait_until(lambda: loop.taken() == 1, timeout=20, what="the mail appended after the restart")
        assert len(loop.connections) >= 2


def test_socket_closed_under_idle_is_noticed_and_replaced(imap_server, tmp_path):
    harness = IntakeHarness(tmp_path, imap_server)
    with _Loop(harness) as loop:
        wait_until(loop.idling.is_set, what="the connection to enter IDLE")
        loop.connections[0].client.socket().shutdown(socket.SHUT_RDWR)
        wait_until(lambda: len(loop.connections) >= 2 and loop.passes >= 2, what="a new connection")
        wait_until(loop.idling.is_set, what="the new connection to enter IDLE")
        imap_server.append(make_mail(4))
        wait_until(lambda: loop.taken() == 1, what="the mail after reconnecting")


class _NoIdleConnection(MailboxConnection):
    @property
    def supports_idle(self) -> bool:
        return False


def test_interval_polling_when_the_server_has_no_idle(pymap_server, tmp_path):
    harness = IntakeHarness(tmp_path, pymap_server)
    with _Loop(harness, connection_class=_NoIdleConnection) as loop:
        wait_until(lambda: loop.passes >= 1, what="the first pass")
        pymap_server.append(make_mail(5))
        wait_until(lambda: loop.taken() == 1, what="the mail found by the interval poll")
        assert len(loop.connections) == 1


def test_the_loop_keeps_trying_while_the_server_is_down(pymap_server, tmp_path):
    pymap_server.kill()
    harness = IntakeHarness(tmp_path, pymap_server)
    with _Loop(harness) as loop:
        wait_until(lambda: len(loop.connections) >= 2, what="two failed connection attempts")
        assert loop.passes == 0
        pymap_server.start()
        pymap_server.append(make_mail(6))
        wait_until(lambda: loop.taken() == 1, timeout=20, what="the mail once the server is back")


def test_idle_wait_returns_at_the_renewal_time_with_the_connection_still_usable(imap_server):
    stop = threading.Event()
    with MailboxConnection(imap_server.mailbox_settings(), password=imap_server.password, timeout=10) as conn:
        conn.select()
        assert conn.idle_wait(0.3, stop) is False  # time to renew, nothing arrived
        conn.noop()  # IDLE was ended properly: the next command works
        # Mail arriving between two IDLEs is announced outside IDLE: the loop looks for it first.
        imap_server.append(make_mail(7))
        assert conn.new_mail_announced() is True
        assert conn.new_mail_announced() is False  # told once

        idling, results = threading.Event(), []
        start_idle = conn.client.idle

        def idle_and_tell():
            start_idle()
            idling.set()

        conn.client.idle = idle_and_tell
        waiter = threading.Thread(target=lambda: results.append(conn.idle_wait(10, stop)))
        waiter.start()
        assert idling.wait(10)
        imap_server.append(make_mail(8))  # pushed while the connection is in IDLE
        waiter.join(15)
        assert results == [True]
        stop.set()
        assert conn.idle_wait(10, stop) is False  # a set stop event returns at once


def test_idle_wait_raises_when_the_server_goes_away(pymap_server):
    stop = threading.Event()
    with MailboxConnection(pymap_server.mailbox_settings(), password=pymap_server.password, timeout=10) as conn:
        conn.select()
        pymap_server.kill()
        with pytest.raises(ConnectionLost):
            conn.idle_wait(10, stop)


def test_keydesk_run_serves_embedded_mail_and_takes_what_is_mailed_to_the_desk(tmp_path, monkeypatch):
    """`keydesk run` on the default config: embedded IMAP + SMTP, IDLE intake, clean stop."""
    import smtplib

    from keydesk import daemon
    from keydesk.embedded_imap import port_closed
    from keydesk.runtime import Runtime
    from tests.support.servers import deployment_for, free_port

    imap_port, smtp_port = free_port(), free_port()
    config = deployment_for(tmp_path, imap_port=imap_port, smtp_port=smtp_port, embedded=True)
    use_stand_in_pipeline(monkeypatch)
    runtime = Runtime(config)
    stop, ready, failures = threading.Event(), threading.Event(), []

    def serve():
        try:
            daemon.serve(runtime, stop, ready=ready.set)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failures.append(exc)
            ready.set()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        assert ready.wait(30) and not failures, failures
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.sendmail("contractor@kensetsu.example", ["keiyaku@town.misato.example"], make_mail(20))
        wait_until(lambda: _count(runtime, Submission) == 1, timeout=20, what="the mailed notice to be taken")
        # The reply goes out at once: well before the outbox's 15 s round, the intake wakes it.
        assert runtime.settings.outbox.deliver_interval_seconds >= 15
        wait_until(lambda: _sent_replies(runtime) == 1, timeout=8, what="the reply to be delivered")
        outgoing = runtime.settings.embedded.mail_directory / "outgoing"
        assert [p.name.split("-")[0] for p in outgoing.glob("*.eml")] == ["contractor@kensetsu.example"]
    finally:
        stop.set()
        server.join(30)
    assert not server.is_alive() and not failures
    assert port_closed("127.0.0.1", imap_port) and port_closed("127.0.0.1", smtp_port)


def _sent_replies(runtime) -> int:
    from sqlmodel import Session, select

    from store.tables import OutboxMessage

    with Session(runtime.engine) as session:
        return len(session.exec(select(OutboxMessage).where(OutboxMessage.state == "sent")).all())


def _count(runtime, table) -> int:
    from sqlmodel import Session, func, select

    with Session(runtime.engine) as session:
        return session.exec(select(func.count()).select_from(table)).one()


def test_a_backlog_over_one_window_is_taken_without_waiting_for_new_mail(imap_server, tmp_path):
    # Three windows of 3 mails: the loop goes on to the next window at once instead of idling
    # (which, with nothing new arriving, would leave 6 mails waiting for half an hour).
    imap_server.append_many([make_mail(n) for n in range(9)])
    windowed = PollSettings.model_construct(**{**FAST.model_dump(), "mails_per_pass": 3, "idle_renew_seconds": 600})
    harness = IntakeHarness(tmp_path, imap_server, poll=windowed)
    with _Loop(harness, poll=windowed) as loop:
        wait_until(lambda: loop.taken() == 9, what="all three windows of the backlog")
        wait_until(loop.idling.is_set, what="the connection to enter IDLE once the backlog is done")
        assert loop.passes == 3
    assert imap_server.uids("INBOX") == []
