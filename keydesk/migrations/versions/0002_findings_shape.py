"""stored findings in one shape; IMAP UIDs as BIGINT

Before this revision a mail whose pipeline left no findings of its own stored plain codes
(``["doc.fee_receipt"]``) while the pipeline stored objects. Every list item becomes the one object
shape of ``store/stored_findings.py``: ``{"code", "severity", "message", "detail", "guarantee_no",
"document"}``; severity and message come from the code table as it is at this revision. A value
that is not a JSON list, and list items that are neither a code nor an object with a code, are kept
as they are (nothing is lost).

``inbound_message.uidvalidity`` and ``uid`` become BIGINT: IMAP defines them as unsigned 32-bit
numbers, and values above 2^31 - 1 (pymap's UIDVALIDITY, for one) did not fit PostgreSQL's integer.
SQLite's INTEGER already holds 64 bits, so SQLite keeps its table as it is (rebuilding it would
also trip the foreign keys of the rows that point at it).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TABLES = ("inbound_message", "submission")
_KEYS = ("code", "severity", "message", "detail", "guarantee_no", "document")


def _one_shape(item: Any) -> Any:
    from rules.findings import CODES, Finding

    if isinstance(item, str):
        item = {"code": item}
    if not isinstance(item, dict) or not isinstance(item.get("code"), str):
        return item
    code = item["code"]
    spec = CODES.get(code)
    known = {
        "severity": spec.severity.value if spec else None,
        "message": Finding(code).message if spec else "",
        "detail": "",
        "guarantee_no": None,
        "document": None,
    }
    shaped = {key: item[key] if key in item else known.get(key) for key in _KEYS}
    shaped.update({key: value for key, value in item.items() if key not in _KEYS})
    return shaped


def _convert(findings_json: str) -> str | None:
    """The new text, or None when the value is already in shape or is not a list."""
    try:
        items = json.loads(findings_json)
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    shaped = [_one_shape(item) for item in items]
    return None if shaped == items else json.dumps(shaped, ensure_ascii=False)


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        for column in ("uidvalidity", "uid"):
            op.alter_column(
                "inbound_message", column, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=False
            )
    for name in _TABLES:
        table = sa.table(name, sa.column("id", sa.Integer), sa.column("findings_json", sa.Text))
        rows = connection.execute(
            sa.select(table.c.id, table.c.findings_json).where(table.c.findings_json.is_not(None))
        ).all()
        for row_id, findings_json in rows:
            converted = _convert(findings_json)
            if converted is not None:
                connection.execute(table.update().where(table.c.id == row_id).values(findings_json=converted))


def downgrade() -> None:
    # The object shape of findings was already valid at 0001: only the column types go back.
    if op.get_bind().dialect.name != "sqlite":
        for column in ("uid", "uidvalidity"):
            op.alter_column(
                "inbound_message", column, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=False
            )
