"""How much does exactly-once intake cost per mail, compared with just downloading the mail?

Appends N mails (default 200) to a fresh pymap server (or Dovecot with --server dovecot), then
in the same run measures:

- the floor: a bare imapclient session that logs in, SEARCHes and fetches every body with one
  ``FETCH BODY.PEEK[]`` (the least any IMAP client can do; best of three);
- one intake pass (``IntakeService.run_pass``), twice, each on a fresh server with its own floor: SEARCH; one FETCH of the new mails' sizes and first 16 KiB (longer mails fetched
  again, grouped); raw mail stored with fsync (a batch's files fsync'ed side by side) and recorded
  in one commit per batch, all before processing, while the next mails download; processing in
  one transaction per batch of claimed mails, a SAVEPOINT per mail; one UID MOVE per folder.
  - "intake": with a processing hook that only returns a verdict, so the ratio is the price of
    intake itself (storing, recording, claiming, auditing, moving): what the issue's 2x aims at;
  - "with stand-in": with the tests' pipeline stand-in, which also builds and enqueues a MIME
    reply per mail (~2 ms each), a part of the pipeline's cost rather than of intake.

Prints both per mail and the ratios. Run: ``.venv/bin/python benchmarks/intake.py [--mails 200]``

Measured (issue 13, two shared cores, pymap, 200 mails; old and new code interleaved in the same
minutes): before the batching 9.6x with the stand-in; after it 5.5x. Session 18: intake alone
about 2.9-3.7x, with the stand-in 4.1-4.7x (a second core busy with a mutation run). What a
pass pays besides the floor: pymap's UID MOVE (0.26-0.4 s for 200 mails, about the floor itself:
pymap's cost per MOVE command grows with the destination folder, so moves are not split per batch),
fsync of every stored mail and of its folder, and the database work per mail. Against Dovecot the
floor is ~0.06 s, so the ratio there measures keydesk's own work per mail, not the server's.
"""

from __future__ import annotations

import argparse
import imaplib
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imapclient import IMAPClient

from tests.support.servers import (
    DOVECOT,
    DovecotServer,
    IntakeHarness,
    PymapServer,
    free_port,
    make_mail,
    sample_process,
)


def mixed_mails(count: int) -> list[bytes]:
    """Mostly short mails, every tenth with ~40 KB of attachment-like text (like a small PDF)."""
    return [make_mail(n, extra=(b"Q" * 998 + b"\r\n") * 40 if n % 10 == 0 else b"") for n in range(count)]


def floor_seconds(server, expected: int) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        with IMAPClient(server.host, server.port, ssl=False, timeout=60) as client:
            client.login(server.user, server.password)
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            bodies = client.fetch(uids, ["BODY.PEEK[]"])
        best = min(best, time.perf_counter() - started)
        assert len(bodies) == expected, f"expected {expected} mails, fetched {len(bodies)}"
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=200)
    parser.add_argument("--server", choices=("pymap", "dovecot"), default="pymap")
    args = parser.parse_args()

    print(f"server: {args.server}, mails: {args.mails}")
    for label, process in (("intake", verdict_only), ("with stand-in", sample_process)):
        floor, seconds, waiting = measure(args.server, args.mails, process)
        print(
            f"{label}: floor (login + SEARCH + one FETCH BODY.PEEK[]) {floor:.3f} s, "
            f"pass {seconds:.3f} s ({seconds / args.mails * 1000:.2f} ms/mail), ratio {seconds / floor:.1f}x; "
            f"of the pass, waiting for the server's answers {waiting:.3f} s ({waiting / floor:.1f}x the floor)"
        )


def measure(kind: str, count: int, process) -> tuple[float, float, float]:
    """The floor, one pass, and the pass's time waiting for IMAP answers, on a fresh server of
    ``kind`` holding ``count`` mails."""
    with tempfile.TemporaryDirectory(prefix="keydesk-bench-") as tmp:
        tmp_path = Path(tmp)
        if kind == "dovecot":
            if DOVECOT is None:
                sys.exit("Dovecot is not installed")
            server = DovecotServer(free_port())
        else:
            server = PymapServer(tmp_path / "mail", free_port())
        server.start()
        try:
            server.append_many(mixed_mails(count))
            floor = floor_seconds(server, count)
            harness = IntakeHarness(tmp_path, server, process=process)
            with imap_command_seconds() as waiting:
                started = time.perf_counter()
                report = harness.poll_once()
                seconds = time.perf_counter() - started
            assert len(report.taken) == count and server.uids("INBOX") == []
        finally:
            (server.cleanup if isinstance(server, DovecotServer) else server.kill)()
    return floor, seconds, waiting[0]


@contextmanager
def imap_command_seconds():
    """Sum the time from sending each IMAP command to its tagged answer (imaplib, which imapclient
    drives): what no client could save, since the server does that work whoever asks. The
    read-ahead thread's FETCHes overlap the recording, so this can exceed the part they add."""
    total = [0.0]
    send, complete = imaplib.IMAP4._command, imaplib.IMAP4._command_complete
    sent: dict[str, float] = {}

    def timed_send(self, name, *args):
        tag = send(self, name, *args)
        sent[tag] = time.perf_counter()
        return tag

    def timed_complete(self, name, tag):
        try:
            return complete(self, name, tag)
        finally:
            total[0] += time.perf_counter() - sent.pop(tag, time.perf_counter())

    imaplib.IMAP4._command, imaplib.IMAP4._command_complete = timed_send, timed_complete
    try:
        yield total
    finally:
        imaplib.IMAP4._command, imaplib.IMAP4._command_complete = send, complete


def verdict_only(_session, _inbound, _raw):
    """A processing hook that only decides: what intake costs without any pipeline work."""
    from intake.intake_service import Outcome
    from rules.findings import Verdict

    return Outcome(Verdict.ACCEPTED, ())


if __name__ == "__main__":
    main()
