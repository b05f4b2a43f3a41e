"""What `keydesk config check` reports: the resolved settings (secrets masked, only where each one
comes from) and whether every template the mailer uses exists and parses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from foundation.config import ConfigError
from keydesk.settings import Settings


def check_templates(settings: Settings) -> None:
    """Every template the mailer uses exists and parses (a broken one would stop replies)."""
    import jinja2

    from mailer.digest import HTML_TEMPLATE, TEXT_TEMPLATE
    from mailer.reply import (
        BODY_TEMPLATE,
        SHORT_BODY_TEMPLATE,
        SHORT_SUBJECT_TEMPLATE,
        SUBJECT_TEMPLATE,
        template_environment,
    )

    environment = template_environment(settings.config_dir / "templates")
    problems = []
    for name in (
        SUBJECT_TEMPLATE,
        BODY_TEMPLATE,
        SHORT_SUBJECT_TEMPLATE,
        SHORT_BODY_TEMPLATE,
        TEXT_TEMPLATE,
        HTML_TEMPLATE,
    ):
        label = f"{settings.config_dir.name}/templates/{name}"
        try:
            environment.get_template(name)
        except jinja2.TemplateNotFound:
            problems.append(f"{label}: the template is missing (keydesk init writes the default)")
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{label}:{exc.lineno}: {exc.message}")
    if problems:
        raise ConfigError(problems)


def describe_settings(settings: Settings) -> list[str]:
    """One ``key = value`` line per setting, then where each secret comes from (never its value)."""
    data = settings.model_dump(mode="json", exclude={"home", "config_dir"})
    lines: list[str] = []
    _flatten("", data, lines)
    lines += _secret_status(settings)
    return lines


def _flatten(prefix: str, value: Any, lines: list[str]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, inner, lines)
    else:
        lines.append(f"{prefix} = {_show(prefix, value)}")


def _show(key: str, value: Any) -> str:
    if key.endswith("url") and isinstance(value, str) and "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return repr(f"{scheme}://{user}:****@{host}")
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _secret_status(settings: Settings) -> list[str]:
    def status(env: str | None, file: Path | None) -> str:
        if env and os.environ.get(env):
            return f"**** (from ${env})"
        if file is not None and file.is_file():
            return f"**** (from {file})"
        return "not set"

    lines = [
        f"# secret key_encryption_key: {status(settings.secrets.key_encryption_key_env, settings.secrets.key_encryption_key_file)}"
    ]
    lines.append(f"# secret audit_key: {status(settings.secrets.audit_key_env, settings.secrets.audit_key_file)}")
    lines.append(
        f"# secret smtp.password: {status(settings.smtp.password_env, settings.smtp.password_file)}"
        if settings.smtp.username
        else "# secret smtp.password: not used"
    )
    for desk_id, desk in settings.desks.items():
        box = desk.mailbox
        if box.auth == "password":
            lines.append(f"# secret desks.{desk_id}.mailbox.password: {status(box.password_env, box.password_file)}")
        else:
            lines.append(f"# secret desks.{desk_id}.mailbox.token: from command {box.token_command[0]!r}")
    return lines
