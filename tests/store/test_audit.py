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


def test_concurrent_writers_all_land_on_one_intact_chain(database_url: str) -> None:
    """Writers racing for the chain's tail lose on the unique prev_hash and run again (store.retry)."""
    from concurrent.futures import ThreadPoolExecutor

    engine = make_engine(database_url)
    try:
        upgrade(engine)

        def writer(number: int) -> None:
            for n in range(5):
                record_now(engine, "misato", f"writer-{number}", "event", f"{number}/{n}")

        with ThreadPoolExecutor(4) as pool:
            for done in [pool.submit(writer, number) for number in range(4)]:
                done.result(timeout=60)  # re-raises a writer's error here
        with Session(engine) as session:
            report = verify_chain(session)
        assert report.intact and report.events == 20
    finally:
        engine.dispose()
