// Compare: pick jobs (kept in the URL, ?jobs=a,b&x=tokens), overlay their validation and training
// curves on a chosen x axis (steps, tokens, target epochs or training time: a replay run takes
// more steps for the same target data, so steps alone mislead), plot the final target
// validation loss against the replay fraction, plot each run's target metric against its generic
// metric (the trade-off replay moves: ?tx=final_target|target_gain,
// ?ty=generic_change|final_generic|eval:<generic eval>), and list the settings in which the runs
// differ.

import { useMemo } from "react";
import { Link, useSearchParams } from "react-router-dom";
import { FINISHED, type Job, type MetricRecord } from "../api";
import { useClient } from "../auth";
import { Chart } from "../components/Chart";
import { Empty, ErrorNote, Loading, StatusBadge } from "../components/ui";
import { usePolled } from "../hooks";
import {
  TRADEOFF_X,
  forgetting,
  formatChange,
  paddedRange,
  tradeoffData,
  tradeoffPoint,
  tradeoffYOptions,
  type TradeoffX,
} from "../lib/evals";
import { formatLoss, formatMethod, formatSchedule } from "../lib/format";
import {
  PALETTE,
  X_AXES,
  alignRunsOn,
  differingSettings,
  lastValue,
  lossVsFraction,
  stepToX,
  type XAxis,
} from "../lib/series";

interface Run {
  job: Job;
  records: MetricRecord[];
}

/** A job's name on the charts: its suffix where it has one. */
const runName = (job: Job) => job.suffix || job.id.slice(-8);

/** What a job ran with, by the names the compare table shows. */
function settingsOf(job: Job): Record<string, unknown> {
  const hp = job.hyperparameters as Record<string, unknown>;
  return {
    model: job.model,
    "training file": job.training_file,
    "replay data": job.replay?.dataset,
    "replay r": job.replay?.fraction ?? 0,
    "stage-2 share a": job.replay?.target_stage2_allocation,
    "stage-2 duration d": job.replay?.stage2_duration,
    epochs: hp.n_epochs,
    steps: job.progress.total_steps,
    "batch size": hp.batch_size,
    "sequence length": hp.seq_len,
    "learning rate": hp.learning_rate,
    schedule: formatSchedule(hp.lr_scheduler),
    method: formatMethod(hp.adapter),
    seed: job.seed,
  };
}

export function ComparePage() {
  const client = useClient();
  const [params, setParams] = useSearchParams();
  const ids = params.get("jobs")?.split(",").filter(Boolean) ?? [];
  const axis = (params.get("x") ?? "step") as XAxis;
  const tradeX = (params.get("tx") === "target_gain" ? "target_gain" : "final_target") as TradeoffX;
  const jobs = usePolled(() => client.jobs({ limit: 100 }), [client]);
  const runs = usePolled<Run[]>(
    () =>
      Promise.all(
        ids.map(async (id) => {
          const [job, metrics] = await Promise.all([client.job(id), client.metrics(id)]);
          return { job, records: metrics.data };
        }),
      ),
    [client, ids.join(",")],
    (data) => (data?.some((r) => ["running", "queued", "validating_files"].includes(r.job.status)) ? 5000 : null),
  );

  const update = (changes: Record<string, string | null>) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) {
      if (v) next.set(k, v);
      else next.delete(k);
    }
    setParams(next);
  };
  const toggle = (id: string) => {
    const next = ids.includes(id) ? ids.filter((x) => x !== id) : [...ids, id];
    update({ jobs: next.join(",") || null });
  };
  const loaded = runs.data ?? [];
  const series = loaded.map((r, i) => ({
    label: `${runName(r.job)} r=${r.job.replay?.fraction ?? 0}`,
    color: PALETTE[i % PALETTE.length],
    width: 2,
  }));
  const mapped = useMemo(
    () =>
      loaded.map((r) => {
        const x = stepToX(
          { hyperparameters: r.job.hyperparameters, stages: r.job.replay?.stages, records: r.records },
          axis,
        );
        return {
          evals: { records: r.records.filter((m) => m.type === "eval"), x },
          train: { records: r.records.filter((m) => m.type === "train"), x },
        };
      }),
    [runs.data, axis],
  );
  const valTarget = useMemo(() => alignRunsOn(mapped.map((m) => m.evals), "val_loss_target"), [mapped]);
  const valGeneric = useMemo(() => alignRunsOn(mapped.map((m) => m.evals), "val_loss_generic"), [mapped]);
  const trainTarget = useMemo(() => alignRunsOn(mapped.map((m) => m.train), "train_loss_target"), [mapped]);
  const finals = loaded.map((r) => ({
    fraction: r.job.replay?.fraction,
    finalLoss:
      r.job.summary?.final_val_loss_target ??
      lastValue(r.records.filter((m) => m.type === "eval"), "val_loss_target"),
    live: !FINISHED.includes(r.job.status),
  }));
  const scatter = useMemo(() => lossVsFraction(finals), [runs.data]);
  const differing = useMemo(() => differingSettings(loaded.map((r) => ({ settings: settingsOf(r.job) }))), [runs.data]);
  const xLabel = X_AXES[axis] ?? "step";
  const tradeRuns = loaded.map((r) => ({ records: r.records, summary: r.job.summary, requested: r.job.evals }));
  const yOptions = useMemo(() => tradeoffYOptions(tradeRuns), [runs.data]);
  const tradeY = yOptions.find(([k]) => k === params.get("ty"))?.[0] ?? "generic_change";
  const tradePoints = useMemo(() => tradeRuns.map((run) => tradeoffPoint(run, tradeX, tradeY)), [runs.data, tradeX, tradeY]);
  const tradeoff = useMemo(() => tradeoffData(tradePoints), [tradePoints]);
  const losses = useMemo(() => tradeRuns.map((run) => forgetting(run.records, run.summary)), [runs.data]);
  const yLabel = yOptions.find(([k]) => k === tradeY)?.[1] ?? tradeY;

  return (
    <section>
      <h1>Compare jobs</h1>
      <div className="compare">
        <div className="card picker">
          <h2>Jobs</h2>
          {jobs.loading && !jobs.data && <Loading what="jobs" />}
          {jobs.error && <ErrorNote message={jobs.error} onRetry={jobs.reload} />}
          {jobs.data?.data.length === 0 && <Empty>No jobs to compare yet.</Empty>}
          <ul className="pick-list">
            {jobs.data?.data.map((j) => (
              <li key={j.id}>
                <label>
                  <input type="checkbox" checked={ids.includes(j.id)} onChange={() => toggle(j.id)} />{" "}
                  <span className="mono small">{j.id}</span> <StatusBadge status={j.status} />{" "}
                  <span className="muted small">
                    {j.suffix ? `${j.suffix} · ` : ""}r={j.replay?.fraction ?? 0}
                  </span>
                </label>
              </li>
            ))}
          </ul>
        </div>
        <div className="compare-charts">
          {ids.length === 0 && <Empty>Pick two or more jobs to overlay their validation curves.</Empty>}
          {ids.length > 0 && runs.loading && !runs.data && <Loading what="metrics" />}
          {runs.error && <ErrorNote message={runs.error} onRetry={runs.reload} />}
          {loaded.length > 0 && (
            <>
              <div className="filters" role="group" aria-label="X axis">
                <span className="muted small">x axis</span>
                {(Object.keys(X_AXES) as XAxis[]).map((a) => (
                  <button type="button" key={a} className={`chip${axis === a ? " on" : ""}`} aria-pressed={axis === a}
                    onClick={() => update({ x: a === "step" ? null : a })}>
                    {X_AXES[a]}
                  </button>
                ))}
              </div>
              <Chart title="Validation loss, target" testId="compare-val-target" syncKey="compare" data={valTarget} series={series} xLabel={xLabel} yLabel="loss" />
              <Chart title="Validation loss, generic" testId="compare-val-generic" syncKey="compare" data={valGeneric} series={series} xLabel={xLabel} yLabel="loss" />
              <Chart title="Training loss, target" testId="compare-train-target" syncKey="compare" data={trainTarget} series={series} xLabel={xLabel} yLabel="loss" />
              <Chart
                title="Final target validation loss against replay fraction"
                testId="compare-scatter"
                data={scatter}
                xLabel="replay fraction r"
                yLabel="final val loss (target)"
                xRange={[0, 1]}
                series={[{ label: "job", color: "#1c7ed6", pointsOnly: true }]}
                height={220}
              />
              <div className="filters" role="group" aria-label="Trade-off axes">
                <label>
                  <span className="muted small">target (x)</span>{" "}
                  <select aria-label="Trade-off x" value={tradeX}
                    onChange={(e) => update({ tx: e.target.value === "final_target" ? null : e.target.value })}>
                    {(Object.keys(TRADEOFF_X) as TradeoffX[]).map((k) => <option key={k} value={k}>{TRADEOFF_X[k]}</option>)}
                  </select>
                </label>
                <label>
                  <span className="muted small">generic (y)</span>{" "}
                  <select aria-label="Trade-off y" value={tradeY}
                    onChange={(e) => update({ ty: e.target.value === "generic_change" ? null : e.target.value })}>
                    {yOptions.map(([k, label]) => <option key={k} value={k}>{label}</option>)}
                  </select>
                </label>
              </div>
              <Chart
                title="Target against generic: the trade-off replay moves (one point per run)"
                testId="compare-tradeoff"
                data={tradeoff}
                xLabel={TRADEOFF_X[tradeX]}
                integerX={false}
                xRange={paddedRange(tradeoff[0])}
                labelPoints
                yLabel={yLabel}
                series={series.map((s) => ({ ...s, pointsOnly: true }))}
                height={260}
              />
              <table className="table" aria-label="Compared jobs">
                <thead>
                  <tr>
                    <th>Job</th><th>Status</th><th className="num">Replay r</th><th className="num">Val loss (target)</th>
                    <th className="num">Target gain</th><th className="num">Generic change</th>
                  </tr>
                </thead>
                <tbody>
                  {loaded.map((r, i) => (
                    <tr key={r.job.id}>
                      <td>
                        <span className="swatch" style={{ background: PALETTE[i % PALETTE.length] }} />{" "}
                        <Link className="mono" to={`/jobs/${r.job.id}`}>{r.job.id}</Link>
                        {r.job.suffix && <span className="muted small"> {r.job.suffix}</span>}
                      </td>
                      <td><StatusBadge status={r.job.status} /></td>
                      <td className="num">{r.job.replay?.fraction ?? 0}</td>
                      <td className="num">
                        {formatLoss(finals[i].finalLoss)}{" "}
                        <span className="muted small">{finals[i].live ? "latest" : "final"}</span>
                      </td>
                      <td className="num">{formatChange(losses[i]?.targetGain)}</td>
                      <td className="num" data-testid="compare-generic-change">{formatChange(losses[i]?.genericChange)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
              {loaded.length > 1 && (
                <table className="table" aria-label="Settings that differ" data-testid="compare-differences">
                  <thead>
                    <tr>
                      <th>Setting that differs</th>
                      {loaded.map((r) => <th key={r.job.id}>{runName(r.job)}</th>)}
                    </tr>
                  </thead>
                  <tbody>
                    {differing.length === 0 && (
                      <tr><td colSpan={loaded.length + 1} className="muted">The runs share every setting.</td></tr>
                    )}
                    {differing.map(([name, values]) => (
                      <tr key={name} data-setting={name}>
                        <td>{name}</td>
                        {values.map((v, i) => <td key={loaded[i].job.id} className="mono small">{v}</td>)}
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </>
          )}
        </div>
      </div>
    </section>
  );
}
