// SPDX-License-Identifier: GPL-2.0
/*
 * Per-thread on-CPU time and per-CPU busy/idle time for one process (and optionally the processes
 * it forks), kept in BPF_F_MMAPABLE arrays that userspace snapshots without a system call.
 *
 * Built twice from this file (scripts/build-bpf.sh). The default build finds a tracked task's
 * slot through task-local storage, which needs Linux 5.12 (commit a10787e6d58c, "bpf: Enable task
 * local storage for tracing programs"): one pointer walk from the task, and for an untracked task
 * one tgid compare (one storage lookup that finds nothing with follow_children). The
 * compatibility build (JT_TASK_STORAGE=0) keeps a hash keyed by task address instead; the loader
 * uses it before Linux 6.2 (see openBpfTracker) and when the kernel refuses the first.
 *
 * Task storage is never created in sched_switch: until Linux 6.4 moved local storage to
 * bpf_mem_alloc, creating it meant a GFP_ATOMIC kmalloc, which may wake kswapd and so take a
 * runqueue lock, while sched_switch holds one. It is created at fork (handle_fork, attached
 * before the loader lists the target's threads) and, for the threads that exist at attach, by an
 * iterator the loader runs once (seed_refs). A thread of the target that still has none is found
 * through the tid hash, which is preallocated and never allocates.
 *
 * Why not key everything by tid: an exec from a thread other than the group leader swaps the two
 * threads' tids (de_thread), well before sched_process_exec reports it. In between, the exec'ing
 * thread can switch under its new tid and the dying leader make its last switch under the old
 * one, so a lookup by tid finds the other thread's ref. A task's address stays its own through an
 * exec, and no live task shares it; its entry goes at the task's final switch, before the task can
 * be freed and its address reused.
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
/* include/linux/sched.h: task->flags of threads the kernel makes for a process without a fork
 * event. PF_IO_WORKER since Linux 5.12 for io_uring's; PF_USER_WORKER since 6.4 for vhost's (an
 * unrelated bit before, which costs a lookup and no more). */
#define PF_IO_WORKER 0x00000010
#define PF_USER_WORKER 0x00004000

const volatile __u32 targ_tgid = 0;
const volatile bool follow_children = false;
const volatile __u8 cpu_pkg[JT_MAX_CPUS] = {};

/* Written by the loader right before attach: the start of stints already running then. */
__u64 attach_ts = 0;
__u64 dropped_threads = 0;
/* Switch-ins the kernel did not report: found by handle_runtime while the thread runs, or at the
 * thread's switch-out where that is not attached (or the switch-out came first). Counted once.
 * repaired_switch_ins: those handle_runtime found. */
__u64 missed_switch_ins = 0;
__u64 repaired_switch_ins = 0;

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

/* tid → task ref: the threads userspace seeded before attach, until seed_refs moves them to where
 * the program finds them (task storage, or task_refs in the compatibility build); with task
 * storage, also the rare thread that has no storage. Preallocated, so an insert never allocates. */
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

/* Threads of ours refused a ref (ref_hash full), by tid: with no ref they have nowhere else to
 * be marked, and each must count once in dropped_threads, not at every switch. An LRU, so it
 * never fills: past 1,024 such threads alive at once, one may count twice. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} refused_tids SEC(".maps");

#if JT_TASK_STORAGE
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct jt_task_ref);
} task_refs SEC(".maps");
/* The hash a thread is found through when not through task storage, and its key. */
#define ref_hash tid_slot
typedef __u32 ref_key_t;
#else
/* Every tracked thread's ref, by the address of its task_struct (see the top of this file). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1); /* loader */
	__type(key, __u64);
	__type(value, struct jt_task_ref);
} task_refs SEC(".maps");
#define ref_hash task_refs
typedef __u64 ref_key_t;

/* Processes tracked besides targ_tgid: the ones forked while follow_children is on, each with
 * the number of refs its threads hold in task_refs (see refs_add). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} tracked_tgids SEC(".maps");
#endif

#define compiler_barrier() asm volatile("" ::: "memory")

/* A task's key in ref_hash. The address, spilled to the stack as a map key, is a PTR_TO_BTF_ID
 * there, which the verifier lets helpers read since Linux 5.8 ("bpf: handle spilled PTR_TO_BTF_ID
 * properly when checking stack_boundary", with the bpf_iter series). */
static __always_inline ref_key_t ref_key(struct task_struct *task)
{
#if JT_TASK_STORAGE
	return task->pid;
#else
	return (__u64)task;
#endif
}

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

/* A finished run of d ns on `cpu`, to the thread and to that CPU's package. Inside the slot's
 * seqcount window. */
static __always_inline void credit_run(struct jt_thread_slot *t, __u32 cpu, __u64 d)
{
	__u32 pkg = cpu_pkg[cpu & (JT_MAX_CPUS - 1)] & (JT_MAX_PACKAGES - 1);

	t->on_cpu_ns += d;
	t->pkg_ns[pkg] += d;
}

static __always_inline long task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return t->__state;
	return ((struct task_struct___pre514 *)t)->state;
}

/* What a lookup does for a thread with no ref yet: a constant at each call site. */
enum ref_add {
	REF_FIND,		/* nothing */
	REF_ADD,		/* adds one (with no slot yet) */
	REF_ADD_UNLESS_EXITING,	/* the same, but not at a task's final switch: a task with no
				 * ref by then (refused one; or, found by tid, a leader whose
				 * tid an exec'ing thread took: handle_exec) would get one
				 * only to drop it */
};

#if !JT_TASK_STORAGE
/*
 * A followed process's count of refs in task_refs, moved wherever one is made or dropped; its
 * entry goes with the last. Counting refs rather than threads keeps it exact for threads that
 * no fork event announces (io_uring workers are made by copy_process alone) and for threads
 * that never got a ref (task_refs full), whose final switches drop nothing; and the process is
 * not forgotten with its group leader, which other threads may outlive. Threads of one process
 * can exit on several CPUs at once (exit_group): the add is atomic, and the read after it may
 * see 0 on two of them, whose deletes are both harmless. (A fetching add would say which one
 * took it to 0, but needs Linux 5.12, and this build serves older kernels.)
 */
static __always_inline void refs_add(__u32 tgid, int delta)
{
	__u32 *refs;

	if (tgid == targ_tgid)
		return;
	refs = bpf_map_lookup_elem(&tracked_tgids, &tgid);
	if (!refs)
		return;
	__sync_fetch_and_add(refs, delta);
	if (delta < 0 && *(volatile __u32 *)refs == 0)
		bpf_map_delete_elem(&tracked_tgids, &tgid);
}
#else
/* Task storage goes with its task: nothing to count. */
static __always_inline void refs_add(__u32 tgid, int delta)
{
}
#endif

/* A tracked thread that no ref could be made for: its time goes unseen, counted once. Looked up
 * first: it is refused again at each of its switches, and an LRU update of a key already there
 * still takes a free node and the map's locks. */
static __noinline void count_refused(__u32 tid)
{
	__u8 one = 1;

	if (bpf_map_lookup_elem(&refused_tids, &tid))
		return;
	if (!bpf_map_update_elem(&refused_tids, &tid, &one, BPF_NOEXIST))
		__sync_fetch_and_add(&dropped_threads, 1);
}

/* The ref of a thread found through ref_hash: in the task-storage build, a thread of targ_tgid
 * with no storage, by tid; in the compatibility build, any thread, by task address. NULL when
 * missing and not added, or when the table is full (counted: count_refused). */
static __always_inline struct jt_task_ref *hash_ref(struct task_struct *task, enum ref_add add)
{
	ref_key_t key = ref_key(task);
	__u32 tid = task->pid;
	struct jt_task_ref *r = bpf_map_lookup_elem(&ref_hash, &key), fresh = {};

	if (r || add == REF_FIND)
		return r;
	/* Read only here, off the path of every switch of an untracked or known thread. */
	if (add == REF_ADD_UNLESS_EXITING && task->exit_state)
		return NULL;
	/* Refused before and counted then (the table has had room since): not counted again by
	 * new_slot when no slot is free either. */
	if (bpf_map_lookup_elem(&refused_tids, &tid))
		fresh.flags = JT_REF_DROPPED;
	if (bpf_map_update_elem(&ref_hash, &key, &fresh, BPF_NOEXIST)) {
		r = bpf_map_lookup_elem(&ref_hash, &key); /* full (NULL), or made meanwhile */
		if (!r)
			count_refused(tid);
		return r;
	}
	refs_add(task->tgid, 1);
	return bpf_map_lookup_elem(&ref_hash, &key);
}

#if JT_TASK_STORAGE
/* The task's ref, or NULL when it is not tracked (or no ref could be had). */
static __always_inline struct jt_task_ref *ref_of(struct task_struct *task, __u32 tgid, enum ref_add add)
{
	struct jt_task_ref *r;

	/* Without followChildren only targ_tgid is tracked: one compare rules out everyone else. */
	if (!follow_children && tgid != targ_tgid)
		return NULL;
	r = bpf_task_storage_get(&task_refs, task, 0, 0);
	if (r)
		return r;
	/* A followed process's thread that no fork event announced, an io_uring worker or a
	 * vhost worker (copy_process alone makes them), is found through its group leader's
	 * storage and tracked through the tid hash, as the target's own are. The flags keep the
	 * extra lookup off every other untracked switch; they only filter, the leader decides. */
	if (tgid != targ_tgid) {
		struct task_struct *leader;

		if (!(task->flags & (PF_IO_WORKER | PF_USER_WORKER)))
			return NULL;
		leader = task->group_leader;
		if (!leader || leader == task || !bpf_task_storage_get(&task_refs, leader, 0, 0))
			return NULL;
	}
	return hash_ref(task, add);
}

static __always_inline void ref_dead(struct task_struct *task, struct jt_task_ref *r, __u32 tgid)
{
	ref_key_t key = ref_key(task);

	/* The storage goes with the task; until then it must not point at a slot given away. */
	r->slot = 0;
	r->flags |= JT_REF_DEAD;
	bpf_map_delete_elem(&tid_slot, &key);
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

static __always_inline struct jt_task_ref *ref_of(struct task_struct *task, __u32 tgid, enum ref_add add)
{
	if (!is_tracked(tgid))
		return NULL;
	return hash_ref(task, add);
}

/* The thread's final switch. Its process's last ref gone, the process is forgotten (refs_add),
 * so that the table does not fill up and a process that reuses the number is not taken for
 * ours. */
static __always_inline void ref_dead(struct task_struct *task, struct jt_task_ref *r, __u32 tgid)
{
	ref_key_t key = ref_key(task);

	bpf_map_delete_elem(&task_refs, &key);
	refs_add(tgid, -1);
}
#endif

/* A thread's first switch: a free slot. Off the common path, hence noinline (the verifier
 * checks it once, not once per caller). */
static __noinline struct jt_thread_slot *new_slot(struct task_struct *task, struct jt_task_ref *r,
						  struct jt_cpu_slot *c, __u64 on_since)
{
	struct jt_thread_slot *t;
	__u32 idx;
	int i;

	if (!task || !r || !c || (r->flags & JT_REF_DEAD))
		return NULL;
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
	t->tid = task->pid;
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
	r->generation = t->generation;
	return t;
}

/*
 * Whether the slot a ref names is no longer its thread's: the loader closed it (exited), having
 * judged the thread ended a little before its last switch (retireVanishedSeeds), and may since
 * have handed it to another thread (a new generation). The thread is in its last moments then:
 * the ref lets go of the slot for good, and its remaining switches credit nothing, rather than
 * another thread's figures (or count its last switch as an unreported switch-in). exited is read
 * first: new_slot stores the generation before it clears exited, and x86-64 keeps both orders, so
 * a slot seen open mid-handover shows the new generation.
 */
static __always_inline bool slot_closed(struct jt_thread_slot *t, struct jt_task_ref *r, struct task_struct *task,
					bool last)
{
	if (!*(volatile __u32 *)&t->exited && *(volatile __u64 *)&t->generation == r->generation)
		return false;
	r->slot = 0;
	r->flags |= JT_REF_DEAD;
	/* Let go of before it began to exit (exit_state: set with the state /proc shows as Z, before
	 * the last switches of a task preempted on its way out), the thread lives on untracked (the
	 * loader took it for ended: an exec from another thread during the open swaps tids): its
	 * time goes unseen, so it counts as dropped. Once: a dead ref reaches no slot again. */
	if (!last && !task->exit_state && !(r->flags & JT_REF_DROPPED)) {
		r->flags |= JT_REF_DROPPED;
		__sync_fetch_and_add(&dropped_threads, 1);
	}
	return true;
}

/* last: this is the thread's final switch (see slot_closed). */
static __always_inline struct jt_thread_slot *slot_of(struct task_struct *task, struct jt_task_ref *r,
						      struct jt_cpu_slot *c, __u64 on_since, bool last)
{
	struct jt_thread_slot *t;
	__u32 idx;

	if (!r->slot)
		return new_slot(task, r, c, on_since);
	idx = r->slot - 1;
	t = bpf_map_lookup_elem(&threads, &idx);
	if (!t || slot_closed(t, r, task, last))
		return NULL;
	return t;
}

/*
 * Where a stint with no switch-in on record began, at its switch-out: from start (the CPU's last
 * timed switch) or, where later, now less what the scheduler counts of it. At sched_switch the
 * kernel has already added the stint to sum_exec_runtime (update_curr, at the dequeue or
 * put_prev_task), and prev_sum_exec_runtime holds the sum at the task's pick (set_next_entity):
 * the difference is the stint's run time, without the IRQ and steal time the task clock leaves
 * out. Where prev_sum_exec_runtime is older than the pick (a class that does not set it: RT,
 * deadline and sched_ext before recent kernels), the difference is larger and start stays. Where
 * it is newer (set again mid-stint by a change of the task's priority, affinity or group), the
 * part of the stint before goes uncredited here. Off the hot path: this loss is rare.
 */
static __always_inline __u64 missed_start(struct task_struct *prev, __u64 start, __u64 now)
{
	__u64 ran = prev->se.sum_exec_runtime - prev->se.prev_sum_exec_runtime;

	if (ran < now && now - ran > start)
		return now - ran;
	return start;
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
		pr = ref_of(prev, prev_tgid, REF_ADD_UNLESS_EXITING);
	if (next_pid)
		nr = ref_of(next, next_tgid, REF_ADD);
	/* A thread of targ_tgid whose ref could not be allocated still counts as ours here, so
	 * that its stint stays bounded by this CPU's last_ts (the idle task's tgid is 0). */
	prev_mine = pr || prev_tgid == targ_tgid;
	next_mine = nr || next_tgid == targ_tgid;
	since = c->last_ts;

	/* Busy to busy between tasks we do not track: the CPU stays busy and no thread's figures
	 * move, so there is nothing to time. */
	if (prev_pid && next_pid && since && !prev_mine && !next_mine) {
		c->events++;
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
	c->events++;
	seq_end(&c->seq);

	if (pr) {
		/* When prev's switch-in went unseen it was running when we attached: it has run
		 * since then if this is the first timed switch here, else since the last one (an
		 * untimed switch never involves a tracked thread). A preempted task may already be
		 * TASK_DEAD; only its own final schedule() is the last switch. */
		bool dead = !preempt && (task_state(prev) & TASK_DEAD);

		/* A thread first seen switching out: its switch-in was not seen either (its slot
		 * begins at start, which is no record of one), unless it was seen and refused a
		 * slot, none being free (dropped): its stint began at this CPU's last timed switch,
		 * its switch-in (a thread with a ref has its switches timed), and is no loss of the
		 * kernel's to count. */
		bool fresh = !pr->slot;
		bool refused = fresh && (pr->flags & JT_REF_DROPPED);

		t = slot_of(prev, pr, c, start, dead);
		if (t) {
			seq_begin(&t->seq);
			/* No switch-in on record: the thread was running, unseen, at attach (then this
			 * is its CPU's first timed switch, since == 0), or the kernel did not report
			 * its switch-in (see handle_runtime). Counted from the CPU's last timed switch,
			 * the earliest it can have started, but no further back than the scheduler's
			 * count of this stint: switches between untracked tasks are not timed, so that
			 * switch can be long before (the host agent's, other processes' time). */
			if (t->on_since && !fresh)
				start = t->on_since;
			else if (since && !refused) {
				__sync_fetch_and_add(&missed_switch_ins, 1);
				start = missed_start(prev, start, now);
			}
			if (now > start)
				credit_run(t, cpu, now - start);
			t->on_since = 0;
			t->cpu = cpu;
			if (dead) {
				t->exited = 1;
				/* The name kept from the first switch predates most threads naming
				 * themselves, and once the thread is gone userspace cannot read it
				 * from /proc: take the final one, once per thread. */
				bpf_probe_read_kernel_str(t->comm, sizeof(t->comm), prev->comm);
			}
			seq_end(&t->seq);
		}
		if (dead)
			ref_dead(prev, pr, prev_tgid);
	} else if (prev_mine && prev_pid && !preempt && (task_state(prev) & TASK_DEAD)) {
		/* A thread of ours with no ref (refused one) ends: its tid may come back for a thread
		 * that must be counted too. */
		bpf_map_delete_elem(&refused_tids, &prev_pid);
	}

	if (nr) {
		t = slot_of(next, nr, c, 0, false);
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
	/* Every new thread of targ_tgid, and with follow_children every task forked by a tracked
	 * one, thread or process, gets its ref here, outside the scheduler's locks. */
	if (ctgid != targ_tgid) {
		if (!follow_children)
			return 0;
		if (ptgid != targ_tgid && !bpf_task_storage_get(&task_refs, parent, 0, 0))
			return 0;
	}
	/* A thread of targ_tgid with no storage is tracked through the tid hash (ref_of): its ref
	 * is made now, as the compatibility build makes it (a thread whose switch-in goes unreported
	 * and that exits before a tick would otherwise get none), and hash_ref counts it if refused.
	 * Anyone else's goes untracked: counted now. */
	if (!bpf_task_storage_get(&task_refs, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE)) {
		if (ctgid == targ_tgid)
			hash_ref(child, REF_ADD);
		else
			__sync_fetch_and_add(&dropped_threads, 1);
	}
#else
	__u32 none = 0;

	/* A new thread or process of a tracked one gets its ref now, as in the task-storage build.
	 * Left to its first switch, a thread whose switch-in goes unreported (see handle_runtime)
	 * and that exits before a tick would have none: its final switch adds no ref
	 * (REF_ADD_UNLESS_EXITING), and its time would go unseen and uncounted. */
	if (!is_tracked(ptgid))
		return 0;
	if (ptgid != ctgid) {
		if (!follow_children)
			return 0;
		/* Full (1,024 followed processes alive at once): that process goes untracked,
		 * counted. Its count starts at 0; its first thread's ref makes it 1. */
		if (bpf_map_update_elem(&tracked_tgids, &ctgid, &none, BPF_ANY)) {
			__sync_fetch_and_add(&dropped_threads, 1);
			return 0;
		}
		/* No ref to be had (task_refs full; hash_ref counted the thread): nothing would ever
		 * take the entry away. */
		if (!hash_ref(child, REF_ADD))
			bpf_map_delete_elem(&tracked_tgids, &ctgid);
		return 0;
	}
	/* Refused (task_refs full), the thread is counted by hash_ref, here or at a later switch. */
	hash_ref(child, REF_ADD);
#endif
	return 0;
}

/* The slot a ref names, while it is still that ref's thread's (see slot_closed). Off the
 * switch path: the ref is not let go of here. */
static __always_inline struct jt_thread_slot *open_slot(const struct jt_task_ref *ref)
{
	struct jt_thread_slot *t;
	__u32 idx = ref->slot - 1;

	if (!ref->slot)
		return NULL;
	t = bpf_map_lookup_elem(&threads, &idx);
	if (!t || t->exited || t->generation != ref->generation)
		return NULL;
	return t;
}

/* A name into a slot outside its seqcount (handle_rename, seed_refs; handle_exec, inside it):
 * NUL-padded, in two 8-byte stores, so that a reader copying the slot meanwhile sees each half
 * old or new, and its next copy the whole name. */
static __always_inline void set_comm(struct jt_thread_slot *t, const char *src)
{
	__u64 name[JT_COMM_LEN / 8] = {};

	bpf_probe_read_kernel_str(name, sizeof(name), src);
	*(volatile __u64 *)&t->comm[0] = name[0];
	*(volatile __u64 *)&t->comm[8] = name[1];
}

#if JT_TASK_STORAGE
/* Ends the slot of the thread running on this CPU (its only writer) as its exit would. */
static __always_inline void retire_slot(const struct jt_task_ref *ref)
{
	struct jt_thread_slot *t = open_slot(ref);
	__u64 now;

	if (!t)
		return;
	now = bpf_ktime_get_ns();
	seq_begin(&t->seq);
	if (t->on_since && now > t->on_since)
		credit_run(t, t->cpu, now - t->on_since);
	t->on_since = 0;
	t->exited = 1;
	seq_end(&t->seq);
}

/* The ref of a thread that exec'd from outside the group leader (slot 0: none). Its task storage
 * stayed with it. A thread tracked through the tid hash instead (one that got no storage) has its
 * ref under its old tid: it moves to the new one, or the thread's stint in progress would never
 * end, and its next switch would give it a second slot. */
static __always_inline struct jt_task_ref exec_ref(struct task_struct *p, __u32 old, __u32 tid)
{
	struct jt_task_ref *r = bpf_task_storage_get(&task_refs, p, 0, 0), *cur, moved = {};

	if (r)
		return *r;
	r = bpf_map_lookup_elem(&tid_slot, &old);
	if (!r)
		return moved;
	moved = *r;
	bpf_map_delete_elem(&tid_slot, &old);
	cur = bpf_map_lookup_elem(&tid_slot, &tid);
	if (cur && cur->slot && cur->slot != moved.slot && !(cur->flags & JT_REF_DEAD)) {
		/* The thread switched under its new tid before this ran, and so got a second
		 * slot: it goes on there, and the first ends here, as at an exit. */
		retire_slot(&moved);
		return *cur;
	}
	/* Over the leader's ref, if its last switch has not removed it yet: that switch then
	 * finds no ref under its new (old) tid and makes none. */
	bpf_map_update_elem(&tid_slot, &tid, &moved, BPF_ANY);
	return moved;
}
#else
/* The ref of a thread that exec'd from outside the group leader (slot 0: none): keyed by its
 * task, it is still its own. */
static __always_inline struct jt_task_ref exec_ref(struct task_struct *p, __u32 old, __u32 tid)
{
	struct jt_task_ref *r = hash_ref(p, REF_FIND), none = {};

	return r ? *r : none;
}
#endif

/*
 * exec from a thread other than the group leader: the kernel gives the exec'ing thread the
 * leader's pid (the leader, killed, takes the thread's old one for its last moments). Its slot is
 * still the same thread's, now under the new tid: the slot's tid follows (handle_runtime checks
 * it).
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tid = p->pid, tgid = p->tgid, old = old_pid;
	struct jt_task_ref ref;
	struct jt_thread_slot *t;

	if (old == tid || (!follow_children && tgid != targ_tgid))
		return 0;
	ref = exec_ref(p, old, tid);
	t = open_slot(&ref);
	if (!t)
		return 0;
	/* This CPU runs the thread now: its slot's only writer (see thread_tracker.h). The name
	 * too: the exec renamed the thread (begin_new_exec, after de_thread swapped the tids) before
	 * this fires, and handle_rename, looking a thread tracked through the tid hash up by its new
	 * tid, found the leader's ref there, not this one: the exec'd name went to the leader's slot,
	 * and this one kept the old. Copied from the task, which holds the new name by now. */
	seq_begin(&t->seq);
	t->tid = tid;
	set_comm(t, p->comm);
	seq_end(&t->seq);
	return 0;
}

/*
 * A tracked thread takes a new name: prctl(PR_SET_NAME), pthread_setname_np, a write to
 * /proc/<pid>/task/<tid>/comm, an exec. Most threads name themselves after their first switch,
 * when their slot took the name they had then: kept current here, the slots' names are the
 * threads' own, and userspace reads none from /proc. The tracepoint fires in __set_task_comm
 * under task_lock(task), before the kernel copies the name into the task: it is taken from the
 * argument.
 *
 * A write to /proc renames a thread from another, which may be switching on another CPU, writing
 * its slot: the name goes in outside the slot's seqcount (set_comm), whose writer must be single
 * (two bumping seq would let a reader take torn figures). Only an open slot is written: one the
 * thread let go of, or that went to another thread, is not (open_slot; the ref is not let go of
 * here, not being this CPU's to change). Nothing is created: a thread with no ref is not tracked,
 * and one with no slot yet takes the task's name at its first switch (new_slot). That first
 * switch, on another CPU within the few instructions between the lookup here and the kernel's
 * copy, takes the old name, kept until the next rename or the exit.
 */
SEC("tp_btf/task_rename")
int BPF_PROG(handle_rename, struct task_struct *task, const char *comm)
{
	struct jt_task_ref *r = ref_of(task, task->tgid, REF_FIND);
	struct jt_thread_slot *t;

	if (!r || (r->flags & JT_REF_DEAD))
		return 0;
	t = open_slot(r);
	if (t)
		set_comm(t, comm);
	return 0;
}

/*
 * The scheduler accounting a running task's time: at every tick, and at most scheduling events,
 * always under the task's runqueue lock. sched_switch is not always reported: on a Firecracker
 * guest, no switch out of the host's agent threads is ever traced, so the thread switched in
 * next runs with no switch-in on record and its figures would stand still until it switched
 * out, however long it ran. A tracked thread found running off the record here gets its stint
 * started at its switch-in as the scheduler accounts it (see below), so its figures lag one
 * tick at most. Only when the task is the one running on this CPU: the runqueue lock then
 * excludes its sched_switch, so this CPU stays the slot's only writer. It runs at every
 * accounting call on the machine; an untracked task leaves at the first compare, and a tracked
 * one with its switch-in on record after one slot lookup. The loader attaches it per
 * repairSwitchIns, and runs without it where the kernel refuses it (stats().bpf.repairHook).
 */
SEC("tp_btf/sched_stat_runtime")
int BPF_PROG(handle_runtime, struct task_struct *task, __u64 runtime)
{
	__u64 id = bpf_get_current_pid_tgid(), now, start;
	__u32 tid = (__u32)id, tgid = id >> 32, cpu, idx;
	struct jt_task_ref *r;
	struct jt_thread_slot *t;
	struct jt_cpu_slot *c;
	bool refused;

	/* Untracked tasks leave at the first compare, as in handle_switch. */
	if (!tid || (!follow_children && tgid != targ_tgid) || task->pid != tid)
		return 0;
	/* Looked up only: a ref is added at fork, at attach or by handle_switch. */
	r = ref_of(task, tgid, REF_FIND);
	if (!r || (r->flags & JT_REF_DEAD))
		return 0;
	idx = r->slot;
	t = NULL;
	if (idx) {
		idx--;
		t = bpf_map_lookup_elem(&threads, &idx);
		/* The common case, a switch-in on record, ends here. */
		if (!t || t->on_since || t->tid != tid || slot_closed(t, r, task, false))
			return 0;
	}
	cpu = bpf_get_smp_processor_id();
	c = bpf_map_lookup_elem(&cpus, &cpu);
	if (!c)
		return 0;
	/* No slot yet: a new thread whose very first switch-in went unreported, or one whose
	 * switch-in was seen but found no free slot (dropped), which is no loss to count (as in
	 * handle_switch). */
	refused = !t && (r->flags & JT_REF_DROPPED);
	if (!t)
		t = new_slot(task, r, c, 0);
	if (!t)
		return 0;
	/* runtime: what the scheduler accounts now, since this task's last accounting, at the
	 * latest its switch-in. At the first call after an unreported switch-in that is the
	 * switch-in itself, which is later than the CPU's last timed switch whenever untracked
	 * tasks ran in between (the host agent, say), so their time is not credited here. */
	now = bpf_ktime_get_ns();
	start = c->last_ts ? c->last_ts : attach_ts;
	if (runtime < now && now - runtime > start)
		start = now - runtime;
	seq_begin(&t->seq);
	t->on_since = start;
	t->cpu = cpu;
	seq_end(&t->seq);
	/* A thread running since before attach has had no timed switch on this CPU: not a loss. */
	if (c->last_ts && !refused) {
		__sync_fetch_and_add(&missed_switch_ins, 1);
		__sync_fetch_and_add(&repaired_switch_ins, 1);
	}
	return 0;
}

/* A task on a CPU once sched_switch is attached, on a CPU with no timed switch yet: that task has
 * held the CPU since before attach (any switch since would have set last_ts), so the CPU is busy
 * from attach (running_at_attach, in thread_tracker.h). Its first timed switch counts it so; until
 * then only this says it, and a CPU that one task holds without switching (a busy-poll thread on
 * a nohz_full core) read as idle, its package's energy going to the threads on other CPUs. Not
 * before attach: a task seen on its CPU then may block before attach, leaving the CPU idle but
 * marked until its first switch (hundreds of ms on a NOHZ-idle CPU), when idle_ns counts from
 * attach too. A switch racing the mark sets last_ts, and a snapshot then ignores the mark. */
static __always_inline void mark_running_cpu(struct task_struct *task)
{
	struct jt_cpu_slot *c;
	__u32 cpu;

	/* The idle tasks (pid 0) are in no pid table: the iterator does not visit them. on_cpu and
	 * the CPU fields are CONFIG_SMP's. */
	if (!bpf_core_field_exists(task->on_cpu) || !task->pid || !task->on_cpu)
		return;
	if (bpf_core_field_exists(task->thread_info.cpu))
		cpu = task->thread_info.cpu;
	else
		cpu = ((struct task_struct___pre516 *)task)->cpu;
	c = bpf_map_lookup_elem(&cpus, &cpu);
	if (c && !c->last_ts)
		c->running_at_attach = 1;
}

/* Run once by the loader right after attach, over every task: marks the CPUs that tasks have
 * held since before attach (mark_running_cpu). */
SEC("iter/task")
int mark_held_cpus(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task)
		mark_running_cpu(task);
	return 0;
}

/* Run once by the loader before attach: moves each seeded thread of targ_tgid from the tid hash
 * to where the program finds it, its task storage or (compatibility build) task_refs. A thread
 * whose storage cannot be created keeps its tid hash entry. */
SEC("iter/task")
int seed_refs(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct jt_task_ref *seed, s;
	struct jt_thread_slot *t;
	__u32 tid;

	if (!task || task->tgid != targ_tgid)
		return 0;
	tid = task->pid;
	seed = bpf_map_lookup_elem(&tid_slot, &tid);
	if (!seed)
		return 0;
	s = *seed; /* the entry may be deleted below */
#if JT_TASK_STORAGE
	struct jt_task_ref *r = bpf_task_storage_get(&task_refs, task, seed, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (r) {
		/* A thread that forked after handle_fork was attached and before the listing already
		 * has storage, with no slot yet: it takes the seeded one. sched_switch is not attached
		 * yet. */
		if (!r->slot) {
			r->slot = s.slot;
			r->generation = s.generation;
		}
		if (r->slot == s.slot)
			bpf_map_delete_elem(&tid_slot, &tid);
	}
#else
	/* Nothing else makes refs yet: the program is not attached. A thread that ends before it
	 * is leaves its entry behind; the loader removes it (retireVanishedSeeds). */
	{
		ref_key_t key = ref_key(task);

		if (!bpf_map_update_elem(&task_refs, &key, seed, BPF_NOEXIST))
			bpf_map_delete_elem(&tid_slot, &tid);
	}
#endif
	/* The name the loader read from /proc may have changed since. handle_rename, attached before
	 * this runs, finds the thread where it now is for any later change. */
	t = open_slot(&s);
	if (t)
		set_comm(t, task->comm);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
