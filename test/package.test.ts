// The package as its build and its users see it: a TypeScript build that fails leaves nothing
// that set-up would take for done; every type a public signature names can be imported; a peer
// dependency is needed only by the entry point that loads it; each entry point resolves, by the
// package's name, to its CommonJS and ESM files and typings; the tarball holds what install needs.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { scratchDirs } from './fixtures/shell-scripts';

const ROOT = path.join(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const ENTRIES = Object.keys(pkg.exports).filter((k) => k !== './package.json');
const scratch = scratchDirs();

describe('scripts/build-ts.mjs', () => {
  it('leaves the last complete dist/ in place, older than src/, when the build fails', () => {
    // A copy of the sources with a type error, and a dist/ from an earlier build.
    const dir = scratch('build-ts');
    fs.cpSync(path.join(ROOT, 'src'), path.join(dir, 'src'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'scripts'), path.join(dir, 'scripts'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
    fs.appendFileSync(path.join(dir, 'src/units.ts'), "\nexport const broken: number = 'not a number';\n");
    const earlier = new Date(Date.now() - 3600_000);
    for (const [file, text] of [['dist/cjs/index.js', '// earlier\n'], ['dist/cjs/package.json', '{}\n'], ['dist/esm/index.mjs', '// earlier\n']]) {
      fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
      fs.writeFileSync(path.join(dir, file), text);
      fs.utimesSync(path.join(dir, file), earlier, earlier);
    }

    const r = spawnSync(process.execPath, [path.join(dir, 'scripts/build-ts.mjs')], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toMatch(/src\/units\.ts.*error TS2322/);
    expect(fs.readFileSync(path.join(dir, 'dist/cjs/index.js'), 'utf8')).toBe('// earlier\n');
    expect(fs.existsSync(path.join(dir, 'dist/cjs/package.json'))).toBe(true);
    expect(fs.existsSync(path.join(dir, 'dist/esm/index.mjs'))).toBe(true);
    expect(fs.existsSync(path.join(dir, 'dist/cjs/units.js'))).toBe(false);
    expect(fs.existsSync(path.join(dir, 'dist.new'))).toBe(false);
    // What scripts/setup.sh tests to decide whether to compile again.
    const stale = spawnSync('find', ['src', '-newer', 'dist/cjs/index.js', '-print', '-quit'], { cwd: dir, encoding: 'utf8' });
    expect(stale.stdout.trim()).not.toBe('');
  });
});

describe('public types', () => {
  // The compiled declarations of every entry point, as a user's TypeScript reads them.
  const files = ENTRIES.map((e) => path.join(ROOT, 'dist/cjs', `${e === '.' ? 'index' : e.slice(2)}.d.ts`));
  const program = ts.createProgram(files, { strict: true, module: ts.ModuleKind.CommonJS, types: ['node'], skipLibCheck: true });
  const checker = program.getTypeChecker();
  const resolve = (s: ts.Symbol) => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s);
  const exportsOf = (file: string) => checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(file)!)!);
  const exported = new Set(files.flatMap((f) => exportsOf(f).map(resolve)));

  it('exports every type of the package that an exported declaration names', () => {
    const dist = path.join(ROOT, 'dist') + path.sep;
    const unexported = new Set<string>();
    const seen = new Set<ts.Symbol>();
    const visit = (symbol: ts.Symbol) => {
      if (seen.has(symbol)) return;
      seen.add(symbol);
      for (const d of symbol.declarations ?? []) {
        const file = d.getSourceFile().fileName;
        if (!file.startsWith(dist)) continue;
        const named = ts.isInterfaceDeclaration(d) || ts.isTypeAliasDeclaration(d) || ts.isClassDeclaration(d) || ts.isEnumDeclaration(d);
        if (named && !exported.has(symbol)) unexported.add(`${symbol.name} (${path.relative(dist, file)})`);
        walk(d);
      }
    };
    const walk = (node: ts.Node): void => {
      // Private members are no part of the public surface.
      if (ts.canHaveModifiers(node) && ts.getModifiers(node)?.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword)) return;
      const name = ts.isTypeReferenceNode(node) ? node.typeName : ts.isExpressionWithTypeArguments(node) ? node.expression : ts.isTypeQueryNode(node) ? node.exprName : undefined;
      const symbol = name && checker.getSymbolAtLocation(name);
      if (symbol) visit(resolve(symbol));
      ts.forEachChild(node, walk);
    };
    for (const symbol of exported) visit(symbol);
    expect([...unexported].sort()).toEqual([]);
  });

  it('exports as BpfReadiness the type bpfReadiness() returns', () => {
    const index = exportsOf(files[ENTRIES.indexOf('.')]);
    const named = (n: string) => resolve(index.find((s) => s.name === n)!);
    // Named by declaration, not compared as objects: a failing toBe would print the compiler's graph.
    const where = (s: ts.Symbol | undefined) => s && `${s.name} in ${path.basename(s.declarations![0].getSourceFile().fileName)}`;
    const fn = checker.getTypeOfSymbol(named('bpfReadiness')).getCallSignatures()[0];
    expect(where(checker.getReturnTypeOfSignature(fn).getSymbol())).toBe(where(named('BpfReadiness')));
  });
});

describe('peer dependencies', () => {
  it('are all optional, and the main entry point loads none of them', () => {
    const peers = Object.keys(pkg.peerDependencies);
    expect(peers.filter((p) => pkg.peerDependenciesMeta?.[p]?.optional !== true)).toEqual([]);
    const script = `require(${JSON.stringify(path.join(ROOT, 'dist/cjs/index.js'))});
      console.log(JSON.stringify(Object.keys(require.cache)));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const loaded: string[] = JSON.parse(r.stdout);
    expect(peers.filter((p) => loaded.some((f) => f.includes(`${path.sep}node_modules${path.sep}${p}${path.sep}`)))).toEqual([]);
  });
});

describe('the package as a user resolves it', () => {
  it('serves every subpath of its exports map to require and import, with typings for each resolution', () => {
    // A project whose node_modules/jouletrace is this checkout, as `npm install` would place it.
    const dir = scratch('consumer');
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(ROOT, path.join(dir, 'node_modules/jouletrace'));
    const names = ENTRIES.map((e) => (e === '.' ? 'jouletrace' : `jouletrace/${e.slice(2)}`));
    // Run from inside the project, as its own code would: an ES module, for import.meta.resolve.
    const script = `import { createRequire } from 'node:module';
      const require = createRequire(import.meta.url);
      const out = {};
      for (const name of ${JSON.stringify(names)}) {
        const esm = await import(name);
        out[name] = { require: require.resolve(name), import: import.meta.resolve(name), same: esm.default === require(name), named: Object.keys(esm).length > 1 };
      }
      console.log(JSON.stringify(out));`;
    fs.writeFileSync(path.join(dir, 'resolve.mjs'), script);
    const r = spawnSync(process.execPath, [path.join(dir, 'resolve.mjs')], { cwd: dir, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const got = JSON.parse(r.stdout);
    for (const name of names) {
      const file = name === 'jouletrace' ? 'index' : name.slice('jouletrace/'.length);
      expect(got[name]).toEqual({
        require: path.join(ROOT, 'dist/cjs', `${file}.js`),
        import: pathToFileURL(path.join(ROOT, 'dist/esm', `${file}.mjs`)).href,
        same: true,
        named: true,
      });
      // TypeScript's resolutions: node16/nodenext by the exports map (import and require), node10
      // by typesVersions.
      const from = path.join(dir, 'index.ts');
      const resolutions = [
        ts.resolveModuleName(name, from, { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 }, ts.sys, undefined, undefined, ts.ModuleKind.ESNext),
        ts.resolveModuleName(name, from, { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 }, ts.sys, undefined, undefined, ts.ModuleKind.CommonJS),
        ts.resolveModuleName(name, from, { module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10 }, ts.sys),
      ];
      for (const res of resolutions) {
        expect(res.resolvedModule?.resolvedFileName && fs.realpathSync(res.resolvedModule.resolvedFileName)).toBe(path.join(ROOT, 'dist/cjs', `${file}.d.ts`));
      }
    }
  });

  it('packs what install and the exports map need, and not the development scripts', () => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const files = new Set<string>(JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path));
    // `npm install` without a prebuild: node-gyp-build compiles binding.gyp, whose actions run
    // build-bpf.sh, or install-failed.sh (which sources system-packages.sh) says what is missing.
    for (const f of ['binding.gyp', 'scripts/build-bpf.sh', 'scripts/install-failed.sh', 'scripts/system-packages.sh', 'bpf/thread_tracker.bpf.c', 'native/addon.cc']) {
      expect(files.has(f), f).toBe(true);
    }
    for (const target of Object.values<Record<string, string> | string>(pkg.exports).flatMap((t) => (typeof t === 'string' ? [t] : Object.values(t)))) {
      expect(files.has(path.normalize(target)), target).toBe(true);
    }
    expect(files.has(path.normalize(pkg.bin.jouletrace)), pkg.bin.jouletrace).toBe(true);
    for (const f of ['scripts/setup.sh', 'scripts/prebuild.sh', 'scripts/build-static-deps.sh', 'scripts/verify-prebuild.sh', 'scripts/build-ts.mjs']) {
      expect(files.has(f), f).toBe(false);
    }
  });
});
