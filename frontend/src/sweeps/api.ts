// Sweeps in the public API (/v1/sweeps): their shapes and calls, kept beside the shared client
// (../api.ts) rather than in it, since only the sweep pages use them.

import type { Client, JobStatus, List, Narrowed, Schemas } from "../api";

export type SweepStatus = Schemas["SweepPublic"]["status"];

export type SweepMember = Schemas["SweepMemberPublic"];

/** A sweep's member jobs counted by outcome (the API declares `counts` as name -> number). */
export interface Counts {
  total: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  unfinished: number;
}

export type Sweep = Narrowed<Schemas["SweepPublic"], { counts: Counts }>;

// The report's parts are open objects in the API's schema (api.services.sweep_report builds
// them): narrowed here to what the sweep page reads.

export interface Fit {
  A: number | null;
  B: number | null;
  C: number | null;
  alpha: number;
  beta: number;
  method: "power" | "log-linear";
  degenerate: boolean;
  formula: string;
}

interface MemberRow {
  job_id: string;
  status: JobStatus;
  final_val_loss_target: number | null;
  final_val_loss_generic: number | null;
  /** final - initial generic val loss (positive: forgetting) */
  generic_change?: number | null;
  /** final accuracy per task eval name (the report's eval_names) */
  eval_scores?: Record<string, number | null>;
  error: { message: string } | null;
}

export interface ReferencePoint extends MemberRow {
  target_subset_fraction: number;
  target_sequences: number | null;
  x: number;
}

export interface Configuration extends MemberRow {
  replay_fraction: number;
  target_stage2_allocation: number | null;
  is_baseline: boolean;
  loss_spike_height: number | null;
  x_eq: number | null;
  multiplier: number | null;
  multiplier_method: string | null;
  /** the middle 90% of the multiplier over refits of the reference curve to its own scatter */
  multiplier_interval: { low: number; high: number; level: number; resamples: number } | null;
  /** the multiplier went through the log-linear fallback (a degenerate power-law fit) */
  multiplier_degenerate: boolean | null;
}

export type SweepReport = Narrowed<Schemas["SweepReport"], {
  counts: Counts;
  reference: { x_unit: string; points: ReferencePoint[]; fit: Fit | null; fit_error: string | null };
  baseline: (MemberRow & { x_eq: number | null }) | null;
  configurations: Configuration[];
  recommendation: {
    replay_fraction: number;
    target_stage2_allocation: number | null;
    job_id: string;
    final_val_loss_target: number;
    multiplier: number | null;
    provisional: boolean;
    reason: string;
  } | null;
  explain: Record<string, string>;
}>;

/** What POST /v1/sweeps/plan answers: the members a request would launch, with their steps. */
export interface SweepPlan {
  members: {
    replay_fraction: number;
    target_subset_fraction: number;
    target_stage2_allocation: number | null;
    roles: string[];
    estimated_steps: number | null;
  }[];
  member_count: number;
  total_estimated_steps: number | null;
}

/** A list typed as "0, 0.25, 0.5" -> numbers; null when an item is not a number. */
export function parseList(text: string): number[] | null {
  const items = text.split(/[\s,]+/).filter(Boolean);
  const values = items.map(Number);
  return values.every((v) => Number.isFinite(v)) ? values : null;
}

/** A sweep request from a job request: the replay values become lists. */
export function sweepRequest(
  job: Record<string, unknown>,
  fractions: number[],
  subsets: number[],
): Record<string, unknown> {
  const { replay, suffix: _suffix, ...rest } = job as { replay?: Record<string, unknown>; suffix?: unknown };
  const { fraction: _f, target_stage2_allocation: _a, stage2_duration: _d, ...sweepReplay } = replay ?? {};
  return { ...rest, replay: sweepReplay, replay_fractions: fractions, reference_subsets: subsets };
}

export const sweepsApi = (client: Client) => ({
  plan: (body: unknown, signal?: AbortSignal) =>
    client.request<SweepPlan>("POST", "/v1/sweeps/plan", body, signal),
  create: (body: unknown) => client.request<Sweep>("POST", "/v1/sweeps", body),
  list: () => client.request<List<Sweep>>("GET", "/v1/sweeps?limit=100"),
  get: (id: string) => client.request<Sweep>("GET", `/v1/sweeps/${id}`),
  report: (id: string) => client.request<SweepReport>("GET", `/v1/sweeps/${id}/report`),
  cancel: (id: string) => client.request<Sweep>("POST", `/v1/sweeps/${id}/cancel`),
});

export const SWEEP_FINISHED: SweepStatus[] = ["succeeded", "failed", "cancelled"];
