"""completions evaluations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:15:06.678131
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('saved_responses',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('upstream_model', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('choices', sa.JSON(), nullable=False),
    sa.Column('usage', sa.JSON(), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('stream', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('saved_responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_saved_responses_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('evaluations',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('base_model', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('dataset_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('split_name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('output_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('evaluation_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('evaluation_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('row_index', sa.Integer(), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('expected', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('answer', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('base_answer', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('base_scores', sa.JSON(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.ForeignKeyConstraint(['evaluation_id'], ['evaluations.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('evaluation_id', 'row_index', name='uq_evaluation_results_row')
    )
    with op.batch_alter_table('evaluation_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluation_results_evaluation_id'), ['evaluation_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluation_results_tenant_id'), ['tenant_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('evaluation_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluation_results_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_evaluation_results_evaluation_id'))

    op.drop_table('evaluation_results')
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_evaluations_job_id'))

    op.drop_table('evaluations')
    with op.batch_alter_table('saved_responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_saved_responses_tenant_id'))

    op.drop_table('saved_responses')
