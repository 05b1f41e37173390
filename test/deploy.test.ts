// deploy/: the alert rules pass `promtool check rules` and their unit tests; the example config
// passes `promtool check config`; the Grafana dashboard parses and every query in it is accepted
// by a real Prometheus (the same test server that loads the rules); every metric the dashboard
// and the rules query is one that registerMetrics() or `jouletrace serve` exports.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RequestTracker, Sampler } from '../src/index';
import { registerMetrics } from '../src/prometheus';
import { findBinary, freePort, prometheusMissing, startPrometheus, type PrometheusServer } from './fixtures/prometheus-server';
import { describeGated, toolsRequired } from './fixtures/gated';

const deploy = path.join(__dirname, '..', 'deploy');
const rules = path.join(deploy, 'prometheus', 'jouletrace-rules.yml');
const missing = prometheusMissing();

function promtool(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync(findBinary('promtool')!, args, { encoding: 'utf8', cwd: path.join(deploy, 'prometheus') });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

interface Panel {
  title: string;
  type: string;
  targets?: Array<{ expr: string; refId: string }>;
}

const dashboard = JSON.parse(fs.readFileSync(path.join(deploy, 'grafana', 'jouletrace-dashboard.json'), 'utf8')) as {
  title: string;
  uid: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; query: { query: string } }> };
};

/** Grafana's built-in and dashboard variables, replaced as Grafana would before querying. */
function substitute(expr: string): string {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '1m').replace(/\$job\b|\$\{job\}/g, '.+');
}

/** registerMetrics()'s exposition, every family included (requests, carbon with a provider, thread tracking). */
async function exporterOutput(): Promise<string> {
  const sampler = new Sampler({ source: 'model' }).start();
  try {
    const tracker = new RequestTracker(sampler);
    const m = registerMetrics(sampler, { registry: new Registry(), requests: tracker, carbon: { provider: () => 400 } });
    const h = sampler.begin('work');
    sampler.end(h);
    await sampler.settle(h);
    await new Promise((r) => setTimeout(r, 300));
    const text = await m.registry.metrics();
    m.close();
    tracker.close();
    return text;
  } finally {
    sampler.close();
  }
}

/** `jouletrace serve --pid`'s exposition, from the command itself. */
async function serveOutput(): Promise<string> {
  const watched = spawn('sleep', ['60'], { stdio: 'ignore' });
  const port = await freePort();
  const bin = path.join(__dirname, '..', 'bin', 'jouletrace.js');
  const serve = spawn(process.execPath, [bin, 'serve', '--port', String(port), '--source', 'model', '--interval', '5', '--pid', String(watched.pid)], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      try {
        const res = await fetch(`http://127.0.0.1:${port}/metrics`);
        if (res.ok) return await res.text();
      } catch {
        // not listening yet
      }
    }
    throw new Error('jouletrace serve did not answer on /metrics within 10 s');
  } finally {
    serve.kill('SIGTERM');
    watched.kill();
  }
}

/** Sample names an exposition can hold: each family's, and a histogram's or summary's _bucket, _sum and _count. */
function exposedNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\w+)$/gm)) {
    out.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) out.add(name + s);
  }
  return out;
}

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan']);

/** The metric names a PromQL expression selects: identifiers that are no function, keyword, label or duration. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const out: string[] = [];
  for (const m of bare.matchAll(/(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    if (m[2] === undefined && !PROMQL_WORDS.has(m[1].toLowerCase())) out.push(m[1]);
  }
  return out;
}

/** The rules file's expressions (inline or `|` blocks) and the names it records. */
function ruleFile(text: string): { exprs: string[]; records: string[] } {
  const lines = text.split('\n');
  const exprs: string[] = [];
  lines.forEach((line, i) => {
    const m = /^(\s*)expr: (.*)$/.exec(line);
    if (!m) return;
    if (m[2].trim() !== '|') return void exprs.push(m[2]);
    const block: string[] = [];
    for (let j = i + 1; j < lines.length && (lines[j].trim() === '' || lines[j].search(/\S/) > m[1].length); j++) block.push(lines[j].trim());
    exprs.push(block.join(' ').trim());
  });
  const records = [...text.matchAll(/^\s*- record: (\S+)$/gm)].map((m) => m[1]);
  return { exprs, records };
}

/** The rules file's recording rules: name and expression. */
function recordingRules(text: string): Array<{ record: string; expr: string }> {
  const { exprs } = ruleFile(text);
  // The expressions in file order, each after its `- record:` or `- alert:`.
  const kinds = [...text.matchAll(/^\s*- (record|alert): (\S+)$/gm)];
  expect(kinds).toHaveLength(exprs.length);
  return kinds.flatMap((k, i) => (k[1] === 'record' ? [{ record: k[2], expr: exprs[i] }] : []));
}

// Prometheus's level:metric:operations. job_instance_domain:jouletrace_power_watts:rate1m was the
// rate of jouletrace_energy_joules_total, and job_route:... kept (job, method, route).
describe('recording rule names', () => {
  it('name the labels kept, the metric aggregated and the operation', () => {
    const records = recordingRules(fs.readFileSync(rules, 'utf8'));
    expect(records.map((r) => r.record)).toEqual([
      'job_instance:app_joules_per_request:rate5m',
      'job_method_route:http_server_request_energy_joules:mean5m',
      'job_instance_domain:jouletrace_energy_joules:rate1m',
    ]);
    for (const { record, expr } of records) {
      const [level, metric, ops] = record.split(':');
      const bys = [...expr.matchAll(/\bby \(([^)]*)\)/g)].map((m) => m[1].split(',').map((l) => l.trim()).join('_'));
      expect({ record, bys: [...new Set(bys)] }).toEqual({ record, bys: [level] });
      // One family aggregated (a histogram's _sum and _count are one): the metric is its name,
      // without _total once rated. A ratio of two (joules per request) names what it computes.
      const families = [...new Set(metricNames(expr).map((n) => n.replace(/_(sum|count|bucket)$/, '')))];
      if (families.length === 1) expect({ record, metric }).toEqual({ record, metric: families[0].replace(/_total$/, '') });
      expect(ops).toMatch(/^(rate|mean)\d+m$/);
    }
  });
});

describeGated('deploy/ with promtool and Prometheus', missing ?? undefined, toolsRequired(), 'JOULETRACE_REQUIRE_TOOLS=1', () => {
  let prom: PrometheusServer;
  beforeAll(async () => {
    prom = await startPrometheus({ ruleFiles: [rules] });
  });
  afterAll(async () => {
    await prom?.stop();
  });

  // A gauge labelled "quantile" (the sampler's jitter) failed it: Prometheus keeps that label for summaries.
  it("the exporter's own output passes promtool check metrics", async () => {
    const text = await exporterOutput();
    expect(text).toContain('jouletrace_sampler_jitter_seconds{stat="p99"}');
    const r = spawnSync(findBinary('promtool')!, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('alert rules pass promtool check rules', () => {
    const r = promtool('check', 'rules', rules);
    expect(r.out).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  // An idle instance (no request) read +Inf J per request and paged; a quiet one paged for the
  // energy it spends between requests.
  it('alert rules pass their promtool unit tests (0.15 J/request for 10m at 1 request/s or more → P2; no ratio without requests)', () => {
    const r = promtool('test', 'rules', 'jouletrace-rules.test.yml');
    expect(r.out).toContain('SUCCESS');
    expect(r.status).toBe(0);
    const text = fs.readFileSync(rules, 'utf8');
    expect(text).toMatch(
      /expr: \|\n\s+job_instance:app_joules_per_request:rate5m > 0\.15\n\s+and on \(job, instance\)\n\s+sum by \(job, instance\) \(rate\(app_requests_total\[5m\]\)\) >= 1\n\s+for: 10m\n\s+labels:\n\s+severity: P2/,
    );
    const test = fs.readFileSync(path.join(deploy, 'prometheus', 'jouletrace-rules.test.yml'), 'utf8');
    for (const instance of ['idle:9464', 'sparse:9464', 'slow:9464']) expect(test).toContain(`instance="${instance}"`);
  });

  // The dashboard's article panel divided by a zero request rate: +Inf for an idle instance.
  it("the dashboard's joules-per-request panel shows nothing for an instance without requests", () => {
    const panel = dashboard.panels.find((p) => /article/.test(p.title))!;
    const expr = substitute(panel.targets![0].expr);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-panel-'));
    try {
      const series = (name: string, instance: string, values: string) => `      - series: '${name}{job="api", instance="${instance}"}'\n        values: '${values}'`;
      const test = [
        'rule_files: []',
        'evaluation_interval: 1m',
        'tests:',
        '  - interval: 1m',
        '    input_series:',
        series('app_energy_joules_total', 'idle:9464', '0+0.5x20'),
        series('app_requests_total', 'idle:9464', '0x20'),
        series('app_energy_joules_total', 'busy:9464', '0+12x20'),
        series('app_requests_total', 'busy:9464', '0+60x20'),
        '    promql_expr_test:',
        `      - expr: ${JSON.stringify(expr)}`,
        '        eval_time: 10m',
        '        exp_samples:',
        `          - labels: '{job="api", instance="busy:9464"}'`,
        '            value: 0.2',
        '',
      ].join('\n');
      fs.writeFileSync(path.join(dir, 'panel.test.yml'), test);
      const r = spawnSync(findBinary('promtool')!, ['test', 'rules', 'panel.test.yml'], { encoding: 'utf8', cwd: dir });
      expect(`${r.stdout}${r.stderr}`).toContain('SUCCESS');
      expect(r.status).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('promtool test rules fails when an expectation is wrong (the tests can fail)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jouletrace-rules-'));
    try {
      fs.copyFileSync(rules, path.join(dir, 'jouletrace-rules.yml'));
      const test = fs.readFileSync(path.join(deploy, 'prometheus', 'jouletrace-rules.test.yml'), 'utf8');
      fs.writeFileSync(path.join(dir, 'broken.test.yml'), test.replace('severity: P2', 'severity: P1'));
      const r = spawnSync(findBinary('promtool')!, ['test', 'rules', 'broken.test.yml'], { encoding: 'utf8', cwd: dir });
      expect(r.status).not.toBe(0);
      expect(`${r.stdout}${r.stderr}`).toContain('FAILED');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the example scrape config passes promtool check config', () => {
    const r = promtool('check', 'config', 'prometheus.yml');
    expect(r.out).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  it('Prometheus loads the rules', async () => {
    const r = await prom.api('rules');
    expect(r.status).toBe('success');
    const names = r.data.groups.flatMap((g: { rules: Array<{ name: string }> }) => g.rules.map((x) => x.name));
    expect(names).toEqual(expect.arrayContaining(['JoulesPerRequestHigh', 'job_instance:app_joules_per_request:rate5m']));
  });

  it('the dashboard has the panels the recipe needs', () => {
    expect(dashboard.uid).toBe('jouletrace-energy');
    const byTitle = (re: RegExp) => dashboard.panels.filter((p) => re.test(p.title));
    const exprs = (re: RegExp) => byTitle(re).flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs(/by route/).join('\n')).toMatch(/http_server_request_energy_joules_sum.*\/.*http_server_request_energy_joules_count/);
    expect(exprs(/article/).join('\n')).toMatch(/rate\(app_energy_joules_total.*\/.*rate\(app_requests_total/);
    expect(exprs(/Power per RAPL domain/).join('\n')).toMatch(/by \(instance, domain\)/);
    expect(exprs(/carbon/i).join('\n')).toMatch(/jouletrace_carbon_grams_total[\s\S]*jouletrace_grid_intensity_grams_per_kwh/);
    const prop = byTitle(/proportionality/)[0];
    expect(prop.type).toBe('xychart');
    expect(prop.targets!.map((t) => t.expr).join('\n')).toMatch(/app_requests_total[\s\S]*app_energy_joules_total/);
    expect(exprs(/Sampler health/).join('\n')).toMatch(/jouletrace_samples_dropped_total[\s\S]*jouletrace_sampler_jitter_seconds/);
  });

  it('every dashboard query is accepted by the Prometheus query API', async () => {
    const queries = [
      ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `${p.title} ${t.refId}`, expr: t.expr }))),
    ];
    expect(queries.length).toBeGreaterThanOrEqual(10);
    for (const q of queries) {
      const r = await prom.api('query', { query: substitute(q.expr) });
      expect({ where: q.where, status: r.status, error: r.error }).toEqual({ where: q.where, status: 'success', error: undefined });
    }
    // The template variable's label_values() is Grafana syntax: check the selector inside it.
    const v = dashboard.templating.list[0].query.query;
    const inner = /^label_values\((.+), (\w+)\)$/.exec(v)!;
    expect((await prom.api('series', { 'match[]': inner[1] })).status).toBe('success');
    // And an invalid query is indeed rejected, so the loop above can fail.
    expect((await prom.api('query', { query: 'rate(app_energy_joules_total[$__rate_interval])' })).status).toBe('error');
  });
});

// Query syntax alone passed a renamed or misspelled metric: such a panel or rule shows nothing.
describe('every metric the dashboard and the rules query is exported', () => {
  it('finds the metric names of an expression, and no function, label or keyword', () => {
    expect(
      metricNames(
        'max by (job, instance) (sum by (job, pid) (rate(a_total{job=~"$job", part=~"x|y"}[5m]))) - on(pid) group_left(command) b:rec:rate5m * 3600 > bool 1e3',
      ),
    ).toEqual(['a_total', 'b:rec:rate5m']);
    expect(metricNames('histogram_quantile(0.99, sum by (le) (rate(h_bucket[1m])))')).toEqual(['h_bucket']);
  });

  it("names only series of registerMetrics()'s and serve's output, or recorded by the rules", async () => {
    const exported = new Set([...exposedNames(await exporterOutput()), ...exposedNames(await serveOutput())]);
    // What serve alone exports is in: its series are the dashboard's "where the energy goes".
    expect(exported).toContain('jouletrace_process_running');
    expect(exported).toContain('http_server_request_energy_joules_bucket');
    const rulesFile = ruleFile(fs.readFileSync(rules, 'utf8'));
    expect(rulesFile.records).toHaveLength(3);
    expect(rulesFile.exprs).toHaveLength(5);
    const known = new Set([...exported, ...rulesFile.records]);
    const queried = [
      ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `dashboard: ${p.title} ${t.refId}`, expr: substitute(t.expr) }))),
      ...dashboard.templating.list.map((v) => ({ where: `dashboard variable ${v.name}`, expr: /^label_values\((.+), \w+\)$/.exec(v.query.query)![1] })),
      ...rulesFile.exprs.map((expr) => ({ where: 'rules', expr })),
    ];
    const unknown = queried.flatMap((q) => metricNames(q.expr).filter((n) => !known.has(n)).map((n) => `${q.where}: ${n}`));
    expect(unknown).toEqual([]);
    // Every query selects something, so none is skipped unread.
    expect(queried.filter((q) => metricNames(q.expr).length === 0)).toEqual([]);
  }, 30_000);
});
