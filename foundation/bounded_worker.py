"""A reusable worker process for work on hostile input that may hang or exhaust memory.

The PDF reader (``verifier.pdf_text``) and the mail walk (``intake.walk_worker``) each run their
work in a ``python -m <module>`` child that limits its own CPU time and address space
(:func:`apply_limits`); the parent adds a wall-clock deadline (:func:`read_until`) and kills the
child when it passes. :class:`BoundedWorker` is that child's lifecycle, once for both: start on
first use, replace after a crash, a kill or a number of tasks, stop by closing its stdin (its
signal to leave), kill at the deadline, and always reap (no zombie; a worker whose parent dies sees
stdin close and exits, so none is orphaned either).

A plain subprocess rather than multiprocessing: nothing of the parent's ``__main__`` is
re-imported, and answers come back framed (a 4-byte big-endian length, then the payload), never as
a pickle a subverted worker could forge.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, BinaryIO, Self

from foundation.errors import OperationalError

FRAME = struct.Struct(">I")

# What a worker inherits from the parent's environment: nothing that could carry a secret
# (passwords, tokens and key-encryption keys come from the environment: *_env settings).
_WORKER_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")
# The project root: the worker imports its module from here.
_ROOT = str(Path(__file__).resolve().parents[1])


class Deadline(OperationalError):
    """The worker did not answer before the deadline."""


def worker_environment(root: str) -> dict[str, str]:
    """A minimal environment for a worker: the import path, locale and little else."""
    env = {name: os.environ[name] for name in _WORKER_ENV_KEEP if name in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def apply_limits(cpu_seconds: int, memory_bytes: int) -> None:
    """In the worker, before a task: at most ``cpu_seconds`` more CPU and ``memory_bytes`` of address space."""
    import resource

    # RLIMIT_CPU counts the whole life of the process: allow this task its share on top of what
    # earlier tasks used. The hard limit stays where it is so the soft one can move up later.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime) + cpu_seconds
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    if cpu_hard != resource.RLIM_INFINITY:
        soft = min(soft, cpu_hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
    _, as_hard = resource.getrlimit(resource.RLIMIT_AS)
    memory = memory_bytes if as_hard == resource.RLIM_INFINITY else min(memory_bytes, as_hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory, as_hard))
    # SIGXCPU would dump core: slow, and a dump of hostile input is of no use to anyone.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def read_exact(stream: BinaryIO, size: int) -> bytes | None:
    """In the worker: ``size`` bytes from the blocking stream, or None at its end."""
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def read_until(stream: IO[bytes], size: int, deadline: float) -> bytes | None:
    """In the parent: ``size`` bytes from the pipe, or None at end of file; raises Deadline when time runs out."""
    fd = stream.fileno()
    chunks: list[bytes] = []
    missing = size
    while missing:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Deadline
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


class BoundedWorker:
    """One reusable worker process running ``python -m module``; thread-safe (callers take turns
    under ``_lock``). Use as a context manager, or call ``close()``."""

    def __init__(self, module: str) -> None:
        self.module = module
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._tasks = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        with self._lock:
            self._stop()

    # -- inside the lock ------------------------------------------------------------------

    def _for_task(self, tasks_per_worker: int) -> subprocess.Popen[bytes]:
        """The running worker for one more task: a fresh one after a crash or ``tasks_per_worker`` tasks."""
        if self._process is None or self._process.poll() is not None or self._tasks >= tasks_per_worker:
            self._stop()
            self._start()
        self._tasks += 1
        process = self._process
        # _start opened both pipes; the checks are for the type checker.
        assert process is not None and process.stdin is not None and process.stdout is not None
        return process

    def _start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", self.module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=worker_environment(_ROOT),
            cwd=_ROOT,
            close_fds=True,
        )
        self._tasks = 0

    def _stop(self, kill: bool = False) -> None:
        """End the worker: close its stdin and let it leave (or kill it at once), then reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the worker's signal to leave
        if not kill:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=2)
        if process.poll() is None:
            process.kill()
        process.wait()  # reap: no zombie
        if process.stdout is not None:
            process.stdout.close()
