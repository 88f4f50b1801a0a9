// What a benchmarked process has cost so far, read from /proc: CPU time and resident memory.
// CPU time survives a noisy shared machine far better than throughput does, so every run
// records it around the measured interval.
import { readFileSync } from 'node:fs';

/** Linux reports utime/stime in clock ticks; USER_HZ is 100 on every mainstream kernel config. */
const TICKS_PER_SECOND = 100;

/** utime and stime of one process in milliseconds, or undefined once it has gone. */
export function cpuTimes(pid: number): { userMs: number; systemMs: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14 and stime field 15.
    return { userMs: (Number(fields[11]) * 1000) / TICKS_PER_SECOND, systemMs: (Number(fields[12]) * 1000) / TICKS_PER_SECOND };
  } catch {
    return undefined;
  }
}

/**
 * Total user and system CPU of several processes; a process that has gone counts as 0.
 * The split matters: a byte-forwarding proxy's system time is mostly the kernel's loopback
 * path, which every proxy pays per read/write call; user time is the proxy's own code.
 */
export function totalCpuTimes(pids: readonly number[]): { userMs: number; systemMs: number } {
  let userMs = 0;
  let systemMs = 0;
  for (const pid of pids) {
    const times = cpuTimes(pid);
    userMs += times?.userMs ?? 0;
    systemMs += times?.systemMs ?? 0;
  }
  return { userMs, systemMs };
}

/** VmRSS in KiB, or undefined once the process has gone. */
export function residentKiB(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function loadAverage(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return 'unknown';
  }
}
