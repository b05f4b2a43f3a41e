"""The look-up across the network: `keydesk guarantor serve`, `keydesk guarantor token …` (the
guarantor's side) and `keydesk manual …` (the desk's clerk, when the guarantor has no API).

Composition only: the service is ``guarantor.service``, the manual look-up ``intake.manual_lookup``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
from sqlmodel import Session

from guarantor.service.tokens import add_token, list_tokens, revoke_tokens
from intake.manual_lookup import parse_facts, pending_lookups, record_manual_lookup, reveal_key
from keydesk.composition import desk_context, guarantor_service_app
from keydesk.command_inputs import desk_id_of, facts_data
from keydesk.runtime import Runtime
from store.states import LookupState
from web.server import Listen, serve_forever

token_app = typer.Typer(help="Bearer tokens of the desks that call the look-up API.", no_args_is_help=True)
manual_app = typer.Typer(
    help="Manual look-ups: the clerk looks the key up on the guarantor's site.", no_args_is_help=True
)


def register(app: typer.Typer, guarantor_app: typer.Typer) -> None:
    guarantor_app.command("serve")(serve)
    guarantor_app.add_typer(token_app, name="token")
    app.add_typer(manual_app, name="manual")


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- keydesk guarantor serve ------------------------------------------------------------------------


def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default: [guarantor.service] host)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="Port (default: [guarantor.service] port)."),
) -> None:
    """Serve the look-up service: the STEP1-3 pages for obligees and the JSON API for desks."""
    runtime: Runtime = ctx.obj
    service = runtime.settings.guarantor.service
    listen = Listen(
        host or service.host,
        service.port if port is None else port,
        service.tls_cert_file,
        service.tls_key_file,
        what="guarantor.service",
    )
    # A listen address refused or the port taken is a KeydeskError: keydesk.cli.main prints one line.
    listen.check()
    app = guarantor_service_app(runtime)
    typer.echo(f"照会サービスを {listen.scheme}://{listen.host}:{listen.port}/ で開始します。Ctrl-C で停止します。")
    serve_forever(app, listen)


# -- keydesk guarantor token ----------------------------------------------------------------------


@token_app.command("add")
def token_add(
    ctx: typer.Context, desk: str = typer.Argument(..., metavar="DESK", help="The desk (town) the token is for.")
) -> None:
    """Make a token for a desk; it is printed once, as the last line, and only its hash is kept."""
    runtime: Runtime = ctx.obj
    with Session(runtime.engine) as session:
        token = add_token(session, desk, _now())
        session.commit()
    typer.echo(f"窓口 {desk} のトークンを発行しました。この画面でのみ表示します。窓口の token_file に保存してください:")
    typer.echo(token)


@token_app.command("list")
def token_list(ctx: typer.Context) -> None:
    """Every token: desk, its first characters, when made, and whether revoked."""
    runtime: Runtime = ctx.obj
    zone = ZoneInfo(runtime.settings.timezone)
    with Session(runtime.engine) as session:
        rows = list_tokens(session)
    if not rows:
        typer.echo("トークンはまだありません(keydesk guarantor token add DESK)")
    for row in rows:
        state = f"失効 {row.revoked_at.astimezone(zone):%Y-%m-%d %H:%M}" if row.revoked_at else "有効"
        typer.echo(f"{row.desk}  {row.hint}…  発行 {row.created_at.astimezone(zone):%Y-%m-%d %H:%M}  {state}")


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    desk: str = typer.Argument(..., metavar="DESK"),
    hint: str | None = typer.Option(
        None, "--token", metavar="START", help="Only the token starting so (see token list)."
    ),
) -> None:
    """Revoke a desk's tokens (or one of them): its look-ups get 401 from now on."""
    runtime: Runtime = ctx.obj
    with Session(runtime.engine) as session:
        rows = revoke_tokens(session, desk, _now(), hint=hint)
        session.commit()
    typer.echo(f"窓口 {desk} のトークン {len(rows)} 件を失効させました")


# -- keydesk manual -------------------------------------------------------------------------------


_STATES = {
    LookupState.MANUAL: "手入力照会",
    LookupState.STAFF: "照会サービス不通(再試行終了)",
    LookupState.HELD: "自動再照会待ち",
}


@manual_app.command("list")
def manual_list(ctx: typer.Context, desk: str | None = typer.Option(None, "--desk")) -> None:
    """What waits for a clerk's look-up: receipt number, 保証契約番号, masked key, since when."""
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    desk_id = desk_id_of(settings, desk)
    zone = ZoneInfo(settings.timezone)
    with Session(runtime.engine) as session:
        items = pending_lookups(session, desk_id)
    site = settings.desks[desk_id].lookup.lookup_site_url
    typer.echo(f"照会待ち {len(items)} 件" + (f"(照会サイト: {site})" if site else ""))
    for item in items:
        typer.echo(
            f"  {item.receipt_no}  {item.received_at.astimezone(zone):%m/%d %H:%M}  "
            f"保証契約番号 {item.guarantee_no or '(不明)'}  認証キー {item.access_key_masked or '(不明)'}  "
            f"{_STATES.get(item.state, item.state)}  {item.sender}"
        )
    if items:
        typer.echo(
            "認証キーの表示: keydesk manual reveal 受付番号 --staff 氏名 / "
            "結果の記録: keydesk manual record 受付番号 --staff 氏名 --facts ファイル(- で標準入力)"
        )


@manual_app.command("reveal")
def manual_reveal(
    ctx: typer.Context,
    receipt_no: str = typer.Argument(..., metavar="RECEIPT_NO"),
    staff: str = typer.Option(..., "--staff", help="Your name (recorded in the audit trail)."),
    guarantee_no: str | None = typer.Option(None, "--guarantee-no", help="When the mail holds several guarantees."),
    desk: str | None = typer.Option(None, "--desk"),
) -> None:
    """Show the full 認証キー of a waiting submission, to type on the guarantor's site (audited)."""
    runtime: Runtime = ctx.obj
    desk_id = desk_id_of(runtime.settings, desk)
    with Session(runtime.engine) as session:
        key = reveal_key(
            session,
            runtime.key_vault,
            desk_id,
            receipt_no,
            staff=staff,
            now=_now(),
            guarantee_no=guarantee_no,
            key_format=runtime.settings.rules.documents.access_key,
        )
        session.commit()
    typer.echo(f"受付番号 {receipt_no} の認証キー(表示を記録しました):")
    typer.echo(key)


@manual_app.command("record")
def manual_record(
    ctx: typer.Context,
    receipt_no: str = typer.Argument(..., metavar="RECEIPT_NO"),
    staff: str = typer.Option(..., "--staff", help="Your name (recorded in the audit trail)."),
    facts: Path | None = typer.Option(
        None, "--facts", metavar="FILE", help="The certificate's facts as JSON ('-': standard input)."
    ),
    status: str | None = typer.Option(None, "--status", help="no_match or revoked, when nothing was found."),
    reason: str = typer.Option("", "--reason", help="With --status revoked: the reason the site gives."),
    guarantee_no: str | None = typer.Option(None, "--guarantee-no", help="When the mail holds several guarantees."),
    desk: str | None = typer.Option(None, "--desk"),
) -> None:
    """Record what the guarantor's site shows; the town's rules run on it and the contractor is answered."""
    runtime: Runtime = ctx.obj
    desk_id = desk_id_of(runtime.settings, desk)
    data = facts_data(facts, status, reason)
    with Session(runtime.engine) as session:
        outcome = record_manual_lookup(
            session,
            desk_context(runtime, desk_id),
            receipt_no,
            parse_facts(data),
            staff=staff,
            now=_now(),
            guarantee_no=guarantee_no,
        )
        session.commit()
    typer.echo(
        f"受付番号 {outcome.receipt_no} 保証契約番号 {outcome.guarantee_no}: {outcome.verdict.value}"
        f"{'  (' + ', '.join(outcome.codes) + ')' if outcome.codes else ''}"
    )
    typer.echo(
        "受注者への結果のメールを送信待ちに登録しました"
        if outcome.result_mail_queued
        else "同じメールの別の保証が照会待ちのため、結果のメールはそれがそろってから送ります"
    )
