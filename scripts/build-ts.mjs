// Compiles src/ to CommonJS in dist/cjs (with .d.ts), then writes ESM entry points in dist/esm
// that re-export every named export, so `import { Sampler } from 'jouletrace'` and
// `require('jouletrace')` load the same module instance, with ESM typings (.d.mts) of their own:
// CommonJS ones for an .mjs let TypeScript take the ESM entry points for CommonJS.
// Each entry point's default export is the module itself, in ESM as in CommonJS: TypeScript
// accepts `import jt from 'jouletrace'` in a CommonJS project (esModuleInterop), which without
// `exports.default` compiled to an undefined `jt`.
// Everything is written to dist.new/ first, which replaces dist/ only once complete: tsc emits
// despite type errors, and a dist/ left by a failed build would look up to date to setup.sh
// (newer than src/), which then skipped the build that was still needed.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { appendFileSync, mkdirSync, writeFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const out = join(root, 'dist.new');
rmSync(out, { recursive: true, force: true });
try {
  build();
} catch (e) {
  rmSync(out, { recursive: true, force: true });
  throw e;
}
rmSync(dist, { recursive: true, force: true });
renameSync(out, dist);

function build() {
  execFileSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json'), '--outDir', join(out, 'cjs')],
    { stdio: 'inherit' },
  );
  writeFileSync(join(out, 'cjs/package.json'), '{ "type": "commonjs" }\n');

  const require = createRequire(import.meta.url);
  const entries = {
    index: 'index',
    express: 'express',
    fastify: 'fastify',
    prometheus: 'prometheus',
    opentelemetry: 'opentelemetry',
    carbon: 'carbon',
  };
  mkdirSync(join(out, 'esm'), { recursive: true });
  for (const [esmName, cjsName] of Object.entries(entries)) {
    appendFileSync(join(out, 'cjs', `${cjsName}.js`), 'exports.default = exports;\n');
    appendFileSync(join(out, 'cjs', `${cjsName}.d.ts`), `declare const _default: typeof import('./${cjsName}');\nexport default _default;\n`);
    const mod = require(join(out, 'cjs', `${cjsName}.js`));
    const names = Object.keys(mod).filter((n) => n !== 'default' && n !== '__esModule');
    // Required, not imported: an error the CommonJS module throws as it loads (jouletrace/prometheus
    // without prom-client) is then this module's own, which a dynamic import() rejects with. Imported,
    // Node also reports it as an uncaught exception, the import() caught or not (nodejs/node#51603).
    const lines = [
      "import { createRequire } from 'node:module';",
      `const cjs = createRequire(import.meta.url)('../cjs/${cjsName}.js');`,
      ...names.map((n) => `export const ${n} = cjs.${n};`),
      'export default cjs;',
      '',
    ];
    writeFileSync(join(out, 'esm', `${esmName}.mjs`), lines.join('\n'));
    // What an ES module importing the CommonJS one sees: its named exports, and module.exports as the default.
    const types = [`export * from '../cjs/${cjsName}.js';`, `export { default } from '../cjs/${cjsName}.js';`, ''];
    writeFileSync(join(out, 'esm', `${esmName}.d.mts`), types.join('\n'));
  }
}
