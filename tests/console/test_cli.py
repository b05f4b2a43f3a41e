"""`keydesk staff …` and `keydesk console` as an admin runs them (real subprocesses where it matters)."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session, select

from keydesk.runtime import Runtime
from store.tables import AuditEvent, StaffAccount
from tests.support.cli import invoke, run_keydesk


def test_staff_add_list_passwd_disable(deployment: Path) -> None:
    assert invoke(deployment, "db", "upgrade").exit_code == 0
    added = run_keydesk(
        "staff",
        "add",
        "tanaka",
        "--name",
        "田中 一郎",
        "--role",
        "clerk",
        "--department",
        "kensetsu",
        "--password-stdin",
        config=deployment,
        input_text="long-enough-password\n",
    )
    assert added.returncode == 0 and "田中 一郎" in added.stdout, added.stderr
    listed = run_keydesk("staff", "list", config=deployment)
    assert "tanaka\t田中 一郎\tclerk\tkensetsu\t有効" in listed.stdout
    again = run_keydesk(
        "staff",
        "add",
        "tanaka",
        "--name",
        "x",
        "--department",
        "kensetsu",
        "--password-stdin",
        config=deployment,
        input_text="long-enough-password\n",
    )
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "すでに登録" in again.stderr
    short = run_keydesk(
        "staff",
        "add",
        "sato",
        "--name",
        "佐藤",
        "--department",
        "keiyaku",
        "--password-stdin",
        config=deployment,
        input_text="short\n",
    )
    assert short.returncode == 2 and "10文字以上" in short.stderr
    unknown = run_keydesk(
        "staff",
        "add",
        "sato",
        "--name",
        "佐藤",
        "--department",
        "nowhere",
        "--password-stdin",
        config=deployment,
        input_text="long-enough-password\n",
    )
    assert unknown.returncode == 2 and "rules.toml にない課" in unknown.stderr
    changed = run_keydesk(
        "staff", "passwd", "tanaka", "--password-stdin", config=deployment, input_text="another-long-password\n"
    )
    assert changed.returncode == 0, changed.stderr
    assert run_keydesk("staff", "disable", "tanaka", config=deployment).returncode == 0
    assert "無効" in run_keydesk("staff", "list", config=deployment).stdout
    with Session(Runtime(deployment).engine) as session:
        account = session.exec(select(StaffAccount)).one()
        actions = [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.id))]
    assert account.password_hash.startswith("$argon2") and "long-enough" not in account.password_hash
    assert actions == ["staff.added", "staff.password_set", "staff.disabled"]


def test_console_refuses_plain_http_off_loopback_in_one_line(deployment: Path) -> None:
    assert invoke(deployment, "db", "upgrade").exit_code == 0
    result = run_keydesk("console", "--host", "0.0.0.0", "--port", "0", config=deployment)
    assert result.returncode == 2
    assert (
        result.stderr.strip().count("\n") == 0 and "plain HTTP is allowed only on a loopback address" in result.stderr
    )


def test_console_config_mistakes_are_one_line(deployment: Path) -> None:
    path = deployment / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    console_table = text.index("[console]")
    path.write_text(
        text[:console_table] + text[console_table:].replace('auth = "password"', 'auth = "remote_user"', 1),
        encoding="utf-8",
    )
    result = run_keydesk("config", "check", config=deployment)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("config/keydesk.toml: console: ") and "trusted_proxies" in result.stderr


def test_keydesk_run_starts_the_console_only_when_enabled(deployment: Path) -> None:
    import threading

    import httpx

    from keydesk.companions import COMPANIONS, console_companion
    from keydesk.settings import load_settings

    assert console_companion in COMPANIONS
    assert invoke(deployment, "db", "upgrade").exit_code == 0
    stop = threading.Event()
    assert console_companion(Runtime(deployment), stop)() is None  # disabled by default: nothing runs
    path = deployment / "keydesk.toml"
    text = path.read_text(encoding="utf-8").replace(
        'enabled = false\nhost = "127.0.0.1"\nport = 8080', 'enabled = true\nhost = "127.0.0.1"\nport = 0'
    )
    path.write_text(text, encoding="utf-8")
    assert load_settings(deployment).console.enabled
    from keydesk.composition import start_console

    served = start_console(Runtime(deployment))
    try:
        assert httpx.get(f"{served.url}/healthz").json() == {"status": "ok"}
        assert (deployment.parent / "var" / "secrets" / "console-session.key").stat().st_mode & 0o077 == 0
    finally:
        served.stop()


def test_keydesk_console_serves_in_the_foreground_until_stopped(deployment: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from tests.support.cli import wait_until
    from tests.support.servers import free_port

    assert invoke(deployment, "db", "upgrade").exit_code == 0
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "keydesk", "console", "--port", str(port)],
        env={**os.environ, "KEYDESK_CONFIG": str(deployment)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=60, what="keydesk console answering /healthz")
        login = httpx.get(f"http://127.0.0.1:{port}/login")
        assert "ログイン" in login.text and 'name="csrf_token"' in login.text
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    # uvicorn re-raises the signal it shut down on, so the exit status says "ended by SIGTERM".
    assert process.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err
    assert f"http://127.0.0.1:{port}/" in out
