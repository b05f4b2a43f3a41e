"""Real IMAP servers for tests: pymap (always) and Dovecot (when installed), on free loopback ports.

Use the ``imap_server`` fixture (parametrised over both) or ``pymap_server``. Each server can be
stopped, killed (as in a crash) and started again on the same port and mail directory.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from email.header import Header
from pathlib import Path

import pytest
from imapclient import IMAPClient

from intake.settings import MailboxSettings
from keydesk.embedded_imap import EmbeddedImap, die_with_parent, greeting_ok, port_closed
from tests.support.cli import wait_until
from tests.support.tls_certs import TlsFiles, private_ca

USER = "keiyaku@town.test.example"
PASSWORD = "desk-password-1"
DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _ServerBase:
    kind = ""
    host = "127.0.0.1"
    user = USER
    password = PASSWORD

    def __init__(self, port: int) -> None:
        self.port = port

    def client(self) -> IMAPClient:
        client = IMAPClient(self.host, self.port, ssl=False, timeout=30)
        client.login(self.user, self.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        with self.client() as client:
            client.append(folder, raw)

    def append_many(self, raws: list[bytes], folder: str = "INBOX") -> None:
        with self.client() as client:
            for start in range(0, len(raws), 50):  # MULTIAPPEND: one command per 50 mails
                client.multiappend(folder, raws[start : start + 50])

    def ensure_folder(self, folder: str) -> None:
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            return sorted(client.search("ALL"))

    def folder_count(self, folder: str) -> int:
        with self.client() as client:
            if not client.folder_exists(folder):
                return 0
            return int(client.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"])

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.client() as client:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def recreate_folder(self, folder: str) -> None:
        """Delete and create a folder again: a new UIDVALIDITY, as after a server migration."""
        with self.client() as client:
            client.delete_folder(folder)
            client.create_folder(folder)

    def mailbox_settings(self, **changes) -> MailboxSettings:
        values = dict(
            host=self.host,
            port=self.port,
            security="plain",
            username=self.user,
            password_env="KEYDESK_TEST_UNUSED",
            folder="INBOX",
            action="move",
        )
        values.update(changes)
        return MailboxSettings(**values)


class PymapServer(_ServerBase):
    kind = "pymap"

    def __init__(self, directory: Path, port: int) -> None:
        super().__init__(port)
        self.embedded = EmbeddedImap(directory, {USER: PASSWORD}, port=port)

    def start(self) -> None:
        self.embedded.start()

    def stop(self) -> None:
        self.embedded.stop()

    def kill(self) -> None:
        self.embedded.kill()


class PymapTlsServer(_ServerBase):
    """pymap with a certificate: STARTTLS on its port (pymap has no implicit TLS).

    Started with ``--debug``, so its log shows every command it received: the tests read it to
    see that no LOGIN came before a failed handshake.
    """

    kind = "pymap"
    imaps_port = None

    def __init__(self, directory: Path, port: int, tls: TlsFiles) -> None:
        super().__init__(port)
        self.directory = directory
        self.tls = tls
        self.log_file = directory / "pymap.log"
        self._imap = EmbeddedImap(
            directory,
            {self.user: self.password},
            host=self.host,
            port=port,
            log_file=self.log_file,
            tls=(tls.cert, tls.key),
            debug=True,
        )

    def client(self) -> IMAPClient:
        client = IMAPClient(self.host, self.port, ssl=False, timeout=30)
        client.starttls(self.tls.client_context())
        client.login(self.user, self.password)
        return client

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._imap.start()

    def kill(self) -> None:
        self._imap.kill()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


class DovecotServer(_ServerBase):
    """Dovecot in the foreground with its own config, passwd-file auth and Maildir storage.

    Dovecot refuses to run mail processes as root, so the mail belongs to an unprivileged user
    (``nobody`` when the tests run as root, else the current user). Its files live outside
    pytest's private tmp folder, which that user could not enter.
    """

    kind = "dovecot"

    def __init__(self, port: int, tls: TlsFiles | None = None, imaps_port: int | None = None) -> None:
        """With ``tls``: STARTTLS on ``port`` (plain login stays allowed there, for seeding mail)
        and, with ``imaps_port``, implicit TLS on that port."""
        super().__init__(port)
        self.root = Path(tempfile.mkdtemp(prefix="keydesk-dovecot-"))
        os.chmod(self.root, 0o755)
        self.tls = tls
        self.imaps_port = imaps_port if tls is not None else None
        self._process: subprocess.Popen | None = None
        self._write_config()

    def _ssl_config(self) -> str:
        if self.tls is None:
            return "ssl = no"
        # Copied beside the config: pytest's tmp folder is private to the user running the tests.
        cert, key = self.root / "ssl-cert.pem", self.root / "ssl-key.pem"
        shutil.copyfile(self.tls.cert, cert)
        shutil.copyfile(self.tls.key, key)
        os.chmod(key, 0o600)
        return f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}"

    def log_text(self) -> str:
        log = self.root / "dovecot.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def _write_config(self) -> None:
        root = self.root
        for name in ("run", "state", "mail"):
            (root / name).mkdir()
        me = pwd.getpwuid(os.geteuid())
        if os.geteuid() == 0:
            mail_user = pwd.getpwnam("nobody")
            login_user = "dovenull" if _user_exists("dovenull") else "nobody"
            internal_user = "dovecot" if _user_exists("dovecot") else "nobody"
        else:
            mail_user, login_user, internal_user = me, me.pw_name, me.pw_name
        os.chown(root / "mail", mail_user.pw_uid, mail_user.pw_gid)
        home = root / "mail" / "keiyaku"
        (root / "passwd").write_text(
            f"{self.user}:{{PLAIN}}{self.password}:{mail_user.pw_uid}:{mail_user.pw_gid}::{home}::\n"
        )
        (root / "dovecot.conf").write_text(f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{self._ssl_config()}
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = {min(mail_user.pw_uid, 500) if os.geteuid() else mail_user.pw_uid}
first_valid_gid = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    {f"address = 127.0.0.1{chr(10)}    port = {self.imaps_port}{chr(10)}    ssl = yes" if self.imaps_port else "port = 0"}
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""")

    def start(self) -> None:
        self._process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A test run or benchmark killed midway leaves no Dovecot behind holding its port.
            preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl, async-signal-safe
        )
        deadline = time.monotonic() + 20
        while not greeting_ok(self.host, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.root / "dovecot.log"
                raise RuntimeError(f"Dovecot did not start: {log.read_text()[-2000:] if log.exists() else ''}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, as an admin would; Dovecot takes a few seconds to let go of the port."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._process = None
        wait_until(lambda: port_closed(self.host, self.port), 15, what="Dovecot to close its port")

    def kill(self) -> None:
        """SIGKILL to the whole process group: the master and every imap process die at once."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait(15)
        self._process = None
        wait_until(lambda: port_closed(self.host, self.port), 15, what="Dovecot to close its port")

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def restart(server) -> None:
    """Kill the server as a crash would and start it again on the same port and mail."""
    server.kill()
    server.start()


@pytest.fixture
def pymap_server(tmp_path: Path):
    server = PymapServer(tmp_path / "pymap-mail", free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def dovecot_server():
    if DOVECOT is None:
        pytest.skip("Dovecot is not installed (apt-get install dovecot-imapd); CI runs these tests")
    server = DovecotServer(free_port())
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=["pymap", pytest.param("dovecot", marks=pytest.mark.dovecot)])
def imap_server(request):
    """The same test against pymap and against Dovecot."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture
def pymap_tls_server(tmp_path: Path):
    """pymap with STARTTLS and a certificate from a throwaway private CA (``server.tls.ca_file``)."""
    (tmp_path / "pymap-tls").mkdir()
    server = PymapTlsServer(tmp_path / "pymap-tls-mail", free_port(), private_ca(tmp_path / "pymap-tls"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def dovecot_tls_server(tmp_path: Path):
    """Dovecot with STARTTLS on ``port`` and implicit TLS on ``imaps_port``, from a private CA."""
    if DOVECOT is None:
        pytest.skip(
            "Dovecot is not installed (apt-get install dovecot-imapd); CI runs these tests "
            "(pymap offers STARTTLS only, so implicit TLS needs Dovecot)"
        )
    (tmp_path / "dovecot-tls").mkdir()
    server = DovecotServer(free_port(), tls=private_ca(tmp_path / "dovecot-tls"), imaps_port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=["pymap", pytest.param("dovecot", marks=pytest.mark.dovecot)])
def tls_imap_server(request):
    """The same TLS test against pymap (STARTTLS only) and Dovecot (STARTTLS and implicit TLS)."""
    return request.getfixturevalue(f"{request.param}_tls_server")


# -- an intake harness: a tmp database, a raw store and a simple stand-in for the pipeline --------

DESK = "misato"
DESK_ADDRESS = "keiyaku@town.test.example"


def make_mail(
    number: int,
    *,
    subject: str | None = None,
    body: str | None = None,
    extra: bytes = b"",
    sender: str = "contractor@kensetsu.example",
) -> bytes:
    """A plain mail, unique by its number (Message-ID and body)."""
    subject = subject or f"認証キーのお知らせ {number}"
    head = (
        f"From: {sender}\r\nTo: {DESK_ADDRESS}\r\n"
        f"Subject: {Header(subject, 'utf-8').encode()}\r\n"
        f"Message-ID: <mail-{number}@kensetsu.example>\r\n"
        f"Date: Wed, 01 Apr 2026 09:00:00 +0900\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    text = body if body is not None else f"保証証書の認証キーを送付します。番号 {number}\r\n"
    return head.encode() + text.encode("utf-8") + extra


def use_stand_in_pipeline(monkeypatch) -> None:
    """Make every desk the CLI or daemon wires up in this test process mail with ``sample_process``."""
    from keydesk import composition

    monkeypatch.setattr(composition, "process_factory", lambda runtime, desk: sample_process)


def sample_process(session, inbound, raw):
    """The pipeline's stand-in: one submission and one reply in the outbox, like the real one.

    A subject or body containing ``[returned]`` is returned, ``[boom]`` raises.
    """
    from email.message import EmailMessage

    from intake.intake_service import Outcome
    from mailer.outbox import enqueue, new_message_id
    from rules.findings import Verdict
    from store.tables import Submission

    if b"[boom]" in raw:
        raise ValueError("the pipeline could not read this mail")
    verdict = Verdict.RETURNED if b"[returned]" in raw else Verdict.ACCEPTED
    session.add(
        Submission(
            desk=inbound.desk,
            inbound_id=inbound.id,
            verdict=verdict.value,
            findings_json=json.dumps({"raw_bytes": len(raw)}),
        )
    )
    reply = EmailMessage()
    reply["From"] = DESK_ADDRESS
    reply["To"] = "contractor@kensetsu.example"
    reply["Subject"] = "受付のお知らせ"
    reply["Message-ID"] = new_message_id(DESK_ADDRESS)
    reply.set_content("受け付けました。")
    enqueue(
        session,
        desk=inbound.desk,
        idempotency_key=f"reply:{inbound.id}",
        kind="reply",
        message=reply,
        envelope_from=DESK_ADDRESS,
        recipients=["contractor@kensetsu.example"],
        inbound_id=inbound.id,
    )
    findings = ("key.missing",) if verdict == Verdict.RETURNED else ()
    return Outcome(verdict, findings)


class IntakeHarness:
    """An IntakeService on a tmp SQLite database against ``server``."""

    def __init__(
        self,
        tmp_path: Path,
        server,
        process=sample_process,
        mailbox=None,
        poll=None,
        limits=None,
        after_commit=None,
        connection_class=None,
    ) -> None:
        from sqlmodel import SQLModel

        from intake.intake_service import IntakeService
        from intake.raw_store import RawStore
        from intake.settings import Limits, PollSettings
        from keydesk.database import make_engine

        self.tmp_path = tmp_path
        self.server = server
        self.db_url = f"sqlite:///{tmp_path}/intake.db"
        self.engine = make_engine(self.db_url)
        SQLModel.metadata.create_all(self.engine)
        self.store = RawStore(tmp_path / "store")
        self.mailbox = mailbox or server.mailbox_settings()
        self.poll = poll or PollSettings()
        self.limits = limits or Limits()
        self.lock_directory = tmp_path / "var" / "locks"
        self.connection_class = connection_class
        self.service = IntakeService(
            desk=DESK,
            mailbox=self.mailbox,
            poll=self.poll,
            limits=self.limits,
            engine=self.engine,
            store=self.store,
            process=process,
            after_commit=after_commit,
        )

    def connection(self):
        from intake.poller import MailboxConnection

        cls = self.connection_class or MailboxConnection
        return cls(self.mailbox, password=self.server.password, timeout=10)

    def lock(self):
        from intake.mailbox_lock import MailboxLock

        return MailboxLock(self.lock_directory, DESK, self.mailbox.username, self.mailbox.folder)

    def poll_once(self):
        with self.lock(), self.connection() as conn:
            return self.service.run_pass(conn)

    def count(self, table) -> int:
        from sqlmodel import Session, func, select

        with Session(self.engine) as session:
            return session.exec(select(func.count()).select_from(table)).one()

    def rows(self):
        from sqlmodel import Session, select

        from store.tables import InboundMessage

        with Session(self.engine) as session:
            return list(session.exec(select(InboundMessage).order_by(InboundMessage.id)))

    def audit_actions(self) -> list[str]:
        from sqlmodel import Session, select

        from store.tables import AuditEvent

        with Session(self.engine) as session:
            return [event.action for event in session.exec(select(AuditEvent).order_by(AuditEvent.id))]


# -- a deployment (config folder + migrated database) for CLI tests -------------------------------


def deployment_for(
    tmp_path: Path, server=None, *, imap_port: int | None = None, smtp_port: int | None = None, embedded: bool = False
) -> Path:
    """A config folder from `keydesk init`, its database migrated, the desk's mailbox pointing at
    ``server`` (or at the embedded server when ``embedded``)."""
    from keydesk.deployment import create_config
    from keydesk.database import make_engine, upgrade

    config = tmp_path / "config"
    create_config(config)
    path = config / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    if embedded:
        text = text.replace("imap_port = 1143", f"imap_port = {imap_port}")
        text = text.replace("smtp_port = 1025", f"smtp_port = {smtp_port}")
        text = text.replace("port = 1143", f"port = {imap_port}")
        text = text.replace("port = 1025", f"port = {smtp_port}")
    else:
        text = text.replace("enabled = true", "enabled = false")
        text = text.replace('username = "keiyaku@town.misato.example"', f'username = "{server.user}"')
        text = text.replace("port = 1143", f"port = {server.port}")
        text = text.replace(
            'password_file = "var/secrets/embedded-keiyaku.password"\n# token_command',
            'password_file = "var/secrets/desk-mailbox.password"\n# token_command',
        )
        secret = tmp_path / "var" / "secrets" / "desk-mailbox.password"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(server.password + "\n")
        secret.chmod(0o600)  # keydesk refuses a secret file others can read
    path.write_text(text, encoding="utf-8")
    upgrade(make_engine(f"sqlite:///{tmp_path}/var/keydesk.db"))
    return config
