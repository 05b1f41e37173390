// Estimated energy for machines without counters (VMs, most clouds): power = idle + (max - idle)
// x utilisation, utilisation from /proc/stat busy time, integrated into microjoule ticks.
//
// Default watts, for the whole machine with n online CPUs:
//   idle = 10 W + 1 W x n,  max = 10 W + 8 W x n
// 10 W stands for the uncore/platform floor of a socket; 1 W per idle CPU and ~7 W of dynamic
// power per busy CPU sit inside the published spread for server parts (a 32-core 180 W TDP
// package is ~5.3 W/core at full load plus turbo headroom; per-vCPU cloud estimates such as the
// Cloud Carbon Footprint coefficients use 0.7-3.5 W per vCPU without platform power). They are
// orders of magnitude, which is why every figure is marked estimated and both are overridable.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "energy/cpu_info.h"
#include "energy/sources_internal.h"
#include "errno_name.h"
#include "napi_util.h"
#include "sys_file.h"

namespace jouletrace {
namespace {

// /proc/stat only advances every USER_HZ tick (10 ms at 100 Hz): reading it more often costs a
// system call and a kernel formatting pass for no new information.
constexpr uint64_t kRefreshNs = 10'000'000;

// The figures are worked in nJ (W x ns) and counted in µJ: a 64-bit count of nJ overflows after
// 18.4 GJ (213 days at 1 kW), one of µJ after 18,400 GJ.
constexpr double kNjPerTick = 1000;

class ModelSource final : public EnergySource {
 public:
  struct Pkg {
    double share = 0;       // this package's fraction of all CPUs
    uint64_t busy = 0, total = 0;  // jiffies at the last valuation
    uint64_t scanBusy = 0, scanTotal = 0;
    double watts = 0;       // at the last known utilisation
    double credited = 0;    // nJ credited at the running rate since the last valuation
    // nJ credited beyond the estimate (the rate fell at a refresh), paid back from later credits
    // above idle power: the total never goes down, is not left high either, and an idle
    // machine still reads its idle power.
    double debt = 0;
    double paid = 0;        // nJ of debt paid since the last valuation
    double frac = 0;        // nJ short of a tick
    uint64_t ticks = 0;     // µJ since open
    // Time per jiffy of this package (all its CPUs), averaged over recent periods, and the busy
    // time the last valuation could not fit into its period (see utilisation()).
    double lenAvg = 0, jiffiesAvg = 0;
    double carryNs = 0;
    // End of the last period valued: a refresh that finds no new jiffy leaves it open (read()).
    uint64_t valuedNs = 0;
  };

  const char* name() const override { return "model"; }

  double powerAt(double util) const { return idleW_ + (maxW_ - idleW_) * util; }

  // Sums busy/total jiffies per package from the buffer into Pkg::scan*. Returns false when
  // the file does not look like /proc/stat.
  bool scan() {
    for (Pkg& p : pkgs_) p.scanBusy = p.scanTotal = 0;
    ssize_t n = ::pread(fd_.get(), buf_.data(), buf_.size() - 1, 0);
    if (n <= 0) return false;
    buf_[size_t(n)] = '\0';
    const char* s = buf_.data();
    bool any = false;
    while (s[0] == 'c' && s[1] == 'p' && s[2] == 'u') {
      const char* p = s + 3;
      if (*p >= '0' && *p <= '9') {
        long cpu = 0;
        while (*p >= '0' && *p <= '9') cpu = cpu * 10 + (*p++ - '0');
        uint64_t f[8] = {0};
        for (int i = 0; i < 8; i++) {
          while (*p == ' ') p++;
          if (*p < '0' || *p > '9') break;
          uint64_t v = 0;
          while (*p >= '0' && *p <= '9') v = v * 10 + uint64_t(*p++ - '0');
          f[i] = v;
        }
        // user nice system idle iowait irq softirq steal; guest time is already inside user.
        // Steal is time the hypervisor gave this vCPU's CPU to someone else: not this machine's
        // work, so not busy, but time all the same (a jiffy's worth of time stays a jiffy's).
        uint64_t busy = f[0] + f[1] + f[2] + f[5] + f[6];
        uint64_t total = busy + f[3] + f[4] + f[7];
        if (cpu >= 0 && size_t(cpu) < pkgOfCpu_.size() && pkgOfCpu_[size_t(cpu)] >= 0) {
          Pkg& pk = pkgs_[size_t(pkgOfCpu_[size_t(cpu)])];
          pk.scanBusy += busy;
          pk.scanTotal += total;
          any = true;
        }
      }
      const char* nl = std::strchr(s, '\n');
      if (!nl) break;
      s = nl + 1;
    }
    return any;
  }

  // A period of `span` ns holds one to three jiffies per CPU on a small machine, and which
  // period a busy jiffy lands in is chance: valued as dBusy / dTotal period by period, a
  // spinning CPU read 0%, then 67%, then 100%, and the average of those ratios ran 10-18% of the
  // idle-to-max range below the ratio of the sums (the mean of ratios weighs a period of few
  // jiffies as much as one of many). So a busy jiffy is worth the package's recent average time
  // per jiffy, and busy time beyond a period's length carries into the next: over any run of
  // periods the busy time is the busy jiffies times that average, as in /proc/stat's sums.
  // (The period's own jiffies are in the average, by its weight: for a 10 ms period that
  // values a period of many busy jiffies, which has many in all, about 1.5% low.)
  static double utilisation(Pkg& p, uint64_t dBusy, uint64_t dTotal, double span) {
    const double perJiffy = span / double(dTotal);
    const double avgPerJiffy = p.jiffiesAvg > 0 ? p.lenAvg / p.jiffiesAvg : 0;
    // A CPU back online brings its lifetime jiffies in one period, and counters that stalled
    // bring theirs at once: such a period says nothing about the time per jiffy, and averaged
    // in, it would have a busy package read idle for half a second. The average starts again
    // from the period, whose own ratio then values it.
    if (avgPerJiffy == 0 || perJiffy * 3 < avgPerJiffy || perJiffy > 3 * avgPerJiffy) {
      p.lenAvg = span;
      p.jiffiesAvg = double(dTotal);
      p.carryNs = 0;
    } else {
      // Weighted by time (about the last 80 ms): a 10 ms period moves the average by an
      // eighth, and a long one (reads 300 ms apart) is valued by its own jiffies, not by the
      // few of the periods before it.
      const double w = 1.0 - std::exp(-span / 80e6);
      p.lenAvg += w * (span - p.lenAvg);
      p.jiffiesAvg += w * (double(dTotal) - p.jiffiesAvg);
    }
    const double busyNs = double(dBusy) * p.lenAvg / p.jiffiesAvg + p.carryNs;
    const double util = span > 0 ? std::fmin(1.0, busyNs / span) : 1.0;
    // Carried for at most one more period: busy time that fits in none is an overcount.
    p.carryNs = std::fmin(std::fmax(0.0, busyNs - span), span);
    return util;
  }

  int read(DomainReading* out) override {
    uint64_t now = monotonicNs();
    double dt = double(now - lastNs_);
    lastNs_ = now;
    int rc = 0;
    bool refresh = now - lastRefreshNs_ >= kRefreshNs;
    bool scanned = refresh && scan();
    if (refresh && !scanned) rc = -EIO;
    if (refresh) scanFailed_ = !scanned;
    for (size_t i = 0; i < pkgs_.size(); i++) {
      Pkg& p = pkgs_[i];
      double add = 0;
      bool valued = false;
      if (scanned) {
        // A CPU going offline drops its line from /proc/stat and the sums shrink: rebase
        // without a utilisation rather than take the wrapped differences for one.
        const bool shrank = p.scanTotal < p.total || p.scanBusy < p.busy;
        uint64_t dBusy = shrank ? 0 : p.scanBusy - p.busy, dTotal = shrank ? 0 : p.scanTotal - p.total;
        if (shrank) {
          p.jiffiesAvg = 0;
          p.carryNs = 0;
        }
        // No jiffy at all (a package of one CPU often sees none in 10 ms): nothing to value the
        // time by yet. The period goes on, credited at the running rate, until jiffies come.
        if (shrank || dTotal > 0) {
          valued = true;
          const double span = double(now - p.valuedNs);
          if (dTotal > 0) p.watts = p.share * powerAt(utilisation(p, dBusy, dTotal, span));
          p.busy = p.scanBusy;
          p.total = p.scanTotal;
          // The period since the last valuation is worth watts(new utilisation) x its length;
          // part of it was already credited at the old rate. Credited too much (utilisation
          // fell): a debt, since the total never goes down (a busy-idle alternation every 10 ms
          // read 65% high when the excess was dropped instead).
          const double worth = p.watts * span;
          if (worth >= p.credited) {
            // What it still owes this period pays the debt first, down to idle power over it.
            const double floor = p.share * powerAt(0) * span;
            const double owed = worth - p.credited;
            const double pay = std::fmin(std::fmin(p.debt, owed), std::fmax(0.0, worth - p.paid - floor));
            p.debt -= pay;
            add = owed - pay;
          } else {
            p.debt += p.credited - worth;
          }
          p.credited = 0;
          p.paid = 0;
          p.valuedNs = now;
        }
      }
      if (!valued) {
        const double credit = p.watts * dt;  // W x ns = nJ
        p.credited += credit;
        const double pay = std::fmin(std::fmax(0.0, credit - p.share * powerAt(0) * dt), p.debt);
        p.debt -= pay;
        p.paid += pay;
        add = credit - pay;
      }
      p.frac += add;
      double whole = std::floor(p.frac / kNjPerTick);
      p.ticks += uint64_t(whole);
      p.frac -= whole * kNjPerTick;
      out[i].raw = p.ticks;
      out[i].ticks = p.ticks;
      out[i].failed = rc != 0;  // one file for every package
    }
    if (scanned) lastRefreshNs_ = now;
    return rc;
  }

  bool readFailure(size_t domain, SourceError* out) const override {
    if (!scanFailed_ || domain >= pkgs_.size()) return false;
    out->code = "EIO";
    out->message = procStatPath_ + ": unreadable, or no cpuN lines for the online CPUs";
    return true;
  }

  UniqueFd fd_;
  std::string procStatPath_;
  bool scanFailed_ = false;  // at the last refresh
  std::vector<char> buf_;
  std::vector<int> pkgOfCpu_;  // cpu -> index into pkgs_, -1 if offline
  std::vector<Pkg> pkgs_;
  double idleW_ = 0, maxW_ = 0;
  uint64_t lastNs_ = 0, lastRefreshNs_ = 0;
  std::vector<Domain>& mutableDomains() { return domains_; }
};

}  // namespace

std::unique_ptr<EnergySource> openModelSource(const SourceOptions& opts, SourceError* err) {
  auto src = std::make_unique<ModelSource>();
  int fd = openForReading(opts.procStatPath);
  if (fd < 0) {
    int e = -fd;
    err->code = errnoName(e);
    if (const char* kind = notAFile(opts.procStatPath, e)) {
      err->message = notAFileMessage(opts.procStatPath, kind, "procStatPath", SourceOptions().procStatPath);
      return nullptr;
    }
    err->message = opts.procStatPath + ": " + std::strerror(e) + " — " +
                   missingPathRemedy(opts.procStatPath, SourceOptions().procStatPath, "procStatPath",
                                     "the model source needs procfs mounted at /proc");
    return nullptr;
  }
  src->fd_ = UniqueFd(fd);
  src->procStatPath_ = opts.procStatPath;

  std::vector<CpuTopo> topo;
  SourceError topoErr;
  if (!readTopology(opts.sysfsCpuRoot, &topo, &topoErr)) {
    // No sysfs at the default root (some containers): every CPU that /proc/stat lists, in one
    // package. Another root that holds none was refused before (openEnergySource).
    std::string text;
    if (readSmallFile(opts.procStatPath, &text) == 0) {
      size_t pos = 0;
      while ((pos = text.find("\ncpu", pos)) != std::string::npos) {
        pos += 4;
        if (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
          CpuTopo t;
          t.cpu = std::atoi(text.c_str() + pos);
          t.core = t.cpu;
          topo.push_back(t);
        }
      }
    }
  }
  if (topo.empty()) {
    err->code = "ENOENT";
    err->message = opts.procStatPath + " lists no CPUs and " + opts.sysfsCpuRoot + "/online is unreadable";
    return nullptr;
  }
  std::map<int, size_t> pkgIndex;
  int maxCpu = 0;
  for (const CpuTopo& t : topo) {
    pkgIndex.emplace(t.package, 0);
    if (t.cpu > maxCpu) maxCpu = t.cpu;
  }
  size_t k = 0;
  for (auto& pi : pkgIndex) pi.second = k++;
  src->pkgs_.resize(pkgIndex.size());
  src->pkgOfCpu_.assign(size_t(maxCpu) + 1, -1);
  for (const CpuTopo& t : topo) {
    size_t idx = pkgIndex[t.package];
    src->pkgOfCpu_[size_t(t.cpu)] = int(idx);
    src->pkgs_[idx].share += 1.0 / double(topo.size());
  }
  double n = double(topo.size());
  src->idleW_ = opts.modelIdleWatts >= 0 ? opts.modelIdleWatts : 10.0 + 1.0 * n;
  src->maxW_ = opts.modelMaxWatts >= 0 ? opts.modelMaxWatts : 10.0 + 8.0 * n;
  if (src->maxW_ < src->idleW_) {
    // Both given were checked in TypeScript; one against the other's default is checked here,
    // where the CPU count is known. Raising max to idle quietly would ignore the user's figure.
    char msg[320];
    if (opts.modelMaxWatts >= 0) {
      snprintf(msg, sizeof msg, "options.modelMaxWatts (%g W) is below the default idle power, 10 W + 1 W per CPU = %g W for %d CPUs; give options.modelIdleWatts too",
               src->maxW_, src->idleW_, int(n));
    } else {
      snprintf(msg, sizeof msg, "options.modelIdleWatts (%g W) is above the default maximum power, 10 W + 8 W per CPU = %g W for %d CPUs; give options.modelMaxWatts too",
               src->idleW_, src->maxW_, int(n));
    }
    err->code = "ERR_OUT_OF_RANGE";
    err->message = msg;
    return nullptr;
  }
  // A cpu line is under 256 bytes; the lines after them (intr, ...) are never needed.
  src->buf_.resize(256 * (size_t(maxCpu) + 2) + 4096);
  if (!src->scan()) {
    err->code = "EINVAL";
    err->message = opts.procStatPath + ": no cpuN lines for the online CPUs — not a /proc/stat file";
    return nullptr;
  }
  src->lastNs_ = src->lastRefreshNs_ = monotonicNs();
  for (ModelSource::Pkg& p : src->pkgs_) {
    p.busy = p.scanBusy;
    p.total = p.scanTotal;
    p.valuedNs = src->lastNs_;
    // Until the first refresh measures utilisation, run at idle power: an underestimate that
    // the first refresh corrects upwards (it never needs to take energy back).
    p.watts = p.share * src->idleW_;
  }
  for (const auto& pi : pkgIndex) {
    Domain d;
    d.name = "package";
    d.package = pi.first;
    d.unitJoules = 1e-6;  // kNjPerTick nJ
    d.estimated = true;
    d.wrapJoules = 0;
    d.idleWatts = src->idleW_ * src->pkgs_[pi.second].share;
    src->mutableDomains().push_back(d);
  }
  return src;
}

}  // namespace jouletrace
