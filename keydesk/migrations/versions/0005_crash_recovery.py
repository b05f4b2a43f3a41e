"""crash recovery and scale-out: claim owners, interrupted processing runs, raw mail in the database
(inbound_message.uidvalidity/uid became BIGINT in 0002)

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("interrupted", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("processing_by", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
    op.create_table(
        "stored_blob",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("stored_blob")
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_column("processing_by")
        batch_op.drop_column("interrupted")
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
