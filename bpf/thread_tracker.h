/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Layouts shared by thread_tracker.bpf.c and the C++ loader: both read these exact bytes from
 * BPF_F_MMAPABLE array maps, so every field is fixed-width and padded explicitly.
 */
#ifndef JOULETRACE_THREAD_TRACKER_H
#define JOULETRACE_THREAD_TRACKER_H

#define JT_MAX_PACKAGES 8
#define JT_MAX_CPUS 1024 /* size of the cpu → package table in .rodata; power of two */
#define JT_COMM_LEN 16

/*
 * One tracked thread. Written only by the CPU that switches the thread in or out (the scheduler
 * never runs one task's switches concurrently), so a seqcount is enough: seq is odd while the
 * BPF side writes, and a reader retries when it saw an odd or changed value. comm aside: a rename
 * may come from another CPU, and writes it outside the seqcount (handle_rename).
 */
struct jt_thread_slot {
	__u32 seq;
	__u32 tid;
	__u32 tgid;
	__u32 cpu;        /* CPU it last ran on */
	__u64 generation; /* bumped each time the slot is given to a new thread */
	__u64 on_cpu_ns;  /* completed stints only */
	__u64 on_since;   /* bpf_ktime_get_ns() when it went on-CPU; 0 while off-CPU */
	/* The thread made its last switch, or the loader closed the slot (retireVanishedSeeds);
	 * figures are final. Read at every switch (slot_of): in the first cache line, with the
	 * fields every switch writes. */
	__u32 exited;
	__u32 pad;
	__u64 pkg_ns[JT_MAX_PACKAGES];
	char comm[JT_COMM_LEN];
};

/*
 * One CPU, written only by the sched_switch program running on that CPU. One cache line.
 * A switch between two untracked, non-idle tasks changes nothing here but `events`: the CPU stays
 * busy, so it is not timed (a clock read is most of the program's cost). last_ts is therefore the
 * last switch that changed the CPU between busy and idle or moved a tracked thread. Nothing here
 * says which thread runs: a thread's running stint is read from its own slot only, so that one
 * snapshot never sees a stint both ended (in the thread's slot) and running (in a CPU's).
 */
struct jt_cpu_slot {
	__u32 seq;
	__u32 idle_now; /* the idle task is on this CPU since last_ts */
	__u64 last_ts;  /* see above; 0 before the first */
	__u64 busy_ns;  /* up to last_ts */
	__u64 idle_ns;  /* up to last_ts */
	__u64 events;   /* sched_switch events handled here */
	__u32 slot_hw;  /* one past the highest thread slot this CPU handed out */
	/* A task other than the idle task held this CPU, with no timed switch here yet, when the
	 * loader's iterator ran just after attach (mark_held_cpus): busy since attach until its first
	 * timed switch (last_ts still 0), which counts from attach. Read only while last_ts is 0. */
	__u32 running_at_attach;
	__u64 reserved[2];
};

/*
 * What the program keeps per tracked task: in task-local storage (the default build), or in the
 * tid-keyed hash of the compatibility build. Userspace writes one into the hash for each thread
 * that already exists at attach ("seeds" it) with its slot filled in.
 */
struct jt_task_ref {
	__u32 slot;       /* index in the thread slots + 1; 0: tracked, no slot yet */
	__u32 flags;      /* JT_REF_* */
	__u64 generation; /* the slot's generation when this thread got it */
};
#define JT_REF_DROPPED 1u /* counted in dropped_threads once; a slot is still tried for later */
#define JT_REF_DEAD 2u    /* made its last switch, or its slot was closed by the loader; the slot
			   * may already belong to another thread */

#endif
