"""Staff and admin commands around the decision: `keydesk verify`, `keydesk contracts import`,
`keydesk rules check [--replay N]`.

Parse and print: ``keydesk.composition.dry_run_checker`` wires the verifier and the rules to the
register and the look-up for `verify`, ``intake.register_store`` imports and reads the register,
``intake.replay`` replays recorded guarantees.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
from sqlmodel import Session

from intake.verify_file import read_bounded
from intake.replay import ReplayChange, replay_submissions
from intake.register_store import (
    import_contracts,
)
from keydesk import composition
from foundation.errors import UserFacingError
from keydesk.command_inputs import MAX_CSV_BYTES, desk_id_of
from keydesk.runtime import Runtime
from keydesk.settings import Settings
from rules.findings import VERDICT_LABELS, Verdict, label_of
from rules.signatures import DocumentKind
from store.audit import record as audit
from formats.csv_table import CsvTableError
from verifier.verify import MailVerdict

contracts_app = typer.Typer(help="The town's contract register (契約台帳).", no_args_is_help=True)
rules_app = typer.Typer(help="The town's rules (config/rules.toml).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `verify`, `contracts …` and `rules …` to the keydesk app (once)."""
    if any(group.name == "contracts" for group in app.registered_groups):
        return
    app.command("verify")(verify)
    app.add_typer(contracts_app, name="contracts")
    app.add_typer(rules_app, name="rules")


def _now(settings: Settings) -> datetime:
    return datetime.now(ZoneInfo(settings.timezone))


# ------------------------------------------------------------------------------------------
# keydesk verify
# ------------------------------------------------------------------------------------------


def verify(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., metavar="PATH…", help="Key notice PDFs (.pdf) or whole mails (.eml)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line per PATH."),
    desk: str | None = typer.Option(None, "--desk", help="The desk whose rules apply (default: the only one)."),
) -> None:
    """Say what a PDF or a mail is and whether the desk would accept it. Records nothing."""
    runtime: Runtime = ctx.obj
    desk_id = desk_id_of(runtime.settings, desk)
    failed = False
    with composition.dry_run_checker(runtime, desk_id) as check:
        for path in paths:
            try:
                result, reply = check(path)
            except (UserFacingError, OSError) as error:
                failed = True
                _print_error(path, error, as_json)
                continue
            _print_result(path, result, as_json, reply)
    if failed:
        raise typer.Exit(1)


def result_json(path: Path, result: MailVerdict, reply: dict | None = None) -> dict:
    documents = []
    for document in result.documents:
        if document.kind is DocumentKind.KEY_NOTICE and document.guarantee_nos:
            for number, masked in zip(document.guarantee_nos, document.access_keys_masked):
                documents.append({"kind": document.kind.value, "guarantee_no": number, "access_key_masked": masked})
        else:
            documents.append({"kind": document.kind.value, "guarantee_no": None, "access_key_masked": None})
    return {
        "path": str(path),
        "verdict": result.verdict.value,
        "findings": [{"code": f.code, "severity": f.severity.value, "message": f.message} for f in result.all_findings],
        "documents": documents,
        **({"reply": reply} if reply is not None else {}),
    }


def _print_result(path: Path, result: MailVerdict, as_json: bool, reply: dict) -> None:
    if as_json:
        typer.echo(json.dumps(result_json(path, result, reply), ensure_ascii=False))
        return
    typer.echo(f"{path}: {VERDICT_LABELS[result.verdict]} ({result.verdict.value})")
    if reply["send"]:
        typer.echo(f"  返信: {reply['to']} へ送ります{'(短い返信)' if reply.get('short') else ''}")
    else:
        typer.echo(f"  返信: 送りません({reply['reason']})")
    for document in result.documents:
        numbers = ", ".join(
            f"{n or '番号不明'} {k or ''}".strip() for n, k in zip(document.guarantee_nos, document.access_keys_masked)
        )
        typer.echo(f"  書類: {document.name} … {document.kind.value}{'  ' + numbers if numbers else ''}")
    for guarantee in result.guarantees:
        typer.echo(
            f"  保証 {guarantee.guarantee_no or '番号不明'}: {VERDICT_LABELS[guarantee.verdict]}"
            f"{'  部署 ' + guarantee.department if guarantee.department else ''}"
        )
    for finding in result.all_findings:
        typer.echo(f"  - [{finding.code}] {finding.spec.label}: {finding.message or finding.detail}")


def _print_error(path: Path, error: BaseException, as_json: bool) -> None:
    if isinstance(error, OSError):
        message = f"{path}: 読み込めません({error.strerror or error})"
    else:
        message = str(error)
    if as_json:
        typer.echo(json.dumps({"path": str(path), "error": message}, ensure_ascii=False))
    else:
        typer.echo(message, err=True)


# ------------------------------------------------------------------------------------------
# keydesk contracts import
# ------------------------------------------------------------------------------------------


@contracts_app.command("import")
def contracts_import(
    ctx: typer.Context,
    file: Path = typer.Argument(..., metavar="FILE.csv", help="UTF-8 (with or without BOM) or Shift_JIS (CP932)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be created or updated; write nothing."),
) -> None:
    """Fill or update the contract register from a CSV file; bad lines are listed and skipped.

    Columns by keydesk's names or the town's (契約番号, 工事名, 業務区分, 受注者, 請負代金額, 契約日,
    工期末, 前払金額, 中間前払金額, 担当課; optional 低入札, 中間前払金認定日, 認定済); departments by id
    or name; work categories through rules.toml's work_category_aliases.
    """
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    data = read_bounded(file, MAX_CSV_BYTES, "CSVファイル")
    now = _now(settings)
    with Session(runtime.engine) as session:
        try:
            report = import_contracts(session, data, settings.rules.desks, now, dry_run=dry_run)
        except CsvTableError as error:
            raise UserFacingError(f"{file}: {error}") from None
        if dry_run:
            session.rollback()
        else:
            for desk_id, count in sorted(report.by_desk.items()):
                audit(
                    session,
                    desk_id,
                    "cli",
                    "contracts.import",
                    file.name,
                    {"rows": count, "errors": len(report.errors)},
                    at=now,
                )
            session.commit()
    verb = "取り込むと次のとおりになります(まだ書き込んでいません)" if dry_run else "契約台帳を取り込みました"
    typer.echo(
        f"{verb}: 新規 {report.created} 件、更新 {report.updated} 件、変更なし {report.unchanged} 件"
        f"{f'、エラー {len(report.errors)} 行' if report.errors else ''}"
    )
    for change in report.changes if dry_run else ():
        typer.echo(f"  {change}")
    for line, reason in report.errors:
        typer.echo(f"{file.name}:{line}行目: {reason}", err=True)
    if report.errors:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------
# keydesk rules check [--replay N]
# ------------------------------------------------------------------------------------------


@rules_app.command("check")
def rules_check(
    ctx: typer.Context,
    replay: int = typer.Option(
        0, "--replay", metavar="N", min=0, help="Re-evaluate the last N recorded submissions and list changed verdicts."
    ),
) -> None:
    """Validate the rules; with --replay, show which recent verdicts the current rules would change."""
    runtime: Runtime = ctx.obj
    settings = runtime.settings  # loading validates both files (errors name file, key and reason)
    for desk_id, rules in settings.rules.desks.items():
        types = "、".join(t.value for t in rules.eligible_guarantee_types)
        typer.echo(f"{desk_id} ({rules.town}): {rules.start_date} 以降の契約、{types}")
    typer.echo("rules.toml は正常です")
    if replay:
        with Session(runtime.engine) as session:
            changes, skipped, total = replay_submissions(session, settings.rules.desks, replay)
            session.rollback()
        verdicts = [c for c in changes if c.verdict_changed]
        reasons = [c for c in changes if not c.verdict_changed]
        typer.echo(
            f"直近 {total} 件の保証を現在のルールで再評価しました: 判定が変わるもの {len(verdicts)} 件"
            f"{f'、理由だけが変わるもの {len(reasons)} 件' if reasons else ''}"
            f"{f'、再評価できないもの {skipped} 件' if skipped else ''}"
        )
        for change in verdicts + reasons:
            typer.echo(f"  {_change_line(change)}")


def _change_line(change: ReplayChange) -> str:
    def named(codes: tuple[str, ...]) -> str:
        return ", ".join(f"{code}({label_of(code)})" for code in codes)

    line = f"{change.receipt_no or '(受付番号なし)'} {change.guarantee_no}: {change.old_verdict} → {change.new_verdict}"
    if change.verdict_changed:
        line += f"({VERDICT_LABELS[Verdict(change.old_verdict)]} → {VERDICT_LABELS[Verdict(change.new_verdict)]})"
    else:
        line += "(判定は変わりません)"
    if change.added:
        line += f"  追加: {named(change.added)}"
    if change.resolved:
        line += f"  解消: {named(change.resolved)}"
    if change.new_department and change.new_department != change.old_department:
        line += f"  部署: {change.old_department} → {change.new_department}"
    return line
