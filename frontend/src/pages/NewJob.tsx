// New job: the form, and before submitting, the resolved plan as a picture (POST
// /v1/fine_tuning/plan: the same schedule `replayft plan` prints) with an estimated run time.
// API field errors are shown next to their field, in the form's words; while the input is
// invalid the last good plan stays, marked as such. `?clone=<job id>` fills the form with what
// that job ran with; `?model=<id>` picks the base model (a fine-tuned one, to train further).
// At /sweeps/new the same form makes a replay sweep: lists of replay fractions and reference
// subsets instead of one r, and before submitting the members it would launch and their steps
// (POST /v1/sweeps/plan).

import { useEffect, useMemo, useState, type FormEvent, type ReactNode } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";
import type { Client, FileObject, Plan } from "../api";
import { useClient, useOnError } from "../auth";
import { Chart } from "../components/Chart";
import { ErrorNote, Loading } from "../components/ui";
import { usePolled } from "../hooks";
import { formErrors, type FormErrors } from "../lib/errors";
import { formatBytes, formatCount, formatEta, formatLr, formatPercent, formatTime } from "../lib/format";
import {
  INITIAL_FORM,
  LABELS,
  formFromJob,
  formMessage,
  inputForParam,
  toRequest,
  withAdapterType,
  type JobForm,
} from "../lib/jobform";
import { estimatedSeconds, lrCurve, mixtureBars, tokensPerSecond, transitionStep } from "../lib/plan";
import { parseList, sweepRequest, sweepsApi, type SweepPlan } from "../sweeps/api";

type FormField = keyof JobForm;

const NO_ERRORS: FormErrors<FormField> = { fields: {}, general: null };

const METHOD_HINTS: Record<JobForm["adapter_type"], string> = {
  full: "Every weight is trained.",
  lora: "Low-rank adapters on a frozen base.",
  qlora: "Adapters on a 4-bit base; needs a CUDA worker with bitsandbytes.",
};

/** A file as a choice: files of the same name told apart by size and upload time. */
const fileChoice = (f: FileObject) =>
  `${f.filename} · ${formatBytes(f.bytes)} · ${formatTime(f.created_at)} (${f.id})`;

function Field(props: {
  id: FormField;
  error?: string;
  hint?: string;
  children: ReactNode;
}) {
  return (
    <div className={`field${props.error ? " has-error" : ""}`}>
      <label htmlFor={`f-${props.id}`}>{LABELS[props.id]}</label>
      {props.children}
      {props.hint && !props.error && <p className="hint">{props.hint}</p>}
      {props.error && (
        <p className="field-error" id={`f-${props.id}-error`} role="alert" data-field-error={props.id}>
          {props.error}
        </p>
      )}
    </div>
  );
}

export function NewJobPage({ sweep = false }: { sweep?: boolean } = {}) {
  const client = useClient();
  const onError = useOnError();
  const navigate = useNavigate();
  const [params] = useSearchParams();
  const cloneOf = params.get("clone");
  const [form, setForm] = useState<JobForm>(() => ({ ...INITIAL_FORM, model: params.get("model") ?? INITIAL_FORM.model }));
  const [cloneError, setCloneError] = useState<string | null>(null);
  // the last plan the API resolved, and whether the form has changed into an invalid one since
  const [plan, setPlan] = useState<Plan | null>(null);
  const [planStale, setPlanStale] = useState(false);
  const [planning, setPlanning] = useState(false);
  const [errors, setErrors] = useState<FormErrors<FormField>>(NO_ERRORS);
  const [submitting, setSubmitting] = useState(false);
  const choices = usePolled(
    async () => {
      const [models, files] = await Promise.all([client.models(), client.files()]);
      return { models: models.data, files: files.data.filter((f) => f.status === "processed") };
    },
    [client],
  );
  const targets = choices.data?.files.filter((f) => f.purpose === "fine-tune") ?? [];
  const replays = choices.data?.files.filter((f) => f.purpose === "replay") ?? [];
  const body = useMemo(() => toRequest(form), [form]);
  const [fractionsText, setFractionsText] = useState("0, 0.25, 0.5");
  const [subsetsText, setSubsetsText] = useState("0.25, 0.5, 1");
  const [sweepPlan, setSweepPlan] = useState<SweepPlan | null>(null);
  const sweepBody = useMemo(() => {
    const fractions = parseList(fractionsText);
    const subsets = parseList(subsetsText);
    return fractions && subsets ? sweepRequest(body as Record<string, unknown>, fractions, subsets) : null;
  }, [body, fractionsText, subsetsText]);
  const speed = useReferenceSpeed(client, form.model);

  useEffect(() => {
    if (!cloneOf) return;
    let alive = true;
    client.job(cloneOf).then(
      (job) => alive && setForm(formFromJob(job)),
      (e) => alive && setCloneError(`Cannot clone ${cloneOf}: ${onError(e)}`),
    );
    return () => {
      alive = false;
    };
  }, [client, cloneOf, onError]);

  // the plan follows the form, a moment after the last change
  useEffect(() => {
    if (!form.training_file) {
      setPlan(null);
      setPlanStale(false);
      return;
    }
    const abort = new AbortController();
    const timer = setTimeout(async () => {
      setPlanning(true);
      try {
        if (sweep) {
          if (!sweepBody) throw new Error("Replay fractions and reference subsets: numbers separated by commas.");
          setSweepPlan(await sweepsApi(client).plan(sweepBody, abort.signal));
        }
        setPlan(await client.plan(body, abort.signal));
        setPlanStale(false);
        setErrors(NO_ERRORS);
      } catch (e) {
        if ((e as Error).name === "AbortError") return;
        onError(e);
        setPlanStale(true);
        setErrors(formErrors(e, inputForParam, formMessage));
      } finally {
        if (!abort.signal.aborted) setPlanning(false);
      }
    }, 500);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
  }, [client, body, form.training_file, onError, sweep, sweepBody]);

  const set = (name: keyof JobForm) => (e: { target: { value: string } }) =>
    setForm((f) => ({ ...f, [name]: e.target.value }));
  const err = (name: FormField) => errors.fields[name];
  const described = (name: FormField) =>
    err(name) ? { "aria-invalid": true, "aria-describedby": `f-${name}-error` } : {};

  async function submit(e: FormEvent) {
    e.preventDefault();
    setSubmitting(true);
    try {
      if (sweep) {
        if (!sweepBody) throw new Error("Replay fractions and reference subsets: numbers separated by commas.");
        const created = await sweepsApi(client).create(sweepBody);
        navigate(`/sweeps/${created.id}`);
        return;
      }
      const job = await client.createJob(body);
      navigate(`/jobs/${job.id}`);
    } catch (e) {
      onError(e);
      setErrors(formErrors(e, inputForParam, formMessage));
    } finally {
      setSubmitting(false);
    }
  }

  if (choices.loading && !choices.data) return <Loading what="models and files" />;
  if (choices.error && !choices.data) return <ErrorNote message={choices.error} onRetry={choices.reload} />;

  return (
    <section>
      <h1>{sweep ? "New replay sweep" : "New fine-tuning job"}</h1>
      {cloneOf && !cloneError && (
        <p className="muted" data-testid="clone-of">
          Filled in from <Link to={`/jobs/${cloneOf}`} className="mono">{cloneOf}</Link>: change what you like, then create.
        </p>
      )}
      {cloneError && <ErrorNote message={cloneError} />}
      <div className="newjob">
        <form className="card form" onSubmit={submit} aria-label={sweep ? "New sweep" : "New job"} noValidate>
          <Field id="model" error={err("model")}>
            <select id="f-model" value={form.model} onChange={set("model")} {...described("model")}>
              {(choices.data?.models ?? []).map((m) => (
                <option key={m.id} value={m.id}>
                  {m.id}
                </option>
              ))}
              {choices.data && !choices.data.models.some((m) => m.id === form.model) && (
                <option value={form.model}>{form.model}</option>
              )}
            </select>
          </Field>
          <Field id="training_file" error={err("training_file")}
            hint={targets.length ? undefined : "Upload a fine-tune file on the Files page first."}>
            <select id="f-training_file" value={form.training_file} onChange={set("training_file")} {...described("training_file")}>
              <option value="">Choose a file…</option>
              {targets.map((f) => (
                <option key={f.id} value={f.id}>
                  {fileChoice(f)}
                </option>
              ))}
            </select>
          </Field>
          <Field id="validation_file" error={err("validation_file")}
            hint="Without one, a share of the target documents is held out.">
            <select id="f-validation_file" value={form.validation_file} onChange={set("validation_file")} {...described("validation_file")}>
              <option value="">None</option>
              {targets.map((f) => (
                <option key={f.id} value={f.id}>
                  {fileChoice(f)}
                </option>
              ))}
            </select>
          </Field>
          <fieldset>
            <legend>Generic replay</legend>
            <Field id="replay_dataset" error={err("replay_dataset")}>
              <select id="f-replay_dataset" value={form.replay_dataset} onChange={set("replay_dataset")} {...described("replay_dataset")}>
                <option value="">No replay</option>
                {replays.map((f) => (
                  <option key={f.id} value={f.id}>
                    {fileChoice(f)}
                  </option>
                ))}
              </select>
            </Field>
            <div className="row">
              <Field id="fraction" error={err("fraction")} hint="Generic share of stage-2 batches.">
                <input id="f-fraction" type="number" step="0.05" min="0" max="0.99" value={form.fraction}
                  onChange={set("fraction")} disabled={!form.replay_dataset} {...described("fraction")} />
              </Field>
              <Field id="target_stage2_allocation" error={err("target_stage2_allocation")}
                hint="Share of the target data placed in stage 2.">
                <input id="f-target_stage2_allocation" type="number" step="0.05" min="0" max="1"
                  value={form.target_stage2_allocation} onChange={set("target_stage2_allocation")}
                  disabled={!form.replay_dataset} {...described("target_stage2_allocation")} />
              </Field>
              <Field id="stage2_duration" error={err("stage2_duration")}
                hint="Stage 2's share of all steps; needed when a < 1.">
                <input id="f-stage2_duration" type="number" step="0.05" min="0" max="1" placeholder="from r, a"
                  value={form.stage2_duration} onChange={set("stage2_duration")}
                  disabled={!form.replay_dataset} {...described("stage2_duration")} />
              </Field>
            </div>
          </fieldset>
          {sweep && (
            <fieldset>
              <legend>Sweep</legend>
              <div className="row">
                <div className="field">
                  <label htmlFor="f-replay_fractions">Replay fractions r</label>
                  <input id="f-replay_fractions" type="text" value={fractionsText}
                    onChange={(e) => setFractionsText(e.target.value)} />
                  <p className="hint">Each r is one configuration on all the target data.</p>
                </div>
                <div className="field">
                  <label htmlFor="f-reference_subsets">Reference subsets</label>
                  <input id="f-reference_subsets" type="text" value={subsetsText}
                    onChange={(e) => setSubsetsText(e.target.value)} />
                  <p className="hint">Shares of the target data for the no-replay reference runs (1 is always included).</p>
                </div>
              </div>
            </fieldset>
          )}
          <fieldset>
            <legend>Training method</legend>
            <Field id="adapter_type" error={err("adapter_type")} hint={METHOD_HINTS[form.adapter_type]}>
              <select id="f-adapter_type" value={form.adapter_type} {...described("adapter_type")}
                onChange={(e) => setForm((f) => withAdapterType(f, e.target.value as JobForm["adapter_type"]))}>
                <option value="full">Full fine-tuning</option>
                <option value="lora">LoRA</option>
                <option value="qlora">QLoRA</option>
              </select>
            </Field>
            {form.adapter_type !== "full" && (
              <div className="row">
                <Field id="adapter_r" error={err("adapter_r")}>
                  <input id="f-adapter_r" type="number" min="1" step="1" placeholder="16" value={form.adapter_r}
                    onChange={set("adapter_r")} {...described("adapter_r")} />
                </Field>
                <Field id="adapter_alpha" error={err("adapter_alpha")} hint="Updates scale by alpha / r.">
                  <input id="f-adapter_alpha" type="number" min="0" placeholder="32" value={form.adapter_alpha}
                    onChange={set("adapter_alpha")} {...described("adapter_alpha")} />
                </Field>
                <Field id="adapter_dropout" error={err("adapter_dropout")}>
                  <input id="f-adapter_dropout" type="number" min="0" max="0.95" step="0.05" placeholder="0"
                    value={form.adapter_dropout} onChange={set("adapter_dropout")} {...described("adapter_dropout")} />
                </Field>
                <Field id="adapter_target_modules" error={err("adapter_target_modules")}
                  hint="Layer names, comma-separated (q_proj, v_proj), or all-linear.">
                  <input id="f-adapter_target_modules" type="text" placeholder="all-linear" spellCheck={false}
                    value={form.adapter_target_modules} onChange={set("adapter_target_modules")}
                    {...described("adapter_target_modules")} />
                </Field>
                <Field id="adapter_export" error={err("adapter_export")}
                  hint={form.adapter_type === "qlora" ? "QLoRA saves the adapter only." : "Either can be the model of a next job."}>
                  <select id="f-adapter_export" value={form.adapter_export} onChange={set("adapter_export")} {...described("adapter_export")}>
                    <option value="merged" disabled={form.adapter_type === "qlora"}>merged model</option>
                    <option value="adapter">adapter only</option>
                  </select>
                </Field>
              </div>
            )}
          </fieldset>
          <fieldset>
            <legend>Training</legend>
            <div className="row">
              <Field id="n_epochs" error={err("n_epochs")}>
                <input id="f-n_epochs" type="number" step="0.5" min="0" placeholder="auto" value={form.n_epochs}
                  onChange={set("n_epochs")} {...described("n_epochs")} />
              </Field>
              <Field id="total_steps" error={err("total_steps")} hint="Empty: from the epochs.">
                <input id="f-total_steps" type="number" step="1" min="1" placeholder="from epochs" value={form.total_steps}
                  onChange={set("total_steps")} {...described("total_steps")} />
              </Field>
              <Field id="learning_rate" error={err("learning_rate")}>
                <input id="f-learning_rate" type="text" inputMode="decimal" placeholder="3e-4" value={form.learning_rate}
                  onChange={set("learning_rate")} {...described("learning_rate")} />
              </Field>
              <Field id="lr_scheduler" error={err("lr_scheduler")}>
                <select id="f-lr_scheduler" value={form.lr_scheduler} onChange={set("lr_scheduler")} {...described("lr_scheduler")}>
                  <option value="wsd">warmup-stable-decay</option>
                  <option value="cosine">cosine</option>
                  <option value="linear">linear</option>
                  <option value="constant">constant</option>
                </select>
              </Field>
            </div>
            <div className="row">
              <Field id="batch_size" error={err("batch_size")}>
                <input id="f-batch_size" type="number" min="1" placeholder="auto" value={form.batch_size}
                  onChange={set("batch_size")} {...described("batch_size")} />
              </Field>
              <Field id="seq_len" error={err("seq_len")}>
                <input id="f-seq_len" type="number" min="8" placeholder="auto" value={form.seq_len}
                  onChange={set("seq_len")} {...described("seq_len")} />
              </Field>
              <Field id="suffix" error={err("suffix")}>
                <input id="f-suffix" type="text" maxLength={64} value={form.suffix} onChange={set("suffix")} {...described("suffix")} />
              </Field>
              <Field id="seed" error={err("seed")}>
                <input id="f-seed" type="number" step="1" min="0" placeholder="0" value={form.seed} onChange={set("seed")} {...described("seed")} />
              </Field>
            </div>
          </fieldset>
          <fieldset>
            <legend>Hardware</legend>
            <div className="row">
              <Field id="gpus_per_node" error={err("gpus_per_node")} hint="One process each.">
                <input id="f-gpus_per_node" type="number" min="1" step="1" placeholder="1" value={form.gpus_per_node}
                  onChange={set("gpus_per_node")} {...described("gpus_per_node")} />
              </Field>
              <Field id="nodes" error={err("nodes")} hint="Each is a training worker.">
                <input id="f-nodes" type="number" min="1" step="1" placeholder="1" value={form.nodes}
                  onChange={set("nodes")} {...described("nodes")} />
              </Field>
              <Field id="strategy" error={err("strategy")}
                hint={form.strategy === "fsdp" ? "Shards the model (large models)." : "Replicates the model."}>
                <select id="f-strategy" value={form.strategy} onChange={set("strategy")} {...described("strategy")}>
                  <option value="ddp">DDP</option>
                  <option value="fsdp">FSDP</option>
                </select>
              </Field>
            </div>
          </fieldset>
          {errors.general && <ErrorNote message={errors.general} />}
          <button type="submit" className="primary" disabled={submitting || !form.training_file}>
            {submitting ? "Creating…" : sweep ? "Create sweep" : "Create job"}
          </button>
        </form>
        <div className={`card plan${plan && planStale ? " stale" : ""}`} aria-live="polite" data-testid="plan">
          <h2>Plan {planning && <span className="muted small">updating…</span>}</h2>
          {!form.training_file && <p className="muted">Choose a training file to see the schedule.</p>}
          {plan && planStale && (
            <p className="warning" data-testid="plan-stale">
              The form has a problem (see the field marked in red): this is the last valid plan.
            </p>
          )}
          {sweep && sweepPlan && (
            <p data-testid="sweep-plan">
              <strong>{sweepPlan.member_count} jobs</strong>
              {sweepPlan.total_estimated_steps !== null &&
                `, about ${sweepPlan.total_estimated_steps} steps in all`}
              {" "}({sweepPlan.members.map((m) => `${m.roles.join("+")} r=${m.replay_fraction} subset=${m.target_subset_fraction}: ${m.estimated_steps ?? "?"}`).join("; ")}).
              The plan below is one configuration's.
            </p>
          )}
          {plan && (
            <div className="plan-body">
              <PlanPicture plan={plan} speed={speed} />
            </div>
          )}
        </div>
      </div>
    </section>
  );
}

/** Training throughput measured on this model: the median tokens/s of the team's latest
 * succeeded job on it; null while none has run. */
interface Speed {
  tokensPerSecond: number;
  jobId: string;
}

function useReferenceSpeed(client: Client, model: string): Speed | null {
  const [speed, setSpeed] = useState<Speed | null>(null);
  useEffect(() => {
    let alive = true;
    setSpeed(null);
    (async () => {
      const jobs = await client.jobs({ status: ["succeeded"], limit: 50 });
      const ref = jobs.data.find((j) => j.model === model);
      if (!ref) return;
      const rate = tokensPerSecond((await client.metrics(ref.id, 200)).data);
      if (alive && rate) setSpeed({ tokensPerSecond: rate, jobId: ref.id });
    })().catch(() => undefined); // no estimate is all a failure costs
    return () => {
      alive = false;
    };
  }, [client, model]);
  return speed;
}

export function PlanPicture({ plan, speed = null }: { plan: Plan; speed?: Speed | null }) {
  const bars = mixtureBars(plan);
  const transition = transitionStep(plan);
  const seconds = estimatedSeconds(plan, speed?.tokensPerSecond ?? null);
  return (
    <div>
      <dl className="facts">
        <div><dt>Total steps</dt><dd data-testid="plan-total-steps">{plan.total_steps}</dd></div>
        <div><dt>Target tokens</dt><dd>{formatCount(plan.target_tokens)}</dd></div>
        <div><dt>Generic tokens</dt><dd>{formatCount(plan.generic_tokens)}</dd></div>
        <div><dt>Target epochs</dt><dd>{plan.target_epochs.toFixed(2)}</dd></div>
        <div><dt>Batch × seq</dt><dd>{plan.batch_size} × {plan.seq_len}</dd></div>
        <div><dt>Peak LR</dt><dd data-testid="plan-peak-lr">{formatLr(plan.peak_lr)}</dd></div>
        <div>
          <dt>LR of the last step</dt>
          <dd data-testid="plan-final-lr">{formatLr(plan.lr_curve.lr[plan.lr_curve.lr.length - 1] ?? plan.peak_lr)}</dd>
        </div>
        <div>
          <dt>Estimated run time</dt>
          <dd data-testid="plan-run-time">{seconds === null ? "—" : `≈ ${formatEta(seconds)}`}</dd>
        </div>
      </dl>
      <p className="hint" data-testid="plan-run-time-basis">
        {speed
          ? `Training alone, at ${formatCount(Math.round(speed.tokensPerSecond))} tokens/s: the speed of ${speed.jobId} on this model.`
          : "No finished job on this model to time it by yet."}
      </p>
      <h3>Mixture per stage</h3>
      <div className="mixture" role="img" aria-label="Target and generic share of each stage">
        {bars.map((b) => (
          <div key={b.label} className="mixture-stage" style={{ flexGrow: Math.max(b.width, 0.08) }}>
            <div className="mixture-bar">
              <div className="mix-target" style={{ height: `${b.targetWeight * 100}%` }} />
              <div className="mix-generic" style={{ height: `${b.genericWeight * 100}%` }} />
            </div>
            <div className="mixture-label">
              <strong>{b.label}</strong> steps {b.firstStep}–{b.lastStep}
              <br />
              target {formatPercent(b.targetWeight)} · generic {formatPercent(b.genericWeight)}
              <br />
              <span className="muted">
                {formatCount(b.targetTokens)} / {formatCount(b.genericTokens)} tokens
              </span>
            </div>
          </div>
        ))}
      </div>
      <p className="legend">
        <span className="swatch mix-target" /> target <span className="swatch mix-generic" /> generic
      </p>
      <Chart
        title="Learning rate over steps"
        data={lrCurve(plan)}
        series={[{ label: "lr", color: "#7048e8" }]}
        yLabel="learning rate"
        formatY={formatLr}
        markers={transition ? [{ x: transition, label: "stage 2", color: "#868e96" }] : []}
        height={200}
        testId="plan-lr-chart"
      />
      {plan.warnings.map((w) => (
        <p key={w} className="warning">{w}</p>
      ))}
    </div>
  );
}
