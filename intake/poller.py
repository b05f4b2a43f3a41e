"""One connection to a desk's mailbox: connect, log in, and the few UID commands intake needs.

Only UID commands are used, and nothing a sender wrote is ever put into a command: the only
arguments are UIDs the server gave us and folder names from the configuration. How bodies are
downloaded (bounded FETCH commands, never setting \\Seen) is in intake/mail_download.py.
"""

from __future__ import annotations

import imaplib
import logging
import re
import select
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from foundation.errors import OperationalError
from foundation.net import is_loopback
from intake.mail_download import MailDownload
from intake.settings import MailboxSettings
from store.token_command import TOKEN_COMMAND_TIMEOUT, TokenCommandError, run_token_command

log = logging.getLogger(__name__)

# What a dropped connection, a timeout or a confused server raises: the caller reconnects.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, imaplib.IMAP4.error)


class MailboxError(OperationalError):
    """The mailbox cannot be used (login refused, token command failed, connection lost)."""


class ConnectionLost(MailboxError):
    pass


@dataclass(frozen=True)
class Selected:
    uidvalidity: int
    exists: int


def fetch_oauth_token(command: list[str], timeout: float = TOKEN_COMMAND_TIMEOUT) -> str:
    """Run the configured token command (store/token_command.py, shared with SMTP); a failure is a MailboxError."""
    try:
        return run_token_command(command, timeout)
    except TokenCommandError as exc:
        raise MailboxError(str(exc)) from None


class MailboxConnection(MailDownload):
    """A logged-in IMAP connection to one configured mailbox; use as a context manager."""

    def __init__(
        self,
        settings: MailboxSettings,
        *,
        password: str | None = None,
        timeout: float = 60,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self._password = password
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._client: IMAPClient | None = None
        self._delimiter: str | None = None
        self._known_folders: set[str] = set()

    @property
    def account(self) -> str:
        return self.settings.username

    @property
    def folder(self) -> str:
        return self.settings.folder

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            raise MailboxError("not connected")
        return self._client

    # -- connection ---------------------------------------------------------------------------

    def open(self) -> MailboxConnection:
        s = self.settings
        if s.security == "plain" and not is_loopback(s.host):
            raise MailboxError(f"refusing a clear-text IMAP connection to {s.host}: use tls or starttls")
        context = self._ssl_context or ssl.create_default_context()
        client = IMAPClient(
            s.host,
            s.port,
            ssl=s.security == "tls",
            ssl_context=context if s.security == "tls" else None,
            timeout=self._timeout,
        )
        try:
            if s.security == "starttls":
                client.starttls(context)
            self._login(client)
            client.capabilities()  # cached now: IDLE must not need a round trip later
        except BaseException:
            _shutdown_quietly(client)
            raise
        self._client = client
        return self

    def _login(self, client: IMAPClient) -> None:
        s = self.settings
        try:
            if s.auth == "xoauth2":
                client.oauth2_login(s.username, fetch_oauth_token(list(s.token_command or [])))
            else:
                if self._password is None:
                    raise MailboxError(f"no password for {s.username}")
                client.login(s.username, self._password)
        except (LoginError, imaplib.IMAP4.error) as exc:
            if isinstance(exc, imaplib.IMAP4.abort):
                raise
            # Never the server's text: some echo the credentials they refused.
            raise MailboxError(
                f"the IMAP server {s.host}:{s.port} refused the login of {s.username} ({s.auth})"
            ) from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except TRANSIENT_ERRORS:
            _shutdown_quietly(client)

    def __enter__(self) -> MailboxConnection:
        return self.open()

    def __exit__(self, *_exc) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------

    def select(self) -> Selected:
        info = self.client.select_folder(self.folder)
        return Selected(int(info[b"UIDVALIDITY"]), int(info.get(b"EXISTS", 0)))

    def search_uids(self) -> list[int]:
        # Announcements from before this SEARCH are covered by it; later ones are looked at by
        # new_mail_announced() before the next IDLE.
        _pop_announcements(self.client)
        return sorted(int(uid) for uid in self.client.search("ALL"))

    def new_mail_announced(self) -> bool:
        """True when the server announced mail (EXISTS) since the last SEARCH.

        A mail that arrives during a pass is announced at the end of some command of that pass,
        not again in the IDLE that follows, so the loop asks before idling. NOOP gives the
        server a chance to announce what it has not yet.
        """
        self.client.noop()
        return _pop_announcements(self.client)

    def sizes(self, uids: Iterable[int]) -> dict[int, int]:
        uids = list(uids)
        if not uids:
            return {}
        response = self.client.fetch(uids, ["RFC822.SIZE"])
        return {uid: int(data[b"RFC822.SIZE"]) for uid, data in response.items() if b"RFC822.SIZE" in data}

    # -- mailbox actions ----------------------------------------------------------------------

    def server_folder_name(self, configured: str) -> str:
        """The configured name ("keydesk/受付済") with the server's own hierarchy delimiter."""
        if self._delimiter is None:
            listing = self.client.list_folders(directory="", pattern="")
            delimiter = listing[0][1] if listing else b"/"
            self._delimiter = (delimiter.decode() if isinstance(delimiter, bytes) else delimiter) or "/"
        return configured.replace("/", self._delimiter)

    def ensure_folder(self, configured: str) -> str:
        name = self.server_folder_name(configured)
        if name not in self._known_folders:
            if not self.client.folder_exists(name):
                try:
                    self.client.create_folder(name)
                except imaplib.IMAP4.error:
                    # Another client may have created it between the two commands.
                    if not self.client.folder_exists(name):
                        raise
            self._known_folders.add(name)
        return name

    def move(self, uids: list[int], configured_folder: str) -> None:
        """Move mails (of the selected folder) to a folder, creating it when missing."""
        if not uids:
            return
        target = self.ensure_folder(configured_folder)
        if self.client.has_capability("MOVE"):
            self.client.move(uids, target)
            return
        # RFC 6851's fallback: copy, mark deleted, and expunge only these UIDs (UIDPLUS).
        self.client.copy(uids, target)
        self.client.add_flags(uids, [b"\\Deleted"], silent=True)
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge(uids)
        else:
            self.client.expunge()

    def flag_seen(self, uids: list[int]) -> None:
        if uids:
            self.client.add_flags(uids, [b"\\Seen"], silent=True)

    # -- waiting for mail ---------------------------------------------------------------------

    @property
    def supports_idle(self) -> bool:
        return self.client.has_capability("IDLE")

    def noop(self) -> None:
        self.client.noop()

    def idle_wait(
        self, seconds: float, stop: threading.Event, step: float = 0.5, wake: threading.Event | None = None
    ) -> bool:
        """IDLE for up to ``seconds``; True as soon as the server reports new mail, or ``wake`` is set
        (by someone who knows of new mail before the server says so: the embedded SMTP server).

        Returns False when the time is up or ``stop`` is set (the caller then renews IDLE).
        Raises ConnectionLost when the server closes the connection meanwhile.
        """
        if wake is not None:
            step = min(step, 0.02)
        client = self.client
        try:
            client.idle()
        except TRANSIENT_ERRORS as exc:
            raise ConnectionLost(f"the IMAP server did not accept IDLE: {exc}") from None
        lost = False
        try:
            deadline = time.monotonic() + seconds
            while not stop.is_set():
                if wake is not None and wake.is_set():
                    wake.clear()
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                waiting = self._wait_for_input(min(step, remaining))
                if waiting is None:
                    continue
                if waiting == b"":
                    lost = True
                    raise ConnectionLost("the IMAP server closed the connection during IDLE")
                # A response has begun: read the whole line, blocking with the socket timeout.
                line = client._imap._get_line()
                if _BYE.match(line):
                    lost = True
                    raise ConnectionLost("the IMAP server ended the session during IDLE")
                if _NEW_MAIL.match(line):
                    return True
            return False
        except TRANSIENT_ERRORS as exc:
            lost = True
            raise ConnectionLost(f"the connection failed during IDLE: {exc}") from None
        finally:
            if not lost:
                client.idle_done()

    def _wait_for_input(self, seconds: float) -> bytes | None:
        """Wait up to ``seconds`` for the server to say something during IDLE.

        Returns the bytes waiting, None when nothing came, b"" at end of file. imapclient's own
        idle_check reads from a non-blocking socket and breaks when a server splits one response
        line over two writes (pymap does), so lines are read here with imaplib's own reader.
        """
        waiting = self._peek()
        if waiting:
            return waiting  # already buffered by imaplib
        sock = self.client.socket()
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(seconds * 1000):
            return None
        # The socket is readable: data, or (for a plain socket) an empty peek means end of file.
        return self._peek()

    def _peek(self) -> bytes | None:
        sock = self.client.socket()
        sock.setblocking(False)
        try:
            return self.client._imap.file.peek(1)
        except ssl.SSLWantReadError:
            return None  # TLS bytes that are not yet application data
        finally:
            sock.settimeout(self._timeout)


_NEW_MAIL = re.compile(rb"^\* \d+ (EXISTS|RECENT)\b", re.IGNORECASE)
_BYE = re.compile(rb"^\* BYE\b", re.IGNORECASE)


def _pop_announcements(client: IMAPClient) -> bool:
    # imaplib keeps every untagged response it read (outside IDLE) in this dict until popped.
    pending = client._imap.untagged_responses
    return any([pending.pop(name, None) for name in ("EXISTS", "RECENT")])  # noqa: C419 - pop both, not only the first


def _shutdown_quietly(client: IMAPClient) -> None:
    try:
        client.shutdown()
    except TRANSIENT_ERRORS:
        pass
