"""Database access: async engine, SQLModel tables and alembic migrations."""
