// Builds the UI into dist/, which the flowsense binary embeds (service/src/ui.rs). `npm run dev`
// serves it with hot reload against a `flowsense serve` on :7878.
import { defineConfig } from 'vite';

export default defineConfig({
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: { '/api': { target: 'http://127.0.0.1:7878', ws: true } },
  },
});
