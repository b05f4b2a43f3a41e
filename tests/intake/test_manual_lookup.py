"""Manual mode end to end: everything but the look-up is automatic; a clerk reveals the key (audited),
records what the guarantor's site shows, the town's rules run on it, the contractor gets one result."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlmodel import Session, select

from intake.manual_lookup import ManualLookupError, parse_facts, pending_lookups, record_manual_lookup, reveal_key
from intake.register_store import DbAcceptedIndex
from keydesk.composition import desk_context
from keydesk.runtime import Runtime
from mailer.digest import DigestTarget, collect, render_text
from mailer.reply import template_environment
from rules.findings import Verdict
from store.tables import AuditEvent, LookupFailure, OutboxMessage, Submission
from tests.support.cli import invoke
from tests.support.desk_mail import NOW, mail, take, use_lookup

SITE = "https://d-sure.example/lookup"


@pytest.fixture
def deployment(deployment: Path, database_url: str) -> Path:
    """The suite's fresh deployment, on SQLite and on PostgreSQL (when available)."""
    path = deployment / "keydesk.toml"
    path.write_text(
        path.read_text(encoding="utf-8").replace('url = "sqlite:///var/keydesk.db"', f'url = "{database_url}"'),
        encoding="utf-8",
    )
    return deployment


@pytest.fixture
def manual_desk(issued: dict) -> Runtime:
    use_lookup(issued["config"], f'mode = "manual"\nlookup_site_url = "{SITE}"')
    return Runtime(issued["config"])


def key_notice(issued: dict, index: int) -> bytes:
    return Path(issued["rows"][index]["files"]["key_notice"]).read_bytes()


def facts(**changes) -> dict:
    """What the clerk reads on the site for the first guarantee of the ``issued`` fixture."""
    return {
        "guarantee_type": "前払金保証",
        "obligee": "美郷町長",
        "contractor_name": "株式会社美郷建設",
        "contract_no": "R8-土木-001",
        "work_name": "町道美郷中央線道路改良工事",
        "work_category": "工事",
        "contract_amount": 30862500,
        "guarantee_amount": 12345000,
        "contract_date": "2026-04-01",
        "completion_date": "2027-03-15",
        "period_start": "2026-04-01",
        "period_end": "2027-03-31",
        **changes,
    }


def outbox_keys(runtime: Runtime, inbound_id: int) -> list[str]:
    with Session(runtime.engine) as session:
        return [
            r.idempotency_key
            for r in session.exec(
                select(OutboxMessage).where(OutboxMessage.inbound_id == inbound_id).order_by(OutboxMessage.id)
            )
        ]


def test_manual_mode_from_mail_to_result(issued: dict, manual_desk: Runtime) -> None:
    runtime = manual_desk
    row, outcome = take(runtime, mail([("お知らせ.pdf", key_notice(issued, 0))]), uid=1)
    assert outcome.verdict is Verdict.NEEDS_REVIEW and outcome.findings == ("lookup.manual",)
    with Session(runtime.engine) as session:
        assert session.exec(select(LookupFailure)).all() == []  # nothing was looked up
        first = message_from_bytes(
            session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == f"reply:{row.id}")).one().raw,
            policy=policy.default,
        )
        [pending] = pending_lookups(session, "misato")
    assert "担当者が照会のうえ確認し" in first.get_body(("plain",)).get_content()
    assert (pending.receipt_no, pending.guarantee_no, pending.state) == (
        row.receipt_no,
        issued["rows"][0]["guarantee_no"],
        "manual",
    )
    assert "****" in pending.access_key_masked

    # The digest gives the clerk what the look-up needs: number, masked key, the site, the commands.
    context = desk_context(runtime, "misato")
    target = DigestTarget(
        "misato", "美郷町 契約窓口", "keiyaku@town.misato.example", context.rules, lookup_site_url=SITE
    )
    with Session(runtime.engine) as session:
        text = "\n".join(
            render_text(d, template_environment(runtime.settings.config_dir / "templates"))
            for d in collect(
                session,
                target,
                now=datetime.now(timezone.utc),
                zone="Asia/Tokyo",
                since=datetime(2026, 1, 1, tzinfo=timezone.utc),
            )
        )
    assert SITE in text and pending.guarantee_no in text and pending.access_key_masked in text
    assert f"keydesk manual reveal {row.receipt_no}" in text

    with Session(runtime.engine) as session:
        key = reveal_key(session, runtime.key_vault, "misato", row.receipt_no, staff="山田 花子", now=NOW)
        session.commit()
        [revealed] = session.exec(select(AuditEvent).where(AuditEvent.action == "lookup.key_revealed")).all()
    assert key == issued["rows"][0]["access_key"] and revealed.actor == "staff:山田 花子"

    with Session(runtime.engine) as session:
        result = record_manual_lookup(
            session, context, row.receipt_no, parse_facts(facts()), staff="山田 花子", now=NOW
        )
        session.commit()
        submission = session.exec(select(Submission).where(Submission.inbound_id == row.id)).one()
        # What the clerk recorded counts like a looked-up certificate (advance totals, duplicates).
        assert DbAcceptedIndex(session).receipt_for("misato", submission.guarantee_no) == row.receipt_no
        assert DbAcceptedIndex(session).advance_amounts("misato", "R8-土木-001")
    assert result.verdict is Verdict.ACCEPTED and result.result_mail_queued
    assert (submission.verdict, submission.lookup_state, submission.department) == ("accepted", "done", "kensetsu")
    assert outbox_keys(runtime, row.id) == [f"reply:{row.id}", f"result:{row.id}"]
    with Session(runtime.engine) as session:
        result_mail = session.exec(
            select(OutboxMessage).where(OutboxMessage.idempotency_key == f"result:{row.id}")
        ).one()
    assert "受け付けました" in message_from_bytes(result_mail.raw, policy=policy.default)["Subject"]

    with Session(runtime.engine) as session, pytest.raises(ManualLookupError):
        record_manual_lookup(session, context, row.receipt_no, parse_facts(facts()), staff="山田 花子", now=NOW)
    assert outbox_keys(runtime, row.id) == [f"reply:{row.id}", f"result:{row.id}"]  # exactly one result

    # The same notice again: already accepted, so the sender hears it at once and no clerk is needed.
    _again, outcome = take(runtime, mail([("お知らせ.pdf", key_notice(issued, 0))], subject="再送"), uid=2)
    assert outcome.verdict is Verdict.ACCEPTED and outcome.findings == ("submission.duplicate",)
    with Session(runtime.engine) as session:
        assert pending_lookups(session, "misato") == []


def test_the_towns_rules_judge_what_the_clerk_recorded(issued: dict, manual_desk: Runtime) -> None:
    runtime = manual_desk
    row, _ = take(runtime, mail([("お知らせ.pdf", key_notice(issued, 2))]), uid=1)
    low = facts(
        guarantee_type="契約保証",
        contractor_name="有限会社山田土木",
        contract_no="R8-土木-002",
        work_name="美郷川護岸補修工事",
        contract_amount=15400000,
        guarantee_amount=1000000,
        contract_date="2026-04-10",
        completion_date="2026-12-25",
        period_start="2026-04-10",
        period_end="2026-12-25",
    )
    with Session(runtime.engine) as session:
        result = record_manual_lookup(
            session, desk_context(runtime, "misato"), row.receipt_no, parse_facts(low), staff="山田 花子", now=NOW
        )
        session.commit()
    assert result.verdict is Verdict.RETURNED and "amount.contract_guarantee_low" in result.codes


def test_a_clerk_can_record_no_match_and_bad_facts_are_refused(issued: dict, manual_desk: Runtime) -> None:
    runtime = manual_desk
    row, _ = take(runtime, mail([("お知らせ.pdf", key_notice(issued, 1))]), uid=1)
    with pytest.raises(ManualLookupError, match="contract_amount"):
        parse_facts(facts(contract_amount=None))
    with Session(runtime.engine) as session:
        with pytest.raises(ManualLookupError, match="職員"):
            reveal_key(session, runtime.key_vault, "misato", row.receipt_no, staff=" ", now=NOW)
        result = record_manual_lookup(
            session,
            desk_context(runtime, "misato"),
            row.receipt_no,
            parse_facts({"status": "no_match"}),
            staff="佐藤",
            now=NOW,
        )
        session.commit()
    assert result.verdict is Verdict.RETURNED and result.codes == ("lookup.no_match",)


def test_the_manual_commands(issued: dict, manual_desk: Runtime) -> None:
    config = issued["config"]
    row, _ = take(manual_desk, mail([("お知らせ.pdf", key_notice(issued, 0))]), uid=1)
    listed = invoke(config, "manual", "list")
    assert listed.exit_code == 0 and row.receipt_no in listed.output and SITE in listed.output
    assert issued["rows"][0]["access_key"] not in listed.output
    revealed = invoke(config, "manual", "reveal", row.receipt_no, "--staff", "山田")
    assert revealed.exit_code == 0 and revealed.output.splitlines()[-1] == issued["rows"][0]["access_key"]
    recorded = invoke(
        config,
        *("manual", "record", row.receipt_no, "--staff", "山田", "--facts", "-"),
        input=json.dumps(facts(), ensure_ascii=False),
    )
    assert recorded.exit_code == 0, recorded.output
    assert "accepted" in recorded.output and "送信待ち" in recorded.output
    assert "照会待ち 0 件" in invoke(config, "manual", "list").output
    again = invoke(config, "manual", "record", row.receipt_no, "--staff", "山田", "--status", "no_match")
    assert again.refused_with("照会待ちの保証はありません")
