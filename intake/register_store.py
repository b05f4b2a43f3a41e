"""The desk's records in the database: the contract register (and its CSV import) and the index of
guarantees already accepted. These are the adapters of ``verifier/register.py``'s ports.

Adapters take a ``Session`` so that the intake pipeline reads them inside its own transaction.
"""

from __future__ import annotations

import json
from typing import Mapping

from sqlmodel import Session, select

from rules.domain import Certificate, Contract, GuaranteeType
from rules.findings import Verdict
from rules.names import company_key, plain_key
from store.tables import Contract as ContractRow, InboundMessage, Submission
from verifier.certificate_signature import SignedCertificate, certificate_from_json

_ADVANCE_TYPES = (GuaranteeType.ADVANCE, GuaranteeType.INTERMEDIATE_ADVANCE)


def to_contract(row: ContractRow) -> Contract:
    return Contract(
        contract_no=row.contract_no, desk=row.desk, work_name=row.work_name, work_category=row.work_category,
        contractor_name=row.contractor_name, contract_amount=row.contract_amount, contract_date=row.contract_date,
        completion_date=row.completion_date, advance_amount=row.advance_amount,
        intermediate_advance_amount=row.intermediate_advance_amount, department=row.department,
        low_bid=bool(row.low_bid), intermediate_certified_on=row.intermediate_certified_on,
        intermediate_certified=bool(row.intermediate_certified),
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

    def find_by_work(self, desk: str, work_name: str, contractor_name: str) -> Contract | None:
        wanted_work, wanted_firm = plain_key(work_name), company_key(contractor_name)
        if not wanted_work or not wanted_firm:
            return None
        # The register of one desk is a few thousand rows at most; names are compared normalised in Python.
        rows = self._session.exec(select(ContractRow).where(ContractRow.desk == desk)).all()
        matches = [row for row in rows
                   if plain_key(row.work_name) == wanted_work and company_key(row.contractor_name) == wanted_firm]
        return to_contract(matches[0]) if len(matches) == 1 else None


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


# The CSV import lives in intake/register_import.py; these names stay importable from here.
from intake.register_import import COLUMNS, ImportReport, import_contracts  # noqa: E402,F401
