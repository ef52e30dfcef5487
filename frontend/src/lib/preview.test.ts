import { describe, expect, it } from "vitest";
import { previewRows } from "./preview";

const bytes = (s: string) => new TextEncoder().encode(s);

describe("file preview", () => {
  it("shows whole lines only, JSON by its fields, long values shortened", () => {
    const head = bytes('{"prompt": "a", "completion": "b"}\n\n{"text": "' + "x".repeat(20) + '"}\nplain words\n{"cut": "mid');
    expect(previewRows(head, 5, 10)).toEqual([
      { line: 1, fields: [["prompt", "a"], ["completion", "b"]], text: null },
      { line: 3, fields: [["text", "xxxxxxxxxx…"]], text: null },
      { line: 4, fields: null, text: "plain word…" },
    ]);
    expect(previewRows(head, 1)?.length).toBe(1);
  });

  it("shows a chat line's messages as JSON, and nothing of a binary file", () => {
    const chat = bytes('{"messages": [{"role": "user", "content": "hi"}]}\n');
    expect(previewRows(chat)?.[0].fields).toEqual([["messages", '[{"role":"user","content":"hi"}]']]);
    expect(previewRows(bytes("PAR1\u0000\u0001"))).toBeNull();
    expect(previewRows(new Uint8Array([1, 0, 2]))).toBeNull();
  });
});
