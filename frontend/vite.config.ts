// The dashboard's build: static files in dist/, served by the API at `/` (api/frontend.py).
// `npm run dev` proxies the API so the page and /v1 share an origin, as they do in production.
// vite is pinned to ~8.3.8 in package.json: 8.4.0 adds a Windows-only optional dependency
// (napi-windows-process-start-time) that some npm registries and mirrors lack, and `npm ci` then
// refuses the lock file.
import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

const api = process.env.REPLAYFT_API ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 800 },
  server: { proxy: { "/v1": api, "/healthz": api, "/readyz": api } },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
