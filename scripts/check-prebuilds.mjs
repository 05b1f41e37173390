// Run by `npm publish` (prepublishOnly): refuses to publish a package without a prebuilt addon
// for linux-x64. `files` lists prebuilds/, but nothing made one unless `npm run prebuild` ran, and
// a package without it compiled the addon on every user's machine, where the README promises a
// prebuilt binary and most machines lack clang, libbpf-dev and bpftool.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'prebuilds', 'linux-x64');
let addons = [];
try {
  addons = readdirSync(dir).filter((f) => f.endsWith('.node'));
} catch (e) {
  if (e.code !== 'ENOENT' && e.code !== 'ENOTDIR') throw e;
}
if (addons.length === 0) {
  console.error(
    `jouletrace: not publishing: ${join('prebuilds', 'linux-x64')} holds no prebuilt addon (*.node), so every install would compile it. ` +
      'Run `npm run prebuild` on a linux-x64 machine first (it builds the addon with libbpf, libelf and zlib linked statically and verifies it), then publish again.',
  );
  process.exit(1);
}
console.error(`jouletrace: publishing with ${addons.map((f) => join('prebuilds', 'linux-x64', f)).join(', ')}`);
