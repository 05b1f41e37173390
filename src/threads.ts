// Per-thread on-CPU time and per-CPU busy time, as the native trackers report them. The sampler
// consumes the trackers natively; this module types the addon's debugging surface.
import { native } from './native';
import { registerHandle } from './native-handles';
import {
  asJouletraceError,
  checkBoolean,
  checkIntegerInRange,
  checkKnownKeys,
  checkObject,
  checkOneOf,
  checkPath,
  invalidType,
} from './errors';

/** Whether the eBPF backend can run here, and if not, why and how to fix it. */
export interface BpfReadiness {
  /** BTF present, both capabilities effective, in the host's pid namespace. */
  ready: boolean;
  /** `/sys/kernel/btf/vmlinux` exists (CONFIG_DEBUG_INFO_BTF=y). */
  btf: boolean;
  /** Effective CAP_BPF, or CAP_SYS_ADMIN, in the initial user namespace: false when held only in
   * a user namespace of the process's own (a rootless container), where bpf() does not count it. */
  capBpf: boolean;
  /** Effective CAP_PERFMON, or CAP_SYS_ADMIN, likewise. */
  capPerfmon: boolean;
  /** Kernel release (`uname -r`). */
  kernel: string;
  /** Empty when ready; otherwise what is missing and the remedy. */
  reason: string;
}

export type ThreadBackend = 'bpf' | 'procfs';

export interface ThreadTrackerOptions {
  /** Default `'bpf'`. */
  backend?: ThreadBackend;
  /** Process to track. Default: this process. */
  pid?: number;
  /**
   * Also track the processes that tracked ones fork once the tracker is open (bpf only); those
   * forked before are not followed (their time is other tasks', uncounted in droppedThreads).
   * Default `false`.
   */
  followChildren?: boolean;
  /** Thread slots. Default `4096`. */
  maxThreads?: number;
  /** CPU number → package index (0..7). Default: sysfs topology. */
  cpuPackage?: number[];
  /** procfs backend only; for tests. Default `'/proc'`. */
  procRoot?: string;
  /**
   * bpf backend only: which build of the eBPF program to load. `'task-storage'` finds a tracked
   * thread's slot through task-local storage (loads on Linux >= 5.12, reliable from 6.2);
   * `'compat'` through a hash keyed by task, the address of its task_struct, not its tid, which an
   * exec from a thread other than the leader swaps (any kernel the backend supports, slower per event).
   * Default `'auto'`: task storage from Linux 6.2 on, else compat.
   */
  bpfProgram?: BpfProgram;
  /**
   * bpf backend only: whether to repair switch-ins the kernel does not report (see
   * `stats().repairHook`). `'auto'` (default) attaches the repair once one has been seen in
   * this process; `'always'` from the start; `'off'` never.
   */
  repairSwitchIns?: RepairSwitchIns;
}

export type BpfProgram = 'auto' | 'task-storage' | 'compat';
export const REPAIR_SWITCH_INS = ['auto', 'always', 'off'] as const;
export type RepairSwitchIns = (typeof REPAIR_SWITCH_INS)[number];

export interface CpuTimesResult {
  /** Cumulative ns a non-idle task ran on this CPU. */
  busyNs: number;
  /** Cumulative ns the idle task ran. */
  idleNs: number;
}

export interface ThreadTimesResult {
  tid: number;
  tgid: number;
  /** Stable while the thread lives; reused by a later thread. */
  slot: number;
  /** Distinguishes successive threads in one slot. */
  generation: number;
  /** Cumulative on-CPU ns since tracking began, including a running stint. */
  onCpuNs: number;
  /** `onCpuNs` split by package (8 entries). */
  pkgNs: number[];
  /** Thread name (comm), at most 15 bytes, as of this snapshot. */
  name: string;
  /** Final figures: the thread exited and is not reported again. */
  exited: boolean;
}

export interface ThreadSnapshot {
  /** CLOCK_MONOTONIC ns when taken. */
  timeNs: bigint;
  /** Indexed by CPU number. */
  cpus: CpuTimesResult[];
  threads: ThreadTimesResult[];
}

export interface ThreadTrackerStats {
  backend: ThreadBackend;
  /** bpf only: the build of the eBPF program that runs. */
  program?: Exclude<BpfProgram, 'auto'>;
  /** bpf only: why that build (requested, or why task storage could not load). */
  programReason?: string;
  /**
   * bpf only: tracked threads found through a hash rather than task storage. Every tracked
   * thread with the compat build (its hash keyed by task); normally 0 with the task-storage build,
   * whose threads without storage (io_uring and vhost workers) go in a hash keyed by tid.
   */
  hashRefs?: number;
  /**
   * bpf only: snapshot reads of a slot that gave up because its writer stayed mid-update (on a
   * VM, a vCPU descheduled inside the program); the previous figures stood in for that read.
   */
  busyReads?: number;
  /**
   * bpf only: slots of exited threads that bpf() refused to hand back, out of use for good: where
   * the kernel refuses bpf() once privileges are dropped (before Linux 5.19, with
   * kernel.unprivileged_bpf_disabled). Past `maxThreads` of them, new threads go untracked.
   */
  lostSlots?: number;
  /**
   * bpf only: the repair of switch-ins the kernel did not report: "tp_btf/sched_stat_runtime"
   * when attached, "standby: ..." until one is seen (repairSwitchIns 'auto'), or "off: <why>".
   */
  repairHook?: string;
  /**
   * bpf only: the hook that keeps thread names current, "tp_btf/task_rename", or "off: <why>"
   * (a kernel without that tracepoint, or that refused the program): `snapshot()` then reads each
   * live thread's name from /proc.
   */
  renameHook?: string;
  /** bpf only: switch-ins the kernel did not report, found by the repair or at the switch-out. */
  missedSwitchIns?: number;
  /** bpf only: those the repair found while the thread ran. */
  repairedSwitchIns?: number;
  /** bpf only: the repair program's run time and runs, as runTimeNs/runCount below. */
  repairRunTimeNs?: number;
  repairRunCount?: number;
  attached: boolean;
  /** sched_switch events handled (bpf) or snapshots taken (procfs). */
  events: number;
  /** bpf_prog_info run_time_ns; counts only while sysctl kernel.bpf_stats_enabled=1. */
  runTimeNs: number;
  runCount: number;
  slotsUsed: number;
  slotsMax: number;
  /** Threads not tracked because every slot was in use. */
  droppedThreads: number;
  /**
   * procfs only: threads whose figures a snapshot could not read, for a reason other than their
   * exit (the process out of file descriptors): their rows stood still until a read succeeded.
   * Each counted once.
   */
  unreadThreads?: number;
  /** Program runs the kernel skipped (recursion on a CPU): each is a context switch not seen. */
  recursionMisses: number;
  note: string;
}

/** An open tracker: `snapshot()`, `stats()`, `close()` (safe twice). */
export interface ThreadTracker {
  snapshot(): ThreadSnapshot;
  stats(): ThreadTrackerStats;
  close(): void;
}

// The addon's tracker behind a class of ours, so that its refusals (closed, a snapshot read that
// failed) are JouletraceErrors, as every other entry point's are.
class OpenThreadTracker implements ThreadTracker {
  readonly #native: ThreadTracker;

  constructor(tracker: ThreadTracker) {
    this.#native = tracker;
    registerHandle(this, tracker);
  }

  snapshot(): ThreadSnapshot {
    try {
      return this.#native.snapshot();
    } catch (e) {
      throw asJouletraceError(e);
    }
  }

  stats(): ThreadTrackerStats {
    try {
      return this.#native.stats();
    } catch (e) {
      throw asJouletraceError(e);
    }
  }

  close(): void {
    this.#native.close();
  }
}

const KNOWN = ['backend', 'pid', 'followChildren', 'maxThreads', 'cpuPackage', 'procRoot', 'bpfProgram', 'repairSwitchIns'] as const;

/** Checks options and opens a tracker; throws a coded Error when the backend cannot run. */
export function openThreadTracker(options?: ThreadTrackerOptions): ThreadTracker {
  const o = checkObject('options', options);
  checkKnownKeys('options', o, KNOWN);
  const opts: Record<string, unknown> = {
    backend: o.backend === undefined ? 'bpf' : checkOneOf('options.backend', o.backend, ['bpf', 'procfs'] as const),
  };
  if (o.pid !== undefined) opts.pid = checkIntegerInRange('options.pid', o.pid, 1, 4194304);
  if (o.followChildren !== undefined) opts.followChildren = checkBoolean('options.followChildren', o.followChildren);
  if (o.maxThreads !== undefined) opts.maxThreads = checkIntegerInRange('options.maxThreads', o.maxThreads, 1, 1048576);
  if (o.procRoot !== undefined) opts.procRoot = checkPath('options.procRoot', o.procRoot);
  if (o.bpfProgram !== undefined) {
    opts.bpfProgram = checkOneOf('options.bpfProgram', o.bpfProgram, ['auto', 'task-storage', 'compat'] as const);
  }
  if (o.repairSwitchIns !== undefined) {
    opts.repairSwitchIns = checkOneOf('options.repairSwitchIns', o.repairSwitchIns, REPAIR_SWITCH_INS);
  }
  if (o.cpuPackage !== undefined) {
    if (!Array.isArray(o.cpuPackage)) throw invalidType('options.cpuPackage', 'an array of integers', o.cpuPackage);
    opts.cpuPackage = o.cpuPackage.map((p, i) => checkIntegerInRange(`options.cpuPackage[${i}]`, p, 0, 7));
  }
  // An option the chosen backend would ignore is a mistake worth naming, not a silent no-op.
  if (opts.backend === 'procfs') {
    for (const k of ['followChildren', 'bpfProgram', 'repairSwitchIns'] as const) {
      if (opts[k] !== undefined && opts[k] !== false) throw new TypeError(`options.${k} needs backend: 'bpf' (it was 'procfs')`);
    }
  } else if (opts.procRoot !== undefined) {
    throw new TypeError("options.procRoot needs backend: 'procfs' (it was 'bpf')");
  }
  let tracker: ThreadTracker;
  try {
    tracker = new (native().ThreadTracker)(opts) as ThreadTracker;
  } catch (e) {
    throw asJouletraceError(e);
  }
  return new OpenThreadTracker(tracker);
}

/** Whether the eBPF thread tracker can load here; loads nothing. */
export function bpfReadiness(): BpfReadiness {
  return native().bpfReadiness() as BpfReadiness;
}
