"""SMTP connections for the outbox: implicit TLS, STARTTLS or plain (loopback only), AUTH, reuse.

``SmtpSession.send`` runs one transaction by hand (MAIL, RCPT per recipient, DATA) instead of
``smtplib.sendmail`` because the outbox needs two things sendmail hides: each recipient's own
answer, and a moment before the final dot is written at which the caller checks the message is
still its own, or records that the server may from now on hold it (see ``mailer/delivery.py``).
That moment comes after the whole body is written when the caller records something
(``write_body_first``), so that the record covers only the final dot; otherwise before the body,
and the body and the final dot go out in one write (one segment fewer per message for the server).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from collections.abc import Callable

from foundation.net import is_loopback
from mailer.settings import SmtpSettings
from foundation.errors import OperationalError
from store.token_command import TokenCommandError, run_token_command

log = logging.getLogger(__name__)


class SmtpConnectError(OperationalError):
    """The server could not be reached, refused TLS or refused our credentials."""


class ClaimLost(OperationalError):
    """The caller no longer owns the message; the transaction was abandoned before the final dot."""


@dataclass(frozen=True)
class SendResult:
    """What the server said. ``recipients`` maps each recipient to its RCPT answer code.

    ``data_code`` is the answer to the final dot (None when DATA never ran: no recipient was
    accepted, or MAIL/DATA itself was refused with ``mail_code``). ``unconfirmed`` means the final
    dot was written and the connection ended before an answer came.
    """

    recipients: dict[str, tuple[int, str]] = field(default_factory=dict)
    mail_code: tuple[int, str] | None = None
    data_code: tuple[int, str] | None = None
    unconfirmed: bool = False


class SmtpConnector:
    """Opens authenticated connections as ``SmtpSettings`` says."""

    def __init__(
        self,
        settings: SmtpSettings,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        token: Callable[[], str] | None = None,
    ) -> None:
        """``token`` gives a fresh XOAUTH2 access token (default: run ``settings.token_command``)."""
        if settings.security == "plain" and not is_loopback(settings.host):
            raise SmtpConnectError(
                f'smtp.security = "plain" is allowed only to a loopback address, not {settings.host}: use tls or starttls'
            )
        if settings.auth == "password" and settings.username and not password:
            raise SmtpConnectError("smtp.username is set but no password was given")
        self.settings = settings
        self._password = password
        self._token = token or (lambda: run_token_command(list(settings.token_command or [])))
        self._context = ssl_context or ssl.create_default_context()
        self._local_hostname = local_hostname
        self.connections_opened = 0

    def describe(self) -> str:
        return f"{self.settings.host}:{self.settings.port} ({self.settings.security})"

    def open(self) -> smtplib.SMTP:
        s = self.settings
        try:
            if s.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    timeout=s.timeout_seconds,
                    context=self._context,
                    local_hostname=self._local_hostname,
                )
            else:
                client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds, local_hostname=self._local_hostname)
            # Commands, and the final dot after an at-most-once commit, are small writes of their own;
            # without NODELAY, Nagle's algorithm and the server's delayed ACK hold them back ~40 ms.
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.ehlo()
            if s.security == "starttls":
                if not client.has_extn("starttls"):
                    client.close()
                    raise SmtpConnectError(f"{self.describe()} does not offer STARTTLS; refusing to send in the clear")
                client.starttls(context=self._context)
                client.ehlo()
            if s.auth == "xoauth2":
                self._xoauth2(client)
            elif s.username:
                client.login(s.username, self._password or "")
        except SmtpConnectError:
            raise
        except TokenCommandError as exc:
            raise SmtpConnectError(f"{self.describe()}: {exc}") from None
        except smtplib.SMTPAuthenticationError as exc:
            raise SmtpConnectError(
                f"{self.describe()} refused the login for {s.username}: {_text(exc.smtp_error)}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise SmtpConnectError(f"{self.describe()}: {exc}") from None
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise SmtpConnectError(f"cannot connect to {self.describe()}: {type(exc).__name__}: {exc}") from None
        self.connections_opened += 1
        log.debug("smtp connected to %s", self.describe())
        return client

    def _xoauth2(self, client: smtplib.SMTP) -> None:
        """SASL XOAUTH2 (as Microsoft 365 and Gmail take it): the token goes in the initial response.

        A refusing server first answers 334 with a JSON error; the empty line we send back ends
        the exchange with its 535, which smtplib raises as SMTPAuthenticationError.
        """
        if "xoauth2" not in client.esmtp_features.get("auth", "").lower().split():
            raise SmtpConnectError(f"{self.describe()} does not offer AUTH XOAUTH2")
        initial = f"user={self.settings.username}\x01auth=Bearer {self._token()}\x01\x01"
        client.auth("XOAUTH2", lambda challenge=None: initial if challenge is None else "", initial_response_ok=True)


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:300]


def prepare_data(raw: bytes) -> bytes:
    """CRLF line ends, dot-stuffed (RFC 5321 §4.5.2), ending in CRLF; without the final dot."""
    # bytes.replace rather than regular expressions: this runs for every message and is ten times faster.
    data = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    return data if data.endswith(b"\r\n") else data + b"\r\n"


class SmtpSession:
    """One connection reused for many messages; reopened when the server has dropped it."""

    def __init__(self, connector: SmtpConnector) -> None:
        self.connector = connector
        self._client: smtplib.SMTP | None = None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def send(
        self,
        envelope_from: str,
        recipients: list[str],
        raw: bytes,
        before_final_dot: Callable[[dict[str, tuple[int, str]]], bool] = lambda answers: True,
        *,
        write_body_first: bool = True,
    ) -> SendResult:
        """One transaction. Raises SmtpConnectError when no connection can be had.

        ``before_final_dot`` gets the RCPT answers and runs before the final dot: after the body is written when
        ``write_body_first``, else before it (the body and the dot then go out in one write). Returning False
        abandons the transaction by dropping the connection, so the server discards the message (ClaimLost).
        """
        for attempt in (1, 2):
            if self._client is None:
                self._client = self.connector.open()
            try:
                return self._transaction(
                    self._client, envelope_from, recipients, raw, before_final_dot, write_body_first
                )
            except _DroppedBeforeData:
                # A reused connection the server closed while idle: nothing was handed over yet.
                self._drop()
                if attempt == 2:
                    raise SmtpConnectError(
                        f"{self.connector.describe()} closed the connection before the message"
                    ) from None
        raise AssertionError("unreachable")

    def _transaction(self, client, envelope_from, recipients, raw, before_final_dot, write_body_first) -> SendResult:
        try:
            options = " BODY=8BITMIME" if not raw.isascii() and client.has_extn("8bitmime") else ""
            code, reply = _command(client, "MAIL", f"FROM:<{envelope_from}>{options}")
        except (smtplib.SMTPServerDisconnected, OSError):
            raise _DroppedBeforeData() from None
        if code != 250:
            self._after_refusal(code)
            return SendResult(mail_code=(code, _text(reply)))
        answers: dict[str, tuple[int, str]] = {}
        try:
            for recipient in recipients:
                code, reply = _command(client, "RCPT", f"TO:<{recipient}>")
                answers[recipient] = (code, _text(reply))
                if code == 421:  # the server is closing: nothing more happens on this connection
                    self._drop()
                    return SendResult(recipients=answers, mail_code=(code, _text(reply)))
            accepted = [r for r, (c, _) in answers.items() if c in (250, 251)]
            if not accepted:
                self._after_refusal(max((c for c, _ in answers.values()), default=0), reset=True)
                return SendResult(recipients=answers)
            code, reply = client.docmd("DATA")
            if code != 354:
                self._after_refusal(code, reset=True)
                return SendResult(recipients=answers, data_code=(code, _text(reply)))
            data = prepare_data(raw)
            if write_body_first:
                client.send(data)
                data = b""
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            # Before the final dot a dropped connection means the server holds nothing.
            self._drop()
            return SendResult(recipients=answers, mail_code=(421, f"connection lost before the end of DATA: {exc}"))
        if not before_final_dot(answers):
            self._drop()
            raise ClaimLost()
        try:
            # From here on the final dot may have reached the server: a failure is an unknown outcome.
            client.send(data + b".\r\n")
            code, reply = client.getreply()
        except (smtplib.SMTPServerDisconnected, OSError):
            self._drop()
            return SendResult(recipients=answers, unconfirmed=True)
        if code == 421:
            self._drop()
        return SendResult(recipients=answers, data_code=(code, _text(reply)))

    def _after_refusal(self, code: int, reset: bool = False) -> None:
        if code == 421:  # the server is closing this connection
            self._drop()
            return
        if reset and self._client is not None:
            try:
                self._client.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()


class _DroppedBeforeData(OperationalError):
    pass


def _command(client: smtplib.SMTP, verb: str, argument: str) -> tuple[int, bytes]:
    """MAIL or RCPT with an address the outbox stored bare: smtplib's own ``mail``/``rcpt`` parse it again
    (email.utils.parseaddr) for every message. ``putcmd`` still refuses a CR or LF in it."""
    client.putcmd(verb, argument)
    return client.getreply()
