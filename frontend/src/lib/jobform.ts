// The new-job form's state and the request body it posts (POST /v1/fine_tuning/jobs and /plan).
// Every field is the string its input holds; an empty optional field is left out of the body, so
// the engine's default applies, and an untouched form posts what it always did (full fine-tuning
// on one process). Each input's API field (`API_FIELDS`) is what its errors are shown by.

import type { Hyperparameters, Job, JobRequest } from "../api";

type Adapter = NonNullable<Hyperparameters["adapter"]>;
type Distributed = NonNullable<Hyperparameters["distributed"]>;

/** The body this form posts: the API's JobCreate, its hyperparameters under method.supervised. */
export type FormRequest = JobRequest & {
  method: { type: "supervised"; supervised: { hyperparameters: Hyperparameters } };
};

export interface JobForm {
  model: string;
  training_file: string;
  validation_file: string;
  replay_dataset: string;
  fraction: string;
  target_stage2_allocation: string;
  stage2_duration: string;
  n_epochs: string;
  /** empty: the steps follow from the epochs */
  total_steps: string;
  learning_rate: string;
  lr_scheduler: NonNullable<NonNullable<Hyperparameters["lr_scheduler"]>["type"]>;
  batch_size: string;
  seq_len: string;
  suffix: string;
  seed: string;
  /** full fine-tuning, or an adapter (`hyperparameters.adapter.type`) */
  adapter_type: "full" | Adapter["type"];
  adapter_r: string;
  adapter_alpha: string;
  adapter_dropout: string;
  /** "all-linear" or module names separated by commas or spaces; empty: the engine's default */
  adapter_target_modules: string;
  adapter_export: NonNullable<Adapter["export"]>;
  gpus_per_node: string;
  nodes: string;
  strategy: NonNullable<Distributed["strategy"]>;
}

export const INITIAL_FORM: JobForm = {
  model: "replayft/llama-tiny",
  training_file: "",
  validation_file: "",
  replay_dataset: "",
  fraction: "0.25",
  target_stage2_allocation: "1",
  stage2_duration: "",
  n_epochs: "",
  total_steps: "",
  learning_rate: "",
  lr_scheduler: "wsd",
  batch_size: "",
  seq_len: "",
  suffix: "",
  seed: "",
  adapter_type: "full",
  adapter_r: "",
  adapter_alpha: "",
  adapter_dropout: "",
  adapter_target_modules: "",
  adapter_export: "merged",
  gpus_per_node: "",
  nodes: "",
  strategy: "ddp",
};

const num = (v: string) => (v.trim() === "" ? undefined : Number(v));

/** Drops the keys whose value is undefined (fields left empty). */
function defined<T extends Record<string, unknown>>(obj: T): T {
  for (const k of Object.keys(obj)) if (obj[k] === undefined) delete obj[k];
  return obj;
}

/** The target-modules input -> the API's value: "all-linear", a list of names, or undefined. */
export function targetModules(text: string): string[] | "all-linear" | undefined {
  const names = text.split(/[\s,]+/).filter(Boolean);
  if (names.length === 0) return undefined;
  if (names.length === 1 && names[0] === "all-linear") return "all-linear";
  return names;
}

/** The form -> the API's request body. */
export function toRequest(form: JobForm): FormRequest {
  const hp: Hyperparameters = defined({
    n_epochs: num(form.n_epochs),
    total_steps: num(form.total_steps),
    learning_rate: num(form.learning_rate),
    batch_size: num(form.batch_size),
    seq_len: num(form.seq_len),
    lr_scheduler: { type: form.lr_scheduler },
  });
  if (form.adapter_type !== "full") {
    hp.adapter = defined({
      type: form.adapter_type,
      r: num(form.adapter_r),
      alpha: num(form.adapter_alpha),
      dropout: num(form.adapter_dropout),
      target_modules: targetModules(form.adapter_target_modules),
      export: form.adapter_export,
    });
  }
  // one process unless a hardware field was changed
  if (form.gpus_per_node.trim() || form.nodes.trim() || form.strategy !== "ddp") {
    hp.distributed = defined({
      strategy: form.strategy,
      gpus_per_node: num(form.gpus_per_node),
      nodes: num(form.nodes),
    });
  }
  const body: FormRequest = {
    model: form.model,
    training_file: form.training_file,
    method: { type: "supervised", supervised: { hyperparameters: hp } },
  };
  if (form.validation_file) body.validation_file = form.validation_file;
  if (form.suffix.trim()) body.suffix = form.suffix.trim();
  if (form.seed.trim()) body.seed = Number(form.seed);
  if (form.replay_dataset) {
    body.replay = defined({
      dataset: form.replay_dataset,
      fraction: num(form.fraction),
      target_stage2_allocation: num(form.target_stage2_allocation),
      stage2_duration: num(form.stage2_duration),
    });
  }
  return body;
}

/** A dotted path into `T`'s fields ("replay.fraction", "hyperparameters.adapter.r"): the names
 * the API's errors give in `param`. */
type FieldPath<T> = T extends readonly unknown[]
  ? never
  : T extends object
    ? { [K in keyof T & string]: K | `${K}.${FieldPath<NonNullable<T[K]>>}` }[keyof T & string]
    : never;

/** The request field each input fills, as the API's errors name it, checked against the API's
 * schema (api-types.ts) by the compiler. The method choice fills `hyperparameters.adapter` as a
 * whole (`type`, and whether there is an adapter at all), the scheduler `hyperparameters.
 * lr_scheduler`: an error on any of their fields without an input of its own shows there. */
export const API_FIELDS: Record<keyof JobForm, FieldPath<JobRequest>> = {
  model: "model",
  training_file: "training_file",
  validation_file: "validation_file",
  replay_dataset: "replay.dataset",
  fraction: "replay.fraction",
  target_stage2_allocation: "replay.target_stage2_allocation",
  stage2_duration: "replay.stage2_duration",
  n_epochs: "hyperparameters.n_epochs",
  total_steps: "hyperparameters.total_steps",
  learning_rate: "hyperparameters.learning_rate",
  lr_scheduler: "hyperparameters.lr_scheduler",
  batch_size: "hyperparameters.batch_size",
  seq_len: "hyperparameters.seq_len",
  suffix: "suffix",
  seed: "seed",
  adapter_type: "hyperparameters.adapter",
  adapter_r: "hyperparameters.adapter.r",
  adapter_alpha: "hyperparameters.adapter.alpha",
  adapter_dropout: "hyperparameters.adapter.dropout",
  adapter_target_modules: "hyperparameters.adapter.target_modules",
  adapter_export: "hyperparameters.adapter.export",
  gpus_per_node: "hyperparameters.distributed.gpus_per_node",
  nodes: "hyperparameters.distributed.nodes",
  strategy: "hyperparameters.distributed.strategy",
};

const INPUT_OF = new Map(
  Object.entries(API_FIELDS).map(([input, field]) => [field as string, input as keyof JobForm]),
);

/** The input an API error's `param` belongs to, or null. The API names the form's
 * hyperparameters `hyperparameters.*` in its own checks and by where they were sent
 * (`method.supervised.hyperparameters.*`) when the request's schema refuses them: both are the
 * same field. A path deeper than any input (`hyperparameters.adapter.target_modules.0`) belongs
 * to the input of its longest head. */
export function inputForParam(param: string | null | undefined): keyof JobForm | null {
  if (!param) return null;
  const parts = param.replace(/^method\.supervised\.hyperparameters\./, "hyperparameters.").split(".");
  for (let n = parts.length; n > 0; n--) {
    const input = INPUT_OF.get(parts.slice(0, n).join("."));
    if (input) return input;
  }
  return null;
}

/** A method change: QLoRA can only export the adapter (its 4-bit base is never de-quantized to
 * merge into), so choosing it switches the export; leaving it restores the default. */
export function withAdapterType(form: JobForm, type: JobForm["adapter_type"]): JobForm {
  if (type === "qlora") return { ...form, adapter_type: type, adapter_export: "adapter" };
  if (form.adapter_type === "qlora") return { ...form, adapter_type: type, adapter_export: "merged" };
  return { ...form, adapter_type: type };
}

/** Each input's label, also the name an error message gives the field. */
export const LABELS: Record<keyof JobForm, string> = {
  model: "Base model",
  training_file: "Target data (training file)",
  validation_file: "Validation file (optional)",
  replay_dataset: "Replay dataset",
  fraction: "Replay fraction r",
  target_stage2_allocation: "Stage-2 target share a",
  stage2_duration: "Stage-2 duration d",
  n_epochs: "Epochs",
  total_steps: "Total steps",
  learning_rate: "Peak learning rate",
  lr_scheduler: "Schedule",
  batch_size: "Batch size",
  seq_len: "Sequence length",
  suffix: "Model suffix",
  seed: "Seed",
  adapter_type: "Method",
  adapter_r: "Rank r",
  adapter_alpha: "Alpha",
  adapter_dropout: "Dropout",
  adapter_target_modules: "Target modules",
  adapter_export: "Checkpoints",
  gpus_per_node: "GPUs per machine",
  nodes: "Machines",
  strategy: "Strategy",
};

/** The label of a field name as an API message writes it: a request path
 * ("replay.stage2_duration", "hyperparameters.total_steps") or a spec field's own name
 * ("target_stage2_allocation", "total_steps"). */
export function labelOfField(name: string): string | null {
  const path = name.replace(/^method\.supervised\.hyperparameters\./, "hyperparameters.");
  for (const field of [path, `hyperparameters.${path}`, `replay.${path}`, `hyperparameters.adapter.${path}`]) {
    const input = INPUT_OF.get(field);
    if (input) return LABELS[input];
  }
  return null;
}

/** An API error message as the form shows it: the field path it starts with goes (the message
 * sits under that field already), field names become the form's labels, and the engine's
 * comparison signs become words: "replay.stage2_duration: needed with target_stage2_allocation
 * < 1 unless total_steps is set" -> "Needed when “Stage-2 target share a” is below 1, unless
 * “Total steps” is set." */
export function formMessage(message: string): string {
  let text = message.replace(/^[A-Za-z_][\w.]*: /, "");
  text = text
    .replace(/^Input should be /, "Must be ")
    .replace(/^needed with (.+?) unless (.+)$/, "needed when $1, unless $2")
    .replace(/ <= /g, " at most ")
    .replace(/ >= /g, " at least ")
    .replace(/ < /g, " below ")
    .replace(/ > /g, " above ");
  text = text.replace(/\b[a-z][a-z0-9]*(?:[._][a-z0-9]+)+\b/g, (name) => {
    const label = labelOfField(name);
    return label ? `“${label}”` : name;
  });
  text = text.replace(/“([^”]+)” below/, "“$1” is below");
  text = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?)]$/.test(text) ? text : `${text}.`;
}

const str = (v: unknown) => (v === null || v === undefined ? "" : String(v));

/** The form filled in with what `job` ran with (the dashboard's Clone). The job shows resolved
 * values, so every knob comes back as a number, except total steps: it follows from the epochs
 * again, and editing the epochs of the clone then changes it. Replay takes r and a, and d only
 * where a < 1 needs it (three given must agree to the last digit). */
export function formFromJob(job: Job): JobForm {
  const hp = job.hyperparameters as Record<string, unknown>;
  const sched = (hp.lr_scheduler ?? {}) as { type?: JobForm["lr_scheduler"] };
  const adapter = hp.adapter as
    | { type: "lora" | "qlora"; r?: number; alpha?: number; dropout?: number; target_modules?: string[] | string; export?: JobForm["adapter_export"] }
    | null
    | undefined;
  const distributed = hp.distributed as { strategy?: JobForm["strategy"]; gpus_per_node?: number; nodes?: number } | null;
  const replay = job.replay;
  const dataset = Array.isArray(replay?.dataset) ? replay?.dataset[0] : replay?.dataset;
  const a = replay?.target_stage2_allocation;
  return {
    ...INITIAL_FORM,
    model: job.model,
    training_file: job.training_file,
    validation_file: job.validation_file ?? "",
    replay_dataset: dataset ?? "",
    fraction: dataset ? str(replay?.fraction ?? INITIAL_FORM.fraction) : INITIAL_FORM.fraction,
    target_stage2_allocation: dataset ? str(a ?? 1) : INITIAL_FORM.target_stage2_allocation,
    stage2_duration: dataset && a !== undefined && a < 1 ? str(replay?.stage2_duration) : "",
    n_epochs: str(hp.n_epochs),
    learning_rate: str(hp.learning_rate),
    lr_scheduler: sched.type ?? INITIAL_FORM.lr_scheduler,
    batch_size: str(hp.batch_size),
    seq_len: str(hp.seq_len),
    suffix: job.suffix ?? "",
    seed: str(job.seed),
    adapter_type: adapter?.type ?? "full",
    adapter_r: str(adapter?.r),
    adapter_alpha: str(adapter?.alpha),
    adapter_dropout: str(adapter?.dropout),
    adapter_target_modules: Array.isArray(adapter?.target_modules)
      ? adapter.target_modules.join(", ")
      : str(adapter?.target_modules),
    adapter_export: adapter?.export ?? INITIAL_FORM.adapter_export,
    gpus_per_node: distributed ? str(distributed.gpus_per_node) : "",
    nodes: distributed ? str(distributed.nodes) : "",
    strategy: distributed?.strategy ?? INITIAL_FORM.strategy,
  };
}
