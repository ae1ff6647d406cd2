"""change notifications: PostgreSQL triggers that announce job versions and key changes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 18:20:00.000000

Each service process listens and answers job versions and API keys from memory; see
finetune_service/db/change_feed.py. On SQLite this does nothing.
"""

from __future__ import annotations

from alembic import op

from finetune_service.db import change_feed

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    change_feed.install(op.get_bind())


def downgrade() -> None:
    change_feed.uninstall(op.get_bind())
