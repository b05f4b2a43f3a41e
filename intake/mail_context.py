"""What a mail says about itself besides its documents.

Sender addresses, whether the mail was sent by a machine (and must not be answered), the body
text and any 保証契約番号 / 認証キー typed into it. (What our server's Authentication-Results
say is in ``intake.authentication_results``.) Every function takes a parsed message and never
raises on malformed headers.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser

from email_validator import EmailNotValidError, validate_email

from intake.authentication_results import strip_comments
from intake.mime_headers import header_names, parse_addresses, raw_value, raw_values
from intake.text_decoding import clean_line, decode_header, raw_header_to_text
from verifier import access_key, guarantee_no

# ---------------------------------------------------------------------------------------------
# Identity: Message-ID, Date, Subject, From / Reply-To
# ---------------------------------------------------------------------------------------------


def message_id(message: Message) -> str | None:
    raw = raw_value(message, "message-id")
    if raw is None:
        return None
    text = raw_header_to_text(raw).strip()
    match = re.search(r"<([^<>\s]{1,900})>", text)
    value = match.group(1) if match else text.split()[0] if text.split() else ""
    value = "".join(char for char in value if 0x21 <= ord(char) <= 0x7E)
    return value or None


def subject(message: Message) -> str:
    return decode_header(raw_value(message, "subject"))


def sent_date(message: Message) -> datetime | None:
    raw = raw_value(message, "date")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(clean_line(raw_header_to_text(raw)))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(frozen=True)
class MailAddress:
    header: str  # "From" or "Reply-To"
    display_name: str
    address: str  # as written (decoded); shown to staff, never trusted
    normalized: str | None  # email-validator's normal form when valid
    valid: bool
    error: str = ""  # why the address is not valid


@dataclass(frozen=True)
class Sender:
    from_: tuple[MailAddress, ...]
    reply_to: tuple[MailAddress, ...]

    @property
    def address(self) -> MailAddress | None:
        """The author: the one From address, if there is exactly one."""
        return self.from_[0] if len(self.from_) == 1 else None

    @property
    def valid(self) -> bool:
        return len(self.from_) == 1 and self.from_[0].valid


def _checked(header: str, name: str, address: str) -> MailAddress:
    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as error:
        return MailAddress(header, name, address, None, False, str(error))
    except Exception as error:  # noqa: BLE001 - the validator must not break the intake
        return MailAddress(header, name, address, None, False, f"cannot validate: {error}")
    return MailAddress(header, name, address, result.normalized, True)


def sender(message: Message) -> Sender:
    def addresses(header: str) -> tuple[MailAddress, ...]:
        found = []
        for raw in raw_values(message, header):
            for parsed in parse_addresses(raw):
                found.append(_checked(header, parsed.display_name, parsed.address))
        return tuple(found)

    return Sender(addresses("From"), addresses("Reply-To"))


# ---------------------------------------------------------------------------------------------
# Automatic mail (RFC 3834 and what real auto-responders send)
# ---------------------------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(
    r"^\s*(?:\[?(?:自動応答|自動返信|自動送信|自動転送|不在通知|不在のお知らせ|不在|休暇|外出中)\]?"
    r"|out of (?:the )?office|automatic reply|auto[- ]?reply|autoreply|auto[- ]?response"
    r"|undeliverable|undelivered mail|delivery status notification|mail delivery failed"
    r"|returned mail|delivery failure)",
    re.IGNORECASE,
)
_DAEMONS = {"mailer-daemon", "postmaster"}


@dataclass(frozen=True)
class AutomaticVerdict:
    automatic: bool
    reasons: tuple[str, ...] = ()  # why; the subject heuristic is listed when it helped decide


def _token(raw: str | None) -> str:
    if raw is None:
        return ""
    text = strip_comments(raw_header_to_text(raw))
    return text.split(";")[0].strip().lower()


def automatic(message: Message, top_type: str, subject_text: str, has_documents: bool) -> AutomaticVerdict:
    """Whether a machine sent this mail, so it must be recorded but never answered.

    Decisive: RFC 3834 Auto-Submitted other than "no", a null Return-Path, Precedence
    bulk/list/junk, any List-* header, a multipart/report (bounces, read receipts), a
    MAILER-DAEMON/postmaster sender, X-Auto-Response-Suppress, X-Autoreply/X-Autorespond.
    An auto-reply-looking subject only counts together with other evidence: the mail is a
    reply (In-Reply-To/References) that carries no document.
    """
    reasons: list[str] = []
    names = set(header_names(message))
    auto_submitted = _token(raw_value(message, "auto-submitted"))
    if auto_submitted and auto_submitted != "no":
        reasons.append(f"Auto-Submitted: {auto_submitted}")
    for raw in raw_values(message, "return-path"):
        path = strip_comments(raw_header_to_text(raw)).strip()
        if path in ("", "<>") or re.fullmatch(r"<\s*>", path):
            reasons.append("null Return-Path")
            break
    precedence = _token(raw_value(message, "precedence"))
    if precedence in ("bulk", "list", "junk"):
        reasons.append(f"Precedence: {precedence}")
    lists = sorted(name for name in names if name.startswith("list-"))
    if lists:
        reasons.append(f"mailing-list header {lists[0]}")
    if top_type == "multipart/report":
        reasons.append("multipart/report (delivery or read report)")
    for raw in raw_values(message, "from"):
        for parsed in parse_addresses(raw):
            local = parsed.address.rpartition("@")[0] if "@" in parsed.address else parsed.address
            if local.lower() in _DAEMONS:
                reasons.append(f"sent by {local}")
    if "x-auto-response-suppress" in names:
        reasons.append("X-Auto-Response-Suppress")
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        if name in names:
            reasons.append(name)
    if reasons:
        return AutomaticVerdict(True, tuple(reasons))
    if _AUTO_SUBJECT.search(subject_text) and not has_documents and (
        "in-reply-to" in names or "references" in names
    ):
        return AutomaticVerdict(True, ("auto-reply subject on a reply without documents",))
    return AutomaticVerdict(False)


# ---------------------------------------------------------------------------------------------
# Body text
# ---------------------------------------------------------------------------------------------

_BLOCK_TAGS = {"br", "p", "div", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6",
               "blockquote", "pre", "hr", "section", "article", "header", "footer", "dd", "dt"}
_SKIP_TAGS = {"script", "style", "head", "title", "template", "noscript"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP_TAGS:
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in _SKIP_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable text of an HTML body: tags dropped, blocks on their own lines, entities resolved."""
    extractor = _TextExtractor()
    try:
        extractor.feed(html)
        extractor.close()
    except Exception:  # noqa: BLE001 - HTMLParser is lenient, but never let it stop the intake
        pass
    text = "".join(extractor.parts).replace("\xa0", " ")
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def choose_body(plain_parts: list[str], html_parts: list[str]) -> str:
    """The best text of a mail: its text/plain parts, else its HTML parts as text."""
    if any(part.strip() for part in plain_parts):
        text = "\n".join(plain_parts)
    else:
        text = "\n".join(html_to_text(part) for part in html_parts)
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


# ---------------------------------------------------------------------------------------------
# 保証契約番号 / 認証キー typed into the body
# ---------------------------------------------------------------------------------------------

_DASHES = "‐‑‒–—―ー−-﹣－"
_DEFAULT_KEY = re.compile(
    r"(?<![0-9A-Za-z])[0-9A-Za-z]{4}(?:[ \t]?-[ \t]?|[ \t])?[0-9A-Za-z]{4}(?:[ \t]?-[ \t]?|[ \t])?"
    r"[0-9A-Za-z]{4}(?:[ \t]?-[ \t]?|[ \t])?[0-9A-Za-z]{4}(?![0-9A-Za-z])"
)


@dataclass(frozen=True)
class TypedKey:
    """A 保証契約番号 and/or 認証キー found in the body; the key is never shown in repr or logs."""

    guarantee_no: str | None
    guarantee_no_valid: bool
    access_key: str | None = field(default=None, repr=False)  # canonical 16 symbols
    access_key_valid: bool = False  # check symbol right
    access_key_masked: str | None = None


def _fold(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text)
    return re.sub(f"[{re.escape(_DASHES)}]", "-", folded)


def typed_keys(
    text: str,
    guarantee_no_pattern: re.Pattern[str] | None = None,
    access_key_pattern: re.Pattern[str] | None = None,
) -> tuple[TypedKey, ...]:
    """Numbers and keys typed in ``text``, each key paired with the nearest number before it.

    Patterns default to this project's formats; the pipeline may pass those of config/rules.toml.
    Keys with a wrong check symbol are returned too (``access_key_valid`` False): the reply can
    say that the key was mistyped.
    """
    folded = _fold(text)
    number_pattern = guarantee_no_pattern or guarantee_no.PATTERN
    key_pattern = access_key_pattern or _DEFAULT_KEY
    numbers = [(m.start(), guarantee_no.normalise(re.sub(r"\s", "", m.group(0))))
               for m in number_pattern.finditer(folded)]
    keys: list[tuple[int, str]] = []
    for match in key_pattern.finditer(folded):
        candidate = match.group(0)
        compact = re.sub(r"[\s-]", "", candidate)
        if not re.search(r"[A-Za-z]", compact):
            continue  # only digits: a card or phone number (a real key has a letter but once in 10^8)
        if not re.search(r"[-\s]", candidate) and not re.search(r"\d", compact):
            continue  # 16 bare letters: a word, not a key
        try:
            keys.append((match.start(), access_key.canonical(candidate)))
        except access_key.AccessKeyError:
            continue
    found: list[TypedKey] = []
    used_numbers: set[int] = set()
    for position, key in keys:
        before = [n for n in numbers if n[0] < position]
        number = before[-1] if before else next((n for n in numbers if n[0] > position), None)
        if number is not None:
            used_numbers.add(number[0])
        found.append(TypedKey(
            guarantee_no=number[1] if number else None,
            guarantee_no_valid=bool(number) and guarantee_no.is_well_formed(number[1]),
            access_key=key,
            access_key_valid=access_key.is_valid(key),
            access_key_masked=access_key.mask(key),
        ))
    for position, number_text in numbers:
        if position not in used_numbers:
            found.append(TypedKey(number_text, guarantee_no.is_well_formed(number_text)))
    return tuple(found)
