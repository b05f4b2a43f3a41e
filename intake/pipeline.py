"""The pipeline: one recorded mail in, documents + submissions + the reply out, in one transaction.

``Pipeline`` is the intake service's ``process`` hook. It walks the mail (MIME, archives, TNEF),
reads every PDF with the bounded reader, asks the pure core (``verifier.verify_mail``) for the
decision, stores what was found, links a resend to the returned mail it answers, and puts the
reply into the outbox, all inside the caller's transaction. It never commits: the intake service
commits the result together with marking the mail processed, and moves the mail afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

import jinja2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func
from sqlmodel import Session, select

from intake.intake_service import Outcome
from intake.answering import CappedLookup, add_finding
from intake.authentication_results import authenticated_for
from intake.mime import MailLimits, WalkedMail, parse_headers, walk_headers
from intake.walk_worker import walk_bounded
from intake.lookup_settings import LookupSettings
from intake.raw_store import RawStore
from intake.reply_builder import Replies
from intake.resend_link import link_resend, record_bounce
from intake.desk_profile import DeskProfile
from intake.register_store import DbAcceptedIndex, DbContractRegister
from intake.verify_inputs import from_domain, key_patterns, too_large_context, verify_inputs
from intake.settings import Limits
from rules.findings import Verdict
from rules.schema import DeskRules
from rules.signatures import DocumentKind, DocumentSignatures
from store.key_vault import KeyVault
from store import stored_findings
from store.states import InboundState, LookupState
from store.tables import Counter, Document, InboundMessage, Submission
from verifier.lookup import CertificateLookup
from verifier.routing_hint import RoutingHint, routing_hint
from verifier.pdf_text import PdfLimits, TextResult, extract_text
from verifier.verify import InputDocument, MailVerdict, Ports, verify_mail

log = logging.getLogger(__name__)


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

    @property
    def replies(self) -> Replies:
        return Replies(self.profile, self.limits, self.templates)

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
        resend_of = link_resend(session, row, submissions, now, authenticated=authenticated, headers=headers)
        if walked.automatic:
            record_bounce(
                session,
                row,
                raw,
                now,
                authenticated=authenticated,
                desk_address=self.profile.address,
                relay_hosts=self.relay_hosts,
            )
        note = self.replies.reply(session, row, headers, walked, verdict, resend_of, now, authenticated=authenticated)
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
            pdf_limits = self.limits.pdf_limits()
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

    # -- a mail that could not be processed -------------------------------------------------

    def acknowledge_quarantined(self, session: Session, row: InboundMessage, raw: bytes) -> None:
        """The intake's quarantine hook: "it arrived, a person will look", where the reply policy allows."""
        now = self.clock()
        self.replies.acknowledge_quarantined(session, row, raw, now, lambda: self._next_receipt_no(session, now))
