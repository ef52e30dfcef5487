"""Sweep schemas: the create body, the sweep object with its member jobs, and the report.

A sweep body is a fine-tuning job body (model, training_file, method/hyperparameters, seed,
replay.dataset) plus the lists it spans. Unlike the OpenAI-shaped job body, unknown keys are
refused: this endpoint is ReplayFT's own, and a misspelt `replay_fraction` must not quietly run
the default grid.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.jobs import DatasetName, JobError, JobStatus, Progress, TrainingRequest

DEFAULT_REPLAY_FRACTIONS = [0.0, 0.1, 0.25, 0.5, 0.75]
DEFAULT_REFERENCE_SUBSETS = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
MAX_MEMBERS = 64  # jobs one sweep may launch

SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
MemberRole = Literal["configuration", "reference"]


class SweepReplay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: DatasetName | list[DatasetName] | None = Field(
        None, description="A `replay` file id or a registered corpus name (or a list of them)."
    )


class SweepCreate(TrainingRequest):
    model_config = ConfigDict(extra="forbid")

    replay: SweepReplay | None = None
    replay_fractions: list[float] = Field(
        default_factory=lambda: list(DEFAULT_REPLAY_FRACTIONS),
        description="r values to try, each in [0, 1), on all the target data.",
    )
    target_stage2_allocations: list[float] | None = Field(
        None,
        description="Mid-training: a values to try, each in (0, 1], crossed with replay_fractions "
        "(needs hyperparameters.total_steps). Unset = fine-tuning.",
    )
    reference_subsets: list[float] = Field(
        default_factory=lambda: list(DEFAULT_REFERENCE_SUBSETS),
        description="Shares of the target data, each in (0, 1], for the no-replay reference runs "
        "of the efficiency fit; 1 is always included (it is also the baseline).",
    )


class SweepMemberPublic(BaseModel):
    job_id: str
    status: JobStatus
    roles: list[MemberRole]
    replay_fraction: float
    target_stage2_allocation: float | None
    target_subset_fraction: float
    progress: Progress | None = None
    error: JobError | None = None
    fine_tuned_model: str | None = None


class SweepPublic(BaseModel):
    object: Literal["sweep"] = "sweep"
    id: str
    created_at: int
    finished_at: int | None
    status: SweepStatus
    model: str
    training_file: str
    validation_file: str | None
    seed: int
    metadata: dict[str, str] | None
    replay: dict[str, Any] | None
    hyperparameters: dict[str, Any]
    replay_fractions: list[float]
    target_stage2_allocations: list[float] | None
    reference_subsets: list[float]
    counts: dict[str, int]
    members: list[SweepMemberPublic]


class SweepReport(BaseModel):
    """The data-efficiency report; its fields are built by api.services.sweep_report."""

    model_config = ConfigDict(extra="allow")

    object: Literal["sweep.report"] = "sweep.report"
    sweep_id: str
    status: Literal["partial", "complete", "incomplete"]
    sweep_status: SweepStatus
    counts: dict[str, int]
    reference: dict[str, Any]
    baseline: dict[str, Any] | None
    configurations: list[dict[str, Any]]
    recommendation: dict[str, Any] | None
    notes: list[str]
