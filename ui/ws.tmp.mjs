import { chromium } from '@playwright/test';
const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless','--no-sandbox'] });
const p = await b.newPage();
await p.goto('http://127.0.0.1:7882/');
const r = await p.evaluate(async (spec) => {
  const s = await fetch('/api/v1/jobs', { method: 'POST', headers: { 'content-type': 'application/toml' }, body: spec });
  const { id } = await s.json();
  return await new Promise((done) => {
    const ws = new WebSocket(`ws://${location.host}/api/v1/stream?job=${id}&topics=features,job`);
    let rows = 0, msgs = 0, topics = {}; let last;
    ws.onmessage = (e) => { const m = JSON.parse(e.data); msgs++; topics[m.topic] = (topics[m.topic] ?? 0) + 1; if (m.topic === 'features') rows += m.data.length; if (m.topic === 'job') last = m.data; };
    ws.onclose = () => done({ id, rows, msgs, topics, last });
  });
}, process.argv[2]);
console.log(JSON.stringify(r));
await b.close();
