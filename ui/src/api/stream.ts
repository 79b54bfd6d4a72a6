//! `GET /api/v1/stream` as a subscription: one WebSocket per job and set of topics, its messages
//! parsed and handed to a callback; reconnects with backoff while the job may still be running.

import type { StreamMessage, Topic } from './client';

/** The states a job does not leave. */
export const FINAL = ['finished', 'failed', 'stopped'];

/** A live subscription; `close` ends it. */
export interface Subscription {
  close(): void;
}

/**
 * Subscribes to `topics` of `job`. The server ends the stream after the job ends; a stream cut
 * before that (a restart, a network blip) is reopened after 0.5, 1, 2, ... 8 s.
 */
export function subscribe(
  job: string,
  topics: Topic[],
  onMessage: (m: StreamMessage) => void,
  onState?: (open: boolean) => void,
): Subscription {
  let ws: WebSocket | undefined;
  let closed = false;
  let ended = false;
  let delay = 500;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const open = () => {
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = new URLSearchParams({ job, topics: topics.join(',') });
    ws = new WebSocket(`${proto}://${location.host}/api/v1/stream?${q}`);
    ws.onopen = () => {
      delay = 500;
      onState?.(true);
    };
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data as string) as StreamMessage;
      if (m.topic === 'job') {
        const state = (m.data as { state?: string } | null)?.state;
        ended = FINAL.includes(state ?? '');
      }
      onMessage(m);
    };
    ws.onclose = async () => {
      onState?.(false);
      if (closed || ended) return;
      // The server closes the stream once the job has ended: ask before reopening.
      const r = await fetch(`/api/v1/jobs/${encodeURIComponent(job)}`).catch(() => undefined);
      if (r?.status === 404) return;
      if (r?.ok) {
        const state = ((await r.json()) as { state: string }).state;
        if (FINAL.includes(state)) return;
      }
      if (closed) return;
      timer = setTimeout(open, delay);
      delay = Math.min(delay * 2, 8000);
    };
  };
  open();
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      ws?.close();
    },
  };
}
