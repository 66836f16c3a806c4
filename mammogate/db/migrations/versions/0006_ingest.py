"""ingest: peers with hosts, association history

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 04:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('allowed_peers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hosts', sa.String(length=1024), nullable=False, server_default=''))
    op.create_table(
        'associations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('requested_at', sa.DateTime(), nullable=False),
        sa.Column('ended_at', sa.DateTime(), nullable=True),
        sa.Column('calling_ae_title', sa.String(length=16), nullable=False),
        sa.Column('called_ae_title', sa.String(length=16), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=False),
        sa.Column('port', sa.Integer(), nullable=False),
        sa.Column('accepted', sa.Boolean(), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('instances_stored', sa.Integer(), nullable=False),
        sa.Column('instances_refused', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_associations_requested_at', 'associations', ['requested_at'])
    op.create_index('ix_associations_calling_ae_title', 'associations', ['calling_ae_title'])


def downgrade() -> None:
    op.drop_index('ix_associations_calling_ae_title', table_name='associations')
    op.drop_index('ix_associations_requested_at', table_name='associations')
    op.drop_table('associations')
    with op.batch_alter_table('allowed_peers', schema=None) as batch_op:
        batch_op.drop_column('hosts')
