"""finding details: certainty, distance from the nipple, and which findings are one lesion

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 10:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('certainty', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('nipple_distance_mm', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('lesion', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_column('lesion')
        batch_op.drop_column('nipple_distance_mm')
        batch_op.drop_column('certainty')
