"""A guarantee revoked after the desk accepted it (issue 14): told at once by the embedded guarantor,
found by the periodic re-check through the look-up port otherwise, and shown first in the digest."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlmodel import Session, select

from guarantor import registry
from intake.revocations import REVOKED_AFTER_ACCEPTANCE, recheck_accepted
from keydesk.companions import recheck_now
from keydesk.runtime import Runtime
from mailer.digest import DigestTarget, collect, render_csv, render_text, subject
from mailer.reply import template_environment
from rules.findings import CODES
from store.tables import AuditEvent, Submission
from tests.conftest import invoke
from tests.desk_mail import NOW, mail, take
from verifier.lookup import LookupResult, LookupStatus


def accepted(issued: dict, index: int = 0, uid: int = 1) -> tuple[Runtime, dict]:
    runtime = Runtime(issued["config"])
    row = issued["rows"][index]
    _, outcome = take(runtime, mail([("お知らせ.pdf", Path(row["files"]["key_notice"]).read_bytes())]), uid=uid)
    assert outcome.verdict.value == "accepted", outcome.findings
    return runtime, row


def submission(runtime: Runtime, guarantee_no: str) -> Submission:
    with Session(runtime.engine) as session:
        return session.exec(select(Submission).where(Submission.guarantee_no == guarantee_no)).one()


def events(runtime: Runtime) -> list[AuditEvent]:
    with Session(runtime.engine) as session:
        return session.exec(select(AuditEvent).where(AuditEvent.action == REVOKED_AFTER_ACCEPTANCE)).all()


def test_the_embedded_guarantor_tells_the_desk_at_once(issued: dict) -> None:
    runtime, row = accepted(issued)
    result = invoke(issued["config"], "guarantor", "revoke", row["guarantee_no"], "--reason", "契約解除のため")
    assert result.exit_code == 0, result.output
    assert "受付済みの保証でした" in result.output
    marked = submission(runtime, row["guarantee_no"])
    assert marked.revoked_at is not None and marked.revoked_reason == "契約解除のため"
    [event] = events(runtime)
    assert event.subject == f"submission:{marked.id}" and event.actor == "guarantor"
    # A guarantee nobody accepted yet is revoked without telling any desk.
    other = issued["rows"][2]["guarantee_no"]
    result = invoke(issued["config"], "guarantor", "revoke", other, "--reason", "誤発行")
    assert result.exit_code == 0 and "受付済み" not in result.output
    assert len(events(runtime)) == 1
    assert invoke(issued["config"], "audit", "verify").exit_code == 0


def test_the_recheck_finds_a_revocation_through_the_lookup_port(issued: dict) -> None:
    runtime, row = accepted(issued)
    # Nothing revoked: every accepted guarantee is looked up and stays as it is.
    report = recheck_now(runtime)
    assert (report.checked, report.revoked) == (1, [])
    # Revoked at the guarantor without telling the desk (as on another machine): the re-check finds it.
    with Session(runtime.engine) as session:
        registry.revoke(session, row["guarantee_no"], "保証委託者の申出", datetime.now(timezone.utc))
        session.commit()
    report = recheck_now(runtime)
    assert report.revoked == [row["guarantee_no"]]
    assert submission(runtime, row["guarantee_no"]).revoked_reason == "保証委託者の申出"
    [event] = events(runtime)
    assert event.actor == "recheck"
    # Marked once: the next round does not look it up again.
    assert recheck_now(runtime).checked == 0 and len(events(runtime)) == 1


class _Answers:
    def __init__(self, status: LookupStatus) -> None:
        self.status = status
        self.calls: list[str] = []

    def lookup(self, guarantee_no: str, access_key: str, now: datetime) -> LookupResult:
        self.calls.append(guarantee_no)
        return LookupResult(self.status, reason="保証会社の都合")


def test_any_adapter_will_do_and_an_unanswered_lookup_changes_nothing(issued: dict) -> None:
    runtime, row = accepted(issued)
    unavailable = _Answers(LookupStatus.UNAVAILABLE)
    report = recheck_accepted(runtime.engine, lambda desk: unavailable, runtime.key_vault, NOW, desks=["misato"])
    assert (report.checked, report.not_checked, unavailable.calls) == (0, 1, [row["guarantee_no"]])
    assert submission(runtime, row["guarantee_no"]).revoked_at is None
    # A guarantee whose period has ended is no longer looked up.
    later = datetime(2028, 1, 1, tzinfo=timezone.utc)
    revoked = _Answers(LookupStatus.REVOKED)
    assert recheck_accepted(runtime.engine, lambda desk: revoked, runtime.key_vault, later, desks=["misato"]).checked == 0
    report = recheck_accepted(runtime.engine, lambda desk: revoked, runtime.key_vault, NOW, desks=["misato"])
    assert report.revoked == [row["guarantee_no"]]


def test_the_digest_puts_a_revoked_guarantee_first_with_its_contract_columns(issued: dict) -> None:
    runtime, row = accepted(issued)
    assert invoke(issued["config"], "guarantor", "revoke", row["guarantee_no"], "--reason", "契約解除").exit_code == 0
    settings = runtime.settings
    desk = settings.desks["misato"]
    target = DigestTarget("misato", desk.name, desk.address, settings.rules.desks["misato"])
    now = datetime.now(timezone.utc) + timedelta(minutes=1)
    [digest] = collect(Session(runtime.engine), target, now=now, zone="Asia/Tokyo", since=NOW - timedelta(days=1),
                       departments=["kensetsu"])
    assert [line.section for line in digest.lines] == ["revoked", "accepted"]
    revoked = digest.lines[0]
    assert revoked.verdict_label == "受付後に失効" and "契約解除" in revoked.reasons[0]
    assert revoked.contract_no == "R8-土木-001" and revoked.contract_amount == "30,862,500円"
    assert revoked.guarantee_amount == "12,345,000円" and revoked.period == "令和8年4月1日〜令和9年3月31日"
    assert "受付後の失効1件" in subject(digest)
    text = render_text(digest, template_environment(settings.config_dir / "templates"))
    assert "★受付後に失効した保証 1件" in text and "請負代金額 30,862,500円" in text
    assert "保証金額 12,345,000円  保証期間 令和8年4月1日〜令和9年3月31日" in text
    header, *lines = render_csv(digest).decode("utf-8-sig").splitlines()
    assert header.endswith("契約番号,請負代金額,保証金額,保証期間")
    assert lines[0].startswith("受付後の失効,") and lines[0].endswith("R8-土木-001,\"30,862,500円\",\"12,345,000円\",令和8年4月1日〜令和9年3月31日")
    assert CODES["lookup.revoked_after_acceptance"].label == "受付後に失効した保証"


def test_keydesk_run_schedules_the_recheck_and_stops_it(issued: dict) -> None:
    import threading

    from keydesk.companions import COMPANIONS, revocation_companion

    assert revocation_companion in COMPANIONS
    runtime = Runtime(issued["config"])
    assert runtime.settings.poll.revocation_recheck_minutes == 360  # the shipped default
    stop = threading.Event()
    stopper = revocation_companion(runtime, stop)
    assert any(t.name == "revocation-recheck" for t in threading.enumerate())
    stop.set()
    stopper()
    assert not any(t.name == "revocation-recheck" and t.is_alive() for t in threading.enumerate())
