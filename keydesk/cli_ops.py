"""Operating commands: status (and the metrics it feeds), backup, restore, purge."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import typer

from foundation.status import StatusReport
from keydesk.runtime import Runtime


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of text."),
    connect: bool = typer.Option(True, "--connect/--no-connect", help="Log in to the SMTP server and every "
                                 "mailbox now (default) or report only what the database knows."),
) -> None:
    """Per desk: last intake pass, servers reachable now, outbox, quarantined and needs_review mails,
    next digest. Exit 0 when healthy, 1 when something needs a person."""
    from keydesk.status import gather

    runtime: Runtime = ctx.obj
    report = gather(runtime.settings, runtime.engine, connect=connect)
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        for line in describe(report, ZoneInfo(runtime.settings.timezone)):
            typer.echo(line)
    if not report.healthy:
        raise typer.Exit(1)


def describe(report: StatusReport, zone: ZoneInfo) -> list[str]:
    def when(moment: datetime | None) -> str:
        if moment is None:
            return "まだありません"
        ago = int((report.at - moment).total_seconds() // 60)
        shown = moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        return f"{shown} ({ago} 分前)" if ago >= 0 else shown

    lines = []
    if report.smtp is not None:
        lines.append(f"SMTP: {'接続できます' if report.smtp.ok else '接続できません'} — {report.smtp.message}")
    for desk in report.desks:
        problems = report.problems[desk.desk]
        lines.append(f"{desk.name} ({desk.desk}): {'正常' if not problems else '要対応'}")
        lines.append(f"  最後の受信処理: {when(desk.last_poll_at)}")
        if desk.mailbox is not None:
            lines.append(f"  メールボックス: {'接続できます' if desk.mailbox.ok else '接続できません'} — {desk.mailbox.message}")
        o = desk.outbox
        lines.append(f"  送信: 送信待ち {o.pending} 件、再試行待ち {o.held} 件、失敗 {o.failed} 件、未確認 {o.unconfirmed} 件")
        lines.append(f"  隔離 {desk.quarantined} 通、要確認 {desk.needs_review} 通")
        next_digest = desk.next_digest_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if desk.next_digest_at else "-"
        lines.append(f"  次のダイジェスト: {next_digest}")
        for problem in problems:
            lines.append(f"  ! {problem}")
    return lines


def _now() -> datetime:
    return datetime.now(timezone.utc)
