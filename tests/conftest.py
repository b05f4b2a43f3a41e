"""Fixtures shared by the whole suite: a fresh deployment from `keydesk init`, database URLs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

POSTGRES_ENV = "KEYDESK_TEST_POSTGRES_URL"


def run_keydesk(*args: str, config: Path | None = None, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a person would, and capture what it printed."""
    environment = {**os.environ, **(env or {})}
    if config is not None:
        environment["KEYDESK_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "keydesk", *args], capture_output=True, text=True, env=environment, timeout=timeout
    )


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A fresh config folder written by `keydesk init` (returns the config folder)."""
    from keydesk.cli_admin import init

    config_dir = tmp_path / "config"
    init(config_dir)
    return config_dir


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
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    """The same test on a fresh SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keydesk.db"
    return request.getfixturevalue("postgres_url")
