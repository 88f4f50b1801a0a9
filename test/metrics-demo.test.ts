// `npm run demo` (scripts/demo.ts) end to end: it starts Postgres, Redis and sluice, shows
// per-pool numbers read from /status and /metrics, stops by itself with --seconds, and leaves
// no process behind.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const DEMO = fileURLToPath(new URL('../scripts/demo.js', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

t.test('the demo shows live pool numbers and stops every process it started', async (t) => {
  const child = spawn(process.execPath, [DEMO, '--seconds', '6'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) t.comment(out.slice(-3000));
  t.equal(code, 0, 'exits 0 by itself after --seconds');
  const pids = /pids: postgres (\d+), redis (\d+), sluice (\d+)/.exec(out);
  t.ok(pids, 'the demo names the processes it started');
  for (const pid of (pids ?? []).slice(1).map(Number)) t.notOk(alive(pid), `process ${pid} is gone`);
  t.match(out, /20 Postgres clients on pool_size 5/);
  // A pool line: name, clients active/waiting, servers used/pool_size.
  t.match(out, /^postgres\/main postgres\/app\s+\d+\/\d+\s+\d\/5\s/m, 'a per-pool line for the Postgres pool with servers used / pool_size');
  t.match(out, /^redis\/cache 0\/default\s+\d+\/\d+\s+\d\/2\s/m, 'a per-pool line for the Redis pool');
  t.match(out, /every process the demo started is stopped/);
});
