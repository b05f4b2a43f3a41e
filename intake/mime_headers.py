"""Reading header fields of hostile mail without letting a malformed one raise.

The standard library's header objects are not used for values: they reject or mangle what
Japanese mailers send (raw 8-bit names, encoded words inside quoted parameters). Values are taken
as the parser stored them (``raw_items``) and decoded by ``intake.text_decoding``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.policy import EmailPolicy
from email.utils import getaddresses
from urllib.parse import unquote_to_bytes

from intake.text_decoding import clean_line, decode_bytes, decode_encoded_words, raw_header_to_text

class TolerantPolicy(EmailPolicy):
    """``email.policy.default`` whose header objects never raise.

    The parser itself reads Content-Type through the policy while splitting the mail, and the
    standard header classes raise on some hostile values (an RFC 2231 parameter in a charset
    whose bytes do not decode, for one), which would lose the whole mail. A header that cannot
    be parsed is handed back as its plain text, which the library's legacy code paths accept.
    """

    def header_fetch_parse(self, name, value):
        # The library's structured parsers re-parse a header on every access, and its parameter
        # parsing is quadratic in the number of parameters: an absurdly long header is cut first.
        limit = PARAMETERISED_VALUE_MAX if name.lower() in _PARAMETERISED else HEADER_VALUE_MAX
        if len(value) > limit:
            value = value[:limit]
        try:
            header = super().header_fetch_parse(name, value)
            str(header)  # some failures only happen when the parse tree is rendered
            return header
        except Exception:  # noqa: BLE001 - any failure means "use the text as it is"
            return re.sub(r"\r?\n", "", value)


# Far above any honest header (a long Japanese file name in RFC 2231 sections is about 2 KB).
HEADER_VALUE_MAX = 16 * 1024
PARAMETERISED_VALUE_MAX = 4 * 1024
_PARAMETERISED = {"content-type", "content-disposition"}
_ADDRESSES_MAX = 50

TOLERANT_POLICY = TolerantPolicy()

# RFC 2231 allows continuations; no honest name needs more sections than this.
_MAX_SECTIONS = 64
_TOKEN_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


def raw_values(message: Message, name: str) -> list[str]:
    """Every raw value of header ``name``, top to bottom (surrogate-escaped 8-bit kept)."""
    wanted = name.lower()
    try:
        items = list(message.raw_items())
    except Exception:  # noqa: BLE001 - a broken message object must not stop the walk
        return []
    values = []
    for key, value in items:
        if isinstance(key, str) and key.lower() == wanted:
            values.append(value if isinstance(value, str) else str(value))
    return values


def raw_value(message: Message, name: str) -> str | None:
    """The first raw value of header ``name``, or None."""
    values = raw_values(message, name)
    return values[0] if values else None


def header_names(message: Message) -> list[str]:
    try:
        return [key.lower() for key, _ in message.raw_items() if isinstance(key, str)]
    except Exception:  # noqa: BLE001
        return []


def split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        # Only \" and \\ are unescaped: Windows mailers send C:\path\name.pdf unescaped.
        return re.sub(r'\\(["\\])', r"\1", inner)
    if value.startswith('"'):
        return value[1:]
    return value


@dataclass(frozen=True)
class ParsedHeader:
    value: str  # the main value, lower case (``application/pdf``, ``attachment``)
    params: dict[str, str]  # decoded parameter values by lower-case name


def parse_parameterised(raw: str | None) -> ParsedHeader:
    """Content-Type / Content-Disposition: the value and its decoded parameters.

    Handles RFC 2231 (``filename*=``, continuations ``filename*0*=``), RFC 2047 encoded words
    inside quoted values, raw 8-bit and raw JIS bytes.
    """
    if not raw:
        return ParsedHeader("", {})
    text = raw_header_to_text(raw[:PARAMETERISED_VALUE_MAX])
    pieces = split_outside_quotes(text, ";")
    main = pieces[0].strip().lower()
    plain: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[bool, str]]] = {}
    for piece in pieces[1:]:
        if "=" not in piece:
            continue
        key, _, value = piece.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        match = re.fullmatch(r"([^*]+)\*(?:(\d{1,3})(\*)?)?", key)
        if match:
            name = match.group(1)
            if match.group(2) is None:
                extended.setdefault(name, {})[0] = (True, unquote(value))
            else:
                index = int(match.group(2))
                if index < _MAX_SECTIONS:
                    extended.setdefault(name, {})[index] = (bool(match.group(3)), unquote(value))
            continue
        plain.setdefault(key, unquote(value))
    params = {name: decode_encoded_words(value) for name, value in plain.items()}
    for name, sections in extended.items():
        decoded = _join_rfc2231(sections)
        if decoded is not None:
            params[name] = decoded
    return ParsedHeader(main, params)


def _join_rfc2231(sections: dict[int, tuple[bool, str]]) -> str | None:
    if 0 not in sections:
        return None
    charset = ""
    chunks: list[bytes] = []
    for index in sorted(sections):
        is_encoded, value = sections[index]
        if index == 0 and is_encoded:
            parts = value.split("'", 2)
            if len(parts) == 3:
                charset, _, value = parts
        if is_encoded:
            chunks.append(unquote_to_bytes(value))
        else:
            chunks.append(value.encode("utf-8", "surrogateescape"))
    return decode_bytes(b"".join(chunks), charset or None)


def content_type(message: Message) -> ParsedHeader:
    """The declared type, defaulting as RFC 2045 says; a garbled type reads as octet-stream."""
    parsed = parse_parameterised(raw_value(message, "content-type"))
    if not parsed.value:
        return ParsedHeader("text/plain", parsed.params)
    if not _TOKEN_TYPE.fullmatch(parsed.value):
        return ParsedHeader("application/octet-stream", parsed.params)
    return parsed


def disposition(message: Message) -> ParsedHeader:
    return parse_parameterised(raw_value(message, "content-disposition"))


def declared_filename(message: Message) -> str | None:
    """The sender-given name: Content-Disposition filename, else Content-Type name (decoded, unsanitised)."""
    for parsed, key in ((disposition(message), "filename"), (content_type(message), "name")):
        value = parsed.params.get(key)
        if value and value.strip():
            return value
    return None


@dataclass(frozen=True)
class RawAddress:
    display_name: str
    address: str


def parse_addresses(raw: str | None) -> list[RawAddress]:
    """Addresses in an address header, display names decoded; never raises."""
    if not raw:
        return []
    text = raw_header_to_text(raw[:HEADER_VALUE_MAX])
    try:
        pairs = getaddresses([text])[:_ADDRESSES_MAX]
    except Exception:  # noqa: BLE001 - the address parser has raised on hostile input before
        return [RawAddress("", clean_line(text))]
    out = []
    for name, address in pairs:
        if not name and not address:
            continue
        out.append(RawAddress(clean_line(decode_encoded_words(name)), clean_line(address)))
    if not out and text.strip():
        out.append(RawAddress("", clean_line(text)))
    return out
