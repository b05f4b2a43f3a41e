"""Admin commands: init, config check, db upgrade, audit verify."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from sqlmodel import Session

from keydesk.database import upgrade
from keydesk.errors import UserError
from keydesk.paths import default_config_dir
from keydesk.runtime import Runtime
from keydesk.secret_files import ensure_audit_key, ensure_key_encryption_key, ensure_secret_file, new_password
from keydesk.settings import DEPLOYMENT_FILE, RULES_FILE, Settings, load_settings
from rules.config_base import ConfigError
from store.audit import verify_chain

config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(config_app, name="config")
    app.add_typer(db_app, name="db")
    app.add_typer(audit_app, name="audit")


def init(
    directory: Path = typer.Argument(..., metavar="DIR", help="The new config folder; its var/ goes beside it."),
) -> None:
    """Write a fresh, commented configuration set to DIR (and create its secrets beside it)."""
    directory = directory.expanduser().resolve()
    if (directory / DEPLOYMENT_FILE).exists() or (directory / RULES_FILE).exists():
        raise UserError(f"{directory} already holds a configuration; nothing was changed")
    source = default_config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for name in (DEPLOYMENT_FILE, RULES_FILE):
        shutil.copyfile(source / name, directory / name)
    if (source / "templates").is_dir():
        shutil.copytree(source / "templates", directory / "templates", dirs_exist_ok=True)
    (directory / "trust").mkdir(exist_ok=True)
    settings = load_settings(directory)
    create_missing_secrets(settings)
    typer.echo(f"設定ファイルを作成しました: {directory}")
    typer.echo(f"  next: KEYDESK_CONFIG={directory} keydesk db upgrade")


def create_missing_secrets(settings: Settings) -> None:
    """The key-encryption key and the embedded mail users' passwords, when not provided."""
    ensure_key_encryption_key(settings.secrets.key_encryption_key_env, settings.secrets.key_encryption_key_file)
    ensure_audit_key(settings.secrets.audit_key_env, settings.secrets.audit_key_file)
    if settings.embedded.enabled:
        for user in settings.embedded.users:
            if user.password_file is not None:
                ensure_secret_file(user.password_file, new_password, f"password of {user.address}")


@config_app.command("check")
def config_check(
    ctx: typer.Context,
    connect: bool = typer.Option(False, "--connect", help="Also log in to the SMTP server and every desk's "
                                 "mailbox at once (one line each, 20 s at most); exit 1 if one fails."),
) -> None:
    """Validate keydesk.toml and rules.toml and print the resolved configuration (secrets masked)."""
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    typer.echo(f"# config folder: {settings.config_dir}")
    typer.echo(f"# deployment home: {settings.home}")
    for line in describe_settings(settings):
        typer.echo(line)
    check_templates(settings)
    typer.echo("# 設定は正常です (configuration OK)")
    if connect:
        from keydesk.connection_check import check_all

        results = check_all(settings)
        for result in results:
            typer.echo(result.line())
        if not all(result.ok for result in results):
            typer.echo("# 接続できないサーバーがあります (a server could not be used; see the NG lines)", err=True)
            raise typer.Exit(1)
        typer.echo("# すべてのサーバーに接続できました (every server accepted the login)")


def check_templates(settings: Settings) -> None:
    """Every template the mailer uses exists and parses (a broken one would stop replies)."""
    import jinja2

    from mailer.digest import HTML_TEMPLATE, TEXT_TEMPLATE
    from mailer.reply import (BODY_TEMPLATE, SHORT_BODY_TEMPLATE, SHORT_SUBJECT_TEMPLATE, SUBJECT_TEMPLATE,
                              template_environment)

    environment = template_environment(settings.config_dir / "templates")
    problems = []
    for name in (SUBJECT_TEMPLATE, BODY_TEMPLATE, SHORT_SUBJECT_TEMPLATE, SHORT_BODY_TEMPLATE, TEXT_TEMPLATE,
                 HTML_TEMPLATE):
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
    data = settings.model_dump(mode="json", exclude={"home", "config_dir"})
    lines: list[str] = []
    _flatten("", data, lines)
    lines += _secret_status(settings)
    return lines


def _flatten(prefix: str, value, lines: list[str]) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, inner, lines)
    else:
        lines.append(f"{prefix} = {_show(prefix, value)}")


def _show(key: str, value) -> str:
    if key.endswith("url") and isinstance(value, str) and "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return repr(f"{scheme}://{user}:****@{host}")
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _secret_status(settings: Settings) -> list[str]:
    import os

    def status(env: str | None, file: Path | None) -> str:
        if env and os.environ.get(env):
            return f"**** (from ${env})"
        if file is not None and file.is_file():
            return f"**** (from {file})"
        return "not set"

    lines = [f"# secret key_encryption_key: {status(settings.secrets.key_encryption_key_env, settings.secrets.key_encryption_key_file)}"]
    lines.append(f"# secret audit_key: {status(settings.secrets.audit_key_env, settings.secrets.audit_key_file)}")
    lines.append(f"# secret smtp.password: {status(settings.smtp.password_env, settings.smtp.password_file)}" if settings.smtp.username else "# secret smtp.password: not used")
    for desk_id, desk in settings.desks.items():
        box = desk.mailbox
        if box.auth == "password":
            lines.append(f"# secret desks.{desk_id}.mailbox.password: {status(box.password_env, box.password_file)}")
        else:
            lines.append(f"# secret desks.{desk_id}.mailbox.token: from command {box.token_command[0]!r}")
    return lines


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or upgrade the database schema to the current version."""
    runtime: Runtime = ctx.obj
    create_missing_secrets(runtime.settings)
    before, after = upgrade(runtime.raw_engine)
    if before == after:
        typer.echo(f"データベースは最新です (schema {after})")
    else:
        typer.echo(f"データベースを更新しました: {before or '(空)'} → {after}")


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Recompute the audit trail's hash chain; exit 1 if any event was changed or removed."""
    runtime: Runtime = ctx.obj
    with Session(runtime.engine) as session:
        report = verify_chain(session)
    if report.intact:
        typer.echo(f"監査ログは改ざんされていません ({report.events} 件{'、鍵付き' if report.keyed else ''})")
        for desk, tail in sorted((report.tails or {}).items()):
            typer.echo(f"  {desk}: 最新 {tail[:16]}…")
        return
    typer.echo(
        f"監査ログの連鎖が event {report.first_broken_id} で切れています: {report.reason}", err=True
    )
    raise typer.Exit(1)
