"""The staff digest: order, departments, resend pairs, failures, escaping, CSV, rendering, schedule, CLI."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, SQLModel, select

from keydesk.database import make_engine, upgrade
from tests.support.cli import invoke
from keydesk.settings import load_settings
from mailer.digest import (
    CSV_COLUMNS,
    DigestTarget,
    build_digest_message,
    collect,
    enqueue_digests,
    render_csv,
    render_html,
    render_text,
)
from mailer.reply import template_environment
from mailer.reply_policy import MARKER_HEADER
from mailer.scheduler import add_digest_job, digest_job, next_fire_times, start_digest_scheduler
from mailer.settings import DigestSettings
from store import audit
from store.tables import Document, InboundMessage, OutboxMessage, Submission
from formats.access_key import generate

JST = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 4, 10, 8, 30, tzinfo=JST)  # a Friday morning digest
SINCE = datetime(2026, 4, 9, 8, 30, tzinfo=JST)
HOSTILE_WORK = "<script>alert('x')</script>美郷橋補修工事 & <b>橋梁</b>"
KEY = generate()


@dataclass
class World:
    session: Session
    target: DigestTarget
    env: object
    receipts: dict[str, str]


def _inbound(
    session: Session,
    n: int,
    *,
    at: datetime,
    verdict: str | None,
    state: str = "processed",
    sender: str = "tanaka@misato-kensetsu.example",
    desk: str = "misato",
    findings: list | None = None,
    error: str | None = None,
) -> InboundMessage:
    row = InboundMessage(
        desk=desk,
        account="keiyaku",
        mailbox="INBOX",
        uidvalidity=1,
        uid=n,
        sha256=f"{n:064x}",
        size=100,
        sender=sender,
        subject="s",
        received_at=at,
        state=state,
        receipt_no=f"K-2026-{n:06d}",
        verdict=verdict,
        findings_json=json.dumps(findings or []),
        processed_at=at + timedelta(minutes=1),
        last_error=error,
    )
    session.add(row)
    session.flush()
    return row


def _submission(
    session: Session,
    inbound: InboundMessage,
    *,
    verdict: str,
    gtype: str,
    no: str,
    contractor: str = "株式会社美郷建設",
    work: str = "美郷橋補修工事",
    findings=(),
    key: str | None = None,
    resend_of: Submission | None = None,
    department: str | None = None,
) -> Submission:
    document = Document(
        desk=inbound.desk,
        inbound_id=inbound.id,
        display_name="お知らせ.pdf",
        sha256="0" * 64,
        size=1,
        stored_path="x",
        kind="key_notice",
        guarantee_no=no,
        access_key_masked=f"{(key or KEY)[:4]}-****-****-{(key or KEY)[-4:]}",
    )
    session.add(document)
    session.flush()
    row = Submission(
        desk=inbound.desk,
        inbound_id=inbound.id,
        document_id=document.id,
        guarantee_no=no,
        guarantee_type=gtype,
        contractor_name=contractor,
        work_name=work,
        verdict=verdict,
        department=department,
        access_key_masked=key,
        findings_json=json.dumps([{"code": c} for c in findings]),
        resend_of_id=resend_of.id if resend_of else None,
        created_at=inbound.received_at + timedelta(minutes=1),
    )
    session.add(row)
    session.flush()
    return row


def populate(session: Session) -> dict[str, str]:
    """A day at the desk: every kind of line, plus rows that must not show."""
    t = lambda h, m: datetime(2026, 4, 9, h, m, tzinfo=JST)  # noqa: E731
    accepted = _inbound(session, 1, at=t(9, 5), verdict="accepted")
    _submission(
        session,
        accepted,
        verdict="accepted",
        gtype="前払金保証",
        no="26-000101-6",
        work=HOSTILE_WORK,
        findings=["doc.fee_receipt"],
        key=KEY,
    )  # an unmasked key by mistake: masked on output
    review = _inbound(session, 2, at=t(10, 12), verdict="needs_review")
    _submission(
        session,
        review,
        verdict="needs_review",
        gtype="契約保証",
        no="26-000102-4",
        contractor="有限会社 里山土木",
        work="町道美郷線舗装工事",
        findings=["register.no_contract"],
    )
    returned = _inbound(session, 3, at=t(11, 40), verdict="returned")
    first = _submission(
        session,
        returned,
        verdict="returned",
        gtype="前払金保証",
        no="26-000103-2",
        contractor='=HYPERLINK("http://evil.example")',
        findings=["lookup.no_match"],
    )
    resend = _inbound(session, 4, at=t(14, 2), verdict="accepted")
    _submission(
        session,
        resend,
        verdict="accepted",
        gtype="前払金保証",
        no="26-000103-2",
        contractor='=HYPERLINK("http://evil.example")',
        resend_of=first,
    )
    no_key = _inbound(
        session,
        5,
        at=t(15, 30),
        verdict="returned",
        findings=[{"code": "key.missing"}],
        sender="sato@kawabe-koumuten.example",
    )
    _inbound(
        session, 6, at=t(16, 0), verdict=None, state="quarantined", error="PdfReadError: EOF marker not found\nmore"
    )
    # A reply that could not be delivered (the outbox records outbox.failed in the audit trail).
    failed = _inbound(session, 7, at=t(16, 45), verdict="accepted")
    _submission(
        session, failed, verdict="accepted", gtype="中間前払金保証", no="26-000107-4", contractor="美郷電設株式会社"
    )
    outbox = OutboxMessage(
        desk="misato",
        idempotency_key="reply:7",
        kind="reply",
        message_id="<r7@town.misato.example>",
        envelope_from="keiyaku@town.misato.example",
        recipients_json='["tanaka@misato-kensetsu.example"]',
        raw=b"x",
        state="failed",
        inbound_id=failed.id,
        last_error="550 5.1.1 user unknown",
    )
    session.add(outbox)
    session.flush()
    audit.record(
        session,
        "misato",
        "mailer",
        "outbox.failed",
        f"outbox:{outbox.id}",
        {"recipients": ["tanaka@misato-kensetsu.example"], "error": "550 5.1.1 user unknown"},
        at=t(17, 0),
    )
    # Must not show: before the period, automatic mail, another desk.
    old = _inbound(session, 8, at=t(7, 0), verdict="accepted")
    _submission(session, old, verdict="accepted", gtype="契約保証", no="26-000108-2")
    _inbound(session, 9, at=t(12, 0), verdict="ignored", sender="MAILER-DAEMON@mx.example")
    other = _inbound(session, 10, at=t(12, 0), verdict="accepted", desk="other")
    _submission(session, other, verdict="accepted", gtype="契約保証", no="26-000110-8")
    session.flush()
    return {
        "accepted": "K-2026-000001",
        "review": "K-2026-000002",
        "returned": "K-2026-000003",
        "resend": "K-2026-000004",
        "no_key": no_key.receipt_no,
        "quarantined": "K-2026-000006",
        "failed": "K-2026-000007",
    }


@pytest.fixture
def world(deployment: Path):
    settings = load_settings(deployment)
    engine = make_engine(f"sqlite:///{deployment.parent}/t.db")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        receipts = populate(session)
        target = DigestTarget(
            "misato", settings.desks["misato"].name, settings.desks["misato"].address, settings.rules.desks["misato"]
        )
        # The deployment's own copy of the templates (written by `keydesk init`).
        yield World(session, target, template_environment(deployment / "templates"), receipts)
    engine.dispose()


def test_collection_is_the_same_on_sqlite_and_postgresql(database_url: str, deployment: Path) -> None:
    settings = load_settings(deployment)
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine)
    try:
        with Session(engine) as session:
            receipts = populate(session)
            session.commit()
            target = DigestTarget(
                "misato", "美郷町 契約窓口", "keiyaku@town.misato.example", settings.rules.desks["misato"]
            )
            env = template_environment(deployment / "templates")
            outcomes = enqueue_digests(session, target, env, now=NOW, zone="Asia/Tokyo", since=SINCE)
            session.commit()
            assert [o.created for o in outcomes] == [True, True]
            [later] = collect(session, target, now=NOW + timedelta(hours=1), zone="Asia/Tokyo", departments=["keiyaku"])
            assert later.since > NOW - timedelta(seconds=5) and later.lines == ()
            [digest] = collect(session, target, now=NOW, zone="Asia/Tokyo", since=SINCE, departments=["keiyaku"])
            assert [line.receipt_no for line in digest.lines] == [
                receipts["review"],
                receipts["no_key"],
                receipts["quarantined"],
            ]
    finally:
        engine.dispose()


def digests(world: World):
    return {d.department: d for d in collect(world.session, world.target, now=NOW, zone="Asia/Tokyo", since=SINCE)}


def test_lines_are_routed_to_departments_and_ordered(world: World) -> None:
    by = digests(world)
    assert list(by) == ["keiyaku", "kensetsu"]
    r = world.receipts
    kensetsu = [(line.section, line.receipt_no) for line in by["kensetsu"].lines]
    assert kensetsu == [
        ("accepted", r["accepted"]),
        ("accepted", r["resend"]),
        ("accepted", r["failed"]),
        ("returned", r["returned"]),
        ("failure", r["failed"]),
    ]
    keiyaku = [(line.section, line.receipt_no) for line in by["keiyaku"].lines]
    # 契約保証 goes to 契約係, and so does what has no guarantee to route by.
    assert keiyaku == [("needs_review", r["review"]), ("returned", r["no_key"]), ("failure", r["quarantined"])]
    assert by["keiyaku"].counts() == {"needs_review": 1, "accepted": 0, "returned": 1, "failure": 1}


def test_each_line_carries_what_staff_need(world: World) -> None:
    by = digests(world)
    review = by["keiyaku"].lines[0]
    assert (review.contractor, review.work_name, review.guarantee_type, review.guarantee_no) == (
        "有限会社 里山土木",
        "町道美郷線舗装工事",
        "契約保証",
        "26-000102-4",
    )
    assert review.verdict_label == "要確認" and review.reasons == ("契約台帳に該当なし",)
    assert review.at == datetime(2026, 4, 9, 10, 12, tzinfo=JST)
    assert by["keiyaku"].lines[1].reasons == ("認証キー等のお知らせが見当たらない",)
    assert by["keiyaku"].lines[1].sender == "sato@kawabe-koumuten.example"
    quarantined = by["keiyaku"].lines[2]
    assert quarantined.verdict_label == "処理失敗(隔離)"
    assert quarantined.reasons[1] == "エラー: PdfReadError: EOF marker not found"
    failure = by["kensetsu"].lines[-1]
    assert failure.verdict_label == "返信不達" and failure.guarantee_no == "26-000107-4"
    assert failure.masked_key == f"****-****-****-{KEY[-4:]}"
    assert failure.reasons == (
        "返信メールを届けられませんでした(宛先: tanaka@misato-kensetsu.example)",
        "エラー: 550 5.1.1 user unknown",
    )


def test_keys_are_masked_even_when_stored_unmasked(world: World) -> None:
    line = digests(world)["kensetsu"].lines[0]
    assert line.masked_key == f"****-****-****-{KEY[-4:]}"
    text = render_text(digests(world)["kensetsu"], world.env)
    assert KEY not in text and KEY.replace("-", "") not in text


def test_a_resend_shows_the_returned_mail_it_answers(world: World) -> None:
    lines = {line.receipt_no: line for line in digests(world)["kensetsu"].lines if line.section != "failure"}
    r = world.receipts
    assert lines[r["resend"]].resend_of == r["returned"]
    assert lines[r["returned"]].resent_as == r["resend"]
    text = render_text(digests(world)["kensetsu"], world.env)
    assert f"返送した受付番号 {r['returned']} の再送です" in text
    assert f"受付番号 {r['resend']} で再送されています" in text


def test_text_rendering_for_print(world: World) -> None:
    text = render_text(digests(world)["keiyaku"], world.env)
    assert text.startswith(
        "美郷町 契約窓口 電子保証 受付状況(契約係)\n対象期間:2026年4月9日(木) 8時30分 〜 2026年4月10日(金) 8時30分"
    )
    order = [text.index(title) for title in ("■要確認", "■受付済", "■返送", "■送信・処理の失敗")]
    assert order == sorted(order)
    assert "■受付済 0件\n  該当はありません。" in text


def test_hostile_work_name_is_escaped_in_html(world: World) -> None:
    html = render_html(digests(world)["kensetsu"], world.env)
    assert "<script>" not in html and "<b>橋梁</b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;美郷橋補修工事 &amp; &lt;b&gt;橋梁&lt;/b&gt;" in html


def test_csv_reads_back_for_excel(world: World) -> None:
    data = render_csv(digests(world)["kensetsu"])
    assert data.startswith(b"\xef\xbb\xbf")
    assert data.count(b"\r\n") == 6 and data.replace(b"\r\n", b"").count(b"\n") == 0
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0] == CSV_COLUMNS
    first = dict(zip(rows[0], rows[1]))
    assert first["区分"] == "受付" and first["受付番号"] == "K-2026-000001"
    assert first["受付日時"] == "2026-04-09 09:05"
    assert first["工事・業務名"] == HOSTILE_WORK  # data stays data in CSV
    assert first["認証キー(一部伏字)"] == f"****-****-****-{KEY[-4:]}"
    assert first["理由"] == "保証料領収書"
    resend = dict(zip(rows[0], rows[2]))
    assert resend["受注者"] == '\'=HYPERLINK("http://evil.example")'  # no formula for Excel to run
    assert resend["再送元の受付番号"] == "K-2026-000003"


def test_digest_message_has_both_parts_and_the_csv(world: World) -> None:
    digest = digests(world)["kensetsu"]
    message = build_digest_message(digest, world.env, now=NOW)
    again = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert again["Auto-Submitted"] == "auto-generated"
    assert again[MARKER_HEADER] == "digest; desk=misato"
    assert [a.addr_spec for a in again["To"].addresses] == ["kensetsu@town.misato.example"]
    assert (
        again["Subject"]
        == "【美郷町 契約窓口】電子保証 受付状況 4月10日(金) 建設課(要確認0件・受付3件・返送1件・失敗1件)"
    )
    assert again.get_content_type() == "multipart/mixed"
    assert "K-2026-000003" in again.get_body(("plain",)).get_content()
    assert "&lt;script&gt;" in again.get_body(("html",)).get_content()
    [attachment] = list(again.iter_attachments())
    assert attachment.get_filename() == "keydesk-misato-kensetsu-2026-04-10.csv"
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_payload(decode=True) == render_csv(digest)


def test_enqueue_once_per_department_and_day(world: World) -> None:
    first = enqueue_digests(world.session, world.target, world.env, now=NOW, zone="Asia/Tokyo", since=SINCE)
    assert [(o.department, o.key, o.created) for o in first] == [
        ("keiyaku", "digest:misato:keiyaku:2026-04-10", True),
        ("kensetsu", "digest:misato:kensetsu:2026-04-10", True),
    ]
    again = enqueue_digests(world.session, world.target, world.env, now=NOW + timedelta(hours=1), zone="Asia/Tokyo")
    assert [o.created for o in again] == [False, False] and again[0].reason == "already enqueued today"
    rows = world.session.exec(select(OutboxMessage).where(OutboxMessage.kind == "digest")).all()
    assert len(rows) == 2 and json.loads(rows[1].recipients_json) == ["kensetsu@town.misato.example"]
    # The next digest starts where the last one ended.
    [next_one] = collect(
        world.session, world.target, now=NOW + timedelta(days=1), zone="Asia/Tokyo", departments=["kensetsu"]
    )
    assert next_one.since == rows[1].created_at and next_one.lines == ()


def test_the_first_digest_covers_yesterday_and_today(world: World) -> None:
    [digest] = collect(world.session, world.target, now=NOW, zone="Asia/Tokyo", departments=["keiyaku"])
    assert digest.since == datetime(2026, 4, 9, 0, 0, tzinfo=JST)


# --- rendering in a real browser ----------------------------------------------------------------


def _png_pixels(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB").getcolors(maxcolors=1_000_000) or []


@pytest.mark.chromium
def test_html_renders_in_headless_chromium(world: World, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("headless Chromium is not installed (apt-get install chromium; see .ci/run)")
    page = tmp_path / "digest.html"
    page.write_text(render_html(digests(world)["kensetsu"], world.env), encoding="utf-8")
    png = tmp_path / "digest.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            "--window-size=1200,900",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert png.exists() and png.stat().st_size > 20_000
    colors = _png_pixels(png)
    assert len(colors) > 50  # text, badges and rules, not a blank page
    # The section colours are on the page (the green badge of 受付済, the red top rule of failures).
    present = {rgb for _count, rgb in colors}
    assert (0x15, 0x80, 0x3D) in present and (0xB9, 0x1C, 0x1C) in present
    if os.environ.get("KEYDESK_TEST_ARTIFACTS"):  # to look at the page: KEYDESK_TEST_ARTIFACTS=/some/dir
        shutil.copyfile(png, Path(os.environ["KEYDESK_TEST_ARTIFACTS"]) / "digest.png")


# --- the schedule -------------------------------------------------------------------------------


def test_default_schedule_is_weekdays_at_0830_tokyo() -> None:
    friday_after = datetime(2026, 4, 10, 9, 0, tzinfo=JST)
    times = next_fire_times(DigestSettings(), friday_after, 3)
    assert times == [
        datetime(2026, 4, 13, 8, 30, tzinfo=JST),
        datetime(2026, 4, 14, 8, 30, tzinfo=JST),
        datetime(2026, 4, 15, 8, 30, tzinfo=JST),
    ]
    assert next_fire_times(DigestSettings(), datetime(2026, 4, 9, 23, 0, tzinfo=timezone.utc), 1) == [
        datetime(2026, 4, 10, 8, 30, tzinfo=JST)
    ]  # 08:00 JST on Friday: the same morning


def test_schedule_follows_the_configured_zone() -> None:
    settings = DigestSettings(schedule="0 17 * * *", timezone="Europe/Berlin")
    [fire] = next_fire_times(settings, datetime(2026, 3, 28, 18, 0, tzinfo=timezone.utc), 1)
    # The day after the start of daylight saving time: 17:00 local is 15:00 UTC.
    assert fire.astimezone(timezone.utc) == datetime(2026, 3, 29, 15, 0, tzinfo=timezone.utc)


def test_the_job_enqueues_digests_and_the_scheduler_plans_it(world: World, deployment: Path) -> None:
    engine = world.session.get_bind()
    world.session.commit()
    job = digest_job(engine, [world.target], world.env, zone="Asia/Tokyo", clock=lambda: NOW)
    job()
    job()  # a second run the same day changes nothing
    with Session(engine) as check:
        keys = sorted(
            r.idempotency_key for r in check.exec(select(OutboxMessage).where(OutboxMessage.kind == "digest"))
        )
    assert keys == ["digest:misato:keiyaku:2026-04-10", "digest:misato:kensetsu:2026-04-10"]

    scheduler = start_digest_scheduler(DigestSettings(), job)
    try:
        [planned] = scheduler.get_jobs()
        expected = next_fire_times(DigestSettings(), datetime.now(timezone.utc), 1)[0]
        assert planned.next_run_time == expected
        assert (planned.next_run_time.hour, planned.next_run_time.minute) == (8, 30)
        add_digest_job(scheduler, DigestSettings(schedule="0 17 * * *"), job)  # replaced, not added
        assert len(scheduler.get_jobs()) == 1 and scheduler.get_jobs()[0].next_run_time.hour == 17
    finally:
        scheduler.shutdown(wait=False)


# --- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli_deployment(deployment: Path):
    settings = load_settings(deployment)
    engine = make_engine(settings.database_url())
    upgrade(engine)
    now = datetime.now(timezone.utc)
    with Session(engine) as session:
        inbound = _inbound(session, 1, at=now - timedelta(hours=1), verdict="needs_review")
        _submission(
            session,
            inbound,
            verdict="needs_review",
            gtype="契約保証",
            no="26-000201-2",
            work=HOSTILE_WORK,
            findings=["register.contractor_mismatch"],
        )
        session.commit()
    engine.dispose()
    return deployment


def run_cli(deployment: Path, *args: str):
    return invoke(deployment, "digest", *args)


def test_cli_print_shows_the_days_submissions_by_department(cli_deployment: Path) -> None:
    result = run_cli(cli_deployment, "--print")
    assert result.exit_code == 0, result.output
    assert "電子保証 受付状況(契約係)" in result.output and "電子保証 受付状況(建設課)" in result.output
    assert "K-2026-000001" in result.output
    assert "理由    :受注者が台帳と一致しない" in result.output


def test_cli_send_enqueues_once(cli_deployment: Path) -> None:
    first = run_cli(cli_deployment, "--send", "--desk", "misato")
    assert first.exit_code == 0, first.output
    assert first.output.count("送信キューに登録しました") == 2
    second = run_cli(cli_deployment, "--send")
    assert second.output.count("本日分はすでに送信キューにあります") == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--print か --send のどちらか一方を指定してください"),
        (("--print", "--send"), "--print か --send のどちらか一方を指定してください"),
        (("--print", "--since", "yesterday"), "--since の日時を読み取れません"),
        (("--print", "--since", "2999-01-01"), "--since が未来の日時です"),
        (("--print", "--desk", "nowhere"), "窓口 'nowhere' は設定にありません"),
    ],
)
def test_cli_mistakes_are_one_line(cli_deployment: Path, args, message: str) -> None:
    result = run_cli(cli_deployment, *args)
    assert result.exit_code != 0
    assert result.refused_with(message)


def test_cli_since_takes_a_date(cli_deployment: Path) -> None:
    result = run_cli(cli_deployment, "--print", "--since", "2000-01-01")
    assert result.exit_code == 0
    assert "対象期間:2000年1月1日(土) 0時00分" in result.output
