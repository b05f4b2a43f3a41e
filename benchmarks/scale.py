"""Peak memory and time per mail as the mailbox grows: 1,000 and 10,000 mails (50,000 by flag).

Each size runs in a fresh child process (so its peak RSS is its own): N mails appended to a fresh
Dovecot (pymap when Dovecot is not installed: pymap's maildir needs minutes for one SEARCH over
10,000 mails, longer than any client's timeout), then one intake pass (raw mail stored with fsync, a row per mail, the pipeline's
stand-in with a reply per mail, the mails moved) and one outbox round to an SMTP sink. Flat means
the time per mail and the peak RSS do not grow with N; the bound is 150 MB.

The floor, per size and in the same child: a bare imapclient fetch of every body in the folder
(login, SEARCH, FETCH BODY.PEEK[] in chunks of 500).

    .venv/bin/python benchmarks/scale.py [--sizes 1000 10000] [--with-50k]

50,000 mails take about a quarter of an hour on a loaded two-core machine, so they are left out
unless asked for.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RSS_BOUND_MB = 150


def _counting_sink():
    """An SMTP sink that only counts: the benchmark's own memory must not grow with the mails."""
    from tests.support.smtp_servers import Recorder

    class CountingSink(Recorder):
        received = 0

        def record(self, envelope) -> None:
            self.received += 1

    return CountingSink()


def child(count: int, directory: Path) -> dict:
    from imapclient import IMAPClient

    from mailer.delivery import deliver_due
    from mailer.settings import OutboxSettings, SmtpSettings
    from mailer.smtp_client import SmtpConnector, SmtpSession
    from tests.support.smtp_servers import running
    from tests.support.servers import DOVECOT, DovecotServer, IntakeHarness, PymapServer, free_port, make_mail

    server = DovecotServer(free_port()) if DOVECOT else PymapServer(directory / "mail", free_port())
    server.start()
    try:
        for first in range(0, count, 500):
            server.append_many([make_mail(n) for n in range(first, min(first + 500, count))])
        started = time.perf_counter()
        with IMAPClient(server.host, server.port, ssl=False, timeout=120) as client:
            client.login(server.user, server.password)
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            fetched = 0
            for first in range(0, len(uids), 500):
                fetched += len(client.fetch(uids[first : first + 500], ["BODY.PEEK[]"]))
        floor = time.perf_counter() - started
        assert fetched == count
        harness = IntakeHarness(directory, server)
        sink = _counting_sink()
        with running(sink) as port:
            started = time.perf_counter()
            # A backlog over poll.mails_per_pass takes several passes, as in `keydesk run`.
            with harness.lock(), harness.connection() as conn:
                taken = sum(len(report.taken) for report in harness.service.run_until_caught_up(conn))
            intake = time.perf_counter() - started
            intake_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            settings = SmtpSettings(host="127.0.0.1", port=port, security="plain")
            started = time.perf_counter()
            delivered = deliver_due(
                harness.engine, SmtpSession(SmtpConnector(settings)), OutboxSettings(), now=datetime.now(timezone.utc)
            )
            outbox = time.perf_counter() - started
        assert taken == count and delivered.sent == count, (taken, delivered.summary())
    finally:
        (server.cleanup if isinstance(server, DovecotServer) else server.kill)()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "count": count,
        "floor": floor,
        "intake": intake,
        "outbox": outbox,
        "peak_mb": peak_mb,
        "intake_peak_mb": intake_peak_mb,
        "server": type(server).__name__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--with-50k", action="store_true", help="also 50,000 mails (slow)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--directory", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.directory)))
        return
    sizes = args.sizes + ([50_000] if args.with_50k else [])
    print(
        f"{'mails':>7} {'floor ms/mail':>14} {'intake ms/mail':>15} {'outbox ms/mail':>15} {'ratio':>6} "
        f"{'peak RSS after intake':>22} {'and at the end':>15}"
    )
    for count in sizes:
        with tempfile.TemporaryDirectory(prefix="keydesk-scale-") as tmp:
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(count), "--directory", tmp],
                capture_output=True,
                text=True,
                check=False,
                cwd=ROOT,
            )
        if done.returncode != 0:
            print(
                f"{count:>7} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
            )
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        per = {k: result[k] / count * 1000 for k in ("floor", "intake", "outbox")}
        flag = "" if result["peak_mb"] <= RSS_BOUND_MB else f"  (over {RSS_BOUND_MB} MB)"
        flag += f"  [{result['server']}]"
        print(
            f"{count:>7} {per['floor']:>14.2f} {per['intake']:>15.2f} {per['outbox']:>15.2f} "
            f"{result['intake'] / result['floor']:>5.1f}x {result['intake_peak_mb']:>19.0f} MB {result['peak_mb']:>12.0f} MB{flag}"
        )


if __name__ == "__main__":
    main()
