"""pgvector: an HNSW-indexed side table of chunk vectors, only where the `vector` extension is available

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 17:20:00.000000

On SQLite, or on PostgreSQL without the extension (or without the right to create it), this does
nothing and retrieval keeps its exact vector search. See finetune_service/retrieval/pgvector.py.
"""

from __future__ import annotations

from alembic import op

from finetune_service.retrieval import pgvector

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pgvector.install(op.get_bind())


def downgrade() -> None:
    pgvector.uninstall(op.get_bind())
