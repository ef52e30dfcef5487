// Human-readable numbers for the tables and cards.

import type { Schemas } from "../api";

export function formatEta(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0)
    return "—";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

export function formatCount(n: number | null | undefined): string {
  if (n === null || n === undefined) return "—";
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(abs >= 1e10 ? 0 : 1)}B`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(abs >= 1e7 ? 0 : 1)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(0)}k`;
  return String(n);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) [v, i] = [v / 1024, i + 1];
  return `${v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

export function formatLoss(v: number | null | undefined): string {
  return v === null || v === undefined ? "—" : v.toFixed(4);
}

/** A learning rate with no trailing zeros, so axis ticks read: 3e-4, 2.5e-4, 1.23e-4. */
export function formatLr(v: number): string {
  return v === 0 ? "0" : v.toExponential(2).replace(/\.?0+e/, "e");
}

export function formatPercent(v: number | null | undefined): string {
  return v === null || v === undefined ? "—" : `${Math.round(v * 1000) / 10}%`;
}

export function formatTime(unixSeconds: number | null | undefined): string {
  if (!unixSeconds) return "—";
  return new Date(unixSeconds * 1000).toLocaleString(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

export function statusLabel(status: string): string {
  return status.replace(/_/g, " ");
}

/** A job's `hyperparameters.adapter` (null for full fine-tuning) as one line: "LoRA r 4 · merged". */
export function formatMethod(adapter: unknown): string {
  if (!adapter || typeof adapter !== "object") return "full";
  const { type, r, export: saved } = adapter as {
    type?: string;
    r?: number | null;
    export?: string | null;
  };
  const name = type === "qlora" ? "QLoRA" : type === "lora" ? "LoRA" : String(type);
  return [r == null ? name : `${name} r ${r}`, saved].filter(Boolean).join(" · ");
}

/** A job's `hyperparameters.distributed` (null for one process) as "2 machines × 4 GPUs · fsdp". */
export function formatHardware(distributed: unknown): string {
  if (!distributed || typeof distributed !== "object") return "1 process";
  const { strategy, gpus_per_node: perNode = 1, nodes = 1 } = distributed as {
    strategy?: string;
    gpus_per_node?: number;
    nodes?: number;
  };
  const gpus = `${perNode} GPU${perNode === 1 ? "" : "s"}`;
  const where = nodes > 1 ? `${nodes} machines × ${gpus}` : gpus;
  return [where, strategy].filter(Boolean).join(" · ");
}

/** A job's `hyperparameters.lr_scheduler` as one line: "WSD (warmup 1%, linear decay over the
 * last 10%)", "cosine (warmup 1%)", "constant". */
export function formatSchedule(scheduler: unknown): string {
  if (!scheduler || typeof scheduler !== "object") return "—";
  const s = scheduler as {
    type?: string;
    warmup_ratio?: number | null;
    decay_ratio?: number | null;
    decay_shape?: string | null;
    min_lr_ratio?: number | null;
  };
  const parts: string[] = [];
  if (s.warmup_ratio) parts.push(`warmup ${formatPercent(s.warmup_ratio)}`);
  if (s.type === "wsd" && s.decay_ratio)
    parts.push(`${s.decay_shape ?? "linear"} decay over the last ${formatPercent(s.decay_ratio)}`);
  if (s.min_lr_ratio) parts.push(`to ${formatPercent(s.min_lr_ratio)} of the peak`);
  const name = s.type === "wsd" ? "WSD" : String(s.type ?? "—");
  return parts.length ? `${name} (${parts.join(", ")})` : name;
}

type Integration = Schemas["JobPublic"]["integrations"] extends (infer I)[] | undefined ? I : never;

/** A job's experiment trackers as one line: "W&B team-a/replay · MLflow replay-exp · TensorBoard". */
export function formatIntegrations(integrations: Integration[] | null | undefined): string {
  if (!integrations?.length) return "none";
  return integrations
    .map((item) => {
      if (item.type === "wandb") {
        const { entity, project } = item.wandb;
        return `W&B ${entity ? `${entity}/` : ""}${project}`;
      }
      if (item.type === "mlflow") return `MLflow ${item.mlflow?.experiment ?? "replayft"}`;
      return "TensorBoard";
    })
    .join(" · ");
}
