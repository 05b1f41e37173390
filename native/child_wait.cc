// waitChild(pid, callback) and reapChild(pid): a child's exit status as the kernel gives it, for
// `jouletrace run`. Node's 'exit' event names the signal that killed a child, and has no name for
// the real-time ones (34 to 64): a command killed by SIGRTMIN+6 was reported as exit 0. The caller
// closes libuv's handle of the child first, so that libuv no longer reaps it; a thread here waits
// for its exit (WNOWAIT: the zombie stays, so that its pid names it until reapChild(), and a
// signal sent meanwhile reaches no other process) and calls back on the JS thread.
#include <napi.h>
#include <pthread.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstring>

#include "errno_name.h"
#include "napi_util.h"

namespace jouletrace {

namespace {

struct ChildWait {
  pid_t pid;
  Napi::ThreadSafeFunction tsfn;
  int err = 0;     // errno of waitid(), 0 when it told the exit
  int code = 0;    // CLD_EXITED, CLD_KILLED or CLD_DUMPED
  int status = 0;  // the exit code, or the signal's number
};

void* waitThread(void* arg) {
  auto* w = static_cast<ChildWait*>(arg);
  siginfo_t si;
  int rc;
  do {
    memset(&si, 0, sizeof si);
    rc = waitid(P_PID, id_t(w->pid), &si, WEXITED | WNOWAIT);
  } while (rc == -1 && errno == EINTR);
  if (rc == -1) w->err = errno;
  else {
    w->code = si.si_code;
    w->status = si.si_status;
  }
  Napi::ThreadSafeFunction tsfn = w->tsfn;
  const napi_status s = tsfn.BlockingCall(w, [](Napi::Env env, Napi::Function cb, ChildWait* w) {
    Napi::Value err = w->err != 0 ? Napi::Value(Napi::String::New(env, errnoName(w->err) + ": " + strerror(w->err))) : env.Null();
    const char* how = w->code == CLD_EXITED ? "exited" : w->code == CLD_KILLED ? "killed" : w->code == CLD_DUMPED ? "dumped" : "unknown";
    const int status = w->status;
    delete w;
    cb.Call({err, Napi::String::New(env, how), Napi::Number::New(env, status)});
  });
  if (s != napi_ok) delete w;  // the environment is going away: no one to tell
  tsfn.Release();
  return nullptr;
}

Napi::Value WaitChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsFunction()) {
    Napi::TypeError::New(env, "waitChild(pid, callback)").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  const int64_t pid = info[0].As<Napi::Number>().Int64Value();
  if (pid <= 0 || pid > INT32_MAX) {
    throwCoded(env, "ERR_OUT_OF_RANGE", "waitChild(): pid must be a positive process id");
    return Napi::Value();
  }
  auto* w = new ChildWait{pid_t(pid), Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "jouletrace.waitChild", 0, 1)};
  pthread_t thread;
  const int rc = pthread_create(&thread, nullptr, waitThread, w);
  if (rc != 0) {
    w->tsfn.Release();
    delete w;
    throwCoded(env, errnoName(rc), std::string("waitChild(): cannot start a thread: ") + strerror(rc));
    return Napi::Value();
  }
  pthread_detach(thread);
  return env.Undefined();
}

// Reaps a child that waitChild() told exited; false where there is none to reap.
Napi::Value ReapChild(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "reapChild(pid)").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  const int64_t pid = info[0].As<Napi::Number>().Int64Value();
  if (pid <= 0 || pid > INT32_MAX) return Napi::Boolean::New(env, false);
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int rc;
  do rc = waitid(P_PID, id_t(pid), &si, WEXITED | WNOHANG);
  while (rc == -1 && errno == EINTR);
  return Napi::Boolean::New(env, rc == 0 && si.si_pid != 0);
}

}  // namespace

void InitChildWait(Napi::Env env, Napi::Object exports) {
  exports.Set("waitChild", Napi::Function::New(env, WaitChild, "waitChild"));
  exports.Set("reapChild", Napi::Function::New(env, ReapChild, "reapChild"));
}

}  // namespace jouletrace
