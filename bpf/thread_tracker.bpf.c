// SPDX-License-Identifier: GPL-2.0
/*
 * Per-thread on-CPU time and per-CPU busy/idle time for one process (and optionally the processes
 * it forks), kept in BPF_F_MMAPABLE arrays that userspace snapshots without a system call.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "thread_tracker.h"

/* include/linux/sched.h; this value has held since Linux 4.14, older than tp_btf itself. */
#define TASK_DEAD 0x80

const volatile __u32 targ_tgid = 0;
const volatile bool follow_children = false;
const volatile __u8 cpu_pkg[JT_MAX_CPUS] = {};

/* Written by the loader right before attach: the start of stints already running then. */
__u64 attach_ts = 0;
__u64 dropped_threads = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* loader: maxThreads */
	__type(key, __u32);
	__type(value, struct jt_thread_slot);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* loader: possible CPUs */
	__type(key, __u32);
	__type(value, struct jt_cpu_slot);
} cpus SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* loader: maxThreads */
	__type(key, __u32);   /* tid */
	__type(value, __u32); /* index in threads */
} tid_slot SEC(".maps");

/* Free thread slots. A stack, so a slot userspace gives back is the next one handed out and the
 * slots in use stay packed at the low end, which bounds what a snapshot has to scan. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 1); /* loader: maxThreads */
	__type(value, __u32);
} free_slots SEC(".maps");

/* Processes tracked besides targ_tgid: the ones forked while follow_children is on. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} tracked_tgids SEC(".maps");

#define compiler_barrier() asm volatile("" ::: "memory")

/*
 * Seqcount writer side. Each slot has a single writer at a time (see thread_tracker.h), so plain
 * stores do; the barriers only keep clang from moving the payload stores outside the odd window.
 * Readers rely on stores becoming visible in program order, which x86-64 (TSO) guarantees.
 */
static __always_inline void seq_begin(__u32 *seq)
{
	*(volatile __u32 *)seq = *seq + 1;
	compiler_barrier();
}

static __always_inline void seq_end(__u32 *seq)
{
	compiler_barrier();
	*(volatile __u32 *)seq = *seq + 1;
}

static __always_inline bool is_tracked(__u32 tgid)
{
	if (tgid == targ_tgid)
		return true;
	if (!follow_children)
		return false;
	return bpf_map_lookup_elem(&tracked_tgids, &tgid) != NULL;
}

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return t->__state;
	return ((struct task_struct___pre514 *)t)->state;
}

static __always_inline struct jt_thread_slot *new_slot(struct task_struct *task, __u32 tid,
						       __u32 tgid, struct jt_cpu_slot *c,
						       __u64 on_since)
{
	struct jt_thread_slot *t;
	__u32 idx;
	int i;

	if (bpf_map_pop_elem(&free_slots, &idx))
		goto full;
	t = bpf_map_lookup_elem(&threads, &idx);
	if (!t)
		return NULL; /* userspace only pushes indexes below max_entries */
	if (bpf_map_update_elem(&tid_slot, &tid, &idx, BPF_NOEXIST)) {
		bpf_map_push_elem(&free_slots, &idx, 0);
		goto full;
	}

	seq_begin(&t->seq);
	t->tid = tid;
	t->tgid = tgid;
	t->generation++;
	t->on_cpu_ns = 0;
	t->on_since = on_since;
	for (i = 0; i < JT_MAX_PACKAGES; i++)
		t->pkg_ns[i] = 0;
	t->exited = 0;
	bpf_probe_read_kernel_str(t->comm, sizeof(t->comm), task->comm);
	seq_end(&t->seq);

	if (idx >= c->slot_hw)
		c->slot_hw = idx + 1;
	return t;
full:
	__sync_fetch_and_add(&dropped_threads, 1);
	return NULL;
}

static __always_inline struct jt_thread_slot *slot_of(struct task_struct *task, __u32 tid,
						      __u32 tgid, struct jt_cpu_slot *c,
						      __u64 on_since)
{
	__u32 *idx = bpf_map_lookup_elem(&tid_slot, &tid);

	if (idx)
		return bpf_map_lookup_elem(&threads, idx);
	return new_slot(task, tid, tgid, c, on_since);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 cpu = bpf_get_smp_processor_id();
	struct jt_cpu_slot *c = bpf_map_lookup_elem(&cpus, &cpu);
	struct jt_thread_slot *t;
	__u32 prev_pid, next_pid, tgid;
	__u64 since, start;

	if (!c)
		return 0;
	prev_pid = prev->pid;
	next_pid = next->pid;
	since = c->last_ts;

	seq_begin(&c->seq);
	/* Before the first switch seen here, prev has held this CPU since attach at least: counted
	 * from attach, like the thread side, so a CPU's busy time covers its threads' time. */
	start = since ? since : attach_ts;
	if (now > start) {
		/* pid 0 is the per-CPU idle task */
		if (prev_pid)
			c->busy_ns += now - start;
		else
			c->idle_ns += now - start;
	}
	c->last_ts = now;
	c->idle_now = next_pid == 0;
	c->cur_tid = next_pid;
	c->events++;
	seq_end(&c->seq);

	tgid = prev->tgid;
	if (prev_pid && is_tracked(tgid)) {
		/* When prev's switch-in went unseen it was running when we attached: it has run
		 * since then if this is the first switch seen on this CPU, else since the last. */
		t = slot_of(prev, prev_pid, tgid, c, start);
		if (t) {
			/* A preempted task may already be TASK_DEAD; only its own final
			 * schedule() is the last switch. */
			bool dead = !preempt && (task_state(prev) & TASK_DEAD);

			seq_begin(&t->seq);
			if (t->on_since)
				start = t->on_since;
			if (now > start) {
				__u64 d = now - start;
				__u32 pkg = cpu_pkg[cpu & (JT_MAX_CPUS - 1)] & (JT_MAX_PACKAGES - 1);

				t->on_cpu_ns += d;
				t->pkg_ns[pkg] += d;
			}
			t->on_since = 0;
			t->cpu = cpu;
			if (dead)
				t->exited = 1;
			seq_end(&t->seq);
			if (dead)
				bpf_map_delete_elem(&tid_slot, &prev_pid);
		}
	}

	tgid = next->tgid;
	if (next_pid && is_tracked(tgid)) {
		t = slot_of(next, next_pid, tgid, c, 0);
		if (t) {
			seq_begin(&t->seq);
			t->on_since = now;
			t->cpu = cpu;
			seq_end(&t->seq);
		}
	}
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	__u8 one = 1;

	/* A new thread shares its parent's tgid and is picked up at its first switch. */
	if (ptgid == ctgid || !is_tracked(ptgid))
		return 0;
	bpf_map_update_elem(&tracked_tgids, &ctgid, &one, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
