"""Mail hygiene (issue 12): who gets a reply, machines never, forgers never in full, limits visible."""

from __future__ import annotations

import hashlib
from datetime import timedelta
import json
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlmodel import Session, select

from intake.authentication_results import Authentication, MethodResult, authenticated_for, authentication
from intake.mime import parse_headers
from keydesk.composition import build_pipeline
from keydesk.runtime import Runtime
from mailer.reply_policy import SUPPRESSED, decide, plausible_submission, reply_address
from rules.findings import Verdict
from store.tables import AuditEvent, InboundMessage, OutboxMessage, Submission
from tests.conftest import invoke
from tests.desk_mail import NOW, SENDER, mail

BOUNCES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"
DESK = "keiyaku@town.misato.example"


def files(issued: dict, index: int) -> dict[str, bytes]:
    return {kind: Path(path).read_bytes() for kind, path in issued["rows"][index]["files"].items() if path}


def take(runtime: Runtime, raw: bytes, uid: int, *, too_large: bool = False, **limits):
    pipeline = build_pipeline(runtime, "misato", clock=lambda: NOW)
    if limits:
        pipeline.limits = pipeline.limits.model_copy(update=limits)
    with Session(runtime.engine) as session:
        row = InboundMessage(desk="misato", account="keiyaku", mailbox="INBOX", uidvalidity=1, uid=uid,
                             sha256=hashlib.sha256(raw).hexdigest(), size=len(raw), received_at=NOW,
                             state="too_large" if too_large else "new")
        session.add(row)
        session.flush()
        outcome = pipeline(session, row, raw)
        session.commit()
        session.refresh(row)
        return row, outcome


def outbox_of(runtime: Runtime, inbound_id: int) -> OutboxMessage | None:
    with Session(runtime.engine) as session:
        return session.exec(select(OutboxMessage).where(OutboxMessage.inbound_id == inbound_id)).first()


def codes(row: InboundMessage) -> list[str]:
    return [item["code"] for item in json.loads(row.findings_json)]


# --- the policy, pure ----------------------------------------------------------------------------

def _decide(**kwargs):
    base = dict(automatic=False, automatic_reason=None, own_reason=None, address="a@x.example", own_addresses=[DESK],
                recent_replies=0, limit=5, sender_address="a@x.example")
    return decide(**{**base, **kwargs})


def test_policy_matrix() -> None:
    assert _decide(policy="authenticated", authenticated=True).reply
    refused = _decide(policy="authenticated", authenticated=False)
    assert not refused.reply and "not authenticated" in refused.reason
    short = _decide(policy="submissions", authenticated=False, submission=True, address="third@party.example")
    assert short.reply and short.short and short.address == "a@x.example"  # From only, never Reply-To
    assert not _decide(policy="submissions", authenticated=False, submission=False).reply
    full = _decide(policy="all", authenticated=False)
    assert full.reply and not full.short
    assert _decide(policy="submissions", authenticated=True, submission=False).reply


def test_limits_hold_a_reply_back_but_an_ordinary_submission_is_answered() -> None:
    held = _decide(recent_replies=5, limit=5)
    assert not held.reply and held.suppressed and held.address == "a@x.example"
    assert _decide(recent_replies=50, limit=5, new_guarantee=True).reply
    desk = _decide(desk_recent_replies=200, desk_limit=200, new_guarantee=True)
    assert not desk.reply and desk.suppressed and "desk rate limit" in desk.reason
    assert desk.to_json() == {"send": False, "to": None, "reason": desk.reason}


def test_a_reply_to_in_another_domain_is_used_only_for_authenticated_mail() -> None:
    headers = parse_headers(b"From: a@x.example\r\nReply-To: victim@third.example\r\n\r\n")
    assert reply_address(headers, authenticated=True) == "victim@third.example"
    assert reply_address(headers, authenticated=False) == "a@x.example"
    same = parse_headers(b"From: a@x.example\r\nReply-To: office@x.example\r\n\r\n")
    assert reply_address(same, authenticated=False) == "office@x.example"


def test_plausible_submission_by_content_or_words_of_the_trade() -> None:
    assert plausible_submission(has_pdf=True, subject="hello")
    assert plausible_submission(has_pdf=False, subject="【電子保証】提出")
    assert plausible_submission(has_pdf=False, subject="", body="認証キーを送ります")
    assert not plausible_submission(has_pdf=False, subject="cheap watches", body="buy now")


# --- Authentication-Results: alignment -----------------------------------------------------------

def _auth(*results: MethodResult) -> Authentication:
    return Authentication("mx.town.misato.example", results, 1, 0)


def test_dmarc_and_aligned_passes_authenticate_the_from_domain_unaligned_ones_do_not() -> None:
    assert authenticated_for(_auth(MethodResult("dmarc", "pass", (("header.from", "x.example"),))), "x.example")
    assert not authenticated_for(_auth(MethodResult("dmarc", "pass", (("header.from", "y.example"),))), "x.example")
    assert authenticated_for(_auth(MethodResult("dkim", "pass", (("header.d", "mail.x.example"),))), "x.example")
    assert not authenticated_for(_auth(MethodResult("dkim", "pass", (("header.d", "bulk-sender.example"),))), "x.example")
    assert authenticated_for(_auth(MethodResult("spf", "pass", (("smtp.mailfrom", "b@x.example"),))), "x.example")
    assert not authenticated_for(_auth(MethodResult("spf", "pass", (("smtp.mailfrom", "b@evil.example"),))), "x.example")
    # The domain owner's DMARC fail wins over an aligned-looking pass.
    assert not authenticated_for(_auth(MethodResult("dmarc", "fail"),
                                       MethodResult("dkim", "pass", (("header.d", "x.example"),))), "x.example")


def test_a_forged_header_with_our_id_below_ours_is_ignored() -> None:
    raw = (b"Authentication-Results: mx.town.misato.example; dmarc=none\r\n"
           b"Authentication-Results: mx.town.misato.example; dmarc=pass header.from=x.example\r\n"
           b"From: a@x.example\r\n\r\n")
    auth = authentication(parse_headers(raw), "mx.town.misato.example")
    assert not authenticated_for(auth, "x.example")


# --- through the pipeline --------------------------------------------------------------------------

def test_an_unauthenticated_submission_gets_a_short_reply_that_quotes_nothing(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    raw = mail([("EVIL-FILENAME.pdf", files(issued, 0)["key_notice"])], subject="FORGED-SUBJECT-TEXT",
               headers={"Reply-To": "victim@third-party.example"}, authenticated=False)
    row, outcome = take(runtime, raw, uid=1)
    outbox = outbox_of(runtime, row.id)
    assert outbox is not None and json.loads(outbox.recipients_json) == [SENDER]
    reply = message_from_bytes(outbox.raw, policy=policy.default)
    text = reply.get_content() + str(reply["Subject"])
    assert "FORGED-SUBJECT-TEXT" not in text and "EVIL-FILENAME" not in text and row.receipt_no in text
    assert reply["In-Reply-To"] is None and reply["Precedence"] == "auto_reply"


def test_an_unauthenticated_mail_that_is_no_submission_is_kept_not_answered(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    raw = mail([], subject="Great offer", body="Click here.", authenticated=False)
    row, _ = take(runtime, raw, uid=1)
    assert outbox_of(runtime, row.id) is None
    assert "reply.withheld" in codes(row)  # shown to staff in the digest, not silence


def test_a_held_reply_is_kept_in_the_outbox_and_listed(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    row, _ = take(runtime, mail([], subject="質問です 電子保証"), uid=1, replies_per_desk_per_hour=0)
    outbox = outbox_of(runtime, row.id)
    assert outbox.state == SUPPRESSED and "desk rate limit" in outbox.last_error
    assert "reply.suppressed" in codes(row)
    listed = invoke(issued["config"], "outbox", "list")
    assert listed.exit_code == 0 and "desk rate limit" in listed.output and "送信保留" in listed.output
    # The digest shows the mail with why it was not answered, not as if it had been.
    from datetime import datetime, timezone

    from mailer.digest import DigestTarget, collect

    with Session(runtime.engine) as session:
        target = DigestTarget("misato", "美郷町 契約窓口", DESK, runtime.settings.rules.desks["misato"])
        digests = collect(session, target, now=datetime.now(timezone.utc), zone="Asia/Tokyo",
                          since=datetime(2026, 1, 1, tzinfo=timezone.utc))
    lines = [line for digest in digests for line in digest.lines if line.receipt_no == row.receipt_no]
    assert lines and all("返信を保留(送信上限)" in line.reasons for line in lines)


def test_the_sender_limit_counts_only_mails_without_a_new_guarantee(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    for uid in (1, 2):
        take(runtime, mail([], subject=f"質問 {uid} 電子保証"), uid=uid, replies_per_sender_per_hour=2)
    row, _ = take(runtime, mail([], subject="質問 3 電子保証"), uid=3, replies_per_sender_per_hour=2)
    assert outbox_of(runtime, row.id).state == SUPPRESSED
    # A key notice with a guarantee not submitted before is always answered.
    row, _ = take(runtime, mail([("a.pdf", files(issued, 0)["key_notice"])]), uid=4, replies_per_sender_per_hour=2)
    assert outbox_of(runtime, row.id).state != SUPPRESSED


def test_a_spoofed_from_cannot_take_over_a_resend_link(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    returned, outcome = take(runtime, mail([("step3.pdf", files(issued, 0)["certificate_view"])]), uid=1)
    assert outcome.verdict is Verdict.RETURNED
    our_reply = outbox_of(runtime, returned.id)
    with Session(runtime.engine) as session:  # the reply reached the contractor before anyone answered it
        sent = session.get(OutboxMessage, our_reply.id)
        sent.state, sent.sent_at = "sent", NOW - timedelta(minutes=5)
        session.add(sent)
        session.commit()
    forged, _ = take(runtime, mail([("a.pdf", files(issued, 0)["key_notice"])], subject="再送",
                                   authenticated=False), uid=2)
    with Session(runtime.engine) as session:
        assert all(s.resend_of_id is None for s in session.exec(
            select(Submission).where(Submission.inbound_id == forged.id)))
    # The same unauthenticated mail answering our reply (its Message-ID went to the contractor only) links.
    threaded, _ = take(runtime, mail([("a.pdf", files(issued, 0)["key_notice"])], subject="Re: 再送",
                                     headers={"In-Reply-To": our_reply.message_id}, authenticated=False), uid=3)
    with Session(runtime.engine) as session:
        links = [s.resend_of_id for s in session.exec(select(Submission).where(Submission.inbound_id == threaded.id))]
    assert any(links)


def test_a_forged_bounce_cannot_mark_a_reply_undelivered(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    row, _ = take(runtime, mail([("a.pdf", files(issued, 0)["key_notice"])]), uid=1)
    message_id = outbox_of(runtime, row.id).message_id
    bounce = (f"From: MAILER-DAEMON@evil.example\r\nTo: {DESK}\r\nSubject: Undelivered\r\n"
              f"Auto-Submitted: auto-replied\r\n\r\nMessage-ID: {message_id}\r\n").encode()
    take(runtime, bounce, uid=2)
    relayed = (f"From: MAILER-DAEMON@relay.town.example\r\nTo: {DESK}\r\nSubject: Undelivered\r\n"
               f"Auto-Submitted: auto-replied\r\nContent-Type: multipart/report; boundary=b\r\n\r\n--b\r\n"
               f"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; 127.0.0.1\r\n\r\n"
               f"Final-Recipient: rfc822; {SENDER}\r\nAction: failed\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
               f"Message-ID: {message_id}\r\n--b--\r\n").encode()
    with Session(runtime.engine) as session:
        assert session.exec(select(AuditEvent).where(AuditEvent.action == "outbox.bounced")).all() == []
    take(runtime, relayed, uid=3)  # our own relay (the [smtp] host) wrote it: believed
    with Session(runtime.engine) as session:
        assert len(session.exec(select(AuditEvent).where(AuditEvent.action == "outbox.bounced")).all()) == 1


@pytest.mark.parametrize("path", sorted(BOUNCES.glob("*.eml")), ids=lambda p: p.stem)
def test_no_mail_of_the_bounce_collection_is_answered(issued: dict, path: Path) -> None:
    runtime = Runtime(issued["config"])
    raw = path.read_bytes()
    too_large = path.stem.startswith("oversize")
    if too_large:  # the intake keeps only the headers of an over-size mail
        raw = raw[: raw.index(b"\r\n\r\n") + 4]
    row, outcome = take(runtime, raw, uid=1, too_large=too_large)
    assert outcome.verdict is Verdict.IGNORED, codes(row)
    assert outbox_of(runtime, row.id) is None and row.automatic


def test_verify_json_says_what_the_desk_would_send(issued: dict, tmp_path: Path) -> None:
    unauthenticated = tmp_path / "unauthenticated.eml"
    unauthenticated.write_bytes(mail([("a.pdf", files(issued, 0)["key_notice"])], authenticated=False,
                                     headers={"Reply-To": "other@third.example"}))
    bounce = tmp_path / "bounce.eml"
    bounce.write_bytes((BOUNCES / "gmail_dsn.eml").read_bytes())
    authenticated = tmp_path / "authenticated.eml"
    authenticated.write_bytes(mail([("a.pdf", files(issued, 0)["key_notice"])],
                                   headers={"Reply-To": "office@third.example"}))
    result = invoke(issued["config"], "verify", "--json", str(unauthenticated), str(bounce), str(authenticated),
                    issued["rows"][0]["files"]["key_notice"])
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines[0]["reply"] == {"send": True, "to": SENDER, "short": True,
                                 "reason": "short reply: sender not authenticated, plausibly a submission"}
    assert lines[1]["reply"]["send"] is False and lines[1]["reply"]["reason"].startswith("automatic mail")
    assert lines[2]["reply"] == {"send": True, "to": "office@third.example", "reason": "reply"}
    assert lines[3]["reply"] == {"send": False, "to": None, "reason": "a PDF file alone has no sender to answer"}


def test_an_over_size_bounce_is_recognised_from_its_headers(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    headers = b"From: someone@x.example\r\nReturn-Path: <>\r\nSubject: x\r\n\r\n"
    row, outcome = take(runtime, headers, uid=1, too_large=True)
    assert outcome.verdict is Verdict.IGNORED and outbox_of(runtime, row.id) is None
    person, outcome = take(runtime, b"From: " + SENDER.encode() + b"\r\nSubject: big\r\n\r\n", uid=2, too_large=True)
    assert "mail.too_large" in outcome.findings


# --- what is stored and looked up per mail ------------------------------------------------------------

def _documents(runtime: Runtime, inbound_id: int):
    from store.tables import Document

    with Session(runtime.engine) as session:
        return session.exec(select(Document).where(Document.inbound_id == inbound_id).order_by(Document.id)).all()


def test_files_are_matched_by_content_not_by_their_names(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    raw = mail([("a.pdf", files(issued, 0)["certificate_view"]), ("a.pdf", files(issued, 0)["key_notice"])])
    row, _ = take(runtime, raw, uid=1)
    documents = _documents(runtime, row.id)
    assert [d.kind for d in documents] == ["certificate_view", "key_notice"]
    with Session(runtime.engine) as session:
        [submission] = session.exec(select(Submission).where(Submission.inbound_id == row.id)).all()
    assert submission.document_id == documents[1].id  # the key notice, not the first file of that name


def test_from_archives_only_pdfs_are_stored_and_bytes_are_capped(issued: dict) -> None:
    import io
    import zipfile

    runtime = Runtime(issued["config"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notice.pdf", files(issued, 0)["key_notice"])
        archive.writestr("filler.bin", b"\0" * 200_000)
    raw = mail([("docs.zip", buffer.getvalue())])
    row, _ = take(runtime, raw, uid=1)
    stored = {d.display_name: d.stored_path for d in _documents(runtime, row.id)}
    assert stored["notice.pdf"] and stored["filler.bin"] == ""
    # A cap per sender and day: the next mail's files are recorded (hash, size, kind) but not stored.
    row, _ = take(runtime, mail([("again.pdf", files(issued, 1)["key_notice"])]), uid=2,
                  stored_bytes_per_sender_per_day_max=len(files(issued, 0)["key_notice"]) + 10)
    [document] = _documents(runtime, row.id)
    assert document.stored_path == "" and document.size > 0 and document.kind == "key_notice"


def test_look_ups_per_mail_are_capped_and_the_rest_go_to_a_person(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    raw = mail([("1.pdf", files(issued, 0)["key_notice"]), ("2.pdf", files(issued, 2)["key_notice"])])
    row, outcome = take(runtime, raw, uid=1, lookups_per_mail_max=1)
    assert "lookup.refused" in outcome.findings and outcome.verdict is Verdict.NEEDS_REVIEW


def test_a_mail_over_a_limit_is_kept_and_answered_please_resend(issued: dict) -> None:
    runtime = Runtime(issued["config"])
    many = [(f"{n}.txt", b"x") for n in range(30)]
    raw = mail(many, subject="【電子保証】提出")
    row, outcome = take(runtime, raw, uid=1, mime_parts_max=10)
    assert outcome.verdict is Verdict.RETURNED and "mail.unreadable" in outcome.findings
    reply = message_from_bytes(outbox_of(runtime, row.id).raw, policy=policy.default)
    assert "読み取ることができませんでした" in reply.get_content()
    # Unauthenticated, with words of the trade: the short reply says the same and quotes nothing.
    row, _ = take(runtime, mail(many, subject="【電子保証】提出 XYZ-QUOTE", authenticated=False), uid=2, mime_parts_max=10)
    short = message_from_bytes(outbox_of(runtime, row.id).raw, policy=policy.default)
    assert "読み取ることができませんでした" in short.get_content() and "XYZ-QUOTE" not in short.as_string()
