#!/usr/bin/env node
// Runs the compiled test files with tap and ends with the plain summary line
// `N passed, N failed` that CI reads (tap's own summary stays above it).
import { spawn } from 'node:child_process';

const args = process.argv.slice(2);
const files = args;
const tap = spawn(process.execPath, ['node_modules/tap/dist/esm/run.mjs', ...files], { stdio: ['ignore', 'pipe', 'inherit'] });
let tail = '';
tap.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tail = (tail + chunk.toString()).slice(-8192);
});
tap.on('exit', (code, signal) => {
  // tap's last line looks like `# { total: 117, pass: 113, fail: 1, skip: 3 }`.
  const summary = /# \{ (total: \d+[^}]*)\}/.exec(tail);
  const counts = Object.fromEntries([...(summary?.[1] ?? '').matchAll(/(\w+): (\d+)/g)].map((m) => [m[1], Number(m[2])]));
  const pass = counts.pass ?? 0;
  const fail = (counts.fail ?? 0) + (summary ? 0 : 1);
  const skip = counts.skip ?? 0;
  process.stdout.write(`\n${pass} passed, ${fail} failed${skip ? `, ${skip} skipped` : ''}\n`);
  process.exit(code ?? (signal ? 1 : 0));
});
