import { describe, expect, it } from "vitest";
import { parseList, sweepRequest, type Configuration, type Fit, type SweepReport } from "./api";
import { configLabel, fittedLoss, logSpace, lossByFraction, powerOfTwoTicks, referenceChart } from "./charts";

const power: Fit = { A: 0.33, B: 1.4, C: 5.05, alpha: 5.25, beta: 1.43, method: "power", degenerate: false, formula: "" };
const logLinear: Fit = { ...power, A: null, B: null, C: null, method: "log-linear", degenerate: true };

const conf = (r: number, loss: number | null, extra: Partial<Configuration> = {}): Configuration => ({
  job_id: `ftjob-${r}`,
  status: loss === null ? "running" : "succeeded",
  final_val_loss_target: loss,
  final_val_loss_generic: null,
  error: null,
  replay_fraction: r,
  target_stage2_allocation: null,
  is_baseline: r === 0,
  loss_spike_height: 0,
  x_eq: null,
  multiplier: null,
  multiplier_method: null,
  multiplier_interval: null,
  multiplier_degenerate: null,
  ...extra,
});

function report(fit: Fit | null, configurations: Configuration[]): SweepReport {
  const point = (x: number, loss: number) => ({
    job_id: `ftjob-ref-${x}`,
    status: "succeeded" as const,
    final_val_loss_target: loss,
    final_val_loss_generic: null,
    error: null,
    target_subset_fraction: x,
    target_sequences: null,
    x,
  });
  return {
    object: "sweep.report",
    sweep_id: "sweep-1",
    status: "complete",
    sweep_status: "succeeded",
    counts: { total: 4, succeeded: 4, failed: 0, cancelled: 0, unfinished: 0 },
    reference: { x_unit: "", points: [point(0.25, 7.3), point(0.5, 6.0), point(1, 5.39)], fit, fit_error: null },
    baseline: null,
    configurations,
    recommendation: null,
    notes: [],
    explain: {},
  };
}

describe("fittedLoss", () => {
  it("evaluates the power law, and the log-linear fallback when the fit degenerated", () => {
    expect(fittedLoss(power, 0.5)).toBeCloseTo(0.33 / 0.5 ** 1.4 + 5.05, 10);
    expect(fittedLoss(logLinear, Math.E)).toBeCloseTo(5.25 - 1.43, 10);
  });
});

describe("lossByFraction", () => {
  it("sorts by fraction, one column per allocation, and leaves out unfinished runs", () => {
    const { data, labels } = lossByFraction([conf(0.25, 5.18), conf(0, 5.39), conf(0.5, null)]);
    expect(data).toEqual([[0, 0.25], [5.39, 5.18]]);
    expect(labels).toEqual(["final val loss (target)"]);
    const mid = lossByFraction([
      conf(0, 3.4, { target_stage2_allocation: 1 }),
      conf(0.5, 3.3, { target_stage2_allocation: 1 }),
      conf(0.5, 3.2, { target_stage2_allocation: 0.5 }),
    ]);
    expect(mid.data).toEqual([[0, 0.5], [3.4, 3.3], [null, 3.2]]);
    expect(mid.labels).toEqual(["a = 1", "a = 0.5"]);
  });
});

describe("referenceChart", () => {
  it("samples the curve around the data and places configurations at x_eq", () => {
    const placed = conf(0.25, 5.18, { x_eq: 1.92, multiplier: 1.92 });
    const [x, curve, refs, confs] = referenceChart(report(power, [conf(0, 5.39, { x_eq: 1 }), placed]), 20);
    expect([...x].sort((a, b) => a - b)).toEqual(x);
    expect(x[0]).toBeCloseTo(0.25 / 1.25, 10);
    expect(x[x.length - 1]).toBeCloseTo(1.92 * 1.25, 10);
    expect(curve.filter((v) => v !== null)).toHaveLength(20);
    expect(refs.filter((v) => v !== null)).toEqual([7.3, 6.0, 5.39]);
    expect(confs[x.indexOf(1.92)]).toBe(5.18);
    expect(confs[x.indexOf(1)]).toBe(5.39);
  });

  it("has no curve without a fit, and nothing at all without finished runs", () => {
    const [, curve, refs] = referenceChart(report(null, []));
    expect(curve.every((v) => v === null)).toBe(true);
    expect(refs.filter((v) => v !== null)).toHaveLength(3);
    const empty = report(null, []);
    empty.reference.points = [];
    expect(referenceChart(empty)).toEqual([[], [], [], []]);
  });
});

describe("helpers", () => {
  it("spaces evenly in log x and labels configurations", () => {
    const xs = logSpace(0.1, 10, 3);
    expect(xs[1]).toBeCloseTo(1, 10);
    expect(configLabel({ replay_fraction: 0.25, target_stage2_allocation: null })).toBe("r=0.25");
    expect(configLabel({ replay_fraction: 0.5, target_stage2_allocation: 1 })).toBe("r=0.5 a=1");
    expect(powerOfTwoTicks(0.05, 2.4)).toEqual([0.0625, 0.125, 0.25, 0.5, 1, 2]);
  });
});


describe("the sweep form's request", () => {
  it("reads lists typed with commas or spaces", () => {
    expect(parseList("0, 0.25 0.5")).toEqual([0, 0.25, 0.5]);
    expect(parseList("0, x")).toBeNull();
  });
  it("turns a job request into a sweep request", () => {
    const job = {
      model: "m",
      training_file: "file-t",
      suffix: "s",
      replay: { dataset: "file-r", fraction: 0.25, stage2_duration: 1 },
    };
    expect(sweepRequest(job, [0, 0.5], [0.25, 1])).toEqual({
      model: "m",
      training_file: "file-t",
      replay: { dataset: "file-r" },
      replay_fractions: [0, 0.5],
      reference_subsets: [0.25, 1],
    });
  });
});
