// Data-loading hooks shared by the pages.

import { useCallback, useEffect, useRef, useState } from "react";
import { useOnError } from "./auth";

export interface Loaded<T> {
  data: T | null;
  error: string | null;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` now and, while `everyMs(data)` is a number, again after that many ms. Keeps the
 * last good data on a failed refresh, so a blip does not blank the page. */
export function usePolled<T>(
  load: () => Promise<T>,
  deps: unknown[],
  everyMs: (data: T | null) => number | null = () => null,
): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const onError = useOnError();
  const every = useRef(everyMs);
  every.current = everyMs;

  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      let next: T | null = null;
      try {
        next = await load();
        if (!alive) return;
        setData(next);
        setError(null);
      } catch (e) {
        if (!alive) return;
        setError(onError(e));
      } finally {
        if (alive) setLoading(false);
      }
      const ms = every.current(next);
      if (alive && ms !== null) timer = setTimeout(run, ms);
    };
    setLoading(true);
    run();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
    // `load` is a new closure every render: the caller's `deps` say when it really changed
  }, [...deps, tick]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, loading, reload };
}
