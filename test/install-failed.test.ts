// What `npm install jouletrace` does (scripts/install.mjs): the prebuilt binary, else a compile
// against this Node's own headers, never downloaded ones; and what it says when there is no
// prebuilt binary that loads and the compile fails or cannot start: the missing build packages,
// by name, the prebuilt binary's own load error, and a failed install.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratchDirs, script, which } from './fixtures/shell-scripts';

const ROOT = path.join(__dirname, '..');
const scratch = scratchDirs();
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

/** This Node at <dir>/bin/node, a file of its own (a symlink would resolve to its real place), with no headers beside it. */
function nodeWithoutHeaders(dir: string): string {
  const node = path.join(dir, 'bin/node');
  fs.mkdirSync(path.dirname(node), { recursive: true });
  try {
    fs.linkSync(process.execPath, node);
  } catch {
    fs.copyFileSync(process.execPath, node);
    fs.chmodSync(node, 0o755);
  }
  return node;
}

/**
 * The package as npm unpacks it into a project (scripts/, package.json, node-gyp-build; no
 * build/), a HOME with no ~/.npmrc, and a PATH whose node-gyp logs instead of building. `install()`
 * runs package.json's install script as npm does.
 */
function installed() {
  const dir = scratch('install');
  const at = path.join(dir, 'node_modules/jouletrace');
  const bin = path.join(dir, 'bin');
  const home = path.join(dir, 'home');
  const log = path.join(dir, 'log');
  for (const d of [at, bin, home, path.join(at, 'node_modules/.bin')]) fs.mkdirSync(d, { recursive: true });
  fs.cpSync(path.join(ROOT, 'scripts'), path.join(at, 'scripts'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(at, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules/node-gyp-build'), path.join(at, 'node_modules/node-gyp-build'));
  fs.symlinkSync('../node-gyp-build/bin.js', path.join(at, 'node_modules/.bin/node-gyp-build'));
  fs.writeFileSync(path.join(bin, 'node-gyp'), script(`echo "node-gyp $* nodedir=\${npm_config_nodedir:-}" >> ${log}`), { mode: 0o755 });
  const install = (first: string[] = []) => {
    const r = spawnSync('sh', ['-c', pkg.scripts.install], {
      cwd: at,
      encoding: 'utf8',
      env: { PATH: [...first, bin, path.join(at, 'node_modules/.bin'), process.env.PATH].join(':'), HOME: home },
    });
    return { status: r.status, stderr: r.stderr, log: fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '' };
  };
  return { dir, at, install };
}

/**
 * A prebuilt binary for this platform in the installed package at `at` that does not load here
 * (it needs a shared library that is gone), as one built where glibc is newer; its target.
 */
function unloadablePrebuild(dir: string, at: string): string {
  fs.writeFileSync(path.join(dir, 'gone.c'), 'int gone(void) { return 0; }\n');
  fs.writeFileSync(path.join(dir, 'addon.c'), 'int gone(void);\nint addon(void) { return gone(); }\n');
  const target = `${process.platform}-${process.arch}`;
  const addon = path.join(at, 'prebuilds', target, 'jouletrace.node');
  fs.mkdirSync(path.dirname(addon), { recursive: true });
  for (const args of [['-o', path.join(dir, 'libjt-gone.so'), path.join(dir, 'gone.c')], ['-o', addon, path.join(dir, 'addon.c'), `-L${dir}`, '-ljt-gone']]) {
    const cc = spawnSync('gcc', ['-shared', '-fPIC', ...args], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
  }
  fs.rmSync(path.join(dir, 'libjt-gone.so'));
  return target;
}

// node-gyp downloads the headers of the Node it builds for from nodejs.org unless told where they
// are; a consumer's `npm install jouletrace` on a fresh machine (no ~/.npmrc) did, and failed.
describe('the install script', () => {
  it("has node-gyp build against the running Node's own headers, with no ~/.npmrc", () => {
    const { install } = installed();
    const prefix = path.dirname(path.dirname(process.execPath));
    expect(fs.existsSync(path.join(prefix, 'include/node/common.gypi')), `${prefix}/include/node/common.gypi`).toBe(true);
    const r = install();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.log).toBe(`node-gyp rebuild nodedir=${prefix}\n`);
  });

  // Built on Debian 13, a prebuilt binary does not load on Debian 12; the compile that takes its
  // place there worked, and the install said nothing of the prebuilt binary or why.
  it("says why a prebuilt binary for this platform does not load, and compiles the addon instead", () => {
    const { dir, at, install } = installed();
    const target = unloadablePrebuild(dir, at);
    const r = install();
    expect(r.status).toBe(0);
    expect(r.stderr).toBe(
      `jouletrace: the prebuilt binary prebuilds/${target}/jouletrace.node does not load here: ` +
        'libjt-gone.so: cannot open shared object file: No such file or directory; compiling the addon instead.\n',
    );
    expect(r.log).toMatch(/^node-gyp rebuild nodedir=/);
  });

  it('runs no node-gyp where there are no headers of this Node, and says what is missing', () => {
    const { dir, install } = installed();
    const node = nodeWithoutHeaders(path.join(dir, 'node'));
    const r = install([path.dirname(node)]);
    expect(r.status).toBe(1);
    expect(r.log).toBe('');
    const v = process.versions.node;
    expect(r.stderr).toContain(
      `jouletrace: no prebuilt binary for ${process.platform}-${process.arch}, Node ${v}, and the addon was not compiled: ` +
        `no headers of Node ${v} in ${path.join(dir, 'node/include/node')}, and node-gyp would download them from nodejs.org. ` +
        'Install the ones of this Node (Debian and Ubuntu: libnode-dev, where nodejs is theirs; Node from nodejs.org or NodeSource ships them), ' +
        "or set npm's nodedir to a directory whose include/node holds them.\n",
    );
    expect(r.stderr).not.toMatch(/compiler's output/);
  });

  it("takes headers of this Node's version and with node-gyp's common.gypi only, and npm's nodedir as it is", () => {
    const dir = scratch('headers');
    const node = nodeWithoutHeaders(dir);
    const headers = (env: Record<string, string> = {}) => spawnSync(node, [path.join(ROOT, 'scripts/node-headers.mjs')], { encoding: 'utf8', env });
    const include = path.join(dir, 'include/node');
    fs.mkdirSync(include, { recursive: true });
    const [major, minor, patch] = process.versions.node.split('.');
    const version = (mj: string) => `#define NODE_MAJOR_VERSION ${mj}\n#define NODE_MINOR_VERSION ${minor}\n#define NODE_PATCH_VERSION ${patch}\n`;
    fs.writeFileSync(path.join(include, 'node_version.h'), version(String(Number(major) - 1)));
    fs.writeFileSync(path.join(include, 'common.gypi'), '{}');
    let r = headers();
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^no headers of Node ${process.versions.node} in ${include}, which holds Node ${Number(major) - 1}\\.${minor}\\.${patch}'s, and node-gyp would download`));
    fs.writeFileSync(path.join(include, 'node_version.h'), version(major));
    expect(headers()).toMatchObject({ status: 0, stdout: `${dir}\n` });
    fs.rmSync(path.join(include, 'common.gypi'));
    r = headers();
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/, which holds no common\.gypi, and node-gyp would download/);
    expect(headers({ npm_config_nodedir: '/opt/node' })).toMatchObject({ status: 0, stdout: '/opt/node\n' });
  });
});

describe('install-failed.sh', () => {
  // A PATH holding these of this machine's commands.
  function installFailedWith(cmds: string[]) {
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-path-'));
    try {
      for (const cmd of cmds) {
        const at = which(cmd);
        if (at) fs.symlinkSync(at, path.join(bin, cmd));
      }
      return spawnSync(path.join(bin, 'bash'), [path.join(ROOT, 'scripts/install-failed.sh')], {
        encoding: 'utf8',
        env: { PATH: bin },
      });
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  }

  it('names the missing build packages and fails', () => {
    // Every build tool this machine has except clang and pkg-config.
    const r = installFailedWith(['bash', 'node', 'sort', 'uname', 'apt-cache', 'llvm-strip', 'make', 'g++', 'python3', 'bpftool']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^jouletrace: no prebuilt binary for ${process.platform}-${process.arch}, Node \\d+\\.\\d+\\.\\d+, and compiling the addon failed`));
    expect(r.stderr).toMatch(/missing system packages: clang\n/);
    expect(r.stderr).toMatch(/sudo apt-get install clang\n/);
  });

  // A build that failed for another reason (no Node headers) was blamed on llvm: "missing system
  // packages: llvm". build-bpf.sh goes on without llvm-strip, and the build never runs pkg-config.
  it('blames neither llvm nor pkg-config, which the compile does without, and points at the compiler output', () => {
    const r = installFailedWith(['bash', 'node', 'sort', 'uname', 'apt-cache', 'clang', 'make', 'g++', 'python3', 'bpftool']);
    expect(r.status).toBe(1);
    expect(r.stderr).not.toMatch(/missing system packages/);
    expect(r.stderr).toMatch(/\njouletrace: the build packages are all installed; the compiler's output above says what failed\.\n/);
    // Without pkg-config, a libbpf too old goes unchecked: said, not blamed.
    expect(r.stderr).toMatch(/\njouletrace: libbpf's version was not checked \(no pkg-config\): the addon needs libbpf 1\.0 or later /);
  });

  it('leaves llvm and pkg-config to set-up, out of what the compile needs', () => {
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-path-'));
    try {
      for (const cmd of ['sort', 'clang', 'make', 'g++', 'python3', 'bpftool']) {
        const at = which(cmd);
        if (at) fs.symlinkSync(at, path.join(bin, cmd));
      }
      const missing = (want: string) =>
        spawnSync(which('bash')!, ['--norc', '-euo', 'pipefail', '-c', `source scripts/system-packages.sh; missing_packages ${want}; echo "\${missing[*]}"`], {
          cwd: ROOT,
          encoding: 'utf8',
          env: { PATH: bin },
        }).stdout.trim();
      expect(missing('build')).toBe('');
      expect(missing('setup')).toBe('llvm pkg-config');
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  it('names a libbpf older than 1.0, which set-up refuses too', () => {
    // Every build tool this machine has, and a pkg-config that finds libbpf 0.8 (Debian 11, Ubuntu 22.04).
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-path-'));
    try {
      for (const cmd of ['bash', 'node', 'sort', 'uname', 'apt-cache', 'clang', 'llvm-strip', 'make', 'g++', 'python3', 'bpftool']) {
        const at = which(cmd);
        if (at) fs.symlinkSync(at, path.join(bin, cmd));
      }
      const pkgConfig = ['#!/bin/bash', 'case "$1" in', '  --modversion) echo 0.8.0 ;;', '  --atleast-version=*) exit 1 ;;', 'esac', ''];
      fs.writeFileSync(path.join(bin, 'pkg-config'), pkgConfig.join('\n'), { mode: 0o755 });
      const r = spawnSync(path.join(bin, 'bash'), [path.join(ROOT, 'scripts/install-failed.sh')], {
        encoding: 'utf8',
        env: { PATH: bin },
      });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/\njouletrace: libbpf 0\.8\.0 is too old: the addon needs libbpf 1\.0 or later /);
      expect(r.stderr).not.toMatch(/the build packages are all installed/);
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  // Built where glibc is newer than here, a prebuilt binary does not load; node-gyp-build's
  // message says there is none, and drops the loader's error, which said why.
  it("shows a prebuilt binary's own load error", () => {
    const { dir, at } = installed();
    const target = unloadablePrebuild(dir, at);
    const r = spawnSync('bash', [path.join(at, 'scripts/install-failed.sh')], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(
        `^jouletrace: the prebuilt binary prebuilds/${target}/jouletrace\\.node does not load here: libjt-gone\\.so: cannot open shared object file: No such file or directory\n` +
          `jouletrace: no prebuilt binary that loads on ${target}, Node \\d+\\.\\d+\\.\\d+, and compiling the addon failed \\(see above\\)\\.\n`,
      ),
    );
  });

  // Debian's and Ubuntu's nodejs leaves its headers to libnode-dev; NodeSource's ships them.
  it("names libnode-dev where the node is Debian's nodejs without its headers", () => {
    const dir = scratch('debian-node');
    const node = path.join(dir, 'usr/bin/node');
    fs.mkdirSync(path.dirname(node), { recursive: true });
    fs.writeFileSync(node, script('exit 0'), { mode: 0o755 });
    const missing = (depends: string) => {
      fs.writeFileSync(path.join(dir, 'usr/bin/dpkg-query'), script('case "$1" in', '  -S) echo "nodejs: /usr/bin/node" ;;', `  -W) printf %s ${JSON.stringify(depends)} ;;`, 'esac'), { mode: 0o755 });
      const r = spawnSync('bash', ['--norc', '-euo', 'pipefail', '-c', 'source scripts/system-packages.sh; missing=(); missing_node_headers; echo "${missing[*]}"'], {
        cwd: ROOT,
        encoding: 'utf8',
        env: { ...process.env, PATH: `${path.dirname(node)}:${process.env.PATH}`, JOULETRACE_DEBIAN_NODE: node },
      });
      expect(r.stderr).toBe('');
      return r.stdout.trim();
    };
    expect(missing('libc6 (>= 2.34), libnode115 (= 20.19.2+dfsg-1)')).toBe('libnode-dev');
    expect(missing('libc6 (>= 2.28), libgcc1 (>= 1:3.4), libstdc++6 (>= 5.2), python3, ca-certificates')).toBe(''); // NodeSource's
    fs.mkdirSync(path.join(dir, 'usr/include/node'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'usr/include/node/node_version.h'), '');
    expect(missing('libc6 (>= 2.34), libnode115 (= 20.19.2+dfsg-1)')).toBe('');
  });

  it('says so when every build package is there', () => {
    const r = spawnSync('bash', [path.join(ROOT, 'scripts/install-failed.sh')], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/the build packages are all installed/);
  });

  it('names the same build packages as the error a missing addon throws', async () => {
    // Two lists, one in bash for the install scripts and one in the addon loader's message,
    // which runs where scripts/ may not be readable: this keeps them the same.
    const r = spawnSync('bash', ['--norc', '-euo', 'pipefail', '-c', 'source scripts/system-packages.sh; printf "%s\\n" "${BUILD_CMD_PKG[@]}" "${BUILD_HDR_PKG[@]}"'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    const fromScript = r.stdout.trim().split('\n').filter((p) => p !== 'bpftool');
    const { nativeLoadError } = await import('../src/native');
    const message = nativeLoadError(new Error('No native build was found for platform=linux')).message;
    const fromMessage = /apt-get install ([^`]+)`/.exec(message)![1].split(' ');
    expect(fromMessage.sort()).toEqual(fromScript.sort());
    expect(message).toMatch(/bpftool \(Debian: bpftool; Ubuntu: linux-tools-common/);
  });

  it('names for bpftool on Ubuntu and its derivatives what apt has, bpftool elsewhere, and no chromium on Ubuntu', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-os-'));
    try {
      // An apt-cache that knows only the packages listed in $DIR/known.
      const bin = path.join(dir, 'bin');
      fs.mkdirSync(bin);
      fs.writeFileSync(path.join(bin, 'apt-cache'), `#!/bin/bash\n[ "$1" = show ] && grep -qx -- "$2" ${JSON.stringify(path.join(dir, 'known'))}\n`, { mode: 0o755 });
      const names = (release: string, known: string[]) => {
        fs.writeFileSync(path.join(dir, 'os-release'), release);
        fs.writeFileSync(path.join(dir, 'known'), known.map((k) => k + '\n').join(''));
        // --norc: bash reads the system bashrc for a non-interactive shell whose stdin is a socket
        // (what Node's pipes are) at shell level 1, as for a command run over ssh, and Debian's
        // tests $PS1 there, unset: with -u given on the command line, that is an error on stderr.
        const r = spawnSync('bash', ['--norc', '-euo', 'pipefail', '-c', 'source scripts/system-packages.sh; missing=(bpftool chromium clang); apt_names; echo "${missing[*]}"'], {
          cwd: ROOT,
          encoding: 'utf8',
          env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, JOULETRACE_OS_RELEASE: path.join(dir, 'os-release') },
        });
        expect(r.stderr).toBe('');
        return r.stdout.trim();
      };
      const kernel = os.release();
      const ubuntu = 'ID=ubuntu\nID_LIKE=debian\n';
      // Ubuntu's chromium package installs a snap, which fails without snapd: left out there.
      expect(names(ubuntu, ['clang', `linux-tools-${kernel}`, 'linux-tools-generic'])).toBe(`linux-tools-common linux-tools-${kernel} clang`);
      expect(names('ID=linuxmint\nID_LIKE="ubuntu debian"\n', [`linux-tools-${kernel}`])).toBe(`linux-tools-common linux-tools-${kernel} clang`);
      // A container on a kernel Ubuntu does not ship: no linux-tools of its version.
      expect(names(ubuntu, ['clang', 'linux-tools-generic'])).toBe('linux-tools-generic clang');
      // A package of bpftool's own name, where apt has one.
      expect(names(ubuntu, ['bpftool', `linux-tools-${kernel}`])).toBe('bpftool clang');
      expect(names('ID=debian\n', [])).toBe('bpftool chromium clang'); // no ID_LIKE, under set -u
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('counts bpftool as missing when the one found does not run', () => {
    // Ubuntu's /usr/sbin/bpftool wrapper, in a container on another kernel: on PATH, but failing.
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-path-'));
    try {
      const wrapper = ['#!/bin/bash', 'echo "WARNING: bpftool not found for kernel $(uname -r)" >&2', 'exit 2', ''];
      fs.writeFileSync(path.join(bin, 'bpftool'), wrapper.join('\n'), { mode: 0o755 });
      const check = (places: string) =>
        spawnSync('bash', ['--norc', '-euo', 'pipefail', '-c', `source scripts/system-packages.sh; BPFTOOL_PLACES=(${places}); missing_packages build; echo "\${missing[*]}"`], {
          cwd: ROOT,
          encoding: 'utf8',
          env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, BPFTOOL: '' },
        }).stdout.trim();
      expect(check('')).toBe('bpftool');
      // A real one where Ubuntu's linux-tools packages put it is found past the wrapper.
      const real = which('bpftool') ?? (fs.existsSync('/usr/sbin/bpftool') ? '/usr/sbin/bpftool' : undefined);
      if (real) expect(check(JSON.stringify(real))).toBe('');
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  // Set-up installs linux-tools-* and asks again in the same shell: a glob expanded once, when
  // the script was read, missed the bpftool installed since.
  it('finds a bpftool installed under a place pattern since the last call', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-tools-'));
    try {
      const bin = path.join(dir, 'bin');
      fs.mkdirSync(bin);
      fs.writeFileSync(path.join(bin, 'bpftool'), '#!/bin/bash\nexit 2\n', { mode: 0o755 }); // Ubuntu's wrapper, failing
      const tool = path.join(dir, 'linux tools', '6.8.0-1-generic', 'bpftool');
      const script = [
        'source scripts/system-packages.sh',
        `BPFTOOL_PLACES=(${JSON.stringify(path.join(dir, 'linux tools'))}'/*/bpftool')`,
        'working_bpftool || echo none',
        `mkdir -p ${JSON.stringify(path.dirname(tool))}`,
        `printf '#!/bin/bash\\nexit 0\\n' > ${JSON.stringify(tool)}; chmod +x ${JSON.stringify(tool)}`,
        'working_bpftool',
      ].join('\n');
      const r = spawnSync('bash', ['--norc', '-euo', 'pipefail', '-c', script], {
        cwd: ROOT,
        encoding: 'utf8',
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, BPFTOOL: '' },
      });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim().split('\n')).toEqual(['none', tool]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
