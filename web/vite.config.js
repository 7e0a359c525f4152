// The node serves the build at /ui (src/iollm/editor/site.py); `make ui` runs this.
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  base: '/ui/',
  plugins: [react()],
  build: {
    outDir: '../src/iollm/editor/static',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1024,
  },
  server: { proxy: { '/api': 'http://127.0.0.1:8700', '/v1': 'http://127.0.0.1:8700' } },
});
