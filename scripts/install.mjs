// The package's install script (`npm install jouletrace`; `npm ci` in a clone): the built or
// prebuilt addon where one loads, as node-gyp-build finds it; else (saying why one found does not
// load) a compile against this Node's own headers (node-headers.mjs), never ones node-gyp
// downloads; else install-failed.sh says why.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeHeaders } from './node-headers.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

if (process.env.npm_config_build_from_source !== 'true') {
  let file;
  try {
    file = require('node-gyp-build').resolve(root);
  } catch {
    // None for this platform: compiled below, without a word.
  }
  if (file !== undefined) {
    try {
      require(file);
      process.exit(0);
    } catch (e) {
      // One that is there and does not load (a prebuild made where glibc is newer) says why now,
      // before the compile's output: where the compile works, nothing else would.
      const rel = path.relative(root, file);
      const what = rel.startsWith('prebuilds') ? 'the prebuilt binary' : 'the addon';
      console.error(`jouletrace: ${what} ${rel} does not load here: ${String(e?.message ?? e).split('\n')[0]}; compiling the addon instead.`);
    }
  }
}

const headers = nodeHeaders();
if (headers.dir) {
  // npm puts its node-gyp on the PATH of install scripts (and a clone's devDependency before it).
  const r = spawnSync('node-gyp', ['rebuild'], { cwd: root, stdio: 'inherit', env: { ...process.env, npm_config_nodedir: headers.dir } });
  if (r.status === 0) process.exit(0);
  if (r.error) console.error(`jouletrace: could not run node-gyp: ${r.error.message} (npm puts it on the PATH of install scripts)`);
}
const failed = spawnSync('bash', [path.join(root, 'scripts/install-failed.sh')], { cwd: root, stdio: 'inherit' });
process.exit(failed.status ?? 1);
