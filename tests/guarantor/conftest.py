"""Shared fixtures for the guarantor's tests: a tmp database, settings, a key, a certificate."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import SQLModel

from guarantor.settings import GuarantorSettings
from keydesk.database import make_engine
from keydesk.paths import default_config_dir
from rules.domain import Certificate
from tests.support.deployment import ADVANCE_CERTIFICATE

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 4, 1, 10, 15, tzinfo=TOKYO)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def engine(database_url):
    """The registry on a fresh SQLite file and on a fresh PostgreSQL database (when available)."""
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(tmp_path) -> GuarantorSettings:
    return GuarantorSettings.model_validate({}, context={"home": tmp_path})


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def certificate() -> Certificate:
    return ADVANCE_CERTIFICATE


@pytest.fixture
def deployment(tmp_path) -> Path:
    """A config folder under tmp_path (its var/ beside it), from the repository's defaults."""
    config_dir = tmp_path / "site" / "config"
    config_dir.mkdir(parents=True)
    source = default_config_dir()
    shutil.copyfile(source / "keydesk.toml", config_dir / "keydesk.toml")
    rules = (source / "rules.toml").read_text(encoding="utf-8")
    if "[documents" not in rules:
        # Until the verifier's [documents] section lands in config/rules.toml.
        rules += "\n[documents]\n"
    (config_dir / "rules.toml").write_text(rules, encoding="utf-8")
    (config_dir / "trust").mkdir()
    return config_dir
