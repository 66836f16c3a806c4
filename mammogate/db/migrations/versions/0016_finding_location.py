"""where on the breast each finding lies: clock hour, region, and whether the orientation was
assumed

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('clock_hour', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('region', sa.String(length=32), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('orientation_assumed', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_column('orientation_assumed')
        batch_op.drop_column('region')
        batch_op.drop_column('clock_hour')
