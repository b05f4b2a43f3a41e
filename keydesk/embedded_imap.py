"""The embedded IMAP server: pymap's maildir backend on loopback, run as a child process.

A child process (rather than pymap's asyncio server inside keydesk) can be killed and restarted
like a real server, which is what the demo, ``keydesk run`` and the intake tests need. Ready means
a TCP connection gets an IMAP ``* OK`` greeting, waited for with a deadline.

The child dies with keydesk: on Linux it asks the kernel for SIGKILL when its parent goes
(``PR_SET_PDEATHSIG``), so a keydesk killed with SIGKILL leaves no server holding the port. Its
pid is also kept in ``pymap.pid``, so a start finds and ends a server an earlier keydesk left
behind (another OS, or a keydesk from before this rule). A port still held for a moment (the
old server exiting) is waited for with backoff, then reported in one line.

Layout under the mail directory: pymap's own user files (``pymap-etc-passwd``, ``-shadow``,
``-group``) and one Maildir++ folder per user, named after the address.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from imapclient import IMAPClient
from pysasl.hashing import BuiltinHash

from store.files import write_private
from foundation.errors import OperationalError

log = logging.getLogger(__name__)

# Loopback only, so a cheaper password hash than pymap's default (500 000 rounds) keeps every
# login fast without weakening anything that leaves the machine.
_HASH = BuiltinHash(rounds=50_000)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,200}$")
_PYMAP_MAIN = "import sys; from pymap.main import main; sys.exit(main())"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# How long a start waits for a port that is still held (an old server exiting).
PORT_WAIT_SECONDS = 10.0


def die_with_parent(parent_pid: int):
    """A ``preexec_fn``: the child gets SIGKILL when ``parent_pid`` (its parent thread) ends (Linux only).

    The kernel ties this to the thread that forked the child, so the server is started from a
    thread that lives as long as keydesk serves (the main thread for ``keydesk run``).
    """

    def prepare() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the request took effect
            os._exit(1)

    return prepare


def wait_for_port(host: str, port: int, seconds: float = PORT_WAIT_SECONDS) -> bool:
    """True once nothing listens on host:port, polling with backoff for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    pause = 0.05
    while not port_closed(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, 1.0)
    return True


class EmbeddedImapError(OperationalError):
    """The embedded IMAP server could not be started (message fit for the person at the terminal)."""

    def user_lines(self) -> list[str]:
        return [f"keydesk: 内蔵 IMAP サーバーを起動できませんでした: {self}"]


def _escape(field: str) -> str:
    if any(c in field for c in "\r\n"):
        raise EmbeddedImapError("a user name or password must not contain line breaks")
    return field.replace(":", "\\:")


def user_directory_name(address: str) -> str:
    """The user's Maildir folder name: the address itself when it is a plain one."""
    if not _SAFE_NAME.match(address) or ".." in address:
        raise EmbeddedImapError(f"{address!r} cannot be an embedded mail user (letters, digits, @ . _ + - only)")
    return address


def write_users(directory: Path, users: Mapping[str, str]) -> None:
    """Write pymap's passwd/shadow/group files for ``users`` (address → password).

    pymap reads these files at every login, so rewriting them takes effect without a restart.
    """
    directory.mkdir(parents=True, exist_ok=True)
    passwd_lines, shadow_lines = [], []
    for address, password in users.items():
        home = user_directory_name(address)
        # passwd(5) fields: name, password, uid, gid, comment, home, shell.
        passwd_lines.append(":".join([_escape(address), "", "", "", "", _escape(home), ""]))
        # shadow(5): name, hash, then seven unused fields.
        shadow_lines.append(":".join([_escape(address), _escape(_HASH.hash(password))] + [""] * 7))
    _write_lines(directory / "pymap-etc-passwd", passwd_lines)
    _write_lines(directory / "pymap-etc-shadow", shadow_lines)
    _write_lines(directory / "pymap-etc-group", [])


def _write_lines(path: Path, lines: list[str]) -> None:
    write_private(path, "".join(line + "\r\n" for line in lines).encode("utf-8"), replace=True)


def greeting_ok(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when an IMAP server answers on host:port with an ``* OK`` greeting."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(256).startswith(b"* OK")
    except OSError:
        return False


def port_closed(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return False
    except OSError:
        return True


class EmbeddedImap:
    """A pymap maildir server under ``directory`` on ``host:port``, with the given users."""

    def __init__(
        self,
        directory: Path,
        users: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 1143,
        log_file: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        debug: bool = False,
    ) -> None:
        """``tls``: (certificate, key) PEM files to offer STARTTLS with (pymap has no implicit TLS);
        ``debug``: pymap logs every command it receives."""
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise EmbeddedImapError(f"the embedded IMAP server listens on loopback only, not {host!r}")
        self.directory = Path(directory)
        self.users = dict(users)
        self.host = host
        self.port = port
        self.log_file = log_file or self.directory / "pymap.log"
        self.tls = tls
        self.debug = debug
        self._process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def pid_file(self) -> Path:
        return self.directory / "pymap.pid"

    def _end_left_behind(self) -> None:
        """End a server an earlier keydesk started for this same mail directory and left running."""
        try:
            pid = int(self.pid_file.read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if b"maildir" in command and str(self.directory).encode() in command:
            log.warning("ending the embedded IMAP server (pid %d) an earlier keydesk left running", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._end_left_behind()
        if not wait_for_port(self.host, self.port):
            raise EmbeddedImapError(
                f"port {self.host}:{self.port} is still in use after {PORT_WAIT_SECONDS:.0f} s "
                f"(another program?); set embedded.imap_port to a free port"
            )
        write_users(self.directory, self.users)
        tls = ["--cert", str(self.tls[0]), "--key", str(self.tls[1])] if self.tls else ["--no-tls"]
        command = [
            sys.executable,
            "-c",
            _PYMAP_MAIN,
            *(["--debug"] if self.debug else []),
            "--no-service",
            "admin",
            "--no-service",
            "managesieve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *tls,
            "maildir",
            str(self.directory),
        ]
        # FQDN: pymap's greeting otherwise asks DNS for the host name, which can stall offline.
        env = {**os.environ, "FQDN": "localhost"}
        with open(self.log_file, "ab") as log_handle:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl, async-signal-safe
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        deadline = time.monotonic() + timeout
        while not greeting_ok(self.host, self.port):
            if self._process.poll() is not None:
                raise EmbeddedImapError(
                    f"the embedded IMAP server exited at start (code {self._process.returncode}); see {self.log_file}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise EmbeddedImapError(
                    f"the embedded IMAP server did not answer within {timeout:.0f} s; see {self.log_file}"
                )
            time.sleep(0.05)
        log.info("embedded IMAP listening on %s:%s (mail in %s)", self.host, self.port, self.directory)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; returns once the port is closed."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self._process = None
        self._wait_port_closed(timeout)
        log.info("embedded IMAP stopped")

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(10)
        self._process = None
        self._wait_port_closed(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wait_port_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_closed(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def append(self, address: str, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver ``raw`` into a user's folder over IMAP (the embedded SMTP server's delivery)."""
        with IMAPClient(self.host, self.port, ssl=False, timeout=30) as client:
            client.login(address, self.users[address])
            client.append(folder, raw)

    def __enter__(self) -> EmbeddedImap:
        self.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()
