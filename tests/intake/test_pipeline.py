"""The pipeline on real documents: issued by the guarantor, walked, verified, recorded, answered."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from email import message_from_bytes, policy
from pathlib import Path

from sqlmodel import Session, select

from keydesk.composition import build_pipeline
from keydesk.runtime import Runtime
from rules.findings import Verdict
from store.tables import Document, InboundMessage, OutboxMessage, Submission
from tests.support.desk_mail import NOW, SENDER, mail, take
from formats.access_key import format_key


def files(issued: dict, index: int) -> dict[str, bytes]:
    return {kind: Path(path).read_bytes() for kind, path in issued["rows"][index]["files"].items() if path}


def reply_of(runtime: Runtime, inbound_id: int):
    with Session(runtime.engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.inbound_id == inbound_id)).all()
    assert len(rows) <= 1
    return message_from_bytes(rows[0].raw, policy=policy.default) if rows else None


def test_a_key_notice_is_accepted_recorded_and_answered(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    issued_row = issued["rows"][0]
    row, outcome = take(runtime, mail([("認証キー等のお知らせ.pdf", files(issued, 0)["key_notice"])]), uid=1)

    assert outcome.verdict is Verdict.ACCEPTED
    assert row.receipt_no == "K-2026-000001" and row.verdict == "accepted"
    with Session(runtime.engine) as session:
        submission = session.exec(select(Submission).where(Submission.inbound_id == row.id)).one()
        document = session.exec(select(Document).where(Document.inbound_id == row.id)).one()
    assert submission.guarantee_no == issued_row["guarantee_no"]
    assert submission.verdict == "accepted" and submission.department == "kensetsu"
    assert submission.contractor_name == "株式会社美郷建設"
    # The key is encrypted at rest and masked for display.
    assert format_key(runtime.key_vault.decrypt(submission.access_key_encrypted)) == issued_row["access_key"]
    assert (
        submission.access_key_masked.endswith(issued_row["access_key"][-4:]) and "****" in submission.access_key_masked
    )
    assert document.kind == "key_notice"
    stored = runtime.settings.storage.directory / document.stored_path
    assert stored.read_bytes() == files(issued, 0)["key_notice"]

    reply = reply_of(runtime, row.id)
    assert reply["To"].addresses[0].addr_spec == SENDER
    assert "K-2026-000001" in reply["Subject"] and "受け付けました" in reply["Subject"]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"].startswith("<")
    body = reply.get_body(("plain",)).get_content()
    assert issued_row["guarantee_no"] in body
    assert issued_row["access_key"] not in body


def test_a_certificate_view_is_returned_and_the_resend_is_linked(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    first, outcome = take(runtime, mail([("電子証書.pdf", files(issued, 2)["certificate_view"])]), uid=1)
    assert outcome.verdict is Verdict.RETURNED and "doc.certificate_view" in outcome.findings
    reply = reply_of(runtime, first.id)
    assert "再送" in reply["Subject"]
    assert "STEP4" in reply.get_body(("plain",)).get_content()
    _mark_reply_sent(runtime, first.id, NOW)  # the resend answers a reply that went out before it arrived

    second, outcome = take(
        runtime, mail([("お知らせ.pdf", files(issued, 2)["key_notice"])], subject="Re: 再送します"), uid=2
    )
    assert outcome.verdict is Verdict.ACCEPTED
    with Session(runtime.engine) as session:
        returned = session.exec(select(Submission).where(Submission.inbound_id == first.id)).one()
        resend = session.exec(select(Submission).where(Submission.inbound_id == second.id)).one()
    assert returned.guarantee_no is None and returned.verdict == "returned"
    assert resend.resend_of_id == returned.id
    assert first.receipt_no in reply_of(runtime, second.id).get_body(("plain",)).get_content()


def _mark_reply_sent(runtime: Runtime, inbound_id: int, at: datetime) -> None:
    with Session(runtime.engine) as session:
        row = session.exec(select(OutboxMessage).where(OutboxMessage.inbound_id == inbound_id)).one()
        row.state, row.sent_at = "sent", at
        session.add(row)
        session.commit()


def test_a_mail_is_not_the_resend_of_one_whose_reply_had_not_gone_out(issued: dict) -> None:
    """Two mails from one sender at the same moment: the one without a key notice is returned, but the
    other is not its resend (the sender never saw the return), neither while the reply waits in the
    outbox nor when it went out only after the second mail arrived."""
    from datetime import timedelta

    runtime = Runtime(issued["config"])
    first, outcome = take(runtime, mail([]), uid=1)
    assert outcome.verdict is Verdict.RETURNED
    second, _ = take(runtime, mail([("お知らせ.pdf", files(issued, 2)["key_notice"])]), uid=2)
    _mark_reply_sent(runtime, first.id, NOW + timedelta(seconds=5))
    third, _ = take(runtime, mail([("お知らせ.pdf", files(issued, 1)["key_notice"])]), uid=3)
    with Session(runtime.engine) as session:
        links = session.exec(
            select(Submission.resend_of_id).where(Submission.inbound_id.in_([second.id, third.id]))
        ).all()
    assert links == [None, None]


def test_automatic_mail_is_recorded_but_not_answered(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    raw = mail([], subject="自動応答: 不在です", headers={"Auto-Submitted": "auto-replied"})
    row, outcome = take(runtime, raw, uid=1)
    assert outcome.verdict is Verdict.IGNORED and row.automatic
    assert reply_of(runtime, row.id) is None


def test_a_mail_over_the_size_limit_is_answered_from_its_headers(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    headers_only = mail([])  # what the poller keeps of a mail it did not download
    pipeline = build_pipeline(runtime, "misato", clock=lambda: NOW)
    with Session(runtime.engine) as session:
        row = InboundMessage(
            desk="misato",
            account="keiyaku",
            mailbox="INBOX",
            uidvalidity=1,
            uid=9,
            sha256="0" * 64,
            size=40 * 1024 * 1024,
            state="too_large",
            received_at=NOW,
        )
        session.add(row)
        session.flush()
        outcome = pipeline(session, row, headers_only)
        session.commit()
        inbound_id = row.id
    assert outcome.verdict is Verdict.RETURNED and outcome.findings == ("mail.too_large",)
    assert "25MB" in reply_of(runtime, inbound_id).get_body(("plain",)).get_content()


def test_findings_are_stored_as_objects_with_codes(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    row, _ = take(runtime, mail([("領収書.pdf", files(issued, 0)["fee_receipt"])]), uid=1)
    codes = [f["code"] for f in json.loads(row.findings_json)]
    assert codes == ["doc.fee_receipt", "key.missing"]
    assert row.verdict == "returned"


def test_a_bounce_of_our_reply_is_recorded_and_listed_among_the_digests_failures(issued: dict) -> None:
    from mailer.digest import DigestTarget, collect
    from store.tables import AuditEvent

    runtime = Runtime(issued["config"])
    row, _ = take(runtime, mail([("お知らせ.pdf", files(issued, 0)["key_notice"])]), uid=1)
    reply = reply_of(runtime, row.id)
    bounce = (
        # Only a report our server authenticated (or that our relay wrote) may mark a reply lost.
        "Authentication-Results: mx.town.misato.example; dkim=pass header.d=misato-kensetsu.example\r\n"
        "From: MAILER-DAEMON@mx.misato-kensetsu.example\r\n"
        "To: keiyaku@town.misato.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Final-Recipient: rfc822; {SENDER}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {reply['Message-ID']}\r\nSubject: x\r\n"
        "--b--\r\n"
    ).encode()
    bounced, outcome = take(runtime, bounce, uid=2)
    assert outcome.verdict is Verdict.IGNORED and reply_of(runtime, bounced.id) is None
    with Session(runtime.engine) as session:
        [event] = session.exec(select(AuditEvent).where(AuditEvent.action == "outbox.bounced")).all()
        outbox_row = session.exec(select(OutboxMessage).where(OutboxMessage.inbound_id == row.id)).one()
        assert event.subject == f"outbox:{outbox_row.id}"
        assert "User unknown" in json.loads(event.detail_json)["error"]
        settings = runtime.settings
        target = DigestTarget(
            "misato", "美郷町 契約窓口", "keiyaku@town.misato.example", settings.rules.desks["misato"]
        )
        digests = collect(
            session,
            target,
            now=datetime.now(timezone.utc),
            zone="Asia/Tokyo",
            since=datetime(2026, 1, 1, tzinfo=timezone.utc),
        )
    failures = [line for digest in digests for line in digest.lines if line.section == "failure"]
    assert [line.receipt_no for line in failures] == [row.receipt_no]


def test_a_quarantined_mail_is_acknowledged_with_a_receipt_number(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    pipeline = build_pipeline(runtime, "misato", clock=lambda: NOW)
    raw = mail([("認証キー等のお知らせ.pdf", b"%PDF-1.7 broken")])
    with Session(runtime.engine) as session:
        row = InboundMessage(
            desk="misato",
            account="keiyaku",
            mailbox="INBOX",
            uidvalidity=1,
            uid=1,
            sha256="0" * 64,
            size=len(raw),
            received_at=NOW,
            subject="【電子保証】認証キー等の提出",
        )
        session.add(row)
        session.flush()
        pipeline.acknowledge_quarantined(session, row, raw)
        session.commit()
        session.refresh(row)

    reply = reply_of(runtime, row.id)
    assert row.receipt_no == "K-2026-000001" and reply["To"].addresses[0].addr_spec == SENDER
    assert [f["code"] for f in json.loads(row.findings_json)] == ["mail.processing_failed"]
    body = reply.get_body(("plain",)).get_content()
    assert "自動での確認ができませんでした" in body and "認証キー等のお知らせ.pdf" in body and "K-2026-000001" in body


def test_a_quarantined_automatic_mail_is_not_acknowledged(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    pipeline = build_pipeline(runtime, "misato", clock=lambda: NOW)
    raw = mail([], headers={"Auto-Submitted": "auto-replied"})
    with Session(runtime.engine) as session:
        row = InboundMessage(
            desk="misato",
            account="keiyaku",
            mailbox="INBOX",
            uidvalidity=1,
            uid=1,
            sha256="1" * 64,
            size=len(raw),
            received_at=NOW,
        )
        session.add(row)
        session.flush()
        pipeline.acknowledge_quarantined(session, row, raw)
        session.commit()
        session.refresh(row)
    assert reply_of(runtime, row.id) is None and row.receipt_no  # staff can still refer to it
