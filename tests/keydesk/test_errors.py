"""One exception hierarchy, translated once by ``keydesk.cli.main``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from foundation.errors import ConfigProblem, KeydeskError, SchemaProblem, UserFacingError
from keydesk import cli
from keydesk.database import SchemaOutdated
from foundation.config import ConfigError

PACKAGES = ("foundation", "formats", "rules", "verifier", "store", "intake", "mailer", "guarantor", "web", "keydesk")
NOT_IMPORTED = {"keydesk.__main__"}  # running it would start the CLI


def _project_modules():
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name in NOT_IMPORTED or ".migrations" in info.name:
                continue
            yield importlib.import_module(info.name)


def test_every_exception_class_of_the_project_derives_from_keydesk_error():
    found = {}
    for module in _project_modules():
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    assert len(found) >= 20, sorted(found)  # the walk really saw the project's exceptions
    strays = sorted(name for name, cls in found.items() if not issubclass(cls, KeydeskError))
    assert strays == []


def test_config_error_is_a_config_problem_printed_line_by_line_without_prefix():
    error = ConfigError(["config/rules.toml: a: is required", "config/rules.toml: b: is required"])
    assert isinstance(error, ConfigProblem) and error.exit_code == 2
    assert error.user_lines() == ["config/rules.toml: a: is required", "config/rules.toml: b: is required"]


def test_an_outdated_schema_exits_3():
    error = SchemaOutdated("the database schema is empty: run `keydesk db upgrade` first")
    assert isinstance(error, SchemaProblem) and error.exit_code == 3
    assert error.user_lines() == ["keydesk: the database schema is empty: run `keydesk db upgrade` first"]


@pytest.mark.parametrize(
    ("raised", "code", "printed"),
    [
        (
            ConfigError(["config/keydesk.toml: smtp.port: must be a number, got 'x'"]),
            2,
            "config/keydesk.toml: smtp.port: must be a number, got 'x'\n",
        ),
        (UserFacingError("窓口 'x' は設定にありません"), 1, "keydesk: 窓口 'x' は設定にありません\n"),
        (
            FileNotFoundError(2, "No such file or directory", "/nowhere/a.csv"),
            1,
            "keydesk: /nowhere/a.csv: No such file or directory\n",
        ),
        (RuntimeError("boom"), 1, "keydesk: unexpected error: RuntimeError: boom (run with --debug for details)\n"),
    ],
)
def test_main_translates_each_error_once_into_its_exit_code_and_lines(monkeypatch, capsys, raised, code, printed):
    def failing_app(**_kwargs):
        raise raised

    monkeypatch.setattr(cli, "app", failing_app)
    monkeypatch.setitem(cli._state, "debug", False)
    with pytest.raises(SystemExit) as exited:
        cli.main([])
    assert exited.value.code == code
    assert capsys.readouterr().err == printed


def test_main_with_debug_lets_the_traceback_through(monkeypatch):
    def failing_app(**_kwargs):
        raise UserFacingError("shown with its traceback")

    monkeypatch.setattr(cli, "app", failing_app)
    monkeypatch.setitem(cli._state, "debug", True)
    with pytest.raises(UserFacingError, match="shown with its traceback"):
        cli.main([])
