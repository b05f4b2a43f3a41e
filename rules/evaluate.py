"""The desk's rules over one certificate: is this guarantee one the town can accept?

Pure: the certificate, the desk's rules, the register entry (or None) and what is already known
about the same contract come in; findings come out. The verifier looks those facts up through
its ports and calls ``evaluate``; ``keydesk rules check --replay`` calls it again under edited rules.

Money is compared in integers: a ratio from the config (a float such as 0.1) is turned into the
exact fraction it was written as, and ``guarantee * den`` is compared with ``contract * num``, so a
guarantee of exactly 10% passes however the float would have rounded.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from fractions import Fraction
from collections.abc import Callable, Iterable, Mapping

from rules.domain import Certificate, Contract, GuaranteeType
from rules.findings import Finding
from rules.schema import DeskRules

_ADVANCES = (GuaranteeType.ADVANCE, GuaranteeType.INTERMEDIATE_ADVANCE)

# Every code ``evaluate`` can produce: a replay under edited rules recomputes exactly these and
# keeps a submission's other findings (documents, look-up, signature) as they were.
RULE_CODES = frozenset({
    "cert.other_obligee", "cert.before_start_date", "cert.type_not_eligible", "cert.category_not_eligible",
    "register.no_contract", "register.contractor_mismatch", "register.work_mismatch", "register.amount_mismatch",
    "amount.contract_guarantee_low", "amount.advance_high", "amount.intermediate_advance_high",
    "amount.advance_total_high", "amount.advance_below_threshold", "period.ends_before_completion",
    "submission.duplicate",
})

# Legal-form markers that registers and certificates write differently for the same firm
# (株式会社美郷建設 / ㈱美郷建設 / 美郷建設(株)). ㈱ becomes (株) under NFKC.
_LEGAL_FORMS = re.compile(r"株式会社|有限会社|\(株\)|\(有\)")
# Honorifics a document may put after the obligee (美郷町長 殿).
_HONORIFICS = re.compile(r"(殿|様|御中)$")


def evaluate(
    certificate: Certificate,
    rules: DeskRules,
    *,
    contract: Contract | None,
    previous_receipt: str | None = None,
    other_advances: Mapping[GuaranteeType, int] | None = None,
) -> list[Finding]:
    """Every rule the certificate breaks, in a stable order (empty: the town can accept it).

    ``contract`` is the register entry for ``certificate.contract_no`` (None: not in the register).
    ``previous_receipt`` is the receipt number under which this guarantee was already accepted.
    ``other_advances`` holds the guaranteed amounts of the contract's other advance guarantees
    (accepted earlier or in the same mail), used for the 前払金 + 中間前払金 total when the
    register does not record the advance amounts itself.
    """
    no = certificate.guarantee_no
    findings: list[Finding] = []

    def add(code: str, detail: str, **params: str) -> None:
        findings.append(Finding(code, detail=detail, params={"guarantee_no": no, **params}, guarantee_no=no))

    if not names_match_any(certificate.obligee, rules.obligee_names, obligee_key):
        add("cert.other_obligee", f"obligee {certificate.obligee!r} is not one of {rules.obligee_names}",
            obligee=certificate.obligee)

    contract_date = contract.contract_date if contract else certificate.contract_date
    if contract_date < rules.start_date:
        add("cert.before_start_date", f"contract date {contract_date} is before the start date {rules.start_date}",
            contract_date=japanese_date(contract_date), start_date=japanese_date(rules.start_date))

    if (certificate.guarantee_type is GuaranteeType.CONTRACT_RESERVATION
            or certificate.guarantee_type not in rules.eligible_guarantee_types):
        add("cert.type_not_eligible", f"guarantee type {certificate.guarantee_type.value} is not eligible",
            guarantee_type=certificate.guarantee_type.value)

    category = contract.work_category if contract else certificate.work_category
    if not names_match_any(category, rules.eligible_work_categories, plain_key):
        add("cert.category_not_eligible", f"work category {category!r} is not in {rules.eligible_work_categories}",
            work_category=category)

    if contract is None:
        add("register.no_contract", f"contract {certificate.contract_no!r} is not in the register of {rules.town}",
            contract_no=certificate.contract_no)
    else:
        _register_checks(certificate, contract, add)

    _amount_checks(certificate, rules, contract, other_advances or {}, add)

    completion = contract.completion_date if contract else certificate.completion_date
    if certificate.period_end < completion:
        add("period.ends_before_completion",
            f"guarantee period ends {certificate.period_end}, the work is completed {completion}",
            period_end=japanese_date(certificate.period_end), completion_date=japanese_date(completion))

    if previous_receipt is not None:
        add("submission.duplicate", f"already accepted as {previous_receipt}", previous_receipt=previous_receipt)
    return findings


def _register_checks(certificate: Certificate, contract: Contract, add: Callable[..., None]) -> None:
    if not names_match_any(certificate.contractor_name, [contract.contractor_name], company_key):
        add("register.contractor_mismatch",
            f"certificate names {certificate.contractor_name!r}, the register {contract.contractor_name!r}",
            contractor_name=certificate.contractor_name)
    if plain_key(certificate.work_name) != plain_key(contract.work_name):
        add("register.work_mismatch",
            f"certificate names the work {certificate.work_name!r}, the register {contract.work_name!r}",
            work_name=certificate.work_name)
    if certificate.contract_amount != contract.contract_amount:
        add("register.amount_mismatch",
            f"certificate says the contract amount is {certificate.contract_amount}, "
            f"the register {contract.contract_amount}",
            contract_amount=yen(certificate.contract_amount))


def _amount_checks(
    certificate: Certificate,
    rules: DeskRules,
    contract: Contract | None,
    other_advances: Mapping[GuaranteeType, int],
    add: Callable[..., None],
) -> None:
    amounts = rules.amounts
    kind = certificate.guarantee_type
    guaranteed = certificate.guarantee_amount
    # The register is the town's own record of the contract; the certificate only when there is none.
    base = contract.contract_amount if contract else certificate.contract_amount

    if kind is GuaranteeType.CONTRACT:
        ratio = exact_ratio(amounts.contract_guarantee_min_ratio)
        if not at_least(guaranteed, base, ratio):
            add("amount.contract_guarantee_low", f"{guaranteed} < {percent(ratio)} of {base}",
                guarantee_amount=yen(guaranteed), ratio=percent(ratio))
        return
    if kind not in _ADVANCES:
        return

    if base < amounts.advance_min_contract_amount:
        add("amount.advance_below_threshold",
            f"contract amount {base} is below the advance threshold {amounts.advance_min_contract_amount}",
            threshold=yen(amounts.advance_min_contract_amount))
    if kind is GuaranteeType.ADVANCE:
        ratio = exact_ratio(amounts.advance_max_ratio)
        if not at_most(guaranteed, base, ratio):
            add("amount.advance_high", f"{guaranteed} > {percent(ratio)} of {base}",
                guarantee_amount=yen(guaranteed), ratio=percent(ratio))
        advance, intermediate = guaranteed, _known(contract, other_advances, GuaranteeType.INTERMEDIATE_ADVANCE)
    else:
        ratio = exact_ratio(amounts.intermediate_advance_max_ratio)
        if not at_most(guaranteed, base, ratio):
            add("amount.intermediate_advance_high", f"{guaranteed} > {percent(ratio)} of {base}",
                guarantee_amount=yen(guaranteed), ratio=percent(ratio))
        advance, intermediate = _known(contract, other_advances, GuaranteeType.ADVANCE), guaranteed

    total_ratio = exact_ratio(amounts.advance_total_max_ratio)
    if not at_most(advance + intermediate, base, total_ratio):
        add("amount.advance_total_high",
            f"前払金 {advance} + 中間前払金 {intermediate} > {percent(total_ratio)} of {base}",
            guarantee_amount=yen(guaranteed), ratio=percent(total_ratio))


def _known(contract: Contract | None, other_advances: Mapping[GuaranteeType, int], kind: GuaranteeType) -> int:
    """The contract's other advance: the register's figure first, else a known guarantee, else 0."""
    if contract is not None:
        recorded = contract.advance_amount if kind is GuaranteeType.ADVANCE else contract.intermediate_advance_amount
        if recorded is not None:
            return recorded
    return other_advances.get(kind, 0)


# ------------------------------------------------------------------------------------------
# Exact money arithmetic
# ------------------------------------------------------------------------------------------


def exact_ratio(value: float | int | Fraction) -> Fraction:
    """The fraction a config ratio was written as: 0.1 → 1/10 (not the binary float's value)."""
    if isinstance(value, Fraction):
        return value
    return Fraction(repr(float(value))) if isinstance(value, float) else Fraction(value)


def at_least(amount: int, base: int, ratio: Fraction) -> bool:
    """amount ≥ ratio × base, in integers."""
    return amount * ratio.denominator >= base * ratio.numerator


def at_most(amount: int, base: int, ratio: Fraction) -> bool:
    """amount ≤ ratio × base, in integers."""
    return amount * ratio.denominator <= base * ratio.numerator


# ------------------------------------------------------------------------------------------
# Comparing names and writing values the way a town office does
# ------------------------------------------------------------------------------------------


def plain_key(text: str) -> str:
    """NFKC without any white space: PDFs and spreadsheets space words differently."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def obligee_key(text: str) -> str:
    return _HONORIFICS.sub("", plain_key(text))


def company_key(text: str) -> str:
    """A firm's name without spaces and legal-form markers (株式会社 / (株) / ㈱)."""
    return _LEGAL_FORMS.sub("", plain_key(text))


def names_match_any(name: str, candidates: Iterable[str], key: Callable[[str], str]) -> bool:
    wanted = key(name)
    return bool(wanted) and any(key(candidate) == wanted for candidate in candidates)


def yen(amount: int) -> str:
    return f"{amount:,}円"


def percent(ratio: Fraction) -> str:
    value = ratio * 100
    if value.denominator == 1:
        return f"{value.numerator}%"
    return f"{float(value):g}%"


_ERAS = ((date(2019, 5, 1), "令和"), (date(1989, 1, 8), "平成"), (date(1926, 12, 25), "昭和"))


def japanese_date(day: date) -> str:
    """令和8年4月1日 (元年 for the first year), as a town office writes dates."""
    for first_day, name in _ERAS:
        if day >= first_day:
            year = day.year - first_day.year + 1
            return f"{name}{'元' if year == 1 else year}年{day.month}月{day.day}日"
    return f"{day.year}年{day.month}月{day.day}日"
