// The Sampler: a native thread reading energy at a fixed cadence, exact totals, a zero-copy
// ring of samples, and (with thread tracking) energy attributed to this process's threads.
import { constants as bufferConstants } from 'node:buffer';
import * as fs from 'node:fs';
import * as os from 'node:os';
import {
  asJouletraceError,
  checkBoolean,
  checkIntegerInRange,
  checkNumberInRange,
  checkObject,
  checkOneOf,
  describe,
  invalidRange,
  invalidType,
  JouletraceError,
} from './errors';
import { registerHandle } from './native-handles';
import { native } from './native';
import { RECORD_HEADER_BYTES, RingReader, SampleFlags } from './ring-reader';
import { primaryDomain, type SkippedSource } from './sources';
import { checkLabel, SpanChannel, type SpanChannelOptions } from './span-channel';
import type { SpanLabelStats, SpanResult } from './span-types';
import { REPAIR_SWITCH_INS, type RepairSwitchIns, type ThreadTrackerStats } from './threads';
import { validateSourceOptions, type SourceOptions, type SourceName } from './source-options';

export type OverflowPolicy = 'drop-newest' | 'overwrite-oldest';
export type ThreadsBackend = 'bpf' | 'procfs' | 'off';

export interface SamplerOptions extends SourceOptions {
  /** Sampling period in microseconds, 50 to 1,000,000. Default 1000 (1 kHz). */
  intervalUs?: number;
  /**
   * Ring capacity in samples, a power of two from 2 to 2^24, or 0 for no ring (read() and
   * reader() then throw ERR_JOULETRACE_NO_RING; totals, attribution, spans and requests work as
   * with one). Default 65536.
   */
  ringCapacity?: number;
  /** Pin the sampler thread to this CPU. Default: not pinned. */
  cpu?: number;
  /** Run the sampler thread SCHED_FIFO at this priority (1–99; `true` = 10). Default false. */
  realtime?: boolean | number;
  /** What a full ring does with a new sample (none without a ring). Default 'drop-newest'. Totals are exact either way. */
  onOverflow?: OverflowPolicy;
  /**
   * Per-thread tracking for attribution: 'bpf' (sched_switch, needs CAP_BPF + CAP_PERFMON),
   * 'procfs' (/proc/<pid>/task/<tid>/schedstat) or 'off'. Default: 'bpf' when available, else
   * 'procfs' (stats().threads says why).
   */
  threads?: ThreadsBackend;
  /** Track another process's threads instead of this one's (needs privileges to read it). */
  pid?: number;
  /**
   * Also track the processes the tracked process forks once this Sampler is made (it opens its
   * thread tracker then), and their children (threads: 'bpf' only); those forked before are not
   * followed (their energy goes to `other`, uncounted in droppedThreads). Default false.
   */
  followChildren?: boolean;
  /**
   * threads: 'bpf' only. Whether to repair switch-ins the kernel does not report (see
   * stats().bpf.repairHook): 'auto' (default) attaches the repair once one has been seen in this
   * process, 'always' from the start, 'off' never.
   */
  repairSwitchIns?: RepairSwitchIns;
  /**
   * Threads tracked at once, 1 to 1048576 (eBPF: between two attribution steps). Default 4096.
   * Beyond, threads are counted in stats().threads.droppedThreads and their energy goes to `other`.
   */
  maxThreads?: number;
}

const SAMPLER_KEYS = [
  'intervalUs',
  'ringCapacity',
  'cpu',
  'realtime',
  'onOverflow',
  'threads',
  'pid',
  'followChildren',
  'repairSwitchIns',
  'maxThreads',
] as const;

export interface DomainDescription {
  domain: string;
  package: number;
  unitJoules: number;
  estimated: boolean;
  wrapJoules: number;
  /** Estimated sources: the idle part of the estimate in watts (the default baseline). */
  idleWatts?: number;
}

export interface DomainTotal {
  domain: string;
  package: number;
  joules: number;
  /** Exact cumulative count of the domain's energy unit (joules = ticks × unitJoules). */
  ticks: bigint;
  estimated: boolean;
  /**
   * The domain's latest read failed: its figures stand at its last good read's, and the energy
   * since comes with its next good read (stats().timing.byDomain counts the failed reads).
   */
  held: boolean;
}

export interface Totals {
  /** CLOCK_MONOTONIC ns of start(). */
  startNs: bigint;
  /** CLOCK_MONOTONIC ns of the sample the totals belong to. */
  timeNs: bigint;
  readings: DomainTotal[];
}

export interface SampleReading {
  domain: string;
  package: number;
  /** Joules since start(). */
  joules: number;
  /** Exact count of the domain's unit since start(). */
  ticks: number;
  /** The hardware counter's raw value. */
  raw: number;
  /**
   * Cumulative attribution in ticks, on samples where attribution ran (`attributed`):
   * process + baseline + other === ticks, exactly.
   */
  parts?: { process: number; baseline: number; other: number };
}

export interface Sample {
  timeNs: bigint;
  seq: number;
  flags: number;
  changed: boolean;
  readError: boolean;
  estimated: boolean;
  late: boolean;
  attributed: boolean;
  readings: SampleReading[];
}

export interface SamplerStats {
  /** The source in use, as `Sampler.source`. */
  source: Exclude<SourceName, 'auto'>;
  estimated: boolean;
  running: boolean;
  /**
   * Without a ring (ringCapacity: 0), capacity and every count are 0: nothing is written,
   * dropped or overwritten (timing.samples still counts the samples).
   */
  ring: {
    capacity: number;
    used: number;
    /** Records written into the ring (samples a full drop-newest ring refused are `dropped`). */
    written: number;
    read: number;
    dropped: number;
    overwritten: number;
    /** Bytes a record takes (also without a ring: what one would). */
    recordBytes: number;
    /** false when the runtime refused an external ArrayBuffer and records are copied (true without a ring). */
    zeroCopy: boolean;
  };
  timing: {
    samples: number;
    intervalUs: number;
    /** Samples per second of the run; null before its first sample (never started, or just started). */
    achievedRateHz: number | null;
    missedDeadlines: number;
    /** Samples whose read of the source failed (some domain kept its last value). */
    readErrors: number;
    /**
     * Of readErrors, those where a counter started again (a driver reloaded, a resume): the
     * energy from its last good read to the restart is lost. Other failures only delay it.
     */
    counterRestarts: number;
    /**
     * Per domain, in `sampler.domains` order: `readErrors`, the samples whose read failed for it
     * (its share of timing.readErrors; start()'s first read counts); `unread`, true while no read
     * of it has succeeded in this run: it counts from its first good read, so its totals read 0 J
     * until then (a domain summed from several counters, those of the counters that answered).
     */
    byDomain: Array<{ domain: string; package: number; readErrors: number; unread: boolean }>;
    /**
     * Wake-up lateness (actual − scheduled wake); null until the run's first timed sample (never
     * started, just started, or a run stopped before its first interval was up).
     */
    jitterUs: { p50: number; p99: number; p999: number; max: number; mean: number } | null;
    /** Median time between observed counter changes (about 1000 µs on real RAPL); null until seen. */
    hwUpdatePeriodUs: number | null;
    /**
     * How long no counter of the source has changed, up to the last sample, and the longest such
     * stretch of the run. Real RAPL counters move about every millisecond, idle or not: a stretch
     * of a second or more is energy the source did not count (it reads as 0 J), as when a
     * hypervisor stops updating them. Null before the run's first sample: nothing is known yet
     * (a 0 would read as counters that move).
     */
    countersStillUs: { now: number; longest: number } | null;
    /** CPU time used by the sampler thread, as a percentage of one core over the run; null before its first sample. */
    cpuPercent: number | null;
    samplerTid: number;
  };
  threads: {
    backend: ThreadsBackend;
    /** Why the requested or default backend was not used, when it was not. */
    fallbackReason: string | null;
    /** Samples between attribution steps (procfs runs every 10 ms at most). */
    attributionEvery: number;
    /**
     * Threads left untracked because every slot (`maxThreads`, 4096) was in use: their energy
     * went to `other`. Each counted once. 0 with threads: 'off'.
     */
    droppedThreads: number;
    /**
     * procfs: tracked threads whose figures a snapshot could not read, for a reason other than
     * their exit (the process out of file descriptors, EMFILE): their rows stood still until a
     * read succeeded, and one that exited unread lost what it ran since its last read (its energy
     * went to `other`). Each counted once. 0 with eBPF and threads: 'off'.
     */
    unreadThreads: number;
    /**
     * CPUs whose package could not be found when the sampler was made (neither their topology,
     * absent while a CPU is offline, nor their NUMA node's CPUs told it): their threads' time
     * counts as package 0's. Empty with threads: 'off', and wherever every CPU's package is known.
     */
    unknownPackageCpus: number[];
  };
  /**
   * settled: spans and shared-mode requests settled, of every thread of this sampler; callbacks:
   * exact-mode requests' callback spans settled (each tracker sums a request's into its record),
   * likewise. The rest, this thread's spans: not measured because the slots (droppedSpans) or the
   * event ring (droppedEvents, begins only) were full; ends that found the ring full and went in
   * beside it (lateEnds). unmeasuredCalls: measure() calls that ran their function unmeasured, the
   * sampler not running (since the last start(), so calls after a stop() count in the run before).
   */
  spans: { settled: number; callbacks: number; droppedSpans: number; droppedEvents: number; lateEnds: number; unmeasuredCalls: number };
  /**
   * Present when options.pid names another process. `watch`: how its exit is noticed, `'pidfd'`
   * (Linux 5.3+) or `'proc'` (its start time in /proc/<pid>/stat), `null` when it is not
   * (followChildren under eBPF, whose processes may outlive the first). `exited`: it exited, and the run
   * ended there (within 10 ms), its figures final.
   */
  target?: { pid: number; watch: 'pidfd' | 'proc' | null; exited: boolean };
  /** The eBPF tracker's state (present when threads: 'bpf' is in use). */
  bpf?: {
    /** The build of the eBPF program: `'task-storage'` (Linux >= 6.2 by default) or `'compat'`. */
    program: 'task-storage' | 'compat';
    /** Why that build was loaded. */
    programReason: string;
    attached: boolean;
    events: number;
    /** Average ns per sched_switch event; null unless kernel.bpf_stats_enabled=1. */
    avgNsPerEvent: number | null;
    slotsUsed: number;
    slotsMax: number;
    droppedThreads: number;
    /** Tracked threads found through a hash, not task storage: all with `compat` (keyed by task), normally 0 with `task-storage`. */
    hashRefs: number;
    /** Snapshot slot reads that gave up on a writer mid-update; the previous figures stood in. */
    busyReads: number;
    /**
     * Slots of exited threads that bpf() refused to hand back (privileges dropped on a kernel
     * before 5.19 with kernel.unprivileged_bpf_disabled): out of use for good; `note` says why.
     */
    lostSlots: number;
    /** sched_switch runs the kernel skipped because the program was already running on that CPU. */
    recursionMisses: number;
    /**
     * The repair of switch-ins the kernel did not report: "tp_btf/sched_stat_runtime" when
     * attached, "standby: ..." until one is seen (repairSwitchIns 'auto'), or "off: <why>".
     */
    repairHook: string;
    /**
     * What keeps thread names current: "tp_btf/task_rename", or "off: <why>" (a kernel without
     * that tracepoint, or that refused the program), where threads() reads each live thread's
     * name from /proc at every call.
     */
    renameHook: string;
    /**
     * Switch-ins the kernel did not report, found by the repair while the thread ran or at its
     * switch-out. Until found, that thread's figures stood still.
     */
    missedSwitchIns: number;
    /** Those the repair found while the thread ran (its figures lagged one tick at most). */
    repairedSwitchIns: number;
    note: string;
  };
}

export interface ThreadEnergy {
  /**
   * This row's number, unique for the sampler's life; 0 for "(exited threads)", where the oldest
   * exited threads are folded. A tid the kernel gives again to a later thread gets a new row and
   * id, while the exited thread's row stays: key increases between two reads by `id`, not `tid`.
   */
  id: number;
  tid: number;
  /** The process (thread group) the thread belongs to. */
  pid: number;
  /**
   * The thread's name (comm) as of the last attribution step; read from /proc at this call where
   * the eBPF tracker runs without its rename hook (stats().bpf.renameHook).
   */
  name: string;
  /** On-CPU time since start(). */
  onCpuNs: number;
  /** Joules of the primary domain set (package, else psys, else the source's domains). */
  joules: number;
  /** Joules per domain name, summed over packages. */
  byDomain: Record<string, number>;
  /**
   * Of `onCpuNs`, the time on the primary domains' CPUs whose energy was never measured, and which
   * `joules` therefore leave out: time held by failed reads of a domain that were still failing
   * when the run ended, or whose counter started again (its energy lost). Cumulative like the
   * other figures; 0 where every read succeeded. Time of failed reads that a later good read
   * covers is not in it: that read's energy is split over it.
   */
  unmeasuredNs: number;
  /** `unmeasuredNs` per domain name, summed over packages (as `byDomain`). */
  unmeasuredByDomain: Record<string, number>;
  estimated: boolean;
  exited: boolean;
}

export interface AttributionParts {
  total: number;
  process: number;
  baseline: number;
  other: number;
}

export interface Attribution extends AttributionParts {
  /**
   * When the run these figures cover began, as `totals().startNs`: 0n before the first start(),
   * when every figure is 0 because nothing has been measured yet (not because nothing ran).
   */
  startNs: bigint;
  /**
   * CLOCK_MONOTONIC ns of the attribution step these figures are as of (start()'s time until the
   * first). They move at steps only, every `stats().threads.attributionEvery` samples (later
   * where the sampler is starved), so a rate from two reads divides by the difference of these,
   * not of totals().timeNs.
   */
  timeNs: bigint;
  estimated: boolean;
  /** The domains the top-level figures cover. */
  domains: string[];
  /** Per domain and package, with exact integer ticks (process + baseline + other === total). */
  byDomain: Array<
    AttributionParts & {
      domain: string;
      package: number;
      baselineWatts: number | null;
      /**
       * Its read failed at that step: its energy since its last good read is held, not split
       * yet (its figures stand still), and comes with its next good read.
       */
      held: boolean;
      ticks: { total: bigint; process: bigint; baseline: bigint; other: bigint };
    }
  >;
}

export interface BaselineResult {
  /**
   * Idle watts per domain and package, as now used for attribution; `estimated` where the source
   * is (the model), whose idle watts are its own estimate, not a measurement.
   */
  watts: Array<{ domain: string; package: number; watts: number; estimated: boolean }>;
  durationMs: number;
}

interface NativeSamplerHandle {
  start(): void;
  stop(): void;
  close(): void;
  running(): boolean;
  info(): {
    source: string;
    domains: DomainDescription[];
    skipped: Array<SkippedSource & { available: boolean; domains: DomainDescription[]; notCounting: DomainDescription[] }>;
    notCounting: DomainDescription[];
    threadsBackend: string;
    threadsFallbackReason: string;
    unknownPackageCpus: number[];
    attributionEvery: number;
    spanEngineId: number;
    ringRecordBytes: number;
    targetWatch: '' | 'pidfd' | 'proc';
  };
  totals(): { ticks: bigint[]; held: boolean[]; timeNs: bigint; startNs: bigint };
  stats(): {
    ring: SamplerStats['ring'];
    targetExited: boolean;
    timing: Record<string, number>;
    /** Per domain, in domains order (see SamplerStats' timing.byDomain). */
    readErrorsByDomain: number[];
    unreadByDomain: boolean[];
    tracker?: ThreadTrackerStats;
  };
  ring(): { buffer: ArrayBuffer; zeroCopy: boolean; recordBytes: number; capacity: number; begun?: Float64Array };
  ringAcquire(ctl: Float64Array): void;
  ringRelease(from: number, to: number, torn?: number): number;
  /** timeNs: of the attribution step the rows are as of (see Attribution's timeNs). */
  threads(): {
    timeNs: bigint;
    held: boolean[];
    rows: Array<{ id: number; tid: number; tgid: number; name: string; onCpuNs: number; exited: boolean; ticks: number[]; unmeasuredNs: number[] }>;
  };
  attribution(): { timeNs: bigint; held: boolean[]; domains: Array<{ total: bigint; process: bigint; baseline: bigint; other: bigint; baselineWatts: number }> } | null;
  setBaselineWatts(watts: number[]): void;
}

const RING_CAPACITIES = '0 (no ring) or a power of two from 2 to 16777216';

function normalizeSamplerOptions(options: unknown): Record<string, unknown> {
  const opts = checkObject('options', options);
  const normalized: Record<string, unknown> = { ...validateSourceOptions(opts, 'options', SAMPLER_KEYS) };
  normalized.intervalUs =
    opts.intervalUs === undefined ? 1000 : checkNumberInRange('options.intervalUs', opts.intervalUs, 50, 1_000_000);
  if (opts.ringCapacity === undefined) normalized.ringCapacity = 65536;
  else {
    const cap = opts.ringCapacity;
    if (typeof cap !== 'number' || Number.isNaN(cap)) throw invalidType('options.ringCapacity', RING_CAPACITIES, cap);
    if (!(cap === 0 || (Number.isInteger(cap) && cap >= 2 && cap <= 2 ** 24 && (cap & (cap - 1)) === 0))) {
      throw invalidRange('options.ringCapacity', RING_CAPACITIES, cap);
    }
    normalized.ringCapacity = cap;
  }
  if (opts.cpu !== undefined) normalized.cpu = checkIntegerInRange('options.cpu', opts.cpu, 0, highestCpu());
  if (opts.realtime !== undefined && opts.realtime !== false) {
    normalized.realtimePriority =
      opts.realtime === true ? 10 : checkIntegerInRange('options.realtime', opts.realtime, 1, 99);
  }
  normalized.onOverflow =
    opts.onOverflow === undefined
      ? 'drop-newest'
      : checkOneOf('options.onOverflow', opts.onOverflow, ['drop-newest', 'overwrite-oldest'] as const);
  // Native 'auto' means bpf with a procfs fallback.
  normalized.threads =
    opts.threads === undefined ? 'auto' : checkOneOf('options.threads', opts.threads, ['bpf', 'procfs', 'off'] as const);
  if (opts.pid !== undefined) {
    if (typeof opts.pid !== 'number') throw invalidType('options.pid', 'a process id (positive integer)', opts.pid);
    normalized.pid = checkIntegerInRange('options.pid', opts.pid, 1, 2 ** 22);
    if (normalized.threads === 'off') {
      throw new TypeError("options.pid needs thread tracking, but options.threads is 'off'");
    }
  }
  if (opts.followChildren !== undefined) {
    normalized.followChildren = checkBoolean('options.followChildren', opts.followChildren);
    if (normalized.followChildren && normalized.threads !== 'bpf' && normalized.threads !== 'auto') {
      throw new TypeError("options.followChildren needs threads: 'bpf'");
    }
  }
  if (opts.maxThreads !== undefined) {
    normalized.maxThreads = checkIntegerInRange('options.maxThreads', opts.maxThreads, 1, 1_048_576);
    if (normalized.threads === 'off') throw new TypeError("options.maxThreads needs thread tracking, but options.threads is 'off'");
  }
  if (opts.repairSwitchIns !== undefined) {
    normalized.repairSwitchIns = checkOneOf('options.repairSwitchIns', opts.repairSwitchIns, REPAIR_SWITCH_INS);
    if (normalized.threads !== 'bpf' && normalized.threads !== 'auto') {
      throw new TypeError("options.repairSwitchIns needs threads: 'bpf'");
    }
  }
  return normalized;
}

// The highest CPU number this machine may have online ("0-63" in /sys/devices/system/cpu/possible).
// Counts of CPUs fall short of it when a lower-numbered CPU is offline; an offline or foreign CPU
// is then the native side's EINVAL at start(), which names it.
function highestCpu(): number {
  try {
    const last = Math.max(...fs.readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim().split(',').map((r) => Number(r.split('-').pop())));
    if (Number.isInteger(last) && last >= 0) return last;
  } catch {
    /* no sysfs: the counts below */
  }
  return Math.max(0, Math.max(os.availableParallelism(), os.cpus().length) - 1);
}

function noSpans(): JouletraceError {
  return new JouletraceError(
    'ERR_JOULETRACE_NO_THREADS',
    "spans need this process's threads tracked: create the Sampler with threads 'bpf' or 'procfs' and no pid option",
  );
}

// Once per process: measure() ran a function unmeasured (the sampler stopped or closed). Counted
// in stats().spans.unmeasuredCalls, which a closed sampler no longer gives.
let warnedUnmeasured = false;
function warnUnmeasured(label: string, closed: boolean): void {
  if (warnedUnmeasured) return;
  warnedUnmeasured = true;
  process.emitWarning(
    `measure(${JSON.stringify(label)}): the sampler is ${closed ? 'closed' : 'not running'}, so the function ran unmeasured; ${closed ? 'measure with a new Sampler' : 'call start() to measure'} (warned once; see stats().spans.unmeasuredCalls)`,
    { code: 'JOULETRACE_UNMEASURED' },
  );
}

// Started samplers, held until stop() or close(). The native sampler is freed when its JS object
// is collected: a sampler started and then referenced by nothing in JavaScript (its spans
// recorded from worker threads through spanContext(), or a server's module-level variable that
// no function uses) would otherwise stop at the next garbage collection, and every begin()
// after it throw ERR_JOULETRACE_CLOSED. Like a timer or a server, a running sampler runs until
// it is stopped; unlike them, it does not keep the process alive.
const RUNNING = new Set<Sampler>();

// How often JavaScript looks whether a sampler of another process ended its run by itself (the
// process exited): RUNNING holds it, and with it its tracker and eBPF program, until then.
const TARGET_RUN_CHECK_MS = 250;

/**
 * Samples an energy source on a native thread at a fixed cadence.
 *
 * ```ts
 * const sampler = new Sampler({ source: 'auto', intervalUs: 1000 });
 * sampler.start();
 * work();
 * sampler.stop();
 * console.log(sampler.totals());
 * ```
 */
export class Sampler {
  readonly #handle: NativeSamplerHandle;
  readonly #intervalUs: number;
  readonly #attributed: boolean;
  readonly #ctl = new Float64Array(2);
  #closed = false;
  #reader: RingReader | undefined;
  #geometry: { buffer: ArrayBuffer; recordBytes: number; capacity: number; begun?: Float64Array } | undefined;
  #u32: Uint32Array | undefined;
  #f64: Float64Array | undefined;
  /** The source in use ('msr', 'perf', 'powercap' or 'model'). */
  readonly source: Exclude<SourceName, 'auto'>;
  /** The domains sampled, in record order. */
  readonly domains: readonly DomainDescription[];
  /** Sources `auto` tried before this one, and why each was skipped. */
  readonly skipped: readonly SkippedSource[];
  /** Domains the source lists but left out as not counting (see `liveCheckMs`). Usually empty. */
  readonly notCounting: readonly DomainDescription[];
  readonly #primary: number[];
  readonly #overwriteOldest: boolean;
  readonly #hasRing: boolean;
  readonly #info: ReturnType<NativeSamplerHandle['info']>;
  #spans: SpanChannel | undefined;
  // The span channel's counts at this run's start: stats() gives the run's own.
  #spanCountsAtStart: [number, number, number, number] = [0, 0, 0, 0];
  #unmeasuredCalls = 0; // measure() calls whose fn ran unmeasured (see measure())
  // options.pid where it names another process.
  readonly #targetPid: number | undefined;

  constructor(options: SamplerOptions = {}) {
    const normalized = normalizeSamplerOptions(options);
    const NativeSampler = native().NativeSampler as new (o: Record<string, unknown>) => NativeSamplerHandle;
    try {
      // A ring is one ArrayBuffer for JavaScript: no larger than this Node's largest (2^32 bytes on
      // Node 20; 2^24 records of a two-package machine's 448 bytes are 7 GiB). Its record size
      // follows from the domains, which only opening the source tells: the native side refuses
      // one too large (a RangeError naming the largest here) before it maps the ring or loads the
      // tracker.
      this.#handle = new NativeSampler({ ...normalized, maxRingBytes: bufferConstants.MAX_LENGTH });
    } catch (e) {
      throw asJouletraceError(e);
    }
    registerHandle(this, this.#handle);
    this.#intervalUs = normalized.intervalUs as number;
    if (normalized.pid !== undefined && normalized.pid !== process.pid) this.#targetPid = normalized.pid as number;
    this.#overwriteOldest = normalized.onOverflow === 'overwrite-oldest';
    this.#hasRing = normalized.ringCapacity !== 0;
    this.#info = this.#handle.info();
    this.source = this.#info.source as Exclude<SourceName, 'auto'>;
    this.domains = Object.freeze(this.#info.domains.map((d) => Object.freeze({ ...d })));
    // As EnergySource.skipped: the native entry's `available` (false for a source skipped) and
    // its domains (none opened) say nothing more.
    this.skipped = Object.freeze(this.#info.skipped.map((s) => Object.freeze({ source: s.source, code: s.code, message: s.message })));
    this.notCounting = Object.freeze(this.#info.notCounting.map((d) => Object.freeze({ ...d })));
    this.#attributed = this.#info.threadsBackend !== 'off';
    const primaryName = primaryDomain(this.domains);
    this.#primary = this.domains.flatMap((d, i) => (d.domain === primaryName ? [i] : []));
    // The creating thread's span channel exists from the start, so that start() records its
    // first history point and a span begun right after start() settles complete.
    if (this.#info.spanEngineId) this.#spans = new SpanChannel(this.#info.spanEngineId);
  }

  #check(): void {
    if (this.#closed) throw new JouletraceError('ERR_JOULETRACE_CLOSED', 'the sampler is closed; create a new Sampler');
  }

  // Readers of totals() and threads() that must not lose a run's last figures (the exporters,
  // the report), which the next start() resets: called at the end of each run. A Set: each of
  // jouletrace's own readers subscribes a closure of its own, once.
  readonly #runEndListeners = new Set<() => void>();
  // The run calibrateBaseline() started on a stopped sampler, and the calibrations on it.
  #calibrationRun: { startNs: bigint; users: number } | null = null;
  // The run whose end the listeners were told of last (its startNs).
  #endedRun = 0n;

  /**
   * @internal Calls fn at the end of each run (stop(), close(), or the next start() where the
   * native sampler stopped by itself), while the run's final totals and threads can be read.
   * Returns the function that removes it.
   */
  onRunEnd(fn: () => void): () => void {
    this.#runEndListeners.add(fn);
    return () => {
      this.#runEndListeners.delete(fn);
    };
  }

  #runEnded(): void {
    const run = this.#handle.totals().startNs;
    if (run === 0n || run === this.#endedRun) return;
    this.#endedRun = run;
    // The listeners of when the run ended; one removed by another's call meanwhile is not called.
    for (const fn of [...this.#runEndListeners]) {
      if (!this.#runEndListeners.has(fn)) continue;
      try {
        fn();
      } catch {
        /* a reader's failure is its own; the run has ended all the same */
      }
    }
  }

  /** Starts sampling. Totals, the ring and statistics start afresh. */
  start(): this {
    this.#check();
    if (this.#handle.running()) {
      throw new JouletraceError('ERR_JOULETRACE_ALREADY_STARTED', 'start(): the sampler is already running; call stop() first');
    }
    this.#runEnded();
    this.#reader?.close();
    const spans = this.#spans;
    const counts: [number, number, number, number] = [spans?.droppedSpans ?? 0, spans?.droppedEvents ?? 0, spans?.lateEnds ?? 0, this.#unmeasuredCalls];
    try {
      this.#handle.start();
    } catch (e) {
      throw asJouletraceError(e);
    }
    this.#spanCountsAtStart = counts; // only once started: a start() that fails leaves the last run's
    RUNNING.add(this);
    if (this.#targetPid !== undefined && this.#info.targetWatch) {
      // Unref'd, like the sampler itself: it keeps no process alive.
      this.#targetRunCheck = setInterval(() => {
        if (!this.#closed && RUNNING.has(this) && !this.#handle.running()) this.#endTargetRun();
      }, TARGET_RUN_CHECK_MS).unref();
    }
    this.#spans?.startPolling();
    return this;
  }

  #targetRunCheck: NodeJS.Timeout | undefined;

  #leaveRunning(): void {
    RUNNING.delete(this);
    if (this.#targetRunCheck !== undefined) clearInterval(this.#targetRunCheck);
    this.#targetRunCheck = undefined;
  }

  /**
   * Stops sampling, joining the thread after one final sample. A sampler of another process
   * (options.pid) stops by itself when that process exits; stop() then returns as well.
   */
  stop(): this {
    this.#check();
    if (!this.#handle.running()) {
      if (this.#handle.stats().targetExited) return this.#endTargetRun();
      throw new JouletraceError('ERR_JOULETRACE_NOT_STARTED', 'stop(): the sampler is not running; call start() first');
    }
    // Results settled so far go to their listeners while the run is on (ends that found the event
    // ring full need no poll: the sampler thread takes them beside the ring, at the final step too).
    let stoppedHere = false;
    try {
      this.#spans?.poll();
    } finally {
      // An onSpan listener called by that poll may have stopped or closed this sampler: its
      // stop() did what is left here.
      if (!this.#closed && this.#handle.running()) {
        this.#handle.stop();
        this.#leaveRunning();
        stoppedHere = true;
      }
    }
    if (!stoppedHere) {
      // The process it tracks exited between the two checks: its run ended by itself.
      if (!this.#closed && RUNNING.has(this) && this.#handle.stats().targetExited) return this.#endTargetRun();
      return this;
    }
    // Told before the results below go out: an onSpan listener there may start the next run,
    // and this run's end would then go untold (the next one's told in its place, at 0 J).
    this.#runEnded();
    // Held here: an onSpan listener called by poll() may close this sampler.
    const spans = this.#spans;
    if (spans) {
      // The final step settled every span: deliver them now (poll() also fetches the results
      // that waited for room in the ring).
      spans.poll();
      spans.stopPollingIfIdle();
    }
    return this;
  }

  // A run the tracked process's exit ended: the thread ended by itself, and is joined here.
  #endTargetRun(): this {
    this.#handle.stop();
    this.#leaveRunning();
    this.#runEnded();
    return this;
  }

  get running(): boolean {
    return !this.#closed && this.#handle.running();
  }

  /** Stops the sampler if running (as stop() does: open spans settle) and releases native resources. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    // Stopped first, as stop() does: its final step settles the spans still open (incomplete),
    // requests in flight among them, which closing the channel first would leave unsettled.
    if (this.#handle.running()) {
      try {
        this.stop();
      } catch {
        /* closed all the same */
      }
      // A listener that stop() called closed it already.
      if (this.#closed) return;
    }
    // A run the native sampler ended by itself, not announced by stop().
    try {
      this.#runEnded();
    } catch {
      /* closed all the same */
    }
    // The reader hands its batch back while the ring can take it: its next() then reaches the
    // closed handle and throws at once, rather than return the rest of the batch first, and its
    // close() has nothing left to hand back (a try/finally around the loop keeps the error).
    try {
      this.#reader?.close();
    } catch {
      /* closed all the same */
    }
    this.#closed = true;
    this.#runEndListeners.clear();
    this.#leaveRunning(); // also where the native sampler had stopped by itself
    const spans = this.#spans;
    // Span calls then reach #check() and throw ERR_JOULETRACE_CLOSED.
    this.#spans = undefined;
    try {
      // Delivers the last results: an onSpan listener that throws must not keep the native
      // sampler (its thread, its eBPF program) alive.
      spans?.closeWithSampler();
    } finally {
      this.#handle.close();
    }
  }

  /** Exact cumulative energy per domain since start(), as of the latest sample. */
  totals(): Totals {
    this.#check();
    const t = this.#handle.totals();
    return {
      startNs: t.startNs,
      timeNs: t.timeNs,
      readings: this.domains.map((d, i) => ({
        domain: d.domain,
        package: d.package,
        joules: Number(t.ticks[i]) * d.unitJoules,
        ticks: t.ticks[i],
        estimated: d.estimated,
        held: t.held[i] === true,
      })),
    };
  }

  #ring(method: string): { buffer: ArrayBuffer; recordBytes: number; capacity: number; begun?: Float64Array } {
    if (!this.#hasRing) {
      throw new JouletraceError(
        'ERR_JOULETRACE_NO_RING',
        `${method}: this sampler was created with ringCapacity: 0 and keeps no samples; to read samples, create it with a ringCapacity that is a power of two from 2 to 16777216 (2^24)`,
      );
    }
    if (!this.#geometry) {
      this.#geometry = this.#handle.ring();
      this.#u32 = new Uint32Array(this.#geometry.buffer);
      this.#f64 = new Float64Array(this.#geometry.buffer);
    }
    return this.#geometry;
  }

  /** Samples not yet read, oldest first (at most `max`). */
  read(max = Infinity): Sample[] {
    this.#check();
    if (max !== Infinity) checkIntegerInRange('max', max, 0, 2 ** 32);
    const g = this.#ring('read()');
    this.#reader?.close();
    this.#handle.ringAcquire(this.#ctl);
    const start = this.#ctl[0];
    const n = Math.min(this.#ctl[1] - start, max);
    const out: Sample[] = new Array(n);
    const u32 = this.#u32!;
    const f64 = this.#f64!;
    const words = g.recordBytes / 4;
    const stride = this.#attributed ? 12 : 6;
    const mask = g.capacity - 1;
    for (let k = 0; k < n; k++) {
      const base = ((start + k) & mask) * words;
      const flags = u32[base + 3];
      const readings: SampleReading[] = new Array(this.domains.length);
      for (let d = 0; d < this.domains.length; d++) {
        const o = base + RECORD_HEADER_BYTES / 4 + d * stride;
        const reading: SampleReading = {
          domain: this.domains[d].domain,
          package: this.domains[d].package,
          joules: f64[o >> 1],
          ticks: u32[o + 2] + u32[o + 3] * 4294967296,
          raw: u32[o + 4] + u32[o + 5] * 4294967296,
        };
        if (flags & SampleFlags.ATTRIBUTED) {
          reading.parts = {
            process: u32[o + 6] + u32[o + 7] * 4294967296,
            baseline: u32[o + 8] + u32[o + 9] * 4294967296,
            other: u32[o + 10] + u32[o + 11] * 4294967296,
          };
        }
        readings[d] = reading;
      }
      out[k] = {
        timeNs: (BigInt(u32[base + 1]) << 32n) | BigInt(u32[base]),
        seq: u32[base + 2],
        flags,
        changed: (flags & SampleFlags.CHANGED) !== 0,
        readError: (flags & SampleFlags.READ_ERROR) !== 0,
        estimated: (flags & SampleFlags.ESTIMATED) !== 0,
        late: (flags & SampleFlags.LATE) !== 0,
        attributed: (flags & SampleFlags.ATTRIBUTED) !== 0,
        readings,
      };
    }
    const torn = this.#handle.ringRelease(start, start + n);
    // Under overwrite-oldest, a reader that stalled may have decoded records the producer was
    // overwriting: those are discarded rather than returned half-old, half-new.
    return torn > 0 ? out.slice(torn) : out;
  }

  /** An allocation-free cursor over unread samples, for hot consumers (see RingReader). */
  reader(): RingReader {
    this.#check();
    const g = this.#ring('reader()');
    this.#reader ??= new RingReader(this.#handle, {
      buffer: g.buffer,
      recordBytes: g.recordBytes,
      capacity: g.capacity,
      domainCount: this.domains.length,
      attributed: this.#attributed,
      overwriteOldest: this.#overwriteOldest,
      begun: g.begun,
    });
    return this.#reader;
  }

  /** Ring and timing statistics. */
  stats(): SamplerStats {
    this.#check();
    // The ring's buffer is made first: whether the runtime took it zero-copy is part of the stats.
    if (!this.#geometry && this.#hasRing) this.#ring('stats()');
    // What the reader has left goes back first: a record it left whole and the sampler has
    // lapped since counts as read, and stats() must not count it overwritten meanwhile.
    this.#reader?.flush();
    const s = this.#handle.stats();
    const t = s.timing;
    const runningS = t.runningNs / 1e9;
    const us = (ns: number) => ns / 1000;
    // Before the run's first sample (never started, or just started) the figures of its pace
    // are unknown, as hwUpdatePeriodUs is: zeros would read as a perfect sampler whose counters
    // move. Jitter comes from timed samples only (not stop()'s last one).
    const sampled = t.samples > 0;
    const stats: SamplerStats = {
      source: this.source,
      estimated: this.domains.some((d) => d.estimated),
      running: this.#handle.running(),
      ring: s.ring,
      timing: {
        samples: t.samples,
        intervalUs: this.#intervalUs,
        achievedRateHz: sampled && runningS > 0 ? t.samples / runningS : null,
        missedDeadlines: t.missedDeadlines,
        readErrors: t.readErrors,
        counterRestarts: t.counterRestarts,
        byDomain: this.domains.map((d, i) => ({
          domain: d.domain,
          package: d.package,
          readErrors: s.readErrorsByDomain[i],
          unread: s.unreadByDomain[i],
        })),
        jitterUs:
          t.jitterCount > 0
            ? { p50: us(t.jitterP50Ns), p99: us(t.jitterP99Ns), p999: us(t.jitterP999Ns), max: us(t.jitterMaxNs), mean: us(t.jitterMeanNs) }
            : null,
        hwUpdatePeriodUs: t.hwUpdateObservations > 0 ? us(t.hwUpdatePeriodNs) : null,
        countersStillUs: sampled ? { now: us(t.stillNs), longest: us(t.longestStillNs) } : null,
        cpuPercent: sampled && t.runningNs > 0 ? (100 * t.threadCpuNs) / t.runningNs : null,
        samplerTid: t.tid,
      },
      threads: {
        backend: this.#info.threadsBackend as ThreadsBackend,
        fallbackReason: this.#info.threadsFallbackReason || null,
        attributionEvery: this.#info.attributionEvery,
        droppedThreads: s.tracker?.droppedThreads ?? 0,
        unreadThreads: s.tracker?.unreadThreads ?? 0,
        unknownPackageCpus: this.#attributed ? [...this.#info.unknownPackageCpus] : [],
      },
      spans: {
        settled: t.spansSettled,
        callbacks: t.callbacksSettled,
        // This run's: the channel counts over its life.
        droppedSpans: (this.#spans?.droppedSpans ?? 0) - this.#spanCountsAtStart[0],
        droppedEvents: (this.#spans?.droppedEvents ?? 0) - this.#spanCountsAtStart[1],
        lateEnds: (this.#spans?.lateEnds ?? 0) - this.#spanCountsAtStart[2],
        unmeasuredCalls: this.#unmeasuredCalls - this.#spanCountsAtStart[3],
      },
    };
    if (this.#targetPid !== undefined) {
      stats.target = { pid: this.#targetPid, watch: this.#info.targetWatch || null, exited: s.targetExited };
    }
    if (s.tracker && s.tracker.backend === 'bpf') {
      // program, programReason, hashRefs, busyReads, lostSlots, repairHook, renameHook, missedSwitchIns
      // and repairedSwitchIns are set natively whenever the backend is bpf.
      stats.bpf = {
        program: s.tracker.program!,
        programReason: s.tracker.programReason!,
        attached: s.tracker.attached,
        events: s.tracker.events,
        avgNsPerEvent: s.tracker.runCount > 0 ? s.tracker.runTimeNs / s.tracker.runCount : null,
        slotsUsed: s.tracker.slotsUsed,
        slotsMax: s.tracker.slotsMax,
        droppedThreads: s.tracker.droppedThreads,
        hashRefs: s.tracker.hashRefs!,
        busyReads: s.tracker.busyReads!,
        lostSlots: s.tracker.lostSlots!,
        recursionMisses: s.tracker.recursionMisses,
        repairHook: s.tracker.repairHook!,
        renameHook: s.tracker.renameHook!,
        missedSwitchIns: s.tracker.missedSwitchIns!,
        repairedSwitchIns: s.tracker.repairedSwitchIns!,
        note: s.tracker.note,
      };
    }
    return stats;
  }

  #requireThreads(method: string): void {
    if (!this.#attributed) {
      throw new JouletraceError(
        'ERR_JOULETRACE_NO_THREADS',
        `${method}: thread tracking is off for this sampler; create it with threads: 'bpf' or 'procfs'`,
      );
    }
  }

  /** Energy attributed to each tracked thread since start(), highest first. */
  threads(): ThreadEnergy[] {
    return this.threadsAt().threads;
  }

  /**
   * @internal threads(), with what was true at the attribution step its rows are as of (taken
   * with them): its time, which rates over a refresh divide by (see Attribution's timeNs), and
   * whether a primary domain's intervals were held there (see Attribution's byDomain[].held).
   */
  threadsAt(): { timeNs: bigint; held: boolean; threads: ThreadEnergy[] } {
    this.#check();
    this.#requireThreads('threads()');
    const estimated = this.domains.some((d) => d.estimated);
    const { timeNs, held, rows } = this.#handle.threads();
    const threads = rows
      .map((t) => {
        const byDomain: Record<string, number> = {};
        const unmeasuredByDomain: Record<string, number> = {};
        let joules = 0;
        let unmeasuredNs = 0;
        this.domains.forEach((d, i) => {
          const j = t.ticks[i] * d.unitJoules;
          byDomain[d.domain] = (byDomain[d.domain] ?? 0) + j;
          unmeasuredByDomain[d.domain] = (unmeasuredByDomain[d.domain] ?? 0) + t.unmeasuredNs[i];
        });
        for (const i of this.#primary) {
          joules += t.ticks[i] * this.domains[i].unitJoules;
          unmeasuredNs += t.unmeasuredNs[i];
        }
        return { id: t.id, tid: t.tid, pid: t.tgid, name: t.name, onCpuNs: t.onCpuNs, joules, byDomain, unmeasuredNs, unmeasuredByDomain, estimated, exited: t.exited };
      })
      .sort((a, b) => b.joules - a.joules || a.tid - b.tid);
    return { timeNs, held: this.#primary.some((i) => held[i] === true), threads };
  }

  /**
   * Where the measured energy went since start(): this process, the baseline, and everything else.
   * Before the first start(), every figure is 0 and `startNs` is 0n (nothing measured yet).
   */
  attribution(): Attribution {
    this.#check();
    this.#requireThreads('attribution()');
    const got = this.#handle.attribution();
    const parts = got?.domains ?? [];
    // Read with the parts: only this thread's start() or stop() begins another run.
    const startNs = this.#handle.totals().startNs;
    const byDomain = parts.map((p, i) => {
      const d = this.domains[i];
      const j = (x: bigint) => Number(x) * d.unitJoules;
      return {
        domain: d.domain,
        package: d.package,
        total: j(p.total),
        process: j(p.process),
        baseline: j(p.baseline),
        other: j(p.other),
        baselineWatts: p.baselineWatts >= 0 ? p.baselineWatts : null,
        held: got?.held[i] === true,
        ticks: { total: p.total, process: p.process, baseline: p.baseline, other: p.other },
      };
    });
    const sum = (k: keyof AttributionParts) => this.#primary.reduce((acc, i) => acc + (byDomain[i]?.[k] ?? 0), 0);
    return {
      total: sum('total'),
      process: sum('process'),
      baseline: sum('baseline'),
      other: sum('other'),
      startNs,
      timeNs: got?.timeNs ?? 0n,
      estimated: this.domains.some((d) => d.estimated),
      domains: [...new Set(this.#primary.map((i) => this.domains[i].domain))],
      byDomain,
    };
  }

  /**
   * Sets idle power per domain name (e.g. `{ package: 12.5 }`, or `{ package: 12.5, dram: 1.1 }`
   * where the source has a dram domain; watts for each package) or per domain index (an array in
   * `domains` order). Attribution then gives idle watts × time to "baseline" before splitting the rest.
   */
  setBaseline(watts: Record<string, number> | number[]): void {
    this.#check();
    this.#requireThreads('setBaseline()');
    let list: number[];
    if (Array.isArray(watts)) {
      if (watts.length !== this.domains.length) {
        throw invalidRange('watts', `an array of ${this.domains.length} numbers (one per domain)`, watts);
      }
      // Indexed, not map(): map() skips a hole, which reached native unchecked and removed the
      // model source's default baseline.
      list = [];
      for (let i = 0; i < watts.length; i++) list.push(checkNumberInRange(`watts[${i}]`, watts[i], 0, 1e6));
    } else {
      // Each value is read once, and native gets the value checked: a getter or Proxy read again
      // could hand it Infinity or NaN.
      const checked = new Map<string, number>();
      for (const [k, v] of Object.entries(checkObject('watts', watts))) {
        if (!this.domains.some((d) => d.domain === k)) {
          // Said plainly: the model and AMD's counters have no dram, which an example with dram hit.
          const names = [...new Set(this.domains.map((d) => d.domain))];
          throw new RangeError(
            `setBaseline(): this source (${this.source}) has no ${JSON.stringify(k)} domain (it has: ${names.join(', ')}); give watts for those only, e.g. { ${names[0]}: 12 }`,
          );
        }
        checked.set(k, checkNumberInRange(`watts.${k}`, v, 0, 1e6));
      }
      list = this.domains.map((d) => checked.get(d.domain) ?? -1);
    }
    this.#handle.setBaselineWatts(list);
  }

  #channel(): SpanChannel {
    if (this.#spans) return this.#spans;
    this.#check();
    if (!this.#info.spanEngineId) throw noSpans();
    this.#spans = new SpanChannel(this.#info.spanEngineId);
    if (this.#handle.running()) this.#spans.startPolling();
    return this.#spans;
  }

  /**
   * Opens a span on the calling thread; returns a small-integer handle for end(). The hot
   * path: no system call, no atomic instruction, nothing allocated but the clock's own array.
   */
  begin(label: string): number {
    return (this.#spans ?? this.#channel()).begin(label);
  }

  /** Closes the span `h` (nested and overlapping spans are fine). */
  end(h: number): void {
    (this.#spans ?? this.#channel()).end(h);
  }

  /** The span's energy, once the sampler has seen the energy intervals covering it. */
  settle(h: number): Promise<SpanResult> {
    let channel: SpanChannel;
    try {
      channel = this.#channel();
    } catch (e) {
      return Promise.reject(e); // a closed sampler, or no thread tracking: as every settle() error
    }
    return channel.settle(h);
  }

  /**
   * Runs fn inside a span; returns fn's result (a promise for async functions). With the sampler
   * stopped or closed, fn runs all the same, unmeasured (counted in stats().spans.unmeasuredCalls,
   * and warned of once): the measurement's absence is no reason to skip the caller's work.
   */
  measure<T>(label: string, fn: () => T): T {
    if (typeof fn !== 'function') throw new TypeError(`Expected a function for measure(label, fn) but received ${String(fn)} of type ${typeof fn}`);
    const h = this.#beginMeasured(label);
    if (h < 0) return fn();
    let r: T;
    let thenable: boolean;
    try {
      r = fn();
      // Inside: a `then` getter (or a Proxy's get trap) may throw too, and the span must end.
      thenable = r !== null && (typeof r === 'object' || typeof r === 'function') && typeof (r as { then?: unknown }).then === 'function';
    } catch (e) {
      this.#endMeasured(h);
      throw e;
    }
    if (thenable) {
      // Adopted by a new Promise's resolve(): a thenable's then() may return nothing, or throw,
      // where a Promise's does neither, and its value or error comes as a Promise's would.
      // Promise.resolve() could throw here, with the span open: it reads a Promise's
      // constructor, and calls a Promise's own then() (either may be a throwing getter or own
      // property); resolve() reads `then` and calls it in a job of its own, errors rejecting.
      return new Promise<unknown>((resolve) => resolve(r)).then(
        (v) => {
          this.#endMeasured(h);
          return v;
        },
        (e: unknown) => {
          this.#endMeasured(h);
          throw e;
        },
      ) as T;
    }
    this.#endMeasured(h);
    return r;
  }

  // measure()'s begin(), or -1 where its fn is to run unmeasured: the sampler stopped or closed
  // (a state of the run, which a server stopping its sampler, or closing it as it shuts down, did
  // not mean to fail its work with; request tracking serves on likewise). What is the caller's own
  // mistake, and fails alike in every run, still throws: a bad label or fn, no thread tracking.
  #beginMeasured(label: string): number {
    if (!this.#info.spanEngineId) throw noSpans();
    if (!this.#closed) {
      const channel = this.#channel();
      if (channel.running) {
        try {
          return channel.begin(label);
        } catch (e) {
          // A context capture that stopped or closed the sampler in that begin().
          const code = (e as { code?: unknown })?.code;
          if (code !== 'ERR_JOULETRACE_NOT_STARTED' && code !== 'ERR_JOULETRACE_CLOSED') throw e;
        }
      }
    }
    checkLabel(label);
    this.#unmeasuredCalls++;
    warnUnmeasured(label, this.#closed);
    return -1;
  }

  // The function's outcome is the caller's: a sampler closed while it ran has nothing to end,
  // and must not turn a value into an error.
  #endMeasured(h: number): void {
    if (this.#closed) return;
    this.end(h);
  }

  /**
   * Calls fn() at every begin() on this thread and carries the result as the span's `context`
   * (the OpenTelemetry integration captures the active span). null removes it.
   */
  setContextCapture(fn: (() => unknown) | null): void {
    // Removing it is always allowed: exporters remove theirs as they close, whatever the order.
    if (fn === null && (this.#closed || this.#spans === undefined)) return;
    this.#check();
    if (fn !== null && typeof fn !== 'function') {
      throw new TypeError(`Expected a function or null for setContextCapture(fn) but received ${String(fn)} of type ${typeof fn}`);
    }
    if (!this.#info.spanEngineId) return;
    this.#channel().setContextCapture(fn);
  }

  /** @internal The capture in force (an exporter chains it: see chained-context.ts). */
  contextCapture(): (() => unknown) | null {
    return this.#spans?.contextCapture() ?? null;
  }

  /** Per-label statistics of settled spans on this thread. */
  spanStats(): SpanLabelStats[] {
    this.#check();
    return this.#spans ? this.#spans.spanStats() : [];
  }

  /** Settled spans of this thread, delivered in batches off the hot path. Returns an unsubscribe function. */
  onSpan(cb: (spans: SpanResult[]) => void): () => void {
    if (typeof cb !== 'function') throw new TypeError(`Expected a function for onSpan(callback) but received ${String(cb)} of type ${typeof cb}`);
    this.#check();
    // Without thread tracking no span can begin, so there is never anything to deliver.
    if (!this.#info.spanEngineId) return () => false;
    return this.#channel().onSpan(cb);
  }

  /**
   * What a worker thread needs to record spans into this sampler: pass it in workerData or a
   * message, then call attachSpans(context) in the worker.
   */
  spanContext(): SpanContext {
    this.#channel();
    return { samplerId: this.#info.spanEngineId, pid: process.pid };
  }

  /** @internal the calling thread's channel (request tracking builds on it). */
  spanChannel(): SpanChannel {
    return this.#channel();
  }

  /**
   * Measures idle power: keep the machine as quiet as you can for `durationMs`. The lowest
   * average power over windows of 100 ms or more (`durationMs` spread evenly over them, at least
   * two sampling intervals each) is kept per domain as the baseline: a minimum is robust to a
   * brief burst of activity, where a plain average is not. The result's `durationMs` is the time
   * it took, all of it in one run: as asked, give or take a late timer, or four sampling
   * intervals where that is longer. On a stopped sampler it runs one itself, which, as start()
   * does, begins a new run: a finished run's totals and records are gone afterwards; calibrations
   * meanwhile share it, and the last to end stops it. A run that ends before the calibration
   * does (stop(), or a new start()) rejects it.
   */
  async calibrateBaseline(options: { durationMs?: number } = {}): Promise<BaselineResult> {
    this.#check();
    this.#requireThreads('calibrateBaseline()');
    const opts = checkObject('options', options);
    const durationMs =
      opts.durationMs === undefined ? 2000 : checkIntegerInRange('options.durationMs', opts.durationMs, 200, 600_000);
    // On a stopped sampler, a run of its own; a second calibration meanwhile shares it, and the
    // run lasts until the last calibration on it ends (the first to end stopped it, and the
    // other was refused as if the user had stopped the sampler).
    if (!this.#handle.running()) {
      this.start();
      this.#calibrationRun = { startNs: this.#handle.totals().startNs, users: 0 };
    }
    const ownRun = this.#calibrationRun !== null && this.#calibrationRun.startNs === this.#handle.totals().startNs ? this.#calibrationRun : null;
    if (ownRun) ownRun.users++;
    // durationMs spread evenly over the windows, each 100 ms or more and at least two sampling
    // intervals long (so that it sees new samples), two windows at least: the run lasts
    // durationMs, or 4 intervals where that is longer. (Whole windows of 100 ms measured up to one
    // window less than asked: 299 ms took 200.)
    const minWindowMs = Math.max(100, (2 * this.#intervalUs) / 1000);
    const windows = Math.max(2, Math.floor(durationMs / minWindowMs));
    const windowMs = Math.max(durationMs / windows, minWindowMs);
    // Each domain's windows are taken together until they hold MIN_TICKS of its counter: a
    // window of a few ticks (psys in whole joules) reads its power ±1 tick, and the lowest of
    // such figures is biased low (25 W read as 19.8). A window in which a read of the domain failed
    // counts for nothing, nor does the stretch it ends (0 W from a device unreadable for a while):
    // each domain's own reads, so that a failing dram zone does not spoil the package's windows.
    const MIN_TICKS = 100;
    const best: number[] = this.domains.map(() => Infinity);
    const acc = this.domains.map(() => ({ ticks: 0, dt: 0 }));
    // Each domain's longest clean stretch that did not reach MIN_TICKS (an idle core plane).
    const longest = this.domains.map(() => ({ ticks: 0, dt: 0 }));
    const seen = this.domains.map(() => 0);
    // Each domain's windows in this run in which one of its reads failed.
    const failedWindows = this.domains.map(() => 0);
    let prev = this.#handle.totals();
    let prevErrors = this.#handle.stats().readErrorsByDomain;
    const ownStartNs = prev.startNs;
    const t0 = performance.now();
    const take = (i: number) => {
      const a = acc[i];
      const watts = (a.ticks * this.domains[i].unitJoules) / a.dt;
      if (a.dt > 0 && watts >= 0 && watts < best[i]) best[i] = watts;
      a.ticks = a.dt = 0;
    };
    let tookMs = 0;
    try {
      for (let w = 0; w < windows; w++) {
        // To deadlines from the start: late timers do not add up over the windows. Again where
        // one fired early (libuv's loop time lags the clock): never a window short.
        const deadline = t0 + (w + 1) * windowMs;
        for (let left; (left = deadline - performance.now()) > 0; ) await new Promise((r) => setTimeout(r, Math.ceil(left)));
        // Closed meanwhile: the same refusal as any call after close(), not the handle's.
        this.#check();
        const cur = this.#handle.totals();
        // The run ended meanwhile (stopped, or stopped and started again): the windows after its
        // end see no sample, and a baseline of what came before would be a few milliseconds'
        // power, not the lowest over the time asked for. Refused at once.
        if (!this.#handle.running() || cur.startNs !== ownStartNs) {
          const how = this.#handle.running() ? 'stopped and started again' : 'stopped';
          throw new JouletraceError(
            'ERR_JOULETRACE_NOT_STARTED',
            `calibrateBaseline(): the sampler was ${how} within the first ${Math.round(performance.now() - t0)} ms of a ${durationMs} ms calibration, ` +
              'so no baseline was set: keep it running until the calibration ends, and calibrate again',
          );
        }
        const errors = this.#handle.stats().readErrorsByDomain;
        const dt = Number(cur.timeNs - prev.timeNs) / 1e9;
        this.domains.forEach((_d, i) => {
          const failed = errors[i] !== prevErrors[i];
          if (failed) {
            failedWindows[i]++;
            if (acc[i].dt > longest[i].dt) longest[i] = { ...acc[i] };
            acc[i].ticks = acc[i].dt = 0;
            return;
          }
          if (dt <= 0) return;
          const ticks = Number(cur.ticks[i] - prev.ticks[i]);
          acc[i].ticks += ticks;
          acc[i].dt += dt;
          seen[i] += ticks;
          if (acc[i].ticks >= MIN_TICKS) take(i);
        });
        prev = cur;
        prevErrors = errors;
      }
      tookMs = Math.round(performance.now() - t0);
    } finally {
      // The last calibration on the run it started ends it, if that run still goes on.
      if (ownRun && --ownRun.users === 0) {
        if (this.#calibrationRun === ownRun) this.#calibrationRun = null;
        if (!this.#closed && this.#handle.running() && this.#handle.totals().startNs === ownRun.startNs) this.stop();
      }
    }
    // A domain that never reached MIN_TICKS in one stretch: its longest clean stretch.
    this.domains.forEach((_d, i) => {
      if (Number.isFinite(best[i])) return;
      if (longest[i].dt > acc[i].dt) acc[i] = longest[i];
      if (acc[i].dt > 0) take(i);
    });
    // Not a 0 W baseline said to be measured. A domain whose every window saw one of its reads
    // fail (a dram zone unreadable all along) is named, with what the others measured.
    const name = (i: number) => `${this.domains[i].domain}-${this.domains[i].package}`;
    const unmeasured = this.domains.flatMap((_d, i) => (!Number.isFinite(best[i]) && failedWindows[i] > 0 ? [i] : []));
    if (unmeasured.length > 0) {
      const measured = this.domains.flatMap((_d, i) => (Number.isFinite(best[i]) ? [`${name(i)} ${best[i].toPrecision(4)} W`] : []));
      throw new JouletraceError(
        'ERR_JOULETRACE_READ_FAILED',
        `calibrateBaseline(): ${unmeasured.map(name).join(', ')} had a failed read in every window of ${tookMs} ms ` +
          `(stats().timing.byDomain counts each domain's), so no baseline can be measured for ${unmeasured.length > 1 ? 'them' : 'it'}: ` +
          `calibrate again once ${unmeasured.length > 1 ? 'they read' : 'it reads'}, or set the baselines with setBaseline()` +
          (measured.length > 0 ? ` (the others measured ${measured.join(', ')})` : ''),
      );
    }
    if (best.some((w) => !Number.isFinite(w))) {
      // No sample at all in a run that lasted (windows are two intervals long at least): a
      // sampler thread held up throughout. Not a 0 W baseline either.
      throw new JouletraceError(
        'ERR_JOULETRACE_NOT_STARTED',
        `calibrateBaseline(): no sample arrived in the ${tookMs} ms of the calibration, so no baseline was set: calibrate again (stats() says whether samples are late)`,
      );
    }
    // The primary counters always draw power: one that never moved measured nothing.
    const still = this.#primary.filter((i) => seen[i] === 0).map(name);
    if (still.length > 0) {
      throw new JouletraceError(
        'ERR_JOULETRACE_NOT_COUNTING',
        `calibrateBaseline(): ${still.join(', ')} did not move in ${tookMs} ms, so no baseline can be measured from it (a VM that lists RAPL and does not count it): set one with setBaseline(), or use source 'model'`,
      );
    }
    const watts = best;
    this.#handle.setBaselineWatts(watts);
    return {
      watts: this.domains.map((d, i) => ({ domain: d.domain, package: d.package, watts: watts[i], estimated: d.estimated })),
      durationMs: tookMs,
    };
  }
}

/**
 * What attachSpans() takes: a sampler's id, issued per process, and the process it was issued in
 * (spans are in-process: a context sent to a child process names no sampler there).
 */
export interface SpanContext {
  samplerId: number;
  pid: number;
}

const SPAN_CONTEXT = "sampler.spanContext()'s result, passed unchanged (to a worker: as its workerData)";

/**
 * Records spans from a worker thread into a sampler created elsewhere in this process.
 *
 * ```ts
 * // main: new Worker(file, { workerData: sampler.spanContext() })
 * const spans = attachSpans(workerData);
 * const h = spans.begin('parse'); parse(); spans.end(h);
 * ```
 */
export function attachSpans(context: SpanContext, options?: SpanChannelOptions): SpanChannel {
  // The common mistakes (a Worker started without workerData, the context wrapped in an object
  // of the caller's, a Sampler) are missing a sampler id: say where one comes from.
  if (context === undefined) throw new TypeError(`Expected ${SPAN_CONTEXT} for context but received no context`);
  const ctx = checkObject('context', context);
  if (typeof ctx.spanContext === 'function') {
    throw new TypeError(`Expected ${SPAN_CONTEXT} for context but received a Sampler: pass its spanContext()`);
  }
  if (!Number.isInteger(ctx.samplerId)) {
    throw ctx.samplerId === undefined
      ? new TypeError(`Expected ${SPAN_CONTEXT} for context but received ${describe(context)}, which has no samplerId`)
      : invalidType('context.samplerId', "the sampler id that sampler.spanContext() puts there (pass its result unchanged)", ctx.samplerId);
  }
  const id = checkIntegerInRange('context.samplerId', ctx.samplerId, 1, Number.MAX_SAFE_INTEGER);
  // A context built by hand, or kept from before contexts carried their process: say where one comes from.
  if (ctx.pid === undefined) throw invalidType('context.pid', "the process id that sampler.spanContext() puts there (pass its result unchanged)", undefined);
  const pid = checkIntegerInRange('context.pid', ctx.pid, 1, Number.MAX_SAFE_INTEGER);
  // Sampler ids count from 1 in every process: another's would name whatever sampler has its id here.
  if (pid !== process.pid) {
    throw new JouletraceError(
      'ERR_JOULETRACE_FOREIGN_CONTEXT',
      `attachSpans(): the context is from process ${pid}, and this is process ${process.pid}: spans are in-process, so pass ` +
        "spanContext() to worker_threads only; a child process records its own spans with a Sampler of its own",
    );
  }
  return new SpanChannel(id, options);
}
