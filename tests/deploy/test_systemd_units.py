"""The deployment files in deploy/: hardened systemd units whose commands exist, a logrotate sample."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
HARDENING = {"User": "keydesk", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "KillMode": "mixed",
             "StandardOutput": "journal", "StandardError": "journal", "UMask": "0077", "PrivateTmp": "yes"}


def _directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_there_is_a_unit_for_the_daemon_the_console_and_the_guarantor_service():
    assert [unit.name for unit in UNITS] == ["keydesk-console.service", "keydesk-guarantor.service", "keydesk.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_each_unit_is_hardened_and_logs_to_the_journal(unit):
    directives = _directives(unit)
    for key, value in HARDENING.items():
        assert directives.get(key) == [value], f"{unit.name}: {key}"
    assert directives["ReadWritePaths"] == ["/srv/keydesk/var"]  # nothing else is writable
    assert directives["CapabilityBoundingSet"] == [""]
    assert "KEYDESK_CONFIG=/srv/keydesk/config" in directives["Environment"]


def test_the_daemon_unit_runs_keydesk_run_which_stops_on_sigterm():
    directives = _directives(DEPLOY / "systemd" / "keydesk.service")
    [command] = directives["ExecStart"]
    assert command.split()[1:] == ["run"] and directives["KillSignal"] == ["SIGTERM"]
    result = subprocess.run([sys.executable, "-m", "keydesk", "run", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "SIGTERM" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_systemd_knows_every_directive(unit, tmp_path):
    """systemd's own parser: an unknown or misspelt directive would be ignored silently at run time."""
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text(encoding="utf-8").replace("/srv/keydesk/.venv/bin/keydesk", "/bin/true"),
                    encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in result.stderr.splitlines()
                  if "Unknown" in line or "Failed to parse" in line or "Invalid" in line]
    assert complaints == []


def test_the_logrotate_sample_rotates_keydesk_logs_without_a_reload():
    text = (DEPLOY / "logrotate" / "keydesk").read_text(encoding="utf-8")
    assert "/var/log/keydesk/*.log {" in text and "copytruncate" in text and "create 0600 keydesk keydesk" in text
