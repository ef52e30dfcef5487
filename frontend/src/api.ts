// The typed client of ReplayFT's public HTTP API (docs: /docs on the server). The dashboard
// talks to the server only through this module, with the user's key as a Bearer header; keys
// never go into URLs. Every failure is an ApiError carrying the API's {message, type, param, code}.

export type JobStatus =
  | "validating_files"
  | "queued"
  | "running"
  | "succeeded"
  | "failed"
  | "cancelled"
  | "paused";

export const JOB_STATUSES: JobStatus[] = [
  "validating_files",
  "queued",
  "running",
  "paused",
  "succeeded",
  "failed",
  "cancelled",
];
export const FINISHED: JobStatus[] = ["succeeded", "failed", "cancelled"];

export interface FileObject {
  id: string;
  object: "file";
  bytes: number;
  created_at: number;
  filename: string;
  purpose: string;
  status: "uploaded" | "processed" | "error";
  status_details: string | null;
  stats: { format?: string; examples?: number; tokens?: number; tokenizer?: string } | null;
}

export interface LossSpike {
  initial_loss: number;
  peak_loss: number;
  peak_step: number;
  height: number;
  recovered_step: number | null;
  duration: number | null;
}

export interface Job {
  id: string;
  object: "fine_tuning.job";
  created_at: number;
  finished_at: number | null;
  model: string;
  fine_tuned_model: string | null;
  status: JobStatus;
  error: { code: string | null; message: string; param: string | null } | null;
  hyperparameters: Record<string, unknown>;
  training_file: string;
  validation_file: string | null;
  trained_tokens: number | null;
  seed: number;
  estimated_finish: number | null;
  metadata: Record<string, string> | null;
  suffix: string | null;
  progress: {
    step: number;
    total_steps: number | null;
    stage: number | null;
    tokens_seen: number;
    eta_seconds: number | null;
  };
  replay: {
    dataset?: string | string[] | null;
    fraction?: number;
    target_stage2_allocation?: number;
    stage2_duration?: number;
    transition_step?: number | null;
    total_steps?: number;
    stages?: PlanStage[];
  } | null;
  summary: {
    final_val_loss_target: number | null;
    final_val_loss_generic: number | null;
    loss_spike: LossSpike | null;
  } | null;
}

export interface JobEvent {
  id: string;
  created_at: number;
  level: "info" | "warn" | "error";
  message: string;
  type: string;
  data: Record<string, unknown> | null;
}

export interface Checkpoint {
  id: string;
  created_at: number;
  fine_tuned_model_checkpoint: string;
  fine_tuning_job_id: string;
  step_number: number;
  metrics: Record<string, number | null>;
}

/** One engine record (`type` train or eval); metric names as in the API docs. */
export interface MetricRecord {
  type: "train" | "eval" | "summary";
  step: number;
  stage?: number;
  lr?: number;
  train_loss?: number;
  train_loss_target?: number | null;
  train_loss_generic?: number | null;
  val_loss_target?: number | null;
  val_loss_generic?: number | null;
  tokens_seen?: number;
  [name: string]: unknown;
}

export interface PlanStage {
  stage: number;
  start_step: number;
  end_step: number;
  steps: number;
  target_weight: number;
  generic_weight: number;
  target_tokens: number;
  generic_tokens: number;
  lr_at_start: number;
  lr_at_end: number;
}

export interface Plan {
  mode: string;
  total_steps: number;
  batch_size: number;
  seq_len: number;
  replay_fraction: number;
  target_stage2_allocation: number;
  stage2_duration: number;
  transition_step: number | null;
  target_epochs: number;
  generic_epochs: number;
  target_tokens: number;
  generic_tokens: number;
  warmup_steps: number;
  peak_lr: number;
  stages: PlanStage[];
  warnings: string[];
  lr_curve: { step: number[]; lr: number[] };
}

export interface Model {
  id: string;
  owned_by?: string;
}

export interface List<T> {
  object: "list";
  data: T[];
  has_more: boolean;
}

/** The request body of POST /v1/fine_tuning/jobs (and /plan), as the dashboard fills it. */
export interface JobRequest {
  model: string;
  training_file: string;
  validation_file?: string;
  suffix?: string;
  seed?: number;
  method: {
    type: "supervised";
    supervised: { hyperparameters: Record<string, unknown> };
  };
  replay?: {
    dataset: string;
    fraction?: number;
    target_stage2_allocation?: number;
    stage2_duration?: number;
  };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: string | null = null,
  ) {
    super(message);
  }
}

/** An error body of any shape -> ApiError (the API always sends {"error": {...}}). */
export function toApiError(status: number, body: unknown): ApiError {
  const err = (body as { error?: Record<string, unknown> } | null)?.error;
  if (err && typeof err.message === "string") {
    const str = (v: unknown) => (typeof v === "string" ? v : null);
    return new ApiError(status, err.message, str(err.param), str(err.code), str(err.type));
  }
  return new ApiError(status, `HTTP ${status}`);
}

export class Client {
  constructor(
    readonly key: string,
    readonly base = "",
  ) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { Authorization: `Bearer ${this.key}`, ...extra };
  }

  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const init: RequestInit = { method, headers: this.headers(), signal };
    if (body !== undefined) {
      init.headers = this.headers({ "Content-Type": "application/json" });
      init.body = JSON.stringify(body);
    }
    let resp: Response;
    try {
      resp = await fetch(this.base + path, init);
    } catch (e) {
      if ((e as Error).name === "AbortError") throw e;
      throw new ApiError(0, "The server cannot be reached.");
    }
    const data = await resp.json().catch(() => null);
    if (!resp.ok) throw toApiError(resp.status, data);
    return data as T;
  }

  // --- models and files
  models = () => this.request<List<Model>>("GET", "/v1/models");
  files = () => this.request<List<FileObject>>("GET", "/v1/files");
  file = (id: string) => this.request<FileObject>("GET", `/v1/files/${id}`);
  deleteFile = (id: string) => this.request<{ deleted: boolean }>("DELETE", `/v1/files/${id}`);

  /** Multipart upload through XMLHttpRequest, the browser API that reports upload progress. */
  upload(file: File, purpose: string, onProgress: (fraction: number) => void): Promise<FileObject> {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", this.base + "/v1/files");
      xhr.setRequestHeader("Authorization", `Bearer ${this.key}`);
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
      xhr.onload = () =>
        xhr.status >= 200 && xhr.status < 300
          ? resolve(xhr.response as FileObject)
          : reject(toApiError(xhr.status, xhr.response));
      xhr.onerror = () => reject(new ApiError(0, "The upload was interrupted."));
      const form = new FormData();
      form.append("purpose", purpose);
      form.append("file", file);
      xhr.send(form);
    });
  }

  // --- jobs
  jobs(params: { status?: JobStatus[]; limit?: number; after?: string } = {}) {
    const query = new URLSearchParams();
    for (const s of params.status ?? []) query.append("status", s);
    query.set("limit", String(params.limit ?? 100));
    if (params.after) query.set("after", params.after);
    return this.request<List<Job>>("GET", `/v1/fine_tuning/jobs?${query}`);
  }
  job = (id: string) => this.request<Job>("GET", `/v1/fine_tuning/jobs/${id}`);
  createJob = (body: JobRequest) => this.request<Job>("POST", "/v1/fine_tuning/jobs", body);
  plan = (body: JobRequest, signal?: AbortSignal) =>
    this.request<Plan>("POST", "/v1/fine_tuning/plan", body, signal);
  control = (id: string, action: "cancel" | "pause" | "resume") =>
    this.request<Job>("POST", `/v1/fine_tuning/jobs/${id}/${action}`);
  events = (id: string, limit = 100) =>
    this.request<List<JobEvent>>("GET", `/v1/fine_tuning/jobs/${id}/events?limit=${limit}`);
  checkpoints = (id: string) =>
    this.request<List<Checkpoint>>("GET", `/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`);
  metrics = (id: string, maxPoints = 5000) =>
    this.request<{ data: MetricRecord[] }>(
      "GET",
      `/v1/fine_tuning/jobs/${id}/metrics?max_points=${maxPoints}`,
    );

  /** Downloads a checkpoint's tar.gz: fetched with the key in a header, saved from a Blob (a
   * plain link could not carry the header, and a key in the URL would reach server logs). */
  async downloadCheckpoint(jobId: string, ckpt: Checkpoint): Promise<void> {
    const resp = await fetch(
      `${this.base}/v1/fine_tuning/jobs/${jobId}/checkpoints/${ckpt.id}/download`,
      { headers: this.headers() },
    );
    if (!resp.ok) throw toApiError(resp.status, await resp.json().catch(() => null));
    const name =
      /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") ?? "")?.[1] ??
      `${jobId}-step-${ckpt.step_number}.tar.gz`;
    const url = URL.createObjectURL(await resp.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  /** The job's Server-Sent Events stream, read with fetch (EventSource cannot send headers).
   * Calls `on(event, data)` per message; resolves when the server ends the stream. `from` skips
   * what the caller already has: metric records up to `sinceStep`, events up to `afterEvent`. */
  async stream(
    jobId: string,
    on: (event: string, data: unknown) => void,
    signal: AbortSignal,
    from: { sinceStep?: number; afterEvent?: string } = {},
  ): Promise<void> {
    const query = new URLSearchParams();
    if (from.sinceStep !== undefined) query.set("since_step", String(from.sinceStep));
    if (from.afterEvent) query.set("after", from.afterEvent);
    const resp = await fetch(`${this.base}/v1/fine_tuning/jobs/${jobId}/stream?${query}`, {
      headers: this.headers({ Accept: "text/event-stream" }),
      signal,
    });
    if (!resp.ok || !resp.body) throw toApiError(resp.status, await resp.json().catch(() => null));
    const parser = new SseParser(on);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value);
    }
  }
}

/** Incremental text/event-stream parser: feed chunks as they arrive, in any split. */
export class SseParser {
  private buffer = "";
  constructor(private readonly on: (event: string, data: unknown) => void) {}

  push(chunk: string): void {
    this.buffer += chunk.replace(/\r\n/g, "\n");
    let end: number;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length === 0) continue;
      const text = data.join("\n");
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: hand over the raw text
      }
      this.on(event, parsed);
    }
  }
}
