"""Operating commands: status (and the metrics it feeds), backup, restore, purge."""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import typer

from foundation.errors import UsageProblem
from foundation.status import StatusReport
from rules.findings import VERDICT_LABELS, Verdict
from keydesk.command_inputs import read_passphrase
from keydesk.runtime import Runtime

PASSPHRASE_ENV = "KEYDESK_BACKUP_PASSPHRASE"


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("backup")(backup)
    app.command("restore")(restore)
    app.command("purge")(purge)


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of text."),
    connect: bool = typer.Option(
        True,
        "--connect/--no-connect",
        help="Log in to the SMTP server and every mailbox now (default) or report only what the database knows.",
    ),
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
            lines.append(
                f"  メールボックス: {'接続できます' if desk.mailbox.ok else '接続できません'} — {desk.mailbox.message}"
            )
        o = desk.outbox
        lines.append(
            f"  送信: 送信待ち {o.pending} 件、再試行待ち {o.held} 件、失敗 {o.failed} 件、未確認 {o.unconfirmed} 件"
        )
        lines.append(f"  隔離 {desk.quarantined} 通、{VERDICT_LABELS[Verdict.NEEDS_REVIEW]} {desk.needs_review} 通")
        next_digest = desk.next_digest_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if desk.next_digest_at else "-"
        lines.append(f"  次のダイジェスト: {next_digest}")
        for problem in problems:
            lines.append(f"  ! {problem}")
    return lines


def backup(
    ctx: typer.Context,
    file: Path = typer.Argument(..., metavar="FILE", help="The archive to write (.tar.gz, mode 0600)."),
    with_secrets: bool = typer.Option(
        False,
        "--with-secrets",
        help="Also the keys and password files under the "
        "home, encrypted with a passphrase ($KEYDESK_BACKUP_PASSPHRASE or "
        "--passphrase-file).",
    ),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="Read the passphrase here."),
) -> None:
    """A consistent copy while the daemon runs: database (SQLite online backup or pg_dump), raw mails and
    documents, config; secrets only with --with-secrets, encrypted."""
    from keydesk.backup import make_backup

    runtime: Runtime = ctx.obj
    passphrase = read_passphrase(PASSPHRASE_ENV, passphrase_file) if with_secrets else None
    if with_secrets and not passphrase:
        raise UsageProblem(f"--with-secrets needs a passphrase: set ${PASSPHRASE_ENV} or --passphrase-file")
    _ = runtime.engine  # refuses an outdated schema before anything is written
    summary = make_backup(runtime.settings, runtime.settings.database_url(), file, passphrase=passphrase)
    secrets = f"秘密情報 {summary.secrets} 件 (暗号化)" if summary.secrets else "秘密情報なし"
    typer.echo(f"バックアップを作成しました: {summary.path}")
    typer.echo(
        f"  データベース {summary.database} (schema {summary.revision})、保存ファイル {summary.stored_files} 件、{secrets}"
    )


def restore(
    file: Path = typer.Argument(..., metavar="FILE", help="An archive written by keydesk backup."),
    home: Path = typer.Option(
        ..., "--home", help="The new deployment home (absent or empty); its config/ comes from the backup."
    ),
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="The passphrase of the secrets."),
    database_url_env: str | None = typer.Option(
        None,
        "--database-url-env",
        metavar="NAME",
        help="For a PostgreSQL backup: the variable holding the empty database's URL.",
    ),
) -> None:
    """Restore a backup into an empty home: config, database, raw mails and documents (and secrets)."""
    from keydesk.backup import restore_backup

    url = os.environ.get(database_url_env) if database_url_env else None
    settings = restore_backup(file, home, passphrase=read_passphrase(PASSPHRASE_ENV, passphrase_file), database_url=url)
    typer.echo(f"復元しました: {settings.home}")
    typer.echo(f"  next: KEYDESK_CONFIG={settings.config_dir} keydesk audit verify")


def purge(
    ctx: typer.Context,
    before: str = typer.Option(
        ...,
        "--before",
        metavar="DATE",
        help="Remove raw mails and documents that arrived "
        "before this date (YYYY-MM-DD); refused inside the retention period.",
    ),
    desk: str | None = typer.Option(None, "--desk", help="Only this desk (default: every desk)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would go."),
) -> None:
    """Remove raw mails and documents past the retention period; rows and the audit trail stay (audited)."""
    from keydesk.composition import desk_ids, raw_store
    from keydesk.retention import check_before, purge as purge_desk

    runtime: Runtime = ctx.obj
    settings = runtime.settings
    zone = ZoneInfo(settings.timezone)
    try:
        day = date.fromisoformat(before)
    except ValueError:
        raise UsageProblem(f"--before: {before!r} is not a date such as 2020-04-01") from None
    check_before(day, datetime.now(zone).date(), settings.retention.years)
    for desk_id in desk_ids(settings, desk):
        report = purge_desk(runtime.engine, raw_store(runtime), desk_id, day, zone, dry_run=dry_run)
        verb = "削除できます" if dry_run else "削除しました"
        typer.echo(
            f"{settings.desks[desk_id].name}: {day.isoformat()} より前のメール {report.mails} 通の"
            f"保存ファイル {report.files_removed} 件を{verb} (新しいメールと共有の {report.files_kept} 件は残します)"
        )
