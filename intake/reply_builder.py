"""The pipeline's replies: the reply to a processed mail, the acknowledgement of a quarantined one,
and putting either into the outbox (or holding it there when the sending limits say so).

Kept apart from ``intake.pipeline`` (which decides and records) so each stays small; the document
labels and the small header helpers are shared with the result mail and the console.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timezone
from email import message_from_bytes
from email.message import EmailMessage, Message

import jinja2
from sqlmodel import Session

from intake.answering import carries_new_guarantee
from intake.authentication_results import authenticated_for
from intake.desk_profile import DeskProfile
from intake.mime import WalkedMail, parse_headers, walk_headers
from intake.mime_headers import TOLERANT_POLICY
from intake.settings import Limits
from intake.verify_inputs import from_domain
from mailer.outbox import enqueue
from mailer.reply import FoundDocument, GuaranteeLine, ReplyFacts, build_reply
from mailer.reply_policy import REPLY_KIND, SUPPRESSED, ReplyDecision, plausible_submission, should_reply
from rules.findings import Finding, Verdict
from rules.signatures import DocumentKind
from store import stored_findings
from store.states import RecipientState
from store.tables import InboundMessage, Submission
from verifier.verify import DocumentResult, MailVerdict

log = logging.getLogger(__name__)

# What the reply and the digest call each kind of document.
KIND_LABELS: dict[DocumentKind, str] = {
    DocumentKind.KEY_NOTICE: "認証キー等のお知らせ",
    DocumentKind.CERTIFICATE_VIEW: "電子証書の閲覧画面(STEP3)",
    DocumentKind.FEE_RECEIPT: "保証料領収書",
    DocumentKind.FEE_STATEMENT: "保証料計算書",
    DocumentKind.ADVANCE_CLAIM: "前払金請求書",
    DocumentKind.INSURER_BOND: "保険会社の保証証券等",
    DocumentKind.NO_TEXT: "文字のないPDF(スキャン画像)",
    DocumentKind.ENCRYPTED: "パスワード付きPDF",
    DocumentKind.BROKEN: "読み取れないPDF",
    DocumentKind.OTHER: "その他のファイル",
}


@dataclass(frozen=True)
class Replies:
    """Replies for one desk: its profile (names, addresses, charset), its sending limits, its templates."""

    profile: DeskProfile
    limits: Limits
    templates: jinja2.Environment

    def reply(
        self,
        session: Session,
        row: InboundMessage,
        headers: Message,
        walked: WalkedMail,
        verdict: MailVerdict,
        resend_of: Submission | None,
        now: datetime,
        *,
        authenticated: bool,
    ) -> Finding | None:
        """Enqueue the reply (or hold it); returns a finding when none goes out to a person."""
        decision = self._decide(
            session,
            row,
            headers,
            now,
            automatic=verdict.verdict is Verdict.IGNORED,
            automatic_reason="; ".join(walked.automatic_reasons),
            authenticated=authenticated,
            submission=plausible_submission(
                has_pdf=any(d.is_pdf for d in walked.documents), subject=walked.subject, body=walked.body_text
            ),
            new_guarantee=carries_new_guarantee(verdict),
        )
        if not decision.reply and not decision.suppressed:
            log.info("mail %s: no reply (%s)", row.receipt_no, decision.reason)
            if verdict.verdict is Verdict.IGNORED or decision.reason.startswith("keydesk's own mail"):
                return None
            return Finding("reply.withheld", detail=decision.reason)
        previous_receipt = None
        if resend_of is not None:
            previous_receipt = session.get(InboundMessage, resend_of.inbound_id).receipt_no
        facts = self._facts(
            row,
            decision,
            verdict=verdict.verdict,
            original_message_id=angle(walked.message_id if walked else row.message_id),
            original_references=headers.get("References"),
            original_subject=walked.subject if walked else row.subject,
            documents=[found_document(result) for result in verdict.documents],
            guarantees=guarantee_lines(verdict),
            findings=verdict.all_findings,
            resend=resend_of is not None,
            resend_of_receipt_no=previous_receipt,
            contractor_name=next((g.certificate.contractor_name for g in verdict.guarantees if g.certificate), None),
        )
        return self.enqueue(session, row, decision, build_reply(facts, self.templates, now=now))

    def _facts(self, row: InboundMessage, decision: ReplyDecision, **fields: Any) -> ReplyFacts:
        """The reply's facts: this desk's own fields and the mail's receipt, then ``fields``."""
        return ReplyFacts(
            desk=row.desk,
            desk_name=self.profile.name,
            desk_address=self.profile.address,
            contact=self.profile.contact,
            receipt_no=row.receipt_no,
            received_at=aware(row.received_at),
            recipient=decision.address,
            charset=self.profile.reply_charset,
            timezone=self.profile.timezone,
            short=decision.short,
            **fields,
        )

    def _decide(
        self,
        session: Session,
        row: InboundMessage,
        headers: Message,
        now: datetime,
        *,
        automatic: bool,
        automatic_reason: str | None,
        authenticated: bool,
        submission: bool,
        new_guarantee: bool = False,
    ) -> ReplyDecision:
        """The reply policy for this desk, with its sending limits."""
        return should_reply(
            session,
            headers,
            desk=row.desk,
            desk_address=self.profile.address,
            limit=self.limits.replies_per_sender_per_hour,
            now=now,
            automatic=automatic,
            automatic_reason=automatic_reason,
            policy=self.profile.reply_to,
            authenticated=authenticated,
            submission=submission,
            new_guarantee=new_guarantee,
            desk_limit=self.limits.replies_per_desk_per_hour,
        )

    def enqueue(
        self, session: Session, row: InboundMessage, decision: ReplyDecision, message: EmailMessage
    ) -> Finding | None:
        """Into the outbox; a reply held by the sending limits is kept there, marked, never sent."""
        outbox, created = enqueue(
            session,
            desk=row.desk,
            idempotency_key=f"reply:{row.id}",
            kind=REPLY_KIND,
            message=message,
            envelope_from=self.profile.address,
            recipients=[decision.address],
            inbound_id=row.id,
        )
        if not decision.suppressed:
            return None
        log.info("mail %s: reply held (%s)", row.receipt_no, decision.reason)
        if created:
            # Kept, listed by `keydesk outbox list`, never sent by the delivery loop.
            outbox.state = SUPPRESSED
            outbox.last_error = decision.reason
            outbox.recipient_states_json = json.dumps({decision.address: RecipientState.SUPPRESSED}, ensure_ascii=False)
            session.add(outbox)
            session.flush()
        return Finding("reply.suppressed", detail=decision.reason)

    def acknowledge_quarantined(
        self, session: Session, row: InboundMessage, raw: bytes, now: datetime, receipt_no: Callable[[], str]
    ) -> None:
        """The intake's quarantine hook: "it arrived, a person will look", where the reply policy allows.

        Nothing of the mail is trusted beyond its header block (read as the pipeline reads it) and
        its attachment names; it gets a receipt number so the sender and staff can refer to it, and
        the digest lists it.
        """
        headers = parse_headers(raw)
        walked = walk_headers(raw, authserv_id=self.profile.authserv_id)
        authenticated = authenticated_for(walked.authentication, from_domain(walked))
        names = attachment_names(raw)
        decision = self._decide(
            session,
            row,
            headers,
            now,
            automatic=walked.automatic,
            automatic_reason="; ".join(walked.automatic_reasons) or None,
            authenticated=authenticated,
            submission=plausible_submission(
                has_pdf=any(n.lower().endswith(".pdf") for n in names), subject=walked.subject or ""
            ),
        )
        row.receipt_no = row.receipt_no or receipt_no()
        finding = Finding("mail.processing_failed", detail=(row.last_error or "")[:500])
        row.findings_json = stored_findings.dump([finding])
        if not decision.reply and not decision.suppressed:
            log.info("quarantined mail %s: no acknowledgement (%s)", row.receipt_no, decision.reason)
            return
        facts = self._facts(
            row,
            decision,
            verdict=Verdict.NEEDS_REVIEW,
            original_message_id=angle(walked.message_id or row.message_id),
            original_references=headers.get("References"),
            original_subject=walked.subject or row.subject,
            documents=[FoundDocument(name, "未確認") for name in names],
            findings=[finding],
        )
        held = self.enqueue(session, row, decision, build_reply(facts, self.templates, now=now))
        log.info(
            "quarantined mail %s: acknowledgement to %s%s",
            row.receipt_no,
            decision.address,
            " held by the sending limits" if held else " queued",
        )


# The whole mail is parsed here, in this process (not the bounded walk worker): only a mail small
# enough to parse quickly whatever its structure; a larger one is acknowledged without the names.
_NAMES_PARSE_MAX = 8 * 1024 * 1024


def attachment_names(raw: bytes, limit: int = 20) -> list[str]:
    """File names of the attachments, best effort (a mail that broke the walker may break this)."""
    if len(raw) > _NAMES_PARSE_MAX:
        return []
    names: list[str] = []
    try:
        for part in message_from_bytes(raw, policy=TOLERANT_POLICY).walk():
            name = part.get_filename()
            if name:
                names.append(str(name))
            if len(names) >= limit:
                break
    except Exception:  # noqa: BLE001 - hostile structure: list nothing rather than fail the answer
        return []
    return names


def found_document(result: DocumentResult) -> FoundDocument:
    """A document as a reply lists it (also for the result mail of a submission decided later)."""
    numbers = [n for n in result.guarantee_nos if n]
    keys = [k for k in result.access_keys_masked if k]
    return FoundDocument(
        result.name,
        KIND_LABELS.get(result.kind, result.kind.value),
        ", ".join(numbers) or None,
        keys[0] if len(keys) == 1 else None,
    )


def guarantee_lines(verdict: MailVerdict) -> list[GuaranteeLine]:
    """The guarantees a reply lists: those read with a number (also for the result mail)."""
    return [
        GuaranteeLine(
            g.guarantee_no,
            g.verdict,
            g.guarantee_type.value if g.guarantee_type else None,
            g.certificate.work_name if g.certificate else None,
        )
        for g in verdict.guarantees
        if g.guarantee_no
    ]


def angle(message_id: str | None) -> str | None:
    """The walker keeps Message-IDs bare; threading headers want them in angle brackets."""
    if not message_id:
        return None
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
