// Opening sources by name, `auto`'s fall-through, and probing.
#include <time.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "energy/cpu_info.h"
#include "energy/sources_internal.h"
#include "errno_name.h"
#include "napi_util.h"

namespace jouletrace {
namespace {

using Opener = std::unique_ptr<EnergySource> (*)(const SourceOptions&, SourceError*);

// auto's order: msr is the cheapest read (one pread, no formatting), perf next (one read, but
// needs a perf event per domain), powercap formats a decimal string in the kernel, the model is
// an estimate.
const struct {
  const char* name;
  Opener open;
} kSources[] = {{"msr", openMsrSource}, {"perf", openPerfSource}, {"powercap", openPowercapSource}, {"model", openModelSource}};

// Reads through to the domains that counted when the source was opened, in their order.
class CountingDomains final : public EnergySource {
 public:
  CountingDomains(std::unique_ptr<EnergySource> inner, std::vector<size_t> keep)
      : inner_(std::move(inner)), keep_(std::move(keep)), all_(inner_->domains().size()) {
    const std::vector<Domain>& ds = inner_->domains();
    std::vector<char> kept(ds.size(), 0);
    for (size_t k : keep_) {
      domains_.push_back(ds[k]);
      kept[k] = 1;
    }
    for (size_t i = 0; i < ds.size(); i++)
      if (!kept[i]) notCounting_.push_back(ds[i]);
  }
  const char* name() const override { return inner_->name(); }
  // A failure of a domain left out is none of the sampler's: counted as a read error, it marked
  // every sample and kept calibrateBaseline() from ever finding a clean stretch.
  int read(DomainReading* out) override {
    const int rc = inner_->read(all_.data());
    bool keptFailed = false;
    for (size_t k = 0; k < keep_.size(); k++) {
      out[k] = all_[keep_[k]];
      keptFailed = keptFailed || out[k].failed;
    }
    return keptFailed ? rc : 0;
  }
  void rebase() override { inner_->rebase(); }
  void releaseHolds() override { inner_->releaseHolds(); }
  bool readFailure(size_t domain, SourceError* out) const override {
    return domain < keep_.size() && inner_->readFailure(keep_[domain], out);
  }

 private:
  std::unique_ptr<EnergySource> inner_;
  std::vector<size_t> keep_;
  std::vector<DomainReading> all_;  // sized once: read() runs on the sampler thread
};

// Domains that draw power whenever the machine is on: a package, its memory, the platform. Core
// and uncore (graphics) planes can idle at no measurable energy for long. Coarse units (psys in
// whole joules on Sapphire/Emerald Rapids' MSR) may not tick within the window; not judged.
bool alwaysDraws(const Domain& d) {
  return (d.name == "package" || d.name == "dram" || d.name == "psys") && d.unitJoules <= 1e-3;
}

// A hypervisor can list RAPL (the perf power PMU's events, MSRs, powercap zones) and still hand
// out counters that never move: seen on a Firecracker guest of an Emerald Rapids host, whose
// power PMU offered energy-psys and counted 0 forever. Read as a measurement, that is a silent
// 0 W. Real counters update about every millisecond, so the source is read until every domain
// that always draws power has moved, or the window ends. A source none of whose counters moved is
// refused like a missing one (`auto` moves on); such a domain beside counting ones is left out
// and listed in notCounting(). A domain the source opened in several places (chooseReaders():
// perf's psys) is read, from the first check on, where it first moved.
std::unique_ptr<EnergySource> checkCounting(std::unique_ptr<EnergySource> src, const SourceOptions& opts,
                                            SourceError* err) {
  const std::vector<Domain>& ds = src->domains();
  if (opts.liveCheckMs <= 0 || ds.empty() || ds.front().estimated) {
    src->chooseReaders(true);
    return src;
  }
  const size_t n = ds.size();
  std::vector<DomainReading> first(n), now(n);
  int rc = src->read(first.data());
  bool anyRead = rc == 0;
  std::vector<char> moved(n, 0);
  bool anyMoved = false;
  const uint64_t deadline = monotonicNs() + uint64_t(opts.liveCheckMs) * 1000000ull;
  const timespec pause{0, 200000};
  // Chosen before the read: the domain then reads from the place chosen, which has moved.
  bool chosen = false;
  for (;;) {
    nanosleep(&pause, nullptr);
    chosen = chosen || src->chooseReaders(false);
    rc = src->read(now.data());
    anyRead = anyRead || rc == 0;
    bool waiting = false;
    for (size_t i = 0; i < n; i++) {
      if (now[i].ticks != first[i].ticks) moved[i] = 1;
      anyMoved = anyMoved || moved[i];
      waiting = waiting || (!moved[i] && alwaysDraws(ds[i]));
    }
    if ((anyMoved && !waiting && chosen) || monotonicNs() >= deadline) break;
  }
  if (!chosen) src->chooseReaders(true);
  const std::string window = std::to_string(opts.liveCheckMs) + " ms";
  if (!anyRead) {
    err->code = errnoName(-rc);
    err->message = "every read of its energy counters failed for " + window + " after opening (" +
                   std::strerror(-rc) + ") — the interface answered once and then stopped: try another "
                   "source (msr, perf, powercap or model)";
    return nullptr;
  }
  if (!anyMoved) {
    std::string which;
    for (size_t i = 0; i < n; i++)
      which += (i ? ", " : "") + ds[i].name + "-" + std::to_string(ds[i].package) + " stayed at " + std::to_string(now[i].raw);
    err->code = "ERR_JOULETRACE_NOT_COUNTING";
    err->message = "no energy counter advanced in " + window + " (" + which +
                   "; RAPL counters move about every millisecond) — the machine lists RAPL but does not count "
                   "it, as hypervisors commonly do: measure on bare metal or in a VM given RAPL, or use source "
                   "'model' (an estimate); liveCheckMs sets the wait";
    return nullptr;
  }
  std::vector<size_t> keep;
  for (size_t i = 0; i < n; i++)
    if (moved[i] || !alwaysDraws(ds[i])) keep.push_back(i);
  if (keep.size() == n) return src;
  return std::make_unique<CountingDomains>(std::move(src), std::move(keep));
}

// A CPU topology root given that holds none is refused, whichever source: without it the model
// takes every CPU for package 0, perf each CPU of its cpumask for a package of its own, and the
// Sampler's attribution every CPU for package 0 — fallbacks for a container without sysfs at the
// default root, where they stay, but a typo's silent merge of packages elsewhere.
bool givenCpuRootReadable(const SourceOptions& opts, SourceError* err) {
  if (opts.sysfsCpuRoot == SourceOptions().sysfsCpuRoot) return true;
  std::vector<CpuTopo> topo;
  return readTopology(opts.sysfsCpuRoot, &topo, err);
}

std::unique_ptr<EnergySource> openCounting(Opener open, const SourceOptions& opts, SourceError* err) {
  std::unique_ptr<EnergySource> src = open(opts, err);
  return src ? checkCounting(std::move(src), opts, err) : nullptr;
}

}  // namespace

std::vector<size_t> primaryDomainIndices(const std::vector<Domain>& domains) {
  std::string primary;
  for (const char* name : {"package", "psys"}) {
    for (const auto& d : domains) {
      if (primary.empty() && d.name == name) primary = name;
    }
  }
  if (primary.empty() && !domains.empty()) primary = domains[0].name;
  std::vector<size_t> out;
  for (size_t i = 0; i < domains.size(); i++)
    if (domains[i].name == primary) out.push_back(i);
  return out;
}

std::unique_ptr<EnergySource> openEnergySource(const std::string& which, const SourceOptions& opts, SourceError* err,
                                               std::vector<SourceStatus>* skipped) {
  if (!givenCpuRootReadable(opts, err)) return nullptr;
  if (which != "auto") {
    for (const auto& s : kSources)
      if (which == s.name) return openCounting(s.open, opts, err);
    err->code = "ERR_INVALID_ARG_VALUE";
    err->message = "unknown energy source '" + which + "' (expected auto, msr, perf, powercap or model)";
    return nullptr;
  }
  std::string why;
  for (const auto& s : kSources) {
    SourceError e;
    std::unique_ptr<EnergySource> src = openCounting(s.open, opts, &e);
    if (src) return src;
    if (skipped) {
      SourceStatus st;
      st.name = s.name;
      st.error = e;
      skipped->push_back(st);
    }
    why += std::string("\n  ") + s.name + ": " + e.code + " " + e.message;
    *err = e;
  }
  err->message = "no energy source could be opened:" + why;
  return nullptr;
}

std::vector<SourceStatus> probeEnergySources(const SourceOptions& opts) {
  std::vector<SourceStatus> out;
  for (const auto& s : kSources) {
    SourceStatus st;
    st.name = s.name;
    std::unique_ptr<EnergySource> src = givenCpuRootReadable(opts, &st.error) ? openCounting(s.open, opts, &st.error) : nullptr;
    st.available = src != nullptr;
    if (src) {
      st.domains = src->domains();
      st.notCounting = src->notCounting();
    }
    out.push_back(st);
  }
  return out;
}

}  // namespace jouletrace
