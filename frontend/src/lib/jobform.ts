// The new-job form's state and the request body it posts (POST /v1/fine_tuning/jobs and /plan).
// Every field is the string its input holds; an empty optional field is left out of the body, so
// the engine's default applies, and an untouched form posts what it always did (full fine-tuning
// on one process). Each input's API field (`API_FIELDS`) is what its errors are shown by.

import type { Hyperparameters, JobRequest } from "../api";

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
  learning_rate: string;
  lr_scheduler: NonNullable<NonNullable<Hyperparameters["lr_scheduler"]>["type"]>;
  batch_size: string;
  seq_len: string;
  suffix: string;
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
  learning_rate: "",
  lr_scheduler: "wsd",
  batch_size: "",
  seq_len: "",
  suffix: "",
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
  learning_rate: "hyperparameters.learning_rate",
  lr_scheduler: "hyperparameters.lr_scheduler",
  batch_size: "hyperparameters.batch_size",
  seq_len: "hyperparameters.seq_len",
  suffix: "suffix",
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
