"""operations: desk_status (last good intake pass), inbound_message.purged_at (retention purge),
inbound_message.uidvalidity/uid as BIGINT (IMAP's unsigned 32-bit values overflow a PostgreSQL integer),
and an index on audit_event (desk, id) for the per-desk audit chains

Revision ID: 0007
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('desk_status',
    sa.Column('desk', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('last_poll_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_poll_mails', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('desk'),
    )
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purged_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.alter_column('uidvalidity', type_=sa.BigInteger(), existing_nullable=False)
        batch_op.alter_column('uid', type_=sa.BigInteger(), existing_nullable=False)
    op.create_index('ix_audit_event_desk_id', 'audit_event', ['desk', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_event_desk_id', table_name='audit_event')
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.drop_column('purged_at')
        batch_op.alter_column('uid', type_=sa.Integer(), existing_nullable=False)
        batch_op.alter_column('uidvalidity', type_=sa.Integer(), existing_nullable=False)
    op.drop_table('desk_status')
