// Turns measured rounds into bench/RESULTS.md: one Markdown table per workload, then a check
// of every issue-8 target against the numbers of this run.
import type { RunOutcome } from './pgbench-runner.js';
import { median } from './stats.js';
import { FINDINGS, type FindingKey } from './findings.js';
import type { TargetRole } from './targets.js';
import type { Plan, Workload } from './workloads.js';

export interface Sample {
  round: number;
  outcome: RunOutcome;
  /** CPU ms the target's processes used during the run (user + system). */
  cpuMs?: number;
  /** The user-time part of cpuMs. */
  cpuUserMs?: number;
}

export interface TargetRow {
  name: string;
  role: TargetRole;
  samples: Sample[];
  /** Not run for this workload, with why. */
  excluded?: string;
  /** Could not be started, with why. */
  skipped?: string;
  notes: string[];
}

export interface IdleRow {
  name: string;
  role: TargetRole;
  excluded?: string;
  skipped?: string;
  opened?: number;
  failed?: number;
  /** RSS as read, whatever garbage the process holds at that moment. */
  rssBeforeKiB?: number;
  rssAfterKiB?: number;
  /** RSS read after a full garbage collection (Node targets only: Target.collect). */
  rssBeforeCollectedKiB?: number;
  rssAfterCollectedKiB?: number;
  error?: string;
}

export interface WorkloadResult {
  workload: Workload;
  rows: TargetRow[];
  idleRows: IdleRow[];
  elapsedS: number;
}

export interface RunInfo {
  date: string;
  plan: Plan;
  versions: Record<string, string>;
  loadBefore: string;
  loadAfter: string;
  cpus: string;
  elapsedS: number;
  command: string;
}

export interface Summary {
  rate?: number;
  p50Ms?: number;
  p99Ms?: number;
  cpuPer1000Ms?: number;
  /** User-time part of cpuPer1000Ms. */
  userPer1000Ms?: number;
  ok: number;
  errors: string[];
}

export function summarise(row: TargetRow): Summary {
  const good = row.samples.filter((s) => s.outcome.rate !== undefined && !s.outcome.error);
  const measured = good.filter((s) => s.cpuMs !== undefined && s.outcome.count);
  const cpu = measured.map((s) => ((s.cpuMs as number) / (s.outcome.count as number)) * 1000);
  const user = measured.map((s) => ((s.cpuUserMs ?? 0) / (s.outcome.count as number)) * 1000);
  return {
    rate: median(good.map((s) => s.outcome.rate as number)),
    p50Ms: median(good.filter((s) => s.outcome.p50Ms !== undefined).map((s) => s.outcome.p50Ms as number)),
    p99Ms: median(good.filter((s) => s.outcome.p99Ms !== undefined).map((s) => s.outcome.p99Ms as number)),
    cpuPer1000Ms: row.role === 'direct' && row.samples.every((s) => !s.cpuMs) ? undefined : median(cpu),
    userPer1000Ms: median(user),
    ok: good.length,
    errors: [...new Set(row.samples.map((s) => s.outcome.error).filter((e): e is string => Boolean(e)))],
  };
}

/** Median over rounds of a/b measured in the same round: alternation cancels slow drift in machine load. */
export function pairedRatio(a: TargetRow | undefined, b: TargetRow | undefined): number | undefined {
  if (!a || !b) return undefined;
  const ratios: number[] = [];
  for (const sa of a.samples) {
    const sb = b.samples.find((s) => s.round === sa.round);
    if (sa.outcome.rate && sb?.outcome.rate && !sa.outcome.error && !sb.outcome.error) ratios.push(sa.outcome.rate / sb.outcome.rate);
  }
  return median(ratios);
}

const fmt = (n: number | undefined, digits = 0) => (n === undefined ? '–' : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }));
const fmtMs = (n: number | undefined) => (n === undefined ? '–' : n < 1 ? n.toFixed(3) : n < 10 ? n.toFixed(2) : n.toFixed(1));
const fmtRatio = (n: number | undefined) => (n === undefined ? '–' : `${n.toFixed(2)}×`);
const cell = (text: string) => text.replaceAll('|', '\\|').replaceAll('\n', ' ');

function anchorName(workload: Workload): string {
  return workload.kind === 'pgbench' || (workload.kind === 'idle' && workload.protocol === 'postgres') ? 'pgbouncer' : 'twemproxy';
}

function renderThroughput(result: WorkloadResult, rounds: number): string[] {
  const { workload, rows } = result;
  const unit = workload.kind === 'pgbench' ? 'TPS' : 'ops/s';
  const per = workload.kind === 'pgbench' ? 'tx' : 'ops';
  const anchor = anchorName(workload);
  const direct = rows.find((r) => r.role === 'direct');
  const anchorRow = rows.find((r) => r.name === anchor);
  const lines = [
    `| target | ${unit} (median) | p50 ms | p99 ms | × direct | × ${anchor} | CPU ms / 1000 ${per} (user) | ok rounds | notes |`,
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const row of rows) {
    if (row.excluded || row.skipped) {
      lines.push(`| ${row.name} | ${row.excluded ? 'not run' : 'skipped'} | | | | | | | ${cell(row.excluded ?? row.skipped ?? '')} |`);
      continue;
    }
    const s = summarise(row);
    const notes = [...row.notes, ...s.errors.map((e) => `error: ${e}`)];
    lines.push(
      `| ${row.name} | ${s.rate === undefined ? '**failed**' : fmt(s.rate)} | ${fmtMs(s.p50Ms)} | ${fmtMs(s.p99Ms)} | ${row === direct ? '1.00×' : fmtRatio(pairedRatio(row, direct))} | ${row === anchorRow ? '1.00×' : fmtRatio(pairedRatio(row, anchorRow))} | ${s.cpuPer1000Ms === undefined ? '–' : `${fmt(s.cpuPer1000Ms, 1)} (${fmt(s.userPer1000Ms, 1)})`} | ${s.ok}/${rounds} | ${cell(notes.join('; '))} |`,
    );
  }
  return lines;
}

/** RSS delta / N; undefined when RSS fell (a garbage collection in between: the figure would be meaningless). */
function perClientKiB(before: number | undefined, after: number | undefined, opened: number | undefined): number | undefined {
  if (before === undefined || after === undefined || !opened) return undefined;
  const delta = after - before;
  return delta < 0 ? undefined : delta / opened;
}

/**
 * What one more idle client costs: for a Node process the RSS growth between readings taken after
 * full collections (garbage pending is when V8 last collected, not what clients hold), for the
 * others the growth as read.
 */
export function idlePerClientKiB(row: IdleRow): number | undefined {
  if (row.rssBeforeCollectedKiB !== undefined) return perClientKiB(row.rssBeforeCollectedKiB, row.rssAfterCollectedKiB, row.opened);
  return perClientKiB(row.rssBeforeKiB, row.rssAfterKiB, row.opened);
}

function renderIdle(result: WorkloadResult): string[] {
  const lines = [
    '| target | clients held | failed | RSS before MiB | RSS after MiB | KiB per idle client, as read | after a full GC: RSS before → after MiB | KiB per idle client | notes |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const row of result.idleRows) {
    if (row.excluded || row.skipped) {
      lines.push(`| ${row.name} | ${row.excluded ? 'not run' : 'skipped'} | | | | | | | ${cell(row.excluded ?? row.skipped ?? '')} |`);
      continue;
    }
    const mib = (k: number | undefined) => (k === undefined ? '–' : (k / 1024).toFixed(1));
    const asRead = perClientKiB(row.rssBeforeKiB, row.rssAfterKiB, row.opened);
    const collected = row.rssBeforeCollectedKiB === undefined ? 'no collector' : `${mib(row.rssBeforeCollectedKiB)} → ${mib(row.rssAfterCollectedKiB)}`;
    const notes = [
      row.error,
      row.role === 'direct' ? 'the server itself, for reference' : undefined,
      row.opened && asRead === undefined ? 'RSS fell between the readings as read (a collection ran): no figure' : undefined,
    ];
    lines.push(
      `| ${row.name} | ${fmt(row.opened)} | ${fmt(row.failed)} | ${mib(row.rssBeforeKiB)} | ${mib(row.rssAfterKiB)} | ${asRead?.toFixed(2) ?? '–'} | ${collected} | ${idlePerClientKiB(row)?.toFixed(2) ?? '–'} | ${cell(notes.filter(Boolean).join('; '))} |`,
    );
  }
  return lines;
}

interface Check {
  target: string;
  measured: string;
  met: boolean | undefined;
  /** Which explanation in findings.ts covers it when missed. */
  finding: FindingKey;
}

function checks(results: WorkloadResult[]): Check[] {
  const out: Check[] = [];
  const byId = new Map(results.map((r) => [r.workload.id, r]));
  const row = (id: string, name: string) => byId.get(id)?.rows.find((r) => r.name === name);
  const verdict = (value: number | undefined, ok: (v: number) => boolean) => (value === undefined ? undefined : ok(value));
  for (const script of ['select', 'tpcb']) {
    for (const clients of [16, 64, 256]) {
      const id = `pg-${script}-c${clients}`;
      if (!byId.has(id)) continue;
      const ratio = pairedRatio(row(id, 'sluice'), row(id, 'pgbouncer'));
      out.push({ target: `${id}: sluice TPS ≥ 1.0 × PgBouncer`, measured: ratio === undefined ? 'no ratio (a side failed)' : fmtRatio(ratio), met: verdict(ratio, (v) => v >= 1.0), finding: 'pg-throughput' });
    }
  }
  if (byId.has('pg-select-prepared-c64')) {
    const ratio = pairedRatio(row('pg-select-prepared-c64', 'sluice'), row('pg-select-prepared-c64', 'direct'));
    out.push({ target: 'pg-select-prepared-c64: sluice -M prepared ≥ 0.9 × direct', measured: ratio === undefined ? 'no ratio (a side failed)' : fmtRatio(ratio), met: verdict(ratio, (v) => v >= 0.9), finding: 'pg-prepared' });
  }
  for (const result of results) {
    if (result.workload.kind !== 'pgbench') continue;
    const s = row(result.workload.id, 'sluice');
    const b = row(result.workload.id, 'pgbouncer');
    if (!s || !b || s.excluded || b.excluded) continue;
    const cs = summarise(s).cpuPer1000Ms;
    const cb = summarise(b).cpuPer1000Ms;
    out.push({
      target: `${result.workload.id}: sluice CPU / 1000 tx ≤ PgBouncer's`,
      measured: cs === undefined || cb === undefined ? 'no figure (a side failed)' : `${fmt(cs, 1)} vs ${fmt(cb, 1)} ms (${fmtRatio(cs / cb)})`,
      met: cs === undefined || cb === undefined ? undefined : cs <= cb,
      finding: 'pg-cpu',
    });
  }
  for (const result of results) {
    if (result.workload.kind !== 'redis-benchmark' || result.workload.spec.clients > 500) continue;
    const ratio = pairedRatio(row(result.workload.id, 'sluice'), row(result.workload.id, 'twemproxy'));
    out.push({ target: `${result.workload.id}: sluice ops/s ≥ 1.0 × twemproxy`, measured: ratio === undefined ? 'no ratio (a side failed)' : fmtRatio(ratio), met: verdict(ratio, (v) => v >= 1.0), finding: 'redis-throughput' });
  }
  for (const result of results) {
    if (result.workload.kind !== 'idle') continue;
    const sluice = result.idleRows.find((r) => r.name === 'sluice');
    const kib = sluice ? idlePerClientKiB(sluice) : undefined;
    const limit = result.workload.protocol === 'postgres' ? 4 : 3;
    out.push({ target: `${result.workload.id}: sluice ≤ ${limit} KiB per idle client`, measured: kib === undefined ? `no figure${sluice?.error ? ` (${sluice.error})` : ''}` : `${kib.toFixed(2)} KiB`, met: verdict(kib, (v) => v <= limit), finding: result.workload.protocol === 'postgres' ? 'idle-postgres' : 'idle-redis' });
  }
  for (const id of ['pg-select-c2000', 'redis-get-c2000-p1']) {
    const s = row(id, 'sluice');
    if (!s) continue;
    const sum = summarise(s);
    const spread = sum.p50Ms && sum.p99Ms ? sum.p99Ms / sum.p50Ms : undefined;
    out.push({ target: `${id}: sluice p99 ≤ 3 × p50`, measured: spread === undefined ? 'no figure (failed)' : `p50 ${fmtMs(sum.p50Ms)} ms, p99 ${fmtMs(sum.p99Ms)} ms (${spread.toFixed(2)}×)`, met: verdict(spread, (v) => v <= 3), finding: id.startsWith('pg') ? 'tail-postgres' : 'tail-redis' });
  }
  return out;
}

export function renderResults(info: RunInfo, results: WorkloadResult[]): string {
  const lines: string[] = [
    '# sluice benchmark results',
    '',
    'Written by `npm run bench` (bench/run.ts); see bench/README.md for how to run it and how to read it.',
    '',
    `- Date: ${info.date}`,
    `- Mode: ${info.plan.mode}, ${info.plan.rounds} rounds per workload, targets alternated (round r starts at target r), medians reported; ratios are medians of same-round ratios`,
    `- Command: \`${info.command}\``,
    `- Machine: ${info.cpus}; load average before ${info.loadBefore}, after ${info.loadAfter}; suite took ${Math.round(info.elapsedS)} s`,
    `- Versions: ${Object.entries(info.versions).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `- Pools: Postgres pool ${info.plan.postgresPoolSize} (PgBouncer default_pool_size = sluice pool_size, transaction mode, trust auth on both); Redis pool ${info.plan.redisPoolSize} (twemproxy server_connections = sluice pool_size); pgbench scale ${info.plan.scale}, fsync off`,
    '- CPU ms / 1000: utime+stime of the proxy process (from /proc/PID/stat) during the run, per 1000 transactions or operations; direct Redis rows charge redis-server itself, direct Postgres rows have no proxy to charge.',
    '',
    '## Issue 8 targets in this run',
    '',
    '| target | measured | met |',
    '| --- | --- | --- |',
  ];
  const all = checks(results);
  for (const check of all) lines.push(`| ${cell(check.target)} | ${cell(check.measured)} | ${check.met === undefined ? 'n/a' : check.met ? 'yes' : '**no**'} |`);
  const missed = [...new Set(all.filter((c) => c.met === false).map((c) => c.finding))];
  if (missed.length > 0) {
    lines.push('', '## Targets missed in this run: what explains them, what would close them', '');
    lines.push('From the profiles in bench/README.md (“What the profile shows”); the numbers above are this run’s.');
    for (const key of missed) {
      const names = all.filter((c) => c.met === false && c.finding === key).map((c) => c.target.split(':')[0]);
      lines.push('', `**${FINDINGS[key].title}** (missed: ${names.join(', ')})`, '', FINDINGS[key].text);
    }
  }
  for (const result of results) {
    lines.push('', `## ${result.workload.id}`, '', `${result.workload.title} (${Math.round(result.elapsedS)} s).`);
    if (result.workload.note) lines.push('', result.workload.note);
    lines.push('', ...(result.workload.kind === 'idle' ? renderIdle(result) : renderThroughput(result, info.plan.rounds)));
  }
  lines.push('');
  return lines.join('\n');
}
