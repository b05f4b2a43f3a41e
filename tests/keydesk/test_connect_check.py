"""`keydesk config check --connect` against real servers: pymap and Dovecot IMAP, aiosmtpd SMTP.

Each mismatch an admin meets on the first day gets a fast, specific line instead of a timeout or
an OpenSSL code; a healthy setup gets an OK line per server and exit 0.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.support.cli import invoke, run_keydesk
from tests.support.deployment import edit_section, use_smtp
from tests.support.smtp_servers import Recorder, password_authenticator, running
from tests.support.servers import deployment_for, free_port, use_stand_in_pipeline
from tests.support.tls_certs import private_ca

PASSWORD_ENV = "KEYDESK_TEST_SMTP_PASSWORD"


def _mailbox(config: Path, port: int, security: str, **extra) -> None:
    edit_section(config, "[desks.misato.mailbox]", port=str(port), security=f'"{security}"', **extra)


def _check(config: Path):
    started = time.monotonic()
    result = invoke(config, "config", "check", "--connect")
    return result, time.monotonic() - started


def _line(output: str, name: str) -> str:
    [line] = [line for line in output.splitlines() if re.match(rf"^(OK|NG)  {re.escape(name)}  ", line)]
    return line


def test_a_healthy_setup_gets_one_ok_line_per_server(pymap_server, tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    handler = Recorder()
    auth = password_authenticator({"keydesk": "s3cret"}, handler)
    config = deployment_for(tmp_path, pymap_server)
    with running(handler, authenticator=auth, auth_require_tls=False) as port:
        use_smtp(config, port, username='"keydesk"', password_env=f'"{PASSWORD_ENV}"')
        result, seconds = _check(config)
    assert result.exit_code == 0, result.output
    assert _line(result.output, "smtp").startswith("OK") and "logged in as keydesk" in result.output
    mailbox = _line(result.output, "desks.misato.mailbox")
    assert mailbox.startswith("OK") and "INBOX selected" in mailbox
    assert "folders appear as 'keydesk/受付済'" in mailbox  # pymap's hierarchy delimiter is "/"
    assert handler.logins == ["keydesk"]
    assert seconds < 10


def test_starttls_against_an_implicit_tls_imap_port_is_named(dovecot_tls_server, tmp_path):
    config = deployment_for(tmp_path, dovecot_tls_server)
    _mailbox(config, dovecot_tls_server.imaps_port, "starttls", ca_file=f'"{dovecot_tls_server.tls.ca_file}"')
    result, seconds = _check(config)
    assert result.exit_code == 1
    line = _line(result.output, "desks.misato.mailbox")
    assert line.startswith("NG")
    assert f'port {dovecot_tls_server.imaps_port} speaks implicit TLS: set security = "tls"' in line
    assert seconds < 10  # not the minute-long hang of a STARTTLS waiting for a greeting


def test_implicit_tls_against_a_plain_imap_port_is_named(pymap_server, tmp_path):
    config = deployment_for(tmp_path, pymap_server)
    _mailbox(config, pymap_server.port, "tls")
    result, seconds = _check(config)
    assert result.exit_code == 1
    line = _line(result.output, "desks.misato.mailbox")
    assert f"port {pymap_server.port} speaks plain IMAP" in line and 'set security = "starttls' in line
    assert "WRONG_VERSION_NUMBER" not in line and seconds < 10


def test_smtp_port_mismatches_are_named_both_ways(pymap_server, tmp_path):
    (tmp_path / "tls").mkdir()
    tls = private_ca(tmp_path / "tls", prefix="smtp")
    config = deployment_for(tmp_path, pymap_server)
    with running(Recorder(), ssl_context=tls.server_context()) as implicit_port:
        use_smtp(config, implicit_port, "starttls", ca_file=f'"{tls.ca_file}"')
        result, seconds = _check(config)
    assert f'port {implicit_port} speaks implicit TLS: set security = "tls"' in _line(result.output, "smtp")
    assert result.exit_code == 1 and seconds < 10
    with running(Recorder()) as plain_port:
        use_smtp(config, plain_port, "tls")
        result, _ = _check(config)
    assert f"port {plain_port} speaks plain SMTP" in _line(result.output, "smtp")
    assert _line(result.output, "desks.misato.mailbox").startswith("OK")


def test_a_wrong_ca_file_is_told_apart_from_a_missing_one(tls_imap_server, tmp_path):
    (tmp_path / "other").mkdir()
    other = private_ca(tmp_path / "other", prefix="other")
    config = deployment_for(tmp_path, tls_imap_server)
    _mailbox(config, tls_imap_server.port, "starttls")
    missing, _ = _check(config)
    line = _line(missing.output, "desks.misato.mailbox")
    assert "a CA this machine does not trust" in line and "set desks.misato.mailbox.ca_file" in line

    _mailbox(config, tls_imap_server.port, "starttls", ca_file=f'"{other.ca_file}"')
    wrong, _ = _check(config)
    line = _line(wrong.output, "desks.misato.mailbox")
    assert f"not signed by the CA in desks.misato.mailbox.ca_file ({other.ca_file})" in line

    _mailbox(config, tls_imap_server.port, "starttls", ca_file=f'"{tls_imap_server.tls.ca_file}"')
    right, _ = _check(config)
    assert _line(right.output, "desks.misato.mailbox").startswith("OK")


def test_a_refused_login_and_a_closed_port_are_one_line_each(pymap_server, tmp_path):
    config = deployment_for(tmp_path, pymap_server)
    (tmp_path / "var" / "secrets" / "desk-mailbox.password").write_text("wrong\n")
    use_smtp(config, free_port())
    result, _ = _check(config)
    assert result.exit_code == 1
    assert "refused the login" in _line(result.output, "desks.misato.mailbox")
    assert "connection refused" in _line(result.output, "smtp")


def test_plain_smtp_to_a_remote_host_is_refused_by_config_check(deployment):
    edit_section(deployment, "[smtp]", host='"smtp.town.example"', security='"plain"')
    result = run_keydesk("config", "check", config=deployment)
    assert result.returncode == 2
    assert 'smtp: security = "plain"' in result.stderr or "smtp" in result.stderr
    assert "allowed only to loopback" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("host", ["::1", "localhost", "127.0.0.2"])
def test_plain_is_allowed_to_every_loopback_name_the_readme_lists(deployment, host):
    edit_section(deployment, "[smtp]", host=f'"{host}"', security='"plain"')
    edit_section(deployment, "[desks.misato.mailbox]", host=f'"{host}"', security='"plain"')
    assert invoke(deployment, "config", "check").exit_code == 0


@pytest.fixture
def dovecot_dot_server():
    """Dovecot whose hierarchy delimiter is "." (as many servers' default namespaces are)."""
    from tests.support.servers import DOVECOT, DovecotServer

    if DOVECOT is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd); CI runs these tests")
    server = DovecotServer(free_port())
    config = server.root / "dovecot.conf"
    config.write_text(config.read_text().replace("separator = /", "separator = ."))
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def test_folders_use_the_servers_delimiter_as_the_readme_says(dovecot_dot_server, tmp_path, monkeypatch):
    from tests.support.servers import make_mail

    use_stand_in_pipeline(monkeypatch)
    config = deployment_for(tmp_path, dovecot_dot_server)
    result, _ = _check(config)
    assert "folders appear as 'keydesk.受付済'" in _line(result.output, "desks.misato.mailbox")
    dovecot_dot_server.append(make_mail(1))
    assert invoke(config, "poll", "--once", "--no-send").exit_code == 0
    assert dovecot_dot_server.folder_count("keydesk.受付済") == 1 and dovecot_dot_server.uids("INBOX") == []


def test_a_server_that_greets_and_then_stalls_cannot_hold_the_check_past_its_deadline(pymap_server, tmp_path):
    """A greeting, then silence: each step has a timeout, and the whole check a deadline."""
    import socket
    import threading

    from keydesk.connection_check import check_all
    from keydesk.settings import load_settings

    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def greet_and_stall():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            connection.sendall(b"* OK stalling IMAP server ready\r\n")

    threading.Thread(target=greet_and_stall, daemon=True).start()
    try:
        config = deployment_for(tmp_path, pymap_server)
        _mailbox(config, listener.getsockname()[1], "plain")
        started = time.monotonic()
        results = check_all(load_settings(config), deadline=2)
        elapsed = time.monotonic() - started
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    [mailbox] = [r for r in results if r.name == "desks.misato.mailbox"]
    assert not mailbox.ok and mailbox.message == "no complete answer within 2 s"
    assert elapsed < 5


def test_outbox_send_tells_a_wrong_smtp_ca_file_from_a_missing_one(deployment, tmp_path):
    from email.message import EmailMessage

    from sqlalchemy import text
    from sqlmodel import Session

    from keydesk.runtime import Runtime
    from mailer.outbox import enqueue, new_message_id

    (tmp_path / "tls").mkdir()
    tls, other = private_ca(tmp_path / "tls", prefix="smtp"), private_ca(tmp_path / "tls", prefix="other")
    assert invoke(deployment, "db", "upgrade").exit_code == 0
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "keiyaku@town.misato.example", "a@b.example", "x"
    message["Message-ID"] = new_message_id("keiyaku@town.misato.example")
    message.set_content("x")
    with Session(Runtime(deployment).engine) as session:
        enqueue(
            session,
            desk="misato",
            idempotency_key="test:1",
            kind="reply",
            message=message,
            envelope_from="keiyaku@town.misato.example",
            recipients=["a@b.example"],
        )
        session.commit()
    with running(Recorder(), tls_context=tls.server_context(), require_starttls=True) as port:
        use_smtp(deployment, port, "starttls")
        missing = invoke(deployment, "outbox", "send")
        use_smtp(deployment, port, "starttls", ca_file=f'"{other.ca_file}"')
        with Runtime(deployment).engine.begin() as connection:  # due again at once, not after the backoff
            connection.execute(text("UPDATE outbox_message SET next_attempt_at = '2000-01-01 00:00:00'"))
        wrong = invoke(deployment, "outbox", "send")
    assert missing.refused_with("smtp.ca_file にその CA 証明書 (PEM) を指定してください")
    assert wrong.refused_with(f"smtp.ca_file {other.ca_file} に、このサーバーの証明書を発行した CA が入っていません")
