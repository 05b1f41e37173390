// RAPL through the msr driver: pread(8 bytes) at the MSR address of /dev/cpu/N/msr, one CPU per
// package (and, for AMD's per-core counters, one CPU per physical core).
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "energy/counter_groups.h"
#include "energy/cpu_info.h"
#include "energy/sources_internal.h"
#include "energy/wrap_counter.h"
#include "errno_name.h"
#include "napi_util.h"
#include "sys_file.h"

namespace jouletrace {
namespace {

constexpr uint32_t kIntelUnit = 0x606, kIntelPkg = 0x611, kIntelPp0 = 0x639, kIntelPp1 = 0x641,
                   kIntelDram = 0x619, kIntelPsys = 0x64D;
constexpr uint32_t kAmdUnit = 0xC0010299, kAmdCore = 0xC001029A, kAmdPkg = 0xC001029B;
constexpr uint64_t kEnergyModulus = 1ull << 32;

// Intel server parts whose DRAM counter ticks in a fixed 2^-16 J (15.3 µJ) whatever the unit
// register says: the models the kernel's intel_rapl_common.c gives rapl_defaults_hsw_server
// (Haswell-X, Broadwell-X, Skylake-X/Cascade Lake, Ice Lake-X/-D, Xeon Phi KNL/KNM), and
// Broadwell-D (0x56), which perf's rapl.c gives the same quirk. Sapphire Rapids had it too until
// the kernel dropped it as wrong, so it is not listed.
bool fixedDramUnit(uint32_t model) {
  switch (model) {
    case 0x3F: case 0x4F: case 0x56: case 0x55: case 0x6A: case 0x6C: case 0x57: case 0x85: return true;
    default: return false;
  }
}

// Sapphire Rapids (0x8F) and Emerald Rapids (0xCF) count psys in whole joules, whatever the unit
// register says (the kernel's RAPL_UNIT_QUIRK_INTEL_SPR in perf's rapl.c, and
// rapl_defaults_spr_server's psys unit in intel_rapl_common.c).
bool fixedPsysUnit(uint32_t model) {
  return model == 0x8F || model == 0xCF;
}

// Silvermont/Airmont Atoms count energy in 2^ESU µJ instead of 2^-ESU J (the kernel's
// rapl_check_unit_atom for Bay Trail 0x37, Merrifield 0x4A, Cherry Trail 0x4C, Moorefield 0x5A).
bool atomEnergyUnit(uint32_t model) {
  return model == 0x37 || model == 0x4A || model == 0x4C || model == 0x5A;
}

// After a counter's failed read, of the other CPUs that share it: "as on every other CPU" was
// untrue of a CPU whose device would not open, or that is not among the counter's spares.
constexpr const char* kNoSpareRead =
    ", and no other CPU that shares the counter read it in its place (a read failed there, or its device is not open)";

// One MSR read on one CPU. A short read counts as EIO: the emulated device stands for an
// unimplemented MSR with a hole past end-of-file, which is what the real driver's EIO means.
int readMsr(int fd, uint64_t offset, uint64_t* value) {
  ssize_t n = ::pread(fd, value, sizeof *value, off_t(offset));
  if (n == ssize_t(sizeof *value)) return 0;
  if (n < 0) return -errno;
  return -EIO;
}

// How many other CPUs of a counter's package, die or core hold an open device, ready to read it
// should its CPU go offline. They are opened at open, with the privileges the open has, so the
// switch works after those are dropped (a device is root's, 0600). Two, not every CPU of the
// package (an fd each, 128 on a big part, for a switch that one serves): Linux takes CPUs
// offline one at a time, and the second covers the first spare going with the reading CPU, as
// an SMT pair that some machines list side by side does when its core is taken off. The CPU the
// counter leaves becomes a spare, its device still open, read again once it is back.
constexpr size_t kSparesPerCounter = 2;

class MsrSource final : public EnergySource {
 public:
  struct Reader {
    int cpu;
    int fd;  // that CPU's device, opened at open
  };
  struct Counter {
    int cpu;          // the CPU it is read on
    int fd;           // that CPU's device
    uint64_t offset;  // MSR address << msrOffsetShift
    WrapCounter wrap;
    // Other online CPUs that read this same counter (its package's, its die's, or its core's
    // SMT siblings), their devices open: where it is read next if its CPU goes offline, as
    // Linux's RAPL driver moves its lead CPU. The count goes on unbroken: it is one counter,
    // whichever CPU reads it.
    std::vector<Reader> spares;
    bool shared = false;     // other CPUs read this counter, their devices open or not
    bool failed = false;     // at the last read
    bool restarted = false;  // at the last read: the counter started again (ERANGE)
    int error = 0;           // -errno of the last read, 0 when it succeeded
  };
  const char* name() const override { return "msr"; }

  int read(DomainReading* out) override {
    int firstErr = 0;
    // Each counter's read falls between the clock read before it and the one after (see
    // WrapCounter::update): one clock read a counter, the last one after a read the first before
    // the next, vDSO reads of about 20 ns.
    uint64_t readFrom = WrapCounter::clockNs();
    for (Counter& c : counters_) {
      uint64_t v;
      int rc = readMsr(c.fd, c.offset, &v);
      if (rc != 0 && moveToSpare(c, &v)) rc = 0;
      const uint64_t readBy = WrapCounter::clockNs();
      if (rc == 0 && !c.wrap.update(v & 0xFFFFFFFFull, readFrom, readBy)) rc = -ERANGE;  // the counter started again
      readFrom = readBy;
      // On a failed read the counter keeps its last value, so the energy it missed shows up
      // whole in the next successful read; on a restart that energy is lost.
      c.failed = rc != 0;
      c.restarted = rc == -ERANGE;
      c.error = rc;
      if (rc != 0 && firstErr == 0) firstErr = rc;
    }
    // A domain is its counters' sum where it has several: an AMD package's cores, an Intel
    // multi-die package's dies.
    groups_.sum(counters_, readFrom, out);
    return firstErr;
  }

  void rebase() override {
    for (auto& c : counters_) c.wrap.rebase();
    groups_.rebase();
  }
  void releaseHolds() override { groups_.releaseHolds(); }

  bool readFailure(size_t domain, SourceError* out) const override {
    const Counter* c = groups_.firstFailed(counters_, domain);
    if (!c) return false;
    char hex[24];
    snprintf(hex, sizeof hex, "0x%llX", (unsigned long long)(c->offset >> msrOffsetShift_));
    describeFailedRead(c->error, expandCpuPath(msrPath_, c->cpu) + ": reading the energy register " + hex, out);
    if (c->shared) out->message += kNoSpareRead;
    return true;
  }

  // The CPU a counter was read on failed (offline: the msr driver answers ENXIO or EIO): the
  // first spare that reads it takes over, and the failed CPU takes its place among the spares,
  // to be read again once it is back and the others have gone. Off the common path: a system
  // call or two, once.
  bool moveToSpare(Counter& c, uint64_t* v) {
    for (Reader& spare : c.spares) {
      if (readMsr(spare.fd, c.offset, v) == 0) {
        std::swap(c.cpu, spare.cpu);
        std::swap(c.fd, spare.fd);
        return true;
      }
    }
    return false;
  }

  // The CPU's msr device, or -errno where it did not open. Opened at open only, once a CPU: the
  // sampler thread opens nothing (after privileges are dropped it could not), so a device that
  // did not open then is never read (a container given /dev/cpu/0/msr alone).
  int fdOf(int cpu) {
    auto it = devices_.find(cpu);
    if (it != devices_.end()) return it->second.fd.valid() ? it->second.fd.get() : it->second.openErr;
    Device& d = devices_[cpu];
    const int fd = openForReading(expandCpuPath(msrPath_, cpu));
    if (fd < 0) return d.openErr = fd;
    d.fd = UniqueFd(fd);
    return fd;
  }

  struct Device {
    UniqueFd fd;
    int openErr = 0;  // -errno of its failed open
  };

  std::string msrPath_;
  unsigned msrOffsetShift_ = 0;
  std::map<int, Device> devices_;
  std::vector<Counter> counters_;
  CounterGroups groups_;
  std::vector<Domain>& mutableDomains() { return domains_; }
};

bool endsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// The sysfs mount the CPU tree is in ("/sys" for "/sys/devices/system/cpu"; an emulated tree has
// its own), or false where the tree is not at its usual place in one.
bool sysfsOf(const std::string& sysfsCpuRoot, std::string* sysfs) {
  const std::string tail = "/devices/system/cpu";
  if (!endsWith(sysfsCpuRoot, tail)) return false;
  *sysfs = sysfsCpuRoot.substr(0, sysfsCpuRoot.size() - tail.size());
  return true;
}

// Where sysfs shows the msr driver: /sys/module/msr for a module, /sys/class/msr for the driver
// however it came (built into the kernel it has no /sys/module entry). Empty where neither is.
std::string msrDriverDir(const std::string& sysfsCpuRoot) {
  std::string sysfs;
  if (!sysfsOf(sysfsCpuRoot, &sysfs)) return "";
  for (const char* dir : {"/module/msr", "/class/msr"})
    if (exists(sysfs + dir)) return sysfs + dir;
  return "";
}

// Whether a modules list (modules.dep, "kernel/arch/x86/kernel/msr.ko.zst: ..."; modules.builtin,
// one path a line) names the msr module.
bool listsMsrModule(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const std::string name = line.substr(0, line.find(':'));
    const size_t at = name.rfind("/msr.ko");
    if (at != std::string::npos && (at + 7 == name.size() || name[at + 7] == '.')) return true;
  }
  return false;
}

// Where sysfs shows no msr driver (msrDriverDir), why the kernel is known to have none at all,
// with no module to load (modprobe msr cannot help, as on VM kernels built without
// CONFIG_X86_MSR), or empty where that cannot be shown: the kernel loads no modules (no
// /proc/modules, beside options.procStatPath), or its modules.dep, under /lib/modules beside the
// sysfs mount, lists no msr module.
std::string msrDriverAbsence(const SourceOptions& opts) {
  std::string sysfs;
  if (!sysfsOf(opts.sysfsCpuRoot, &sysfs)) return "";
  const std::string noClass = "no " + sysfs + "/class/msr";
  const std::string noModules = noModulesNote(opts);
  if (!noModules.empty()) return noClass + ", and " + noModules;
  struct utsname u;
  if (!endsWith(sysfs, "/sys") || ::uname(&u) != 0) return "";
  const std::string dir = sysfs.substr(0, sysfs.size() - 4) + "/lib/modules/" + u.release;
  if (!exists(dir + "/modules.dep") || listsMsrModule(dir + "/modules.dep") || listsMsrModule(dir + "/modules.builtin")) return "";
  return noClass + ", and no msr module in " + dir + "/modules.dep";
}

// Least privilege first: the capability for this service alone, then for the binary, named as
// setcap needs it (runningBinary()).
std::string rawioGrant() {
  return "grant CAP_SYS_RAWIO: to this service alone, in its systemd unit (AmbientCapabilities=CAP_SYS_RAWIO beside its "
         "User=), or to the binary this process runs, `sudo setcap cap_sys_rawio+ep " + runningBinary() + "`";
}

void openError(const std::string& path, int err, const SourceOptions& opts, SourceError* out) {
  out->code = errnoName(err);
  if (const char* kind = notAFile(path, err)) {
    out->message = notAFileMessage(path, kind, "msrPath", SourceOptions().msrPath);
  } else if (err == ENOENT || err == ENODEV) {
    out->code = "ENOENT";
    // At a path the user gave, the path is the likelier mistake (missingPathRemedy): what sysfs
    // shows of the driver is about the default devices, which were not asked for.
    const bool given = opts.msrPath != SourceOptions().msrPath;
    // Loaded, yet no device: a container's, the driver being the host's and /dev/cpu not passed in.
    const std::string driver = given ? "" : msrDriverDir(opts.sysfsCpuRoot);
    const std::string absence = given || !driver.empty() ? "" : msrDriverAbsence(opts);
    if (!driver.empty()) {
      out->message = path + ": no such file — the msr driver is loaded (" + driver +
                     ") but its devices are not here, as in a container: pass them in (docker run --device /dev/cpu/N/msr "
                     "for each CPU N) with CAP_SYS_RAWIO (--cap-add SYS_RAWIO)";
    } else if (!absence.empty()) {
      // modprobe msr would fail: there is no driver to load.
      out->message = path + ": no such file — this kernel has no msr driver, built in or as a module, as is common in VMs (" +
                     absence + "); try source 'perf', 'powercap' or 'model'";
    } else {
      out->message = path + ": no such file — " +
                     missingPathRemedy(opts.msrPath, SourceOptions().msrPath, "msrPath", "load the msr module: modprobe msr");
    }
  } else if (err == ENXIO) {
    // The msr driver's answer for a CPU that is offline or has no MSR support.
    out->message = path + ": no such CPU or no MSR support on it — check that the CPU is online";
  } else if (err == EACCES) {
    // The file's mode (0600, root's): CAP_SYS_RAWIO alone does not open it.
    out->message = path + ": permission denied — the device is root's alone by default, and reading it needs read access "
                          "to it as well as CAP_SYS_RAWIO: run as root, or give this user read access to /dev/cpu/*/msr (a udev "
                          "rule or group, or CAP_DAC_READ_SEARCH) and " + rawioGrant();
  } else if (err == EPERM) {
    // The msr driver's own check, once the file opened: typically root in a container without it.
    out->message = path + ": operation not permitted — the msr driver needs CAP_SYS_RAWIO: run as root with it (in a "
                          "container: docker run --cap-add SYS_RAWIO), or " + rawioGrant();
  } else {
    out->message = path + ": " + std::strerror(err);
  }
}

}  // namespace

std::string noModulesNote(const SourceOptions& opts) {
  const size_t slash = opts.procStatPath.rfind('/');
  const std::string proc = slash == std::string::npos ? "." : opts.procStatPath.substr(0, slash);
  // procfs has a version file whatever the kernel: a directory without one is no procfs.
  if (exists(proc + "/version") && !exists(proc + "/modules")) return "no " + proc + "/modules: the kernel loads no modules";
  return "";
}

std::unique_ptr<EnergySource> openMsrSource(const SourceOptions& opts, SourceError* err) {
  CpuIdentity id = detectCpu(opts);
  bool intel = id.vendor == Vendor::Intel;
  bool amd = (id.vendor == Vendor::Amd && id.family >= 0x17) || (id.vendor == Vendor::Hygon && id.family >= 0x18);
  if (!intel && !amd) {
    err->code = "ERR_JOULETRACE_UNSUPPORTED_CPU";
    if (id.vendor == Vendor::Amd || id.vendor == Vendor::Hygon) {
      char fam[16];
      snprintf(fam, sizeof fam, "0x%X", id.family);
      err->message = std::string(vendorName(id.vendor)) + " family " + fam +
                     " has no RAPL MSRs (AMD RAPL starts with family 17h / Zen, Hygon with 18h) — use source 'model'";
#if !defined(__x86_64__) && !defined(__i386__)
    } else if (!opts.hasCpuOverride) {
      err->message = "RAPL MSRs are x86's (Intel, AMD family ≥17h and Hygon) and this CPU is not x86 — use source 'model'";
#endif
    } else {
      err->message = std::string("CPU vendor ") + vendorName(id.vendor) +
                     " has no known RAPL MSRs (Intel, AMD family ≥17h and Hygon only) — use source 'model'";
    }
    return nullptr;
  }

  std::vector<CpuTopo> topo;
  if (!readTopology(opts.sysfsCpuRoot, &topo, err)) return nullptr;

  // The online CPUs of each package; of each of its dies, for Intel's counters, which are
  // die-scoped on multi-die parts (Cascade Lake-AP: Linux's perf PMU reads each die, its
  // powercap makes a zone per die), one die elsewhere; and the first of each physical core, for
  // AMD's per-core counters. Each package and die is read on the first of its CPUs whose device
  // opens (and, for a package, whose unit register reads), as a counter moves to another CPU
  // once running (moveToSpare): any of them reads the same counter. A core that cannot be told
  // from its SMT sibling (no core_id, no sibling list) leaves the per-core sum out rather than
  // count a core twice.
  std::map<int, std::vector<int>> pkgCpus;                // package -> its CPUs
  std::map<int, std::vector<std::vector<int>>> dieCpus;   // package -> each die's CPUs
  std::map<std::pair<int, int>, size_t> dieIndex;         // (package, die) -> its place in dieCpus
  std::map<int, std::vector<int>> coreCpus;  // package -> one CPU per physical core
  std::set<std::pair<int, int>> seenCore;
  std::set<int> unknownCores;  // packages with a CPU whose core is unknown
  // The sampler's own CPU first, where it is pinned: the counters of its package, die and core
  // are then read there, without an interrupt on another CPU (each read of another CPU's MSR is
  // a cross-CPU call). A preference only: where its device is missing (a container given
  // /dev/cpu/0/msr alone, the sampler pinned to a housekeeping CPU) the next CPU reads them.
  std::vector<CpuTopo> byPreference = topo;
  std::stable_partition(byPreference.begin(), byPreference.end(), [&](const CpuTopo& t) { return t.cpu == opts.readerCpu; });
  for (const CpuTopo& t : byPreference) {
    pkgCpus[t.package].push_back(t.cpu);
    auto die = dieIndex.emplace(std::make_pair(t.package, t.die), dieCpus[t.package].size());
    if (die.second) dieCpus[t.package].emplace_back();
    dieCpus[t.package][die.first->second].push_back(t.cpu);
    if (t.core < 0) unknownCores.insert(t.package);
    else if (seenCore.emplace(t.package, t.core).second) coreCpus[t.package].push_back(t.cpu);
  }

  auto src = std::make_unique<MsrSource>();
  src->msrPath_ = opts.msrPath;
  src->msrOffsetShift_ = opts.msrOffsetShift;
  const unsigned shift = opts.msrOffsetShift;
  // The first of `cpus` whose device opens, or -1 with *err naming the first's failed open.
  auto firstOpen = [&](const std::vector<int>& cpus, SourceError* e) -> int {
    for (int cpu : cpus)
      if (src->fdOf(cpu) >= 0) return cpu;
    openError(expandCpuPath(opts.msrPath, cpus.front()), -src->fdOf(cpus.front()), opts, e);
    return -1;
  };
  // The CPUs that read the same counter as `cpu` does, by scope: its package's, its die's, or
  // its physical core's.
  enum class Scope { Package, Die, Core };
  auto othersOf = [&](int cpu, Scope scope) {
    std::vector<int> out;
    const CpuTopo* self = nullptr;
    for (const CpuTopo& t : topo)
      if (t.cpu == cpu) self = &t;
    if (!self) return out;
    for (const CpuTopo& t : topo) {
      if (t.cpu == cpu || t.package != self->package) continue;
      if ((scope == Scope::Die && t.die != self->die) || (scope == Scope::Core && t.core != self->core)) continue;
      out.push_back(t.cpu);
    }
    return out;
  };
  // The spares of a counter read on `cpu` (kSparesPerCounter of the others whose devices open),
  // and whether it has others at all.
  using Spares = std::pair<std::vector<MsrSource::Reader>, bool>;
  auto sparesOf = [&](int cpu, Scope scope) {
    Spares out;
    const std::vector<int> others = othersOf(cpu, scope);
    out.second = !others.empty();
    for (int other : others) {
      if (out.first.size() == kSparesPerCounter) break;
      const int fd = src->fdOf(other);
      if (fd >= 0) out.first.push_back({other, fd});
    }
    return out;
  };

  // reads: (CPU, MSR, the spares that could read it instead), each CPU's device open.
  // false with *err set: a counter that neither its CPU nor any spare could read, though the
  // package's first CPU has the register (a second die's CPU going offline, say): left out, the
  // domain would read that die's energy as 0 without a word.
  using Read = std::tuple<int, uint32_t, Spares>;
  auto addDomain = [&](const char* name, int package, double unit, const std::vector<Read>& reads) {
    std::vector<MsrSource::Counter> cs;
    for (const auto& r : reads) {
      const int cpu = std::get<0>(r);
      const uint32_t msr = std::get<1>(r);
      MsrSource::Counter c{cpu, src->fdOf(cpu), uint64_t(msr) << shift, WrapCounter(kEnergyModulus, 0, unit), std::get<2>(r).first,
                           std::get<2>(r).second};
      uint64_t v;
      const uint64_t readFrom = WrapCounter::clockNs();
      int rc = readMsr(c.fd, c.offset, &v);
      if (rc != 0 && !src->moveToSpare(c, &v)) {
        char hex[24];
        snprintf(hex, sizeof hex, "0x%X", msr);
        err->code = errnoName(-rc);
        err->message = expandCpuPath(opts.msrPath, cpu) + ": reading the " + name + " energy register " + hex + " failed (" +
                       std::strerror(-rc) + ")" + kNoSpareRead + ", though package " +
                       std::to_string(package) + "'s first CPU has it — is CPU " + std::to_string(cpu) +
                       " going offline? Try again, or use source 'powercap' or 'perf'";
        return false;
      }
      c.wrap.reset(v & 0xFFFFFFFFull, readFrom);
      cs.push_back(c);
    }
    for (auto& c : cs) {
      src->counters_.push_back(std::move(c));
      src->groups_.add(name, package, src->counters_.size() - 1);
    }
    Domain d;
    d.name = name;
    d.package = package;
    d.unitJoules = unit;
    // For a per-core sum each core wraps separately at 2^32 units of its own energy: one busy
    // core can take the whole domain's power, so the sum is safe only for 2^32 units too.
    d.wrapJoules = double(kEnergyModulus) * unit;
    src->mutableDomains().push_back(d);
    return true;
  };

  // A domain is present when its first read succeeds with a non-zero count: the kernel's own
  // rapl_check_domain test (the msr driver answers EIO for unimplemented MSRs, and implemented
  // but unused counters read zero).
  auto probeMsr = [shift](int fd, uint32_t msr) {
    uint64_t v;
    return readMsr(fd, uint64_t(msr) << shift, &v) == 0 && (v & 0xFFFFFFFFull) != 0;
  };

  bool havePsys = false;
  for (const auto& pc : pkgCpus) {
    const int pkg = pc.first;
    // The package's CPU: the first whose device opens and whose unit register reads. Where none
    // does, the first CPU's failure is named, its open's or its read's: the one the sampler's
    // CPU met where it is pinned, and CPU 0's of a first package otherwise, as everyone else's.
    const uint32_t unitMsr = intel ? kIntelUnit : kAmdUnit;
    uint64_t unitReg = 0;
    int pkgCpu = -1, fd = -1, readErr = 0;
    for (int cpu : pc.second) {
      const int cfd = src->fdOf(cpu);
      const int rc = cfd < 0 ? cfd : readMsr(cfd, uint64_t(unitMsr) << shift, &unitReg);
      if (rc == 0) {
        pkgCpu = cpu;
        fd = cfd;
        break;
      }
      if (cpu == pc.second.front()) readErr = cfd < 0 ? 0 : rc;
    }
    if (pkgCpu < 0 && readErr == 0) {
      firstOpen({pc.second.front()}, err);
      return nullptr;
    }
    if (pkgCpu < 0) {
      err->code = errnoName(-readErr);
      char hex[24];
      snprintf(hex, sizeof hex, "0x%X", unitMsr);
      err->message = expandCpuPath(opts.msrPath, pc.second.front()) + ": reading the RAPL unit register " + hex + " failed (" +
                     std::strerror(-readErr) + ") — this CPU or hypervisor does not expose RAPL MSRs; try source 'powercap', 'perf' or 'model'";
      return nullptr;
    }
    uint32_t esu = uint32_t((unitReg >> 8) & 0x1F);
    double unit = std::ldexp(1.0, -int(esu));
    if (intel && id.family == 6 && atomEnergyUnit(id.model)) unit = std::ldexp(1.0, int(esu)) * 1e-6;

    if (intel) {
      // Each domain read on every die of the package and summed; present when the first die has it.
      // Each die on the first of its CPUs whose device opens, the package's CPU first on its own.
      std::vector<std::pair<int, Spares>> dies;  // CPU, spares
      for (std::vector<int>& cpus : dieCpus[pkg]) {
        std::stable_partition(cpus.begin(), cpus.end(), [&](int cpu) { return cpu == pkgCpu; });
        const int cpu = firstOpen(cpus, err);
        if (cpu < 0) return nullptr;
        dies.emplace_back(cpu, sparesOf(cpu, Scope::Die));
      }
      auto onDies = [&](uint32_t msr) {
        std::vector<Read> reads;
        for (const auto& die : dies) reads.emplace_back(die.first, msr, die.second);
        return reads;
      };
      if (probeMsr(fd, kIntelPkg) && !addDomain("package", pkg, unit, onDies(kIntelPkg))) return nullptr;
      if (probeMsr(fd, kIntelPp0) && !addDomain("core", pkg, unit, onDies(kIntelPp0))) return nullptr;
      if (probeMsr(fd, kIntelPp1) && !addDomain("uncore", pkg, unit, onDies(kIntelPp1))) return nullptr;
      double dramUnit = id.family == 6 && fixedDramUnit(id.model) ? std::ldexp(1.0, -16) : unit;
      if (probeMsr(fd, kIntelDram) && !addDomain("dram", pkg, dramUnit, onDies(kIntelDram))) return nullptr;
      // psys covers the whole platform: counting it per package would count it twice. It counts
      // on one package only, not always package 0 (multi-socket Sapphire Rapids: the others read
      // zero), so the first package where it reads non-zero has it; it is reported as package 0.
      double psysUnit = id.family == 6 && fixedPsysUnit(id.model) ? 1.0 : unit;
      if (!havePsys && probeMsr(fd, kIntelPsys)) {
        if (!addDomain("psys", 0, psysUnit, {Read(pkgCpu, kIntelPsys, sparesOf(pkgCpu, Scope::Package))})) return nullptr;
        havePsys = true;
      }
    } else {
      if (probeMsr(fd, kAmdPkg) && !addDomain("package", pkg, unit, {Read(pkgCpu, kAmdPkg, sparesOf(pkgCpu, Scope::Package))}))
        return nullptr;
      // The per-core sum only where asked for: one cross-CPU read per core per sample.
      std::vector<Read> cores;
      bool ok = opts.msrAmdCores && unknownCores.count(pkg) == 0;
      for (int first : ok ? coreCpus[pkg] : std::vector<int>{}) {
        // The core's first CPU, else its SMT sibling: a thread offline at open leaves its core's
        // counter to the sibling, as it does once running (moveToSpare). Where none reads it,
        // the first CPU that failed is named, with its error (its first CPU's where none opens).
        std::vector<int> readers{first};
        for (int other : othersOf(first, Scope::Core)) readers.push_back(other);
        int cpu = -1, openErr = 0, readErr = 0, failedCpu = -1;  // failedCpu, readErr: the first read that failed
        uint64_t v = 0;
        for (int candidate : readers) {
          int cfd = src->fdOf(candidate);
          if (cfd < 0) {
            if (openErr == 0) openErr = -cfd;
            continue;
          }
          const int rc = readMsr(cfd, uint64_t(kAmdCore) << shift, &v);
          if (rc == 0) {
            cpu = candidate;
            break;
          }
          if (failedCpu < 0) {
            failedCpu = candidate;
            readErr = rc;
          }
        }
        if (cpu < 0 && failedCpu < 0) {
          openError(expandCpuPath(opts.msrPath, first), openErr, opts, err);
          return nullptr;
        }
        // The package's first core decides whether the register is there (non-zero, as probeMsr).
        if (cores.empty() && (cpu < 0 || (v & 0xFFFFFFFFull) == 0)) {
          ok = false;
          break;
        }
        // The first core has the register: one that cannot be read would drop the whole
        // domain without a word (no silent zeros), so it is named instead.
        if (cpu < 0) {
          err->code = errnoName(-readErr);
          err->message = expandCpuPath(opts.msrPath, failedCpu) + ": reading the core energy register 0xC001029A failed (" +
                         std::strerror(-readErr) + ")" + (readers.size() > 1 ? ", as on every CPU of its core," : "") +
                         " though the package's first core has it — is CPU " + std::to_string(failedCpu) +
                         " going offline? Try again, or use source 'powercap' or 'perf'";
          return nullptr;
        }
        cores.emplace_back(cpu, kAmdCore, sparesOf(cpu, Scope::Core));
      }
      // Each per-core counter wraps on its own; addDomain gives each its own WrapCounter and
      // read() sums the extended totals, so one core wrapping never loses 2^32 ticks.
      if (ok && !cores.empty() && !addDomain("core", pkg, unit, cores)) return nullptr;
    }
  }
  if (src->domains().empty()) {
    err->code = "ENODEV";
    err->message = "no RAPL energy counter answered through " + opts.msrPath + " (all read EIO or zero) — try source 'powercap', 'perf' or 'model'";
    return nullptr;
  }
  return src;
}

}  // namespace jouletrace
