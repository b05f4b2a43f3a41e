"""Arrival → reply latency through `keydesk run` on the embedded servers (p50, p95).

A contractor's mail is submitted over SMTP to the embedded SMTP server, which appends it to the
desk's mailbox on the embedded IMAP server; the daemon (a real `keydesk run` process with the real
pipeline) takes it over IDLE, verifies it, replies, and the reply reaches an SMTP sink here. The
latency is from the submission to the reply's arrival at the sink, one mail at a time.

The floor, measured in the same run on the same two servers: a bare auto-responder (imapclient in
IDLE, one FETCH, smtplib's sendmail) answering the same mails. It learns of new mail only from
IDLE, which pymap's maildir backend serves by looking for new files about once a second, so it
waits ~0.5 s on average; keydesk's own embedded SMTP server wakes keydesk's intake the moment it
has appended a mail, so keydesk can be faster than this floor. The aim is p50 ≤ 0.5 s.

    .venv/bin/python benchmarks/latency.py [--mails 30]
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402

from keydesk.embedded_imap import EmbeddedImap, port_closed  # noqa: E402
from keydesk.embedded_smtp import EmbeddedSmtp  # noqa: E402
from tests.support.cli import wait_until  # noqa: E402
from tests.support.daemon import Daemon, set_toml  # noqa: E402
from tests.support.smtp_servers import Recorder, running  # noqa: E402
from tests.support.servers import deployment_for, free_port, make_mail  # noqa: E402

DESK = "keiyaku@town.misato.example"


class TimedSink(Recorder):
    """Records when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    def record(self, envelope) -> None:
        with self._changed:
            self.arrivals.append(time.perf_counter())
        super().record(envelope)


def _mail(n: int) -> bytes:
    return make_mail(n, sender=f"contractor{n}@kensetsu{n}.example").replace(
        b"To: keiyaku@town.test.example", f"To: {DESK}".encode()
    )


def _submit(smtp_port: int, raw: bytes, sender: str) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
        client.sendmail(sender, [DESK], raw)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(sink: TimedSink, submit, count: int, first: int) -> list[float]:
    latencies = []
    for n in range(first, first + count):
        before = len(sink.arrivals)
        started = time.perf_counter()
        submit(n)
        wait_until(
            lambda before=before: len(sink.arrivals) > before, timeout=30, interval=0.002, what=f"the reply to mail {n}"
        )
        latencies.append(sink.arrivals[before] - started)
    return latencies


def keydesk_latencies(tmp: Path, sink_port: int, sink: TimedSink, count: int) -> list[float]:
    imap_port, smtp_port = free_port(), free_port()
    config = deployment_for(tmp, imap_port=imap_port, smtp_port=smtp_port, embedded=True)
    set_toml(config, f'port = {smtp_port}\nsecurity = "plain"', f'port = {sink_port}\nsecurity = "plain"')
    daemon = Daemon(config, tmp / "daemon.log")
    daemon.start()
    try:
        wait_until(lambda: not port_closed("127.0.0.1", smtp_port), timeout=60, what="keydesk run to start")

        def submit(n: int) -> None:
            _submit(smtp_port, _mail(n), f"contractor{n}@kensetsu{n}.example")

        measure(sink, submit, 2, first=10_000)  # warm-up: the first pass, imports, connections
        return measure(sink, submit, count, first=0)
    finally:
        daemon.stop()


def floor_latencies(tmp: Path, sink_port: int, sink: TimedSink, count: int) -> list[float]:
    """A bare auto-responder on the same servers: IDLE, FETCH the new mail, sendmail a reply."""
    imap_port, smtp_port = free_port(), free_port()
    password = "floor-password"
    imap = EmbeddedImap(tmp / "floor-mail", {DESK: password}, port=imap_port)
    imap.start()
    smtp = EmbeddedSmtp("127.0.0.1", smtp_port, {DESK: imap.append}, tmp / "floor-mail")
    smtp.start()
    stop = threading.Event()

    def responder() -> None:
        with (
            IMAPClient("127.0.0.1", imap_port, ssl=False, timeout=30) as client,
            smtplib.SMTP("127.0.0.1", sink_port, timeout=30) as out,
        ):
            client.login(DESK, password)
            client.select_folder("INBOX")
            seen = set(client.search("ALL"))
            while not stop.is_set():
                client.idle()
                client.idle_check(timeout=0.5)
                client.idle_done()
                new = [uid for uid in client.search("ALL") if uid not in seen]
                for uid, data in client.fetch(new, ["BODY.PEEK[]"]).items():
                    seen.add(uid)
                    out.sendmail(DESK, ["contractor@kensetsu.example"], b"Subject: re\r\n\r\n" + data[b"BODY[]"][:100])

    thread = threading.Thread(target=responder, daemon=True)
    thread.start()
    try:

        def submit(n: int) -> None:
            _submit(smtp_port, _mail(n), f"contractor{n}@kensetsu{n}.example")

        measure(sink, submit, 2, first=20_000)
        return measure(sink, submit, count, first=30_000)
    finally:
        stop.set()
        thread.join(10)
        smtp.stop()
        imap.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=30)
    args = parser.parse_args()
    sink = TimedSink()
    with tempfile.TemporaryDirectory(prefix="keydesk-latency-") as tmp, running(sink) as sink_port:
        floor = floor_latencies(Path(tmp), sink_port, sink, args.mails)
        keydesk = keydesk_latencies(Path(tmp), sink_port, sink, args.mails)
    floor_p50, floor_p95 = _percentiles(floor)
    p50, p95 = _percentiles(keydesk)
    print(f"mails: {args.mails}, one at a time")
    print(f"floor (bare IDLE auto-responder):   p50 {floor_p50:.3f} s   p95 {floor_p95:.3f} s")
    print(f"keydesk run (real pipeline):        p50 {p50:.3f} s   p95 {p95:.3f} s   (aim: p50 <= 0.5 s)")
    print(f"ratio keydesk / floor:              p50 {p50 / floor_p50:.1f}x   p95 {p95 / floor_p95:.1f}x")


if __name__ == "__main__":
    main()
