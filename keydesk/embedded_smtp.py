"""The embedded SMTP server: accepts mail on loopback and delivers it to the embedded IMAP users.

Mail for a configured local user is appended to that user's INBOX over IMAP (so the IMAP server
stays the only writer of its mailboxes); mail for anyone else is kept in an ``outgoing`` folder
under the mail directory and logged, so a demo never sends anything off the machine.

It runs inside keydesk (aiosmtpd in a thread), so it cannot outlive the daemon. A port still held
for a moment at start is retried with backoff, then reported in one line.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from foundation.errors import OperationalError

log = logging.getLogger(__name__)


class EmbeddedSmtpError(OperationalError):
    """The embedded SMTP server could not be started (message fit for the person at the terminal)."""


# address (lower case) → a function that appends raw bytes to that user's INBOX
Deliver = Callable[[str, bytes], None]


@dataclass
class _Handler:
    local_users: dict[str, Deliver]
    outgoing_dir: Path
    max_bytes: int

    async def handle_RCPT(self, server, session: Session, envelope: Envelope, address: str, rcpt_options) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if len(content) > self.max_bytes:
            return "552 Message exceeds the embedded server's size limit"
        delivered = []
        for recipient in envelope.rcpt_tos:
            deliver = self.local_users.get(recipient.lower())
            try:
                if deliver is not None:
                    deliver(recipient.lower(), content)
                    delivered.append(recipient)
                else:
                    self._keep_outgoing(recipient, content)
            except Exception:  # a delivery failure is a temporary SMTP failure
                log.exception("embedded SMTP could not deliver to %s", recipient)
                return "451 Temporary local delivery failure"
        log.info(
            "embedded SMTP accepted mail from %s for %d recipient(s) (%d local)",
            envelope.mail_from,
            len(envelope.rcpt_tos),
            len(delivered),
        )
        return "250 Message accepted"

    def _keep_outgoing(self, recipient: str, content: bytes) -> None:
        self.outgoing_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(content).hexdigest()[:16]
        safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in recipient)[:120]
        (self.outgoing_dir / f"{safe}-{digest}.eml").write_bytes(content)
        log.info("embedded SMTP kept mail for non-local %s in %s", recipient, self.outgoing_dir)


def _bind_problem(host: str, port: int) -> str | None:
    """Why host:port cannot be listened on now (bound as asyncio's server binds), or None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


class EmbeddedSmtp:
    def __init__(
        self,
        host: str,
        port: int,
        local_users: dict[str, Deliver],
        mail_directory: Path,
        max_bytes: int = 30 * 1024 * 1024,
    ) -> None:
        handler = _Handler({a.lower(): d for a, d in local_users.items()}, mail_directory / "outgoing", max_bytes)
        self._controller = Controller(handler, hostname=host, port=port, data_size_limit=max_bytes)

    def start(self, port_wait_seconds: float = 10.0) -> None:
        host, port = self._controller.hostname, self._controller.port
        deadline = time.monotonic() + port_wait_seconds
        pause = 0.05
        while (problem := _bind_problem(host, port)) is not None:
            if time.monotonic() >= deadline:
                raise EmbeddedSmtpError(
                    f"port {host}:{port} is still in use after {port_wait_seconds:.0f} s "
                    f"({problem}); set embedded.smtp_port to a free port"
                )
            time.sleep(pause)  # an old process may still be letting go of the port
            pause = min(pause * 2, 1.0)
        self._controller.start()
        log.info("embedded SMTP listening on %s:%s", self._controller.hostname, self._controller.port)

    def stop(self) -> None:
        self._controller.stop()
        log.info("embedded SMTP stopped")

    def __enter__(self) -> EmbeddedSmtp:
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()
