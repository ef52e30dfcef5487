import { describe, expect, it } from "vitest";
import { daysAgo, quotaLabel, totalsByTeam, type UsageDay } from "./usage";

const day = (team: string, date: string, extra: Partial<UsageDay>): UsageDay => ({
  team_id: `org-${team}`,
  team,
  date,
  ...extra,
});

describe("totalsByTeam", () => {
  it("sums each team's days and turns GPU-seconds into hours", () => {
    const rows = totalsByTeam([
      day("a", "2026-11-02", { jobs_created: 3, jobs_failed: 1, gpu_seconds: 1800 }),
      day("b", "2026-11-02", { jobs_created: 1, trained_tokens: 10 }),
      day("a", "2026-11-03", { jobs_succeeded: 2, trained_tokens: 1007, gpu_seconds: 21600 }),
    ]);
    expect(rows).toEqual([
      { team: "a", jobsCreated: 3, jobsSucceeded: 2, jobsFailed: 1, jobsCancelled: 0, trainedTokens: 1007, gpuHours: 6.5 },
      { team: "b", jobsCreated: 1, jobsSucceeded: 0, jobsFailed: 0, jobsCancelled: 0, trainedTokens: 10, gpuHours: 0 },
    ]);
  });
});

describe("daysAgo and quotaLabel", () => {
  it("counts back whole UTC days", () => {
    expect(daysAgo(30, new Date("2026-12-04T18:00:00Z"))).toBe("2026-11-04");
  });
  it("shows use against a limit, or that there is none", () => {
    expect(quotaLabel(250, 1000, String)).toBe("250 of 1000 (25%)");
    expect(quotaLabel(5, null, String)).toBe("5 (no limit)");
  });
});
