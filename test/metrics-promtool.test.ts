// `promtool check metrics` (Prometheus's own linter) on what sluice serves: naming, units,
// _total suffixes, HELP text. Process metrics from prom-client are left out: three of its
// gauges end in _total (metrics/README.md, "Process"), which promtool rightly flags.
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { startSluice } from './harness/sluice-process.js';
import { findBinary, freePort } from './harness/tools.js';
import { populatedMetrics } from './metrics-fixtures.js';

const PROMTOOL = findBinary('promtool', [], 'apt-get install prometheus');

function promtoolCheckMetrics(text: string): { status: number | null; output: string } {
  const run = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: run.status, output: `${run.stdout}${run.stderr}`.trim() };
}

/** sluice's own metrics: drops the HELP, TYPE and sample lines of prom-client's process defaults. */
function ownMetrics(text: string): string {
  return text
    .split('\n')
    .filter((line) => !/^(# (HELP|TYPE) )?sluice_(process|nodejs)_/.test(line))
    .join('\n');
}

t.test('promtool finds lint problems when there are some (the check below is not vacuous)', async (t) => {
  const bad = promtoolCheckMetrics('# HELP sluice_bad_count a counter without _total\n# TYPE sluice_bad_count counter\nsluice_bad_count 1\n');
  t.not(bad.status, 0);
  t.match(bad.output, /should have "_total" suffix/);
});

t.test('promtool check metrics is clean on a live /metrics scrape of sluice', async (t) => {
  const sluice = await startSluice(
    `
metrics: { listen: "{{METRICS}}" }
postgres:
  - { name: main, listen: "127.0.0.1:${await freePort()}", server: { host: 127.0.0.1, port: 1 } }
redis:
  - { name: cache, listen: "127.0.0.1:${await freePort()}", server: { host: 127.0.0.1, port: 1 } }
`,
    { waitReady: false },
  );
  t.teardown(() => sluice.stop());
  const own = ownMetrics(await sluice.metrics());
  t.match(own, /# TYPE sluice_pool_wait_seconds histogram/, 'the filtered scrape still holds sluice metrics');
  t.match(own, /^sluice_listener_clients\{protocol="postgres",pool="main"\} 0$/m, 'with samples, not only metadata');
  t.notMatch(own, /sluice_nodejs_/, 'process defaults are filtered out');
  const result = promtoolCheckMetrics(own);
  t.equal(result.output, '', 'no lint problems');
  t.equal(result.status, 0);
});

t.test('promtool check metrics is clean with every sluice series present (histograms, every label set)', async (t) => {
  const own = ownMetrics(await populatedMetrics().render());
  t.match(own, /sluice_pool_wait_seconds_bucket\{le="0\.0001",protocol="postgres"/, 'histogram buckets are in the input');
  t.match(own, /sluice_timeouts_total\{protocol="redis",pool="cache",config_key="timeouts\.acquire"\} 1/);
  const result = promtoolCheckMetrics(own);
  t.equal(result.output, '', 'no lint problems');
  t.equal(result.status, 0);
});
