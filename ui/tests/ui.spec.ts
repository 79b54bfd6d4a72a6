// The UI against a real `flowsense demo --serve`: every page shows the real data (its numbers
// equal the API's or `flowsense sql`'s), the graph monitor moves while the replay runs, a job
// submitted from the UI runs and stops from the UI, bad TOML shows its line, and the SQL
// console shows the guard's refusal. Each page's screenshot goes to docs/ui/.
import { apiGet, cell, expect, flowsenseSql, liveJob, money, num, shot, test, type Job } from './fixtures';

test('the jobs page lists every job with the state the API gives', async ({ page, request }) => {
  await liveJob(request, 'paper-ofi');
  await liveJob(request, 'live-features');
  await page.goto('/#/jobs');
  const jobs = await apiGet<Job[]>(request, '/jobs');
  for (const j of jobs) {
    const row = page.locator(`tr[data-job="${j.id}"]`);
    await expect(row).toContainText(j.name);
    await expect(row).toContainText(j.kind);
    if (j.state === 'finished') {
      await expect(row.locator('.badge')).toHaveText('finished');
      await expect(row.locator('[data-field="events"]')).toHaveText(num(j.events));
    }
  }
  await expect(page.locator('[data-testid="jobs-table"] tbody tr')).toHaveCount(jobs.length);
  await shot(page, 'jobs');
});

test('the graph monitor shows the API graph and moves while the replay runs', async ({ page, request }) => {
  const job = await liveJob(request, 'live-features');
  await page.goto(`/#/graph/${job.id}`);
  const graph = await apiGet<{ nodes: { id: string; name: string }[]; workers: number }>(request, `/jobs/${job.id}/graph`);
  const nodes = page.getByTestId('graph-node');
  await expect(nodes).toHaveCount(graph.nodes.length);
  for (const n of graph.nodes) await expect(page.locator(`[data-node="${n.id}"]`)).toContainText(n.name);
  const summary = page.getByTestId('graph-summary');
  await expect(summary).toContainText('events');
  const before = await summary.textContent();
  await expect.poll(() => summary.textContent(), { timeout: 15_000 }).not.toBe(before);
  const features = graph.nodes.find((n) => n.name === 'OrderFlowFeatures')!;
  await page.locator(`[data-node="${features.id}"]`).click();
  await expect(page.getByTestId('per-worker').locator('tbody tr')).toHaveCount(graph.workers);
  await page.waitForTimeout(2500);
  await shot(page, 'graph');
});

test('a job submitted from the UI runs, and stops from the UI both ways', async ({ page, request }) => {
  await page.goto('/#/jobs');
  const editor = page.getByTestId('spec-editor');
  for (const [name, button, mode] of [
    ['ui-graceful', 'Stop', 'graceful'],
    ['ui-immediate', 'Stop now', 'immediate'],
  ] as const) {
    await editor.fill(
      `name = "${name}"\n\n[source.synthetic]\nsymbols = 1\nevents_per_day = 20000\n\n[replay]\nspeed = 60.0\n\n[features]\nbuckets = ["1s"]\n`,
    );
    await page.getByTestId('submit-job').click();
    const link = page.getByTestId('submitted').locator('a');
    await expect(link).toBeVisible();
    const id = (await link.textContent())!;
    await expect.poll(async () => (await apiGet<Job>(request, `/jobs/${id}`)).state).toBe('running');
    await link.click();
    await expect(page.locator('h1 .badge')).toHaveText('running');
    await expect.poll(async () => (await apiGet<Job>(request, `/jobs/${id}`)).events, { timeout: 30_000 }).toBeGreaterThan(0);
    if (mode === 'graceful') await shot(page, 'job');
    await page.getByRole('button', { name: button, exact: true }).click();
    await expect.poll(async () => (await apiGet<Job>(request, `/jobs/${id}`)).state, { timeout: 60_000 }).toBe('stopped');
    const stopped = await apiGet<{ stop: string }>(request, `/jobs/${id}`);
    expect(stopped.stop).toBe(mode);
    await expect(page.locator('h1 .badge')).toHaveText('stopped');
    await page.goto('/#/jobs');
  }
});

test('bad TOML shows the API message at the line it names', async ({ page, request, refusals }) => {
  refusals.expect(400);
  const bad = 'name = "bad"\n\n[source.synthetic]\nsymbols = "two"\n';
  const r = await request.post('/api/v1/jobs', { headers: { 'content-type': 'application/toml' }, data: bad });
  expect(r.status()).toBe(400);
  const message = ((await r.json()) as { error: string }).error;
  const line = Number(message.match(/line (\d+)/)![1]);
  await page.goto('/#/jobs');
  await page.getByTestId('spec-editor').fill(bad);
  await page.getByTestId('submit-job').click();
  const error = page.getByTestId('submit-error');
  await expect(error).toContainText(message);
  await expect(error).toContainText(`Line ${line}:`);
  await expect(page.locator('.gutter .bad-line')).toHaveText(String(line));
  await shot(page, 'bad-toml');
});

test('the SQL console shows what flowsense sql gives, and the guard refuses COPY', async ({ page, request, refusals }) => {
  refusals.expect(400);
  const query = 'SELECT symbol, side, count(*) AS trades, round(sum(size), 6) AS volume FROM trades GROUP BY symbol, side ORDER BY symbol, side';
  const expected = flowsenseSql(query);
  expect(expected.length).toBeGreaterThan(0);
  await page.goto('/#/sql');
  await expect(page.getByTestId('table-list')).toContainText('trades');
  await page.getByTestId('sql-editor').fill(query);
  await page.getByTestId('sql-run').click();
  const rows = page.getByTestId('sql-result').locator('tbody tr');
  await expect(rows).toHaveCount(expected.length);
  const grid = await rows.evaluateAll((trs) => trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
  expect(grid).toEqual(expected.map((r) => ['symbol', 'side', 'trades', 'volume'].map((c) => cell(r[c]))));
  await page.getByRole('button', { name: 'trades', exact: true }).click();
  await shot(page, 'sql');
  const copy = "COPY trades TO '/tmp/flowsense-ui-copy.csv'";
  const r = await request.post('/api/v1/sql', { data: { sql: copy } });
  expect(r.status()).toBe(400);
  const refusal = ((await r.json()) as { error: string }).error;
  await page.getByTestId('sql-editor').fill(copy);
  await page.getByTestId('sql-run').click();
  await expect(page.getByTestId('sql-error')).toHaveText(refusal);
  await expect(page.getByTestId('sql-history')).toContainText('SELECT symbol, side');
});

test('the live market shows the paper job book, its tape from the lake, and its chart', async ({ page, request }) => {
  const job = await liveJob(request, 'paper-ofi');
  await page.goto(`/#/market/${job.id}`);
  const ladder = page.getByTestId('ladder');
  await expect(ladder.locator('tr.bid').first()).toBeVisible();
  await expect(ladder.locator('tr.ask').first()).toBeVisible();
  const bestBid = Number(await ladder.locator('tr.bid').first().getAttribute('data-price'));
  const bestAsk = Number(await ladder.locator('tr.ask').last().getAttribute('data-price'));
  expect(bestAsk).toBeGreaterThan(bestBid);
  const tape = page.getByTestId('tape').locator('tbody tr');
  await expect(tape.first()).toBeVisible({ timeout: 60_000 });
  const symbol = await page.getByTestId('symbol').inputValue();
  // Nanosecond times lose their last digits as JavaScript numbers: match within a microsecond.
  const ts = Number(await tape.first().getAttribute('data-ts'));
  const price = Number(await tape.first().getAttribute('data-price'));
  const found = flowsenseSql(`SELECT count(*) AS n FROM trades WHERE symbol = '${symbol}' AND ts BETWEEN ${ts - 1000} AND ${ts + 1000} AND price = ${price}`);
  expect(Number(found[0].n)).toBeGreaterThan(0);
  await expect(page.getByTestId('price-chart').locator('canvas').first()).toBeVisible();
  // The feature panes offer the feature job's columns.
  await expect(page.getByTestId('feature-0')).toHaveValue('ofi_l1');
  await expect(page.getByTestId('feature-1').locator('option', { hasText: 'kyle_lambda' })).toHaveCount(1);
  // A job that is not paced streams no book: the page says so and subscribes to nothing.
  const batch = await apiGet<Job>(request, '/jobs/demo-ofi');
  expect(batch.paced).toBe(false);
  await page.goto('/#/market/demo-ofi');
  await expect(page.getByTestId('not-paced')).toBeVisible();
  await page.goto(`/#/market/${job.id}`);
  await expect(page.getByTestId('ladder').locator('tr.bid').first()).toBeVisible();
  // Some seconds of candles and features for the picture.
  await page.waitForTimeout(15_000);
  await shot(page, 'market');
});

test('the portfolio of the demo backtest adds up as the lake does', async ({ page }) => {
  const [sums] = flowsenseSql(
    "SELECT sum(e) AS equity, sum(f) AS fees FROM (SELECT symbol, last_value(equity ORDER BY ts) AS e, last_value(fees ORDER BY ts) AS f FROM equity WHERE run_id = 'demo-ofi' GROUP BY symbol)",
  );
  const [fills] = flowsenseSql("SELECT count(*) AS n FROM fills WHERE run_id = 'demo-ofi'");
  await page.goto('/#/portfolio/demo-ofi');
  await expect(page.getByTestId('card-equity').locator('.card-value')).toHaveText(money(sums.equity as number));
  await expect(page.getByTestId('card-fees').locator('.card-value')).toHaveText(money(sums.fees as number));
  await expect(page.getByTestId('card-fills').locator('.card-value')).toHaveText(String(fills.n));
  await expect(page.getByTestId('card-pnl').locator('.card-value')).toHaveText(money((sums.equity as number) - 300_000, true));
  await page.getByRole('tab', { name: 'fills' }).click();
  await expect(page.getByTestId('table-fills').getByTestId('row-count')).toHaveText(`${fills.n} rows`);
});

test('the live paper portfolio shows its cards and tables', async ({ page, request }) => {
  const job = await liveJob(request, 'paper-ofi');
  await page.goto(`/#/portfolio/${job.id}`);
  await expect(page.getByTestId('card-equity').locator('.card-value')).not.toHaveText('0.00');
  await expect(page.getByTestId('card-drawdown')).toContainText('halt 4.0%');
  await page.waitForTimeout(3000);
  await shot(page, 'portfolio');
});

test('the backtests page lists the runs and shows a run metrics, fills and report', async ({ page, request }) => {
  await page.goto('/#/backtests');
  await expect(page.getByTestId('runs-table')).toContainText('demo-ofi');
  await shot(page, 'backtests');
  await page.getByRole('link', { name: 'demo-ofi', exact: true }).click();
  const [m] = flowsenseSql("SELECT net_pnl, round_trips FROM metrics WHERE run_id = 'demo-ofi' AND scope = 'portfolio' AND regime IS NULL AND fold IS NULL");
  const portfolio = page.getByTestId('metrics-overall').locator('tbody tr').first();
  await expect(portfolio).toContainText('portfolio');
  await expect(portfolio).toContainText(String(+(m.net_pnl as number).toPrecision(8)));
  await expect(portfolio).toContainText(String(m.round_trips));
  const report = await request.get('/api/v1/runs/demo-ofi/report');
  expect(report.status()).toBe(200);
  expect(report.headers()['content-type']).toContain('text/html');
  expect(await report.text()).toContain('demo-ofi');
  await expect(page.getByTestId('bt-equity').locator('canvas').first()).toBeVisible();
  await page.waitForTimeout(1000);
  await shot(page, 'backtest');
});

test('dark theme and a narrow screen', async ({ page }) => {
  await page.goto('/#/jobs');
  await page.getByRole('button', { name: 'Switch light or dark' }).click();
  await expect(page.locator('html')).toHaveAttribute('data-theme', 'dark');
  await page.goto('/#/backtests/demo-ofi');
  await page.waitForTimeout(1500);
  await shot(page, 'backtest-dark');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto('/#/sql');
  await expect(page.getByTestId('sql-editor')).toBeVisible();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow).toBeLessThanOrEqual(1);
  await shot(page, 'sql-narrow-dark');
});
