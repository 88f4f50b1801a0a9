// The warning for a config file that holds secrets in its own text and that other local users
// can read: passwords written inline (not as ${VAR} read from the environment) in a file with
// group or other read permission leak to anyone on the host, or in the pod, who can read files.
import { statSync, readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { formatPath } from './load.js';

/** Keys whose values are secrets. */
const SECRET_KEYS = new Set(['password', 'status_token']);
const ONLY_ENV_REFS = /^(\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})*$/;

/** YAML paths of secrets written inline (anything but ${VAR} references). */
function inlineSecretPaths(node: unknown, path: PropertyKey[], found: string[]): void {
  if (Array.isArray(node)) {
    for (const [i, item] of node.entries()) inlineSecretPaths(item, [...path, i], found);
  } else if (node !== null && typeof node === 'object') {
    for (const [key, value] of Object.entries(node)) {
      if (SECRET_KEYS.has(key) && typeof value === 'string' && value !== '' && !ONLY_ENV_REFS.test(value)) found.push(formatPath([...path, key]));
      else inlineSecretPaths(value, [...path, key], found);
    }
  }
}

/** The warning to give for this config file, or undefined when there is none to give. */
export function inlineSecretWarning(path: string): string | undefined {
  let mode: number;
  let raw: unknown;
  try {
    mode = statSync(path).mode;
    raw = parseYaml(readFileSync(path, 'utf8'));
  } catch {
    return undefined; // loading the config reports unreadable files and bad YAML
  }
  if ((mode & 0o044) === 0) return undefined;
  const found: string[] = [];
  inlineSecretPaths(raw, [], found);
  if (found.length === 0) return undefined;
  const shown = (mode & 0o777).toString(8).padStart(4, '0');
  return `config file ${path} (mode ${shown}) is readable by group or others and holds inline secrets at ${found.join(', ')}: chmod 600 it, or read them from the environment with \${VAR}`;
}
