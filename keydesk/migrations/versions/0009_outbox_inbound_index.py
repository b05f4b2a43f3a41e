"""outbox: an index on inbound_id

Every processed mail asks for the replies it queued (``outbox_message.inbound_id``). Without an
index that question scanned the whole outbox, so the time per mail grew with the outbox's size
(benchmarks/scale.py: 7.8 ms per mail at 1,000 mails, 15.5 ms at 10,000).

Revision ID: 0009
Revises: 0008
"""

from alembic import op


revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_outbox_message_inbound_id"), "outbox_message", ["inbound_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_outbox_message_inbound_id"), table_name="outbox_message")
