"""Database layer: SQLAlchemy 2 ORM models (`models`), engine and sessions (`session`), and the
Alembic upgrade entry point (`migrate`). Imports no web framework, so the worker uses it too."""
