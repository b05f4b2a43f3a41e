"""smtp.ca_file: the SMTP server's private CA is trusted through the configuration.

The deployment comes from `keydesk init`, its [smtp] section edited as an admin would (the
commented ca_file example uncommented), and the connector is the one every command uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keydesk.composition import connector_for
from keydesk.settings import load_settings
from mailer.smtp_client import SmtpConnectError, SmtpSession
from foundation.config import ConfigError
from tests.support.cli import invoke, run_keydesk
from tests.support.smtp_servers import Recorder, password_authenticator, running
from tests.support.tls_certs import private_ca

PASSWORD_ENV = "KEYDESK_TEST_SMTP_PASSWORD"
MAIL = b"From: keiyaku@town.misato.example\r\nTo: info@builder.example\r\nSubject: test\r\n\r\nhello\r\n"


def _smtp_section(config: Path, port: int, ca_file_line: str | None) -> None:
    """[smtp] → STARTTLS on ``port`` with a login; the ca_file example replaced by ``ca_file_line``."""
    path = config / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index("[smtp]\n")
    end = text.index("\n[", start + 1)
    section = text[start:end]
    section = re.sub(r"(?m)^port = \d+$", f"port = {port}", section, count=1)
    section = re.sub(r'(?m)^security = "plain"', 'security = "starttls"', section, count=1)
    section = section.replace('# username = "keydesk@town.misato.example"', 'username = "keydesk"')
    section = section.replace('# password_env = "KEYDESK_SMTP_PASSWORD"', f'password_env = "{PASSWORD_ENV}"')
    if ca_file_line is not None:
        section = re.sub(r"(?m)^# ca_file = .*$", ca_file_line, section, count=1)
    assert 'security = "starttls"' in section and 'username = "keydesk"' in section
    assert ca_file_line is None or ca_file_line in section
    path.write_text(text[:start] + section + text[end:], encoding="utf-8")


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An SMTP server requiring STARTTLS and a login, its certificate from a private CA."""
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    (tmp_path / "tls").mkdir()
    tls = private_ca(tmp_path / "tls", prefix="smtp")
    handler = Recorder()
    auth = password_authenticator({"keydesk": "s3cret"}, handler)
    with running(handler, tls_context=tls.server_context(), require_starttls=True, authenticator=auth) as port:
        yield tls, handler, port


def test_the_private_ca_in_ca_file_makes_the_starttls_server_trusted(deployment, server):
    tls, handler, port = server
    # The example from the commented line in keydesk.toml, as written there (relative to the home).
    (deployment / "private-ca.pem").write_text(tls.pem)
    _smtp_section(deployment, port, 'ca_file = "config/private-ca.pem"')
    settings = load_settings(deployment)
    assert settings.smtp.ca_file == deployment.parent / "config" / "private-ca.pem"

    session = SmtpSession(connector_for(settings))
    try:
        result = session.send("keiyaku@town.misato.example", ["info@builder.example"], MAIL)
    finally:
        session.close()

    received = handler.wait_for_messages(1)
    assert result.recipients["info@builder.example"][0] == 250
    assert received[0].rcpt_tos == ("info@builder.example",) and b"hello" in received[0].content
    assert handler.logins == ["keydesk"]  # after STARTTLS: the server refuses a login before it


def test_without_ca_file_the_server_is_refused_before_the_login(deployment, server):
    _tls, handler, port = server
    _smtp_section(deployment, port, None)

    session = SmtpSession(connector_for(load_settings(deployment)))
    with pytest.raises(SmtpConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        session.send("keiyaku@town.misato.example", ["info@builder.example"], MAIL)

    assert handler.logins == [] and handler.messages == []


def test_a_ca_file_without_certificates_is_a_config_error_naming_the_key(deployment, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    (deployment / "private-ca.pem").write_text("-----BEGIN NOTHING-----\n")
    _smtp_section(deployment, 2525, 'ca_file = "config/private-ca.pem"')

    with pytest.raises(ConfigError, match=r"^smtp\.ca_file: .*private-ca\.pem holds no PEM certificate"):
        connector_for(load_settings(deployment))


def test_keydesk_outbox_send_reports_a_missing_ca_file_in_one_line(deployment, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    _smtp_section(deployment, 2525, 'ca_file = "config/no-such-ca.pem"')
    assert invoke(deployment, "db", "upgrade").exit_code == 0

    result = run_keydesk("outbox", "send", config=deployment)

    assert result.returncode == 2
    assert result.stderr.strip() == f"smtp.ca_file: {deployment / 'no-such-ca.pem'} does not exist"
