#include "threads/target_process.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "errno_name.h"
#include "sys_file.h"

namespace jouletrace {

namespace {

// The ids on a status file's NSpid line, from /proc's pid namespace down to the task's own; empty
// where the kernel has no such line (before Linux 4.1).
std::vector<long> nsPids(const std::string& status) {
  std::vector<long> ids;
  size_t at = status.compare(0, 6, "NSpid:") == 0 ? 0 : status.find("\nNSpid:");
  if (at == std::string::npos) return ids;
  const char* p = status.c_str() + at + (at == 0 ? 6 : 7);
  for (;;) {
    char* end = nullptr;
    const long id = strtol(p, &end, 10);
    if (end == p) break;
    ids.push_back(id);
    p = end;
  }
  return ids;
}

// No kernel defines it for userspace in a header every libc ships.
constexpr long kProcSuperMagic = 0x9fa0;

}  // namespace

ProcPidView procPidView() {
  ProcPidView v;
  const int own = int(getpid());
  v.self = own;
  std::string status;
  const int rc = readSmallFile("/proc/self/status", &status);
  if (rc == 0) {
    const std::vector<long> ids = nsPids(status);
    if (!ids.empty()) {
      v.foreign = ids.size() > 1;
      v.self = int(ids.front());
      return v;
    }
    // Before NSpid: two namespaces may give this process the same number, which then reads the
    // right directory all the same.
    char link[32];
    const ssize_t n = readlink("/proc/self", link, sizeof link - 1);
    if (n > 0) {
      link[n] = 0;
      const int p = atoi(link);
      if (p > 0 && p != own) {
        v.foreign = true;
        v.self = p;
      }
    }
    return v;
  }
  // /proc/self is missing where /proc is not mounted, and where it is a namespace's that gives
  // this process no number (the kernel's self link then says ENOENT).
  struct statfs fs;
  if (rc == -ENOENT && statfs("/proc", &fs) == 0 && long(fs.f_type) == kProcSuperMagic) {
    v.foreign = true;
    v.self = 0;
  }
  return v;
}

long ownNamespaceId(const std::string& taskDir) {
  std::string status;
  if (const int rc = readSmallFile(taskDir + "/status", &status)) return rc;
  const std::vector<long> ids = nsPids(status);
  return ids.empty() ? -ENODATA : ids.back();
}

std::string foreignProcRefusal(const ProcPidView& view, int pid) {
  const int own = int(getpid());
  if (!view.foreign || (view.self > 0 && (pid <= 0 || pid == own))) return std::string();
  const std::string where =
      view.self > 0 ? "it numbers this process " + std::to_string(view.self) + ", which is " + std::to_string(own) +
                          " in its own: the host's /proc, as under `unshare --pid --fork` without --mount-proc, or a "
                          "sandbox's bind mount of it"
                    : "it has no number for this process: a proc of a pid namespace below this one's, or beside it, "
                      "mounted there";
  const std::string what = pid > 0 && pid != own
                               ? ", and pid " + std::to_string(pid) + ", a number of this process's namespace, names another process there or none"
                               : "";
  return "/proc here is another pid namespace's than this process's (" + where + ")" + what +
         ". Mount a proc of this pid namespace's own on /proc: `unshare --pid --fork --mount-proc`, `mount -t proc proc /proc` "
         "in a mount namespace of its own, or the container runtime's own /proc";
}

std::string procThreadComm(uint32_t tgid, uint32_t tid) {
  // Asked once: the namespaces a process runs in do not change, and a remount of /proc under it
  // is not worth a status read per row.
  static const bool foreign = procPidView().foreign;
  if (foreign) return std::string();
  std::string name;
  if (readSmallFile("/proc/" + std::to_string(tgid ? tgid : uint32_t(getpid())) + "/task/" + std::to_string(tid) + "/comm",
                    &name) != 0) {
    return std::string();
  }
  while (!name.empty() && name.back() == '\n') name.pop_back();
  return name;
}

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

int checkTaskDirReadable(const std::string& procRoot, int pid, const std::string& fdNote, TrackerError* err) {
  const std::string dir = procRoot + "/" + std::to_string(pid) + "/task";
  if (DIR* d = opendir(dir.c_str())) {
    closedir(d);
    return 0;
  }
  const int e = errno;
  // hidepid=2 (and 4, "invisible") hides another user's process directory as if it were not
  // there; kill() still finds the process (0, or EPERM for another user's). Asked of the real
  // /proc only: an emulated root's pids are not this machine's.
  // Not where /proc is another pid namespace's: its pids are not kill()'s.
  const bool exists = e == ENOENT && procRoot == "/proc" && (kill(pid, 0) == 0 || errno == EPERM) && !procPidView().foreign;
  if (err) {
    const bool hidden = e == EACCES || e == EPERM || exists;
    err->code = exists ? "EPERM" : e == ENOENT ? "ESRCH" : errnoName(e);
    const std::string why =
        hidden ? "procfs hides other users' processes here (mounted with hidepid): run as the process's user, as root "
                 "or with CAP_SYS_PTRACE, or remount /proc with hidepid=0 or gid= a group of yours"
        : e == ENOENT || e == ESRCH ? "no such process, or procfs is not mounted there"
        : e == EMFILE || e == ENFILE ? "out of file descriptors" + fdNote + ": raise the limit (ulimit -n, LimitNOFILE=)"
                                     : "procfs could not be read there";
    err->message = "jouletrace: cannot read " + dir + " (" + strerror(e) +
                   (exists ? ", though process " + std::to_string(pid) + " exists" : "") + "): " + why;
  }
  return exists ? -EPERM : -e;
}

namespace {

// What /proc/self/ns/<kind> names ("pid:[4026531836]"); empty when it cannot be read.
std::string ownNamespace(const char* kind) {
  char link[64];
  const ssize_t n = readlink((std::string("/proc/self/ns/") + kind).c_str(), link, sizeof link - 1);
  return n > 0 ? std::string(link, size_t(n)) : std::string();
}

enum class StatState { Alive, Gone, Unknown };

// The process's state and start time (fields 3 and 22 of proc(5)'s stat).
StatState readStat(const std::string& path, char* state, uint64_t* startTime) {
  std::string stat;
  const int rc = readSmallFile(path, &stat);
  if (rc == -ENOENT || rc == -ESRCH) return StatState::Gone;
  if (rc != 0) return StatState::Unknown;
  const char* s = procStatField(stat.c_str(), 3);
  const char* start = procStatField(stat.c_str(), 22);
  if (!s || !start) return StatState::Unknown;
  *state = *s;
  *startTime = strtoull(start, nullptr, 10);
  return StatState::Alive;
}

bool zombie(char state) { return state == 'Z' || state == 'X'; }

// A leader thread that exited while others run reads as a zombie; the process lives on in them.
// Unknown where the task directory or a thread's stat cannot be read for another reason than
// its absence (out of descriptors, of memory): the process may run on, and is not taken as gone.
enum class Threads { Live, None, Unknown };
Threads liveThreads(const std::string& taskDir) {
  DIR* d = opendir(taskDir.c_str());
  if (!d) return errno == ENOENT || errno == ESRCH ? Threads::None : Threads::Unknown;
  Threads found = Threads::None;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char state = 0;
    uint64_t start = 0;
    const StatState st = readStat(taskDir + "/" + e->d_name + "/stat", &state, &start);
    if (st == StatState::Alive && !zombie(state)) {
      found = Threads::Live;
      break;
    }
    if (st == StatState::Unknown) found = Threads::Unknown;
  }
  closedir(d);
  return found;
}


}  // namespace

int checkInitialPidNamespace(const std::string& procfsOption, int pid, TrackerError* err) {
  // PROC_PID_INIT_INO: the initial pid namespace's inode number, fixed in the kernel.
  const std::string link = ownNamespace("pid");
  if (link.empty() || link == "pid:[4026531836]") return 0;
  if (err) {
    err->code = "ERR_JOULETRACE_PID_NAMESPACE";
    err->message = "jouletrace: this process runs in a pid namespace of its own (/proc/self/ns/pid is " + link +
                   ", a container without the host's pid namespace): the eBPF program sees the host's pids, not these. ";
    // procfs follows this process through the host's /proc too (by the number /proc/self gives
    // it), but no other by a pid of this namespace's.
    const std::string procfsCannot = foreignProcRefusal(procPidView(), pid);
    if (procfsCannot.empty()) {
      err->message += "Use " + procfsOption + ", or run the container with the host's pid namespace (docker run --pid=host)";
    } else {
      err->message += "Nor can " + procfsOption + " follow " + (pid > 0 ? "pid " + std::to_string(pid) : std::string("it")) +
                      " here: " + procfsCannot + "; then use " + procfsOption +
                      ". Or run the container with the host's pid namespace (docker run --pid=host)";
    }
  }
  return -EINVAL;
}

std::string userNamespaceOfItsOwn() {
  // PROC_USER_INIT_INO: the initial user namespace's inode number, fixed in the kernel.
  const std::string link = ownNamespace("user");
  return link == "user:[4026531837]" ? std::string() : link;
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434  // the same number on every architecture
#endif

std::unique_ptr<TargetExitWatch> TargetExitWatch::open(const std::string& procRoot, int pid, bool forceProc, TrackerError* err) {
  std::unique_ptr<TargetExitWatch> w(new TargetExitWatch());
  if (procRoot == "/proc" && procPidView().foreign) {
    // /proc/<pid> is another process, or none: only a pidfd (this namespace's pid) tells.
    const long fd = forceProc ? -1 : syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
      w->pidfd_ = UniqueFd(int(fd));
      return w;
    }
    if (!forceProc && errno == ESRCH) {
      err->code = "ESRCH";
      err->message = "jouletrace: process " + std::to_string(pid) + " has exited";
    }
    return nullptr;
  }
  w->statPath_ = procRoot + "/" + std::to_string(pid) + "/stat";
  w->taskDir_ = procRoot + "/" + std::to_string(pid) + "/task";
  char state = 0;
  const StatState st = readStat(w->statPath_, &state, &w->startTime_);
  if (st == StatState::Gone || (st == StatState::Alive && zombie(state) && liveThreads(w->taskDir_) == Threads::None)) {
    err->code = "ESRCH";
    err->message = "jouletrace: process " + std::to_string(pid) + (st == StatState::Gone ? " has exited" : " has exited (its parent has not reaped it yet)");
    return nullptr;
  }
  if (!forceProc) {
    const long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
      w->pidfd_ = UniqueFd(int(fd));
    } else if (errno == ESRCH) {
      err->code = "ESRCH";
      err->message = "jouletrace: process " + std::to_string(pid) + " has exited";
      return nullptr;
    }
    // Else ENOSYS (before Linux 5.3) or a seccomp filter's EPERM: the stat file tells.
  }
  // A stat that could not be read (hidepid without the right group) and no pidfd: the process's
  // exit goes unnoticed, as before this watch existed, rather than refusing a sampler that works.
  if (!w->pidfd_.valid() && st != StatState::Alive) return nullptr;
  return w;
}

bool TargetExitWatch::exited() {
  if (pidfd_.valid()) {
    pollfd p{pidfd_.get(), POLLIN, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP)) != 0;
  }
  char state = 0;
  uint64_t start = 0;
  switch (readStat(statPath_, &state, &start)) {
    case StatState::Gone:
      return true;
    case StatState::Alive:
      return start != startTime_ || (zombie(state) && liveThreads(taskDir_) == Threads::None);
    default:
      return false;
  }
}

}  // namespace jouletrace
