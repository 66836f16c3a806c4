"""exam grouping: studies.exam_key, instances.study_instance_uid

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 04:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exam_key', sa.String(length=128), nullable=False, server_default=''))
        batch_op.create_index('ix_studies_exam_key', ['exam_key'])
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('study_instance_uid', sa.String(length=64), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_column('study_instance_uid')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_index('ix_studies_exam_key')
        batch_op.drop_column('exam_key')
