// Usage: the API's per-team, per-day rows (GET /v1/usage) summed per team for the Usage page.

import type { Schemas } from "../api";

export type UsageDay = Schemas["UsageDay"];

export interface TeamTotals {
  team: string;
  jobsCreated: number;
  jobsSucceeded: number;
  jobsFailed: number;
  jobsCancelled: number;
  trainedTokens: number;
  gpuHours: number;
}

/** One row per team (in the order the teams first appear), summing its days. */
export function totalsByTeam(days: UsageDay[]): TeamTotals[] {
  const totals = new Map<string, TeamTotals>();
  for (const d of days) {
    const t = totals.get(d.team_id) ?? {
      team: d.team,
      jobsCreated: 0,
      jobsSucceeded: 0,
      jobsFailed: 0,
      jobsCancelled: 0,
      trainedTokens: 0,
      gpuHours: 0,
    };
    t.jobsCreated += d.jobs_created ?? 0;
    t.jobsSucceeded += d.jobs_succeeded ?? 0;
    t.jobsFailed += d.jobs_failed ?? 0;
    t.jobsCancelled += d.jobs_cancelled ?? 0;
    t.trainedTokens += d.trained_tokens ?? 0;
    t.gpuHours += (d.gpu_seconds ?? 0) / 3600;
    totals.set(d.team_id, t);
  }
  return [...totals.values()];
}

/** The YYYY-MM-DD (UTC) `days` days before `now`: the default start of the window. */
export function daysAgo(days: number, now: Date = new Date()): string {
  return new Date(now.getTime() - days * 86_400_000).toISOString().slice(0, 10);
}

/** "used / limit" for a team's monthly quota; "no limit" when it has none. */
export function quotaLabel(used: number, limit: number | null | undefined, format: (n: number) => string): string {
  if (limit === null || limit === undefined) return `${format(used)} (no limit)`;
  return `${format(used)} of ${format(limit)} (${Math.round((used / limit) * 100)}%)`;
}
