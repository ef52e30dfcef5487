// The plan endpoint's answer (the schedule `replayft plan` prints) -> the pictures on the new-job
// page: the LR over steps, and per stage the target/generic share of each batch.

import type { Plan } from "../api";
import type { Aligned } from "./series";

export function lrCurve(plan: Plan): Aligned {
  return [plan.lr_curve.step.slice(), plan.lr_curve.lr.slice()];
}

export interface MixtureBar {
  label: string;
  steps: number;
  /** share of all steps, for the bar's width */
  width: number;
  targetWeight: number;
  genericWeight: number;
  targetTokens: number;
  genericTokens: number;
  firstStep: number;
  lastStep: number;
}

/** One bar per stage; stage steps are [start_step, end_step) 0-based, shown 1-based. */
export function mixtureBars(plan: Plan): MixtureBar[] {
  const total = Math.max(1, plan.total_steps);
  return plan.stages.map((s) => ({
    label: `Stage ${s.stage}`,
    steps: s.steps,
    width: s.steps / total,
    targetWeight: s.target_weight,
    genericWeight: s.generic_weight,
    targetTokens: s.target_tokens,
    genericTokens: s.generic_tokens,
    firstStep: s.start_step + 1,
    lastStep: s.end_step,
  }));
}

/** The step where stage 2 begins (1-based, like metric steps), or null for one stage. */
export function transitionStep(plan: { transition_step: number | null }): number | null {
  return plan.transition_step === null || plan.transition_step === undefined
    ? null
    : plan.transition_step + 1;
}
