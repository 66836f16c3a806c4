"""radiologists' feedback on results, and each study's manufacturer and model

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 10:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('manufacturer', sa.String(length=64), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('manufacturer_model', sa.String(length=64), nullable=False,
                                      server_default=''))
    op.create_table(
        'feedback',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('analysis_id', sa.Integer(), nullable=True),
        sa.Column('username', sa.String(length=128), nullable=False),
        sa.Column('verdict', sa.String(length=16), nullable=False, server_default=''),
        sa.Column('ground_truth', sa.String(length=32), nullable=False, server_default=''),
        sa.Column('comment', sa.Text(), nullable=False, server_default=''),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['analysis_id'], ['analyses.id']),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index('ix_feedback_study_id', ['study_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index('ix_feedback_study_id')
    op.drop_table('feedback')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('manufacturer_model')
        batch_op.drop_column('manufacturer')
