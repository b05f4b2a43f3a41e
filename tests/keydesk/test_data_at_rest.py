"""Data at rest and small leaks (issue 12, item 6): file modes, secret files, the PDF worker's environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from keydesk.settings import read_secret
from rules.config_base import ConfigError
from tests.conftest import run_keydesk
from verifier.pdf_text import PdfTextWorker, TextStatus

PDFS = Path(__file__).resolve().parents[1] / "fixtures" / "pdf"


def test_everything_keydesk_writes_is_private(tmp_path: Path) -> None:
    config = tmp_path / "config"
    assert run_keydesk("init", str(config)).returncode == 0
    result = run_keydesk("db", "upgrade", config=config)
    assert result.returncode == 0, result.stderr
    written = [p for p in (tmp_path / "var").rglob("*") if p.is_file()]
    assert any(p.name.endswith(".db") for p in written)
    loose = [f"{p} {stat.S_IMODE(p.stat().st_mode):04o}" for p in written if p.stat().st_mode & 0o077]
    assert loose == []


def test_a_secret_file_others_can_read_is_refused_in_one_line(tmp_path: Path) -> None:
    secret = tmp_path / "imap.password"
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        read_secret(None, secret, "desks.misato.mailbox password")
    assert caught.value.lines == [f"desks.misato.mailbox password: {secret} is readable by others (mode 0644); "
                                  f"run: chmod 600 {secret}"]
    secret.chmod(0o600)
    assert read_secret(None, secret, "x") == "hunter2"


def test_the_pdf_worker_gets_no_secret_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("KEYDESK_SMTP_PASSWORD", "s3cret-value")
    monkeypatch.setenv("KEYDESK_KEY_ENCRYPTION_KEY", "another-s3cret")
    with PdfTextWorker() as worker:
        result = worker.extract((PDFS / "key_notice_reportlab.pdf").read_bytes()
                                if (PDFS / "key_notice_reportlab.pdf").exists()
                                else sorted(PDFS.glob("*.pdf"))[0].read_bytes())
        assert result.status in (TextStatus.OK, TextStatus.BROKEN, TextStatus.ENCRYPTED)
        environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
    assert b"s3cret" not in environ and b"KEYDESK_" not in environ
    assert b"PYTHONPATH=" in environ
