"""The careful clerk's rules (issue 14): per-category ratios, low bids, 中間前払金 conditions, the
threshold's wording, the register's advance, the 契約保証 period, the obligee as towns write it —
each at its boundary, and every amount / period / register finding stating its numbers in Japanese."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st
from pydantic import ValidationError

from rules.amounts import share, share_down
from rules.domain import Certificate, Contract, GuaranteeType
from rules.evaluate import evaluate
from rules.names import obligee_matches
from rules.schema import DeskRules
from tests.support.certificates import ADVANCE_CERT, SAMPLE_CONTRACT

ADVANCE, INTERMEDIATE, CONTRACT = GuaranteeType.ADVANCE, GuaranteeType.INTERMEDIATE_ADVANCE, GuaranteeType.CONTRACT
BASE = {
    "town": "美郷町",
    "prefecture": "島根県",
    "obligee_names": ["美郷町長", "美郷町"],
    "start_date": date(2026, 4, 1),
    "eligible_guarantee_types": ["前払金保証", "中間前払金保証", "契約保証"],
    "eligible_work_categories": ["工事", "建設コンサルタント業務"],
    "work_category_aliases": {"建設工事": "工事", "建設コンサルタント等業務": "建設コンサルタント業務", "物品": "物品"},
    "categories": {"建設コンサルタント業務": {"advance_max_ratio": 0.30}},
    "departments": {
        "keiyaku": {"name": "契約係", "guarantee_types": ["契約保証"]},
        "kensetsu": {"name": "建設課", "guarantee_types": ["前払金保証", "中間前払金保証"]},
    },
}


def rules(**changes) -> DeskRules:
    data = {**BASE, **changes}
    return DeskRules.model_validate(data)


RULES = rules()
ROW = replace(SAMPLE_CONTRACT, contract_amount=10_000_000)


def cert(kind: GuaranteeType = ADVANCE, **changes) -> Certificate:
    amounts = {"contract_amount": 10_000_000, "guarantee_amount": 4_000_000}
    return replace(ADVANCE_CERT, guarantee_type=kind, **{**amounts, **changes})


def codes(certificate: Certificate, desk: DeskRules = RULES, contract: Contract | None = ROW, **kwargs) -> list[str]:
    return [f.code for f in evaluate(certificate, desk, contract=contract, **kwargs)]


# -- the register's labels --------------------------------------------------------------------


def test_a_register_label_is_read_through_the_aliases() -> None:
    assert RULES.work_category("建設工事") == "工事"
    assert RULES.work_category("建設コンサルタント 等業務") == "建設コンサルタント業務"
    assert RULES.work_category("工事") == "工事"
    assert RULES.work_category("物品") == "物品"  # known, but not eligible
    assert RULES.work_category("役務") is None
    assert codes(cert(), contract=replace(ROW, work_category="建設工事")) == []
    assert codes(cert(), contract=replace(ROW, work_category="物品")) == ["cert.category_not_eligible"]


def test_a_department_is_named_by_id_or_by_its_display_name() -> None:
    assert RULES.department_id("kensetsu") == "kensetsu"
    assert RULES.department_id("建設課") == "kensetsu"
    assert RULES.department_id("契約 係") == "keiyaku"
    assert RULES.department_id("総務課") is None


def test_overrides_must_name_a_known_category_and_the_prefecture_must_be_one() -> None:
    with pytest.raises(ValidationError, match="categories: 測量"):
        rules(categories={"測量": {"advance_max_ratio": 0.3}})
    with pytest.raises(ValidationError, match="prefecture"):
        rules(prefecture="島根")


# -- ratios per category and for low bids -------------------------------------------------------


@pytest.mark.parametrize(
    "category, limit",
    [("工事", 4_000_000), ("建設コンサルタント業務", 3_000_000), ("建設コンサルタント等業務", 3_000_000)],
)
def test_the_advance_limit_follows_the_work_category(category: str, limit: int) -> None:
    contract = replace(ROW, work_category=category)
    assert codes(cert(guarantee_amount=limit), contract=contract) == []
    assert codes(cert(guarantee_amount=limit + 1), contract=contract) == ["amount.advance_high"]


def test_a_low_bid_needs_30_percent_contract_guarantee_and_allows_20_percent_advance() -> None:
    low = replace(ROW, low_bid=True)
    assert codes(cert(CONTRACT, guarantee_amount=3_000_000), contract=low) == []
    findings = evaluate(cert(CONTRACT, guarantee_amount=2_999_999), RULES, contract=low)
    assert [f.code for f in findings] == ["amount.contract_guarantee_low"]
    assert "低入札" in findings[0].message and "3,000,000円" in findings[0].message
    assert codes(cert(CONTRACT, guarantee_amount=1_000_000), contract=ROW) == []  # 10% without low bid
    assert codes(cert(guarantee_amount=2_000_000), contract=low) == []
    assert codes(cert(guarantee_amount=2_000_001), contract=low) == ["amount.advance_high"]


def test_the_shortfall_names_the_amount_required_in_yen() -> None:
    [finding] = evaluate(cert(CONTRACT, guarantee_amount=999_999), RULES, contract=ROW)
    assert "999,999円" in finding.message and "1,000,000円" in finding.message
    assert "10,000,000円" in finding.message and "10%" in finding.message


# -- the threshold for advances: 以上 or 超える ----------------------------------------------------


@given(
    amount=st.integers(min_value=1, max_value=10**10),
    threshold=st.integers(min_value=0, max_value=10**10),
    boundary=st.sampled_from(["以上", "超える"]),
)
def test_the_threshold_boundary_is_exactly_as_worded(amount: int, threshold: int, boundary: str) -> None:
    desk = rules(amounts={"advance_min_contract_amount": threshold, "advance_min_contract_boundary": boundary})
    contract = replace(ROW, contract_amount=amount)
    found = "amount.advance_below_threshold" in codes(cert(guarantee_amount=1, contract_amount=amount), desk, contract)
    eligible = amount >= threshold if boundary == "以上" else amount > threshold
    assert found is not eligible


def test_the_threshold_finding_states_its_wording() -> None:
    desk = rules(amounts={"advance_min_contract_amount": 1_300_000, "advance_min_contract_boundary": "超える"})
    contract = replace(ROW, contract_amount=1_300_000)
    [finding] = evaluate(cert(guarantee_amount=1, contract_amount=1_300_000), desk, contract=contract)
    assert "1,300,000円を超える金額" in finding.message


# -- the guarantee against the advance the town will pay -----------------------------------------


@pytest.mark.parametrize(
    "mode, amount, expected",
    [
        ("equal", 3_000_000, []),
        ("equal", 3_000_001, ["amount.advance_not_register"]),
        ("equal", 2_999_999, ["amount.advance_not_register"]),
        ("at_least", 3_000_000, []),
        ("at_least", 3_500_000, []),
        ("at_least", 2_999_999, ["amount.advance_not_register"]),
        ("off", 1, []),
    ],
)
def test_the_guarantee_matches_the_registers_advance_as_the_town_chooses(mode: str, amount: int, expected) -> None:
    desk = rules(amounts={"advance_amount_vs_register": mode})
    assert codes(cert(guarantee_amount=amount), desk, replace(ROW, advance_amount=3_000_000)) == expected


def test_without_an_advance_in_the_register_the_guarantee_is_not_compared() -> None:
    assert codes(cert(guarantee_amount=1)) == []


# -- 中間前払金 ---------------------------------------------------------------------------------

WITH_ADVANCE = replace(ROW, advance_amount=4_000_000)
MIDDLE = date(2026, 9, 27)  # half of 2026-04-10 … 2027-03-15


def test_the_middle_of_the_term_is_computed_from_the_register() -> None:
    assert WITH_ADVANCE.middle_of_term == MIDDLE


@pytest.mark.parametrize(
    "start, expected",
    [
        (MIDDLE, []),
        (MIDDLE - timedelta(days=1), ["period.intermediate_too_early"]),
    ],
)
def test_an_intermediate_advance_starts_after_the_middle_of_the_term(start: date, expected) -> None:
    assert codes(cert(INTERMEDIATE, guarantee_amount=2_000_000, period_start=start), contract=WITH_ADVANCE) == expected


@pytest.mark.parametrize(
    "start, expected",
    [
        (date(2026, 11, 1), []),
        (date(2026, 10, 31), ["period.intermediate_too_early"]),
    ],
)
def test_an_intermediate_advance_starts_on_or_after_the_certification_date(start: date, expected) -> None:
    certified = replace(WITH_ADVANCE, intermediate_certified_on=date(2026, 11, 1))
    assert codes(cert(INTERMEDIATE, guarantee_amount=2_000_000, period_start=start), contract=certified) == expected


def test_without_a_date_the_town_may_require_the_certified_flag() -> None:
    desk = rules(intermediate_advance={"without_certification_date": "flag"})
    early = cert(INTERMEDIATE, guarantee_amount=2_000_000)
    assert codes(early, desk, WITH_ADVANCE) == ["period.intermediate_too_early"]
    assert codes(early, desk, replace(WITH_ADVANCE, intermediate_certified=True)) == []


def test_an_intermediate_advance_needs_an_advance_on_record_and_a_works_contract() -> None:
    later = cert(INTERMEDIATE, guarantee_amount=2_000_000, period_start=MIDDLE)
    assert codes(later) == ["amount.intermediate_without_advance"]
    assert codes(later, other_advances={ADVANCE: 4_000_000}) == []
    consulting = replace(WITH_ADVANCE, work_category="建設コンサルタント業務")
    assert codes(later, contract=consulting) == ["cert.intermediate_not_allowed"]
    desk = rules(intermediate_advance={"categories": ["工事", "建設コンサルタント業務"], "requires_advance": False})
    assert codes(later, desk, consulting) == []
    assert codes(later, desk, ROW) == []


# -- the guarantee period -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "start, expected",
    [
        (date(2026, 4, 10), []),
        (date(2026, 4, 1), []),
        (date(2026, 4, 11), ["period.starts_after_contract_date"]),
    ],
)
def test_a_contract_guarantee_covers_the_contract_from_its_date(start: date, expected) -> None:
    assert codes(cert(CONTRACT, guarantee_amount=1_000_000, period_start=start)) == expected


def test_an_advance_may_start_after_the_contract_date_but_must_cover_completion() -> None:
    assert codes(cert(period_start=date(2026, 5, 1))) == []
    assert codes(cert(period_end=date(2027, 3, 14))) == ["period.ends_before_completion"]


# -- the obligee as towns write it -----------------------------------------------------------------


@pytest.mark.parametrize(
    "obligee, accepted",
    [
        ("美郷町長", True),
        ("美郷町", True),
        ("美郷町長 山田太郎", True),
        ("美郷町長　山田 太郎 殿", True),
        ("島根県美郷町長", True),
        ("島根県 美郷町長 山田太郎", True),
        ("美郷町長殿", True),
        ("秋田県美郷町長", False),
        ("宮崎県美郷町", False),
        ("北郷町長", False),
        ("美郷町長 2", False),
        ("美郷町教育委員会", False),
        ("", False),
    ],
)
def test_the_obligee_is_this_town_with_or_without_prefecture_and_mayor(obligee: str, accepted: bool) -> None:
    assert obligee_matches(obligee, ["美郷町長", "美郷町"], "島根県") is accepted


def test_without_a_configured_prefecture_any_prefecture_is_taken() -> None:
    assert obligee_matches("秋田県美郷町長", ["美郷町長"], "")
    desk = rules(prefecture="")
    assert codes(cert(obligee="秋田県美郷町長"), desk) == []
    assert codes(cert(obligee="秋田県美郷町長")) == ["cert.other_obligee"]


# -- the register by work name ----------------------------------------------------------------------


def test_a_certificate_without_contract_number_shows_how_it_was_matched() -> None:
    [finding] = evaluate(cert(contract_no=""), RULES, contract=ROW)
    assert finding.code == "register.matched_by_work" and "R8-001" in finding.message
    [missing] = evaluate(cert(contract_no=""), RULES, contract=None)
    assert missing.code == "register.no_contract" and "工事名・受注者名" in missing.message


def test_register_differences_name_both_values() -> None:
    findings = evaluate(cert(contract_amount=9_999_999, contractor_name="別建設株式会社"), RULES, contract=ROW)
    by_code = {f.code: f for f in findings}
    assert "9,999,999円" in by_code["register.amount_mismatch"].message
    assert "10,000,000円" in by_code["register.amount_mismatch"].message
    assert "別建設株式会社" in by_code["register.contractor_mismatch"].message


# -- numbers in Japanese ------------------------------------------------------------------------------

_NUMBERS = re.compile(r"[0-9][0-9,]*円|令和[0-9元]+年[0-9]+月[0-9]+日|[0-9]+%|契約番号[A-Z0-9]")


def test_every_amount_period_and_register_finding_states_its_numbers_in_japanese() -> None:
    cases = [
        (cert(CONTRACT, guarantee_amount=1, period_start=date(2026, 5, 1), period_end=date(2026, 5, 2)), ROW, {}),
        (cert(guarantee_amount=9_000_000, contract_amount=1), replace(ROW, advance_amount=1), {}),
        (cert(INTERMEDIATE, guarantee_amount=9_000_000), replace(ROW, advance_amount=4_000_000), {}),
        (cert(), replace(ROW, contract_amount=1), {"advance_min_contract_amount": 2}),
        (cert(contract_no="X"), None, {}),
    ]
    seen = set()
    for certificate, contract, amounts in cases:
        desk = rules(amounts=amounts) if amounts else RULES
        for finding in evaluate(certificate, desk, contract=contract):
            if finding.code.split(".")[0] in ("amount", "period", "register") and finding.code not in (
                "amount.intermediate_without_advance",
                "register.contractor_mismatch",
                "register.work_mismatch",
            ):
                seen.add(finding.code)
                assert _NUMBERS.search(finding.message), (finding.code, finding.message)
                assert not re.search(r"(?<![-0-9])[0-9]{5,}(?![-0-9])", finding.message), (
                    finding.code,
                    finding.message,
                )  # no bare yen
    assert {
        "amount.contract_guarantee_low",
        "amount.advance_high",
        "amount.advance_total_high",
        "amount.advance_below_threshold",
        "amount.advance_not_register",
        "amount.intermediate_advance_high",
        "period.ends_before_completion",
        "period.starts_after_contract_date",
        "period.intermediate_too_early",
        "register.amount_mismatch",
        "register.no_contract",
    } <= seen


# -- every ratio at its exact boundary, for any contract amount --------------------------------------


@given(
    amount=st.integers(min_value=1, max_value=10**11),
    low_bid=st.booleans(),
    category=st.sampled_from(["工事", "建設コンサルタント業務"]),
)
def test_the_contract_guarantee_minimum_is_exact(amount: int, low_bid: bool, category: str) -> None:
    contract = replace(ROW, contract_amount=amount, low_bid=low_bid, work_category=category)
    required = share(amount, Fraction(3, 10) if low_bid else Fraction(1, 10))
    ok = cert(CONTRACT, contract_amount=amount, guarantee_amount=required)
    assert "amount.contract_guarantee_low" not in codes(ok, contract=contract)
    if required > 0:
        short = replace(ok, guarantee_amount=required - 1)
        assert "amount.contract_guarantee_low" in codes(short, contract=contract)


@given(
    amount=st.integers(min_value=1, max_value=10**11),
    low_bid=st.booleans(),
    category=st.sampled_from(["工事", "建設コンサルタント業務"]),
)
def test_the_advance_maximum_is_exact(amount: int, low_bid: bool, category: str) -> None:
    contract = replace(ROW, contract_amount=amount, low_bid=low_bid, work_category=category)
    ratio = Fraction(2, 10) if low_bid else Fraction(4, 10) if category == "工事" else Fraction(3, 10)
    limit = share_down(amount, ratio)
    at_limit = cert(contract_amount=amount, guarantee_amount=limit)
    assert "amount.advance_high" not in codes(at_limit, contract=contract)
    assert "amount.advance_high" in codes(replace(at_limit, guarantee_amount=limit + 1), contract=contract)


_PREFECTURES = ["秋田県", "島根県", "宮崎県", "北海道", "東京都", "大阪府", "京都府", "鹿児島県"]


@given(
    prefecture=st.sampled_from(_PREFECTURES + [""]),
    mayor=st.text(alphabet="山田太郎花子佐藤一", max_size=6),
    spaced=st.booleans(),
    honorific=st.sampled_from(["", "殿", " 様"]),
)
def test_the_obligee_rule_holds_for_any_prefecture_and_mayor(
    prefecture: str, mayor: str, spaced: bool, honorific: str
) -> None:
    gap = "\u3000" if spaced else ""
    written = f"{prefecture}{gap}美郷町長{gap}{mayor}{honorific}"
    assert obligee_matches(written, ["美郷町長", "美郷町"], "島根県") is (prefecture in ("", "島根県"))
    assert obligee_matches(written, ["美郷町長", "美郷町"], "")
    assert not obligee_matches(f"{prefecture}北郷町長{mayor}", ["美郷町長", "美郷町"], "")
