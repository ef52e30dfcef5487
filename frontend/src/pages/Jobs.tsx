// Jobs: status, stage, progress with ETA, replay fraction and final target loss of every job,
// filtered by status (kept in the URL), refreshed every few seconds while any job is active.

import { useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import { FINISHED, JOB_STATUSES, type JobStatus } from "../api";
import { useClient } from "../auth";
import { Empty, ErrorNote, Loading, ProgressBar, StatusBadge } from "../components/ui";
import { usePolled } from "../hooks";
import { formatEta, formatLoss, formatTime, statusLabel } from "../lib/format";

const ACTIVE_MS = 2000;
const IDLE_MS = 10000;

export function JobsPage() {
  const client = useClient();
  const navigate = useNavigate();
  const [params, setParams] = useSearchParams();
  const status = (params.get("status")?.split(",").filter(Boolean) ?? []) as JobStatus[];
  const [selected, setSelected] = useState<string[]>([]);
  const jobs = usePolled(
    () => client.jobs({ status, limit: 100 }),
    [client, status.join(",")],
    (list) => (list?.data.some((j) => !FINISHED.includes(j.status)) ? ACTIVE_MS : IDLE_MS),
  );

  function toggleStatus(s: JobStatus) {
    const next = status.includes(s) ? status.filter((x) => x !== s) : [...status, s];
    setParams(next.length ? { status: next.join(",") } : {});
  }
  const toggleJob = (id: string) =>
    setSelected((sel) => (sel.includes(id) ? sel.filter((x) => x !== id) : [...sel, id]));

  return (
    <section>
      <div className="page-head">
        <h1>Fine-tuning jobs</h1>
        <div className="actions">
          <button
            type="button"
            disabled={selected.length < 1}
            onClick={() => navigate(`/compare?jobs=${selected.join(",")}`)}
          >
            Compare selected ({selected.length})
          </button>
          <Link className="button primary" to="/jobs/new">
            New job
          </Link>
        </div>
      </div>
      <div className="filters" role="group" aria-label="Filter by status">
        {JOB_STATUSES.map((s) => (
          <button
            type="button"
            key={s}
            className={`chip${status.includes(s) ? " on" : ""}`}
            aria-pressed={status.includes(s)}
            onClick={() => toggleStatus(s)}
          >
            {statusLabel(s)}
          </button>
        ))}
        {status.length > 0 && (
          <button type="button" className="link-button" onClick={() => setParams({})}>
            clear
          </button>
        )}
      </div>
      {jobs.loading && !jobs.data && <Loading what="jobs" />}
      {jobs.error && <ErrorNote message={jobs.error} onRetry={jobs.reload} />}
      {jobs.data && jobs.data.data.length === 0 && (
        <Empty>
          {status.length ? "No jobs with this status." : <>No jobs yet. <Link to="/jobs/new">Create one</Link>.</>}
        </Empty>
      )}
      {jobs.data && jobs.data.data.length > 0 && (
        <div className="table-wrap">
          <table className="table" aria-label="Jobs">
            <thead>
              <tr>
                <th><span className="sr-only">Select</span></th>
                <th>Job</th>
                <th>Status</th>
                <th className="num">Stage</th>
                <th>Progress</th>
                <th className="num">ETA</th>
                <th className="num">Replay r</th>
                <th className="num">Final val loss (target)</th>
                <th>Created</th>
              </tr>
            </thead>
            <tbody>
              {jobs.data.data.map((job) => {
                const { step = 0, total_steps, stage, eta_seconds } = job.progress;
                return (
                  <tr key={job.id} data-job-id={job.id} data-status={job.status}>
                    <td>
                      <input
                        type="checkbox"
                        aria-label={`Select ${job.id}`}
                        checked={selected.includes(job.id)}
                        onChange={() => toggleJob(job.id)}
                      />
                    </td>
                    <td>
                      <Link to={`/jobs/${job.id}`} className="mono">{job.id}</Link>
                      <div className="muted small">{job.model}{job.suffix ? ` · ${job.suffix}` : ""}</div>
                    </td>
                    <td><StatusBadge status={job.status} /></td>
                    <td className="num">{stage ?? "—"}</td>
                    <td className="progress-cell">
                      <ProgressBar value={total_steps ? step / total_steps : 0} label={`Progress of ${job.id}`} />
                      <span className="muted small">{step} / {total_steps ?? "?"}</span>
                    </td>
                    <td className="num">{job.status === "running" ? formatEta(eta_seconds) : "—"}</td>
                    <td className="num">{job.replay?.fraction ?? (job.replay ? "—" : "0")}</td>
                    <td className="num">{formatLoss(job.summary?.final_val_loss_target)}</td>
                    <td className="nowrap">{formatTime(job.created_at)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
