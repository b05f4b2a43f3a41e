"""operations: desk_status (last good intake pass), inbound_message.purged_at (retention purge),
and an index on audit_event (desk, id) for the per-desk audit chains (inbound_message.uidvalidity/uid
became BIGINT in 0002)

Revision ID: 0007
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "desk_status",
        sa.Column("desk", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("last_poll_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_poll_mails", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("desk"),
    )
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purged_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_index("ix_audit_event_desk_id", "audit_event", ["desk", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_event_desk_id", table_name="audit_event")
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
    op.drop_table("desk_status")
