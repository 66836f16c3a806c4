"""not analysed report: routes.on_not_analysed

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 05:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('on_not_analysed', sa.String(length=16), nullable=False,
                                      server_default='report'))


def downgrade() -> None:
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.drop_column('on_not_analysed')
