"""Fair sharing between teams: a job's `priority` within its team, and each team's own limits
(empty = the deployment's defaults from settings).

Revision ID: 0008_fair_share
Revises: 0007_job_evals
Create Date: 2026-12-04 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_fair_share"
down_revision: str | None = "0007_job_evals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_running_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_queued_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("monthly_tokens", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("monthly_gpu_hours", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        for column in (
            "monthly_gpu_hours",
            "monthly_tokens",
            "max_queued_jobs",
            "max_running_jobs",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("priority")
