/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The few kernel types thread_tracker.bpf.c touches, declared by hand instead of a generated
 * multi-megabyte vmlinux.h. preserve_access_index makes every field access a CO-RE relocation,
 * so only the names matter here: libbpf finds each field's real offset in the running kernel's
 * BTF at load time, and the layout below never has to match any kernel.
 */
#ifndef JOULETRACE_VMLINUX_MIN_H
#define JOULETRACE_VMLINUX_MIN_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
typedef int pid_t;
enum { false = 0, true = 1 };

/* UAPI values from include/uapi/linux/bpf.h; stable ABI. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_STACK = 23,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};
enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};
enum {
	BPF_F_NO_PREALLOC = (1U << 0),
	BPF_F_MMAPABLE = (1U << 10),
	BPF_LOCAL_STORAGE_GET_F_CREATE = (1U << 0),
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* The scheduler's count of a task's run time (update_curr), and its value when the task was last
 * picked (set_next_entity; in recent kernels for RT, deadline and sched_ext tasks too). */
struct sched_entity {
	u64 sum_exec_runtime;
	u64 prev_sum_exec_runtime;
};

/* Where the task's CPU is kept since Linux 5.16 (commit bcf9033e5449, "sched: move CPU field
 * back into thread_info if THREAD_INFO_IN_TASK=y"); task_struct's own "cpu" before. */
struct thread_info {
	u32 cpu;
};

struct task_struct {
	struct thread_info thread_info;
	unsigned int __state; /* "state" (long) before 5.14: see task_struct___pre514 */
	int on_cpu;
	unsigned int flags;
	int exit_state;
	pid_t pid;
	pid_t tgid;
	struct task_struct *group_leader;
	char comm[16];
	struct sched_entity se;
};

/* The field's name and type before commit 2f064a59a11f ("sched: Change task_struct::state"),
 * Linux 5.14. The ___suffix is stripped by libbpf when it matches the kernel's type. */
struct task_struct___pre514 {
	long state;
};

/* The task's CPU before Linux 5.16: see struct thread_info. */
struct task_struct___pre516 {
	unsigned int cpu;
};

/* sched_process_exec's third argument, not read. */
struct linux_binprm;

/* Context of iter/task programs (kernel/bpf/task_iter.c). */
struct seq_file;
struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
};
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

#pragma clang attribute pop

#endif
