#include "threads/target_process.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

#include "errno_name.h"
#include "sys_file.h"

namespace jouletrace {

std::string procThreadComm(uint32_t tgid, uint32_t tid) {
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
  const bool exists = e == ENOENT && procRoot == "/proc" && (kill(pid, 0) == 0 || errno == EPERM);
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

int checkInitialPidNamespace(const std::string& procfsOption, TrackerError* err) {
  // PROC_PID_INIT_INO: the initial pid namespace's inode number, fixed in the kernel.
  const std::string link = ownNamespace("pid");
  if (link.empty() || link == "pid:[4026531836]") return 0;
  if (err) {
    err->code = "ERR_JOULETRACE_PID_NAMESPACE";
    err->message = "jouletrace: this process runs in a pid namespace of its own (/proc/self/ns/pid is " + link +
                   ", a container without the host's pid namespace): the eBPF program sees the host's pids, not these. "
                   "Use " + procfsOption + ", or run the container with the host's pid namespace (docker run --pid=host)";
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
