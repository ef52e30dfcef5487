// Report -> chart columns for the two sweep plots (uPlot wants one ascending x column and one
// y column per series, null where a series has no point).

import type { Aligned, Column } from "../lib/series";
import type { Configuration, Fit, SweepReport } from "./api";

const finite = (v: number | null | undefined): v is number => typeof v === "number" && Number.isFinite(v);

/** The fitted reference curve's loss at target amount x (the engine's two forms). */
export function fittedLoss(fit: Fit, x: number): number | null {
  if (fit.method === "power" && finite(fit.A) && finite(fit.B) && finite(fit.C)) {
    return fit.A / x ** fit.B + fit.C;
  }
  return fit.alpha - fit.beta * Math.log(x);
}

/** Final target loss against replay fraction: one column per target stage-2 allocation (one
 * column in plain fine-tuning), finished configurations only. */
export function lossByFraction(configurations: Configuration[]): { data: Aligned; labels: string[] } {
  const done = configurations.filter((c) => finite(c.final_val_loss_target));
  const allocations = [...new Set(done.map((c) => c.target_stage2_allocation))];
  const xs = [...new Set(done.map((c) => c.replay_fraction))].sort((a, b) => a - b);
  const columns: Column[] = allocations.map((a) =>
    xs.map((x) => done.find((c) => c.replay_fraction === x && c.target_stage2_allocation === a)?.final_val_loss_target ?? null),
  );
  const labels = allocations.map((a) => (a === null ? "final val loss (target)" : `a = ${a}`));
  return { data: [xs, ...columns], labels };
}

/** x values spread evenly on a log scale over [lo, hi]. */
export function logSpace(lo: number, hi: number, n: number): number[] {
  const [a, b] = [Math.log(lo), Math.log(hi)];
  return Array.from({ length: n }, (_, i) => Math.exp(a + ((b - a) * i) / (n - 1)));
}

/** The reference plot: the fitted curve (sampled), the reference runs, and each finished
 * configuration placed on the curve at its equivalent amount of target data x_eq. */
export function referenceChart(report: SweepReport, samples = 60): Aligned {
  const fit = report.reference.fit;
  const refs = report.reference.points.filter((p) => finite(p.final_val_loss_target));
  const placed = report.configurations.filter((c) => finite(c.x_eq) && finite(c.final_val_loss_target));
  const xsKnown = [...refs.map((p) => p.x), ...placed.map((c) => c.x_eq as number)];
  if (xsKnown.length === 0) return [[], [], [], []];
  const lo = Math.min(...xsKnown) / 1.25;
  const hi = Math.max(...xsKnown) * 1.25;
  const curveXs = fit ? logSpace(lo, hi, samples) : [];
  const x = [...new Set([...curveXs, ...xsKnown])].sort((a, b) => a - b);
  const curve: Column = x.map((v) => (fit && curveXs.includes(v) ? fittedLoss(fit, v) : null));
  const refCol: Column = x.map((v) => refs.find((p) => p.x === v)?.final_val_loss_target ?? null);
  const confCol: Column = x.map((v) => placed.find((c) => c.x_eq === v)?.final_val_loss_target ?? null);
  return [x, curve, refCol, confCol];
}

/** "r=0.25" (and " a=0.5" in mid-training). */
export function configLabel(c: { replay_fraction: number; target_stage2_allocation: number | null }): string {
  return `r=${c.replay_fraction}` + (c.target_stage2_allocation === null ? "" : ` a=${c.target_stage2_allocation}`);
}

/** Powers of two inside [lo, hi] (1/16, 1/8, ... 1, 2, ...): ticks for the log x axis. */
export function powerOfTwoTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.ceil(Math.log2(lo)); 2 ** e <= hi; e++) ticks.push(2 ** e);
  return ticks;
}
