"""ZIP and winmail.dat unpacking: limits checked on real bytes, names decoded, hostile input refused."""

from __future__ import annotations

import importlib.util
import io
import shutil
import struct
import time
import zipfile
from pathlib import Path

import pytest

from intake.archives import ArchiveBudget, is_office_container, is_tnef, is_zip, unpack_tnef, unpack_zip

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
# The fixture writers (real ZIP and TNEF bytes), loaded under a name no other test can shadow.
_spec = importlib.util.spec_from_file_location("mail_fixture_writers", FIXTURES / "writers.py")
writers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(writers)

PDF = (FIXTURES / "key_notice.pdf").read_bytes()


def budget(entries: int = 100, size: int = 100 * 1024 * 1024) -> ArchiveBudget:
    return ArchiveBudget(entries, size)


def codes(unpacked) -> list[str]:
    return [problem.code for problem in unpacked.problems]


def test_plain_zip_entries_and_budget_accounting():
    data = writers.zip_bytes([("a.pdf", PDF), ("dir/b.txt", b"hello"), ("dir/", b"")])
    shared = budget(entries=10, size=10_000)
    unpacked = unpack_zip(data, shared, "x.zip")
    assert [(e.raw_name, e.content) for e in unpacked.entries] == [("a.pdf", PDF), ("dir/b.txt", b"hello")]
    assert unpacked.problems == []
    assert shared.entries_left == 8 and shared.bytes_left == 10_000 - len(PDF) - 5


def test_entry_count_over_the_limit_is_refused_before_reading():
    data = writers.zip_bytes([(f"{n}.txt", b"x") for n in range(150)])
    unpacked = unpack_zip(data, budget(entries=100), "many.zip")
    assert unpacked.entries == [] and codes(unpacked) == ["doc.archive_too_large"]
    assert "150 entries" in unpacked.problems[0].detail


def test_budget_is_shared_between_archives_of_one_mail():
    shared = budget(entries=3)
    first = unpack_zip(writers.zip_bytes([("1", b"a"), ("2", b"b")]), shared, "one.zip")
    second = unpack_zip(writers.zip_bytes([("3", b"c"), ("4", b"d")]), shared, "two.zip")
    assert len(first.entries) == 2
    assert second.entries == [] and codes(second) == ["doc.archive_too_large"]


def test_lying_size_headers_do_not_matter_bytes_are_counted():
    data = bytearray(writers.zip_bytes([("zeros.bin", b"\x00" * 2_000_000)]))
    # Claim 10 bytes uncompressed in both headers: zipfile then stops early and reports damage,
    # or reads on; either way nothing over the budget is returned.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        struct.pack_into("<I", data, at + offset, 10)
    unpacked = unpack_zip(bytes(data), budget(size=1_000_000), "liar.zip")
    assert unpacked.entries == [] or all(len(e.content) <= 1_000_000 for e in unpacked.entries)
    assert codes(unpacked) in (["doc.archive_too_large"], ["doc.archive_broken"])


def test_huge_declared_directory_is_refused_without_building_it():
    # An end record claiming 60 000 entries, with no directory behind it.
    record = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 60000, 60000, 60000 * 46, 0, 0)
    unpacked = unpack_zip(b"PK\x03\x04" + record, budget(), "fake.zip")
    assert codes(unpacked) == ["doc.archive_too_large"]


def test_damaged_zip_is_reported_broken():
    data = bytearray(writers.zip_bytes([("a.pdf", PDF)], compression=zipfile.ZIP_STORED))
    at = data.find(b"%PDF")
    data[at + 100] ^= 0xFF  # the CRC no longer matches
    unpacked = unpack_zip(bytes(data), budget(), "bad.zip")
    assert unpacked.entries == [] and codes(unpacked) == ["doc.archive_broken"]
    assert codes(unpack_zip(b"PK\x03\x04 truncated", budget(), "t.zip")) == ["doc.archive_broken"]


def test_unsupported_compression_method_is_broken_not_a_crash():
    data = bytearray(writers.zip_bytes([("a.txt", b"hello" * 100)]))
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        struct.pack_into("<H", data, data.find(signature) + offset, 9)  # Deflate64
    assert codes(unpack_zip(bytes(data), budget(), "d64.zip")) == ["doc.archive_broken"]


def test_utf8_flagged_and_unflagged_names():
    flagged = writers.zip_bytes([("お知らせ.pdf", PDF)])  # zipfile sets the UTF-8 flag
    assert unpack_zip(flagged, budget(), "a.zip").entries[0].raw_name == "お知らせ.pdf"
    cp932 = writers.windows_zip([("お知らせ表.pdf", PDF)])
    assert unpack_zip(cp932, budget(), "b.zip").entries[0].raw_name == "お知らせ表.pdf"


def test_encrypted_entries_are_not_opened_but_plain_ones_are():
    encrypted = writers.encrypted_zip("secret.pdf", PDF) if _has_zip() else None
    if encrypted is None:
        pytest.skip("Info-ZIP zip not installed")
    unpacked = unpack_zip(encrypted, budget(), "ppap.zip")
    assert unpacked.entries == [] and codes(unpacked) == ["doc.encrypted_archive"]
    assert "secret.pdf" in unpacked.problems[0].detail


def _has_zip() -> bool:
    return shutil.which("zip") is not None


def test_office_files_are_documents_not_archives():
    docx = writers.zip_bytes([("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w/>")])
    assert is_zip(docx) and is_office_container(docx)
    assert not is_office_container(writers.zip_bytes([("a.pdf", PDF)]))
    assert not is_office_container(b"PK\x03\x04garbage")


# --- TNEF -----------------------------------------------------------------------------------


def test_tnef_written_like_outlook_is_read_with_its_long_name():
    stream = writers.tnef_stream("認証キー等のお知らせ.pdf", PDF, "件名")
    assert is_tnef(stream)
    unpacked = unpack_tnef(stream, budget(), "winmail.dat")
    assert [(e.raw_name, e.content) for e in unpacked.entries] == [("認証キー等のお知らせ.pdf", PDF)]
    assert unpacked.problems == []


def test_tnef_without_long_name_falls_back_to_the_cp932_title():
    stream = writers.tnef_stream("お知らせ表.pdf", PDF, "件名")
    # Cut the attAttachment attribute (MAPI properties, the last one): only the 8-bit title remains.
    cut = stream.rfind(struct.pack("<BHH", 2, 0x9005, 0x0006))
    unpacked = unpack_tnef(stream[:cut], budget(), "winmail.dat")
    assert [e.raw_name for e in unpacked.entries] == ["お知らせ表.pdf"]


def _attribute(level: int, attribute_id: int, attribute_type: int, data: bytes) -> bytes:
    return (
        struct.pack("<BHHI", level, attribute_id, attribute_type, len(data))
        + data
        + struct.pack("<H", sum(data) & 0xFFFF)
    )


HEADER = struct.pack("<IH", 0x223E9F78, 1)


@pytest.mark.parametrize(
    "stream",
    [
        # a MAPI property count of 4 billion: tnefparse would loop on it for hours
        HEADER + _attribute(1, 0x9003, 6, struct.pack("<I", 0xFFFFFFF0) + b"\x00" * 16),
        # a multi-value count of 4 billion on a 2-byte type
        HEADER + _attribute(1, 0x9003, 6, struct.pack("<IHHI", 1, 0x1002, 0x1234, 0xFFFFFFFF) + b"\x00" * 8),
        # recipients: 4 billion rows
        HEADER + _attribute(1, 0x9004, 6, struct.pack("<I", 0xFFFFFFFF) + b"\x00" * 8),
        # an attachment attribute before any attachment was started
        HEADER + _attribute(2, 0x800F, 6, PDF[:100]) + b"\x00" * 4,
        # a value longer than its attribute
        HEADER
        + _attribute(2, 0x9002, 6, b"\x00" * 14)
        + _attribute(2, 0x9005, 6, struct.pack("<IHHII", 1, 0x0102, 0x3701, 1, 0x7FFFFFFF)),
        b"\x78\x9f\x3e\x22",
    ],
)
def test_hostile_tnef_is_refused_quickly(stream):
    started = time.monotonic()
    unpacked = unpack_tnef(stream, budget(), "winmail.dat")
    assert time.monotonic() - started < 2
    assert unpacked.entries == []
    assert codes(unpacked) == ["doc.archive_broken"]


def test_tnef_over_the_budget():
    stream = writers.tnef_stream("a.pdf", PDF, "s")
    unpacked = unpack_tnef(stream, budget(size=100), "winmail.dat")
    assert unpacked.entries == [] and codes(unpacked) == ["doc.archive_too_large"]


def test_magic_checks():
    assert is_zip(writers.zip_bytes([("a", b"b")])) and not is_zip(PDF)
    assert not is_tnef(PDF) and not is_zip(io.BytesIO(b"").getvalue())
