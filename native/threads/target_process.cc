#include "threads/target_process.h"

#include <errno.h>
#include <unistd.h>

#include <cstdlib>

#include "sys_file.h"

namespace jouletrace {

int checkTargetIsProcess(const std::string& procRoot, int pid, TrackerError* err) {
  std::string status;
  if (readSmallFile(procRoot + "/" + std::to_string(pid) + "/status", &status) != 0) return 0;
  const size_t at = status.find("\nTgid:");
  if (at == std::string::npos) return 0;
  const int tgid = std::atoi(status.c_str() + at + 6);
  if (tgid <= 0 || tgid == pid) return 0;
  if (err) {
    err->code = "ERR_JOULETRACE_NOT_A_PROCESS";
    err->message = "jouletrace: pid " + std::to_string(pid) + " is a thread of process " + std::to_string(tgid) +
                   "; options.pid takes a process id: pass " + std::to_string(tgid);
  }
  return -EINVAL;
}

int checkInitialPidNamespace(TrackerError* err) {
  // PROC_PID_INIT_INO: the initial pid namespace's inode number, fixed in the kernel.
  static const char kInitial[] = "pid:[4026531836]";
  char link[64];
  const ssize_t n = readlink("/proc/self/ns/pid", link, sizeof link - 1);
  if (n <= 0) return 0;
  link[n] = '\0';
  if (std::string(link) == kInitial) return 0;
  if (err) {
    err->code = "ERR_JOULETRACE_PID_NAMESPACE";
    err->message = std::string("jouletrace: this process runs in a pid namespace of its own (/proc/self/ns/pid is ") + link +
                   ", a container without the host's pid namespace): the eBPF program sees the host's pids, not these. "
                   "Use threads 'procfs', or run the container with the host's pid namespace (docker run --pid=host)";
  }
  return -EINVAL;
}

}  // namespace jouletrace
