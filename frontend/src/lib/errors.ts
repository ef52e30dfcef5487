// API errors -> the form field to show them next to. The API names the offending field in
// `param` as a request path (`replay.fraction`, `hyperparameters.n_epochs`, or the full
// `method.supervised.hyperparameters.n_epochs`, `hyperparameters.adapter.r`); the new-job form
// has flat field names.

import { ApiError } from "../api";

export type FormField =
  | "model"
  | "training_file"
  | "validation_file"
  | "replay_dataset"
  | "fraction"
  | "target_stage2_allocation"
  | "stage2_duration"
  | "n_epochs"
  | "learning_rate"
  | "lr_scheduler"
  | "batch_size"
  | "seq_len"
  | "suffix"
  | "adapter_type"
  | "adapter_r"
  | "adapter_alpha"
  | "adapter_dropout"
  | "adapter_target_modules"
  | "adapter_export"
  | "gpus_per_node"
  | "nodes"
  | "strategy";

const DIRECT: Record<string, FormField> = {
  model: "model",
  gguf_file: "model",
  training_file: "training_file",
  validation_file: "validation_file",
  suffix: "suffix",
  "replay.dataset": "replay_dataset",
  "replay.fraction": "fraction",
  "replay.target_stage2_allocation": "target_stage2_allocation",
  "replay.stage2_duration": "stage2_duration",
};

const HYPER: Record<string, FormField> = {
  n_epochs: "n_epochs",
  learning_rate: "learning_rate",
  learning_rate_multiplier: "learning_rate",
  lr_scheduler: "lr_scheduler",
  batch_size: "batch_size",
  seq_len: "seq_len",
  // `adapter` itself (and any of its fields without an input) goes to the method choice
  adapter: "adapter_type",
  "adapter.r": "adapter_r",
  "adapter.alpha": "adapter_alpha",
  "adapter.dropout": "adapter_dropout",
  "adapter.target_modules": "adapter_target_modules",
  "adapter.export": "adapter_export",
  distributed: "gpus_per_node",
  "distributed.gpus_per_node": "gpus_per_node",
  "distributed.nodes": "nodes",
  "distributed.strategy": "strategy",
};

export function fieldForParam(param: string | null | undefined): FormField | null {
  if (!param) return null;
  if (param in DIRECT) return DIRECT[param];
  const hp = param.replace(/^(method\.supervised\.)?hyperparameters\./, "");
  if (hp === param) return null;
  // the longest known head of the path: `adapter.r` before `adapter`, and
  // `lr_scheduler.warmup_ratio` -> `lr_scheduler`
  const parts = hp.split(".");
  for (let n = parts.length; n > 0; n--) {
    const head = parts.slice(0, n).join(".");
    if (Object.hasOwn(HYPER, head)) return HYPER[head];
  }
  return null;
}

export interface FormErrors {
  fields: Partial<Record<FormField, string>>;
  /** errors that belong to no field of the form */
  general: string | null;
}

export function formErrors(error: unknown): FormErrors {
  if (error instanceof ApiError) {
    const field = fieldForParam(error.param);
    if (field) return { fields: { [field]: error.message }, general: null };
    return { fields: {}, general: error.message };
  }
  return { fields: {}, general: error instanceof Error ? error.message : String(error) };
}

/** One bad line of an uploaded file, as the file's `status_details` names it. */
export interface BadLine {
  line: number;
  reason: string;
}

/** The bad lines a file validation error lists ("2 bad lines: line 3: ...; line 9: ...; and 4
 * more", or a lone "line 3: ..."): `count` in all, the first few named. Null for a whole-file
 * problem ("file is empty"). */
export function badLines(
  details: string | null | undefined,
): { count: number; lines: BadLine[]; more: number } | null {
  const text = details ?? "";
  const single = /^line (\d+): ([\s\S]*)$/.exec(text);
  if (single) return { count: 1, lines: [{ line: Number(single[1]), reason: single[2] }], more: 0 };
  const header = /^(\d+) bad lines?: ([\s\S]*)$/.exec(text);
  if (!header) return null;
  let body = header[2];
  let more = 0;
  const tail = /; and (\d+) more$/.exec(body);
  if (tail) {
    more = Number(tail[1]);
    body = body.slice(0, tail.index);
  }
  // reasons may hold "; " themselves, so split only where the next "line N: " starts
  const lines = body.split(/; (?=line \d+: )/).flatMap((part) => {
    const m = /^line (\d+): ([\s\S]*)$/.exec(part);
    return m ? [{ line: Number(m[1]), reason: m[2] }] : [];
  });
  return { count: Number(header[1]), lines, more };
}
