import { describe, expect, it } from "vitest";
import { ApiError, SseParser, toApiError } from "../api";
import { badLines, fieldForParam, formErrors } from "./errors";

describe("API error -> form field", () => {
  it.each([
    ["training_file", "training_file"],
    ["validation_file", "validation_file"],
    ["model", "model"],
    ["replay.fraction", "fraction"],
    ["replay.dataset", "replay_dataset"],
    ["replay.target_stage2_allocation", "target_stage2_allocation"],
    ["replay.stage2_duration", "stage2_duration"],
    ["hyperparameters.n_epochs", "n_epochs"],
    ["method.supervised.hyperparameters.learning_rate", "learning_rate"],
    ["hyperparameters.lr_scheduler.warmup_ratio", "lr_scheduler"],
    ["hyperparameters.seq_len", "seq_len"],
    // the adapter and hardware fields: engine errors are short paths, schema errors full ones
    ["hyperparameters.adapter.r", "adapter_r"],
    ["method.supervised.hyperparameters.adapter.r", "adapter_r"],
    ["hyperparameters.adapter.alpha", "adapter_alpha"],
    ["hyperparameters.adapter.export", "adapter_export"],
    ["method.supervised.hyperparameters.adapter.type", "adapter_type"],
    ["hyperparameters.adapter.dropout", "adapter_dropout"],
    ["method.supervised.hyperparameters.adapter.target_modules", "adapter_target_modules"],
    ["hyperparameters.adapter.target_modules.0", "adapter_target_modules"],
    ["hyperparameters.adapter.quantization", "adapter_type"],
    ["hyperparameters.distributed.gpus_per_node", "gpus_per_node"],
    ["hyperparameters.distributed.nodes", "nodes"],
    ["method.supervised.hyperparameters.distributed.strategy", "strategy"],
  ])("%s -> %s", (param, field) => {
    expect(fieldForParam(param)).toBe(field);
  });

  it("has no field for unknown or missing params", () => {
    expect(fieldForParam("hyperparameters.eval_interval")).toBeNull();
    expect(fieldForParam(null)).toBeNull();
    expect(fieldForParam("metadata")).toBeNull();
    expect(fieldForParam("hyperparameters.constructor")).toBeNull();
    expect(fieldForParam("adapter.r")).toBeNull(); // not under hyperparameters
  });

  it("puts a field's message under the field and the rest in general", () => {
    const body = { error: { message: "replay.fraction: must be < 1", type: "invalid_request_error", param: "replay.fraction", code: "invalid_value" } };
    const err = toApiError(400, body);
    expect(err).toBeInstanceOf(ApiError);
    expect(formErrors(err)).toEqual({ fields: { fraction: "replay.fraction: must be < 1" }, general: null });
    expect(formErrors(new ApiError(500, "Internal server error."))).toEqual({ fields: {}, general: "Internal server error." });
    expect(toApiError(502, "<html>bad gateway</html>").message).toBe("HTTP 502");
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
