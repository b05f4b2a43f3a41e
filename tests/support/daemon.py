"""`keydesk run` as a separate process, for the crash tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.cli import wait_until


READY_LINE = "keydesk を起動しました"


class Daemon:
    """`python -m keydesk run` as a separate process, its output in a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen | None = None
        self._log_start = 0

    def start(self) -> None:
        env = {**os.environ, "KEYDESK_CONFIG": str(self.config)}
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "keydesk", "run"],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM once the daemon is up: a process still starting (restarted a moment ago) has no
        handler yet, and Python's default would end it with -15 instead of a clean stop."""
        wait_until(lambda: self.ready or not self.alive, timeout=60, what="keydesk run to be up before stopping it")
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    @property
    def ready(self) -> bool:
        """This start printed its ready line (earlier starts' lines in the same log do not count)."""
        with open(self.log, "rb") as handle:
            handle.seek(self._log_start)
            return READY_LINE in handle.read().decode("utf-8", errors="replace")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def set_toml(config: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in the config's keydesk.toml (which must hold it)."""
    path = config / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
