"""The mail walk in a bounded worker process: a hard wall-clock, CPU and memory limit per mail.

``intake.mime.walk_mail`` checks its own deadline between steps and bounds every step it knows
of, but a step inside a library (the email parser, zlib, tnefparse) cannot be interrupted from
within. Like the PDF reader (``verifier.pdf_text``), the walk therefore runs in a worker process
(``python -m intake.walk_worker``) with ``setrlimit`` CPU and address-space limits, a minimal
environment, and a deadline the parent enforces by killing it. A mail the worker does not finish
becomes a headers-only walk with ``mail.unreadable``: kept, shown to staff, answered "please send
the PDF again" where the reply policy allows.

The answer comes back as JSON plus one frame per document, never as a pickle a subverted worker
could use to run code in the intake. The framing, limits, environment and the worker's lifecycle are
the PDF worker's (``foundation.bounded_worker``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time
from datetime import datetime

from intake.authentication_results import Authentication, MethodResult
from intake.mail_context import MailAddress, Sender, TypedKey
from intake.mime import MailDocument, MailLimits, WalkedMail, unreadable_walk, walk_mail
from rules.findings import Finding
from foundation.bounded_worker import FRAME, BoundedWorker, Deadline, apply_limits, read_exact, read_until

# The worker's own limits; the wall-clock deadline is the walk's limit plus this margin, so the
# walk's cooperative deadline normally answers first and the kill is the backstop.
WORKER_CPU_SECONDS = 60
WORKER_MEMORY_BYTES = 1536 * 1024 * 1024
_MARGIN_SECONDS = 5.0
_ANSWER_MAX = 256 * 1024 * 1024
_TASKS_PER_WORKER = 200


# -- (de)serialising a WalkedMail ------------------------------------------------------------------


def _finding_json(finding: Finding) -> dict:
    return {
        "code": finding.code,
        "detail": finding.detail,
        "params": dict(finding.params),
        "guarantee_no": finding.guarantee_no,
        "document": finding.document,
    }


def walked_to_frames(walked: WalkedMail) -> list[bytes]:
    """The JSON head and one frame per document's content."""
    head = {
        "message_id": walked.message_id,
        "subject": walked.subject,
        "sender": {
            "from_": [dataclasses.asdict(a) for a in walked.sender.from_],
            "reply_to": [dataclasses.asdict(a) for a in walked.sender.reply_to],
        },
        "date": walked.date.isoformat() if walked.date else None,
        "body_text": walked.body_text,
        "documents": [
            {
                "display_name": d.display_name,
                "sha256": d.sha256,
                "declared_type": d.declared_type,
                "is_pdf": d.is_pdf,
                "path": list(d.path),
                "raw_name": d.raw_name,
                "in_archive": d.in_archive,
            }
            for d in walked.documents
        ],
        "problems": [_finding_json(p) for p in walked.problems],
        "automatic": walked.automatic,
        "automatic_reasons": list(walked.automatic_reasons),
        "authentication": {
            "authserv_id": walked.authentication.authserv_id,
            "results": [
                [r.method, r.result, [list(p) for p in r.properties], r.reason] for r in walked.authentication.results
            ],
            "trusted_headers": walked.authentication.trusted_headers,
            "ignored_headers": walked.authentication.ignored_headers,
        },
        "typed_keys": [
            {
                "guarantee_no": k.guarantee_no,
                "guarantee_no_valid": k.guarantee_no_valid,
                "access_key": k.access_key,
                "access_key_valid": k.access_key_valid,
                "access_key_masked": k.access_key_masked,
            }
            for k in walked.typed_keys
        ],
    }
    return [json.dumps(head).encode("ascii"), *(d.content for d in walked.documents)]


def walked_from_frames(head_raw: bytes, contents: list[bytes]) -> WalkedMail:
    head = json.loads(head_raw)
    auth = head["authentication"]
    documents = tuple(
        MailDocument(
            display_name=str(d["display_name"]),
            content=content,
            sha256=str(d["sha256"]),
            declared_type=str(d["declared_type"]),
            is_pdf=bool(d["is_pdf"]),
            path=tuple(str(p) for p in d["path"]),
            raw_name=str(d["raw_name"]),
            in_archive=bool(d["in_archive"]),
        )
        for d, content in zip(head["documents"], contents, strict=True)
    )
    return WalkedMail(
        message_id=head["message_id"],
        subject=str(head["subject"]),
        sender=Sender(
            tuple(MailAddress(**a) for a in head["sender"]["from_"]),
            tuple(MailAddress(**a) for a in head["sender"]["reply_to"]),
        ),
        date=datetime.fromisoformat(head["date"]) if head["date"] else None,
        body_text=str(head["body_text"]),
        documents=documents,
        problems=tuple(
            Finding(
                p["code"],
                p["detail"],
                {str(k): str(v) for k, v in p["params"].items()},
                p["guarantee_no"],
                p["document"],
            )
            for p in head["problems"]
        ),
        automatic=bool(head["automatic"]),
        automatic_reasons=tuple(str(r) for r in head["automatic_reasons"]),
        authentication=Authentication(
            auth["authserv_id"],
            tuple(
                MethodResult(m, r, tuple((str(k), str(v)) for k, v in props), reason)
                for m, r, props, reason in auth["results"]
            ),
            int(auth["trusted_headers"]),
            int(auth["ignored_headers"]),
        ),
        typed_keys=tuple(TypedKey(**k) for k in head["typed_keys"]),
    )


# -- the worker process -------------------------------------------------------------------------------


def _serve() -> None:
    """Read (request, raw mail), walk, answer; until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    while True:
        header = read_exact(stdin, FRAME.size)
        if header is None:
            return
        request_raw = read_exact(stdin, FRAME.unpack(header)[0])
        size = read_exact(stdin, FRAME.size)
        if request_raw is None or size is None:
            return
        raw = read_exact(stdin, FRAME.unpack(size)[0])
        if raw is None:
            return
        request = json.loads(request_raw)
        apply_limits(WORKER_CPU_SECONDS, WORKER_MEMORY_BYTES)
        patterns = request["key_patterns"]
        walked = walk_mail(
            raw,
            authserv_id=request["authserv_id"],
            limits=MailLimits(**request["limits"]),
            key_patterns=(re.compile(patterns[0]), re.compile(patterns[1])) if patterns else None,
        )
        frames = walked_to_frames(walked)
        stdout.write(FRAME.pack(len(frames)))
        for frame in frames:
            stdout.write(FRAME.pack(len(frame)) + frame)
        stdout.flush()


class MailWalkWorker(BoundedWorker):
    """One reusable walk worker; thread-safe (callers take turns). Replaced after a kill or crash
    (``foundation.bounded_worker`` keeps its lifecycle)."""

    def __init__(self, margin_seconds: float = _MARGIN_SECONDS) -> None:
        super().__init__("intake.walk_worker")
        self.margin_seconds = margin_seconds

    def walk(
        self,
        raw: bytes,
        *,
        authserv_id: str | None = None,
        limits: MailLimits = MailLimits(),
        key_patterns: tuple[re.Pattern[str], re.Pattern[str]] | None = None,
    ) -> WalkedMail:
        """``walk_mail`` in the worker; past the deadline (or on a crash) a headers-only walk."""
        request = json.dumps(
            {
                "authserv_id": authserv_id,
                "limits": dataclasses.asdict(limits),
                "key_patterns": [key_patterns[0].pattern, key_patterns[1].pattern] if key_patterns else None,
            }
        ).encode()
        seconds = limits.walk_seconds + self.margin_seconds
        with self._lock:
            answer = self._run(request, raw, time.monotonic() + seconds, seconds)
        if isinstance(answer, WalkedMail):
            return answer
        return unreadable_walk(raw, authserv_id, answer)

    # -- inside the lock ------------------------------------------------------------------------------

    def _run(self, request: bytes, raw: bytes, deadline: float, seconds: float) -> WalkedMail | str:
        process = self._for_task(_TASKS_PER_WORKER)
        assert process.stdin is not None and process.stdout is not None  # for the type checker
        try:
            process.stdin.write(FRAME.pack(len(request)) + request + FRAME.pack(len(raw)))
            process.stdin.write(raw)
            process.stdin.flush()
            count = read_until(process.stdout, FRAME.size, deadline)
            frames: list[bytes] = []
            total = 0
            for _ in range(FRAME.unpack(count)[0] if count else 0):
                size_raw = read_until(process.stdout, FRAME.size, deadline)
                size = FRAME.unpack(size_raw)[0] if size_raw else 0
                total += size
                if size_raw is None or total > _ANSWER_MAX:
                    raise OSError("answer too large or cut off")
                frame = read_until(process.stdout, size, deadline) if size else b""
                if frame is None:
                    raise OSError("answer cut off")
                frames.append(frame)
            if count is not None and frames:
                return walked_from_frames(frames[0], frames[1:])
        except Deadline:
            self._stop(kill=True)
            return f"reading the mail took longer than {seconds:g} s (the reader was stopped)"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        code = process.poll()
        self._stop(kill=True)
        return f"the mail reader stopped unexpectedly (exit code {code})"


_default_worker: MailWalkWorker | None = None
_default_lock = threading.Lock()


def walk_bounded(raw: bytes, **kwargs) -> WalkedMail:
    """``walk_mail`` in the shared worker process, under a hard deadline. Never raises for bad input."""
    global _default_worker  # noqa: PLW0603 - one worker per process, started on first use
    with _default_lock:
        if _default_worker is None:
            import atexit

            _default_worker = MailWalkWorker()
            atexit.register(_default_worker.close)
        worker = _default_worker
    return worker.walk(raw, **kwargs)


if __name__ == "__main__":
    _serve()
