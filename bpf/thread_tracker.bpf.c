/* placeholder program: replaced by the real tracker */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
const volatile __u32 targ_tgid = 0;
__u64 events = 0;
SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch, bool preempt, void *prev, void *next) { __sync_fetch_and_add(&events, 1); return 0; }
char LICENSE[] SEC("license") = "GPL";
