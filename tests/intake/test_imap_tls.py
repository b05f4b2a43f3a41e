"""IMAP over TLS and STARTTLS against real servers whose certificate comes from a private CA.

pymap offers STARTTLS only; Dovecot (when installed; CI installs it) offers both STARTTLS and
implicit TLS ("port 993" style). The desk trusts the server through ``ca_file``; a certificate
from any other CA is refused before a password leaves the machine.
"""

from __future__ import annotations

import functools
import re
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest

from intake.poller import MailboxConnection
from store.tables import Submission
from store.tls import client_ssl_context
from tests.support.cli import run_keydesk
from tests.support.servers import IntakeHarness, deployment_for, free_port, make_mail, wait_until
from tests.support.tls_certs import private_ca

ACCEPTED = "keydesk/受付済"


def _settings(server, security: str, ca_file: Path | None):
    port = server.imaps_port if security == "tls" else server.port
    return server.mailbox_settings(security=security, port=port, ca_file=ca_file)


def _harness(tmp_path: Path, server, security: str) -> IntakeHarness:
    """The intake against ``server`` over ``security``, trusting the test CA through ca_file."""
    mailbox = _settings(server, security, server.tls.ca_file)
    connection = functools.partial(MailboxConnection, ssl_context=client_ssl_context(mailbox.ca_file))
    return IntakeHarness(tmp_path, server, mailbox=mailbox, connection_class=connection)


def _takes_one_mail_end_to_end(tmp_path: Path, server, security: str) -> None:
    harness = _harness(tmp_path, server, security)
    server.append(make_mail(1))

    report = harness.poll_once()

    assert (report.recorded, report.failures) == (1, 0)
    assert harness.count(Submission) == 1
    assert server.uids("INBOX") == [] and server.folder_count(ACCEPTED) == 1
    assert harness.poll_once().recorded == 0
    with harness.connection() as conn:  # the same connection really is encrypted, not plain
        sock = conn.client.socket()
        assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")


def test_starttls_takes_a_mail_end_to_end(tls_imap_server, tmp_path):
    _takes_one_mail_end_to_end(tmp_path, tls_imap_server, "starttls")


def test_implicit_tls_takes_a_mail_end_to_end(dovecot_tls_server, tmp_path):
    """Only Dovecot: pymap has no implicit-TLS listener (its fixture skips without Dovecot)."""
    _takes_one_mail_end_to_end(tmp_path, dovecot_tls_server, "tls")


def _securities(server) -> list[str]:
    return ["starttls", "tls"] if server.imaps_port else ["starttls"]


def _assert_no_login_reached(server, handshakes: int) -> None:
    """The server saw ``handshakes`` failed TLS handshakes and not one login attempt."""
    if server.kind == "dovecot":
        failed = lambda: server.log_text().count("alert unknown ca") >= handshakes  # noqa: E731
        wait_until(failed, what="Dovecot to log the refused handshakes")
        log = server.log_text()
        assert "Login:" not in log and log.count("no auth attempts") >= handshakes
    else:
        failed = lambda: server.log_text().count("<TLS failure") >= handshakes  # noqa: E731
        wait_until(failed, what="pymap to log the refused handshakes")
        log = server.log_text()
        assert " LOGIN " not in log and " AUTHENTICATE " not in log
    assert server.password not in log


def test_a_certificate_from_an_untrusted_ca_is_refused_before_login(tls_imap_server, tmp_path):
    (tmp_path / "other").mkdir()
    other_ca = private_ca(tmp_path / "other", prefix="other")
    attempts = 0
    for security in _securities(tls_imap_server):
        # Trusting another private CA, and trusting only the system's CAs: both must refuse.
        for ca_file in (other_ca.ca_file, None):
            mailbox = _settings(tls_imap_server, security, ca_file)
            connection = MailboxConnection(
                mailbox, password=tls_imap_server.password, timeout=10, ssl_context=client_ssl_context(ca_file)
            )
            with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
                connection.open()
            attempts += 1
    _assert_no_login_reached(tls_imap_server, attempts)


# -- through `keydesk poll --once`, as an admin runs it ----------------------------------------------


def _configure(config: Path, security: str, port: int, ca_file_line: str | None) -> None:
    """Point [desks.misato.mailbox] of a deployment_for() config at a TLS port; uncomment ca_file."""
    path = config / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index("[desks.misato.mailbox]\n")
    head, section = text[:start], text[start:]
    section = re.sub(r"(?m)^port = \d+$", f"port = {port}", section, count=1)
    section = re.sub(r'(?m)^security = "plain"', f'security = "{security}"', section, count=1)
    if ca_file_line is not None:
        section = re.sub(r"(?m)^# ca_file = .*$", ca_file_line.replace("\\", "\\\\"), section, count=1)
    assert f"port = {port}\n" in section and f'security = "{security}"' in section
    assert ca_file_line is None or ca_file_line in section
    path.write_text(head + section, encoding="utf-8")


def _tls_deployment(tmp_path: Path, server, ca_file_line: str | None) -> Path:
    security = "tls" if server.imaps_port else "starttls"
    config = deployment_for(tmp_path, server)
    _configure(config, security, server.imaps_port or server.port, ca_file_line)
    return config


def test_keydesk_poll_trusts_the_private_ca_named_by_ca_file(tls_imap_server, tmp_path):
    """A relative ca_file resolves against the deployment home, like every path in the config."""
    (tmp_path / "config" / "tls").mkdir(parents=True)
    (tmp_path / "config" / "tls" / "town-ca.pem").write_text(tls_imap_server.tls.pem)
    config = _tls_deployment(tmp_path, tls_imap_server, 'ca_file = "config/tls/town-ca.pem"')
    tls_imap_server.append(make_mail(2))

    result = run_keydesk("poll", "--once", "--json", config=config)

    assert result.returncode == 0, result.stderr
    assert result.stdout.count('"uid"') == 1
    assert tls_imap_server.uids("INBOX") == []


def test_keydesk_poll_without_the_ca_file_refuses_the_server_in_one_line(tls_imap_server, tmp_path):
    """No mail is put in first: the server's log must show no login at all, not even a seeding one."""
    config = _tls_deployment(tmp_path, tls_imap_server, None)

    result = run_keydesk("poll", "--once", config=config)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "certificate verify failed" in result.stderr
    assert "desks.misato.mailbox.ca_file" in result.stderr  # the message says how to fix it
    _assert_no_login_reached(tls_imap_server, 1)


@pytest.mark.parametrize("problem", ["missing", "not_pem", "folder"])
def test_an_unusable_ca_file_is_a_one_line_config_error(tmp_path, problem):
    """Reported before connecting: no server is needed to see it."""
    nowhere = SimpleNamespace(user="keiyaku@town.test.example", password="unused", port=free_port())
    ca_file = tmp_path / "config" / "town-ca.pem"
    if problem == "not_pem":
        ca_file.parent.mkdir(parents=True, exist_ok=True)
        ca_file.write_text("this is not a certificate\n")
    elif problem == "folder":
        ca_file.mkdir(parents=True)
    config = deployment_for(tmp_path, nowhere)
    _configure(config, "tls", nowhere.port, f'ca_file = "{ca_file}"')

    result = run_keydesk("poll", "--once", config=config)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"desks.misato.mailbox.ca_file: {ca_file}")
