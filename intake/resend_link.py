"""How a new mail relates to the desk's earlier ones: the returned submission a resend answers, and
the reply a delivery report says did not arrive. Kept apart from ``intake.pipeline`` so it stays small.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from email.message import Message

from sqlmodel import Session, or_, select

from intake.answering import threaded_ids, via_our_relay
from mailer.reply_policy import REPLY_KIND
from rules.findings import Verdict
from store.audit import record as audit
from store.tables import InboundMessage, OutboxMessage, StaffDecision, Submission

log = logging.getLogger(__name__)

# A resend answers a returned mail from the same sender within this many days.
RESEND_WINDOW = timedelta(days=30)
# Delivery reports quote the failed mail's headers near the top; nothing a sender wrote is trusted
# beyond matching one of our own Message-IDs.
_BOUNCE_SCAN_BYTES = 256 * 1024
_MESSAGE_ID = re.compile(rb"<[!-;=?-~]{1,250}@[A-Za-z0-9.-]{1,250}>")
_DIAGNOSTIC = re.compile(rb"(?im)^Diagnostic-Code:[ \t]*(.{1,500})$")


def link_resend(
    session: Session,
    row: InboundMessage,
    submissions: Sequence[Submission],
    now: datetime,
    *,
    authenticated: bool,
    headers: Message,
) -> Submission | None:
    """Point each new submission at the returned one it answers: the same guarantee number if there
    is one, else the sender's latest returned mail not yet answered. Returns the first link.

    Anyone can write another contractor's From: an unauthenticated mail is linked only to a
    returned mail whose reply it answers (In-Reply-To/References name our reply's Message-ID,
    which went to that contractor alone).

    Only a returned mail whose reply went out before this mail arrived can be answered by it: a
    mail that arrives at the same moment as another (or before its reply) is not its resend."""
    if not row.sender:
        return None
    arrived = row.received_at or now
    replied_before = select(OutboxMessage.inbound_id).where(
        OutboxMessage.kind == REPLY_KIND, OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at <= arrived
    )
    returned = session.exec(
        select(Submission)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .where(
            Submission.desk == row.desk,
            # returned by the robot, or by a person in the staff console
            or_(
                Submission.verdict == Verdict.RETURNED.value,
                Submission.id.in_(
                    select(StaffDecision.submission_id).where(StaffDecision.verdict == Verdict.RETURNED.value)
                ),
            ),
            InboundMessage.sender == row.sender,
            InboundMessage.id != row.id,
            Submission.created_at >= now - RESEND_WINDOW,
            InboundMessage.id.in_(replied_before),
        )
        .order_by(Submission.id.desc())
    ).all()
    answered = (
        set(
            session.exec(
                select(Submission.resend_of_id).where(Submission.resend_of_id.in_([s.id for s in returned]))
            ).all()
        )
        if returned
        else set()
    )
    open_returns = [s for s in returned if s.id not in answered]
    if not authenticated and open_returns:
        threaded = threaded_ids(headers)
        replied = set(
            session.exec(
                select(OutboxMessage.inbound_id).where(
                    OutboxMessage.kind == REPLY_KIND,
                    OutboxMessage.message_id.in_(threaded or {""}),
                    OutboxMessage.inbound_id.in_({s.inbound_id for s in open_returns}),
                )
            ).all()
        )
        open_returns = [s for s in open_returns if s.inbound_id in replied]
    first = None
    for submission in submissions:
        match = next(
            (s for s in open_returns if submission.guarantee_no and s.guarantee_no == submission.guarantee_no), None
        )
        match = match or next((s for s in open_returns if s.guarantee_no is None), None)
        if match is None:
            continue
        submission.resend_of_id = match.id
        open_returns.remove(match)
        first = first or match
    session.flush()
    return first


def record_bounce(
    session: Session,
    row: InboundMessage,
    raw: bytes,
    now: datetime,
    *,
    authenticated: bool,
    desk_address: str,
    relay_hosts: tuple[str, ...],
) -> None:
    """A delivery report quoting one of our replies' Message-IDs: the reply did not arrive.
    Recorded as ``outbox.bounced`` so the digest lists it under failures.

    Only a report that our own server authenticated (aligned with its From domain), or one our
    own relay wrote (its Reporting-MTA is the [smtp] host), counts: a forged bounce must not
    mark a delivered reply as lost."""
    if not authenticated and not via_our_relay(raw, relay_hosts):
        log.info("mail %s looks like a delivery report but neither authenticated nor via our relay", row.receipt_no)
        return
    domain = desk_address.rpartition("@")[2].encode("ascii", "ignore").lower()
    quoted = {
        m.decode("ascii", "ignore")
        for m in _MESSAGE_ID.findall(raw[:_BOUNCE_SCAN_BYTES])
        if m.lower().endswith(b"@" + domain + b">")
    }
    if not quoted:
        return
    replies = session.exec(
        select(OutboxMessage).where(
            OutboxMessage.desk == row.desk,
            OutboxMessage.kind == REPLY_KIND,
            OutboxMessage.message_id.in_(quoted),
        )
    ).all()
    diagnostic = _DIAGNOSTIC.search(raw[:_BOUNCE_SCAN_BYTES])
    for reply in replies:
        audit(
            session,
            row.desk,
            "intake",
            "outbox.bounced",
            f"outbox:{reply.id}",
            {
                "recipients": json.loads(reply.recipients_json),
                "error": diagnostic.group(1).decode("utf-8", "replace").strip()[:500] if diagnostic else "",
                "report": row.receipt_no,
            },
            at=now,
        )
        log.info("mail %s is a delivery report: reply %s did not arrive", row.receipt_no, reply.id)
