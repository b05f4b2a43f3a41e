"""The console's tests share this: a desk with real submissions (issued guarantees, mails taken through the
real pipeline, raw mail stored), staff accounts of two departments, a desk in manual mode, and a
signed-in HTTP client."""

from __future__ import annotations

import hashlib
import re
import json
from pathlib import Path

import httpx
from sqlmodel import Session

from console.accounts import StaffMember, add_staff, member_of
from intake.raw_store import RawStore
from keydesk.composition import build_context
from keydesk.composition import build_pipeline
from keydesk.runtime import Runtime
from store.tables import InboundMessage
from tests.support.cli import invoke
from tests.support.desk_mail import NOW, mail, use_lookup

PASSWORD = "correct-horse-battery"
# A 前払金保証 for a contract the town's register does not hold: register.no_contract → needs_review.
UNREGISTERED = """guarantee_type,contractor_name,contractor_email,obligee,desk,contract_no,work_name,work_category,contract_amount,guarantee_amount,fee,contract_date,completion_date,period_start,period_end,bulk_fee_payment
前払金保証,株式会社美郷建設,info@misato-kensetsu.example,美郷町長,misato,R8-土木-009,美郷中央公園<script>alert(1)</script>整備工事,工事,20000000,8000000,60000,2026-04-01,2027-03-15,2026-04-01,2027-03-31,false
"""


def files(row: dict) -> dict[str, bytes]:
    return {kind: Path(path).read_bytes() for kind, path in row["files"].items() if path}


def take_stored(runtime: Runtime, raw: bytes, uid: int) -> InboundMessage:
    """The pipeline on one mail, with its raw bytes stored as the intake stores them."""
    stored = RawStore(runtime.settings.storage.directory).put(raw)
    pipeline = build_pipeline(runtime, "misato", clock=lambda: NOW)
    with Session(runtime.engine) as session:
        row = InboundMessage(
            desk="misato",
            account="keiyaku@town.misato.example",
            mailbox="INBOX",
            uidvalidity=1,
            uid=uid,
            sha256=hashlib.sha256(raw).hexdigest(),
            size=len(raw),
            received_at=NOW,
            raw_path=stored.relative_path,
        )
        session.add(row)
        session.flush()
        outcome = pipeline(session, row, raw)
        row.verdict = outcome.verdict.value
        row.state = "processed"
        row.processed_at = NOW
        session.commit()
        session.refresh(row)
        return row


def build_desk(issued: dict) -> dict:
    config = issued["config"]
    csv_path = issued["tmp"] / "unregistered.csv"
    csv_path.write_text(UNREGISTERED, encoding="utf-8")
    result = invoke(config, "guarantor", "issue", str(csv_path), "--out", str(issued["tmp"] / "documents2"), "--json")
    assert result.exit_code == 0, result.output
    unregistered = json.loads(result.stdout.splitlines()[0])
    runtime = Runtime(config)
    rows = issued["rows"]
    accepted = take_stored(runtime, mail([("お知らせ.pdf", files(rows[0])["key_notice"])]), uid=1)
    review = take_stored(
        runtime,
        mail(
            [("お知らせ<img src=x onerror=alert(1)>.pdf", files(unregistered)["key_notice"])],
            subject="<script>alert('件名')</script>認証キーの提出",
        ),
        uid=2,
    )
    contract = take_stored(
        runtime, mail([("契約保証.pdf", files(rows[2])["key_notice"])], sender="keiri@yamada-doboku.example"), uid=3
    )
    assert accepted.verdict == "accepted" and review.verdict == "needs_review", (
        accepted.findings_json,
        review.findings_json,
    )
    with Session(runtime.engine) as session:
        known = {"kensetsu", "keiyaku"}
        kensetsu = add_staff(
            session,
            login="tanaka",
            name="田中 一郎",
            role="clerk",
            departments=["kensetsu"],
            password=PASSWORD,
            known_departments=known,
            desk="misato",
        )
        keiyaku = add_staff(
            session,
            login="sato",
            name="佐藤 花子",
            role="clerk",
            departments=["keiyaku"],
            password=PASSWORD,
            known_departments=known,
            desk="misato",
        )
        admin = add_staff(
            session,
            login="admin",
            name="管理 者",
            role="admin",
            departments=[],
            password=PASSWORD,
            known_departments=known,
            desk="misato",
        )
        members = {a.login: member_of(a) for a in (kensetsu, keiyaku, admin)}
        session.commit()
    return {
        "runtime": runtime,
        "context": build_context(runtime),
        "accepted": accepted.receipt_no,
        "review": review.receipt_no,
        "contract": contract.receipt_no,
        "members": members,
        "unregistered": unregistered,
        "config": config,
    }


def member(desk: dict, login: str) -> StaffMember:
    return desk["members"][login]


SITE = "https://d-sure.example/lookup"


def manual_form(**changes) -> dict[str, str]:
    """What a clerk types for the 中間前払金保証 of the ``issued`` fixture (as a browser sends it)."""
    return {
        "status": "found",
        "guarantee_type": "中間前払金保証",
        "obligee": "美郷町長",
        "contractor_name": "株式会社美郷建設",
        "contract_no": "R8-土木-001",
        "work_name": "町道美郷中央線道路改良工事",
        "work_category": "工事",
        "contract_amount": "30,862,500",
        "guarantee_amount": "6172500",
        "contract_date": "2026-04-01",
        "completion_date": "2027/3/15",
        "period_start": "2026-10-01",
        "period_end": "2027-03-31",
        "guarantor": "",
        "revoked_reason": "",
        **changes,
    }


def manual_desk(issued: dict) -> dict:
    """The console's desk, switched to manual mode, with one notice waiting for a clerk's look-up."""
    desk = build_desk(issued)
    use_lookup(issued["config"], f'mode = "manual"\nlookup_site_url = "{SITE}"')
    runtime = Runtime(issued["config"])
    waiting = take_stored(runtime, mail([("中間前払金.pdf", files(issued["rows"][1])["key_notice"])]), uid=20)
    assert waiting.verdict == "needs_review", waiting.findings_json
    return {**desk, "runtime": runtime, "context": build_context(runtime), "waiting": waiting}


def csrf_of(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


def signed_in(url: str, login: str = "tanaka") -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
    page = client.get("/login")
    assert page.status_code == 200 and 'name="login"' in page.text and 'name="password"' in page.text
    assert 'name="csrf_token"' in page.text
    response = client.post("/login", data={"login": login, "password": PASSWORD, "csrf_token": csrf_of(page.text)})
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    inbox = client.get("/")
    assert inbox.status_code == 200
    return client, csrf_of(inbox.text)
