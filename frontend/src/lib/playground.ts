// The Playground's pure parts: the chat request one prompt becomes, how an answer grows from the
// streamed chunks, and what the page says about a finished answer.

import type { ChatChunk, Schemas } from "../api";

export type ChatRequest = Schemas["ChatCompletionRequest"];

/** The Playground's controls, as typed (inputs hold strings). */
export interface Controls {
  system: string;
  prompt: string;
  maxTokens: string;
  temperature: string;
}

export const DEFAULT_CONTROLS: Controls = { system: "", prompt: "", maxTokens: "64", temperature: "0.7" };

/** The streamed chat request for `model`. Numbers go as typed (a blank one is left out, so the
 * API's default applies); checking them is the API's job, whose 400 names the field. */
export function chatRequest(model: string, controls: Controls): ChatRequest {
  const messages: ChatRequest["messages"] = [];
  if (controls.system.trim()) messages.push({ role: "system", content: controls.system });
  messages.push({ role: "user", content: controls.prompt });
  const body: ChatRequest = {
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  };
  const number = (text: string) => (text.trim() === "" ? undefined : Number(text));
  const maxTokens = number(controls.maxTokens);
  const temperature = number(controls.temperature);
  if (maxTokens !== undefined) body.max_tokens = maxTokens;
  if (temperature !== undefined) body.temperature = temperature;
  return body;
}

/** One side's answer as it streams. Times are ms since the request was sent. */
export interface Answer {
  model: string;
  text: string;
  state: "waiting" | "streaming" | "done" | "stopped" | "error";
  finishReason: string | null;
  completionTokens: number | null;
  promptTokens: number | null;
  firstTokenMs: number | null;
  totalMs: number | null;
  error: string | null;
  /** the request field the API blamed for the error, if any */
  errorParam: string | null;
}

export function waiting(model: string): Answer {
  return {
    model,
    text: "",
    state: "waiting",
    finishReason: null,
    completionTokens: null,
    promptTokens: null,
    firstTokenMs: null,
    totalMs: null,
    error: null,
    errorParam: null,
  };
}

/** `answer` with one more chunk (of choice 0; the Playground asks for one) applied at `ms`. */
export function withChunk(answer: Answer, chunk: ChatChunk, ms: number): Answer {
  const next = { ...answer };
  const choice = chunk.choices.find((c) => c.index === 0);
  const content = choice?.delta.content ?? "";
  if (content) {
    next.text += content;
    next.firstTokenMs ??= ms;
  }
  if (next.state === "waiting") next.state = "streaming";
  if (choice?.finish_reason) next.finishReason = choice.finish_reason;
  if (chunk.usage) {
    next.completionTokens = chunk.usage.completion_tokens;
    next.promptTokens = chunk.usage.prompt_tokens;
  }
  return next;
}

/** "64 tokens · length · first token 0.31 s · 41.2 tokens/s" for a finished answer. */
export function answerSummary(answer: Answer): string {
  const parts: string[] = [];
  if (answer.completionTokens !== null) parts.push(`${answer.completionTokens} tokens`);
  if (answer.finishReason) parts.push(answer.finishReason === "length" ? "max tokens reached" : answer.finishReason);
  if (answer.firstTokenMs !== null) parts.push(`first token ${(answer.firstTokenMs / 1000).toFixed(2)} s`);
  if (answer.completionTokens && answer.totalMs && answer.firstTokenMs !== null) {
    const streamMs = answer.totalMs - answer.firstTokenMs;
    if (streamMs > 0 && answer.completionTokens > 1) {
      parts.push(`${(((answer.completionTokens - 1) * 1000) / streamMs).toFixed(1)} tokens/s`);
    }
  }
  return parts.join(" · ");
}

/** The models a job's "Try it" compares: its base and its fine-tuned model (or a checkpoint). */
export function tryItQuery(job: { model: string }, model: string): string {
  return new URLSearchParams({ a: job.model, b: model }).toString();
}
