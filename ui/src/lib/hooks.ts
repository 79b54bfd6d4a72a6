//! Hooks the pages share: the hash route, polling an API call, and a job's stream.

import { useEffect, useRef, useState } from 'preact/hooks';
import { subscribe } from '../api/stream';
import type { StreamMessage, Topic } from '../api/client';

/** The route: the hash without `#/`, split at `/` (`#/jobs/abc` is `['jobs', 'abc']`). */
export function useRoute(): string[] {
  const read = () =>
    location.hash
      .replace(/^#\/?/, '')
      .split('?')[0]
      .split('/')
      .filter((p) => p.length > 0)
      .map(decodeURIComponent);
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const on = () => setRoute(read());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

/** The result of an async call, its error, and a way to run it again. */
export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  reload: () => void;
}

/**
 * Calls `load` now and, with `everyMs`, again on that interval; `deps` restart it. A failed
 * call keeps the last data and says why.
 */
export function usePoll<T>(load: () => Promise<T>, deps: unknown[], everyMs?: number): Loaded<T> {
  // The data is kept with the deps it was loaded for, so a change of deps never shows the
  // last ones' data for a moment.
  const key = JSON.stringify(deps);
  const [data, setData] = useState<{ key: string; value: T } | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    const run = () =>
      load().then(
        (value) => {
          if (live) {
            setData({ key, value });
            setError(undefined);
          }
        },
        (e: unknown) => live && setError(e instanceof Error ? e.message : String(e)),
      );
    void run();
    const t = everyMs ? setInterval(run, everyMs) : undefined;
    return () => {
      live = false;
      if (t) clearInterval(t);
    };
  }, [key, tick]);
  return { data: data?.key === key ? data.value : undefined, error, reload: () => setTick((n) => n + 1) };
}

/**
 * Subscribes to a job's topics while mounted; `onMessage` sees every message (it may change
 * between renders without resubscribing). Returns whether the socket is open.
 */
export function useStream(
  job: string | undefined,
  topics: Topic[],
  onMessage: (m: StreamMessage) => void,
): boolean {
  const handler = useRef(onMessage);
  handler.current = onMessage;
  const [open, setOpen] = useState(false);
  const key = topics.join(',');
  useEffect(() => {
    if (!job || topics.length === 0) return;
    const sub = subscribe(job, topics, (m) => handler.current(m), setOpen);
    return () => sub.close();
  }, [job, key]);
  return open;
}

/** Re-renders every `ms`: for views whose data arrives in refs. */
export function useTicker(ms: number): number {
  const [n, setN] = useState(0);
  useEffect(() => {
    const t = setInterval(() => setN((x) => x + 1), ms);
    return () => clearInterval(t);
  }, [ms]);
  return n;
}
