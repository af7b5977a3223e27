"""Uncertainty and applicability domain of each prediction; crystal density of each structure

Revision ID: b3f9d2a6e4c1
Revises: 8d2e4b6c1a77
Create Date: 2026-12-02 14:00:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'b3f9d2a6e4c1'
down_revision: str | Sequence[str] | None = '8d2e4b6c1a77'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('prediction') as batch:
        batch.add_column(sa.Column('uncertainty', sa.Float(), nullable=True))
        batch.add_column(sa.Column('uncertainties', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('in_domain', sa.Boolean(), nullable=True))
        batch.add_column(sa.Column('neighbours', sa.JSON(), nullable=True))
    with op.batch_alter_table('structure') as batch:
        batch.add_column(sa.Column('density_g_cm3', sa.Float(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('structure') as batch:
        batch.drop_column('density_g_cm3')
    with op.batch_alter_table('prediction') as batch:
        batch.drop_column('neighbours')
        batch.drop_column('in_domain')
        batch.drop_column('uncertainties')
        batch.drop_column('uncertainty')
