"""`keydesk digest`: the staff digest on demand (print it, or put it into the outbox)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional
from zoneinfo import ZoneInfo

import typer
from sqlmodel import Session

from keydesk.errors import UserError
from keydesk.runtime import Runtime
from keydesk.settings import Settings
from mailer.digest import DigestTarget, collect, enqueue_digests, render_text
from mailer.reply import TemplateProblem, template_environment


def register(app: typer.Typer) -> None:
    app.command("digest")(digest)


def parse_since(value: str, zone: str) -> datetime:
    """``2026-04-01`` (midnight) or ``2026-04-01T08:30`` in the digest's zone, or with its own offset."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise UserError(
            f"--since の日時を読み取れません: {value!r}(例: 2026-04-01 または 2026-04-01T08:30)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))


def targets_for(settings: Settings, desk: str | None) -> list[DigestTarget]:
    if desk is not None and desk not in settings.desks:
        raise UserError(f"窓口 {desk!r} は設定にありません(設定済み: {', '.join(settings.desks)})")
    return [
        DigestTarget(desk_id, settings.desks[desk_id].name, settings.desks[desk_id].address, settings.rules.desks[desk_id],
                     lookup_site_url=settings.desks[desk_id].lookup.lookup_site_url)
        for desk_id in ([desk] if desk else list(settings.desks))
    ]


def digest(
    ctx: typer.Context,
    print_: bool = typer.Option(False, "--print", help="Print the digest of every department (nothing is sent)."),
    send: bool = typer.Option(False, "--send", help="Put today's digests into the outbox (sent by the outbox delivery)."),
    since: Optional[str] = typer.Option(
        None, "--since", metavar="ISO", help="Start of the period (2026-04-01 or 2026-04-01T08:30; default: the last digest)."
    ),
    desk: Optional[str] = typer.Option(None, "--desk", metavar="ID", help="Only this desk (default: every desk)."),
) -> None:
    """The staff digest: what needs a person, what was accepted or returned, and what failed."""
    if print_ == send:
        raise UserError("--print か --send のどちらか一方を指定してください")
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    zone = settings.digest.timezone
    now = datetime.now(timezone.utc)
    start = parse_since(since, zone) if since else None
    if start is not None and start >= now:
        raise UserError(f"--since が未来の日時です: {since}")
    targets = targets_for(settings, desk)
    env = template_environment(settings.config_dir / "templates")
    try:
        with Session(runtime.engine) as session:
            if print_:
                for target in targets:
                    for item in collect(session, target, now=now, zone=zone, since=start):
                        typer.echo(render_text(item, env))
                        typer.echo("=" * 60)
                return
            for target in targets:
                for outcome in enqueue_digests(session, target, env, now=now, zone=zone, since=start):
                    name = target.rules.departments[outcome.department].name
                    if outcome.created:
                        typer.echo(f"{target.desk_name} {name}: 送信キューに登録しました({outcome.reason}, {outcome.key})")
                    elif outcome.outbox_id is not None:
                        typer.echo(f"{target.desk_name} {name}: 本日分はすでに送信キューにあります(outbox {outcome.outbox_id})")
                    else:
                        typer.echo(f"{target.desk_name} {name}: 送信先(digest_recipients)が未設定のため送りません")
            session.commit()
    except TemplateProblem as exc:
        raise UserError(f"{settings.config_dir.name}/{exc}") from None
