"""jobs list index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 18:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Job lists are a tenant's jobs newest first: this index answers them (and their count)
    # without sorting, however many jobs the tenant has.
    op.create_index('ix_jobs_tenant_created', 'jobs', ['tenant_id', 'created_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_jobs_tenant_created', table_name='jobs')
