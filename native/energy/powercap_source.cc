// RAPL through the powercap sysfs class: each intel-rapl zone's energy_uj, read with pread on a
// descriptor kept open, so a sample costs one system call and no path lookup.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "energy/counter_groups.h"
#include "energy/cpu_info.h"
#include "energy/sources_internal.h"
#include "energy/wrap_counter.h"
#include "errno_name.h"
#include "napi_util.h"
#include "sys_file.h"

namespace jouletrace {
namespace {

// energy_uj is at most 20 digits plus a newline.
int readMicrojoules(int fd, uint64_t* out) {
  char buf[32];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n < 0) return -errno;
  if (n == 0) return -EIO;
  buf[n] = '\0';
  uint64_t v = 0;
  ssize_t i = 0;
  if (buf[0] < '0' || buf[0] > '9') return -EIO;
  for (; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) v = v * 10 + uint64_t(buf[i] - '0');
  *out = v;
  return 0;
}

constexpr int64_t kReopenIntervalNs = 100'000'000;

class PowercapSource final : public EnergySource {
 public:
  struct Zone {
    UniqueFd fd;
    WrapCounter wrap;
    std::string path;  // energy_uj, opened again when the zone is registered again
    int64_t reopenTriedNs = -kReopenIntervalNs;
    bool failed = false;     // at the last read
    bool restarted = false;  // at the last read: the counter started again (ERANGE)
    int error = 0;           // -errno of the last read, 0 when it succeeded
  };
  const char* name() const override { return "powercap"; }
  int read(DomainReading* out) override {
    int firstErr = 0;
    // Each zone's read falls between the clock read before it and the one after (see
    // WrapCounter::update).
    uint64_t readFrom = WrapCounter::clockNs();
    for (Zone& z : zones_) {
      uint64_t v = 0;
      int rc = readMicrojoules(z.fd.get(), &v);
      if ((rc == -ENODEV || rc == -ENOENT) && reopen(z)) rc = readMicrojoules(z.fd.get(), &v);
      const uint64_t readBy = WrapCounter::clockNs();
      // The wrap counter carries on across a reopen: the hardware counter under the new zone
      // kept counting, so the gap's energy comes whole with this read (or, should the new zone
      // read as a counter that started again, ERANGE as for any restart).
      if (rc == 0 && !z.wrap.update(v, readFrom, readBy)) rc = -ERANGE;  // the counter started again
      readFrom = readBy;
      z.failed = rc != 0;
      z.restarted = rc == -ERANGE;
      z.error = rc;
      if (rc != 0 && firstErr == 0) firstErr = rc;
    }
    // A domain is its zones' sum: one zone, or a multi-die package's dies.
    groups_.sum(zones_, readFrom, out);
    return firstErr;
  }
  void rebase() override {
    for (auto& z : zones_) z.wrap.rebase();
    groups_.rebase();
  }
  void releaseHolds() override { groups_.releaseHolds(); }
  bool readFailure(size_t domain, SourceError* out) const override {
    const Zone* z = groups_.firstFailed(zones_, domain);
    if (!z) return false;
    describeFailedRead(z->error, z->path + ": read", out);
    return true;
  }

  // A zone the kernel removed (intel_rapl_msr unloaded and loaded again, every CPU of its
  // package taken offline) answers ENODEV on the old descriptor forever, while the zone
  // registered in its place has the same path. Tried at most every 100 ms, so a zone that stays
  // gone costs one failed open() per 100 ms, not one per sample; the path was built at open, so
  // the sampler thread allocates nothing here. The one open on the sampler thread, and it cannot
  // be done ahead as the msr source opens its spares: the zone registered again is a new file,
  // which no descriptor held from before reads. So it needs read access to energy_uj (root's,
  // 0400) at that time: a process that dropped root after opening reads ENODEV here (README,
  // Least privilege).
  static bool reopen(Zone& z) {
    const int64_t now = int64_t(monotonicNs());
    if (now - z.reopenTriedNs < kReopenIntervalNs) return false;
    z.reopenTriedNs = now;
    int fd = openForReading(z.path);
    if (fd < 0) return false;
    z.fd = UniqueFd(fd);
    return true;
  }

  std::vector<Zone> zones_;
  CounterGroups groups_;
  std::vector<Domain>& mutableDomains() { return domains_; }
};

bool isDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

constexpr char kZonePrefix[] = "intel-rapl:";

bool isHexDigit(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// "intel-rapl:0" or "intel-rapl:0:1" (not "intel-rapl-mmio:0", which mirrors the same package
// counters through MMIO and would count them twice). The ids are hex: powercap_register_zone
// names zones "%s:%x", so the eleventh package is intel-rapl:a.
bool isRaplZoneName(const std::string& n) {
  const std::string prefix = kZonePrefix;
  if (n.compare(0, prefix.size(), prefix) != 0 || n.size() == prefix.size()) return false;
  for (size_t i = prefix.size(); i < n.size(); i++)
    if (!(isHexDigit(n[i]) || n[i] == ':')) return false;
  return true;
}

// Zones in the order of their ids as numbers (intel-rapl:2 before intel-rapl:10), each parent
// before its subzones.
struct ZoneIdLess {
  // Of a name isRaplZoneName accepted.
  static std::vector<unsigned long> ids(const std::string& n) {
    std::vector<unsigned long> out;
    const char* p = n.c_str() + std::strlen(kZonePrefix);
    for (;;) {
      char* end = nullptr;
      out.push_back(std::strtoul(p, &end, 16));
      if (*end != ':') return out;
      p = end + 1;
    }
  }
  bool operator()(const std::string& a, const std::string& b) const {
    auto x = ids(a), y = ids(b);
    return x != y ? x < y : a < b;
  }
};
using ZoneMap = std::map<std::string, std::string, ZoneIdLess>;  // zone name -> directory

void listZones(const std::string& dir, ZoneMap* zones) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> found;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (isRaplZoneName(n) && isDir(dir + "/" + n)) found.push_back(n);
  }
  ::closedir(d);
  for (const std::string& n : found) {
    // The class directory lists every zone (subzones too, as links); the device tree nests
    // subzones inside their parent. Keyed by zone name, a zone seen both ways counts once.
    zones->emplace(n, dir + "/" + n);
    listZones(dir + "/" + n, zones);
  }
}

// energy_uj's mode is 0400 since the fix for CVE-2020-8694 (Platypus): its readings let a local
// user infer what other processes compute, keys included. Made readable by all, they would again,
// so the grants named reach this service alone, narrowest first.
std::string energyAccessRemedy() {
  return "energy_uj is root's alone (mode 0400) since the fix for CVE-2020-8694 (Platypus), as its readings leak what "
         "other processes compute: run as root, or give this service alone read access: a group of its own (a udev rule "
         "that runs chgrp <group> and chmod g+r on each RAPL zone's energy_uj as the zone is added, see README, Least "
         "privilege; the service in that group, SupplementaryGroups= in its systemd unit) or CAP_DAC_READ_SEARCH "
         "(AmbientCapabilities=CAP_DAC_READ_SEARCH beside its User=), not read access for all, which reopens the leak to "
         "every local user";
}

}  // namespace

std::unique_ptr<EnergySource> openPowercapSource(const SourceOptions& opts, SourceError* err) {
  ZoneMap zones;
  listZones(opts.powercapRoot, &zones);
  if (zones.empty()) {
    err->code = "ENOENT";
    const bool given = opts.powercapRoot != SourceOptions().powercapRoot;
    // modprobe cannot help a kernel that loads no modules: its drivers are built in or absent.
    const std::string noModules = given ? "" : noModulesNote(opts);
    if (!noModules.empty()) {
      err->message = "no RAPL zones under " + opts.powercapRoot +
                     " — this kernel has no RAPL powercap driver built in and no module to load (" + noModules +
                     "), as is common in VMs, which usually expose no RAPL at all; try source 'msr', 'perf' or 'model'";
    } else {
      err->message = "no RAPL zones under " + opts.powercapRoot + " — " +
                     missingPathRemedy(opts.powercapRoot, SourceOptions().powercapRoot, "powercapRoot",
                                       "load the RAPL powercap driver: modprobe intel_rapl_msr (Intel, and AMD Zen), or "
                                       "modprobe intel_rapl_tpmi where RAPL is TPMI's (Granite Rapids, Sierra Forest); VMs "
                                       "usually expose no RAPL at all");
    }
    return nullptr;
  }
  // Package of each top-level zone, from its name "package-N".
  std::map<std::string, int> topPackage;
  std::map<std::string, std::string> zoneName;
  for (const auto& z : zones) {
    std::string n;
    int nrc = readSmallFile(z.second + "/name", &n);
    if (nrc < 0) {
      // Skipped, a package-N zone would take its package's energy with it, and file its dram
      // subzone under package 0, without a word.
      err->code = errnoName(-nrc);
      err->message = z.second + "/name: " + std::strerror(-nrc) + " — cannot tell which RAPL domain this zone is";
      return nullptr;
    }
    while (!n.empty() && (n.back() == '\n' || n.back() == ' ')) n.pop_back();
    zoneName[z.first] = n;
    if (n.compare(0, 8, "package-") == 0) topPackage[z.first] = std::atoi(n.c_str() + 8);
  }

  // On AMD and Hygon the kernel's "core" subzone reads one core's counter (0xC001029A on the
  // package's lead CPU), not the package's cores: under the name of the msr source's sum over
  // every core it would read a fraction of it. Left out, as Linux's own perf PMU leaves it. And
  // their package zones are one a package, whatever dies the kernel lists (counter_groups.h).
  const CpuIdentity cpu = detectCpu(opts);
  const bool amdLike = cpu.vendor == Vendor::Amd || cpu.vendor == Vendor::Hygon;

  auto src = std::make_unique<PowercapSource>();
  // Zones sorted by id put each package before its subzones, the order users expect.
  // "package-N-die-M" zones (Intel's die-scoped RAPL) and their subzones add into package N's
  // domains.
  for (const auto& z : zones) {
    auto nit = zoneName.find(z.first);
    if (nit == zoneName.end()) continue;
    const std::string& n = nit->second;
    Domain d;
    std::string id = z.first.substr(std::strlen(kZonePrefix));
    size_t colon = id.find(':');
    std::string parent = colon == std::string::npos ? "" : kZonePrefix + id.substr(0, colon);
    if (n.compare(0, 8, "package-") == 0) {
      d.name = "package";
      d.package = topPackage[z.first];
    } else if (n == "core" && amdLike) {
      continue;
    } else if (n == "core" || n == "uncore" || n == "dram" || n == "psys") {
      d.name = n;
      auto pit = topPackage.find(parent);
      d.package = n == "psys" || pit == topPackage.end() ? 0 : pit->second;
    } else {
      continue;  // unknown zone kinds are not guessed at
    }
    // psys is one platform-wide counter: the msr source reads it once (on the first package
    // where it is non-zero), perf opens energy-psys on one CPU. Since "powercap/intel_rapl:
    // enumerate Psys RAPL domain together with package RAPL domain" (2020) the kernel
    // tries a psys zone with each package and registers it wherever the counter reads non-zero;
    // two such zones are the one platform counted twice, and were summed. The first by zone id
    // (registered first, as packages come up in order) is read, the others left out.
    if (d.name == "psys" && src->groups_.has("psys", 0)) continue;
    // AMD's package counter is package-scoped: a package's further "die" zones (one a CCD on
    // Linux 6.10 and 6.11) read the very same counter, and adding them multiplied its energy.
    if (amdLike && src->groups_.has(d.name, d.package)) continue;
    std::string energyPath = z.second + "/energy_uj";
    int fd = openForReading(energyPath);
    if (fd < 0) {
      int e = -fd;
      err->code = errnoName(e);
      if (const char* kind = notAFile(energyPath, e)) {
        err->message = notAFileMessage(energyPath, kind, "powercapRoot", SourceOptions().powercapRoot);
      } else if (e == EACCES || e == EPERM) {
        err->message = energyPath + ": permission denied — " + energyAccessRemedy();
      } else {
        err->message = energyPath + ": " + std::strerror(e);
      }
      return nullptr;
    }
    PowercapSource::Zone zone{UniqueFd(fd), WrapCounter(), energyPath};
    uint64_t v = 0;
    const uint64_t readFrom = WrapCounter::clockNs();
    int rc = readMicrojoules(fd, &v);
    if (rc < 0) {
      err->code = errnoName(-rc);
      err->message = energyPath + ": " + std::strerror(-rc) + (rc == -EACCES || rc == -EPERM ? " — " + energyAccessRemedy() : "");
      return nullptr;
    }
    // Without its range a wrap (every half hour or so at 150 W) would look like a reset and
    // its energy be lost: refuse the source rather than under-count.
    long long maxRange = 0;
    std::string rangePath = z.second + "/max_energy_range_uj";
    rc = readIntegerFile(rangePath, &maxRange);
    if (rc < 0 || maxRange <= 0) {
      err->code = rc < 0 ? errnoName(-rc) : "EINVAL";
      err->message = rangePath + ": " + (rc < 0 ? std::strerror(-rc) : "not a positive number") +
                     " — without the counter's range its wraps cannot be told from resets";
      return nullptr;
    }
    const uint64_t modulus = uint64_t(maxRange) + 1;
    zone.wrap = WrapCounter(modulus, 0, 1e-6);
    zone.wrap.reset(v, readFrom);
    d.unitJoules = 1e-6;
    // Each die's zone wraps on its own: one die can take the whole package's power, so a sum of
    // dies is safe only for one zone's range.
    d.wrapJoules = double(modulus) * 1e-6;
    src->zones_.push_back(std::move(zone));
    if (src->groups_.add(d.name, d.package, src->zones_.size() - 1)) src->mutableDomains().push_back(d);
  }
  if (src->domains().empty()) {
    err->code = "ENOENT";
    // Every name was read (an unreadable one is refused above): none is a domain's.
    err->message = "RAPL zones under " + opts.powercapRoot + " have no domain's name (package-N, core, uncore, dram, psys)";
    return nullptr;
  }
  return src;
}

}  // namespace jouletrace
