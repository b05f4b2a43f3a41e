"""Whether to reply: automatic mail, the loop guard, the per-sender rate limit, the reply address."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlmodel import Session, SQLModel, select

from keydesk.database import make_engine
from mailer.message import Mailbox, build_message
from mailer.outbox import enqueue
from mailer.reply import ReplyFacts, build_reply, template_environment
from mailer.reply_policy import (
    MARKER_HEADER,
    ReplyDecision,
    decide,
    header_addresses,
    mark,
    own_mail_reason,
    recent_reply_count,
    reply_address,
    should_reply,
    valid_address,
)
from rules.findings import Finding, Verdict
from store import stored_findings
from store.tables import InboundMessage, OutboxMessage, Submission

DESK = "keiyaku@town.misato.example"
NOW = datetime(2026, 4, 10, 1, 0, tzinfo=timezone.utc)
TEMPLATES = Path(__file__).resolve().parents[2] / "config" / "templates"


def mail(headers: str) -> email.message.EmailMessage:
    raw = headers.strip().replace("\n", "\r\n").encode() + b"\r\n\r\nbody\r\n"
    return email.message_from_bytes(raw, policy=email.policy.default)


CONTRACTOR = mail("""
From: =?UTF-8?B?576O6YO35bu66Kit?= <tanaka@misato-kensetsu.example>
To: keiyaku@town.misato.example
Subject: test
Message-ID: <abc@mail.misato-kensetsu.example>
""")


@pytest.fixture
def session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/t.db")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def add_reply(session: Session, to: str, at: datetime, *, kind: str = "reply", desk: str = "misato") -> None:
    message = build_message(sender=Mailbox(DESK), to=[Mailbox(to)], subject="s", text="t", now=at)
    row, _ = enqueue(
        session,
        desk=desk,
        idempotency_key=f"{kind}:{message['Message-ID']}",
        kind=kind,
        message=message,
        envelope_from=DESK,
        recipients=[to],
    )
    row.created_at = at
    session.add(row)
    session.flush()


# --- the reply address -------------------------------------------------------------------------


def test_reply_to_comes_before_from() -> None:
    message = mail("""
From: tanaka@misato-kensetsu.example
Reply-To: "Office" <jimu@misato-kensetsu.example>
""")
    assert reply_address(message) == "jimu@misato-kensetsu.example"
    assert reply_address(CONTRACTOR) == "tanaka@misato-kensetsu.example"


def test_an_invalid_reply_to_falls_back_to_from() -> None:
    message = mail("""
From: tanaka@misato-kensetsu.example
Reply-To: not an address
""")
    assert reply_address(message) == "tanaka@misato-kensetsu.example"


def test_an_encoded_display_name_cannot_smuggle_in_another_address() -> None:
    # The display name decodes to 'a@b.example <attacker@evil.example>'.
    message = mail("""
From: =?utf-8?q?a=40b.example_=3Cattacker=40evil.example=3E?= <real@sender.example>
""")
    assert reply_address(message) == "real@sender.example"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "nobody",
        "a@b",
        "tanaka@misato-kensetsu.example\r\nBcc: x@evil.example",
        "<a@b.example>",
        "a@b.example, c@d.example",
        "田中@例え.jp",
        "a b@c.example",
    ],
)
def test_anything_but_a_plain_address_is_refused(raw: str) -> None:
    assert valid_address(raw) is None


def test_idn_domains_are_answered_in_ascii() -> None:
    assert valid_address("info@美郷建設.jp") == "info@" + "美郷建設.jp".encode("idna").decode("ascii")
    assert valid_address("info@美郷建設.jp").isascii()


def test_no_usable_address_means_no_reply() -> None:
    decision = decide(
        automatic=False,
        automatic_reason=None,
        own_reason=None,
        address=None,
        own_addresses=[DESK],
        recent_replies=0,
        limit=5,
    )
    assert not decision.reply and "no valid address" in decision.reason


TANAKA = "tanaka@misato-kensetsu.example"
ORDINARY = dict(
    automatic=False,
    automatic_reason=None,
    own_reason=None,
    address=TANAKA,
    own_addresses=[DESK],
    recent_replies=0,
    limit=5,
)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ReplyDecision(True, TANAKA, "reply")),
        ({"recent_replies": 4}, ReplyDecision(True, TANAKA, "reply")),
        (
            {"automatic": True, "automatic_reason": "Precedence: list"},
            ReplyDecision(False, None, "automatic mail: Precedence: list"),
        ),
        ({"automatic": True}, ReplyDecision(False, None, "automatic mail: no reason given")),
        (
            {"own_reason": "From is the desk's own address"},
            ReplyDecision(False, None, "keydesk's own mail: From is the desk's own address"),
        ),
        ({"address": None}, ReplyDecision(False, None, "no valid address to reply to (Reply-To and From)")),
        ({"address": DESK.upper()}, ReplyDecision(False, None, "the reply address is the desk's own address")),
        (
            {"recent_replies": 5},
            # Issue 12 (merged from main): a reply the limit holds back keeps its address and is kept
            # in the outbox as suppressed, never sent.
            ReplyDecision(
                False, TANAKA, f"rate limit: 5 replies to {TANAKA} in the last hour (limit 5)", suppressed=True
            ),
        ),
    ],
)
def test_every_reason_not_to_reply_and_the_one_to_reply(changes, expected) -> None:
    """Exact decisions: ``reply`` is a bool, the address is set only for a reply (or a suppressed one),
    the reason is logged."""
    assert decide(**{**ORDINARY, **changes}) == expected


def test_every_address_of_every_header_is_read() -> None:
    message = mail("""
From: tanaka@misato-kensetsu.example, "Sato" <sato@misato-kensetsu.example>
From: third@misato-kensetsu.example
""")
    assert header_addresses(message, "From") == [
        "tanaka@misato-kensetsu.example",
        "sato@misato-kensetsu.example",
        "third@misato-kensetsu.example",
    ]
    compat = email.message_from_string("From: a@b.example, C <c@d.example>\n\nbody")  # compat32: plain strings
    assert header_addresses(compat, "From") == ["a@b.example", "c@d.example"]
    assert header_addresses(compat, "Reply-To") == []


def test_addresses_need_smtputf8_or_spaces_are_refused_but_plain_ones_are_kept() -> None:
    assert valid_address("  tanaka@misato-kensetsu.example  ") == TANAKA
    assert valid_address("tänaka@misato-kensetsu.example") is None  # would need SMTPUTF8
    assert valid_address("tanaka @misato-kensetsu.example") is None
    assert valid_address(None) is None


@pytest.mark.parametrize(
    ("kind", "desk"), [("reply", "misato town"), ("re ply", "misato"), ("reply", ""), ("", "misato")]
)
def test_the_marker_takes_identifiers_only(kind, desk) -> None:
    message = build_message(sender=Mailbox(DESK), to=[Mailbox("a@b.example")], subject="s", text="t", now=NOW)
    with pytest.raises(ValueError, match="marker values are ASCII identifiers"):
        mark(message, kind=kind, desk=desk)
    assert message.get_all(MARKER_HEADER) is None


# --- automatic mail ----------------------------------------------------------------------------


def test_automatic_mail_is_never_answered(session) -> None:
    decision = should_reply(
        session,
        CONTRACTOR,
        desk="misato",
        desk_address=DESK,
        limit=5,
        now=NOW,
        automatic=True,
        automatic_reason="Auto-Submitted: auto-replied",
    )
    assert decision.reply is False and decision.address is None
    assert decision.reason == "automatic mail: Auto-Submitted: auto-replied"


def test_ordinary_mail_is_answered(session) -> None:
    decision = should_reply(session, CONTRACTOR, desk="misato", desk_address=DESK, limit=5, now=NOW, automatic=False)
    assert decision.reply is True and decision.address == "tanaka@misato-kensetsu.example"


# --- the loop guard ----------------------------------------------------------------------------


def test_our_own_reply_coming_back_is_recognised(session) -> None:
    facts = ReplyFacts(
        desk="misato",
        desk_name="美郷町 契約窓口",
        desk_address=DESK,
        contact=[],
        receipt_no="K-2026-000001",
        received_at=NOW,
        recipient="tanaka@misato-kensetsu.example",
        verdict=Verdict.ACCEPTED,
    )
    ours = build_reply(facts, template_environment(TEMPLATES), now=NOW)
    back = email.message_from_bytes(ours.as_bytes(), policy=email.policy.default)
    assert own_mail_reason(back, own_addresses=[DESK]).startswith(f"carries keydesk's {MARKER_HEADER} header")
    decision = should_reply(session, back, desk="misato", desk_address=DESK, limit=5, now=NOW, automatic=False)
    assert not decision.reply and decision.reason.startswith("keydesk's own mail")


def test_marker_forwarded_by_a_relay_is_recognised_without_our_domain() -> None:
    message = mail(f"""
From: relay@elsewhere.example
Message-ID: <zzz@elsewhere.example>
{MARKER_HEADER}: digest; desk=misato
""")
    assert "digest; desk=misato" in own_mail_reason(message, own_addresses=[DESK])


def test_message_id_in_the_desks_domain_is_ours() -> None:
    message = mail("""
From: someone@other.example
Message-ID: <177.1.2@Town.Misato.Example>
""")
    assert "Message-ID is in the desk's own domain" in own_mail_reason(message, own_addresses=[DESK])
    assert own_mail_reason(CONTRACTOR, own_addresses=[DESK]) is None


@pytest.mark.parametrize("header", ["From", "Sender", "Reply-To"])
def test_mail_from_the_desks_own_address_is_ours(header: str) -> None:
    message = mail(f"""
From: tanaka@misato-kensetsu.example
{header}: =?UTF-8?B?576O6YO355S6?= <KEIYAKU@town.misato.example>
Message-ID: <q@mail.misato-kensetsu.example>
""")
    assert own_mail_reason(message, own_addresses=[DESK]) == f"{header} is the desk's own address"


def test_other_desks_of_the_deployment_count_as_own(session) -> None:
    message = mail("""
From: keiyaku@town.other.example
Message-ID: <q@mail.other.example>
""")
    decision = should_reply(
        session,
        message,
        desk="misato",
        desk_address=DESK,
        limit=5,
        now=NOW,
        automatic=False,
        other_own_addresses=["keiyaku@town.other.example"],
    )
    assert not decision.reply and "own address" in decision.reason


def test_mark_replaces_and_validates() -> None:
    message = build_message(sender=Mailbox(DESK), to=[Mailbox("a@b.example")], subject="s", text="t", now=NOW)
    mark(message, kind="notice", desk="misato")
    mark(message, kind="reply", desk="misato")
    assert message.get_all(MARKER_HEADER) == ["reply; desk=misato"]
    with pytest.raises(ValueError):
        mark(message, kind="reply\r\nBcc: x@evil.example", desk="misato")


# --- the rate limit ----------------------------------------------------------------------------


def test_rate_limit_counts_only_this_senders_replies_in_the_last_hour(session) -> None:
    sender = "tanaka@misato-kensetsu.example"
    for minutes in (1, 20, 59):
        add_reply(session, sender.upper(), NOW - timedelta(minutes=minutes))
    add_reply(session, sender, NOW - timedelta(minutes=61))  # older than an hour
    add_reply(session, "other@misato-kensetsu.example", NOW - timedelta(minutes=5))
    add_reply(session, sender, NOW - timedelta(minutes=5), kind="digest")
    add_reply(session, sender, NOW - timedelta(minutes=5), desk="other")
    assert recent_reply_count(session, desk="misato", address=sender, now=NOW) == 3

    allowed = should_reply(session, CONTRACTOR, desk="misato", desk_address=DESK, limit=4, now=NOW, automatic=False)
    assert allowed.reply
    add_reply(session, sender, NOW - timedelta(minutes=2))
    refused = should_reply(session, CONTRACTOR, desk="misato", desk_address=DESK, limit=4, now=NOW, automatic=False)
    assert not refused.reply
    assert refused.reason == f"rate limit: 4 replies to {sender} in the last hour (limit 4)"
    # An hour later the oldest have left the window.
    later = should_reply(
        session, CONTRACTOR, desk="misato", desk_address=DESK, limit=4, now=NOW + timedelta(minutes=30), automatic=False
    )
    assert later.reply


def test_replies_to_mails_with_a_new_guarantee_do_not_count_toward_the_sender_limit(session) -> None:
    """A contractor submitting ten guarantees in ten mails is answered every time; replies to
    questions, empty mails and repeats of an accepted guarantee are what the limit counts."""
    sender = "tanaka@misato-kensetsu.example"

    def answered(n: int, findings: list[Finding] | None, guarantee_no: str | None = "26-000123-4") -> None:
        inbound = InboundMessage(
            desk="misato", account="a", mailbox="INBOX", uidvalidity=1, uid=n, sha256=f"{n:064d}", size=1
        )
        session.add(inbound)
        session.flush()
        if findings is not None:
            session.add(
                Submission(
                    desk="misato",
                    inbound_id=inbound.id,
                    guarantee_no=guarantee_no,
                    verdict=Verdict.ACCEPTED.value,
                    findings_json=stored_findings.dump(findings),
                )
            )
        message = build_message(sender=Mailbox(DESK), to=[Mailbox(sender)], subject="s", text="t", now=NOW)
        row, _ = enqueue(
            session,
            desk="misato",
            idempotency_key=f"reply:{n}",
            kind="reply",
            message=message,
            envelope_from=DESK,
            recipients=[sender],
            inbound_id=inbound.id,
        )
        row.created_at = NOW - timedelta(minutes=n)
        session.add(row)
        session.flush()

    answered(1, [])  # a new guarantee: exempt
    answered(2, [Finding("lookup.no_match")])  # a new guarantee, returned: exempt all the same
    assert recent_reply_count(session, desk="misato", address=sender, now=NOW) == 0
    answered(3, [Finding("submission.duplicate")])  # the same guarantee again: counts
    answered(4, None)  # no guarantee at all (a question): counts
    answered(5, [], guarantee_no=None)  # a submission without a number: counts
    add_reply(session, sender, NOW - timedelta(minutes=6))  # a reply to no recorded mail: counts
    assert recent_reply_count(session, desk="misato", address=sender, now=NOW) == 4


def test_an_unauthenticated_reply_to_is_kept_only_in_the_from_domain() -> None:
    """Anyone can write From and Reply-To: without authentication a Reply-To pointing at a third
    party is ignored, one in the sender's own domain is kept."""
    own_domain = mail("""
From: tanaka@misato-kensetsu.example
Reply-To: jimu@misato-kensetsu.example
""")
    third_party = mail("""
From: tanaka@misato-kensetsu.example
Reply-To: victim@elsewhere.example
""")
    assert reply_address(own_domain, authenticated=False) == "jimu@misato-kensetsu.example"
    assert reply_address(third_party, authenticated=False) == "tanaka@misato-kensetsu.example"
    assert reply_address(third_party, authenticated=True) == "victim@elsewhere.example"
    assert reply_address(third_party) == "victim@elsewhere.example"  # authenticated unless told otherwise


POLICY_BASE = dict(
    automatic=False,
    automatic_reason=None,
    own_reason=None,
    address="jimu@misato-kensetsu.example",
    own_addresses=[DESK],
    recent_replies=0,
    limit=5,
    sender_address="tanaka@misato-kensetsu.example",
)


@pytest.mark.parametrize(
    ("policy", "authenticated", "submission", "expected"),
    [
        ("all", False, False, ReplyDecision(True, "jimu@misato-kensetsu.example", "reply")),
        ("authenticated", True, False, ReplyDecision(True, "jimu@misato-kensetsu.example", "reply")),
        (
            "authenticated",
            False,
            True,
            ReplyDecision(False, None, "sender not authenticated (reply_to = authenticated)"),
        ),
        ("submissions", True, False, ReplyDecision(True, "jimu@misato-kensetsu.example", "reply")),
        (
            "submissions",
            False,
            False,
            ReplyDecision(False, None, "sender not authenticated and the mail is no submission"),
        ),
        (
            "submissions",
            False,
            True,
            ReplyDecision(
                True,
                "tanaka@misato-kensetsu.example",
                "short reply: sender not authenticated, plausibly a submission",
                short=True,
            ),
        ),
    ],
)
def test_who_gets_a_reply_under_each_reply_to_policy(policy, authenticated, submission, expected) -> None:
    """reply_to = authenticated | submissions | all: an unauthenticated sender gets nothing, the short
    reply at its From address (never the Reply-To), or the full reply."""
    decision = decide(**POLICY_BASE, policy=policy, authenticated=authenticated, submission=submission)
    assert decision == expected


def test_an_unknown_reply_policy_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="'everyone'"):
        decide(**POLICY_BASE, policy="everyone")


def test_the_desk_limit_holds_replies_back_in_the_outbox(session) -> None:
    """Past the desk's hourly limit a reply is built and kept (suppressed), not refused outright."""
    below = decide(**POLICY_BASE, desk_recent_replies=2, desk_limit=3)
    assert below == ReplyDecision(True, "jimu@misato-kensetsu.example", "reply")
    at = decide(**POLICY_BASE, desk_recent_replies=3, desk_limit=3)
    assert at == ReplyDecision(
        False,
        "jimu@misato-kensetsu.example",
        "desk rate limit: 3 replies in the last hour (limit 3)",
        suppressed=True,
    )
    for n in range(3):  # three replies of this desk to three senders in the last hour
        add_reply(session, f"firm{n}@example.jp", NOW - timedelta(minutes=n + 1))
    add_reply(session, "firm9@example.jp", NOW - timedelta(minutes=2), desk="other")
    held = should_reply(
        session, CONTRACTOR, desk="misato", desk_address=DESK, limit=9, now=NOW, automatic=False, desk_limit=3
    )
    assert (held.reply, held.suppressed, held.address) == (False, True, "tanaka@misato-kensetsu.example")
    assert held.reason == "desk rate limit: 3 replies in the last hour (limit 3)"
    assert should_reply(
        session, CONTRACTOR, desk="misato", desk_address=DESK, limit=9, now=NOW, automatic=False, desk_limit=4
    ).reply


def test_the_short_reply_goes_to_from_and_the_sender_limit_counts_replies_to_from(session) -> None:
    message = mail("""
From: tanaka@misato-kensetsu.example
Reply-To: jimu@misato-kensetsu.example
""")

    def ask():
        return should_reply(
            session,
            message,
            desk="misato",
            desk_address=DESK,
            limit=2,
            now=NOW,
            automatic=False,
            policy="submissions",
            authenticated=False,
            submission=True,
        )

    first = ask()
    assert (first.reply, first.short, first.address) == (True, True, "tanaka@misato-kensetsu.example")
    for minutes in (1, 2):
        add_reply(session, "jimu@misato-kensetsu.example", NOW - timedelta(minutes=minutes))  # not counted
    assert ask().reply
    for minutes in (3, 4):
        add_reply(session, "tanaka@misato-kensetsu.example", NOW - timedelta(minutes=minutes))
    refused = ask()
    assert not refused.reply and "2 replies to tanaka@misato-kensetsu.example" in refused.reason


def test_a_limit_of_zero_turns_replies_off(session) -> None:
    decision = should_reply(session, CONTRACTOR, desk="misato", desk_address=DESK, limit=0, now=NOW, automatic=False)
    assert not decision.reply and "limit 0" in decision.reason


def test_corrupt_recipient_lists_are_skipped(session) -> None:
    add_reply(session, "tanaka@misato-kensetsu.example", NOW - timedelta(minutes=1))
    row = session.exec(select(OutboxMessage)).one()
    row.recipients_json = "{not json"
    session.add(row)
    session.flush()
    assert recent_reply_count(session, desk="misato", address="tanaka@misato-kensetsu.example", now=NOW) == 0


# --- real automatic mail, byte for byte, through the intake's detector --------------------------

POSTFIX_BOUNCE = b"""Return-Path: <>\r
X-Original-To: keiyaku@town.misato.example\r
Delivered-To: keiyaku@town.misato.example\r
Received: by mx.town.misato.example (Postfix)\r
\tid 4F1A2B3C4D; Fri, 10 Apr 2026 10:24:05 +0900 (JST)\r
Date: Fri, 10 Apr 2026 10:24:05 +0900 (JST)\r
From: MAILER-DAEMON@mx.town.misato.example (Mail Delivery System)\r
Subject: Undelivered Mail Returned to Sender\r
To: keiyaku@town.misato.example\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary="4F1A2B3C4D.1775784245/mx.town.misato.example"\r
Content-Transfer-Encoding: 8bit\r
Message-Id: <20260410012405.4F1A2B3C4D@mx.town.misato.example>\r
\r
This is a MIME-encapsulated message.\r
\r
--4F1A2B3C4D.1775784245/mx.town.misato.example\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
This is the mail system at host mx.town.misato.example.\r
\r
I'm sorry to have to inform you that your message could not\r
be delivered to one or more recipients. It's attached below.\r
\r
<tanaka@misato-kensetsu.example>: host mx.misato-kensetsu.example[192.0.2.25] said:\r
    550 5.1.1 <tanaka@misato-kensetsu.example>: Recipient address rejected:\r
    User unknown in virtual mailbox table (in reply to RCPT TO command)\r
\r
--4F1A2B3C4D.1775784245/mx.town.misato.example\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.town.misato.example\r
X-Postfix-Queue-ID: 4F1A2B3C4D\r
X-Postfix-Sender: rfc822; keiyaku@town.misato.example\r
Arrival-Date: Fri, 10 Apr 2026 10:24:04 +0900 (JST)\r
\r
Final-Recipient: rfc822; tanaka@misato-kensetsu.example\r
Original-Recipient: rfc822;tanaka@misato-kensetsu.example\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; mx.misato-kensetsu.example\r
Diagnostic-Code: smtp; 550 5.1.1 <tanaka@misato-kensetsu.example>: Recipient\r
    address rejected: User unknown in virtual mailbox table\r
\r
--4F1A2B3C4D.1775784245/mx.town.misato.example--\r
"""

OUTLOOK_OUT_OF_OFFICE = (
    b"From: =?iso-2022-jp?b?GyRCRURDZhsoQiAbJEJCQE86GyhC?= <tanaka@misato-kensetsu.example>\r\n"
    b"To: =?iso-2022-jp?b?GyRCSH42P0QuGyhCIBskQjdATHNBazh9GyhC?= <keiyaku@town.misato.example>\r\n"
    b"Subject: =?iso-2022-jp?b?GyRCPCtGMDF+RXobKEI6IBskQiFaSH42P0QuGyhCIBskQjdATHNBazh9GyhC?=\r\n"
    b" =?iso-2022-jp?b?GyRCIVs8dUlVSFY5ZhsoQiBLLTIwMjYtMDAwMTIzIBskQkcnPlobKEI=?=\r\n"
    b" =?iso-2022-jp?b?GyRCJS0hPEV5JE4kKkNOJGkkOyRyPHUkMUlVJDEkXiQ3JD8bKEI=?=\r\n"
    b"Thread-Topic: =?iso-2022-jp?b?GyRCIVpIfjY/RC4bKEIgGyRCN0BMc0FrOH0hWxsoQg==?=\r\n"
    b"Thread-Index: AQHcrT1xbW9ja2luZ2JpcmQ=\r\n"
    b"Date: Fri, 10 Apr 2026 01:24:30 +0000\r\n"
    b"Message-ID: <TYCPR01MB84120F1E2D3C4B5A69788A1BD4E52@TYCPR01MB8412.jpnprd01.prod.outlook.com>\r\n"
    b"In-Reply-To: <177578424000.4242.1234567890@town.misato.example>\r\n"
    b"References: <177578424000.4242.1234567890@town.misato.example>\r\n"
    b"Auto-Submitted: auto-generated\r\n"
    b"X-Auto-Response-Suppress: All\r\n"
    b"X-MS-Exchange-Inbox-Rules-Loop: tanaka@misato-kensetsu.example\r\n"
    b"X-MS-Has-Attach:\r\n"
    b'Content-Type: text/plain; charset="iso-2022-jp"\r\n'
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"MIME-Version: 1.0\r\n"
    b"\r\n"
    b"\x1b$B$?$@$$$^IT:_$K$7$F$*$j$^$9!#\x1b(B4\x1b$B7n\x1b(B13\x1b$BF|\x1b(B(\x1b$B7n\x1b(B)\x1b$B$KLa$j$^$9!#\x1b(B\r\n"
)


@pytest.mark.parametrize("raw", [POSTFIX_BOUNCE, OUTLOOK_OUT_OF_OFFICE], ids=["postfix-bounce", "outlook-ooo"])
def test_real_bounces_and_auto_replies_get_no_reply(session, raw: bytes) -> None:
    from intake.mail_context import automatic

    for policy in (email.policy.compat32, email.policy.default):
        message = email.message_from_bytes(raw, policy=policy)
        verdict = automatic(message, message.get_content_type(), str(message["Subject"]), has_documents=False)
        assert verdict.automatic
        decision = should_reply(
            session,
            message,
            desk="misato",
            desk_address=DESK,
            limit=5,
            now=NOW,
            automatic=verdict.automatic,
            automatic_reason="; ".join(verdict.reasons),
        )
        assert not decision.reply and decision.reason.startswith("automatic mail: Auto-Submitted: auto-")
