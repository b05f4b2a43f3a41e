"""Admin commands: init, config check, db upgrade, audit verify."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlmodel import Session

from keydesk.database import upgrade
from keydesk.deployment import create_config, create_missing_secrets
from keydesk.config_report import check_templates, describe_settings
from keydesk.runtime import Runtime
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
    directory = create_config(directory)
    typer.echo(f"設定ファイルを作成しました: {directory}")
    typer.echo(f"  next: KEYDESK_CONFIG={directory} keydesk db upgrade")


@config_app.command("check")
def config_check(
    ctx: typer.Context,
    connect: bool = typer.Option(
        False,
        "--connect",
        help="Also log in to the SMTP server and every desk's "
        "mailbox at once (one line each, 20 s at most); exit 1 if one fails.",
    ),
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
    typer.echo(f"監査ログの連鎖が event {report.first_broken_id} で切れています: {report.reason}", err=True)
    raise typer.Exit(1)
