// metrics/README.md is the contract for dashboards and alerts: these tests fail when what sluice
// exports and what the document lists differ in a name, a type or a label, and when a metric
// breaks the naming conventions the document promises.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { labelNames, parseExposition } from '../metrics/exposition.js';
import { startSluice } from './harness/sluice-process.js';
import { freePort } from './harness/tools.js';
import { populatedMetrics } from './metrics-fixtures.js';

const README = fileURLToPath(new URL('../../metrics/README.md', import.meta.url));

interface Documented {
  type: string;
  labels: string[];
}

/** The catalogue rows: | `name` | type | labels | meaning |. */
function documentedMetrics(text = readFileSync(README, 'utf8')): Map<string, Documented> {
  const rows = new Map<string, Documented>();
  for (const m of text.matchAll(/^\| `(sluice_[a-z0-9_]+)` \| (\w+) \|([^|]*)\|/gm)) {
    if (rows.has(m[1])) throw new Error(`${m[1]} is documented twice`);
    const labels = m[3].split(',').map((s) => s.trim()).filter(Boolean).sort();
    rows.set(m[1], { type: m[2], labels });
  }
  return rows;
}

const isProcessMetric = (name: string) => /^sluice_(process|nodejs)_/.test(name);

t.test('the README parser finds the catalogue (guards the tests below against matching nothing)', async (t) => {
  const docs = documentedMetrics();
  t.ok(docs.size > 40, `found ${docs.size} rows`);
  t.same(docs.get('sluice_pool_wait_seconds'), { type: 'histogram', labels: ['database', 'pool', 'protocol', 'user'] });
});

t.test('a running sluice exports exactly the metrics metrics/README.md documents, with their types', async (t) => {
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
  const exported = parseExposition(await sluice.metrics());
  const docs = documentedMetrics();
  const exportedNames = [...exported.keys()].sort();
  t.same(exportedNames, [...docs.keys()].sort(), 'the same names, both ways (a new metric needs a README row; a removed one needs its row gone)');
  for (const [name, family] of exported) {
    t.equal(family.type, docs.get(name)?.type, `${name} is a ${docs.get(name)?.type}`);
    t.not(family.help, '', `${name} has HELP text`);
  }
});

t.test('every sluice metric carries exactly the labels its README row lists', async (t) => {
  const exported = parseExposition(await populatedMetrics().render());
  const docs = documentedMetrics();
  for (const [name, doc] of docs) {
    const family = exported.get(name);
    t.ok(family, `${name} is in the registry`);
    if (!family) continue;
    if (isProcessMetric(name)) {
      // prom-client's defaults only show a label once it has a value (gc kinds appear after a GC).
      const extra = labelNames(family).filter((l) => !doc.labels.includes(l));
      t.same(extra, [], `${name} has no label the README omits`);
    } else {
      t.same(labelNames(family), doc.labels, `${name} labels`);
    }
  }
});

t.test('sluice metrics follow the naming conventions the README promises', async (t) => {
  for (const [name, doc] of documentedMetrics()) {
    t.match(name, /^sluice_[a-z0-9_]+$/, `${name}: prefix sluice_, snake case`);
    if (isProcessMetric(name)) continue;
    if (doc.type === 'counter') t.match(name, /_total$/, `${name}: a counter ends in _total`);
    else t.notMatch(name, /_total$/, `${name}: only counters end in _total`);
    if (doc.type === 'histogram') t.match(name, /_seconds$/, `${name}: durations are in seconds`);
    t.notMatch(name, /_(ms|milliseconds|kb|mb)(_|$)/, `${name}: base units only`);
    for (const label of doc.labels) {
      t.notOk(['client', 'client_addr', 'key', 'query', 'command', 'addr', 'port'].includes(label), `${name}: no unbounded label (${label})`);
    }
  }
});

t.test('a pool seen by many clients is still one series per state: labels never grow with traffic', async (t) => {
  const metrics = populatedMetrics();
  const before = (await metrics.render()).split('\n').length;
  const listener = metrics.forListener('redis', 'cache');
  for (let i = 0; i < 500; i++) {
    listener.accepted();
    listener.command('string', 0.001);
  }
  t.equal((await metrics.render()).split('\n').length, before, '500 more clients and commands add no line');
});
