"""routing: match clauses and stop on routes, HTTP and TLS destinations, called AE title, delivery route

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 03:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('match', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('stop', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('destinations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('url', sa.String(length=1024), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('username', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('password_env', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('token_env', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('timeout_seconds', sa.Float(), nullable=False, server_default='30'))
        batch_op.add_column(sa.Column('tls', sa.Boolean(), nullable=False, server_default=sa.false()))
        for column in ('tls_ca_file', 'tls_cert_file', 'tls_key_file'):
            batch_op.add_column(sa.Column(column, sa.String(length=1024), nullable=False, server_default=''))
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('called_ae_title', sa.String(length=16), nullable=False, server_default=''))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('route', sa.String(length=64), nullable=False, server_default=''))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('result', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('result')
        batch_op.drop_column('target')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('route')
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('called_ae_title')
    with op.batch_alter_table('destinations', schema=None) as batch_op:
        for column in ('tls_key_file', 'tls_cert_file', 'tls_ca_file', 'tls', 'timeout_seconds',
                       'token_env', 'password_env', 'username', 'url'):
            batch_op.drop_column(column)
    with op.batch_alter_table('routes', schema=None) as batch_op:
        batch_op.drop_column('stop')
        batch_op.drop_column('match')
