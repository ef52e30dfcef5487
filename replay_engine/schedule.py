"""The two-stage data schedule and the learning-rate schedule, as plain math.

Notation (the paper's, see docs/science.md):
  N  total optimizer steps, B sequences per step
  g  target fraction of all training sequences = epochs x unique target sequences / (N x B)
  a  target stage-2 allocation: share of the (epoched) target data placed in stage 2
  r  replay fraction: share of stage-2 sequences that are generic (stage-2 target weight 1 - r)
  d  stage-2 duration as a fraction of N;   d = g a / (1 - r)
  w1 stage-1 target weight = g (1 - a) / (1 - d);   check: w1 (1 - d) + (1 - r) d = g
  transition step = floor((1 - d) N)

One spec covers every regime:
  pre-training   no target data: one stage of generic data, N = total_steps.
  fine-tuning    d = 1, a = 1: one stage of (1 - r) target + r generic. Without total_steps the
                 step count follows from the data, N = ceil(epochs x T / ((1 - r) B)), so replay
                 adds steps (the paper's fixed-epochs comparison).
  mid-training   d < 1: stage 1 = generic + (1 - a) of the target, stage 2 = the rest with replay r,
                 under one LR schedule and one optimizer.

With `total_steps` fixed, g is fixed by the data and any two of (r, a, d) give the third. Without it,
the missing values default to a = 1, d = 1, r = 0 and N follows from the data.

Everything here is torch-free and a pure function of its inputs, so `replayft plan` can print a
schedule before any GPU is paid for, and tests can check the formulas as tables.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .spec import JobSpec, LRSchedulerSpec, SpecError

_TOL = 1e-6


@dataclass(frozen=True)
class Stage:
    index: int  # 1 or 2 (pre-training and fine-tuning runs have just one stage)
    start_step: int  # inclusive
    end_step: int  # exclusive
    target_weight: float  # share of each batch that is target data

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step


@dataclass(frozen=True)
class Plan:
    """A resolved schedule: everything the trainer and `replayft plan` need, nothing torch."""

    mode: str
    total_steps: int
    batch_size: int
    seq_len: int
    seed: int
    stages: tuple[Stage, ...]
    target_fraction: float  # g
    replay_fraction: float | None  # r
    target_stage2_allocation: float | None  # a
    stage2_duration: float | None  # d
    target_sequences: int  # unique target training sequences (T)
    generic_sequences: int  # unique generic training sequences (G)
    warmup_steps: int
    peak_lr: float
    lr_scheduler: LRSchedulerSpec

    def stage_at(self, step: int) -> Stage:
        for stage in self.stages:
            if stage.start_step <= step < stage.end_step:
                return stage
        raise IndexError(f"step {step} is outside the plan (0..{self.total_steps - 1})")

    def target_count_before(self, step: int) -> int:
        """Target sequences in steps [0, step): exact, with rounding error carried forward."""
        total = 0
        for stage in self.stages:
            if step <= stage.start_step:
                break
            local = min(step, stage.end_step) - stage.start_step
            total += _cumulative_count(stage.target_weight, self.batch_size, local)
        return total

    def target_count_at(self, step: int) -> int:
        """Target sequences in the batch of `step`."""
        return self.target_count_before(step + 1) - self.target_count_before(step)

    @property
    def target_sequences_used(self) -> int:
        return self.target_count_before(self.total_steps)

    @property
    def generic_sequences_used(self) -> int:
        return self.total_steps * self.batch_size - self.target_sequences_used

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.peak_lr, self.lr_scheduler)

    def summary(self) -> dict:
        """A JSON-ready description (what `replayft plan --json` prints)."""
        target_used, generic_used = self.target_sequences_used, self.generic_sequences_used
        stages = []
        for stage in self.stages:
            target = self.target_count_before(stage.end_step) - self.target_count_before(
                stage.start_step
            )
            stages.append(
                {
                    "stage": stage.index,
                    "start_step": stage.start_step,
                    "end_step": stage.end_step,
                    "steps": stage.steps,
                    "target_weight": stage.target_weight,
                    "generic_weight": 1.0 - stage.target_weight,
                    "target_tokens": target * self.seq_len,
                    "generic_tokens": (stage.steps * self.batch_size - target) * self.seq_len,
                    "lr_at_start": self.lr_at(stage.start_step),
                    "lr_at_end": self.lr_at(stage.end_step - 1),
                }
            )
        target_epochs = target_used / self.target_sequences if self.target_sequences else 0.0
        generic_epochs = generic_used / self.generic_sequences if self.generic_sequences else 0.0
        warnings = []
        if generic_epochs > 1:
            warnings.append(
                f"generic data is used {generic_epochs:.2f} times over: add generic data "
                f"so replay does not repeat it"
            )
        return {
            "mode": self.mode,
            "total_steps": self.total_steps,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "target_fraction": self.target_fraction,
            "replay_fraction": self.replay_fraction,
            "target_stage2_allocation": self.target_stage2_allocation,
            "stage2_duration": self.stage2_duration,
            "transition_step": self.stages[-1].start_step if len(self.stages) > 1 else None,
            "target_sequences": self.target_sequences,
            "generic_sequences": self.generic_sequences,
            "target_epochs": target_epochs,
            "generic_epochs": generic_epochs,
            "target_tokens": target_used * self.seq_len,
            "generic_tokens": generic_used * self.seq_len,
            "warmup_steps": self.warmup_steps,
            "peak_lr": self.peak_lr,
            "lr_scheduler": self.lr_scheduler.model_dump(),
            "stages": stages,
            "warnings": warnings,
        }

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lr_scheduler"] = self.lr_scheduler.model_dump()
        return data


def _cumulative_count(weight: float, batch_size: int, steps: int) -> int:
    # Round the running total, not each batch: per-batch counts are floor or ceil of w*B and the
    # running fraction stays within half a sequence of w forever (the largest-remainder method
    # for two sources, with the error carried forward).
    return int(math.floor(weight * batch_size * steps + 0.5))


# ---------------------------------------------------------------------------- stage resolution
def resolve_plan(spec: JobSpec, target_sequences: int, generic_sequences: int) -> Plan:
    """Turn a spec plus the data's sequence counts into stage lengths and weights.

    Raises SpecError (with the field to blame) when the knobs cannot be satisfied by this data.
    """
    B, E, T = spec.batch_size, spec.n_epochs, target_sequences
    replay = spec.replay
    r, a, d = replay.fraction, replay.target_stage2_allocation, replay.stage2_duration

    def fail(param: str, message: str) -> SpecError:
        return SpecError([(param, message)])

    if spec.training_file and T == 0:
        raise fail("training_file", "target data holds no training sequences")
    if replay.dataset and generic_sequences == 0:
        raise fail("replay.dataset", "generic data holds no training sequences")

    if not spec.training_file:  # pre-training: generic only
        N = spec.total_steps
        assert N is not None  # spec.check() guarantees it
        stages = (Stage(1, 0, N, 0.0),)
        return _plan(spec, "pretrain", N, stages, 0.0, None, None, None, T, generic_sequences)

    target_total = E * T  # epoched target sequences to place
    if spec.total_steps is None:
        r = 0.0 if r is None else r
        a = 1.0 if a is None else a
        d = 1.0 if d is None else d
        if a == 0:
            raise fail("replay.target_stage2_allocation", "must be > 0 (stage 2 needs target data)")
        N = max(1, math.ceil(a * target_total / ((1 - r) * d * B) - _TOL))
        g = target_total / (N * B)
    else:
        N = spec.total_steps
        g = target_total / (N * B)
        if g > 1 + _TOL:
            raise fail(
                "total_steps",
                f"{E:g} epochs of {T} target sequences need at least "
                f"{math.ceil(target_total / B)} steps of {B}; got total_steps={N}",
            )
        given = sum(v is not None for v in (r, a, d))
        if given == 3:
            expected = g * a / (1 - r)
            if abs(expected - d) > 1e-3:
                raise fail(
                    "replay.stage2_duration",
                    f"inconsistent with fraction and target_stage2_allocation for this data "
                    f"(target fraction g={g:.4f} gives d = g*a/(1-r) = {expected:.4f}); give only two",
                )
        elif r is not None and a is not None:
            d = g * a / (1 - r)
        elif r is not None and d is not None:
            a = d * (1 - r) / g
        elif a is not None and d is not None:
            r = 1 - g * a / d
        elif a is not None:  # only a
            if a < 1:
                raise fail("replay.stage2_duration", "give fraction or stage2_duration as well")
            d = 1.0
            r = 1 - g
        else:  # r alone, d alone, or nothing: all target data in the last stage
            a = 1.0
            if r is not None:
                d = g / (1 - r)
            else:
                d = 1.0 if d is None else d
                r = 1 - g * a / d
        if not 0 <= r < 1 + _TOL:
            raise fail(
                "replay.fraction",
                f"resolves to r = {r:.4f}, outside [0, 1): change the other knobs",
            )
        if not 0 < a <= 1 + _TOL:
            raise fail(
                "replay.target_stage2_allocation",
                f"resolves to a = {a:.4f}, outside (0, 1]: change the other knobs",
            )
        if not 0 < d <= 1 + _TOL:
            raise fail(
                "replay.stage2_duration",
                f"resolves to d = {d:.4f} > 1: the target data does not fit in the steps; "
                f"lower replay.fraction or raise total_steps",
            )
        r, a, d = max(0.0, r), min(1.0, a), min(1.0, d)

    if r > _TOL and not replay.dataset:
        raise fail(
            "replay.dataset", f"the schedule needs generic data (r = {r:.4f}) but none was given"
        )

    transition = math.floor((1 - d) * N + _TOL)
    if transition == 0:
        if a < 1 - _TOL:
            raise fail(
                "replay.target_stage2_allocation",
                f"stage 1 is empty (d = {d:.4f}), so all target data must be in stage 2 (a = 1)",
            )
        stages = (Stage(1, 0, N, 1 - r),)
    else:
        w1 = g * (1 - a) / (1 - d)
        if w1 > 1 + _TOL:
            raise fail(
                "replay.stage2_duration",
                f"stage 1 would need target weight {w1:.4f} > 1: raise stage2_duration or "
                f"target_stage2_allocation",
            )
        if w1 < 1 - _TOL and not replay.dataset:
            raise fail(
                "replay.dataset", "stage 1 mixes in generic data, but no replay.dataset was given"
            )
        stages = (Stage(1, 0, transition, min(1.0, w1)), Stage(2, transition, N, 1 - r))
    mode = "midtrain" if len(stages) == 2 else "finetune"
    return _plan(spec, mode, N, stages, g, r, a, d, T, generic_sequences)


def _plan(spec, mode, N, stages, g, r, a, d, T, G) -> Plan:
    return Plan(
        mode=mode,
        total_steps=N,
        batch_size=spec.batch_size,
        seq_len=spec.seq_len,
        seed=spec.seed,
        stages=stages,
        target_fraction=g,
        replay_fraction=r,
        target_stage2_allocation=a,
        stage2_duration=d,
        target_sequences=T,
        generic_sequences=G,
        warmup_steps=warmup_steps(N, spec.lr_scheduler),
        peak_lr=spec.learning_rate,
        lr_scheduler=spec.lr_scheduler,
    )


# ---------------------------------------------------------------------------- learning rate
def warmup_steps(total_steps: int, sched: LRSchedulerSpec) -> int:
    return math.floor(sched.warmup_ratio * total_steps)


def lr_at(step: int, total_steps: int, peak_lr: float, sched: LRSchedulerSpec) -> float:
    """LR for optimizer step `step` (0-based) of `total_steps`.

    1. warmup: linear up to the peak over floor(warmup_ratio * N) steps (none for short runs)
    2. then by type: constant; linear or cosine from the peak to min_lr at step N; or WSD, which
       holds the peak and decays over the last floor(decay_ratio * N) steps with the chosen shape.
    The curve reaches min_lr at step N, the first step that is not taken. A decay's first step is
    still at the peak, so a WSD decay takes at least 2 steps (when the run has them after its
    warmup): otherwise a short run (15 steps at decay_ratio 0.1) would never leave the peak.
    """
    N, W = total_steps, warmup_steps(total_steps, sched)
    min_lr = sched.min_lr_ratio * peak_lr
    if step < W:
        return peak_lr * (step + 1) / W
    if sched.type == "constant":
        return peak_lr
    if sched.type == "wsd":
        decay_steps = math.floor(sched.decay_ratio * N)
        if sched.decay_ratio > 0:
            decay_steps = max(decay_steps, min(2, N - W))
        decay_start = N - decay_steps
        if step < decay_start:
            return peak_lr
        progress = (step - decay_start) / max(1, N - decay_start)
        shape = sched.decay_shape
    else:
        progress = (step - W) / max(1, N - W)
        shape = sched.type  # linear or cosine
    progress = min(1.0, progress)
    if shape == "linear":
        factor = 1 - progress
    elif shape == "cosine":
        factor = 0.5 * (1 + math.cos(math.pi * progress))
    else:  # 1-sqrt
        factor = 1 - math.sqrt(progress)
    return min_lr + (peak_lr - min_lr) * factor
