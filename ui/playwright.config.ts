// The UI's browser tests: Playwright drives Debian's Chromium (browser downloads do not work
// here) against a real `flowsense demo --serve` on a fresh lake, which it starts and stops.
//   FLOWSENSE_BIN   the flowsense binary (default: ../target/debug/flowsense)
//   FLOWSENSE_UI_PORT, FLOWSENSE_UI_LAKE   where the server listens and its lake
//   CHROMIUM        the browser (default /usr/bin/chromium)
import { defineConfig } from '@playwright/test';
import os from 'node:os';
import path from 'node:path';

const port = process.env.FLOWSENSE_UI_PORT ?? '7891';
const lake = process.env.FLOWSENSE_UI_LAKE ?? path.join(os.tmpdir(), 'flowsense-ui-lake');
const bin = process.env.FLOWSENSE_BIN ?? path.resolve('..', 'target', 'debug', 'flowsense');
process.env.FLOWSENSE_BIN = bin;
process.env.FLOWSENSE_UI_LAKE = lake;

export default defineConfig({
  testDir: 'tests',
  timeout: 120_000,
  expect: { timeout: 30_000 },
  workers: 1,
  reporter: [['list']],
  webServer: {
    command: `rm -rf '${lake}' && '${bin}' demo --serve --lake '${lake}' --listen 127.0.0.1:${port} -w 2`,
    cwd: '..',
    url: `http://127.0.0.1:${port}/api/v1/ready`,
    timeout: 600_000,
    reuseExistingServer: false,
    stdout: 'ignore',
    stderr: 'pipe',
    env: { RUST_LOG: 'warn' },
  },
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    viewport: { width: 1440, height: 900 },
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    },
  },
});
