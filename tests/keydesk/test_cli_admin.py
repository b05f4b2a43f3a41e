"""The admin commands as a person runs them: exit codes, stderr, no tracebacks."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import run_keydesk


def test_init_then_config_check_prints_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "x" / "config"
    created = run_keydesk("init", str(config))
    assert created.returncode == 0, created.stderr
    assert (config / "keydesk.toml").is_file() and (config / "rules.toml").is_file()
    key_file = tmp_path / "x" / "var" / "secrets" / "key-encryption.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    checked = run_keydesk("config", "check", config=config)
    assert checked.returncode == 0, checked.stderr
    assert "rules.desks.misato.amounts.advance_max_ratio = 0.4" in checked.stdout
    assert f"storage.directory = '{tmp_path / 'x' / 'var' / 'store'}'" in checked.stdout
    # Secrets are shown only as masked presence, never their value.
    secret = key_file.read_text().strip()
    assert secret not in checked.stdout
    assert "# secret key_encryption_key: **** (from" in checked.stdout


def test_config_check_reports_the_mistake_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "x" / "config"
    assert run_keydesk("init", str(config)).returncode == 0
    rules = config / "rules.toml"
    rules.write_text(rules.read_text().replace("advance_max_ratio = 0.40", "advance_max_ratio = 4"))
    checked = run_keydesk("config", "check", config=config)
    assert checked.returncode == 2
    assert checked.stdout == ""
    assert (
        checked.stderr == "config/rules.toml: desks.misato.amounts.advance_max_ratio: must be between 0 and 1, got 4\n"
    )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = tmp_path / "x" / "config"
    assert run_keydesk("init", str(config)).returncode == 0
    (config / "rules.toml").write_text("[desks\n")
    plain = run_keydesk("config", "check", config=config)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("config/rules.toml: not valid TOML")
    debug = run_keydesk("--debug", "config", "check", config=config)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_init_refuses_to_overwrite(deployment: Path) -> None:
    before = (deployment / "rules.toml").read_text()
    again = run_keydesk("init", str(deployment))
    assert again.returncode == 1
    assert "already holds a configuration" in again.stderr
    assert (deployment / "rules.toml").read_text() == before


def test_missing_config_folder_is_explained(tmp_path: Path) -> None:
    result = run_keydesk("config", "check", config=tmp_path / "nowhere")
    assert result.returncode == 2
    assert "no keydesk.toml here" in result.stderr and "keydesk init DIR" in result.stderr


def test_commands_refuse_an_outdated_schema_until_db_upgrade(deployment: Path) -> None:
    refused = run_keydesk("audit", "verify", config=deployment)
    assert refused.returncode == 3
    assert "run `keydesk db upgrade` first" in refused.stderr

    upgraded = run_keydesk("db", "upgrade", config=deployment)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "データベースを更新しました" in upgraded.stdout
    again = run_keydesk("db", "upgrade", config=deployment)
    assert "データベースは最新です" in again.stdout

    verified = run_keydesk("audit", "verify", config=deployment)
    assert verified.returncode == 0, verified.stderr
    assert "0 件" in verified.stdout


def test_usage_errors_exit_2(deployment: Path) -> None:
    result = run_keydesk("no-such-command", config=deployment)
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_help_lists_only_working_commands() -> None:
    result = run_keydesk("--help")
    assert result.returncode == 0
    for command in ("init", "config", "db", "audit"):
        assert command in result.stdout


def test_config_check_finds_a_broken_template(tmp_path: Path) -> None:
    config = tmp_path / "x" / "config"
    assert run_keydesk("init", str(config)).returncode == 0
    (config / "templates" / "reply_body.txt.j2").write_text("{% if %}\n", encoding="utf-8")
    checked = run_keydesk("config", "check", config=config)
    assert checked.returncode == 2
    assert checked.stderr.startswith("config/templates/reply_body.txt.j2:1: ")
