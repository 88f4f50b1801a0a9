// Counts a process's system calls while a workload runs (strace -c), so proxies can be compared
// by syscalls per transaction: on loopback the kernel's write path dominates a byte-forwarding
// proxy's CPU, and the number of write/read calls per transaction is what a proxy controls.
import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../test/harness/tools.js';

export interface SyscallCounts {
  /** Calls by syscall name (write, writev, read, epoll_wait, …). */
  calls: Map<string, number>;
  total: number;
}

/** Parses strace -c's table: "% time  seconds  usecs/call  calls  errors  syscall". */
export function parseStraceSummary(text: string): SyscallCounts {
  const calls = new Map<string, number>();
  let total = 0;
  for (const line of text.split('\n')) {
    const cells = line.trim().split(/\s+/);
    if (cells.length < 5 || !/^\d+\.\d+$/.test(cells[0])) continue;
    const name = cells[cells.length - 1];
    const count = Number(cells[3]);
    if (name === 'total' || !Number.isFinite(count)) continue;
    calls.set(name, count);
    total += count;
  }
  return { calls, total };
}

/** Runs `during` with strace -c attached to pid (all threads); the tracer is stopped by its PID. */
export async function countSyscalls(pid: number, during: () => Promise<void>): Promise<SyscallCounts> {
  const dir = tempDir('strace');
  const out = join(dir, 'summary.txt');
  const tracer = spawn('strace', ['-c', '-f', '-q', '-p', String(pid), '-o', out], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  tracer.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<void>((resolve) => tracer.once('exit', () => resolve()));
  // strace has no "attached" signal on stdout; give it a moment before the workload starts.
  await new Promise((r) => setTimeout(r, 700));
  if (tracer.exitCode !== null) throw new Error(`strace could not attach: ${stderr.trim()}`);
  try {
    await during();
  } finally {
    if (tracer.pid && tracer.exitCode === null) process.kill(tracer.pid, 'SIGINT');
    await exited;
  }
  const counts = parseStraceSummary(readFileSync(out, 'utf8'));
  rmSync(dir, { recursive: true, force: true });
  return counts;
}

/** "write 2.00, read 2.01, …" per unit of work, the biggest first. */
export function perUnit(counts: SyscallCounts, units: number, top = 6): string {
  return [...counts.calls.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, n]) => `${name} ${(n / units).toFixed(2)}`)
    .join(', ');
}
