// Webhooks in the public API (/v1/webhooks): their shapes and calls, and the pure logic of the
// settings page (the form's request body, where an error belongs, one line per delivery), kept
// beside the shared client (../api.ts) as the sweeps' are, since only that page uses them.

import type { Client, List, Narrowed, Schemas } from "../api";
import { formatTime } from "../lib/format";

export type Webhook = Schemas["WebhookPublic"];
export type WebhookCreated = Schemas["WebhookCreated"];
export type EventType = Schemas["WebhookPublic"]["events"][number];
export type DeliveryStatus = Schemas["WebhookDeliveryPublic"]["status"];

/** The event as it was posted (the API declares `payload` an open object). */
export interface WebhookEvent {
  id: string;
  object: "event";
  type: EventType;
  created_at: number;
  data: Record<string, unknown> & { id: string };
}

export type Delivery = Narrowed<Schemas["WebhookDeliveryPublic"], { payload: WebhookEvent }>;

/** Every event type, in the API's order, with what it means. The record's type makes the
 * compiler fail when the API gains or loses one. */
const EVENTS: Record<EventType, string> = {
  "fine_tuning.job.succeeded": "a job succeeded",
  "fine_tuning.job.failed": "a job failed",
  "fine_tuning.job.cancelled": "a job was cancelled",
  "fine_tuning.job.checkpoint.created": "every checkpoint a job saves",
  "sweep.completed": "the last job of a sweep finished",
};
export const EVENT_TYPES = Object.keys(EVENTS) as EventType[];
export const describeEvent = (type: EventType) => EVENTS[type];
/** What a new webhook's form starts with: every event but the frequent checkpoints. */
export const DEFAULT_EVENTS = EVENT_TYPES.filter((t) => t !== "fine_tuning.job.checkpoint.created");

export interface WebhookForm {
  url: string;
  description: string;
  events: EventType[];
}

/** The form -> POST /v1/webhooks body: the URL trimmed, events in the API's order, an empty
 * description left out. */
export function webhookRequest(form: WebhookForm): Schemas["WebhookCreate"] {
  const description = form.description.trim();
  return {
    url: form.url.trim(),
    events: EVENT_TYPES.filter((t) => form.events.includes(t)),
    ...(description ? { description } : {}),
  };
}

/** The form field an error's `param` names: `events[2]` is the events checkboxes; null for an
 * error that belongs above the form. */
export function formField(param: string | null): keyof WebhookForm | null {
  if (!param) return null;
  const field = param.replace(/\[\d+\]$/, "");
  return field === "url" || field === "description" || field === "events" ? field : null;
}

/** One delivery's outcome, in words. */
export function deliveryOutcome(d: Delivery): string {
  const tries = `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`;
  const last = d.last_error ?? (d.last_status_code ? `HTTP ${d.last_status_code}` : "");
  if (d.status === "delivered") return `Delivered ${formatTime(d.delivered_at)} (${tries})`;
  if (d.status === "failed") return `Gave up after ${tries}: ${last}`;
  if (d.attempts === 0) return "Waiting to be sent";
  // pending after a 2xx: redelivered, by request
  if (!d.last_error) return `Sending again (${tries} so far, the last answered ${last})`;
  return `Retrying ${formatTime(d.next_attempt_at)} after ${tries}: ${last}`;
}

export const webhooksApi = (client: Client) => ({
  list: () => client.request<List<Webhook>>("GET", "/v1/webhooks?limit=100"),
  create: (body: Schemas["WebhookCreate"]) => client.request<WebhookCreated>("POST", "/v1/webhooks", body),
  update: (id: string, body: Schemas["WebhookUpdate"]) =>
    client.request<Webhook>("PATCH", `/v1/webhooks/${id}`, body),
  remove: (id: string) => client.request<Schemas["DeletedResponse"]>("DELETE", `/v1/webhooks/${id}`),
  deliveries: (id: string) => client.request<List<Delivery>>("GET", `/v1/webhooks/${id}/deliveries?limit=50`),
  redeliver: (id: string, deliveryId: string) =>
    client.request<Delivery>("POST", `/v1/webhooks/${id}/deliveries/${deliveryId}/redeliver`),
});
