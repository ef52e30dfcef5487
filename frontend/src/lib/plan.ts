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

/** Median training throughput (tokens per second) of a run's train records; null without any. */
export function tokensPerSecond(records: { type?: string; tokens_per_second?: unknown }[]): number | null {
  const rates = records
    .filter((r) => r.type === "train" && typeof r.tokens_per_second === "number" && r.tokens_per_second > 0)
    .map((r) => r.tokens_per_second as number)
    .sort((a, b) => a - b);
  return rates.length ? rates[Math.floor(rates.length / 2)] : null;
}

/** Seconds of training the plan takes at `rate` tokens per second (every step trains batch_size
 * x seq_len tokens); null without a rate. Evaluations and checkpoints come on top. */
export function estimatedSeconds(plan: Pick<Plan, "total_steps" | "batch_size" | "seq_len">, rate: number | null): number | null {
  if (!rate || rate <= 0) return null;
  return (plan.total_steps * plan.batch_size * plan.seq_len) / rate;
}
