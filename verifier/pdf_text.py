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

import dataclasses
import io
import json
import logging
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from enum import StrEnum

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


def _broken(reason: str, **known) -> TextResult:
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

_FRAME = struct.Struct(">I")
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


def _apply_limits(limits: PdfLimits) -> None:
    import resource

    # RLIMIT_CPU counts the whole life of the process: allow this task its share on top of what
    # earlier tasks used. The hard limit stays where it is so the soft one can move up later.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + limits.cpu_seconds
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_hard != resource.RLIM_INFINITY:
        soft = min(soft, cpu_hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
    _, as_hard = resource.getrlimit(resource.RLIMIT_AS)
    memory = limits.memory_bytes if as_hard == resource.RLIM_INFINITY else min(limits.memory_bytes, as_hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory, as_hard))
    # SIGXCPU would dump core: slow, and a dump of hostile input is of no use to anyone.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _read_exact(stream, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


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
        header = _read_exact(stdin, _FRAME.size)
        if header is None:
            return
        limits_raw = _read_exact(stdin, _FRAME.unpack(header)[0])
        size = _read_exact(stdin, _FRAME.size)
        if limits_raw is None or size is None:
            return
        data = _read_exact(stdin, _FRAME.unpack(size)[0])
        if data is None:
            return
        limits = PdfLimits(**json.loads(limits_raw))
        _apply_limits(limits)
        answer = _result_to_json(extract_in_process(data, limits))
        stdout.write(_FRAME.pack(len(answer)) + answer)
        stdout.flush()


class PdfTextWorker:
    """One reusable worker process; thread-safe (callers take turns). Use as a context manager.

    The worker starts on first use (about 0.1 s, paid once) and is replaced after a crash, a kill
    or ``tasks_per_worker`` documents. ``close()`` ends it and reaps it: no zombie is left, and a
    worker whose parent dies sees its stdin close and exits, so none is orphaned either.
    """

    def __init__(self, limits: PdfLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._tasks = 0

    def __enter__(self) -> "PdfTextWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def extract(self, data: bytes, limits: PdfLimits | None = None) -> TextResult:
        limits = limits or self.limits
        early = _precheck(data, limits)
        if early is not None:
            return early  # no need to wake a worker for these
        with self._lock:
            return self._run(data, limits)

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -- inside the lock ------------------------------------------------------------------

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = worker_environment(root)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "verifier.pdf_text"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env, cwd=root, close_fds=True,
        )
        self._tasks = 0

    def _stop(self, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()  # the worker's signal to leave
        except OSError:
            pass
        if not kill:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        if process.poll() is None:
            process.kill()
        process.wait()  # reap: no zombie
        process.stdout.close()

    def _run(self, data: bytes, limits: PdfLimits) -> TextResult:
        if self._process is None or self._process.poll() is not None or self._tasks >= limits.tasks_per_worker:
            self._stop()
            self._start()
        self._tasks += 1
        process = self._process
        deadline = time.monotonic() + limits.wall_seconds
        limits_raw = _limits_to_json(limits)
        try:
            process.stdin.write(_FRAME.pack(len(limits_raw)) + limits_raw + _FRAME.pack(len(data)))
            process.stdin.write(data)
            process.stdin.flush()
            header = _read_until(process.stdout, _FRAME.size, deadline)
            if header is not None:
                size = _FRAME.unpack(header)[0]
                if size > MAX_ANSWER_BYTES:
                    raise OSError("answer too large")
                payload = _read_until(process.stdout, size, deadline)
                if payload is not None:
                    result = _result_from_json(payload)
                    if result.status is TextStatus.BROKEN and "memory" in (result.reason or ""):
                        self._stop(kill=True)  # a worker that hit its memory limit is not reused
                    return result
        except _Deadline:
            self._stop(kill=True)
            return _broken(f"took longer than {limits.wall_seconds:g} s to read")
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the worker died or answered nonsense: say how it ended
        try:
            process.wait(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            pass
        code = process.poll()
        self._stop(kill=True)
        return _broken(_death_reason(code, limits))


# What the worker inherits from the parent's environment: nothing that could carry a secret
# (passwords, tokens and key-encryption keys come from the environment: *_env settings).
_WORKER_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")


def worker_environment(root: str) -> dict[str, str]:
    """A minimal environment for the PDF worker: the import path, locale and little else."""
    env = {name: os.environ[name] for name in _WORKER_ENV_KEEP if name in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class _Deadline(Exception):
    pass


def _read_until(stream, size: int, deadline: float) -> bytes | None:
    """``size`` bytes from the pipe, or None at end of file; raises _Deadline when time runs out."""
    fd = stream.fileno()
    chunks: list[bytes] = []
    missing = size
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


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
    global _default_worker
    with _default_lock:
        if _default_worker is None:
            import atexit

            _default_worker = PdfTextWorker(limits)
            atexit.register(_default_worker.close)
        worker = _default_worker
    return worker.extract(data, limits)


if __name__ == "__main__":
    _serve()
