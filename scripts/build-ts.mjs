// Compiles src/ to CommonJS in dist/cjs (with .d.ts), then writes ESM entry points in dist/esm
// that re-export every named export, so `import { Sampler } from 'jouletrace'` and
// `require('jouletrace')` load the same module instance.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], {
  stdio: 'inherit',
});
writeFileSync(join(root, 'dist/cjs/package.json'), '{ "type": "commonjs" }\n');

const require = createRequire(import.meta.url);
const entries = {
  index: 'index',
  express: 'express',
  fastify: 'fastify',
  prometheus: 'prometheus',
  opentelemetry: 'opentelemetry',
  carbon: 'carbon',
};
mkdirSync(join(root, 'dist/esm'), { recursive: true });
for (const [esmName, cjsName] of Object.entries(entries)) {
  const mod = require(join(root, 'dist/cjs', `${cjsName}.js`));
  const names = Object.keys(mod).filter((n) => n !== 'default' && n !== '__esModule');
  const lines = [
    `import cjs from '../cjs/${cjsName}.js';`,
    ...names.map((n) => `export const ${n} = cjs.${n};`),
    'export default cjs;',
    '',
  ];
  writeFileSync(join(root, 'dist/esm', `${esmName}.mjs`), lines.join('\n'));
}
