"""What `keydesk demo` shows at the terminal: progress while it runs, then the table of mails and
where to look next. Text for people, so Japanese."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keydesk.demo.report import DemoReport, MailOutcome, Notify
from rules.findings import CODES, VERDICT_LABELS, Severity, Verdict

_VERDICT_STYLES = {Verdict.ACCEPTED: "green", Verdict.NEEDS_REVIEW: "yellow", Verdict.RETURNED: "red"}


def _shown(path: Path) -> str:
    """A path relative to the current folder when it is below it (shorter to read and copy)."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:
        return str(path)


class DemoConsole:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()

    @contextlib.contextmanager
    def running(self, directory: Path) -> Iterator[Notify]:
        self.console.print(
            f"[bold]keydesk デモ[/bold] — 作業フォルダ: {escape(_shown(directory))}(前回の内容は削除しました)"
        )

        def notify(text: str) -> None:
            self.console.print(f"  [green]✓[/green] {escape(text)}")

        with self.console.status("実行中…"):
            yield notify

    def summary(self, report: DemoReport, show_digest: bool) -> None:
        console = self.console
        if show_digest:
            for digest in report.digests:
                console.rule(f"ダイジェスト: {escape(digest.department)}")
                console.print(escape(digest.text), highlight=False)
        console.print(self.table(report.mails))
        self._lookup(report)
        self._where(report)
        wrong = [(number, o) for number, o in enumerate(report.mails, start=1) if not o.as_expected]
        for number, outcome in wrong:
            console.print(
                f"[bold red]#{number} は想定と異なります[/bold red] — {_expected(outcome)}、"
                f"実際: {escape(', '.join(outcome.codes) or '-')}"
            )
        if wrong:
            console.print(f"詳しくはログをご覧ください: {escape(_shown(report.log_file))}")
        else:
            console.print(
                f"[bold green]{len(report.mails)} 通すべて想定どおりの判定でした。[/bold green]"
                f"({report.elapsed:.1f} 秒)"
            )
        self._console_login(report)

    def _console_login(self, report: DemoReport) -> None:
        """Last: where staff decide what the demo left for them (added with the console, issue 11)."""
        if not report.console_url:
            return
        self.console.print(
            f"[bold]職員画面[/bold]: KEYDESK_CONFIG={escape(_shown(report.config_dir))} keydesk run "
            f"を実行し、{escape(report.console_url)} を開いてください(「要確認」の申請を判断できます)。"
        )
        self.console.print(
            f"  デモ用ログイン: ログイン名 {escape(report.console_login)} / "
            f"パスワード {escape(report.console_password)}"
        )

    def _lookup(self, report: DemoReport) -> None:
        """The look-up across the network (issue 10): the service, and the case a clerk looked up by hand."""
        if report.lookup_url:
            self.console.print(
                f"照会: 窓口は保証会社の照会サービス {escape(report.lookup_url)}/ に HTTP で照会しました"
                "(ブラウザでも STEP1〜3 の画面で照会できます)"
            )
        manual = report.manual
        if manual is not None:
            mark = "[green]想定どおり[/green]" if manual.as_expected else "[bold red]想定と異なります[/bold red]"
            self.console.print(
                f"手入力照会モード: 受付番号 {escape(manual.receipt_no)} は {manual.first_verdict} で受け付け、"
                f"職員の照会結果の記録で {manual.final_verdict} になり、受注者へ {manual.replies} 通"
                f"(受付の連絡と結果)を返信しました — {mark}"
            )

    @staticmethod
    def table(outcomes: list[MailOutcome]) -> Table:
        table = Table(title="窓口に届いたメールと判定", header_style="bold")
        table.add_column("#", justify="right")
        table.add_column("送信者", min_width=12, overflow="fold")
        table.add_column("送ったもの", min_width=12, overflow="fold")
        table.add_column("判定", no_wrap=True)
        table.add_column("理由", min_width=14, overflow="fold")
        table.add_column("想定", justify="center", no_wrap=True)
        numbers = {outcome.receipt_no: number for number, outcome in enumerate(outcomes, start=1)}
        for number, outcome in enumerate(outcomes, start=1):
            table.add_row(
                str(number),
                f"{escape(outcome.sender.name)}\n[dim]{escape(outcome.sender.address)}[/dim]",
                escape(outcome.mail.what),
                f"{_verdict(outcome)}\n[dim]{escape(outcome.receipt_no or '-')}[/dim]",
                escape(reasons(outcome, numbers)),
                "[green]✓[/green]" if outcome.as_expected else "[red]✗[/red]",
            )
        return table

    def _where(self, report: DemoReport) -> None:
        console = self.console
        console.print(
            f"保証会社の発行 {report.issued} 件・お知らせ {report.notices} 通、窓口の返信 {report.replies} 通、"
            f"監査ログ {report.audit_events} 件({'改ざんなし' if report.audit_intact else '[red]連鎖が切れています[/red]'})"
        )
        console.print("[bold]ダイジェスト(職員あて)[/bold]")
        for digest in report.digests:
            console.print(
                f"  {escape(digest.department)} → {escape(', '.join(digest.recipients))}: "
                f"{escape(_shown(digest.html))}(CSV: {escape(_shown(digest.csv))})"
            )
        console.print(
            f"[bold]メールボックス[/bold](Maildir): {escape(_shown(report.mail_directory))}/<メールアドレス>/"
        )
        console.print(
            f"  メールソフトで見るには: KEYDESK_CONFIG={escape(_shown(report.config_dir))} keydesk run を実行し、"
            f"IMAP 127.0.0.1:{report.imap_port}(暗号化なし)に接続してください。"
        )
        console.print(
            f"  ユーザー名はメールアドレス、パスワードは {escape(_shown(report.directory / 'var' / 'secrets'))} の各ファイルです。"
        )
        console.print(f"ログ(英語): {escape(_shown(report.log_file))}")


def reasons(outcome: MailOutcome, numbers: dict[str | None, int] | None = None) -> str:
    """The finding labels, most serious first; a linked resend says which mail it answers."""
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    known = sorted((c for c in outcome.codes if c in CODES), key=lambda c: order[CODES[c].severity])
    parts = [CODES[code].label for code in known if code != "mail.automatic"]
    if outcome.resend_of_receipt:
        number = (numbers or {}).get(outcome.resend_of_receipt)
        shown = f"#{number}({outcome.resend_of_receipt})" if number else outcome.resend_of_receipt
        parts.append(f"{shown}の再送")
    return "、".join(parts) or "-"


def _verdict(outcome: MailOutcome) -> str:
    if outcome.verdict is None:
        return "[red]未処理[/red]"
    verdict = Verdict(outcome.verdict)
    label = VERDICT_LABELS.get(verdict, verdict.value)
    style = _VERDICT_STYLES.get(verdict, "white")
    return f"[{style}]{label}[/{style}]"


def _expected(outcome: MailOutcome) -> str:
    expected = outcome.mail.expected_verdict
    codes = "、".join(CODES[c].label for c in sorted(outcome.mail.expected_codes) if c in CODES)
    linked = "、再送として記録" if outcome.mail.resend_of else ""
    detail = f"({codes}{linked})" if codes or linked else ""
    missing = "" if outcome.replied else "、返信が未送信"
    return escape(f"想定: {VERDICT_LABELS.get(expected, expected.value)}{detail}{missing}")
