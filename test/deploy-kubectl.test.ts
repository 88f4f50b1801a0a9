// The real `kubectl kustomize` (kustomize built into kubectl; it needs no cluster) renders every
// example under deploy/kubernetes, and renders exactly the objects, with exactly the contents,
// that test/deploy-kustomize.ts's renderer gives the schema checks in deploy-kubernetes.test.ts.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { type KubeObject, renderKustomization } from './deploy-kustomize.js';
import { findBinary } from './harness/tools.js';

const K8S = fileURLToPath(new URL('../../deploy/kubernetes/', import.meta.url));
const kubectl = findBinary('kubectl', [], 'apt-get install kubectl (or kubernetes-client)');
const examples = readdirSync(K8S, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);

const key = (o: KubeObject) => `${o.kind}/${o.metadata.name}`;

t.test('there are examples to render', async (t) => {
  t.ok(examples.length >= 3, examples.join(', '));
});

for (const example of examples) {
  t.test(`kubectl kustomize renders ${example}, object for object as the schema-checked renderer`, async (t) => {
    const run = spawnSync(kubectl, ['kustomize', join(K8S, example)], { encoding: 'utf8' });
    t.equal(run.status, 0, run.stderr);
    const real = parseAllDocuments(run.stdout).map((d) => d.toJS() as KubeObject).filter((o) => o !== null);
    const ours = renderKustomization(join(K8S, example)).map((r) => r.object);
    t.same(real.map(key).sort(), ours.map(key).sort(), 'the same objects');
    for (const object of ours) {
      t.same(real.find((o) => key(o) === key(object)), object, `${key(object)} has the same content`);
    }
  });
}
