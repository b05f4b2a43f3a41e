"""The keydesk command line. Composition only: every command calls into the packages.

Errors a user can act on go to stderr as one line per problem with a non-zero exit code and no
traceback; ``--debug`` shows the traceback and debug logs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import typer

from foundation.errors import EXIT_FAILURE, KeydeskError
from keydesk import (
    cli_admin,
    cli_console,
    cli_demo,
    cli_digest,
    cli_guarantor,
    cli_intake,
    cli_ops,
    cli_outbox,
    cli_verify,
)
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
cli_console.register(app)
cli_ops.register(app)
cli_demo.register(app)

_state = {"debug": False}


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
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
    """Entry point: typer handles usage errors; our own failures become one line on stderr.

    This is the one place that turns an exception into an exit code: every ``KeydeskError`` knows
    its ``exit_code`` and ``user_lines()``; a missing or unreadable file is worded the same way.
    """
    # Everything keydesk writes (database, raw mail, documents, logs, secrets) is the desk's alone.
    os.umask(0o077)
    try:
        app(args=argv, prog_name="keydesk")
    except KeydeskError as exc:
        if _state["debug"]:
            raise
        print("\n".join(exc.user_lines()), file=sys.stderr)
        sys.exit(exc.exit_code)
    except (FileNotFoundError, PermissionError) as exc:
        if _state["debug"]:
            raise
        print(f"keydesk: {exc.filename}: {exc.strerror}" if exc.filename else f"keydesk: {exc}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:
        if _state["debug"]:
            raise
        print(f"keydesk: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":  # pragma: no cover
    main()
