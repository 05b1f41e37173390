// The data an HTML report is drawn from. Plain JSON: a report can be re-rendered from a saved copy.

export interface ReportRecord {
  /** Route ("GET /expensive") or span label. */
  label: string;
  joules: number;
  /** Seconds since the sampler started, when the request or span ended. */
  t: number;
  durationMs: number;
}

export interface ReportThreadSeries {
  /** "name (tid)", or "other threads". */
  label: string;
  pid: number;
  tid: number;
  /** Joules attributed to the thread in each interval of `time`. */
  joules: number[];
}

export interface ReportData {
  version: 1;
  title: string;
  subtitle?: string;
  /** ISO 8601. */
  createdAt: string;
  source: string;
  /** True when the figures come from the model source: the report labels them estimated. */
  estimated: boolean;
  durationS: number;
  /** "package-0", "dram-0", ... */
  domains: string[];
  /** Start of the first interval (the collector's first poll), seconds since start; 0 if absent. */
  startS?: number;
  /** End of each interval, seconds since start. */
  time: number[];
  /** Average watts in each interval, per domain: watts[domain][interval]. */
  watts: number[][];
  /** Per-thread energy per interval (same intervals as `time`); empty without thread tracking. */
  threads: ReportThreadSeries[];
  /** Whether the run tracked threads (absent from reports saved before this field: then, whether `threads` has any). */
  threadsTracked?: boolean;
  /** CPU cores the tracked threads kept busy in each interval (same intervals as `time`). */
  cpuCores: number[];
  records: ReportRecord[];
  recordKind: 'request' | 'span';
  attribution?: { total: number; process: number; baseline: number; other: number; domains: string[] };
  /** Rows of the summary table. */
  summary: Array<[string, string]>;
  notes: string[];
}
