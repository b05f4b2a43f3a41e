"""The amount rules: 契約保証 minimum, 前払金 / 中間前払金 maximum and total, the advance threshold,
the guarantee against the advance the register says the town will pay.

Money is compared in integers: a ratio from the config (a float such as 0.1) is turned into the
exact fraction it was written as, and ``guarantee * den`` is compared with ``contract * num``, so a
guarantee of exactly 10% passes however the float would have rounded. Every finding states its
numbers in yen.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping

from rules.domain import Certificate, Contract, GuaranteeType
from rules.schema import DeskRules
from rules.wording import percent, yen

ADVANCES = (GuaranteeType.ADVANCE, GuaranteeType.INTERMEDIATE_ADVANCE)
Add = Callable[..., None]  # add(code, detail, **params)


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


def share(base: int, ratio: Fraction) -> int:
    """ratio × base in whole yen, rounded up (what a guarantee must reach at least)."""
    return -(-base * ratio.numerator // ratio.denominator)


def share_down(base: int, ratio: Fraction) -> int:
    """ratio × base in whole yen, rounded down (what an advance may reach at most)."""
    return base * ratio.numerator // ratio.denominator


@dataclass(frozen=True)
class Ratios:
    """The ratios that apply to one contract: the desk's, its work category's, or the low-bid ones."""

    contract_guarantee_min: Fraction
    advance_max: Fraction
    low_bid: bool


def ratios_for(rules: DeskRules, category: str | None, low_bid: bool) -> Ratios:
    amounts = rules.amounts
    override = rules.categories.get(category) if category else None
    contract_min = amounts.contract_guarantee_min_ratio
    advance_max = amounts.advance_max_ratio
    if override is not None:
        contract_min = override.contract_guarantee_min_ratio if override.contract_guarantee_min_ratio is not None \
            else contract_min
        advance_max = override.advance_max_ratio if override.advance_max_ratio is not None else advance_max
    if low_bid:
        contract_min, advance_max = rules.low_bid.contract_guarantee_min_ratio, rules.low_bid.advance_max_ratio
    return Ratios(exact_ratio(contract_min), exact_ratio(advance_max), low_bid)


def amount_checks(certificate: Certificate, rules: DeskRules, contract: Contract | None, category: str | None,
                  other_advances: Mapping[GuaranteeType, int], add: Add) -> None:
    amounts = rules.amounts
    kind = certificate.guarantee_type
    guaranteed = certificate.guarantee_amount
    # The register is the town's own record of the contract; the certificate only when there is none.
    base = contract.contract_amount if contract else certificate.contract_amount
    ratios = ratios_for(rules, category, contract.low_bid if contract else False)
    money = {"guarantee_amount": yen(guaranteed), "contract_amount": yen(base)}

    if kind is GuaranteeType.CONTRACT:
        ratio = ratios.contract_guarantee_min
        if not at_least(guaranteed, base, ratio):
            basis = "低入札の契約のため、" if ratios.low_bid else ""
            add("amount.contract_guarantee_low",
                f"保証金額 {yen(guaranteed)} < 請負代金額 {yen(base)} の {percent(ratio)} ({yen(share(base, ratio))})"
                + ("(低入札)" if ratios.low_bid else ""),
                ratio=percent(ratio), required=yen(share(base, ratio)), basis=basis, **money)
        return
    if kind not in ADVANCES:
        return

    threshold = amounts.advance_min_contract_amount
    above = amounts.advance_min_contract_boundary == "超える"
    if (base <= threshold) if above else (base < threshold):
        boundary = "を超える金額" if above else "以上"
        add("amount.advance_below_threshold",
            f"請負代金額 {yen(base)} は前払金の対象 ({yen(threshold)}{boundary}) に当たらない",
            threshold=yen(threshold), boundary=boundary, **money)

    if kind is GuaranteeType.ADVANCE:
        code, ratio = "amount.advance_high", ratios.advance_max
    else:
        code, ratio = "amount.intermediate_advance_high", exact_ratio(amounts.intermediate_advance_max_ratio)
    if not at_most(guaranteed, base, ratio):
        add(code, f"保証金額 {yen(guaranteed)} > 請負代金額 {yen(base)} の {percent(ratio)} ({yen(share_down(base, ratio))})"
            + ("(低入札)" if ratios.low_bid else ""),
            ratio=percent(ratio), limit=yen(share_down(base, ratio)), **money)

    _register_advance(certificate, contract, rules, add)

    if kind is GuaranteeType.ADVANCE:
        advance, intermediate = guaranteed, known_advance(contract, other_advances, GuaranteeType.INTERMEDIATE_ADVANCE)
    else:
        advance, intermediate = known_advance(contract, other_advances, GuaranteeType.ADVANCE), guaranteed
    total_ratio = exact_ratio(amounts.advance_total_max_ratio)
    if not at_most(advance + intermediate, base, total_ratio):
        limit = yen(share_down(base, total_ratio))
        add("amount.advance_total_high",
            f"前払金 {yen(advance)} + 中間前払金 {yen(intermediate)} > 請負代金額 {yen(base)} の {percent(total_ratio)} ({limit})",
            ratio=percent(total_ratio), limit=limit, advance_amount=yen(advance), intermediate_amount=yen(intermediate),
            total=yen(advance + intermediate), **money)


def _register_advance(certificate: Certificate, contract: Contract | None, rules: DeskRules, add: Add) -> None:
    """The guarantee against the advance the town will pay, as the register records it."""
    mode = rules.amounts.advance_amount_vs_register
    if contract is None or mode == "off":
        return
    kind = certificate.guarantee_type
    recorded = contract.advance_amount if kind is GuaranteeType.ADVANCE else contract.intermediate_advance_amount
    guaranteed = certificate.guarantee_amount
    if recorded is None or (guaranteed == recorded if mode == "equal" else guaranteed >= recorded):
        return
    expected = "と同額" if mode == "equal" else "以上"
    add("amount.advance_not_register",
        f"保証金額 {yen(guaranteed)} は台帳の支払予定額 {yen(recorded)}{expected}でない",
        guarantee_type=kind.value, guarantee_amount=yen(guaranteed), register_amount=yen(recorded), expected=expected)


def known_advance(contract: Contract | None, other_advances: Mapping[GuaranteeType, int], kind: GuaranteeType) -> int:
    """The contract's other advance: the register's figure first, else a known guarantee, else 0."""
    if contract is not None:
        recorded = contract.advance_amount if kind is GuaranteeType.ADVANCE else contract.intermediate_advance_amount
        if recorded is not None:
            return recorded
    return other_advances.get(kind, 0)


def advance_on_record(contract: Contract | None, other_advances: Mapping[GuaranteeType, int]) -> bool:
    """A 前払金 the town pays or has accepted a guarantee for (the condition for 中間前払金)."""
    return bool(contract is not None and contract.advance_amount) or bool(other_advances.get(GuaranteeType.ADVANCE))
