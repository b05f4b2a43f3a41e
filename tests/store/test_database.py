"""The schema: the migration creates exactly the models' tables, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import Session, SQLModel, select

from keydesk.database import SchemaOutdated, current_revision, head_revision, make_engine, require_current, upgrade
from store.tables import Contract

import pytest


def test_migration_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with pytest.raises(SchemaOutdated, match="keydesk db upgrade"):
            require_current(engine)
        before, after = upgrade(engine)
        assert before is None and after == head_revision()
        require_current(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
        assert differences == []
        tables = set(inspect(engine).get_table_names())
        for table in (
            "inbound_message",
            "document",
            "submission",
            "contract",
            "certificate",
            "outbox_message",
            "audit_event",
            "lookup_failure",
            "counter",
        ):
            assert table in tables
            if table != "counter":
                assert "desk" in {c["name"] for c in inspect(engine).get_columns(table)}
        # Upgrading again changes nothing.
        assert upgrade(engine) == (after, after)
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/k.db")
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_a_row_round_trips(database_url: str) -> None:
    from datetime import date

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with Session(engine) as session:
            session.add(
                Contract(
                    desk="misato",
                    contract_no="R8-001",
                    work_name="町道改良工事",
                    work_category="工事",
                    contractor_name="髙橋建設㈱",
                    contract_amount=12_345_000,
                    contract_date=date(2026, 4, 10),
                    completion_date=date(2027, 3, 15),
                    department="kensetsu",
                )
            )
            session.commit()
        with Session(engine) as session:
            row = session.exec(select(Contract)).one()
            assert row.contractor_name == "髙橋建設㈱" and row.contract_amount == 12_345_000
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
