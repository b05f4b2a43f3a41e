"""Filing a mail again after staff decided on it: from the review folder to the decision's folder.

The intake moved a needs_review mail to ``keydesk/要確認``. When every submission of that mail that
waited for people has a staff decision, the mail goes on to the folder of the outcome (受付済, 返送,
or 対応済 for one handled outside keydesk). The mail is found in the review folder by size and then
by the SHA-256 of its bytes, never by anything the sender wrote, so no sender text reaches an IMAP
command. Like the intake's own mailbox actions this is a courtesy to humans: the database is the
truth, and a crash before the flag is set only repeats the move.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from intake.poller import MailboxConnection
from intake.settings import MailboxSettings
from rules.findings import Verdict, strongest
from store.audit import record as audit
from store.retry import retry_on_conflict
from store.tables import InboundMessage, StaffDecision, Submission

log = logging.getLogger(__name__)
ACTOR = "intake"


def destination(mailbox: MailboxSettings, verdicts: list[str]) -> str:
    """The folder for a mail whose waiting submissions were all decided (``handled`` only when all were)."""
    if all(v == "handled" for v in verdicts):
        return mailbox.folders.handled
    effective = [Verdict(v) for v in verdicts if v != "handled"]
    return getattr(mailbox.folders, strongest(effective).value)


def _ready(session: Session, desk: str, account: str, folder: str) -> dict[int, list[StaffDecision]]:
    """Decided mails not yet filed, whose every waiting submission has a decision, by inbound id."""
    rows = session.exec(
        select(StaffDecision, InboundMessage)
        .join(InboundMessage, StaffDecision.inbound_id == InboundMessage.id)
        .where(
            StaffDecision.desk == desk,
            StaffDecision.mailbox_action_done.is_(False),
            InboundMessage.account == account,
            InboundMessage.mailbox == folder,
            InboundMessage.mailbox_action_done.is_(True),
        )
    ).all()
    by_inbound: dict[int, list[StaffDecision]] = defaultdict(list)
    for decision, _inbound in rows:
        by_inbound[decision.inbound_id].append(decision)
    ready = {}
    for inbound_id, _decisions in by_inbound.items():
        waiting = session.exec(
            select(Submission.id).where(
                Submission.inbound_id == inbound_id, Submission.verdict == Verdict.NEEDS_REVIEW.value
            )
        ).all()
        decided = set(
            session.exec(select(StaffDecision.submission_id).where(StaffDecision.inbound_id == inbound_id)).all()
        )
        if set(waiting) <= decided:
            ready[inbound_id] = list(session.exec(select(StaffDecision).where(StaffDecision.inbound_id == inbound_id)))
    return ready


def file_decided_mails(conn: MailboxConnection, engine: Engine, desk: str, mailbox: MailboxSettings) -> int:
    """Move decided mails out of the review folder; returns how many were moved. Leaves the
    configured folder selected again (the IDLE loop watches it)."""
    with Session(engine) as session:
        ready = _ready(session, desk, mailbox.username, mailbox.folder)
        mails = {i: session.get(InboundMessage, i) for i in ready}
    if not ready:
        return 0
    moved = 0
    review = conn.server_folder_name(mailbox.folders.needs_review)
    try:
        found: dict[int, int] = {}
        if mailbox.action == "move" and conn.client.folder_exists(review):
            conn.client.select_folder(review)
            sizes = conn.sizes(conn.client.search("ALL"))
            for inbound_id, inbound in mails.items():
                for uid in [u for u, size in sizes.items() if size == inbound.size and u not in found.values()]:
                    body = conn.client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {}).get(b"BODY[]")
                    if body is not None and hashlib.sha256(bytes(body)).hexdigest() == inbound.sha256:
                        found[inbound_id] = uid
                        break
            targets: dict[str, list[int]] = defaultdict(list)
            for inbound_id, uid in found.items():
                targets[destination(mailbox, [d.verdict for d in ready[inbound_id]])].append(uid)
            for folder, uids in targets.items():
                conn.move(uids, folder)
                moved += len(uids)
    finally:
        conn.select()

    def mark_done() -> None:
        with Session(engine) as session:
            for inbound_id, decisions in ready.items():
                for decision in decisions:
                    row = session.get(StaffDecision, decision.id)
                    row.mailbox_action_done = True
                    session.add(row)
                audit(
                    session,
                    desk,
                    ACTOR,
                    "console.mail_filed",
                    f"inbound:{inbound_id}",
                    {"folder": destination(mailbox, [d.verdict for d in decisions]), "moved": inbound_id in found},
                )
            session.commit()

    retry_on_conflict(mark_done, what="filing decided mails")
    if moved:
        log.info("moved %d decided mail(s) out of %s", moved, mailbox.folders.needs_review)
    return moved
