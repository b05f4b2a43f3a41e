"""`keydesk backup` while mail flows, `keydesk restore` into an empty home, `keydesk purge`:
real pymap IMAP, SQLite (and PostgreSQL when available), the real CLI."""

from __future__ import annotations

import os
import tarfile
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from keydesk import composition, daemon
from keydesk.runtime import Runtime
from store.tables import AuditEvent, Document, InboundMessage, Submission
from tests.support.cli import invoke, wait_until
from tests.support.deployment import edit_section
from tests.support.servers import deployment_for, make_mail, use_stand_in_pipeline

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def desk(pymap_server, tmp_path, monkeypatch):
    use_stand_in_pipeline(monkeypatch)
    monkeypatch.setattr(daemon, "companions", lambda: ())
    monkeypatch.setenv("KEYDESK_BACKUP_PASSPHRASE", PASSPHRASE)
    home = tmp_path / "town"
    home.mkdir()
    return deployment_for(home, pymap_server)


def _views(config: Path) -> dict[str, str]:
    """What staff and the admin see: the outbox, the digest, the audit verdict."""
    outbox = invoke(config, "outbox", "list", "--limit", "1000")
    digest = invoke(config, "digest", "--print", "--since", "2000-01-01")
    audit = invoke(config, "audit", "verify")
    assert outbox.exit_code == 0 and digest.exit_code == 0, (outbox.output, digest.output)
    return {"outbox": outbox.stdout, "digest": digest.stdout, "audit": audit.stdout, "audit_code": audit.exit_code}


def _stored_files_all_present(config: Path) -> int:
    runtime = Runtime(config)
    store = composition.raw_store(runtime)
    with Session(runtime.engine) as session:
        rows = session.exec(select(InboundMessage)).all()
        for row in rows:
            assert store.read(row.raw_path)  # present, and its content matches its hash
    return len(rows)


def test_backup_while_mail_flows_then_restore_into_an_empty_home(desk, pymap_server, tmp_path):
    config = desk
    runtime = Runtime(config)
    stop, failures = threading.Event(), []

    def serve():
        try:
            daemon.serve(runtime, stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    running = threading.Thread(target=serve, daemon=True)
    running.start()
    archives = []
    try:
        for batch in range(3):  # mail keeps arriving while each backup is taken
            pymap_server.append_many([make_mail(100 * batch + n) for n in range(10)])
            archive = tmp_path / f"during-{batch}.tar.gz"
            result = invoke(config, "backup", str(archive), "--with-secrets")
            assert result.exit_code == 0, result.output
            archives.append(archive)
        with Session(runtime.engine) as session:
            wait_until(
                lambda: len(session.exec(select(Submission)).all()) == 30, timeout=30, what="every mail to be taken"
            )
    finally:
        stop.set()
        running.join(30)
    assert not failures and not running.is_alive()

    # Each backup taken mid-flow restores to a consistent desk: every row finds its file, the chain holds.
    for number, archive in enumerate(archives):
        assert oct(archive.stat().st_mode & 0o777) == "0o600"
        restored = tmp_path / f"restored-{number}"
        result = invoke(config, "restore", str(archive), "--home", str(restored))
        assert result.exit_code == 0, result.output
        _stored_files_all_present(restored / "config")  # every row's file is there and matches its hash
        assert invoke(restored / "config", "audit", "verify").exit_code == 0

    # Quiet now: a backup and its restore show staff exactly what the original shows.
    final = tmp_path / "final.tar.gz"
    assert invoke(config, "backup", str(final), "--with-secrets").exit_code == 0
    restored = tmp_path / "restored-final"
    assert invoke(config, "restore", str(final), "--home", str(restored)).exit_code == 0
    original, copy = _views(config), _views(restored / "config")
    assert original == copy and original["audit_code"] == 0 and "鍵付き" in original["audit"]
    assert _stored_files_all_present(restored / "config") == 30
    assert oct((restored / "var" / "secrets" / "audit.key").stat().st_mode & 0o777) == "0o600"


def test_without_secrets_nothing_secret_is_in_the_archive(desk, tmp_path, monkeypatch):
    archive = tmp_path / "plain.tar.gz"
    assert invoke(desk, "backup", str(archive)).exit_code == 0
    with tarfile.open(archive) as opened:
        names = opened.getnames()
    assert "secrets.enc" not in names and not any("secrets/" in name for name in names)
    assert "database/keydesk.sqlite" in names and "config/keydesk.toml" in names

    with_secrets = tmp_path / "secret.tar.gz"
    assert invoke(desk, "backup", str(with_secrets), "--with-secrets").exit_code == 0
    key = (desk.parent / "var" / "secrets" / "audit.key").read_bytes()
    assert key not in with_secrets.read_bytes() and key.strip() not in _gunzipped(with_secrets)
    monkeypatch.setenv("KEYDESK_BACKUP_PASSPHRASE", "a wrong passphrase!!")
    result = invoke(desk, "restore", str(with_secrets), "--home", str(tmp_path / "elsewhere"))
    assert result.exit_code == 2 and "パスフレーズが違います" in result.stderr


def _gunzipped(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes())


def test_restore_refuses_a_home_that_is_not_empty(desk, tmp_path):
    archive = tmp_path / "b.tar.gz"
    assert invoke(desk, "backup", str(archive)).exit_code == 0
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something").write_text("x")
    result = invoke(desk, "restore", str(archive), "--home", str(occupied))
    assert result.exit_code == 2 and "is not empty" in result.stderr
    assert sorted(p.name for p in occupied.iterdir()) == ["something"]


def test_purge_removes_old_files_keeps_rows_and_the_audit_trail_green(desk, pymap_server):
    config = desk
    shared_pdf = b"%PDF-1.4 the same key notice sent twice\n"
    pymap_server.append_many([make_mail(n) for n in range(4)])
    assert invoke(config, "poll", "--once", "--no-send").exit_code == 0
    runtime = Runtime(config)
    store = composition.raw_store(runtime)
    six_years_ago = datetime.now(timezone.utc) - timedelta(days=6 * 366)
    with Session(runtime.engine) as session:
        rows = session.exec(select(InboundMessage).order_by(InboundMessage.id)).all()
        old, young = rows[:3], rows[3:]
        # One document file shared between an old mail and a young one (stored by content hash).
        stored = store.put(shared_pdf, kind="documents", suffix=".pdf")
        for row in (old[0], young[0]):
            session.add(
                Document(
                    desk="misato",
                    inbound_id=row.id,
                    display_name="notice.pdf",
                    sha256=stored.sha256,
                    size=len(shared_pdf),
                    stored_path=stored.relative_path,
                    kind="key_notice",
                )
            )
        session.commit()
        old_paths = [row.raw_path for row in old]
        old_ids = [row.id for row in old]
    with runtime.engine.begin() as connection:
        connection.execute(
            text("UPDATE inbound_message SET received_at = :at WHERE id IN (:a, :b, :c)"),
            {"at": six_years_ago, "a": old_ids[0], "b": old_ids[1], "c": old_ids[2]},
        )

    inside = (date.today() - timedelta(days=365)).isoformat()
    refused = invoke(config, "purge", "--before", inside)
    assert refused.exit_code == 2 and "保存期間 (5 年) 内" in refused.stderr

    before = (date.today() - timedelta(days=5 * 366)).isoformat()
    dry = invoke(config, "purge", "--before", before, "--dry-run")
    assert dry.exit_code == 0 and "3 通の保存ファイル 3 件を削除できます" in dry.stdout
    assert all(store.path(path).exists() for path in old_paths)

    done = invoke(config, "purge", "--before", before)
    assert done.exit_code == 0 and "共有の 1 件は残します" in done.stdout
    assert not any(store.path(path).exists() for path in old_paths)
    assert store.path(stored.relative_path).exists()  # the young mail still needs it
    with Session(runtime.engine) as session:
        purged = session.exec(select(InboundMessage).where(InboundMessage.purged_at.is_not(None))).all()
        assert sorted(row.id for row in purged) == old_ids
        assert len(session.exec(select(Submission)).all()) == 4  # the history stays
        [event] = session.exec(select(AuditEvent).where(AuditEvent.action == "retention.purged")).all()
        assert '"mails": 3' in event.detail_json
    verify = invoke(config, "audit", "verify")
    assert verify.exit_code == 0, verify.output
    again = invoke(config, "purge", "--before", before)
    assert "0 通" in again.stdout


def test_backup_and_restore_on_postgresql(pymap_server, tmp_path, monkeypatch, postgres_url):
    """pg_dump of a live database, pg_restore into an empty one: the same views."""
    from keydesk.database import make_engine, upgrade

    use_stand_in_pipeline(monkeypatch)
    monkeypatch.setenv("KEYDESK_BACKUP_PASSPHRASE", PASSPHRASE)
    config = deployment_for(tmp_path / "town", pymap_server)
    edit_section(config, "[database]", url_env='"KEYDESK_TEST_DESK_DB"')
    monkeypatch.setenv("KEYDESK_TEST_DESK_DB", postgres_url)
    upgrade(make_engine(postgres_url))
    pymap_server.append_many([make_mail(n) for n in range(3)])
    assert invoke(config, "poll", "--once", "--no-send").exit_code == 0
    archive = tmp_path / "pg.tar.gz"
    result = invoke(config, "backup", str(archive), "--with-secrets")
    assert result.exit_code == 0, result.output

    empty_url = _second_database()
    try:
        monkeypatch.setenv("KEYDESK_TEST_RESTORE_DB", empty_url)
        restored = tmp_path / "restored"
        result = invoke(
            config, "restore", str(archive), "--home", str(restored), "--database-url-env", "KEYDESK_TEST_RESTORE_DB"
        )
        assert result.exit_code == 0, result.output
        monkeypatch.setenv("KEYDESK_TEST_DESK_DB", empty_url)  # the restored config's url_env, pointed at the copy
        copy = _views(restored / "config")
        monkeypatch.setenv("KEYDESK_TEST_DESK_DB", postgres_url)
        assert _views(config) == copy and copy["audit_code"] == 0
    finally:
        _drop_database(empty_url)


def _second_database() -> str:
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    admin_url = os.environ["KEYDESK_TEST_POSTGRES_URL"]
    name = f"keydesk_restore_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    from sqlalchemy.engine import make_url

    from tests.support.deployment import drop_database

    drop_database(os.environ["KEYDESK_TEST_POSTGRES_URL"], make_url(url).database or "")
