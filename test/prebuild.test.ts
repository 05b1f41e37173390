// The prebuild's static link and its checks. libelf.a of elfutils >= 0.191 calls eu_tsearch and
// others from elfutils' libeu.a: a prebuild linked without it loaded (lazily), passed ldd, and
// killed the user's process at libbpf's first elf_memory(). Without building elfutils here, these
// check each piece: build-static-deps.sh keeps libeu.a, binding.gyp links it, and
// verify-prebuild.sh refuses an addon with a symbol nothing defines.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { scratchDirs, script, which } from './fixtures/shell-scripts';

const ROOT = path.join(__dirname, '..');
const scratch = scratchDirs();

describe('build-static-deps.sh', () => {
  // A PATH with the coreutils the script runs, and fakes: apt-get unpacks two source trees,
  // make "builds" each library as an empty file (libeu.a only where `withLibeu`), and the tools
  // named in `tools` exist.
  function fixture(tools: string[], withLibeu = true) {
    const dir = scratch('static-deps');
    const bin = path.join(dir, 'bin');
    const log = path.join(dir, 'log');
    fs.mkdirSync(bin);
    for (const cmd of ['bash', 'realpath', 'mkdir', 'rm', 'cp', 'touch', 'chmod', 'id', 'nproc', 'grep', 'sed']) fs.symlinkSync(which(cmd)!, path.join(bin, cmd));
    for (const cmd of tools) fs.writeFileSync(path.join(bin, cmd), script('exit 0'), { mode: 0o755 });
    fs.writeFileSync(
      path.join(bin, 'apt-get'),
      script(
        `echo "apt-get $*" >> ${log}`,
        'case "$*" in',
        "  *--print-uris*) echo \"'http://deb.debian.org/debian/pool/main/e/elfutils/elfutils_0.192-4.dsc'\" ;;",
        `  *) mkdir -p elfutils-0.192/lib elfutils-0.192/libelf libbpf-1.5.0/src; printf '#!/bin/bash\\n' > elfutils-0.192/configure; chmod +x elfutils-0.192/configure ;;`,
        'esac',
      ),
      { mode: 0o755 },
    );
    if (tools.includes('make')) {
      fs.writeFileSync(
        path.join(bin, 'make'),
        script(
          'for a in "$@"; do case "$a" in OBJDIR=*) touch "${a#OBJDIR=}/libbpf.a" ;; esac; done',
          `case "$*" in *"-C lib "*) ${withLibeu ? 'touch lib/libeu.a' : 'true'} ;; *"-C libelf "*) touch libelf/libelf.a ;; esac`,
        ),
        { mode: 0o755 },
      );
    }
    const out = path.join(dir, 'out');
    const run = () => {
      const r = spawnSync(path.join(bin, 'bash'), [path.join(ROOT, 'scripts/build-static-deps.sh'), out], { encoding: 'utf8', env: { PATH: bin } });
      const calls = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
      fs.rmSync(log, { force: true });
      return { status: r.status, stderr: r.stderr, calls };
    };
    return { run, out };
  }

  it('keeps libeu.a beside libelf.a and libbpf.a, and builds again over a build from before it was kept', () => {
    const { run, out } = fixture(['dpkg-source', 'make', 'gcc']);
    // What an earlier version left: the two libraries and no libeu.a.
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'libelf.a'), 'old');
    fs.writeFileSync(path.join(out, 'libbpf.a'), 'old');
    const first = run();
    expect(first.stderr).toMatch(/build-static-deps: done: libbpf\.a libelf\.a libeu\.a\n$/);
    expect(first.status).toBe(0);
    expect(fs.readFileSync(path.join(out, 'libelf.a'), 'utf8')).toBe('');
    // Then done: nothing fetched again.
    const second = run();
    expect(second).toEqual({ status: 0, stderr: '', calls: '' });
  });

  it('does without libeu.a where elfutils has none', () => {
    const { run, out } = fixture(['dpkg-source', 'make', 'gcc'], false);
    const r = run();
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/done: libbpf\.a libelf\.a\n$/);
    expect(fs.existsSync(path.join(out, 'libeu.a'))).toBe(false);
  });

  it('names dpkg-dev, make and gcc where they are missing, before fetching anything', () => {
    const { run } = fixture([]);
    const r = run();
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('build-static-deps: needs dpkg-dev make gcc to fetch and build the source packages: apt-get install dpkg-dev make gcc\n');
    expect(r.calls).toBe('');
  });
});

describe('binding.gyp, static', () => {
  // The link line node-gyp configure writes, for JOULETRACE_STATIC_LIBBPF=1 and a static
  // directory with or without libeu.a.
  function libs(withLibeu: boolean): string[] {
    const dir = scratch('gyp');
    const staticDir = path.join(dir, 'static');
    fs.mkdirSync(staticDir);
    if (withLibeu) fs.writeFileSync(path.join(staticDir, 'libeu.a'), '');
    fs.copyFileSync(path.join(ROOT, 'binding.gyp'), path.join(dir, 'binding.gyp'));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
    // The Node headers the real build used, so that configure fetches nothing.
    const config = fs.readFileSync(path.join(ROOT, 'build/config.gypi'), 'utf8');
    const nodedir = /"nodedir": "([^"]+)"/.exec(config)?.[1];
    const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/node-gyp/bin/node-gyp.js'), 'configure', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], {
      cwd: dir,
      encoding: 'utf8',
      env: { ...process.env, JOULETRACE_STATIC_LIBBPF: '1', JOULETRACE_STATIC_DIR: staticDir },
    });
    expect(r.status, r.stderr).toBe(0);
    const mk = fs.readFileSync(path.join(dir, 'build/jouletrace.target.mk'), 'utf8');
    const block = /^LIBS := \\\n((?:\t.*\n)+)/m.exec(mk)![1];
    return block.split('\n').map((l) => l.replace(/\\$/, '').trim()).filter(Boolean);
  }

  it('links libeu.a after libelf.a where the static directory has one, and not where it has none', () => {
    expect(libs(true).filter((l) => l.startsWith('-l'))).toEqual(['-lbpf', '-lelf', '-leu', '-lz']);
    expect(libs(false).filter((l) => l.startsWith('-l'))).toEqual(['-lbpf', '-lelf', '-lz']);
  });
});

describe('verify-prebuild.sh', () => {
  /** The shared object `addon.node` compiled from this C source. */
  function sharedObject(source: string): string {
    const dir = scratch('verify');
    fs.writeFileSync(path.join(dir, 'lib.c'), source);
    const so = path.join(dir, 'addon.node');
    const cc = spawnSync('gcc', ['-shared', '-fPIC', '-o', so, path.join(dir, 'lib.c')], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
    return so;
  }

  it('refuses a shared object that ldd and a lazy load accept but that leaves a symbol undefined', () => {
    // As libelf.a's calls into a libeu.a left out of the link: a function nothing defines.
    const so = sharedObject('int eu_tsearch(void);\nint probe(void) { return eu_tsearch(); }\n');
    const lazy = spawnSync(process.execPath, ['-e', `try { process.dlopen({ exports: {} }, ${JSON.stringify(so)}); } catch (e) { console.log(e.message); }`], { encoding: 'utf8' });
    expect(lazy.stdout).not.toMatch(/undefined symbol/); // it loads (then is no Node module)
    const r = spawnSync('bash', [path.join(ROOT, 'scripts/verify-prebuild.sh'), so], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/\nprebuild: .*addon\.node does not load with every symbol bound \(RTLD_NOW\): .*undefined symbol: eu_tsearch\n$/);
  });

  // Built where glibc is newer than on the user's system, a prebuild does not load there (glibc
  // 2.38 symbols on Debian 12's 2.36); nothing said which glibc it needed.
  it('says the newest glibc symbol version the addon needs', () => {
    // getrandom() came with glibc 2.25, memcpy's current version with 2.14.
    const so = sharedObject('#include <string.h>\n#include <sys/random.h>\nint probe(char *a, char *b) { memcpy(a, b, 4); return getrandom(a, 4, 0); }\n');
    const r = spawnSync('bash', [path.join(ROOT, 'scripts/verify-prebuild.sh'), so], { encoding: 'utf8' });
    expect(r.stderr.split('\n')[0]).toBe(`prebuild: ${so} needs GLIBC_2.25: it loads where glibc is that version or newer`);
  });
});
