"""retrieval: folders, collections, documents, chunks (+ full-text index per backend)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 16:30:50.045484
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('retrieval_folders',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('retrieval_folders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retrieval_folders_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('retrieval_collections',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('folder_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('embedding_model', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('dimensions', sa.Integer(), nullable=True),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['folder_id'], ['retrieval_folders.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('folder_id', 'name', name='uq_retrieval_collections_folder_name')
    )
    with op.batch_alter_table('retrieval_collections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retrieval_collections_folder_id'), ['folder_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrieval_collections_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('retrieval_documents',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('folder_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('collection_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('file_name', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('source_url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
    sa.Column('content_type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('bytes', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('tokens', sa.Integer(), nullable=True),
    sa.Column('chunk_count', sa.Integer(), nullable=False),
    sa.Column('pages', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['collection_id'], ['retrieval_collections.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['folder_id'], ['retrieval_folders.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('retrieval_documents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retrieval_documents_collection_id'), ['collection_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrieval_documents_folder_id'), ['folder_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrieval_documents_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrieval_documents_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('retrieval_chunks',
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('folder_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('collection_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('document_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('text', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('page_label', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('source_url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
    sa.Column('start_offset', sa.Integer(), nullable=False),
    sa.Column('end_offset', sa.Integer(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['collection_id'], ['retrieval_collections.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['document_id'], ['retrieval_documents.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['folder_id'], ['retrieval_folders.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('id')
    )
    with op.batch_alter_table('retrieval_chunks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retrieval_chunks_collection_id'), ['collection_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrieval_chunks_document_id'), ['document_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_retrieval_chunks_folder_id'), ['folder_id'], unique=False)

    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # External-content FTS5 index over retrieval_chunks.text, kept in step by triggers, so a
        # chunk and its index entry are written and deleted in the same transaction.
        op.execute("CREATE VIRTUAL TABLE retrieval_chunks_fts USING fts5("
                   "text, content='retrieval_chunks', content_rowid='seq', tokenize='porter unicode61')")
        op.execute("CREATE TRIGGER retrieval_chunks_fts_ai AFTER INSERT ON retrieval_chunks BEGIN "
                   "INSERT INTO retrieval_chunks_fts(rowid, text) VALUES (new.seq, new.text); END")
        op.execute("CREATE TRIGGER retrieval_chunks_fts_ad AFTER DELETE ON retrieval_chunks BEGIN "
                   "INSERT INTO retrieval_chunks_fts(retrieval_chunks_fts, rowid, text) "
                   "VALUES ('delete', old.seq, old.text); END")
        op.execute("CREATE TRIGGER retrieval_chunks_fts_au AFTER UPDATE OF text ON retrieval_chunks BEGIN "
                   "INSERT INTO retrieval_chunks_fts(retrieval_chunks_fts, rowid, text) "
                   "VALUES ('delete', old.seq, old.text); "
                   "INSERT INTO retrieval_chunks_fts(rowid, text) VALUES (new.seq, new.text); END")
    elif bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE retrieval_chunks ADD COLUMN search_vector tsvector "
                   "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED")
        op.execute("CREATE INDEX ix_retrieval_chunks_search_vector ON retrieval_chunks USING gin (search_vector)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("retrieval_chunks_fts_ai", "retrieval_chunks_fts_ad", "retrieval_chunks_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS retrieval_chunks_fts")
    with op.batch_alter_table('retrieval_chunks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retrieval_chunks_folder_id'))
        batch_op.drop_index(batch_op.f('ix_retrieval_chunks_document_id'))
        batch_op.drop_index(batch_op.f('ix_retrieval_chunks_collection_id'))

    op.drop_table('retrieval_chunks')
    with op.batch_alter_table('retrieval_documents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retrieval_documents_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_retrieval_documents_status'))
        batch_op.drop_index(batch_op.f('ix_retrieval_documents_folder_id'))
        batch_op.drop_index(batch_op.f('ix_retrieval_documents_collection_id'))

    op.drop_table('retrieval_documents')
    with op.batch_alter_table('retrieval_collections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retrieval_collections_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_retrieval_collections_folder_id'))

    op.drop_table('retrieval_collections')
    with op.batch_alter_table('retrieval_folders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retrieval_folders_tenant_id'))

    op.drop_table('retrieval_folders')
