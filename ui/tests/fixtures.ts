// What every UI test shares: a page whose console errors fail the test, the API read
// directly, `flowsense sql` run on the same lake, and screenshots into docs/ui/.
import { test as base, expect, type APIRequestContext, type Page } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import type { JobView } from '../src/api/client';
import path from 'node:path';

export { expect };

/** HTTP statuses a test provokes on purpose (Chromium logs each failed fetch as an error). */
export class Refusals {
  statuses = new Set<number>();
  expect(status: number) {
    this.statuses.add(status);
  }
}

/** Console errors and uncaught exceptions of the page, which must stay empty. */
export const test = base.extend<{ refusals: Refusals; errors: string[] }>({
  // eslint-disable-next-line no-empty-pattern
  refusals: async ({}, use) => use(new Refusals()),
  errors: [
    async ({ page, refusals }, use) => {
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() !== 'error') return;
        const status = m.text().match(/the server responded with a status of (\d+)/);
        if (status && refusals.statuses.has(Number(status[1]))) return;
        errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(String(e)));
      await use(errors);
      expect(errors, 'the browser console has errors').toEqual([]);
    },
    { auto: true },
  ],
});

/** GET an API path as JSON. */
export async function apiGet<T>(request: APIRequestContext, p: string): Promise<T> {
  const r = await request.get(`/api/v1${p}`);
  expect(r.ok(), `${p}: ${r.status()}`).toBeTruthy();
  return (await r.json()) as T;
}

/** A job as the API shows it (the type generated from the OpenAPI document). */
export type Job = JobView;

/** The demo's live job of `name`, once it is running. */
export async function liveJob(request: APIRequestContext, name: string): Promise<Job> {
  let job: Job | undefined;
  await expect
    .poll(async () => {
      const jobs = await apiGet<Job[]>(request, '/jobs');
      job = jobs.find((j) => j.name === name && j.state === 'running');
      return job?.id;
    }, { timeout: 120_000 })
    .toBeTruthy();
  return job!;
}

/** `flowsense sql` on the server's lake, as JSON rows. */
export function flowsenseSql(query: string): Record<string, unknown>[] {
  const out = execFileSync(process.env.FLOWSENSE_BIN!, ['sql', '--lake', process.env.FLOWSENSE_UI_LAKE!, '--format', 'json', query], {
    encoding: 'utf8',
  });
  return out
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** A screenshot of the page, for the README (docs/ui/NAME.png, or $FLOWSENSE_UI_SHOTS). */
export async function shot(page: Page, name: string) {
  const dir = process.env.FLOWSENSE_UI_SHOTS ?? path.resolve('..', 'docs', 'ui');
  await page.screenshot({ path: path.join(dir, `${name}.png`) });
}

// The UI's own formatting, so the tests compare what the pages are meant to show.
export { cell, money, num } from '../src/lib/format';
