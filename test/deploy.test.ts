// deploy/: the alert rules pass `promtool check rules` and their unit tests; the example config
// passes `promtool check config`; the Grafana dashboard parses and every query in it is accepted
// by a real Prometheus (the same test server that loads the rules).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RequestTracker, Sampler } from '../src/index';
import { registerMetrics } from '../src/prometheus';
import { findBinary, prometheusMissing, startPrometheus, type PrometheusServer } from './fixtures/prometheus-server';
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
    const sampler = new Sampler({ source: 'model' }).start();
    try {
      const tracker = new RequestTracker(sampler);
      const m = registerMetrics(sampler, { registry: new Registry(), requests: tracker, carbon: { gramsPerKwh: 400 } });
      const h = sampler.begin('work');
      sampler.end(h);
      await sampler.settle(h);
      await new Promise((r) => setTimeout(r, 300));
      const text = await m.registry.metrics();
      expect(text).toContain('jouletrace_sampler_jitter_seconds{stat="p99"}');
      const r = spawnSync(findBinary('promtool')!, ['check', 'metrics'], { input: text, encoding: 'utf8' });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
      m.close();
      tracker.close();
    } finally {
      sampler.close();
    }
  });

  it('alert rules pass promtool check rules', () => {
    const r = promtool('check', 'rules', rules);
    expect(r.out).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  it('alert rules pass their promtool unit tests (0.15 J/request for 10m → P2)', () => {
    const r = promtool('test', 'rules', 'jouletrace-rules.test.yml');
    expect(r.out).toContain('SUCCESS');
    expect(r.status).toBe(0);
    const text = fs.readFileSync(rules, 'utf8');
    expect(text).toMatch(/expr: job_instance:app_joules_per_request:rate5m > 0\.15\n\s+for: 10m\n\s+labels:\n\s+severity: P2/);
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
