import { describe, expect, it } from "vitest";
import type { ChatChunk } from "../api";
import { DEFAULT_CONTROLS, answerSummary, chatRequest, tryItQuery, waiting, withChunk } from "./playground";

function chunk(content: string | null, finish: string | null = null, usage?: ChatChunk["usage"]): ChatChunk {
  const delta = content === null ? {} : { content };
  return {
    id: "chatcmpl-1",
    object: "chat.completion.chunk",
    model: "m",
    choices: content === null && !finish ? [] : [{ index: 0, delta, finish_reason: finish }],
    usage,
  };
}

describe("playground", () => {
  it("sends the prompt as a streamed chat request with the controls as numbers", () => {
    const body = chatRequest("replayft/llama-tiny", { ...DEFAULT_CONTROLS, prompt: "Hi", maxTokens: "12", temperature: "0" });
    expect(body).toEqual({
      model: "replayft/llama-tiny",
      messages: [{ role: "user", content: "Hi" }],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 12,
      temperature: 0,
    });
    const withSystem = chatRequest("m", { system: "Be brief.", prompt: "Hi", maxTokens: " ", temperature: "" });
    expect(withSystem.messages).toEqual([
      { role: "system", content: "Be brief." },
      { role: "user", content: "Hi" },
    ]);
    expect(withSystem).not.toHaveProperty("max_tokens"); // blank: the API's default
    expect(withSystem).not.toHaveProperty("temperature");
  });

  it("grows an answer from its chunks and sums it up", () => {
    let answer = waiting("m");
    answer = withChunk(answer, { ...chunk(""), choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] }, 5);
    expect(answer.state).toBe("streaming");
    expect(answer.firstTokenMs).toBeNull(); // the role chunk carries no text
    answer = withChunk(answer, chunk("Hel"), 200);
    answer = withChunk(answer, chunk("lo"), 300);
    answer = withChunk(answer, chunk(null, "length"), 300);
    answer = withChunk(answer, chunk(null, null, { prompt_tokens: 7, completion_tokens: 5, total_tokens: 12 }), 310);
    expect(answer.text).toBe("Hello");
    expect(answer.firstTokenMs).toBe(200);
    expect(answer.finishReason).toBe("length");
    expect([answer.promptTokens, answer.completionTokens]).toEqual([7, 5]);
    // 4 tokens after the first one in 0.2 s
    expect(answerSummary({ ...answer, state: "done", totalMs: 400 })).toBe(
      "5 tokens · max tokens reached · first token 0.20 s · 20.0 tokens/s",
    );
    expect(answerSummary(waiting("m"))).toBe("");
  });

  it("tries a job's model against its base", () => {
    const query = new URLSearchParams(tryItQuery({ model: "replayft/llama-tiny" }, "ft:replayft/llama-tiny:t::ftjob-1"));
    expect(query.get("a")).toBe("replayft/llama-tiny");
    expect(query.get("b")).toBe("ft:replayft/llama-tiny:t::ftjob-1");
  });
});
