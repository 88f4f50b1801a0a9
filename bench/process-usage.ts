// What a benchmarked process has cost so far, read from /proc: CPU time and resident memory.
// CPU time survives a noisy shared machine far better than throughput does, so every run
// records it around the measured interval.
import { readFileSync } from 'node:fs';

/** Linux reports utime/stime in clock ticks; USER_HZ is 100 on every mainstream kernel config. */
const TICKS_PER_SECOND = 100;

/** utime + stime of one process in milliseconds, or undefined once it has gone. */
export function cpuTimeMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14 and stime field 15.
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1000) / TICKS_PER_SECOND;
  } catch {
    return undefined;
  }
}

/** Total CPU of several processes; a process that has gone counts as 0. */
export function totalCpuTimeMs(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) total += cpuTimeMs(pid) ?? 0;
  return total;
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
