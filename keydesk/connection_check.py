"""`keydesk config check --connect` and `keydesk status`: log in to every configured server, once,
within a bounded time, and say in one line per server what works or what exactly is wrong.

The usual first-day mistakes are named as such instead of surfacing as a timeout or an OpenSSL
code: STARTTLS against an implicit-TLS port (the server waits for a TLS hello, so no greeting ever
comes), implicit TLS against a plain port (the greeting arrives in the clear and OpenSSL reports
``WRONG_VERSION_NUMBER``), a certificate from a CA this machine does not trust, a ``ca_file`` that
holds the wrong CA, a certificate for another name or an expired one, and refused logins.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from foundation.net import is_loopback
from intake.poller import MailboxConnection, MailboxError
from keydesk.settings import Settings, read_secret
from mailer.smtp_client import SmtpConnectError, SmtpConnector
from foundation.config import ConfigError
from foundation.errors import UserFacingError
from store.tls import client_ssl_context

# Each network step (connect, greeting, TLS, login) waits at most this long…
CHECK_SECONDS = 10.0
# …and a whole check ends after this long, however many steps were slow.
DEADLINE_SECONDS = 20.0
# A server that speaks first (IMAP "* OK", SMTP "220") does so at once; silence this long on a port
# configured for STARTTLS or plain means it is waiting for a TLS hello.
GREETING_SECONDS = 2.0

MailProtocol = Literal["IMAP", "SMTP"]


@dataclass(frozen=True)
class CheckResult:
    name: str  # the config key: "smtp", "desks.misato.mailbox"
    endpoint: str  # "imap.example.lg.jp:993 (tls)"
    ok: bool
    message: str
    elapsed: float = 0.0

    def line(self) -> str:
        return f"{'OK' if self.ok else 'NG'}  {self.name}  {self.endpoint}: {self.message}"

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "ok": self.ok,
            "message": self.message,
            "seconds": round(self.elapsed, 3),
        }


# -- what a port speaks ------------------------------------------------------------------------------


def _greeting(host: str, port: int, wait: float) -> bytes | None:
    """The first bytes the server sends unasked, or None when it stays silent for ``wait`` s."""
    with socket.create_connection((host, port), timeout=wait) as sock:
        sock.settimeout(wait)
        try:
            return sock.recv(256) or None
        except TimeoutError:
            return None


def _speaks_tls(host: str, port: int, wait: float) -> bool:
    """A TLS handshake (certificate not checked: only the protocol is in question) completes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=wait) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def port_mismatch(protocol: MailProtocol, host: str, port: int, security: str) -> str | None:
    """A sentence naming a security/port mismatch, or None when the port speaks as configured."""
    plain_greeting = b"* OK" if protocol == "IMAP" else b"220"
    if security == "tls":
        if _speaks_tls(host, port, GREETING_SECONDS * 2):
            return None
        greeting = _greeting(host, port, GREETING_SECONDS)
        if greeting and greeting.startswith(plain_greeting[:2]):
            suggestion = "starttls" if not is_loopback(host) else 'starttls" (or "plain" on loopback)'
            return (
                f"port {port} speaks plain {protocol} (its greeting comes in the clear), not implicit TLS: "
                f'set security = "{suggestion}" or use the TLS port ({993 if protocol == "IMAP" else 465})'
            )
        return None
    greeting = _greeting(host, port, GREETING_SECONDS)
    if greeting is None and _speaks_tls(host, port, GREETING_SECONDS * 2):
        return f'port {port} speaks implicit TLS: set security = "tls"'
    if greeting is None:
        return f"port {port} sent no {protocol} greeting within {GREETING_SECONDS:.0f} s (is it the right port?)"
    return None


# -- certificate problems, in words -------------------------------------------------------------------


def certificate_problem(exc: ssl.SSLCertVerificationError, host: str, ca_file: Path | None, key: str) -> str:
    """What is wrong with the server's certificate and which setting fixes it (``key`` names ca_file)."""
    code = getattr(exc, "verify_code", None)
    if code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
        return (
            f"the server's certificate is not for {host!r}: set host to the name on the certificate "
            f"({exc.verify_message})"
        )
    if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
        return "the server's certificate has expired: the mail server's administrator must renew it"
    if ca_file is not None:
        return (
            f"the server's certificate is not signed by the CA in {key} ({ca_file}): that file holds "
            f"another CA; put the CA that issued the mail server's certificate there ({exc.verify_message})"
        )
    return (
        f"the server's certificate comes from a CA this machine does not trust ({exc.verify_message}): "
        f"if it is your organisation's private CA, set {key} to that CA certificate (PEM)"
    )


def _describe_failure(exc: BaseException, host: str, ca_file: Path | None, key: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return certificate_problem(exc, host, ca_file, key)
    if isinstance(exc, ConfigError):
        return "; ".join(exc.lines)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {CHECK_SECONDS:.0f} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on this port)"
    if isinstance(exc, socket.gaierror):
        return f"the host name does not resolve ({exc.strerror})"
    text = str(exc)
    if isinstance(exc, SmtpConnectError) and "CERTIFICATE_VERIFY_FAILED" in text:
        return text  # smtplib's own wrapper: the verify error was already turned into text
    return text or type(exc).__name__


# -- the two kinds of server ----------------------------------------------------------------------------


def check_mailbox(settings: Settings, desk_id: str) -> CheckResult:
    mailbox = settings.desks[desk_id].mailbox
    name = f"desks.{desk_id}.mailbox"
    endpoint = f"{mailbox.host}:{mailbox.port} ({mailbox.security})"
    started = time.monotonic()

    def result(ok: bool, message: str) -> CheckResult:
        return CheckResult(name, endpoint, ok, message, time.monotonic() - started)

    try:
        password = None
        if mailbox.auth == "password":
            password = read_secret(mailbox.password_env, mailbox.password_file, f"{name} password")
        context = client_ssl_context(mailbox.ca_file, f"{name}.ca_file")
        mismatch = port_mismatch("IMAP", mailbox.host, mailbox.port, mailbox.security)
        if mismatch:
            return result(False, mismatch)
        with MailboxConnection(mailbox, password=password, timeout=CHECK_SECONDS, ssl_context=context) as conn:
            conn.select()
            delimiter_example = conn.server_folder_name(mailbox.folders.accepted)
            idle = "IDLE あり" if conn.supports_idle else "IDLE なし (polling)"
        return result(
            True,
            f"logged in as {mailbox.username}, {mailbox.folder} selected, {idle}; "
            f"folders appear as {delimiter_example!r}",
        )
    except (OSError, ssl.SSLError, MailboxError, ConfigError) as exc:
        return result(False, _describe_failure(exc, mailbox.host, mailbox.ca_file, f"{name}.ca_file"))
    except Exception as exc:  # noqa: BLE001 - imaplib's own errors and whatever a server provokes
        return result(False, f"{type(exc).__name__}: {exc}")


def check_smtp(settings: Settings) -> CheckResult:
    smtp = settings.smtp
    endpoint = f"{smtp.host}:{smtp.port} ({smtp.security})"
    started = time.monotonic()

    def result(ok: bool, message: str) -> CheckResult:
        return CheckResult("smtp", endpoint, ok, message, time.monotonic() - started)

    try:
        password = read_secret(smtp.password_env, smtp.password_file, "smtp password") if smtp.username else None
        context = client_ssl_context(smtp.ca_file, "smtp.ca_file")
        mismatch = port_mismatch("SMTP", smtp.host, smtp.port, smtp.security)
        if mismatch:
            return result(False, mismatch)
        bounded = smtp.model_copy(update={"timeout_seconds": int(CHECK_SECONDS)})
        client = _open_smtp(SmtpConnector(bounded, password, ssl_context=context), context)
        try:
            client.noop()
        finally:
            client.close()
        who = f"logged in as {smtp.username}" if smtp.username else "no login configured"
        return result(True, f"EHLO{' + STARTTLS' if smtp.security == 'starttls' else ''} accepted, {who}")
    except (OSError, ssl.SSLError, SmtpConnectError, ConfigError) as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ssl.SSLCertVerificationError):
            exc = cause
        return result(False, _describe_failure(exc, smtp.host, smtp.ca_file, "smtp.ca_file"))
    except Exception as exc:  # noqa: BLE001
        return result(False, f"{type(exc).__name__}: {exc}")


def _open_smtp(connector: SmtpConnector, context: ssl.SSLContext):
    """Open like the outbox does, but keep the certificate error itself (the connector words it)."""
    try:
        return connector.open()
    except SmtpConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            _raise_verify_error(connector, context)
        raise


def _raise_verify_error(connector: SmtpConnector, context: ssl.SSLContext) -> None:
    """Repeat the handshake alone to get the structured verify error (code, message)."""
    s = connector.settings
    import smtplib

    if s.security == "tls":
        with socket.create_connection((s.host, s.port), timeout=CHECK_SECONDS) as sock:
            context.wrap_socket(sock, server_hostname=s.host).close()
    else:
        client = smtplib.SMTP(s.host, s.port, timeout=CHECK_SECONDS)
        try:
            client.ehlo()
            client.starttls(context=context)
        finally:
            client.close()


def check_all(settings: Settings, desk: str | None = None, deadline: float = DEADLINE_SECONDS) -> list[CheckResult]:
    """SMTP first (everything keydesk sends), then every desk's mailbox; all at once, each within
    ``deadline`` seconds even when a server answers every step slowly (each step has its own timeout)."""
    desks = [desk] if desk else list(settings.desks)
    checks: list[tuple[str, str, Callable[[], CheckResult]]] = [
        ("smtp", f"{settings.smtp.host}:{settings.smtp.port} ({settings.smtp.security})", lambda: check_smtp(settings))
    ]
    for desk_id in desks:
        box = settings.desks[desk_id].mailbox
        checks.append(
            (
                f"desks.{desk_id}.mailbox",
                f"{box.host}:{box.port} ({box.security})",
                lambda desk_id=desk_id: check_mailbox(settings, desk_id),
            )
        )
    results: list[CheckResult | None] = [None] * len(checks)

    def run(index: int, check: Callable[[], CheckResult]) -> None:
        results[index] = check()

    # Daemon threads: a server that never answers cannot keep the command from ending.
    threads = [
        threading.Thread(target=run, args=(index, check), daemon=True, name=f"check-{name}")
        for index, (name, _endpoint, check) in enumerate(checks)
    ]
    end = time.monotonic() + deadline
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return [
        result or CheckResult(name, endpoint, False, f"no complete answer within {deadline:.0f} s")
        for result, (name, endpoint, _check) in zip(results, checks)
    ]


def mailbox_problem(settings: Settings, desk_id: str, exc: BaseException) -> UserFacingError:
    """The error a failed `keydesk poll` shows: the mailbox, what failed, and which setting to look at."""
    mailbox = settings.desks[desk_id].mailbox
    hint = ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        # A wrong ca_file (another CA) gets another hint than a missing one.
        hint = f" ({certificate_problem(exc, mailbox.host, mailbox.ca_file, f'desks.{desk_id}.mailbox.ca_file')})"
    return UserFacingError(
        f"{desk_id}: メールボックス {mailbox.host}:{mailbox.port} から受信できませんでした: {exc}{hint}"
    )


def smtp_hint(settings: Settings, error: str) -> str:
    """Which setting to look at, for the failures an admin can fix (a wrong ca_file is not a missing one)."""
    if "CERTIFICATE_VERIFY_FAILED" not in error:
        return ""
    if settings.smtp.ca_file is not None:
        return (
            f" (smtp.ca_file {settings.smtp.ca_file} に、このサーバーの証明書を発行した CA が入っていません。"
            f"`keydesk config check --connect` で詳しく確認できます)"
        )
    return (
        " (サーバー証明書を確認できません。組織内の CA で発行された証明書なら、smtp.ca_file にその CA 証明書 (PEM) を"
        "指定してください。`keydesk config check --connect` で詳しく確認できます)"
    )
