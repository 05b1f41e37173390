// scripts/setup.sh's system packages: what `npm run demo` and `npm run bench` install (the build
// packages only) and what `npm test` installs (the test tools too, with no service started).
// Run as root against a fake apt-get, in a copy of the checkout where everything is built, so
// that set-up has only the packages to decide.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratchDirs, script, which } from './fixtures/shell-scripts';

const ROOT = path.join(__dirname, '..');
const scratch = scratchDirs();

// A built checkout, a PATH holding this machine's build tools and none of the test tools, and
// fakes: id (root), apt-get (logs, runs the policy-rc.d as a maintainer script would, and
// "installs" the test tools; its update finds the lists locked by another apt the first
// `listsLocked` times), dpkg-query (prometheus ships prometheus.service), systemctl, npm and sleep
// (log). HOME is an empty directory: no ~/.npmrc. `unbuilt`: no addon is built, and
// node_modules is the checkout's own, installed, with a node-gyp that logs instead of building;
// `lockChanged`: package-lock.json changed since that install.
function fixture({ aptFails = false, unbuilt = false, lockChanged = false, listsLocked = 0 } = {}) {
  const dir = scratch('setup');
  const co = path.join(dir, 'checkout');
  const bin = path.join(dir, 'bin');
  const home = path.join(dir, 'home');
  const log = path.join(dir, 'log');
  const policy = path.join(dir, 'policy-rc.d');
  fs.mkdirSync(bin);
  fs.mkdirSync(home);
  fs.cpSync(path.join(ROOT, 'scripts'), path.join(co, 'scripts'), { recursive: true });
  for (const f of ['package.json', 'package-lock.json', 'binding.gyp', 'tsconfig.json']) fs.copyFileSync(path.join(ROOT, f), path.join(co, f));
  for (const d of ['native', 'bpf', 'src']) fs.mkdirSync(path.join(co, d));
  const earlier = new Date(Date.now() - 3600_000);
  for (const f of ['scripts', ...fs.readdirSync(path.join(co, 'scripts')).map((s) => `scripts/${s}`), 'package.json', 'package-lock.json', 'binding.gyp', 'tsconfig.json', 'native', 'bpf', 'src']) {
    fs.utimesSync(path.join(co, f), earlier, earlier);
  }
  if (unbuilt || lockChanged) {
    fs.mkdirSync(path.join(co, 'node_modules/.bin'), { recursive: true });
    fs.writeFileSync(path.join(co, 'node_modules/.package-lock.json'), '{}');
    const installed = new Date(earlier.getTime() + 60_000);
    fs.utimesSync(path.join(co, 'node_modules/.package-lock.json'), installed, installed);
    fs.writeFileSync(path.join(co, 'node_modules/.bin/node-gyp'), script(`echo "node-gyp $* nodedir=\${npm_config_nodedir:-}" >> ${log}`), { mode: 0o755 });
    if (lockChanged) fs.writeFileSync(path.join(co, 'package-lock.json'), fs.readFileSync(path.join(ROOT, 'package-lock.json')));
  } else {
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(co, 'node_modules'));
  }
  for (const f of [...(unbuilt ? [] : ['build/Release/jouletrace.node']), 'dist/cjs/index.js']) {
    fs.mkdirSync(path.dirname(path.join(co, f)), { recursive: true });
    fs.writeFileSync(path.join(co, f), '');
  }
  const tools = ['bash', 'sh', 'node', 'npx', 'dirname', 'find', 'grep', 'chmod', 'rm', 'sort', 'uname', 'pkg-config', 'clang', 'llvm-strip', 'make', 'g++', 'python3', 'bpftool'];
  for (const cmd of tools) {
    const at = which(cmd) ?? (cmd === 'bpftool' && fs.existsSync('/usr/sbin/bpftool') ? '/usr/sbin/bpftool' : undefined);
    if (at) fs.symlinkSync(at, path.join(bin, cmd));
  }
  fs.writeFileSync(path.join(bin, 'id'), script('echo 0'), { mode: 0o755 });
  fs.writeFileSync(
    path.join(bin, 'apt-get'),
    script(
      `echo "apt-get $*" >> ${log}`,
      `locked=${listsLocked}; [ ! -f ${dir}/locked ] || locked=$(< ${dir}/locked)`,
      'if [[ " $* " == *" update "* ]] && [ "$locked" -gt 0 ]; then',
      `  echo $((locked - 1)) > ${dir}/locked`,
      '  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2',
      '  exit 100',
      'fi',
      'if [[ " $* " == *" install "* ]]; then',
      `  if [ -x ${policy} ]; then ${policy} prometheus start; echo "policy-rc.d prometheus start: $?" >> ${log}; else echo "no policy-rc.d" >> ${log}; fi`,
      `  for c in prometheus promtool tmux chromium capsh; do printf '#!/bin/sh\\n' > ${bin}/$c; chmod +x ${bin}/$c; done`,
      // A later package failed to configure, after prometheus was set up (and enabled).
      aptFails ? '  exit 100' : '',
      'fi',
    ),
    { mode: 0o755 },
  );
  fs.writeFileSync(path.join(bin, 'dpkg-query'), script('[ "$2" = prometheus ] && printf "/lib/systemd\\n/lib/systemd/system\\n/lib/systemd/system/prometheus.service\\n/etc/init.d/prometheus\\n"; true'), { mode: 0o755 });
  fs.writeFileSync(path.join(bin, 'systemctl'), script(`echo "systemctl $*" >> ${log}`), { mode: 0o755 });
  fs.writeFileSync(path.join(bin, 'sleep'), script(`echo "sleep $*" >> ${log}`), { mode: 0o755 });
  fs.writeFileSync(path.join(bin, 'npm'), script(`echo "npm $* nodedir=\${npm_config_nodedir:-}" >> ${log}`), { mode: 0o755 });
  fs.writeFileSync(path.join(dir, 'os-release'), 'ID=debian\n');
  const setup = (...args: string[]) => {
    const r = spawnSync(path.join(bin, 'bash'), [path.join(co, 'scripts/setup.sh'), ...args], {
      encoding: 'utf8',
      // npm's update check asks the registry, from npx, where no ~/.npmrc turns it off.
      env: { PATH: bin, HOME: home, npm_config_update_notifier: 'false', JOULETRACE_POLICY_RC_D: policy, JOULETRACE_OS_RELEASE: path.join(dir, 'os-release') },
    });
    return { status: r.status, stderr: r.stderr, log: fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '' };
  };
  return { setup, policy };
}

describe('setup.sh', () => {
  it('installs no test tool for the demo and the benchmarks', () => {
    const { setup } = fixture();
    const r = setup();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.log).toBe('');
  });

  it('installs the test tools with --test, starting no service they ship and disabling the ones enabled', () => {
    const { setup, policy } = fixture();
    const r = setup('--test');
    expect(r.status).toBe(0);
    const lines = r.log.trim().split('\n');
    expect(lines[0]).toBe('apt-get -o DPkg::Lock::Timeout=600 update -qq');
    const installed = /^apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends (.+)$/.exec(lines[1])?.[1].split(' ');
    // libcap2-bin too where capsh is not in /usr/sbin, and the arm64 headers where they are not in /usr/aarch64-linux-gnu.
    expect(installed?.filter((p) => p !== 'libcap2-bin' && !p.endsWith('-arm64-cross'))).toEqual(['chromium', 'prometheus', 'tmux']);
    // The maintainer scripts were told not to start anything (101: action forbidden by policy).
    expect(lines[2]).toBe('policy-rc.d prometheus start: 101');
    expect(lines.slice(3)).toEqual(['systemctl --no-reload --quiet disable prometheus.service']);
    expect(r.stderr).toMatch(/^jouletrace setup: disabling prometheus\.service, installed by prometheus/m);
    // The policy was set-up's own, for the install only.
    expect(fs.existsSync(policy)).toBe(false);
  });

  // set -e ended set-up at apt-get's failure, before the disabling; the next run found prometheus
  // installed, not missing, and never disabled it.
  it('disables the services of what was installed even when apt-get fails, and fails', () => {
    const { setup, policy } = fixture({ aptFails: true });
    const r = setup('--test');
    expect(r.status).not.toBe(0);
    expect(r.log.trim().split('\n').slice(-1)).toEqual(['systemctl --no-reload --quiet disable prometheus.service']);
    expect(fs.existsSync(policy)).toBe(false);
  });

  // On a freshly booted machine apt-daily holds apt's locks for minutes: apt-get failed at once.
  it("waits for another apt's locks: dpkg's through apt-get, the package lists' by trying again", () => {
    const { setup } = fixture({ listsLocked: 2 });
    const r = setup('--test');
    expect(r.status).toBe(0);
    const update = 'apt-get -o DPkg::Lock::Timeout=600 update -qq';
    expect(r.log.trim().split('\n').slice(0, 6)).toEqual([update, 'sleep 5', update, 'sleep 5', update, expect.stringMatching(/^apt-get -o DPkg::Lock::Timeout=600 install /)]);
    expect(r.stderr).toMatch(/^jouletrace setup: another apt holds the package lists' lock; waiting for it \(up to 10 minutes\)\n/);
  });

  // node-gyp downloads the headers of the Node it builds for from nodejs.org unless told where
  // they are: ~/.npmrc's nodedir did, on the machines set-up ran on, and a fresh machine has none.
  it("has node-gyp build against the running Node's own headers, with no ~/.npmrc", () => {
    const { setup } = fixture({ unbuilt: true });
    const r = setup();
    expect(r.stderr).toBe('jouletrace setup: building the native addon and BPF program\n');
    expect(r.status).toBe(0);
    const prefix = path.dirname(path.dirname(process.execPath));
    expect(fs.existsSync(path.join(prefix, 'include/node/node_version.h')), `${prefix}/include/node/node_version.h`).toBe(true);
    expect(r.log).toBe(`node-gyp rebuild -j 2 nodedir=${prefix}\n`);
  });

  // Only package.json was compared with the install: a commit changing package-lock.json alone
  // left node_modules as it was.
  it('installs the npm dependencies again when package-lock.json changed, with the same headers for the install script', () => {
    const { setup } = fixture({ lockChanged: true });
    const r = setup();
    expect(r.status).toBe(0);
    expect(r.log).toBe(`npm ci --no-audit --no-fund nodedir=${path.dirname(path.dirname(process.execPath))}\n`);
  });

  it('runs the tests with --test, and the demo and benchmarks without', () => {
    const { scripts } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    expect(scripts.test).toMatch(/^bash scripts\/setup\.sh --test && /);
    expect(scripts.demo).toMatch(/^bash scripts\/setup\.sh && /);
    expect(scripts.bench).toMatch(/^bash scripts\/setup\.sh && /);
  });
});
