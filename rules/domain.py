"""The domain's vocabulary as types: guarantee types, a certificate's content, a register entry.

These are the facts the rules judge. They live here, at the bottom of the dependency graph,
because both the verifier (which reads them from documents and the look-up) and the guarantor
(which issues them) speak about the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum


class GuaranteeType(StrEnum):
    ADVANCE = "前払金保証"
    INTERMEDIATE_ADVANCE = "中間前払金保証"
    CONTRACT = "契約保証"
    # Not delivered electronically; a town must refuse it (flyer Q&A).
    CONTRACT_RESERVATION = "契約保証予約"


@dataclass(frozen=True)
class Certificate:
    """The content of one 電子証書, as the guarantor signs it and the look-up returns it."""

    guarantee_no: str
    guarantee_type: GuaranteeType
    guarantor: str
    contractor_name: str
    obligee: str
    desk: str
    contract_no: str
    work_name: str
    work_category: str
    contract_amount: int
    guarantee_amount: int
    fee: int
    contract_date: date
    completion_date: date
    period_start: date
    period_end: date
    issued_on: date


@dataclass(frozen=True)
class Contract:
    """One row of the town's contract register (契約台帳)."""

    contract_no: str
    desk: str
    work_name: str
    work_category: str
    contractor_name: str
    contract_amount: int
    contract_date: date
    completion_date: date
    advance_amount: int | None
    intermediate_advance_amount: int | None
    department: str
    low_bid: bool = False  # 低入札: won below the investigation price; stricter ratios apply
    # 中間前払金: the date of the town's 認定 (None: not recorded), or just that it was given.
    intermediate_certified_on: date | None = None
    intermediate_certified: bool = False

    @property
    def middle_of_term(self) -> date:
        """The day half the 工期 has passed (rounded up): the usual earliest 中間前払金."""
        days = (self.completion_date - self.contract_date).days
        return self.contract_date + timedelta(days=(days + 1) // 2)
