"""The console's service layer on real submissions: inbox, page, decisions, key reveal, register."""

from __future__ import annotations

import json
from email import message_from_bytes, policy

import pytest
from sqlmodel import Session, select

from console.accounts import authenticate
from console.decisions import AlreadyDecided, BadDecision, NotFound, decide, reveal_key
from console.inbox import InboxFilter, list_inbox
from console.register_view import register_csv, register_rows
from console.submission_page import mail_page
from store.audit import verify_chain
from store.tables import AuditEvent, OutboxMessage, StaffDecision
from tests.support.console import PASSWORD, build_desk, member


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def deployment(request, tmp_path):
    """This module's deployments: the same service tests on SQLite and on PostgreSQL."""
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
        assert f'url = "{url}"' in path.read_text(encoding="utf-8")
    return config_dir


@pytest.fixture
def desk(issued: dict) -> dict:
    return build_desk(issued)


def test_the_inbox_lists_newest_first_with_states_and_a_clerk_sees_only_their_department(desk: dict) -> None:
    context = desk["context"]
    with Session(context.engine) as session:
        tanaka = list_inbox(session, context, member(desk, "tanaka"), InboxFilter())
        sato = list_inbox(session, context, member(desk, "sato"), InboxFilter())
        admin = list_inbox(session, context, member(desk, "admin"), InboxFilter())
        review_only = list_inbox(session, context, member(desk, "admin"), InboxFilter(state="open"))
        found = list_inbox(session, context, member(desk, "admin"), InboxFilter(query="R8-土木-009"))
    assert {i.receipt_no for i in tanaka.items} == {desk["accepted"], desk["review"]}
    assert [i.receipt_no for i in sato.items] == [desk["contract"]]
    assert len(admin.items) == 3 and admin.counts["open"] == 1 and admin.counts["decided"] == 2
    assert [i.receipt_no for i in review_only.items] == [desk["review"]]
    assert review_only.items[0].state_label == "未対応" and review_only.items[0].verdict == "needs_review"
    assert [i.receipt_no for i in found.items] == [desk["review"]]


def test_the_page_shows_findings_the_masked_key_and_the_register_comparison(desk: dict) -> None:
    context = desk["context"]
    with Session(context.engine) as session:
        page = mail_page(session, context, member(desk, "tanaka"), desk["review"])
        with pytest.raises(NotFound):
            mail_page(session, context, member(desk, "sato"), desk["review"])
        with pytest.raises(NotFound):
            mail_page(session, context, member(desk, "admin"), "K-2026-999999")
    submission = page.submissions[0]
    assert submission.awaits_decision and "register.no_contract" in {f.code for f in submission.findings}
    key = desk["unregistered"]["access_key"]
    assert "****" in submission.masked_key and key not in submission.masked_key
    assert any(c.label == "契約番号" and c.register == "(台帳になし)" for c in submission.comparison)
    assert page.attachments and page.attachments[0].kind_label == "認証キー等のお知らせ"


def test_accepting_sends_exactly_one_reply_audited_with_the_clerks_name(desk: dict) -> None:
    context = desk["context"]
    tanaka = member(desk, "tanaka")
    first = decide(context, tanaka, desk["review"], decision="accept", request_key="click-1")
    again = decide(context, tanaka, desk["review"], decision="accept", request_key="click-1")  # a double click
    assert not first.replayed and again.replayed and again.decision.id == first.decision.id
    with pytest.raises(AlreadyDecided, match="田中 一郎 さんが「受理」と判断済み"):
        decide(context, member(desk, "admin"), desk["review"], decision="return", reasons=["lookup.no_match"])
    with Session(context.engine) as session:
        replies = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key.like("decision:%"))).all()
        event = session.exec(select(AuditEvent).where(AuditEvent.action == "console.decided")).one()
        assert verify_chain(session).intact
    assert len(replies) == 1
    reply = message_from_bytes(replies[0].raw, policy=policy.default)
    assert desk["review"] in reply["Subject"] and "受け付けました" in reply["Subject"]
    assert reply["To"].addresses[0].addr_spec == "info@misato-kensetsu.example"
    assert event.actor == "staff:tanaka" and json.loads(event.detail_json)["staff"] == "田中 一郎"
    with Session(context.engine) as session:
        page = list_inbox(session, context, tanaka, InboxFilter(query=desk["review"]))
    assert page.items[0].state == "decided" and page.items[0].decision == "accept"


def test_a_return_needs_reasons_from_the_catalogue_and_its_reply_says_them(desk: dict) -> None:
    context = desk["context"]
    tanaka = member(desk, "tanaka")
    with pytest.raises(BadDecision, match="理由を1つ以上"):
        decide(context, tanaka, desk["review"], decision="return")
    with pytest.raises(BadDecision, match="一覧から"):
        decide(context, tanaka, desk["review"], decision="return", reasons=["no.such_code"])
    with pytest.raises(BadDecision):
        decide(context, tanaka, desk["review"], decision="maybe")
    decide(
        context,
        tanaka,
        desk["review"],
        decision="return",
        reasons=["period.ends_before_completion"],
        note="保証期間をご確認ください。",
    )
    with Session(context.engine) as session:
        reply = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key.like("decision:%"))).one()
        state = list_inbox(session, context, tanaka, InboxFilter(query=desk["review"])).items[0].state
    body = message_from_bytes(reply.raw, policy=policy.default).get_body(("plain",)).get_content()
    assert "保証期間の終期(令和9年3月31日)が、工期末(令和9年3月15日)より前です" in body
    # Since issue 14 a return for the guarantee's period asks the contractor to consult the guarantor
    # (not to resend the same notice): the reply says that one request.
    assert "保証期間をご確認ください。" in body and "保証会社に保証内容をご相談ください" in body
    assert state == "waiting_resend"


def test_handled_sends_no_mail_and_a_robot_verdict_cannot_be_decided(desk: dict) -> None:
    context = desk["context"]
    decide(context, member(desk, "admin"), desk["review"], decision="handled", note="電話で確認済み")
    with pytest.raises(AlreadyDecided, match="判断を待っていません"):
        decide(context, member(desk, "admin"), desk["accepted"], decision="accept")
    with pytest.raises(NotFound):
        decide(context, member(desk, "sato"), desk["accepted"], decision="accept")
    with Session(context.engine) as session:
        assert session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key.like("decision:%"))).all() == []
        assert session.exec(select(StaffDecision)).one().verdict == "handled"


def test_revealing_the_key_is_audited_and_only_for_the_right_department(desk: dict) -> None:
    context = desk["context"]
    with Session(context.engine) as session:
        submission_id = mail_page(session, context, member(desk, "tanaka"), desk["review"]).submissions[0].id
    key = reveal_key(context, member(desk, "tanaka"), desk["review"], submission_id)
    assert key == desk["unregistered"]["access_key"]
    with pytest.raises(NotFound):
        reveal_key(context, member(desk, "sato"), desk["review"], submission_id)
    with Session(context.engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.action == "console.key_revealed")).all()
    assert len(events) == 1 and json.loads(events[0].detail_json)["staff"] == "田中 一郎"
    assert key not in events[0].detail_json


def test_the_register_view_shows_what_arrived_and_what_is_missing_and_exports_csv(desk: dict) -> None:
    context = desk["context"]
    with Session(context.engine) as session:
        rows = {r.contract_no: r for r in register_rows(session, context, member(desk, "admin"))}
        clerk_rows = register_rows(session, context, member(desk, "sato"))
    assert rows["R8-土木-001"].statuses["前払金保証"].status == "accepted"
    assert rows["R8-土木-001"].statuses["契約保証"].status == "missing"
    assert rows["R8-土木-002"].statuses["契約保証"].status == "accepted"
    assert rows["R8-土木-002"].statuses["前払金保証"].status == "not_needed"
    assert [r.contract_no for r in clerk_rows] == ["R8-土木-002"]
    data = register_csv(list(rows.values()))
    assert data.startswith(b"\xef\xbb\xbf") and "受理済".encode() in data and "未着".encode() in data


def test_lockout_after_repeated_failures(desk: dict) -> None:
    from datetime import datetime, timedelta, timezone

    context = desk["context"]
    now = datetime(2026, 11, 25, 1, 0, tzinfo=timezone.utc)
    with Session(context.engine) as session:
        for _ in range(3):
            assert (
                authenticate(
                    session, "tanaka", "wrong-password", now=now, max_failures=3, lockout=timedelta(minutes=15)
                ).member
                is None
            )
        session.commit()
        locked = authenticate(
            session, "tanaka", PASSWORD, now=now + timedelta(minutes=1), max_failures=3, lockout=timedelta(minutes=15)
        )
        assert locked.member is None and locked.locked
        later = authenticate(
            session, "tanaka", PASSWORD, now=now + timedelta(minutes=16), max_failures=3, lockout=timedelta(minutes=15)
        )
        assert later.member is not None and later.member.name == "田中 一郎"


def test_a_decision_shows_in_the_next_digest_with_a_link_to_its_page(desk: dict) -> None:
    from datetime import datetime, timedelta, timezone

    from mailer.digest import DigestTarget, _context, collect

    context = desk["context"]
    decide(context, member(desk, "tanaka"), desk["review"], decision="accept", note="台帳に追加予定")
    settings = desk["runtime"].settings
    target = DigestTarget(
        "misato",
        "美郷町 契約窓口",
        "keiyaku@town.misato.example",
        settings.rules.desks["misato"],
        console_url="https://keydesk.town.example/",
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
        if line["verdict_label"] == "受理(職員判断)"
    ]
    assert len(lines) == 1 and "判断者: 田中 一郎" in lines[0]["reasons"]
    assert lines[0]["url"] == f"https://keydesk.town.example/submissions/{desk['review']}"


def test_a_mail_without_a_guarantee_goes_to_the_desks_first_department_as_in_the_digest(desk: dict) -> None:
    from tests.support.console import take_stored
    from tests.support.desk_mail import mail

    context = desk["context"]
    bare = take_stored(desk["runtime"], mail([], sender="someone@builder.example", subject="書類の件"), uid=7)
    assert bare.verdict == "returned"
    with Session(context.engine) as session:
        sato = list_inbox(session, context, member(desk, "sato"), InboxFilter())
        tanaka = list_inbox(session, context, member(desk, "tanaka"), InboxFilter())
    first = next(iter(context.desk("misato").rules.departments))
    assert first == "keiyaku"
    assert bare.receipt_no in {i.receipt_no for i in sato.items}
    assert bare.receipt_no not in {i.receipt_no for i in tanaka.items}
    assert {i.state for i in sato.items if i.receipt_no == bare.receipt_no} == {"waiting_resend"}


def test_a_resend_answers_a_return_decided_by_staff(desk: dict) -> None:
    from tests.support.console import files, take_stored
    from tests.support.desk_mail import mail

    context = desk["context"]
    tanaka = member(desk, "tanaka")
    decide(context, tanaka, desk["review"], decision="return", reasons=["key.missing"])
    # Since issue 10 a mail answers a return only when the return's reply went out before it arrived:
    # the decision's reply is delivered first, as the outbox would.
    from datetime import timedelta

    from tests.support.console import NOW

    with Session(context.engine) as session:
        reply = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key.like("decision:%"))).one()
        reply.state, reply.sent_at = "sent", NOW - timedelta(minutes=5)
        session.add(reply)
        session.commit()
    resend = take_stored(
        desk["runtime"],
        mail([("再送.pdf", files(desk["unregistered"])["key_notice"])], subject="Re: 再送します"),
        uid=8,
    )
    with Session(context.engine) as session:
        states = {i.receipt_no: i.state for i in list_inbox(session, context, tanaka, InboxFilter()).items}
        page = mail_page(session, context, tanaka, resend.receipt_no)
    assert states[desk["review"]] == "decided"
    assert page.submissions[0].resend_of == desk["review"]
