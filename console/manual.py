"""Manual look-ups in the console: a clerk records what the guarantor's site shows, the rules run.

The work itself is ``intake.manual_lookup`` (the same code as `keydesk manual record`): this module
only turns the form into its facts, checks who may record, and makes the recording a decision like
the others: a ``staff_decision`` row (decision ``lookup``) so that a double click or a retried request
is answered, not repeated, and the mail leaves the review folder at the next intake pass
(``intake.decision_filing``). When the rules still leave the guarantee for a person (needs_review),
no row is written: the item stays open for 受理 / 返送 / 対応済み.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from console.accounts import StaffMember
from console.context import ConsoleContext
from console.decisions import AlreadyDecided, BadDecision, NotFound, already_decided_message, local_time, visible_mail
from intake.manual_lookup import WAITING, DeskContext, ManualFacts, ManualLookupError, parse_facts, record_manual_lookup
from rules.domain import GuaranteeType
from store.retry import retry_on_conflict
from store.tables import StaffDecision, Submission

# The form's fields, in the order of the certificate's screen, with the names staff read.
FACT_LABELS: dict[str, str] = {
    "status": "照会の結果",
    "guarantee_type": "保証の種類",
    "obligee": "保証債権者(発注者)",
    "contractor_name": "受注者",
    "contract_no": "契約番号",
    "work_name": "工事(業務)名",
    "work_category": "業務区分",
    "contract_amount": "請負代金額",
    "guarantee_amount": "保証金額",
    "contract_date": "契約日",
    "completion_date": "工期の終期",
    "period_start": "保証期間の始期",
    "period_end": "保証期間の終期",
    "guarantor": "保証会社",
    "revoked_reason": "失効の理由",
}
STATUS_LABELS = {"found": "電子証書が表示された", "no_match": "該当する保証がない", "revoked": "失効している"}
GUARANTEE_TYPES = [t.value for t in GuaranteeType]
DATE_FIELDS = ("contract_date", "completion_date", "period_start", "period_end")
AMOUNT_FIELDS = ("contract_amount", "guarantee_amount")
TEXT_MAX = 200


@dataclass(frozen=True)
class LookupOutcome:
    receipt_no: str
    verdict: str  # of the guarantee, after the rules
    decision: StaffDecision | None  # None while the guarantee still waits for a person
    replayed: bool


def awaits_lookup(submission: Submission) -> bool:
    return submission.lookup_state in WAITING


def facts_from_form(form: Mapping[str, str]) -> ManualFacts:
    """The facts a clerk typed; BadDecision naming the fields at fault, in Japanese."""
    data: dict[str, str] = {}
    for name in FACT_LABELS:
        value = " ".join(str(form.get(name) or "").split())
        if len(value) > TEXT_MAX:
            raise BadDecision(f"{FACT_LABELS[name]}は{TEXT_MAX}文字以内で入力してください")
        if name in AMOUNT_FIELDS or name in DATE_FIELDS:
            # Amounts as a person types them (全角, 10,000,000 円) and dates as 2026/9/1 or 2026-09-01.
            value = unicodedata.normalize("NFKC", value).replace(",", "").replace("円", "").strip()
            if name in DATE_FIELDS and value.count("/") == 2:
                value = "-".join(part.zfill(2) for part in value.split("/"))
        if value:
            data[name] = value
    data.setdefault("status", "found")
    try:
        return parse_facts(data)
    except ManualLookupError as exc:
        names = "、".join(FACT_LABELS.get(field, field) for field in exc.fields) or "入力内容"
        raise BadDecision(
            f"照会結果の次の項目を確認してください: {names}(金額は数字、日付は 2026-04-01 の形で入力します)"
        ) from None


def record_lookup(
    context: ConsoleContext,
    member: StaffMember,
    receipt_no: str,
    *,
    submission_id: int,
    form: Mapping[str, str],
    request_key: str | None = None,
) -> LookupOutcome:
    """Record a clerk's look-up of one guarantee; NotFound, BadDecision or AlreadyDecided (409)."""
    facts = facts_from_form(form)
    request_key = (request_key or "").strip()[:64] or None

    def attempt() -> LookupOutcome:
        with Session(context.engine) as session:
            inbound, visible = visible_mail(session, context, member, receipt_no)
            submission = next((s for s in visible if s.id == submission_id), None)
            if submission is None:
                raise NotFound("指定の保証はこのメールにありません")
            existing = session.exec(select(StaffDecision).where(StaffDecision.submission_id == submission.id)).first()
            if existing is not None:
                if request_key and existing.request_key == request_key and existing.staff_login == member.login:
                    return LookupOutcome(inbound.receipt_no or "", existing.verdict, existing, replayed=True)
                raise AlreadyDecided(already_decided_message(context, existing))
            if not awaits_lookup(submission):
                raise AlreadyDecided(_recorded_message(context, submission))
            view = context.desk(submission.desk)
            desk = DeskContext(
                profile=view.profile,
                rules=view.rules,
                templates=context.templates,
                lookup_site_url=context.lookup_site(submission.desk),
                mailbox_moves=view.mailbox.action != "flag",
            )
            now = context.clock()
            try:
                outcome = record_manual_lookup(
                    session,
                    desk,
                    inbound.receipt_no or "",
                    facts,
                    staff=member.name,
                    now=now,
                    guarantee_no=submission.guarantee_no,
                    staff_login=member.login,
                    request_key=request_key,
                )
            except ManualLookupError as exc:
                raise BadDecision(str(exc)) from None
            row = outcome.decision
            session.commit()
            if row is not None:
                session.refresh(row)
            return LookupOutcome(inbound.receipt_no or "", outcome.verdict.value, row, replayed=False)

    result = retry_on_conflict(attempt, what=f"manual look-up on {receipt_no}")
    if not result.replayed:
        context.on_decision()  # the result mail is in the outbox: the daemon sends it now
    return result


def _recorded_message(context: ConsoleContext, submission: Submission) -> str:
    try:
        recorded = json.loads(submission.lookup_facts_json or "{}")
    except ValueError:
        recorded = {}
    if recorded.get("staff") and recorded.get("at"):
        at = local_time(context, datetime.fromisoformat(recorded["at"]))
        return f"この保証の照会結果は {at} に {recorded['staff']} さんが記録済みです"
    return "この保証は照会を待っていません"
