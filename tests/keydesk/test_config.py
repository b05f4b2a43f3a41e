"""Configuration: every mistake is one line naming the file, the key path and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from keydesk.settings import load_settings
from foundation.config import ConfigError
from rules.domain import GuaranteeType


def _edit(path: Path, old: str, new: str) -> None:
    """Replace the first occurrence; a bare dotted table name (desks.misato) is renamed everywhere."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"fixture drift: {old!r} not in {path.name}"
    count = -1 if old.startswith("desks.") else 1
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text + "\n", encoding="utf-8")


def test_defaults_load_and_resolve_against_the_home(deployment: Path) -> None:
    settings = load_settings(deployment)
    home = deployment.parent
    assert settings.home == home
    assert settings.storage.directory == home / "var" / "store"
    assert settings.guarantor.signing_key == home / "var" / "guarantor" / "signing-key.pem"
    assert settings.database_url() == f"sqlite:///{home}/var/keydesk.db"
    misato = settings.rules.desks["misato"]
    assert str(misato.start_date) == "2026-04-01"
    assert GuaranteeType.CONTRACT_RESERVATION not in misato.eligible_guarantee_types
    assert misato.amounts.advance_max_ratio == 0.40
    assert misato.amounts.contract_guarantee_min_ratio == 0.10
    assert {d.name for d in misato.departments.values()} == {"契約係", "建設課"}
    assert misato.department_for(GuaranteeType.CONTRACT) == "keiyaku"
    assert misato.department_for(GuaranteeType.ADVANCE) == "kensetsu"


BAD_CONFIGS = [
    # (file, old text, new text or None to append, expected line)
    (
        "rules.toml",
        "advance_max_ratio = 0.40",
        "advance_max_ratio = 4",
        "config/rules.toml: desks.misato.amounts.advance_max_ratio: must be between 0 and 1, got 4",
    ),
    (
        "rules.toml",
        "advance_max_ratio = 0.40",
        "advance_max_ration = 0.40",
        "config/rules.toml: desks.misato.amounts.advance_max_ration: unknown key",
    ),
    (
        "rules.toml",
        "start_date = 2026-04-01",
        'start_date = "April"',
        "config/rules.toml: desks.misato.start_date: must be a date such as 2026-04-01, got 'April'",
    ),
    (
        "rules.toml",
        'eligible_guarantee_types = ["前払金保証", "中間前払金保証", "契約保証"]',
        'eligible_guarantee_types = ["前払金保証", "契約保証予約"]',
        "config/rules.toml: desks.misato.eligible_guarantee_types: 契約保証予約 is not delivered electronically",
    ),
    (
        "rules.toml",
        'guarantee_types = ["契約保証"]',
        'guarantee_types = ["契約保障"]',
        "config/rules.toml: desks.misato.departments.keiyaku.guarantee_types.0: must be one of",
    ),
    (
        "rules.toml",
        'guarantee_types = ["契約保証"]\ndigest_recipients = ["keiyaku-tanto@town.misato.example"]',
        'guarantee_types = ["契約保証"]\ndigest_recipients = ["keiyaku at town"]',
        "config/rules.toml: desks.misato.departments.keiyaku.digest_recipients: must be e-mail addresses",
    ),
    (
        "rules.toml",
        "advance_total_max_ratio = 0.60",
        "advance_total_max_ratio = 0.30",
        "config/rules.toml: desks.misato.amounts: advance_total_max_ratio must be at least advance_max_ratio",
    ),
    (
        "rules.toml",
        '[desks.misato.departments.keiyaku]\nname = "契約係"\nguarantee_types = ["契約保証"]',
        '[desks.misato.departments.keiyaku]\nname = "契約係"\nguarantee_types = ["前払金保証"]',
        "config/rules.toml: desks.misato: no department receives 契約保証",
    ),
    (
        "rules.toml",
        "start_date = 2026-04-01",
        "start_date = 2026-04-01\nstart_date = 2026-05-01",
        "config/rules.toml: not valid TOML",
    ),
    (
        "keydesk.toml",
        'password_file = "var/secrets/embedded-keiyaku.password"\n# token_command',
        'password = "hunter2"\n# token_command',
        "config/keydesk.toml: desks.misato.mailbox: secrets never go in the TOML: use password_env",
    ),
    (
        "keydesk.toml",
        'host = "127.0.0.1"\nport = 1143',
        'host = "imap.example.jp"\nport = 1143',
        'config/keydesk.toml: desks.misato.mailbox: security = "plain" sends the password in clear text',
    ),
    (
        "keydesk.toml",
        'auth = "password"',
        'auth = "xoauth2"',
        'config/keydesk.toml: desks.misato.mailbox: auth = "xoauth2" needs token_command',
    ),
    (
        "keydesk.toml",
        'schedule = "30 8 * * mon-fri"',
        'schedule = "every morning"',
        "config/keydesk.toml: digest.schedule: is not a crontab schedule",
    ),
    (
        "keydesk.toml",
        'timezone = "Asia/Tokyo"\n\n[logging]',
        'timezone = "Asia/Tokio"\n\n[logging]',
        "config/keydesk.toml: timezone: is not a time zone such as \"Asia/Tokyo\", got 'Asia/Tokio'",
    ),
    (
        "keydesk.toml",
        "imap_port = 1143",
        "imap_port = 70000",
        "config/keydesk.toml: embedded.imap_port: Input should be less than or equal to 65535",
    ),
    (
        "keydesk.toml",
        'level = "INFO"',
        'level = "LOUD"',
        "config/keydesk.toml: logging.level: must be one of 'DEBUG', 'INFO', 'WARNING' or 'ERROR', got 'LOUD'",
    ),
    (
        "keydesk.toml",
        "pdf_cpu_seconds = 10",
        'pdf_cpu_seconds = "ten"',
        "config/keydesk.toml: limits.pdf_cpu_seconds: must be a number, got 'ten'",
    ),
]


@pytest.mark.parametrize("file, old, new, expected", BAD_CONFIGS, ids=[c[3].split(": ")[1] for c in BAD_CONFIGS])
def test_bad_config_gives_one_clear_line(deployment: Path, file: str, old: str, new: str, expected: str) -> None:
    _edit(deployment / file, old, new)
    with pytest.raises(ConfigError) as caught:
        load_settings(deployment)
    lines = caught.value.lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines[0]
    assert "Traceback" not in lines[0]


def test_digest_time_zone_is_checked(deployment: Path) -> None:
    _edit(deployment / "keydesk.toml", 'timezone = "Asia/Tokyo"\n\n[embedded]', 'timezone = "Asia/Tokio"\n\n[embedded]')
    with pytest.raises(ConfigError) as caught:
        load_settings(deployment)
    assert caught.value.lines == [
        "config/keydesk.toml: digest.timezone: is not a time zone such as \"Asia/Tokyo\", got 'Asia/Tokio'"
    ]


def test_desks_must_agree_between_the_two_files(deployment: Path) -> None:
    _edit(deployment / "keydesk.toml", "desks.misato", "desks.kamisato")
    with pytest.raises(ConfigError) as caught:
        load_settings(deployment)
    assert caught.value.lines == [
        "config/rules.toml: desks.kamisato: is missing (keydesk.toml has this desk)",
        "config/keydesk.toml: desks.misato: is missing (rules.toml has rules for this desk)",
    ]


def test_a_missing_rules_file_is_named(deployment: Path) -> None:
    (deployment / "rules.toml").unlink()
    with pytest.raises(ConfigError) as caught:
        load_settings(deployment)
    assert caught.value.lines == ["config/rules.toml: the file is missing (keydesk init writes a fresh one)"]


def test_several_mistakes_are_all_listed(deployment: Path) -> None:
    _edit(deployment / "rules.toml", "advance_max_ratio = 0.40", "advance_max_ratio = 4")
    _edit(deployment / "rules.toml", "intermediate_advance_max_ratio = 0.20", "intermediate_advance_max_ratio = -1")
    with pytest.raises(ConfigError) as caught:
        load_settings(deployment)
    assert len(caught.value.lines) == 2
    assert all(line.startswith("config/rules.toml: desks.misato.amounts.") for line in caught.value.lines)


def test_secrets_come_from_env_or_file(deployment: Path, monkeypatch) -> None:
    from keydesk.settings import read_secret

    settings = load_settings(deployment)
    box = settings.desks["misato"].mailbox
    assert read_secret(None, box.password_file, "mailbox password")  # written by init, mode 0600
    assert oct(box.password_file.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("KEYDESK_TEST_SECRET", "from-env")
    assert read_secret("KEYDESK_TEST_SECRET", box.password_file, "x") == "from-env"
    with pytest.raises(ConfigError, match=r"x: not set; provide it in \$KEYDESK_UNSET_VAR"):
        read_secret("KEYDESK_UNSET_VAR", deployment / "nope", "x")
