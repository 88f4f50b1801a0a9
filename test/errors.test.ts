// The error catalogue and the README's Errors table list the same codes.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { ERROR_CODES } from '../proxy/errors.js';

t.test('every error code in proxy/errors.ts is documented in README.md, and nothing more', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.split('## Errors')[1].split('\n## ')[0];
  const documented = [...section.matchAll(/^\| `(SLUICE_[A-Z_]+)` \|/gm)].map((m) => m[1]).sort();
  t.same(documented, Object.keys(ERROR_CODES).sort());
});
