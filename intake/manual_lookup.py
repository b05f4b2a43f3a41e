"""Manual mode: a clerk looks a key up on the guarantor's site and records what the certificate says.

UI-free service functions, for the CLI (`keydesk manual …`) and the staff console alike:

- ``pending_lookups(session, desk)``: what waits for a clerk (manual mode, or held too long).
- ``reveal_key(session, vault, desk, receipt_no, staff=…, now=…)``: the 認証キー in full, audited.
- ``record_manual_lookup(session, desk_context, receipt_no, facts, staff=…, now=…)``: the facts a
  clerk read run through the town's rules exactly as a looked-up certificate's
  (``verifier.verify.judge_certificate``); the submission takes the verdict and, once nothing of
  the mail waits any more, the contractor gets the one result mail.

Each function works in the caller's transaction and never commits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from collections.abc import Sequence

import jinja2
from pydantic import Field, ValidationError, model_validator
from sqlmodel import Session, select

from foundation.errors import UserFacingError
from intake.desk_profile import DeskProfile
from intake.reply_builder import KIND_LABELS
from intake.register_store import DbAcceptedIndex, DbContractRegister
from intake.result_reply import enqueue_result_reply, result_key
from mailer.reply import FoundDocument, GuaranteeLine
from foundation.config import StrictModel
from rules.domain import Certificate, GuaranteeType
from rules.findings import CODES, Finding, Verdict, strongest
from rules.schema import DeskRules
from rules.signatures import DocumentKind
from formats.access_key import AccessKeyFormat
from store import stored_findings
from store.audit import record as audit
from store.key_vault import KeyVault
from store.states import LookupState
from store.tables import Document, InboundMessage, OutboxMessage, StaffDecision, Submission
from formats import access_key as keys
from verifier.certificate_signature import canonical_json
from verifier.judge import department_for, judge_certificate

WAITING = (LookupState.MANUAL, LookupState.STAFF, LookupState.HELD)  # states a clerk may settle by hand


class ManualLookupError(UserFacingError):
    """A manual look-up that cannot be recorded as asked (unknown receipt, nothing waiting, bad facts).

    ``fields``: for bad facts, the names of the facts at fault, so a form (the staff console) can name
    them in its own words without reading this message."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


@dataclass(frozen=True)
class DeskContext:
    """What recording a manual look-up needs about the desk (``keydesk.composition.desk_context``)."""

    profile: DeskProfile
    rules: DeskRules
    templates: jinja2.Environment
    lookup_site_url: str | None = None
    # False when the desk's mailbox action only flags mails: a recorded look-up then moves nothing.
    mailbox_moves: bool = True


@dataclass(frozen=True)
class PendingLookup:
    submission_id: int
    receipt_no: str
    received_at: datetime
    sender: str
    guarantee_no: str | None
    access_key_masked: str | None
    state: str  # manual | staff | held


class ManualFacts(StrictModel):
    """What the certificate on the guarantor's site says (or that it found nothing / is revoked)."""

    status: Literal["found", "no_match", "revoked"] = "found"
    guarantee_type: GuaranteeType | None = None
    obligee: str | None = None
    contractor_name: str | None = None
    contract_no: str | None = None
    work_name: str | None = None
    work_category: str | None = None
    contract_amount: int | None = Field(default=None, ge=0)
    guarantee_amount: int | None = Field(default=None, ge=0)
    contract_date: date | None = None
    completion_date: date | None = None
    period_start: date | None = None
    period_end: date | None = None
    guarantor: str = ""
    revoked_reason: str = ""

    @model_validator(mode="after")
    def _complete(self) -> ManualFacts:
        if self.status == "found":
            missing = [name for name in _CERTIFICATE_FACTS if getattr(self, name) in (None, "")]
            if missing:
                raise ValueError(f"a found certificate needs {', '.join(missing)}")
        return self

    def certificate(self, guarantee_no: str, desk: str) -> Certificate:
        return Certificate(
            guarantee_no=guarantee_no,
            guarantee_type=self.guarantee_type,
            guarantor=self.guarantor,
            contractor_name=self.contractor_name,
            obligee=self.obligee,
            desk=desk,
            contract_no=self.contract_no,
            work_name=self.work_name,
            work_category=self.work_category,
            contract_amount=self.contract_amount,
            guarantee_amount=self.guarantee_amount,
            fee=0,
            contract_date=self.contract_date,
            completion_date=self.completion_date,
            period_start=self.period_start,
            period_end=self.period_end,
            issued_on=self.contract_date,
        )


_CERTIFICATE_FACTS = (
    "guarantee_type",
    "obligee",
    "contractor_name",
    "contract_no",
    "work_name",
    "work_category",
    "contract_amount",
    "guarantee_amount",
    "contract_date",
    "completion_date",
    "period_start",
    "period_end",
)


def parse_facts(data: object) -> ManualFacts:
    """Facts from JSON-like data; ManualLookupError with one line per problem."""
    try:
        return ManualFacts.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'facts'}: {e['msg']}" for e in exc.errors())
        fields = [str(e["loc"][0]) for e in exc.errors() if e["loc"]]
        if any(not e["loc"] for e in exc.errors()) and isinstance(data, dict):  # _complete: facts left out
            fields += [name for name in _CERTIFICATE_FACTS if data.get(name) in (None, "")]
        raise ManualLookupError(f"照会結果の内容に誤りがあります: {problems}", tuple(dict.fromkeys(fields))) from None


@dataclass(frozen=True)
class ManualOutcome:
    receipt_no: str
    guarantee_no: str | None
    verdict: Verdict  # of this guarantee
    codes: tuple[str, ...]
    result_mail_queued: bool  # False while another guarantee of the same mail still waits
    decision: StaffDecision | None = None  # None while the rules still leave the guarantee to a person


def pending_lookups(session: Session, desk: str) -> list[PendingLookup]:
    rows = session.exec(
        select(Submission, InboundMessage)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .where(Submission.desk == desk, Submission.lookup_state.in_(WAITING))
        .order_by(Submission.id)
    ).all()
    return [
        PendingLookup(
            s.id, m.receipt_no or "", m.received_at, m.sender or "", s.guarantee_no, s.access_key_masked, s.lookup_state
        )
        for s, m in rows
    ]


def _waiting(
    session: Session, desk: str, receipt_no: str, guarantee_no: str | None
) -> tuple[InboundMessage, Submission]:
    row = session.exec(
        select(InboundMessage).where(InboundMessage.desk == desk, InboundMessage.receipt_no == receipt_no.strip())
    ).first()
    if row is None:
        raise ManualLookupError(f"受付番号 {receipt_no} のメールはありません")
    waiting = [
        s
        for s in session.exec(
            select(Submission).where(Submission.inbound_id == row.id, Submission.lookup_state.in_(WAITING))
        )
        if guarantee_no is None or s.guarantee_no == guarantee_no
    ]
    if not waiting:
        raise ManualLookupError(f"受付番号 {receipt_no} に照会待ちの保証はありません")
    if len(waiting) > 1:
        numbers = ", ".join(s.guarantee_no or "?" for s in waiting)
        raise ManualLookupError(
            f"受付番号 {receipt_no} には照会待ちの保証が複数あります。保証契約番号を指定してください({numbers})"
        )
    return row, waiting[0]


def reveal_key(
    session: Session,
    vault: KeyVault,
    desk: str,
    receipt_no: str,
    *,
    staff: str,
    now: datetime,
    guarantee_no: str | None = None,
    key_format: AccessKeyFormat = keys.PROJECT_FORMAT,
) -> str:
    """The full 認証キー of a waiting submission, for the clerk to type on the guarantor's site (audited)."""
    staff = _staff(staff)
    row, submission = _waiting(session, desk, receipt_no, guarantee_no)
    if submission.access_key_encrypted is None:
        raise ManualLookupError(f"受付番号 {receipt_no} の認証キーは読み取れていません")
    key = vault.decrypt(submission.access_key_encrypted)
    audit(
        session,
        desk,
        f"staff:{staff}",
        "lookup.key_revealed",
        f"submission:{submission.id}",
        {"receipt_no": row.receipt_no, "guarantee_no": submission.guarantee_no},
        at=now,
    )
    return keys.display(key, key_format)


def record_manual_lookup(
    session: Session,
    desk: DeskContext,
    receipt_no: str,
    facts: ManualFacts,
    *,
    staff: str,
    now: datetime,
    guarantee_no: str | None = None,
    staff_login: str = "cli",
    request_key: str | None = None,
) -> ManualOutcome:
    """Record what the guarantor's site shows for one waiting guarantee; the town's rules run on it.

    ``staff`` is the person's name (audit trail, digest); ``staff_login`` their console login, or
    ``cli`` for `keydesk manual record`; ``request_key`` makes a retried console request a replay.
    """
    staff = _staff(staff)
    desk_id = desk.profile.desk_id
    row, submission = _waiting(session, desk_id, receipt_no, guarantee_no)
    number = submission.guarantee_no or ""
    kept = stored_findings.without(submission.findings_json, ("lookup.manual", "lookup.unavailable"))
    findings: list[Finding] = []
    certificate = None
    if facts.status == "no_match":
        findings.append(
            Finding(
                "lookup.no_match",
                detail=f"manual look-up by {staff}: no match",
                params={"guarantee_no": number},
                guarantee_no=number,
            )
        )
    elif facts.status == "revoked":
        findings.append(
            Finding(
                "lookup.revoked",
                detail=f"manual look-up by {staff}: revoked ({facts.revoked_reason})",
                params={"guarantee_no": number},
                guarantee_no=number,
            )
        )
    else:
        certificate = facts.certificate(number, desk_id)
        found, contract = judge_certificate(
            certificate, desk_id, desk.rules, DbContractRegister(session), DbAcceptedIndex(session)
        )
        findings += found
        submission.guarantee_type = certificate.guarantee_type.value
        submission.contract_no = certificate.contract_no
        submission.contractor_name = certificate.contractor_name
        submission.work_name = certificate.work_name
        submission.department = department_for(desk.rules, certificate.guarantee_type, contract)
    verdict = strongest(
        [CODES[code].verdict for code in stored_findings.codes(kept) if code in CODES] + [f.verdict for f in findings]
    )
    submission.verdict = verdict.value
    submission.findings_json = stored_findings.append(kept, findings)
    submission.lookup_facts_json = json.dumps(
        {
            "status": facts.status,
            "staff": staff,
            "at": now.isoformat(),
            "revoked_reason": facts.revoked_reason,
            "certificate": canonical_json(certificate).decode("utf-8") if certificate else None,
        },
        ensure_ascii=False,
    )
    submission.lookup_state, submission.next_lookup_at = LookupState.DONE, None
    session.add(submission)
    session.flush()
    audit(
        session,
        desk_id,
        f"staff:{staff}",
        "lookup.manual_recorded",
        f"submission:{submission.id}",
        {"receipt_no": row.receipt_no, "guarantee_no": number, "status": facts.status, "verdict": verdict.value},
        at=now,
    )
    queued = _result_mail_if_settled(session, desk, row, findings, now)
    decision = _file_as_decision(
        session,
        desk,
        row,
        submission,
        verdict,
        findings,
        staff=staff,
        staff_login=staff_login,
        request_key=request_key,
        now=now,
    )
    return ManualOutcome(
        row.receipt_no or "", submission.guarantee_no, verdict, tuple(f.code for f in findings), queued, decision
    )


def _file_as_decision(
    session: Session,
    desk: DeskContext,
    row: InboundMessage,
    submission: Submission,
    verdict: Verdict,
    findings: Sequence[Finding],
    *,
    staff: str,
    staff_login: str,
    request_key: str | None,
    now: datetime,
) -> StaffDecision | None:
    """A settled look-up is a staff decision like 受理 or 返送, from the console or the CLI alike: the mail
    leaves the review folder at the next intake pass (``intake.decision_filing``) and a retried request
    is answered from the row. One the rules still leave to a person writes none: the item stays open."""
    if verdict is Verdict.NEEDS_REVIEW:
        return None
    reply = session.exec(select(OutboxMessage).where(OutboxMessage.idempotency_key == result_key(row.id))).first()
    decision = StaffDecision(
        desk=submission.desk,
        submission_id=submission.id,
        inbound_id=row.id,
        decision="lookup",
        verdict=verdict.value,
        reasons_json=stored_findings.dump(findings),
        note="",
        staff_login=staff_login[:64],
        staff_name=staff,
        request_key=request_key,
        decided_at=now,
        outbox_id=reply.id if reply else None,
        mailbox_action_done=not desk.mailbox_moves,
    )
    session.add(decision)
    session.flush()
    return decision


def _result_mail_if_settled(
    session: Session, desk: DeskContext, row: InboundMessage, findings: Sequence[Finding], now: datetime
) -> bool:
    submissions = list(session.exec(select(Submission).where(Submission.inbound_id == row.id).order_by(Submission.id)))
    if any(s.lookup_state in WAITING for s in submissions):
        return False
    mail_findings = [CODES[code].verdict for code in stored_findings.codes(row.findings_json) if code in CODES]
    verdict = strongest([Verdict(s.verdict) for s in submissions] + mail_findings)
    row.verdict = verdict.value
    session.add(row)
    documents = [
        FoundDocument(
            d.display_name,
            KIND_LABELS.get(DocumentKind(d.kind), d.kind),
            d.guarantee_no,
            d.access_key_masked if d.access_key_masked and "," not in d.access_key_masked else None,
        )
        for d in session.exec(select(Document).where(Document.inbound_id == row.id).order_by(Document.id))
    ]
    guarantees = [
        GuaranteeLine(s.guarantee_no, Verdict(s.verdict), s.guarantee_type, s.work_name)
        for s in submissions
        if s.guarantee_no
    ]
    return enqueue_result_reply(
        session,
        profile=desk.profile,
        templates=desk.templates,
        row=row,
        verdict=verdict,
        guarantees=guarantees,
        findings=findings,
        documents=documents,
        now=now,
    )


def _staff(name: str) -> str:
    cleaned = " ".join((name or "").split())
    if not cleaned or len(cleaned) > 60:
        raise ManualLookupError("職員の氏名を指定してください(--staff、60文字以内)")
    return cleaned
