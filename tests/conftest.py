"""Fixtures shared by the whole suite: a fresh deployment from `keydesk init`, database URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import pytest

# Fixtures and hooks that live in tests/support/, registered here for the whole suite.
from tests.support.browser import browser_page
from tests.support.ci_skips import pytest_runtest_makereport
from tests.support.deployment import POSTGRES_ENV, drop_database, issue_guarantees
from tests.support.servers import (
    dovecot_server,
    dovecot_tls_server,
    imap_server,
    pymap_server,
    pymap_tls_server,
    tls_imap_server,
)


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A fresh config folder written by `keydesk init` (returns the config folder)."""
    from keydesk.deployment import create_config

    config_dir = tmp_path / "config"
    create_config(config_dir)
    return config_dir


@pytest.fixture
def issued(deployment: Path, tmp_path: Path) -> dict:
    """A deployment with a signing key, three issued guarantees and the matching register."""
    return issue_guarantees(deployment, tmp_path)


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"PostgreSQL not available: set {POSTGRES_ENV} (.ci/run does)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"keydesk_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        drop_database(admin_url, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    """The same test on a fresh SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keydesk.db"
    return request.getfixturevalue("postgres_url")
