"""leases, pipeline stages and idempotency keys

Revision ID: 5c1f0e7a9b21
Revises: 2167e105580d
Create Date: 2026-12-01 23:30:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '5c1f0e7a9b21'
down_revision: str | Sequence[str] | None = '2167e105580d'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('job') as batch:
        batch.add_column(sa.Column('idempotency_key', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('lease_owner', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint('uq_job_idempotency_key', ['idempotency_key'])
    with op.batch_alter_table('job_item') as batch:
        batch.add_column(sa.Column('stage', sa.String(length=16), nullable=False, server_default='voxels'))
        batch.add_column(sa.Column('lease_owner', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))
        batch.create_index('ix_job_item_lease_until', ['lease_until'])
    # Items that already have a structure hash only wait for inference.
    op.execute("UPDATE job_item SET stage = 'inference' WHERE structure_sha256 IS NOT NULL")
    op.create_index('ix_prediction_structure_model', 'prediction', ['structure_sha256', 'model_id'])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_prediction_structure_model', table_name='prediction')
    with op.batch_alter_table('job_item') as batch:
        batch.drop_index('ix_job_item_lease_until')
        batch.drop_column('lease_until')
        batch.drop_column('lease_owner')
        batch.drop_column('stage')
    with op.batch_alter_table('job') as batch:
        batch.drop_constraint('uq_job_idempotency_key', type_='unique')
        batch.drop_column('lease_until')
        batch.drop_column('lease_owner')
        batch.drop_column('idempotency_key')
