// Metric records (the engine's train/eval rows, as the API returns them) -> chart data.
// uPlot wants columns: one ascending x array (steps) and one y array per series, with null
// where a series has no value at that step (evals run every few steps, train every step).

import type { LossSpike, MetricRecord } from "../api";

export type Column = (number | null)[];
export type Aligned = [number[], ...Column[]];

/** Records merged by (type, step), the newest copy winning: the live stream may resend a step
 * a resumed job repeated, and the first fetch and the stream overlap. Sorted by step. */
export function mergeRecords(existing: MetricRecord[], incoming: MetricRecord[]): MetricRecord[] {
  const byKey = new Map<string, MetricRecord>();
  for (const r of existing) byKey.set(`${r.type}:${r.step}`, r);
  for (const r of incoming) {
    if (r.type === "train" || r.type === "eval") byKey.set(`${r.type}:${r.step}`, r);
  }
  return [...byKey.values()].sort((a, b) => a.step - b.step);
}

const isValue = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** One x column of the steps that carry any of `names`, and one column per name. */
export function alignSeries(records: MetricRecord[], names: string[]): Aligned {
  const index = new Map<number, number>();
  const steps: number[] = [];
  for (const r of records) {
    if (!names.some((n) => isValue(r[n]))) continue;
    if (!index.has(r.step)) {
      index.set(r.step, -1);
      steps.push(r.step);
    }
  }
  steps.sort((a, b) => a - b);
  steps.forEach((s, i) => index.set(s, i));
  const columns: Column[] = names.map(() => new Array(steps.length).fill(null));
  for (const r of records) {
    const i = index.get(r.step);
    if (i === undefined) continue;
    names.forEach((n, k) => {
      const v = r[n];
      if (isValue(v)) columns[k][i] = v;
    });
  }
  return [steps, ...columns];
}

/** Several jobs' values of one metric on a shared x column (the union of their steps). */
export function alignJobs(runs: { records: MetricRecord[] }[], name: string): Aligned {
  const steps = new Set<number>();
  for (const run of runs)
    for (const r of run.records) if (typeof r[name] === "number") steps.add(r.step);
  const x = [...steps].sort((a, b) => a - b);
  const at = new Map(x.map((s, i) => [s, i]));
  const columns = runs.map((run) => {
    const col: Column = new Array(x.length).fill(null);
    for (const r of run.records) {
      const v = r[name];
      if (typeof v === "number") col[at.get(r.step)!] = v;
    }
    return col;
  });
  return [x, ...columns];
}

/** The initial loss spike on train_loss_target, measured as the engine's SpikeTracker does:
 * from the first step with a target loss, the highest value until the loss is back at or below
 * its start. Used while a job runs; a finished job's summary carries the engine's own. */
export function detectSpike(records: MetricRecord[]): LossSpike | null {
  let start: number | null = null;
  let initial = 0;
  let peak = 0;
  let peakStep = 0;
  let recovered: number | null = null;
  for (const r of records) {
    const loss = r.type === "train" ? r.train_loss_target : undefined;
    if (typeof loss !== "number" || recovered !== null) continue;
    if (start === null) {
      [start, initial, peak, peakStep] = [r.step, loss, loss, r.step];
      continue;
    }
    if (loss > peak) [peak, peakStep] = [loss, r.step];
    if (loss <= initial) recovered = r.step;
  }
  if (start === null) return null;
  return {
    initial_loss: initial,
    peak_loss: peak,
    peak_step: peakStep,
    height: peak - initial,
    recovered_step: recovered,
    duration: recovered === null ? null : recovered - start,
  };
}

/** The last value of `name` among the records, or null. */
export function lastValue(records: MetricRecord[], name: string): number | null {
  for (let i = records.length - 1; i >= 0; i--) {
    const v = records[i][name];
    if (typeof v === "number") return v;
  }
  return null;
}

/** (replay fraction, final target validation loss) per job, sorted by fraction, for a scatter
 * plot. Jobs without a final loss are left out; a job without replay has r = 0. */
export function lossVsFraction(
  runs: { fraction: number | null | undefined; finalLoss: number | null }[],
): Aligned {
  const points = runs
    .filter((r): r is { fraction: number | null | undefined; finalLoss: number } => r.finalLoss !== null)
    .map((r) => [r.fraction ?? 0, r.finalLoss] as const)
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return [points.map((p) => p[0]), points.map((p) => p[1])];
}

export const PALETTE = ["#1c7ed6", "#e8590c", "#2f9e44", "#ae3ec9", "#e03131", "#0c8599", "#f08c00", "#5c7cfa"];

/** Exponential moving average of a column, debiased at the start as TensorBoard does (so the
 * first values are not pulled towards 0); nulls (steps without a value) stay null and do not
 * move the average. weight 0 = no smoothing. */
export function smoothColumn(column: Column, weight: number): Column {
  let average = 0;
  let seen = 0;
  return column.map((v) => {
    if (v === null || !Number.isFinite(v)) return null;
    average = average * weight + (1 - weight) * v;
    seen += 1;
    return average / (1 - weight ** seen);
  });
}

/** Every y column of `data` smoothed (the x column as it is). */
export function smoothAligned(data: Aligned, weight: number): Aligned {
  if (weight <= 0) return data;
  const [x, ...ys] = data;
  return [x, ...ys.map((y) => smoothColumn(y, weight))];
}

/** Axis increments for an integer axis (steps): uPlot picks ticks only from these. */
export const INTEGER_INCREMENTS = [1, 2, 5].flatMap((m) =>
  Array.from({ length: 10 }, (_, p) => m * 10 ** p),
).sort((a, b) => a - b);
