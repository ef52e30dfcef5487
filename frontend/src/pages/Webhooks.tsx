// Webhooks (settings): the team's endpoints for job and sweep events, a form to add one (its
// signing secret shown once, right after), delete, and each one's delivery log with status,
// attempts and last error, and a Redeliver button. The log refreshes while a delivery is pending.

import { Fragment, useState, type FormEvent } from "react";
import { ApiError } from "../api";
import { useClient, useOnError } from "../auth";
import { CopyButton, Empty, ErrorNote, Loading } from "../components/ui";
import { usePolled } from "../hooks";
import { formatTime } from "../lib/format";
import {
  DEFAULT_EVENTS,
  EVENT_TYPES,
  deliveryOutcome,
  describeEvent,
  formField,
  webhookRequest,
  webhooksApi,
  type Webhook,
  type WebhookCreated,
  type WebhookForm,
} from "../webhooks/api";

const PENDING_MS = 3000;
const EMPTY_FORM: WebhookForm = { url: "", description: "", events: DEFAULT_EVENTS };

export function WebhooksPage() {
  const client = useClient();
  const onError = useOnError();
  const api = webhooksApi(client);
  const hooks = usePolled(() => api.list(), [client]);
  const [form, setForm] = useState<WebhookForm>(EMPTY_FORM);
  const [errors, setErrors] = useState<Partial<Record<keyof WebhookForm, string>>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState<WebhookCreated | null>(null);
  const [open, setOpen] = useState<string | null>(null); // the webhook whose log is shown

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    try {
      const made = await api.create(webhookRequest(form));
      setCreated(made);
      setForm(EMPTY_FORM);
      setErrors({});
      setGeneral(null);
      hooks.reload();
    } catch (err) {
      const message = onError(err);
      const field = err instanceof ApiError ? formField(err.param) : null;
      setErrors(field ? { [field]: message } : {});
      setGeneral(field ? null : message);
    } finally {
      setBusy(false);
    }
  }

  async function remove(hook: Webhook) {
    if (!window.confirm(`Delete the webhook to ${hook.url}? Its delivery log goes with it.`)) return;
    try {
      await api.remove(hook.id);
      if (created?.id === hook.id) setCreated(null);
      setGeneral(null);
      hooks.reload();
    } catch (err) {
      setGeneral(onError(err));
    }
  }

  // Disabled: new events record nothing for it, and its pending deliveries wait until it is
  // enabled again (the API's PATCH).
  async function setEnabled(hook: Webhook, enabled: boolean) {
    try {
      await api.update(hook.id, { enabled });
      setGeneral(null);
      hooks.reload();
    } catch (err) {
      setGeneral(onError(err));
    }
  }

  const toggleEvent = (type: (typeof EVENT_TYPES)[number]) =>
    setForm((f) => ({
      ...f,
      events: f.events.includes(type) ? f.events.filter((t) => t !== type) : [...f.events, type],
    }));

  return (
    <section>
      <h1>Webhooks</h1>
      <p className="muted">
        ReplayFT posts an event to each of your team's webhooks when a job succeeds, fails or is cancelled,
        when a sweep completes and, if asked, at every checkpoint. Requests are signed the{" "}
        <a href="https://www.standardwebhooks.com/" target="_blank" rel="noreferrer">
          Standard Webhooks
        </a>{" "}
        way (<code>webhook-id</code>, <code>webhook-timestamp</code>, <code>webhook-signature</code>); a delivery
        that does not get a 2xx is retried with a growing delay for a day.
      </p>

      {created && (
        <div className="card secret-once" role="status" data-testid="webhook-secret">
          <p>
            <strong>Webhook created.</strong> Its signing secret is shown only now: store it where your receiver
            verifies requests.
          </p>
          <p className="row">
            <code className="mono">{created.secret}</code> <CopyButton text={created.secret} label="Copy secret" />
          </p>
          <button type="button" className="small" onClick={() => setCreated(null)}>
            Done
          </button>
        </div>
      )}

      <form className="card form" onSubmit={submit} aria-label="New webhook" noValidate>
        <div className={`field${errors.url ? " has-error" : ""}`}>
          <label htmlFor="wh-url">Endpoint URL</label>
          <input
            id="wh-url"
            type="url"
            placeholder="https://ci.example.com/replayft"
            value={form.url}
            onChange={(e) => setForm({ ...form, url: e.target.value })}
          />
          {errors.url && <p className="field-error" role="alert">{errors.url}</p>}
        </div>
        <div className={`field${errors.description ? " has-error" : ""}`}>
          <label htmlFor="wh-description">Description</label>
          <input
            id="wh-description"
            value={form.description}
            onChange={(e) => setForm({ ...form, description: e.target.value })}
          />
          {errors.description && <p className="field-error" role="alert">{errors.description}</p>}
        </div>
        <fieldset>
          <legend>Events</legend>
          {EVENT_TYPES.map((type) => (
            <label key={type} className="block">
              <input type="checkbox" checked={form.events.includes(type)} onChange={() => toggleEvent(type)} />{" "}
              <code>{type}</code> <span className="muted small">{describeEvent(type)}</span>
            </label>
          ))}
          {errors.events && <p className="field-error" role="alert">{errors.events}</p>}
        </fieldset>
        {general && <ErrorNote message={general} />}
        <button type="submit" className="primary" disabled={busy}>
          Add webhook
        </button>
      </form>

      {hooks.loading && !hooks.data && <Loading what="webhooks" />}
      {hooks.error && <ErrorNote message={hooks.error} onRetry={hooks.reload} />}
      {hooks.data && hooks.data.data.length === 0 && <Empty>No webhooks yet.</Empty>}
      {hooks.data && hooks.data.data.length > 0 && (
        <table className="table" aria-label="Webhooks">
          <thead>
            <tr>
              <th>Endpoint</th>
              <th>Events</th>
              <th>Created</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {hooks.data.data.map((hook) => (
              <Fragment key={hook.id}>
                <tr data-webhook-id={hook.id}>
                  <td>
                    <div className="mono">{hook.url}</div>
                    <div className="muted small">
                      {hook.description ? `${hook.description} · ` : ""}
                      <span className="mono">{hook.id}</span>
                      {hook.enabled ? "" : " · disabled"}
                    </div>
                  </td>
                  <td className="small">
                    {hook.events.map((t) => (
                      <div key={t} className="mono">
                        {t}
                      </div>
                    ))}
                  </td>
                  <td>{formatTime(hook.created_at)}</td>
                  <td className="nowrap">
                    <button
                      type="button"
                      className="small"
                      aria-expanded={open === hook.id}
                      onClick={() => setOpen(open === hook.id ? null : hook.id)}
                    >
                      {open === hook.id ? "Hide deliveries" : "Deliveries"}
                    </button>{" "}
                    <button
                      type="button"
                      className="small"
                      onClick={() => setEnabled(hook, !hook.enabled)}
                      aria-label={`${hook.enabled ? "Disable" : "Enable"} webhook ${hook.url}`}
                    >
                      {hook.enabled ? "Disable" : "Enable"}
                    </button>{" "}
                    <button
                      type="button"
                      className="danger small"
                      onClick={() => remove(hook)}
                      aria-label={`Delete webhook ${hook.url}`}
                    >
                      Delete
                    </button>
                  </td>
                </tr>
                {open === hook.id && (
                  <tr className="preview-row">
                    <td colSpan={4}>
                      <DeliveryLog hook={hook} />
                    </td>
                  </tr>
                )}
              </Fragment>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** A webhook's deliveries, newest first, with a Redeliver button each. */
function DeliveryLog({ hook }: { hook: Webhook }) {
  const client = useClient();
  const onError = useOnError();
  const api = webhooksApi(client);
  const [actionError, setActionError] = useState<string | null>(null);
  const log = usePolled(
    () => api.deliveries(hook.id),
    [client, hook.id],
    (list) => (list?.data.some((d) => d.status === "pending") ? PENDING_MS : null),
  );

  async function redeliver(deliveryId: string) {
    try {
      await api.redeliver(hook.id, deliveryId);
      setActionError(null);
      log.reload();
    } catch (err) {
      setActionError(onError(err));
    }
  }

  if (log.loading && !log.data) return <Loading what="deliveries" />;
  if (log.error) return <ErrorNote message={log.error} onRetry={log.reload} />;
  if (!log.data || log.data.data.length === 0) {
    return <Empty>No deliveries yet: events appear here when they happen.</Empty>;
  }
  return (
    <>
      {actionError && <ErrorNote message={actionError} />}
      <table className="table" aria-label={`Deliveries of ${hook.id}`}>
        <thead>
          <tr>
            <th>Event</th>
            <th>Status</th>
            <th className="num">Attempts</th>
            <th>Outcome</th>
            <th>Created</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {log.data.data.map((d) => (
            <tr key={d.id} data-delivery-id={d.id}>
              <td>
                <div className="mono">{d.event_type}</div>
                <div className="muted small mono">
                  {d.payload.data.id} · {d.event_id}
                </div>
              </td>
              <td>
                <span className={`badge badge-delivery-${d.status}`}>{d.status}</span>
              </td>
              <td className="num">{d.attempts}</td>
              <td className="small">{deliveryOutcome(d)}</td>
              <td>{formatTime(d.created_at)}</td>
              <td>
                <button
                  type="button"
                  className="small"
                  onClick={() => redeliver(d.id)}
                  aria-label={`Redeliver ${d.event_id}`}
                >
                  Redeliver
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
