"""Fixtures for the verifier's document reading: the real [documents] config, fixture PDFs, a worker."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from rules.domain import Certificate, GuaranteeType
from rules.signatures import DocumentSignatures
from tests.support.deployment import ADVANCE_CERTIFICATE
from verifier.pdf_text import PdfTextWorker

ROOT = Path(__file__).resolve().parents[2]
PDF_DIR = ROOT / "tests" / "fixtures" / "pdf"
RULES_TOML = ROOT / "config" / "rules.toml"

# What tests/fixtures/pdf/make_reportlab.py printed into its notices.
VALID_KEY = "1QFZ-2E8V-RKDT-WST0"
WRONG_CHECK_KEY = "FR3A-97CP-S9D9-XPF0"
NUMBER_1, NUMBER_2 = "26-000123-5", "26-000124-3"


def fixture_pdf(name: str) -> bytes:
    return (PDF_DIR / name).read_bytes()


@pytest.fixture(scope="session")
def signatures() -> DocumentSignatures:
    """The [documents] section exactly as shipped in config/rules.toml (what the admin edits)."""
    with RULES_TOML.open("rb") as handle:
        return DocumentSignatures.model_validate(tomllib.load(handle)["documents"])


@pytest.fixture(scope="session")
def documents_section() -> dict:
    with RULES_TOML.open("rb") as handle:
        return tomllib.load(handle)["documents"]


@pytest.fixture
def worker():
    with PdfTextWorker() as pdf_worker:
        yield pdf_worker


@pytest.fixture(scope="session")
def sample_certificate() -> Certificate:
    return replace(
        ADVANCE_CERTIFICATE,
        guarantee_no="26-000777-8",
        guarantee_type=GuaranteeType.INTERMEDIATE_ADVANCE,
        guarantee_amount=6_172_500,
        fee=24_690,
        issued_on=date(2026, 4, 2),
    )


PRINTED_AT = datetime(2026, 4, 3, 9, 30, tzinfo=ZoneInfo("Asia/Tokyo"))
