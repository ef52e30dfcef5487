// Compare: pick jobs (kept in the URL, ?jobs=a,b), overlay their validation curves, and plot the
// final target validation loss against the replay fraction.

import { useMemo } from "react";
import { Link, useSearchParams } from "react-router-dom";
import type { Job, MetricRecord } from "../api";
import { useClient } from "../auth";
import { Chart } from "../components/Chart";
import { Empty, ErrorNote, Loading, StatusBadge } from "../components/ui";
import { usePolled } from "../hooks";
import { formatLoss } from "../lib/format";
import { PALETTE, alignJobs, lastValue, lossVsFraction } from "../lib/series";

interface Run {
  job: Job;
  records: MetricRecord[];
}

export function ComparePage() {
  const client = useClient();
  const [params, setParams] = useSearchParams();
  const ids = params.get("jobs")?.split(",").filter(Boolean) ?? [];
  const jobs = usePolled(() => client.jobs({ limit: 100 }), [client]);
  const runs = usePolled<Run[]>(
    () =>
      Promise.all(
        ids.map(async (id) => {
          const [job, metrics] = await Promise.all([client.job(id), client.metrics(id)]);
          return { job, records: metrics.data.filter((r) => r.type === "eval") };
        }),
      ),
    [client, ids.join(",")],
    (data) => (data?.some((r) => ["running", "queued", "validating_files"].includes(r.job.status)) ? 5000 : null),
  );

  const toggle = (id: string) => {
    const next = ids.includes(id) ? ids.filter((x) => x !== id) : [...ids, id];
    setParams(next.length ? { jobs: next.join(",") } : {});
  };
  const loaded = runs.data ?? [];
  const series = loaded.map((r, i) => ({
    label: `${r.job.id.slice(-8)} r=${r.job.replay?.fraction ?? 0}`,
    color: PALETTE[i % PALETTE.length],
    width: 2,
  }));
  const valTarget = useMemo(() => alignJobs(loaded, "val_loss_target"), [runs.data]);
  const valGeneric = useMemo(() => alignJobs(loaded, "val_loss_generic"), [runs.data]);
  const finals = loaded.map((r) => ({
    fraction: r.job.replay?.fraction,
    finalLoss: r.job.summary?.final_val_loss_target ?? lastValue(r.records, "val_loss_target"),
  }));
  const scatter = useMemo(() => lossVsFraction(finals), [runs.data]);

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
                  <span className="muted small">r={j.replay?.fraction ?? 0}</span>
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
              <Chart title="Validation loss, target" testId="compare-val-target" data={valTarget} series={series} yLabel="loss" />
              <Chart title="Validation loss, generic" testId="compare-val-generic" data={valGeneric} series={series} yLabel="loss" />
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
              <table className="table" aria-label="Compared jobs">
                <thead>
                  <tr><th>Job</th><th>Status</th><th className="num">Replay r</th><th className="num">Final val loss (target)</th></tr>
                </thead>
                <tbody>
                  {loaded.map((r, i) => (
                    <tr key={r.job.id}>
                      <td><span className="swatch" style={{ background: PALETTE[i % PALETTE.length] }} /> <Link className="mono" to={`/jobs/${r.job.id}`}>{r.job.id}</Link></td>
                      <td><StatusBadge status={r.job.status} /></td>
                      <td className="num">{r.job.replay?.fraction ?? 0}</td>
                      <td className="num">{formatLoss(finals[i].finalLoss)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </>
          )}
        </div>
      </div>
    </section>
  );
}
