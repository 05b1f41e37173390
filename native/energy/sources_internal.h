// Per-source constructors used by source_factory.cc. Each returns nullptr with *err set (code
// plus a message naming what is missing and how to get it) when the source cannot be used.
#pragma once

#include <memory>

#include "energy/source.h"

namespace jouletrace {

std::unique_ptr<EnergySource> openMsrSource(const SourceOptions& opts, SourceError* err);
std::unique_ptr<EnergySource> openPowercapSource(const SourceOptions& opts, SourceError* err);
std::unique_ptr<EnergySource> openPerfSource(const SourceOptions& opts, SourceError* err);
std::unique_ptr<EnergySource> openModelSource(const SourceOptions& opts, SourceError* err);

}  // namespace jouletrace
