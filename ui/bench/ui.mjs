// The UI's benchmark: bundle size (raw, gzipped, and as the server sends it), first load time
// in headless Chromium against a running server (cold cache, median of runs; the baseline is
// a server-rendered page of the same server, the demo backtest's HTML report, loaded in the
// same loop), and the graph monitor's frame time
// with 100 operators updated every second (against 5, the size of a real job's graph).
//   flowsense demo --serve --lake /tmp/bench-lake &
//   node ui/bench/ui.mjs http://127.0.0.1:7878 [--runs 15] [--seconds 15]
import { chromium } from '@playwright/test';
import { gzipSync } from 'node:zlib';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const url = args.find((a) => a.startsWith('http')) ?? 'http://127.0.0.1:7878';
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const RUNS = opt('runs', 15);
const SECONDS = opt('seconds', 15);
const dist = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : NaN;
};
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–');

// 1. Bundle size.
const files = [];
const walk = (d) => {
  for (const n of readdirSync(d)) {
    const p = path.join(d, n);
    if (statSync(p).isDirectory()) walk(p);
    else files.push(p);
  }
};
walk(dist);
let raw = 0;
let gz = 0;
let served = 0;
console.log('== bundle (ui/dist)');
for (const p of files.sort()) {
  const rel = path.relative(dist, p);
  const data = readFileSync(p);
  const g = gzipSync(data, { level: 9 }).length;
  const r = await fetch(`${url}/${rel === 'index.html' ? '' : rel}`, { headers: { 'accept-encoding': 'gzip' } });
  const wire = (await r.arrayBuffer()).byteLength;
  const enc = r.headers.get('content-encoding') ?? 'identity';
  raw += data.length;
  gz += g;
  served += Number(r.headers.get('content-length') ?? wire);
  console.log(`${rel.padEnd(32)} ${String(data.length).padStart(8)} B  gzip -9 ${String(g).padStart(7)} B  served ${enc}`);
}
console.log(`total: ${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzipped`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
});

// 2. First load, cold: a new context (empty cache) per run.
async function load(target, ready) {
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(target, { waitUntil: 'load' });
  const readyAt = await page.waitForFunction(ready).then(() => page.evaluate(() => performance.now()));
  const t = await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    const bytes = performance.getEntriesByType('resource').reduce((a, r) => a + (r.transferSize ?? 0), nav.transferSize ?? 0);
    return { dcl: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, fcp: fcp?.startTime ?? NaN, bytes };
  });
  await ctx.close();
  return { ...t, ready: readyAt };
}
const ui = [];
const docs = [];
for (let i = 0; i < RUNS; i++) {
  ui.push(await load(`${url}/#/jobs`, () => document.querySelector('[data-testid="jobs-table"] tbody tr') !== null));
  docs.push(await load(`${url}/api/v1/runs/demo-ofi/report`, () => document.querySelector('svg') !== null));
}
const row = (name, xs) =>
  console.log(
    `${name.padEnd(28)} FCP ${f(median(xs.map((x) => x.fcp))).padStart(6)} ms  load ${f(median(xs.map((x) => x.load))).padStart(6)} ms  ready ${f(median(xs.map((x) => x.ready))).padStart(6)} ms  transferred ${f(median(xs.map((x) => x.bytes)) / 1024)} KiB`,
  );
console.log(`== first load, cold cache, median of ${RUNS}`);
row('UI (#/jobs, table drawn)', ui);
row('baseline: demo-ofi report', docs);
console.log(`ratio UI / baseline (ready): ${f(median(ui.map((x) => x.ready)) / median(docs.map((x) => x.ready)), 2)}x`);

// 3. Graph monitor frame time: animation frame intervals and each update's render time.
async function frames(n) {
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(`${url}/#/bench/graph/${n}`);
  await page.getByTestId('bench-step').waitFor();
  await page.waitForTimeout(1500);
  const r = await page.evaluate(async (seconds) => {
    window.__graphUpdates = [];
    const intervals = [];
    const long = [];
    const obs = new PerformanceObserver((l) => l.getEntries().forEach((e) => long.push(e.duration)));
    try {
      obs.observe({ type: 'long-animation-frame', buffered: false });
    } catch {}
    await new Promise((done) => {
      let last = performance.now();
      const end = last + seconds * 1000;
      const tick = (t) => {
        intervals.push(t - last);
        last = t;
        if (t < end) requestAnimationFrame(tick);
        else done();
      };
      requestAnimationFrame(tick);
    });
    obs.disconnect();
    return { intervals: intervals.slice(1), updates: window.__graphUpdates, long };
  }, SECONDS);
  await ctx.close();
  return r;
}
console.log(`== graph monitor, ${SECONDS} s of frames, one update a second`);
const res = {};
for (const n of [5, 100]) {
  const r = await frames(n);
  res[n] = r;
  console.log(
    `${String(n).padStart(3)} nodes: frame interval median ${f(median(r.intervals))} ms, p99 ${f(quantile(r.intervals, 0.99))} ms, max ${f(Math.max(...r.intervals))} ms; ` +
      `update render median ${f(median(r.updates))} ms, max ${f(Math.max(...r.updates))} ms (${r.updates.length} updates); long frames (>50 ms) ${r.long.length}`,
  );
}
console.log(`ratio 100 / 5 nodes (update render median): ${f(median(res[100].updates) / median(res[5].updates), 2)}x`);
await browser.close();
