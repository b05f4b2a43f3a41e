"""What every configuration model shares: strict keys, secrets kept out of the TOML, and errors
that name the file, the key path and the reason in one line.

A bottom-layer module (it depends on ``foundation.errors`` only): the rule-set schema in
``rules/``, the key format in ``formats/`` and the deployment sections of ``keydesk.toml`` in the
shell packages all build on it, so every configuration file fails the same way and the pure core
does not host what the shell imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails

from foundation.errors import ConfigProblem

# Keys that would put a secret into the TOML itself; their ``*_env`` / ``*_file`` forms are allowed.
SECRET_KEYS = frozenset({"password", "token", "secret", "key_encryption_key", "client_secret"})


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in SECRET_KEYS:
                    raise ValueError(
                        f"secrets never go in the TOML: use {key}_env (an environment variable) "
                        f"or {key}_file (a file readable only by keydesk) instead of '{key}'"
                    )
        return data


def _ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number between 0 and 1, got {value!r}")
    if not 0 <= value <= 1:
        raise ValueError(f"must be between 0 and 1, got {value}")
    return float(value)


def _yen(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number of yen, got {value!r}")
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _time_zone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f'is not a time zone such as "Asia/Tokyo", got {value!r}') from None
    return cast(str, value)  # ZoneInfo took it: a string


Ratio = Annotated[float, BeforeValidator(_ratio)]
TimeZoneName = Annotated[str, BeforeValidator(_time_zone)]
Yen = Annotated[int, BeforeValidator(_yen)]


class ConfigError(ConfigProblem):
    """A configuration mistake, already worded for the admin (one line per problem)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines

    def user_lines(self) -> list[str]:
        # Each line already names the file and the key path; no "keydesk:" prefix.
        return list(self.lines)


def _location(loc: tuple[Any, ...]) -> str:
    # pydantic inserts validator names such as "function-after[...]" into loc; drop them.
    parts = [str(p) for p in loc if not (isinstance(p, str) and "[" in p)]
    return ".".join(parts)


def describe_errors(file_label: str, error: ValidationError, prefix: str = "") -> list[str]:
    """``config/rules.toml: desks.misato.amounts.advance_max_ratio: must be between 0 and 1, got 4``"""
    lines = []
    for item in error.errors():
        where = _location(item["loc"])
        if prefix:
            where = f"{prefix}.{where}" if where else prefix
        lines.append(f"{file_label}: {where or '(top level)'}: {_reason(item)}")
    return lines


def _reason(item: ErrorDetails) -> str:
    kind = item["type"]
    given = item.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see the commented defaults from `keydesk init`)"
    if kind in ("value_error", "assertion_error"):
        message = item["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        return message
    if kind == "enum" or kind == "literal_error":
        expected = item.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}, got {given!r}"
    if kind.startswith(("int_", "float_")):
        return f"must be a number, got {given!r}"
    if kind.startswith("bool"):
        return f"must be true or false, got {given!r}"
    if kind.startswith(("date_", "datetime_")):
        return f"must be a date such as 2026-04-01, got {given!r}"
    if kind.startswith("string"):
        return f"must be text, got {given!r}"
    if kind.startswith(("list_", "dict_", "model_")):
        return f"has the wrong shape ({item['msg'].lower()}), got {given!r}"
    return f"{item['msg']} (got {given!r})"


def resolve_path(home: Path, value: str | Path) -> Path:
    """Relative paths in the config are relative to the deployment home (the config folder's parent)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (home / path)


def _home_relative(value: Path, info: ValidationInfo) -> Path:
    home = (info.context or {}).get("home")
    return resolve_path(home, value) if home is not None else value


# A path in the config: validated with context={"home": …} it comes out absolute.
HomePath = Annotated[Path, AfterValidator(_home_relative)]
