"""The second mail for a submission decided later (a held look-up answered, a clerk's manual look-up).

The contractor was told at once that the mail arrived and that the check would follow; this is the
one result mail (idempotency key ``result:<inbound id>``), in the same words and templates as every
reply, threaded under the contractor's mail, to the address the first reply went to.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from collections.abc import Sequence

import jinja2
from sqlmodel import Session, select

from intake.desk_profile import DeskProfile
from intake.reply_builder import aware
from mailer.outbox import enqueue
from mailer.reply import FoundDocument, GuaranteeLine, ReplyFacts, build_reply
from mailer.reply_policy import REPLY_KIND
from rules.findings import Finding, Verdict
from store.tables import InboundMessage, OutboxMessage

log = logging.getLogger(__name__)


def result_key(inbound_id: int) -> str:
    return f"result:{inbound_id}"


def first_reply_recipient(session: Session, inbound_id: int) -> str | None:
    """Where the immediate reply went (None: the mail was not answered, so no result mail either)."""
    row = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == f"reply:{inbound_id}")).first()
    if row is None:
        return None
    recipients = json.loads(row.recipients_json or "[]")
    return recipients[0] if recipients else None


def enqueue_result_reply(
    session: Session,
    *,
    profile: DeskProfile,
    templates: jinja2.Environment,
    row: InboundMessage,
    verdict: Verdict,
    guarantees: Sequence[GuaranteeLine],
    findings: Sequence[Finding],
    documents: Sequence[FoundDocument],
    now: datetime,
) -> bool:
    """Put the result mail into the outbox (in the caller's transaction); False when there is none to send."""
    recipient = first_reply_recipient(session, row.id)
    if recipient is None:
        log.info("mail %s: decided later, but its first reply was never sent: no result mail", row.receipt_no)
        return False
    message_id = row.message_id
    if message_id and not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    facts = ReplyFacts(
        desk=row.desk,
        desk_name=profile.name,
        desk_address=profile.address,
        contact=profile.contact,
        receipt_no=row.receipt_no or "",
        received_at=aware(row.received_at),
        recipient=recipient,
        verdict=verdict,
        original_message_id=message_id,
        original_subject=row.subject,
        documents=list(documents),
        guarantees=list(guarantees),
        findings=[Finding("lookup.completed"), *findings],
        charset=profile.reply_charset,
        timezone=profile.timezone,
    )
    message = build_reply(facts, templates, now=now)
    _row, created = enqueue(
        session,
        desk=row.desk,
        idempotency_key=result_key(row.id),
        kind=REPLY_KIND,
        message=message,
        envelope_from=profile.address,
        recipients=[recipient],
        inbound_id=row.id,
    )
    return created
