// SPDX-License-Identifier: GPL-2.0
/*
 * Per-thread on-CPU time and per-CPU busy/idle time for one process (and optionally the processes
 * it forks), kept in BPF_F_MMAPABLE arrays that userspace snapshots without a system call.
 *
 * Built twice from this file (scripts/build-bpf.sh). The default build finds a tracked task's
 * slot through task-local storage, which needs Linux 5.12 (commit a10787e6d58c, "bpf: Enable task
 * local storage for tracing programs"): one pointer walk from the task, and nothing at all for an
 * untracked task. The compatibility build (JT_TASK_STORAGE=0) keeps a tid-keyed hash instead, for
 * 5.8 to 5.11; the loader picks it when the kernel cannot create a task-storage map.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "thread_tracker.h"

#ifndef JT_TASK_STORAGE
#define JT_TASK_STORAGE 1
#endif

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

/* tid → task ref. With task storage, only the threads userspace seeded before attach, each
 * consumed at the thread's first switch; in the compatibility build, every tracked thread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* loader */
	__type(key, __u32);
	__type(value, struct jt_task_ref);
} tid_slot SEC(".maps");

/* Free thread slots. A stack, so a slot userspace gives back is the next one handed out and the
 * slots in use stay packed at the low end, which bounds what a snapshot has to scan. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 1); /* loader: maxThreads */
	__type(value, __u32);
} free_slots SEC(".maps");

#if JT_TASK_STORAGE
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct jt_task_ref);
} task_refs SEC(".maps");
#else
/* Processes tracked besides targ_tgid: the ones forked while follow_children is on. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} tracked_tgids SEC(".maps");
#endif

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

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return t->__state;
	return ((struct task_struct___pre514 *)t)->state;
}

#if JT_TASK_STORAGE
/* The task's ref, or NULL when it is not tracked (or its ref could not be allocated). Threads of
 * targ_tgid get theirs at their first switch; followed children at fork (handle_fork). */
static __always_inline struct jt_task_ref *ref_of(struct task_struct *task, __u32 tgid)
{
	struct jt_task_ref *r;

	if (!follow_children) {
		if (tgid != targ_tgid)
			return NULL;
		return bpf_task_storage_get(&task_refs, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	}
	r = bpf_task_storage_get(&task_refs, task, 0, 0);
	if (r || tgid != targ_tgid)
		return r;
	return bpf_task_storage_get(&task_refs, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
}

static __always_inline void ref_dead(struct jt_task_ref *r, __u32 tid)
{
	/* The storage goes with the task; until then it must not point at a slot given away. */
	r->slot = 0;
	r->flags |= JT_REF_DEAD;
}
#else
static __always_inline bool is_tracked(__u32 tgid)
{
	if (tgid == targ_tgid)
		return true;
	if (!follow_children)
		return false;
	return bpf_map_lookup_elem(&tracked_tgids, &tgid) != NULL;
}

static __always_inline struct jt_task_ref *ref_of(struct task_struct *task, __u32 tgid)
{
	struct jt_task_ref *r, fresh = {};
	__u32 tid;

	if (!is_tracked(tgid))
		return NULL;
	tid = task->pid;
	r = bpf_map_lookup_elem(&tid_slot, &tid);
	if (r)
		return r;
	bpf_map_update_elem(&tid_slot, &tid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&tid_slot, &tid);
}

static __always_inline void ref_dead(struct jt_task_ref *r, __u32 tid)
{
	bpf_map_delete_elem(&tid_slot, &tid);
}
#endif

/* A thread's first switch: its seeded slot, or a free one. Off the common path, hence noinline
 * (the verifier checks it once, not once per caller). */
static __noinline struct jt_thread_slot *new_slot(struct task_struct *task, struct jt_task_ref *r,
						  struct jt_cpu_slot *c, __u64 on_since)
{
	struct jt_thread_slot *t;
	__u32 tid, idx;
	int i;

	if (!task || !r || !c || (r->flags & JT_REF_DEAD))
		return NULL;
	tid = task->pid;
#if JT_TASK_STORAGE
	struct jt_task_ref *seeded = bpf_map_lookup_elem(&tid_slot, &tid);

	if (seeded) {
		idx = seeded->slot - 1;
		bpf_map_delete_elem(&tid_slot, &tid);
		t = bpf_map_lookup_elem(&threads, &idx);
		if (t)
			r->slot = idx + 1;
		return t;
	}
#endif
	if (bpf_map_pop_elem(&free_slots, &idx)) {
		if (!(r->flags & JT_REF_DROPPED)) {
			r->flags |= JT_REF_DROPPED;
			__sync_fetch_and_add(&dropped_threads, 1);
		}
		return NULL;
	}
	t = bpf_map_lookup_elem(&threads, &idx);
	if (!t)
		return NULL; /* userspace only pushes indexes below max_entries */

	seq_begin(&t->seq);
	t->tid = tid;
	t->tgid = task->tgid;
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
	r->slot = idx + 1;
	return t;
}

static __always_inline struct jt_thread_slot *slot_of(struct task_struct *task, struct jt_task_ref *r,
						      struct jt_cpu_slot *c, __u64 on_since)
{
	__u32 idx;

	if (!r->slot)
		return new_slot(task, r, c, on_since);
	idx = r->slot - 1;
	return bpf_map_lookup_elem(&threads, &idx);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct jt_cpu_slot *c = bpf_map_lookup_elem(&cpus, &cpu);
	struct jt_task_ref *pr = NULL, *nr = NULL;
	struct jt_thread_slot *t;
	__u32 prev_pid, next_pid, prev_tgid, next_tgid;
	bool prev_mine, next_mine;
	__u64 now, since, start;

	if (!c)
		return 0;
	/* pid 0 is the per-CPU idle task */
	prev_pid = prev->pid;
	next_pid = next->pid;
	prev_tgid = prev->tgid;
	next_tgid = next->tgid;
	if (prev_pid)
		pr = ref_of(prev, prev_tgid);
	if (next_pid)
		nr = ref_of(next, next_tgid);
	/* A thread of targ_tgid whose ref could not be allocated still counts as ours here, so
	 * that its stint stays bounded by this CPU's last_ts (the idle task's tgid is 0). */
	prev_mine = pr || prev_tgid == targ_tgid;
	next_mine = nr || next_tgid == targ_tgid;
	since = c->last_ts;

	/* Busy to busy between tasks we do not track: the CPU stays busy and no thread's figures
	 * move, so there is nothing to time. */
	if (prev_pid && next_pid && since && !prev_mine && !next_mine) {
		if (c->cur_tid) {
			seq_begin(&c->seq);
			c->cur_tid = 0;
			c->events++;
			seq_end(&c->seq);
		} else {
			c->events++;
		}
		return 0;
	}

	now = bpf_ktime_get_ns();
	seq_begin(&c->seq);
	/* Before the first switch seen here, prev has held this CPU since attach at least: counted
	 * from attach, like the thread side, so a CPU's busy time covers its threads' time. */
	start = since ? since : attach_ts;
	if (now > start) {
		if (prev_pid)
			c->busy_ns += now - start;
		else
			c->idle_ns += now - start;
	}
	c->last_ts = now;
	c->idle_now = next_pid == 0;
	c->cur_tid = next_mine ? next_pid : 0;
	c->events++;
	seq_end(&c->seq);

	if (pr) {
		/* When prev's switch-in went unseen it was running when we attached: it has run
		 * since then if this is the first timed switch here, else since the last one (an
		 * untimed switch never involves a tracked thread). */
		/* A preempted task may already be TASK_DEAD; only its own final schedule() is
		 * the last switch. */
		bool dead = !preempt && (task_state(prev) & TASK_DEAD);

		t = slot_of(prev, pr, c, start);
		if (t) {
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
		}
		if (dead)
			ref_dead(pr, prev_pid);
	}

	if (nr) {
		t = slot_of(next, nr, c, 0);
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

#if JT_TASK_STORAGE
	/* Threads of targ_tgid are recognised by their tgid. Every other task forked by a tracked
	 * one, thread or process, is tracked from its first switch on. */
	if (ctgid == targ_tgid)
		return 0;
	if (ptgid != targ_tgid && !bpf_task_storage_get(&task_refs, parent, 0, 0))
		return 0;
	if (!bpf_task_storage_get(&task_refs, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE))
		__sync_fetch_and_add(&dropped_threads, 1);
#else
	__u8 one = 1;

	/* A new thread shares its parent's tgid and is picked up at its first switch. */
	if (ptgid == ctgid || !is_tracked(ptgid))
		return 0;
	bpf_map_update_elem(&tracked_tgids, &ctgid, &one, BPF_ANY);
#endif
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
