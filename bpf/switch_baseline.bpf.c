// SPDX-License-Identifier: GPL-2.0
/*
 * For bench/ only: a sched_switch program that does nothing. bpf_stats times every run with the
 * kernel's sched_clock(), and the trampoline has a cost of its own; this program's figure is
 * that floor, measured in the same run as the tracker, so the tracker's own work can be told
 * apart from what any program on this hook costs on this machine.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
