"""One 前払金保証 certificate and the register row it agrees with: the bases the rules' and the
verifier's tests change one field of at a time (pure data: importing it pulls in no PDF or I/O code)."""

from __future__ import annotations

from datetime import date

from rules.domain import Certificate, Contract, GuaranteeType

ADVANCE_CERT = Certificate(
    guarantee_no="26-000123-4",
    guarantee_type=GuaranteeType.ADVANCE,
    guarantor="西日本建設業保証株式会社",
    contractor_name="株式会社美郷建設",
    obligee="美郷町長",
    desk="misato",
    contract_no="R8-001",
    work_name="町道美郷線 道路改良工事",
    work_category="工事",
    contract_amount=12_345_000,
    guarantee_amount=4_938_000,
    fee=30_000,
    contract_date=date(2026, 4, 10),
    completion_date=date(2027, 3, 15),
    period_start=date(2026, 4, 10),
    period_end=date(2027, 3, 15),
    issued_on=date(2026, 4, 12),
)

SAMPLE_CONTRACT = Contract(
    contract_no=ADVANCE_CERT.contract_no,
    desk="misato",
    work_name=ADVANCE_CERT.work_name,
    work_category="工事",
    contractor_name=ADVANCE_CERT.contractor_name,
    contract_amount=ADVANCE_CERT.contract_amount,
    contract_date=ADVANCE_CERT.contract_date,
    completion_date=ADVANCE_CERT.completion_date,
    advance_amount=None,
    intermediate_advance_amount=None,
    department="kensetsu",
)
