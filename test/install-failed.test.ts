// What `npm install jouletrace` says when there is no prebuilt binary and the compile fails:
// the missing build packages, by name, and a failed install.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { which } from './fixtures/shell-scripts';

const ROOT = path.join(__dirname, '..');

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
