import { describe, expect, it } from "vitest";
import {
  formatBytes,
  formatCount,
  formatEta,
  formatHardware,
  formatIntegrations,
  formatLoss,
  formatLr,
  formatMethod,
  formatPercent,
  formatSchedule,
} from "./format";

describe("formatEta", () => {
  it.each([
    [null, "—"],
    [undefined, "—"],
    [-1, "—"],
    [Number.POSITIVE_INFINITY, "—"],
    [0, "0s"],
    [44.6, "45s"],
    [60, "1m 00s"],
    [125, "2m 05s"],
    [3600, "1h 00m"],
    [7530, "2h 05m"],
    [3 * 86400 + 5 * 3600, "3d 5h"],
  ])("%s s -> %s", (seconds, text) => {
    expect(formatEta(seconds as number | null)).toBe(text);
  });
});

describe("numbers", () => {
  it("abbreviates counts", () => {
    expect(formatCount(950)).toBe("950");
    expect(formatCount(12_345)).toBe("12k");
    expect(formatCount(1_250_000)).toBe("1.3M");
    expect(formatCount(25_000_000)).toBe("25M");
    expect(formatCount(3.2e9)).toBe("3.2B");
    expect(formatCount(null)).toBe("—");
  });
  it("formats bytes, losses and percentages", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(300 * 1024 * 1024)).toBe("300 MiB");
    expect(formatLoss(2.345678)).toBe("2.3457");
    expect(formatLoss(null)).toBe("—");
    expect(formatPercent(0.25)).toBe("25%");
    expect(formatPercent(1 / 3)).toBe("33.3%");
  });
});

describe("formatMethod", () => {
  it("names the job's method from hyperparameters.adapter", () => {
    expect(formatMethod(null)).toBe("full");
    expect(formatMethod(undefined)).toBe("full");
    expect(formatMethod({ type: "lora", r: 4, alpha: 8, export: "merged" })).toBe("LoRA r 4 · merged");
    expect(formatMethod({ type: "qlora", r: null, export: "adapter" })).toBe("QLoRA · adapter");
  });
});

describe("formatHardware", () => {
  it("names the job's processes from hyperparameters.distributed", () => {
    expect(formatHardware(null)).toBe("1 process");
    expect(formatHardware({ strategy: "ddp", gpus_per_node: 2, nodes: 1 })).toBe("2 GPUs · ddp");
    expect(formatHardware({ strategy: "fsdp", gpus_per_node: 4, nodes: 2 })).toBe(
      "2 machines × 4 GPUs · fsdp",
    );
    expect(formatHardware({ strategy: "ddp", gpus_per_node: 1, nodes: 3 })).toBe("3 machines × 1 GPU · ddp");
  });
});

describe("formatSchedule", () => {
  it.each([
    [{ type: "wsd", warmup_ratio: 0.01, decay_ratio: 0.1, decay_shape: "linear", min_lr_ratio: 0 }, "WSD (warmup 1%, linear decay over the last 10%)"],
    [{ type: "cosine", warmup_ratio: 0, min_lr_ratio: 0.1 }, "cosine (to 10% of the peak)"],
    [{ type: "constant", warmup_ratio: 0 }, "constant"],
    [null, "—"],
  ])("%j -> %s", (sched, text) => {
    expect(formatSchedule(sched)).toBe(text);
  });
});

describe("formatLr", () => {
  it.each([
    [3e-4, "3e-4"],
    [2.5e-4, "2.5e-4"],
    [1.234e-4, "1.23e-4"],
    [1e-3, "1e-3"],
    [0, "0"],
  ])("%s -> %s", (v, text) => {
    expect(formatLr(v)).toBe(text);
  });
});

describe("formatIntegrations", () => {
  it("names each tracker, W&B with its entity and project", () => {
    expect(formatIntegrations([])).toBe("none");
    expect(formatIntegrations(undefined)).toBe("none");
    expect(
      formatIntegrations([
        { type: "wandb", wandb: { project: "replay", entity: "team-a", name: null, tags: null } },
        { type: "mlflow", mlflow: { experiment: "exp", tracking_uri: null, run_name: null } },
        { type: "tensorboard", tensorboard: {} },
      ]),
    ).toBe("W&B team-a/replay · MLflow exp · TensorBoard");
    expect(formatIntegrations([{ type: "wandb", wandb: { project: "p" } }])).toBe("W&B p");
  });
});
