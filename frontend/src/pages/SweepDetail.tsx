// One sweep's data-efficiency report (deep link /sweeps/<id>): the recommended replay fraction and
// why, final target loss against replay fraction, the fitted reference curve L(x) with every
// configuration placed at its equivalent amount of target data x_eq, the multipliers table (with
// each configuration's generic change and task eval scores beside its multiplier) and the member
// jobs. While members run, the report is partial and refreshes itself.

import { useMemo, useState } from "react";
import { Link, useParams } from "react-router-dom";
import { useClient, useOnError } from "../auth";
import { Chart, type Marker } from "../components/Chart";
import { Empty, ErrorNote, Loading, ProgressBar, StatusBadge } from "../components/ui";
import { usePolled } from "../hooks";
import { formatAccuracy, formatChange } from "../lib/evals";
import { formatLoss } from "../lib/format";
import { SWEEP_FINISHED, sweepsApi, type Fit, type Sweep, type SweepReport } from "../sweeps/api";
import { configLabel, lossByFraction, powerOfTwoTicks, referenceChart } from "../sweeps/charts";

const COLORS = { curve: "#868e96", reference: "#1c7ed6", configuration: "#e8590c", best: "#2f9e44" };
const LINE_COLORS = ["#e8590c", "#1c7ed6", "#2f9e44", "#ae3ec9"];

interface Loaded {
  sweep: Sweep;
  report: SweepReport;
}

const num = (v: number | null | undefined, digits = 3) =>
  v === null || v === undefined ? "—" : v.toPrecision(digits);

function FitSummary({ fit, error }: { fit: Fit | null; error: string | null }) {
  if (!fit) return <p className="muted">No reference fit yet: {error}</p>;
  return (
    <p>
      {fit.method === "power" ? (
        <>
          <span className="mono">L(x) = A / x^B + C</span> with A = {num(fit.A)}, B = {num(fit.B)}, C ={" "}
          {num(fit.C, 4)}
        </>
      ) : (
        <>
          <span className="mono">L(x) = α − β·ln x</span> with α = {num(fit.alpha, 4)}, β = {num(fit.beta)}
        </>
      )}
      {fit.degenerate && (
        <span className="warning" data-testid="degenerate-fit">
          {" "}The power law degenerated (B ≈ 0); multipliers use the log-linear fallback.
        </span>
      )}
    </p>
  );
}

export function SweepDetailPage() {
  const { sweepId = "" } = useParams();
  const client = useClient();
  const onError = useOnError();
  const [actionError, setActionError] = useState<string | null>(null);
  const loaded = usePolled<Loaded>(
    async () => {
      const api = sweepsApi(client);
      const [sweep, report] = await Promise.all([api.get(sweepId), api.report(sweepId)]);
      return { sweep, report };
    },
    [client, sweepId],
    (data) => (data && SWEEP_FINISHED.includes(data.sweep.status) ? null : 4000),
  );
  const report = loaded.data?.report ?? null;
  const sweep = loaded.data?.sweep ?? null;
  const evalNames = report?.eval_names ?? [];
  const byFraction = useMemo(() => (report ? lossByFraction(report.configurations) : null), [report]);
  const reference = useMemo(() => (report ? referenceChart(report) : null), [report]);
  const xRange: [number, number] | undefined =
    reference && reference[0].length ? [reference[0][0], reference[0][reference[0].length - 1]] : undefined;
  const markers: Marker[] = useMemo(
    () =>
      (report?.configurations ?? [])
        .filter((c) => c.x_eq !== null && !c.is_baseline)
        .map((c) => ({
          x: c.x_eq as number,
          label: `${configLabel(c)}: ${c.multiplier?.toFixed(2)}x`,
          color: c.job_id === report?.recommendation?.job_id ? COLORS.best : COLORS.configuration,
        })),
    [report],
  );

  async function cancel() {
    if (!window.confirm("Cancel every unfinished job of this sweep?")) return;
    try {
      await sweepsApi(client).cancel(sweepId);
      setActionError(null);
      loaded.reload();
    } catch (e) {
      setActionError(onError(e));
    }
  }

  if (loaded.loading && !loaded.data) return <Loading what="sweep" />;
  if (!sweep || !report) {
    return <ErrorNote message={loaded.error ?? "No such sweep."} onRetry={loaded.reload} />;
  }
  const done = sweep.counts.total - sweep.counts.unfinished;
  const rec = report.recommendation;
  return (
    <section>
      <p className="crumbs"><Link to="/sweeps">Sweeps</Link> / <span className="mono">{sweep.id}</span></p>
      <div className="page-head">
        <h1>
          Sweep report <StatusBadge status={sweep.status} />
        </h1>
        <div className="actions">
          {!SWEEP_FINISHED.includes(sweep.status) && (
            <button type="button" className="danger" onClick={cancel}>Cancel sweep</button>
          )}
        </div>
      </div>
      {loaded.error && <ErrorNote message={loaded.error} onRetry={loaded.reload} />}
      {actionError && <ErrorNote message={actionError} />}
      <dl className="facts">
        <div><dt>Model</dt><dd>{sweep.model}</dd></div>
        <div><dt>Target file</dt><dd className="mono">{sweep.training_file}</dd></div>
        <div><dt>Seed</dt><dd>{sweep.seed}</dd></div>
        <div><dt>Report</dt><dd data-testid="report-status">{report.status}</dd></div>
        <div>
          <dt>Jobs finished</dt>
          <dd>
            {done} / {sweep.counts.total}
            {sweep.counts.failed ? ` (${sweep.counts.failed} failed)` : ""}
          </dd>
        </div>
      </dl>
      {report.status === "partial" && (
        <ProgressBar value={sweep.counts.total ? done / sweep.counts.total : 0} label="Jobs finished" />
      )}

      <div className="card recommendation" data-testid="recommendation">
        <h2>Recommended replay fraction</h2>
        {rec ? (
          <>
            <p className="big">
              {configLabel(rec)}
              {rec.multiplier !== null && rec.replay_fraction > 0 && (
                <span className="muted"> · worth {rec.multiplier.toFixed(2)}× the target data</span>
              )}
            </p>
            <p>{rec.reason}</p>
          </>
        ) : (
          <p className="muted" data-testid="recommendation-waiting">
            {report.status === "partial"
              ? `Waiting for the runs it compares: ${done} of ${sweep.counts.total} jobs finished. A running member may still beat the finished ones, so nothing is recommended yet.`
              : "No configuration finished, so there is nothing to recommend."}
          </p>
        )}
      </div>

      <div className="charts sweep-charts">
        {byFraction && (
          <Chart
            title="Final target validation loss against replay fraction"
            testId="sweep-loss-vs-fraction"
            data={byFraction.data}
            xLabel="replay fraction r"
            yLabel="final val loss (target)"
            xRange={[0, Math.max(0.75, ...byFraction.data[0])]}
            series={byFraction.labels.map((label, i) => ({
              label,
              color: LINE_COLORS[i % LINE_COLORS.length],
              width: 2,
              showPoints: true,
            }))}
            formatY={(v) => v.toFixed(3)}
          />
        )}
        {reference && (
          <Chart
            title="Reference curve: loss against target data x (configurations at x_eq)"
            testId="sweep-reference-curve"
            data={reference}
            xLabel="target data x (1 = all of it)"
            yLabel="final val loss (target)"
            logX
            xRange={xRange}
            xTicks={xRange ? powerOfTwoTicks(...xRange) : undefined}
            markers={markers}
            series={[
              { label: "fitted L(x)", color: COLORS.curve, dash: [6, 4], width: 2 },
              { label: "reference runs (no replay)", color: COLORS.reference, pointsOnly: true },
              { label: "replay configurations at x_eq", color: COLORS.configuration, pointsOnly: true },
            ]}
            formatY={(v) => v.toFixed(3)}
          />
        )}
      </div>

      <div className="card">
        <h2>Reference fit</h2>
        <FitSummary fit={report.reference.fit} error={report.reference.fit_error} />
        <p className="muted small">x: {report.reference.x_unit}.</p>
      </div>

      <h2>Data-efficiency multipliers</h2>
      {report.configurations.length === 0 ? (
        <Empty>No configurations.</Empty>
      ) : (
        <table className="table" aria-label="Multipliers">
          <thead>
            <tr>
              <th>Configuration</th>
              <th>Status</th>
              <th className="num">Final val loss (target)</th>
              <th className="num">Final val loss (generic)</th>
              <th className="num" title={report.explain?.loss_spike_height}>Loss spike height <Explain text={report.explain?.loss_spike_height} /></th>
              <th className="num" title={report.explain?.x_eq}>x_eq <Explain text={report.explain?.x_eq} /></th>
              <th className="num" title={report.explain?.multiplier}>Multiplier over r=0 <Explain text={report.explain?.multiplier} /></th>
              <th className="num" title={report.explain?.generic_change}>Generic change <Explain text={report.explain?.generic_change} /></th>
              {evalNames.map((name) => (
                <th key={name} className="num" title={report.explain?.eval_scores}>
                  <span className="mono">{name}</span> accuracy
                </th>
              ))}
              <th>Job</th>
            </tr>
          </thead>
          <tbody>
            {report.configurations.map((c) => (
              <tr key={c.job_id} data-fraction={c.replay_fraction} className={c.job_id === rec?.job_id ? "best" : undefined}>
                <td>
                  {configLabel(c)}
                  {c.is_baseline && <span className="muted small"> (baseline)</span>}
                </td>
                <td>
                  <StatusBadge status={c.status} />
                  {c.error && <div className="field-error">{c.error.message}</div>}
                </td>
                <td className="num">{formatLoss(c.final_val_loss_target)}</td>
                <td className="num">{formatLoss(c.final_val_loss_generic)}</td>
                <td className="num">{formatLoss(c.loss_spike_height)}</td>
                <td className="num">{num(c.x_eq)}</td>
                <td className="num" data-testid={`multiplier-${c.replay_fraction}`}>
                  {c.multiplier === null ? "—" : `${c.multiplier.toFixed(2)}×`}
                  {c.multiplier_interval && (
                    <div className="muted small" title={report.explain?.multiplier_interval}>
                      {c.multiplier_interval.low.toFixed(2)}–{c.multiplier_interval.high.toFixed(2)}× (90% of refits)
                    </div>
                  )}
                  {c.multiplier_degenerate && (
                    <div className="badge badge-queued" title="The power-law fit degenerated (B near 0); this multiplier uses the log-linear fallback.">
                      degenerate fit
                    </div>
                  )}
                </td>
                <td className="num" data-testid={`generic-change-${c.replay_fraction}`}>{formatChange(c.generic_change)}</td>
                {evalNames.map((name) => (
                  <td key={name} className="num" data-eval={name}>{formatAccuracy(c.eval_scores?.[name])}</td>
                ))}
                <td><Link className="mono small" to={`/jobs/${c.job_id}`}>{c.job_id}</Link></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <h2 className="spaced">Member jobs</h2>
      <table className="table" aria-label="Member jobs">
        <thead>
          <tr><th>Job</th><th>Role</th><th className="num">r</th><th className="num">Target subset</th><th>Status</th><th>Progress</th></tr>
        </thead>
        <tbody>
          {sweep.members.map((m) => (
            <tr key={m.job_id}>
              <td><Link className="mono" to={`/jobs/${m.job_id}`}>{m.job_id}</Link></td>
              <td>{m.roles.join(" + ")}</td>
              <td className="num">{m.replay_fraction}</td>
              <td className="num">{+m.target_subset_fraction.toFixed(4)}</td>
              <td><StatusBadge status={m.status} /></td>
              <td className="progress-cell">
                <ProgressBar
                  value={m.progress?.total_steps ? (m.progress.step ?? 0) / m.progress.total_steps : 0}
                  label={`Progress of ${m.job_id}`}
                />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {report.notes.length > 0 && (
        <ul className="notes">
          {report.notes.map((n) => <li key={n}>{n}</li>)}
        </ul>
      )}
    </section>
  );
}

/** A small "?" that explains a column in place (hover, or focus with the keyboard). */
function Explain({ text }: { text?: string }) {
  if (!text) return null;
  return (
    <span className="explain" tabIndex={0} title={text} aria-label={text}>
      ?
    </span>
  );
}
