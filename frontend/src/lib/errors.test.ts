import { describe, expect, it } from "vitest";
import { ApiError, SseParser, toApiError } from "../api";
import { badLines, formErrors } from "./errors";

describe("API errors in a form", () => {
  it("puts a field's message under the field and the rest in general", () => {
    const body = { error: { message: "replay.fraction: must be < 1", type: "invalid_request_error", param: "replay.fraction", code: "invalid_value" } };
    const err = toApiError(400, body);
    expect(err).toBeInstanceOf(ApiError);
    const inputFor = (param: string | null) => (param === "replay.fraction" ? "fraction" : null);
    expect(formErrors(err, inputFor)).toEqual({ fields: { fraction: "replay.fraction: must be < 1" }, general: null });
    const other = toApiError(400, { error: { ...body.error, param: "metadata", message: "metadata: too long" } });
    expect(formErrors(other, inputFor)).toEqual({ fields: {}, general: "metadata: too long" });
    expect(formErrors(new ApiError(500, "Internal server error."), inputFor)).toEqual({ fields: {}, general: "Internal server error." });
    expect(formErrors(new TypeError("failed to fetch"), inputFor)).toEqual({ fields: {}, general: "failed to fetch" });
    expect(toApiError(502, "<html>bad gateway</html>").message).toBe("HTTP 502");
    // the form's own words for both kinds
    const upper = (m: string) => m.toUpperCase();
    expect(formErrors(err, inputFor, upper).fields).toEqual({ fraction: "REPLAY.FRACTION: MUST BE < 1" });
    expect(formErrors(other, inputFor, upper).general).toBe("METADATA: TOO LONG");
  });

  it("reads the bad lines a file validation error lists", () => {
    expect(badLines("line 12: not valid JSON")).toEqual({ count: 1, lines: [{ line: 12, reason: "not valid JSON" }], more: 0 });
    expect(badLines("1 bad line: line 4: 'text' must be a string, got a number")).toEqual({
      count: 1,
      lines: [{ line: 4, reason: "'text' must be a string, got a number" }],
      more: 0,
    });
    const many = "13 bad lines: line 2: invalid JSON: x (column 3); .json files must hold one JSON object per line; line 9: missing 'prompt'; and 11 more";
    expect(badLines(many)).toEqual({
      count: 13,
      lines: [
        { line: 2, reason: "invalid JSON: x (column 3); .json files must hold one JSON object per line" },
        { line: 9, reason: "missing 'prompt'" },
      ],
      more: 11,
    });
    expect(badLines("file is empty")).toBeNull();
    expect(badLines(null)).toBeNull();
  });
});

describe("SseParser", () => {
  it("parses events split anywhere across chunks", () => {
    const got: [string, unknown][] = [];
    const p = new SseParser((e, d) => got.push([e, d]));
    const text = 'event: metrics\ndata: {"step": 1}\n\nevent: job\ndata: {"status": "running"}\n\n: comment\n\nevent: done\ndata: {"status": "succeeded"}\n\n';
    for (let i = 0; i < text.length; i += 7) p.push(text.slice(i, i + 7));
    expect(got).toEqual([
      ["metrics", { step: 1 }],
      ["job", { status: "running" }],
      ["done", { status: "succeeded" }],
    ]);
  });
});
