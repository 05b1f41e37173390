// The package as its build and its users see it: a TypeScript build that fails leaves nothing
// that set-up would take for done.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const ROOT = path.join(__dirname, '..');
let dir: string | undefined;
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('scripts/build-ts.mjs', () => {
  it('leaves the last complete dist/ in place, older than src/, when the build fails', () => {
    // A copy of the sources with a type error, and a dist/ from an earlier build.
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-build-ts-'));
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
