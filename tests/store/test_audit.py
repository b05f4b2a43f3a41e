from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Session

from keydesk.database import make_engine, upgrade
from store.audit import record, record_now, verify_chain
from store.key_vault import KeyVault, KeyVaultError

import pytest


def test_chain_detects_edits_and_deletions(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with Session(engine) as session:
            for n in range(5):
                record(session, "misato", "test", "event", f"subject {n}", {"n": n, "text": "髙"})
            session.commit()
        record_now(engine, "misato", "test", "event", "after")
        with Session(engine) as session:
            report = verify_chain(session)
            assert report.intact and report.events == 6
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_event SET subject = 'changed' WHERE id = 3"))
        with Session(engine) as session:
            report = verify_chain(session)
            assert report.first_broken_id == 3 and "changed" in report.reason
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_event SET subject = 'subject 2' WHERE id = 3"))
            connection.execute(text("DELETE FROM audit_event WHERE id = 4"))
        with Session(engine) as session:
            report = verify_chain(session)
            assert report.first_broken_id == 5 and "deleted" in report.reason
    finally:
        engine.dispose()


def test_key_vault_round_trip_and_wrong_key() -> None:
    vault = KeyVault(KeyVault.new_key())
    token = vault.encrypt("7K3M-Q9TX-2HVB-R4NC")
    assert b"7K3M" not in token
    assert vault.decrypt(token) == "7K3M-Q9TX-2HVB-R4NC"
    with pytest.raises(KeyVaultError, match="differs"):
        KeyVault(KeyVault.new_key()).decrypt(token)
    with pytest.raises(KeyVaultError, match="not a Fernet key"):
        KeyVault("short")


def _keyed_engine(url: str):
    from store.audit import use_chain_key

    engine = make_engine(url)
    upgrade(engine)
    use_chain_key(engine, "a-test-audit-key-kept-outside-the-database")
    return engine


def test_a_forger_without_the_key_cannot_rewrite_history(database_url: str) -> None:
    """Rewriting an event and recomputing every later hash (as SHA-256 or under another key) breaks
    the keyed chain: the database alone is not enough to forge it."""
    from store import audit
    from store.tables import AuditEvent
    from sqlmodel import select

    engine = _keyed_engine(database_url)
    try:
        for n in range(3):
            record_now(engine, "misato", "intake", "intake.verdict", f"inbound:{n}", {"verdict": "returned"})
        with Session(engine) as session:
            assert verify_chain(session).intact and verify_chain(session).keyed
            events = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
            # The forger turns "returned" into "accepted" and re-chains with what the database shows.
            prev = events[0].prev_hash
            with engine.begin() as connection:
                for event in events:
                    detail = event.detail_json.replace("returned", "accepted")
                    new_hash = audit._digest(None, prev, event.desk, event.at, event.actor, event.action,
                                             event.subject, detail)
                    connection.execute(text("UPDATE audit_event SET detail_json = :d, prev_hash = :p, hash = :h "
                                            "WHERE id = :i"), {"d": detail, "p": prev, "h": new_hash, "i": event.id})
                    prev = new_hash
        with Session(engine) as session:
            report = verify_chain(session)
            assert not report.intact and report.first_broken_id == events[0].id
    finally:
        engine.dispose()


def test_each_desk_has_its_own_chain(database_url: str) -> None:
    from store.tables import AuditEvent
    from sqlmodel import select

    engine = _keyed_engine(database_url)
    try:
        for n in range(3):
            record_now(engine, "misato", "test", "event", f"m{n}")
            record_now(engine, "yamada", "test", "event", f"y{n}")
        with Session(engine) as session:
            report = verify_chain(session)
            assert report.intact and report.events == 6 and set(report.tails) == {"misato", "yamada"}
            misato = session.exec(select(AuditEvent).where(AuditEvent.desk == "misato").order_by(AuditEvent.id)).all()
            assert [e.prev_hash for e in misato[1:]] == [e.hash for e in misato[:-1]]
        with engine.begin() as connection:  # one desk's event removed: that desk's chain breaks
            connection.execute(text("DELETE FROM audit_event WHERE subject = 'y1'"))
        with Session(engine) as session:
            report = verify_chain(session)
            assert not report.intact and "deleted" in report.reason
    finally:
        engine.dispose()


def test_writers_of_two_desks_do_not_wait_for_each_other(postgres_url: str) -> None:
    """PostgreSQL: a transaction holding an uncommitted event of one desk does not stop another
    desk's event from committing, and both commit (one chain for the database would make the
    second writer conflict on the shared tail)."""
    engine = _keyed_engine(postgres_url)
    try:
        with Session(engine) as first:
            record(first, "misato", "test", "event", "open transaction")
            record_now(engine, "yamada", "test", "event", "meanwhile")  # would block or fail on one chain
            first.commit()
        with Session(engine) as session:
            report = verify_chain(session)
            assert report.intact and report.events == 2
    finally:
        engine.dispose()
