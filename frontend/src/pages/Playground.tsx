// Playground: one prompt to two models the team can see (say a job's base and its fine-tuned
// model, kept in the URL as ?a=<model>&b=<model>), both answers streamed side by side from
// POST /v1/chat/completions (stream: true), with max tokens and temperature. A model that refuses
// (a context too small for max tokens, a job still running) shows the API's error on its side,
// and the input it names is marked; Stop hangs up, which stops both generations on the server.

import { useEffect, useRef, useState, type FormEvent } from "react";
import { useSearchParams } from "react-router-dom";
import { ApiError, type Model } from "../api";
import { useClient, useOnError } from "../auth";
import { ErrorNote, Loading } from "../components/ui";
import { usePolled } from "../hooks";
import {
  DEFAULT_CONTROLS,
  answerSummary,
  chatRequest,
  waiting,
  withChunk,
  type Answer,
  type Controls,
} from "../lib/playground";

const SIDES = ["a", "b"] as const;
type Side = (typeof SIDES)[number];
const SIDE_NAME: Record<Side, string> = { a: "Model A", b: "Model B" };

/** The control an API error's `param` is about, if the form has one for it. */
const CONTROL_FOR: Record<string, keyof Controls> = {
  max_tokens: "maxTokens",
  max_completion_tokens: "maxTokens",
  temperature: "temperature",
  messages: "prompt",
};

/** Options of a model picker: models every team has, then the team's own (fine-tuned models and
 * checkpoints); a model named in the URL that the list lacks is kept, marked, so that asking it
 * shows why it cannot answer. */
function ModelPicker(props: { side: Side; value: string; models: Model[]; onChange: (id: string) => void }) {
  const shared = props.models.filter((m) => !m.id.startsWith("ft:"));
  const own = props.models.filter((m) => m.id.startsWith("ft:"));
  const known = props.models.some((m) => m.id === props.value);
  return (
    <div className="field">
      <label htmlFor={`model-${props.side}`}>{SIDE_NAME[props.side]}</label>
      <select id={`model-${props.side}`} value={props.value} onChange={(e) => props.onChange(e.target.value)}>
        {!known && props.value && <option value={props.value}>{props.value} (not in your models)</option>}
        <optgroup label="Presets and base models">
          {shared.map((m) => (
            <option key={m.id} value={m.id}>
              {m.id}
              {m.pretrained === false ? " (random weights)" : ""}
            </option>
          ))}
        </optgroup>
        {own.length > 0 && (
          <optgroup label="Your fine-tuned models and checkpoints">
            {own.map((m) => (
              <option key={m.id} value={m.id}>
                {m.id}
              </option>
            ))}
          </optgroup>
        )}
      </select>
    </div>
  );
}

function AnswerCard({ side, answer }: { side: Side; answer: Answer | null }) {
  return (
    <div className="card answer-card" data-testid={`answer-${side}`} data-state={answer?.state ?? "idle"}>
      <h2>
        {SIDE_NAME[side]} {answer && <span className="mono small muted">{answer.model}</span>}
      </h2>
      {answer?.error && <ErrorNote message={answer.error} />}
      {answer && !answer.error && (
        <pre className="answer" aria-live="polite" aria-label={`Answer of ${SIDE_NAME[side]}`}>
          {answer.text}
          {(answer.state === "waiting" || answer.state === "streaming") && <span className="cursor">▍</span>}
        </pre>
      )}
      {!answer && <p className="muted small">The answer streams here.</p>}
      <p className="muted small" data-testid={`answer-${side}-status`}>
        {answer?.state === "waiting" && "Waiting for the first token…"}
        {answer?.state === "streaming" && "Streaming…"}
        {answer?.state === "stopped" && "Stopped."}
        {answer?.state === "done" && (answerSummary(answer) || "Done.")}
      </p>
    </div>
  );
}

export function PlaygroundPage() {
  const client = useClient();
  const onError = useOnError();
  const [params, setParams] = useSearchParams();
  const models = usePolled(() => client.models(), [client]);
  const [controls, setControls] = useState<Controls>(DEFAULT_CONTROLS);
  const [answers, setAnswers] = useState<Record<Side, Answer | null>>({ a: null, b: null });
  const running = useRef<AbortController | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    document.title = "Playground · ReplayFT";
    return () => {
      document.title = "ReplayFT";
      running.current?.abort(); // leaving the page hangs up: the server stops generating
    };
  }, []);

  const list = models.data?.data ?? [];
  const firstOwn = list.find((m) => m.id.startsWith("ft:"))?.id;
  const chosen: Record<Side, string> = {
    a: params.get("a") ?? list[0]?.id ?? "",
    b: params.get("b") ?? firstOwn ?? list[1]?.id ?? list[0]?.id ?? "",
  };
  const choose = (side: Side, id: string) => {
    const next = new URLSearchParams(params);
    for (const s of SIDES) next.set(s, s === side ? id : chosen[s]);
    setParams(next, { replace: true });
  };
  const set = (name: keyof Controls) => (e: { target: { value: string } }) =>
    setControls((c) => ({ ...c, [name]: e.target.value }));

  async function ask(side: Side, model: string, signal: AbortSignal, started: number) {
    const update = (change: (a: Answer) => Answer) =>
      setAnswers((all) => ({ ...all, [side]: all[side] && change(all[side]) }));
    try {
      await client.chatStream(
        chatRequest(model, controls),
        (chunk) => update((a) => withChunk(a, chunk, performance.now() - started)),
        signal,
      );
      update((a) => ({ ...a, state: "done", totalMs: performance.now() - started }));
    } catch (e) {
      if (signal.aborted) {
        update((a) => ({ ...a, state: "stopped" }));
        return;
      }
      const message = onError(e);
      const param = e instanceof ApiError ? e.param : null;
      update((a) => ({ ...a, state: "error", error: message, errorParam: param }));
    }
  }

  async function send(e: FormEvent) {
    e.preventDefault();
    running.current?.abort();
    const controller = new AbortController();
    running.current = controller;
    setAnswers({ a: waiting(chosen.a), b: waiting(chosen.b) });
    setBusy(true);
    const started = performance.now();
    await Promise.all(SIDES.map((side) => ask(side, chosen[side], controller.signal, started)));
    if (running.current === controller) {
      running.current = null;
      setBusy(false);
    }
  }

  function stop() {
    running.current?.abort();
    running.current = null;
    setBusy(false);
  }

  // an input the API blamed on either side is marked
  const blamed = new Set(
    SIDES.map((s) => answers[s]?.errorParam)
      .filter((p): p is string => !!p)
      .map((p) => CONTROL_FOR[p])
      .filter(Boolean),
  );
  const fieldClass = (name: keyof Controls) => `field${blamed.has(name) ? " has-error" : ""}`;

  return (
    <section>
      <h1>Playground</h1>
      <p className="muted">
        One prompt, two models, the answers side by side: say a job's base model and its fine-tuned model. The same
        chat completion the API serves to the openai package.
      </p>
      {models.loading && !models.data && <Loading what="models" />}
      {models.error && <ErrorNote message={models.error} onRetry={models.reload} />}
      <form className="card form" onSubmit={send} aria-label="Ask two models">
        <div className="row">
          {SIDES.map((side) => (
            <ModelPicker key={side} side={side} value={chosen[side]} models={list} onChange={(id) => choose(side, id)} />
          ))}
        </div>
        <div className="field">
          <label htmlFor="pg-system">System message (optional)</label>
          <input id="pg-system" value={controls.system} onChange={set("system")} placeholder="You are a helpful assistant." />
        </div>
        <div className={fieldClass("prompt")}>
          <label htmlFor="pg-prompt">Prompt</label>
          <textarea id="pg-prompt" rows={4} value={controls.prompt} onChange={set("prompt")}
            placeholder="Ask both models something." />
        </div>
        <div className="row">
          <div className={fieldClass("maxTokens")}>
            <label htmlFor="pg-max-tokens">Max tokens</label>
            <input id="pg-max-tokens" type="number" min={1} step={1} value={controls.maxTokens} onChange={set("maxTokens")} />
          </div>
          <div className={fieldClass("temperature")}>
            <label htmlFor="pg-temperature">Temperature</label>
            <input id="pg-temperature" type="number" min={0} max={2} step={0.1} value={controls.temperature}
              onChange={set("temperature")} />
            <p className="hint">0 = greedy: the same prompt gives the same answer.</p>
          </div>
        </div>
        <div className="actions">
          <button type="submit" className="primary" disabled={!controls.prompt.trim() || !chosen.a || !chosen.b}>
            {busy ? "Send again" : "Send"}
          </button>
          <button type="button" onClick={stop} disabled={!busy}>
            Stop
          </button>
        </div>
      </form>
      <div className="two-col">
        {SIDES.map((side) => (
          <AnswerCard key={side} side={side} answer={answers[side]} />
        ))}
      </div>
    </section>
  );
}
