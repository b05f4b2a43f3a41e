"""How much does exactly-once intake cost per mail, compared with just downloading the mail?

Appends N mails (default 200) to a fresh pymap server (or Dovecot with --server dovecot), then
in the same run measures:

- the floor: a bare imapclient session that logs in, SEARCHes and fetches every body with one
  ``FETCH BODY.PEEK[]`` (the least any IMAP client can do; best of three);
- one intake pass (``IntakeService.run_pass``): raw mail stored with fsync, one row committed
  per mail, the stand-in pipeline (a submission and an outbox row per mail in one transaction),
  then the mails moved to their folders.

Prints both per mail and the ratio. Run: ``.venv/bin/python benchmarks/intake.py [--mails 200]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imapclient import IMAPClient

from tests.support.servers import DOVECOT, DovecotServer, IntakeHarness, PymapServer, free_port, make_mail


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

    with tempfile.TemporaryDirectory(prefix="keydesk-bench-") as tmp:
        tmp_path = Path(tmp)
        if args.server == "dovecot":
            if DOVECOT is None:
                sys.exit("Dovecot is not installed")
            server = DovecotServer(free_port())
        else:
            server = PymapServer(tmp_path / "mail", free_port())
        server.start()
        try:
            server.append_many(mixed_mails(args.mails))
            floor = floor_seconds(server, args.mails)
            harness = IntakeHarness(tmp_path, server)
            started = time.perf_counter()
            report = harness.poll_once()
            intake = time.perf_counter() - started
            assert len(report.taken) == args.mails and server.uids("INBOX") == []
        finally:
            (server.cleanup if isinstance(server, DovecotServer) else server.kill)()

    per_floor, per_intake = floor / args.mails * 1000, intake / args.mails * 1000
    print(f"server: {args.server}, mails: {args.mails}")
    print(f"floor (login + SEARCH + one FETCH BODY.PEEK[]): {floor:.3f} s, {per_floor:.2f} ms/mail")
    print(f"intake pass (store+fsync, row, pipeline stand-in, move): {intake:.3f} s, {per_intake:.2f} ms/mail")
    print(f"ratio intake/floor: {intake / floor:.1f}x")


if __name__ == "__main__":
    main()
