// How to use a finished job's model where it lives: the code shown under "Use it" on the job
// page, for the downloaded checkpoint (a Hugging Face folder, or a PEFT adapter folder for
// adapter-only exports). The API also serves it (/v1/chat/completions; "Try it" opens the
// Playground on it), and it is the base model of a next job.

/** The folder a checkpoint's tar.gz unpacks to (the download names it `<job>-step-<N>`). */
export function checkpointFolder(jobId: string, step: number): string {
  return `${jobId}-step-${step}`;
}

/** Python that loads the unpacked checkpoint and generates from it. */
export function useItSnippet(opts: { jobId: string; step: number; adapterOnly: boolean }): string {
  const folder = checkpointFolder(opts.jobId, opts.step);
  const load = opts.adapterOnly
    ? [
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        `model = AutoPeftModelForCausalLM.from_pretrained("${folder}")  # also loads the base model its adapter_config.json names`,
      ]
    : [
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        `model = AutoModelForCausalLM.from_pretrained("${folder}")`,
      ];
  return [
    `# tar xzf ${folder}.tar.gz   (the checkpoint's Download button below)`,
    ...load,
    `tokenizer = AutoTokenizer.from_pretrained("${folder}")`,
    'inputs = tokenizer("Question: What is 12 * 7?\\nAnswer:", return_tensors="pt")',
    "output = model.generate(**inputs, max_new_tokens=64)",
    "print(tokenizer.decode(output[0], skip_special_tokens=True))",
  ].join("\n");
}
