"""How Japanese mail clients encode what they send, byte for byte: ISO-2022-JP as Windows writes it
(CP50220), encoded words, RFC 2231 file names, Outlook's winmail.dat (TNEF), and the
password-protected ZIP (ZipCrypto) that contractors' PPAP tools produce.

The ``email`` package would normalise exactly what the desk must cope with, so these write the
bytes themselves. Neutral ground: the demo's contractors (``keydesk.demo.mail_builders``) and the
test fixtures (``tests/fixtures/mail/writers.py``) both write their mails with them, so each
encoder exists once and neither imports the other.
"""

from __future__ import annotations

import base64
import secrets
import struct
import time
import zlib
from datetime import datetime
from collections.abc import Sequence
from urllib.parse import quote

# ---------------------------------------------------------------------------------------------
# Encoders, as the mailers do it
# ---------------------------------------------------------------------------------------------


def cp50220(text: str) -> bytes:
    """ISO-2022-JP as Windows (CP50220) writes it: CP932 double-byte codes turned into JIS rows.

    This is how ①, ㈱ (NEC row 13) and 髙 (NEC-selected IBM extension, row 92) reach the wire,
    which Python's iso2022_jp codecs cannot read. Each line returns to ASCII before its end.
    """
    out = bytearray()
    for line_number, line in enumerate(text.split("\n")):
        if line_number:
            out += b"\n"
        sjis = line.encode("cp932")
        kanji = False
        index = 0
        while index < len(sjis):
            lead = sjis[index]
            if lead < 0x80:
                if kanji:
                    out += b"\x1b(B"
                    kanji = False
                out.append(lead)
                index += 1
                continue
            if 0xA1 <= lead <= 0xDF:
                raise ValueError("CP50220 would turn half-width katakana into full-width; avoid them")
            trail = sjis[index + 1]
            if not kanji:
                out += b"\x1b$B"
                kanji = True
            row = (lead - (0x70 if lead < 0xA0 else 0xB0)) * 2 - 1
            if trail >= 0x9F:
                row += 1
                cell = trail - 0x7E
            else:
                cell = trail - 0x1F - (1 if trail >= 0x80 else 0)
            out += bytes((row, cell))
            index += 2
        if kanji:
            out += b"\x1b(B"
    return bytes(out)


def b_word(data: bytes, charset: str) -> bytes:
    return b"=?" + charset.encode() + b"?B?" + base64.b64encode(data) + b"?="


def jis_words(text: str, chunk: int = 12, charset: str = "iso-2022-jp") -> bytes:
    """A header value in ISO-2022-JP encoded words, split every ``chunk`` characters (Outlook style)."""
    words = [b_word(cp50220(text[i : i + chunk]), charset) for i in range(0, len(text), chunk)]
    return b"\n\t".join(words)


def utf8_word(text: str) -> bytes:
    return b_word(text.encode("utf-8"), "UTF-8")


def utf8_words(text: str, chunk: int = 14) -> bytes:
    """A long header value as several UTF-8 encoded words on folded lines (Thunderbird style)."""
    words = [utf8_word(text[i : i + chunk]) for i in range(0, len(text), chunk)]
    return b"\n ".join(words)


def b64_lines(data: bytes, width: int = 76) -> bytes:
    encoded = base64.b64encode(data)
    return b"\n".join(encoded[i : i + width] for i in range(0, len(encoded), width))


def crlf(data: bytes) -> bytes:
    """The mail as it travels: every line ends with CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def rfc2231_filename(name: str, first_chunk: int = 60) -> bytes:
    """``filename*0*=UTF-8''…; filename*1*=…`` continuations, cut between escapes as Thunderbird does."""
    encoded = quote(name, safe="").encode("ascii")
    if len(encoded) <= first_chunk:
        return b"filename*=UTF-8''" + encoded
    pieces, rest = [], encoded
    while rest:
        cut = len(rest)
        if cut > first_chunk:
            cut = rest.rfind(b"%", 0, first_chunk)
            cut = cut if cut > 0 else first_chunk
        pieces.append(rest[:cut])
        rest = rest[cut:]
    lines = [b"filename*0*=UTF-8''" + pieces[0]] + [
        b"filename*" + str(number).encode() + b"*=" + piece for number, piece in enumerate(pieces[1:], start=1)
    ]
    return b";\n ".join(lines)


# ---------------------------------------------------------------------------------------------
# winmail.dat (TNEF)
# ---------------------------------------------------------------------------------------------


def _attribute(level: int, attribute_id: int, attribute_type: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BHHI", level, attribute_id, attribute_type, len(data)) + data + struct.pack("<H", checksum)


def _mapi_unicode(property_id: int, text: str) -> bytes:
    value = text.encode("utf-16-le") + b"\x00\x00"
    return struct.pack("<HHII", 0x001F, property_id, 1, len(value)) + value + b"\x00" * (-len(value) % 4)


def _mapi_long(property_id: int, value: int) -> bytes:
    return struct.pack("<HHI", 0x0003, property_id, value)


def tnef_stream(file_name: str, content: bytes, subject: str) -> bytes:
    """A winmail.dat as Outlook writes it for one attached file (MS-OXTNEF).

    Message level: attTnefVersion, attOemCodepage (932), attMessageClass, attMAPIProps (subject).
    Attachment level: attAttachRendData first (tnefparse starts an attachment there), then
    attAttachTitle (8-bit CP932), attAttachModifyDate, attAttachData (the file) and attAttachment
    (MAPI properties: method, long file name in UTF-16, extension, MIME tag).
    """
    message_level, attachment_level = 0x01, 0x02
    stream = struct.pack("<IH", 0x223E9F78, 0x5A3C)
    stream += _attribute(message_level, 0x9006, 0x0008, struct.pack("<I", 0x00010000))
    stream += _attribute(message_level, 0x9007, 0x0006, struct.pack("<II", 932, 0))
    stream += _attribute(message_level, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\x00")
    stream += _attribute(message_level, 0x9003, 0x0006, struct.pack("<I", 1) + _mapi_unicode(0x0037, subject))
    stream += _attribute(attachment_level, 0x9002, 0x0006, struct.pack("<HIHHI", 1, 0xFFFFFFFF, 0, 0, 0))
    stream += _attribute(attachment_level, 0x8010, 0x0001, file_name.encode("cp932") + b"\x00")
    stream += _attribute(attachment_level, 0x8013, 0x0003, struct.pack("<7H", 2026, 4, 7, 9, 30, 0, 2))
    stream += _attribute(attachment_level, 0x800F, 0x0006, content)
    properties = [
        _mapi_long(0x3705, 1),
        _mapi_unicode(0x3707, file_name),
        _mapi_unicode(0x3703, "." + file_name.rpartition(".")[2]),
        _mapi_unicode(0x370E, "application/pdf"),
    ]
    stream += _attribute(attachment_level, 0x9005, 0x0006, struct.pack("<I", len(properties)) + b"".join(properties))
    return stream


# ---------------------------------------------------------------------------------------------
# Password-protected ZIP (traditional PKWARE encryption, "ZipCrypto"), as PPAP tools make them
# ---------------------------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ 0xEDB88320 if value & 1 else value >> 1
        table.append(value)
    return table


_CRC_TABLE = _crc_table()


class _ZipCrypto:
    """The three-key stream cipher of APPNOTE.TXT section 6.1."""

    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for byte in password:
            self._update(byte)

    @staticmethod
    def _crc(crc: int, byte: int) -> int:
        return (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]

    def _update(self, byte: int) -> None:
        k0, k1, k2 = self.keys
        k0 = self._crc(k0, byte)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = self._crc(k2, k1 >> 24)
        self.keys = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            temp = (self.keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            self._update(byte)
        return bytes(out)


def _dos_time(moment: time.struct_time) -> tuple[int, int]:
    dos_time = (moment.tm_hour << 11) | (moment.tm_min << 5) | (moment.tm_sec // 2)
    dos_date = ((moment.tm_year - 1980) << 9) | (moment.tm_mon << 5) | moment.tm_mday
    return dos_time, dos_date


def encrypted_zip(entries: Sequence[tuple[str, bytes]], password: str, when: datetime | None = None) -> bytes:
    """A ZIP whose entries are deflated and encrypted with ``password`` (ZipCrypto, UTF-8 names)."""
    stamp = (when or datetime.now()).timetuple()
    dos_time, dos_date = _dos_time(stamp)
    flags = 0x0001 | 0x0800  # encrypted; names in UTF-8
    local, central = bytearray(), bytearray()
    for name, content in entries:
        encoded_name = name.encode("utf-8")
        crc = zlib.crc32(content) & 0xFFFFFFFF
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        deflated = compressor.compress(content) + compressor.flush()
        cipher = _ZipCrypto(password.encode("utf-8"))
        # 11 random bytes and the CRC's high byte, which readers use to check the password.
        header = cipher.encrypt(secrets.token_bytes(11) + bytes((crc >> 24,)))
        data = header + cipher.encrypt(deflated)
        offset = len(local)
        local += (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                20,
                flags,
                8,
                dos_time,
                dos_date,
                crc,
                len(data),
                len(content),
                len(encoded_name),
                0,
            )
            + encoded_name
            + data
        )
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                flags,
                8,
                dos_time,
                dos_date,
                crc,
                len(data),
                len(content),
                len(encoded_name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + encoded_name
        )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(local), 0)
    return bytes(local + central + end)
