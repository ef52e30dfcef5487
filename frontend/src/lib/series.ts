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

/** What the compare page puts on its x axis. Steps mislead across replay fractions (a replay run
 * takes more steps for the same target data), so the others are offered too. */
export type XAxis = "step" | "tokens" | "epochs" | "time";

export const X_AXES: Record<XAxis, string> = {
  step: "step",
  tokens: "tokens seen",
  epochs: "target epochs",
  time: "training time (s)",
};

/** A run's x for each step, on `axis`:
 * - tokens: step x batch_size x seq_len (every step trains that many);
 * - epochs: target epochs seen, from the plan's stages (each stage's target tokens spread evenly
 *   over its steps, which exact mixing keeps to within a sequence), n_epochs at the end;
 * - time: summed `step_time` of the train records (a thinned series counts each record's step
 *   time for the steps since the one before). */
export function stepToX(
  run: {
    hyperparameters: { batch_size?: unknown; seq_len?: unknown; n_epochs?: unknown };
    stages?: { start_step: number; end_step: number; steps: number; target_tokens: number }[];
    records: MetricRecord[];
  },
  axis: XAxis,
): (step: number) => number | null {
  if (axis === "step") return (s) => s;
  const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  if (axis === "tokens") {
    const B = num(run.hyperparameters.batch_size);
    const L = num(run.hyperparameters.seq_len);
    return (s) => (B && L ? s * B * L : null);
  }
  if (axis === "epochs") {
    const E = num(run.hyperparameters.n_epochs);
    const stages = run.stages ?? [];
    const total = stages.reduce((t, st) => t + st.target_tokens, 0);
    if (!E || !total) return () => null;
    return (s) => {
      let seen = 0;
      for (const st of stages) {
        const done = Math.min(Math.max(s - st.start_step, 0), st.steps);
        seen += st.steps ? (st.target_tokens * done) / st.steps : 0;
      }
      return (E * seen) / total;
    };
  }
  // time: cumulative training time at each train record's step
  const train = run.records.filter((r) => r.type === "train" && isValue(r.step_time)).sort((a, b) => a.step - b.step);
  const steps: number[] = [];
  const times: number[] = [];
  let elapsed = 0;
  let previous = 0;
  for (const r of train) {
    elapsed += (r.step_time as number) * (r.step - previous);
    previous = r.step;
    steps.push(r.step);
    times.push(elapsed);
  }
  return (s) => {
    // the time at the last train record at or before s (an eval row shares its step's time)
    let lo = 0;
    let hi = steps.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (steps[mid] <= s) [found, lo] = [mid, mid + 1];
      else hi = mid - 1;
    }
    return found < 0 ? null : times[found];
  };
}

/** Several runs' values of one metric on a shared x column, each run's steps mapped by its own
 * `x` (runs reach the same tokens or epochs at different steps). */
export function alignRunsOn(
  runs: { records: MetricRecord[]; x: (step: number) => number | null }[],
  name: string,
): Aligned {
  const points = runs.map((run) =>
    run.records.flatMap((r) => {
      const v = r[name];
      const x = isValue(v) ? run.x(r.step) : null;
      return x === null ? [] : [[x, v as number] as const];
    }),
  );
  const xs = [...new Set(points.flat().map((p) => p[0]))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const columns = points.map((pts) => {
    const col: Column = new Array(xs.length).fill(null);
    for (const [x, v] of pts) col[at.get(x)!] = v;
    return col;
  });
  return [xs, ...columns];
}

/** The settings in which the runs differ: [label, value per run], for the compare table. */
export function differingSettings(
  runs: { settings: Record<string, unknown> }[],
): [string, string[]][] {
  const show = (v: unknown) => (v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r.settings)))];
  return keys
    .map((k) => [k, runs.map((r) => show(r.settings[k]))] as [string, string[]])
    .filter(([, values]) => new Set(values).size > 1);
}

/** Each y column smoothed by an exponential moving average (`weight` of the running value, 0:
 * none), debiased like TensorBoard's so the curve starts at the data; nulls stay nulls. */
export function smoothed(data: Aligned, weight: number): Aligned {
  if (weight <= 0) return data;
  const [x, ...columns] = data;
  return [
    x,
    ...columns.map((col) => {
      let avg = 0;
      let n = 0;
      return col.map((v) => {
        if (v === null) return null;
        avg = avg * weight + (1 - weight) * v;
        n += 1;
        return avg / (1 - weight ** n);
      });
    }),
  ];
}
