// The package as its build and its users see it: a TypeScript build that fails leaves nothing
// that set-up would take for done; every type a public signature names can be imported; a peer
// dependency is needed only by the entry point that loads it; each entry point resolves, by the
// package's name, to its CommonJS and ESM files and typings; the tarball holds what install needs.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
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

  // The package as npm places it in a project that has no `peer`: its files copied (a link would
  // resolve back to this checkout and its node_modules), every other dependency linked.
  function projectWithout(peer: string) {
    const app = scratch(`no-${peer.replace('/', '-')}`);
    const ours = path.join(app, 'node_modules/jouletrace');
    fs.mkdirSync(ours, { recursive: true });
    for (const f of ['dist', 'bin', 'package.json', 'binding.gyp']) fs.cpSync(path.join(ROOT, f), path.join(ours, f), { recursive: true });
    fs.symlinkSync(path.join(ROOT, 'build'), path.join(ours, 'build'));
    const link = (dir: string) => {
      for (const dep of fs.readdirSync(path.join(ROOT, 'node_modules', dir))) {
        const name = path.join(dir, dep);
        // The peer's scope is a directory of links to each of its packages but the peer.
        if (peer.startsWith(`${name}/`)) {
          fs.mkdirSync(path.join(app, 'node_modules', name));
          link(name);
        } else if (name !== peer && name !== '.bin') fs.symlinkSync(path.join(ROOT, 'node_modules', name), path.join(app, 'node_modules', name));
      }
    };
    link('');
    const run = (args: string[]) => spawnSync(process.execPath, args, { cwd: app, encoding: 'utf8' });
    expect(run(['-p', `require.resolve('${peer}')`]).stderr).toContain(`Cannot find module '${peer}'`);
    return { app, bin: path.join(ours, 'bin/jouletrace.js'), run };
  }

  // What require() and import() of an entry point in the project threw, each as { name, code,
  // message }, or 'loaded'.
  function loadBoth(run: (args: string[]) => ReturnType<typeof spawnSync>, name: string): unknown[] {
    const script = `const show = (e) => JSON.stringify({ name: e.name, code: e.code, message: e.message });
        try { require('${name}'); console.log('"loaded"'); } catch (e) { console.log(show(e)); }
        import('${name}').then(() => console.log('"loaded"'), (e) => console.log(show(e)));`;
    const r = run(['-e', script]);
    expect(r.stderr).toBe('');
    return String(r.stdout).trim().split('\n').map((l) => JSON.parse(l));
  }

  // prom-client was a required peer: where peers are not installed (--legacy-peer-deps,
  // --omit=peer, Yarn) every CLI command failed with "Cannot find module 'prom-client'", the CLI
  // loading serve (and so prom-client) for any command; jouletrace/prometheus the same, with no code.
  describe('without prom-client installed', () => {
    const project = () => projectWithout('prom-client');
    const range = pkg.peerDependencies['prom-client'];
    const missing =
      `prom-client is not installed: jouletrace's Prometheus metrics (jouletrace/prometheus, jouletrace serve) need prom-client ${range}, an optional peer dependency of jouletrace. ` +
      `Install it beside jouletrace: npm install prom-client@${range} (npm install -g prom-client@${range} where jouletrace is installed globally; with npx: npx -p jouletrace -p prom-client@${range} jouletrace serve).`;

    it('runs every CLI command but serve, and serve says it needs prom-client and how to install it', () => {
      const { bin, run } = project();
      const help = run([bin, '--help']);
      expect(help.stderr).toBe('');
      expect(help.status).toBe(0);
      expect(help.stdout).toMatch(/^ {2}serve /m);
      const probe = run([bin, 'probe', '--json']);
      expect(probe.stderr).toBe('');
      expect(probe.status).toBe(0);
      expect(JSON.parse(probe.stdout).sources.map((s: { source: string }) => s.source)).toContain('model');
      const serve = run([bin, 'serve', '--port', '0']);
      expect({ status: serve.status, stderr: serve.stderr }).toEqual({ status: 1, stderr: `jouletrace: ${missing}\n` });
    });

    // serve loaded prom-client as it loaded: its --help and a bad command line (2) failed as a
    // run would (1, the missing prom-client).
    it('takes serve --help and refuses a bad serve command line as every command does, prom-client or not', () => {
      const { bin, run } = project();
      const help = run([bin, 'serve', '--help']);
      expect({ status: help.status, stderr: help.stderr }).toEqual({ status: 0, stderr: '' });
      expect(help.stdout).toMatch(/^Usage: jouletrace serve \[options\]\n/);
      const bad = run([bin, 'serve', '--bogus']);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/^jouletrace serve: unknown option --bogus\n\nUsage: jouletrace serve /);
    });

    it('refuses jouletrace/prometheus, to require and import alike, with ERR_JOULETRACE_PROM_CLIENT saying what to install', () => {
      const { run } = project();
      const want = { name: 'JouletraceError', code: 'ERR_JOULETRACE_PROM_CLIENT', message: missing };
      expect(loadBoth(run, 'jouletrace/prometheus')).toEqual([want, want]);
      // The other entry points load.
      const others = ENTRIES.filter((e) => e !== './prometheus').map((e) => (e === '.' ? 'jouletrace' : `jouletrace/${e.slice(2)}`));
      const all = run(['-e', `for (const n of ${JSON.stringify(others)}) require(n); console.log('ok')`]);
      expect({ stderr: all.stderr, stdout: all.stdout }).toEqual({ stderr: '', stdout: 'ok\n' });
    });
  });

  // jouletrace/opentelemetry failed with a bare MODULE_NOT_FOUND, naming neither what needed
  // @opentelemetry/api nor that it is an optional peer to install.
  describe('without @opentelemetry/api installed', () => {
    it('refuses jouletrace/opentelemetry, to require and import alike, with ERR_JOULETRACE_OTEL_API saying what to install', () => {
      const { run } = projectWithout('@opentelemetry/api');
      const range = pkg.peerDependencies['@opentelemetry/api'];
      const message =
        `@opentelemetry/api is not installed: jouletrace's OpenTelemetry metrics (jouletrace/opentelemetry) need @opentelemetry/api ${range}, an optional peer dependency of jouletrace. ` +
        `Install it beside jouletrace: npm install @opentelemetry/api@${range}, with an OpenTelemetry SDK to export what it records.`;
      const want = { name: 'JouletraceError', code: 'ERR_JOULETRACE_OTEL_API', message };
      expect(loadBoth(run, 'jouletrace/opentelemetry')).toEqual([want, want]);
      // The other entry points load.
      const others = ENTRIES.filter((e) => e !== './opentelemetry').map((e) => (e === '.' ? 'jouletrace' : `jouletrace/${e.slice(2)}`));
      const all = run(['-e', `for (const n of ${JSON.stringify(others)}) require(n); console.log('ok')`]);
      expect({ stderr: all.stderr, stdout: all.stdout }).toEqual({ stderr: '', stdout: 'ok\n' });
    });
  });

  // An @opentelemetry/api older than the metrics API (1.2, where npm only warned of the unmet
  // peer) loaded, and registerOpenTelemetry() failed with "Cannot read properties of undefined
  // (reading 'getMeterProvider')".
  describe('with an @opentelemetry/api too old', () => {
    it('refuses jouletrace/opentelemetry, to require and import alike, with ERR_JOULETRACE_OTEL_API naming the version found and the range needed', () => {
      const { app, run } = projectWithout('@opentelemetry/api');
      // A stand-in for 1.2.0: the trace, context and diag APIs, no metrics; its package.json
      // above its main file, as the API's own exports map keeps it from require().
      const api = path.join(app, 'node_modules/@opentelemetry/api');
      fs.mkdirSync(path.join(api, 'build/src'), { recursive: true });
      fs.writeFileSync(path.join(api, 'package.json'), JSON.stringify({ name: '@opentelemetry/api', version: '1.2.0', main: 'build/src/index.js' }));
      fs.writeFileSync(
        path.join(api, 'build/src/index.js'),
        'const f = () => undefined;\nexports.trace = { getTracer: f, getActiveSpan: f, setSpan: f };\nexports.context = { active: f };\nexports.diag = { warn: f };\n',
      );
      const range = pkg.peerDependencies['@opentelemetry/api'];
      const message =
        `@opentelemetry/api 1.2.0 is too old: jouletrace's OpenTelemetry metrics (jouletrace/opentelemetry) need @opentelemetry/api ${range}, ` +
        `and this one lacks metrics.getMeterProvider(), createNoopMeter(). Install one beside jouletrace: npm install @opentelemetry/api@${range}.`;
      const want = { name: 'JouletraceError', code: 'ERR_JOULETRACE_OTEL_API', message };
      expect(loadBoth(run, 'jouletrace/opentelemetry')).toEqual([want, want]);
    });
  });

  // prom-client was a dependency of its own: an application on prom-client 14, or on a 15 npm
  // did not deduplicate, got jouletrace's copy beside its own, and its Registry was refused at
  // run time. As a peer, npm installs the one copy at the top level, or refuses the install.
  describe('prom-client, as npm installs it', () => {
    // A package of jouletrace's name, version and peer dependencies only, and stand-ins for two
    // prom-client releases, installed from their tarballs with a registry of those two on
    // 127.0.0.1 (npm asks it for a release that fits an optional peer in conflict): npm decides
    // from these alone.
    async function install(promClient: string) {
      const dir = scratch('peers');
      // npm's settings from the environment (`npm test` sets them), legacy-peer-deps among them, left out.
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_config_/i.test(k)));
      const tarball = (name: string, json: object) => {
        const src = path.join(dir, name);
        fs.mkdirSync(src);
        fs.writeFileSync(path.join(src, 'package.json'), JSON.stringify(json));
        const r = spawnSync('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], { cwd: src, encoding: 'utf8', env });
        expect(r.stderr).not.toMatch(/npm error/);
        return r.stdout.trim().split('\n').pop()!;
      };
      const { name, version, peerDependencies, peerDependenciesMeta } = pkg;
      const ours = tarball('jouletrace', { name, version, peerDependencies, peerDependenciesMeta });
      const releases = ['14.2.0', '15.1.3'];
      const files = new Map(releases.map((v) => [v, tarball(`prom-client-${v}`, { name: 'prom-client', version: v })]));
      const server = http.createServer((req, res) => {
        const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
        const versions = Object.fromEntries(releases.map((v) => [v, { name: 'prom-client', version: v, dist: { tarball: `${base}/${files.get(v)}` } }]));
        if (req.url === '/prom-client') res.setHeader('content-type', 'application/json').end(JSON.stringify({ name: 'prom-client', 'dist-tags': { latest: '15.1.3' }, versions }));
        else if ([...files.values()].some((f) => req.url === `/${f}`)) res.end(fs.readFileSync(path.join(dir, req.url!)));
        else res.writeHead(404).end();
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      try {
        const app = path.join(dir, 'app');
        fs.mkdirSync(app);
        const dependencies = { jouletrace: `file:${path.join(dir, ours)}`, 'prom-client': `file:${path.join(dir, files.get(promClient)!)}` };
        fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', dependencies }));
        const registry = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
        const args = ['install', '--registry', registry, '--ignore-scripts', '--no-audit', '--no-fund', '--cache', path.join(dir, 'cache')];
        const child = spawn('npm', args, { cwd: app, env, stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
        return { status, stderr, app };
      } finally {
        server.close();
      }
    }

    it('is no dependency of its own', () => {
      expect(pkg.dependencies['prom-client']).toBeUndefined();
      expect(pkg.devDependencies['prom-client']).toBe(pkg.peerDependencies['prom-client']);
    });

    it("shares the application's prom-client 15: one copy", async () => {
      const r = await install('15.1.3');
      expect(r.stderr).not.toMatch(/npm error/);
      expect(r.status).toBe(0);
      expect(fs.existsSync(path.join(r.app, 'node_modules/jouletrace/node_modules'))).toBe(false);
    });

    it("refuses an application's prom-client 14 at install time (ERESOLVE), naming the version needed", async () => {
      const r = await install('14.2.0');
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/npm error code ERESOLVE/);
      expect(r.stderr).toContain(`peerOptional prom-client@"${pkg.peerDependencies['prom-client']}" from jouletrace@${pkg.version}`);
    });
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
      // TypeScript's resolutions: node16/nodenext by the exports map, import to the ESM typings of
      // the .mjs (CommonJS ones made TypeScript take it for CommonJS: attw's "Masquerading as
      // CJS") and require to the CommonJS ones; bundler by its import condition; node10 by typesVersions.
      const from = path.join(dir, 'index.ts');
      const resolved = (res: ts.ResolvedModuleWithFailedLookupLocations) => res.resolvedModule?.resolvedFileName && fs.realpathSync(res.resolvedModule.resolvedFileName);
      const node16 = { module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16 };
      const bundler = { module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler };
      for (const res of [
        ts.resolveModuleName(name, from, node16, ts.sys, undefined, undefined, ts.ModuleKind.ESNext),
        ts.resolveModuleName(name, from, bundler, ts.sys),
      ]) {
        expect(resolved(res)).toBe(path.join(ROOT, 'dist/esm', `${file}.d.mts`));
      }
      for (const res of [
        ts.resolveModuleName(name, from, node16, ts.sys, undefined, undefined, ts.ModuleKind.CommonJS),
        ts.resolveModuleName(name, from, { module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10 }, ts.sys),
      ]) {
        expect(resolved(res)).toBe(path.join(ROOT, 'dist/cjs', `${file}.d.ts`));
      }
    }
  });

  // TypeScript accepts `import jt from 'jouletrace'` in a CommonJS project (esModuleInterop, which
  // node16 implies) as in an ES module: it compiled to an undefined `jt` in CommonJS, where the
  // entry points had no `default`.
  it('gives every entry point a default export, the module itself, to CommonJS and ESM alike, as its typings say', () => {
    const dir = scratch('default-import');
    const names = ENTRIES.map((e) => (e === '.' ? 'jouletrace' : `jouletrace/${e.slice(2)}`));
    const lines = [
      ...names.map((n, i) => `import m${i} from '${n}';\nimport * as n${i} from '${n}';`),
      // The default is typed, not `any`, which would let anything through.
      ...names.map((_, i) => `// @ts-expect-error: no such export\nvoid m${i}.noSuchExport;`),
      `const pairs = [${names.map((_, i) => `[m${i}, n${i}]`).join(', ')}] as [Record<string, unknown> | undefined, Record<string, unknown>][];`,
      "console.log(JSON.stringify(pairs.map(([m, n]) => Object.keys(n).filter((k) => k !== 'default').every((k) => m?.[k] === n[k] && n[k] !== undefined))));",
    ];
    const results: Record<string, unknown> = {};
    for (const type of ['commonjs', 'module']) {
      const project = path.join(dir, type);
      fs.mkdirSync(path.join(project, 'node_modules'), { recursive: true });
      fs.symlinkSync(ROOT, path.join(project, 'node_modules/jouletrace'));
      fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ type }));
      fs.writeFileSync(path.join(project, 'main.ts'), lines.join('\n') + '\n');
      const options: ts.CompilerOptions = {
        module: ts.ModuleKind.Node16,
        moduleResolution: ts.ModuleResolutionKind.Node16,
        target: ts.ScriptTarget.ES2022,
        strict: true,
        types: ['node'],
        typeRoots: [path.join(ROOT, 'node_modules/@types')],
        outDir: project,
      };
      const program = ts.createProgram([path.join(project, 'main.ts')], options);
      const emitted = program.emit();
      const diagnostics = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics].map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      expect(diagnostics, type).toEqual([]);
      const r = spawnSync(process.execPath, [path.join(project, 'main.js')], { cwd: project, encoding: 'utf8' });
      expect(r.stderr, type).toBe('');
      results[type] = JSON.parse(r.stdout);
    }
    const every = names.map(() => true);
    expect(results).toEqual({ commonjs: every, module: every });
  });

  // FastifyRequestLike declared routeOptions.url and routerPath `?: string` where Fastify 5's own
  // types have `| undefined`: a project compiling with exactOptionalPropertyTypes could not
  // register the plugin (TS2769, no overload matches).
  it("type-checks the Fastify plugin against Fastify's own types, with exactOptionalPropertyTypes as without", () => {
    const project = scratch('fastify-types');
    fs.mkdirSync(path.join(project, 'node_modules'));
    fs.symlinkSync(ROOT, path.join(project, 'node_modules/jouletrace'));
    fs.symlinkSync(path.join(ROOT, 'node_modules/fastify'), path.join(project, 'node_modules/fastify'));
    fs.writeFileSync(
      path.join(project, 'main.ts'),
      [
        "import Fastify from 'fastify';",
        "import { RequestTracker, Sampler } from 'jouletrace';",
        "import { fastifyEnergy } from 'jouletrace/fastify';",
        'const sampler = new Sampler({ ringCapacity: 0 });',
        'const app = Fastify();',
        'app.register(fastifyEnergy, { tracker: new RequestTracker(sampler) });',
        'app.register(fastifyEnergy, { sampler });',
      ].join('\n') + '\n',
    );
    const diagnostics: Record<string, string[]> = {};
    for (const exactOptionalPropertyTypes of [false, true]) {
      const program = ts.createProgram([path.join(project, 'main.ts')], {
        module: ts.ModuleKind.CommonJS,
        moduleResolution: ts.ModuleResolutionKind.Node10,
        target: ts.ScriptTarget.ES2022,
        strict: true,
        exactOptionalPropertyTypes,
        esModuleInterop: true,
        noEmit: true,
        skipLibCheck: true, // the call in main.ts is what fails
        types: ['node'],
        typeRoots: [path.join(ROOT, 'node_modules/@types')],
      });
      diagnostics[String(exactOptionalPropertyTypes)] = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n').split('\n')[0]);
    }
    expect(diagnostics).toEqual({ false: [], true: [] });
  });

  it('packs what install and the exports map need, and not the development scripts', () => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const files = new Set<string>(JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path));
    // `npm install` without a prebuild: install.mjs has node-gyp compile binding.gyp against the
    // headers node-headers.mjs finds, whose actions run build-bpf.sh, or install-failed.sh (which
    // sources system-packages.sh) says what is missing.
    for (const f of ['binding.gyp', 'scripts/install.mjs', 'scripts/node-headers.mjs', 'scripts/build-bpf.sh', 'scripts/install-failed.sh', 'scripts/system-packages.sh', 'bpf/thread_tracker.bpf.c', 'native/addon.cc']) {
      expect(files.has(f), f).toBe(true);
    }
    type Target = string | { [condition: string]: Target };
    const targets = (t: Target): string[] => (typeof t === 'string' ? [t] : Object.values(t).flatMap(targets));
    for (const target of targets(pkg.exports)) {
      expect(files.has(path.normalize(target)), target).toBe(true);
    }
    expect(files.has(path.normalize(pkg.bin.jouletrace)), pkg.bin.jouletrace).toBe(true);
    for (const f of ['scripts/setup.sh', 'scripts/prebuild.sh', 'scripts/build-static-deps.sh', 'scripts/verify-prebuild.sh', 'scripts/build-ts.mjs', 'scripts/check-prebuilds.mjs']) {
      expect(files.has(f), f).toBe(false);
    }
  });

  // Nothing stopped a publish without prebuilds/ (a clone has none until \`npm run prebuild\`):
  // the package would have compiled the addon on every user's machine.
  it('refuses to publish without a prebuilt addon for linux-x64, naming the command that makes one', () => {
    expect(pkg.scripts.prepublishOnly).toBe('node scripts/check-prebuilds.mjs');
    const dir = scratch('publish');
    fs.mkdirSync(path.join(dir, 'scripts'));
    fs.copyFileSync(path.join(ROOT, 'scripts/check-prebuilds.mjs'), path.join(dir, 'scripts/check-prebuilds.mjs'));
    const check = () => spawnSync(process.execPath, [path.join(dir, 'scripts/check-prebuilds.mjs')], { cwd: dir, encoding: 'utf8' });
    const refused = (r: ReturnType<typeof check>) => ({ status: r.status, stderr: r.stderr });
    const message =
      'jouletrace: not publishing: prebuilds/linux-x64 holds no prebuilt addon (*.node), so every install would compile it. ' +
      'Run `npm run prebuild` on a linux-x64 machine first (it builds the addon with libbpf, libelf and zlib linked statically and verifies it), then publish again.\n';
    expect(refused(check())).toEqual({ status: 1, stderr: message });
    // Another platform's prebuild is no substitute.
    fs.mkdirSync(path.join(dir, 'prebuilds/linux-arm64'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'prebuilds/linux-arm64/jouletrace.node'), '');
    fs.mkdirSync(path.join(dir, 'prebuilds/linux-x64'));
    expect(refused(check())).toEqual({ status: 1, stderr: message });
    fs.writeFileSync(path.join(dir, 'prebuilds/linux-x64/jouletrace.node'), '');
    expect(refused(check())).toEqual({ status: 0, stderr: 'jouletrace: publishing with prebuilds/linux-x64/jouletrace.node\n' });
  });
});
