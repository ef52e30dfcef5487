import { describe, expect, it } from "vitest";
import { DEFAULT_EVENTS, EVENT_TYPES, deliveryOutcome, formField, webhookRequest, type Delivery } from "./api";

function delivery(patch: Partial<Delivery>): Delivery {
  return {
    id: "whdel-1",
    webhook_id: "wh-1",
    event_id: "evt-1",
    event_type: "fine_tuning.job.succeeded",
    status: "pending",
    attempts: 0,
    created_at: 1_800_000_000,
    next_attempt_at: 1_800_000_000,
    last_attempt_at: null,
    last_status_code: null,
    last_error: null,
    delivered_at: null,
    payload: { id: "evt-1", object: "event", type: "fine_tuning.job.succeeded", created_at: 1, data: { id: "ftjob-1" } },
    ...patch,
  };
}

describe("webhookRequest", () => {
  it("trims, orders the events as the API lists them and leaves out an empty description", () => {
    const body = webhookRequest({
      url: "  https://ci.example.com/hook ",
      description: "  ",
      events: ["sweep.completed", "fine_tuning.job.failed"],
    });
    expect(body).toEqual({ url: "https://ci.example.com/hook", events: ["fine_tuning.job.failed", "sweep.completed"] });
    expect(webhookRequest({ url: "x", description: " CI ", events: [] }).description).toBe("CI");
  });

  it("starts with every event but the checkpoints", () => {
    expect(EVENT_TYPES).toHaveLength(5);
    expect(DEFAULT_EVENTS).not.toContain("fine_tuning.job.checkpoint.created");
    expect(DEFAULT_EVENTS).toHaveLength(4);
  });
});

describe("formField", () => {
  it.each([
    ["url", "url"],
    ["events[3]", "events"],
    ["events", "events"],
    ["description", "description"],
    ["secret", null],
    [null, null],
  ])("%s -> %s", (param, field) => expect(formField(param)).toBe(field));
});

describe("deliveryOutcome", () => {
  it("says what happened and what happens next", () => {
    expect(deliveryOutcome(delivery({}))).toBe("Waiting to be sent");
    expect(deliveryOutcome(delivery({ status: "delivered", attempts: 1, delivered_at: 1_800_000_000 }))).toMatch(
      /^Delivered .* \(1 attempt\)$/,
    );
    expect(deliveryOutcome(delivery({ attempts: 3, last_status_code: 503, last_error: "The receiver answered HTTP 503." }))).toMatch(
      /^Retrying .* after 3 attempts: The receiver answered HTTP 503\.$/,
    );
    expect(deliveryOutcome(delivery({ attempts: 1, last_status_code: 204 }))).toBe(
      "Sending again (1 attempt so far, the last answered HTTP 204)",
    );
    expect(deliveryOutcome(delivery({ status: "failed", attempts: 17, last_error: "ConnectError: refused" }))).toBe(
      "Gave up after 17 attempts: ConnectError: refused",
    );
  });
});
