// RAPL through the perf "power" PMU: one counting event per domain per package, read() of the
// 64-bit count. The kernel extends the 32-bit hardware counter, but into 2^-32 J units
// (rapl_scale), so the count passes 2^64 after 2^32 J (4.29 GJ, 248 days at 200 W): it is
// extended once more here, modulo 2^64, into ticks coarse enough for a 64-bit total.
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "energy/counter_groups.h"
#include "energy/cpu_info.h"
#include "energy/sources_internal.h"
#include "energy/wrap_counter.h"
#include "errno_name.h"
#include "sys_file.h"

namespace jouletrace {
namespace {

class PerfSource final : public EnergySource {
 public:
  struct Event {
    UniqueFd fd;
    WrapCounter wrap;
    bool failed = false;     // at the last read
    bool restarted = false;  // at the last read: the count started again (ERANGE)
    int error = 0;           // -errno of the last read, 0 when it succeeded
    const char* event = "";  // its name in the PMU's events/ (a string literal)
    int cpu = -1;
  };
  const char* name() const override { return "perf"; }
  int read(DomainReading* out) override {
    int firstErr = 0;
    // Each event's read falls between the clock read before it and the one after (see
    // WrapCounter::update).
    uint64_t readFrom = WrapCounter::clockNs();
    for (Event& e : events_) {
      uint64_t v;
      ssize_t n = ::read(e.fd.get(), &v, sizeof v);
      int rc = n == ssize_t(sizeof v) ? 0 : n < 0 ? -errno : -EIO;
      const uint64_t readBy = WrapCounter::clockNs();
      if (rc == 0 && !e.wrap.update(v, readFrom, readBy)) rc = -ERANGE;  // the count started again
      readFrom = readBy;
      e.failed = rc != 0;
      e.restarted = rc == -ERANGE;
      e.error = rc;
      if (rc != 0 && firstErr == 0) firstErr = rc;
    }
    // A domain is its events' sum: one per package, or one per die of a multi-die Intel
    // package (the PMU's cpumask then names one CPU of each die).
    groups_.sum(events_, readFrom, out);
    return firstErr;
  }
  void rebase() override {
    for (auto& e : events_) e.wrap.rebase();
    groups_.rebase();
  }
  void releaseHolds() override { groups_.releaseHolds(); }
  bool readFailure(size_t domain, SourceError* out) const override {
    const Event* e = groups_.firstFailed(events_, domain);
    if (!e) return false;
    describeFailedRead(e->error, std::string(e->event) + " on cpu " + std::to_string(e->cpu) + ": read", out);
    return true;
  }

  // psys counts on one package only, which need not be package 0 (multi-socket Sapphire Rapids:
  // the others read 0), and the PMU lists the event on every package whichever (rapl.c's
  // no_check): it is opened on a CPU of each. events_[psysEvent_] is the first package's, read
  // until chooseReaders() swaps in the first whose count has moved; psysOthers_ the rest, each
  // with its count at open.
  struct Candidate {
    Event event;
    uint64_t atOpen;
  };
  bool chooseReaders(bool last) override {
    if (psysOthers_.empty()) return true;
    auto moved = [](const Event& e, uint64_t atOpen) {
      uint64_t v;
      return ::read(e.fd.get(), &v, sizeof v) == ssize_t(sizeof v) && v != atOpen;
    };
    bool chosen = moved(events_[psysEvent_], psysAtOpen_);
    for (size_t k = 0; !chosen && k < psysOthers_.size(); k++) {
      if (moved(psysOthers_[k].event, psysOthers_[k].atOpen)) {
        events_[psysEvent_] = std::move(psysOthers_[k].event);
        chosen = true;
      }
    }
    if (!chosen && !last) return false;
    psysOthers_.clear();  // closes their events: the sampler reads the one kept
    return true;
  }

  std::vector<Event> events_;
  CounterGroups groups_;
  size_t psysEvent_ = 0;
  uint64_t psysAtOpen_ = 0;
  std::vector<Candidate> psysOthers_;
  std::vector<Domain>& mutableDomains() { return domains_; }
};

// "event=0x02" (optionally with more comma-separated terms, which RAPL events never carry).
bool parseEventConfig(const std::string& text, uint64_t* config) {
  size_t at = text.find("event=");
  if (at == std::string::npos) return false;
  const char* p = text.c_str() + at + 6;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(p, &end, 0);
  if (end == p || errno != 0) return false;
  *config = v;
  return true;
}

// A tick is 2^shift counts: the smallest power of two for which a 64-bit total holds 2^44 J
// (557 years at 1 kW). For the kernel's 2^-32 J counts that is 2^-20 J, finer than any RAPL
// unit (2^-14 to 2^-16 J), so a tick loses nothing a sample could show.
unsigned tickShift(double scale) {
  unsigned shift = 0;
  while (shift < 63 && std::ldexp(scale, int(shift) + 64) < std::ldexp(1.0, 44)) shift++;
  return shift;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::unique_ptr<EnergySource> openPerfSource(const SourceOptions& opts, SourceError* err) {
  const std::string& root = opts.perfPmuRoot;
  struct stat st;
  if (::stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    err->code = "ENOENT";
    const std::string byDefault = SourceOptions().perfPmuRoot;
    // modprobe cannot help a kernel that loads no modules: its drivers are built in or absent.
    const std::string noModules = root == byDefault ? noModulesNote(opts) : "";
    if (root != byDefault) {
      err->message = root + ": no perf power PMU — " + checkOptionRemedy("perfPmuRoot", byDefault);
    } else if (!noModules.empty()) {
      err->message = root + ": no perf power PMU — this kernel has none built in and no module to load (" + noModules +
                     "), as is common in VMs; try source 'msr', 'powercap' or 'model'";
    } else {
      err->message = root + ": no perf power PMU (kernel without CONFIG_PERF_EVENTS_INTEL_RAPL / AMD RAPL PMU, or a VM) — "
                            "load its driver: modprobe rapl (Intel, or AMD on Linux ≥ 5.8; modprobe intel_rapl_tpmi where RAPL "
                            "is TPMI's: Granite Rapids, Sierra Forest), or use source 'powercap' or 'model'";
    }
    return nullptr;
  }
  long long type;
  int rc = readIntegerFile(root + "/type", &type);
  if (rc < 0 || type < 0) {
    err->code = rc < 0 ? errnoName(-rc) : "EINVAL";
    err->message = root + "/type: unreadable or not a PMU type number — not a perf PMU directory";
    return nullptr;
  }
  std::string maskText;
  std::vector<int> cpus;
  rc = readSmallFile(root + "/cpumask", &maskText);
  if (rc < 0 || !parseCpuList(maskText, &cpus) || cpus.empty()) {
    err->code = rc < 0 ? errnoName(-rc) : "EINVAL";
    err->message = root + "/cpumask: unreadable or not a CPU list — cannot tell which CPU reads each package";
    return nullptr;
  }
  std::vector<CpuTopo> topo;
  SourceError topoErr;
  std::map<int, std::pair<int, int>> placeOf;  // CPU -> (package, die)
  if (readTopology(opts.sysfsCpuRoot, &topo, &topoErr))
    for (const CpuTopo& t : topo) placeOf[t.cpu] = {t.package, t.die};
  // The cpumask's i-th CPU's package (its place in the list where the topology lacks it) and die.
  auto placeOfMaskCpu = [&](size_t i) {
    auto it = placeOf.find(cpus[i]);
    return it != placeOf.end() ? it->second : std::make_pair(int(i), 0);
  };
  // AMD's and Hygon's RAPL is package-scoped: where the cpumask names a CPU of each CCD (Linux
  // 6.10 and 6.11 make each a die), every one of their events reads the same package counter.
  const CpuIdentity id = detectCpu(opts);
  const bool amdLike = id.vendor == Vendor::Amd || id.vendor == Vendor::Hygon;
  // perf's rapl.c lists one reader CPU per die (per package where there is one die), and a
  // multi-die Intel package's dies each count their own. intel_rapl_common's PMU (TPMI: Granite
  // Rapids, Sierra Forest; and its MSR-based one) lists every online CPU of each package since
  // "powercap: intel_rapl: Expose all package CPUs in PMU cpumask" (2026), and each of them reads
  // the same package counter: summed, the package read N times its energy. A mask naming more
  // CPUs than it has (package, die) places is such a list, and one CPU a package reads it (TPMI
  // is package-scoped even where CPUID reports dies).
  std::set<std::pair<int, int>> places;
  for (size_t i = 0; i < cpus.size(); i++) places.insert(placeOfMaskCpu(i));
  const bool onePerPackage = amdLike || places.size() < cpus.size();

  static const struct {
    const char* event;
    const char* domain;
  } kEvents[] = {{"energy-pkg", "package"}, {"energy-cores", "core"}, {"energy-gpu", "uncore"},
                 {"energy-ram", "dram"},    {"energy-psys", "psys"}};

  auto src = std::make_unique<PerfSource>();
  for (const auto& ev : kEvents) {
    std::string base = root + "/events/" + ev.event;
    std::string text;
    if (readSmallFile(base, &text) < 0) continue;  // this CPU lacks the domain
    uint64_t config;
    if (!parseEventConfig(text, &config)) {
      err->code = "EINVAL";
      err->message = base + ": \"" + trim(text) + "\" is not an event=N encoding";
      return nullptr;
    }
    std::string scaleText;
    double scale = 0;
    if (readSmallFile(base + ".scale", &scaleText) == 0) scale = std::strtod(scaleText.c_str(), nullptr);
    if (!(scale > 0)) {
      err->code = "EINVAL";
      err->message = base + ".scale: missing or not a positive number — cannot convert counts to joules";
      return nullptr;
    }
    std::string unitText;
    if (readSmallFile(base + ".unit", &unitText) == 0 && trim(unitText) != "Joules") {
      err->code = "EINVAL";
      err->message = base + ".unit: \"" + trim(unitText) + "\" — expected Joules";
      return nullptr;
    }
    bool psys = std::strcmp(ev.domain, "psys") == 0;
    std::set<int> psysPackages;  // those psys was opened on a CPU of
    for (size_t i = 0; i < cpus.size(); i++) {
      int cpu = cpus[i];
      // psys is platform-wide: reported as package 0, as the msr source reports it, wherever it
      // counts (chooseReaders()).
      const int package = psys ? 0 : placeOfMaskCpu(i).first;
      if (psys && !psysPackages.insert(placeOfMaskCpu(i).first).second) continue;
      // A further package's psys, opened only to find where psys counts: where it will not open
      // or read, it is left out, as before psys was tried beyond the first package.
      const bool psysOther = psys && src->groups_.has(ev.domain, package);
      if (!psys && onePerPackage && src->groups_.has(ev.domain, package)) continue;
      perf_event_attr attr;
      std::memset(&attr, 0, sizeof attr);
      attr.size = sizeof attr;
      attr.type = uint32_t(type);
      attr.config = config;
      long fd = ::syscall(SYS_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
      if (fd < 0 && psysOther) continue;
      if (fd < 0) {
        int e = errno;
        err->code = errnoName(e);
        char what[160];
        snprintf(what, sizeof what, "perf_event_open(type=%lld, config=0x%llx, cpu=%d) for %s", type,
                 (unsigned long long)config, cpu, ev.event);
        if (e == EACCES || e == EPERM) {
          err->message = std::string(what) + ": permission denied — needs CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8) "
                         "or kernel.perf_event_paranoid <= 0 (sysctl -w kernel.perf_event_paranoid=0)";
        } else if (e == ENOENT || e == EINVAL || e == ENODEV || e == EOPNOTSUPP) {
          err->message = std::string(what) + ": " + std::strerror(e) + " — the kernel has no such PMU event (" + root +
                         " does not describe a live RAPL PMU)";
        } else {
          err->message = std::string(what) + ": " + std::strerror(e);
        }
        return nullptr;
      }
      const unsigned shift = tickShift(scale);
      PerfSource::Event e{UniqueFd(int(fd)), WrapCounter(0, shift, scale)};
      e.event = ev.event;
      e.cpu = cpu;
      uint64_t v;
      const uint64_t readFrom = WrapCounter::clockNs();
      const ssize_t n = ::read(int(fd), &v, sizeof v);
      if (n != ssize_t(sizeof v) && psysOther) continue;  // e closes the event
      if (n != ssize_t(sizeof v)) {
        // perf_read() answers end of file for an event in error state.
        const int e = n < 0 ? errno : EIO;
        err->code = errnoName(e);
        err->message = std::string(ev.event) + " on cpu " + std::to_string(cpu) + ": first read failed (" +
                       (n < 0 ? std::strerror(e) : "no count") + ") — is CPU " + std::to_string(cpu) +
                       " going offline? Try again, or use source 'msr' or 'powercap'";
        return nullptr;
      }
      e.wrap.reset(v, readFrom);
      if (psysOther) {
        src->psysOthers_.push_back({std::move(e), v});
        continue;
      }
      if (psys) {
        src->psysEvent_ = src->events_.size();
        src->psysAtOpen_ = v;
      }
      Domain d;
      d.name = ev.domain;
      d.package = package;
      d.unitJoules = std::ldexp(scale, int(shift));
      d.wrapJoules = std::ldexp(scale, 64);
      src->events_.push_back(std::move(e));
      if (src->groups_.add(d.name, d.package, src->events_.size() - 1)) src->mutableDomains().push_back(d);
    }
  }
  if (src->domains().empty()) {
    err->code = "ENOENT";
    err->message = root + "/events: no energy-* events — the power PMU exposes no RAPL domain";
    return nullptr;
  }
  return src;
}

}  // namespace jouletrace
