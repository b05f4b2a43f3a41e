"""`keydesk console` and `keydesk staff …`: the staff console and its accounts. Composition only."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sys
from typing import List, Optional

import typer
from sqlmodel import Session

from console.accounts import add_staff, disable_staff, list_staff, new_api_token, set_password
from console.context import ConsoleContext, DeskView
from console.web.app import create_app
from foundation.errors import UserFacingError
from intake.verify_inputs import key_patterns
from keydesk.composition import desk_profile, raw_store
from keydesk.errors import UserError
from keydesk.runtime import Runtime
from keydesk.secret_files import ensure_secret_file
from keydesk.settings import read_secret
from mailer.reply import template_environment
from web.server import Listen, ServedApp, serve_forever

staff_app = typer.Typer(help="Staff accounts of the console (職員アカウント).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("console")(console)
    app.add_typer(staff_app, name="staff")


# -- wiring -------------------------------------------------------------------------------------

def build_context(runtime: Runtime, on_decision=lambda: None) -> ConsoleContext:
    settings = runtime.settings
    patterns = key_patterns(settings.rules.documents.patterns)
    desks = {
        desk_id: DeskView(profile=desk_profile(runtime, desk_id), rules=settings.rules.desks[desk_id],
                          mailbox=desk.mailbox, key_pattern=patterns[1], key_format=settings.rules.documents.access_key,
                          lookup_site_url=desk.lookup.lookup_site_url)
        for desk_id, desk in settings.desks.items()
    }
    metrics = None
    if settings.metrics.enabled:  # issue 16: /metrics wherever a web service runs, the console included
        from keydesk.status import gather
        from web.metrics import cached_metrics

        metrics = cached_metrics(lambda: gather(settings, runtime.engine), settings.metrics.cache_seconds)
    return ConsoleContext(
        engine=runtime.engine, settings=settings.console, desks=desks, store=raw_store(runtime),
        key_vault=runtime.key_vault, templates=template_environment(settings.config_dir / "templates"),
        lookup_url=settings.guarantor.lookup_url, timezone=settings.timezone, on_decision=on_decision,
        metrics=metrics,
    )


def session_secret(runtime: Runtime) -> str:
    console_settings = runtime.settings.console
    if not os.environ.get(console_settings.session_secret_env):
        ensure_secret_file(console_settings.session_secret_file, lambda: secrets.token_urlsafe(32),
                           "console session secret")
    return read_secret(console_settings.session_secret_env, console_settings.session_secret_file,
                       "console session secret")


def listen_for(runtime: Runtime, host: str | None = None, port: int | None = None) -> Listen:
    s = runtime.settings.console
    return Listen(host or s.host, s.port if port is None else port, s.tls_cert_file, s.tls_key_file, what="console")


def build_app(runtime: Runtime, on_decision=lambda: None):
    return create_app(build_context(runtime, on_decision), session_secret(runtime))


def start_console(runtime: Runtime, on_decision=lambda: None) -> ServedApp:
    """The console in a thread beside the daemon (`keydesk run` with [console] enabled = true)."""
    return ServedApp(build_app(runtime, on_decision), listen_for(runtime)).start()


# -- keydesk console ----------------------------------------------------------------------------

def console(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default: [console] host, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535, help="Port (default: [console] port, 8080)."),
) -> None:
    """Serve the staff console (職員画面) in the foreground until Ctrl-C."""
    runtime: Runtime = ctx.obj
    listen = listen_for(runtime, host, port)
    _user_facing(listen.check)
    app = build_app(runtime)
    typer.echo(f"職員画面を起動しました: {listen.scheme}://{listen.host}:{listen.port}/ (Ctrl-C で停止します)")
    _user_facing(lambda: serve_forever(app, listen))


def _user_facing(action):
    """Run ``action``; a problem worded for the user becomes one line on stderr and its exit code."""
    try:
        return action()
    except UserFacingError as exc:
        for line in exc.user_lines():
            typer.echo(line, err=True)
        raise typer.Exit(exc.exit_code) from None


# -- keydesk staff ------------------------------------------------------------------------------

def _desk(runtime: Runtime) -> str:
    return next(iter(runtime.settings.desks))


def _departments(runtime: Runtime) -> set[str]:
    return {d for rules in runtime.settings.rules.desks.values() for d in rules.departments}


def _read_password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("パスワード: ")
    if getpass.getpass("もう一度: ") != first:
        raise UserError("2回入力したパスワードが一致しません")
    return first


@staff_app.command("add")
def staff_add(
    ctx: typer.Context,
    login: str = typer.Argument(..., help="Login name (lower-case letters, digits, . _ -)."),
    name: str = typer.Option(..., "--name", help="The person's name as shown in the audit trail, e.g. 山田 花子."),
    role: str = typer.Option("clerk", "--role", help="clerk (sees only their departments) or admin (sees all)."),
    department: List[str] = typer.Option([], "--department", help="A department id of rules.toml; repeat for more."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin (else prompt without echo)."),
) -> None:
    """Add a staff account."""
    runtime: Runtime = ctx.obj
    password = _read_password(password_stdin)
    with Session(runtime.engine) as session:
        account = _user_facing(lambda: add_staff(session, login=login, name=name, role=role, departments=list(department),
                                                 password=password, known_departments=_departments(runtime),
                                                 desk=_desk(runtime)))
        session.commit()
        typer.echo(f"職員 {account.login}({account.name}、{account.role})を登録しました")


@staff_app.command("list")
def staff_list(ctx: typer.Context) -> None:
    """List staff accounts."""
    runtime: Runtime = ctx.obj
    with Session(runtime.engine) as session:
        accounts = list_staff(session)
    if not accounts:
        typer.echo("職員アカウントはまだありません(keydesk staff add で登録します)")
    for a in accounts:
        state = "無効" if a.disabled else "有効"
        departments = ",".join(json.loads(a.departments_json)) or "-"
        typer.echo(f"{a.login}\t{a.name}\t{a.role}\t{departments}\t{state}")


@staff_app.command("disable")
def staff_disable(ctx: typer.Context, login: str = typer.Argument(...)) -> None:
    """Disable an account (its sessions and API token stop working at once)."""
    runtime: Runtime = ctx.obj
    with Session(runtime.engine) as session:
        _user_facing(lambda: disable_staff(session, login, _desk(runtime)))
        session.commit()
    typer.echo(f"職員 {login} を無効にしました")


@staff_app.command("passwd")
def staff_passwd(
    ctx: typer.Context, login: str = typer.Argument(...),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
) -> None:
    """Set a new password (also unlocks a locked account)."""
    runtime: Runtime = ctx.obj
    password = _read_password(password_stdin)
    with Session(runtime.engine) as session:
        _user_facing(lambda: set_password(session, login, password, _desk(runtime)))
        session.commit()
    typer.echo(f"職員 {login} のパスワードを変更しました")


@staff_app.command("token")
def staff_token(ctx: typer.Context, login: str = typer.Argument(...)) -> None:
    """Issue an API token for scripts (printed once; replaces the previous one)."""
    runtime: Runtime = ctx.obj
    with Session(runtime.engine) as session:
        token = _user_facing(lambda: new_api_token(session, login, _desk(runtime)))
        session.commit()
    typer.echo(token)
