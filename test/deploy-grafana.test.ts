// deploy/grafana/sluice-dashboard.json: that Grafana can load it (its schema, via
// @grafana/schema's generated types, plus the structure Grafana's layout needs), that every
// query is valid PromQL (promtool parses it), and that every query names only metrics sluice
// exports — a renamed metric must break this test, not a dashboard in production.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parseExposition } from '../metrics/exposition.js';
import { typecheckValues } from './deploy-typecheck.js';
import { findBinary, tempDir } from './harness/tools.js';
import { populatedMetrics } from './metrics-fixtures.js';
import { metricNamesIn } from './deploy-promql.js';

const DASHBOARD = fileURLToPath(new URL('../../deploy/grafana/sluice-dashboard.json', import.meta.url));
const PROMTOOL = findBinary('promtool', [], 'apt-get install prometheus');

interface Target {
  refId: string;
  expr: string;
  legendFormat?: string;
}
interface PanelJson {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: PanelJson[];
}
interface DashboardJson {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: PanelJson[];
  templating: { list: Array<{ name: string; type: string; query?: unknown; multi?: boolean; includeAll?: boolean }> };
}

const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as DashboardJson;
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queryPanels = panels.filter((p) => p.type !== 'row');
const expressions = queryPanels.flatMap((p) => (p.targets ?? []).map((target) => ({ panel: p.title, expr: target.expr })));

/** The metric names a Prometheus server would hold for sluice: families plus histogram series. */
async function exportedSeriesNames(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const family of parseExposition(await populatedMetrics().render()).values()) {
    names.add(family.name);
    for (const sample of family.samples) names.add(sample.name);
  }
  return names;
}

t.test('the dashboard fits Grafana’s dashboard schema exactly (types generated from its CUE schema)', async (t) => {
  const errors = typecheckValues([{ label: 'dashboard', from: '@grafana/schema', typeName: 'Dashboard', value: dashboard }]);
  t.same(errors.get('dashboard'), []);
});

t.test('the schema check rejects an unknown or misplaced key (it is not vacuous)', async (t) => {
  const broken = structuredClone(dashboard) as unknown as Record<string, unknown> & DashboardJson;
  (broken.panels[1] as unknown as Record<string, unknown>).gridPosition = { x: 0 };
  const errors = typecheckValues([{ label: 'broken', from: '@grafana/schema', typeName: 'Dashboard', value: broken }]);
  t.match(errors.get('broken')?.join('\n'), /gridPosition/);
});

t.test('the dashboard has what Grafana needs to import and lay it out', async (t) => {
  t.match(dashboard.uid, /^[a-zA-Z0-9_-]{1,40}$/, 'a stable uid, so provisioning updates it in place');
  t.ok(dashboard.title);
  t.ok(dashboard.schemaVersion >= 36, 'a schemaVersion Grafana 9+ reads without migration surprises');
  const ids = panels.map((p) => p.id);
  t.same(ids.length, new Set(ids).size, 'panel ids are unique');
  for (const p of panels) {
    t.ok(p.gridPos.x >= 0 && p.gridPos.w > 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: fits the 24-column grid`);
  }
  for (let i = 0; i < panels.length; i++) {
    for (let j = i + 1; j < panels.length; j++) {
      const a = panels[i].gridPos;
      const b = panels[j].gridPos;
      const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
      if (overlap) t.fail(`${panels[i].title} and ${panels[j].title} overlap`);
    }
  }
  for (const p of queryPanels) {
    t.ok(['timeseries', 'stat'].includes(p.type), `${p.title}: a built-in panel type`);
    t.equal(p.datasource?.uid, `\${datasource}`, `${p.title}: uses the datasource variable`);
    const refIds = (p.targets ?? []).map((target) => target.refId);
    t.ok(refIds.length > 0, `${p.title}: has queries`);
    t.same(refIds.length, new Set(refIds).size, `${p.title}: refIds are unique`);
  }
  const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]));
  t.equal(variables.get('datasource')?.type, 'datasource');
  const pool = variables.get('pool');
  t.equal(pool?.type, 'query', 'a pool variable from the metrics');
  t.match(JSON.stringify(pool?.query), /label_values\(sluice_listener_clients, pool\)/);
  t.ok(pool?.multi && pool.includeAll, 'several pools or all of them');
  const poolPanels = queryPanels.filter((p) => (p.targets ?? []).some((target) => /sluice_(clients|server_connections|pool_|transaction|query|command|errors|timeouts)/.test(target.expr)));
  for (const p of poolPanels) {
    t.ok((p.targets ?? []).every((target) => target.expr.includes('pool=~"$pool"')), `${p.title}: filtered by $pool`);
  }
});

t.test('the dashboard shows what issue 5 asks for', async (t) => {
  const all = expressions.map((e) => e.expr).join('\n');
  t.match(all, /sluice_server_connections\{state="active"[^\n]*\n[^\n]*sluice_pool_size/, 'saturation: active vs pool_size');
  t.match(all, /sluice_clients\{state="waiting"/, 'waiting clients');
  t.match(all, /histogram_quantile\(0\.5, sum by \(le, pool\) \(rate\(sluice_pool_wait_seconds_bucket/, 'wait p50');
  t.match(all, /histogram_quantile\(0\.99, sum by \(le, pool\) \(rate\(sluice_pool_wait_seconds_bucket/, 'wait p99');
  t.match(all, /histogram_quantile\(0\.99, [^\n]*sluice_transaction_duration_seconds_bucket/, 'transaction p99');
  t.match(all, /histogram_quantile\(0\.99, [^\n]*sluice_command_duration_seconds_bucket/, 'command p99');
  t.match(all, /rate\(sluice_transactions_total/, 'throughput');
  t.match(all, /sum by \(pool, kind\) \(rate\(sluice_errors_total/, 'errors by kind');
  t.match(all, /sum by \(pool, config_key\) \(rate\(sluice_timeouts_total/, 'timeouts by kind');
  t.match(all, /sluice_server_connections_opened_total[\s\S]*sluice_server_connections_closed_total/, 'server connection churn');
  t.match(all, /sluice_nodejs_eventloop_lag_p99_seconds/, 'event-loop lag');
});

t.test('every dashboard query names only metrics sluice exports', async (t) => {
  const exported = await exportedSeriesNames();
  t.ok(expressions.length > 20, `${expressions.length} queries`);
  for (const { panel, expr } of expressions) {
    const names = metricNamesIn(expr);
    t.ok(names.length > 0, `${panel}: names a metric`);
    for (const name of names) t.ok(exported.has(name), `${panel}: ${name} is exported`);
  }
});

t.test('every dashboard query is valid PromQL (promtool parses each, Grafana variables filled in)', async (t) => {
  const dir = tempDir('grafana-promql');
  const rules = expressions.map(({ expr }, i) => {
    const filled = expr.replaceAll('$__rate_interval', '5m').replaceAll('$pool', '.*');
    return `      - record: sluice:dashboard_query_${i}\n        expr: ${JSON.stringify(filled)}\n`;
  });
  const file = join(dir, 'queries.yaml');
  writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join('')}`);
  const run = spawnSync(PROMTOOL, ['check', 'rules', file], { encoding: 'utf8' });
  t.equal(run.status, 0, `${run.stdout}${run.stderr}`);
  t.match(run.stdout, new RegExp(`SUCCESS: ${expressions.length} rules found`));
});
