// The typed client of ReplayFT's public HTTP API (docs: /docs on the server). The dashboard
// talks to the server only through this module, with the user's key as a Bearer header; keys
// never go into URLs (a checkpoint download follows a signed link instead). Every failure is an
// ApiError carrying the API's {message, type, param, code}.

import type { components } from "./api-types";

/** The API's own schemas (frontend/src/api-types.ts, generated from its OpenAPI document). */
export type Schemas = components["schemas"];

/** `T` with the fields in `N` replaced by `N`'s narrower types. (Not Omit, which drops every
 * named field of a type that also has an index signature, as the open schemas do.) */
export type Narrowed<T, N> = { [K in keyof T as K extends keyof N ? never : K]: T[K] } & N;

export type JobStatus = Schemas["JobPublic"]["status"];

// Every status, in the order the jobs page offers them as filters; a Record, so that the
// compiler names a status the API adds and the filters lack.
const FILTER_ORDER: Record<JobStatus, true> = {
  validating_files: true,
  queued: true,
  running: true,
  paused: true,
  succeeded: true,
  failed: true,
  cancelled: true,
};
export const JOB_STATUSES = Object.keys(FILTER_ORDER) as JobStatus[];
export const FINISHED: JobStatus[] = ["succeeded", "failed", "cancelled"];

// Where the API's schema declares an open object ({[key: string]: unknown}: engine data passed
// through as-is), the dashboard narrows it to the keys it reads; everything else is the schema's.

/** `stats` of a processed file (api.services.files). */
export interface FileStats {
  format?: string;
  examples?: number;
  tokens?: number;
  tokenizer?: string;
}

export type FileObject = Narrowed<Schemas["FilePublic"], { stats?: FileStats | null }>;

export type LossSpike = Schemas["LossSpike"];

/** A job's `replay`: the request's replay settings with the resolved plan's numbers. */
export interface JobReplay {
  dataset?: string | string[] | null;
  fraction?: number;
  target_stage2_allocation?: number;
  stage2_duration?: number;
  transition_step?: number | null;
  total_steps?: number;
  stages?: PlanStage[];
}

export type Job = Narrowed<Schemas["JobPublic"], { replay: JobReplay | null }>;
export type Progress = Schemas["Progress"];

export type JobEvent = Schemas["JobEventPublic"];

/** A checkpoint's `metrics`: the engine's losses at its step. */
export type Checkpoint = Narrowed<
  Schemas["CheckpointPublic"],
  { metrics: Record<string, number | null> }
>;

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

/** The answer of POST /v1/fine_tuning/plan (the engine's resolved plan). */
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

export type Model = Schemas["ModelPublic"];

/** One `chat.completion.chunk` of a streamed chat completion (sent as SSE, so not in the
 * OpenAPI schemas): OpenAI's shape, narrowed to what the dashboard reads. */
export interface ChatChunk {
  id: string;
  object: "chat.completion.chunk";
  model: string;
  choices: { index: number; delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: Schemas["Usage"] | null;
}

/** A page of any list endpoint: the schema's list envelope around the dashboard's item type. */
export type List<T> = Narrowed<Schemas["ListResponse_JobPublic_"], { data: T[] }>;

/** The request body of POST /v1/fine_tuning/jobs (and /plan). */
export type JobRequest = Schemas["JobCreate"];
export type Hyperparameters = Schemas["Hyperparameters"];

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

/** An error body of any shape -> ApiError. The API always sends its `ErrorResponse`, but a proxy
 * in front of it may answer with anything, so every field is checked. */
export function toApiError(status: number, body: unknown): ApiError {
  const err = (body as Partial<Schemas["ErrorResponse"]> | null)?.error;
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

  // --- usage and, for admin keys, teams with their limits
  usage = (params: { start_date?: string; end_date?: string; team_name?: string } = {}) => {
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v) as [string, string][]);
    return this.request<List<Schemas["UsageDay"]>>("GET", `/v1/usage?${query}`);
  };
  teams = () => this.request<List<Schemas["TeamPublic"]>>("GET", "/v1/admin/teams");

  // --- models and files
  models = () => this.request<List<Model>>("GET", "/v1/models");
  files = () => this.request<List<FileObject>>("GET", "/v1/files");
  file = (id: string) => this.request<FileObject>("GET", `/v1/files/${id}`);
  deleteFile = (id: string) => this.request<Schemas["DeletedResponse"]>("DELETE", `/v1/files/${id}`);

  /** The first `maxBytes` of a file's content (the rest is never downloaded: the read stops
   * there and the request is cancelled). */
  async fileHead(id: string, maxBytes = 64 * 1024): Promise<Uint8Array> {
    const resp = await fetch(`${this.base}/v1/files/${id}/content`, { headers: this.headers() });
    if (!resp.ok || !resp.body) throw toApiError(resp.status, await resp.json().catch(() => null));
    const reader = resp.body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    while (size < maxBytes) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
    await reader.cancel().catch(() => undefined);
    const head = new Uint8Array(Math.min(size, maxBytes));
    let at = 0;
    for (const c of chunks) {
      const part = c.subarray(0, head.length - at);
      head.set(part, at);
      at += part.length;
      if (at >= head.length) break;
    }
    return head;
  }

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
    this.request<Narrowed<Schemas["MetricsList"], { data: MetricRecord[] }>>(
      "GET",
      `/v1/fine_tuning/jobs/${id}/metrics?max_points=${maxPoints}`,
    );

  /** A short-lived URL that downloads a checkpoint without the key (the browser's own download
   * cannot send the header; the URL carries a signed token, never the key). */
  checkpointLink = (jobId: string, checkpointId: string) =>
    this.request<Schemas["CheckpointDownloadLink"]>(
      "POST",
      `/v1/fine_tuning/jobs/${jobId}/checkpoints/${checkpointId}/download_link`,
    );

  /** The same for a file's content (an upload, or a result file a job wrote). */
  fileLink = (fileId: string) =>
    this.request<Schemas["FileDownloadLink"]>("POST", `/v1/files/${fileId}/download_link`);

  /** A chat completion streamed (`stream: true` in `body`): calls `onChunk` per chunk, resolves
   * at `data: [DONE]`. A refused request (a 400 naming the field, a 404 model, a 503 with no
   * serving process) rejects with the API's ApiError before any chunk; an error event in the
   * middle of the stream rejects with it then. Aborting `signal` hangs up, which stops the
   * generation on the server. */
  async chatStream(
    body: Schemas["ChatCompletionRequest"],
    onChunk: (chunk: ChatChunk) => void,
    signal: AbortSignal,
  ): Promise<void> {
    let resp: Response;
    try {
      resp = await fetch(`${this.base}/v1/chat/completions`, {
        method: "POST",
        headers: this.headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
        body: JSON.stringify(body),
        signal,
      });
    } catch (e) {
      if ((e as Error).name === "AbortError") throw e;
      throw new ApiError(0, "The server cannot be reached.");
    }
    if (!resp.ok || !resp.body) throw toApiError(resp.status, await resp.json().catch(() => null));
    let failure: ApiError | null = null;
    let done = false;
    const parser = new SseParser((_event, data) => {
      if (done || failure) return;
      if (data === "[DONE]") done = true;
      else if (data && typeof data === "object" && "error" in data) failure = toApiError(500, data);
      else onChunk(data as ChatChunk);
    });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    while (!done && !failure) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      parser.push(value);
    }
    await reader.cancel().catch(() => undefined);
    if (failure) throw failure;
    if (!done) throw new ApiError(0, "The answer stopped before its end (the connection closed).");
  }

  /** The job's Server-Sent Events stream, read with fetch (EventSource cannot send headers):
   * `metrics`, `event`, `job` (on a change of status) and `progress` messages. Calls
   * `on(event, data)` per message; resolves when the server ends the stream. `from` skips
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
