// Builds the browser client and the demo page into dist/ (or the folder
// given as the first argument), which the Go package web embeds:
//
//   dist/tether.js   the client (src/) with mqtt.js, one ES module
//   dist/demo.js     the demo page's own script; imports ./tether.js
//   dist/index.html, dist/demo.css   copied from demo/
//
// The output is committed, so `go build` needs no npm; `make web` rebuilds it.
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

const root = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(root, 'dist');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });

const common = {
  absWorkingDir: root,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  logLevel: 'warning',
  legalComments: 'eof',
};

await esbuild.build({ ...common, entryPoints: ['src/tether.js'], outfile: join(out, 'tether.js'), minify: true });
await esbuild.build({ ...common, entryPoints: ['demo/demo.js'], outfile: join(out, 'demo.js'), external: ['./tether.js'] });
for (const f of ['index.html', 'demo.css']) {
  await copyFile(join(root, 'demo', f), join(out, f));
}
