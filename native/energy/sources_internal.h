// Per-source constructors used by source_factory.cc. Each returns nullptr with *err set (code
// plus a message naming what is missing and how to get it) when the source cannot be used.
#pragma once

#include <cstring>
#include <memory>
#include <string>

#include "energy/source.h"
#include "errno_name.h"

namespace jouletrace {

std::unique_ptr<EnergySource> openMsrSource(const SourceOptions& opts, SourceError* err);
std::unique_ptr<EnergySource> openPowercapSource(const SourceOptions& opts, SourceError* err);
std::unique_ptr<EnergySource> openPerfSource(const SourceOptions& opts, SourceError* err);
std::unique_ptr<EnergySource> openModelSource(const SourceOptions& opts, SourceError* err);

// At a path the user gave that holds nothing the source can use, the option is a likelier
// mistake than the system: the remedy names it rather than a module or mount.
inline std::string checkOptionRemedy(const char* option, const std::string& byDefault) {
  return std::string("check options.") + option + ": it should name where this process sees the host's " + byDefault;
}

// A path openForReading refused (a FIFO would have blocked the open forever): the option that
// gave it is the mistake, whatever the default.
inline std::string notAFileMessage(const std::string& path, const char* kind, const char* option, const std::string& byDefault) {
  return path + ": " + kind + ", not a file or character device — " + checkOptionRemedy(option, byDefault);
}

// The system's remedy (a module, a mount) at the default path, else checkOptionRemedy().
inline std::string missingPathRemedy(const std::string& given, const std::string& byDefault, const char* option,
                                     const std::string& systemRemedy) {
  return given == byDefault ? systemRemedy : checkOptionRemedy(option, byDefault);
}

// "no /proc/modules: the kernel loads no modules" where the procfs beside options.procStatPath
// shows a kernel built without module support (no modules file, though procfs has its version
// file whatever the kernel), else empty: there no modprobe can help, and a driver not built in
// cannot be had. (msr_source.cc)
std::string noModulesNote(const SourceOptions& opts);

// A counter's failed read as EnergySource::readFailure() reports it: the errno's name, and
// `what` ("<where>: read") with the reason.
inline void describeFailedRead(int error, const std::string& what, SourceError* out) {
  out->code = errnoName(-error);
  out->message = what + " failed (" + std::strerror(-error) + ")";
}

}  // namespace jouletrace
