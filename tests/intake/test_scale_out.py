"""The pieces several workers share: raw mail in the database, the mailbox lock as an advisory lock."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text, update
from sqlmodel import Session, SQLModel

from intake.mailbox_lock import MailboxBusy, MailboxLock, PostgresMailboxLock, mailbox_lock_for
from intake.raw_store import DatabaseRawStore, RawStoreError, sha256_hex
from keydesk.database import make_engine
from store.audit import record, verify_chain
from store.tables import StoredBlob
from tests.support.cli import wait_until


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_raw_mail_in_the_database_is_stored_once_and_read_back_checked(engine):
    store = DatabaseRawStore(engine)
    mails = [b"From: a@example\r\n\r\none\r\n", b"From: b@example\r\n\r\ntwo\r\n"]
    first = store.put_many(mails)
    again = store.put_many(mails[:1])  # the same bytes again: a no-op under the same name
    assert again[0] == first[0] and first[0].relative_path == f"mail/{first[0].sha256[:2]}/{first[0].sha256}.eml"
    assert [store.read(f.relative_path) for f in first] == mails
    assert first[1].sha256 == sha256_hex(mails[1])
    with engine.begin() as connection:  # damaged storage is refused, not handed to the pipeline
        connection.execute(
            update(StoredBlob.__table__)
            .where(StoredBlob.__table__.c.name == first[0].relative_path)
            .values(data=b"tampered")
        )
    with pytest.raises(RawStoreError, match="does not match its hash"):
        store.read(first[0].relative_path)
    with pytest.raises(RawStoreError, match="not a stored file name"):
        store.read("../../etc/passwd")


def test_the_mailbox_lock_is_an_advisory_lock_on_postgresql_and_a_file_on_sqlite(engine, tmp_path):
    first = mailbox_lock_for(engine, tmp_path, "misato", "keiyaku@town.example", "INBOX")
    second = mailbox_lock_for(engine, tmp_path, "misato", "keiyaku@town.example", "INBOX")
    expected = PostgresMailboxLock if engine.dialect.name == "postgresql" else MailboxLock
    assert isinstance(first, expected)
    with first:
        assert not second.try_acquire()
        with pytest.raises(MailboxBusy):
            second.acquire()
        other_desk = mailbox_lock_for(engine, tmp_path, "other", "keiyaku@town.example", "INBOX")
        assert other_desk.try_acquire()
        other_desk.release()
    assert second.try_acquire()  # released with its holder
    second.release()


def test_the_retention_purge_removes_raw_mail_kept_in_the_database(engine):
    store = DatabaseRawStore(engine)
    [kept, purged] = store.put_many([b"From: a@example\r\n\r\nkept\r\n", b"From: b@example\r\n\r\npurged\r\n"])
    store.remove(purged.relative_path)
    store.remove(purged.relative_path)  # already gone: no error (a purge run again)
    assert store.read(kept.relative_path)
    with pytest.raises(RawStoreError, match="missing from the database"):
        store.read(purged.relative_path)


# The queueing lock is PostgreSQL's; SQLite has one writer at a time anyway.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_audit_appends_of_one_desk_queue_instead_of_conflicting(engine):
    """Several workers append to one desk's chain at once: each append waits for the one before
    (PostgreSQL: an advisory lock), so no transaction loses at the unique prev_hash and runs again."""
    first_in = threading.Event()
    errors: list[BaseException] = []

    def holder() -> None:
        with Session(engine) as session:
            record(session, "misato", "test", "first")
            first_in.set()
            # Hold the tail until the other writer is surely waiting for it (or failed).
            waiting.wait(10)
            session.commit()

    def second() -> None:
        try:
            assert first_in.wait(10)
            with Session(engine) as session:
                record(session, "misato", "test", "second")
                session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    waiting = threading.Event()
    threads = [threading.Thread(target=holder), threading.Thread(target=second)]
    for thread in threads:
        thread.start()

    # The second writer is blocked in record() (the lock) while the first holds it: see it in pg_locks.
    def second_waits() -> bool:
        with engine.connect() as connection:
            return bool(
                connection.execute(
                    text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                ).scalar()
            )

    wait_until(second_waits, timeout=10)
    waiting.set()
    for thread in threads:
        thread.join(20)
    assert errors == []
    with Session(engine) as session:
        report = verify_chain(session)
    assert report.intact and report.events == 2
