"""With CI=true a test that skips (a server is missing) fails; without it, it is a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
SKIPPING = """
import pytest

def test_needs_a_server():
    pytest.skip("Dovecot is not installed")

def test_runs():
    assert True
"""


@pytest.mark.parametrize(
    ("ci", "expected_code", "expected_summary"), [("true", 1, "1 failed, 1 passed"), ("", 0, "1 passed, 1 skipped")]
)
def test_a_skip_fails_only_in_ci(tmp_path, ci, expected_code, expected_summary):
    (tmp_path / "test_skipping.py").write_text(SKIPPING, encoding="utf-8")
    env = {**os.environ, "CI": ci}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.support.ci_skips",
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_skipping.py"),
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == expected_code, result.stdout + result.stderr
    assert expected_summary in result.stdout
    if ci:
        assert "skipped in CI, where every server is installed: Dovecot is not installed" in result.stdout
