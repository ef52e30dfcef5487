"""The data-efficiency report of a sweep, as a pure function of its members' results.

No database here: `api.services.sweeps` turns rows into `MemberResult`s, and `build_report` turns
those into the JSON the API serves (and the unit tests feed it the paper's losses directly).

The method is science.md's, through `replay_engine.efficiency`:
  1. reference curve: the final target validation loss of each no-replay run on a nested subset of
     the target data, against x = its share of the full target training set (measured as unique
     packed target sequences, so x is what the run really saw, not the nominal fraction);
  2. fit L(x) = A / x^B + C (log-linear fallback when it degenerates: `fit.method`);
  3. each configuration's multiplier over the baseline S0 (no replay on all the target data) is
     x_eq(L_S) / x_eq(L_S0): "this replay fraction is worth k times more target data";
  4. the recommendation is the configuration with the lowest final target validation loss.

Each multiplier comes with its spread: a residual bootstrap of the reference fit
(`efficiency.multiplier_spread`, cached per inputs, as a finished sweep's report is asked for
again and again), and a flag when it went through the log-linear fallback.

While members still run, the report is `partial`: whatever is known is filled in, but the
recommendation waits until every configuration it compares (and the baseline) has finished, so it
never names a winner that a running member may still beat. A failed or cancelled member is listed
with its error and left out of the fit; the report is then `incomplete`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from control.statuses import TERMINAL_STATUSES as TERMINAL
from control.statuses import sweep_status
from replay_engine.efficiency import (
    LOG_LINEAR,
    POWER,
    ReferenceFit,
    efficiency_multiplier,
    fit_reference,
    multiplier_spread,
)

# What the report's numbers mean, shown beside them by the dashboard and the CLI.
EXPLAIN = {
    "x_eq": "Equivalent target data: the share of the full target set a run without replay "
    "would need to reach this loss, read off the reference curve.",
    "multiplier": "x_eq of this configuration over x_eq of the baseline (no replay, all the "
    "target data): 'worth this many times the target data'. Above 1: replay helped.",
    "multiplier_interval": "The middle 90% of the multiplier when the reference curve is refit "
    "to its own scatter (a residual bootstrap); wide means the reference runs cannot pin it down.",
    "generic_change": "Final minus initial validation loss on generic data (the base model's at "
    "step 0): above 0, the run forgot some of what the base model knew; replay should keep it low.",
    "eval_scores": "Each task eval's final accuracy (the share of its records answered right), "
    "by eval name; evals marked generic measure forgetting, the others the target task.",
    "loss_spike_height": "How far the training loss on target data rose above its first value "
    "early in fine-tuning, before coming back down (the paper's loss spike); replay dampens it.",
}


@functools.lru_cache(maxsize=4096)
def _spread(
    xs: tuple[float, ...], losses: tuple[float, ...], candidate: float, baseline: float
) -> dict[str, Any] | None:
    spread = multiplier_spread(xs, losses, candidate, baseline)
    if spread is None:
        return None
    return {
        "low": spread.low,
        "high": spread.high,
        "level": spread.level,
        "resamples": spread.resamples,
        "degenerate_share": spread.degenerate_share,
    }


@dataclass(frozen=True)
class MemberResult:
    """What the report needs from one member job."""

    job_id: str
    status: str
    replay_fraction: float
    target_stage2_allocation: float | None
    target_subset_fraction: float
    is_configuration: bool
    is_reference: bool
    target_sequences: int | None = None  # unique target training sequences (the plan's T)
    final_val_loss_target: float | None = None
    final_val_loss_generic: float | None = None
    generic_change: float | None = None  # final - initial generic val loss (+: forgetting)
    eval_scores: dict[str, float | None] | None = None  # final accuracy per task eval name
    loss_spike: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status == "succeeded" and self.final_val_loss_target is not None


def count_statuses(statuses: list[str]) -> dict[str, int]:
    counts = {"total": len(statuses), "succeeded": 0, "failed": 0, "cancelled": 0}
    for s in statuses:
        if s in counts:
            counts[s] += 1
    counts["unfinished"] = counts["total"] - counts["succeeded"] - counts["failed"]
    counts["unfinished"] -= counts["cancelled"]
    return counts


def _is_baseline(m: MemberResult) -> bool:
    return (
        m.replay_fraction == 0
        and m.target_subset_fraction == 1
        and m.target_stage2_allocation in (None, 1.0)
    )


def _fit_json(fit: ReferenceFit) -> dict[str, Any]:
    def num(v: float) -> float | None:
        return v if math.isfinite(v) else None

    return {
        "A": num(fit.A),
        "B": num(fit.B),
        "C": num(fit.C),
        "alpha": fit.alpha,
        "beta": fit.beta,
        "method": fit.method,
        "degenerate": fit.method != POWER,
        "formula": "L(x) = A / x^B + C"
        if fit.method == POWER
        else "L(x) = alpha - beta * ln(x) (the power law degenerated, B near 0)",
    }


def _member_core(m: MemberResult) -> dict[str, Any]:
    return {
        "job_id": m.job_id,
        "status": m.status,
        "final_val_loss_target": m.final_val_loss_target,
        "final_val_loss_generic": m.final_val_loss_generic,
        "generic_change": m.generic_change,
        "eval_scores": dict(m.eval_scores or {}),
        "error": m.error,
        "progress": None if m.status in TERMINAL else m.progress,
    }


def build_report(sweep_id: str, members: list[MemberResult]) -> dict[str, Any]:
    """The report for these members (see the module docstring)."""
    statuses = [m.status for m in members]
    counts = count_statuses(statuses)
    notes: list[str] = []

    # --- reference curve
    references = sorted(
        (m for m in members if m.is_reference), key=lambda m: m.target_subset_fraction
    )
    full = next((m for m in references if m.target_subset_fraction == 1), None)
    full_sequences = full.target_sequences if full is not None else None
    points = []
    for m in references:
        if m.target_sequences and full_sequences:
            x = m.target_sequences / full_sequences
        else:  # not planned yet: the nominal share stands in
            x = m.target_subset_fraction
        points.append(
            {
                **_member_core(m),
                "target_subset_fraction": m.target_subset_fraction,
                "target_sequences": m.target_sequences,
                "x": x,
            }
        )
    usable = [p for p, m in zip(points, references, strict=True) if m.done]
    fit: ReferenceFit | None = None
    fit_error = None
    if len(usable) < 3:
        waiting = len(references) - len(usable)
        fit_error = (
            f"{len(usable)} of {len(references)} reference runs have a final loss; the fit needs "
            f"at least 3" + (f" ({waiting} unfinished or failed)" if waiting else "")
        )
    else:
        try:
            fit = fit_reference(
                [p["x"] for p in usable], [p["final_val_loss_target"] for p in usable]
            )
        except ValueError as exc:
            fit_error = str(exc)
    if fit is not None and fit.method != POWER:
        notes.append(
            "The power-law fit degenerated (B near 0, the curve is log-linear in x); multipliers "
            "use the log-linear fallback exp((L_S0 - L_S) / beta)."
        )
    reference = {
        "x_unit": "share of the full target training set (x = 1: all of it, no replay)",
        "points": points,
        "fit": _fit_json(fit) if fit is not None else None,
        "fit_error": fit_error,
    }

    # --- baseline S0 and configurations
    configurations_m = [m for m in members if m.is_configuration]
    baseline_m = next((m for m in configurations_m if _is_baseline(m)), None) or next(
        (m for m in references if _is_baseline(m)), None
    )
    baseline = None
    if baseline_m is not None:
        baseline = {**_member_core(baseline_m), "x_eq": None}
        if fit is not None and baseline_m.done:
            baseline["x_eq"] = fit.equivalent_data(
                baseline_m.final_val_loss_target, fit.method_for(baseline_m.final_val_loss_target)
            )
    base_loss = baseline_m.final_val_loss_target if baseline_m and baseline_m.done else None

    configurations = []
    for m in sorted(
        configurations_m, key=lambda m: (m.target_stage2_allocation or 1.0, m.replay_fraction)
    ):
        row = {
            **_member_core(m),
            "replay_fraction": m.replay_fraction,
            "target_stage2_allocation": m.target_stage2_allocation,
            "is_baseline": m is baseline_m,
            "loss_spike_height": (m.loss_spike or {}).get("height"),
            "loss_spike": m.loss_spike,
            "x_eq": None,
            "multiplier": None,
            "multiplier_method": None,
            "multiplier_interval": None,
            "multiplier_degenerate": None,
        }
        if fit is not None and m.done and base_loss is not None:
            method = fit.method_for(m.final_val_loss_target, base_loss)
            row["multiplier_method"] = method
            row["multiplier"] = efficiency_multiplier(fit, m.final_val_loss_target, base_loss)
            row["x_eq"] = fit.equivalent_data(m.final_val_loss_target, method)
            row["multiplier_degenerate"] = method != POWER
            if not row["is_baseline"]:
                row["multiplier_interval"] = _spread(
                    tuple(p["x"] for p in usable),
                    tuple(p["final_val_loss_target"] for p in usable),
                    m.final_val_loss_target,
                    base_loss,
                )
            if method == LOG_LINEAR and fit.method == POWER:
                notes.append(
                    f"r={m.replay_fraction:g}: a loss at or below the fitted asymptote C; its "
                    "multiplier uses the log-linear fit."
                )
        configurations.append(row)

    # --- recommendation
    finished = [
        c
        for c in configurations
        if c["status"] == "succeeded" and c["final_val_loss_target"] is not None
    ]
    recommendation = None
    pending = sum(1 for c in configurations if c["status"] not in TERMINAL)
    if (
        baseline_m is not None
        and baseline_m.status not in TERMINAL
        and not baseline_m.is_configuration
    ):
        pending += 1
    if pending:
        notes.append(
            f"The recommendation waits for the {pending} configuration run(s) still going: a "
            "running member may still beat the finished ones."
        )
    elif finished:
        best = min(finished, key=lambda c: c["final_val_loss_target"])
        alloc = best["target_stage2_allocation"]
        name = f"replay fraction r={best['replay_fraction']:g}" + (
            f" with target stage-2 allocation a={alloc:g}" if alloc is not None else ""
        )
        reason = (
            f"{name} reaches the lowest final target validation loss of the "
            f"{len(finished)} finished configuration{'s' if len(finished) != 1 else ''} "
            f"({best['final_val_loss_target']:.4f}"
        )
        if base_loss is not None and not best["is_baseline"]:
            reason += f" vs {base_loss:.4f} without replay"
        reason += ")"
        if best["multiplier"] is not None and not best["is_baseline"]:
            reason += f"; it is worth {best['multiplier']:.2f}x the target data"
            spread = best["multiplier_interval"]
            if spread is not None:
                reason += f" (90% of refits: {spread['low']:.2f}-{spread['high']:.2f}x)"
            if best["multiplier_degenerate"]:
                reason += ", through the log-linear fallback (a degenerate power-law fit)"
        if best["is_baseline"]:
            reason += "; on this data no replay fraction beat training without replay"
        recommendation = {
            "replay_fraction": best["replay_fraction"],
            "target_stage2_allocation": alloc,
            "job_id": best["job_id"],
            "final_val_loss_target": best["final_val_loss_target"],
            "multiplier": best["multiplier"],
            "provisional": False,  # kept for clients: a recommendation now waits for the runs
            "reason": reason + ".",
        }

    failed = [m for m in members if m.status in ("failed", "cancelled")]
    for m in failed:
        message = (m.error or {}).get("message") or "no error message"
        notes.append(f"Member {m.job_id} {m.status}: {message}")
    if counts["unfinished"]:
        status = "partial"
    elif failed:
        status = "incomplete"
    else:
        status = "complete"
    return {
        "object": "sweep.report",
        "sweep_id": sweep_id,
        "status": status,
        "sweep_status": sweep_status(statuses),
        "counts": counts,
        "reference": reference,
        "baseline": baseline,
        "configurations": configurations,
        "eval_names": sorted({name for m in members for name in (m.eval_scores or {})}),
        "recommendation": recommendation,
        "notes": notes,
        "explain": EXPLAIN,
    }
