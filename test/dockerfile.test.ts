// The Dockerfile, without a Docker engine: dockerfile-utils lints it (the linter behind VS
// Code's Docker support), and its structure is checked against what issue 6 asks — multi-stage
// on a pinned Node 20 slim image, production dependencies only, a numeric non-root user, node as
// PID 1 in exec form, a HEALTHCHECK on /healthz — and against what the runtime actually loads.
import { existsSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { validate } from 'dockerfile-utils';
import t from 'tap';
import { SLUICE_NODE_FLAGS } from '../bench/targets.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const text = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
const dockerfile = DockerfileParser.parse(text);
const froms = dockerfile.getFROMs();
const instructions = dockerfile.getInstructions();

/** The instructions of each stage, by stage name. */
function stages(): Map<string, Instruction[]> {
  const byStage = new Map<string, Instruction[]>();
  let current: Instruction[] = [];
  for (const instruction of instructions) {
    if (instruction.getKeyword() === 'FROM') {
      current = [];
      byStage.set(froms.find((f) => f.getRange().start.line === instruction.getRange().start.line)?.getBuildStage() ?? '?', current);
    } else {
      current.push(instruction);
    }
  }
  return byStage;
}
const args = (i: Instruction) => i.getArgumentsContent() ?? '';
/** A flag's value (COPY --from, HEALTHCHECK --timeout); dockerfile-ast keeps flags out of the arguments. */
function flag(i: Instruction, name: string): string | undefined {
  const flags = (i as unknown as { getFlags?(): Array<{ getName(): string; getValue(): string | null }> }).getFlags?.() ?? [];
  return flags.find((f) => f.getName() === name)?.getValue() ?? undefined;
}
const runtime = [...stages().values()].at(-1) ?? [];
const inRuntime = (keyword: string) => runtime.filter((i) => i.getKeyword() === keyword);

/** Every file `node dist/proxy/main.js` loads, following relative imports through dist/. */
function runtimeImports(): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (files.has(file)) return;
    files.add(file);
    const source = readFileSync(file, 'utf8');
    // Only import/export statements at the start of a line and dynamic import(): a word "from"
    // inside a string of the code itself (sql-scan's keyword checks) is not an import.
    for (const m of source.matchAll(/^(?:import|export)\b[^;'"]*\bfrom\s*['"]([^'"]+)['"]|^import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec));
      else if (!spec.startsWith('node:') && !builtinModules.includes(spec)) packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
    }
  };
  visit(join(REPO, 'dist', 'proxy', 'main.js'));
  return { files, packages };
}

t.test('dockerfile-utils finds nothing to complain about', async (t) => {
  t.same(validate(text), []);
});

t.test('the linter reports problems when there are some (the check above is not vacuous)', async (t) => {
  const messages = validate('FROM node:20-slim\nEXPOSE http\nHEALTHCHECK CMD\n').map((d) => d.message);
  t.ok(messages.length >= 2, messages.join('; '));
});

t.test('multi-stage on a pinned Node 20 slim image', async (t) => {
  t.ok(froms.length >= 2, `${froms.length} stages`);
  for (const from of froms) {
    t.equal(from.getImageName(), 'node', 'the official node image');
    t.match(from.getImageTag(), /^20\.\d+\.\d+-(bookworm-|trixie-)?slim$/, 'pinned to a full Node 20 version tag, slim variant');
    t.ok(from.getBuildStage(), 'every stage is named');
  }
  t.same(new Set(froms.map((f) => f.getImageTag())).size, 1, 'one Node version across stages');
});

t.test('the build stage installs dev dependencies and compiles; the runtime gets production dependencies only', async (t) => {
  const byStage = stages();
  const build = byStage.get('build') ?? [];
  t.ok(build.some((i) => i.getKeyword() === 'RUN' && /^npm ci\b(?!.*--omit=dev)/.test(args(i))), 'build: npm ci with dev dependencies');
  t.ok(build.some((i) => i.getKeyword() === 'RUN' && /\btsc\b/.test(args(i))), 'build: tsc');
  const prodStage = [...byStage].find(([, list]) => list.some((i) => i.getKeyword() === 'RUN' && /npm ci --omit=dev/.test(args(i))));
  t.ok(prodStage, 'a stage runs npm ci --omit=dev');
  const modules = inRuntime('COPY').filter((i) => args(i) === '/app/node_modules ./node_modules');
  t.equal(modules.length, 1, 'runtime copies node_modules once');
  t.equal(flag(modules[0], 'from'), prodStage?.[0], 'runtime node_modules come from the --omit=dev stage');
  t.notOk(runtime.some((i) => i.getKeyword() === 'RUN' && /npm (ci|install)/.test(args(i))), 'the runtime stage installs nothing');
});

t.test('the runtime stage copies every compiled file main.js loads, and package.json', async (t) => {
  const { files } = runtimeImports();
  t.ok(files.size > 5, `${files.size} files loaded`);
  const copied = inRuntime('COPY')
    .filter((i) => flag(i, 'from') === 'build')
    .map((i) => args(i).split(/\s+/)[0].replace(/^\/app\//, ''));
  for (const file of files) {
    const rel = relative(REPO, file);
    t.ok(copied.some((dir) => rel.startsWith(`${dir}/`)), `${rel} is in a copied folder`);
  }
  t.ok(inRuntime('COPY').some((i) => args(i).startsWith('package.json')), 'package.json (main.js reads the version from it)');
});

t.test('every package the runtime imports is a production dependency (the image has no dev dependencies)', async (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  const { packages } = runtimeImports();
  t.ok(packages.has('prom-client'), 'the walk finds package imports');
  for (const name of packages) t.ok(name in pkg.dependencies, `${name} is in dependencies`);
});

t.test('runs as a numeric non-root user, node as PID 1 in exec form, ports exposed, HEALTHCHECK on /healthz', async (t) => {
  const users = inRuntime('USER');
  t.equal(users.length, 1);
  const [uid, gid] = args(users[0]).split(':');
  t.match(uid, /^\d+$/, 'numeric uid (Kubernetes runAsNonRoot cannot check a name)');
  t.not(Number(uid), 0, 'not root');
  t.not(Number(gid ?? uid), 0, 'not the root group');
  const entrypoint = inRuntime('ENTRYPOINT');
  t.equal(entrypoint.length, 1);
  t.same(JSON.parse(args(entrypoint[0])), ['node', ...SLUICE_NODE_FLAGS, 'dist/proxy/main.js'], 'exec form: node itself is PID 1 and gets SIGTERM, with the flags the bench measured');
  const exposed = inRuntime('EXPOSE').flatMap((i) => args(i).split(/\s+/));
  t.same(exposed.sort(), ['6380', '6432', '9898']);
  const health = inRuntime('HEALTHCHECK');
  t.equal(health.length, 1);
  t.match(args(health[0]), /CMD \["node", "-e", ".*\/healthz/, 'node asks /healthz (no curl in slim)');
  t.match(flag(health[0], 'timeout'), /^\d+s$/, 'a probe that hangs counts as a failure');
});

t.test('npm start and the sluice command run node with the same flags as the image', async (t) => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
  t.equal(pkg.scripts.start, ['node', ...SLUICE_NODE_FLAGS, 'dist/proxy/main.js'].join(' '));
  const shebang = readFileSync(join(REPO, 'proxy', 'main.ts'), 'utf8').split('\n')[0];
  t.equal(shebang, `#!/usr/bin/env -S ${['node', ...SLUICE_NODE_FLAGS].join(' ')}`);
});

t.test('.dockerignore lets only the sources the build copies into the context', async (t) => {
  const lines = readFileSync(join(REPO, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  t.equal(lines[0], '*', 'deny everything first');
  const allowed = lines.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
  for (const copied of instructions.filter((i) => i.getKeyword() === 'COPY' && !flag(i, 'from'))) {
    for (const source of args(copied).split(/\s+/).slice(0, -1)) {
      t.ok(allowed.includes(source.replace(/\/$/, '')), `${source} is in the build context`);
      t.ok(existsSync(join(REPO, source)), `${source} exists`);
    }
  }
  for (const secret of ['node_modules', 'dist', '.git', 'test']) t.notOk(allowed.includes(secret), `${secret} stays out`);
});
