"""Guarantor commands: `keydesk guarantor init|issue|revoke` and `keydesk lookup`.

Composition only: the work is done in ``guarantor/``; this module turns its results into text
for the person at the terminal (Japanese) or JSON lines for scripts.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import typer
from sqlmodel import Session

from guarantor import registry
from guarantor.csv_input import RowError
from guarantor.formatting import certificate_fields
from guarantor.issue import IssuedGuarantee, iter_issue
from guarantor.keys import (
    create_signing_key,
    load_signing_key,
    load_trusted_keys,
    publish_public_key,
    retire_signing_key,
)
from guarantor.lookup_service import RegistryLookup
from intake.revocations import mark_revoked
from foundation.errors import UserFacingError
from keydesk.command_inputs import read_csv
from keydesk.runtime import Runtime
from formats import access_key as keys
from formats import guarantee_no as numbers
from verifier.certificate_signature import SignatureStatus, check_signature, key_id
from verifier.lookup import LookupResult, LookupStatus

guarantor_app = typer.Typer(
    help="The guarantor's side: signing key, issuing guarantees (CSV), revoking, the look-up service.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add `guarantor …` and `lookup` to the keydesk app (once, however often it is called)."""
    if any(group.name == "guarantor" for group in app.registered_groups):
        return
    app.add_typer(guarantor_app, name="guarantor")
    app.command("lookup")(lookup)
    from keydesk import cli_lookup  # serve, token, manual: the look-up across the network

    cli_lookup.register(app, guarantor_app)


def _now(runtime: Runtime) -> datetime:
    return datetime.now(ZoneInfo(runtime.settings.timezone))


@guarantor_app.command("init")
def init(
    ctx: typer.Context,
    rotate: bool = typer.Option(
        False, "--rotate", help="Create a new signing key; the old one is kept aside and stays trusted."
    ),
) -> None:
    """Create the guarantor's Ed25519 signing key and publish its public key to the trust folder."""
    runtime: Runtime = ctx.obj
    settings = runtime.settings.guarantor
    path = settings.signing_key
    if path.exists() and not rotate:
        private_key = load_signing_key(path)
        typer.echo(f"署名鍵はすでにあります: {path}")
    else:
        if rotate and path.exists():
            retired = retire_signing_key(path)
            typer.echo(f"これまでの署名鍵を退避しました: {retired}(公開鍵は引き続き信頼されます)")
        private_key = create_signing_key(path)
        typer.echo(f"署名鍵を作成しました: {path}(ファイルモード 0600)")
    published = publish_public_key(private_key.public_key(), settings.trust_directory)
    typer.echo(f"鍵 ID: {key_id(private_key.public_key())}")
    typer.echo(f"公開鍵(窓口が信頼する鍵): {published}")


@guarantor_app.command("issue")
def issue(
    ctx: typer.Context,
    file: Path = typer.Argument(
        ..., metavar="FILE.csv", help="One guarantee per row (UTF-8, UTF-8 with BOM or CP932)."
    ),
    out: Path | None = typer.Option(None, "--out", metavar="DIR", help="Where to write the PDFs."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per CSV row, with the 認証キー (shown here once and nowhere else)."
    ),
) -> None:
    """Issue a guarantee per CSV row: certificate, 認証キー, PDFs and the contractor's notice.

    Exits 1 when any row was not issued (the other rows are issued all the same).
    """
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    data = read_csv(file)
    out_dir = (out.expanduser() if out is not None else settings.guarantor.output_directory).resolve()
    signing_key = load_signing_key(settings.guarantor.signing_key)
    rows = iter_issue(
        runtime.engine,
        data,
        settings=settings.guarantor,
        signing_key=signing_key,
        out_dir=out_dir,
        now=_now(runtime),
    )
    # Each row is printed as soon as it is committed: its key is shown here once, so it must
    # not wait behind rows that might still fail.
    results = []
    for result in rows:
        results.append(result)
        typer.echo(json.dumps(_json_line(result), ensure_ascii=False) if as_json else _table_line(result))
    if not as_json:
        _print_summary(results, out_dir)
    if any(isinstance(r, RowError) for r in results):
        raise typer.Exit(1)


def _json_line(result: IssuedGuarantee | RowError) -> dict:
    if isinstance(result, RowError):
        return {"line": result.line, "error": result.reason}
    return {
        "line": result.line,
        "guarantee_no": result.guarantee_no,
        "access_key": result.access_key,
        "files": {kind: (str(path) if path is not None else None) for kind, path in result.files.items()},
    }


def _table_line(result: IssuedGuarantee | RowError) -> str:
    if isinstance(result, RowError):
        return f"{result.line}行目  発行できません: {result.reason}"
    c = result.certificate
    return (
        f"{result.line}行目  {c.guarantee_no}  {c.guarantee_type.value}  {c.contractor_name}  "
        f"{c.obligee}  認証キー {keys.mask(result.access_key)}"
    )


def _print_summary(results: list[IssuedGuarantee | RowError], out_dir: Path) -> None:
    if not results:
        typer.echo("発行する行がありません(見出し行のみでした)")
        return
    issued = sum(isinstance(r, IssuedGuarantee) for r in results)
    typer.echo(f"発行 {issued}件 / 発行できなかった行 {len(results) - issued}件")
    if issued:
        typer.echo(f"認証キー等のお知らせ(PDF)ほかの書類の保存先: {out_dir}")
        typer.echo("認証キーは「認証キー等のお知らせ」PDFにのみ記載しています(この一覧では伏せています)。")
        typer.echo(f"受注者あての「電子証書・認証キー登録のお知らせ」を送信待ちに登録しました({issued}件)。")


@guarantor_app.command("revoke")
def revoke(
    ctx: typer.Context,
    guarantee_no: str = typer.Argument(..., metavar="GUARANTEE_NO"),
    reason: str = typer.Option(..., "--reason", help="Why (shown to whoever looks the certificate up)."),
) -> None:
    """Revoke a certificate: look-ups with its key answer 'revoked' with the reason.

    With the embedded look-up the desk shares this database, so a desk that already accepted the
    guarantee is told at once (its next digest lists it under 受付後に失効).
    """
    runtime: Runtime = ctx.obj
    now = datetime.now(timezone.utc)
    with Session(runtime.engine) as session:
        row = registry.revoke(session, guarantee_no, reason, now, actor="cli")
        marked = mark_revoked(session, row.guarantee_no, reason, now, actor="guarantor", desk=row.desk)
        session.commit()
        typer.echo(f"保証契約番号 {row.guarantee_no} の電子証書を失効させました(理由: {row.revoked_reason})")
        if marked:
            typer.echo(f"窓口 {row.desk} で受付済みの保証でした。職員あてのダイジェストでお知らせします。")


def lookup(
    ctx: typer.Context,
    guarantee_no: str = typer.Argument(..., metavar="GUARANTEE_NO"),
    key_on_argv: str | None = typer.Argument(None, hidden=True, metavar="KEY"),
) -> None:
    """Look a certificate up as the obligee does on the look-up service (D-Sure).

    The 認証キー is typed at a hidden prompt, or read as one line from stdin (for scripts): never
    from the command line, where shell history and the process list would keep it."""
    runtime: Runtime = ctx.obj
    if key_on_argv is not None:
        raise UserFacingError(
            "認証キーはコマンドラインに書かないでください(履歴やプロセス一覧に残ります)。"
            "keydesk lookup 保証契約番号 と入力し、表示に従って認証キーを入力してください"
        )
    number = numbers.normalise(guarantee_no)
    if not numbers.is_well_formed(number):
        raise UserFacingError(f"保証契約番号の形式が正しくありません(例: 26-000123-4): {guarantee_no!r}")
    canonical = _parse_key(_read_key())
    settings = runtime.settings
    result = RegistryLookup(runtime.engine, settings.guarantor).lookup(number, canonical, _now(runtime))
    trusted = load_trusted_keys(settings.guarantor.trust_directory)
    for line in describe_lookup(result, trusted, ZoneInfo(settings.timezone)):
        typer.echo(line)
    # Exit 0 only for what a town may rely on: found, and signed by a key it trusts.
    if result.status is not LookupStatus.FOUND or check_signature(result.signed, trusted) is not SignatureStatus.VALID:
        raise typer.Exit(1)


def _read_key() -> str:
    """One line from a hidden prompt (a terminal) or from stdin (a pipe); bounded."""
    if sys.stdin is not None and sys.stdin.isatty():
        return typer.prompt("認証キー", hide_input=True)
    line = sys.stdin.readline(256) if sys.stdin is not None else ""
    if not line.strip():
        raise UserFacingError("認証キーを標準入力から1行で渡してください(例: keydesk lookup 26-000123-4 < key.txt)")
    return line.strip()


def _parse_key(text: str) -> str:
    """The canonical key, or a UserFacingError saying what is wrong, before any look-up is made."""
    try:
        return keys.parse(text)
    except keys.AccessKeyError as exc:
        try:
            keys.canonical(text)
        except keys.AccessKeyError:
            raise UserFacingError(
                f"認証キーは英数字16文字(4文字×4組、例: 7K3M-Q9TX-2HVB-R4NC)です({exc.reason})。照会は行っていません"
            ) from None
        raise UserFacingError(
            "認証キーのチェック文字が一致しません。入力ミスがないかご確認ください(照会は行っていません)"
        ) from None


def describe_lookup(result: LookupResult, trusted: dict, zone: ZoneInfo) -> list[str]:
    """What the obligee would see, in Japanese."""
    if result.status is LookupStatus.NO_MATCH:
        return ["該当する電子証書がありません(保証契約番号と認証キーをご確認ください)"]
    if result.status is LookupStatus.REFUSED:
        return [f"認証キーの誤りが続いたため、この保証契約番号の照会を{_when(result.reason, zone)}まで停止しています"]
    if result.status is LookupStatus.UNAVAILABLE:
        return ["照会サービスに接続できません。しばらくしてからお試しください"]
    lines = []
    if result.status is LookupStatus.REVOKED:
        lines.append(f"この電子証書は失効しています(理由: {result.reason})")
    signed = result.signed
    if signed is None:
        return lines
    try:
        certificate = signed.certificate()
    except ValueError:
        lines.append("電子証書の内容を読み取れません")
    else:
        lines.append("電子証書の内容")
        lines += [f"  {label}：{value}" for label, value in certificate_fields(certificate)]
    lines.append(_signature_line(check_signature(signed, trusted), signed.key_id))
    return lines


def _signature_line(status: SignatureStatus, signer: str) -> str:
    if status is SignatureStatus.VALID:
        return f"電子署名：有効(鍵 ID {signer})"
    if status is SignatureStatus.UNKNOWN_KEY:
        return f"電子署名：信頼されていない鍵による署名です(鍵 ID {signer} は trust フォルダにありません)"
    return "電子署名：無効です(内容が改ざんされている可能性があります)"


def _when(iso: str, zone: ZoneInfo) -> str:
    try:
        moment = datetime.fromisoformat(iso).astimezone(zone)
    except ValueError:
        return iso
    return f"{moment.year}年{moment.month}月{moment.day}日 {moment:%H:%M}"
