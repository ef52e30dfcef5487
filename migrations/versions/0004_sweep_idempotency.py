"""Idempotency-Key for sweeps: a key now names the job or the sweep its first request created.

Revision ID: 0004_sweep_idempotency
Revises: 0003_job_nodes
Create Date: 2026-12-01 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_sweep_idempotency"
down_revision: str | None = "0003_job_nodes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_id", sa.String(length=64), nullable=True))
        batch_op.alter_column("job_id", existing_type=sa.VARCHAR(length=64), nullable=True)
        batch_op.create_foreign_key(
            batch_op.f("fk_idempotency_keys_sweep_id_sweeps"),
            "sweeps",
            ["sweep_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    op.execute("DELETE FROM idempotency_keys WHERE job_id IS NULL")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_idempotency_keys_sweep_id_sweeps"), type_="foreignkey"
        )
        batch_op.alter_column("job_id", existing_type=sa.VARCHAR(length=64), nullable=False)
        batch_op.drop_column("sweep_id")
