// Usage: what the team trained (jobs, tokens, GPU-hours) per day over a window, summed per team.
// Admin keys see every team, and each team's limits with this month's use against its quotas
// (set with PATCH /v1/admin/teams/{id}); other keys see their own team.

import { useState } from "react";
import { ApiError } from "../api";
import { useClient } from "../auth";
import { Empty, ErrorNote, Loading } from "../components/ui";
import { usePolled } from "../hooks";
import { formatCount } from "../lib/format";
import { daysAgo, quotaLabel, totalsByTeam } from "../lib/usage";

const hours = (h: number) => h.toFixed(2);
const limitText = (v: number | null | undefined) => (v === null || v === undefined ? "no limit" : String(v));

export function UsagePage() {
  const client = useClient();
  const [start, setStart] = useState(daysAgo(30));
  const [end, setEnd] = useState(daysAgo(0));
  // admins get every team; a 403 means an ordinary key, which sees its own
  const teams = usePolled(
    () => client.teams().catch((e) => (e instanceof ApiError && e.status === 403 ? null : Promise.reject(e))),
    [client],
  );
  const admin = teams.data !== null;
  const usage = usePolled(
    () => client.usage({ start_date: start, end_date: end, team_name: admin ? "*" : undefined }),
    [client, start, end, admin],
  );
  const totals = usage.data ? totalsByTeam(usage.data.data) : [];
  return (
    <section>
      <div className="page-head">
        <h1>Usage</h1>
      </div>
      <p className="muted">
        Jobs, trained tokens and GPU-hours (training time × processes) per UTC day: a job counts on
        the day it finished. The same numbers come from <code>GET /v1/usage</code>.
      </p>
      <div className="filters">
        <label>
          From <input type="date" aria-label="From" value={start} onChange={(e) => setStart(e.target.value)} />
        </label>{" "}
        <label>
          To <input type="date" aria-label="To" value={end} onChange={(e) => setEnd(e.target.value)} />
        </label>
      </div>
      {usage.loading && !usage.data && <Loading what="usage" />}
      {usage.error && <ErrorNote message={usage.error} onRetry={usage.reload} />}
      {usage.data && totals.length === 0 && <Empty>Nothing trained in this window.</Empty>}
      {totals.length > 0 && (
        <table className="table" aria-label="Usage by team">
          <thead>
            <tr>
              <th>Team</th>
              <th>Jobs created</th>
              <th>Succeeded</th>
              <th>Failed</th>
              <th>Cancelled</th>
              <th>Trained tokens</th>
              <th>GPU-hours</th>
            </tr>
          </thead>
          <tbody>
            {totals.map((t) => (
              <tr key={t.team} data-team={t.team}>
                <td>{t.team}</td>
                <td>{t.jobsCreated}</td>
                <td>{t.jobsSucceeded}</td>
                <td>{t.jobsFailed}</td>
                <td>{t.jobsCancelled}</td>
                <td>{formatCount(t.trainedTokens)}</td>
                <td>{hours(t.gpuHours)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {usage.data && usage.data.data.length > 0 && (
        <details>
          <summary>Per day</summary>
          <table className="table" aria-label="Usage by day">
            <thead>
              <tr>
                <th>Day</th>
                <th>Team</th>
                <th>Jobs created</th>
                <th>Succeeded</th>
                <th>Trained tokens</th>
                <th>GPU-hours</th>
              </tr>
            </thead>
            <tbody>
              {usage.data.data.map((d) => (
                <tr key={`${d.team_id}-${d.date}`}>
                  <td>{d.date}</td>
                  <td>{d.team}</td>
                  <td>{d.jobs_created ?? 0}</td>
                  <td>{d.jobs_succeeded ?? 0}</td>
                  <td>{formatCount(d.trained_tokens ?? 0)}</td>
                  <td>{hours((d.gpu_seconds ?? 0) / 3600)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </details>
      )}
      {teams.error && <ErrorNote message={teams.error} onRetry={teams.reload} />}
      {teams.data && (
        <>
          <h2>Team limits</h2>
          <p className="muted">
            Jobs past a team's running limit wait in the queue; past its queue limit or a spent monthly
            quota, submissions get 429. Workers go to the team with the least running work first.
          </p>
          <table className="table" aria-label="Team limits">
            <thead>
              <tr>
                <th>Team</th>
                <th>Running jobs</th>
                <th>Waiting jobs</th>
                <th>Tokens this month</th>
                <th>GPU-hours this month</th>
              </tr>
            </thead>
            <tbody>
              {teams.data.data.map((t) => (
                <tr key={t.id} data-team={t.name}>
                  <td>{t.name}</td>
                  <td>{limitText(t.effective_limits.max_running_jobs)}</td>
                  <td>{limitText(t.effective_limits.max_queued_jobs)}</td>
                  <td>{quotaLabel(t.month_usage.tokens, t.effective_limits.monthly_tokens, formatCount)}</td>
                  <td>{quotaLabel(t.month_usage.gpu_hours, t.effective_limits.monthly_gpu_hours, hours)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
