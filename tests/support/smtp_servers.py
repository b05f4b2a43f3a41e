"""Real aiosmtpd servers on free loopback ports for the mailer tests and the outbox benchmark.

Each handler records what it accepted (under a lock, with a condition to wait on) and counts the
connections it saw, so tests can assert "exactly one copy" and "one connection for the batch".
"""

from __future__ import annotations

import asyncio
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterator

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.support.tls_certs import TlsFiles, self_signed  # noqa: F401 (the mailer tests import them from here)


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


class Recorder:
    """Accepts everything; subclasses script other answers."""

    def __init__(self, keep_content: bool = True) -> None:
        self.keep_content = keep_content
        self.messages: list[Received] = []
        self.connections = 0
        self.logins: list[str] = []
        self._changed = threading.Condition()

    def connected(self) -> None:
        with self._changed:
            self.connections += 1
            self._changed.notify_all()

    def record(self, envelope) -> None:
        content = envelope.original_content or envelope.content or b""
        with self._changed:
            self.messages.append(
                Received(envelope.mail_from, tuple(envelope.rcpt_tos), content if self.keep_content else b"")
            )
            self._changed.notify_all()

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"expected {count} messages, the server has {len(self.messages)}")
            return list(self.messages)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.record(envelope)
        return "250 2.0.0 OK queued"


class Scripted(Recorder):
    """Answers the final dot with the scripted replies in turn (then 250); records only on 250."""

    def __init__(self, data_answers: list[str]) -> None:
        super().__init__()
        self.data_answers = list(data_answers)

    async def handle_DATA(self, server, session, envelope) -> str:
        with self._changed:
            answer = self.data_answers.pop(0) if self.data_answers else "250 2.0.0 OK queued"
        if answer.startswith("250"):
            self.record(envelope)
        return answer


class RefusingRecipients(Recorder):
    """Answers RCPT for the listed addresses with a scripted reply (a list is used in turn)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        super().__init__()
        self.answers = {k: list(v) for k, v in answers.items()}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        with self._changed:
            script = self.answers.get(address)
            answer = script.pop(0) if script else "250 2.1.5 OK"
        if answer.startswith("2"):  # 250, or 251 (not local, forwarded)
            envelope.rcpt_tos.append(address)
        return answer


class RefusingSender(Recorder):
    """Answers MAIL FROM with the scripted replies in turn (then 250): a server refusing the sender."""

    def __init__(self, mail_answers: list[str]) -> None:
        super().__init__()
        self.mail_answers = list(mail_answers)
        self.refused: list[str] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options) -> str:
        with self._changed:
            answer = self.mail_answers.pop(0) if self.mail_answers else "250 2.1.0 OK"
            if not answer.startswith("250"):
                self.refused.append(answer)
        if answer.startswith("250"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return answer


class DropAfterData(Recorder):
    """Takes the whole message, stores it, then drops the connection instead of answering."""

    async def handle_DATA(self, server, session, envelope) -> str:
        self.record(envelope)
        server.transport.abort()
        return "250 2.0.0 never seen by the client"


class CloseAfterEachMessage(Recorder):
    """Answers 250, then closes the connection (a server with a very short idle timeout)."""

    async def handle_DATA(self, server, session, envelope) -> str:
        self.record(envelope)
        asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 2.0.0 OK queued"


class _CountingSMTP(SMTP):
    def connection_made(self, transport) -> None:
        self.event_handler.connected()
        super().connection_made(transport)


class _Controller(Controller):
    def factory(self):
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(handler: Recorder, **kwargs) -> Iterator[int]:
    """Start ``handler`` on a free loopback port; yields the port; stops the server afterwards."""
    controller = _Controller(handler, hostname="127.0.0.1", port=free_port(), ready_timeout=10, **kwargs)
    controller.start()
    with handler._changed:
        handler.connections = 0  # start() made one connection of its own to see the server is up
    try:
        yield controller.port
    finally:
        controller.stop()


def password_authenticator(users: dict[str, str], handler: Recorder):
    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            if users.get(login) == auth_data.password.decode():
                handler.logins.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    return authenticate


class XOAuth2Recorder(Recorder):
    """Takes SASL XOAUTH2 as Microsoft 365 and Gmail do: the initial response must be
    ``user=<address>^Aauth=Bearer <token>^A^A`` for a known (user, token); a refusal first sends the
    JSON error as a 334 challenge, waits for the client's empty line, then answers 535."""

    def __init__(self, tokens: dict[str, str]) -> None:
        super().__init__()
        self.tokens = tokens
        self.exchanges: list[str] = []

    async def auth_XOAUTH2(self, server, args) -> AuthResult:
        import base64
        import json

        blob = args[1].encode() if len(args) > 1 else await server.challenge_auth("", encode_to_b64=False)
        try:
            decoded = base64.b64decode(blob, validate=True).decode()
        except ValueError:
            return AuthResult(success=False, handled=False, message="501 5.5.2 Cannot decode the response")
        fields = decoded.split("\x01")
        user = fields[0].removeprefix("user=") if fields and fields[0].startswith("user=") else None
        bearer = (
            fields[1].removeprefix("auth=Bearer ")
            if len(fields) == 4 and fields[1].startswith("auth=Bearer ")
            else None
        )
        well_formed = user is not None and bearer is not None and fields[2:] == ["", ""]
        self.exchanges.append("ok" if well_formed else "malformed")
        if well_formed and self.tokens.get(user) == bearer:
            self.logins.append(user)
            return AuthResult(success=True)
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})
        await server.challenge_auth(error)  # the client answers with an empty line
        return AuthResult(success=False, handled=False, message="535 5.7.8 Username and Password not accepted")
