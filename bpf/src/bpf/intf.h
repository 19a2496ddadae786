/* SPDX-License-Identifier: GPL-2.0 */
/*
 * intf.h - the one contract between corral's BPF scheduler and its Rust side.
 *
 * Every struct stored in a pinned map and every constant both sides need lives
 * here. Rust gets them through bindgen (scx_cargo's enable_intf) and never
 * redeclares them. Constants are enum values so that bindgen emits them.
 *
 * Changing the size or meaning of anything in this file changes the layout of
 * the pinned maps: bump CORRAL_LAYOUT_VERSION so that maps left pinned by an
 * older build are refused instead of silently misread.
 */
#ifndef __CORRAL_INTF_H
#define __CORRAL_INTF_H

#ifndef __VMLINUX_H__
typedef unsigned char u8;
typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
typedef long long s64;
#endif

/* Sizes and identifiers shared by the maps and the scheduler. */
enum corral_consts {
	/* Layout of the pinned maps; stored in the layout map and checked on every open. */
	CORRAL_LAYOUT_VERSION = 2,
	/* Number of CPU groups: group ids are 0 .. CORRAL_MAX_GROUPS - 1. */
	CORRAL_MAX_GROUPS = 64,
	/* Highest CPU count a group bitmap can describe. */
	CORRAL_MAX_CPUS = 512,
	/* 64-bit words in a group bitmap (CORRAL_MAX_CPUS / 64). */
	CORRAL_CPUMASK_WORDS = 8,
	/* Capacity of the cgroup map (mapped cgroups at once). */
	CORRAL_MAX_CGROUPS = 16384,
	/* Buckets of the run-queue latency histogram (see struct corral_group_stats). */
	CORRAL_LAT_BUCKETS = 32,
	/* Ancestors walked above a task's cgroup when looking for a mapping. */
	CORRAL_MAX_CGROUP_DEPTH = 16,
	/*
	 * Slot of the host group in the group table and the statistics map: the
	 * group of every task whose cgroup has no mapping (the worker, system
	 * daemons, kernel threads). == CORRAL_MAX_GROUPS.
	 */
	CORRAL_HOST_GROUP = 64,
	/* Entries in the group table: one per group plus the host group. */
	CORRAL_NR_GROUP_SLOTS = 65,
	/* Entries in the statistics map: one per group plus the host group. */
	CORRAL_NR_STATS = 65,
	/* DSQ id of group g's FIFO queue is CORRAL_DSQ_FIFO_BASE + g. */
	CORRAL_DSQ_FIFO_BASE = 0,
	/* DSQ id of group g's vtime queue is CORRAL_DSQ_VTIME_BASE + g. */
	CORRAL_DSQ_VTIME_BASE = 64,
	/* DSQ id of the host group's (vtime) queue, served by the host group's CPUs. */
	CORRAL_DSQ_HOST = 128,
	/*
	 * DSQ id of CPU c's override queue is CORRAL_DSQ_CPU_BASE + c: tasks
	 * whose allowed CPUs miss their group's, queued on a CPU they may use.
	 */
	CORRAL_DSQ_CPU_BASE = 256,
};

/* How the scheduler takes tasks (rodata `mode`, chosen when it is loaded). */
enum corral_mode {
	/*
	 * Full switch: every task on the machine is scheduled here; unmapped
	 * tasks belong to the host group. The default.
	 */
	CORRAL_MODE_FULL = 0,
	/*
	 * SCX_OPS_SWITCH_PARTIAL: only SCHED_EXT tasks are scheduled here; every
	 * fair-class task outranks them. The control plane switches mapped
	 * cgroups' threads to SCHED_EXT.
	 */
	CORRAL_MODE_PARTIAL = 1,
};

/* How a group's DSQ orders its tasks (struct corral_group.order). */
enum corral_order {
	/* First in, first out. */
	CORRAL_ORDER_FIFO = 0,
	/* By weighted virtual time: heavier (lower nice) tasks get more CPU. */
	CORRAL_ORDER_VTIME = 1,
};

/* Bits of struct corral_cgroup.flags. */
enum corral_cgroup_flags {
	/* The mapping applies to tasks directly in this cgroup only, not to its descendants. */
	CORRAL_CGROUP_NO_INHERIT = 1 << 0,
	/* Every flag this layout knows; user space refuses any other bit. */
	CORRAL_CGROUP_KNOWN_FLAGS = CORRAL_CGROUP_NO_INHERIT,
};

/* Names under the pin directory (documentation for bpftool users; Rust uses the same names). */
/*
 *   corral_layout   ARRAY[1]                    u32 -> struct corral_layout
 *   corral_cgroups  HASH[CORRAL_MAX_CGROUPS]    u64 -> struct corral_cgroup
 *   corral_groups   ARRAY[CORRAL_NR_GROUP_SLOTS] u32 -> struct corral_group (slot 64: host)
 *   corral_stats    PERCPU_ARRAY[CORRAL_NR_STATS] u32 -> struct corral_group_stats
 *   corral_build_masks  SEC("syscall") program, pinned while a scheduler is attached
 */

/* The single entry of the layout map: who laid out these maps, and the global generation. */
struct corral_layout {
	/* CORRAL_LAYOUT_VERSION of the build that created the maps; 0 while being created. */
	u32 version;
	/* CORRAL_MAX_GROUPS of that build. */
	u32 max_groups;
	/* CORRAL_MAX_CPUS of that build. */
	u32 max_cpus;
	/* CORRAL_LAT_BUCKETS of that build. */
	u32 lat_buckets;
	/* sizeof(struct corral_group) of that build. */
	u32 group_size;
	/* sizeof(struct corral_group_stats) of that build. */
	u32 stats_size;
	/*
	 * Global map generation. User space bumps it after every change to the
	 * cgroup map or the group table; the scheduler re-resolves a task's
	 * cgroup -> group mapping when it differs from the task's cached copy.
	 */
	u64 generation;
};

/* Value of the cgroup map, keyed by cgroup id (the inode number of the cgroup v2 directory). */
struct corral_cgroup {
	/* Group whose CPUs run this cgroup's tasks (index into the group table). */
	u32 group_id;
	/* enum corral_cgroup_flags. */
	u32 flags;
};

/*
 * Value of the group table, indexed by group id. Written by user space as a
 * whole; the scheduler reads it only from its SEC("syscall") program, which
 * turns it into the bpf_cpumask and settings that the hot paths use.
 */
struct corral_group {
	/* CPUs owned by the group: bit (cpu % 64) of word (cpu / 64). */
	u64 cpus[CORRAL_CPUMASK_WORDS];
	/* Number of bits set in cpus; 0 means the slot is unused or the group deleted. */
	u32 nr_cpus;
	/* enum corral_order of the group's DSQ. */
	u32 order;
	/* Time slice in ns given to the group's tasks; never 0 for a published group. */
	u64 slice_ns;
	/* 1: CPUs outside the group may run its queued tasks when they have nothing else. */
	u32 borrow;
	/* Reserved, written as 0. */
	u32 reserved;
	/* Bumped by user space on every publish of this slot; copied into the scheduler's state. */
	u64 generation;
};

/* Per-CPU, per-group statistics (one PERCPU_ARRAY entry per group, plus the host group). */
struct corral_group_stats {
	/* Tasks queued for the group: inserted into its DSQ or straight into a local DSQ. */
	u64 enqueues;
	/* Of enqueues, those that select_cpu or enqueue put straight on an idle CPU's local DSQ. */
	u64 direct_dispatches;
	/* Tasks that dispatch moved from the group's DSQ to a CPU's local DSQ. */
	u64 dispatches;
	/* Times a task of the group started running; equals the sum of lat_hist. */
	u64 runs;
	/* Total time the group's tasks spent on CPU, in ns. */
	u64 run_ns;
	/* Sum of the recorded run-queue latencies, in ns. */
	u64 lat_sum_ns;
	/* Runs on a CPU outside the group's mask that borrowing allowed. */
	u64 borrowed_runs;
	/*
	 * Runs of the group's tasks on a CPU outside its mask that nothing
	 * allowed (not borrowing, not an affinity override, not a rescue),
	 * judged in ops.running whoever placed the task. Should stay 0.
	 */
	u64 violations;
	/*
	 * Runs outside the group's mask because the task's allowed CPUs
	 * (taskset, sched_setaffinity, migration disabled, per-CPU kernel
	 * threads) miss the group's online CPUs: it ran where it was allowed.
	 */
	u64 affinity_overrides;
	/*
	 * Runs of tasks that waited longer than the rescue bound in a queue no
	 * CPU they may use was serving (a layout change or CPU hotplug left
	 * them behind) and were taken by any CPU they may use.
	 */
	u64 rescued;
	/*
	 * Times a higher scheduling class (fair in partial mode, RT or deadline
	 * in either mode) took one of the group's CPUs (ops.cpu_release).
	 */
	u64 displaced;
	/* Time the group's CPUs spent taken by a higher class, in ns. */
	u64 displaced_ns;
	/* Longest run-queue latency recorded, in ns. */
	u64 lat_max_ns;
	/*
	 * Run-queue latency (queued -> running) histogram: bucket i counts
	 * latencies in [2^i, 2^(i+1)) ns, bucket 0 also counts 0 ns, and the
	 * last bucket counts everything above.
	 */
	u64 lat_hist[CORRAL_LAT_BUCKETS];
};

/*
 * Event of the corral_joiners ring buffer (partial mode only): task @pid
 * joined cgroup @cgid, which is mapped, without being a SCHED_EXT task. User
 * space switches it (every thread of @tgid when @threadgroup) to SCHED_EXT.
 */
struct corral_joiner {
	/* The task that moved (the thread-group leader for a whole-process move). */
	u32 pid;
	/* Its thread group. */
	u32 tgid;
	/* The cgroup it joined. */
	u64 cgid;
	/* 1: the whole thread group moved (a write to cgroup.procs). */
	u32 threadgroup;
	/* Reserved, 0. */
	u32 reserved;
};

/* Context of the corral_build_masks SEC("syscall") program, passed through test_run. */
struct corral_build_args {
	/* First group id to rebuild. */
	u32 first_group;
	/* Number of groups to rebuild from first_group on. */
	u32 nr_groups;
	/* Out: groups that now have a cpumask. */
	u32 nr_built;
	/* Out: groups that were emptied (deleted or never published). */
	u32 nr_cleared;
};

/*
 * Context of the corral_kick_moved SEC("syscall") program: after user space
 * mapped, remapped or unmapped cgroup_id, preempt the CPUs whose running task
 * belongs to it and was queued for another group than group, so that it is
 * placed again now rather than at its next tick.
 */
struct corral_kick_args {
	/* The cgroup whose mapping changed. */
	u64 cgroup_id;
	/* Its group now (CORRAL_HOST_GROUP when unmapped). */
	u32 group;
	/* Out: CPUs kicked. */
	u32 nr_kicked;
};

#endif /* __CORRAL_INTF_H */
