"""Multi-machine jobs: one row per machine (node) of a job's run (named by its leader, the
worker holding the job's lease), the claim of the worker that runs that machine.

Revision ID: 0003_job_nodes
Revises: 0002_sweeps
Create Date: 2026-12-01 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_job_nodes"
down_revision: str | None = "0002_sweeps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_nodes",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("leader", sa.String(length=200), nullable=False),
        sa.Column("node_rank", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("joined_at", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_nodes_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_job_nodes")),
        sa.UniqueConstraint("job_id", "leader", "node_rank", name=op.f("uq_job_nodes_job_id")),
    )
    with op.batch_alter_table("job_nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_nodes_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_nodes_job_id"))
    op.drop_table("job_nodes")
