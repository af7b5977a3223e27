"""API keys and owners of jobs and models

Revision ID: 8d2e4b6c1a77
Revises: 5c1f0e7a9b21
Create Date: 2026-12-02 00:10:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '8d2e4b6c1a77'
down_revision: str | Sequence[str] | None = '5c1f0e7a9b21'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'api_key',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('key_sha256', sa.String(length=64), nullable=False),
        sa.Column('admin', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
        sa.UniqueConstraint('key_sha256'),
    )
    with op.batch_alter_table('job') as batch:
        batch.add_column(sa.Column('owner', sa.String(length=100), nullable=True))
        batch.create_index('ix_job_owner', ['owner'])
    with op.batch_alter_table('model_version') as batch:
        batch.add_column(sa.Column('owner', sa.String(length=100), nullable=True))
        batch.create_index('ix_model_version_owner', ['owner'])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('model_version') as batch:
        batch.drop_index('ix_model_version_owner')
        batch.drop_column('owner')
    with op.batch_alter_table('job') as batch:
        batch.drop_index('ix_job_owner')
        batch.drop_column('owner')
    op.drop_table('api_key')
