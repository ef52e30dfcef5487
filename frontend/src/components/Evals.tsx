// The job page's forgetting line (target loss and generic loss, base model -> now) and its
// Evals panel: a table of each task eval before and after, and a chart of its accuracy at each
// eval record (step 0, each checkpoint, the end). The numbers come from lib/evals.

import { useMemo } from "react";
import type { MetricRecord } from "../api";
import { Chart } from "./Chart";
import { evalKey, evalRows, forgetting, formatAccuracy, formatChange, type EvalRequest, type JobSummary } from "../lib/evals";
import { formatLoss } from "../lib/format";
import { PALETTE, alignSeries } from "../lib/series";

/** "Target loss 3.1 → 2.4 (gain +0.7) · generic loss 2.9 → 3.0 (change +0.1, forgetting)". */
export function ForgettingLine({ records, summary }: { records: MetricRecord[]; summary: JobSummary | null | undefined }) {
  const f = forgetting(records, summary);
  if (!f) return null;
  const verdict =
    f.genericChange === null ? null : f.genericChange > 0 ? "forgetting" : "no forgetting";
  return (
    <p className="small" data-testid="forgetting">
      <strong>Target gain / generic change</strong>{" "}
      <span className="muted">{f.final ? "(base model → final)" : "(base model → latest, so far)"}</span>:{" "}
      target loss {formatLoss(f.initialTarget)} → {formatLoss(f.finalTarget)}{" "}
      (gain <span data-testid="target-gain">{formatChange(f.targetGain)}</span>)
      {(f.initialGeneric !== null || f.finalGeneric !== null) && (
        <>
          {" · "}generic loss {formatLoss(f.initialGeneric)} → {formatLoss(f.finalGeneric)}{" "}
          (change <span data-testid="generic-change">{formatChange(f.genericChange)}</span>
          {verdict && <span className="muted">, {verdict}</span>})
        </>
      )}
    </p>
  );
}

export function EvalsPanel({
  records,
  summary,
  requested,
  syncKey,
}: {
  records: MetricRecord[];
  summary: JobSummary | null | undefined;
  requested: EvalRequest[] | null | undefined;
  syncKey?: string;
}) {
  const rows = useMemo(() => evalRows(records, summary, requested), [records, summary, requested]);
  const data = useMemo(
    () => alignSeries(records.filter((r) => r.type === "eval"), rows.map((r) => evalKey(r.name, "accuracy"))),
    [records, rows],
  );
  if (rows.length === 0) return null;
  // multiple-choice and lm_eval evals report a length-normalised accuracy too
  const hasNorm = (r: (typeof rows)[number]) => r.initialAccuracyNorm !== null || r.finalAccuracyNorm !== null;
  const anyNorm = rows.some(hasNorm);
  return (
    <div className="card" data-testid="evals-panel">
      <h2>Evals</h2>
      <table className="table" aria-label="Evals">
        <thead>
          <tr>
            <th>Eval</th>
            <th>Kind</th>
            <th>Generic</th>
            <th className="num">Accuracy step 0 → {summary ? "final" : "latest"}</th>
            <th className="num">Change</th>
            {anyNorm && <th className="num">Acc. norm step 0 → {summary ? "final" : "latest"}</th>}
            {anyNorm && <th className="num">Norm change</th>}
            <th className="num">Correct / total</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.name} data-eval={r.name}>
              <td className="mono">{r.name}</td>
              <td>{r.kind?.replace("_", " ") ?? "—"}</td>
              <td>{r.generic ? <span title="measures forgetting">generic</span> : <span className="muted">target</span>}</td>
              <td className="num" data-testid={`eval-accuracy-${r.name}`}>
                {formatAccuracy(r.initialAccuracy)} → {formatAccuracy(r.finalAccuracy)}
              </td>
              <td className="num">{r.accuracyChange === null ? "—" : `${formatChange(r.accuracyChange * 100, 1)} pts`}</td>
              {anyNorm && (
                <td className="num">
                  {hasNorm(r) ? `${formatAccuracy(r.initialAccuracyNorm)} → ${formatAccuracy(r.finalAccuracyNorm)}` : "—"}
                </td>
              )}
              {anyNorm && (
                <td className="num">
                  {r.accuracyNormChange === null ? "—" : `${formatChange(r.accuracyNormChange * 100, 1)} pts`}
                </td>
              )}
              <td className="num">
                {r.correct ?? "—"} / {r.total ?? "—"}
                {r.step !== null && <span className="muted small"> at step {r.step}</span>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Chart
        title="Eval accuracy"
        testId="chart-evals"
        syncKey={syncKey}
        data={data}
        yLabel="accuracy"
        formatY={(v) => `${+(v * 100).toFixed(1)}%`}
        series={rows.map((r, i) => ({
          label: r.generic ? `${r.name} (generic)` : r.name,
          color: PALETTE[i % PALETTE.length],
          dash: r.generic ? [6, 4] : undefined,
          showPoints: true,
          width: 2,
        }))}
        height={220}
      />
    </div>
  );
}
