"""studies point at their current (latest) analysis: the worklist and the statistics join it by
key instead of finding the latest of each study's analyses

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 11:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('current_analysis_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_studies_current_analysis', 'analyses', ['current_analysis_id'], ['id'])
    op.execute("UPDATE studies SET current_analysis_id = "
               "(SELECT max(analyses.id) FROM analyses WHERE analyses.study_id = studies.id)")


def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_constraint('fk_studies_current_analysis', type_='foreignkey')
        batch_op.drop_column('current_analysis_id')
