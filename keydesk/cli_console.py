"""`keydesk console` and `keydesk staff …`: the staff console and its accounts. Parse and print only:
the console is built by ``keydesk/composition.py``."""

from __future__ import annotations

import getpass
import json
import sys

import typer
from sqlmodel import Session

from console.accounts import add_staff, disable_staff, list_staff, new_api_token, set_password
from foundation.errors import UserFacingError
from keydesk.composition import build_app, listen_for
from keydesk.runtime import Runtime
from web.server import serve_forever

staff_app = typer.Typer(help="Staff accounts of the console (職員アカウント).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("console")(console)
    app.add_typer(staff_app, name="staff")


# -- keydesk console ----------------------------------------------------------------------------


def console(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default: [console] host, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port (default: [console] port, 8080)."),
) -> None:
    """Serve the staff console (職員画面) in the foreground until Ctrl-C."""
    runtime: Runtime = ctx.obj
    listen = listen_for(runtime, host, port)
    listen.check()
    app = build_app(runtime)
    typer.echo(f"職員画面を起動しました: {listen.scheme}://{listen.host}:{listen.port}/ (Ctrl-C で停止します)")
    serve_forever(app, listen)


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
        raise UserFacingError("2回入力したパスワードが一致しません")
    return first


@staff_app.command("add")
def staff_add(
    ctx: typer.Context,
    login: str = typer.Argument(..., help="Login name (lower-case letters, digits, . _ -)."),
    name: str = typer.Option(..., "--name", help="The person's name as shown in the audit trail, e.g. 山田 花子."),
    role: str = typer.Option("clerk", "--role", help="clerk (sees only their departments) or admin (sees all)."),
    department: list[str] = typer.Option([], "--department", help="A department id of rules.toml; repeat for more."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from stdin (else prompt without echo)."
    ),
) -> None:
    """Add a staff account."""
    runtime: Runtime = ctx.obj
    password = _read_password(password_stdin)
    with Session(runtime.engine) as session:
        account = add_staff(
            session,
            login=login,
            name=name,
            role=role,
            departments=list(department),
            password=password,
            known_departments=_departments(runtime),
            desk=_desk(runtime),
        )
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
        disable_staff(session, login, _desk(runtime))
        session.commit()
    typer.echo(f"職員 {login} を無効にしました")


@staff_app.command("passwd")
def staff_passwd(
    ctx: typer.Context,
    login: str = typer.Argument(...),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
) -> None:
    """Set a new password (also unlocks a locked account)."""
    runtime: Runtime = ctx.obj
    password = _read_password(password_stdin)
    with Session(runtime.engine) as session:
        set_password(session, login, password, _desk(runtime))
        session.commit()
    typer.echo(f"職員 {login} のパスワードを変更しました")


@staff_app.command("token")
def staff_token(ctx: typer.Context, login: str = typer.Argument(...)) -> None:
    """Issue an API token for scripts (printed once; replaces the previous one)."""
    runtime: Runtime = ctx.obj
    with Session(runtime.engine) as session:
        token = new_api_token(session, login, _desk(runtime))
        session.commit()
    typer.echo(token)
