"""Outbox throughput: 10,000 guarantor notices delivered to an aiosmtpd sink over reused connections.

The floor is measured in the same run against the same sink: plain ``smtplib.sendmail`` of the
same messages on one connection, with no database at all. keydesk's outbox makes the same four SMTP
round trips per message and commits each message's answer on its own (due rows are looked up and
claimed one batch of 100 per statement; docs/delivery.md says why answers are not grouped), so the
ratio shows what durability costs. The issue asks for at least 0.5. Measured on a shared two-core
machine (2026-12-01, SQLite, 10,000 messages, three runs): 0.62, 0.47, 0.54 (median 0.54; CPU
ratio 0.61, 0.57, 0.61), where the version before the per-message cuts measured 0.38-0.55 (CPU
ratio 0.37-0.56). With ``--database-url`` on PostgreSQL: about 0.3, from about 0.1.

The wall-clock ratio follows whatever else the machine runs; the CPU ratio (both phases' CPU time
in this process, the sink's thread included) is the steadier one to compare versions with.

    .venv/bin/python benchmarks/outbox.py [--messages 10000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support.smtp_servers, the same sink the tests use

from sqlalchemy import inspect  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import Session, SQLModel  # noqa: E402

from keydesk.database import make_engine  # noqa: E402
from mailer.delivery import deliver_due  # noqa: E402
from mailer.message import Mailbox, build_message  # noqa: E402
from mailer.outbox import enqueue  # noqa: E402
from mailer.settings import OutboxSettings, SmtpSettings  # noqa: E402
from mailer.smtp_client import SmtpConnector, SmtpSession  # noqa: E402
from tests.support.smtp_servers import Recorder, running  # noqa: E402

SENDER = Mailbox("e-net@guarantor.example", "西日本建設業保証株式会社")
NOW = datetime(2026, 4, 6, 0, 0, tzinfo=timezone.utc)
BODY = """{name} 御中

電子証書・認証キー登録のお知らせ

このたびは前払金保証をお申し込みいただき、誠にありがとうございます。
下記のとおり電子証書を登録いたしましたので、お知らせいたします。

保証契約番号: 26-{n:06d}-4
認証キー: AB12-****-****-GH7K(お知らせの PDF をご確認ください)
発注者: 美郷町

認証キー等のお知らせ(PDF)を発注者の契約窓口へメールでご提出ください。

西日本建設業保証株式会社
"""


def notices(count: int) -> list:
    return [
        build_message(
            sender=SENDER,
            to=[Mailbox(f"contractor{n}@builder.example", f"株式会社{n}建設")],
            subject="電子証書・認証キー登録のお知らせ",
            text=BODY.format(name=f"株式会社{n}建設", n=n),
            now=NOW,
        )
        for n in range(count)
    ]


@dataclass(frozen=True)
class Timing:
    """Messages per second of wall-clock time, and CPU seconds of this process per message."""

    rate: float
    cpu_per_message: float


@contextmanager
def timed(count: int, into: list[Timing]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.append(Timing(count / (time.perf_counter() - wall), (time.process_time() - cpu) / count))


def floor_timing(port: int, raws: list[tuple[str, bytes]]) -> Timing:
    timing: list[Timing] = []
    with smtplib.SMTP("127.0.0.1", port) as client, timed(len(raws), timing):
        for recipient, raw in raws:
            client.sendmail(SENDER.address, [recipient], raw)
    return timing[0]


def outbox_timing(port: int, messages: list, url: str) -> tuple[Timing, float, int]:
    engine = make_engine(url)
    if inspect(engine).get_table_names():
        raise SystemExit(f"{engine.url.render_as_string()} is not empty: the benchmark wants a database of its own")
    SQLModel.metadata.create_all(engine)
    try:
        return _deliver_all(engine, port, messages)
    finally:
        SQLModel.metadata.drop_all(engine)
        engine.dispose()


def _deliver_all(engine, port: int, messages: list) -> tuple[Timing, float, int]:
    start = time.perf_counter()
    with Session(engine) as session:
        for n, message in enumerate(messages):
            enqueue(
                session,
                desk="misato",
                idempotency_key=f"notice:{n}",
                kind="notice",
                message=message,
                envelope_from=SENDER.address,
                recipients=[f"contractor{n}@builder.example"],
            )
        session.commit()
    enqueue_seconds = time.perf_counter() - start
    settings = SmtpSettings(host="127.0.0.1", port=port, security="plain")
    smtp = SmtpSession(SmtpConnector(settings))
    timing: list[Timing] = []
    with timed(len(messages), timing):
        report = deliver_due(engine, smtp, OutboxSettings(), now=datetime.now(timezone.utc))
    if report.sent != len(messages):
        raise SystemExit(f"only {report.sent} of {len(messages)} sent: {report.summary()}")
    return timing[0], len(messages) / enqueue_seconds, smtp.connector.connections_opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument(
        "--database-url",
        help="an empty database of the benchmark's own (its tables are created and dropped); "
        "default: SQLite in a temporary folder",
    )
    args = parser.parse_args()
    messages = notices(args.messages)
    # smtplib sends bytes as given, so the floor gets CRLF line ends prepared for free.
    raws = [(m["To"].split("<")[-1].rstrip(">"), m.as_bytes(policy=m.policy.clone(linesep="\r\n"))) for m in messages]
    with tempfile.TemporaryDirectory() as tmp, running(Recorder(keep_content=False)) as port:
        floor = floor_timing(port, raws)
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        outbox, enqueue_rate, connections = outbox_timing(port, messages, url)
    us = 1e6
    print(f"messages:                 {args.messages}")
    print(f"database:                 {make_url(url).get_backend_name()}")
    print(f"floor (smtplib, 1 conn):  {floor.rate:8.0f} msgs/s, {floor.cpu_per_message * us:5.0f} us CPU per message")
    print(
        f"keydesk outbox delivery:  {outbox.rate:8.0f} msgs/s, {outbox.cpu_per_message * us:5.0f} us CPU per message, "
        f"over {connections} connection(s)"
    )
    print(f"enqueue (one commit):     {enqueue_rate:8.0f} msgs/s")
    print(f"CPU ratio floor / outbox: {floor.cpu_per_message / outbox.cpu_per_message:8.2f}")
    print(f"ratio outbox / floor:     {outbox.rate / floor.rate:8.2f}")


if __name__ == "__main__":
    main()
