"""`keydesk demo`: parse, run the demo (``keydesk/demo/``) and print its console."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import typer

from keydesk.runtime import Runtime


def register(app: typer.Typer) -> None:
    """Add `demo` to the keydesk app (once, however often it is called)."""
    if not any(command.name == "demo" for command in app.registered_commands):
        app.command("demo")(demo)


def demo(
    ctx: typer.Context,
    imap_port: int = typer.Option(0, "--imap-port", min=0, max=65535, help="Embedded IMAP port (0: a free one)."),
    smtp_port: int = typer.Option(0, "--smtp-port", min=0, max=65535, help="Embedded SMTP port (0: a free one)."),
    show_digest: bool = typer.Option(False, "--show-digest", help="Also print the staff digest as text."),
) -> None:
    """The whole story on the embedded mail system, in a fresh var/demo/ (deleted at the next run)."""
    from keydesk.demo.output import DemoConsole  # rich is only needed here
    from keydesk.demo.run import deployment_home, demo_directory, prepare_directory, run_demo

    runtime: Runtime = ctx.obj
    directory = demo_directory(deployment_home(runtime))
    prepare_directory(directory)
    out = DemoConsole()
    with (
        _log_to_file(directory / "demo.log", runtime.debug),
        out.running(directory) as notify,
        contextlib.ExitStack() as stack,
    ):
        report = run_demo(directory, stack, imap_port=imap_port, smtp_port=smtp_port, notify=notify)
    out.summary(report, show_digest)
    if not report.all_as_expected:
        raise typer.Exit(1)


@contextlib.contextmanager
def _log_to_file(path: Path, debug: bool):
    """English logs go to var/demo/demo.log; the terminal keeps the progress (and warnings)."""
    root = logging.getLogger()
    quiet = (
        []
        if debug
        else [
            h for h in root.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]
    )
    levels = [h.level for h in quiet]
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    for stream in quiet:
        stream.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for stream, level in zip(quiet, levels):
            stream.setLevel(level)
        root.removeHandler(handler)
        handler.close()
