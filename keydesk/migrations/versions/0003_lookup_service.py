"""the look-up across the network: tokens, requester of failures, held and manual look-ups

Revision ID: 0003
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lookup_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('desk', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('hint', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('revoked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('lookup_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lookup_token_desk'), ['desk'], unique=False)

    with op.batch_alter_table('lookup_failure', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requester', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.create_index(batch_op.f('ix_lookup_failure_requester'), ['requester'], unique=False)

    with op.batch_alter_table('submission', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lookup_state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column('lookup_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('next_lookup_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('lookup_facts_json', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_submission_lookup_state'), ['lookup_state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('submission', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_submission_lookup_state'))
        batch_op.drop_column('lookup_facts_json')
        batch_op.drop_column('next_lookup_at')
        batch_op.drop_column('lookup_attempts')
        batch_op.drop_column('lookup_state')

    with op.batch_alter_table('lookup_failure', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lookup_failure_requester'))
        batch_op.drop_column('requester')

    with op.batch_alter_table('lookup_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lookup_token_desk'))
    op.drop_table('lookup_token')
