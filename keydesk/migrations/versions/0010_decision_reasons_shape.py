"""staff decisions' reasons in the one stored-findings shape

Before this revision ``staff_decision.reasons_json`` held plain codes (``["lookup.no_match"]``)
while every other stored finding list holds the objects of ``store/stored_findings.py``. Each code
becomes that object (severity and message from the code table, as ``stored_findings.dump_codes``
writes them); objects are kept, and a value that is not a JSON list is kept as it is.
The way down turns the objects back into their codes.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import json
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TABLE = sa.table("staff_decision", sa.column("id", sa.Integer), sa.column("reasons_json", sa.Text))


def _to_objects(reasons_json: str) -> str | None:
    """The new text, or None when the value is already in shape or is not a list."""
    from store import stored_findings

    try:
        items = json.loads(reasons_json)
    except ValueError:
        return None
    if not isinstance(items, list) or not any(isinstance(item, str) for item in items):
        return None
    shaped = [json.loads(stored_findings.dump_codes([item]))[0] if isinstance(item, str) else item for item in items]
    return json.dumps(shaped, ensure_ascii=False)


def _to_codes(reasons_json: str) -> str | None:
    from store import stored_findings

    try:
        is_list = isinstance(json.loads(reasons_json), list)
    except ValueError:
        return None
    return json.dumps(stored_findings.codes(reasons_json), ensure_ascii=False) if is_list else None


def _rewrite(convert: Callable[[str], str | None]) -> None:
    connection = op.get_bind()
    for row_id, reasons_json in connection.execute(sa.select(_TABLE.c.id, _TABLE.c.reasons_json)).all():
        converted = convert(reasons_json or "[]")
        if converted is not None and converted != reasons_json:
            connection.execute(_TABLE.update().where(_TABLE.c.id == row_id).values(reasons_json=converted))


def upgrade() -> None:
    _rewrite(_to_objects)


def downgrade() -> None:
    _rewrite(_to_codes)
