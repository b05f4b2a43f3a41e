"""Everything a submission's page shows, read from the database and the stored raw mail.

Contractor-controlled text is returned as plain strings; the templates escape it. 認証キー values
are masked here, in the body text too (a sender may type one), and revealed only by
``decisions.reveal_key``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email import message_from_bytes, policy

from sqlmodel import Session, select

from console.accounts import StaffMember
from console.context import ConsoleContext
from console.decisions import RETURN_REASONS, NotFound, local_time, visible_mail
from console.inbox import (
    DECISION_LABELS,
    REVOCATION_SEEN,
    STATE_LABELS,
    VERDICT_NAMES,
    department_of,
    revocations_seen,
    state_of,
)
from console.manual import FACT_LABELS, GUARANTEE_TYPES, STATUS_LABELS, awaits_lookup
from intake.mime import walk_mail
from intake.reply_builder import KIND_LABELS
from mailer.reply import ensure_masked
from rules.domain import GuaranteeType
from rules.evaluate import company_key, japanese_date, plain_key, yen
from rules.findings import CODES, Verdict, label_of
from rules.signatures import DocumentKind
from store import stored_findings
from store.tables import AuditEvent, Contract, Document, InboundMessage, OutboxMessage, StaffDecision, Submission
from verifier.certificate_signature import SignedCertificate
from store.states import InboundState

BODY_MAX = 20_000


@dataclass(frozen=True)
class Comparison:
    label: str
    certificate: str
    register: str
    differs: bool


@dataclass(frozen=True)
class FindingView:
    code: str
    label: str
    message: str  # the sender's sentence (Japanese)
    detail: str  # for staff
    severity: str


@dataclass
class SubmissionView:
    id: int
    guarantee_no: str
    guarantee_type: str
    contract_no: str
    contractor: str
    work_name: str
    department: str
    department_name: str
    verdict: str
    verdict_label: str
    state: str
    state_label: str
    masked_key: str
    has_key: bool
    findings: list[FindingView]
    comparison: list[Comparison]
    decision: StaffDecision | None
    decision_label: str = ""
    decision_reasons: list[str] = field(default_factory=list)
    decided_at: str = ""
    resend_of: str = ""  # receipt number of the returned mail this one answers
    resent_as: list[str] = field(default_factory=list)
    awaits_lookup: bool = False  # a clerk may record the look-up (manual mode, held, or left to staff)
    lookup_state: str = ""
    revoked_at: str = ""  # when keydesk learnt the guarantor revoked it after acceptance
    revoked_reason: str = ""
    revocation_seen_by: str = ""  # who acknowledged the revocation, and when

    @property
    def awaits_decision(self) -> bool:
        return self.decision is None and self.verdict == Verdict.NEEDS_REVIEW


@dataclass(frozen=True)
class AttachmentView:
    id: int
    name: str
    kind_label: str
    origin: str
    size: int


@dataclass(frozen=True)
class ReplyView:
    id: int
    kind: str
    state: str
    subject: str
    body: str
    created_at: str
    by_decision: bool


@dataclass(frozen=True)
class HistoryView:
    at: str
    actor: str
    action: str
    text: str


@dataclass
class MailPage:
    receipt_no: str
    desk: str
    received_at: str
    sender: str
    subject: str
    date: str
    body: str
    authentication: list[str]
    verdict_label: str
    submissions: list[SubmissionView]
    attachments: list[AttachmentView]
    replies: list[ReplyView]
    history: list[HistoryView]
    lookup_url: str
    return_reasons: dict[str, str]
    fact_labels: dict[str, str] = field(default_factory=lambda: FACT_LABELS)
    status_labels: dict[str, str] = field(default_factory=lambda: STATUS_LABELS)
    guarantee_types: list[str] = field(default_factory=lambda: GUARANTEE_TYPES)


ACTIONS = {
    "console.decided": "職員の判断",
    "console.key_revealed": "認証キーの表示",
    "intake.quarantined": "隔離",
    "intake.relocated": "メールの移動を検知",
    "intake.duplicate_copy": "同じメールの重複",
    "outbox.sent": "返信を送信",
    "outbox.failed": "返信の送信に失敗",
    "outbox.recipient_failed": "宛先への送信に失敗",
    "outbox.bounced": "返信が届かなかった(エラー通知)",
    "console.mail_filed": "メールをフォルダへ移動",
    "lookup.key_revealed": "認証キーの表示(照会)",
    "lookup.manual_recorded": "照会結果の記録",
    "submission.revoked_after_acceptance": "受付後に保証が失効",
    REVOCATION_SEEN: "失効を確認",
    "lookup.held": "照会を保留",
    "lookup.retried": "再照会",
}


def mail_page(session: Session, context: ConsoleContext, member: StaffMember, receipt_no: str) -> MailPage:
    inbound, visible = visible_mail(session, context, member, receipt_no)
    view = context.desk(inbound.desk)
    raw = context.store.read(inbound.raw_path) if inbound.raw_path else b""
    walked = (
        walk_mail(raw, authserv_id=view.profile.authserv_id)
        if raw and inbound.state != InboundState.TOO_LARGE
        else None
    )
    body = (walked.body_text if walked else "")[:BODY_MAX]
    if view.key_pattern is not None:
        body = view.key_pattern.sub(lambda m: ensure_masked(m.group(0)) or "****", body)
    authentication = [f"{r.method}={r.result}" for r in walked.authentication.results] if walked else []
    decisions = {
        d.submission_id: d for d in session.exec(select(StaffDecision).where(StaffDecision.inbound_id == inbound.id))
    }
    seen = _seen_by(session, context, [s.id for s in visible if s.revoked_at is not None])
    submissions = [_submission_view(session, context, s, decisions.get(s.id), seen.get(s.id, "")) for s in visible]
    documents = session.exec(select(Document).where(Document.inbound_id == inbound.id).order_by(Document.id)).all()
    outbox = session.exec(
        select(OutboxMessage).where(OutboxMessage.inbound_id == inbound.id).order_by(OutboxMessage.id)
    ).all()
    return MailPage(
        receipt_no=inbound.receipt_no or "",
        desk=inbound.desk,
        received_at=local_time(context, inbound.received_at),
        sender=inbound.sender or "",
        subject=(walked.subject if walked else inbound.subject) or "",
        date=local_time(context, walked.date) if walked and walked.date else "",
        body=body,
        authentication=authentication or ["(認証結果の記録なし)"],
        verdict_label=VERDICT_NAMES.get(inbound.verdict or "", inbound.verdict or ""),
        submissions=submissions,
        attachments=[AttachmentView(d.id, d.display_name, _kind_label(d.kind), d.origin, d.size) for d in documents],
        replies=[_reply_view(context, row) for row in outbox],
        history=_history(session, context, inbound, visible, outbox),
        lookup_url=context.lookup_site(inbound.desk),
        return_reasons=RETURN_REASONS,
    )


def _seen_by(session: Session, context: ConsoleContext, ids: list[int]) -> dict[int, str]:
    """Who acknowledged each revocation and when ("" while nobody has)."""
    if not revocations_seen(session, ids):
        return {}
    events = session.exec(
        select(AuditEvent)
        .where(AuditEvent.action == REVOCATION_SEEN, AuditEvent.subject.in_([f"submission:{i}" for i in ids]))
        .order_by(AuditEvent.id)
    ).all()
    seen: dict[int, str] = {}
    for event in events:
        detail = json.loads(event.detail_json or "{}")
        seen.setdefault(
            int(event.subject.split(":", 1)[1]), f"{local_time(context, event.at)} {detail.get('staff') or event.actor}"
        )
    return seen


def _kind_label(kind: str) -> str:
    try:
        return KIND_LABELS.get(DocumentKind(kind), kind)
    except ValueError:
        return kind


def _findings(findings_json: str) -> list[FindingView]:
    views = []
    for item in stored_findings.items(findings_json):
        if item["code"] not in CODES:
            continue
        spec = CODES[item["code"]]
        views.append(
            FindingView(
                spec.code,
                spec.label,
                str(item.get("message") or ""),
                str(item.get("detail") or ""),
                spec.severity.value,
            )
        )
    return views


def _submission_view(
    session: Session,
    context: ConsoleContext,
    submission: Submission,
    decision: StaffDecision | None,
    revocation_seen_by: str = "",
) -> SubmissionView:
    resent = list(
        session.exec(
            select(InboundMessage.receipt_no)
            .join(Submission, Submission.inbound_id == InboundMessage.id)
            .where(Submission.resend_of_id == submission.id)
        ).all()
    )
    resend_of = ""
    if submission.resend_of_id:
        resend_of = (
            session.exec(
                select(InboundMessage.receipt_no)
                .join(Submission, Submission.inbound_id == InboundMessage.id)
                .where(Submission.id == submission.resend_of_id)
            ).first()
            or ""
        )
    department = department_of(context, submission)
    state = state_of(submission, decision, bool(resent))
    document = session.get(Document, submission.document_id) if submission.document_id else None
    masked = submission.access_key_masked or (document.access_key_masked if document else None)
    return SubmissionView(
        id=submission.id,
        guarantee_no=submission.guarantee_no or "",
        guarantee_type=submission.guarantee_type or "",
        contract_no=submission.contract_no or "",
        contractor=submission.contractor_name or "",
        work_name=submission.work_name or "",
        department=department,
        department_name=context.desk(submission.desk).department_name(department),
        verdict=submission.verdict,
        verdict_label=VERDICT_NAMES.get(submission.verdict, submission.verdict),
        state=state,
        state_label=STATE_LABELS[state],
        masked_key=ensure_masked(masked) or "",
        has_key=submission.access_key_encrypted is not None,
        findings=_findings(submission.findings_json),
        comparison=_comparison(session, submission),
        decision=decision,
        decision_label=DECISION_LABELS.get(decision.decision, "") if decision else "",
        decision_reasons=[label_of(c) for c in stored_findings.codes(decision.reasons_json)] if decision else [],
        decided_at=local_time(context, decision.decided_at) if decision else "",
        resend_of=resend_of,
        resent_as=[r for r in resent if r],
        awaits_lookup=decision is None and awaits_lookup(submission),
        lookup_state=submission.lookup_state or "",
        revoked_at=local_time(context, submission.revoked_at) if submission.revoked_at else "",
        revoked_reason=submission.revoked_reason or "",
        revocation_seen_by=revocation_seen_by,
    )


def _comparison(session: Session, submission: Submission) -> list[Comparison]:
    """The certificate's fields beside the register's; differences judged as the rules judge them."""
    certificate = None
    if submission.certificate_json:
        try:
            certificate = SignedCertificate.from_json(submission.certificate_json).certificate()
        except Exception:  # noqa: BLE001 - a stored record we cannot read is shown as absent
            certificate = None
    contract = None
    if submission.contract_no:
        contract = session.exec(
            select(Contract).where(Contract.desk == submission.desk, Contract.contract_no == submission.contract_no)
        ).first()
    if certificate is None and contract is None:
        return []

    def row(label: str, cert_value, reg_value, same) -> Comparison:
        shown_cert = "" if cert_value is None else str(cert_value)
        shown_reg = "" if reg_value is None else str(reg_value)
        differs = cert_value is not None and reg_value is not None and not same(cert_value, reg_value)
        return Comparison(label, shown_cert or "—", shown_reg or "(台帳になし)", differs)

    c, r = certificate, contract
    advance = None
    if r is not None and c is not None and c.guarantee_type is GuaranteeType.ADVANCE:
        advance = r.advance_amount
    rows = [
        row(
            "契約番号",
            c.contract_no if c else None,
            r.contract_no if r else None,
            lambda a, b: plain_key(a) == plain_key(b),
        ),
        row(
            "受注者",
            c.contractor_name if c else None,
            r.contractor_name if r else None,
            lambda a, b: company_key(a) == company_key(b),
        ),
        row(
            "工事(業務)名",
            c.work_name if c else None,
            r.work_name if r else None,
            lambda a, b: plain_key(a) == plain_key(b),
        ),
        row("業務区分", c.work_category if c else None, r.work_category if r else None, lambda a, b: True),
        row(
            "契約金額",
            yen(c.contract_amount) if c else None,
            yen(r.contract_amount) if r else None,
            lambda a, b: a == b,
        ),
        row(
            "契約日",
            japanese_date(c.contract_date) if c else None,
            japanese_date(r.contract_date) if r else None,
            lambda a, b: a == b,
        ),
        row(
            "工期末 / 保証期間の終期",
            japanese_date(c.period_end) if c else None,
            japanese_date(r.completion_date) if r else None,
            lambda a, b: c.period_end >= r.completion_date,
        ),
    ]
    if c is not None:
        rows.append(row("保証金額", yen(c.guarantee_amount), yen(advance) if advance else None, lambda a, b: a == b))
        rows.append(Comparison("発注者", c.obligee, "—", False))
    return rows


def _reply_view(context: ConsoleContext, row: OutboxMessage) -> ReplyView:
    message = message_from_bytes(row.raw, policy=policy.default)
    try:
        part = message.get_body(("plain",))
        body = part.get_content() if part is not None else ""
    except (LookupError, KeyError):
        body = ""
    return ReplyView(
        row.id,
        row.kind,
        row.state,
        str(message.get("Subject", "")),
        body,
        local_time(context, row.created_at),
        row.idempotency_key.startswith("decision:"),
    )


def _history(
    session: Session,
    context: ConsoleContext,
    inbound: InboundMessage,
    submissions: list[Submission],
    outbox: list[OutboxMessage],
) -> list[HistoryView]:
    subjects = [
        f"inbound:{inbound.id}",
        *(f"submission:{s.id}" for s in submissions),
        *(f"outbox:{o.id}" for o in outbox),
    ]
    events = session.exec(select(AuditEvent).where(AuditEvent.subject.in_(subjects)).order_by(AuditEvent.id)).all()
    history = [
        HistoryView(
            local_time(context, inbound.received_at), "intake", "受信", f"受付番号 {inbound.receipt_no} として記録"
        )
    ]
    for event in events:
        try:
            detail = json.loads(event.detail_json)
        except ValueError:
            detail = {}
        actor = detail.get("staff") or event.actor
        text = ""
        if event.action == "console.decided":
            text = f"{DECISION_LABELS.get(detail.get('decision'), '')} {detail.get('guarantee_no') or ''}".strip()
        elif event.action == "lookup.manual_recorded":
            text = f"{detail.get('guarantee_no') or ''} → {VERDICT_NAMES.get(detail.get('verdict'), detail.get('verdict'))}"
        elif event.action == "submission.revoked_after_acceptance":
            text = str(detail.get("reason") or "")
        elif event.action in ("console.key_revealed", "lookup.key_revealed"):
            text = f"保証契約番号 {detail.get('guarantee_no') or ''}"
        history.append(
            HistoryView(local_time(context, event.at), str(actor), ACTIONS.get(event.action, event.action), text)
        )
    return history


def document_for_download(
    session: Session, context: ConsoleContext, member: StaffMember, receipt_no: str, document_id: int
) -> tuple[Document, bytes]:
    inbound, _visible = visible_mail(session, context, member, receipt_no)
    document = session.get(Document, document_id)
    if document is None or document.inbound_id != inbound.id:
        raise NotFound("この添付ファイルは見つかりません")
    return document, context.store.read(document.stored_path)
