#!/usr/bin/env node
import fs from 'node:fs';
const main = new URL('../dist/cli/main.js', import.meta.url);
if (!fs.existsSync(main)) {
  // A fresh checkout: `npx sluice ...` finds this file before anything is compiled.
  process.stderr.write(`sluice: ${main.pathname} is not built yet: run \`npm ci && npm run build\` in ${new URL('..', import.meta.url).pathname}\n`);
  process.exit(2);
}
const { run } = await import(main.href);
await run(process.argv.slice(2));
