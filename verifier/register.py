"""The desk's own records the verifier consults: its contract register and what it already accepted.

Ports only (``Protocol``); the database adapters live in ``intake/register_store.py`` and tests
pass small in-memory fakes. Keeping them out of the core keeps ``verify`` free of I/O.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from rules.domain import Certificate, Contract, GuaranteeType


class ContractRegister(Protocol):
    def get(self, desk: str, contract_no: str) -> Contract | None:
        """The register entry for this contract number at this desk, or None."""
        ...

    def find_by_work(self, desk: str, work_name: str, contractor_name: str) -> Contract | None:
        """The one entry whose work name and contractor match (normalised: spaces, ㈱/株式会社), or None
        (none, or more than one). For a certificate that carries no contract number."""
        ...


class AcceptedIndex(Protocol):
    def receipt_for(self, desk: str, guarantee_no: str) -> str | None:
        """The receipt number of the mail in which this guarantee was accepted, or None."""
        ...

    def advance_amounts(self, desk: str, contract_no: str) -> Mapping[GuaranteeType, int]:
        """Guaranteed amounts of the contract's accepted 前払金 / 中間前払金 guarantees, by type."""
        ...


def find_contract(register: ContractRegister, desk: str, certificate: Certificate) -> Contract | None:
    """The register entry for a certificate: by contract number, or, when it carries none, by work name
    and contractor (``rules.evaluate`` then reports ``register.matched_by_work`` so staff see how)."""
    if certificate.contract_no.strip():
        return register.get(desk, certificate.contract_no)
    return register.find_by_work(desk, certificate.work_name, certificate.contractor_name)
