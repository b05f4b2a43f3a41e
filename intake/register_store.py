"""The desk's records in the database: the contract register (and its CSV import) and the index of
guarantees already accepted. These are the adapters of ``verifier/register.py``'s ports.

Adapters take a ``Session`` so that the intake pipeline reads them inside its own transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Collection, Mapping

from sqlmodel import Session, select

from rules.domain import Certificate, Contract, GuaranteeType
from rules.findings import Verdict
from store.tables import Contract as ContractRow, InboundMessage, Submission
from verifier.certificate_signature import SignedCertificate, certificate_from_json
from verifier.csv_table import CsvTableError, open_table
from verifier.normalise import nfkc, parse_amount, parse_date

_ADVANCE_TYPES = (GuaranteeType.ADVANCE, GuaranteeType.INTERMEDIATE_ADVANCE)


def to_contract(row: ContractRow) -> Contract:
    return Contract(
        contract_no=row.contract_no, desk=row.desk, work_name=row.work_name, work_category=row.work_category,
        contractor_name=row.contractor_name, contract_amount=row.contract_amount, contract_date=row.contract_date,
        completion_date=row.completion_date, advance_amount=row.advance_amount,
        intermediate_advance_amount=row.intermediate_advance_amount, department=row.department,
    )


class DbContractRegister:
    """``ContractRegister`` over the ``contract`` table."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, desk: str, contract_no: str) -> Contract | None:
        row = self._session.exec(
            select(ContractRow).where(ContractRow.desk == desk, ContractRow.contract_no == contract_no)
        ).first()
        return to_contract(row) if row else None


class DbAcceptedIndex:
    """``AcceptedIndex`` over accepted submissions and their mails' receipt numbers."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def receipt_for(self, desk: str, guarantee_no: str, before_id: int | None = None) -> str | None:
        """``before_id``: only submissions recorded before that one (a replay must not find itself)."""
        query = (
            select(InboundMessage.receipt_no)
            .join(Submission, Submission.inbound_id == InboundMessage.id)
            .where(Submission.desk == desk, Submission.guarantee_no == guarantee_no,
                   Submission.verdict == Verdict.ACCEPTED.value, InboundMessage.receipt_no.is_not(None))
        )
        if before_id is not None:
            query = query.where(Submission.id < before_id)
        return self._session.exec(query.order_by(Submission.id).limit(1)).first()

    def advance_amounts(self, desk: str, contract_no: str) -> Mapping[GuaranteeType, int]:
        rows = self._session.exec(
            select(Submission)
            .where(Submission.desk == desk, Submission.contract_no == contract_no,
                   Submission.verdict == Verdict.ACCEPTED.value,
                   Submission.guarantee_type.in_([t.value for t in _ADVANCE_TYPES]))
            .order_by(Submission.id)
        ).all()
        amounts: dict[GuaranteeType, int] = {}
        for submission in rows:
            certificate = submission_certificate(submission)
            if certificate is not None and certificate.guarantee_type in _ADVANCE_TYPES:
                amounts.setdefault(certificate.guarantee_type, certificate.guarantee_amount)
        return amounts


def submission_certificate(submission: Submission) -> Certificate | None:
    """The verified certificate recorded with a submission, or what a clerk recorded from the
    guarantor's site (manual mode), or None (neither)."""
    try:
        if submission.certificate_json:
            return SignedCertificate.from_json(submission.certificate_json).certificate()
        if submission.lookup_facts_json:
            recorded = json.loads(submission.lookup_facts_json).get("certificate")
            return certificate_from_json(recorded.encode("utf-8")) if recorded else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


# ------------------------------------------------------------------------------------------
# CSV import of the register
# ------------------------------------------------------------------------------------------

COLUMNS = (
    "contract_no", "desk", "work_name", "work_category", "contractor_name", "contract_amount",
    "contract_date", "completion_date", "advance_amount", "intermediate_advance_amount", "department",
)
_REQUIRED_TEXT = ("contract_no", "desk", "work_name", "work_category", "contractor_name", "department")


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    by_desk: dict[str, int] = field(default_factory=dict)  # rows created or updated, per desk
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason); header = line 1


def import_contracts(
    session: Session, data: bytes, departments: Mapping[str, Collection[str]], now: datetime
) -> ImportReport:
    """Insert or update register rows by (desk, contract_no); bad lines are reported and skipped.

    ``departments`` maps each known desk to its department ids. Adds to ``session``; the caller
    commits. Raises ``CsvTableError`` when the file cannot be read at all.
    """
    header_names, records = open_table(data, COLUMNS)
    report = ImportReport()
    seen: dict[tuple[str, str], int] = {}
    try:
        for line, values in records:
            _import_record(session, line, values, header_names, departments, seen, report, now)
    except CsvTableError as error:
        # A broken quote ends the file here; what came before is kept, the rest is reported.
        report.errors.append((error.line or 0, error.reason))
    return report


def _import_record(session: Session, line: int, values: list[str], header_names: list[str],
                   departments: Mapping[str, Collection[str]], seen: dict[tuple[str, str], int],
                   report: ImportReport, now: datetime) -> None:
    try:
        if len(values) < len(header_names) or any(v.strip() for v in values[len(header_names):]):
            raise ValueError(f"列の数が{len(values)}です({len(header_names)}列必要です)")
        contract = _parse_row(dict(zip(header_names, values)), departments)
    except ValueError as error:
        report.errors.append((line, str(error)))
        return
    identity = (contract.desk, contract.contract_no)
    if identity in seen:
        report.errors.append((line, f"contract_no {contract.contract_no} は{seen[identity]}行目と重複しています"))
        return
    seen[identity] = line
    report.by_desk[contract.desk] = report.by_desk.get(contract.desk, 0) + 1
    if _upsert(session, contract, now):
        report.created += 1
    else:
        report.updated += 1


def _parse_row(row: dict[str, str], departments: Mapping[str, Collection[str]]) -> Contract:
    text = {name: nfkc(row[name]).strip() for name in _REQUIRED_TEXT}
    for name, value in text.items():
        if not value:
            raise ValueError(f"{name} が空欄です")
    desk = text["desk"]
    if desk not in departments:
        raise ValueError(f"desk {desk!r} は設定にない窓口です(設定済み: {', '.join(sorted(departments))})")
    if text["department"] not in departments[desk]:
        known = ", ".join(sorted(departments[desk]))
        raise ValueError(f"department {text['department']!r} は窓口 {desk} の部署にありません(設定済み: {known})")
    contract_date = _date(row, "contract_date")
    completion_date = _date(row, "completion_date")
    if completion_date < contract_date:
        raise ValueError(f"completion_date ({completion_date}) が contract_date ({contract_date}) より前です")
    contract_amount = _amount(row, "contract_amount")
    if contract_amount is None or contract_amount <= 0:
        raise ValueError("contract_amount は1円以上の金額で入力してください")
    return Contract(
        contract_no=text["contract_no"], desk=desk, work_name=text["work_name"],
        work_category=text["work_category"], contractor_name=text["contractor_name"],
        contract_amount=contract_amount, contract_date=contract_date, completion_date=completion_date,
        advance_amount=_amount(row, "advance_amount"),
        intermediate_advance_amount=_amount(row, "intermediate_advance_amount"),
        department=text["department"],
    )


def _date(row: dict[str, str], name: str) -> date:
    value = row[name].strip()
    if not value:
        raise ValueError(f"{name} が空欄です")
    try:
        return parse_date(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} は日付として読めません(例: 2026-04-01、2026/4/1、令和8年4月1日)") from None


def _amount(row: dict[str, str], name: str) -> int | None:
    value = row[name].strip()
    if not value:
        return None
    try:
        return parse_amount(value)
    except ValueError:
        raise ValueError(f"{name} {value!r} は金額として読めません(例: 12,345,000)") from None


def _upsert(session: Session, contract: Contract, now: datetime) -> bool:
    """True when a row was created, False when an existing one was updated."""
    row = session.exec(
        select(ContractRow).where(ContractRow.desk == contract.desk, ContractRow.contract_no == contract.contract_no)
    ).first()
    created = row is None
    if created:
        row = ContractRow(desk=contract.desk, contract_no=contract.contract_no, work_name="", work_category="",
                          contractor_name="", contract_amount=0, contract_date=contract.contract_date,
                          completion_date=contract.completion_date, department="")
    for name in ("work_name", "work_category", "contractor_name", "contract_amount", "contract_date",
                 "completion_date", "advance_amount", "intermediate_advance_amount", "department"):
        setattr(row, name, getattr(contract, name))
    row.updated_at = now
    session.add(row)
    return created
