"""Alembic environment: always handed a live connection by `db.migrate.upgrade`."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import finetune_service.db.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `finetune-service migrate`, which supplies the connection")



def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Keep autogenerate away from the hand-written full-text search and pgvector DDL the models don't declare."""
    hand_written = (type_ == "table" and (name or "").startswith(("retrieval_chunks_fts", "retrieval_chunk_vectors"))
                    ) or (type_ == "column" and name == "search_vector")
    return not (reflected and compare_to is None and hand_written)


context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    include_object=include_object,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
