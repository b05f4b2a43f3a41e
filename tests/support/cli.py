"""Running keydesk from a test: in this process (through ``keydesk.cli.main``), as a subprocess, and waiting
for a condition with a deadline (never a sleep for synchronisation)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def run_keydesk(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a person would, and capture what it printed."""
    environment = {**os.environ, **(env or {})}
    if config is not None:
        environment["KEYDESK_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-m", "keydesk", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        input=input_text,
        check=False,
    )


@dataclass(frozen=True)
class MainResult:
    """What `keydesk …` printed and its exit code, run through ``keydesk.cli.main`` in this process."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def refused_with(self, text: str) -> bool:
        """It stopped with a message a person can act on (not a crash's), and the message says ``text``."""
        return self.exit_code != 0 and text in self.stderr and "unexpected error" not in self.stderr


def invoke(config: Path, *args: str, input: str | None = None) -> MainResult:
    """The CLI as a person meets it, in this process (fast, for tests that run many commands): through
    ``keydesk.cli.main``, which alone turns an error into its message on stderr and its exit code.
    ``input`` is what is typed on standard input."""
    from click.testing import CliRunner

    from keydesk.cli import main

    umask = os.umask(0o022)  # main() narrows the process umask; the suite keeps its own
    os.umask(umask)
    streams = CliRunner().isolation(input=input)
    with streams as captured:
        try:
            main(["--config", str(config), *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            os.umask(umask)
            sys.stdout.flush()  # the runner's text streams buffer over its byte streams
            sys.stderr.flush()
        stdout, stderr = captured[0].getvalue(), captured[1].getvalue()
    return MainResult(code, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))
