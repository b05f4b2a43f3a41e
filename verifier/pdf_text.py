"""Text out of PDF bytes that a stranger sent, without letting them hang or exhaust the desk.

pypdf runs in a worker process that limits its own CPU time and address space
(``resource.setrlimit``); the parent adds a wall-clock deadline and a size cap checked before any
parsing. Whatever happens — a truncated file, a decompression bomb, a page tree of a million
pages, a crash of the worker — the caller gets a ``TextResult`` and never an exception or a hang.

``extract_in_process`` is the same reading without the process boundary: the worker runs it, and
tests use it directly. ``PdfTextWorker`` keeps one worker alive between documents so that the
cost of starting Python and importing pypdf is paid once, not per PDF.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from foundation.bounded_worker import FRAME, BoundedWorker, Deadline, apply_limits, read_exact, read_until
from verifier.normalise import clean_text


class TextStatus(StrEnum):
    OK = "ok"
    ENCRYPTED = "encrypted"
    BROKEN = "broken"


@dataclass(frozen=True)
class TextResult:
    status: TextStatus
    text: tuple[str, ...] = ()  # one normalise.clean_text (NFKC and look-alikes) string per page
    page_count: int = 0
    producer: str | None = None  # the Producer (or else Creator) of the document information
    reason: str | None = None  # why it is broken, in plain English for staff

    @property
    def full_text(self) -> str:
        return "\n".join(self.text)


@dataclass(frozen=True)
class PdfLimits:
    max_bytes: int = 20 * 1024 * 1024  # checked before parsing
    max_pages: int = 200
    max_chars: int = 2_000_000  # extracted text over all pages
    cpu_seconds: int = 10
    memory_bytes: int = 512 * 1024 * 1024
    wall_seconds: float = 20.0  # the parent's deadline, CPU limit or not (a worker may block)
    tasks_per_worker: int = 200  # a fresh worker now and then keeps fragmentation bounded


DEFAULT_LIMITS = PdfLimits()


def _broken(reason: str, **known: Any) -> TextResult:
    return TextResult(TextStatus.BROKEN, reason=reason, **known)


def _precheck(data: bytes, limits: PdfLimits) -> TextResult | None:
    if len(data) == 0:
        return _broken("the file is empty")
    if len(data) > limits.max_bytes:
        return _broken(f"the file is {len(data)} bytes, over the limit of {limits.max_bytes}")
    # Readers accept the header anywhere in the first kilobyte (some tools prepend junk).
    if b"%PDF-" not in data[:1024]:
        return _broken("not a PDF (no %PDF- header)")
    return None


def _info_text(value: object) -> str | None:
    if value is None:
        return None
    text = clean_text(str(value)).strip()
    return text[:200] or None


def extract_in_process(data: bytes, limits: PdfLimits = DEFAULT_LIMITS) -> TextResult:
    """Read the PDF in this process. Never raises for bad input; has no CPU or memory limit."""
    early = _precheck(data, limits)
    if early is not None:
        return early
    try:
        return _extract(data, limits)
    except MemoryError:
        return _broken("ran out of memory while reading the PDF")
    except RecursionError:
        return _broken("the PDF's structure is nested too deeply")
    except Exception as error:  # noqa: BLE001 - hostile input can break pypdf in any way
        return _broken(f"cannot read the PDF: {type(error).__name__}: {str(error)[:200]}")


def _extract(data: bytes, limits: PdfLimits) -> TextResult:
    from pypdf import PdfReader  # imported here so importing this module stays cheap

    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        # Even an empty user password means the sender protected the file: report, don't open.
        return TextResult(TextStatus.ENCRYPTED, reason="the PDF is password-protected")
    page_count = len(reader.pages)
    if page_count == 0:
        return _broken("the PDF has no pages")
    if page_count > limits.max_pages:
        return _broken(f"the PDF has {page_count} pages, over the limit of {limits.max_pages}")
    producer = None
    try:
        info = reader.metadata
        if info is not None:
            producer = _info_text(info.get("/Producer")) or _info_text(info.get("/Creator"))
    except Exception:  # noqa: BLE001 - a damaged info dictionary must not hide the text
        producer = None
    pages: list[str] = []
    total = 0
    for page in reader.pages:
        text = clean_text(page.extract_text() or "")
        total += len(text)
        if total > limits.max_chars:
            return _broken(f"the PDF holds more than {limits.max_chars} characters of text")
        pages.append(text)
    return TextResult(TextStatus.OK, tuple(pages), page_count, producer)


# --------------------------------------------------------------------------------------------
# The worker process (``python -m verifier.pdf_text``)
#
# A plain subprocess rather than multiprocessing: nothing of the parent's ``__main__`` is
# re-imported, and the answer comes back as JSON, never as a pickle a subverted worker could forge.
# Messages are framed as a 4-byte big-endian length followed by the payload.
# --------------------------------------------------------------------------------------------

MAX_ANSWER_BYTES = 64 * 1024 * 1024


def _limits_to_json(limits: PdfLimits) -> bytes:
    return json.dumps(dataclasses.asdict(limits)).encode()


def _result_to_json(result: TextResult) -> bytes:
    return json.dumps(dataclasses.asdict(result), ensure_ascii=False).encode()


def _result_from_json(payload: bytes) -> TextResult:
    raw = json.loads(payload)
    return TextResult(
        status=TextStatus(raw["status"]),
        text=tuple(str(page) for page in raw["text"]),
        page_count=int(raw["page_count"]),
        producer=None if raw["producer"] is None else str(raw["producer"]),
        reason=None if raw["reason"] is None else str(raw["reason"]),
    )


def _serve() -> None:
    """The worker's loop: read a request, answer it, until stdin closes (the parent is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)  # bad PDFs are expected here
    import pypdf  # noqa: F401 - imported once, before any limit applies

    # Answers go to a private copy of fd 1; anything else that prints (a library's stray print)
    # goes to stderr, so it can never corrupt the framing.
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        header = read_exact(stdin, FRAME.size)
        if header is None:
            return
        limits_raw = read_exact(stdin, FRAME.unpack(header)[0])
        size = read_exact(stdin, FRAME.size)
        if limits_raw is None or size is None:
            return
        data = read_exact(stdin, FRAME.unpack(size)[0])
        if data is None:
            return
        limits = PdfLimits(**json.loads(limits_raw))
        apply_limits(limits.cpu_seconds, limits.memory_bytes)
        answer = _result_to_json(extract_in_process(data, limits))
        stdout.write(FRAME.pack(len(answer)) + answer)
        stdout.flush()


class PdfTextWorker(BoundedWorker):
    """One reusable worker process; thread-safe (callers take turns). Use as a context manager.

    The worker starts on first use (about 0.1 s, paid once) and is replaced after a crash, a kill
    or ``tasks_per_worker`` documents (``foundation.bounded_worker`` keeps its lifecycle).
    """

    def __init__(self, limits: PdfLimits = DEFAULT_LIMITS) -> None:
        super().__init__("verifier.pdf_text")
        self.limits = limits

    def extract(self, data: bytes, limits: PdfLimits | None = None) -> TextResult:
        limits = limits or self.limits
        early = _precheck(data, limits)
        if early is not None:
            return early  # no need to wake a worker for these
        with self._lock:
            return self._run(data, limits)

    def _run(self, data: bytes, limits: PdfLimits) -> TextResult:
        process = self._for_task(limits.tasks_per_worker)
        assert process.stdin is not None and process.stdout is not None  # for the type checker
        deadline = time.monotonic() + limits.wall_seconds
        limits_raw = _limits_to_json(limits)
        try:
            process.stdin.write(FRAME.pack(len(limits_raw)) + limits_raw + FRAME.pack(len(data)))
            process.stdin.write(data)
            process.stdin.flush()
            header = read_until(process.stdout, FRAME.size, deadline)
            if header is not None:
                size = FRAME.unpack(header)[0]
                if size > MAX_ANSWER_BYTES:
                    raise OSError("answer too large")
                payload = read_until(process.stdout, size, deadline)
                if payload is not None:
                    result = _result_from_json(payload)
                    if result.status is TextStatus.BROKEN and "memory" in (result.reason or ""):
                        self._stop(kill=True)  # a worker that hit its memory limit is not reused
                    return result
        except Deadline:
            self._stop(kill=True)
            return _broken(f"took longer than {limits.wall_seconds:g} s to read")
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the worker died or answered nonsense: say how it ended
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        code = process.poll()
        self._stop(kill=True)
        return _broken(_death_reason(code, limits))


def _death_reason(returncode: int | None, limits: PdfLimits) -> str:
    if returncode is not None and returncode < 0:
        number = -returncode
        if number == signal.SIGXCPU:
            return f"exceeded {limits.cpu_seconds} s CPU"
        if number == signal.SIGKILL:
            return "the reader was killed (probably out of memory)"
        return f"the reader crashed ({signal.Signals(number).name})"
    if returncode is None:
        return "the reader stopped answering"
    return f"the reader stopped unexpectedly (exit code {returncode})"


_default_worker: PdfTextWorker | None = None
_default_lock = threading.Lock()


def extract_text(data: bytes, limits: PdfLimits = DEFAULT_LIMITS) -> TextResult:
    """Read the PDF in the shared worker process, within ``limits``. Never raises for bad input."""
    global _default_worker  # noqa: PLW0603 - one worker per process, started on first use
    with _default_lock:
        if _default_worker is None:
            import atexit

            _default_worker = PdfTextWorker(limits)
            atexit.register(_default_worker.close)
        worker = _default_worker
    return worker.extract(data, limits)


if __name__ == "__main__":
    _serve()
