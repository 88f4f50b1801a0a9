// deploy/kubernetes, offline: each kustomization renders (test/deploy-kustomize.ts), every
// object validates against the Kubernetes / Prometheus Operator schemas (kubernetes-models'
// validators for types, required fields and enums; TypeScript's excess-property check on the same
// models' types for unknown fields), the sluice config in each ConfigMap passes `sluice --check`,
// and the examples keep the promises issue 6 makes (native sidecar, probes, hardening, grace
// period, sizing) and stay identical to deploy/prometheus and deploy/grafana.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse } from 'yaml';
import { parseDurationMs } from '../config/duration.js';
import { type KubeObject, type RenderedObject, renderKustomization } from './deploy-kustomize.js';
import { typecheckValues } from './deploy-typecheck.js';
import { MAIN_JS } from './harness/sluice-process.js';
import { tempDir } from './harness/tools.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const K8S = join(REPO, 'deploy', 'kubernetes');
// Every folder is an example with a kustomization: a new one is rendered and validated too.
const EXAMPLES = readdirSync(K8S, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name);

/** The model (runtime validator and TypeScript type) for each kind the examples use. */
const MODELS: Record<string, { module: string; type: string }> = {
  'v1/Secret': { module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'v1/ConfigMap': { module: 'kubernetes-models/v1/ConfigMap', type: 'IConfigMap' },
  'v1/Service': { module: 'kubernetes-models/v1/Service', type: 'IService' },
  'apps/v1/Deployment': { module: 'kubernetes-models/apps/v1/Deployment', type: 'IDeployment' },
  'policy/v1/PodDisruptionBudget': { module: 'kubernetes-models/policy/v1/PodDisruptionBudget', type: 'IPodDisruptionBudget' },
  'autoscaling/v2/HorizontalPodAutoscaler': { module: 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler', type: 'IHorizontalPodAutoscaler' },
  'monitoring.coreos.com/v1/PodMonitor': { module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor', type: 'IPodMonitor' },
  'monitoring.coreos.com/v1/PrometheusRule': { module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule', type: 'IPrometheusRule' },
};

const modelOf = (o: KubeObject) => MODELS[`${o.apiVersion}/${o.kind}`];

/** kubernetes-models' validator for the object's kind; throws with the schema errors. */
async function validateWithModel(object: KubeObject): Promise<void> {
  const model = modelOf(object);
  if (!model) throw new Error(`${object.apiVersion} ${object.kind}: no schema for this kind in the test's table`);
  const exported = (await import(model.module)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = exported[object.kind];
  new Model(object).validate();
}

/** Unknown-field errors (and any other type error) per label. */
function unknownFields(objects: Array<{ label: string; object: KubeObject }>): Map<string, string[]> {
  return typecheckValues(objects.map(({ label, object }) => ({ label, from: modelOf(object).module, typeName: modelOf(object).type, value: object })));
}

const rendered = new Map<string, RenderedObject[]>(EXAMPLES.map((name) => [name, renderKustomization(join(K8S, name))]));
const find = (example: string, kind: string, name?: string) =>
  (rendered.get(example) ?? []).map((r) => r.object).find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));

// Loose views of the objects, for reading fields in assertions.
// biome-ignore lint/suspicious/noExplicitAny: manifests are checked against their schemas above; here we only read them.
type Any = any;

function podSpec(example: string): Any {
  return (find(example, 'Deployment') as Any).spec.template.spec;
}

function sluiceConfig(example: string): { text: string; config: Any } {
  const configMaps = (rendered.get(example) ?? []).map((r) => r.object).filter((o) => o.kind === 'ConfigMap') as Any[];
  const text = configMaps.find((c) => c.data?.['sluice.yaml'])?.data['sluice.yaml'] as string;
  return { text, config: parse(text) };
}

/** The env a container would see, with each Secret reference filled with a stand-in value. */
function containerEnv(container: Any): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const e of container.env ?? []) env[e.name] = e.value ?? (e.valueFrom?.secretKeyRef ? `secret-${e.valueFrom.secretKeyRef.key}` : undefined);
  return env;
}

function sluiceCheck(configText: string, env: NodeJS.ProcessEnv) {
  const file = join(tempDir('k8s-config'), 'sluice.yaml');
  writeFileSync(file, configText);
  // Only the container's env: a variable the manifest forgot must fail the check.
  const run = spawnSync(process.execPath, [MAIN_JS, '--check', '--config', file], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

const port = (listen: string) => Number(listen.split(':').at(-1));

t.test('every file in deploy/ is one a deploy test checks', async (t) => {
  t.same([...EXAMPLES].sort(), ['monitoring', 'shared-pooler', 'sidecar'], 'the examples issue 6 asks for');
  // Outside deploy/kubernetes/<example>/ (whose files the next test ties to a kustomization),
  // each file has its own test: add one before adding a file.
  const checkedElsewhere = new Map([
    ['grafana/sluice-dashboard.json', 'test/deploy-grafana.test.ts'],
    ['prometheus/sluice-alerts.yaml', 'test/deploy-prometheus.test.ts'],
    ['prometheus/sluice-alerts.test.yaml', 'test/deploy-prometheus.test.ts'],
    ['kubernetes/README.md', 'documentation'],
  ]);
  const files = (readdirSync(join(REPO, 'deploy'), { recursive: true, withFileTypes: true }) as Array<{ name: string; parentPath?: string; path?: string; isFile(): boolean }>)
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath ?? d.path ?? '', d.name).slice(join(REPO, 'deploy').length + 1));
  for (const file of files) {
    const inExample = EXAMPLES.some((e) => file.startsWith(`kubernetes/${e}/`));
    t.ok(inExample || checkedElsewhere.has(file), `deploy/${file} is checked (${inExample ? 'kustomization example' : checkedElsewhere.get(file)})`);
  }
});

t.test('each kustomization renders, and uses every manifest in its folder', async (t) => {
  for (const example of EXAMPLES) {
    const objects = rendered.get(example) ?? [];
    t.ok(objects.length >= 3, `${example}: ${objects.length} objects`);
    const used = new Set(objects.map((o) => o.source));
    const k = parse(readFileSync(join(K8S, example, 'kustomization.yaml'), 'utf8')) as { configMapGenerator?: Array<{ files: string[] }> };
    const generated = new Set((k.configMapGenerator ?? []).flatMap((g) => g.files));
    for (const file of readdirSync(join(K8S, example)).filter((f) => f !== 'kustomization.yaml')) {
      if (file === 'README.md') continue;
      t.ok(used.has(file) || generated.has(file), `${example}/${file} is used by the kustomization`);
    }
  }
});

t.test('the renderer refuses what it cannot render instead of ignoring it', async (t) => {
  const dir = tempDir('kustomize-unsupported');
  writeFileSync(join(dir, 'kustomization.yaml'), 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\npatches: []\n');
  t.throws(() => renderKustomization(dir), /patches not supported/);
  writeFileSync(join(dir, 'kustomization.yaml'), 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../secret.yaml]\n');
  t.throws(() => renderKustomization(dir), /outside/);
  writeFileSync(join(dir, 'a.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\n');
  writeFileSync(join(dir, 'kustomization.yaml'), 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml, a.yaml]\n');
  t.throws(() => renderKustomization(dir), /appears twice/);
});

t.test('every rendered object validates against its Kubernetes or Prometheus Operator schema', async (t) => {
  for (const [example, objects] of rendered) {
    for (const { source, object } of objects) {
      await t.resolves(validateWithModel(object), `${example}/${source}: ${object.kind} ${object.metadata.name}`);
    }
  }
});

t.test('no rendered object has a field its schema does not know', async (t) => {
  const all = [...rendered].flatMap(([example, objects]) => objects.map(({ source, object }) => ({ label: `${example}/${source} ${object.kind}`, object })));
  for (const [label, errors] of unknownFields(all)) t.same(errors, [], label);
});

t.test('the schema checks reject an unknown field, a wrong type and a missing required field', async (t) => {
  const deployment = structuredClone(find('sidecar', 'Deployment')) as Any;
  deployment.spec.template.spec.initContainers[0].readinesProbe = deployment.spec.template.spec.initContainers[0].readinessProbe;
  const rule = structuredClone(find('monitoring', 'PrometheusRule')) as Any;
  rule.spec.groups[0].rules[0].severity = 'critical';
  const errors = unknownFields([
    { label: 'misspelt probe', object: deployment },
    { label: 'misplaced severity', object: rule },
  ]);
  t.match(errors.get('misspelt probe')?.join('\n'), /'"?readinesProbe"?' does not exist/);
  t.match(errors.get('misplaced severity')?.join('\n'), /'"?severity"?' does not exist/);
  const wrongType = structuredClone(find('shared-pooler', 'Deployment')) as Any;
  wrongType.spec.replicas = 'two';
  await t.rejects(validateWithModel(wrongType), /replicas/);
  const missing = structuredClone(find('shared-pooler', 'Service')) as Any;
  delete missing.spec.ports[0].port;
  await t.rejects(validateWithModel(missing), /port/);
});

t.test('the sluice config in each ConfigMap passes sluice --check with the container’s env, and fails without it', async (t) => {
  for (const example of ['sidecar', 'shared-pooler']) {
    const spec = podSpec(example);
    const sluice = [...(spec.initContainers ?? []), ...spec.containers].find((c: Any) => c.name === 'sluice');
    const { text } = sluiceConfig(example);
    t.ok(text, `${example}: a ConfigMap carries sluice.yaml`);
    const ok = sluiceCheck(text, containerEnv(sluice));
    t.equal(ok.status, 0, `${example}: ${ok.output}`);
    const bare = sluiceCheck(text, {});
    t.equal(bare.status, 1, `${example}: the check needs the env the manifest provides`);
    t.match(bare.output, /environment variable \w+ is not set/);
    t.same(sluice.args, ['--config', '/etc/sluice/sluice.yaml']);
    const mount = sluice.volumeMounts.find((m: Any) => m.mountPath === '/etc/sluice');
    t.ok(mount && !mount.subPath, `${example}: the config is a directory mount (a subPath mount never sees ConfigMap updates, so no hot reload)`);
    const volume = spec.volumes.find((v: Any) => v.name === mount.name);
    t.ok(find(example, 'ConfigMap', volume.configMap.name), `${example}: the mounted ConfigMap is in the kustomization`);
  }
});

t.test('sidecar: a native sidecar in front of the app on 127.0.0.1:6432, probed, hardened, outliving the app', async (t) => {
  const spec = podSpec('sidecar');
  const { config } = sluiceConfig('sidecar');
  const sluice = spec.initContainers.find((c: Any) => c.name === 'sluice');
  t.ok(sluice, 'sluice is an initContainers entry');
  t.equal(sluice.restartPolicy, 'Always', 'restartPolicy: Always makes it a native sidecar (starts first, stops last)');
  t.notOk(spec.containers.some((c: Any) => c.name === 'sluice'), 'not a regular container, which would be stopped alongside the app');
  const app = spec.containers.find((c: Any) => c.name === 'app');
  const dsn = app.env.find((e: Any) => e.name === 'DATABASE_URL').value as string;
  t.match(dsn, /@127\.0\.0\.1:6432\//, 'the app’s DSN points at the sidecar');
  t.equal(config.postgres[0].listen, '127.0.0.1:6432', 'sluice listens where the DSN points, on loopback only');
  t.match(app.env.find((e: Any) => e.name === 'REDIS_URL').value, new RegExp(`^redis://${config.redis[0].listen}/`));
  for (const e of sluice.env.filter((e: Any) => /PASSWORD/.test(e.name))) t.ok(e.valueFrom?.secretKeyRef, `${e.name} comes from a Secret`);
  t.notMatch(JSON.stringify(find('sidecar', 'ConfigMap')), /change-me/, 'no password in the ConfigMap');
  checkProbesAndHardening(t, sluice, config);
  const graceMs = spec.terminationGracePeriodSeconds * 1000;
  t.ok(graceMs > parseDurationMs(config.shutdown_timeout)! + parseDurationMs(config.shutdown_delay ?? '0s')!, 'terminationGracePeriodSeconds > shutdown_delay + shutdown_timeout');
});

function checkProbesAndHardening(t: Any, sluice: Any, config: Any): void {
  const metricsPort = sluice.ports.find((p: Any) => p.name === 'sluice-metrics');
  t.equal(metricsPort?.containerPort, port(config.metrics.listen), 'the metrics port is the one sluice listens on');
  t.match(config.metrics.listen, /^0\.0\.0\.0:/, 'metrics listen on all addresses: the kubelet probes the pod IP');
  t.equal(sluice.readinessProbe?.httpGet?.path, '/readyz');
  t.equal(sluice.livenessProbe?.httpGet?.path, '/healthz', 'liveness on /healthz: an unreachable database must not restart sluice');
  t.ok(sluice.startupProbe?.httpGet, 'a startup probe');
  for (const probe of [sluice.readinessProbe, sluice.livenessProbe, sluice.startupProbe]) t.equal(probe.httpGet.port, 'sluice-metrics');
  t.ok(sluice.resources?.requests?.cpu && sluice.resources?.requests?.memory && sluice.resources?.limits?.memory, 'resources set');
  const sc = sluice.securityContext;
  t.equal(sc.runAsNonRoot, true);
  t.ok(sc.runAsUser > 0, 'a non-root uid');
  t.equal(sc.readOnlyRootFilesystem, true);
  t.equal(sc.allowPrivilegeEscalation, false);
  t.same(sc.capabilities?.drop, ['ALL']);
}

t.test('shared pooler: Deployment, Service, PDB and HPA fit together, and the HPA cannot outgrow max_connections', async (t) => {
  const deployment = find('shared-pooler', 'Deployment') as Any;
  const spec = podSpec('shared-pooler');
  const { config } = sluiceConfig('shared-pooler');
  const sluice = spec.containers.find((c: Any) => c.name === 'sluice');
  checkProbesAndHardening(t, sluice, config);
  const labels = deployment.spec.template.metadata.labels;
  const selects = (selector: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);
  const service = find('shared-pooler', 'Service') as Any;
  t.ok(selects(service.spec.selector), 'the Service selects the pods');
  t.ok(selects((find('shared-pooler', 'PodDisruptionBudget') as Any).spec.selector.matchLabels), 'the PDB selects the pods');
  const hpa = find('shared-pooler', 'HorizontalPodAutoscaler') as Any;
  t.same([hpa.spec.scaleTargetRef.kind, hpa.spec.scaleTargetRef.name], ['Deployment', deployment.metadata.name], 'the HPA scales the Deployment');
  for (const p of service.spec.ports) {
    const target = sluice.ports.find((cp: Any) => cp.name === p.targetPort);
    t.ok(target, `Service port ${p.name} targets a named container port`);
    const listener = [...config.postgres, ...config.redis].find((l: Any) => port(l.listen) === target.containerPort);
    t.ok(listener, `container port ${target.containerPort} is a sluice listener`);
    t.match(listener.listen, /^0\.0\.0\.0:/, `${listener.name} listens on all addresses, so the Service reaches it`);
  }
  const maxConnections = Number(hpa.metadata.annotations['sluice/server-max-connections']);
  t.ok(maxConnections > 0, 'the HPA records the max_connections it was sized for');
  const perReplica = config.postgres.reduce((sum: number, l: Any) => sum + l.pool_size * Math.max(1, l.users.length), 0);
  t.ok(hpa.spec.maxReplicas * perReplica < maxConnections, `maxReplicas ${hpa.spec.maxReplicas} × ${perReplica} server connections per replica < max_connections ${maxConnections}`);
  t.ok(deployment.spec.replicas >= hpa.spec.minReplicas, 'starts at least at minReplicas');
  t.ok(hpa.spec.minReplicas >= 2, 'two replicas, so the PDB lets one go');
  const graceMs = spec.terminationGracePeriodSeconds * 1000;
  t.ok(graceMs > parseDurationMs(config.shutdown_timeout)! + parseDurationMs(config.shutdown_delay)!, 'terminationGracePeriodSeconds > shutdown_delay + shutdown_timeout');
  t.ok(parseDurationMs(config.shutdown_delay)! > 0, 'a shutdown_delay, so endpoints are gone before the listeners close');
  t.match(readFileSync(join(K8S, 'shared-pooler', 'README.md'), 'utf8'), /maxReplicas × pool_size × \(database, user\) pairs\s+<\s+max_connections/, 'the sizing note');
});

t.test('every sluice container runs the image of this version, from the root Dockerfile', async (t) => {
  const { version } = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
  for (const example of ['sidecar', 'shared-pooler']) {
    const spec = podSpec(example);
    const sluice = [...(spec.initContainers ?? []), ...spec.containers].find((c: Any) => c.name === 'sluice');
    t.equal(sluice.image, `sluice:${version}`, `${example}: sluice:${version}`);
  }
});

t.test('monitoring: PodMonitor scrapes both examples, the PrometheusRule is sluice-alerts.yaml, the dashboard ConfigMap is the dashboard', async (t) => {
  const podMonitor = find('monitoring', 'PodMonitor') as Any;
  for (const example of ['sidecar', 'shared-pooler']) {
    const template = (find(example, 'Deployment') as Any).spec.template;
    const labels = template.metadata.labels;
    t.ok(Object.entries(podMonitor.spec.selector.matchLabels).every(([k, v]) => labels[k] === v), `the PodMonitor selects the ${example} pods`);
    const ports = [...(template.spec.initContainers ?? []), ...template.spec.containers].flatMap((c: Any) => c.ports ?? []);
    t.ok(ports.some((p: Any) => p.name === podMonitor.spec.podMetricsEndpoints[0].port), `${example} pods have the scraped port`);
  }
  t.equal(podMonitor.spec.podMetricsEndpoints[0].path, '/metrics');
  const rule = find('monitoring', 'PrometheusRule') as Any;
  const alerts = parse(readFileSync(join(REPO, 'deploy', 'prometheus', 'sluice-alerts.yaml'), 'utf8'));
  t.same(rule.spec.groups, alerts.groups, 'spec.groups equals deploy/prometheus/sluice-alerts.yaml (copy the groups over after editing the alerts)');
  const dashboard = find('monitoring', 'ConfigMap', 'sluice-grafana-dashboard') as Any;
  t.equal(dashboard?.metadata.labels?.grafana_dashboard, '1', 'labelled for the Grafana dashboard sidecar');
  t.equal(dashboard.data['sluice-dashboard.json'], readFileSync(join(REPO, 'deploy', 'grafana', 'sluice-dashboard.json'), 'utf8'), 'identical to deploy/grafana/sluice-dashboard.json (cp it over after editing)');
});
