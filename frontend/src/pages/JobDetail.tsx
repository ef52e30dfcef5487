// One job (deep link /jobs/<id>): live progress, loss and LR charts with the initial loss spike
// and the stage transition marked, what the job ran with (files, knobs, the resulting model and
// how to use it, Clone), the events log, checkpoints with their metrics and a download button,
// the target gain and generic change against the base model, the task evals (a table and their
// accuracy over the eval records), and cancel / pause / resume. Live data comes from the job's
// SSE stream (read with fetch, so the key travels in a header): metric records, events, the job on a change of status and its
// progress as it moves; the stream replays the job's history, so reconnecting loses nothing.

import { Fragment, useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Link, useParams } from "react-router-dom";
import {
  ApiError,
  FINISHED,
  type Checkpoint,
  type Client,
  type Job,
  type JobEvent,
  type MetricRecord,
  type Progress,
} from "../api";
import { useClient, useOnError } from "../auth";
import { Chart, type Marker } from "../components/Chart";
import { EvalsPanel, ForgettingLine } from "../components/Evals";
import { CopyButton, Empty, ErrorNote, Loading, ProgressBar, StatusBadge } from "../components/ui";
import { startDownload } from "../lib/download";
import {
  formatCount,
  formatEta,
  formatHardware,
  formatIntegrations,
  formatLoss,
  formatLr,
  formatMethod,
  formatSchedule,
  formatTime,
} from "../lib/format";
import { transitionStep } from "../lib/plan";
import { tryItQuery } from "../lib/playground";
import { useItSnippet } from "../lib/snippet";
import { alignSeries, detectSpike, mergeRecords, smoothed } from "../lib/series";

const COLORS = {
  target: "#1c7ed6",
  generic: "#f08c00",
  lr: "#7048e8",
  spike: "#e03131",
  stage: "#868e96",
};

/** Job states in which the worker may still produce data. */
const isLive = (job: Job | null) =>
  !!job && !FINISHED.includes(job.status) && job.status !== "paused";

/** The names of the job's files (id -> filename; null: deleted since), fetched once per job. */
function useFileNames(client: Client, job: Job | null): Record<string, string | null> {
  const [names, setNames] = useState<Record<string, string | null>>({});
  const dataset = job?.replay?.dataset;
  const ids = [
    job?.training_file,
    job?.validation_file,
    ...(Array.isArray(dataset) ? dataset : [dataset]),
  ].filter((id): id is string => !!id && id.startsWith("file-"));
  const key = ids.join(",");
  useEffect(() => {
    let alive = true;
    Promise.all(
      ids.map((id) =>
        client.file(id).then(
          (f) => [id, f.filename] as const,
          (err) => [id, err instanceof ApiError && err.status === 404 ? null : id] as const,
        ),
      ),
    ).then((pairs) => alive && setNames(Object.fromEntries(pairs)));
    return () => {
      alive = false;
    };
    // `ids` is rebuilt every render; `key` says when it changed
  }, [client, key]);
  return names;
}

/** "gsm8k.jsonl (file-…)"; a deleted file by its id; a corpus by its name. */
function FileName({ id, names }: { id: string; names: Record<string, string | null> }) {
  if (!id.startsWith("file-")) return <span>corpus <span className="mono">{id}</span></span>;
  const name = names[id];
  return (
    <span>
      {name ?? (name === null ? <em>deleted file</em> : "…")} <span className="mono muted small">{id}</span>
    </span>
  );
}

export function JobDetailPage() {
  const { jobId = "" } = useParams();
  const client = useClient();
  const onError = useOnError();
  const [job, setJob] = useState<Job | null>(null);
  const [records, setRecords] = useState<MetricRecord[]>([]);
  const [events, setEvents] = useState<JobEvent[]>([]);
  const [checkpoints, setCheckpoints] = useState<Checkpoint[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [connected, setConnected] = useState(false);
  const [smoothing, setSmoothing] = useState(0);
  const [logLoss, setLogLoss] = useState(false);
  const fileNames = useFileNames(client, job);

  // the tab names the job, and its state
  const title = job ? `${job.suffix ? `${job.suffix} · ` : ""}${job.id} (${job.status.replace(/_/g, " ")})` : jobId;
  useEffect(() => {
    document.title = `${title} · ReplayFT`;
  }, [title]);
  useEffect(() => () => void (document.title = "ReplayFT"), []);

  const loadAll = useCallback(async () => {
    try {
      const [j, m, e, c] = await Promise.all([
        client.job(jobId),
        client.metrics(jobId),
        client.events(jobId, 200),
        client.checkpoints(jobId),
      ]);
      setJob(j);
      setRecords((old) => mergeRecords(old, m.data));
      setEvents(e.data);
      setCheckpoints(c.data);
      setError(null);
    } catch (err) {
      setError(onError(err));
    }
  }, [client, jobId, onError]);

  useEffect(() => {
    setJob(null);
    setRecords([]);
    setEvents([]);
    setCheckpoints([]);
    loadAll();
  }, [loadAll]);

  // live updates while the job can still change; records are applied in batches, so a fast run
  // re-renders a few times a second, not once per step
  const live = isLive(job);
  const pending = useRef<MetricRecord[]>([]);
  // where the stream picks up: one step of overlap, as a step's eval row is written just after
  // its train row (merging drops the duplicates)
  const resumeFrom = useRef<{ sinceStep?: number; afterEvent?: string }>({});
  resumeFrom.current = {
    sinceStep: records.length ? Math.max(0, records[records.length - 1].step - 1) : undefined,
    afterEvent: events[0]?.id,
  };
  useEffect(() => {
    if (!live) return;
    const abort = new AbortController();
    const flush = setInterval(() => {
      if (pending.current.length) {
        const batch = pending.current;
        pending.current = [];
        setRecords((old) => mergeRecords(old, batch));
      }
    }, 400);
    let refreshCheckpoints: ReturnType<typeof setTimeout> | undefined;
    const on = (event: string, data: unknown) => {
      if (event === "metrics") pending.current.push(data as MetricRecord);
      else if (event === "job") setJob(data as Job);
      else if (event === "progress") setJob((j) => (j ? { ...j, progress: data as Progress } : j));
      else if (event === "event") {
        const ev = data as JobEvent;
        setEvents((old) => (old.some((e) => e.id === ev.id) ? old : [ev, ...old]));
        if (/checkpoint/i.test(ev.message)) {
          clearTimeout(refreshCheckpoints);
          refreshCheckpoints = setTimeout(
            () => client.checkpoints(jobId).then((c) => setCheckpoints(c.data), () => undefined),
            300,
          );
        }
      }
    };
    (async () => {
      while (!abort.signal.aborted) {
        try {
          setConnected(true);
          await client.stream(jobId, on, abort.signal, resumeFrom.current);
        } catch (err) {
          if (abort.signal.aborted) return;
          onError(err);
        }
        setConnected(false);
        if (abort.signal.aborted) return;
        await loadAll(); // the stream ended: the job finished or paused, or the network broke
        await new Promise((r) => setTimeout(r, 2000));
      }
    })();
    return () => {
      abort.abort();
      clearInterval(flush);
      clearTimeout(refreshCheckpoints);
      setConnected(false);
      // the job's last records may have come with the status change that ended the stream
      const rest = pending.current;
      pending.current = [];
      if (rest.length) setRecords((old) => mergeRecords(old, rest));
    };
  }, [live, client, jobId, loadAll, onError]);

  // when the job stops (finished or paused), read everything once more: the summary, the
  // final checkpoint and the last events are written as it ends
  const wasLive = useRef(false);
  useEffect(() => {
    if (wasLive.current && !live) loadAll();
    wasLive.current = live;
  }, [live, loadAll]);

  const lossData = useMemo(
    () =>
      smoothed(
        alignSeries(records.filter((r) => r.type === "train"), ["train_loss_target", "train_loss_generic"]),
        smoothing,
      ),
    [records, smoothing],
  );
  const valData = useMemo(
    () => alignSeries(records.filter((r) => r.type === "eval"), ["val_loss_target", "val_loss_generic"]),
    [records],
  );
  const lrData = useMemo(() => alignSeries(records.filter((r) => r.type === "train"), ["lr"]), [records]);
  const spike = job?.summary?.loss_spike ?? detectSpike(records);
  const transition = job?.replay?.transition_step != null ? transitionStep({ transition_step: job.replay.transition_step }) : null;
  const markers: Marker[] = [];
  if (transition) markers.push({ x: transition, label: "stage 2", color: COLORS.stage });
  if (spike && spike.height > 0)
    markers.push({ x: spike.peak_step, label: `spike +${spike.height.toFixed(3)}`, color: COLORS.spike });

  async function act(action: "cancel" | "pause" | "resume") {
    if (action === "cancel" && !window.confirm(`Cancel ${jobId}?`)) return;
    setBusy(action);
    try {
      setJob(await client.control(jobId, action));
      setActionError(null);
      client.events(jobId, 200).then((e) => setEvents(e.data), () => undefined);
    } catch (err) {
      setActionError(onError(err));
    } finally {
      setBusy(null);
    }
  }

  // the browser's own download of a signed link: streamed to disk with its progress, whatever
  // the size; `id` (a checkpoint's or a result file's) marks the button that is busy
  async function downloadVia(id: string, link: () => Promise<{ url: string }>) {
    setBusy(`download-${id}`);
    try {
      startDownload((await link()).url);
      setActionError(null);
    } catch (err) {
      setActionError(onError(err));
    } finally {
      setBusy(null);
    }
  }

  if (error && !job)
    return (
      <section>
        <p className="crumbs"><Link to="/jobs">Jobs</Link> / <span className="mono">{jobId}</span></p>
        <ErrorNote message={error} onRetry={loadAll} />
        <p><Link to="/jobs">Back to all jobs</Link></p>
      </section>
    );
  if (!job) return <Loading what={`job ${jobId}`} />;

  const { step = 0, total_steps, stage, eta_seconds, tokens_seen } = job.progress;
  const canCancel = !FINISHED.includes(job.status);
  // a running job's pause waits for its next checkpoint: say so at once, and do not offer it twice
  const pausing = job.pausing || busy === "pause";
  const canPause = (job.status === "queued" || job.status === "running") && !pausing;
  const canResume = job.status === "paused";
  const hp = job.hyperparameters as Record<string, unknown>;
  const sweepId = job.metadata?.sweep_id; // a sweep's member (api.services.sweeps tags them)
  const dataset = job.replay?.dataset;
  const replayFiles = dataset ? (Array.isArray(dataset) ? dataset : [dataset]) : [];
  const finalCheckpoint = checkpoints.reduce<Checkpoint | null>(
    (best, c) => (best === null || c.step_number > best.step_number ? c : best),
    null,
  );
  const adapterOnly = (hp.adapter as { export?: string } | null)?.export === "adapter";
  const snippet = finalCheckpoint
    ? useItSnippet({ jobId: job.id, step: finalCheckpoint.step_number, adapterOnly })
    : null;

  return (
    <section>
      <p className="crumbs">
        {sweepId ? (
          <>
            <Link to="/sweeps">Sweeps</Link> / <Link className="mono" to={`/sweeps/${sweepId}`} data-testid="job-sweep">{sweepId}</Link>
          </>
        ) : (
          <Link to="/jobs">Jobs</Link>
        )}{" "}
        / <span className="mono">{job.id}</span>
      </p>
      <div className="page-head">
        <h1>
          <span className="mono">{job.id}</span> <StatusBadge status={job.status} />
          {job.pausing && <span className="badge badge-paused" data-testid="pausing">pausing…</span>}
          {job.suffix && <span className="muted small">{job.suffix}</span>}
        </h1>
        <div className="actions" role="group" aria-label="Job controls">
          <Link className="button" to={`/jobs/new?clone=${job.id}`}>
            Clone
          </Link>
          <button type="button" onClick={() => act("pause")} disabled={!canPause || busy !== null}>
            {pausing ? "Pausing…" : "Pause"}
          </button>
          <button type="button" onClick={() => act("resume")} disabled={!canResume || busy !== null}>
            {busy === "resume" ? "Resuming…" : "Resume"}
          </button>
          <button type="button" className="danger" onClick={() => act("cancel")} disabled={!canCancel || busy !== null}>
            {busy === "cancel" ? "Cancelling…" : "Cancel"}
          </button>
        </div>
      </div>
      {actionError && <ErrorNote message={actionError} />}
      {error && <ErrorNote message={error} onRetry={loadAll} />}
      {job.error && <ErrorNote message={`Job failed: ${job.error.message}`} />}
      <div className="card">
        <ProgressBar value={total_steps ? step / total_steps : 0} label="Job progress" />
        <dl className="facts">
          <div><dt>Step</dt><dd data-testid="job-step">{step} / {total_steps ?? "?"}</dd></div>
          <div><dt>Stage</dt><dd>{stage ?? "—"}</dd></div>
          <div><dt>ETA</dt><dd>{job.status === "running" ? formatEta(eta_seconds) : "—"}</dd></div>
          <div><dt>Tokens seen</dt><dd>{formatCount(tokens_seen)}</dd></div>
          <div><dt>Replay r</dt><dd>{job.replay?.fraction ?? "none"}</dd></div>
          <div><dt>Method</dt><dd data-testid="job-method">{formatMethod(job.hyperparameters.adapter)}</dd></div>
          <div><dt>Hardware</dt><dd data-testid="job-hardware">{formatHardware(job.hyperparameters.distributed)}</dd></div>
          <div><dt>Final val loss (target)</dt><dd data-testid="final-val-loss">{formatLoss(job.summary?.final_val_loss_target)}</dd></div>
          {live && <div><dt>Live</dt><dd>{connected ? "streaming" : "connecting…"}</dd></div>}
        </dl>
        {job.pausing && (
          <p className="muted small">Pausing: the worker saves a checkpoint at its next step, then the job is paused.</p>
        )}
        <ForgettingLine records={records} summary={job.summary} />
        {spike && (
          <p className="muted small" data-testid="spike">
            {spike.height > 0 ? (
              <>
                Initial loss spike: target loss {formatLoss(spike.initial_loss)} → peak{" "}
                {formatLoss(spike.peak_loss)} at step {spike.peak_step} (+{spike.height.toFixed(4)}),{" "}
                {spike.recovered_step !== null ? `back at step ${spike.recovered_step}` : "not recovered yet"}.
              </>
            ) : (
              <>No initial loss spike: the target loss fell from its first value ({formatLoss(spike.initial_loss)}).</>
            )}
          </p>
        )}
      </div>
      <div className="two-col">
        <div className="card" data-testid="job-settings">
          <h2>Run with</h2>
          <dl className="facts settings">
            <div><dt>Training file</dt><dd data-testid="setting-training-file"><FileName id={job.training_file} names={fileNames} /></dd></div>
            <div>
              <dt>Validation</dt>
              <dd data-testid="setting-validation-file">
                {job.validation_file ? <FileName id={job.validation_file} names={fileNames} /> : "held out from the training file"}
              </dd>
            </div>
            <div>
              <dt>Replay data</dt>
              <dd data-testid="setting-replay">
                {replayFiles.length === 0 ? "none" : replayFiles.map((id) => <div key={id}><FileName id={id} names={fileNames} /></div>)}
              </dd>
            </div>
            {job.replay && (
              <div>
                <dt>r · a · d</dt>
                <dd data-testid="setting-rad">
                  {[job.replay.fraction, job.replay.target_stage2_allocation, job.replay.stage2_duration]
                    .map((v) => (typeof v === "number" ? +v.toFixed(4) : "—"))
                    .join(" · ")}
                </dd>
              </div>
            )}
            <div><dt>Epochs</dt><dd data-testid="setting-epochs">{String(hp.n_epochs ?? "—")}</dd></div>
            <div><dt>Peak LR</dt><dd data-testid="setting-lr">{typeof hp.learning_rate === "number" ? formatLr(hp.learning_rate) : "—"}</dd></div>
            <div><dt>Schedule</dt><dd data-testid="setting-schedule">{formatSchedule(hp.lr_scheduler)}</dd></div>
            <div><dt>Batch size</dt><dd data-testid="setting-batch-size">{String(hp.batch_size ?? "—")}</dd></div>
            <div><dt>Sequence length</dt><dd data-testid="setting-seq-len">{String(hp.seq_len ?? "—")}</dd></div>
            <div><dt>Seed</dt><dd data-testid="setting-seed">{job.seed}</dd></div>
            <div><dt>Priority</dt><dd data-testid="setting-priority">{job.priority ?? 0}</dd></div>
            <div><dt>Suffix</dt><dd data-testid="setting-suffix">{job.suffix ?? "—"}</dd></div>
            <div>
              <dt>Trackers</dt>
              <dd data-testid="setting-integrations">
                {formatIntegrations(job.integrations)}
                {job.result_files.length > 0 && (
                  <span className="muted small">
                    {" "}
                    · result files{" "}
                    {job.result_files.map((id, i) => (
                      <Fragment key={id}>
                        {i > 0 && ", "}
                        <button type="button" className="link-button small" disabled={busy !== null}
                          onClick={() => downloadVia(id, () => client.fileLink(id))}
                          aria-label={`Download result file ${id}`}>
                          {id}
                        </button>
                      </Fragment>
                    ))}
                  </span>
                )}
              </dd>
            </div>
          </dl>
        </div>
        <div className="card" data-testid="job-model">
          <h2>Model</h2>
          <p className="small">
            <span className="muted">Base</span> <span className="mono">{job.model}</span>
          </p>
          {job.fine_tuned_model ? (
            <>
              <p className="model-id">
                <span className="muted small">Fine-tuned</span>{" "}
                <code data-testid="fine-tuned-model">{job.fine_tuned_model}</code>{" "}
                <CopyButton text={job.fine_tuned_model} label="Copy model id" />{" "}
                <Link className="button small" to={`/playground?${tryItQuery(job, job.fine_tuned_model)}`}>
                  Try it
                </Link>
              </p>
              <p className="small">
                Train further from it:{" "}
                <Link to={`/jobs/new?model=${encodeURIComponent(job.fine_tuned_model)}`}>new job on this model</Link>
                {snippet && ", or use it from the final checkpoint:"}
              </p>
              {snippet && (
                <div className="snippet">
                  <pre data-testid="use-it">{snippet}</pre>
                  <CopyButton text={snippet} label="Copy the code" />
                </div>
              )}
            </>
          ) : (
            <p className="muted small">The fine-tuned model appears here when the job succeeds.</p>
          )}
        </div>
      </div>
      <div className="filters chart-options" role="group" aria-label="Chart options">
        <label>
          Smoothing{" "}
          <select value={smoothing} onChange={(e) => setSmoothing(Number(e.target.value))} aria-label="Smoothing">
            <option value={0}>none</option>
            <option value={0.6}>light</option>
            <option value={0.9}>strong</option>
          </select>
        </label>
        <label>
          <input type="checkbox" checked={logLoss} onChange={(e) => setLogLoss(e.target.checked)} /> log-scale loss
        </label>
      </div>
      <div className="charts">
        <Chart
          title="Training loss"
          testId="chart-train-loss"
          logY={logLoss}
          syncKey={`job-${jobId}`}
          data={lossData}
          yLabel="loss"
          markers={markers}
          series={[
            { label: "target", color: COLORS.target },
            { label: "generic", color: COLORS.generic },
          ]}
        />
        <Chart
          title="Validation loss"
          testId="chart-val-loss"
          logY={logLoss}
          syncKey={`job-${jobId}`}
          data={valData}
          yLabel="loss"
          markers={markers}
          series={[
            { label: "val target", color: COLORS.target, width: 2 },
            { label: "val generic", color: COLORS.generic, width: 2 },
          ]}
        />
        <Chart
          title="Learning rate"
          testId="chart-lr"
          syncKey={`job-${jobId}`}
          data={lrData}
          yLabel="lr"
          formatY={formatLr}
          markers={transition ? [markers[0]] : []}
          series={[{ label: "lr", color: COLORS.lr }]}
          height={180}
        />
      </div>
      <EvalsPanel records={records} summary={job.summary} requested={job.evals} syncKey={`job-${jobId}`} />
      <div className="two-col">
        <div className="card">
          <h2>Checkpoints</h2>
          {checkpoints.length === 0 ? (
            <Empty>No checkpoints yet.</Empty>
          ) : (
            <table className="table" aria-label="Checkpoints">
              <thead>
                <tr>
                  <th className="num">Step</th>
                  <th className="num">Train loss</th>
                  <th className="num">Val target</th>
                  <th className="num">Val generic</th>
                  <th />
                </tr>
              </thead>
              <tbody>
                {checkpoints.map((c) => (
                  <tr key={c.id} data-checkpoint-id={c.id}>
                    <td className="num">{c.step_number}</td>
                    <td className="num">{formatLoss(c.metrics.train_loss)}</td>
                    <td className="num">{formatLoss(c.metrics.val_loss_target)}</td>
                    <td className="num">{formatLoss(c.metrics.val_loss_generic)}</td>
                    <td className="nowrap">
                      <button type="button" className="small" disabled={busy !== null} onClick={() => downloadVia(c.id, () => client.checkpointLink(jobId, c.id))}>
                        {busy === `download-${c.id}` ? "Downloading…" : "Download"}
                      </button>{" "}
                      <Link className="button small" to={`/playground?${tryItQuery(job, c.fine_tuned_model_checkpoint)}`}
                        aria-label={`Try the step ${c.step_number} checkpoint`}>
                        Try
                      </Link>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <div className="card">
          <h2>Events</h2>
          {events.length === 0 ? (
            <Empty>No events yet.</Empty>
          ) : (
            <ol className="events" aria-label="Events" data-testid="events">
              {events.map((e) => {
                // a checkpoint's event offers it while it exists: older ones are pruned
                const saved = /^Checkpoint saved/.test(e.message) ? (e.data?.step as number | undefined) : undefined;
                const ckpt = saved === undefined ? undefined : checkpoints.find((c) => c.step_number === saved);
                return (
                  <li key={e.id} className={`event event-${e.level}`}>
                    <time>{formatTime(e.created_at)}</time> <span>{e.message}</span>
                    {saved !== undefined &&
                      (ckpt ? (
                        <>
                          {" "}
                          <button type="button" className="link-button small" disabled={busy !== null}
                            onClick={() => downloadVia(ckpt.id, () => client.checkpointLink(jobId, ckpt.id))} aria-label={`Download the step ${saved} checkpoint`}>
                            download
                          </button>
                        </>
                      ) : (
                        // pruning removes older ones only: a newer step is not listed yet
                        finalCheckpoint &&
                        saved < finalCheckpoint.step_number && (
                          <span className="muted small" data-removed-step={saved}> (removed)</span>
                        )
                      ))}
                  </li>
                );
              })}
            </ol>
          )}
        </div>
      </div>
    </section>
  );
}
