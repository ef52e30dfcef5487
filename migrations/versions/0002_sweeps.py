"""Sweeps: a family of fine-tuning jobs (replay configurations plus no-replay reference runs on
nested target subsets) and the role of each member job.

Revision ID: 0002_sweeps
Revises: 0001
Create Date: 2026-12-01 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_sweeps"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=False),
        sa.Column("training_file", sa.String(length=64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("replay_fractions", sa.JSON(), nullable=False),
        sa.Column("target_stage2_allocations", sa.JSON(), nullable=True),
        sa.Column("reference_subsets", sa.JSON(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_sweeps_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_sweeps")),
        sa.UniqueConstraint("id", name=op.f("uq_sweeps_id")),
    )
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweeps_team_id"), ["team_id"], unique=False)

    op.create_table(
        "sweep_members",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sweep_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("replay_fraction", sa.Float(), nullable=False),
        sa.Column("target_stage2_allocation", sa.Float(), nullable=True),
        sa.Column("target_subset_fraction", sa.Float(), nullable=False),
        sa.Column("is_configuration", sa.Boolean(), nullable=False),
        sa.Column("is_reference", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["sweeps.id"],
            name=op.f("fk_sweep_members_sweep_id_sweeps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_sweep_members_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_sweep_members")),
        sa.UniqueConstraint("job_id", name=op.f("uq_sweep_members_job_id")),
    )
    with op.batch_alter_table("sweep_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_members_sweep_id"), ["sweep_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sweep_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_members_sweep_id"))
    op.drop_table("sweep_members")
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweeps_team_id"))
    op.drop_table("sweeps")
