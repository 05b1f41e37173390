// Opening sources by name, `auto`'s fall-through, and probing.
#include <cstring>

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

}  // namespace

std::unique_ptr<EnergySource> openEnergySource(const std::string& which, const SourceOptions& opts, SourceError* err,
                                               std::vector<SourceStatus>* skipped) {
  if (which != "auto") {
    for (const auto& s : kSources)
      if (which == s.name) return s.open(opts, err);
    err->code = "ERR_INVALID_ARG_VALUE";
    err->message = "unknown energy source '" + which + "' (expected auto, msr, perf, powercap or model)";
    return nullptr;
  }
  std::string why;
  for (const auto& s : kSources) {
    SourceError e;
    std::unique_ptr<EnergySource> src = s.open(opts, &e);
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
    std::unique_ptr<EnergySource> src = s.open(opts, &st.error);
    st.available = src != nullptr;
    if (src) st.domains = src->domains();
    out.push_back(st);
  }
  return out;
}

}  // namespace jouletrace
