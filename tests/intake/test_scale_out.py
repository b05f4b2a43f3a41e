"""The pieces several workers share: raw mail in the database, the mailbox lock as an advisory lock."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlmodel import SQLModel

from intake.mailbox_lock import MailboxBusy, MailboxLock, PostgresMailboxLock, mailbox_lock_for
from intake.raw_store import DatabaseRawStore, RawStoreError, sha256_hex
from keydesk.database import make_engine
from store.tables import StoredBlob


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
        connection.execute(update(StoredBlob.__table__).where(StoredBlob.__table__.c.name == first[0].relative_path)
                           .values(data=b"tampered"))
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
