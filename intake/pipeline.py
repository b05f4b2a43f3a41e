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
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from email.message import Message
from collections.abc import Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

import jinja2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func
from sqlmodel import Session, or_, select

from intake.intake_service import Outcome
from intake.answering import CappedLookup, add_finding, carries_new_guarantee, threaded_ids, via_our_relay
from intake.authentication_results import authenticated_for
from intake.mime import MailLimits, WalkedMail, parse_headers, walk_headers
from intake.mime_headers import TOLERANT_POLICY
from intake.walk_worker import walk_bounded
from intake.lookup_settings import LookupSettings
from intake.raw_store import RawStore
from intake.register_store import DbAcceptedIndex, DbContractRegister
from intake.verify_inputs import from_domain, key_patterns, too_large_context, verify_inputs
from intake.settings import Limits
from mailer.outbox import enqueue
from mailer.reply import FoundDocument, GuaranteeLine, ReplyFacts, build_reply
from mailer.reply_policy import REPLY_KIND, SUPPRESSED, plausible_submission, should_reply
from rules.findings import Finding, Verdict
from rules.schema import DeskRules
from rules.signatures import DocumentKind, DocumentSignatures
from store.key_vault import KeyVault
from store.audit import record as audit
from store import stored_findings
from store.states import InboundState, LookupState, RecipientState
from store.tables import Counter, Document, InboundMessage, OutboxMessage, StaffDecision, Submission
from verifier.lookup import CertificateLookup
from verifier.routing_hint import RoutingHint, routing_hint
from verifier.pdf_text import PdfLimits, TextResult, extract_text
from verifier.verify import InputDocument, MailVerdict, Ports, verify_mail

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
    reply_to: str = "submissions"  # who gets a reply: authenticated | submissions | all


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
    # The mail walk, in the bounded worker process (a hard wall-clock limit per mail).
    walk: Callable[..., WalkedMail] = walk_bounded
    # Host names of our own outgoing relay: a delivery report it wrote (Reporting-MTA) is ours.
    relay_hosts: tuple[str, ...] = ()
    lookup_settings: LookupSettings = field(default_factory=LookupSettings)

    def __call__(self, session: Session, row: InboundMessage, raw: bytes) -> Outcome:
        now = self.clock()
        # The header block first (no body parse): automatic mail, over-size or not, ends here.
        headers = parse_headers(raw)
        walked = walk_headers(raw, authserv_id=self.profile.authserv_id)
        too_large = row.state == InboundState.TOO_LARGE and not walked.automatic
        if row.state != InboundState.TOO_LARGE and not walked.automatic:
            walked = self.walk(
                raw,
                authserv_id=self.profile.authserv_id,
                limits=MailLimits.from_settings(self.limits),
                key_patterns=key_patterns(self.signatures.patterns),
            )
        verdict, inputs = self._verify(session, None if too_large else walked, now)
        row.receipt_no = row.receipt_no or self._next_receipt_no(session, now)
        row.automatic = walked.automatic
        # The walker's decoding beats the poller's best-effort header summary; the bare address
        # (not the display name) is what links a resend to the mail it answers.
        author = walked.sender.address
        if author is not None and author.valid:
            row.sender = author.normalized or author.address
        row.subject = walked.subject or row.subject
        row.message_id = walked.message_id or row.message_id
        row.verdict = verdict.verdict.value
        row.findings_json = stored_findings.dump(verdict.findings)
        authenticated = authenticated_for(walked.authentication, from_domain(walked))
        documents = self._store_documents(session, row, walked, verdict, now)
        submissions = self._record_submissions(session, row, verdict, documents, now, inputs)
        self._hold_lookups(submissions, now)
        resend_of = self._link_resend(session, row, submissions, now, authenticated=authenticated, headers=headers)
        if walked.automatic:
            self._record_bounce(session, row, raw, now, authenticated=authenticated)
        note = self._reply(session, row, headers, walked, verdict, resend_of, now, authenticated=authenticated)
        if note is not None:  # no reply went out: the digest and the CLI say why, not silence
            add_finding(row, submissions, note)
        codes = tuple(dict.fromkeys(f.code for f in verdict.all_findings))
        log.info(
            "mail %s from %s: %s (%s)",
            row.receipt_no,
            row.sender,
            verdict.verdict.value,
            ", ".join(codes) or "no findings",
        )
        return Outcome(verdict.verdict, codes)

    def verify_again(self, session: Session, row: InboundMessage, raw: bytes, now: datetime) -> MailVerdict:
        """The decision for a recorded mail once more (a held look-up), recording nothing."""
        walked = None
        if row.state != InboundState.TOO_LARGE:
            walked = self.walk(
                raw,
                authserv_id=self.profile.authserv_id,
                limits=MailLimits.from_settings(self.limits),
                key_patterns=key_patterns(self.signatures.patterns),
            )
        return self._verify(session, walked, now)[0]

    # -- deciding --------------------------------------------------------------------------

    def _verify(
        self, session: Session, walked: WalkedMail | None, now: datetime
    ) -> tuple[MailVerdict, list[InputDocument]]:
        ports = Ports(
            lookup=CappedLookup(self.lookup, self.limits.lookups_per_mail_max),
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
        return verify_mail(documents, context, self.rules, self.signatures, ports, now), documents

    # -- recording -------------------------------------------------------------------------

    def reserve_receipt_nos(self, session: Session, rows: Sequence[InboundMessage]) -> None:
        """The intake's claim hook: receipt numbers are drawn in the short claim transaction, so
        the counter's row lock is not held while a batch of mails is processed (workers queue there)."""
        missing = [row for row in rows if not row.receipt_no]
        for row, number in zip(missing, self._next_receipt_nos(session, self.clock(), len(missing))):
            row.receipt_no = number
            session.add(row)

    def _next_receipt_no(self, session: Session, now: datetime) -> str:
        return self._next_receipt_nos(session, now, 1)[0]

    def _next_receipt_nos(self, session: Session, now: datetime, count: int) -> list[str]:
        if count == 0:
            return []
        year = now.astimezone(ZoneInfo(self.profile.timezone)).year
        name = f"receipt:{self.profile.desk_id}:{year}"
        counter = session.get(Counter, name, with_for_update=True)
        if counter is None:
            counter = Counter(name=name, value=0)
            session.add(counter)
        first = counter.value + 1
        counter.value += count
        session.flush()
        return [f"{self.profile.receipt_prefix}-{year}-{value:06d}" for value in range(first, first + count)]

    def _store_documents(
        self, session: Session, row: InboundMessage, walked: WalkedMail, verdict: MailVerdict, now: datetime
    ) -> dict[str, Document]:
        """One Document row per file found; returns them by display name.

        Results are matched to files by position (``verify_inputs`` keeps the order), never by the
        sender-given name, and files are stored by content hash. Only what the desk reads is kept
        from archives (PDFs), and within the per-mail and per-sender-per-day byte caps; a file not
        kept still gets its row (hash, size, kind) with an empty ``stored_path``."""
        if not walked.documents:
            return {}
        by_position = list(verdict.documents) if len(verdict.documents) == len(walked.documents) else []
        budget = min(
            self.limits.stored_bytes_per_mail_max,
            self.limits.stored_bytes_per_sender_per_day_max - self._stored_today(session, row, now),
        )
        stored: dict[str, Document] = {}
        kept_hashes: set[str] = set()
        for index, doc in enumerate(walked.documents):
            keep = (doc.is_pdf or not doc.in_archive) and (doc.sha256 in kept_hashes or len(doc.content) <= budget)
            if keep:
                if doc.sha256 not in kept_hashes:
                    budget -= len(doc.content)
                    kept_hashes.add(doc.sha256)
                file = self.store.put(doc.content, kind="documents", suffix=".pdf" if doc.is_pdf else ".bin")
                stored_path, digest, size = file.relative_path, file.sha256, file.size
            else:
                log.info(
                    "mail %s: %s not stored (%s)",
                    row.receipt_no,
                    doc.sha256[:12],
                    "not a PDF inside an archive" if not doc.is_pdf and doc.in_archive else "storage cap",
                )
                stored_path, digest, size = "", doc.sha256, len(doc.content)
            result = by_position[index] if by_position else None
            numbers = [n for n in (result.guarantee_nos if result else ()) if n]
            masked = [m for m in (result.access_keys_masked if result else ()) if m]
            document = Document(
                desk=row.desk,
                inbound_id=row.id,
                display_name=doc.display_name,
                origin=" / ".join(doc.path[:-1]),
                sha256=digest,
                size=size,
                stored_path=stored_path,
                kind=(result.kind.value if result else DocumentKind.OTHER.value),
                guarantee_no=", ".join(numbers) or None,
                access_key_masked=", ".join(masked) or None,
            )
            session.add(document)
            # Guarantees name their document by display name; two files may share one, and the
            # key notice is the one a guarantee comes from.
            earlier = stored.get(doc.display_name)
            if earlier is None or (
                document.kind == DocumentKind.KEY_NOTICE.value and earlier.kind != DocumentKind.KEY_NOTICE.value
            ):
                stored[doc.display_name] = document
        session.flush()
        return stored

    def _stored_today(self, session: Session, row: InboundMessage, now: datetime) -> int:
        """Bytes of documents already stored for this sender's mails in the last day."""
        if not row.sender:
            return 0
        total = session.exec(
            select(func.coalesce(func.sum(Document.size), 0))
            .join(InboundMessage, Document.inbound_id == InboundMessage.id)
            .where(
                InboundMessage.desk == row.desk,
                InboundMessage.sender == row.sender,
                InboundMessage.id != row.id,
                InboundMessage.received_at >= now - timedelta(days=1),
                Document.stored_path != "",
            )
        ).one()
        return int(total or 0)

    def _record_submissions(
        self,
        session: Session,
        row: InboundMessage,
        verdict: MailVerdict,
        documents: dict[str, Document],
        now: datetime,
        inputs: Sequence[InputDocument] = (),
    ) -> list[Submission]:
        """One submission per guarantee; a mail without any guarantee is one submission without a number,
        so the digest shows every mail a person sent, returned ones included."""
        submissions = []
        for guarantee in verdict.guarantees:
            certificate = guarantee.certificate
            document = documents.get(guarantee.document)
            submissions.append(
                Submission(
                    desk=row.desk,
                    inbound_id=row.id,
                    document_id=document.id if document else None,
                    guarantee_no=guarantee.guarantee_no,
                    guarantee_type=guarantee.guarantee_type.value if guarantee.guarantee_type else None,
                    contract_no=guarantee.contract_no,
                    contractor_name=certificate.contractor_name if certificate else None,
                    work_name=certificate.work_name if certificate else None,
                    department=guarantee.department,
                    access_key_encrypted=self.key_vault.encrypt(guarantee.access_key) if guarantee.access_key else None,
                    access_key_masked=guarantee.access_key_masked,
                    verdict=guarantee.verdict.value,
                    findings_json=stored_findings.dump(verdict.findings + guarantee.findings),
                    certificate_json=guarantee.signed.to_json() if certificate and guarantee.signed else None,
                    created_at=now,
                )
            )
        if not submissions:
            # No guarantee, yet the documents may show its type and contractor: the mail goes to that
            # type's department under that name (else to the desk's returned_department).
            hint = routing_hint(inputs, self.signatures) if verdict.verdict is Verdict.RETURNED else RoutingHint()
            routed = self.rules.department_for(hint.guarantee_type) if hint.guarantee_type else None
            submissions.append(
                Submission(
                    desk=row.desk,
                    inbound_id=row.id,
                    verdict=verdict.verdict.value,
                    findings_json=stored_findings.dump(verdict.findings),
                    created_at=now,
                    guarantee_type=hint.guarantee_type.value if hint.guarantee_type else None,
                    contractor_name=hint.contractor,
                    department=routed
                    or (self.rules.returned_department if verdict.verdict is Verdict.RETURNED else None),
                )
            )
        session.add_all(submissions)
        session.flush()
        return submissions

    def _hold_lookups(self, submissions: Sequence[Submission], now: datetime) -> None:
        """A look-up that could not be made is held (tried again later) or left to a clerk (manual)."""
        for submission in submissions:
            codes = set(stored_findings.codes(submission.findings_json))
            if "lookup.manual" in codes:
                submission.lookup_state = LookupState.MANUAL
            elif "lookup.unavailable" in codes and submission.access_key_encrypted is not None:
                submission.lookup_state = LookupState.HELD
                submission.next_lookup_at = self.lookup_settings.next_lookup_at(0, now)
                if submission.next_lookup_at is None:
                    submission.lookup_state = LookupState.STAFF

    def _link_resend(
        self,
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

    def _record_bounce(
        self, session: Session, row: InboundMessage, raw: bytes, now: datetime, *, authenticated: bool
    ) -> None:
        """A delivery report quoting one of our replies' Message-IDs: the reply did not arrive.
        Recorded as ``outbox.bounced`` so the digest lists it under failures.

        Only a report that our own server authenticated (aligned with its From domain), or one our
        own relay wrote (its Reporting-MTA is the [smtp] host), counts: a forged bounce must not
        mark a delivered reply as lost."""
        if not authenticated and not via_our_relay(raw, self.relay_hosts):
            log.info("mail %s looks like a delivery report but neither authenticated nor via our relay", row.receipt_no)
            return
        domain = self.profile.address.rpartition("@")[2].encode("ascii", "ignore").lower()
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

    # -- answering -------------------------------------------------------------------------

    def _reply(
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
        decision = should_reply(
            session,
            headers,
            desk=row.desk,
            desk_address=self.profile.address,
            limit=self.limits.replies_per_sender_per_hour,
            now=now,
            automatic=verdict.verdict is Verdict.IGNORED,
            automatic_reason="; ".join(walked.automatic_reasons),
            policy=self.profile.reply_to,
            authenticated=authenticated,
            submission=plausible_submission(
                has_pdf=any(d.is_pdf for d in walked.documents), subject=walked.subject, body=walked.body_text
            ),
            new_guarantee=carries_new_guarantee(verdict),
            desk_limit=self.limits.replies_per_desk_per_hour,
        )
        if not decision.reply and not decision.suppressed:
            log.info("mail %s: no reply (%s)", row.receipt_no, decision.reason)
            if verdict.verdict is Verdict.IGNORED or decision.reason.startswith("keydesk's own mail"):
                return None
            return Finding("reply.withheld", detail=decision.reason)
        previous_receipt = None
        if resend_of is not None:
            previous_receipt = session.get(InboundMessage, resend_of.inbound_id).receipt_no
        facts = ReplyFacts(
            desk=row.desk,
            desk_name=self.profile.name,
            desk_address=self.profile.address,
            contact=self.profile.contact,
            receipt_no=row.receipt_no,
            received_at=_aware(row.received_at),
            recipient=decision.address,
            verdict=verdict.verdict,
            original_message_id=_angle(walked.message_id if walked else row.message_id),
            original_references=headers.get("References"),
            original_subject=walked.subject if walked else row.subject,
            documents=[_found(result) for result in verdict.documents],
            guarantees=[
                GuaranteeLine(
                    g.guarantee_no,
                    g.verdict,
                    g.guarantee_type.value if g.guarantee_type else None,
                    g.certificate.work_name if g.certificate else None,
                )
                for g in verdict.guarantees
                if g.guarantee_no
            ],
            findings=verdict.all_findings,
            resend=resend_of is not None,
            resend_of_receipt_no=previous_receipt,
            contractor_name=next((g.certificate.contractor_name for g in verdict.guarantees if g.certificate), None),
            charset=self.profile.reply_charset,
            timezone=self.profile.timezone,
            short=decision.short,
        )
        return self._enqueue_reply(session, row, decision, build_reply(facts, self.templates, now=now))

    def _enqueue_reply(self, session: Session, row: InboundMessage, decision, message) -> Finding | None:
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

    # -- a mail that could not be processed -------------------------------------------------

    def acknowledge_quarantined(self, session: Session, row: InboundMessage, raw: bytes) -> None:
        """The intake's quarantine hook: "it arrived, a person will look", where the reply policy allows.

        Nothing of the mail is trusted beyond its header block (read as the pipeline reads it) and
        its attachment names; it gets a receipt number so the sender and staff can refer to it, and
        the digest lists it.
        """
        now = self.clock()
        headers = parse_headers(raw)
        walked = walk_headers(raw, authserv_id=self.profile.authserv_id)
        authenticated = authenticated_for(walked.authentication, from_domain(walked))
        names = _attachment_names(raw)
        decision = should_reply(
            session,
            headers,
            desk=row.desk,
            desk_address=self.profile.address,
            limit=self.limits.replies_per_sender_per_hour,
            now=now,
            automatic=walked.automatic,
            automatic_reason="; ".join(walked.automatic_reasons) or None,
            policy=self.profile.reply_to,
            authenticated=authenticated,
            submission=plausible_submission(
                has_pdf=any(n.lower().endswith(".pdf") for n in names), subject=walked.subject or ""
            ),
            desk_limit=self.limits.replies_per_desk_per_hour,
        )
        row.receipt_no = row.receipt_no or self._next_receipt_no(session, now)
        finding = Finding("mail.processing_failed", detail=(row.last_error or "")[:500])
        row.findings_json = stored_findings.dump([finding])
        if not decision.reply and not decision.suppressed:
            log.info("quarantined mail %s: no acknowledgement (%s)", row.receipt_no, decision.reason)
            return
        facts = ReplyFacts(
            desk=row.desk,
            desk_name=self.profile.name,
            desk_address=self.profile.address,
            contact=self.profile.contact,
            receipt_no=row.receipt_no,
            received_at=_aware(row.received_at),
            recipient=decision.address,
            verdict=Verdict.NEEDS_REVIEW,
            original_message_id=_angle(walked.message_id or row.message_id),
            original_references=headers.get("References"),
            original_subject=walked.subject or row.subject,
            documents=[FoundDocument(name, "未確認") for name in names],
            findings=[finding],
            charset=self.profile.reply_charset,
            timezone=self.profile.timezone,
            short=decision.short,
        )
        held = self._enqueue_reply(session, row, decision, build_reply(facts, self.templates, now=now))
        log.info(
            "quarantined mail %s: acknowledgement to %s%s",
            row.receipt_no,
            decision.address,
            " held by the sending limits" if held else " queued",
        )


# The whole mail is parsed here, in this process (not the bounded walk worker): only a mail small
# enough to parse quickly whatever its structure; a larger one is acknowledged without the names.
_NAMES_PARSE_MAX = 8 * 1024 * 1024


def _attachment_names(raw: bytes, limit: int = 20) -> list[str]:
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


def _found(result) -> FoundDocument:
    numbers = [n for n in result.guarantee_nos if n]
    keys = [k for k in result.access_keys_masked if k]
    return FoundDocument(
        result.name,
        KIND_LABELS.get(result.kind, result.kind.value),
        ", ".join(numbers) or None,
        keys[0] if len(keys) == 1 else None,
    )


def _angle(message_id: str | None) -> str | None:
    """The walker keeps Message-IDs bare; threading headers want them in angle brackets."""
    if not message_id:
        return None
    return message_id if message_id.startswith("<") else f"<{message_id}>"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# The same shape for the modules that decide a held or manual submission later.
found_document = _found
