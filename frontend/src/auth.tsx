// The signed-in API key, kept in sessionStorage (gone when the tab closes; sign-out clears it).
// Pages get a ready Client from useClient(); a 401 from any call signs the user out.

import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { ApiError, Client } from "./api";

const STORAGE_KEY = "replayft.apiKey";

interface Auth {
  client: Client | null;
  signIn: (key: string) => void;
  signOut: (reason?: string) => void;
  reason: string | null;
}

const AuthContext = createContext<Auth | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [key, setKey] = useState<string | null>(() => sessionStorage.getItem(STORAGE_KEY));
  const [reason, setReason] = useState<string | null>(null);
  const signIn = useCallback((k: string) => {
    sessionStorage.setItem(STORAGE_KEY, k);
    setReason(null);
    setKey(k);
  }, []);
  const signOut = useCallback((why?: string) => {
    sessionStorage.removeItem(STORAGE_KEY);
    setReason(why ?? null);
    setKey(null);
  }, []);
  const client = useMemo(() => (key ? new Client(key) : null), [key]);
  const value = useMemo(() => ({ client, signIn, signOut, reason }), [client, signIn, signOut, reason]);
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): Auth {
  const auth = useContext(AuthContext);
  if (!auth) throw new Error("useAuth outside AuthProvider");
  return auth;
}

/** The signed-in client (pages under the signed-in layout only). */
export function useClient(): Client {
  const { client } = useAuth();
  if (!client) throw new Error("not signed in");
  return client;
}

/** Wraps an error handler: a 401 signs out, anything else is passed on. */
export function useOnError(): (e: unknown) => string {
  const { signOut } = useAuth();
  return useCallback(
    (e: unknown) => {
      if (e instanceof ApiError && e.status === 401) signOut("Your key was not accepted; sign in again.");
      return e instanceof Error ? e.message : String(e);
    },
    [signOut],
  );
}
