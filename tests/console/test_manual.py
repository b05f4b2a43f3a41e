"""Manual look-ups, held look-ups and revocations in the console (service layer, SQLite and PostgreSQL):
照会待ち in the inbox, the look-up form running the town's rules through intake.manual_lookup, exactly
one result mail, and a guarantee revoked after acceptance flagged until a person takes it on."""

from __future__ import annotations

import json
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlmodel import Session, select

from console.decisions import AlreadyDecided, BadDecision, acknowledge_revocation, decide
from console.inbox import InboxFilter, list_inbox
from console.manual import facts_from_form, record_lookup
from console.submission_page import mail_page
from intake.revocations import mark_revoked
from store.tables import AuditEvent, InboundMessage, OutboxMessage, StaffDecision, Submission
from tests.support.console import SITE, manual_desk, manual_form, member
from tests.support.desk_mail import NOW


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def deployment(request, tmp_path):
    """This module's deployments: the same tests on SQLite and on PostgreSQL."""
    from keydesk.deployment import create_config

    config_dir = tmp_path / "config"
    create_config(config_dir)
    if request.param == "postgresql":
        path = config_dir / "keydesk.toml"
        url = request.getfixturevalue("postgres_url")
        path.write_text(
            path.read_text(encoding="utf-8").replace('url = "sqlite:///var/keydesk.db"', f'url = "{url}"'),
            encoding="utf-8",
        )
    return config_dir


@pytest.fixture
def desk(issued: dict) -> dict:
    return manual_desk(issued)


def outbox_keys(desk: dict) -> list[str]:
    with Session(desk["context"].engine) as session:
        return [
            r.idempotency_key
            for r in session.exec(
                select(OutboxMessage).where(OutboxMessage.inbound_id == desk["waiting"].id).order_by(OutboxMessage.id)
            )
        ]


def test_a_manual_lookup_is_held_in_the_inbox_and_its_page_offers_the_key_site_and_form(desk: dict) -> None:
    context, tanaka, receipt = desk["context"], member(desk, "tanaka"), desk["waiting"].receipt_no
    with Session(context.engine) as session:
        inbox = list_inbox(session, context, tanaka, InboxFilter())
        held = list_inbox(session, context, tanaka, InboxFilter(state="held"))
        page = mail_page(session, context, tanaka, receipt)
    [item] = [i for i in inbox.items if i.receipt_no == receipt]
    assert (item.state, item.state_label) == ("held", "照会待ち")
    assert [i.receipt_no for i in held.items] == [receipt] and inbox.counts["held"] == 1
    [view] = page.submissions
    assert view.awaits_lookup and view.awaits_decision and view.has_key and "****" in view.masked_key
    assert page.lookup_url == SITE  # the desk's own lookup_site_url, not the stand-in's


def test_recording_the_lookup_runs_the_rules_and_sends_exactly_one_result(desk: dict) -> None:
    context, tanaka, receipt = desk["context"], member(desk, "tanaka"), desk["waiting"].receipt_no
    [submission_id] = [s.id for s in mail_page(Session(context.engine), context, tanaka, receipt).submissions]
    woken = []
    context.on_decision = lambda: woken.append(1)
    outcome = record_lookup(context, tanaka, receipt, submission_id=submission_id, form=manual_form(), request_key="k1")
    assert outcome.verdict == "accepted" and not outcome.replayed and woken == [1]
    reply_keys = outbox_keys(desk)
    assert reply_keys == [f"reply:{desk['waiting'].id}", f"result:{desk['waiting'].id}"]
    with Session(context.engine) as session:
        result = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == reply_keys[1])).one()
        decision = session.exec(select(StaffDecision).where(StaffDecision.submission_id == submission_id)).one()
        [recorded] = session.exec(select(AuditEvent).where(AuditEvent.action == "lookup.manual_recorded")).all()
        submission = session.get(Submission, submission_id)
        item = next(i for i in list_inbox(session, context, tanaka, InboxFilter()).items if i.receipt_no == receipt)
    assert "受け付けました" in message_from_bytes(result.raw, policy=policy.default)["Subject"]
    assert (decision.decision, decision.verdict, decision.staff_name, decision.outbox_id) == (
        "lookup",
        "accepted",
        "田中 一郎",
        result.id,
    )
    assert recorded.actor == "staff:田中 一郎" and json.loads(recorded.detail_json)["verdict"] == "accepted"
    assert (submission.lookup_state, submission.verdict, item.state) == ("done", "accepted", "decided")

    # A double click (the same form again) is answered, not repeated; anyone else is told who recorded it.
    again = record_lookup(context, tanaka, receipt, submission_id=submission_id, form=manual_form(), request_key="k1")
    assert again.replayed
    with pytest.raises(AlreadyDecided, match="田中 一郎"):
        record_lookup(
            context, member(desk, "admin"), receipt, submission_id=submission_id, form=manual_form(), request_key="k2"
        )
    with pytest.raises(AlreadyDecided):
        decide(context, tanaka, receipt, decision="accept", submission_id=submission_id)
    assert outbox_keys(desk) == reply_keys and woken == [1]


def test_bad_form_values_are_refused_in_japanese_naming_the_fields(desk: dict) -> None:
    with pytest.raises(BadDecision, match="請負代金額") as bad_amount:
        facts_from_form(manual_form(contract_amount="三千万"))
    assert "2026-04-01" in str(bad_amount.value)
    with pytest.raises(BadDecision, match="保証期間の終期"):
        facts_from_form(manual_form(period_end="2027-13-45"))
    with pytest.raises(BadDecision, match="受注者"):
        facts_from_form(manual_form(contractor_name=""))
    with pytest.raises(BadDecision, match="照会の結果"):
        facts_from_form(manual_form(status="maybe"))
    # No match needs no certificate facts; 全角 digits and 円 are read as a person types them.
    assert facts_from_form({"status": "no_match"}).status == "no_match"
    assert facts_from_form(manual_form(guarantee_amount="６，１７２，５００円")).guarantee_amount == 6172500
    context, tanaka, receipt = desk["context"], member(desk, "tanaka"), desk["waiting"].receipt_no
    [submission_id] = [s.id for s in mail_page(Session(context.engine), context, tanaka, receipt).submissions]
    with pytest.raises(BadDecision):
        record_lookup(context, tanaka, receipt, submission_id=submission_id, form=manual_form(contract_amount="x"))
    assert outbox_keys(desk) == [f"reply:{desk['waiting'].id}"]  # nothing recorded, nothing sent


def test_a_clerk_of_another_department_cannot_record_the_lookup(desk: dict) -> None:
    from console.decisions import NotFound

    context, receipt = desk["context"], desk["waiting"].receipt_no
    [submission_id] = [
        s.id for s in mail_page(Session(context.engine), context, member(desk, "tanaka"), receipt).submissions
    ]
    with pytest.raises(NotFound):
        record_lookup(context, member(desk, "sato"), receipt, submission_id=submission_id, form=manual_form())
    assert outbox_keys(desk) == [f"reply:{desk['waiting'].id}"]


def test_a_decision_without_the_lookup_ends_the_wait(desk: dict) -> None:
    """Staff may decide a held item by hand (e.g. 対応済み): it is then no longer looked up or offered."""
    context, tanaka, receipt = desk["context"], member(desk, "tanaka"), desk["waiting"].receipt_no
    decide(context, tanaka, receipt, decision="handled")
    with Session(context.engine) as session:
        submission = session.exec(select(Submission).where(Submission.inbound_id == desk["waiting"].id)).one()
        page = mail_page(session, context, tanaka, receipt)
    assert submission.lookup_state == "decided" and not page.submissions[0].awaits_lookup


def test_a_held_lookup_shows_as_held(desk: dict) -> None:
    context, admin = desk["context"], member(desk, "admin")
    with Session(context.engine) as session:
        review = session.exec(
            select(Submission)
            .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
            .where(InboundMessage.receipt_no == desk["review"])
        ).one()
        review.lookup_state, review.next_lookup_at = "held", NOW
        session.add(review)
        session.commit()
        states = {i.receipt_no: i.state for i in list_inbox(session, context, admin, InboxFilter()).items}
    assert states[desk["review"]] == "held"


def test_a_guarantee_revoked_after_acceptance_is_flagged_until_someone_takes_it_on(desk: dict) -> None:
    context, tanaka = desk["context"], member(desk, "tanaka")
    with Session(context.engine) as session:
        accepted = session.exec(
            select(Submission)
            .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
            .where(InboundMessage.receipt_no == desk["accepted"])
        ).one()
        assert mark_revoked(session, accepted.guarantee_no, "保証委託契約の解除", NOW, actor="guarantor") == [
            accepted.id
        ]
        session.commit()
        page = list_inbox(session, context, tanaka, InboxFilter())
        flagged = list_inbox(session, context, tanaka, InboxFilter(revoked=True))
        view = mail_page(session, context, tanaka, desk["accepted"])
    [item] = [i for i in page.items if i.receipt_no == desk["accepted"]]
    assert item.revocation_open and page.revoked == 1 and [i.receipt_no for i in flagged.items] == [desk["accepted"]]
    assert item.to_json()["revoked_at"] is not None
    assert view.submissions[0].revoked_at and view.submissions[0].revoked_reason == "保証委託契約の解除"
    assert "受付後に保証が失効" in [h.action for h in view.history]

    acknowledge_revocation(context, tanaka, desk["accepted"], accepted.id)
    acknowledge_revocation(context, tanaka, desk["accepted"], accepted.id)  # a double click: one event
    with Session(context.engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "console.revocation_seen")).all()
        page = list_inbox(session, context, tanaka, InboxFilter())
        view = mail_page(session, context, tanaka, desk["accepted"])
    assert [e.actor for e in events] == ["staff:tanaka"] and json.loads(events[0].detail_json)["staff"] == "田中 一郎"
    assert page.revoked == 0 and not next(i for i in page.items if i.receipt_no == desk["accepted"]).revocation_open
    assert "田中 一郎" in view.submissions[0].revocation_seen_by
    with pytest.raises(Exception, match="失効はありません"):
        acknowledge_revocation(context, tanaka, desk["review"], view.submissions[0].id + 999)


def test_the_console_reuses_intake_manual_lookup() -> None:
    """console/manual.py reuses intake/manual_lookup for the rules and the reply (one piece of code per job)."""
    source = (Path(__file__).resolve().parents[2] / "console" / "manual.py").read_text(encoding="utf-8")
    assert "record_manual_lookup(" in source and "judge_certificate" not in source and "enqueue(" not in source


def test_a_recorded_lookup_shows_in_the_next_digest_with_who_recorded_it(desk: dict) -> None:
    from datetime import datetime, timedelta, timezone

    from mailer.digest import DigestTarget, _context, collect

    context, tanaka, receipt = desk["context"], member(desk, "tanaka"), desk["waiting"].receipt_no
    [submission_id] = [s.id for s in mail_page(Session(context.engine), context, tanaka, receipt).submissions]
    record_lookup(context, tanaka, receipt, submission_id=submission_id, form=manual_form())
    target = DigestTarget(
        "misato", "美郷町 契約窓口", "keiyaku@town.misato.example", desk["runtime"].settings.rules.desks["misato"]
    )
    now = datetime.now(timezone.utc) + timedelta(minutes=1)
    with Session(context.engine) as session:
        digest = next(
            d
            for d in collect(session, target, now=now, zone="Asia/Tokyo", since=now - timedelta(hours=1))
            if d.department == "kensetsu"
        )
    lines = [
        line
        for section in _context(digest)["sections"]
        for line in section["lines"]
        if line["verdict_label"] == "受付済(職員が照会)"
    ]
    assert len(lines) == 1 and "判断者: 田中 一郎" in lines[0]["reasons"] and lines[0]["receipt_no"] == receipt
