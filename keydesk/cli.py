"""The keydesk command line. Composition only: every command calls into the packages.

Errors a user can act on go to stderr as one line per problem with a non-zero exit code and no
traceback; ``--debug`` shows the traceback and debug logs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from keydesk import cli_admin, cli_digest, cli_guarantor, cli_intake, cli_ops, cli_outbox, cli_verify, demo
from keydesk.errors import UserError, exit_code_for, message_for
from keydesk.runtime import Runtime

app = typer.Typer(
    name="keydesk",
    help="電子保証の認証キー受付システム keydesk — takes in 電子保証 key notices by email, verifies them, "
    "replies, and gives staff a digest; also plays the guarantor's side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
cli_admin.register(app)
cli_guarantor.register(app)
cli_verify.register(app)
cli_digest.register(app)
cli_outbox.register(app)
cli_intake.register(app)
cli_ops.register(app)
demo.register(app)

_state = {"debug": False}


@app.callback()
def _root(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", metavar="DIR", help="Config folder (default: $KEYDESK_CONFIG, else ./config)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show debug logs and tracebacks."),
) -> None:
    _state["debug"] = debug
    _configure_logging(debug)
    ctx.obj = Runtime(config, debug=debug)


def _configure_logging(debug: bool) -> None:
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler], force=True)
    # Libraries that log every SMTP command or migration step: only their warnings, unless --debug.
    for chatty in ("mail.log", "alembic", "apscheduler"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if debug else logging.WARNING)


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the event, not at start-up (test
    runners swap it), so a log line never goes to a stream that was closed meanwhile."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    """Entry point: typer handles usage errors; our own failures become one line on stderr."""
    # Everything keydesk writes (database, raw mail, documents, logs, secrets) is the desk's alone.
    os.umask(0o077)
    try:
        app(args=argv, prog_name="keydesk")
    except UserError.handled as exc:
        if _state["debug"]:
            raise
        print(message_for(exc), file=sys.stderr)
        sys.exit(exit_code_for(exc))
    except Exception as exc:  # noqa: BLE001 - the one place that turns failures into exit codes
        if _state["debug"]:
            raise
        print(f"keydesk: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
