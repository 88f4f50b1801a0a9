// Writes config/sluice.schema.json from the zod schema, for editors and Helm values.
// `npm run gen:schema` runs it; test/config.test.ts fails when the committed file is stale.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { configSchema } from './schema.js';

export function configJsonSchema(): string {
  const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' });
  return `${JSON.stringify({ ...schema, title: 'sluice config' }, null, 2)}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const target = new URL('../../config/sluice.schema.json', import.meta.url);
  writeFileSync(target, configJsonSchema());
  console.log(`wrote ${fileURLToPath(target)}`);
}
