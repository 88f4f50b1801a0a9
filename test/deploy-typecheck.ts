// Checks JSON values (manifests, a dashboard) against TypeScript types generated from their
// upstream schemas (kubernetes-models from the Kubernetes OpenAPI spec, @grafana/schema from
// Grafana's CUE schema), with the TypeScript compiler. Runtime validators accept unknown fields;
// TypeScript's excess-property check on an object literal rejects them, which is what catches
// a misspelt or misplaced key (`readinesProbe`, `securityContext` one level too high).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface TypeCheck {
  /** What the value is, for messages: usually file#index. */
  label: string;
  /** Module specifier to import the type from, as the test code would write it. */
  from: string;
  typeName: string;
  value: unknown;
}

/** Type errors per check label (an empty list: the value fits the type exactly). */
export function typecheckValues(checks: TypeCheck[]): Map<string, string[]> {
  const files = new Map<string, TypeCheck>();
  checks.forEach((check, i) => {
    files.set(join(REPO, 'test', `__typecheck_${i}.ts`), check);
  });
  const sourceOf = (check: TypeCheck) =>
    `import type { ${check.typeName} as Expected } from ${JSON.stringify(check.from)};\n` +
    // A JSON file cannot name a TypeScript string enum member: accept the enum's string values.
    `type Json<T> = T extends string ? \`\${T}\` : T extends object ? { [K in keyof T]: Json<T[K]> } : T;\n` +
    `export const value: Json<Expected> = ${JSON.stringify(check.value, null, 2)};\n`;
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, language, onError, shouldCreate) => {
    const check = files.get(name);
    if (check) return ts.createSourceFile(name, sourceOf(check), language);
    return getSourceFile(name, language, onError, shouldCreate);
  };
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => files.has(name) || fileExists(name);
  const readFile = host.readFile.bind(host);
  host.readFile = (name) => {
    const check = files.get(name);
    return check ? sourceOf(check) : readFile(name);
  };
  const program = ts.createProgram([...files.keys()], options, host);
  const result = new Map<string, string[]>();
  for (const [name, check] of files) {
    const source = program.getSourceFile(name);
    const diagnostics = [...program.getSyntacticDiagnostics(source), ...program.getSemanticDiagnostics(source)];
    result.set(
      check.label,
      diagnostics.map((d) => {
        const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined;
        const line = where ? d.file?.text.split('\n')[where.line].trim() : '';
        return `${ts.flattenDiagnosticMessageText(d.messageText, '\n')}${line ? ` (at: ${line})` : ''}`;
      }),
    );
  }
  return result;
}
