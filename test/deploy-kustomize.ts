// Renders a kustomization.yaml the way `kubectl kustomize` does, for the subset deploy/kubernetes
// uses, so the schema checks read typed objects without shelling out (test/deploy-kubectl.test.ts
// checks that the real `kubectl kustomize` renders exactly the same objects): `resources` (files
// and folders), `configMapGenerator` (files, literals, labels) and `generatorOptions` with
// `disableNameSuffixHash: true`. Anything else is an error, not silently ignored, so a
// kustomization this cannot render fully fails the test instead of passing half-checked.
// Like kustomize, it refuses files outside the kustomization's folder and duplicate objects.
import { readFileSync, statSync } from 'node:fs';
import { basename, join, relative, resolve } from 'node:path';
import { parseAllDocuments, parseDocument } from 'yaml';

export interface RenderedObject {
  /** Where it came from: a file relative to the kustomization, or `configMapGenerator[i]`. */
  source: string;
  object: KubeObject;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

const KUSTOMIZATION_KEYS = new Set(['apiVersion', 'kind', 'resources', 'configMapGenerator', 'generatorOptions']);
const GENERATOR_KEYS = new Set(['name', 'files', 'literals', 'options']);
const GENERATOR_OPTION_KEYS = new Set(['labels', 'annotations', 'disableNameSuffixHash']);

function unsupported(keys: Iterable<string>, allowed: Set<string>, where: string): void {
  const extra = [...keys].filter((k) => !allowed.has(k));
  if (extra.length > 0) throw new Error(`${where}: ${extra.join(', ')} not supported by this renderer (kubectl kustomize would apply it)`);
}

/** A path inside the kustomization folder, as kustomize's load restrictor requires. */
function inside(root: string, path: string): string {
  const full = resolve(root, path);
  const rel = relative(root, full);
  if (rel.startsWith('..') || rel === '') throw new Error(`${path}: outside ${root} (kustomize refuses files outside the kustomization root)`);
  return full;
}

function parseManifests(file: string, label: string): KubeObject[] {
  return parseAllDocuments(readFileSync(file, 'utf8'))
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`${label}: ${doc.errors[0].message}`);
      return doc.toJS() as KubeObject | null;
    })
    .filter((o): o is KubeObject => o !== null)
    .map((o) => {
      if (!o.apiVersion || !o.kind || !o.metadata?.name) throw new Error(`${label}: not a Kubernetes object (apiVersion, kind and metadata.name are required)`);
      return o;
    });
}

type Options = { labels?: Record<string, string>; annotations?: Record<string, string>; disableNameSuffixHash?: boolean };

export function renderKustomization(dir: string): RenderedObject[] {
  const root = resolve(dir);
  const k = parseDocument(readFileSync(join(root, 'kustomization.yaml'), 'utf8')).toJS() as Record<string, unknown>;
  unsupported(Object.keys(k), KUSTOMIZATION_KEYS, 'kustomization.yaml');
  if (k.apiVersion !== 'kustomize.config.k8s.io/v1beta1' || k.kind !== 'Kustomization') throw new Error('kustomization.yaml: apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization');
  const out: RenderedObject[] = [];
  for (const entry of (k.resources as string[] | undefined) ?? []) {
    const path = inside(root, entry);
    if (statSync(path).isDirectory()) {
      for (const child of renderKustomization(path)) out.push({ source: `${entry}/${child.source}`, object: child.object });
    } else {
      for (const object of parseManifests(path, entry)) out.push({ source: entry, object });
    }
  }
  const options = (k.generatorOptions ?? {}) as Options;
  unsupported(Object.keys(options), GENERATOR_OPTION_KEYS, 'generatorOptions');
  const generators = (k.configMapGenerator ?? []) as Array<Record<string, unknown>>;
  if (generators.length > 0 && options.disableNameSuffixHash !== true) {
    throw new Error('configMapGenerator without generatorOptions.disableNameSuffixHash: true would need kustomize’s name hash and reference rewriting, which this renderer does not do');
  }
  generators.forEach((g, i) => {
    unsupported(Object.keys(g), GENERATOR_KEYS, `configMapGenerator[${i}]`);
    const own = (g.options ?? {}) as Options;
    unsupported(Object.keys(own), GENERATOR_OPTION_KEYS, `configMapGenerator[${i}].options`);
    const data: Record<string, string> = {};
    for (const spec of (g.files as string[] | undefined) ?? []) {
      const [key, path] = spec.includes('=') ? spec.split('=', 2) : [basename(spec), spec];
      if (key in data) throw new Error(`configMapGenerator[${i}]: key ${key} twice`);
      data[key] = readFileSync(inside(root, path), 'utf8');
    }
    for (const literal of (g.literals as string[] | undefined) ?? []) {
      const at = literal.indexOf('=');
      data[literal.slice(0, at)] = literal.slice(at + 1);
    }
    const labels = { ...options.labels, ...own.labels };
    const annotations = { ...options.annotations, ...own.annotations };
    const metadata: KubeObject['metadata'] = { name: String(g.name) };
    if (Object.keys(labels).length > 0) metadata.labels = labels;
    if (Object.keys(annotations).length > 0) metadata.annotations = annotations;
    out.push({ source: `configMapGenerator[${i}]`, object: { apiVersion: 'v1', kind: 'ConfigMap', metadata, data } });
  });
  const seen = new Set<string>();
  for (const { object, source } of out) {
    const id = `${object.apiVersion}/${object.kind}/${object.metadata.namespace ?? ''}/${object.metadata.name}`;
    if (seen.has(id)) throw new Error(`${source}: ${id} appears twice (kustomize refuses duplicate objects)`);
    seen.add(id);
  }
  return out;
}
