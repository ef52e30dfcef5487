"""Sweep schemas: the create body, the sweep object with its member jobs, and the report.

A sweep body is a fine-tuning job body (model, training_file, method/hyperparameters, seed,
replay.dataset) plus the lists it spans. Unlike the OpenAI-shaped job body, unknown keys are
refused: this endpoint is ReplayFT's own, and a misspelt `replay_fraction` must not quietly run
the default grid.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.jobs import (
    DatasetName,
    FileId,
    Hyperparameters,
    JobError,
    JobStatus,
    Method,
    Progress,
    Supervised,
    TrainingRequest,
)

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
    validation_dataset: FileId | None = Field(
        None,
        description="A `fine-tune` file id of generic text held out for val_loss_generic; "
        "default: documents held out of `dataset`.",
    )


# The bounds `api.services.sweeps` checks, declared here so that the schema says them: a value
# in range; no value twice (`uniqueItems`, checked by the service as pydantic does not); at most
# MAX_MEMBERS jobs in all (replay fractions x allocations + reference subsets, checked by the
# service: a rule across fields).
ReplayFraction = Annotated[float, Field(ge=0, lt=1)]
Share = Annotated[float, Field(gt=0, le=1)]
_UNIQUE = {"uniqueItems": True}


class SweepHyperparameters(Hyperparameters):
    target_subset_fraction: None = Field(
        None, description="Set by the sweep for its reference runs: use reference_subsets."
    )


class SweepSupervised(Supervised):
    hyperparameters: SweepHyperparameters = Field(default_factory=SweepHyperparameters)


class SweepMethod(Method):
    supervised: SweepSupervised | None = None


class SweepCreate(TrainingRequest):
    model_config = ConfigDict(extra="forbid")

    method: SweepMethod | None = None
    hyperparameters: SweepHyperparameters | None = Field(
        None, description="Deprecated OpenAI form."
    )
    replay: SweepReplay | None = None
    replay_fractions: list[ReplayFraction] = Field(
        default_factory=lambda: list(DEFAULT_REPLAY_FRACTIONS),
        min_length=1,
        max_length=MAX_MEMBERS,
        json_schema_extra=_UNIQUE,
        description="r values to try, each in [0, 1), on all the target data.",
    )
    target_stage2_allocations: list[Share] | None = Field(
        None,
        min_length=1,
        max_length=MAX_MEMBERS,
        json_schema_extra=_UNIQUE,
        description="Mid-training: a values to try, each in (0, 1], crossed with replay_fractions "
        "(needs hyperparameters.total_steps). Unset = fine-tuning.",
    )
    reference_subsets: list[Share] = Field(
        default_factory=lambda: list(DEFAULT_REFERENCE_SUBSETS),
        min_length=2,
        max_length=MAX_MEMBERS,
        json_schema_extra=_UNIQUE,
        description="Shares of the target data, each in (0, 1], for the no-replay reference runs "
        "of the efficiency fit; 1 is always included (it is also the baseline), and the fit "
        "needs at least 3 distinct shares counting it.",
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
    eval_names: list[str] = Field(
        default_factory=list,
        description="The task evals of the members, by name: each configuration's "
        "`eval_scores` maps them to its final accuracy, beside its `generic_change`.",
    )
    recommendation: dict[str, Any] | None
    notes: list[str]
    explain: dict[str, str] = Field(
        default_factory=dict, description="What x_eq, the multiplier and its interval mean."
    )
