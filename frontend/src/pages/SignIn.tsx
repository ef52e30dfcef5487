// Sign in with an API key: checked against GET /v1/models before it is kept.

import { useState, type FormEvent } from "react";
import { useNavigate } from "react-router-dom";
import { Client } from "../api";
import { useAuth } from "../auth";

export function SignInPage({ next }: { next: string }) {
  const { signIn, reason } = useAuth();
  const navigate = useNavigate();
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(reason);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    const trimmed = key.trim();
    if (!trimmed) return setError("Enter an API key.");
    setBusy(true);
    setError(null);
    try {
      await new Client(trimmed).models();
      signIn(trimmed);
      navigate(next || "/jobs", { replace: true });
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="signin">
      <form onSubmit={submit} className="card signin-card" aria-labelledby="signin-title">
        <h1 id="signin-title">ReplayFT</h1>
        <p className="muted">Fine-tuning with generic replay. Sign in with an API key.</p>
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autoComplete="off"
          autoFocus
          value={key}
          onChange={(e) => {
            setKey(e.target.value);
            setError(null);
          }}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? "signin-error" : undefined}
          placeholder="rft-…"
        />
        {error && (
          <p id="signin-error" className="field-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
        <p className="muted small">
          The key stays in this browser tab's session storage and is sent only as an
          Authorization header. <code>replayft keys create</code> makes one; <code>replayft serve</code> writes
          the first to <code>replayft-data/admin_key.txt</code>.
        </p>
      </form>
    </main>
  );
}
