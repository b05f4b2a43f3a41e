"""Walking one raw mail into its documents and its context.

``walk_mail(raw, authserv_id=..., limits=...)`` is the intake's only entry point here: it takes
the bytes as received (the caller has already checked their size) and returns a ``WalkedMail``:
the documents found in attachments, forwarded mails (message/rfc822, nested), ZIP archives and
winmail.dat, plus what the mail says about itself (``intake.mail_context``) and the problems met
on the way as findings. It never raises on hostile input and writes nothing anywhere.

A sender-given name is only ever displayed: ``MailDocument.display_name`` is sanitised (no
directories, control or bidi characters), ``raw_name`` keeps what the sender wrote for staff to see.
"""

from __future__ import annotations

import re
import time

import base64
import binascii
import email
import hashlib
import quopri
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser

from rules.findings import Finding

from intake import mail_context
from intake.archives import ArchiveBudget, is_office_container, is_tnef, is_zip, unpack_tnef, unpack_zip
from intake.authentication_results import Authentication, authentication
from intake.machine_mail import machine_reasons
from intake.mail_context import Sender, TypedKey
from intake.mime_headers import TOLERANT_POLICY, content_type, declared_filename, disposition, raw_value
from intake.settings import Limits
from intake.text_decoding import decode_bytes, strip_unsafe

# Forwarded mails and multiparts nest; honest mail stays far below this.
_MIME_DEPTH_MAX = 32
# The top header block (Received lines of many hops, DKIM signatures) stays far below this.
HEADER_BLOCK_MAX = 256 * 1024
_NAME_MAX = 200
_PDF_MAGIC_WINDOW = 1024
# Parts that are about the mail, not attached to it.
_SKIPPED_TYPES = {
    "application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature",
    "message/delivery-status", "message/disposition-notification", "message/feedback-report",
    "text/rfc822-headers", "message/global-delivery-status", "message/global-headers",
    "message/global-disposition-notification",
}
_FORWARDED_TYPES = {"message/rfc822", "message/global"}
_TYPE_BY_EXTENSION = {".pdf": "application/pdf", ".zip": "application/zip", ".dat": "application/ms-tnef",
                      ".eml": "message/rfc822", ".txt": "text/plain"}
_EXTENSION_BY_TYPE = {"application/pdf": ".pdf", "application/zip": ".zip", "application/x-zip-compressed": ".zip",
                      "application/ms-tnef": ".dat", "application/vnd.ms-tnef": ".dat", "text/plain": ".txt",
                      "text/html": ".html", "message/rfc822": ".eml"}
FORWARDED_MAIL = "forwarded mail"


@dataclass(frozen=True)
class MailLimits:
    attachments_max: int = 20
    archive_depth_max: int = 3
    archive_entries_max: int = 100
    archive_unpacked_max_bytes: int = 100 * 1024 * 1024
    pdf_max_bytes: int = 20 * 1024 * 1024
    # The bounded walk: a mail past any of these is not read further (mail.unreadable).
    mime_parts_max: int = 500
    body_text_max_bytes: int = 512 * 1024  # text/plain + text/html bytes decoded, over all parts
    walk_seconds: float = 10.0

    @classmethod
    def from_settings(cls, limits: Limits) -> "MailLimits":
        """From ``intake.settings.Limits`` (keydesk.toml [limits])."""
        return cls(
            attachments_max=limits.attachments_max,
            archive_depth_max=limits.archive_depth_max,
            archive_entries_max=limits.archive_entries_max,
            archive_unpacked_max_bytes=limits.archive_unpacked_max_bytes,
            pdf_max_bytes=limits.pdf_max_bytes,
            mime_parts_max=limits.mime_parts_max,
            body_text_max_bytes=limits.body_text_max_bytes,
            walk_seconds=limits.walk_seconds,
        )


@dataclass(frozen=True)
class MailDocument:
    display_name: str  # sanitised; safe to show, never to be used as a path
    content: bytes = field(repr=False)
    sha256: str
    declared_type: str  # what the sender's mailer said (or the extension suggested), lower case
    is_pdf: bool  # by content (%PDF- in the first 1024 bytes), not by the declared type
    path: tuple[str, ...]  # where it came from: ("forwarded mail", "archive.zip", "x.pdf")
    raw_name: str = ""  # the sender-given name as decoded, unsanitised: for display to staff only
    in_archive: bool = False  # unpacked from a ZIP or winmail.dat (only its PDFs are stored)


@dataclass(frozen=True)
class WalkedMail:
    message_id: str | None
    subject: str
    sender: Sender
    date: datetime | None
    body_text: str
    documents: tuple[MailDocument, ...]
    problems: tuple[Finding, ...]
    automatic: bool
    automatic_reasons: tuple[str, ...]
    authentication: Authentication
    typed_keys: tuple[TypedKey, ...]


def is_pdf(content: bytes) -> bool:
    return b"%PDF-" in content[:_PDF_MAGIC_WINDOW]


def safe_display_name(raw: str | None, fallback: str) -> str:
    """A name fit to show: last path component only, no control/bidi characters, bounded length."""
    text = strip_unsafe(unicodedata.normalize("NFC", raw or ""))
    text = text.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if text in ("", ".", ".."):
        return fallback
    if len(text) > _NAME_MAX:
        stem, dot, extension = text.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            text = stem[: _NAME_MAX - len(extension) - 1] + "." + extension
        else:
            text = text[:_NAME_MAX]
    return text


def _type_for_name(name: str) -> str:
    lowered = name.lower()
    for extension, mime_type in _TYPE_BY_EXTENSION.items():
        if lowered.endswith(extension):
            return mime_type
    return "application/octet-stream"


def _finding(code: str, detail: str, document: str | None = None, **params: str) -> Finding:
    if document is not None:
        params.setdefault("document", document)
    return Finding(code, detail=detail, params=params, document=document)


def _transfer_decoded(part: Message) -> bytes:
    """The part's content bytes; our own decoding if the library's gives up."""
    try:
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return payload
    except Exception:  # noqa: BLE001 - fall through to the manual decoding below
        pass
    try:
        text = part.get_payload()
    except Exception:  # noqa: BLE001
        return b""
    if not isinstance(text, str):
        return b""
    data = text.encode("ascii", "surrogateescape")
    encoding = (raw_value(part, "content-transfer-encoding") or "").strip().lower()
    try:
        if encoding == "base64":
            return base64.b64decode(b"".join(data.split()) + b"===", validate=False)
        if encoding == "quoted-printable":
            return quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return b""
    return data


class OverLimit(Exception):
    """The walk met one of ``MailLimits``' bounds; the mail is kept and answered as unreadable."""


def _unreadable(reason: str) -> Finding:
    return _finding("mail.unreadable", reason)


def _delimiter_lines(raw: bytes) -> int:
    """An upper bound on the MIME parts of a mail: lines starting with "--" (every boundary line does).

    Counted on the bytes, before the library builds one object per part."""
    return raw.count(b"\n--") + raw.startswith(b"--")


class _Walker:
    def __init__(self, limits: MailLimits, deadline: float) -> None:
        self.limits = limits
        self.deadline = deadline
        self.parts = 0
        self.body_bytes_left = limits.body_text_max_bytes
        self.budget = ArchiveBudget(limits.archive_entries_max, limits.archive_unpacked_max_bytes)
        self.documents: list[MailDocument] = []
        self.problems: list[Finding] = []
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments = 0
        self.too_many_reported = False
        self.too_deep_reported = False
        self.unnamed = 0

    def _tick(self, *, part: bool = True) -> None:
        """Every MIME part is counted and every step timed; past a bound the whole walk stops."""
        if part:
            self.parts += 1
            if self.parts > self.limits.mime_parts_max:
                raise OverLimit(f"more than {self.limits.mime_parts_max} MIME parts")
        if time.monotonic() > self.deadline:
            raise OverLimit(f"reading the mail took longer than {self.limits.walk_seconds:g} s")

    def part(self, part: Message, path: tuple[str, ...], depth: int, is_top: bool, in_related: bool) -> None:
        self._tick()
        if depth > _MIME_DEPTH_MAX:
            if not self.too_deep_reported:
                self.problems.append(_finding("mail.malformed", f"MIME parts nested deeper than {_MIME_DEPTH_MAX}"))
                self.too_deep_reported = True
            return
        declared = content_type(part).value
        if declared in _SKIPPED_TYPES:
            return
        try:
            children = part.get_payload() if part.is_multipart() else None
        except Exception:  # noqa: BLE001
            children = None
        if isinstance(children, list):
            if declared in _FORWARDED_TYPES or (declared.startswith("message/") and len(children) == 1):
                name = safe_display_name(declared_filename(part), FORWARDED_MAIL)
                for inner in children:
                    if isinstance(inner, Message):
                        self.part(inner, path + (name,), depth + 1, False, False)
                return
            related = declared == "multipart/related"
            for child in children:
                if isinstance(child, Message):
                    self.part(child, path, depth + 1, is_top, related or in_related)
            return
        self.leaf(part, path, is_top, in_related, declared)

    def leaf(self, part: Message, path: tuple[str, ...], is_top: bool, in_related: bool, declared: str) -> None:
        raw_name = declared_filename(part)
        how = disposition(part).value
        content = _transfer_decoded(part)
        if declared.startswith("text/") and not raw_name and how != "attachment":
            if is_top and declared in ("text/plain", "text/html") and self.body_bytes_left > 0:
                content = _cut(content, self.body_bytes_left)
                self.body_bytes_left -= len(content)
                text = decode_bytes(content, content_type(part).params.get("charset"))
                (self.plain if declared == "text/plain" else self.html).append(text)
            return
        if in_related and declared.startswith("image/") and how != "attachment" and not is_pdf(content):
            return  # a picture embedded in the HTML body (logos), not an attachment
        if not content:
            return
        if self.attachments >= self.limits.attachments_max:
            if not self.too_many_reported:
                self.problems.append(_finding(
                    "mail.too_many_attachments",
                    f"more than {self.limits.attachments_max} attachments; the rest were not read",
                    limit=str(self.limits.attachments_max),
                ))
                self.too_many_reported = True
            return
        self.attachments += 1
        self.content(content, raw_name, declared, path, archive_depth=0)

    def _fallback_name(self, declared: str) -> str:
        self.unnamed += 1
        return f"attachment-{self.unnamed}{_EXTENSION_BY_TYPE.get(declared, '')}"

    def content(self, content: bytes, raw_name: str | None, declared: str, path: tuple[str, ...],
                archive_depth: int) -> None:
        self._tick(part=False)  # archive entries have their own budget; only the clock counts here
        name = safe_display_name(raw_name, "") or self._fallback_name(declared)
        tnef = is_tnef(content)
        if tnef or (is_zip(content) and not is_office_container(content)):
            if archive_depth >= self.limits.archive_depth_max:
                self.problems.append(_finding(
                    "doc.archive_too_large",
                    f"archives nested deeper than {self.limits.archive_depth_max} levels",
                    document=name,
                ))
                return
            unpack = unpack_tnef if tnef else unpack_zip
            unpacked = unpack(content, self.budget, name)
            self.problems.extend(unpacked.problems)
            for entry in unpacked.entries:
                self.content(entry.content, entry.raw_name, _type_for_name(entry.raw_name), path + (name,),
                             archive_depth + 1)
            return
        pdf = is_pdf(content)
        if pdf and len(content) > self.limits.pdf_max_bytes:
            self.problems.append(_finding(
                "doc.too_large",
                f"PDF of {len(content)} bytes exceeds the limit of {self.limits.pdf_max_bytes}",
                document=name,
                limit=f"{self.limits.pdf_max_bytes // (1024 * 1024)}MB",
            ))
            return
        self.documents.append(MailDocument(
            display_name=name,
            content=content,
            sha256=hashlib.sha256(content).hexdigest(),
            declared_type=declared,
            is_pdf=pdf,
            path=path + (name,),
            raw_name=raw_name or "",
            in_archive=archive_depth > 0,
        ))


def walk_mail(raw: bytes, *, authserv_id: str | None = None, limits: MailLimits = MailLimits(),
              key_patterns: tuple[re.Pattern[str], re.Pattern[str]] | None = None) -> WalkedMail:
    """Documents and context of one raw mail; ``authserv_id`` is our receiving server's (RFC 8601).

    ``key_patterns``: the (保証契約番号, 認証キー) patterns of config/rules.toml for keys typed in
    the body; without them, this project's own formats."""
    walker = _Walker(limits, time.monotonic() + limits.walk_seconds)
    if _header_end(raw) > HEADER_BLOCK_MAX:
        return _walk_headers_only(raw, authserv_id, _unreadable(f"a header block over {HEADER_BLOCK_MAX} bytes"))
    if _delimiter_lines(raw) > 2 * limits.mime_parts_max + 2:
        return _walk_headers_only(raw, authserv_id, _unreadable(
            f"more than {limits.mime_parts_max} MIME parts (counted before parsing)"))
    try:
        message = email.message_from_bytes(raw, policy=TOLERANT_POLICY)
    except Exception as error:  # noqa: BLE001 - includes RecursionError on absurd nesting
        # Keep what the headers say (sender, subject, automatic?) even when the body is beyond us.
        try:
            message = BytesHeaderParser(policy=TOLERANT_POLICY).parsebytes(raw)
        except Exception:  # noqa: BLE001
            message = BytesHeaderParser(policy=TOLERANT_POLICY).parsebytes(b"")
        walker.problems.append(_finding("mail.malformed", f"cannot parse the mail: {type(error).__name__}"))
    else:
        try:
            walker.part(message, (), 0, True, False)
        except RecursionError:
            walker.problems.append(_finding("mail.malformed", "MIME structure too deep to walk"))
        except OverLimit as over:
            return _walk_headers_only(raw, authserv_id, _unreadable(str(over)), message)
    subject_text = mail_context.subject(message)
    verdict = mail_context.automatic(message, content_type(message).value, subject_text, bool(walker.documents))
    reasons = verdict.reasons
    if not verdict.automatic:
        reasons = machine_reasons(message, raw, has_pdf=any(d.is_pdf for d in walker.documents))
    body = mail_context.choose_body(walker.plain, walker.html)
    return WalkedMail(
        message_id=mail_context.message_id(message),
        subject=subject_text,
        sender=mail_context.sender(message),
        date=mail_context.sent_date(message),
        body_text=body,
        documents=tuple(walker.documents),
        problems=tuple(walker.problems),
        automatic=bool(reasons),
        automatic_reasons=reasons,
        authentication=authentication(message, authserv_id),
        typed_keys=mail_context.typed_keys(body, *(key_patterns or ())),
    )


def _cut(data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of body text, cut at a line end so no character is split."""
    if len(data) <= limit:
        return data
    line_end = data.rfind(b"\n", 0, limit)
    return data[: line_end + 1] if line_end >= limit // 2 else data[:limit]


def _header_end(raw: bytes) -> int:
    """Where the top header block ends (the first empty line), or the mail's length."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(raw)


def parse_headers(raw: bytes) -> Message:
    """The header block only (the body is never parsed): enough for who, what and whether a machine.

    At most HEADER_BLOCK_MAX bytes of it are read; an honest header block is a few kilobytes."""
    try:
        return BytesHeaderParser(policy=TOLERANT_POLICY).parsebytes(raw[: min(_header_end(raw), HEADER_BLOCK_MAX)])
    except Exception:  # noqa: BLE001
        return BytesHeaderParser(policy=TOLERANT_POLICY).parsebytes(b"")


def walk_headers(raw: bytes, *, authserv_id: str | None = None) -> WalkedMail:
    """What the header block alone says (the body is never parsed): sender, subject, authentication
    and whether a machine sent it. Enough to leave automatic mail, even over-size, unanswered."""
    return _walk_headers_only(raw, authserv_id, None)


def unreadable_walk(raw: bytes, authserv_id: str | None, reason: str) -> WalkedMail:
    """A mail the walk did not finish: what its headers say, and ``mail.unreadable`` with ``reason``."""
    return _walk_headers_only(raw, authserv_id, _unreadable(reason))


def _walk_headers_only(raw: bytes, authserv_id: str | None, problem: Finding | None,
                       message: Message | None = None) -> WalkedMail:
    """A mail over a limit: what its headers say, no document, no body, and the one problem."""
    message = message if message is not None else parse_headers(raw)
    subject_text = mail_context.subject(message)
    verdict = mail_context.automatic(message, content_type(message).value, subject_text, False)
    return WalkedMail(
        message_id=mail_context.message_id(message),
        subject=subject_text,
        sender=mail_context.sender(message),
        date=mail_context.sent_date(message),
        body_text="",
        documents=(),
        problems=(problem,) if problem else (),
        automatic=verdict.automatic,
        automatic_reasons=verdict.reasons,
        authentication=authentication(message, authserv_id),
        typed_keys=(),
    )
