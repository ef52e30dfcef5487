"""Per-deployment limits on what one job may cost: `REPLAYFT_MAX_STEPS_PER_JOB` optimizer steps
and `REPLAYFT_MAX_TOKENS_PER_JOB` tokens (steps x batch_size x seq_len), so that nobody queues a
job that cannot finish.

A job's exact step count is known only once its data is tokenized (the files worker's
`prepare_job`, or `POST /v1/fine_tuning/plan`), so the limits are checked twice:
- at submission, on what the spec and the training file's stats tell: `total_steps` when it is
  set, else the engine's own schedule (`schedule.resolve_plan`) over the sequences that the
  file's token count (recorded by upload validation) packs into: an estimate;
- on the resolved plan, exactly, before the job is queued for training.
Either way the answer names the setting to change (its engine field path) and the limit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from control.settings import Settings

if TYPE_CHECKING:
    from replay_engine.spec import JobSpec


def _culprit(spec: JobSpec) -> str:
    """The setting to blame in `param`: total_steps when set; else replay.fraction (or
    stage2_duration) when it multiplies the steps more than the epochs do and more than ten-fold
    (r near 1); else n_epochs, the usual knob when the data is simply large."""
    if spec.total_steps is not None:
        return "total_steps"
    r = spec.replay.fraction or 0.0
    d = spec.replay.stage2_duration or 1.0
    ordinary = max(spec.n_epochs, 10.0)
    factors = {"replay.fraction": 1 / (1 - r), "replay.stage2_duration": 1 / d}
    worst = max(factors, key=factors.__getitem__)
    return worst if factors[worst] > ordinary else "n_epochs"


def plan_problem(
    spec: JobSpec, total_steps: int, settings: Settings, *, estimated: bool = False
) -> tuple[str, str] | None:
    """(engine field path, message) when a plan of `total_steps` steps is over a limit."""
    tokens = total_steps * spec.batch_size * spec.seq_len
    about = "about " if estimated else ""
    param = _culprit(spec)
    if total_steps > settings.max_steps_per_job:
        return param, (
            f"this job would train {about}{total_steps:,} steps; this deployment allows at most "
            f"{settings.max_steps_per_job:,} steps per job (REPLAYFT_MAX_STEPS_PER_JOB). "
            f"Lower {param}."
        )
    if tokens > settings.max_tokens_per_job:
        return param, (
            f"this job would train on {about}{tokens:,} tokens ({total_steps:,} steps of "
            f"batch_size {spec.batch_size} x seq_len {spec.seq_len}); this deployment allows at "
            f"most {settings.max_tokens_per_job:,} tokens per job (REPLAYFT_MAX_TOKENS_PER_JOB). "
            f"Lower {param}."
        )
    return None


def estimated_steps(spec: JobSpec, target_tokens: int | None) -> int | None:
    """The job's step count as far as it is known before its data is tokenized: `total_steps`,
    or the schedule over the target sequences that `target_tokens` make (less the validation
    holdout and the subset). None when neither is known or the schedule cannot be resolved
    (the worker then reports why, on the real data)."""
    from replay_engine.schedule import resolve_plan
    from replay_engine.spec import SpecError

    if spec.total_steps is not None:
        return spec.total_steps
    if not spec.training_file or not target_tokens:
        return None
    kept = 1.0 if spec.validation_file else 1 - spec.val_fraction
    sequences = math.floor(target_tokens * kept * spec.target_subset_fraction / spec.seq_len)
    try:
        return resolve_plan(spec, max(1, sequences), 1).total_steps
    except (SpecError, OverflowError, ValueError):
        return None
