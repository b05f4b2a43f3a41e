"""Staff and admin commands around the decision: `keydesk verify`, `keydesk contracts import`,
`keydesk rules check [--replay N]`.

Composition only: reading files, opening the database and wiring the ports; the verifier and the
rules decide, ``intake.register_store`` imports and reads the register.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import List, Optional
from zoneinfo import ZoneInfo

import typer
from sqlmodel import Session, select

from guarantor.keys import load_trusted_keys
from intake.mime import MailDocument, MailLimits, is_pdf, walk_headers
from intake.register_store import (
    DbAcceptedIndex, DbContractRegister, import_contracts, submission_certificate,
)
from intake.walk_worker import walk_bounded
from intake.verify_inputs import input_document, key_patterns, preview_reply, too_large_context, verify_inputs
from keydesk.composition import lookup_service
from keydesk.errors import UserError
from keydesk.runtime import Runtime
from keydesk.settings import Settings
from rules.evaluate import RULE_CODES, evaluate
from rules.findings import CODES, VERDICT_LABELS, Verdict, label_of, strongest
from rules.signatures import DocumentKind
from store.audit import record as audit
from store.tables import InboundMessage, Submission
from verifier.csv_table import CsvTableError
from verifier.pdf_text import PdfLimits, PdfTextWorker
from verifier.register import find_contract
from verifier.verify import MailContext, MailVerdict, Ports, verify_mail

contracts_app = typer.Typer(help="The town's contract register (契約台帳).", no_args_is_help=True)
rules_app = typer.Typer(help="The town's rules (config/rules.toml).", no_args_is_help=True)

MAX_CSV_BYTES = 20 * 1024 * 1024


def register(app: typer.Typer) -> None:
    """Add `verify`, `contracts …` and `rules …` to the keydesk app (once)."""
    if any(group.name == "contracts" for group in app.registered_groups):
        return
    app.command("verify")(verify)
    app.add_typer(contracts_app, name="contracts")
    app.add_typer(rules_app, name="rules")


def _desk_id(settings: Settings, desk: str | None) -> str:
    if desk is not None:
        if desk not in settings.desks:
            raise UserError(f"窓口 {desk!r} は設定にありません(設定済み: {', '.join(sorted(settings.desks))})")
        return desk
    if len(settings.desks) == 1:
        return next(iter(settings.desks))
    raise UserError(f"窓口が複数あります。--desk で指定してください({', '.join(sorted(settings.desks))})")


def _now(settings: Settings) -> datetime:
    return datetime.now(ZoneInfo(settings.timezone))


def _read_bounded(path: Path, limit: int, what: str) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise UserError(f"{path}: {what}が大きすぎます({size} バイト、上限 {limit} バイト)")
    return path.read_bytes()


# ------------------------------------------------------------------------------------------
# keydesk verify
# ------------------------------------------------------------------------------------------


def verify(
    ctx: typer.Context,
    paths: List[Path] = typer.Argument(..., metavar="PATH…", help="Key notice PDFs (.pdf) or whole mails (.eml)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line per PATH."),
    desk: Optional[str] = typer.Option(None, "--desk", help="The desk whose rules apply (default: the only one)."),
) -> None:
    """Say what a PDF or a mail is and whether the desk would accept it. Records nothing."""
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    desk_id = _desk_id(settings, desk)
    limits = settings.limits
    pdf_limits = PdfLimits(max_bytes=limits.pdf_max_bytes, cpu_seconds=limits.pdf_cpu_seconds,
                           memory_bytes=limits.pdf_memory_mb * 1024 * 1024)
    trusted = load_trusted_keys(settings.guarantor.trust_directory)
    lookup = lookup_service(runtime, desk_id, record=False)  # records nothing, look-up failures included
    failed = False
    with PdfTextWorker(pdf_limits) as worker, Session(runtime.engine) as session:
        ports = Ports(lookup, DbContractRegister(session), DbAcceptedIndex(session), trusted)
        for path in paths:
            try:
                documents, context, mail = _inputs(path, settings, desk_id, worker.extract)
            except (UserError, OSError) as error:
                failed = True
                _print_error(path, error, as_json)
                continue
            result = verify_mail(documents, context, settings.rules.desks[desk_id], settings.rules.documents,
                                 ports, _now(settings))
            _print_result(path, result, as_json, _reply_preview(settings, desk_id, mail, result))
        session.rollback()  # nothing the adapters read is ever written back
    if failed:
        raise typer.Exit(1)


_HEADER_READ_BYTES = 256 * 1024


def _inputs(path: Path, settings: Settings, desk_id: str, read_pdf):
    """(documents, context, (raw headers, walked mail) or None for a bare PDF)."""
    suffix = path.suffix.lower()
    limits = settings.limits
    authserv_id = settings.desks[desk_id].authserv_id
    if suffix == ".pdf":
        data = _read_bounded(path, limits.mail_max_bytes, "ファイル")
        document = MailDocument(display_name=path.name, content=data, sha256="", declared_type="application/pdf",
                                is_pdf=is_pdf(data), path=(path.name,))
        return [input_document(document, read_pdf)], MailContext(desk=desk_id), None
    if suffix == ".eml":
        if path.stat().st_size > limits.mail_max_bytes:
            with path.open("rb") as handle:
                head = handle.read(_HEADER_READ_BYTES)
            walked = walk_headers(head, authserv_id=authserv_id)
            if walked.automatic:  # automatic mail is recognised from its headers, whatever its size
                return (*verify_inputs(walked, desk_id, read_pdf), (head, walked))
            return [], too_large_context(desk_id, limits.mail_max_bytes), (head, walked)
        raw = path.read_bytes()
        walked = walk_headers(raw, authserv_id=authserv_id)
        if not walked.automatic:
            walked = walk_bounded(raw, authserv_id=authserv_id, limits=MailLimits.from_settings(limits),
                                  key_patterns=key_patterns(settings.rules.documents.patterns))
        return (*verify_inputs(walked, desk_id, read_pdf), (raw, walked))
    raise UserError(f"{path}: .pdf または .eml のファイルを指定してください")


def _reply_preview(settings: Settings, desk_id: str, mail, result: MailVerdict) -> dict:
    """The ``"reply"`` object: whether the desk would answer, to whom, and why (rate limits aside)."""
    if mail is None:
        return {"send": False, "to": None, "reason": "a PDF file alone has no sender to answer"}
    raw, walked = mail
    desk = settings.desks[desk_id]
    return preview_reply(raw, walked, result, desk_address=desk.address, policy=desk.reply_to).to_json()


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
        numbers = ", ".join(f"{n or '番号不明'} {k or ''}".strip() for n, k in
                            zip(document.guarantee_nos, document.access_keys_masked))
        typer.echo(f"  書類: {document.name} … {document.kind.value}{'  ' + numbers if numbers else ''}")
    for guarantee in result.guarantees:
        typer.echo(f"  保証 {guarantee.guarantee_no or '番号不明'}: {VERDICT_LABELS[guarantee.verdict]}"
                   f"{'  部署 ' + guarantee.department if guarantee.department else ''}")
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
    data = _read_bounded(file, MAX_CSV_BYTES, "CSVファイル")
    now = _now(settings)
    with Session(runtime.engine) as session:
        try:
            report = import_contracts(session, data, settings.rules.desks, now, dry_run=dry_run)
        except CsvTableError as error:
            raise UserError(f"{file}: {error}") from None
        if dry_run:
            session.rollback()
        else:
            for desk_id, count in sorted(report.by_desk.items()):
                audit(session, desk_id, "cli", "contracts.import", file.name,
                      {"rows": count, "errors": len(report.errors)}, at=now)
            session.commit()
    verb = "取り込むと次のとおりになります(まだ書き込んでいません)" if dry_run else "契約台帳を取り込みました"
    typer.echo(f"{verb}: 新規 {report.created} 件、更新 {report.updated} 件、変更なし {report.unchanged} 件"
               f"{f'、エラー {len(report.errors)} 行' if report.errors else ''}")
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
    replay: int = typer.Option(0, "--replay", metavar="N", min=0,
                               help="Re-evaluate the last N recorded submissions and list changed verdicts."),
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
            changes, skipped, total = replay_submissions(session, settings, replay)
            session.rollback()
        verdicts = [c for c in changes if c.verdict_changed]
        reasons = [c for c in changes if not c.verdict_changed]
        typer.echo(f"直近 {total} 件の保証を現在のルールで再評価しました: 判定が変わるもの {len(verdicts)} 件"
                   f"{f'、理由だけが変わるもの {len(reasons)} 件' if reasons else ''}"
                   f"{f'、再評価できないもの {skipped} 件' if skipped else ''}")
        for change in verdicts + reasons:
            typer.echo(f"  {change.line()}")


@dataclass(frozen=True)
class ReplayChange:
    """What the current rules would decide differently for one recorded guarantee."""

    receipt_no: str
    guarantee_no: str
    old_verdict: str
    new_verdict: str
    added: tuple[str, ...]
    resolved: tuple[str, ...]
    old_department: str | None
    new_department: str | None

    @property
    def verdict_changed(self) -> bool:
        return self.old_verdict != self.new_verdict

    def line(self) -> str:
        def named(codes: tuple[str, ...]) -> str:
            return ", ".join(f"{code}({label_of(code)})" for code in codes)

        line = f"{self.receipt_no} {self.guarantee_no}: {self.old_verdict} → {self.new_verdict}"
        if self.verdict_changed:
            line += f"({VERDICT_LABELS[Verdict(self.old_verdict)]} → {VERDICT_LABELS[Verdict(self.new_verdict)]})"
        else:
            line += "(判定は変わりません)"
        if self.added:
            line += f"  追加: {named(self.added)}"
        if self.resolved:
            line += f"  解消: {named(self.resolved)}"
        if self.new_department and self.new_department != self.old_department:
            line += f"  部署: {self.old_department} → {self.new_department}"
        return line


def replay_submissions(session: Session, settings: Settings, limit: int) -> tuple[list[ReplayChange], int, int]:
    """(what would change, submissions that could not be replayed, submissions seen)."""
    rows = session.exec(
        select(Submission, InboundMessage.receipt_no)
        .join(InboundMessage, Submission.inbound_id == InboundMessage.id)
        .order_by(Submission.id.desc()).limit(limit)
    ).all()
    register, accepted = DbContractRegister(session), DbAcceptedIndex(session)
    changes: list[ReplayChange] = []
    skipped = 0
    for submission, receipt_no in rows:
        rules = settings.rules.desks.get(submission.desk)
        certificate = submission_certificate(submission)
        kept = [code for code in _stored_codes(submission.findings_json) if code not in RULE_CODES]
        if rules is None or certificate is None or any(c.startswith(("lookup.", "cert.signature", "key.")) for c in kept):
            # No certificate the rules could judge (unknown, unread or untrusted): nothing to replay.
            skipped += 1
            continue
        contract = find_contract(register, submission.desk, certificate)
        number = contract.contract_no if contract else certificate.contract_no
        findings = evaluate(
            certificate, rules, contract=contract,
            previous_receipt=accepted.receipt_for(submission.desk, certificate.guarantee_no, before_id=submission.id),
            other_advances=accepted.advance_amounts(submission.desk, number),
        )
        new_codes = [f.code for f in findings]
        verdict = strongest([CODES[c].verdict for c in kept if c in CODES] + [f.verdict for f in findings])
        department = rules.department_for(certificate.guarantee_type)
        old_codes = [c for c in _stored_codes(submission.findings_json) if c in RULE_CODES]
        added = tuple(sorted(set(new_codes) - set(old_codes)))
        resolved = tuple(sorted(set(old_codes) - set(new_codes)))
        if verdict.value != submission.verdict or added or resolved or (department and department != submission.department):
            changes.append(ReplayChange(receipt_no or "(受付番号なし)", certificate.guarantee_no, submission.verdict,
                                        verdict.value, added, resolved, submission.department, department))
    return changes, skipped, len(rows)


def _stored_codes(findings_json: str | None) -> list[str]:
    """Codes of a submission's stored findings: a list of objects with "code" (or of plain codes)."""
    try:
        data = json.loads(findings_json or "[]")
    except json.JSONDecodeError:
        return []
    codes = []
    for item in data if isinstance(data, list) else []:
        code = item.get("code") if isinstance(item, dict) else item
        if isinstance(code, str):
            codes.append(code)
    return codes

