"""The desk's rules over one certificate: every rule, boundaries exactly at the ratios."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from fractions import Fraction
from string import Formatter

import pytest
from hypothesis import given, strategies as st

from rules.domain import Certificate, Contract, GuaranteeType
from rules.evaluate import at_least, at_most, company_key, evaluate, exact_ratio, japanese_date, percent
from rules.findings import CODES, Verdict, strongest
from rules.schema import DeskRules
from tests.support.certificates import ADVANCE_CERT, SAMPLE_CONTRACT

ADVANCE, INTERMEDIATE, CONTRACT, RESERVATION = (
    GuaranteeType.ADVANCE,
    GuaranteeType.INTERMEDIATE_ADVANCE,
    GuaranteeType.CONTRACT,
    GuaranteeType.CONTRACT_RESERVATION,
)


def desk_rules(**amounts) -> DeskRules:
    return DeskRules.model_validate(
        {
            "town": "美郷町",
            "obligee_names": ["美郷町長", "美郷町"],
            "start_date": date(2026, 4, 1),
            "eligible_guarantee_types": ["前払金保証", "中間前払金保証", "契約保証"],
            "eligible_work_categories": ["工事", "建設コンサルタント業務"],
            "amounts": {
                "contract_guarantee_min_ratio": 0.10,
                "advance_max_ratio": 0.40,
                "intermediate_advance_max_ratio": 0.20,
                "advance_total_max_ratio": 0.60,
                "advance_min_contract_amount": 0,
                **amounts,
            },
            "departments": {
                "keiyaku": {"name": "契約係", "guarantee_types": ["契約保証"]},
                "kensetsu": {"name": "建設課", "guarantee_types": ["前払金保証", "中間前払金保証"]},
            },
        }
    )


RULES = desk_rules()

CONTRACT_ROW = SAMPLE_CONTRACT


def certificate(kind: GuaranteeType = ADVANCE, **changes) -> Certificate:
    return replace(ADVANCE_CERT, guarantee_type=kind, **changes)


def codes(cert: Certificate, rules: DeskRules = RULES, contract: Contract | None = CONTRACT_ROW, **kwargs) -> list[str]:
    return [f.code for f in evaluate(cert, rules, contract=contract, **kwargs)]


def test_a_good_advance_guarantee_has_no_findings() -> None:
    assert codes(certificate()) == []


def test_every_code_produced_is_in_the_table_and_names_the_guarantee() -> None:
    bad = certificate(
        CONTRACT,
        obligee="北郷町長",
        contract_date=date(2026, 3, 31),
        work_category="物品",
        guarantee_amount=1,
        period_end=date(2026, 5, 1),
        contractor_name="別会社",
        work_name="別工事",
        contract_amount=1,
    )
    findings = evaluate(bad, RULES, contract=None, previous_receipt="K-2026-000001")
    assert findings, "expected findings"
    for finding in findings:
        assert finding.code in CODES
        assert finding.guarantee_no == "26-000123-4"
        assert finding.message  # the Japanese sentence renders
        assert "{" not in finding.message


OPTIONAL_PLACEHOLDERS = {"basis"}


def _every_finding_is_complete(findings) -> set[str]:
    """Each finding has a detail for staff and a value for every placeholder of its sentence."""
    for finding in findings:
        assert finding.detail, finding.code
        names = {name for _, name, _, _ in Formatter().parse(CODES[finding.code].message) if name}
        assert names <= set(finding.params), (finding.code, names, finding.params)
        # {basis} is the one placeholder main's rules (issue 14) leave empty on purpose: it says
        # "低入札の契約のため、" only for a low-bid contract. Every other one must have a value.
        assert all(finding.params[name] for name in names - OPTIONAL_PLACEHOLDERS), (finding.code, finding.params)
        assert finding.params.get("basis", "") in ("", "低入札の契約のため、"), finding.params
        assert finding.params["guarantee_no"] == finding.guarantee_no == "26-000123-4"
    return {finding.code for finding in findings}


def test_every_finding_carries_its_detail_and_fills_its_sentence() -> None:
    produced = set()
    produced |= _every_finding_is_complete(
        evaluate(
            certificate(
                CONTRACT,
                obligee="北郷町長",
                contract_date=date(2026, 3, 31),
                work_category="物品",
                guarantee_amount=1,
                period_end=date(2026, 5, 1),
            ),
            RULES,
            contract=None,
            previous_receipt="K-2026-000001",
        )
    )
    elsewhere = replace(
        CONTRACT_ROW,
        contractor_name="別会社",
        work_name="別工事",
        contract_amount=30_000_000,
        completion_date=date(2027, 6, 30),
        advance_amount=12_000_000,
    )
    produced |= _every_finding_is_complete(
        evaluate(certificate(guarantee_amount=20_000_000), RULES, contract=elsewhere)
    )
    produced |= _every_finding_is_complete(
        evaluate(
            certificate(INTERMEDIATE, guarantee_amount=7_000_000),
            desk_rules(advance_min_contract_amount=99_000_000),
            contract=elsewhere,
        )
    )
    produced |= _every_finding_is_complete(evaluate(certificate(RESERVATION), RULES, contract=CONTRACT_ROW))
    assert {
        "cert.other_obligee",
        "cert.before_start_date",
        "cert.category_not_eligible",
        "register.no_contract",
        "submission.duplicate",
        "amount.contract_guarantee_low",
        "register.contractor_mismatch",
        "register.work_mismatch",
        "register.amount_mismatch",
        "amount.advance_high",
        "amount.intermediate_advance_high",
        "amount.advance_total_high",
        "amount.advance_below_threshold",
    } <= produced, produced


# -- obligee --------------------------------------------------------------------------------


@pytest.mark.parametrize("obligee", ["美郷町長", "美郷町", "美郷町長 殿", "美 郷 町 長", "美郷町長様"])
def test_obligee_of_this_town_in_any_spacing(obligee: str) -> None:
    assert "cert.other_obligee" not in codes(certificate(obligee=obligee))


def test_obligee_of_another_town_is_refused_and_named() -> None:
    [finding] = [
        f
        for f in evaluate(certificate(obligee="北郷町長"), RULES, contract=CONTRACT_ROW)
        if f.code == "cert.other_obligee"
    ]
    assert finding.verdict is Verdict.RETURNED
    assert "北郷町長" in finding.message


def test_obligee_full_width_matches_after_nfkc() -> None:
    rules = desk_rules()
    rules = rules.model_copy(update={"obligee_names": ["ＡＢＣ市長"]})
    assert "cert.other_obligee" not in codes(certificate(obligee="ABC市長"), rules)


# -- dates ----------------------------------------------------------------------------------


def test_contract_on_the_start_date_is_in_scope_the_day_before_is_not() -> None:
    on = replace(CONTRACT_ROW, contract_date=date(2026, 4, 1))
    before = replace(CONTRACT_ROW, contract_date=date(2026, 3, 31))
    assert "cert.before_start_date" not in codes(certificate(), contract=on)
    found = [f for f in evaluate(certificate(), RULES, contract=before) if f.code == "cert.before_start_date"]
    assert len(found) == 1
    assert "令和8年3月31日" in found[0].message and "令和8年4月1日" in found[0].message


def test_without_register_entry_the_certificate_dates_are_used() -> None:
    assert "cert.before_start_date" in codes(certificate(contract_date=date(2026, 3, 31)), contract=None)


def test_period_reaching_the_completion_date_exactly_passes() -> None:
    assert "period.ends_before_completion" not in codes(certificate(period_end=date(2027, 3, 15)))
    assert "period.ends_before_completion" in codes(certificate(period_end=date(2027, 3, 14)))


def test_completion_date_comes_from_the_register() -> None:
    later = replace(CONTRACT_ROW, completion_date=date(2027, 6, 30))
    assert "period.ends_before_completion" in codes(certificate(), contract=later)


# -- type and category ----------------------------------------------------------------------


def test_contract_guarantee_reservation_is_refused() -> None:
    found = [
        f
        for f in evaluate(certificate(RESERVATION, guarantee_amount=2_000_000), RULES, contract=CONTRACT_ROW)
        if f.code == "cert.type_not_eligible"
    ]
    assert len(found) == 1 and "契約保証予約" in found[0].message
    assert found[0].verdict is Verdict.RETURNED


def test_type_not_in_the_desks_list_is_refused() -> None:
    rules = RULES.model_copy(update={"eligible_guarantee_types": [CONTRACT]})
    assert "cert.type_not_eligible" in codes(certificate(ADVANCE), rules)
    assert "cert.type_not_eligible" not in codes(certificate(CONTRACT, guarantee_amount=1_234_500), rules)


def test_category_is_checked_from_the_register() -> None:
    goods = replace(CONTRACT_ROW, work_category="物品購入")
    assert "cert.category_not_eligible" in codes(certificate(), contract=goods)
    consulting = replace(CONTRACT_ROW, work_category="建設コンサルタント業務")
    assert "cert.category_not_eligible" not in codes(
        certificate(work_category="建設コンサルタント業務"), contract=consulting
    )


# -- ratios: exactly at the boundary passes, one yen beyond fails -----------------------------


def test_contract_guarantee_exactly_ten_percent_passes_one_yen_less_fails() -> None:
    assert "amount.contract_guarantee_low" not in codes(certificate(CONTRACT, guarantee_amount=1_234_500))
    found = [
        f
        for f in evaluate(certificate(CONTRACT, guarantee_amount=1_234_499), RULES, contract=CONTRACT_ROW)
        if f.code == "amount.contract_guarantee_low"
    ]
    assert len(found) == 1
    assert "1,234,499円" in found[0].message and "10%" in found[0].message


def test_contract_guarantee_ratio_uses_the_register_amount() -> None:
    bigger = replace(CONTRACT_ROW, contract_amount=20_000_000)
    assert "amount.contract_guarantee_low" in codes(certificate(CONTRACT, guarantee_amount=1_234_500), contract=bigger)


def test_advance_ratios_use_the_register_amount_not_the_certificates() -> None:
    """The certificate may state a different contract amount: every advance ratio is of the register's."""
    inflated = {"contract_amount": 20_000_000}  # the certificate's figure; the register says 12,345,000
    assert "amount.advance_high" in codes(certificate(guarantee_amount=4_938_001, **inflated))
    assert "amount.intermediate_advance_high" in codes(
        certificate(INTERMEDIATE, guarantee_amount=2_469_001, **inflated)
    )
    row = replace(CONTRACT_ROW, advance_amount=4_938_001)
    assert "amount.advance_total_high" in codes(
        certificate(INTERMEDIATE, guarantee_amount=2_469_000, **inflated), contract=row
    )
    rules = desk_rules(advance_min_contract_amount=12_345_001)
    assert "amount.advance_below_threshold" in codes(certificate(**inflated), rules)
    # The other way round: within 40% of the register's amount passes though it is over 40% of the certificate's.
    bigger = replace(CONTRACT_ROW, contract_amount=20_000_000)
    assert "amount.advance_high" not in codes(certificate(guarantee_amount=8_000_000), contract=bigger)
    # Without a register entry the certificate's amount is all there is.
    assert "amount.advance_high" not in codes(certificate(guarantee_amount=8_000_000, **inflated), contract=None)
    assert "amount.advance_high" in codes(certificate(guarantee_amount=8_000_001, **inflated), contract=None)


def test_advance_exactly_forty_percent_passes_one_yen_more_fails() -> None:
    assert "amount.advance_high" not in codes(certificate(guarantee_amount=4_938_000))
    assert "amount.advance_high" in codes(certificate(guarantee_amount=4_938_001))


def test_intermediate_advance_exactly_twenty_percent_passes_one_yen_more_fails() -> None:
    assert "amount.intermediate_advance_high" not in codes(certificate(INTERMEDIATE, guarantee_amount=2_469_000))
    assert "amount.intermediate_advance_high" in codes(certificate(INTERMEDIATE, guarantee_amount=2_469_001))


def test_advance_total_from_the_register_exactly_sixty_percent_passes() -> None:
    row = replace(CONTRACT_ROW, advance_amount=4_938_000)
    assert "amount.advance_total_high" not in codes(certificate(INTERMEDIATE, guarantee_amount=2_469_000), contract=row)
    row = replace(CONTRACT_ROW, advance_amount=4_938_001)
    assert "amount.advance_total_high" in codes(certificate(INTERMEDIATE, guarantee_amount=2_469_000), contract=row)


def test_advance_total_from_known_guarantees_when_the_register_has_no_figure() -> None:
    cert = certificate(INTERMEDIATE, guarantee_amount=2_469_000)
    assert "amount.advance_total_high" not in codes(cert, other_advances={ADVANCE: 4_938_000})
    assert "amount.advance_total_high" in codes(cert, other_advances={ADVANCE: 4_938_001})
    # For the 前払金 itself, a known 中間前払金 counts the same way.
    assert "amount.advance_total_high" in codes(
        certificate(ADVANCE, guarantee_amount=4_938_000), other_advances={INTERMEDIATE: 2_469_001}
    )


def test_the_registers_advance_figure_wins_over_known_guarantees() -> None:
    row = replace(CONTRACT_ROW, advance_amount=1_000_000)
    cert = certificate(INTERMEDIATE, guarantee_amount=2_469_000)
    assert "amount.advance_total_high" not in codes(cert, contract=row, other_advances={ADVANCE: 9_000_000})


def test_total_ratio_lower_than_the_sum_of_the_parts() -> None:
    rules = desk_rules(advance_total_max_ratio=0.50)
    row = replace(CONTRACT_ROW, advance_amount=4_938_000)
    assert "amount.advance_total_high" in codes(certificate(INTERMEDIATE, guarantee_amount=2_469_000), rules, row)


def test_advance_only_for_contracts_of_at_least_the_threshold() -> None:
    rules = desk_rules(advance_min_contract_amount=12_345_000)
    assert "amount.advance_below_threshold" not in codes(certificate(), rules)
    rules = desk_rules(advance_min_contract_amount=12_345_001)
    found = [
        f for f in evaluate(certificate(), rules, contract=CONTRACT_ROW) if f.code == "amount.advance_below_threshold"
    ]
    assert len(found) == 1 and "12,345,001円" in found[0].message
    # A contract guarantee is not an advance: no threshold.
    assert "amount.advance_below_threshold" not in codes(certificate(CONTRACT, guarantee_amount=1_234_500), rules)


def test_ratios_that_floats_cannot_represent_are_exact() -> None:
    # 0.1 * 12_345_000 in floats is 1234500.0000000002; in fractions it is exact.
    assert exact_ratio(0.1) == Fraction(1, 10)
    assert exact_ratio(0.3) == Fraction(3, 10)
    assert at_least(1_234_500, 12_345_000, exact_ratio(0.1))
    assert at_most(3_703_500, 12_345_000, exact_ratio(0.3))
    rules = desk_rules(advance_max_ratio=0.3, advance_total_max_ratio=0.6)
    assert "amount.advance_high" not in codes(certificate(guarantee_amount=3_703_500), rules)
    assert "amount.advance_high" in codes(certificate(guarantee_amount=3_703_501), rules)


@given(st.integers(1, 10**12), st.integers(0, 100))
def test_integer_comparison_agrees_with_exact_arithmetic(base: int, percent_value: int) -> None:
    ratio = exact_ratio(percent_value / 100)
    assert ratio == Fraction(percent_value, 100)
    limit = base * ratio
    floor = limit.numerator // limit.denominator
    assert at_most(floor, base, ratio)
    assert not at_most(floor + 1, base, ratio)
    ceiling = -(-limit.numerator // limit.denominator)
    assert at_least(ceiling, base, ratio)
    assert not at_least(ceiling - 1, base, ratio) or ceiling == 0


def test_percent_and_date_formats() -> None:
    assert percent(Fraction(1, 10)) == "10%"
    assert percent(Fraction(1, 8)) == "12.5%"
    assert japanese_date(date(2026, 4, 1)) == "令和8年4月1日"
    assert japanese_date(date(2019, 5, 1)) == "令和元年5月1日"
    assert japanese_date(date(2019, 4, 30)) == "平成31年4月30日"


# -- register -------------------------------------------------------------------------------


def test_contract_missing_from_the_register_goes_to_a_person() -> None:
    found = [f for f in evaluate(certificate(), RULES, contract=None) if f.code == "register.no_contract"]
    assert len(found) == 1 and "R8-001" in found[0].message
    assert found[0].verdict is Verdict.NEEDS_REVIEW


@pytest.mark.parametrize(
    "name", ["㈱美郷建設", "美郷建設(株)", "美郷建設（株）", "株式会社 美郷建設", "株式会社　美郷建設"]
)
def test_contractor_matches_whatever_legal_form_is_written(name: str) -> None:
    assert "register.contractor_mismatch" not in codes(certificate(contractor_name=name))


def test_contractor_mismatch() -> None:
    assert "register.contractor_mismatch" in codes(certificate(contractor_name="株式会社北郷建設"))
    assert company_key("㈱ 美郷建設") == company_key("美郷建設株式会社") == "美郷建設"


def test_work_and_amount_must_be_the_registers() -> None:
    assert "register.work_mismatch" not in codes(certificate(work_name="町道美郷線道路改良工事"))
    assert "register.work_mismatch" in codes(certificate(work_name="町道北郷線 道路改良工事"))
    assert "register.amount_mismatch" in codes(certificate(contract_amount=12_000_000))


# -- duplicates and verdicts ----------------------------------------------------------------


def test_already_accepted_guarantee_is_a_duplicate_with_its_receipt() -> None:
    findings = evaluate(certificate(), RULES, contract=CONTRACT_ROW, previous_receipt="K-2026-000007")
    assert [f.code for f in findings] == ["submission.duplicate"]
    assert "K-2026-000007" in findings[0].message
    assert strongest(f.verdict for f in findings) is Verdict.ACCEPTED


def test_returned_beats_needs_review() -> None:
    findings = evaluate(certificate(obligee="北郷町長"), RULES, contract=None)
    assert {f.code for f in findings} == {"cert.other_obligee", "register.no_contract"}
    assert strongest(f.verdict for f in findings) is Verdict.RETURNED


def test_rule_codes_lists_exactly_what_evaluate_produces() -> None:
    from rules.evaluate import RULE_CODES

    worst = certificate(
        CONTRACT,
        obligee="北郷町長",
        contract_date=date(2026, 3, 31),
        work_category="物品",
        guarantee_amount=1,
        period_end=date(2026, 5, 1),
    )
    seen = {f.code for f in evaluate(worst, RULES, contract=None, previous_receipt="K")}
    row = replace(CONTRACT_ROW, contractor_name="別", work_name="別", contract_amount=1, advance_amount=10**9)
    seen |= {
        f.code
        for f in evaluate(
            certificate(guarantee_amount=10**9), desk_rules(advance_min_contract_amount=10**9), contract=row
        )
    }
    seen |= {f.code for f in evaluate(certificate(INTERMEDIATE, guarantee_amount=10**9), RULES, contract=row)}
    seen |= {f.code for f in evaluate(certificate(RESERVATION), RULES, contract=CONTRACT_ROW)}
    # Added with issue 14: 中間前払金 conditions, the register's advance, matching by work name.
    consulting = replace(CONTRACT_ROW, work_category="建設コンサルタント業務", advance_amount=1)
    seen |= {f.code for f in evaluate(certificate(INTERMEDIATE, contract_no=""), RULES, contract=consulting)}
    seen |= {f.code for f in evaluate(certificate(INTERMEDIATE), RULES, contract=CONTRACT_ROW)}
    seen |= {f.code for f in evaluate(certificate(ADVANCE), RULES, contract=consulting)}
    assert seen == RULE_CODES
    assert set(CODES) >= RULE_CODES
