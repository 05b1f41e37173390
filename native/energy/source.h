// The one interface every energy source implements (msr, powercap, perf, model), and the
// options that select and configure them. Sources are opened on the JS thread and then read
// from the sampler thread only, so read() must not allocate or touch V8.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace jouletrace {

enum class Vendor { Unknown, Intel, Amd, Hygon };

struct CpuIdentity {
  Vendor vendor = Vendor::Unknown;
  uint32_t family = 0;  // display family (base + extended, as /proc/cpuinfo prints it)
  uint32_t model = 0;   // display model (extended model folded in)
  std::string brand;    // CPUID brand string, may be empty
};

const char* vendorName(Vendor v);

struct SourceOptions {
  // printf-style template with one %d for the CPU number, e.g. "/tmp/emu/cpu%d/msr".
  std::string msrPath = "/dev/cpu/%d/msr";
  // File offset of MSR x is x << msrOffsetShift. The msr driver needs 0. Emulated devices (tests)
  // use 3: in a regular file, AMD's consecutive MSRs 0xC0010299..B would share bytes.
  unsigned msrOffsetShift = 0;
  std::string powercapRoot = "/sys/class/powercap";
  // Topology (cpuN/topology/physical_package_id, core_id) and the list of online CPUs.
  std::string sysfsCpuRoot = "/sys/devices/system/cpu";
  std::string perfPmuRoot = "/sys/bus/event_source/devices/power";
  std::string procStatPath = "/proc/stat";
  // Overrides CPUID (tests, or a VM that hides the vendor).
  bool hasCpuOverride = false;
  CpuIdentity cpuOverride;
  // model source: watts at 0% and 100% utilisation of the whole machine; < 0 derives defaults
  // from the core count.
  double modelIdleWatts = -1;
  double modelMaxWatts = -1;
  // How long opening msr, perf or powercap waits, at most, for one of its counters to advance
  // (see checkCounting in source_factory.cc); 0 skips the check (emulated devices in tests).
  int liveCheckMs = 50;
  // msr on AMD/Hygon: also the core domain, a sum over every physical core's counter (one
  // cross-CPU read per core per sample).
  bool msrAmdCores = false;
  // The CPU the sampler thread is pinned to (its `cpu` option), or -1: the msr source reads the
  // counters of that CPU's package, die and core there, a local read rather than an interrupt
  // on another CPU.
  int readerCpu = -1;
};

struct Domain {
  std::string name;     // "package", "core", "uncore", "dram", "psys"
  int package = 0;      // physical package id (0 for psys, which is platform-wide)
  double unitJoules = 0;  // joules per tick of DomainReading::ticks
  bool estimated = false;
  // Energy after which the hardware counter wraps, in joules (0: the model, which has no counter).
  double wrapJoules = 0;
  // Estimated sources only: the idle part of the estimate, in watts (< 0 = not known). It is
  // the default attribution baseline, so an estimate's idle floor is not charged to threads.
  double idleWatts = -1;
};

struct DomainReading {
  uint64_t raw = 0;    // last value read from the hardware (for AMD core: sum of per-core raws)
  uint64_t ticks = 0;  // cumulative, wrap-extended ticks since open; joules = ticks * unitJoules
  // This read failed for the domain (one of its counters): it holds its last value. Spans are
  // charged from the primary domains only, so the sampler tells a failure of theirs from one of
  // a domain they never use.
  bool failed = false;
  // The failure was a counter that started again (ERANGE: WrapCounter refused its value): the
  // energy since its last good read is lost, and the next reads count from the new value. Any
  // other failure (EIO, ...) leaves the counter as it was, and the next good read brings the
  // gap's energy.
  bool restarted = false;
  // With restarted, for a domain summed from several counters (CounterGroups::sum()): since the
  // domain's last read in which none failed, some of its counters read on without starting again.
  // Their energy over that time is still to come whole, held or not, so the time the domain was
  // held is still that energy's (AttributionEngine::step()); only the restarted counters' is lost.
  bool partialRestart = false;
};

struct SourceError {
  std::string code;     // errno name ("ENOENT", "EACCES", "EIO") or "ERR_JOULETRACE_*"
  std::string message;  // what is missing and how to fix it
};

class EnergySource {
 public:
  virtual ~EnergySource() = default;
  virtual const char* name() const = 0;
  const std::vector<Domain>& domains() const { return domains_; }
  // Domains the source lists but left out because they did not count when opened (see
  // checkCounting in source_factory.cc); empty for most.
  const std::vector<Domain>& notCounting() const { return notCounting_; }

  // Reads every domain into out[0..domains().size()). Returns 0, or -errno of the first failed
  // read; a domain whose read failed keeps its previous reading. Where the read itself failed
  // (EIO, ...) the energy it missed shows up, exactly, in the next successful read as long as the
  // counter has not wrapped twice meanwhile; where the counter started again (-ERANGE,
  // DomainReading::restarted) the energy from its last good read to the restart is lost.
  // Must not allocate: it runs on the sampler thread at up to 10 kHz.
  virtual int read(DomainReading* out) = 0;

  // The next read() takes each counter's value as its new reference, adding nothing for the
  // time since the last read; totals stay. A sampler calls it before a run's first read: a
  // counter left unread across a stop() for more than half its wrap period would otherwise
  // read as one that started again (ERANGE).
  virtual void rebase() {}

  // The reads from here to the next rebase() report a domain summed from several counters as
  // their sum, not held at its last whole one while a counter fails (CounterGroups::sum()): for a
  // run's final read, after which the next run rebases, so a held sum would lose what the
  // answering counters counted since the hold began.
  virtual void releaseHolds() {}

  // Where the last read() failed for domain `domain` (an index into domains()), for messages:
  // the first of its counters whose read failed, its errno name in out->code, and in
  // out->message named as the source opened it (its device or file, its register or event) with
  // the error. false where none failed, or the source cannot tell.
  virtual bool readFailure(size_t domain, SourceError* out) const {
    (void)domain;
    (void)out;
    return false;
  }

  // Where the source opened a domain's counter in several places because only watching tells
  // which one counts (perf's psys, listed on every package and counting on one): keeps the first
  // of them that has moved since open, closes the others, and returns true once it has chosen;
  // with `last`, chooses the first place where none has moved. checkCounting calls it as it
  // reads, and with `last` at its end. true where there is nothing to choose.
  virtual bool chooseReaders(bool last) {
    (void)last;
    return true;
  }

 protected:
  std::vector<Domain> domains_;
  std::vector<Domain> notCounting_;
};

// Why a source could not be used (for probe() and for auto's explanation).
struct SourceStatus {
  std::string name;
  bool available = false;
  SourceError error;             // when !available
  std::vector<Domain> domains;   // when available
  std::vector<Domain> notCounting;  // when available: listed, but left out as not counting
};

// Opens "msr", "powercap", "perf" or "model"; "auto" tries msr, perf, powercap, model in that
// order and records why each earlier one was skipped in *skipped. A measuring source none of
// whose counters advances within opts.liveCheckMs fails with ERR_JOULETRACE_NOT_COUNTING; one
// whose package, dram or psys counter alone stays still opens without it (notCounting()).
// Returns nullptr with *err set on failure.
std::unique_ptr<EnergySource> openEnergySource(const std::string& which, const SourceOptions& opts,
                                               SourceError* err,
                                               std::vector<SourceStatus>* skipped);

// Tries every source and reports each one's status (used by probe()).
std::vector<SourceStatus> probeEnergySources(const SourceOptions& opts);

// CPUID (or the override in opts).
CpuIdentity detectCpu(const SourceOptions& opts);

// The primary domains, as the JavaScript side picks them: every package, else psys, else every
// domain named as the first. Attribution's gate and the spans' baseline use them.
std::vector<size_t> primaryDomainIndices(const std::vector<Domain>& domains);

}  // namespace jouletrace
