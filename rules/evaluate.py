"""The desk's rules over one certificate: is this guarantee one the town can accept?

Pure: the certificate, the desk's rules, the register entry (or None) and what is already known
about the same contract come in; findings come out. The verifier looks those facts up through
its ports and calls ``evaluate``; ``keydesk rules check --replay`` calls it again under edited rules.
The amount rules live in ``rules/amounts.py``; every amount, period and register finding states
its numbers in Japanese (yen, 和暦 dates).
"""

from __future__ import annotations

from typing import Callable, Mapping

from rules.amounts import advance_on_record, amount_checks, at_least, at_most, exact_ratio
from rules.domain import Certificate, Contract, GuaranteeType
from rules.findings import Finding
from rules.names import company_key, names_match_any, obligee_key, obligee_matches, plain_key
from rules.schema import DeskRules
from rules.wording import japanese_date, percent, yen

__all__ = [
    "RULE_CODES", "evaluate", "at_least", "at_most", "exact_ratio", "company_key", "names_match_any",
    "obligee_key", "plain_key", "japanese_date", "percent", "yen",
]

# Every code ``evaluate`` can produce: a replay under edited rules recomputes exactly these and
# keeps a submission's other findings (documents, look-up, signature) as they were.
RULE_CODES = frozenset({
    "cert.other_obligee", "cert.before_start_date", "cert.type_not_eligible", "cert.category_not_eligible",
    "cert.intermediate_not_allowed",
    "register.no_contract", "register.matched_by_work", "register.contractor_mismatch", "register.work_mismatch",
    "register.amount_mismatch",
    "amount.contract_guarantee_low", "amount.advance_high", "amount.intermediate_advance_high",
    "amount.advance_total_high", "amount.advance_below_threshold", "amount.advance_not_register",
    "amount.intermediate_without_advance",
    "period.ends_before_completion", "period.starts_after_contract_date", "period.intermediate_too_early",
    "submission.duplicate",
})


def evaluate(
    certificate: Certificate,
    rules: DeskRules,
    *,
    contract: Contract | None,
    previous_receipt: str | None = None,
    other_advances: Mapping[GuaranteeType, int] | None = None,
) -> list[Finding]:
    """Every rule the certificate breaks, in a stable order (empty: the town can accept it).

    ``contract`` is the register entry for the certificate (by its contract number, or by work name
    and contractor when it carries none; None: not in the register).
    ``previous_receipt`` is the receipt number under which this guarantee was already accepted.
    ``other_advances`` holds the guaranteed amounts of the contract's other advance guarantees
    (accepted earlier or in the same mail), used for the 前払金 + 中間前払金 total when the
    register does not record the advance amounts itself.
    """
    no = certificate.guarantee_no
    findings: list[Finding] = []
    others = other_advances or {}

    def add(code: str, detail: str, **params: str) -> None:
        findings.append(Finding(code, detail=detail, params={"guarantee_no": no, **params}, guarantee_no=no))

    if not obligee_matches(certificate.obligee, rules.obligee_names, rules.prefecture):
        add("cert.other_obligee", f"obligee {certificate.obligee!r} is not one of {rules.obligee_names}"
            + (f" ({rules.prefecture})" if rules.prefecture else ""), obligee=certificate.obligee)

    contract_date = contract.contract_date if contract else certificate.contract_date
    if contract_date < rules.start_date:
        add("cert.before_start_date",
            f"契約日 {japanese_date(contract_date)} は電子保証の開始日 {japanese_date(rules.start_date)} より前",
            contract_date=japanese_date(contract_date), start_date=japanese_date(rules.start_date))

    kind = certificate.guarantee_type
    if kind is GuaranteeType.CONTRACT_RESERVATION or kind not in rules.eligible_guarantee_types:
        add("cert.type_not_eligible", f"guarantee type {kind.value} is not eligible", guarantee_type=kind.value)

    label = contract.work_category if contract else certificate.work_category
    category = rules.work_category(label)
    if category not in rules.eligible_work_categories:
        add("cert.category_not_eligible", f"work category {label!r} is not in {rules.eligible_work_categories}",
            work_category=label)

    _register_checks(certificate, contract, add)
    if kind is GuaranteeType.INTERMEDIATE_ADVANCE:
        _intermediate_checks(certificate, rules, contract, category, label, others, add)
    amount_checks(certificate, rules, contract, category, others, add)
    _period_checks(certificate, contract, add)

    if previous_receipt is not None:
        add("submission.duplicate", f"already accepted as {previous_receipt}", previous_receipt=previous_receipt)
    return findings


Add = Callable[..., None]


def _register_checks(certificate: Certificate, contract: Contract | None, add: Add) -> None:
    if contract is None:
        number = certificate.contract_no.strip()
        add("register.no_contract",
            f"契約番号 {number} は台帳にない" if number else "契約番号の記載がなく、工事名・受注者名でも台帳に該当なし",
            contract_no=number or "(記載なし。工事名・受注者名で照合)")
        return
    if not certificate.contract_no.strip():
        add("register.matched_by_work",
            f"契約番号の記載がないため、工事名「{contract.work_name}」と受注者「{contract.contractor_name}」で"
            f"契約番号 {contract.contract_no} と照合", contract_no=contract.contract_no)
    if not names_match_any(certificate.contractor_name, [contract.contractor_name], company_key):
        add("register.contractor_mismatch",
            f"電子証書の受注者「{certificate.contractor_name}」/ 台帳「{contract.contractor_name}」",
            contractor_name=certificate.contractor_name, register_contractor=contract.contractor_name)
    if plain_key(certificate.work_name) != plain_key(contract.work_name):
        add("register.work_mismatch", f"電子証書の工事名「{certificate.work_name}」/ 台帳「{contract.work_name}」",
            work_name=certificate.work_name, register_work_name=contract.work_name)
    if certificate.contract_amount != contract.contract_amount:
        add("register.amount_mismatch",
            f"電子証書の契約金額 {yen(certificate.contract_amount)} / 台帳の請負代金額 {yen(contract.contract_amount)}",
            contract_amount=yen(certificate.contract_amount), register_amount=yen(contract.contract_amount))


def _intermediate_checks(certificate: Certificate, rules: DeskRules, contract: Contract | None, category: str | None,
                         label: str, others: Mapping[GuaranteeType, int], add: Add) -> None:
    """中間前払金: only for some categories, after a 前払金, and only once the town has 認定."""
    policy = rules.intermediate_advance
    if category is not None and category in rules.eligible_work_categories and category not in policy.categories:
        add("cert.intermediate_not_allowed", f"中間前払金の対象: {', '.join(policy.categories)}; この契約: {label}",
            work_category=label)
    if policy.requires_advance and not advance_on_record(contract, others):
        add("amount.intermediate_without_advance", "前払金(台帳の前払金額・受付済みの前払金保証)の記録なし",
            contract_no=certificate.contract_no)
    if contract is None:
        return  # register.no_contract already asks a person to look
    start = certificate.period_start
    condition = ""
    if contract.intermediate_certified_on is not None:
        if start < contract.intermediate_certified_on:
            condition = f"中間前払金の認定日({japanese_date(contract.intermediate_certified_on)})より前に始まっている"
    elif policy.without_certification_date == "half_of_term":
        if start < contract.middle_of_term:
            condition = f"工期の中間日({japanese_date(contract.middle_of_term)})より前に始まっている"
    elif not contract.intermediate_certified:
        condition = "中間前払金の認定を当町の契約台帳で確認できない"
    if condition:
        add("period.intermediate_too_early", f"保証期間の始期 {japanese_date(start)}: {condition}",
            period_start=japanese_date(start), condition=condition)


def _period_checks(certificate: Certificate, contract: Contract | None, add: Add) -> None:
    contract_date = contract.contract_date if contract else certificate.contract_date
    if certificate.guarantee_type is GuaranteeType.CONTRACT and certificate.period_start > contract_date:
        add("period.starts_after_contract_date",
            f"契約保証の保証期間の始期 {japanese_date(certificate.period_start)} が契約日 {japanese_date(contract_date)} より後",
            period_start=japanese_date(certificate.period_start), contract_date=japanese_date(contract_date))
    completion = contract.completion_date if contract else certificate.completion_date
    if certificate.period_end < completion:
        add("period.ends_before_completion",
            f"保証期間の終期 {japanese_date(certificate.period_end)} が工期末 {japanese_date(completion)} より前",
            period_end=japanese_date(certificate.period_end), completion_date=japanese_date(completion))
