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
 * BPF side writes, and a reader retries when it saw an odd or changed value.
 */
struct jt_thread_slot {
	__u32 seq;
	__u32 tid;
	__u32 tgid;
	__u32 cpu;        /* CPU it last ran on */
	__u64 generation; /* bumped each time the slot is given to a new thread */
	__u64 on_cpu_ns;  /* completed stints only */
	__u64 on_since;   /* bpf_ktime_get_ns() when it went on-CPU; 0 while off-CPU */
	__u64 pkg_ns[JT_MAX_PACKAGES];
	char comm[JT_COMM_LEN];
	__u32 exited;     /* the thread made its last switch; figures are final */
	__u32 pad;
};

/* One CPU, written only by the sched_switch program running on that CPU. One cache line. */
struct jt_cpu_slot {
	__u32 seq;
	__u32 idle_now; /* the idle task is on this CPU since last_ts */
	__u64 last_ts;  /* time of the last switch seen on this CPU; 0 before the first */
	__u64 busy_ns;
	__u64 idle_ns;
	__u64 events;   /* sched_switch events handled here */
	__u32 slot_hw;  /* one past the highest thread slot this CPU handed out */
	__u32 cur_tid;  /* the task switched in at last_ts (0: idle) */
	__u64 reserved[2];
};

#endif
