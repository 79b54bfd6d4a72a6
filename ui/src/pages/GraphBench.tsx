//! The graph monitor on a synthetic graph of N operators (`#/bench/graph/100`), its figures
//! changed each second as a live job's are: what BENCHMARKS.md's frame time measures. The
//! figures come from a seeded generator, so every run draws the same frames.

import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { GraphView } from '../api/client';
import { GraphMonitor, record } from './Graph';

/** A small seeded generator (xorshift32), so the benchmark's figures repeat. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

/** A graph of `n` operators in stages of four, each feeding the next stage's. */
export function syntheticGraph(n: number, step: number, workers = 2): GraphView {
  const r = rng(step * 7919 + n);
  const nodes = Array.from({ length: n }, (_, i) => {
    const busy = r();
    const per_worker = Array.from({ length: workers }, (_, w) => ({
      worker: w,
      records_in: step * 1000 + w,
      records_out: step * 1000,
      records_in_per_s: 1000 * r(),
      records_out_per_s: 1000 * r(),
      busy_ratio: Math.min(1, busy * (0.5 + r())),
      frontier_lag_ms: r() * 50,
    }));
    return {
      id: `0.${i}`,
      name: `Operator${i}`,
      stages: i % 3 === 0 ? ['book', 'features'] : [],
      records_in: step * 1000 * workers,
      records_out: step * 1000 * workers,
      records_in_per_s: per_worker.reduce((a, w) => a + w.records_in_per_s, 0),
      records_out_per_s: per_worker.reduce((a, w) => a + w.records_out_per_s, 0),
      busy_ms: step * 10,
      busy_ratio: busy,
      frontier_lag_ms: r() * 50,
      per_worker,
    };
  });
  const edges = [];
  for (let i = 4; i < n; i++) {
    edges.push({ source: `0.${i - 4}`, target: `0.${i}`, kind: 'records', records: step, records_per_s: 1000 * r() });
    if (i % 4 === 0) edges.push({ source: `0.${i - 3}`, target: `0.${i}`, kind: 'records', records: step, records_per_s: 500 * r() });
  }
  return { job: 'bench', state: 'running', workers, nodes, edges };
}

/** What the benchmark reads: each update's render-to-DOM time in ms (`ui/bench/ui.mjs`). */
declare global {
  interface Window {
    __graphUpdates?: number[];
  }
}

export function GraphBenchPage({ nodes }: { nodes: number }) {
  const [step, setStep] = useState(0);
  const history = useRef(new Map());
  const started = performance.now();
  useLayoutEffect(() => {
    (window.__graphUpdates ??= []).push(performance.now() - started);
  }, [step]);
  useEffect(() => {
    const t = setInterval(() => setStep((s) => s + 1), 1000);
    return () => clearInterval(t);
  }, []);
  const view = syntheticGraph(nodes, step);
  record(history.current, view);
  return (
    <section>
      <h1>
        Graph benchmark: {nodes} operators <span class="muted" data-testid="bench-step">step {step}</span>
      </h1>
      <p class="muted">Synthetic, seeded figures changed each second; for measuring frame time.</p>
      <GraphMonitor view={view} history={history.current} />
    </section>
  );
}
