"""The rule set (config/rules.toml): per desk, what the town checks and where results go."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rules.config_base import Ratio, StrictModel, Yen
from rules.domain import GuaranteeType
from rules.names import plain_key
from rules.signatures import DocumentSignatures


class Amounts(StrictModel):
    contract_guarantee_min_ratio: Ratio = 0.10
    advance_max_ratio: Ratio = 0.40
    intermediate_advance_max_ratio: Ratio = 0.20
    advance_total_max_ratio: Ratio = 0.60
    advance_min_contract_amount: Yen = 0
    # How the threshold is worded in the town's 要綱: 「130万円以上」 or 「130万円を超える」.
    advance_min_contract_boundary: Literal["以上", "超える"] = "以上"
    # The guarantee of a 前払金 / 中間前払金 against the advance the register says the town will pay:
    # "equal", "at_least" (the guarantee may be larger) or "off". Skipped when the register has no figure.
    advance_amount_vs_register: Literal["equal", "at_least", "off"] = "equal"

    @model_validator(mode="after")
    def _total_covers_parts(self) -> "Amounts":
        if self.advance_total_max_ratio < max(self.advance_max_ratio, self.intermediate_advance_max_ratio):
            raise ValueError(
                "advance_total_max_ratio must be at least advance_max_ratio and "
                f"intermediate_advance_max_ratio, got {self.advance_total_max_ratio}"
            )
        return self


class CategoryRules(StrictModel):
    """What differs for one work category (e.g. 前払金 3/10 for 建設コンサルタント業務); unset keys use ``amounts``."""

    advance_max_ratio: Ratio | None = None
    contract_guarantee_min_ratio: Ratio | None = None


class LowBid(StrictModel):
    """Contracts won below the investigation price (低入札), marked in the register."""

    contract_guarantee_min_ratio: Ratio = 0.30
    advance_max_ratio: Ratio = 0.20


class IntermediateAdvance(StrictModel):
    """When a 中間前払金保証 can be accepted."""

    # Work categories the town pays 中間前払金 for.
    categories: list[str] = Field(default_factory=lambda: ["工事"])
    # A 前払金 must be on record first (the register's advance amount or an accepted 前払金保証).
    requires_advance: bool = True
    # The guarantee period must start on or after the register's 認定 date. Without a date:
    # "half_of_term" (after the middle of the 工期) or "flag" (the register's 認定済 flag must be set).
    without_certification_date: Literal["half_of_term", "flag"] = "half_of_term"


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
    # The town's prefecture (e.g. "島根県"): a certificate naming the same town in another prefecture is refused.
    prefecture: str = ""
    obligee_names: list[str] = Field(min_length=1)
    start_date: date
    eligible_guarantee_types: list[GuaranteeType]
    eligible_work_categories: list[str] = Field(min_length=1)
    # The register's own labels for work categories → the category the rules speak of (建設工事 → 工事).
    work_category_aliases: dict[str, str] = Field(default_factory=dict)
    amounts: Amounts = Amounts()
    categories: dict[str, CategoryRules] = Field(default_factory=dict)
    low_bid: LowBid = LowBid()
    intermediate_advance: IntermediateAdvance = IntermediateAdvance()
    sender: SenderPolicy = SenderPolicy()
    departments: dict[str, Department] = Field(min_length=1)
    # Where a returned mail goes when none of its documents shows a guarantee type (None: the first
    # department). A mail whose documents show one goes to that type's department.
    returned_department: str | None = None

    @field_validator("prefecture")
    @classmethod
    def _prefecture(cls, value: str) -> str:
        if value and not value.endswith(("都", "道", "府", "県")):
            raise ValueError(f"must be a prefecture such as \"島根県\", got {value!r}")
        return value

    @model_validator(mode="after")
    def _categories_known(self) -> "DeskRules":
        known = set(self.eligible_work_categories) | set(self.work_category_aliases.values())
        for where, names in (("categories", self.categories), ("intermediate_advance.categories",
                                                                 self.intermediate_advance.categories)):
            unknown = [name for name in names if name not in known]
            if unknown:
                raise ValueError(f"{where}: {', '.join(unknown)} is not an eligible work category "
                                 f"({', '.join(self.eligible_work_categories)})")
        return self

    def work_category(self, label: str) -> str | None:
        """The category the rules speak of for a register's or certificate's label, or None (unknown).

        Compared after NFKC without spaces, so 「建設コンサルタント 業務」 is 建設コンサルタント業務.
        """
        wanted = plain_key(label)
        if not wanted:
            return None
        for category in self.eligible_work_categories:
            if plain_key(category) == wanted:
                return category
        for alias, category in self.work_category_aliases.items():
            if plain_key(alias) == wanted or plain_key(category) == wanted:
                return category
        return None

    def department_id(self, label: str) -> str | None:
        """A department named by its id (kensetsu) or its display name (建設課), or None."""
        if label in self.departments:
            return label
        wanted = plain_key(label)
        matches = [key for key, department in self.departments.items() if plain_key(department.name) == wanted]
        return matches[0] if len(matches) == 1 else None

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
