// Every name an entry point exports is one a user can look up: README.md or docs/*.md names it.
// formatProbe, SampleFlags, gridIntensityCodes, SPAN_BUCKETS and others were exported and
// nowhere described, and helpers of jouletrace's own (validateSourceOptions, PREFIXED_NAMES)
// exported beside them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.join(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const ENTRIES = Object.keys(pkg.exports).filter((k) => k !== './package.json');
const docs = [path.join(ROOT, 'README.md'), ...fs.readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => path.join(ROOT, 'docs', f))]
  .map((f) => fs.readFileSync(f, 'utf8'))
  .join('\n');

describe('exports', () => {
  it.each(ENTRIES)('%s: every name it exports is in the documentation', async (entry) => {
    const mod = (await import(path.join(ROOT, 'src', entry === '.' ? 'index' : entry.slice(2)))) as Record<string, unknown>;
    const names = Object.keys(mod).filter((k) => k !== 'default');
    expect(names.length).toBeGreaterThan(0);
    expect(names.filter((n) => !new RegExp(`\\b${n}\\b`).test(docs))).toEqual([]);
  });
});
