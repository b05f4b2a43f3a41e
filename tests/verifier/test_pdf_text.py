"""Bounded PDF text extraction (verifier/pdf_text.py): hostile bytes end as a result, never a hang."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.pdf_text import (
    DEFAULT_LIMITS,
    PdfLimits,
    PdfTextWorker,
    TextResult,
    TextStatus,
    extract_in_process,
)

from tests.support.cli import wait_until

from .conftest import NUMBER_1, VALID_KEY, fixture_pdf

KEY_NOTICE = fixture_pdf("key_notice_reportlab.pdf")
TITLE = "電子証書閲覧用「認証キー」等のお知らせ"


def _alive(pid: int) -> bool:
    """True while the process exists, zombie or not (a zombie still has a /proc entry)."""
    return os.path.exists(f"/proc/{pid}")


def test_reads_cid_fonts_exactly():
    result = extract_in_process(KEY_NOTICE)
    assert result.status is TextStatus.OK
    assert result.page_count == 1 and len(result.text) == 1
    assert TITLE in result.text[0]
    assert NUMBER_1 in result.text[0] and VALID_KEY in result.text[0]
    assert result.producer == "keydesk test fixtures (reportlab)"
    assert result.reason is None


def test_text_is_normalised_for_matching():
    # Chromium's print: NFKC plus the radicals NFKC keeps (美郷町⻑ → 美郷町長).
    result = extract_in_process(fixture_pdf("key_notice_printed_chromium.pdf"))
    assert result.status is TextStatus.OK
    assert "美郷町長" in result.full_text and "⻑" not in result.full_text
    assert "26-000123-5" in result.full_text  # the HTML had ２６－０００１２３－５
    assert result.producer.startswith("Skia/PDF")


@pytest.mark.parametrize("name", ["encrypted_empty_password.pdf", "encrypted_password.pdf"])
def test_encrypted_pdfs_are_reported_not_opened(name):
    result = extract_in_process(fixture_pdf(name))
    assert result.status is TextStatus.ENCRYPTED
    assert result.text == ()


@pytest.mark.parametrize(
    ("data", "limits", "reason"),
    [
        (b"", DEFAULT_LIMITS, "empty"),
        (b"PK\x03\x04 this is a zip, not a PDF" * 10, DEFAULT_LIMITS, "not a PDF"),
        (KEY_NOTICE, PdfLimits(max_bytes=1000), "over the limit"),
        (fixture_pdf("many_pages.pdf"), DEFAULT_LIMITS, "300 pages"),
        (fixture_pdf("bomb.pdf"), DEFAULT_LIMITS, "cannot read"),
        (KEY_NOTICE, PdfLimits(max_chars=50), "more than 50 characters"),
        (b"%PDF-1.7\n" + b"0" * 5000, DEFAULT_LIMITS, "cannot read"),
    ],
)
def test_bad_input_ends_as_broken_with_a_reason(data, limits, reason):
    result = extract_in_process(data, limits)
    assert result.status is TextStatus.BROKEN
    assert reason in result.reason


def test_every_truncation_ends_as_a_result():
    step = max(1, len(KEY_NOTICE) // 150)
    statuses = set()
    for cut in range(0, len(KEY_NOTICE), step):
        result = extract_in_process(KEY_NOTICE[:cut])
        assert isinstance(result, TextResult)
        assert result.status in (TextStatus.OK, TextStatus.BROKEN)
        assert (result.reason is not None) == (result.status is TextStatus.BROKEN)
        statuses.add(result.status)
    assert TextStatus.BROKEN in statuses  # the early cuts at least cannot be read


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(KEY_NOTICE) - 1), st.integers(0, 7)), min_size=1, max_size=8))
def test_bit_flips_end_as_a_result(flips):
    data = bytearray(KEY_NOTICE)
    for position, bit in flips:
        data[position] ^= 1 << bit
    result = extract_in_process(bytes(data))
    assert result.status in (TextStatus.OK, TextStatus.BROKEN)
    assert all(isinstance(page, str) for page in result.text)


def test_worker_gives_the_same_result_and_is_reused(worker):
    first = worker.extract(KEY_NOTICE)
    pid = worker.pid
    second = worker.extract(fixture_pdf("certificate_view_chromium.pdf"))
    assert first == extract_in_process(KEY_NOTICE)
    assert second.status is TextStatus.OK and second.page_count == 2
    assert worker.pid == pid  # one process for both documents


def test_cpu_limit_kills_a_slow_pdf_and_the_next_one_gets_a_fresh_worker(worker):
    slow = fixture_pdf("slow.pdf")  # a minute of text operators for pypdf
    limits = replace(DEFAULT_LIMITS, cpu_seconds=1, wall_seconds=30)
    started = time.monotonic()
    result = worker.extract(slow, limits)
    assert result.status is TextStatus.BROKEN
    assert result.reason == "exceeded 1 s CPU"  # the CPU limit fired, not the 30 s deadline
    assert time.monotonic() - started < 25
    dead_pid = worker.pid
    after = worker.extract(KEY_NOTICE)
    assert after.status is TextStatus.OK
    assert worker.pid != dead_pid


def test_wall_clock_deadline_stops_the_worker(worker):
    limits = replace(DEFAULT_LIMITS, wall_seconds=0.5)
    worker.extract(KEY_NOTICE)
    pid = worker.pid
    started = time.monotonic()
    result = worker.extract(fixture_pdf("slow.pdf"), limits)
    assert result.status is TextStatus.BROKEN
    assert result.reason == "took longer than 0.5 s to read"
    assert time.monotonic() - started < 5
    wait_until(lambda: not _alive(pid), 5, what="the killed worker to be reaped")


def test_memory_limit_ends_as_broken(worker):
    # Four content streams of 60 MB each: every one is under pypdf's own limit, together they are
    # not, and a 150 MB address space runs out first.
    limits = replace(DEFAULT_LIMITS, memory_bytes=150 * 1024 * 1024, cpu_seconds=5)
    result = worker.extract(fixture_pdf("memory_bomb.pdf"), limits)
    assert result.status is TextStatus.BROKEN
    assert "memory" in result.reason
    assert worker.extract(KEY_NOTICE).status is TextStatus.OK  # a fresh worker carries on


def test_precheck_needs_no_worker():
    with PdfTextWorker() as worker:
        assert worker.extract(b"").status is TextStatus.BROKEN
        assert worker.pid is None  # nothing was started for an empty file


def test_close_leaves_no_process_behind():
    worker = PdfTextWorker()
    worker.extract(KEY_NOTICE)
    pid = worker.pid
    assert _alive(pid)
    worker.close()
    assert worker.pid is None
    wait_until(lambda: not _alive(pid), 5, what="the worker to end after close()")


def test_truncated_and_flipped_pdfs_through_the_worker(worker):
    for cut in (0, 9, 100, len(KEY_NOTICE) // 2, len(KEY_NOTICE) - 10):
        assert worker.extract(KEY_NOTICE[:cut]).status in (TextStatus.OK, TextStatus.BROKEN)
    data = bytearray(KEY_NOTICE)
    for position in range(0, len(data), 97):
        data[position] ^= 0xFF
    assert worker.extract(bytes(data)).status in (TextStatus.OK, TextStatus.BROKEN)
