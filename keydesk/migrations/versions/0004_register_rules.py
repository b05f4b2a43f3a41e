"""register rules: 低入札 and 中間前払金 認定 on the contract register; revocation after acceptance

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('contract', schema=None) as batch_op:
        batch_op.add_column(sa.Column('low_bid', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('intermediate_certified_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('intermediate_certified', sa.Boolean(), server_default='0', nullable=False))
    with op.batch_alter_table('submission', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revoked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('revoked_reason', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_submission_revoked_at'), ['revoked_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('submission', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submission_revoked_at'))
        batch_op.drop_column('revoked_reason')
        batch_op.drop_column('revoked_at')
    with op.batch_alter_table('contract', schema=None) as batch_op:
        batch_op.drop_column('intermediate_certified')
        batch_op.drop_column('intermediate_certified_on')
        batch_op.drop_column('low_bid')
