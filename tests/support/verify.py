"""Fakes of the verifier's ports and the documents they judge, shared by the verifier's tests
(in-memory look-up, register and accepted index; the guarantor's real PDFs)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guarantor.pdf import render_key_notice
from rules.domain import Certificate, Contract, GuaranteeType
from rules.schema import DeskRules
from rules.signatures import DocumentSignatures
from formats import access_key as keys
from tests.support.certificates import ADVANCE_CERT, SAMPLE_CONTRACT
from verifier.certificate_signature import SignedCertificate, canonical_json, key_id
from verifier.lookup import LookupResult, LookupStatus
from verifier.pdf_text import extract_in_process
from verifier.verify import (
    InputDocument,
    MailContext,
    MailVerdict,
    Ports,
    verify_mail,
)


RULES_TOML = tomllib.loads((Path(__file__).parents[2] / "config" / "rules.toml").read_text(encoding="utf-8"))
SIGNATURES = DocumentSignatures.model_validate(RULES_TOML["documents"])
RULES = DeskRules.model_validate(RULES_TOML["desks"]["misato"])
NOW = datetime(2026, 4, 15, 10, 0, tzinfo=timezone.utc)
ISSUED = datetime(2026, 4, 12, 9, 0, tzinfo=timezone.utc)
SIGNING_KEY = Ed25519PrivateKey.generate()
TRUSTED = {key_id(SIGNING_KEY.public_key()): SIGNING_KEY.public_key()}

CONTRACT_CERT = replace(
    ADVANCE_CERT, guarantee_no="26-000124-2", guarantee_type=GuaranteeType.CONTRACT, guarantee_amount=1_234_500
)
# A 中間前払金 starts after the middle of the 工期 (2026-09-27), as the town's 認定 requires.
INTERMEDIATE_CERT = replace(
    ADVANCE_CERT,
    guarantee_no="26-000125-9",
    period_start=date(2026, 10, 1),
    guarantee_type=GuaranteeType.INTERMEDIATE_ADVANCE,
    guarantee_amount=2_469_001,
)
REGISTER_ROW = replace(SAMPLE_CONTRACT, contractor_name="㈱美郷建設")  # the register writes ㈱


def sign(certificate: Certificate, private_key: Ed25519PrivateKey = SIGNING_KEY) -> SignedCertificate:
    payload = canonical_json(certificate)
    return SignedCertificate(payload, private_key.sign(payload), key_id(private_key.public_key()))


class FakeLookup:
    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], LookupResult] = {}
        self.calls: list[tuple[str, str, datetime]] = []

    def issue(self, certificate: Certificate, signed: SignedCertificate | None = None) -> str:
        key = keys.generate()
        self.answers[(certificate.guarantee_no, keys.parse(key))] = LookupResult(
            LookupStatus.FOUND, signed or sign(certificate)
        )
        return key

    def lookup(self, guarantee_no: str, access_key: str, now: datetime) -> LookupResult:
        self.calls.append((guarantee_no, access_key, now))
        return self.answers.get((guarantee_no, access_key), LookupResult(LookupStatus.NO_MATCH))


class FakeRegister:
    def __init__(self, *rows: Contract) -> None:
        self.rows = {(row.desk, row.contract_no): row for row in rows}

    def get(self, desk: str, contract_no: str) -> Contract | None:
        return self.rows.get((desk, contract_no))

    def find_by_work(self, desk: str, work_name: str, contractor_name: str) -> Contract | None:
        from rules.names import company_key, plain_key

        found = [
            row
            for (row_desk, _), row in self.rows.items()
            if row_desk == desk
            and plain_key(row.work_name) == plain_key(work_name)
            and company_key(row.contractor_name) == company_key(contractor_name)
        ]
        return found[0] if len(found) == 1 else None


class FakeAccepted:
    def __init__(self, receipts: dict[str, str] | None = None, advances: dict | None = None) -> None:
        self.receipts = receipts or {}
        self.advances = advances or {}

    def receipt_for(self, desk: str, guarantee_no: str) -> str | None:
        return self.receipts.get(guarantee_no)

    def advance_amounts(self, desk: str, contract_no: str):
        return self.advances.get(contract_no, {})


@dataclass
class Desk:
    lookup: FakeLookup
    register: FakeRegister
    accepted: FakeAccepted
    rules: DeskRules = RULES

    @property
    def ports(self) -> Ports:
        return Ports(self.lookup, self.register, self.accepted, TRUSTED)

    def verify(self, *documents: InputDocument, context: MailContext | None = None) -> MailVerdict:
        return verify_mail(documents, context or MailContext(desk="misato"), self.rules, SIGNATURES, self.ports, NOW)


def pdf(name: str, data: bytes) -> InputDocument:
    return InputDocument(name, extract_in_process(data))


def notice(certificate: Certificate, key: str, name: str = "認証キー等のお知らせ.pdf") -> InputDocument:
    return pdf(name, render_key_notice(certificate, key, ISSUED))


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def all_codes(verdict: MailVerdict) -> set[str]:
    return set(codes(verdict.all_findings))
