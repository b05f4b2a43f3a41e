"""`keydesk poll --once` and `keydesk run`: taking mail from the desks' mailboxes.

Parse and print only: the intake service, mailbox connections and locks are built by
``keydesk/composition.py``; `keydesk run`'s loops live in ``keydesk/daemon.py``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading

import typer

from foundation.errors import UserFacingError
from intake.intake_service import PassReport
from intake.poller import TRANSIENT_ERRORS, MailboxError
from keydesk import composition, daemon
from keydesk.connection_check import mailbox_problem, smtp_hint
from keydesk.runtime import Runtime
from keydesk.settings import Settings
from keydesk.status import record_pass
from store.claim_owner import ClaimOwner, open_owner

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("poll")(poll)
    app.command("run")(run)


# -- keydesk poll --once --------------------------------------------------------------------------


def poll(
    ctx: typer.Context,
    once: bool = typer.Option(
        False,
        "--once",
        help="Take what is waiting and exit (for cron); a backlog over poll.mails_per_pass takes several passes.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per mail touched (copies included)."),
    desk: str | None = typer.Option(None, "--desk", help="Only this desk (default: every desk)."),
    no_send: bool = typer.Option(
        False,
        "--no-send",
        help="Only queue the replies; leave them to `keydesk outbox "
        "send` (or `keydesk run`) instead of delivering what is due at the end.",
    ),
) -> None:
    """Take new mail from the desks' mailboxes once: store, verify, reply, file; then deliver what is due."""
    if not once:
        raise UserFacingError("keydesk poll は --once を付けて実行してください (常時受信は keydesk run)")
    runtime: Runtime = ctx.obj
    settings = runtime.settings
    # A claim identity like the daemon's: mail a live worker has in hand is left to it, and what a
    # killed `keydesk run` left (mail in process, replies in sending) is taken back at once.
    with open_owner(runtime.engine, composition.lock_directory(settings)) as owner:
        for desk_id in composition.desk_ids(settings, desk):
            service = composition.build_service(runtime, desk_id, owner=owner)
            try:
                with (
                    composition.mailbox_lock(settings, desk_id, runtime.engine),
                    composition.connector(settings, desk_id)() as conn,
                ):
                    # A backlog larger than one pass's window is taken whole, window by window.
                    for report in service.run_until_caught_up(conn):
                        record_pass(runtime.engine, desk_id, len(report.taken))
                        _print_report(settings, desk_id, report, as_json)
            except (MailboxError, *TRANSIENT_ERRORS) as exc:
                raise mailbox_problem(settings, desk_id, exc) from None
            _retry_held(runtime, desk_id, as_json)
        if not no_send:
            _deliver_after_poll(runtime, owner, as_json)


def _retry_held(runtime: Runtime, desk_id: str, as_json: bool) -> None:
    """Held look-ups whose pause is over are tried again after each pass (issue 10)."""
    held = composition.retry_held_lookups(runtime, desk_id)
    if held.anything and not as_json:
        typer.echo(
            f"  照会待ちだった {len(held.decided)} 通の結果を返信し、{len(held.given_up)} 通を職員の確認に回しました"
        )


def _deliver_after_poll(runtime: Runtime, owner: ClaimOwner, as_json: bool) -> None:
    """A cron `poll --once` answers at once, like the daemon: everything due in the outbox goes out."""
    from keydesk.companions import deliver_now

    report = deliver_now(runtime, owner)
    if not as_json:
        typer.echo(f"送信: {report.summary()}")
    if report.connection_error:
        # The mails were taken and their replies are safe in the outbox: a warning (cron mails it to
        # the admin), not a failure; the next poll or `keydesk outbox send` delivers them.
        typer.echo(
            f"警告: 返信は送信待ちのままです。SMTP サーバーに接続できませんでした: {report.connection_error}"
            f"{smtp_hint(runtime.settings, report.connection_error)}",
            err=True,
        )


def _print_report(settings: Settings, desk_id: str, report: PassReport, as_json: bool) -> None:
    if as_json:
        for taken in (*report.taken, *report.recognised_mails):
            typer.echo(json.dumps({"desk": desk_id, **taken.to_json()}, ensure_ascii=False))
        return
    name = settings.desks[desk_id].name
    typer.echo(
        f"{name}: {len(report.taken)} 通を処理しました"
        f"(新着 {report.recorded} 通、既知のメール {report.recognised} 通、失敗 {report.failures} 件)"
    )
    for taken in (*report.taken, *report.recognised_mails):
        findings = ", ".join(taken.findings) or "-"
        typer.echo(f"  UID {taken.uid}  {taken.sender or '(差出人不明)'}  {taken.verdict or taken.state}  {findings}")


# -- keydesk run ---------------------------------------------------------------------------------


def run(ctx: typer.Context) -> None:
    """Run the desk: embedded mail servers (if enabled), IDLE intake per desk, until Ctrl-C/SIGTERM."""
    runtime: Runtime = ctx.obj
    stop = threading.Event()

    def _on_signal(signum, _frame) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        daemon.serve(runtime, stop, ready=lambda: typer.echo("keydesk を起動しました。Ctrl-C で停止します。"))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("keydesk を停止しました。")
