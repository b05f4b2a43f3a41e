"""Building the mails keydesk sends, so that nothing a sender wrote can add or bend a header.

Subjects and display names often carry text that came from a sender (a work name, a contractor's
name, the subject being answered). Python's own header machinery decodes RFC 2047 encoded-words
it is given and, when folding, can write their decoded CR/LF back out as real line breaks; a
subject ``=?utf-8?b?DQpCY2M6IC4uLg==?=`` would become a ``Bcc:`` header. So keydesk encodes the
headers that carry free text itself:

- control characters (C0, C1, DEL, Unicode line/paragraph separators, bidi overrides and
  zero-width characters) are removed, whitespace is collapsed;
- text that is not plain short ASCII, or that contains ``=?`` (which a reader would decode), is
  written entirely as RFC 2047 ``B`` encoded-words, so a sender's ``=?…?=`` reaches the reader
  literally;
- the result is handed to the email policy as a finished header object (``name`` + ``fold``),
  which ``EmailPolicy.header_store_parse`` documents it stores and writes unchanged.

Charset: UTF-8 (body in base64, so the mail is 7-bit clean), or ISO-2022-JP on request for old
Japanese clients. Characters outside JIS X 0208 (①, 髙, half-width kana) cannot be written in
ISO-2022-JP; the Windows code points CP50220 maps (FULLWIDTH TILDE for 〜, …) are first mapped to
their JIS equivalents, and if anything still does not fit the whole message falls back to UTF-8.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Literal, Sequence

from mailer.outbox import new_message_id

log = logging.getLogger(__name__)

Charset = Literal["utf-8", "iso-2022-jp"]
AutoSubmitted = Literal["auto-replied", "auto-generated"]

# Characters a reader never sees but that reshape what is displayed or where a header ends.
_INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]"
)
_SPACES = re.compile(r"\s+")
# Everything that is not plain text in a body, keeping newlines and tabs.
_BODY_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_MSG_ID = re.compile(r"<([!-;=?-~]{1,250}@[!-;=?-~]{1,250})>")  # printable ASCII except < and >
# An atom-only display name can go out bare; anything else is quoted or encoded.
_PLAIN_PHRASE = re.compile(r"^[A-Za-z0-9 !#$%&'*+/=?^_`{|}~.-]*$")

# Windows (CP932/CP50220) code points whose JIS X 0208 character Python's codec knows by
# another Unicode name: mapping them keeps 〜 and − readable in ISO-2022-JP.
_WINDOWS_TO_JIS = str.maketrans({
    "\uff5e": "\u301c",  # FULLWIDTH TILDE → WAVE DASH
    "\u2225": "\u2016",  # PARALLEL TO → DOUBLE VERTICAL LINE
    "\uff0d": "\u2212",  # FULLWIDTH HYPHEN-MINUS → MINUS SIGN
    "\uffe0": "\u00a2",  # FULLWIDTH CENT SIGN
    "\uffe1": "\u00a3",  # FULLWIDTH POUND SIGN
    "\uffe2": "\u00ac",  # FULLWIDTH NOT SIGN
})

_MAX_HEADER_TEXT = 400
_MAX_ENCODED_WORD = 75  # RFC 2047 §2
_MAX_LINE = 76  # RFC 2047 §2 for lines with encoded-words (RFC 5322 recommends 78 for all)
_MAX_REFERENCES = 10


class MessageError(ValueError):
    """A message that cannot be built safely (e.g. an address that is not an address)."""


@dataclass(frozen=True)
class Mailbox:
    """An address and the name shown for it (the name may come from a sender: it is cleaned)."""

    address: str
    name: str = ""


@dataclass(frozen=True)
class Thread:
    """In-Reply-To and References for an answer (see ``thread_headers``)."""

    in_reply_to: str | None
    references: tuple[str, ...]


def clean_header_text(value: str, max_length: int = _MAX_HEADER_TEXT) -> str:
    """One line of displayable text: control and invisible characters gone, spaces collapsed."""
    text = _INVISIBLE.sub(" ", value or "")
    text = _SPACES.sub(" ", text).strip()
    return text[:max_length].rstrip()


def clean_body_text(value: str) -> str:
    """Body text with newlines normalised and control characters (ESC, NUL, bidi overrides) removed."""
    text = (value or "").replace("\r\n", "\n").replace("\r", "\n")
    return _BODY_CONTROLS.sub("", text)


def check_address(address: str) -> str:
    """``local@domain`` in plain ASCII, or MessageError. Nothing else may go into an address header."""
    if not isinstance(address, str) or len(address) > 254 or address.count("@") < 1:
        raise MessageError(f"not a mail address: {address!r}")
    local, _, domain = address.rpartition("@")
    if len(local) > 64 or not _LOCAL_PART.match(local) or not _DOMAIN.match(domain):
        raise MessageError(f"not a mail address: {address!r}")
    return address


def thread_headers(parent_message_id: str | None, parent_references: str | None = None) -> Thread:
    """In-Reply-To and References for an answer to a mail with these (hostile) header values.

    Only well-formed ``<id@host>`` tokens are kept; References keeps the first and the most recent
    ids (RFC 5322 §3.6.4 allows trimming), so a crafted chain cannot grow the header without bound.
    """
    parent = _MSG_ID.search(parent_message_id or "")
    parent_id = f"<{parent.group(1)}>" if parent else None
    chain: list[str] = []
    for match in _MSG_ID.finditer(parent_references or ""):
        token = f"<{match.group(1)}>"
        if token not in chain and token != parent_id:
            chain.append(token)
    if len(chain) > _MAX_REFERENCES - 1:
        chain = chain[:1] + chain[-(_MAX_REFERENCES - 2):]
    if parent_id:
        chain.append(parent_id)
    return Thread(parent_id, tuple(chain))


class _PreparedHeader(str):
    """A header keydesk folded itself; reads as its displayable text, is written as prepared.

    The email policy stores values that have a ``name`` unchanged and writes them with ``fold``.
    """

    def __new__(cls, name: str, display: str, tokens: Sequence[str]) -> "_PreparedHeader":
        self = super().__new__(cls, display)
        self.name = name
        self._tokens = list(tokens)
        return self

    def fold(self, *, policy) -> str:
        lines: list[str] = []
        line = f"{self.name}:"
        for token in self._tokens:
            if len(line) + 1 + len(token) > _MAX_LINE and line != f"{self.name}:":
                lines.append(line)
                line = ""
            line += " " + token
        lines.append(line)
        return policy.linesep.join(lines) + policy.linesep

    def __reduce__(self):  # copies and pickles keep the prepared form
        return (_PreparedHeader, (self.name, str(self), self._tokens))


def _encoded_words(text: str, charset: Charset, first_room: int = _MAX_ENCODED_WORD) -> list[str]:
    """``B`` encoded-words of at most 75 characters; the first at most ``first_room``."""
    label = "UTF-8" if charset == "utf-8" else "ISO-2022-JP"
    codec = "utf-8" if charset == "utf-8" else "iso2022_jp"
    overhead = len(f"=?{label}?B??=")
    words: list[str] = []
    chunk = ""
    for char in text:
        candidate = chunk + char
        room = (first_room if not words else _MAX_ENCODED_WORD) - overhead
        # Each word is encoded on its own, so an ISO-2022-JP word ends back in ASCII (RFC 1468).
        if chunk and len(base64.b64encode(candidate.encode(codec))) > room:
            words.append(chunk)
            chunk = char
        else:
            chunk = candidate
    if chunk:
        words.append(chunk)
    return [f"=?{label}?B?{base64.b64encode(w.encode(codec)).decode('ascii')}?=" for w in words]


def _needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text or "?=" in text


def _first_room(header_name: str) -> int:
    # RFC 2047 §2: a line holding an encoded-word is at most 76 characters, "Name: " included.
    return min(_MAX_ENCODED_WORD, _MAX_LINE - len(header_name) - 2)


def _text_tokens(text: str, charset: Charset, header_name: str) -> list[str]:
    if not _needs_encoding(text) and len(text) <= _MAX_LINE - len(header_name) - 2:
        return text.split(" ") if text else [""]
    return _encoded_words(text, charset, _first_room(header_name))


def _phrase_tokens(name: str, charset: Charset, first_room: int) -> list[str]:
    if not name:
        return []
    if _needs_encoding(name):
        return _encoded_words(name, charset, first_room)
    if _PLAIN_PHRASE.match(name) and "." not in name:
        return name.split(" ")
    return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']


def subject_header(subject: str, charset: Charset = "utf-8") -> _PreparedHeader:
    text = clean_header_text(subject)
    return _PreparedHeader("Subject", text, _text_tokens(text, charset, "Subject"))


def address_header(name: str, mailboxes: Sequence[Mailbox], charset: Charset = "utf-8") -> _PreparedHeader:
    """From / To / Cc / Reply-To with cleaned, encoded display names and checked addresses."""
    if not mailboxes:
        raise MessageError(f"{name}: no address")
    tokens: list[str] = []
    shown: list[str] = []
    for index, box in enumerate(mailboxes):
        address = check_address(box.address)
        display = clean_header_text(box.name, 120)
        phrase = _phrase_tokens(display, charset, _first_room(name) if index == 0 else _MAX_ENCODED_WORD)
        last = index == len(mailboxes) - 1
        tokens += phrase + [f"<{address}>" + ("" if last else ",")] if phrase else [address + ("" if last else ",")]
        shown.append(f"{display} <{address}>" if display else address)
    return _PreparedHeader(name, ", ".join(shown), tokens)


def _ids_header(name: str, ids: Sequence[str]) -> _PreparedHeader:
    return _PreparedHeader(name, " ".join(ids), list(ids))


def _fits_iso_2022_jp(texts: Sequence[str]) -> bool:
    try:
        for text in texts:
            text.encode("iso2022_jp")
    except UnicodeEncodeError:
        return False
    return True


def choose_charset(requested: Charset, texts: Sequence[str]) -> tuple[Charset, list[str]]:
    """The charset actually used and the texts prepared for it (see the module docstring)."""
    if requested == "utf-8":
        return "utf-8", list(texts)
    mapped = [t.translate(_WINDOWS_TO_JIS) for t in texts]
    if _fits_iso_2022_jp(mapped):
        return "iso-2022-jp", mapped
    return "utf-8", list(texts)


def build_message(
    *,
    sender: Mailbox,
    to: Sequence[Mailbox],
    subject: str,
    text: str,
    now: datetime,
    html: str | None = None,
    charset: Charset = "utf-8",
    auto_submitted: AutoSubmitted | None = "auto-generated",
    suppress_auto_responses: bool = True,
    cc: Sequence[Mailbox] = (),
    reply_to: Mailbox | None = None,
    thread: Thread | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """A complete message with Message-ID and Date; add attachments with ``add_attachment``.

    ``auto_submitted`` is ``auto-replied`` for answers and ``auto-generated`` for digests and
    notices (RFC 3834), so well-behaved auto-responders stay quiet; ``X-Auto-Response-Suppress``
    asks Exchange/Outlook for the same.
    """
    body = clean_body_text(text)
    html_body = clean_body_text(html) if html is not None else None
    names = [sender.name, *(b.name for b in to), *(b.name for b in cc), reply_to.name if reply_to else ""]
    texts = [clean_header_text(subject), body, *(n for n in names if n)]
    if html_body is not None:
        texts.append(html_body)
    used, _ = choose_charset(charset, texts)
    if used != charset:
        log.info("message to %s falls back to UTF-8: some text is not in ISO-2022-JP", check_address(to[0].address) if to else "-")

    def prepare(value: str) -> str:
        return value.translate(_WINDOWS_TO_JIS) if used == "iso-2022-jp" else value

    msg = EmailMessage()
    msg["From"] = address_header("From", [Mailbox(sender.address, prepare(sender.name))], used)
    msg["To"] = address_header("To", [Mailbox(b.address, prepare(b.name)) for b in to], used)
    if cc:
        msg["Cc"] = address_header("Cc", [Mailbox(b.address, prepare(b.name)) for b in cc], used)
    if reply_to is not None:
        msg["Reply-To"] = address_header("Reply-To", [Mailbox(reply_to.address, prepare(reply_to.name))], used)
    msg["Subject"] = subject_header(prepare(subject), used)
    moment = now if now.tzinfo else now.replace(tzinfo=timezone.utc)
    msg["Date"] = format_datetime(moment)
    msg["Message-ID"] = message_id or new_message_id(check_address(sender.address))
    if thread is not None:
        if thread.in_reply_to:
            msg["In-Reply-To"] = _ids_header("In-Reply-To", [thread.in_reply_to])
        if thread.references:
            msg["References"] = _ids_header("References", thread.references)
    if auto_submitted:
        msg["Auto-Submitted"] = auto_submitted
        if auto_submitted == "auto-replied":
            # Older and Japanese auto-responders know only this header, not RFC 3834's.
            msg["Precedence"] = "auto_reply"
    if suppress_auto_responses:
        msg["X-Auto-Response-Suppress"] = "All"
    _set_text(msg, prepare(body), "plain", used)
    if html_body is not None:
        msg.add_alternative(prepare(html_body), subtype="html", charset=used, cte=_cte(used))
    return msg


def _cte(charset: Charset) -> str:
    # ISO-2022-JP is 7-bit by design (RFC 1468); UTF-8 goes as base64 so every hop sees 7-bit.
    return "7bit" if charset == "iso-2022-jp" else "base64"


def _set_text(msg: EmailMessage, body: str, subtype: str, charset: Charset) -> None:
    if body and not body.endswith("\n"):
        body += "\n"
    msg.set_content(body, subtype=subtype, charset=charset, cte=_cte(charset))
