import { describe, expect, it } from "vitest";
import { checkpointFolder, useItSnippet } from "./snippet";

describe("use-it snippet", () => {
  it("loads the folder the checkpoint download unpacks to", () => {
    expect(checkpointFolder("ftjob-1", 20)).toBe("ftjob-1-step-20");
    const code = useItSnippet({ jobId: "ftjob-1", step: 20, adapterOnly: false });
    expect(code).toContain('AutoModelForCausalLM.from_pretrained("ftjob-1-step-20")');
    expect(code).toContain("tar xzf ftjob-1-step-20.tar.gz");
    expect(code).not.toContain("peft");
  });

  it("loads an adapter-only checkpoint with peft", () => {
    const code = useItSnippet({ jobId: "ftjob-1", step: 5, adapterOnly: true });
    expect(code).toContain('AutoPeftModelForCausalLM.from_pretrained("ftjob-1-step-5")');
  });
});
