// deploy/prometheus/sluice-alerts.yaml: promtool accepts the rules, its unit tests
// (sluice-alerts.test.yaml) pass and would catch a broken rule, every alert is unit-tested
// firing, and every rule names only metrics sluice exports.
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse } from 'yaml';
import { parseExposition } from '../metrics/exposition.js';
import { metricNamesIn } from './deploy-promql.js';
import { findBinary, tempDir } from './harness/tools.js';
import { populatedMetrics } from './metrics-fixtures.js';

const DIR = fileURLToPath(new URL('../../deploy/prometheus/', import.meta.url));
const RULES = join(DIR, 'sluice-alerts.yaml');
const TESTS = join(DIR, 'sluice-alerts.test.yaml');
const PROMTOOL = findBinary('promtool', [], 'apt-get install prometheus');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleFile {
  groups: Array<{ name: string; rules: Rule[] }>;
}
interface UnitTests {
  rule_files: string[];
  tests: Array<{ name: string; alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
}

const rules = (parse(readFileSync(RULES, 'utf8')) as RuleFile).groups.flatMap((g) => g.rules);
const alerts = rules.filter((r) => r.alert);

function promtool(args: string[], cwd = DIR) {
  const run = spawnSync(PROMTOOL, args, { cwd, encoding: 'utf8' });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

t.test('promtool check rules accepts sluice-alerts.yaml', async (t) => {
  const run = promtool(['check', 'rules', RULES]);
  t.equal(run.status, 0, run.output);
  t.match(run.output, new RegExp(`SUCCESS: ${rules.length} rules found`));
});

t.test('promtool test rules passes sluice-alerts.test.yaml', async (t) => {
  const run = promtool(['test', 'rules', TESTS]);
  t.equal(run.status, 0, run.output);
  t.match(run.output, /SUCCESS/);
});

t.test('the unit tests catch a broken rule (they are not vacuous)', async (t) => {
  const dir = tempDir('alerts-mutant');
  copyFileSync(TESTS, join(dir, 'sluice-alerts.test.yaml'));
  const original = readFileSync(RULES, 'utf8');
  const mutant = original.replace('expr: sluice_upstream_up == 0', 'expr: sluice_upstream_up == 2');
  t.not(mutant, original, 'the mutation applied');
  writeFileSync(join(dir, 'sluice-alerts.yaml'), mutant);
  const run = promtool(['test', 'rules', 'sluice-alerts.test.yaml'], dir);
  t.not(run.status, 0);
  t.match(run.output, /alertname: SluiceUpstreamDown/);
});

t.test('every alert is unit-tested firing at least once, and has a severity, a summary and a description', async (t) => {
  const unit = parse(readFileSync(TESTS, 'utf8')) as UnitTests;
  t.same(unit.rule_files, ['sluice-alerts.yaml']);
  const firing = new Set(unit.tests.flatMap((c) => (c.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
  for (const rule of alerts) {
    t.ok(firing.has(rule.alert ?? ''), `${rule.alert} has a firing test case`);
    t.match(rule.labels?.severity, /^(warning|critical)$/, `${rule.alert} severity`);
    t.ok(rule.annotations?.summary && rule.annotations.description, `${rule.alert} summary and description`);
  }
});

t.test('the alerts cover what issue 5 asks for', async (t) => {
  const byName = new Map(alerts.map((a) => [a.alert, a]));
  t.match(byName.get('SluicePoolSaturated')?.expr, /sluice_server_connections\{state="active"\}[\s\S]*sluice_pool_size/, 'pool saturation');
  t.ok(byName.get('SluicePoolSaturated')?.for, 'sustained, not a blip');
  t.match(byName.get('SluiceClientsWaitingTooLong')?.expr, /sluice_pool_oldest_wait_seconds\) > \d+/, 'clients waiting longer than N s');
  t.match(byName.get('SluiceAcquireTimeouts')?.expr, /sluice_timeouts_total\{config_key=~"\(timeouts\\\\\.\)\?acquire"\}/, 'acquire timeouts');
  t.match(byName.get('SluiceUpstreamDown')?.expr, /sluice_upstream_up == 0/, 'upstream down');
  t.match(byName.get('SluiceAuthFailureBurst')?.expr, /increase\(sluice_auth_failures_total\[5m\]\)\) > \d+/, 'auth failure bursts');
});

t.test('every rule names only metrics sluice exports', async (t) => {
  const exported = new Set<string>();
  for (const family of parseExposition(await populatedMetrics().render()).values()) {
    exported.add(family.name);
    for (const sample of family.samples) exported.add(sample.name);
  }
  for (const rule of rules) {
    const names = metricNamesIn(rule.expr);
    t.ok(names.length > 0, `${rule.alert}: names a metric`);
    for (const name of names) t.ok(exported.has(name), `${rule.alert}: ${name} is exported`);
  }
});
