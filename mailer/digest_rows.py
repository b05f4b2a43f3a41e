"""The digest's lines, read from the database: one per submission, mail without one, or failure.

Periods are judged by when a result came to be (a submission's ``created_at``, a mail's
``processed_at``, a failure's audit event), not by when the mail arrived, so a mail that arrived
just before a digest but was processed after it still shows in the next one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from mailer.reply import ensure_masked
from rules.domain import Certificate, GuaranteeType
from rules.findings import WORDING, Verdict, label_of
from rules.schema import DeskRules
from rules.wording import japanese_date, yen
from store import stored_findings
from store.states import InboundState, LookupState
from store.tables import AuditEvent, Document, InboundMessage, OutboxMessage, StaffDecision, Submission
from verifier.certificate_signature import SignedCertificate

# "revoked" (a guarantee the guarantor revoked after the desk accepted it) comes first and only when
# there is one: it is the alert staff must not miss. The others are always shown.
SECTIONS = ("revoked", "needs_review", "accepted", "returned", "failure")
ALWAYS_SHOWN = SECTIONS[1:]
# A line's state for staff, from the one table of labels (verdicts and the digest's other states).
VERDICT_LABELS: dict[str, str] = {state: wording.staff for state, wording in WORDING.items()}
# Audit actions that mean a reply did not reach the contractor. The outbox records the first two;
# the intake records outbox.bounced when a delivery report answers one of our replies.
FAILURE_ACTIONS = ("outbox.failed", "outbox.recipient_failed", "outbox.bounced")
_ANSWERED = (Verdict.ACCEPTED, Verdict.NEEDS_REVIEW, Verdict.RETURNED)


@dataclass(frozen=True)
class DigestLine:
    section: str  # one of SECTIONS
    department: str
    at: datetime  # when the mail was received
    receipt_no: str = ""
    contractor: str = ""
    work_name: str = ""
    guarantee_type: str = ""
    guarantee_no: str = ""
    masked_key: str = ""
    verdict: str = ""
    verdict_label: str = ""
    reasons: tuple[str, ...] = ()
    sender: str = ""
    resend_of: str = ""  # receipt number of the returned mail this one answers
    resent_as: str = ""  # receipt number of the resend that answered this returned one
    # From the verified certificate and the register match (issue 14).
    contract_no: str = ""
    contract_amount: str = ""  # 請負代金額, in yen
    guarantee_amount: str = ""  # 保証金額, in yen
    period: str = ""  # 保証期間, 和暦


def finding_labels(findings_json: str | None) -> tuple[str, ...]:
    """Staff labels of the stored findings (store.stored_findings), each once, in order."""
    labels: list[str] = []
    for code in stored_findings.codes(findings_json):
        label = label_of(code)
        if label not in labels:
            labels.append(label)
    return tuple(labels)


def certificate_facts(submission: Submission | None) -> dict[str, str]:
    """契約番号, 請負代金額, 保証金額, 保証期間 of the certificate recorded with a submission (blank when none)."""
    certificate: Certificate | None = None
    if submission is not None and submission.certificate_json:
        try:
            certificate = SignedCertificate.from_json(submission.certificate_json).certificate()
        except (ValueError, KeyError, TypeError):
            certificate = None
    contract_no = (submission.contract_no if submission else None) or ""
    if certificate is None:
        return {"contract_no": contract_no}
    return {
        "contract_no": contract_no or certificate.contract_no,
        "contract_amount": yen(certificate.contract_amount),
        "guarantee_amount": yen(certificate.guarantee_amount),
        "period": f"{japanese_date(certificate.period_start)}〜{japanese_date(certificate.period_end)}",
    }


def _masked_key(session: Session, submission: Submission | None) -> str:
    if submission is None:
        return ""
    masked = submission.access_key_masked
    if not masked and submission.document_id:
        document = session.get(Document, submission.document_id)
        masked = document.access_key_masked if document else None
    return ensure_masked(masked) or ""


def _error_reason(error: str | None) -> tuple[str, ...]:
    """The first line of a technical error, shortened, for staff who may pass it to IT."""
    first = (error or "").strip().splitlines()[:1]
    return (f"エラー: {first[0][:160]}",) if first else ()


def _department(rules: DeskRules, stored: str | None, guarantee_type: str | None) -> str:
    if stored and stored in rules.departments:
        return stored
    try:
        routed = rules.department_for(GuaranteeType(guarantee_type)) if guarantee_type else None
    except ValueError:
        routed = None
    return routed or next(iter(rules.departments))


def lookup_notes(submission: Submission, inbound: InboundMessage, site: str | None) -> tuple[str, ...]:
    """What a clerk needs for a look-up still to do: the site, and the commands with the receipt number."""
    receipt = inbound.receipt_no or ""
    where = f"{site} で" if site else "保証会社の照会サイトで"
    steps = (
        f"{where}照会し、結果を記録してください"
        f"(認証キーの表示: keydesk manual reveal {receipt} --staff 氏名、記録: keydesk manual record {receipt})"
    )
    if submission.lookup_state == LookupState.MANUAL:
        return ("手入力照会: " + steps,)
    if submission.lookup_state == LookupState.HELD:
        when = submission.next_lookup_at
        return (
            f"照会サービスの復旧を待って自動で再照会します(次回 {when:%m/%d %H:%M} UTC)"
            if when
            else "照会サービスの復旧を待って自動で再照会します",
        )
    if submission.lookup_state == LookupState.STAFF:
        return ("照会サービスに接続できないまま再試行を終えました。" + steps,)
    return ()


def _submission_lines(
    session: Session, desk: str, rules: DeskRules, since: datetime, until: datetime, lookup_site_url: str | None = None
):
    previous = aliased(Submission)
    previous_inbound = aliased(InboundMessage)
    rows = session.exec(
        select(Submission, InboundMessage, Document, previous_inbound.receipt_no)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .outerjoin(Document, Submission.document_id == Document.id)
        .outerjoin(previous, Submission.resend_of_id == previous.id)
        .outerjoin(previous_inbound, previous.inbound_id == previous_inbound.id)
        .where(
            Submission.desk == desk,
            Submission.created_at >= since,
            Submission.created_at < until,
            Submission.verdict.in_([str(v) for v in _ANSWERED]),
        )
    ).all()
    resent = _resends(session, [s.id for s, *_ in rows if s.verdict == Verdict.RETURNED], until)
    for submission, inbound, document, resend_of in rows:
        verdict = Verdict(submission.verdict)
        masked = submission.access_key_masked or (document.access_key_masked if document else None)
        yield DigestLine(
            section=str(verdict),
            department=_department(rules, submission.department, submission.guarantee_type),
            at=inbound.received_at,
            receipt_no=inbound.receipt_no or "",
            contractor=submission.contractor_name or "",
            work_name=submission.work_name or "",
            guarantee_type=submission.guarantee_type or "",
            guarantee_no=submission.guarantee_no or (document.guarantee_no if document else "") or "",
            masked_key=ensure_masked(masked) or "",
            verdict=str(verdict),
            verdict_label=VERDICT_LABELS[verdict],
            reasons=finding_labels(submission.findings_json) + lookup_notes(submission, inbound, lookup_site_url),
            sender=inbound.sender or "",
            resend_of=resend_of or "",
            resent_as=resent.get(submission.id, ""),
            **certificate_facts(submission),
        )


def _resends(session: Session, returned_ids: Sequence[int], until: datetime) -> dict[int, str]:
    if not returned_ids:
        return {}
    rows = session.exec(
        select(Submission.resend_of_id, InboundMessage.receipt_no)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .where(Submission.resend_of_id.in_(returned_ids), Submission.created_at < until)
        .order_by(Submission.created_at)
    ).all()
    return {resend_of: receipt or "" for resend_of, receipt in rows}


def _mail_lines(session: Session, desk: str, rules: DeskRules, since: datetime, until: datetime):
    """Answered mails that hold no submission (e.g. no key notice attached), and quarantined ones."""
    first = next(iter(rules.departments))
    has_submission = select(Submission.id).where(Submission.inbound_id == InboundMessage.id).exists()
    when = func.coalesce(InboundMessage.processed_at, InboundMessage.received_at)
    rows = session.exec(
        select(InboundMessage).where(
            InboundMessage.desk == desk,
            when >= since,
            when < until,
            (
                (InboundMessage.state == InboundState.PROCESSED)
                & InboundMessage.verdict.in_([str(v) for v in _ANSWERED])
                & ~has_submission
            )
            | (InboundMessage.state == InboundState.QUARANTINED),
        )
    ).all()
    for inbound in rows:
        quarantined = inbound.state == InboundState.QUARANTINED
        verdict = InboundState.QUARANTINED if quarantined else inbound.verdict
        reasons = finding_labels(inbound.findings_json)
        if quarantined:
            reasons = (
                "自動で処理できなかったため隔離しました。隔離フォルダのメールをご確認ください",
                *_error_reason(inbound.last_error),
            )
        yield DigestLine(
            section="failure" if quarantined else str(verdict),
            department=first,
            at=inbound.received_at,
            receipt_no=inbound.receipt_no or "",
            verdict=str(verdict),
            verdict_label=VERDICT_LABELS.get(verdict, str(verdict)),
            reasons=reasons,
            sender=inbound.sender or "",
        )


def _failure_lines(session: Session, desk: str, rules: DeskRules, since: datetime, until: datetime):
    """Replies the outbox gave up on (5xx, 4 days of 4xx) or that came back as a bounce."""
    events = session.exec(
        select(AuditEvent)
        .where(
            AuditEvent.desk == desk,
            AuditEvent.action.in_(FAILURE_ACTIONS),
            AuditEvent.at >= since,
            AuditEvent.at < until,
        )
        .order_by(AuditEvent.id)
    ).all()
    for event in events:
        kind, _, raw_id = event.subject.partition(":")
        if kind != "outbox" or not raw_id.isdigit():
            continue
        row = session.get(OutboxMessage, int(raw_id))
        if row is None or row.kind != "reply":
            continue
        inbound = session.get(InboundMessage, row.inbound_id) if row.inbound_id else None
        submissions = (
            session.exec(select(Submission).where(Submission.inbound_id == row.inbound_id)).all() if inbound else []
        )
        try:
            detail = json.loads(event.detail_json)
        except ValueError:
            detail = {}
        recipients = detail.get("recipients") or json.loads(row.recipients_json or "[]")
        reasons = (
            f"返信メールを届けられませんでした(宛先: {', '.join(map(str, recipients))})",
            *_error_reason(str(detail.get("error") or row.last_error or "")),
        )
        by_department: dict[str, Submission | None] = {}
        for submission in submissions:
            by_department.setdefault(_department(rules, submission.department, submission.guarantee_type), submission)
        for department, first in (by_department or {next(iter(rules.departments)): None}).items():
            yield DigestLine(
                section="failure",
                department=department,
                at=inbound.received_at if inbound else row.created_at,
                receipt_no=(inbound.receipt_no or "") if inbound else "",
                contractor=(first.contractor_name or "") if first else "",
                work_name=(first.work_name or "") if first else "",
                guarantee_type=(first.guarantee_type or "") if first else "",
                guarantee_no=(first.guarantee_no or "") if first else "",
                masked_key=_masked_key(session, first),
                **certificate_facts(first),
                verdict="reply_failed",
                verdict_label=VERDICT_LABELS["reply_failed"],
                reasons=reasons,
                sender=(inbound.sender or "") if inbound else "",
            )


# What a staff decision in the console shows as (its section and label); a look-up a clerk recorded
# ("lookup") shows in the section of the verdict the rules gave.
DECISION_LINES = {
    "accept": ("accepted", "受理(職員判断)"),
    "return": ("returned", "返送(職員判断)"),
    "handled": ("accepted", "対応済み(職員判断)"),
}
LOOKUP_LABELS = {"accepted": "受付済(職員が照会)", "returned": "返送(職員が照会)"}


def _decision_lines(session: Session, desk: str, rules: DeskRules, since: datetime, until: datetime):
    """Decisions staff made in the console during the period, with who made them."""
    rows = session.exec(
        select(StaffDecision, Submission, InboundMessage)
        .join(Submission, StaffDecision.submission_id == Submission.id)
        .join(InboundMessage, StaffDecision.inbound_id == InboundMessage.id)
        .where(StaffDecision.desk == desk, StaffDecision.decided_at >= since, StaffDecision.decided_at < until)
    ).all()
    for decision, submission, inbound in rows:
        if decision.decision == "lookup":
            section, label = decision.verdict, LOOKUP_LABELS.get(decision.verdict, decision.verdict)
        else:
            section, label = DECISION_LINES[decision.decision]
        reasons = [label_of(code) for code in stored_findings.codes(decision.reasons_json)]
        yield DigestLine(
            section=section,
            department=_department(rules, submission.department, submission.guarantee_type),
            at=inbound.received_at,
            receipt_no=inbound.receipt_no or "",
            contractor=submission.contractor_name or "",
            work_name=submission.work_name or "",
            guarantee_type=submission.guarantee_type or "",
            guarantee_no=submission.guarantee_no or "",
            masked_key=_masked_key(session, submission),
            verdict=decision.verdict,
            verdict_label=label,
            reasons=(
                f"判断者: {decision.staff_name}",
                *reasons,
                *((f"メモ: {decision.note}",) if decision.note else ()),
            ),
            sender=inbound.sender or "",
            **certificate_facts(submission),
        )


def _revoked_lines(session: Session, desk: str, rules: DeskRules, since: datetime, until: datetime):
    """Accepted guarantees the guarantor revoked afterwards, noticed in [since, until)."""
    rows = session.exec(
        select(Submission, InboundMessage)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .where(
            Submission.desk == desk,
            Submission.revoked_at.is_not(None),
            Submission.revoked_at >= since,
            Submission.revoked_at < until,
        )
    ).all()
    for submission, inbound in rows:
        reason = (
            f"保証会社が受付後にこの保証を失効させました(理由: {submission.revoked_reason or '記載なし'})。"
            "契約担当で保証の差し替え等をご確認ください"
        )
        yield DigestLine(
            section="revoked",
            department=_department(rules, submission.department, submission.guarantee_type),
            at=inbound.received_at,
            receipt_no=inbound.receipt_no or "",
            contractor=submission.contractor_name or "",
            work_name=submission.work_name or "",
            guarantee_type=submission.guarantee_type or "",
            guarantee_no=submission.guarantee_no or "",
            masked_key=_masked_key(session, submission),
            verdict="revoked",
            verdict_label=VERDICT_LABELS["revoked"],
            reasons=(reason,),
            sender=inbound.sender or "",
            **certificate_facts(submission),
        )


def collect_lines(
    session: Session,
    *,
    desk: str,
    rules: DeskRules,
    since: datetime,
    until: datetime,
    lookup_site_url: str | None = None,
) -> list[DigestLine]:
    """Every line of the desk's digests for [since, until), in digest order (all departments)."""
    lines = [
        *_revoked_lines(session, desk, rules, since, until),
        *_submission_lines(session, desk, rules, since, until, lookup_site_url),
        *_decision_lines(session, desk, rules, since, until),
        *_mail_lines(session, desk, rules, since, until),
        *_failure_lines(session, desk, rules, since, until),
    ]
    order = {section: i for i, section in enumerate(SECTIONS)}
    return sorted(lines, key=lambda line: (order[line.section], line.at, line.receipt_no))
