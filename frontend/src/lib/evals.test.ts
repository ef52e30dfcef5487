import { describe, expect, it } from "vitest";
import type { MetricRecord } from "../api";
import {
  evalNames,
  evalRows,
  forgetting,
  formatAccuracy,
  formatChange,
  paddedRange,
  tradeoffData,
  tradeoffPoint,
  tradeoffYOptions,
  type JobSummary,
} from "./evals";

const evalRec = (step: number, values: Record<string, number>): MetricRecord => ({ type: "eval", step, ...values });
const train = (step: number): MetricRecord => ({ type: "train", step, train_loss_target: 3, "eval/fake/accuracy": 1 });

// a running job: step 0 (the base model), a checkpoint, no summary yet
const running = [
  evalRec(0, {
    val_loss_target: 3.0, val_loss_generic: 2.0,
    "eval/gsm/accuracy": 0.1, "eval/gsm/correct": 1, "eval/gsm/total": 10,
    "eval/mc/accuracy": 0.5, "eval/mc/accuracy_norm": 0.25, "eval/mc/correct": 4, "eval/mc/total": 8,
  }),
  train(1),
  evalRec(4, {
    val_loss_target: 2.5, val_loss_generic: 2.25,
    "eval/gsm/accuracy": 0.3, "eval/gsm/correct": 3, "eval/gsm/total": 10,
    "eval/mc/accuracy": 0.375, "eval/mc/accuracy_norm": 0.5, "eval/mc/correct": 3, "eval/mc/total": 8,
  }),
];

describe("evalNames", () => {
  it("lists the requested evals first, then those only the eval records carry", () => {
    expect(evalNames(running, [{ name: "mc" }])).toEqual(["mc", "gsm"]);
    expect(evalNames(running)).toEqual(["gsm", "mc"]);
    expect(evalNames([train(1)])).toEqual([]); // train rows never name an eval
  });
});

describe("evalRows", () => {
  it("reads a running job's rows from its records: step 0 before, the latest after", () => {
    const rows = evalRows(running, null, [{ name: "mc", kind: "multiple_choice", generic: true }, { name: "gsm", kind: "generation" }]);
    expect(rows.map((r) => r.name)).toEqual(["mc", "gsm"]);
    const [mc, gsm] = rows;
    expect(mc).toMatchObject({
      kind: "multiple_choice", generic: true, initialAccuracy: 0.5, finalAccuracy: 0.375, accuracyChange: -0.125,
      initialAccuracyNorm: 0.25, finalAccuracyNorm: 0.5, accuracyNormChange: 0.25, correct: 3, total: 8, step: 4,
    });
    expect(gsm).toMatchObject({ kind: "generation", generic: false, correct: 3, total: 10, finalAccuracyNorm: null });
    expect(gsm.accuracyChange).toBeCloseTo(0.2, 12);
  });

  it("infers the kind from the metrics when the request does not say", () => {
    const [gsm, mc] = evalRows(running, null, null);
    expect([gsm.kind, mc.kind]).toEqual(["generation", "multiple_choice"]);
  });

  it("takes a finished job's numbers from its summary", () => {
    const summary: JobSummary = {
      evals: {
        gsm: { kind: "generation", generic: false, initial_accuracy: 0.1, final_accuracy: 0.4, accuracy_change: 0.3, total: 10, step: 8 },
      },
    };
    const [gsm] = evalRows(running, summary, []);
    expect(gsm).toMatchObject({ initialAccuracy: 0.1, finalAccuracy: 0.4, accuracyChange: 0.3, step: 8, total: 10, correct: 3 });
  });

  it("is empty for a job without evals", () => {
    expect(evalRows([evalRec(0, { val_loss_target: 3 })], { evals: {} }, null)).toEqual([]);
  });
});

describe("forgetting", () => {
  it("is the summary's target gain and generic change once the job has one", () => {
    const summary: JobSummary = {
      initial_val_loss_target: 3, final_val_loss_target: 2, target_gain: 1,
      initial_val_loss_generic: 2, final_val_loss_generic: 2.5, generic_change: 0.5, evals: {},
    };
    expect(forgetting(running, summary)).toEqual({
      initialTarget: 3, finalTarget: 2, targetGain: 1, initialGeneric: 2, finalGeneric: 2.5, genericChange: 0.5, final: true,
    });
  });

  it("is measured from step 0 to the latest eval while the job runs", () => {
    expect(forgetting(running, null)).toEqual({
      initialTarget: 3, finalTarget: 2.5, targetGain: 0.5, initialGeneric: 2, finalGeneric: 2.25, genericChange: 0.25, final: false,
    });
  });

  it("leaves generic out when the job has no generic data, and is null with no losses at all", () => {
    const f = forgetting([evalRec(0, { val_loss_target: 3 }), evalRec(2, { val_loss_target: 2.75 })], null);
    expect(f).toMatchObject({ targetGain: 0.25, genericChange: null, finalGeneric: null });
    expect(forgetting([train(1)], null)).toBeNull();
    expect(forgetting([], { evals: {} })).toBeNull();
  });
});

describe("formatting", () => {
  it("writes a change with its sign and an accuracy as a percentage", () => {
    expect(formatChange(0.01234)).toBe("+0.0123");
    expect(formatChange(-0.004)).toBe("-0.0040");
    expect(formatChange(-0.00001)).toBe("0.0000");
    expect(formatChange(null)).toBe("—");
    expect(formatAccuracy(0.625)).toBe("62.5%");
    expect(formatAccuracy(1 / 3)).toBe("33.3%");
    expect(formatAccuracy(undefined)).toBe("—");
  });
});

describe("the trade-off plot", () => {
  const finished: JobSummary = {
    initial_val_loss_target: 3, final_val_loss_target: 2.2, target_gain: 0.8,
    initial_val_loss_generic: 2, final_val_loss_generic: 2.1, generic_change: 0.1,
    evals: { mc: { kind: "multiple_choice", generic: true, final_accuracy: 0.625 } },
  };

  it("places each run by its target metric and its generic metric", () => {
    const run = { records: [], summary: finished };
    expect(tradeoffPoint(run, "final_target", "generic_change")).toEqual([2.2, 0.1]);
    expect(tradeoffPoint(run, "target_gain", "final_generic")).toEqual([0.8, 2.1]);
    expect(tradeoffPoint(run, "final_target", "eval:mc")).toEqual([2.2, 0.625]);
    expect(tradeoffPoint(run, "final_target", "eval:none")).toEqual([2.2, null]);
    expect(tradeoffPoint({ records: running, summary: null }, "target_gain", "generic_change")).toEqual([0.5, 0.25]);
  });

  it("offers a generic eval as a y metric only when some run has one", () => {
    expect(tradeoffYOptions([{ records: running, summary: null }]).map(([k]) => k)).toEqual(["generic_change", "final_generic"]);
    expect(
      tradeoffYOptions([{ records: running, summary: null, requested: [{ name: "mc", generic: true }] }, { records: [], summary: finished }]).map(([k]) => k),
    ).toEqual(["generic_change", "final_generic", "eval:mc"]);
  });

  it("gives each run its own column, its point at its own x, and none without both values", () => {
    expect(tradeoffData([[2.2, 0.1], [2.0, 0.3], [null, 0.2], [2.2, 0.05]])).toEqual([
      [2.0, 2.2],
      [null, 0.1],
      [0.3, null],
      [null, null],
      [null, 0.05],
    ]);
  });
});

describe("paddedRange", () => {
  it("widens the span on both sides, a single value by its size, zero by one", () => {
    expect(paddedRange([2, 4])).toEqual([1.8, 4.2]);
    expect(paddedRange([8])).toEqual([7.2, 8.8]);
    expect(paddedRange([0])).toEqual([-1, 1]);
    expect(paddedRange([])).toBeUndefined();
  });
});
