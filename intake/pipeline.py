"""The pipeline: one recorded mail in, documents + submissions + the reply out, in one transaction.

``Pipeline`` is the intake service's ``process`` hook. It walks the mail (MIME, archives, TNEF),
reads every PDF with the bounded reader, asks the pure core (``verifier.verify_mail``) for the
decision, stores what was found, links a resend to the returned mail it answers, and puts the
reply into the outbox, all inside the caller's transaction. It never commits: the intake service
commits the result together with marking the mail processed, and moves the mail afterwards.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email.message import Message
from typing import Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

import jinja2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlmodel import Session, select

from intake.intake_service import Outcome
from intake.mail_context import automatic
from intake.mime import MailLimits, WalkedMail, walk_mail
from intake.mime_headers import TOLERANT_POLICY
from intake.raw_store import RawStore
from intake.register_store import DbAcceptedIndex, DbContractRegister
from intake.verify_inputs import key_patterns, too_large_context, verify_inputs
from intake.settings import Limits
from mailer.outbox import enqueue
from mailer.reply import FoundDocument, GuaranteeLine, ReplyFacts, build_reply
from mailer.reply_policy import REPLY_KIND, should_reply
from rules.findings import Finding, Verdict
from rules.schema import DeskRules
from rules.signatures import DocumentKind, DocumentSignatures
from store.key_vault import KeyVault
from store.audit import record as audit
from store.tables import Counter, Document, InboundMessage, OutboxMessage, Submission
from verifier.lookup import CertificateLookup
from verifier.pdf_text import PdfLimits, TextResult, extract_text
from verifier.verify import MailVerdict, Ports, verify_mail

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
# A resend answers a returned mail from the same sender within this many days.
RESEND_WINDOW = timedelta(days=30)
# Delivery reports quote the failed mail's headers near the top; nothing a sender wrote is trusted
# beyond matching one of our own Message-IDs.
_BOUNCE_SCAN_BYTES = 256 * 1024
_MESSAGE_ID = re.compile(rb"<[!-;=?-~]{1,250}@[A-Za-z0-9.-]{1,250}>")
_DIAGNOSTIC = re.compile(rb"(?im)^Diagnostic-Code:[ \t]*(.{1,500})$")


@dataclass(frozen=True)
class DeskProfile:
    """What the pipeline needs to know about its desk (from keydesk.toml's [desks.<id>])."""

    desk_id: str
    name: str
    address: str
    contact: tuple[str, ...]
    authserv_id: str | None
    reply_charset: str
    receipt_prefix: str
    timezone: str


@dataclass
class Pipeline:
    profile: DeskProfile
    rules: DeskRules
    signatures: DocumentSignatures
    limits: Limits
    lookup: CertificateLookup
    trusted_keys: Mapping[str, Ed25519PublicKey]
    key_vault: KeyVault
    store: RawStore
    templates: jinja2.Environment
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    read_pdf: Callable[[bytes, PdfLimits], TextResult] = extract_text

    def __call__(self, session: Session, row: InboundMessage, raw: bytes) -> Outcome:
        now = self.clock()
        headers = message_from_bytes(raw, policy=TOLERANT_POLICY)
        walked = None
        if row.state != "too_large":
            walked = walk_mail(raw, authserv_id=self.profile.authserv_id, limits=MailLimits.from_settings(self.limits),
                               key_patterns=key_patterns(self.signatures.patterns))
        verdict = self._verify(session, walked, now)
        row.receipt_no = row.receipt_no or self._next_receipt_no(session, now)
        row.automatic = walked.automatic if walked else False
        if walked is not None:
            # The walker's decoding beats the poller's best-effort header summary; the bare address
            # (not the display name) is what links a resend to the mail it answers.
            author = walked.sender.address
            if author is not None and author.valid:
                row.sender = author.normalized or author.address
            row.subject = walked.subject or row.subject
            row.message_id = walked.message_id or row.message_id
        row.verdict = verdict.verdict.value
        row.findings_json = _findings_json(verdict.findings)
        documents = self._store_documents(session, row, walked, verdict) if walked else {}
        submissions = self._record_submissions(session, row, verdict, documents, now)
        resend_of = self._link_resend(session, row, submissions, now)
        if walked is not None and walked.automatic:
            self._record_bounce(session, row, raw, now)
        self._reply(session, row, headers, walked, verdict, resend_of, now)
        codes = tuple(dict.fromkeys(f.code for f in verdict.all_findings))
        log.info("mail %s from %s: %s (%s)", row.receipt_no, row.sender, verdict.verdict.value, ", ".join(codes) or "no findings")
        return Outcome(verdict.verdict, codes)

    # -- deciding --------------------------------------------------------------------------

    def _verify(self, session: Session, walked: WalkedMail | None, now: datetime) -> MailVerdict:
        ports = Ports(
            lookup=self.lookup,
            register=DbContractRegister(session),
            accepted=DbAcceptedIndex(session),
            trusted_keys=self.trusted_keys,
        )
        if walked is None:  # over the size limit: answered from the headers alone
            documents, context = [], too_large_context(self.profile.desk_id, self.limits.mail_max_bytes)
        else:
            pdf_limits = PdfLimits(
                max_bytes=self.limits.pdf_max_bytes,
                cpu_seconds=self.limits.pdf_cpu_seconds,
                memory_bytes=self.limits.pdf_memory_mb * 1024 * 1024,
            )
            documents, context = verify_inputs(
                walked, self.profile.desk_id, lambda content: self.read_pdf(content, pdf_limits)
            )
        return verify_mail(documents, context, self.rules, self.signatures, ports, now)

    # -- recording -------------------------------------------------------------------------

    def _next_receipt_no(self, session: Session, now: datetime) -> str:
        year = now.astimezone(ZoneInfo(self.profile.timezone)).year
        name = f"receipt:{self.profile.desk_id}:{year}"
        counter = session.get(Counter, name, with_for_update=True)
        if counter is None:
            counter = Counter(name=name, value=0)
            session.add(counter)
        counter.value += 1
        session.flush()
        return f"{self.profile.receipt_prefix}-{year}-{counter.value:06d}"

    def _store_documents(self, session: Session, row: InboundMessage, walked: WalkedMail,
                         verdict: MailVerdict) -> dict[str, Document]:
        """One Document row per file found; returns them by display name."""
        results = {result.name: result for result in verdict.documents}
        stored: dict[str, Document] = {}
        for doc in walked.documents:
            file = self.store.put(doc.content, kind="documents", suffix=".pdf" if doc.is_pdf else ".bin")
            result = results.get(doc.display_name)
            numbers = [n for n in (result.guarantee_nos if result else ()) if n]
            masked = [m for m in (result.access_keys_masked if result else ()) if m]
            document = Document(
                desk=row.desk, inbound_id=row.id, display_name=doc.display_name,
                origin=" / ".join(doc.path[:-1]), sha256=file.sha256, size=file.size, stored_path=file.relative_path,
                kind=(result.kind.value if result else DocumentKind.OTHER.value),
                guarantee_no=", ".join(numbers) or None, access_key_masked=", ".join(masked) or None,
            )
            session.add(document)
            stored.setdefault(doc.display_name, document)
        session.flush()
        return stored

    def _record_submissions(self, session: Session, row: InboundMessage, verdict: MailVerdict,
                            documents: dict[str, Document], now: datetime) -> list[Submission]:
        """One submission per guarantee; a mail without any guarantee is one submission without a number,
        so the digest shows every mail a person sent, returned ones included."""
        submissions = []
        for guarantee in verdict.guarantees:
            certificate = guarantee.certificate
            document = documents.get(guarantee.document)
            submissions.append(Submission(
                desk=row.desk, inbound_id=row.id, document_id=document.id if document else None,
                guarantee_no=guarantee.guarantee_no,
                guarantee_type=guarantee.guarantee_type.value if guarantee.guarantee_type else None,
                contract_no=guarantee.contract_no,
                contractor_name=certificate.contractor_name if certificate else None,
                work_name=certificate.work_name if certificate else None,
                department=guarantee.department,
                access_key_encrypted=self.key_vault.encrypt(guarantee.access_key) if guarantee.access_key else None,
                access_key_masked=guarantee.access_key_masked,
                verdict=guarantee.verdict.value,
                findings_json=_findings_json(verdict.findings + guarantee.findings),
                certificate_json=guarantee.signed.to_json() if certificate and guarantee.signed else None,
                created_at=now,
            ))
        if not submissions:
            submissions.append(Submission(
                desk=row.desk, inbound_id=row.id, verdict=verdict.verdict.value,
                findings_json=_findings_json(verdict.findings), created_at=now,
            ))
        session.add_all(submissions)
        session.flush()
        return submissions

    def _link_resend(self, session: Session, row: InboundMessage, submissions: Sequence[Submission],
                     now: datetime) -> Submission | None:
        """Point each new submission at the returned one it answers: the same guarantee number if there
        is one, else the sender's latest returned mail not yet answered. Returns the first link."""
        if not row.sender:
            return None
        returned = session.exec(
            select(Submission)
            .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
            .where(Submission.desk == row.desk, Submission.verdict == Verdict.RETURNED.value,
                   InboundMessage.sender == row.sender, InboundMessage.id != row.id,
                   Submission.created_at >= now - RESEND_WINDOW)
            .order_by(Submission.id.desc())
        ).all()
        answered = set(session.exec(
            select(Submission.resend_of_id).where(Submission.resend_of_id.in_([s.id for s in returned]))
        ).all()) if returned else set()
        open_returns = [s for s in returned if s.id not in answered]
        first = None
        for submission in submissions:
            match = next((s for s in open_returns if submission.guarantee_no and s.guarantee_no == submission.guarantee_no), None)
            match = match or next((s for s in open_returns if s.guarantee_no is None), None)
            if match is None:
                continue
            submission.resend_of_id = match.id
            open_returns.remove(match)
            first = first or match
        session.flush()
        return first

    def _record_bounce(self, session: Session, row: InboundMessage, raw: bytes, now: datetime) -> None:
        """A delivery report quoting one of our replies' Message-IDs: the reply did not arrive.
        Recorded as ``outbox.bounced`` so the digest lists it under failures."""
        domain = self.profile.address.rpartition("@")[2].encode("ascii", "ignore").lower()
        quoted = {m.decode("ascii", "ignore") for m in _MESSAGE_ID.findall(raw[:_BOUNCE_SCAN_BYTES])
                  if m.lower().endswith(b"@" + domain + b">")}
        if not quoted:
            return
        replies = session.exec(select(OutboxMessage).where(
            OutboxMessage.desk == row.desk, OutboxMessage.kind == REPLY_KIND, OutboxMessage.message_id.in_(quoted),
        )).all()
        diagnostic = _DIAGNOSTIC.search(raw[:_BOUNCE_SCAN_BYTES])
        for reply in replies:
            audit(session, row.desk, "intake", "outbox.bounced", f"outbox:{reply.id}", {
                "recipients": json.loads(reply.recipients_json),
                "error": diagnostic.group(1).decode("utf-8", "replace").strip()[:500] if diagnostic else "",
                "report": row.receipt_no,
            }, at=now)
            log.info("mail %s is a delivery report: reply %s did not arrive", row.receipt_no, reply.id)

    # -- answering -------------------------------------------------------------------------

    def _reply(self, session: Session, row: InboundMessage, headers: Message, walked: WalkedMail | None,
               verdict: MailVerdict, resend_of: Submission | None, now: datetime) -> None:
        decision = should_reply(
            session, headers, desk=row.desk, desk_address=self.profile.address,
            limit=self.limits.replies_per_sender_per_hour, now=now,
            automatic=verdict.verdict is Verdict.IGNORED,
            automatic_reason="; ".join(walked.automatic_reasons) if walked else None,
        )
        if not decision.reply:
            log.info("mail %s: no reply (%s)", row.receipt_no, decision.reason)
            return
        previous_receipt = None
        if resend_of is not None:
            previous_receipt = session.get(InboundMessage, resend_of.inbound_id).receipt_no
        facts = ReplyFacts(
            desk=row.desk, desk_name=self.profile.name, desk_address=self.profile.address,
            contact=self.profile.contact, receipt_no=row.receipt_no, received_at=_aware(row.received_at),
            recipient=decision.address, verdict=verdict.verdict,
            original_message_id=_angle(walked.message_id if walked else row.message_id),
            original_references=headers.get("References"),
            original_subject=walked.subject if walked else row.subject,
            documents=[_found(result) for result in verdict.documents],
            guarantees=[
                GuaranteeLine(g.guarantee_no, g.verdict, g.guarantee_type.value if g.guarantee_type else None,
                              g.certificate.work_name if g.certificate else None)
                for g in verdict.guarantees if g.guarantee_no
            ],
            findings=verdict.all_findings,
            resend=resend_of is not None, resend_of_receipt_no=previous_receipt,
            charset=self.profile.reply_charset, timezone=self.profile.timezone,
        )
        message = build_reply(facts, self.templates, now=now)
        enqueue(session, desk=row.desk, idempotency_key=f"reply:{row.id}", kind=REPLY_KIND, message=message,
                envelope_from=self.profile.address, recipients=[decision.address], inbound_id=row.id)


    # -- a mail that could not be processed -------------------------------------------------

    def acknowledge_quarantined(self, session: Session, row: InboundMessage, raw: bytes) -> None:
        """The intake's quarantine hook: "it arrived, a person will look", where the reply policy allows.

        Nothing of the mail is trusted beyond its headers and attachment names (read tolerantly);
        it gets a receipt number so the sender and staff can refer to it, and the digest lists it.
        """
        now = self.clock()
        headers = message_from_bytes(raw, policy=TOLERANT_POLICY)
        verdict = automatic(headers, headers.get_content_type(), str(headers.get("Subject", "")), has_documents=True)
        decision = should_reply(
            session, headers, desk=row.desk, desk_address=self.profile.address,
            limit=self.limits.replies_per_sender_per_hour, now=now,
            automatic=verdict.automatic, automatic_reason="; ".join(verdict.reasons) or None,
        )
        row.receipt_no = row.receipt_no or self._next_receipt_no(session, now)
        finding = Finding("mail.processing_failed", detail=(row.last_error or "")[:500])
        row.findings_json = _findings_json([finding])
        if not decision.reply:
            log.info("quarantined mail %s: no acknowledgement (%s)", row.receipt_no, decision.reason)
            return
        facts = ReplyFacts(
            desk=row.desk, desk_name=self.profile.name, desk_address=self.profile.address,
            contact=self.profile.contact, receipt_no=row.receipt_no, received_at=_aware(row.received_at),
            recipient=decision.address, verdict=Verdict.NEEDS_REVIEW,
            original_message_id=_angle(row.message_id), original_references=headers.get("References"),
            original_subject=row.subject,
            documents=[FoundDocument(name, "未確認") for name in _attachment_names(headers)],
            findings=[finding],
            charset=self.profile.reply_charset, timezone=self.profile.timezone,
        )
        message = build_reply(facts, self.templates, now=now)
        enqueue(session, desk=row.desk, idempotency_key=f"reply:{row.id}", kind=REPLY_KIND, message=message,
                envelope_from=self.profile.address, recipients=[decision.address], inbound_id=row.id)
        log.info("quarantined mail %s: acknowledged to %s", row.receipt_no, decision.address)


def _attachment_names(message: Message, limit: int = 20) -> list[str]:
    """File names of the top-level attachments, best effort (a mail that broke the walker may break this)."""
    names: list[str] = []
    try:
        for part in message.walk():
            name = part.get_filename()
            if name:
                names.append(str(name))
            if len(names) >= limit:
                break
    except Exception:  # noqa: BLE001 - hostile structure: list nothing rather than fail the answer
        return []
    return names


def _found(result) -> FoundDocument:
    numbers = [n for n in result.guarantee_nos if n]
    keys = [k for k in result.access_keys_masked if k]
    return FoundDocument(result.name, KIND_LABELS.get(result.kind, result.kind.value),
                         ", ".join(numbers) or None, keys[0] if len(keys) == 1 else None)


def _angle(message_id: str | None) -> str | None:
    """The walker keeps Message-IDs bare; threading headers want them in angle brackets."""
    if not message_id:
        return None
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _findings_json(findings: Sequence[Finding]) -> str:
    return json.dumps(
        [{"code": f.code, "severity": f.severity.value, "message": f.message, "detail": f.detail,
          "guarantee_no": f.guarantee_no, "document": f.document} for f in findings],
        ensure_ascii=False,
    )
