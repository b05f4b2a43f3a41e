"""Staff commands for the outbox: list, retry, send what is due now."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import typer
from sqlmodel import Session, col, select

from foundation.errors import UserFacingError
from keydesk.composition import connector_for
from keydesk.connection_check import smtp_hint
from keydesk.runtime import Runtime
from mailer import delivery
from mailer.smtp_client import SmtpSession
from store.claim_owner import open_owner
from store.states import OutboxState, RecipientState
from store.tables import OutboxMessage

outbox_app = typer.Typer(help="The outbox: every mail keydesk sends.", no_args_is_help=True)

_STATE_LABELS = {
    delivery.PENDING: "送信待ち",
    delivery.SENDING: "送信中",
    delivery.DATA_SENT: "送信中",
    delivery.SENT: "送信済",
    delivery.FAILED: "送信失敗",
    OutboxState.SUPPRESSED: "送信保留(上限)",  # a reply held back by a rate limit: kept, never sent
}
_RECIPIENT_LABELS = {
    RecipientState.SUPPRESSED: "送信保留",
    delivery.R_PENDING: "送信待ち",
    delivery.R_IN_DATA: "送信中",
    delivery.R_SENT: "送信済",
    delivery.R_UNCONFIRMED: "未確認",
    delivery.R_FAILED: "失敗",
}


def register(app: typer.Typer) -> None:
    app.add_typer(outbox_app, name="outbox")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@outbox_app.command("list")
def outbox_list(
    ctx: typer.Context,
    failed: bool = typer.Option(False, "--failed", help="Only mails that failed or whose delivery is unconfirmed."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
) -> None:
    """Show the outbox, newest first."""
    runtime: Runtime = ctx.obj
    from keydesk.status import bounced_outbox_ids, failed_condition

    query = select(OutboxMessage).order_by(col(OutboxMessage.id).desc()).limit(limit)
    with Session(runtime.engine) as session:
        # A reply the server took but a delivery report brought back is as failed as a refused one.
        bounced = bounced_outbox_ids(session)
        if failed:
            # Rows that are sent but lost a recipient (or are unconfirmed, or bounced) also need a person.
            query = query.where(failed_condition(bounced))
        rows = session.exec(query).all()
    if not rows:
        typer.echo("該当する送信メールはありません" if failed else "送信メールはありません")
        return
    typer.echo("ID\t状態\t種別\t試行\t次回/送信日時\t宛先")
    for row in rows:
        when = row.sent_at if row.state == delivery.SENT else row.next_attempt_at
        recipients = ", ".join(
            f"{address}({_RECIPIENT_LABELS.get(state, state)})"
            for address, state in json.loads(row.recipient_states_json or "{}").items()
        )
        state = "不達 (エラー通知あり)" if row.id in bounced else _STATE_LABELS.get(row.state, row.state)
        typer.echo(
            f"{row.id}\t{state}\t{row.kind}\t{row.attempts}\t"
            f"{when.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M UTC') if when else '-'}\t{recipients}"
        )
        if row.last_error:
            typer.echo(f"\t{row.last_error}")


@outbox_app.command("retry")
def outbox_retry(ctx: typer.Context, row_id: int = typer.Argument(..., metavar="ID")) -> None:
    """Send a failed (or unconfirmed) mail again at the next delivery; sent recipients are skipped."""
    runtime: Runtime = ctx.obj
    try:
        again = delivery.retry(runtime.engine, row_id, _now(), actor="cli")
    except delivery.RetryRefused as exc:
        message = {
            "unknown": f"送信メール {row_id} は見つかりません",
            "busy": f"送信メール {row_id} は送信中です。しばらくしてからやり直してください",
            "nothing": f"送信メール {row_id} はすべての宛先に送信済みです",
        }[exc.reason]
        raise UserFacingError(message) from None
    typer.echo(f"送信メール {row_id} を再送します: {', '.join(again)}")
    typer.echo("  次の送信処理 (keydesk outbox send または keydesk run) で送られます")


@outbox_app.command("send")
def outbox_send(ctx: typer.Context) -> None:
    """Deliver every mail that is due now, once, over one reused connection."""
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    engine = runtime.engine
    session = SmtpSession(connector_for(settings))
    with open_owner(engine, settings.home / "var" / "locks") as owner:
        report = delivery.deliver_due(engine, session, settings.outbox, now=_now(), owner=owner)
    typer.echo(
        f"送信済 {report.sent} 件、再試行待ち {report.retry_later} 件、失敗 {report.failed} 件、"
        f"未確認 {report.unconfirmed} 件"
    )
    if report.connection_error:
        raise UserFacingError(
            f"SMTP サーバーに接続できませんでした: {report.connection_error}{smtp_hint(settings, report.connection_error)}"
        )
