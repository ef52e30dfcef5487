"""64-bit counts: a job's trained tokens and a file's bytes.

A long job passes 2^31 tokens (2.1 billion: a 135M model on a few GPUs for a day), and an
operator may raise the upload limit past 2 GiB; PostgreSQL's INTEGER is 32-bit and would refuse
either.

Revision ID: 0011_big_counts
Revises: 0010_job_integrations
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_big_counts"
down_revision: str | None = "0010_job_integrations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("jobs", "trained_tokens", True), ("files", "bytes", False))


def upgrade() -> None:
    _alter(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    _alter(sa.BigInteger(), sa.Integer())


def _alter(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    # PostgreSQL alters the column in place; on SQLite, batch mode rebuilds the table with the
    # new declared type (its INTEGER is 64-bit either way; the declared type keeps the schema
    # equal to the models'). Migrations run with SQLite's foreign keys off, so the rebuild
    # leaves the rows that reference the table alone.
    for table, column, nullable in COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, type_=new, existing_type=old, existing_nullable=nullable)
