"""The rule set (config/rules.toml): per desk, what the town checks and where results go."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rules.config_base import Ratio, StrictModel, Yen
from rules.domain import GuaranteeType
from rules.signatures import DocumentSignatures


class Amounts(StrictModel):
    contract_guarantee_min_ratio: Ratio = 0.10
    advance_max_ratio: Ratio = 0.40
    intermediate_advance_max_ratio: Ratio = 0.20
    advance_total_max_ratio: Ratio = 0.60
    advance_min_contract_amount: Yen = 0

    @model_validator(mode="after")
    def _total_covers_parts(self) -> "Amounts":
        if self.advance_total_max_ratio < max(self.advance_max_ratio, self.intermediate_advance_max_ratio):
            raise ValueError(
                "advance_total_max_ratio must be at least advance_max_ratio and "
                f"intermediate_advance_max_ratio, got {self.advance_total_max_ratio}"
            )
        return self


class SenderPolicy(StrictModel):
    require_authentication: bool = False
    key_in_body: Literal["ask_for_pdf", "accept"] = "ask_for_pdf"


class Department(StrictModel):
    name: str = Field(min_length=1)
    guarantee_types: list[GuaranteeType] = Field(min_length=1)
    digest_recipients: list[str] = Field(default_factory=list)

    @field_validator("digest_recipients")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            local, _, domain = value.partition("@")
            if not local or "." not in domain or any(c.isspace() for c in value):
                raise ValueError(f"must be e-mail addresses, got {value!r}")
        return values


class DeskRules(StrictModel):
    town: str = Field(min_length=1)
    obligee_names: list[str] = Field(min_length=1)
    start_date: date
    eligible_guarantee_types: list[GuaranteeType]
    eligible_work_categories: list[str] = Field(min_length=1)
    amounts: Amounts = Amounts()
    sender: SenderPolicy = SenderPolicy()
    departments: dict[str, Department] = Field(min_length=1)
    # Where a returned mail goes when none of its documents shows a guarantee type (None: the first
    # department). A mail whose documents show one goes to that type's department.
    returned_department: str | None = None

    @field_validator("eligible_guarantee_types")
    @classmethod
    def _no_reservation(cls, values: list[GuaranteeType]) -> list[GuaranteeType]:
        if GuaranteeType.CONTRACT_RESERVATION in values:
            raise ValueError("契約保証予約 is not delivered electronically and cannot be eligible")
        return values

    @model_validator(mode="after")
    def _every_type_routed(self) -> "DeskRules":
        routed = {t for d in self.departments.values() for t in d.guarantee_types}
        missing = [t.value for t in self.eligible_guarantee_types if t not in routed]
        if missing:
            raise ValueError(f"no department receives {', '.join(missing)}: add it to a department's guarantee_types")
        if self.returned_department is not None and self.returned_department not in self.departments:
            raise ValueError(f"returned_department {self.returned_department!r} is not one of the departments "
                             f"({', '.join(self.departments)})")
        return self

    def department_for(self, guarantee_type: GuaranteeType) -> str | None:
        """The id of the department whose digest carries this type of guarantee."""
        for department_id, department in self.departments.items():
            if guarantee_type in department.guarantee_types:
                return department_id
        return None


class RuleSet(StrictModel):
    desks: dict[str, DeskRules] = Field(min_length=1)
    documents: DocumentSignatures
