"""The inbox: every submission, newest first, with its state, filters, search and counts.

A submission's *state* says what it waits for:

- ``open``: needs_review and nobody has decided yet;
- ``held``: waiting for a look-up (照会待ち): the service was down and it is tried again, or a clerk
  looks it up by hand (manual mode, or held too long; ``intake.manual_lookup.WAITING``);
- ``waiting_resend``: returned (by the robot or a person) and no resend has arrived yet;
- ``decided``: accepted, handled, answered by a resend, or automatic mail.

Apart from the state, an accepted guarantee the guarantor revoked afterwards (``revoked_at``, set by
``intake.revocations``) is flagged until a person acknowledges it (audit ``console.revocation_seen``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import false, or_
from sqlmodel import Session, select

from console.accounts import StaffMember
from console.context import ConsoleContext
from intake.manual_lookup import WAITING
from mailer.digest_rows import VERDICT_LABELS, _department as digest_department
from rules.findings import Verdict
from store import stored_findings
from store.tables import AuditEvent, InboundMessage, StaffDecision, Submission

STATES = ("open", "held", "waiting_resend", "decided")
STATE_LABELS = {"open": "未対応", "held": "照会待ち", "waiting_resend": "再送待ち", "decided": "対応済"}
VERDICT_NAMES = {str(k): v for k, v in VERDICT_LABELS.items() if isinstance(k, Verdict)} | {"ignored": "自動送信"}
DECISION_LABELS = {"accept": "受理", "return": "返送", "handled": "対応済み", "lookup": "照会結果を記録"}
REVOCATION_SEEN = "console.revocation_seen"  # audit action: a person acknowledged a revocation
# Findings that mean the look-up itself did not happen: the item waits for it, not for a person's view.
HELD_CODES = frozenset({"lookup.unavailable", "lookup.refused"})
LIST_LIMIT = 500


@dataclass(frozen=True)
class InboxFilter:
    verdict: str | None = None
    state: str | None = None
    department: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    query: str | None = None
    revoked: bool = False  # only guarantees revoked after acceptance that nobody acknowledged yet


@dataclass(frozen=True)
class InboxItem:
    submission_id: int
    desk: str
    receipt_no: str
    received_at: datetime
    contractor: str
    work_name: str
    guarantee_type: str
    guarantee_no: str
    contract_no: str
    verdict: str  # the robot's verdict
    state: str
    department: str
    department_name: str
    sender: str
    subject: str
    decision: str | None = None  # accept | return | handled | lookup, when a person decided
    revoked_at: datetime | None = None  # the guarantor revoked it after the desk accepted it
    revocation_seen: bool = False  # a person acknowledged the revocation

    @property
    def verdict_label(self) -> str:
        return VERDICT_NAMES.get(self.verdict, self.verdict)

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.state]

    @property
    def decision_label(self) -> str:
        return DECISION_LABELS.get(self.decision or "", "")

    def to_json(self) -> dict:
        return {
            "receipt_no": self.receipt_no,
            "submission_id": self.submission_id,
            "desk": self.desk,
            "received_at": _aware(self.received_at).isoformat(),
            "contractor": self.contractor,
            "work_name": self.work_name,
            "guarantee_type": self.guarantee_type,
            "guarantee_no": self.guarantee_no,
            "contract_no": self.contract_no,
            "verdict": self.verdict,
            "state": self.state,
            "department": self.department,
            "decision": self.decision,
            "sender": self.sender,
            "revoked_at": _aware(self.revoked_at).isoformat() if self.revoked_at else None,
            "revocation_seen": self.revocation_seen,
        }

    @property
    def revocation_open(self) -> bool:
        """Revoked after acceptance and nobody has acknowledged it yet: staff must act."""
        return self.revoked_at is not None and not self.revocation_seen


@dataclass(frozen=True)
class InboxPage:
    items: list[InboxItem]
    counts: dict[str, int]  # per state, over what the person may see (before the state filter)
    revoked: int = 0  # revoked after acceptance and not yet acknowledged, over what the person may see
    latest_submission_id: int = 0  # for "new items appeared" polling


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def state_of(submission: Submission, decision: StaffDecision | None, resent: bool) -> str:
    if decision is not None:
        return "waiting_resend" if decision.verdict == Verdict.RETURNED and not resent else "decided"
    if submission.lookup_state in WAITING:
        return "held"
    if submission.verdict == Verdict.NEEDS_REVIEW:
        return "held" if HELD_CODES & set(stored_findings.codes(submission.findings_json)) else "open"
    if submission.verdict == Verdict.RETURNED and not resent:
        return "waiting_resend"
    return "decided"


def department_of(context: ConsoleContext, submission: Submission) -> str:
    """The department whose staff handle it: the same routing the digest uses."""
    view = context.desks.get(submission.desk)
    if view is None:
        return submission.department or ""
    return digest_department(view.rules, submission.department, submission.guarantee_type)


def visible_to(context: ConsoleContext, departments: tuple[str, ...]):
    """SQL for "routed to one of these departments", the digest's routing (``department_of``) in a
    WHERE clause, so a clerk's list is limited in the database, not after a row limit."""
    wanted = set(departments)
    per_desk = []
    for desk_id, view in context.desks.items():
        known = list(view.rules.departments)
        routed: dict[str, str] = {}
        for department_id, department in view.rules.departments.items():
            for kind in department.guarantee_types:
                routed.setdefault(kind.value, department_id)  # the first department wins, as department_for
        unrouted_department = Submission.department.is_(None) | Submission.department.not_in(known)
        options = [Submission.department.in_(sorted(wanted & set(known)))]
        mine = [t for t, d in routed.items() if d in wanted]
        if mine:
            options.append(unrouted_department & Submission.guarantee_type.in_(mine))
        if known and known[0] in wanted:  # what nothing routes goes to the desk's first department
            options.append(
                unrouted_department
                & (Submission.guarantee_type.is_(None) | Submission.guarantee_type.not_in(list(routed)))
            )
        per_desk.append((Submission.desk == desk_id) & or_(*options))
    return or_(*per_desk) if per_desk else false()


def _day_start(day: date, zone: str) -> datetime:
    return datetime.combine(day, time.min, tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)


def list_inbox(session: Session, context: ConsoleContext, member: StaffMember, wanted: InboxFilter) -> InboxPage:
    statement = (
        select(Submission, InboundMessage, StaffDecision)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .outerjoin(StaffDecision, StaffDecision.submission_id == Submission.id)
        .where(Submission.desk.in_(list(context.desks)))
    )
    if not member.is_admin:
        statement = statement.where(visible_to(context, member.departments))
    if wanted.verdict:
        statement = statement.where(Submission.verdict == wanted.verdict)
    if wanted.date_from:
        statement = statement.where(InboundMessage.received_at >= _day_start(wanted.date_from, context.timezone))
    if wanted.date_to:
        statement = statement.where(
            InboundMessage.received_at < _day_start(wanted.date_to + timedelta(days=1), context.timezone)
        )
    query = (wanted.query or "").strip()
    if query:
        statement = statement.where(
            or_(
                InboundMessage.receipt_no.contains(query, autoescape=True),
                Submission.guarantee_no.contains(query, autoescape=True),
                Submission.contract_no.contains(query, autoescape=True),
                Submission.contractor_name.contains(query, autoescape=True),
            )
        )
    rows = session.exec(
        statement.order_by(InboundMessage.received_at.desc(), Submission.id.desc()).limit(LIST_LIMIT * 4)
    ).all()
    resent = _resent_ids(session, [s.id for s, _, _ in rows])
    seen = revocations_seen(session, [s.id for s, _, _ in rows if s.revoked_at is not None])
    counts = dict.fromkeys(STATES, 0)
    items: list[InboxItem] = []
    latest = revoked = 0
    for submission, inbound, decision in rows:
        department = department_of(context, submission)
        if not member.sees(department):
            continue
        if wanted.department and department != wanted.department:
            continue
        latest = max(latest, submission.id)
        state = state_of(submission, decision, submission.id in resent)
        counts[state] += 1
        flagged = submission.revoked_at is not None and submission.id not in seen
        revoked += flagged
        if wanted.state and state != wanted.state:
            continue
        if wanted.revoked and not flagged:
            continue
        if len(items) < LIST_LIMIT:
            items.append(_item(context, submission, inbound, decision, state, department, submission.id in seen))
    return InboxPage(items, counts, revoked, latest)


def revocations_seen(session: Session, ids: list[int]) -> set[int]:
    """Which of these revoked submissions a person has acknowledged (from the audit trail)."""
    if not ids:
        return set()
    subjects = session.exec(
        select(AuditEvent.subject).where(
            AuditEvent.action == REVOCATION_SEEN, AuditEvent.subject.in_([f"submission:{i}" for i in ids])
        )
    ).all()
    return {int(subject.split(":", 1)[1]) for subject in subjects}


def _resent_ids(session: Session, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    return set(session.exec(select(Submission.resend_of_id).where(Submission.resend_of_id.in_(ids))).all())


def _item(
    context: ConsoleContext,
    submission: Submission,
    inbound: InboundMessage,
    decision: StaffDecision | None,
    state: str,
    department: str,
    revocation_seen: bool = False,
) -> InboxItem:
    view = context.desks.get(submission.desk)
    return InboxItem(
        submission_id=submission.id,
        desk=submission.desk,
        receipt_no=inbound.receipt_no or "",
        received_at=_aware(inbound.received_at),
        contractor=submission.contractor_name or "",
        work_name=submission.work_name or "",
        guarantee_type=submission.guarantee_type or "",
        guarantee_no=submission.guarantee_no or "",
        contract_no=submission.contract_no or "",
        verdict=submission.verdict,
        state=state,
        department=department,
        department_name=view.department_name(department) if view else department,
        sender=inbound.sender or "",
        subject=inbound.subject or "",
        decision=decision.decision if decision else None,
        revoked_at=_aware(submission.revoked_at) if submission.revoked_at else None,
        revocation_seen=revocation_seen,
    )


def latest_visible_id(session: Session, context: ConsoleContext, member: StaffMember) -> int:
    """The newest submission this person may see (the inbox asks for it to show new items)."""
    return list_inbox(session, context, member, InboxFilter()).latest_submission_id
