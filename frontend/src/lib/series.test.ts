import { describe, expect, it } from "vitest";
import type { MetricRecord } from "../api";
import {
  alignRunsOn,
  alignSeries,
  detectSpike,
  differingSettings,
  lastValue,
  lossVsFraction,
  mergeRecords,
  smoothed,
  stepToX,
} from "./series";

const train = (step: number, target: number | null, generic: number | null = null): MetricRecord => ({
  type: "train",
  step,
  train_loss_target: target,
  train_loss_generic: generic,
  lr: step * 1e-4,
});
const evalAt = (step: number, target: number): MetricRecord => ({ type: "eval", step, val_loss_target: target });

describe("alignSeries", () => {
  it("puts train and eval values of the same step in one row, null where a series is missing", () => {
    const records = [train(1, 3.0, 4.0), train(2, 2.9, null), evalAt(2, 3.1), train(3, 2.8, 3.9)];
    expect(alignSeries(records, ["train_loss_target", "train_loss_generic", "val_loss_target"])).toEqual([
      [1, 2, 3],
      [3.0, 2.9, 2.8],
      [4.0, null, 3.9],
      [null, 3.1, null],
    ]);
  });

  it("sorts steps and leaves out steps that carry none of the names", () => {
    const records = [evalAt(10, 2.5), train(5, 3), { type: "train", step: 7, lr: 1 } as MetricRecord];
    expect(alignSeries(records, ["val_loss_target", "train_loss_target"])).toEqual([
      [5, 10],
      [null, 2.5],
      [3, null],
    ]);
  });

  it("aligns 50,000 steps in one pass", () => {
    const records = Array.from({ length: 50_000 }, (_, i) => train(i + 1, 3 - i * 1e-5, 4));
    const [x, target, generic] = alignSeries(records, ["train_loss_target", "train_loss_generic"]);
    expect(x.length).toBe(50_000);
    expect(x[49_999]).toBe(50_000);
    expect(target[0]).toBe(3);
    expect(generic.every((v) => v === 4)).toBe(true);
  });

  it("drops non-finite values", () => {
    const r = { type: "train", step: 1, train_loss_target: Number.NaN } as MetricRecord;
    expect(alignSeries([r, train(2, 1)], ["train_loss_target"])).toEqual([[2], [1]]);
  });
});

describe("mergeRecords", () => {
  it("keeps one record per (type, step), the newest winning, in step order", () => {
    const merged = mergeRecords([train(2, 2.0), train(1, 3.0)], [train(2, 2.5), evalAt(2, 3.3)]);
    expect(merged.map((r) => [r.type, r.step])).toEqual([["train", 1], ["train", 2], ["eval", 2]]);
    expect(merged[1].train_loss_target).toBe(2.5);
  });

  it("ignores summary records", () => {
    const summary = { type: "summary", step: 3 } as MetricRecord;
    expect(mergeRecords([], [summary, train(1, 1)])).toHaveLength(1);
  });
});

describe("detectSpike", () => {
  it("measures the rise above the first target loss until it is back at or below it", () => {
    const records = [train(1, null, 5), train(2, 3.0), train(3, 3.4), train(4, 3.6), train(5, 3.2), train(6, 2.9), train(7, 4.0)];
    expect(detectSpike(records)).toEqual({
      initial_loss: 3.0,
      peak_loss: 3.6,
      peak_step: 4,
      height: expect.closeTo(0.6, 10),
      recovered_step: 6,
      duration: 4,
    });
  });

  it("reports an unrecovered spike and no spike without target data", () => {
    const open = detectSpike([train(1, 2.0), train(2, 2.5)]);
    expect(open?.recovered_step).toBeNull();
    expect(open?.duration).toBeNull();
    expect(detectSpike([train(1, null, 4)])).toBeNull();
  });

  it("gives height 0 when the loss only falls", () => {
    const s = detectSpike([train(1, 3), train(2, 2.5)]);
    expect(s).toMatchObject({ height: 0, peak_step: 1, recovered_step: 2 });
  });

  it("ignores eval records", () => {
    expect(detectSpike([evalAt(1, 9)])).toBeNull();
  });
});

describe("alignRunsOn / stepToX / lossVsFraction / lastValue", () => {
  it("overlays jobs on the union of their steps", () => {
    const byStep = (s: number) => s;
    const a = { records: [evalAt(10, 3), evalAt(20, 2.5)], x: byStep };
    const b = { records: [evalAt(15, 3.2), evalAt(20, 2.7)], x: byStep };
    expect(alignRunsOn([a, b], "val_loss_target")).toEqual([
      [10, 15, 20],
      [3, null, 2.5],
      [null, 3.2, 2.7],
    ]);
  });

  it("puts each run's steps on tokens, target epochs or training time", () => {
    const hp = { batch_size: 4, seq_len: 64, n_epochs: 2 };
    // stage 1: steps 0-10 with 1,000 target tokens; stage 2: steps 10-30 with 3,000
    const stages = [
      { start_step: 0, end_step: 10, steps: 10, target_tokens: 1000 },
      { start_step: 10, end_step: 30, steps: 20, target_tokens: 3000 },
    ];
    const records = [
      { type: "train", step: 1, step_time: 0.5 },
      { type: "train", step: 2, step_time: 0.5 },
      { type: "train", step: 10, step_time: 1 }, // thinned: 8 steps at 1 s since step 2
      { type: "eval", step: 10, val_loss_target: 2 },
    ] as MetricRecord[];
    const run = { hyperparameters: hp, stages, records };
    expect(stepToX(run, "step")(7)).toBe(7);
    expect(stepToX(run, "tokens")(10)).toBe(2560);
    const epochs = stepToX(run, "epochs");
    expect([epochs(0), epochs(10), epochs(20), epochs(30)]).toEqual([0, 0.5, 1.25, 2]);
    const time = stepToX(run, "time");
    expect([time(0), time(2), time(10), time(12)]).toEqual([null, 1, 9, 9]);
    expect(stepToX({ hyperparameters: {}, records: [] }, "tokens")(5)).toBeNull();
    // two runs on one axis: each at its own x
    const other = { hyperparameters: { ...hp, batch_size: 8 }, stages, records };
    expect(
      alignRunsOn(
        [run, other].map((r) => ({ records: r.records, x: stepToX(r, "tokens") })),
        "val_loss_target",
      ),
    ).toEqual([
      [2560, 5120],
      [2, null],
      [null, 2],
    ]);
  });

  it("lists only the settings in which runs differ", () => {
    expect(
      differingSettings([
        { settings: { r: 0, seed: 1, model: "m", adapter: null } },
        { settings: { r: 0.25, seed: 1, model: "m", adapter: { r: 4 } } },
      ]),
    ).toEqual([
      ["r", ["0", "0.25"]],
      ["adapter", ["—", '{"r":4}']],
    ]);
  });

  it("sorts by fraction, counts no replay as r = 0 and leaves out jobs without a final loss", () => {
    expect(
      lossVsFraction([
        { fraction: 0.5, finalLoss: 2.1 },
        { fraction: undefined, finalLoss: 2.4 },
        { fraction: 0.25, finalLoss: null },
        { fraction: 0.25, finalLoss: 2.2 },
      ]),
    ).toEqual([
      [0, 0.25, 0.5],
      [2.4, 2.2, 2.1],
    ]);
  });

  it("finds the last value of a metric", () => {
    expect(lastValue([evalAt(1, 3), train(2, 1), evalAt(3, 2)], "val_loss_target")).toBe(2);
    expect(lastValue([train(1, 1)], "val_loss_target")).toBeNull();
  });
});

describe("smoothed", () => {
  it("averages each column, starts at the data and keeps the gaps", () => {
    const [x, a] = smoothed([[1, 2, 3, 4], [4, null, 2, 2]], 0.5);
    expect(x).toEqual([1, 2, 3, 4]);
    expect(a[0]).toBeCloseTo(4);
    expect(a[1]).toBeNull();
    expect(a[2]).toBeCloseTo((0.5 * 0.5 * 4 + 0.5 * 2) / 0.75); // 2.667
    expect(smoothed([[1], [3]], 0)).toEqual([[1], [3]]);
  });
});
