// eBPF backend: loads bpf/thread_tracker.bpf.c from the embedded skeleton, attaches it, and
// snapshots its mmapped slot arrays with no system call (seqcount reads).
#include <bpf/bpf.h>
#include <dirent.h>
#include <bpf/libbpf.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>

#include "errno_name.h"
#include "napi_util.h"
#include "thread_tracker.h"
#include "thread_tracker.skel.h"
#include "thread_tracker_compat.skel.h"
#include "target_process.h"
#include "tracker.h"
#include "sys_file.h"

namespace jouletrace {

namespace {

constexpr const char* kBtfPath = "/sys/kernel/btf/vmlinux";
constexpr int kCapSysAdmin = 21;
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

static_assert(JT_MAX_PACKAGES == kMaxPackages, "bpf/thread_tracker.h and cpu_packages.h disagree");
static_assert(JT_COMM_LEN == kCommLen, "bpf/thread_tracker.h and tracker.h disagree");
static_assert(sizeof(jt_thread_slot) % 8 == 0, "array map values are laid out on 8-byte strides");
static_assert(sizeof(jt_cpu_slot) % 8 == 0, "array map values are laid out on 8-byte strides");

// libbpf prints through one process-wide callback. While a tracker is being opened its warnings
// are collected here, to end up in the error message instead of on the application's stderr.
std::mutex gPrintMutex;
std::string* gPrintSink = nullptr;

// A refused program's verifier log comes in one message (up to megabytes) with the reason in its
// last lines: a message longer than kPrintKeep keeps its first line, which names the program,
// and its last kPrintKeep bytes. The sink takes messages until it holds kSinkMax.
constexpr size_t kPrintKeep = 16384;
constexpr size_t kSinkMax = 65536;

int capturePrint(enum libbpf_print_level level, const char* fmt, va_list ap) {
  if (level == LIBBPF_DEBUG || !gPrintSink || gPrintSink->size() >= kSinkMax) return 0;
  va_list sizing;
  va_copy(sizing, ap);
  const int n = vsnprintf(nullptr, 0, fmt, sizing);
  va_end(sizing);
  if (n <= 0) return 0;
  std::string text(size_t(n) + 1, '\0');
  vsnprintf(&text[0], text.size(), fmt, ap);
  text.resize(size_t(n));
  if (text.size() > kPrintKeep) {
    const size_t head = std::min(text.find('\n'), text.size() - kPrintKeep);
    size_t tail = text.find('\n', text.size() - kPrintKeep);
    tail = tail == std::string::npos ? text.size() - kPrintKeep : tail + 1;
    text = text.substr(0, head) + "\n[... " + std::to_string(tail - head) + " bytes left out ...]\n" + text.substr(tail);
  }
  gPrintSink->append(text);
  return 0;
}

// libbpf's markers around a refused program's verifier log, printed after "prog 'NAME': ".
constexpr const char* kVerifierLogBegin = "-- BEGIN PROG LOAD LOG --";
constexpr const char* kVerifierLogEnd = "-- END PROG LOAD LOG --";
constexpr int kVerifierLines = 20;

// Whether the captured log holds a verifier refusal: the refused program's name and the log's
// last kVerifierLines lines (the verifier says why at the end).
bool verifierRefusal(const std::string& log, std::string* program, std::string* lastLines) {
  const size_t begin = log.find(kVerifierLogBegin);
  if (begin == std::string::npos) return false;
  const size_t newline = log.rfind('\n', begin);
  const size_t name = log.find("prog '", newline == std::string::npos ? 0 : newline + 1);
  if (name != std::string::npos && name < begin) {
    const size_t nameEnd = log.find('\'', name + 6);
    if (nameEnd != std::string::npos && nameEnd < begin) *program = log.substr(name + 6, nameEnd - name - 6);
  }
  const size_t bodyStart = std::min(log.size(), begin + strlen(kVerifierLogBegin) + 1);
  const size_t end = std::min(log.find(kVerifierLogEnd, bodyStart), log.size());
  std::vector<std::string> lines;
  for (size_t at = bodyStart; at < end;) {
    size_t nl = std::min(log.find('\n', at), end);
    if (nl > at) lines.push_back(log.substr(at, nl - at));
    at = nl + 1;
  }
  const size_t from = lines.size() > size_t(kVerifierLines) ? lines.size() - kVerifierLines : 0;
  lastLines->clear();
  for (size_t i = from; i < lines.size(); i++) *lastLines += (i > from ? "\n" : "") + lines[i];
  return true;
}

// The verifier gives up with EAGAIN when a signal is pending on the loading thread, and a
// profiled Node process gets one every millisecond (V8's --cpu-prof sends SIGPROF to the JS
// thread); libbpf's five retries all fail then. Signals stay blocked for the load only: they
// are delivered, late, when it returns.
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    blocked_ = pthread_sigmask(SIG_BLOCK, &all, &old_) == 0;
  }
  ~SignalsBlocked() {
    if (blocked_) pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t old_;
  bool blocked_ = false;
};

class PrintCapture {
 public:
  explicit PrintCapture(std::string* sink) : lock_(gPrintMutex) {
    gPrintSink = sink;
    prev_ = libbpf_set_print(capturePrint);
  }
  ~PrintCapture() {
    libbpf_set_print(prev_);
    gPrintSink = nullptr;
  }

 private:
  std::lock_guard<std::mutex> lock_;
  libbpf_print_fn_t prev_;
};

// The two builds of bpf/thread_tracker.bpf.c share every name the loader touches; these traits
// are all that differs between their skeletons. refHash: the hash that threads are found through
// when not through task storage (thread_tracker.bpf.c's ref_hash), keyed by RefKey.
struct TaskStorageBuild {
  using Skel = thread_tracker;
  using RefKey = uint32_t;  // tid
  static constexpr const char* kName = "task-storage";
  static constexpr bool kTaskStorage = true;
  static bpf_map* refHash(Skel* s) { return s->maps.tid_slot; }
  static Skel* open() { return thread_tracker__open(); }
  static int load(Skel* s) { return thread_tracker__load(s); }
  static int attach(Skel* s) { return thread_tracker__attach(s); }
  static void destroy(Skel* s) { thread_tracker__destroy(s); }
};
struct CompatBuild {
  using Skel = thread_tracker_compat;
  using RefKey = uint64_t;  // the task's address
  static constexpr const char* kName = "compat";
  static constexpr bool kTaskStorage = false;
  static bpf_map* refHash(Skel* s) { return s->maps.task_refs; }
  static Skel* open() { return thread_tracker_compat__open(); }
  static int load(Skel* s) { return thread_tracker_compat__load(s); }
  static int attach(Skel* s) { return thread_tracker_compat__attach(s); }
  static void destroy(Skel* s) { thread_tracker_compat__destroy(s); }
};

template <typename Build>
struct SkelDeleter {
  void operator()(typename Build::Skel* s) const { Build::destroy(s); }
};

class Mapping {
 public:
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr_) munmap(addr_, len_);
  }
  // Read-only: nothing in this process may write what the BPF program owns.
  int map(int fd, size_t bytes) {
    long page = sysconf(_SC_PAGESIZE);
    len_ = (bytes + size_t(page) - 1) / size_t(page) * size_t(page);
    void* p = mmap(nullptr, len_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return -errno;
    addr_ = p;
    return 0;
  }
  const void* get() const { return addr_; }

 private:
  void* addr_ = nullptr;
  size_t len_ = 0;
};

// Copies a seqcount-protected slot. False when the writer kept it busy for every try (the
// caller then keeps the previous figures; the next snapshot catches up).
template <typename Slot>
bool readSlot(const Slot* src, Slot* dst) {
  for (int attempt = 0; attempt < 64; attempt++) {
    uint32_t s1 = __atomic_load_n(&src->seq, __ATOMIC_ACQUIRE);
    if (s1 & 1) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      continue;
    }
    memcpy(static_cast<void*>(dst), static_cast<const void*>(src), sizeof(Slot));
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&src->seq, __ATOMIC_RELAXED) == s1) return true;
  }
  return false;
}

// Runs an iter/ program over every task once, to completion.
int runIterator(bpf_program* prog) {
  bpf_link* link = bpf_program__attach_iter(prog, nullptr);
  if (!link) return -errno;
  int e = 0;
  int fd = bpf_iter_create(bpf_link__fd(link));
  if (fd < 0) {
    e = -errno;
  } else {
    char buf[64];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
    }
    if (n < 0) e = -errno;
    close(fd);
  }
  bpf_link__destroy(link);
  return e;
}

// Calls f with each key of a hash map, at most cap of them: a key deleted mid-walk restarts it
// from the first key.
template <typename Key, typename F>
void forEachKey(int fd, uint64_t cap, F f) {
  Key key, next;
  const Key* prev = nullptr;
  for (uint64_t n = 0; n < cap && bpf_map_get_next_key(fd, prev, &next) == 0; n++) {
    key = next;
    prev = &key;
    f(key);
  }
}

bool hasCap(const __user_cap_data_struct (&data)[2], int cap) {
  return (data[cap / 32].effective >> (cap % 32)) & 1u;
}

// Whether a kernel release string ("6.8.0-45-generic") says Linux >= major.minor; nullopt when it
// does not parse.
std::optional<bool> releaseAtLeast(const char* release, int major, int minor) {
  int ma = 0, mi = 0;
  if (sscanf(release, "%d.%d", &ma, &mi) != 2) return std::nullopt;
  return ma > major || (ma == major && mi >= minor);
}

// Linux >= major.minor, from the running kernel's release string.
bool kernelAtLeast(int major, int minor) {
  utsname u;
  if (uname(&u) != 0) return false;
  return releaseAtLeast(u.release, major, minor).value_or(false);
}

std::string missingCaps(const BpfReadiness& r) {
  std::string m;
  if (!r.capBpf) m = "CAP_BPF";
  if (!r.capPerfmon) m += m.empty() ? "CAP_PERFMON" : ", CAP_PERFMON";
  return m;
}

// libbpf counts the possible CPUs; the CPU table and map are indexed by CPU number, which
// passes the count where the list has gaps. Negative: -errno.
int possibleCpuCount() {
  const int n = libbpf_num_possible_cpus();
  return n <= 0 ? n : std::max(n, possibleCpuIds("/sys/devices/system/cpu"));
}

// The program's CPU → package table is sized at build time (bpf/thread_tracker.h).
std::string tooManyCpusMessage(int ncpu, const std::string& procfsOption) {
  return "jouletrace: the eBPF thread tracker supports at most " + std::to_string(JT_MAX_CPUS) +
         " possible CPUs, and this machine has " + std::to_string(ncpu) +
         " (/sys/devices/system/cpu/possible; a VM's count includes its CPU hot-plug slots, which the "
         "kernel's possible_cpus= or nr_cpus= boot option lowers). Use " + procfsOption + " instead.";
}

std::string privilegeMessage(const BpfReadiness& r, const std::string& procfsOption) {
  if (!r.userNs.empty()) {
    return "jouletrace: the eBPF thread tracker needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) in the "
           "initial user namespace; this process holds them only in a user namespace of its own "
           "(/proc/self/ns/user is " + r.userNs + ": a rootless container, or `unshare -U`), where bpf() "
           "does not count them. Run it in the host's user namespace (as root, or in a container without "
           "a user namespace of its own, given CAP_BPF and CAP_PERFMON), or use " + procfsOption + ".";
  }
  const std::string missing = missingCaps(r);
  // Root without them: dropped (a container's default set, a unit's bounding set), and running
  // as root is what it already does.
  if (geteuid() == 0) {
    return "jouletrace: the eBPF thread tracker needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); this process runs as "
           "root but lacks " + missing + ": they were dropped from its capabilities (a container's defaults, a systemd "
           "unit's CapabilityBoundingSet=, capsh --drop). Grant them (docker or podman run --cap-add BPF --cap-add PERFMON, "
           "or --cap-add SYS_ADMIN before Linux 5.8; in a systemd unit, CAP_BPF CAP_PERFMON in CapabilityBoundingSet= and, "
           "for a User= other than root, AmbientCapabilities=), or use " + procfsOption + ".";
  }
  return "jouletrace: the eBPF thread tracker needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)" +
         (missing.empty() ? std::string() : "; this process lacks " + missing) +
         ". Run as root, or grant them: to this service alone, in its systemd unit (AmbientCapabilities=CAP_BPF "
         "CAP_PERFMON beside its User=); or to the binary this process runs (the file itself: not a symlink or a "
         "version manager's shim), `sudo setcap cap_bpf,cap_perfmon+ep " + runningBinary() + "` (Linux >= 5.8), which every "
         "program run with it then holds (a copy kept for this service narrows that); or use " + procfsOption + ".";
}

// From Linux 5.11 BPF memory is charged to the memory cgroup, no longer to RLIMIT_MEMLOCK: advice
// to raise that limit (libbpf's too) only misleads there.
bool memlockCharged() { return !kernelAtLeast(5, 11); }

// What may refuse a bpf() call with errno e where the capabilities are there, and the remedies,
// ending with procfs. Every errno gets one: an ENOSYS from a seccomp filter had none, and no word
// of procfs.
std::string bpfRefusalRemedy(int e, const std::string& procfsOption) {
  utsname u;
  const std::string kernel = uname(&u) == 0 ? u.release : "?";
  const std::string memlock = "Before Linux 5.11 (running " + kernel + ") BPF maps count against RLIMIT_MEMLOCK: raise it "
                              "(`ulimit -l unlimited`, or LimitMEMLOCK=infinity in a systemd unit). ";
  const std::string seccomp = "a seccomp filter (a container's default profile, a systemd unit's SystemCallFilter=: allow "
                              "bpf in it, or run the container with --security-opt seccomp=unconfined)";
  const std::string otherwise = "Otherwise use " + procfsOption + ".";
  switch (e) {
    case EPERM:
    case EACCES:
    {
      const std::string others = seccomp + ", an LSM (SELinux's bpf permissions, AppArmor, a BPF LSM program) or kernel "
                                 "lockdown (/sys/kernel/security/lockdown)";
      return ", though this process has CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN). " +
             (memlockCharged() ? memlock + "Or something other than capabilities refused bpf(): "
                               : std::string("Something other than capabilities refused bpf(): ")) +
             others + ". " + otherwise;
    }
    case ENOSYS:
      return ": bpf() is not there for this process: " + seccomp +
             " answers it so, or the kernel was built without CONFIG_BPF_SYSCALL. " + otherwise;
    case ENOMEM:
      return ". " + (memlockCharged() ? memlock
                                      : std::string("BPF maps count against the memory cgroup's limit (Linux >= 5.11): raise "
                                                    "the container's or unit's memory limit (MemoryMax=), or lower maxThreads. ")) +
             otherwise;
    default:
      return ". Where it keeps failing on this kernel (" + kernel + "), please report it with this message; meanwhile use " +
             procfsOption + ".";
  }
}

// libbpf's log as shown: from Linux 5.11 without its RLIMIT_MEMLOCK advice, which it gives
// wherever its probes fail (a seccomp filter's ENOSYS too), and which that kernel ignores.
std::string shownLibbpfLog(std::string log) {
  while (!log.empty() && log.back() == '\n') log.pop_back();
  if (memlockCharged() || log.find("RLIMIT_MEMLOCK") == std::string::npos) return log;
  std::string out;
  bool cut = false;
  for (size_t pos = 0; pos <= log.size();) {
    size_t eol = log.find('\n', pos);
    if (eol == std::string::npos) eol = log.size();
    std::string line = log.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.find("RLIMIT_MEMLOCK") != std::string::npos) {
      cut = true;
      const size_t advice = line.find(" Couldn't load trivial BPF program.");
      if (advice == std::string::npos || advice == 0) continue;  // "Failed to bump RLIMIT_MEMLOCK"
      line.resize(advice);
    }
    out += (out.empty() ? "" : "\n") + line;
  }
  if (cut) out += "\n(libbpf's RLIMIT_MEMLOCK advice left out: from Linux 5.11 the memory cgroup counts BPF memory)";
  return out;
}

// bpf() asked for a one-entry array map, closed at once: 0, or the errno of a refusal. With the
// capabilities there, one comes from what looks at every bpf() call (a seccomp filter, an LSM),
// which bpfReadiness() cannot see otherwise. No program is loaded and nothing stays: a few
// microseconds.
int probeBpfSyscall() {
  const int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, nullptr, 4, 4, 1, nullptr);
  if (fd < 0) return errno ? errno : EPERM;
  close(fd);
  return 0;
}

// /proc has no number for this process (foreignProcRefusal()), in the host's pid namespace.
std::string foreignProcBpfMessage(const std::string& why) {
  return "jouletrace: the eBPF tracker lists the tracked process's threads in /proc, but " + why + ".";
}

std::string probeRefusalMessage(int e, const std::string& procfsOption) {
  return "jouletrace: bpf() refused to create a one-entry array map (" + std::string(strerror(e)) + ")" +
         bpfRefusalRemedy(e, procfsOption);
}

// Whether a thread listed while seeding has made, or is about to make, its last switch. tgkill()
// says ESRCH from the moment a thread is unhashed. A zombie stays hashed, so tgkill() accepts it:
// a main thread that called pthread_exit() stays one while its process lives, and a whole process
// stays one until it is reaped. For those the state says it ('Z', set by exit_notify(), like the
// unhashing a little before the last switch). A thread of another user's gets EPERM, not ESRCH,
// where this process lacks CAP_KILL (least privilege: CAP_BPF and CAP_PERFMON only): whether it
// lives or is a zombie, the state says that too.
bool threadEnded(uint32_t tgid, uint32_t tid) {
  if (syscall(SYS_tgkill, pid_t(tgid), pid_t(tid), 0) != 0 && errno != EPERM) return errno == ESRCH;
  std::string text;
  const std::string path = "/proc/" + std::to_string(tgid) + "/task/" + std::to_string(tid) + "/stat";
  if (int e = readSmallFile(path, &text)) return e == -ENOENT || e == -ESRCH;  // reaped meanwhile
  const char* state = procStatField(text.c_str(), 3);
  return state && (*state == 'Z' || *state == 'X');
}

// This process's CLOCK_MONOTONIC less the kernel's, which bpf_ktime_get_ns() reads whatever
// time namespace the caller is in (Linux 5.6; `unshare --time`, a container restored from a
// checkpoint with CRIU). The program's timestamps are the kernel's; snapshots' timeNs, the
// sampler's and the spans' are this process's. 0 without the file (before 5.6, or
// CONFIG_TIME_NS=n) or its monotonic line. The file shows the namespace of the process's
// children, which is its own except between an unshare(CLONE_NEWTIME) and the next exec: not a
// state a Node process gets into by itself.
int64_t monotonicOffsetNs() {
  std::string text;
  if (readSmallFile("/proc/self/timens_offsets", &text) != 0) return 0;
  for (size_t at = 0; at < text.size();) {
    size_t nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    long long sec = 0;
    long nsec = 0;
    if (sscanf(text.c_str() + at, "monotonic %lld %ld", &sec, &nsec) == 2) return int64_t(sec) * 1'000'000'000 + nsec;
    at = nl + 1;
  }
  return 0;
}

// Set once any tracker in this process has seen a switch-in the kernel did not report: the
// machine loses them, so trackers opened after attach the repair at once.
std::atomic<bool> gSwitchInsLost{false};

template <typename Build>
class BpfTracker final : public ThreadTracker {
 public:
  const char* backend() const override { return "bpf"; }

  // `why` says why this build was chosen, for stats(); the open itself needs no explanation.
  int open(const TrackerOptions& opts, const std::string& why, TrackerError* err);
  int snapshot(TrackerSnapshot& snap) override;
  int referenceSnapshot(TrackerSnapshot& snap) override;
  void stats(TrackerStats& out) override;
  int forgetSwitchIn(uint32_t tid, bool asSeeded, uint64_t cpuSinceNs) override;
  int closeAsEnded(uint32_t tid) override;
  bool namesFresh() const override { return renameAttached_.load(std::memory_order_relaxed); }
  int dropRenameHook() override;
  // The kernel refused the program itself (as opposed to a later step): another build may load.
  bool loadFailed() const { return loadFailed_; }
  // What failed, in the words of the error's first line, without the remedies: where another
  // build loads, its programReason.
  const std::string& failure() const { return failure_; }

 private:
  int fail(TrackerError* err, int e, const std::string& what, const std::string& log);
  int seedThreads(uint32_t tgid, uint64_t attachTs);
  // The optional programs to load: each one the kernel refuses is left out of the next try.
  struct Optional {
    bool repair = true;  // handle_runtime
    bool rename = true;  // handle_rename
  };
  int openOnce(const TrackerOptions& opts, const std::string& why, TrackerError* err, Optional* with);
  static constexpr int kRetryWithout = 1;
  bool configureRepairHook(bool withRepair);
  bool configureRenameHook(bool withRename);
  void retireVanishedSeeds(uint32_t tgid);
  bool closeSlot(uint32_t tid, uint32_t idx);

  void attachRepair();

  bool loadFailed_ = false;
  std::string failure_;
  // monotonicOffsetNs() as of open: kernelNs() is the program's clock, monotonicNs() the process's.
  int64_t clockOffsetNs_ = 0;
  uint64_t kernelNs() const { return monotonicNs() - uint64_t(clockOffsetNs_); }
  // handle_runtime. With repairSwitchIns "auto" it is loaded at open and attached by snapshot()
  // once the switch-out path has counted a switch-in the kernel did not report: it runs at every
  // scheduler accounting call on the machine, so it stays detached where nothing is lost.
  // repairOff_ is set during open, before the tracker is shared; the state is read by stats().
  enum RepairState : int { kRepairOff, kRepairStandby, kRepairAttached, kRepairAttachFailed };
  std::atomic<int> repairState_{kRepairOff};
  std::atomic<int> repairErrno_{0};
  std::string repairOff_;
  std::string repairSwitchIns_;
  // handle_rename, attached at open where the kernel has it; renameOff_ says why not. Both are
  // written on the JS thread only (open, dropRenameHook); renameAttached_ is atomic because
  // namesFresh() may be asked from any thread.
  std::atomic<bool> renameAttached_{false};
  std::string renameOff_;
  // Slot reads that gave up because the writer stayed mid-update (a vCPU descheduled inside the
  // program, on a VM): the slot's previous figures stood in. Read by stats() on another thread.
  std::atomic<uint64_t> busyReads_{0};
  // Slots of exited threads that bpf() refused to hand back (snapshot()), and its last errno.
  std::atomic<uint64_t> lostSlots_{0};
  std::atomic<int> lostSlotErrno_{0};
  // Until when snapshot() waits for a busy slot (referenceSnapshot()); 0: it does not, and the
  // next snapshot catches up.
  uint64_t patientUntilNs_ = 0;
  static constexpr uint64_t kReferenceWaitNs = 10'000'000;
  template <typename Slot>
  bool readFresh(const Slot* src, Slot* dst) const;
  std::vector<std::pair<uint32_t, uint32_t>> seeded_;  // (tid, slot) given out before attach

  std::unique_ptr<typename Build::Skel, SkelDeleter<Build>> skel_;
  std::string why_;
  std::string procfsOption_;  // TrackerOptions::procfsOption, for fail()'s advice
  Mapping threadMap_;
  Mapping cpuMap_;
  const jt_thread_slot* slots_ = nullptr;
  const jt_cpu_slot* cpuSlots_ = nullptr;
  uint32_t maxThreads_ = 0;
  int ncpu_ = 0;
  int freeFd_ = -1;
  std::vector<int> cpuPkg_;
  // Per slot: the generation already reported as exited and handed back (skip until reused),
  // and the last figures reported for the current generation (results never go down).
  std::vector<uint64_t> freedGen_;
  std::vector<uint64_t> lastGen_;
  std::vector<ThreadTimes> last_;
  std::vector<CpuTimes> lastCpu_;
  std::vector<uint8_t> unswitched_;  // per CPU, this snapshot: no timed switch since attach
  // The seeded stints (see seedThreads): on_since == seedTs_ until the thread's first switch.
  uint64_t seedTs_ = 0;
  struct RunRead {
    uint64_t runNs = 0;  // a thread's schedstat run time
    uint64_t atNs = 0;   // monotonicNs() once it was read; 0: never
  };
  std::vector<uint8_t> seedIdle_;     // per slot: its seeded stint was found not running
  std::vector<uint64_t> seedLookNs_;  // per slot: when /proc was last read for it
  std::vector<RunRead> seedLast_;     // per slot: the last read that found its run time moved
  std::vector<RunRead> seedAtSeed_;   // per slot: as seeded
  bool seededStintRunning(uint32_t slot, const jt_thread_slot& t, uint64_t now);
};

template <typename Build>
int BpfTracker<Build>::fail(TrackerError* err, int e, const std::string& what, const std::string& log) {
  if (e < 0) e = -e;
  std::string program, lastLines;
  if (err && verifierRefusal(log, &program, &lastLines)) {
    // The verifier refuses with EACCES or EINVAL as its checks go: no privilege is missing, and
    // libbpf's lines around the log add nothing to its last ones.
    utsname u;
    const std::string kernel = uname(&u) == 0 ? u.release : "?";
    err->code = "ERR_JOULETRACE_BPF_VERIFIER";
    const std::string refused = "jouletrace: " + what + " failed: the kernel's BPF verifier refused program '" +
                                (program.empty() ? std::string("?") : program) + "' of the " + Build::kName + " build (" +
                                strerror(e) + ")";
    // Kernel lockdown (integrity or confidentiality), or an LSM's lockdown hook, takes
    // bpf_probe_read_kernel*() from tracing programs: the verifier then refuses a call to it as
    // to a helper it does not know, with no privilege missing but through no bug either.
    if (lastLines.find("cannot use helper") != std::string::npos || lastLines.find("unknown func") != std::string::npos) {
      std::string lockdown;
      readSmallFile("/sys/kernel/security/lockdown", &lockdown);
      while (!lockdown.empty() && (lockdown.back() == '\n' || lockdown.back() == ' ')) lockdown.pop_back();
      err->message = refused + " because the kernel withholds a helper it calls, which kernel lockdown" +
                     (lockdown.empty() ? std::string("") : " (/sys/kernel/security/lockdown: " + lockdown + ")") +
                     " or an LSM's lockdown policy does for reading kernel memory. Boot with lockdown=none or allow "
                     "the LSM's lockdown permission, or use " + procfsOption_ + ".\nThe verifier's last lines:\n" + lastLines;
      failure_ = err->message.substr(0, err->message.find('\n'));
      return -e;
    }
    // The first line alone says what failed: it is the compat build's programReason in 'auto'.
    err->message = refused + ".\nNo privilege is missing: the verifier of Linux " + kernel + " does not accept the "
                   "program as built, a jouletrace bug or a kernel it was not tested on; please report it with this "
                   "message and the kernel version. Meanwhile " +
                   (Build::kTaskStorage ? "the compat build (openThreadTracker's bpfProgram 'compat') may load, or use "
                                        : "use ") +
                   procfsOption_ + ".\nThe verifier's last lines:\n" + lastLines;
    failure_ = refused + ".";
    return -e;
  }
  if (err) {
    err->code = errnoName(e);
    failure_ = "jouletrace: " + what + " failed: " + strerror(e);
    err->message = failure_ + bpfRefusalRemedy(e, procfsOption_);
    // libbpf's own lines carry its "libbpf: " prefix already; a verifier log's do not.
    if (const std::string l = shownLibbpfLog(log); !l.empty()) err->message += "\nlibbpf's log:\n" + l;
  }
  return -e;
}

// Gives the tracked process's existing threads their slots before the program runs, so one
// that is on a CPU at attach is visible (and credited from attach on) before its first switch.
// A thread seen runnable is assumed on-CPU since attach; if it was only waiting, its switch-in
// restarts the stint. One whose state changes before attach is covered on the BPF side: a
// switch-out with no recorded switch-in is credited from attach.
template <typename Build>
int BpfTracker<Build>::seedThreads(uint32_t tgid, uint64_t attachTs) {
  std::string dir = "/proc/" + std::to_string(tgid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return -errno;
  const int tidFd = bpf_map__fd(skel_->maps.tid_slot);
  const int slotFd = bpf_map__fd(skel_->maps.threads);
  uint32_t hw = 0;
  int e = 0;
  while (dirent* ent = readdir(d)) {
    if (ent->d_name[0] < '0' || ent->d_name[0] > '9') continue;
    jt_thread_slot v;
    memset(&v, 0, sizeof v);
    v.tid = uint32_t(strtoul(ent->d_name, nullptr, 10));
    v.tgid = tgid;
    v.generation = 1;
    std::string text;
    if (readSmallFile(dir + "/" + ent->d_name + "/stat", &text) != 0) continue;  // already gone
    const char* state = procStatField(text.c_str(), 3);
    if (!state || *state == '\0') continue;
    if (*state == 'R') v.on_since = attachTs;
    uint64_t runNs = 0;
    std::string sched;
    if (*state == 'R' && readSmallFile(dir + "/" + ent->d_name + "/schedstat", &sched) == 0) runNs = strtoull(sched.c_str(), nullptr, 10);
    if (const char* processor = procStatField(text.c_str(), 39)) v.cpu = uint32_t(strtoul(processor, nullptr, 10));
    const std::string comm = procThreadComm(tgid, v.tid);
    memcpy(v.comm, comm.data(), std::min(comm.size(), sizeof v.comm - 1));
    uint32_t idx;
    if (bpf_map_lookup_and_delete_elem(freeFd_, nullptr, &idx) != 0) break;  // full: counted later
    jt_task_ref ref = {idx + 1, 0, v.generation};
    e = bpf_map_update_elem(tidFd, &v.tid, &ref, BPF_NOEXIST);
    if (!e) e = bpf_map_update_elem(slotFd, &idx, &v, BPF_ANY);
    if (e) break;
    seeded_.push_back({v.tid, idx});
    if (seedAtSeed_.size() < maxThreads_) seedAtSeed_.assign(maxThreads_, RunRead());
    if (idx < seedAtSeed_.size()) seedAtSeed_[idx] = {runNs, monotonicNs()};
    hw = std::max(hw, idx + 1);
  }
  closedir(d);
  if (e) return e;
  // Nothing runs yet, so CPU 0's slot can carry the scan bound for the seeded slots.
  jt_cpu_slot c;
  memset(&c, 0, sizeof c);
  c.slot_hw = hw;
  uint32_t zero = 0;
  return bpf_map_update_elem(bpf_map__fd(skel_->maps.cpus), &zero, &c, BPF_ANY);
}

// A thread listed before attach that exited before attach made its last switch unseen: its slot
// would stay "running" forever. Now that every later switch is seen, each seeded thread that has
// ended (threadEnded: gone, or a zombie, which was listed too) is closed here, crediting nothing
// after the listing. Either sign comes a little before the thread's last switch: the slot is
// written back only if its sequence count has not moved since it was read (the program's write of
// that switch wins), which leaves a window of one compare rather than of the whole
// read-modify-write. A last switch that comes after the close finds the slot closed (exited, or
// handed to another thread since: a new generation) and lets go of it (slot_closed in the
// program): it neither credits the slot's next owner nor counts as an unreported switch-in.
template <typename Build>
void BpfTracker<Build>::retireVanishedSeeds(uint32_t tgid) {
  std::vector<uint32_t> retired;  // as refs name them: slot + 1
  for (const auto& [tid, idx] : seeded_) {
    if (threadEnded(tgid, tid) && closeSlot(tid, idx)) retired.push_back(idx + 1);
  }
  seeded_.clear();
  if constexpr (!Build::kTaskStorage) {
    // seed_refs gave each listed thread a ref keyed by its task's address, which only the
    // thread's final switch removes: one that ended before attach left its ref pointing at the
    // slot just closed, for a task whose address a new thread may take. Found by that slot (no
    // live ref points at a slot not yet given back).
    if (retired.empty()) return;
    const int refFd = bpf_map__fd(Build::refHash(skel_.get()));
    std::vector<uint64_t> stale;
    forEachKey<uint64_t>(refFd, uint64_t(maxThreads_) * 2, [&](uint64_t k) {
      jt_task_ref ref;
      if (bpf_map_lookup_elem(refFd, &k, &ref) == 0 && std::find(retired.begin(), retired.end(), ref.slot) != retired.end()) {
        stale.push_back(k);
      }
    });
    for (uint64_t k : stale) bpf_map_delete_elem(refFd, &k);
  }
}

// Marks thread tid's slot idx exited, with no stint running, unless the program wrote it
// meanwhile. True when closed.
template <typename Build>
bool BpfTracker<Build>::closeSlot(uint32_t tid, uint32_t idx) {
  const int slotFd = bpf_map__fd(skel_->maps.threads);
  jt_thread_slot v;
  uint32_t key = idx;
  if (bpf_map_lookup_elem(slotFd, &key, &v) != 0 || v.exited || v.tid != tid || (v.seq & 1)) return false;
  v.on_since = 0;
  v.exited = 1;
  if (__atomic_load_n(&slots_[idx].seq, __ATOMIC_ACQUIRE) != v.seq) return false;
  bpf_map_update_elem(slotFd, &key, &v, BPF_EXIST);
  uint32_t t = tid;
  bpf_map_delete_elem(bpf_map__fd(skel_->maps.tid_slot), &t);
  return true;
}

// Test hook: closes a live thread's slot as retireVanishedSeeds closes one it judged ended, for
// the state of the race where that judgement comes before the thread's last switch. The compat
// build's ref to the slot is left as it is between the close and its removal above (the
// task-storage build's, in the task's storage, is out of the loader's reach anyway).
template <typename Build>
int BpfTracker<Build>::closeAsEnded(uint32_t tid) {
  if (!skel_) return -EBADF;
  for (uint32_t s = 0; s < maxThreads_; s++) {
    if (__atomic_load_n(&slots_[s].tid, __ATOMIC_RELAXED) == tid && closeSlot(tid, s)) return 0;
  }
  return -ESRCH;
}

template <typename Build>
int BpfTracker<Build>::dropRenameHook() {
  if (!skel_) return -EBADF;
  if (!renameAttached_.load()) return -ENOENT;
  renameAttached_.store(false);
  bpf_link__destroy(skel_->links.handle_rename);
  skel_->links.handle_rename = nullptr;
  renameOff_ = "off: dropped by a test";
  return 0;
}

template <typename Build>
int BpfTracker<Build>::open(const TrackerOptions& opts, const std::string& why, TrackerError* err) {
  Optional with;
  int e;
  while ((e = openOnce(opts, why, err, &with)) == kRetryWithout) {
  }
  return e;
}

// handle_runtime repairs switch-ins the kernel did not report. It is optional: a kernel without
// the sched_stat_runtime tracepoint, or one that refuses the program, gets the tracker without it.
template <typename Build>
bool BpfTracker<Build>::configureRepairHook(bool withRepair) {
  bpf_program* prog = skel_->progs.handle_runtime;
  bpf_program__set_autoattach(prog, false);
  // Without withRepair, repairOff_ already says why the first try failed.
  if (withRepair && repairSwitchIns_ == "off") {
    repairOff_ = "off: repairSwitchIns is 'off'";
  } else if (withRepair) {
    if (bpf_program__set_attach_target(prog, 0, "sched_stat_runtime") == 0) return true;
    repairOff_ = "off: the kernel has no sched_stat_runtime tracepoint in its BTF";
  }
  bpf_program__set_autoload(prog, false);
  return false;
}

// handle_rename keeps the slots' names current. Optional too: without it (a kernel without the
// task_rename tracepoint, or one that refuses or fails to attach the program), the callers read
// names from /proc (namesFresh()).
template <typename Build>
bool BpfTracker<Build>::configureRenameHook(bool withRename) {
  bpf_program* prog = skel_->progs.handle_rename;
  bpf_program__set_autoattach(prog, false);  // attached before seed_refs runs (openOnce)
  if (withRename) {
    if (bpf_program__set_attach_target(prog, 0, "task_rename") == 0) return true;
    renameOff_ = "off: the kernel has no task_rename tracepoint in its BTF";
  }
  bpf_program__set_autoload(prog, false);
  return false;
}

template <typename Build>
int BpfTracker<Build>::openOnce(const TrackerOptions& opts, const std::string& why, TrackerError* err,
                                Optional* with) {
  why_ = why;
  procfsOption_ = opts.procfsOption;
  repairSwitchIns_ = opts.repairSwitchIns;
#if !defined(__x86_64__)
  // The slots' seqcounts order their stores with compiler barriers only (thread_tracker.bpf.c),
  // which x86-64's store order makes enough; elsewhere a snapshot could take a torn slot.
  if (err) {
    err->code = "ERR_JOULETRACE_UNSUPPORTED_ARCH";
    err->message = "jouletrace: the eBPF thread tracker needs x86-64 (its lock-free slots rely on x86-64 store ordering). Use " + opts.procfsOption + " instead.";
  }
  return -EOPNOTSUPP;
#endif
  BpfReadiness ready = bpfReadiness();
  if (!ready.btf) {
    if (err) {
      err->code = "ERR_JOULETRACE_NO_BTF";
      err->message = "jouletrace: kernel has no BTF (" + std::string(kBtfPath) +
                     "); needs CONFIG_DEBUG_INFO_BTF=y, Linux >= 5.8 (running " + ready.kernel +
                     "). Use " + opts.procfsOption + " instead.";
    }
    return -ENOENT;
  }
  if (!ready.capBpf || !ready.capPerfmon) {
    if (err) {
      err->code = "EPERM";
      err->message = privilegeMessage(ready, opts.procfsOption);
    }
    return -EPERM;
  }

  int tgid = opts.pid > 0 ? opts.pid : int(getpid());
  if (opts.pid > 0 && kill(opts.pid, 0) != 0 && errno == ESRCH) {
    if (err) {
      err->code = "ESRCH";
      err->message = "jouletrace: no process with pid " + std::to_string(opts.pid) + " to track";
    }
    return -ESRCH;
  }
  if (int rc = checkInitialPidNamespace(opts.procfsOption, opts.pid, err)) return rc;
  // In the host's pid namespace, a /proc of another's (a container's, mounted over it) has no
  // number for this process, nor the host's for others: seeding lists the threads there.
  if (const std::string why = foreignProcRefusal(procPidView(), 0); !why.empty()) {
    if (err) {
      err->code = "ERR_JOULETRACE_PROC_NAMESPACE";
      err->message = foreignProcBpfMessage(why);
    }
    return -EINVAL;
  }
  if (int rc = checkTargetIsProcess("/proc", tgid, err)) return rc;
  // Seeding lists it once the program is loaded: a refusal there read as bpf()'s (memlock,
  // lockdown), where procfs's hidepid hid the process.
  if (int rc = checkTaskDirReadable("/proc", tgid, "", err)) return rc;
  // bpf() refused outright (bpfReadiness()'s probe): said here, not through libbpf's failed
  // feature probes, whose log blamed RLIMIT_MEMLOCK and CONFIG_BPF_SYSCALL, and not tried again
  // with the compat build.
  if (ready.bpfErrno) {
    if (err) {
      err->code = errnoName(ready.bpfErrno);
      err->message = probeRefusalMessage(ready.bpfErrno, opts.procfsOption);
    }
    return -ready.bpfErrno;
  }
  maxThreads_ = opts.maxThreads ? opts.maxThreads : 1;
  ncpu_ = possibleCpuCount();
  if (ncpu_ <= 0) return fail(err, ncpu_ ? ncpu_ : -EINVAL, "counting possible CPUs", "");
  if (ncpu_ > JT_MAX_CPUS) {
    if (err) {
      err->code = "E2BIG";
      err->message = tooManyCpusMessage(ncpu_, opts.procfsOption);
    }
    return -E2BIG;
  }
  cpuPkg_ = cpuPackageMap(opts.cpuPackage, "/sys/devices/system/cpu", ncpu_);

  std::string log;
  {
    PrintCapture capture(&log);
    skel_.reset(Build::open());
    if (!skel_) return fail(err, -errno, "opening the BPF object", log);

    skel_->rodata->targ_tgid = uint32_t(tgid);
    skel_->rodata->follow_children = opts.followChildren;
    for (int i = 0; i < ncpu_; i++) skel_->rodata->cpu_pkg[i] = uint8_t(cpuPkg_[size_t(i)]);

    int e = bpf_map__set_max_entries(skel_->maps.threads, maxThreads_);
    // The compatibility build keeps every tracked thread in its ref hash, those refused a slot
    // too; the tid hash then holds the seeds only, one per slot at most.
    if (!e) e = bpf_map__set_max_entries(Build::refHash(skel_.get()), maxThreads_ * 2);
    if (!e && !Build::kTaskStorage) e = bpf_map__set_max_entries(skel_->maps.tid_slot, maxThreads_);
    if (!e) e = bpf_map__set_max_entries(skel_->maps.free_slots, maxThreads_);
    if (!e) e = bpf_map__set_max_entries(skel_->maps.cpus, uint32_t(ncpu_));
    if (e) return fail(err, e, "sizing the BPF maps", log);
    // seed_refs and mark_held_cpus run once each, below.
    bpf_program__set_autoattach(skel_->progs.seed_refs, false);
    bpf_program__set_autoattach(skel_->progs.mark_held_cpus, false);
    if constexpr (Build::kTaskStorage) {
      // handle_fork is attached before the threads are listed, so that every thread is either
      // listed or seen forking.
      bpf_program__set_autoattach(skel_->progs.handle_fork, false);
    }
    const bool repair = configureRepairHook(with->repair);
    const bool rename = configureRenameHook(with->rename);

    {
      SignalsBlocked quiet;
      e = Build::load(skel_.get());
    }
    // An optional program refused (libbpf names it): a fresh object without it, as libbpf cannot
    // load an object twice. Any other failure is reported as it is.
    if (e && repair && log.find("'handle_runtime'") != std::string::npos) {
      repairOff_ = "off: the kernel refused tp_btf/sched_stat_runtime (" + std::string(strerror(e < 0 ? -e : e)) + ")";
      with->repair = false;
      skel_.reset();
      return kRetryWithout;
    }
    if (e && rename && log.find("'handle_rename'") != std::string::npos) {
      renameOff_ = "off: the kernel refused tp_btf/task_rename (" + std::string(strerror(e < 0 ? -e : e)) + ")";
      with->rename = false;
      skel_.reset();
      return kRetryWithout;
    }
    if (e) {
      loadFailed_ = true;
      return fail(err, e, "loading the BPF program (kernel " + ready.kernel + ")", log);
    }

    // Every slot starts free; pushed highest first so slot 0 is handed out first.
    freeFd_ = bpf_map__fd(skel_->maps.free_slots);
    for (uint32_t i = maxThreads_; i-- > 0;) {
      e = bpf_map_update_elem(freeFd_, nullptr, &i, BPF_ANY);
      if (e) return fail(err, e, "filling the free-slot stack", log);
    }

    e = threadMap_.map(bpf_map__fd(skel_->maps.threads), sizeof(jt_thread_slot) * maxThreads_);
    if (e) return fail(err, e, "mapping the thread slots", log);
    e = cpuMap_.map(bpf_map__fd(skel_->maps.cpus), sizeof(jt_cpu_slot) * size_t(ncpu_));
    if (e) return fail(err, e, "mapping the CPU slots", log);
    slots_ = static_cast<const jt_thread_slot*>(threadMap_.get());
    cpuSlots_ = static_cast<const jt_cpu_slot*>(cpuMap_.get());

    // .bss is mmapped by libbpf once loaded: this store lands in the live program's memory.
    if constexpr (Build::kTaskStorage) {
      skel_->links.handle_fork = bpf_program__attach(skel_->progs.handle_fork);
      if (!skel_->links.handle_fork) return fail(err, -errno, "attaching tp_btf/sched_process_fork", log);
    }
    clockOffsetNs_ = monotonicOffsetNs();
    const uint64_t attachTs = kernelNs();
    seedTs_ = attachTs;
    e = seedThreads(uint32_t(tgid), attachTs);
    if (e) return fail(err, e, "seeding the threads of process " + std::to_string(tgid), log);
    if (rename) {
      // Before seed_refs, which takes each seeded thread's name anew once the hook can find the
      // thread: the hook has every rename after that. A kernel that refuses to attach it gets
      // the tracker without it.
      skel_->links.handle_rename = bpf_program__attach(skel_->progs.handle_rename);
      if (skel_->links.handle_rename) {
        renameAttached_.store(true);
      } else {
        renameOff_ = "off: attaching tp_btf/task_rename failed (" + std::string(strerror(errno)) + ")";
      }
    }
    e = runIterator(skel_->progs.seed_refs);
    if (e) {
      return fail(err, e, "giving the threads of process " + std::to_string(tgid) +
                              (Build::kTaskStorage ? " their task storage" : " their refs"), log);
    }
    skel_->bss->attach_ts = attachTs;
    e = Build::attach(skel_.get());
    if (e) return fail(err, e, "attaching tp_btf/sched_switch", log);
    // After attach, not in seed_refs: only a task on a CPU that has made no switch since attach
    // is sure to have held it throughout (mark_held_cpus); one seen earlier may sleep before it.
    e = runIterator(skel_->progs.mark_held_cpus);
    if (e) return fail(err, e, "marking the CPUs that tasks held at attach", log);
    retireVanishedSeeds(uint32_t(tgid));
    if (repair) {
      // Separately from Build::attach, so that a kernel refusing this one still gets the rest.
      repairState_.store(kRepairStandby);
      if (repairSwitchIns_ == "always" || gSwitchInsLost.load(std::memory_order_relaxed)) attachRepair();
    }
  }

  freedGen_.assign(maxThreads_, 0);
  lastGen_.assign(maxThreads_, 0);
  seedIdle_.assign(maxThreads_, 0);
  seedLookNs_.assign(maxThreads_, 0);
  seedLast_.assign(maxThreads_, RunRead());
  last_.assign(maxThreads_, ThreadTimes());
  lastCpu_.assign(size_t(ncpu_), CpuTimes());
  unswitched_.assign(size_t(ncpu_), 0);
  return 0;
}

// Callers hold a PrintCapture (its mutex is not recursive): open() holds its own; snapshot()
// takes one so that libbpf's messages stay off the sink of an open() on another thread. A
// failure is reported through stats() (errno).
template <typename Build>
void BpfTracker<Build>::attachRepair() {
  skel_->links.handle_runtime = bpf_program__attach(skel_->progs.handle_runtime);
  if (skel_->links.handle_runtime) {
    repairState_.store(kRepairAttached);
  } else {
    repairErrno_.store(errno);
    repairState_.store(kRepairAttachFailed);
  }
}

template <typename Build>
template <typename Slot>
bool BpfTracker<Build>::readFresh(const Slot* src, Slot* dst) const {
  while (!readSlot(src, dst)) {
    if (patientUntilNs_ == 0 || monotonicNs() >= patientUntilNs_) return false;
    sched_yield();  // a writer descheduled mid-update (a VM's vCPU) finishes once it runs
  }
  return true;
}

template <typename Build>
int BpfTracker<Build>::referenceSnapshot(TrackerSnapshot& snap) {
  patientUntilNs_ = monotonicNs() + kReferenceWaitNs;
  const int rc = snapshot(snap);
  patientUntilNs_ = 0;
  return rc;
}

template <typename Build>
int BpfTracker<Build>::snapshot(TrackerSnapshot& snap) {
  if (!skel_) return -EBADF;
  // The first unreported switch-in: one attach (a system call on the sampler thread, once), and
  // trackers opened later in this process attach at open.
  if (repairState_.load(std::memory_order_relaxed) == kRepairStandby &&
      __atomic_load_n(&skel_->bss->missed_switch_ins, __ATOMIC_RELAXED) > 0) {
    gSwitchInsLost.store(true, std::memory_order_relaxed);
    std::string log;
    PrintCapture capture(&log);
    attachRepair();
  }
  // Compared with the program's timestamps in the kernel's clock; reported in the process's.
  const uint64_t now = kernelNs();
  snap.timeNs = now + uint64_t(clockOffsetNs_);
  snap.cpus.resize(size_t(ncpu_));
  snap.threads.clear();

  uint32_t hw = 0;
  for (int i = 0; i < ncpu_; i++) {
    jt_cpu_slot c;
    CpuTimes& prev = lastCpu_[size_t(i)];
    if (readFresh(&cpuSlots_[i], &c)) {
      unswitched_[size_t(i)] = c.last_ts == 0;
      uint64_t busy = c.busy_ns, idle = c.idle_ns;
      if (c.last_ts && now > c.last_ts) (c.idle_now ? idle : busy) += now - c.last_ts;
      // Held by a task since before attach, with no timed switch since: busy from attach, as
      // its first timed switch will count it.
      else if (!c.last_ts && c.running_at_attach && now > seedTs_) busy += now - seedTs_;
      prev.busyNs = std::max(prev.busyNs, busy);
      // A stint read as busy that the next switch counted idle (a switch to idle the kernel did
      // not report, which these VMs drop) leaves busy held above the program's figure: idle
      // gives that back, or busy + idle would run past the time since attach for good. Only
      // idle: attribution reads busy alone, which stays as it was.
      const uint64_t held = prev.busyNs - busy;
      prev.idleNs = std::max(prev.idleNs, idle > held ? idle - held : 0);
      hw = std::max(hw, c.slot_hw);
    } else {
      busyReads_.fetch_add(1, std::memory_order_relaxed);
      // Still need the scan bound: slot_hw only grows, so a torn read of it is harmless.
      hw = std::max(hw, __atomic_load_n(&cpuSlots_[i].slot_hw, __ATOMIC_RELAXED));
    }
    snap.cpus[size_t(i)] = prev;
  }
  hw = std::min(hw, maxThreads_);

  for (uint32_t s = 0; s < hw; s++) {
    jt_thread_slot t;
    bool fresh = readFresh(&slots_[s], &t);
    if (!fresh) {
      busyReads_.fetch_add(1, std::memory_order_relaxed);
      if (lastGen_[s] == 0 || lastGen_[s] == freedGen_[s]) continue;
      snap.threads.push_back(last_[s]);  // busy writer: report the previous figures again
      continue;
    }
    if (t.generation == 0 || t.generation == freedGen_[s]) continue;

    ThreadTimes& out = last_[s];
    if (lastGen_[s] != t.generation) {
      out = ThreadTimes();
      lastGen_[s] = t.generation;
      seedIdle_[s] = 0;
      seedLookNs_[s] = 0;
      seedLast_[s] = RunRead();
    }
    // A running stint counts from the thread's own switch-in, read in the same seqcount section
    // as its completed stints: figures taken from a CPU's slot at another moment could count a
    // stint that ends in between twice, and the monotonic clamp below would hide the thread's
    // time until the overcount was caught up.
    const uint64_t since = t.on_since;
    uint64_t running = (since && now > since) ? now - since : 0;
    if (running && since == seedTs_ && !seededStintRunning(s, t, now)) running = 0;
    int pkg = t.cpu < uint32_t(ncpu_) ? cpuPkg_[t.cpu] : 0;
    out.tid = t.tid;
    out.tgid = t.tgid;
    out.slot = s;
    out.generation = t.generation;
    out.onCpuNs = std::max<uint64_t>(out.onCpuNs, t.on_cpu_ns + running);
    for (int p = 0; p < kMaxPackages; p++) {
      out.pkgNs[p] = std::max<uint64_t>(out.pkgNs[p], t.pkg_ns[p] + (p == pkg ? running : 0));
    }
    copyComm(out.comm, t.comm, strnlen(t.comm, sizeof t.comm));
    out.exited = t.exited != 0;
    snap.threads.push_back(out);
    // A CPU with no timed switch since attach knows no busy time of its own (a thread alone on
    // an isolated core never switches) unless the iterator found it held at attach, which needs
    // on_cpu (CONFIG_SMP): while a tracked thread runs there, the CPU has been busy at least as
    // long, or its package's share would go to threads elsewhere. Not for a seeded stint on an
    // SMP kernel: its CPU is the one /proc named at seeding, and a thread that moved to another
    // before attach (unseen) would make an idle CPU busy here, which its first switch then
    // counts idle from attach too (busy + idle 46 ms past the time since attach, once in a full
    // test run). A CPU a thread held from before attach is marked after attach, on its own CPU.
    if (running && t.cpu < uint32_t(ncpu_) && unswitched_[t.cpu] && (since != seedTs_ || ncpu_ == 1)) {
      CpuTimes& cpu = lastCpu_[t.cpu];
      cpu.busyNs = std::max(cpu.busyNs, running);
      snap.cpus[t.cpu] = cpu;
    }

    if (t.exited) {
      // Reported once; now the slot may go to the next thread. A failed push leaks the slot: a
      // bpf() the kernel refuses once privileges are dropped (before Linux 5.19, with
      // kernel.unprivileged_bpf_disabled), after maxThreads exits leaves every new thread
      // untracked. Counted, not silent.
      __atomic_store_n(&freedGen_[s], t.generation, __ATOMIC_RELAXED);  // stats() reads it
      if (bpf_map_update_elem(freeFd_, nullptr, &s, BPF_ANY) != 0) {
        lostSlotErrno_.store(errno, std::memory_order_relaxed);
        lostSlots_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  return 0;
}

// A seeded stint is an assumption: the thread was runnable when /proc was read, before attach.
// One that blocked in between has no switch-out for the program to see, and would count as
// running until it next wakes (minutes, for an idle worker); one runnable but waiting for a CPU
// (state R too) would count as running while it waits (412 ms against 4 for a nice-19 thread
// among six spinning on two CPUs). While the stint lasts, /proc says every 10 ms at most whether
// the thread is still runnable and whether its run time (schedstat) has moved, which it does at
// every scheduler tick of a running thread; once either says no, the stint was never real (had
// it run since attach and stopped, its switch-out would have ended the stint), and stays ignored
// until the thread's first switch-in starts a real one.
//
// Unmoved run time alone does not say no, though: a tick may not come. A stretch holds one only
// if longer than a tick period, up to 10 ms (HZ=100; the kernel's HZ is in its build config,
// which a loader cannot count on reading), so run time counts as unmoved over 20 ms at least,
// timed between the reads. On a nohz_full CPU a thread running alone gets a tick a second: there
// the CPU the thread is on says it, having had no switch since attach. A thread running since
// attach made none (its first would have ended the stint); one waiting for that CPU waits for a
// task that would have to run 20 ms with no switch and another runnable beside it.
template <typename Build>
bool BpfTracker<Build>::seededStintRunning(uint32_t slot, const jt_thread_slot& t, uint64_t now) {
  constexpr uint64_t kLookNs = 10'000'000;
  constexpr uint64_t kTickWindowNs = 20'000'000;  // 10 ms, and a tick at HZ=100
  if (seedIdle_[slot]) return false;
  const uint64_t looked = std::max(seedLookNs_[slot], seedTs_);
  if (now < looked || now - looked < kLookNs) return true;
  seedLookNs_[slot] = now;
  std::string text;
  const std::string dir = "/proc/" + std::to_string(t.tgid) + "/task/" + std::to_string(t.tid);
  if (readSmallFile(dir + "/stat", &text) != 0) return true;  // gone: its exit ends the stint
  const char* state = procStatField(text.c_str(), 3);
  if (!state || *state == '\0') return true;
  if (*state != 'R') {
    seedIdle_[slot] = 1;
    return false;
  }
  // Judged against the last read that found it moved, or, before any, the seeding's.
  const RunRead ref = seedLast_[slot].atNs ? seedLast_[slot] : slot < seedAtSeed_.size() ? seedAtSeed_[slot] : RunRead();
  std::string sched;
  RunRead read;
  if (readSmallFile(dir + "/schedstat", &sched) == 0) read.runNs = strtoull(sched.c_str(), nullptr, 10);
  read.atNs = monotonicNs();
  if (read.runNs == 0 || ref.runNs == 0 || read.runNs > ref.runNs) {
    seedLast_[slot] = read;
    return true;
  }
  if (ref.atNs == 0 || read.atNs - ref.atNs < kTickWindowNs) return true;
  // Runnable, and no run time over a tick period: waiting for a CPU, unless the one it is on has
  // had no switch since attach.
  const char* processor = procStatField(text.c_str(), 39);
  const unsigned long cpu = processor ? strtoul(processor, nullptr, 10) : ~0ul;
  if (cpu >= unsigned(ncpu_) || __atomic_load_n(&cpuSlots_[cpu].events, __ATOMIC_RELAXED) != 0) {
    seedIdle_[slot] = 1;
    return false;
  }
  return true;
}

// Test hook only: the slot is copied out and written back whole, seq included, so a switch of
// that thread on another CPU in between would be lost, and so would a switch on its CPU for the
// CPU's slot (cpuSinceNs; its busy time then counts that span twice). Tests call it from the
// thread itself.
template <typename Build>
int BpfTracker<Build>::forgetSwitchIn(uint32_t tid, bool asSeeded, uint64_t cpuSinceNs) {
  if (!skel_) return -EBADF;
  const int fd = bpf_map__fd(skel_->maps.threads);
  for (uint32_t s = 0; s < maxThreads_; s++) {
    if (__atomic_load_n(&slots_[s].tid, __ATOMIC_RELAXED) != tid) continue;
    jt_thread_slot v;
    if (bpf_map_lookup_elem(fd, &s, &v) != 0) return -errno;
    if (v.generation == 0 || v.generation == freedGen_[s] || v.exited) continue;
    v.on_since = asSeeded ? seedTs_ : 0;
    if (bpf_map_update_elem(fd, &s, &v, BPF_ANY) != 0) return -errno;
    if (cpuSinceNs == 0) return 0;
    const int cfd = bpf_map__fd(skel_->maps.cpus);
    jt_cpu_slot c;
    if (bpf_map_lookup_elem(cfd, &v.cpu, &c) != 0) return -errno;
    cpuSinceNs -= uint64_t(clockOffsetNs_);  // the process's clock, to the program's
    if (cpuSinceNs >= c.last_ts) return -EINVAL;
    c.last_ts = cpuSinceNs;
    return bpf_map_update_elem(cfd, &v.cpu, &c, BPF_ANY) == 0 ? 0 : -errno;
  }
  return -ESRCH;
}

template <typename Build>
void BpfTracker<Build>::stats(TrackerStats& out) {
  out = TrackerStats();
  out.backend = "bpf";
  out.program = Build::kName;
  out.programReason = why_;
  out.slotsMax = maxThreads_;
  if (!skel_) {
    out.note = "closed";
    return;
  }
  out.attached = skel_->links.handle_switch != nullptr;
  uint32_t hw = 0;
  for (int i = 0; i < ncpu_; i++) {
    out.events += __atomic_load_n(&cpuSlots_[i].events, __ATOMIC_RELAXED);
    hw = std::max(hw, __atomic_load_n(&cpuSlots_[i].slot_hw, __ATOMIC_RELAXED));
  }
  for (uint32_t s = 0; s < std::min(hw, maxThreads_); s++) {
    uint64_t gen = __atomic_load_n(&slots_[s].generation, __ATOMIC_RELAXED);
    if (gen != 0 && gen != __atomic_load_n(&freedGen_[s], __ATOMIC_RELAXED)) out.slotsUsed++;
  }
  out.droppedThreads = __atomic_load_n(&skel_->bss->dropped_threads, __ATOMIC_RELAXED);
  switch (repairState_.load()) {
    case kRepairStandby:
      out.repairHook = "standby: tp_btf/sched_stat_runtime attaches at the first unreported switch-in";
      break;
    case kRepairAttached: out.repairHook = "tp_btf/sched_stat_runtime"; break;
    case kRepairAttachFailed:
      out.repairHook = "off: attaching tp_btf/sched_stat_runtime failed (" + std::string(strerror(repairErrno_.load())) + ")";
      break;
    default: out.repairHook = repairOff_; break;
  }
  out.renameHook = renameAttached_.load() ? "tp_btf/task_rename" : renameOff_;
  out.missedSwitchIns = __atomic_load_n(&skel_->bss->missed_switch_ins, __ATOMIC_RELAXED);
  out.repairedSwitchIns = __atomic_load_n(&skel_->bss->repaired_switch_ins, __ATOMIC_RELAXED);
  out.busyReads = busyReads_.load(std::memory_order_relaxed);
  out.lostSlots = lostSlots_.load(std::memory_order_relaxed);
  // Threads found through a hash: every tracked thread in the compatibility build; in the
  // task-storage build, only those that got no storage (normally none).
  forEachKey<typename Build::RefKey>(bpf_map__fd(Build::refHash(skel_.get())), uint64_t(maxThreads_) * 2,
                                     [&](typename Build::RefKey) { out.hashRefs++; });

  bpf_prog_info info;
  memset(&info, 0, sizeof info);
  uint32_t len = sizeof info;
  const auto noteLostSlots = [&] {
    if (out.lostSlots == 0) return;
    out.note += (out.note.empty() ? "" : "; ") + std::to_string(out.lostSlots) +
                " slots of exited threads could not be handed back (bpf(): " + strerror(lostSlotErrno_.load()) +
                "; before Linux 5.19, kernel.unprivileged_bpf_disabled refuses every bpf() call without CAP_BPF, as once "
                "privileges are dropped): they stay taken, and once maxThreads are, new threads go untracked (droppedThreads)";
  };
  int e = bpf_obj_get_info_by_fd(bpf_program__fd(skel_->progs.handle_switch), &info, &len);
  if (e) {
    out.note = std::string("bpf_obj_get_info_by_fd failed: ") + strerror(-e);
    noteLostSlots();
    return;
  }
  out.runTimeNs = info.run_time_ns;
  out.runCount = info.run_cnt;
  out.recursionMisses = info.recursion_misses;
  if (repairState_.load() == kRepairAttached) {  // the link is written before the state
    memset(&info, 0, sizeof info);
    len = sizeof info;
    if (bpf_obj_get_info_by_fd(bpf_program__fd(skel_->progs.handle_runtime), &info, &len) == 0) {
      out.repairRunTimeNs = info.run_time_ns;
      out.repairRunCount = info.run_cnt;
    }
  }
  std::string enabled;
  if (readSmallFile("/proc/sys/kernel/bpf_stats_enabled", &enabled) != 0 || enabled.empty() ||
      enabled[0] != '1') {
    out.note = "runTimeNs/runCount count only while sysctl kernel.bpf_stats_enabled=1";
  }
  noteLostSlots();
}

// Opens one build; a tracker that fails is torn down (detached, maps closed) before this returns.
template <typename Build>
std::unique_ptr<ThreadTracker> openBuild(const TrackerOptions& opts, const std::string& why, TrackerError* err,
                                         bool* loadFailed = nullptr, std::string* failure = nullptr) {
  std::unique_ptr<BpfTracker<Build>> t(new BpfTracker<Build>());
  if (t->open(opts, why, err) == 0) return t;
  if (loadFailed) *loadFailed = t->loadFailed();
  if (failure) *failure = t->failure();
  return nullptr;
}

}  // namespace

// Task-local storage for tracing programs came in Linux 5.12, but until 6.2 ("bpf: Avoid taking
// spin lock in bpf_task_storage_get if potential deadlock is detected") a lookup returns NULL
// while any task-storage user on the same CPU holds its busy counter, which a preempted task
// freeing storage can do across a context switch: the thread would look untracked for that
// switch. "auto" therefore loads the task-storage build from 6.2 on, the compatibility build
// before, and falls back to it if the kernel refuses the first (but not for a failure after the
// load, which the second would meet as well).
std::unique_ptr<ThreadTracker> openBpfTracker(const TrackerOptions& opts, TrackerError* err) {
  const bool requested = opts.bpfProgram == "task-storage";
  std::string compatWhy = opts.bpfProgram == "compat"
                              ? "requested"
                              : "Linux < 6.2: task-storage lookups can fail while another task-storage user holds the CPU";
  if (requested || (opts.bpfProgram != "compat" && kernelAtLeast(6, 2))) {
    TrackerError first;
    bool loadFailed = false;
    std::string failure;
    const char* why = requested ? "requested" : "kernel supports task-local storage (Linux >= 6.2)";
    if (auto t = openBuild<TaskStorageBuild>(opts, why, &first, &loadFailed, &failure)) return t;
    // EPERM or EACCES without a verifier log (lockdown, seccomp, an LSM), or ENOSYS (seccomp),
    // would refuse the compat build too; a verifier refusal (ERR_JOULETRACE_BPF_VERIFIER) is this
    // build's own.
    if (requested || !loadFailed || first.code == "EPERM" || first.code == "EACCES" || first.code == "ENOSYS") {
      if (err) *err = first;
      return nullptr;
    }
    compatWhy = "the kernel refused the task-storage build: " + failure;
    if (auto c = openBuild<CompatBuild>(opts, compatWhy, err)) return c;
    if (err) err->message += "\n(the task-storage build failed first: " + first.message + ")";
    return nullptr;
  }
  return openBuild<CompatBuild>(opts, compatWhy, err);
}

BpfReadiness bpfReadiness() {
  BpfReadiness r;
  utsname u;
  if (uname(&u) == 0) r.kernel = u.release;
  r.btf = access(kBtfPath, R_OK) == 0;

  __user_cap_header_struct hdr;
  hdr.version = _LINUX_CAPABILITY_VERSION_3;
  hdr.pid = 0;
  __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  if (syscall(SYS_capget, &hdr, data) == 0) {
    bool admin = hasCap(data, kCapSysAdmin);
    r.capBpf = admin || hasCap(data, kCapBpf);
    r.capPerfmon = admin || hasCap(data, kCapPerfmon);
  }
  // capget answers for this process's own user namespace; bpf() checks the initial one, where a
  // process in any other holds no capability: loading would fail with EPERM.
  if (r.capBpf || r.capPerfmon) {
    r.userNs = userNamespaceOfItsOwn();
    if (!r.userNs.empty()) r.capBpf = r.capPerfmon = false;
  }

  // The README's minimum (CAP_BPF, task iterators). A kernel that backports those may load the
  // program all the same: openThreadTracker() still tries, and this says it is unsupported.
  if (!releaseAtLeast(r.kernel.c_str(), 5, 8).value_or(true)) {
    r.reason = "Linux " + r.kernel + " is older than the eBPF thread tracker needs (Linux >= 5.8, with BTF): upgrade "
               "the kernel, or use " + TrackerOptions().procfsOption + ".";
  } else if (!r.btf) {
    r.reason = "kernel has no BTF (" + std::string(kBtfPath) +
               "); needs CONFIG_DEBUG_INFO_BTF=y, Linux >= 5.8";
  } else if (!r.capBpf || !r.capPerfmon) {
    r.reason = privilegeMessage(r, TrackerOptions().procfsOption);
  } else if (const int ncpu = possibleCpuCount(); ncpu > JT_MAX_CPUS) {
    r.reason = tooManyCpusMessage(ncpu, TrackerOptions().procfsOption);
  } else if (TrackerError ns; checkInitialPidNamespace(TrackerOptions().procfsOption, 0, &ns) != 0) {
    r.reason = ns.message;
  } else if (const std::string why = foreignProcRefusal(procPidView(), 0); !why.empty()) {
    r.reason = foreignProcBpfMessage(why);
  } else if (const int e = probeBpfSyscall(); e != 0) {
    // Where all the above is there, a seccomp filter or an LSM may still refuse bpf() itself.
    r.bpfErrno = e;
    r.reason = probeRefusalMessage(e, TrackerOptions().procfsOption);
  }
#if !defined(__x86_64__)
  r.reason = "the eBPF thread tracker needs x86-64 (its lock-free slots rely on x86-64 store ordering)";
#endif
  r.ready = r.reason.empty();
  return r;
}

}  // namespace jouletrace
