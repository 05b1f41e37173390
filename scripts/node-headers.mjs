// Where the running Node's own headers are, for node-gyp's `nodedir`. Without it, node-gyp
// downloads them from nodejs.org (it looks beside Node only for a Node built with
// use_prefix_to_find_headers, which the builds of nodejs.org and NodeSource are not), and an
// install may fetch from npm's registry and Debian's packages only. Node from nodejs.org (and
// nvm, Docker's node images) keeps them in <prefix>/include/node, NodeSource's package in
// /usr/include/node, and Debian's and Ubuntu's leave them to libnode-dev (system-packages.sh
// names it).
// Run: prints the directory, or why there is none (exit 1). Used by setup.sh, prebuild.sh,
// install.mjs and install-failed.sh.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The headers' version, "major.minor.patch", from <dir>/include/node/node_version.h; undefined where unreadable. */
function headersVersion(dir) {
  let h;
  try {
    h = fs.readFileSync(path.join(dir, 'include/node/node_version.h'), 'utf8');
  } catch {
    return undefined;
  }
  const part = (name) => new RegExp(`^#define NODE_${name}_VERSION (\\d+)`, 'm').exec(h)?.[1];
  return [part('MAJOR'), part('MINOR'), part('PATCH')].join('.');
}

/**
 * { dir } where node-gyp finds headers of this Node's version without a download: npm's nodedir
 * where one is configured (the user's choice, taken as it is), else the prefix of the Node
 * executable (the directory above its bin/) where its include/node holds them and the
 * common.gypi node-gyp reads; { why } where there are none.
 */
export function nodeHeaders({ execPath = process.execPath, version = process.versions.node, configured = process.env.npm_config_nodedir } = {}) {
  if (configured) return { dir: configured };
  const prefix = path.dirname(path.dirname(fs.realpathSync(execPath)));
  const include = path.join(prefix, 'include/node');
  const v = headersVersion(prefix);
  if (v === version && fs.existsSync(path.join(include, 'common.gypi'))) return { dir: prefix };
  const there = v === undefined ? '' : v === version ? ', which holds no common.gypi' : `, which holds Node ${v}'s`;
  return {
    why:
      `no headers of Node ${version} in ${include}${there}, and node-gyp would download them from nodejs.org. ` +
      'Install the ones of this Node (Debian and Ubuntu: libnode-dev, where nodejs is theirs; Node from nodejs.org or NodeSource ships them), ' +
      "or set npm's nodedir to a directory whose include/node holds them",
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const h = nodeHeaders();
  console.log(h.dir ?? h.why);
  process.exitCode = h.dir ? 0 : 1;
}
