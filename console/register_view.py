"""The register view: per contract, which guarantees have arrived and been accepted, which are missing.

It replaces the town's Excel checklist. A 契約保証 is expected for every contract; a 前払金保証 or
中間前払金保証 when the register carries that advance. The CSV is for Excel: UTF-8 with a BOM.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from sqlmodel import Session, select

from console.accounts import StaffMember
from console.context import ConsoleContext
from console.inbox import _resent_ids, state_of
from mailer.digest import _cell  # the digest CSV's cell rule: one line, no formula start
from rules.domain import GuaranteeType
from rules.findings import Verdict
from store.tables import Contract, InboundMessage, StaffDecision, Submission

TYPES = (GuaranteeType.CONTRACT, GuaranteeType.ADVANCE, GuaranteeType.INTERMEDIATE_ADVANCE)
STATUS_LABELS = {
    "accepted": "受理済",
    "pending": "確認中",
    "waiting_resend": "再送待ち",
    "missing": "未着",
    "not_needed": "—",
}


@dataclass(frozen=True)
class GuaranteeStatus:
    status: str  # accepted | pending | waiting_resend | missing | not_needed
    receipt_no: str = ""

    @property
    def label(self) -> str:
        return STATUS_LABELS[self.status]


@dataclass(frozen=True)
class RegisterRow:
    desk: str
    contract_no: str
    work_name: str
    contractor: str
    department: str
    department_name: str
    statuses: dict[str, GuaranteeStatus]  # by guarantee type (Japanese name)

    @property
    def complete(self) -> bool:
        return all(s.status in ("accepted", "not_needed") for s in self.statuses.values())


def _expected(contract: Contract, kind: GuaranteeType) -> bool:
    if kind is GuaranteeType.ADVANCE:
        return bool(contract.advance_amount)
    if kind is GuaranteeType.INTERMEDIATE_ADVANCE:
        return bool(contract.intermediate_advance_amount)
    return True


def register_rows(
    session: Session, context: ConsoleContext, member: StaffMember, missing_only: bool = False
) -> list[RegisterRow]:
    contracts = session.exec(
        select(Contract).where(Contract.desk.in_(list(context.desks))).order_by(Contract.contract_no)
    ).all()
    submissions = session.exec(
        select(Submission, InboundMessage, StaffDecision)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .outerjoin(StaffDecision, StaffDecision.submission_id == Submission.id)
        .where(Submission.desk.in_(list(context.desks)), Submission.contract_no.is_not(None))
        .order_by(Submission.id)
    ).all()
    resent = _resent_ids(session, [s.id for s, _, _ in submissions])
    found: dict[tuple[str, str, str], GuaranteeStatus] = {}
    rank = {"accepted": 3, "pending": 2, "waiting_resend": 1}
    for submission, inbound, decision in submissions:
        effective = decision.verdict if decision else submission.verdict
        if effective == Verdict.ACCEPTED or (effective == "handled"):
            status = "accepted"
        elif state_of(submission, decision, submission.id in resent) in ("open", "held"):
            status = "pending"
        elif effective == Verdict.RETURNED and submission.id not in resent:
            status = "waiting_resend"
        else:
            continue
        key = (submission.desk, submission.contract_no or "", submission.guarantee_type or "")
        if key not in found or rank[status] >= rank[found[key].status]:
            found[key] = GuaranteeStatus(status, inbound.receipt_no or "")
    rows = []
    for contract in contracts:
        view = context.desk(contract.desk)
        department = contract.department
        if not member.sees(department):
            continue
        statuses = {
            kind.value: found.get((contract.desk, contract.contract_no, kind.value), GuaranteeStatus("missing"))
            if _expected(contract, kind)
            else GuaranteeStatus("not_needed")
            for kind in TYPES
        }
        row = RegisterRow(
            contract.desk,
            contract.contract_no,
            contract.work_name,
            contract.contractor_name,
            department,
            view.department_name(department),
            statuses,
        )
        if missing_only and row.complete:
            continue
        rows.append(row)
    return rows


def register_csv(rows: list[RegisterRow]) -> bytes:
    """UTF-8 with BOM and CRLF, so Excel opens the Japanese columns as they are."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(
        [
            "契約番号",
            "工事(業務)名",
            "受注者",
            "担当課",
            *(f"{k.value}" for k in TYPES),
            *(f"{k.value} 受付番号" for k in TYPES),
        ]
    )
    for row in rows:
        writer.writerow(
            [
                _cell(v)
                for v in (
                    row.contract_no,
                    row.work_name,
                    row.contractor,
                    row.department_name,
                    *(row.statuses[k.value].label for k in TYPES),
                    *(row.statuses[k.value].receipt_no for k in TYPES),
                )
            ]
        )
    return b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8")
