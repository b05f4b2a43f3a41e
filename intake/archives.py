"""Unpacking the containers contractors send: ZIP archives and Outlook's winmail.dat (TNEF).

Every limit is checked while reading, against bytes actually produced, never against sizes an
archive declares about itself. One ``ArchiveBudget`` is shared by all archives of a mail, so a
bomb split across many small archives is caught as well. Nothing is written to disk and no
entry name is ever used as a path.
"""

from __future__ import annotations

import io
import logging
import struct
import zipfile
from dataclasses import dataclass, field

from rules.findings import Finding

from intake.text_decoding import guess_decode
from foundation.errors import OperationalError

_READ_CHUNK = 64 * 1024
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_TNEF_MAGIC = b"\x78\x9f\x3e\x22"
# A central directory record is at least this long (fixed part, no name).
_CD_RECORD_MIN = 46
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"

# tnefparse logs at ERROR for hostile input it survives; our own problem list says what matters.
logging.getLogger("tnefparse").setLevel(logging.CRITICAL)


@dataclass
class ArchiveBudget:
    """What the rest of the mail may still unpack: entries and bytes."""

    entries_left: int
    bytes_left: int

    def take_entry(self) -> bool:
        if self.entries_left <= 0:
            return False
        self.entries_left -= 1
        return True

    def take_bytes(self, count: int) -> bool:
        if count > self.bytes_left:
            self.bytes_left = 0
            return False
        self.bytes_left -= count
        return True


@dataclass(frozen=True)
class ArchiveEntry:
    raw_name: str  # as the archive names it, decoded; for display only
    content: bytes


@dataclass
class Unpacked:
    entries: list[ArchiveEntry] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)


def _refused(result: Unpacked) -> Unpacked:
    # An archive over the limits is hostile or useless: none of its entries is passed on.
    result.entries.clear()
    return result


def is_zip(data: bytes) -> bool:
    return data[:4] in _ZIP_MAGIC


def is_tnef(data: bytes) -> bool:
    return data[:4] == _TNEF_MAGIC


def _problem(code: str, detail: str, archive_name: str) -> Finding:
    return Finding(code, detail=detail, params={"document": archive_name}, document=archive_name)


# ---------------------------------------------------------------------------------------------
# ZIP
# ---------------------------------------------------------------------------------------------


def is_office_container(data: bytes) -> bool:
    """OOXML (.docx/.xlsx) and ODF files are ZIPs too, but they are documents, not archives."""
    declared = _declared_directory(data)
    if declared is None or declared[0] > _OFFICE_ENTRIES_MAX or declared[1] > _OFFICE_DIRECTORY_MAX:
        return False  # unpack_zip will refuse it with the right problem, without building the directory
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()[:_OFFICE_PROBE]
    except Exception:  # noqa: BLE001 - any failure means "not an office file"; unpacking reports it
        return False
    return "[Content_Types].xml" in names or (bool(names) and names[0] == "mimetype")


_OFFICE_PROBE = 8
# Office files have tens to a few thousand parts; anything beyond is not worth opening to ask.
_OFFICE_ENTRIES_MAX = 5000
_OFFICE_DIRECTORY_MAX = 2 * 1024 * 1024


def _declared_directory(data: bytes) -> tuple[int, int] | None:
    """(entry count, central directory size) from the end record, or None if there is none."""
    position = data.rfind(_EOCD, max(0, len(data) - 65_557))
    if position < 0 or position + 22 > len(data):
        return None
    count, size = struct.unpack_from("<HI", data, position + 10)
    if count != 0xFFFF and size != 0xFFFFFFFF:
        return count, size
    locator = position - 20
    if locator < 0 or data[locator : locator + 4] != _ZIP64_LOCATOR:
        return None
    (record,) = struct.unpack_from("<Q", data, locator + 8)
    if record + 56 > len(data) or data[record : record + 4] != _ZIP64_EOCD:
        return None
    count64, size64 = struct.unpack_from("<QQ", data, record + 32)
    return count64, size64


def _entry_name(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x800:
        return info.filename
    try:
        raw = info.filename.encode("cp437")
    except UnicodeEncodeError:
        return info.filename
    # Without the UTF-8 flag: Windows writes CP932, macOS writes UTF-8 anyway.
    return guess_decode(raw)


def unpack_zip(data: bytes, budget: ArchiveBudget, archive_name: str) -> Unpacked:
    """The files in a ZIP, within the budget; problems for encryption, limits and damage."""
    result = Unpacked()
    declared = _declared_directory(data)
    if declared is None:
        result.problems.append(_problem("doc.archive_broken", "no ZIP end-of-central-directory record", archive_name))
        return result
    declared_count, directory_size = declared
    # Refuse before zipfile builds one object per entry: the directory's size bounds their number.
    if declared_count > budget.entries_left or directory_size > (budget.entries_left + 1) * (_CD_RECORD_MIN + 1024):
        result.problems.append(
            _problem(
                "doc.archive_too_large",
                f"ZIP declares {declared_count} entries ({directory_size} bytes of directory); "
                f"{budget.entries_left} entries left in the limit",
                archive_name,
            )
        )
        return result
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except Exception as error:  # noqa: BLE001 - zipfile raises many types on damaged input
        result.problems.append(_problem("doc.archive_broken", f"cannot read ZIP directory: {error}", archive_name))
        return result
    encrypted: list[str] = []
    with archive:
        for info in infos:
            if info.is_dir():
                continue
            name = _entry_name(info)
            if info.flag_bits & 0x1:
                encrypted.append(name)
                continue
            if not budget.take_entry():
                result.problems.append(
                    _problem("doc.archive_too_large", f"more entries than the limit allows (at {name!r})", archive_name)
                )
                return _refused(result)
            content = _read_entry(archive, info, budget, name, archive_name, result)
            if content is None:
                if budget.bytes_left <= 0:
                    return _refused(result)
                continue
            result.entries.append(ArchiveEntry(name, content))
    if encrypted:
        shown = ", ".join(encrypted[:5])
        result.problems.append(_problem("doc.encrypted_archive", f"password-protected entries: {shown}", archive_name))
    return result


def _read_entry(archive, info, budget: ArchiveBudget, name: str, archive_name: str, result: Unpacked) -> bytes | None:
    chunks: list[bytes] = []
    try:
        with archive.open(info) as stream:
            while True:
                chunk = stream.read(_READ_CHUNK)
                if not chunk:
                    break
                if not budget.take_bytes(len(chunk)):
                    result.problems.append(
                        _problem(
                            "doc.archive_too_large",
                            f"unpacked size exceeds the limit while reading {name!r}",
                            archive_name,
                        )
                    )
                    return None
                chunks.append(chunk)
    except Exception as error:  # noqa: BLE001 - bad CRC, unsupported method, truncated data
        result.problems.append(_problem("doc.archive_broken", f"cannot unpack {name!r}: {error}", archive_name))
        return None
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# TNEF (winmail.dat)
# ---------------------------------------------------------------------------------------------

_LEVEL_ATTACHMENT = 0x02
_ATT_ATTACHMENT = 0x9005  # MAPI properties of an attachment
_ATT_MAPI_PROPS = 0x9003
_ATT_RECIPIENTS = 0x9004
_ATT_REND_DATA = 0x9002
_IMESSAGE_SIG = b"\x07\x03\x02\x00\x00\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00\x46"
_ATTACH_DATA_OBJ = 0x3701
_MAPI_FIXED = {
    0x0002: 2,
    0x000B: 2,
    0x0003: 4,
    0x0004: 4,
    0x000A: 4,
    0x0005: 8,
    0x0007: 8,
    0x0006: 8,
    0x0014: 8,
    0x0040: 8,
    0x0048: 16,
    0x0001: 0,
}
_MAPI_VARIABLE = {0x001E, 0x001F, 0x000D, 0x0102, 0x0000}
_TNEF_DEPTH_MAX = 4


class _Hostile(OperationalError, ValueError):
    """A TNEF stream tnefparse would loop on or misread: counts larger than the data."""


def _check_mapi(data: bytes, depth: int, offset: int = 0) -> int:
    """Walk a MAPI property list as tnefparse will, refusing counts the data cannot hold.

    tnefparse trusts every count in the stream (a property count of 2^32 makes it spin for
    hours), so a stream goes to it only after this walk has proved each count is backed by bytes.
    Returns the offset after the list.
    """
    end = len(data)

    def u32(at: int) -> int:
        if at + 4 > end:
            raise _Hostile("truncated MAPI data")
        return struct.unpack_from("<I", data, at)[0]

    count = u32(offset)
    offset += 4
    if count > (end - offset) // 4 + 1:
        raise _Hostile(f"MAPI property count {count} larger than the data")
    for _ in range(count):
        if offset + 4 > end:
            raise _Hostile("truncated MAPI property")
        kind, name = struct.unpack_from("<HH", data, offset)
        offset += 4
        if name >= 0x8000:
            offset += 16
            if u32(offset) == 0:
                offset += 8
            else:
                name_length = u32(offset + 4)
                if name_length > end:
                    raise _Hostile("MAPI name longer than the data")
                offset += 8 + name_length + (-name_length % 4)
        values = 1
        is_multi = bool(kind & 0x1000)
        if is_multi:
            kind ^= 0x1000
            values = u32(offset)
            offset += 4
            if values > end - offset + 1:
                raise _Hostile("MAPI value count larger than the data")
        for _ in range(values):
            if kind in _MAPI_FIXED:
                offset += _MAPI_FIXED[kind]
            elif kind in _MAPI_VARIABLE:
                items = 1
                if not is_multi:
                    items = u32(offset)
                    offset += 4
                    if items > end - offset + 1:
                        raise _Hostile("MAPI item count larger than the data")
                for _ in range(items):
                    length = u32(offset)
                    offset += 4
                    if offset + length > end:
                        raise _Hostile("MAPI value longer than the data")
                    item = data[offset : offset + length]
                    if name == _ATTACH_DATA_OBJ and item.startswith(_IMESSAGE_SIG):
                        _check_tnef(item[len(_IMESSAGE_SIG) :], depth + 1)
                    offset += length + (-length % 4)
            else:
                raise _Hostile(f"unknown MAPI type {kind:#06x}")
        if kind in (0x0002, 0x000B) and values % 2:
            offset += 2
        if offset > end:
            raise _Hostile("MAPI data runs past its attribute")
    return offset


def _check_tnef(data: bytes, depth: int = 0) -> None:
    if depth > _TNEF_DEPTH_MAX:
        raise _Hostile("TNEF messages nested too deep")
    if not is_tnef(data):
        raise _Hostile("not a TNEF stream")
    offset = 6
    seen_attachment = False
    while offset + 12 < len(data):
        level = data[offset]
        name, _type, length = struct.unpack_from("<HHI", data, offset + 1)
        length = min(len(data) - offset, length + 11)
        body = data[offset + 9 : offset + length - 2]
        if name == _ATT_REND_DATA:
            seen_attachment = True
        if level == _LEVEL_ATTACHMENT and not seen_attachment:
            raise _Hostile("attachment attribute before any attachment")
        if name in (_ATT_ATTACHMENT, _ATT_MAPI_PROPS):
            _check_mapi(body, depth)
        elif name == _ATT_RECIPIENTS:
            rows = struct.unpack_from("<I", body, 0)[0] if len(body) >= 4 else 0
            if rows > len(body) // 4:
                raise _Hostile("recipient count larger than the data")
            at = 4
            for _ in range(rows):
                at = _check_mapi(body, depth, at)
        offset += length


def unpack_tnef(data: bytes, budget: ArchiveBudget, archive_name: str) -> Unpacked:
    """The attached files of a winmail.dat, with their long (Unicode) names when present."""
    from tnefparse.tnef import TNEF  # imported here: only mails from Outlook need it

    result = Unpacked()
    try:
        _check_tnef(data)
        parsed = TNEF(data, do_checksum=False)
    except Exception as error:  # noqa: BLE001 - tnefparse raises anything on damaged input
        result.problems.append(_problem("doc.archive_broken", f"cannot read winmail.dat: {error}", archive_name))
        return result
    codepage = parsed.codepage or "cp1252"
    for index, attachment in enumerate(parsed.attachments, start=1):
        content = attachment.data if isinstance(attachment.data, bytes) else b""
        if not content:
            continue
        name = _tnef_name(attachment, codepage) or f"attachment-{index}"
        if not budget.take_entry():
            result.problems.append(
                _problem("doc.archive_too_large", "more entries than the limit allows", archive_name)
            )
            return _refused(result)
        if not budget.take_bytes(len(content)):
            result.problems.append(
                _problem("doc.archive_too_large", f"unpacked size exceeds the limit at {name!r}", archive_name)
            )
            return _refused(result)
        result.entries.append(ArchiveEntry(name, content))
    return result


def _tnef_name(attachment, codepage: str) -> str:
    try:
        long_name = attachment.long_filename()
    except Exception:  # noqa: BLE001 - tnefparse decodes the 8-bit title as UTF-8 and may fail
        long_name = None
    if isinstance(long_name, str) and long_name.strip("\x00").strip():
        return long_name.strip("\x00")
    raw = getattr(attachment, "_name", b"")
    if isinstance(raw, bytes):
        raw = raw.rstrip(b"\x00")
        try:
            return raw.decode(codepage)
        except (UnicodeDecodeError, LookupError):
            return guess_decode(raw)
    return str(raw).strip("\x00")
