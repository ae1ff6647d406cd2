"""media robin

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 16:40:42.175974
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('robin_fine_tunings',
    sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('task', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('sub_category', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('media_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('params_input', sa.JSON(), nullable=False),
    sa.Column('params_output', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('extension', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('applied', sa.JSON(), nullable=False),
    sa.Column('not_applied', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('robin_fine_tunings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_robin_fine_tunings_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('robin_fine_tunings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_robin_fine_tunings_tenant_id'))

    op.drop_table('robin_fine_tunings')
