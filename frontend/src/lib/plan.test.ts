import { describe, expect, it } from "vitest";
import type { Plan } from "../api";
import { estimatedSeconds, lrCurve, mixtureBars, tokensPerSecond, transitionStep } from "./plan";

// the shape POST /v1/fine_tuning/plan answers (replay_engine.schedule.Plan.summary + lr_curve)
const plan = {
  mode: "two_stage",
  total_steps: 100,
  batch_size: 4,
  seq_len: 64,
  replay_fraction: 0.25,
  target_stage2_allocation: 0.8,
  stage2_duration: 0.6,
  transition_step: 40,
  target_epochs: 1,
  generic_epochs: 0.5,
  target_tokens: 20480,
  generic_tokens: 5120,
  warmup_steps: 1,
  peak_lr: 3e-4,
  warnings: [],
  stages: [
    { stage: 1, start_step: 0, end_step: 40, steps: 40, target_weight: 1, generic_weight: 0, target_tokens: 10240, generic_tokens: 0, lr_at_start: 0, lr_at_end: 3e-4 },
    { stage: 2, start_step: 40, end_step: 100, steps: 60, target_weight: 0.75, generic_weight: 0.25, target_tokens: 11520, generic_tokens: 3840, lr_at_start: 3e-4, lr_at_end: 3e-5 },
  ],
  lr_curve: { step: [1, 50, 100], lr: [0, 3e-4, 3e-5] },
} satisfies Plan;

describe("plan pictures", () => {
  it("uses the API's LR samples as chart columns (copies, not the plan's arrays)", () => {
    const data = lrCurve(plan);
    expect(data).toEqual([[1, 50, 100], [0, 3e-4, 3e-5]]);
    expect(data[0]).not.toBe(plan.lr_curve.step);
  });

  it("gives one bar per stage, widths by steps, 1-based step ranges", () => {
    const bars = mixtureBars(plan);
    expect(bars.map((b) => [b.label, b.width, b.firstStep, b.lastStep])).toEqual([
      ["Stage 1", 0.4, 1, 40],
      ["Stage 2", 0.6, 41, 100],
    ]);
    expect(bars[1]).toMatchObject({ targetWeight: 0.75, genericWeight: 0.25, genericTokens: 3840 });
  });

  it("marks stage 2 at the first step it trains (1-based), none for one stage", () => {
    expect(transitionStep(plan)).toBe(41);
    expect(transitionStep({ transition_step: null })).toBeNull();
  });
});

describe("estimated run time", () => {
  it("takes the median train throughput of a reference run", () => {
    const records = [
      { type: "train", tokens_per_second: 100 },
      { type: "eval", tokens_per_second: 9999 },
      { type: "train", tokens_per_second: 300 },
      { type: "train", tokens_per_second: 200 },
      { type: "train" },
    ];
    expect(tokensPerSecond(records)).toBe(200);
    expect(tokensPerSecond([{ type: "eval" }])).toBeNull();
  });

  it("is the plan's tokens over that throughput", () => {
    // 100 steps x 4 x 64 tokens = 25,600 tokens at 256 tokens/s
    expect(estimatedSeconds(plan, 256)).toBe(100);
    expect(estimatedSeconds(plan, null)).toBeNull();
  });
});
