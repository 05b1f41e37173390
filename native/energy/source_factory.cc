// Opening sources by name, `auto`'s fall-through, and probing.
#include <time.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "energy/cpu_info.h"
#include "energy/sources_internal.h"

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

uint64_t monotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// A hypervisor can list RAPL (the perf power PMU's events, MSRs, powercap zones) and still
// hand out counters that never move: seen on a Firecracker guest of an Emerald Rapids host,
// whose power PMU offered energy-psys and counted 0 forever. Read as a measurement, that is a
// silent 0 W. Real counters update about every millisecond, idle or not, so a source none of
// whose counters advances within the window is refused like a missing one, and `auto` moves on.
// Only the source as a whole is judged: one idle domain (a GPU plane in RC6) can stay still for
// long, and the msr source already leaves out domains that read zero.
bool checkCounting(EnergySource& src, const SourceOptions& opts, SourceError* err) {
  const std::vector<Domain>& ds = src.domains();
  if (opts.liveCheckMs <= 0 || ds.empty() || ds.front().estimated) return true;
  std::vector<DomainReading> first(ds.size()), now(ds.size());
  int rc = src.read(first.data());
  const uint64_t deadline = monotonicNs() + uint64_t(opts.liveCheckMs) * 1000000ull;
  const timespec pause{0, 200000};
  do {
    nanosleep(&pause, nullptr);
    int r = src.read(now.data());
    if (r != 0) rc = r;
    for (size_t i = 0; i < ds.size(); i++)
      if (now[i].ticks != first[i].ticks) return true;
  } while (monotonicNs() < deadline);

  std::string which;
  for (size_t i = 0; i < ds.size() && i < 6; i++) {
    which += (i ? ", " : "") + ds[i].name + "-" + std::to_string(ds[i].package) + " at " + std::to_string(now[i].raw);
  }
  if (ds.size() > 6) which += ", ...";
  err->code = "ERR_JOULETRACE_NOT_COUNTING";
  err->message = std::string(src.name()) + ": no energy counter advanced in " + std::to_string(opts.liveCheckMs) +
                 " ms (" + which + (rc < 0 ? std::string("; reads failed: ") + std::strerror(-rc) : "") +
                 "; RAPL counters move about every millisecond) — the machine lists RAPL but does not count it, "
                 "as hypervisors commonly do: measure on bare metal or in a VM given RAPL, or use source 'model' "
                 "(an estimate)";
  return false;
}

std::unique_ptr<EnergySource> openCounting(Opener open, const SourceOptions& opts, SourceError* err) {
  std::unique_ptr<EnergySource> src = open(opts, err);
  if (src && !checkCounting(*src, opts, err)) return nullptr;
  return src;
}

}  // namespace

std::unique_ptr<EnergySource> openEnergySource(const std::string& which, const SourceOptions& opts, SourceError* err,
                                               std::vector<SourceStatus>* skipped) {
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
    std::unique_ptr<EnergySource> src = openCounting(s.open, opts, &st.error);
    st.available = src != nullptr;
    if (src) st.domains = src->domains();
    out.push_back(st);
  }
  return out;
}

}  // namespace jouletrace
