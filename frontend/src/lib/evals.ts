// Task evals and forgetting, as the job and compare pages show them. The engine writes, in each
// eval record (step 0, each checkpoint, the end), eval/<name>/accuracy, accuracy_norm (multiple
// choice only), correct and total beside val_loss_target / val_loss_generic; a finished job's
// summary carries the same before and after. While a job runs there is no summary yet, so each
// number here falls back to the records: step 0's value before, the latest after.

import type { MetricRecord, Schemas } from "../api";
import type { Aligned, Column } from "./series";

export type JobSummary = Schemas["JobSummary"];
export type EvalKind = Schemas["EvalSummary"]["kind"];

/** What a job asked for, per eval (the request as the API echoes it: `job.evals`). */
export interface EvalRequest {
  name?: unknown;
  kind?: unknown;
  generic?: unknown;
}

const ACCURACY = /^eval\/(.+)\/accuracy$/;
const isValue = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const difference = (a: number | null, b: number | null) => (a === null || b === null ? null : a - b);

/** The metric key of one eval's `metric` (accuracy, accuracy_norm, correct, total). */
export const evalKey = (name: string, metric: string) => `eval/${name}/${metric}`;

/** The evals' names: those requested, in their order, then any other the records carry. */
export function evalNames(records: MetricRecord[], requested: EvalRequest[] | null | undefined = []): string[] {
  const names = (requested ?? []).map((e) => e.name).filter((n): n is string => typeof n === "string");
  for (const r of records) {
    if (r.type !== "eval") continue;
    for (const key of Object.keys(r)) {
      const m = ACCURACY.exec(key);
      if (m && !names.includes(m[1])) names.push(m[1]);
    }
  }
  return names;
}

/** The first and the last value of `key` in the eval records (step order), with the last's step. */
function firstLast(records: MetricRecord[], key: string): { first: number | null; last: number | null; step: number | null } {
  let first: number | null = null;
  let last: number | null = null;
  let step: number | null = null;
  for (const r of records) {
    const v = r[key];
    if (r.type !== "eval" || !isValue(v)) continue;
    if (first === null) first = v;
    last = v;
    step = r.step;
  }
  return { first, last, step };
}

export interface EvalRow {
  name: string;
  kind: EvalKind | null;
  generic: boolean;
  initialAccuracy: number | null;
  finalAccuracy: number | null;
  accuracyChange: number | null;
  /** multiple choice only */
  initialAccuracyNorm: number | null;
  finalAccuracyNorm: number | null;
  accuracyNormChange: number | null;
  correct: number | null;
  total: number | null;
  /** the step of finalAccuracy */
  step: number | null;
}

/** One row per eval for the job page's table: the summary's numbers where the job has one, the
 * records' otherwise (a running job); correct/total from the latest record. */
export function evalRows(
  records: MetricRecord[],
  summary: JobSummary | null | undefined,
  requested: EvalRequest[] | null | undefined,
): EvalRow[] {
  const sorted = records.filter((r) => r.type === "eval").sort((a, b) => a.step - b.step);
  const names = evalNames(sorted, requested);
  for (const name of Object.keys(summary?.evals ?? {})) if (!names.includes(name)) names.push(name);
  return names.map((name) => {
    const asked = (requested ?? []).find((e) => e.name === name);
    const done = summary?.evals?.[name];
    const acc = firstLast(sorted, evalKey(name, "accuracy"));
    const norm = firstLast(sorted, evalKey(name, "accuracy_norm"));
    const pick = (fromSummary: number | null | undefined, fromRecords: number | null) =>
      done ? (fromSummary ?? null) : fromRecords;
    const initialAccuracy = pick(done?.initial_accuracy, acc.first);
    const finalAccuracy = pick(done?.final_accuracy, acc.last);
    const initialAccuracyNorm = pick(done?.initial_accuracy_norm, norm.first);
    const finalAccuracyNorm = pick(done?.final_accuracy_norm, norm.last);
    const askedKind =
      asked?.kind === "generation" || asked?.kind === "multiple_choice" || asked?.kind === "lm_eval" ? asked.kind : null;
    const kind = done?.kind ?? askedKind ?? (norm.last !== null ? "multiple_choice" : acc.last !== null ? "generation" : null);
    return {
      name,
      kind,
      generic: done?.generic ?? asked?.generic === true,
      initialAccuracy,
      finalAccuracy,
      accuracyChange: done ? (done.accuracy_change ?? null) : difference(finalAccuracy, initialAccuracy),
      initialAccuracyNorm,
      finalAccuracyNorm,
      accuracyNormChange: done ? (done.accuracy_norm_change ?? null) : difference(finalAccuracyNorm, initialAccuracyNorm),
      correct: firstLast(sorted, evalKey(name, "correct")).last,
      total: done?.total ?? firstLast(sorted, evalKey(name, "total")).last,
      step: done ? (done.step ?? acc.step) : acc.step,
    };
  });
}

export interface Forgetting {
  initialTarget: number | null;
  finalTarget: number | null;
  /** initial - final target val loss: positive = learned */
  targetGain: number | null;
  initialGeneric: number | null;
  finalGeneric: number | null;
  /** final - initial generic val loss: positive = forgetting */
  genericChange: number | null;
  /** from the summary (the job ended) or from the records so far */
  final: boolean;
}

/** Target gain and generic change against the base model (step 0): the summary's, or, while a
 * job runs, from its first and latest eval records. Null when neither loss was ever measured. */
export function forgetting(records: MetricRecord[], summary: JobSummary | null | undefined): Forgetting | null {
  let out: Forgetting;
  if (summary) {
    out = {
      initialTarget: summary.initial_val_loss_target ?? null,
      finalTarget: summary.final_val_loss_target ?? null,
      targetGain: summary.target_gain ?? null,
      initialGeneric: summary.initial_val_loss_generic ?? null,
      finalGeneric: summary.final_val_loss_generic ?? null,
      genericChange: summary.generic_change ?? null,
      final: true,
    };
  } else {
    const sorted = records.filter((r) => r.type === "eval").sort((a, b) => a.step - b.step);
    const t = firstLast(sorted, "val_loss_target");
    const g = firstLast(sorted, "val_loss_generic");
    out = {
      initialTarget: t.first,
      finalTarget: t.last,
      targetGain: difference(t.first, t.last),
      initialGeneric: g.first,
      finalGeneric: g.last,
      genericChange: difference(g.last, g.first),
      final: false,
    };
  }
  return out.initialTarget === null && out.finalTarget === null && out.initialGeneric === null && out.finalGeneric === null
    ? null
    : out;
}

/** A signed change with its sign always written: "+0.0123", "-0.0040". */
export function formatChange(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined) return "—";
  const s = v.toFixed(digits);
  return v > 0 ? `+${s}` : Number(s) === 0 ? s.replace("-", "") : s;
}

/** An accuracy as a percentage: 0.625 -> "62.5%". */
export function formatAccuracy(v: number | null | undefined): string {
  return v === null || v === undefined ? "—" : `${+(v * 100).toFixed(1)}%`;
}

// ---------------------------------------------------------------------------- the trade-off plot
/** What the compare page's trade-off plot can put on each axis. */
export type TradeoffX = "final_target" | "target_gain";
export const TRADEOFF_X: Record<TradeoffX, string> = {
  final_target: "final val loss (target)",
  target_gain: "target gain (loss fall)",
};
/** "generic_change", "final_generic" or "eval:<name>" (a generic eval's final accuracy). */
export type TradeoffY = string;
export const TRADEOFF_Y: Record<string, string> = {
  generic_change: "generic change (loss rise)",
  final_generic: "final val loss (generic)",
};

export interface TradeoffRun {
  records: MetricRecord[];
  summary: JobSummary | null | undefined;
  requested?: EvalRequest[] | null;
}

/** The y choices the runs offer: the generic losses, then each generic eval any run has. */
export function tradeoffYOptions(runs: TradeoffRun[]): [TradeoffY, string][] {
  const options: [TradeoffY, string][] = Object.entries(TRADEOFF_Y);
  const seen = new Set<string>();
  for (const run of runs) {
    for (const row of evalRows(run.records, run.summary, run.requested)) {
      if (row.generic && !seen.has(row.name)) {
        seen.add(row.name);
        options.push([`eval:${row.name}`, `${row.name} accuracy (generic eval)`]);
      }
    }
  }
  return options;
}

/** One run's point on the trade-off plot; a coordinate it lacks is null. */
export function tradeoffPoint(run: TradeoffRun, x: TradeoffX, y: TradeoffY): [number | null, number | null] {
  const f = forgetting(run.records, run.summary);
  const px = f === null ? null : x === "target_gain" ? f.targetGain : f.finalTarget;
  let py: number | null = null;
  if (y.startsWith("eval:")) {
    const row = evalRows(run.records, run.summary, run.requested).find((r) => r.name === y.slice(5));
    py = row?.finalAccuracy ?? null;
  } else if (f !== null) {
    py = y === "final_generic" ? f.finalGeneric : f.genericChange;
  }
  return [px, py];
}

/** The runs' points as chart columns: a shared ascending x column and one column per run (its
 * point at its own x, null elsewhere), so each run is its own labelled series. A run without
 * both coordinates has an empty column. */
export function tradeoffData(points: [number | null, number | null][]): Aligned {
  const xs = [...new Set(points.filter(([x, y]) => x !== null && y !== null).map(([x]) => x as number))].sort(
    (a, b) => a - b,
  );
  const at = new Map(xs.map((x, i) => [x, i]));
  const columns: Column[] = points.map(([x, y]) => {
    const col: Column = new Array(xs.length).fill(null);
    if (x !== null && y !== null) col[at.get(x)!] = y;
    return col;
  });
  return [xs, ...columns];
}

/** An axis range around `values` with `share` of their span (or of their size, for one value)
 * on each side, so points at the ends are not drawn on the plot's edge; undefined when empty. */
export function paddedRange(values: number[], share = 0.1): [number, number] | undefined {
  if (values.length === 0) return undefined;
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const pad = (hi - lo) * share || Math.abs(lo) * share || 1;
  return [lo - pad, hi + pad];
}
