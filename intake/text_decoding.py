"""Turning the bytes Japanese mailers send into text, without U+FFFD where the sender meant a character.

What real mail carries, and what the standard library does not handle:

- ISO-2022-JP that is really Microsoft's CP50220/CP50221: NEC row 13 (①, ㈱, Ⅲ), the
  NEC-selected IBM extensions (髙, 﨑) and half-width katakana after ``ESC ( I``. Python's
  ``iso2022_jp`` codecs reject all of these. Every JIS X 0208 pair is therefore converted to its
  Shift_JIS code and decoded with ``cp932``, which is how Windows, and so the sender, reads it.
  That also gives ～ (U+FF5E) rather than 〜 (U+301C), as the sender's PC showed it.
- Shift_JIS labelled parts are decoded as ``cp932`` (its Microsoft superset, which is what is sent).
- Raw 8-bit bytes in headers (old phones and mailers) are guessed: UTF-8, then CP932, then EUC-JP.
- RFC 2047 encoded words, also where the RFC forbids them but mailers put them (inside quoted
  parameter values), with adjacent words of one charset joined before decoding, because mailers
  split a multi-byte character across two words.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata

_ESC = 0x1B

# Charset labels that mean "Microsoft's Shift_JIS" in practice.
_SJIS_LABELS = {
    "shift_jis", "shift-jis", "sjis", "s-jis", "x-sjis", "x-shift_jis", "shift_jisx0213", "cp932",
    "windows-31j", "ms932", "ms_kanji", "csshiftjis", "cswindows31j", "x-ms-cp932",
}
_JIS_LABELS = {
    "iso-2022-jp", "iso2022jp", "iso_2022_jp", "csiso2022jp", "iso-2022-jp-1", "iso-2022-jp-ext",
    "iso-2022-jp-2", "iso-2022-jp-3", "iso-2022-jp-2004", "iso-2022-jp-ms", "cp50220", "cp50221",
    "cp50222", "jis", "x-jis",
}
_EUC_LABELS = {"euc-jp", "eucjp", "x-euc-jp", "euc_jp", "cseucpkdfmtjapanese", "cp51932", "eucjp-ms"}
_ASCII_LABELS = {"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "us"}
# The only codecs a declared charset may select besides the Japanese ones above: UTF-16/32 and the
# Western single-byte sets. Every one decodes in linear time. Anything else (punycode, idna,
# utf-7, the CJK codecs of other countries, bytes-to-bytes codecs) is never run on mail bytes: the
# guesser reads the part instead. Some of Python's codecs are quadratic in the input (punycode),
# which a sender could use to keep the intake busy for hours.
_ALLOWED_CODECS = frozenset(
    {"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "mac-roman"}
    | {f"iso8859-{n}" for n in (1, 2, 3, 4, 9, 10, 13, 14, 15, 16)}
    | {"cp1250", "cp1252", "cp1254", "cp1257"}
)


def jis_pair_to_sjis(first: int, second: int) -> bytes:
    """The Shift_JIS bytes of one JIS X 0208 code (both bytes in 0x21..0x7E)."""
    lead = ((first + 1) >> 1) + (0x70 if first <= 0x5E else 0xB0)
    if first & 1:
        trail = second + (0x1F if second < 0x60 else 0x20)
    else:
        trail = second + 0x7E
    return bytes((lead, trail))


def decode_iso2022jp(data: bytes) -> str:
    """ISO-2022-JP as Windows writes it (CP50220/50221/50222), decoded through cp932.

    Escape sequences for other sets (JIS X 0212, JIS X 0213 planes) fall back to Python's
    ``iso2022_jp_2004``/``iso2022_jp_2`` for that stretch. 8-bit bytes inside (a mislabelled
    Shift_JIS part) are handed to the guesser.
    """
    if any(byte >= 0x80 for byte in data):
        return guess_decode(data)
    out: list[str] = []
    mode = "ascii"  # ascii | kanji | kana | other
    other_escape = b""
    other_chunk = bytearray()
    shifted_out = False  # SO/SI katakana (CP50222)
    i = 0
    length = len(data)

    def flush_other() -> None:
        if other_chunk:
            out.append(_decode_foreign_jis(other_escape + bytes(other_chunk)))
            other_chunk.clear()

    while i < length:
        byte = data[i]
        if byte == _ESC:
            flush_other()
            sequence, mode_after = _read_escape(data, i)
            if mode_after is None:
                # An escape we do not know: drop the ESC byte and carry on with the text.
                i += 1
                continue
            if mode_after == "other":
                other_escape = sequence
            if mode_after != "keep":
                mode = mode_after
            i += len(sequence)
            continue
        if byte == 0x0E:
            shifted_out = True
            i += 1
            continue
        if byte == 0x0F:
            shifted_out = False
            i += 1
            continue
        if byte in (0x0A, 0x0D):
            # JIS text returns to ASCII at line ends in practice; mailers rely on it.
            flush_other()
            out.append(chr(byte))
            i += 1
            continue
        if shifted_out and 0x21 <= byte <= 0x5F:
            out.append(bytes((byte + 0x80,)).decode("cp932"))
            i += 1
            continue
        if mode == "kanji":
            if i + 1 < length and 0x21 <= byte <= 0x7E and 0x21 <= data[i + 1] <= 0x7E:
                out.append(jis_pair_to_sjis(byte, data[i + 1]).decode("cp932", "replace"))
                i += 2
                continue
            out.append(chr(byte) if byte < 0x21 else "\ufffd")
            i += 1
            continue
        if mode == "kana":
            if 0x21 <= byte <= 0x5F:
                out.append(bytes((byte + 0x80,)).decode("cp932"))
            else:
                out.append(chr(byte))
            i += 1
            continue
        if mode == "other":
            other_chunk.append(byte)
            i += 1
            continue
        out.append(chr(byte))
        i += 1
    flush_other()
    return "".join(out)


_ESCAPES = {
    b"\x1b(B": "ascii",
    b"\x1b(J": "ascii",  # JIS X 0201 Roman: shown as ASCII by every Japanese mailer
    b"\x1b(H": "ascii",
    b"\x1b(I": "kana",
    b"\x1b$@": "kanji",
    b"\x1b$B": "kanji",
    b"\x1b$(B": "kanji",
    b"\x1b$(@": "kanji",
}
_OTHER_ESCAPES = (b"\x1b$(D", b"\x1b$(O", b"\x1b$(Q", b"\x1b$(P", b"\x1b$A", b"\x1b$(C", b"\x1b.A", b"\x1b.F")


def _read_escape(data: bytes, start: int) -> tuple[bytes, str | None]:
    if data.startswith(b"\x1b&@", start):
        # JIS X 0208-1990 announcer: the designation that follows is what counts.
        return b"\x1b&@", "keep"
    for sequence, mode in _ESCAPES.items():
        if data.startswith(sequence, start):
            return sequence, mode
    for sequence in _OTHER_ESCAPES:
        if data.startswith(sequence, start):
            return sequence, "other"
    return b"", None


def _decode_foreign_jis(chunk: bytes) -> str:
    # JIS X 0213 plane 1 is a superset of JIS X 0208: take cp932's reading where it has one.
    if chunk.startswith((b"\x1b$(O", b"\x1b$(Q")):
        body = chunk[4:]
        if len(body) % 2 == 0:
            try:
                return b"".join(jis_pair_to_sjis(body[k], body[k + 1]) for k in range(0, len(body), 2)).decode("cp932")
            except UnicodeDecodeError:
                pass
    for codec in ("iso2022_jp_2004", "iso2022_jp_2"):
        try:
            return (chunk + b"\x1b(B").decode(codec)
        except UnicodeDecodeError:
            continue
    return "\ufffd" * max(1, (len(chunk) - 3) // 2)


def _normalise_label(charset: str | None) -> str:
    if not charset:
        return ""
    return charset.strip().strip("\"'").lower()


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Text of a body part or header piece in its declared charset, falling back to a guess.

    A label that lies (Shift_JIS bytes declared as ISO-2022-JP or UTF-8, which happens) is
    caught by decoding strictly first; only the last resort inserts U+FFFD.
    """
    label = _normalise_label(charset)
    if label in _JIS_LABELS or (not label and b"\x1b$" in data):
        return decode_iso2022jp(data)
    if label in _SJIS_LABELS:
        try:
            return data.decode("cp932")
        except UnicodeDecodeError:
            return guess_decode(data)
    if label in _EUC_LABELS:
        return _decode_euc(data)
    if label in _ASCII_LABELS or not label:
        return guess_decode(data)
    if label in ("utf-8", "utf8"):
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return guess_decode(data)
    codec = _text_codec(label)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, ValueError, TypeError):
            pass
    return guess_decode(data)


def _text_codec(label: str) -> str | None:
    """The allowed codec for a charset label, or None: unknown, non-text or not on the allow-list."""
    if len(label) > 40:
        return None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name not in _ALLOWED_CODECS:
        return None
    return info.name


def charset_allowed(charset: str | None) -> bool:
    """Whether a declared charset is decoded as declared (else the part is read by the guesser)."""
    label = _normalise_label(charset)
    return (not label or label in _SJIS_LABELS | _JIS_LABELS | _EUC_LABELS | _ASCII_LABELS | {"utf-8", "utf8"}
            or _text_codec(label) is not None)


def _decode_euc(data: bytes) -> str:
    # eucJP-ms / CP51932 carry NEC row 13 (①) where euc_jis_2004 has the same characters.
    for codec in ("euc_jp", "euc_jis_2004"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return guess_decode(data)


def guess_decode(data: bytes) -> str:
    """Undeclared bytes: ASCII, UTF-8, CP932, EUC-JP in that order; then UTF-8 with U+FFFD."""
    if b"\x1b$" in data and all(byte < 0x80 for byte in data):
        return decode_iso2022jp(data)
    for codec in ("utf-8-sig", "cp932", "euc_jp", "euc_jis_2004"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([BbQq])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_BETWEEN_WORDS = re.compile(r"[ \t\r\n]*")


def header_bytes(raw: str | bytes) -> bytes:
    """A header value as the parser kept it (8-bit bytes surrogate-escaped) back to bytes."""
    if isinstance(raw, bytes):
        return raw
    return raw.encode("utf-8", "surrogateescape")


def raw_header_to_text(raw: str | bytes) -> str:
    """A raw header value as text: unfolded, 8-bit and raw JIS decoded, encoded words left as they are.

    Structured headers (addresses, parameters) must be parsed after this step and before encoded
    words are decoded: a Shift_JIS or JIS trail byte can be ``"``, ``\\`` or ``;``.
    """
    data = _FOLD.sub("", header_bytes(raw).decode("latin-1")).encode("latin-1")
    data = data.rstrip(b"\r\n")
    if b"\x1b" in data and all(byte < 0x80 for byte in data):
        return decode_iso2022jp(data)
    if all(byte < 0x80 for byte in data):
        return data.decode("ascii")
    return guess_decode(data)


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded words anywhere in ``text``.

    White space between two encoded words is dropped (RFC 2047 §6.2). Adjacent words with the same
    charset are joined as bytes before decoding, so a character split across words survives.
    """
    pieces: list[tuple[str | None, str | bytes]] = []  # (None, text) | (charset, bytes)
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[position : match.start()]
        previous_is_word = bool(pieces) and pieces[-1][0] is not None
        if between and not (previous_is_word and _BETWEEN_WORDS.fullmatch(between)):
            pieces.append((None, between))
        payload = _decode_word_payload(match.group(2), match.group(3))
        charset = _normalise_label(match.group(1))
        if payload is None:
            pieces.append((None, match.group(0)))
        elif pieces and pieces[-1][0] == charset:
            pieces[-1] = (charset, pieces[-1][1] + payload)  # type: ignore[operator]
        else:
            pieces.append((charset, payload))
        position = match.end()
    if position < len(text):
        pieces.append((None, text[position:]))
    out = []
    for charset, value in pieces:
        out.append(value if charset is None else decode_bytes(value, charset))  # type: ignore[arg-type]
    return "".join(out)


def _decode_word_payload(encoding: str, payload: str) -> bytes | None:
    try:
        if encoding in "Bb":
            compact = payload.strip()
            compact += "=" * (-len(compact) % 4)
            return base64.b64decode(compact, validate=False)
        raw = payload.replace("_", " ").encode("ascii", "replace")
        return binascii.a2b_qp(raw)
    except (binascii.Error, ValueError):
        return None


def decode_header(raw: str | bytes | None) -> str:
    """An unstructured header (Subject) as one line of clean text."""
    if raw is None:
        return ""
    text = decode_encoded_words(raw_header_to_text(raw))
    return clean_line(text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_line(text: str) -> str:
    """One line: control characters become spaces, runs of white space collapse."""
    text = _CONTROL.sub(" ", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def strip_unsafe(text: str) -> str:
    """Drop control and format characters (bidi overrides, zero-width joiners, ...) and surrogates."""
    return "".join(char for char in text if unicodedata.category(char) not in ("Cc", "Cf", "Cs"))
