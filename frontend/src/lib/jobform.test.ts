import { describe, expect, it } from "vitest";
import { API_FIELDS, INITIAL_FORM, inputForParam, toRequest, withAdapterType, type JobForm } from "./jobform";

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
      learning_rate: "1e-4",
      lr_scheduler: "cosine",
      batch_size: "8",
      seq_len: "256",
      suffix: "s",
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
