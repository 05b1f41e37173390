// The Prometheus exporter's metric names that follow its prefix: apart from prometheus.ts, every
// export of which jouletrace/prometheus gives users, as they are the exporter's and its test's.

/**
 * The names the metrics but the fixed ones take after the prefix: one that makes a fixed name was
 * a second metric of that name, which prom-client refused halfway through the build.
 */
export const PREFIXED_NAMES = [
  'energy_joules_total',
  'power_watts',
  'process_energy_joules_total',
  'thread_energy_joules_total',
  'process_dropped_threads_total',
  'span_energy_joules',
  'incomplete_spans_total',
  'incomplete_requests_total',
  'samples_total',
  'samples_dropped_total',
  'sampler_missed_deadlines_total',
  'sampler_read_errors_total',
  'sampler_domain_read_errors_total',
  'sampler_energy_restarts_total',
  'sampler_jitter_seconds',
  'sampler_counters_still_seconds',
  'sampler_info',
  'carbon_grams_total',
  'grid_intensity_grams_per_kwh',
  'carbon_provider_errors_total',
];
