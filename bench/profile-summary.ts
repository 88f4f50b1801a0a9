// Summarises a V8 .cpuprofile (node --cpu-prof): self time per function and per file, so a
// profile can be read in a terminal and quoted in bench/README.md.
//   node dist/bench/profile-summary.js FILE.cpuprofile [--top 25]
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  name: string;
  ms: number;
  share: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** Time not idle: total minus (idle). */
  busyMs: number;
  functions: SelfTime[];
  files: SelfTime[];
}

/** "dist/proxy/postgres/framer.js" from a file:// URL; node internals keep their node: name. */
function shortFile(url: string): string {
  if (!url) return '(native)';
  const at = url.indexOf('/dist/');
  if (at !== -1) return url.slice(at + 1);
  const modules = url.lastIndexOf('/node_modules/');
  if (modules !== -1) return url.slice(modules + 1);
  return url.replace(/^file:\/\//, '');
}

export function summariseProfile(profile: CpuProfile): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; charging it to sample i is V8's own convention.
  for (let i = 0; i < profile.samples.length; i++) selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
  const perFunction = new Map<string, number>();
  const perFile = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    totalUs += us;
    if (frame.functionName === '(idle)') {
      idleUs += us;
      continue;
    }
    const file = shortFile(frame.url);
    const name = `${frame.functionName || '(anonymous)'} ${frame.url ? `${file}:${frame.lineNumber + 1}` : ''}`.trim();
    perFunction.set(name, (perFunction.get(name) ?? 0) + us);
    const group = frame.url ? file : frame.functionName;
    perFile.set(group, (perFile.get(group) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const rank = (m: Map<string, number>) =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, ms: us / 1000, share: busyUs > 0 ? us / busyUs : 0 }));
  return { totalMs: totalUs / 1000, busyMs: busyUs / 1000, functions: rank(perFunction), files: rank(perFile) };
}

export function renderProfileSummary(summary: ProfileSummary, top: number): string {
  const lines = [`busy ${summary.busyMs.toFixed(0)} ms of ${summary.totalMs.toFixed(0)} ms profiled (shares below are of busy time)`, '', 'self time by function:'];
  for (const f of summary.functions.slice(0, top)) lines.push(`  ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.ms.toFixed(0).padStart(6)} ms  ${f.name}`);
  lines.push('', 'self time by file:');
  for (const f of summary.files.slice(0, top)) lines.push(`  ${(f.share * 100).toFixed(1).padStart(5)}%  ${f.ms.toFixed(0).padStart(6)} ms  ${f.name}`);
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string' } } });
  if (positionals.length === 0) {
    process.stderr.write('usage: profile-summary FILE.cpuprofile [--top N]\n');
    process.exit(1);
  }
  for (const file of positionals) {
    const summary = summariseProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
    process.stdout.write(`== ${file}\n${renderProfileSummary(summary, Number(values.top ?? 25))}\n\n`);
  }
}
