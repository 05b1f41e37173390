// "EIO", "ENOENT", ... for error codes that JavaScript can switch on (Node's own errors use the
// same names).
#pragma once

#include <string.h>

#include <string>

namespace jouletrace {

inline std::string errnoName(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "E" + std::to_string(err);
}

}  // namespace jouletrace
