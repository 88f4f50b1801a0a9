// One redis-benchmark run (one command) against one target, plus a probe that the target
// answers real replies: redis-benchmark counts error replies as successes, so a proxy that
// answered "-ERR" to everything would otherwise look fast.
import { execFile } from 'node:child_process';
import { createConnection } from 'node:net';
import type { RunOutcome } from './pgbench-runner.js';

export interface RedisBenchSpec {
  command: 'get' | 'set' | 'incr' | 'lpush';
  clients: number;
  pipeline: number;
  requests: number;
}

export function runRedisBenchmark(host: string, port: number, spec: RedisBenchSpec): Promise<RunOutcome> {
  const args = ['-h', host, '-p', String(port), '-c', String(spec.clients), '-n', String(spec.requests), '-P', String(spec.pipeline), '-t', spec.command, '--csv'];
  const timeoutMs = 120_000;
  return new Promise((resolve) => {
    execFile('redis-benchmark', args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const outcome: RunOutcome = {};
      // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
      const row = stdout
        .split('\n')
        .map((line) => line.split(',').map((cell) => cell.replace(/^"|"$/g, '')))
        .find((cells) => cells.length >= 7 && cells[0] !== 'test' && Number.isFinite(Number(cells[1])));
      if (row) {
        outcome.rate = Number(row[1]);
        outcome.p50Ms = Number(row[4]);
        outcome.p99Ms = Number(row[6]);
        outcome.count = spec.requests;
      }
      const killed = err && (err as NodeJS.ErrnoException & { killed?: boolean }).killed;
      if (killed) outcome.error = `timed out after ${timeoutMs / 1000}s`;
      else if (err || !row) {
        const text = `${stderr}\n${stdout}`.split('\n').map((l) => l.trim()).filter(Boolean);
        outcome.error = (text.find((l) => /error|could not|refused|reset|closed/i.test(l)) ?? text[0] ?? 'no result').slice(0, 200);
      }
      if (outcome.error) outcome.rate = undefined;
      resolve(outcome);
    });
  });
}

export function respCommand(words: string[]): string {
  return `*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join('')}`;
}

/** Sends the benchmarked commands once and fails on an error reply or a dropped connection. */
export function probeRedis(host: string, port: number, timeoutMs = 5000): Promise<string | undefined> {
  // RESP arrays, not inline commands: twemproxy only parses the former.
  const request = [['PING'], ['SET', 'bench:probe', '1'], ['GET', 'bench:probe'], ['INCR', 'bench:probe:n'], ['LPUSH', 'bench:probe:l', 'x']].map(respCommand).join('');
  const expected = 5;
  return new Promise((resolve) => {
    const socket = createConnection({ host, port }, () => socket.write(request));
    let text = '';
    const done = (problem: string | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done(`probe: no full reply within ${timeoutMs}ms (got ${JSON.stringify(text.slice(0, 80))})`), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const error = /^-[^\r]*/m.exec(text);
      if (error) return done(`probe: error reply ${error[0].slice(0, 120)}`);
      // Replies here are +PONG, +OK, $1 1, :n, :n — count top-level reply lines.
      const replies = text.split('\r\n').filter((line) => /^[+:$]/.test(line)).length;
      if (replies >= expected) done(undefined);
    });
    socket.on('error', (err) => done(`probe: ${err.message}`));
    socket.on('close', () => done(`probe: connection closed after ${JSON.stringify(text.slice(0, 80))}`));
  });
}
