// New job: the form, and before submitting, the resolved plan as a picture (POST
// /v1/fine_tuning/plan: the same schedule `replayft plan` prints). API field errors are shown
// next to their field.

import { useEffect, useMemo, useState, type FormEvent, type ReactNode } from "react";
import { useNavigate } from "react-router-dom";
import type { Plan } from "../api";
import { useClient, useOnError } from "../auth";
import { Chart } from "../components/Chart";
import { ErrorNote, Loading } from "../components/ui";
import { usePolled } from "../hooks";
import { formErrors, type FormErrors } from "../lib/errors";
import { formatCount, formatLr, formatLrTick, formatPercent } from "../lib/format";
import { INITIAL_FORM, inputForParam, toRequest, withAdapterType, type JobForm } from "../lib/jobform";
import { lrCurve, mixtureBars, transitionStep } from "../lib/plan";

type FormField = keyof JobForm;

const NO_ERRORS: FormErrors<FormField> = { fields: {}, general: null };

const METHOD_HINTS: Record<JobForm["adapter_type"], string> = {
  full: "Every weight is trained.",
  lora: "Low-rank adapters on a frozen base.",
  qlora: "Adapters on a 4-bit base; needs a CUDA worker with bitsandbytes.",
};

function Field(props: {
  id: FormField;
  label: string;
  error?: string;
  hint?: string;
  children: ReactNode;
}) {
  return (
    <div className={`field${props.error ? " has-error" : ""}`}>
      <label htmlFor={`f-${props.id}`}>{props.label}</label>
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

export function NewJobPage() {
  const client = useClient();
  const onError = useOnError();
  const navigate = useNavigate();
  const [form, setForm] = useState<JobForm>(INITIAL_FORM);
  const [plan, setPlan] = useState<Plan | null>(null);
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

  // the plan follows the form, a moment after the last change
  useEffect(() => {
    if (!form.training_file) {
      setPlan(null);
      return;
    }
    const abort = new AbortController();
    const timer = setTimeout(async () => {
      setPlanning(true);
      try {
        setPlan(await client.plan(body, abort.signal));
        setErrors(NO_ERRORS);
      } catch (e) {
        if ((e as Error).name === "AbortError") return;
        onError(e);
        setPlan(null);
        setErrors(formErrors(e, inputForParam));
      } finally {
        if (!abort.signal.aborted) setPlanning(false);
      }
    }, 500);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
  }, [client, body, form.training_file, onError]);

  const set = (name: keyof JobForm) => (e: { target: { value: string } }) =>
    setForm((f) => ({ ...f, [name]: e.target.value }));
  const err = (name: FormField) => errors.fields[name];
  const described = (name: FormField) =>
    err(name) ? { "aria-invalid": true, "aria-describedby": `f-${name}-error` } : {};

  async function submit(e: FormEvent) {
    e.preventDefault();
    setSubmitting(true);
    try {
      const job = await client.createJob(body);
      navigate(`/jobs/${job.id}`);
    } catch (e) {
      onError(e);
      setErrors(formErrors(e, inputForParam));
    } finally {
      setSubmitting(false);
    }
  }

  if (choices.loading && !choices.data) return <Loading what="models and files" />;
  if (choices.error && !choices.data) return <ErrorNote message={choices.error} onRetry={choices.reload} />;

  return (
    <section>
      <h1>New fine-tuning job</h1>
      <div className="newjob">
        <form className="card form" onSubmit={submit} aria-label="New job" noValidate>
          <Field id="model" label="Base model" error={err("model")}>
            <select id="f-model" value={form.model} onChange={set("model")} {...described("model")}>
              {(choices.data?.models ?? []).map((m) => (
                <option key={m.id} value={m.id}>
                  {m.id}
                </option>
              ))}
            </select>
          </Field>
          <Field id="training_file" label="Target data (training file)" error={err("training_file")}
            hint={targets.length ? undefined : "Upload a fine-tune file on the Files page first."}>
            <select id="f-training_file" value={form.training_file} onChange={set("training_file")} {...described("training_file")}>
              <option value="">Choose a file…</option>
              {targets.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.filename} ({f.id})
                </option>
              ))}
            </select>
          </Field>
          <Field id="validation_file" label="Validation file (optional)" error={err("validation_file")}
            hint="Without one, a share of the target documents is held out.">
            <select id="f-validation_file" value={form.validation_file} onChange={set("validation_file")} {...described("validation_file")}>
              <option value="">None</option>
              {targets.map((f) => (
                <option key={f.id} value={f.id}>
                  {f.filename} ({f.id})
                </option>
              ))}
            </select>
          </Field>
          <fieldset>
            <legend>Generic replay</legend>
            <Field id="replay_dataset" label="Replay dataset" error={err("replay_dataset")}>
              <select id="f-replay_dataset" value={form.replay_dataset} onChange={set("replay_dataset")} {...described("replay_dataset")}>
                <option value="">No replay</option>
                {replays.map((f) => (
                  <option key={f.id} value={f.id}>
                    {f.filename} ({f.id})
                  </option>
                ))}
              </select>
            </Field>
            <div className="row">
              <Field id="fraction" label="Replay fraction r" error={err("fraction")} hint="Generic share of stage-2 batches.">
                <input id="f-fraction" type="number" step="0.05" min="0" max="0.99" value={form.fraction}
                  onChange={set("fraction")} disabled={!form.replay_dataset} {...described("fraction")} />
              </Field>
              <Field id="target_stage2_allocation" label="Stage-2 target share a" error={err("target_stage2_allocation")}
                hint="Share of the target data placed in stage 2.">
                <input id="f-target_stage2_allocation" type="number" step="0.05" min="0" max="1"
                  value={form.target_stage2_allocation} onChange={set("target_stage2_allocation")}
                  disabled={!form.replay_dataset} {...described("target_stage2_allocation")} />
              </Field>
              <Field id="stage2_duration" label="Stage-2 duration d" error={err("stage2_duration")}
                hint="Stage 2's share of all steps; needed when a < 1.">
                <input id="f-stage2_duration" type="number" step="0.05" min="0" max="1" placeholder="from r, a"
                  value={form.stage2_duration} onChange={set("stage2_duration")}
                  disabled={!form.replay_dataset} {...described("stage2_duration")} />
              </Field>
            </div>
          </fieldset>
          <fieldset>
            <legend>Training method</legend>
            <Field id="adapter_type" label="Method" error={err("adapter_type")} hint={METHOD_HINTS[form.adapter_type]}>
              <select id="f-adapter_type" value={form.adapter_type} {...described("adapter_type")}
                onChange={(e) => setForm((f) => withAdapterType(f, e.target.value as JobForm["adapter_type"]))}>
                <option value="full">Full fine-tuning</option>
                <option value="lora">LoRA</option>
                <option value="qlora">QLoRA</option>
              </select>
            </Field>
            {form.adapter_type !== "full" && (
              <div className="row">
                <Field id="adapter_r" label="Rank r" error={err("adapter_r")}>
                  <input id="f-adapter_r" type="number" min="1" step="1" placeholder="16" value={form.adapter_r}
                    onChange={set("adapter_r")} {...described("adapter_r")} />
                </Field>
                <Field id="adapter_alpha" label="Alpha" error={err("adapter_alpha")} hint="Updates scale by alpha / r.">
                  <input id="f-adapter_alpha" type="number" min="0" placeholder="32" value={form.adapter_alpha}
                    onChange={set("adapter_alpha")} {...described("adapter_alpha")} />
                </Field>
                <Field id="adapter_dropout" label="Dropout" error={err("adapter_dropout")}>
                  <input id="f-adapter_dropout" type="number" min="0" max="0.95" step="0.05" placeholder="0"
                    value={form.adapter_dropout} onChange={set("adapter_dropout")} {...described("adapter_dropout")} />
                </Field>
                <Field id="adapter_target_modules" label="Target modules" error={err("adapter_target_modules")}
                  hint="Layer names, comma-separated (q_proj, v_proj), or all-linear.">
                  <input id="f-adapter_target_modules" type="text" placeholder="all-linear" spellCheck={false}
                    value={form.adapter_target_modules} onChange={set("adapter_target_modules")}
                    {...described("adapter_target_modules")} />
                </Field>
                <Field id="adapter_export" label="Checkpoints" error={err("adapter_export")}
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
              <Field id="n_epochs" label="Epochs" error={err("n_epochs")}>
                <input id="f-n_epochs" type="number" step="0.5" min="0" placeholder="auto" value={form.n_epochs}
                  onChange={set("n_epochs")} {...described("n_epochs")} />
              </Field>
              <Field id="learning_rate" label="Peak learning rate" error={err("learning_rate")}>
                <input id="f-learning_rate" type="text" inputMode="decimal" placeholder="3e-4" value={form.learning_rate}
                  onChange={set("learning_rate")} {...described("learning_rate")} />
              </Field>
              <Field id="lr_scheduler" label="Schedule" error={err("lr_scheduler")}>
                <select id="f-lr_scheduler" value={form.lr_scheduler} onChange={set("lr_scheduler")} {...described("lr_scheduler")}>
                  <option value="wsd">warmup-stable-decay</option>
                  <option value="cosine">cosine</option>
                  <option value="linear">linear</option>
                  <option value="constant">constant</option>
                </select>
              </Field>
            </div>
            <div className="row">
              <Field id="batch_size" label="Batch size" error={err("batch_size")}>
                <input id="f-batch_size" type="number" min="1" placeholder="auto" value={form.batch_size}
                  onChange={set("batch_size")} {...described("batch_size")} />
              </Field>
              <Field id="seq_len" label="Sequence length" error={err("seq_len")}>
                <input id="f-seq_len" type="number" min="8" placeholder="auto" value={form.seq_len}
                  onChange={set("seq_len")} {...described("seq_len")} />
              </Field>
              <Field id="suffix" label="Model suffix" error={err("suffix")}>
                <input id="f-suffix" type="text" maxLength={64} value={form.suffix} onChange={set("suffix")} {...described("suffix")} />
              </Field>
            </div>
          </fieldset>
          <fieldset>
            <legend>Hardware</legend>
            <div className="row">
              <Field id="gpus_per_node" label="GPUs per machine" error={err("gpus_per_node")} hint="One process each.">
                <input id="f-gpus_per_node" type="number" min="1" step="1" placeholder="1" value={form.gpus_per_node}
                  onChange={set("gpus_per_node")} {...described("gpus_per_node")} />
              </Field>
              <Field id="nodes" label="Machines" error={err("nodes")} hint="Each is a training worker.">
                <input id="f-nodes" type="number" min="1" step="1" placeholder="1" value={form.nodes}
                  onChange={set("nodes")} {...described("nodes")} />
              </Field>
              <Field id="strategy" label="Strategy" error={err("strategy")}
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
            {submitting ? "Creating…" : "Create job"}
          </button>
        </form>
        <div className="card plan" aria-live="polite" data-testid="plan">
          <h2>Plan {planning && <span className="muted small">updating…</span>}</h2>
          {!form.training_file && <p className="muted">Choose a training file to see the schedule.</p>}
          {plan && <PlanPicture plan={plan} />}
        </div>
      </div>
    </section>
  );
}

export function PlanPicture({ plan }: { plan: Plan }) {
  const bars = mixtureBars(plan);
  const transition = transitionStep(plan);
  return (
    <div>
      <dl className="facts">
        <div><dt>Total steps</dt><dd data-testid="plan-total-steps">{plan.total_steps}</dd></div>
        <div><dt>Target tokens</dt><dd>{formatCount(plan.target_tokens)}</dd></div>
        <div><dt>Generic tokens</dt><dd>{formatCount(plan.generic_tokens)}</dd></div>
        <div><dt>Target epochs</dt><dd>{plan.target_epochs.toFixed(2)}</dd></div>
        <div><dt>Batch × seq</dt><dd>{plan.batch_size} × {plan.seq_len}</dd></div>
        <div><dt>Peak LR</dt><dd>{formatLr(plan.peak_lr)}</dd></div>
      </dl>
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
        formatYTick={formatLrTick}
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
