// The data an HTML report is drawn from. Plain JSON: a report can be re-rendered from a saved copy.

export interface ReportRecord {
  /** Route ("GET /expensive") or span label. */
  label: string;
  joules: number;
  /** Seconds since the sampler started, when the request or span ended. */
  t: number;
  durationMs: number;
}

/** The exact figures of one record label (`records` may hold only a sample of its records). */
export interface ReportRecordLabel {
  label: string;
  /** Records with this label, measured or not. */
  count: number;
  /** Of those, the ones with a measured energy (finite joules). */
  measured: number;
  /** Their measured joules, summed. */
  joules: number;
  /** Of the measured, the ones of 0 J exactly (off the chart's log axis). Absent where none were. */
  zero?: number;
  /**
   * Of the measured, the ones flagged incomplete (the sampler stopped while they were open, or
   * their start was seen too late): their joules undercount. Absent where none were.
   */
  incomplete?: number;
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
  /**
   * Seconds measured: from the first run's start (or, for a collector started over a polling
   * period into the run, from its first point) to the end, less the stretches between runs.
   */
  durationS: number;
  /** Seconds from the same start to the end, stretches between runs included; only where there were any. */
  elapsedS?: number;
  /** "package-0", "dram-0", ... */
  domains: string[];
  /** Start of the first interval (the collector's first poll), seconds since start; 0 if absent. */
  startS?: number;
  /** End of each interval, seconds since start. */
  time: number[];
  /**
   * Average watts over the measured part of each interval, per domain: watts[domain][interval].
   * NaN (null in JSON) for an interval in which nothing was measured (the sampler was stopped).
   */
  watts: number[][];
  /**
   * Seconds of each interval when the sampler was stopped between two runs: all of it for the
   * stretch between them (drawn as a break), part of it once a long run's merging folded a short
   * stretch into an interval. Absent where every interval was measured throughout.
   */
  unmeasuredS?: number[];
  /** Per-thread energy per interval (same intervals as `time`); empty without thread tracking. */
  threads: ReportThreadSeries[];
  /** Whether the run tracked threads (absent from reports saved before this field: then, whether `threads` has any). */
  threadsTracked?: boolean;
  /**
   * Seconds of the tracked threads' on-CPU time whose energy no read measured (their rows'
   * `unmeasuredNs`, summed over the report): not in `threads`' joules. Absent where there was none.
   */
  threadsUnmeasuredS?: number;
  /** CPU cores the tracked threads kept busy in each interval (same intervals as `time`); NaN where nothing was measured. */
  cpuCores: number[];
  /**
   * The records with a measured energy: all of them, or for a label with more than 2,048 (the
   * collector's bound), a uniform sample of 2,048; `recordLabels` has the exact figures.
   */
  records: ReportRecord[];
  /** Every label's exact figures; absent in reports saved before it: then `records` holds every record. */
  recordLabels?: ReportRecordLabel[];
  /** Records that ended in each interval of `time`, for the throughput; absent in reports saved before it. */
  recordCounts?: number[];
  recordKind: 'request' | 'span';
  /**
   * Where the primary domains' energy went. The collector sums sampler.attribution() over every
   * run it saw; `lastRunOf`, present where one was given to data() after several runs: it covers
   * the last of that many runs only (sampler.attribution() starts afresh at each start()).
   */
  attribution?: { total: number; process: number; baseline: number; other: number; domains: string[]; lastRunOf?: number };
  /** Rows of the summary table. */
  summary: Array<[string, string]>;
  notes: string[];
}
