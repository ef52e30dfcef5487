import { describe, expect, it } from "vitest";
import type { Job } from "../api";
import {
  API_FIELDS,
  INITIAL_FORM,
  LABELS,
  formFromJob,
  formMessage,
  inputForParam,
  toRequest,
  withAdapterType,
  type JobForm,
} from "./jobform";

const form = (changes: Partial<JobForm>): JobForm => ({
  ...INITIAL_FORM,
  training_file: "file-t",
  ...changes,
});
const hyper = (f: JobForm) => toRequest(f).method.supervised.hyperparameters;

describe("new-job form -> request body", () => {
  it("posts the body it always did when untouched: full fine-tuning, one process", () => {
    expect(toRequest(form({}))).toEqual({
      model: "replayft/llama-tiny",
      training_file: "file-t",
      method: { type: "supervised", supervised: { hyperparameters: { lr_scheduler: { type: "wsd" } } } },
    });
  });

  it("leaves empty fields out and sends replay only with a dataset", () => {
    const body = toRequest(
      form({ replay_dataset: "file-r", stage2_duration: "", n_epochs: "0.6", suffix: " mine ", batch_size: "4" }),
    );
    expect(body.replay).toEqual({ dataset: "file-r", fraction: 0.25, target_stage2_allocation: 1 });
    expect(body.suffix).toBe("mine");
    expect(body.method.supervised.hyperparameters).toEqual({
      n_epochs: 0.6,
      batch_size: 4,
      lr_scheduler: { type: "wsd" },
    });
  });

  it("sends LoRA as hyperparameters.adapter, empty knobs left to the engine", () => {
    expect(toRequest(form({ adapter_type: "lora", adapter_r: "8", adapter_export: "adapter" }))).toEqual({
      model: "replayft/llama-tiny",
      training_file: "file-t",
      method: {
        type: "supervised",
        supervised: {
          hyperparameters: {
            lr_scheduler: { type: "wsd" },
            adapter: { type: "lora", r: 8, export: "adapter" },
          },
        },
      },
    });
    expect(hyper(form({ adapter_type: "qlora", adapter_alpha: "16", adapter_export: "adapter" })).adapter).toEqual({
      type: "qlora",
      alpha: 16,
      export: "adapter",
    });
  });

  it("sends the adapter's dropout and target modules (a list, or all-linear)", () => {
    const adapter = (fields: Partial<JobForm>) => hyper(form({ adapter_type: "lora", ...fields })).adapter;
    expect(adapter({ adapter_dropout: "0.1", adapter_target_modules: "q_proj, v_proj" })).toEqual({
      type: "lora",
      dropout: 0.1,
      target_modules: ["q_proj", "v_proj"],
      export: "merged",
    });
    expect(adapter({ adapter_target_modules: " self_attn.q_proj  mlp.down_proj," })).toHaveProperty(
      "target_modules",
      ["self_attn.q_proj", "mlp.down_proj"],
    );
    expect(adapter({ adapter_target_modules: "all-linear" })).toHaveProperty("target_modules", "all-linear");
    expect(adapter({ adapter_target_modules: " , " })).not.toHaveProperty("target_modules");
  });

  it("forgets the adapter knobs when the method goes back to full", () => {
    expect(hyper(form({ adapter_type: "full", adapter_r: "8", adapter_alpha: "4" }))).not.toHaveProperty("adapter");
  });

  it("sends several machines as hyperparameters.distributed", () => {
    expect(hyper(form({ nodes: "2", gpus_per_node: "4", strategy: "fsdp" })).distributed).toEqual({
      strategy: "fsdp",
      gpus_per_node: 4,
      nodes: 2,
    });
    // any one hardware field is enough; the others stay the engine's defaults
    expect(hyper(form({ gpus_per_node: "2" })).distributed).toEqual({ strategy: "ddp", gpus_per_node: 2 });
    expect(hyper(form({ strategy: "fsdp" })).distributed).toEqual({ strategy: "fsdp" });
    expect(hyper(form({ gpus_per_node: " ", nodes: "" }))).not.toHaveProperty("distributed");
  });

  it("switches QLoRA to adapter-only checkpoints (it cannot merge) and back", () => {
    const qlora = withAdapterType(form({}), "qlora");
    expect([qlora.adapter_type, qlora.adapter_export]).toEqual(["qlora", "adapter"]);
    const lora = withAdapterType(qlora, "lora");
    expect([lora.adapter_type, lora.adapter_export]).toEqual(["lora", "merged"]);
    const kept = withAdapterType(form({ adapter_type: "lora", adapter_export: "adapter" }), "full");
    expect(kept.adapter_export).toBe("adapter");
  });
});

describe("API error param -> the input it belongs to", () => {
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
    // the engine's checks name hyperparameters short, the request schema's by where they were sent
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
  ])("%s -> %s", (param, input) => {
    expect(inputForParam(param)).toBe(input);
  });

  it("has no input for unknown or missing params", () => {
    expect(inputForParam("hyperparameters.eval_interval")).toBeNull();
    expect(inputForParam(null)).toBeNull();
    expect(inputForParam("metadata")).toBeNull();
    expect(inputForParam("hyperparameters.constructor")).toBeNull();
    expect(inputForParam("hyperparameters.distributed")).toBeNull(); // no one input holds it all
    expect(inputForParam("adapter.r")).toBeNull(); // not under hyperparameters
  });

  it("names for each input a field the request really carries", () => {
    // every input away from its default: each must put a value where API_FIELDS says it does
    const filled = form({
      validation_file: "file-v",
      replay_dataset: "file-r",
      stage2_duration: "0.2",
      n_epochs: "2",
      total_steps: "50",
      learning_rate: "1e-4",
      lr_scheduler: "cosine",
      batch_size: "8",
      seq_len: "256",
      suffix: "s",
      seed: "3",
      adapter_type: "lora",
      adapter_r: "8",
      adapter_alpha: "16",
      adapter_dropout: "0.1",
      adapter_target_modules: "q_proj",
      adapter_export: "adapter",
      gpus_per_node: "2",
      nodes: "2",
      strategy: "fsdp",
    });
    const { method, ...rest } = toRequest(filled);
    const sent: Record<string, unknown> = { ...rest, hyperparameters: method.supervised.hyperparameters };
    const at = (path: string) =>
      path.split(".").reduce<unknown>((obj, key) => (obj as Record<string, unknown> | undefined)?.[key], sent);
    for (const [input, field] of Object.entries(API_FIELDS)) {
      expect(at(field), `${input} -> ${field}`).toBeDefined();
      expect(inputForParam(field)).toBe(input);
    }
    expect(Object.keys(API_FIELDS).sort()).toEqual(Object.keys(INITIAL_FORM).sort());
  });
});

describe("API messages in the form's words", () => {
  it("drops the field path, names fields by their labels and reads comparisons as words", () => {
    expect(formMessage("replay.stage2_duration: needed with target_stage2_allocation < 1 unless total_steps is set")).toBe(
      "Needed when “Stage-2 target share a” is below 1, unless “Total steps” is set.",
    );
    expect(formMessage("replay.fraction: Input should be less than 1")).toBe("Must be less than 1.");
    expect(formMessage("hyperparameters.adapter.r: Input should be greater than or equal to 1")).toBe(
      "Must be greater than or equal to 1.",
    );
    expect(formMessage("replay.target_stage2_allocation: must be > 0 (stage 2 needs target data)")).toBe(
      "Must be above 0 (stage 2 needs target data)",
    );
    // a name the form has no input for stays as the API wrote it
    expect(formMessage("hyperparameters.lr_scheduler.decay_ratio: warmup_ratio + decay_ratio must be <= 1")).toBe(
      "Warmup_ratio + decay_ratio must be at most 1.",
    );
    expect(formMessage("File file-1 is still being validated.")).toBe("File file-1 is still being validated.");
  });

  it("has a label for every input", () => {
    expect(Object.keys(LABELS).sort()).toEqual(Object.keys(INITIAL_FORM).sort());
  });
});

describe("clone: a job back into the form", () => {
  // the job object as GET /v1/fine_tuning/jobs/{id} shows a LoRA replay job (resolved values)
  const job = {
    id: "ftjob-1",
    model: "replayft/llama-tiny",
    training_file: "file-t",
    validation_file: null,
    suffix: "mine",
    seed: 7,
    hyperparameters: {
      n_epochs: 0.6,
      batch_size: 4,
      seq_len: 64,
      learning_rate: 0.0003,
      total_steps: 21,
      lr_scheduler: { type: "cosine", warmup_ratio: 0.01 },
      adapter: { type: "lora", r: 4, alpha: 8, dropout: 0.1, target_modules: ["q_proj", "v_proj"], export: "merged" },
      distributed: null,
    },
    replay: { dataset: "file-r", fraction: 0.25, target_stage2_allocation: 0.8, stage2_duration: 0.7 },
  } as unknown as Job;

  it("fills every input the job set, and posts the same knobs again", () => {
    const form = formFromJob(job);
    expect(form).toMatchObject({
      training_file: "file-t",
      replay_dataset: "file-r",
      fraction: "0.25",
      target_stage2_allocation: "0.8",
      stage2_duration: "0.7",
      n_epochs: "0.6",
      total_steps: "", // follows from the epochs again
      lr_scheduler: "cosine",
      suffix: "mine",
      seed: "7",
      adapter_type: "lora",
      adapter_target_modules: "q_proj, v_proj",
      gpus_per_node: "",
    });
    const body = toRequest(form);
    expect(body.replay).toEqual({ dataset: "file-r", fraction: 0.25, target_stage2_allocation: 0.8, stage2_duration: 0.7 });
    expect(body.seed).toBe(7);
    expect(body.method.supervised.hyperparameters).toMatchObject({ n_epochs: 0.6, batch_size: 4, seq_len: 64 });
    expect(body.method.supervised.hyperparameters.adapter).toMatchObject({ type: "lora", r: 4, target_modules: ["q_proj", "v_proj"] });
  });

  it("gives d only where a < 1 needs it, and no replay without a dataset", () => {
    const oneStage = formFromJob({ ...job, replay: { dataset: "file-r", fraction: 0.5, target_stage2_allocation: 1, stage2_duration: 0.9 } } as Job);
    expect(oneStage.stage2_duration).toBe("");
    const none = formFromJob({ ...job, replay: null } as Job);
    expect(none.replay_dataset).toBe("");
    expect(toRequest(none).replay).toBeUndefined();
  });
});
