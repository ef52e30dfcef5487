// Sweeps: every replay sweep of the team with its progress (member jobs finished of all), the
// fractions it spans and, once known, the recommended replay fraction. Refreshed while any runs.

import { Link } from "react-router-dom";
import { useClient } from "../auth";
import { Empty, ErrorNote, Loading, ProgressBar, StatusBadge } from "../components/ui";
import { usePolled } from "../hooks";
import { formatTime } from "../lib/format";
import { SWEEP_FINISHED, sweepsApi } from "../sweeps/api";

const ACTIVE_MS = 3000;
const IDLE_MS = 15000;

export function SweepsPage() {
  const client = useClient();
  const sweeps = usePolled(
    () => sweepsApi(client).list(),
    [client],
    (list) => (list?.data.some((s) => !SWEEP_FINISHED.includes(s.status)) ? ACTIVE_MS : IDLE_MS),
  );
  return (
    <section>
      <div className="page-head">
        <h1>Replay sweeps</h1>
        <div className="actions">
          <Link className="button primary" to="/sweeps/new">New sweep</Link>
        </div>
      </div>
      <p className="muted">
        A sweep trains one job per replay fraction plus no-replay reference runs on nested subsets of
        the target data, and reports what each fraction is worth in target data. Make one here, or with{" "}
        <code>replayft sweeps submit SWEEP.yaml</code> or <code>POST /v1/sweeps</code>.
      </p>
      {sweeps.loading && !sweeps.data && <Loading what="sweeps" />}
      {sweeps.error && <ErrorNote message={sweeps.error} onRetry={sweeps.reload} />}
      {sweeps.data && sweeps.data.data.length === 0 && <Empty>No sweeps yet.</Empty>}
      {sweeps.data && sweeps.data.data.length > 0 && (
        <table className="table" aria-label="Sweeps">
          <thead>
            <tr>
              <th>Sweep</th>
              <th>Status</th>
              <th>Jobs finished</th>
              <th>Replay fractions</th>
              <th>Reference subsets</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {sweeps.data.data.map((s) => {
              const done = s.counts.total - s.counts.unfinished;
              return (
                <tr key={s.id} data-sweep-id={s.id} data-status={s.status}>
                  <td>
                    <Link to={`/sweeps/${s.id}`} className="mono">{s.id}</Link>
                    <div className="muted small">{s.model}</div>
                  </td>
                  <td><StatusBadge status={s.status} /></td>
                  <td className="progress-cell">
                    <ProgressBar value={s.counts.total ? done / s.counts.total : 0} label={`Jobs of ${s.id}`} />
                    <span className="muted small">
                      {done} / {s.counts.total}
                      {s.counts.failed ? ` · ${s.counts.failed} failed` : ""}
                    </span>
                  </td>
                  <td>{s.replay_fractions.join(", ")}{s.target_stage2_allocations ? ` × a ∈ {${s.target_stage2_allocations.join(", ")}}` : ""}</td>
                  <td>{s.reference_subsets.map((x) => +x.toFixed(4)).join(", ")}</td>
                  <td>{formatTime(s.created_at)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}
