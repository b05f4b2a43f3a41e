"""The town's rules on one certificate's facts, with the contract register and what was accepted before.

The same judgement for a certificate the look-up returned (``verifier.verify``) and for the facts a
clerk read on the guarantor's site in manual mode (``intake.manual_lookup``). Pure: the register and
the accepted index are ports.
"""

from __future__ import annotations

from typing import Mapping

from rules.domain import Certificate, Contract, GuaranteeType
from rules.evaluate import evaluate
from rules.findings import Finding
from rules.schema import DeskRules
from verifier.register import AcceptedIndex, ContractRegister, find_contract


def judge_certificate(certificate: Certificate, desk: str, rules: DeskRules, register: ContractRegister,
                      accepted: AcceptedIndex, advances_in_mail: Mapping[GuaranteeType, int] | None = None,
                      ) -> tuple[list[Finding], Contract | None]:
    """Every rule the certificate breaks, and its register entry (None: not in the register), found
    by contract number or, when the certificate carries none, by work name and contractor.

    ``advances_in_mail``: advance guarantees of the same contract in the same mail, which count
    towards the 前払金 + 中間前払金 total beside those accepted before.
    """
    contract = find_contract(register, desk, certificate)
    number = contract.contract_no if contract is not None else certificate.contract_no
    others = dict(accepted.advance_amounts(desk, number))
    others.update({k: v for k, v in (advances_in_mail or {}).items() if k is not certificate.guarantee_type})
    findings = evaluate(
        certificate, rules, contract=contract,
        previous_receipt=accepted.receipt_for(desk, certificate.guarantee_no), other_advances=others,
    )
    return findings, contract


def department_for(rules: DeskRules, guarantee_type: GuaranteeType | None, contract: Contract | None) -> str | None:
    """The department whose digest carries the guarantee: by type, else the register's."""
    department = rules.department_for(guarantee_type) if guarantee_type else None
    if department is None and contract is not None:
        department = contract.department
    return department
