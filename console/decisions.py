"""Decisions staff make for submissions that wait for people, and the audited key reveal.

A decision is a domain event like a verdict: in one transaction it records who decided what, puts
the contractor's reply into the outbox (the same templates as the robot's replies, idempotency key
``decision:<submission id>``) and writes the audit event with the staff member's name. The unique
submission id of ``staff_decision`` makes a double click or a retried request harmless: a request
with the same request key is answered from the stored decision; any other is refused (409) with
who decided and when. The mail is moved to its new folder afterwards (``intake.decision_filing``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime, timezone
from email import message_from_bytes
from zoneinfo import ZoneInfo

from sqlmodel import Session, select

from console.accounts import StaffMember
from console.context import ConsoleContext
from console.inbox import department_of
from foundation.errors import UserFacingError
from intake.manual_lookup import WAITING
from intake.mime_headers import TOLERANT_POLICY
from intake.reply_builder import KIND_LABELS, angle, aware
from mailer.message import clean_header_text
from mailer.outbox import enqueue
from mailer.reply import FoundDocument, GuaranteeLine, ReplyFacts, build_reply
from mailer.reply_policy import REPLY_KIND, reply_address
from rules.findings import CODES, Finding, Severity, Verdict
from rules.signatures import DocumentKind
from store import stored_findings
from store.audit import record as audit
from store.retry import retry_on_conflict
from rules.evaluate import japanese_date, yen
from store.tables import Contract, Document, InboundMessage, StaffDecision, Submission
from formats.access_key import display
from verifier.certificate_signature import SignedCertificate
from store.states import LookupState

DECISIONS = {"accept": Verdict.ACCEPTED.value, "return": Verdict.RETURNED.value, "handled": "handled"}
# A decision row's names: the three above, and "lookup" for a look-up a clerk recorded (console/manual.py).
DECISION_NAMES = {"accept": "受理", "return": "返送", "handled": "対応済み", "lookup": "照会結果の記録"}
NOTE_MAX = 1000
# The values a reason's sentence may name that the console can fill from the submission, its
# document, its certificate and the register (a reason needing others, e.g. a ratio, is not offered).
FILLABLE = frozenset(
    {
        "guarantee_no",
        "document",
        "obligee",
        "contract_no",
        "contract_date",
        "guarantee_type",
        "work_category",
        "guarantee_amount",
        "period_end",
        "completion_date",
    }
)


def _placeholders(message: str) -> set[str]:
    return {name for _text, name, _spec, _conv in string.Formatter().parse(message) if name}


# Reasons staff may give for a return: the catalogue's findings that ask the sender to resend.
RETURN_REASONS: dict[str, str] = {
    spec.code: spec.label
    for spec in CODES.values()
    if spec.verdict is Verdict.RETURNED and spec.severity is Severity.ERROR and _placeholders(spec.message) <= FILLABLE
}


class NotFound(UserFacingError):
    """No such item, or not one this person may see (the same answer for both)."""


class BadDecision(UserFacingError):
    """The decision's values cannot be used; the message is Japanese, for the form."""


class AlreadyDecided(UserFacingError):
    """Someone decided first (or the robot did): 409, saying who and when."""


@dataclass(frozen=True)
class DecisionOutcome:
    decision: StaffDecision
    replayed: bool  # the same request again: nothing new happened


def visible_mail(
    session: Session, context: ConsoleContext, member: StaffMember, receipt_no: str
) -> tuple[InboundMessage, list[Submission]]:
    """The mail and the submissions of it this person may see; NotFound when none."""
    inbound = session.exec(
        select(InboundMessage).where(
            InboundMessage.receipt_no == receipt_no, InboundMessage.desk.in_(list(context.desks))
        )
    ).first()
    if inbound is None:
        raise NotFound(f"受付番号 {receipt_no} は見つかりません")
    submissions = list(
        session.exec(select(Submission).where(Submission.inbound_id == inbound.id).order_by(Submission.id))
    )
    visible = [s for s in submissions if member.sees(department_of(context, s))]
    if not visible:
        raise NotFound(f"受付番号 {receipt_no} は見つかりません")
    return inbound, visible


def local_time(context: ConsoleContext, moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return f"{aware.astimezone(ZoneInfo(context.timezone)):%Y年%m月%d日 %H:%M}"


def already_decided_message(context: ConsoleContext, decision: StaffDecision) -> str:
    label = DECISION_NAMES.get(decision.decision, decision.decision)
    return (
        f"この申請は {local_time(context, decision.decided_at)} に {decision.staff_name} さんが"
        f"「{label}」と判断済みです"
    )


def validate(decision: str, reasons: list[str], note: str) -> tuple[str, list[str], str]:
    if decision not in DECISIONS:
        raise BadDecision("判断を「受理」「返送」「対応済み」から選んでください")
    reasons = [r for r in dict.fromkeys(reasons) if r]
    unknown = [r for r in reasons if r not in RETURN_REASONS]
    if unknown:
        raise BadDecision("返送の理由は一覧から選んでください")
    if decision == "return" and not reasons:
        raise BadDecision("返送する場合は、理由を1つ以上選んでください")
    if decision != "return" and reasons:
        raise BadDecision("理由を選べるのは「返送」のときだけです")
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise BadDecision(f"メモは{NOTE_MAX}文字以内にしてください")
    return decision, reasons, note


def decide(
    context: ConsoleContext,
    member: StaffMember,
    receipt_no: str,
    *,
    decision: str,
    reasons: list[str] | None = None,
    note: str = "",
    guarantee_no: str | None = None,
    submission_id: int | None = None,
    request_key: str | None = None,
) -> DecisionOutcome:
    """Record one decision and its reply (exactly once); raises NotFound, BadDecision, AlreadyDecided."""
    decision, reasons, note = validate(decision, list(reasons or []), note)
    request_key = (request_key or "").strip()[:64] or None

    def attempt() -> DecisionOutcome:
        with Session(context.engine) as session:
            inbound, visible = visible_mail(session, context, member, receipt_no)
            submission = _target(session, context, visible, guarantee_no, submission_id)
            existing = session.exec(select(StaffDecision).where(StaffDecision.submission_id == submission.id)).first()
            if existing is not None:
                if request_key and existing.request_key == request_key and existing.staff_login == member.login:
                    return DecisionOutcome(existing, replayed=True)
                raise AlreadyDecided(already_decided_message(context, existing))
            if submission.verdict != Verdict.NEEDS_REVIEW:
                raise AlreadyDecided(
                    f"この申請は自動で「{_robot_label(submission.verdict)}」と判定済みで、判断を待っていません"
                )
            now = context.clock()
            row = StaffDecision(
                desk=submission.desk,
                submission_id=submission.id,
                inbound_id=inbound.id,
                decision=decision,
                verdict=DECISIONS[decision],
                reasons_json=stored_findings.dump_codes(reasons),
                note=note,
                staff_login=member.login,
                staff_name=member.name,
                request_key=request_key,
                decided_at=now,
                mailbox_action_done=context.desk(submission.desk).mailbox.action == "flag",
            )
            session.add(row)
            session.flush()  # the unique submission id: a racing second decision fails here
            if submission.lookup_state in WAITING:
                # A person decided without the look-up: it is no longer retried, nor offered to a clerk,
                # so no result mail can follow this decision's reply.
                submission.lookup_state, submission.next_lookup_at = LookupState.DECIDED, None
                session.add(submission)
            outbox = _reply(session, context, inbound, submission, row, now)
            row.outbox_id = outbox.id if outbox else None
            session.add(row)
            audit(
                session,
                submission.desk,
                member.actor,
                "console.decided",
                f"submission:{submission.id}",
                {
                    "staff": member.name,
                    "login": member.login,
                    "decision": decision,
                    "reasons": reasons,
                    "note": note,
                    "receipt_no": inbound.receipt_no,
                    "guarantee_no": submission.guarantee_no,
                    "reply": outbox.id if outbox else None,
                },
                at=now,
            )
            session.commit()
            session.refresh(row)
            return DecisionOutcome(row, replayed=False)

    outcome = retry_on_conflict(attempt, what=f"decision on {receipt_no}")
    if not outcome.replayed:
        context.on_decision()
    return outcome


def _robot_label(verdict: str) -> str:
    return {"accepted": "受付済", "returned": "返送", "ignored": "自動送信"}.get(verdict, verdict)


def _target(
    session: Session,
    context: ConsoleContext,
    visible: list[Submission],
    guarantee_no: str | None,
    submission_id: int | None,
) -> Submission:
    if submission_id is not None:
        chosen = [s for s in visible if s.id == submission_id]
    elif guarantee_no:
        chosen = [s for s in visible if s.guarantee_no == guarantee_no]
    else:
        waiting = [s for s in visible if s.verdict == Verdict.NEEDS_REVIEW]
        chosen = waiting or visible
        if len(chosen) > 1:
            raise BadDecision("このメールには保証が複数あります。保証契約番号(guarantee_no)を指定してください")
    if not chosen:
        raise NotFound("指定の保証はこのメールにありません")
    return chosen[0]


def _reply(
    session: Session,
    context: ConsoleContext,
    inbound: InboundMessage,
    submission: Submission,
    decision: StaffDecision,
    now: datetime,
):
    """The contractor's answer to the decision, through the outbox; None for 対応済み or automatic mail."""
    if decision.decision == "handled" or inbound.automatic or not inbound.raw_path:
        return None
    headers = message_from_bytes(context.store.read(inbound.raw_path), policy=TOLERANT_POLICY)
    recipient = reply_address(headers)
    if recipient is None:
        return None
    view = context.desk(submission.desk)
    profile = view.profile
    verdict = Verdict(decision.verdict)
    document = session.get(Document, submission.document_id) if submission.document_id else None
    params = reason_params(session, submission, document)
    findings = [
        Finding(
            code,
            detail=f"staff decision by {decision.staff_login}",
            params=params,
            guarantee_no=submission.guarantee_no,
        )
        for code in stored_findings.codes(decision.reasons_json)
    ]
    documents = (
        [
            FoundDocument(
                document.display_name,
                KIND_LABELS.get(DocumentKind(document.kind), document.kind),
                submission.guarantee_no,
                submission.access_key_masked,
            )
        ]
        if document
        else []
    )
    facts = ReplyFacts(
        desk=submission.desk,
        desk_name=profile.name,
        desk_address=profile.address,
        contact=profile.contact,
        receipt_no=inbound.receipt_no or "",
        received_at=aware(inbound.received_at),
        recipient=recipient,
        verdict=verdict,
        original_message_id=angle(inbound.message_id),
        original_references=headers.get("References"),
        original_subject=inbound.subject,
        documents=documents,
        guarantees=[GuaranteeLine(submission.guarantee_no, verdict, submission.guarantee_type, submission.work_name)]
        if submission.guarantee_no
        else [],
        findings=findings,
        charset=profile.reply_charset,
        timezone=profile.timezone,
        extra={"staff_note": clean_header_text(decision.note, NOTE_MAX)},
    )
    message = build_reply(facts, context.templates, now=now)
    row, _created = enqueue(
        session,
        desk=submission.desk,
        idempotency_key=f"decision:{submission.id}",
        kind=REPLY_KIND,
        message=message,
        envelope_from=profile.address,
        recipients=[recipient],
        inbound_id=inbound.id,
    )
    return row


def reason_params(session: Session, submission: Submission, document: Document | None) -> dict[str, str]:
    """What the reasons' sentences may name, as the rules word it (dates in 和暦, amounts in 円)."""
    params = {
        "guarantee_no": submission.guarantee_no or "",
        "document": document.display_name if document else "",
        "contract_no": submission.contract_no or "",
        "guarantee_type": submission.guarantee_type or "",
    }
    certificate = None
    if submission.certificate_json:
        try:
            certificate = SignedCertificate.from_json(submission.certificate_json).certificate()
        except Exception:  # noqa: BLE001 - an unreadable record only leaves the values out
            certificate = None
    contract = (
        session.exec(
            select(Contract).where(Contract.desk == submission.desk, Contract.contract_no == submission.contract_no)
        ).first()
        if submission.contract_no
        else None
    )
    if certificate is not None:
        params.update(
            obligee=certificate.obligee,
            guarantee_type=certificate.guarantee_type.value,
            contract_date=japanese_date(certificate.contract_date),
            work_category=certificate.work_category,
            guarantee_amount=yen(certificate.guarantee_amount),
            period_end=japanese_date(certificate.period_end),
            completion_date=japanese_date(certificate.completion_date),
        )
    if contract is not None:
        params.update(
            contract_date=japanese_date(contract.contract_date),
            work_category=contract.work_category,
            completion_date=japanese_date(contract.completion_date),
        )
    return params


def reveal_key(context: ConsoleContext, member: StaffMember, receipt_no: str, submission_id: int) -> str:
    """The 認証キー in full, for a look-up by hand; every reveal is audited with the person's name."""

    def attempt() -> str:
        with Session(context.engine) as session:
            inbound, visible = visible_mail(session, context, member, receipt_no)
            submission = next((s for s in visible if s.id == submission_id), None)
            if submission is None or submission.access_key_encrypted is None:
                raise NotFound("この保証には表示できる認証キーがありません")
            key = display(
                context.key_vault.decrypt(submission.access_key_encrypted), context.desk(submission.desk).key_format
            )
            audit(
                session,
                submission.desk,
                member.actor,
                "console.key_revealed",
                f"submission:{submission.id}",
                {
                    "staff": member.name,
                    "login": member.login,
                    "receipt_no": inbound.receipt_no,
                    "guarantee_no": submission.guarantee_no,
                },
                at=context.clock(),
            )
            session.commit()
            return key

    return retry_on_conflict(attempt, what=f"key reveal on {receipt_no}")


def acknowledge_revocation(context: ConsoleContext, member: StaffMember, receipt_no: str, submission_id: int) -> None:
    """A person saw that the guarantor revoked an accepted guarantee and takes it on (audited, once)."""
    from console.inbox import REVOCATION_SEEN, revocations_seen

    def attempt() -> None:
        with Session(context.engine) as session:
            inbound, visible = visible_mail(session, context, member, receipt_no)
            submission = next((s for s in visible if s.id == submission_id), None)
            if submission is None or submission.revoked_at is None:
                raise NotFound("この保証に受付後の失効はありません")
            if submission.id in revocations_seen(session, [submission.id]):
                return  # already taken on: a double click changes nothing
            audit(
                session,
                submission.desk,
                member.actor,
                REVOCATION_SEEN,
                f"submission:{submission.id}",
                {
                    "staff": member.name,
                    "login": member.login,
                    "receipt_no": inbound.receipt_no,
                    "guarantee_no": submission.guarantee_no,
                },
                at=context.clock(),
            )
            session.commit()

    retry_on_conflict(attempt, what=f"revocation acknowledged on {receipt_no}")
