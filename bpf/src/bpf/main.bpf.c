/* SPDX-License-Identifier: GPL-2.0 */
/*
 * main.bpf.c - corral's sched_ext scheduler: cgroup -> CPU-group placement.
 *
 * A task's cgroup (its cgroup v2 dfl_cgrp, or the nearest mapped ancestor)
 * decides its group through the pinned cgroup map. Each group owns a set of
 * CPUs, a time slice and an order (FIFO or vtime), and has its own DSQs.
 * Tasks of unmapped cgroups belong to the host group (slot CORRAL_HOST_GROUP),
 * whose CPUs user space publishes like any group's, ordered by weighted vtime.
 *
 * Modes (rodata `mode`, with the matching ops flags set by user space):
 * - full switch (default): every task on the machine is scheduled here, so a
 *   task is placed by its cgroup at every enqueue, whenever it joined it;
 * - partial (SCX_OPS_SWITCH_PARTIAL): only SCHED_EXT tasks are; fair-class
 *   tasks outrank them. corral_cgroup_attach reports tasks that join a mapped
 *   cgroup so that user space switches them, and cpu_release re-enqueues the
 *   tasks a higher class displaced.
 *
 * The paths:
 * - select_cpu keeps a task on an idle CPU of its group (the previous CPU
 *   first) and inserts it straight into that CPU's local DSQ;
 * - enqueue puts it on its group's DSQ and kicks an idle CPU of the group, or
 *   preempts a guest (a task not of the CPU's group) running on one;
 * - dispatch serves, in order: overrides and host tasks that waited too long
 *   on a CPU shared with groups, stuck tasks (rescue), the groups owning the
 *   CPU, the host queue if the CPU is a host CPU, the CPU's override queue,
 *   groups that lend to idle CPUs.
 *
 * What keeps the kernel from ejecting it:
 * - no task is moved to a CPU outside p->cpus_ptr: a task whose allowed CPUs
 *   miss its group's online CPUs (taskset, per-CPU kernel threads) is an
 *   affinity override and goes to the override DSQ of the CPU it is on, which
 *   the kernel chose among its allowed CPUs; dispatch skips queued tasks this
 *   CPU may not run, and migration-disabled tasks of other CPUs;
 * - cpu_online/cpu_offline are implemented, so hotplug keeps the scheduler;
 * - nothing waits unbounded: a task that a layout change or hotplug left in a
 *   queue no CPU it may use serves is rescued after rescue_after_ns, and
 *   slices shrink when a queue is long.
 *
 * User space publishes groups as plain bitmaps in the pinned group table and
 * then runs corral_build_masks (SEC("syscall"), through test_run), which turns
 * them into the bpf_cpumask kptrs the hot paths use.
 */
#include <scx/common.bpf.h>

#include "intf.h"
#include "maps.bpf.h"

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

/* Group of a task not yet queued by this scheduler. */
#define NO_GROUP ((u32)-1)

/* The SCHED_EXT policy number (include/uapi/linux/sched.h). */
#define CORRAL_SCHED_EXT 7

/* Queue length from which a group's slice shrinks (slice * SLICE_QUEUE / queued). */
#define SLICE_QUEUE 8

/* enum corral_mode: CORRAL_MODE_FULL or CORRAL_MODE_PARTIAL; matches the ops flags. */
const volatile u32 mode = CORRAL_MODE_FULL;

/*
 * Time slice of host-group tasks when the host slot gives none. Longer slices
 * mean fewer scheduling events but a longer wait for other host tasks.
 */
const volatile u64 host_slice_ns = 5000000ULL;

/*
 * On a CPU that the host group shares with a group, host tasks run only when
 * the group has nothing queued; once a host task that may run there has
 * waited this long, the CPU serves it first. The same bound applies to the
 * CPU's override queue. Bounds the wait of host tasks and overrides on CPUs
 * that groups keep busy; smaller values let them intrude on groups more often.
 */
const volatile u64 host_starve_ns = 20000000ULL;

/*
 * A queued task that waited this long while no CPU it may use served its
 * queue (a group layout change or a CPU going offline left it behind) is
 * taken by any CPU it may use. Must stay well below the watchdog's 10 s.
 */
const volatile u64 rescue_after_ns = 1000000000ULL;

/* How often each CPU looks for such tasks; costs a scan of the queue lengths. */
const volatile u64 rescue_period_ns = 50000000ULL;

/* Floor of the shrunken slice of a long queue, in ns. */
const volatile u64 min_slice_ns = 200000ULL;

/* Number of possible CPUs, set by user space; bounds the bitmap walks. */
const volatile u32 nr_possible_cpus = 1;

/*
 * Debug knob, written by user space at run time: when non-zero, the next
 * dispatch or tick calls scx_bpf_error(), which makes the kernel disable the
 * scheduler. Exists for the failure test; costs one load per dispatch/tick.
 */
volatile u32 debug_force_error;

/*
 * Debug knob, written by user space at run time: when set to group id + 1,
 * CPUs outside that group also run its queued tasks, without the group
 * lending them. Makes violations happen on purpose, for the test that proves
 * they are counted. Costs one load per dispatch.
 */
volatile u32 debug_stray_group;

/* Groups that lend queued tasks to idle CPUs outside them (bit g: group g). */
static u64 lending_groups;

/* CPUs now running a guest (see cpu_ctx.guest); enqueue scans for one only when > 0. */
static u64 nr_guests;

/* CPU hotplug events seen (cpu_online + cpu_offline), for user space. */
u64 nr_hotplug_events;

/*
 * CPUs the scheduler may place tasks on: the online CPUs at init, then kept by
 * cpu_online/cpu_offline. The kernel's online mask still holds a CPU between
 * its deactivation (when it stops dispatching) and its removal.
 */
private(CORRAL) struct bpf_cpumask __kptr *active_cpus;

/* Slice of a task served because it waited too long (a guest): short, to bound the intrusion. */
#define STARVED_SLICE_NS 1000000ULL

/* Largest slice honoured, whatever the group table says (the configuration's limit). */
#define MAX_SLICE_NS 1000000000ULL

/* A queued task that waited this long is rescued even when its group could serve it. */
#define HARD_RESCUE_NS 5000000000ULL

/* What the hot paths know of a group, built by build_group() from the table. */
struct group_state {
	/* CPUs of the group; NULL while the slot is empty or the group deleted. */
	struct bpf_cpumask __kptr *mask;
	/* Time slice in ns. */
	u64 slice_ns;
	/* corral_group.generation this state was built from. */
	u64 generation;
	/* Virtual-time clock of the group's vtime DSQ. */
	u64 vtime_now;
	/* enum corral_order. */
	u32 order;
	/* Non-zero when CPUs outside the group may run its tasks. */
	u32 borrow;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct group_state);
	__uint(max_entries, CORRAL_NR_GROUP_SLOTS);
} group_states SEC(".maps");

/* Why a task was queued where it was (task_ctx.why). */
enum placement {
	/* In its group (or, for the host group, on a host CPU). */
	PLACED_GROUP = 0,
	/* Its allowed CPUs miss the group's online CPUs: where it may run. */
	PLACED_OVERRIDE = 1,
	/* Taken by the rescue scan. */
	PLACED_RESCUE = 2,
};

/* Per-task cache of the cgroup -> group resolution and timing. */
struct task_ctx {
	/* Id of the task's dfl_cgrp when last resolved. */
	u64 cgid;
	/* Id of the cgroup whose mapping applied; 0 when the task was unmapped. */
	u64 mapped_cgid;
	/* corral_layout.generation when last resolved. */
	u64 generation;
	/* When the task was queued; 0 once it runs. */
	u64 queued_at;
	/* When the task last started running; 0 while it is not running. */
	u64 running_at;
	/* The task's virtual time in its group's vtime DSQ. */
	u64 vtime;
	/* Group the task was queued for (CORRAL_HOST_GROUP when unmapped), NO_GROUP before. */
	u32 group;
	/* enum placement of the last queueing. */
	u32 why;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

/* Per-CPU state. owners, host and stat_group are rebuilt by corral_build_masks. */
struct cpu_ctx {
	/* Groups whose mask holds this CPU (bit g: group g). */
	u64 owners;
	/* When this CPU last scanned for stuck tasks. */
	u64 rescued_at;
	/* When this CPU last served a task that waited too long behind its groups. */
	u64 starved_at;
	/* When a higher class took this CPU (cpu_release); 0 while it is ours. */
	u64 released_at;
	/* Non-zero when the CPU is in the host group's mask. */
	u32 host;
	/* Statistics slot that cpu_release charges: the lowest owner, else the host group. */
	u32 stat_group;
	/* Next owner group dispatch looks at first, so overlapping groups share the CPU. */
	u32 rotor;
	/* Non-zero while the running task is a guest: not of a group owning this CPU. */
	u32 guest;
	/* Group the running task was queued for; NO_GROUP while none runs. */
	u32 cur_group;
	/* The running task's cgroup and the cgroup whose mapping placed it (0: none). */
	u64 cur_cgid;
	u64 cur_mapped_cgid;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct cpu_ctx);
	__uint(max_entries, 1);
} cpu_ctxs SEC(".maps");

/* Partial mode: tasks that joined a mapped cgroup without being SCHED_EXT (struct corral_joiner). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} corral_joiners SEC(".maps");

static struct task_ctx *task_ctx_get(struct task_struct *p, bool create)
{
	return bpf_task_storage_get(&task_ctxs, p, 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static struct group_state *group_state_get(u32 group)
{
	if (group >= CORRAL_NR_GROUP_SLOTS)
		return NULL;
	return bpf_map_lookup_elem(&group_states, &group);
}

static struct corral_group_stats *stats_get(u32 group)
{
	u32 idx = group < CORRAL_NR_STATS ? group : CORRAL_HOST_GROUP;

	return bpf_map_lookup_elem(&corral_stats, &idx);
}

static struct cpu_ctx *cpu_ctx_get(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_ctxs, &zero);
}

/* CPU @cpu's state; ops.running/stopping may run on another CPU than the task's. */
static struct cpu_ctx *cpu_ctx_of(s32 cpu)
{
	u32 zero = 0;

	return bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, cpu);
}

static u64 map_generation(void)
{
	struct corral_layout *layout;
	u32 zero = 0;

	layout = bpf_map_lookup_elem(&corral_layout, &zero);
	return layout ? layout->generation : 0;
}

/* floor(log2(v)), clamped to the histogram; 0 for v <= 1. */
static u32 lat_bucket(u64 v)
{
	u32 b = 0;

	if (v >= (1ULL << 32)) { v >>= 32; b += 32; }
	if (v >= (1ULL << 16)) { v >>= 16; b += 16; }
	if (v >= (1ULL << 8)) { v >>= 8; b += 8; }
	if (v >= (1ULL << 4)) { v >>= 4; b += 4; }
	if (v >= (1ULL << 2)) { v >>= 2; b += 2; }
	if (v >= (1ULL << 1)) { b += 1; }
	return b < CORRAL_LAT_BUCKETS ? b : CORRAL_LAT_BUCKETS - 1;
}

/* DSQ of @group's tasks in @order. */
static u64 group_dsq(u32 group, u32 order)
{
	if (group >= CORRAL_MAX_GROUPS)
		return CORRAL_DSQ_HOST;
	if (order == CORRAL_ORDER_VTIME)
		return CORRAL_DSQ_VTIME_BASE + group;
	return CORRAL_DSQ_FIFO_BASE + group;
}

/* The group a mapping entry applies, or CORRAL_HOST_GROUP when it has no usable group. */
static u32 usable_group(struct corral_cgroup *ent)
{
	struct group_state *st;

	if (ent->group_id >= CORRAL_MAX_GROUPS)
		return CORRAL_HOST_GROUP;
	st = group_state_get(ent->group_id);
	if (!st || !st->mask)
		return CORRAL_HOST_GROUP;
	return ent->group_id;
}

/*
 * The mapping that applies to cgroup @cgrp: its own entry, or the nearest
 * ancestor's that its descendants inherit (CORRAL_MAX_CGROUP_DEPTH levels at
 * most). Returns the id of the mapped cgroup, 0 when none applies.
 */
static u64 find_mapping(struct cgroup *cgrp, struct corral_cgroup **entp)
{
	struct corral_cgroup *ent;
	u64 cgid = cgrp->kn->id;
	int level, i;

	ent = bpf_map_lookup_elem(&corral_cgroups, &cgid);
	if (ent) {
		*entp = ent;
		return cgid;
	}

	level = cgrp->level;
	bpf_for(i, 1, CORRAL_MAX_CGROUP_DEPTH) {
		struct cgroup *anc;
		u64 id;

		if (level - i < 0)
			break;
		anc = bpf_cgroup_ancestor(cgrp, level - i);
		if (!anc)
			break;
		id = anc->kn->id;
		bpf_cgroup_release(anc);

		ent = bpf_map_lookup_elem(&corral_cgroups, &id);
		if (!ent || (ent->flags & CORRAL_CGROUP_NO_INHERIT))
			continue;
		*entp = ent;
		return id;
	}
	return 0;
}

/*
 * Resolve @p's group from its dfl_cgrp's mapping (see find_mapping), or
 * CORRAL_HOST_GROUP. The mapped cgroup is cached in @tctx; the cache is used
 * while the task stays in the same cgroup and the map generation is
 * unchanged, and its entry is looked up on every use, so a single update of
 * that entry takes effect at the task's next enqueue.
 */
static u32 resolve_group(struct task_struct *p, struct task_ctx *tctx)
{
	struct corral_cgroup *ent = NULL;
	struct cgroup *dfl;
	u64 gen = map_generation();
	u64 cgid;

	dfl = p->cgroups->dfl_cgrp;
	if (!dfl)
		return CORRAL_HOST_GROUP;
	cgid = dfl->kn->id;

	if (tctx->cgid == cgid && tctx->generation == gen) {
		if (!tctx->mapped_cgid)
			return CORRAL_HOST_GROUP;
		ent = bpf_map_lookup_elem(&corral_cgroups, &tctx->mapped_cgid);
		if (ent && (tctx->mapped_cgid == cgid ||
			    !(ent->flags & CORRAL_CGROUP_NO_INHERIT)))
			return usable_group(ent);
	}

	tctx->cgid = cgid;
	tctx->generation = gen;
	tctx->mapped_cgid = find_mapping(dfl, &ent);
	if (!tctx->mapped_cgid || !ent)
		return CORRAL_HOST_GROUP;
	return usable_group(ent);
}

/*
 * Whether some active CPU of @st's mask is one @p may use. When not, @p is an
 * affinity override. Checks the mask against the allowed and the active CPUs
 * separately: a task whose only allowed CPUs in the group are offline passes
 * and is left to the rescue scan.
 */
static bool placeable(struct task_struct *p, struct group_state *st)
{
	struct bpf_cpumask *mask, *active;
	bool ok = true;

	if (!st)
		return false;
	mask = st->mask;
	if (!mask || !bpf_cpumask_intersects(cast_mask(mask), p->cpus_ptr))
		return false;
	/* Non-sleepable callers run in an RCU read section, which the kptr read needs. */
	active = active_cpus;
	if (active)
		ok = bpf_cpumask_intersects(cast_mask(mask), cast_mask(active));
	return ok;
}

static u64 group_slice(struct group_state *st)
{
	return st && st->slice_ns ? st->slice_ns : host_slice_ns;
}

/* Record that @p was queued for @group at @now. */
static void note_queued(struct task_ctx *tctx, u32 group, u64 now, bool direct, u32 why)
{
	struct corral_group_stats *stats = stats_get(group);

	tctx->group = group;
	tctx->queued_at = now;
	tctx->why = why;
	if (stats) {
		stats->enqueues++;
		if (direct)
			stats->direct_dispatches++;
	}
}

/* Whether @cpu is active (see active_cpus); true before the mask exists. */
static bool cpu_active(s32 cpu)
{
	struct bpf_cpumask *active = active_cpus;

	return !active || bpf_cpumask_test_cpu(cpu, cast_mask(active));
}

/*
 * Claim an idle CPU of @mask that @p may run on: @prev_cpu first (when >= 0).
 * A CPU going offline is refused: the kernel would move the task to a fallback
 * CPU, and a direct insert would then run it outside its group.
 */
static s32 pick_idle_in(struct task_struct *p, const struct cpumask *mask, s32 prev_cpu)
{
	s32 cpu;

	if (prev_cpu >= 0 && bpf_cpumask_test_cpu(prev_cpu, mask) &&
	    bpf_cpumask_test_cpu(prev_cpu, p->cpus_ptr) && cpu_active(prev_cpu) &&
	    scx_bpf_test_and_clear_cpu_idle(prev_cpu))
		return prev_cpu;

	cpu = scx_bpf_pick_idle_cpu(mask, 0);
	if (cpu < 0)
		return -1;
	if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr) || !cpu_active(cpu)) {
		/* Claimed a CPU @p may not use: wake it so it re-enters idle. */
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		return -1;
	}
	return cpu;
}

/*
 * Preempt a guest (a task not of a group owning its CPU: a host task on a
 * shared CPU, a borrower) on a CPU of @mask that @p may use, so that @group's
 * queued task gets its CPU back now rather than at the end of the guest's slice.
 */
static void preempt_guest(struct task_struct *p, const struct cpumask *mask)
{
	struct cpu_ctx *cctx;
	u32 zero = 0;
	s32 cpu;

	if (!nr_guests)
		return;
	bpf_for(cpu, 0, nr_possible_cpus) {
		if (!bpf_cpumask_test_cpu(cpu, mask) || !bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		cctx = bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, cpu);
		if (cctx && cctx->guest) {
			scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
			return;
		}
	}
}

s32 BPF_STRUCT_OPS(corral_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct group_state *st;
	struct task_ctx *tctx;
	struct bpf_cpumask *mask;
	u32 group;
	s32 cpu;

	tctx = task_ctx_get(p, true);
	if (!tctx)
		return prev_cpu;

	group = resolve_group(p, tctx);
	st = group_state_get(group);
	if (!placeable(p, st)) {
		/*
		 * An affinity override: a really idle CPU it may use (not a
		 * sync-wakeup's waker CPU, which a ping-pong could monopolise).
		 */
		cpu = pick_idle_in(p, p->cpus_ptr, prev_cpu);
		if (cpu >= 0) {
			note_queued(tctx, group, bpf_ktime_get_ns(), true, PLACED_OVERRIDE);
			scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, group_slice(st), 0);
			return cpu;
		}
		return prev_cpu;
	}
	mask = st->mask;
	if (!mask)
		return prev_cpu;

	cpu = pick_idle_in(p, cast_mask(mask), prev_cpu);
	if (cpu >= 0) {
		note_queued(tctx, group, bpf_ktime_get_ns(), true, PLACED_GROUP);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, group_slice(st), 0);
		return cpu;
	}

	/* No idle CPU: enqueue decides; hint at a CPU of the group. */
	if (bpf_cpumask_test_cpu(prev_cpu, cast_mask(mask)))
		return prev_cpu;
	cpu = bpf_cpumask_any_and_distribute(cast_mask(mask), p->cpus_ptr);
	if (cpu < nr_possible_cpus)
		return cpu;
	return prev_cpu;
}

/*
 * Queue an affinity override (@p may use none of its group's online CPUs) on
 * the override DSQ of the CPU it is on, which the kernel picked among its
 * allowed CPUs. That CPU serves the queue after its groups, and first once a
 * task there has waited host_starve_ns, so overrides neither starve a
 * group's queue (as a local-DSQ insert would: dispatch only runs once the
 * local DSQ is empty) nor are starved by it.
 */
static void enqueue_override(struct task_struct *p, struct task_ctx *tctx, u32 group, u64 slice,
			     u64 enq_flags, u64 now)
{
	s32 cpu = scx_bpf_task_cpu(p);

	if (enq_flags & SCX_ENQ_LAST) {
		note_queued(tctx, group, now, true, PLACED_OVERRIDE);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice, enq_flags);
		return;
	}
	note_queued(tctx, group, now, false, PLACED_OVERRIDE);
	scx_bpf_dsq_insert(p, CORRAL_DSQ_CPU_BASE + cpu, slice, enq_flags);
	scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

void BPF_STRUCT_OPS(corral_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct group_state *st;
	struct task_ctx *tctx;
	struct bpf_cpumask *mask;
	u64 now = bpf_ktime_get_ns();
	u64 vtime, slice;
	u32 group;
	s32 cpu, this_cpu;

	tctx = task_ctx_get(p, true);
	if (!tctx) {
		/* No memory for the task's state: run it where it is, always allowed. */
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, host_slice_ns, enq_flags);
		return;
	}

	group = resolve_group(p, tctx);
	st = group_state_get(group);
	slice = group_slice(st);
	mask = st ? st->mask : NULL;
	if (!mask || !placeable(p, st)) {
		enqueue_override(p, tctx, group, slice, enq_flags, now);
		return;
	}

	/*
	 * SCX_ENQ_LAST: dispatch found nothing for this CPU and @p is its last
	 * runnable task. Keep it here when the CPU is one of its group's, or the
	 * CPU would idle with @p queued.
	 */
	this_cpu = scx_bpf_task_cpu(p);
	if ((enq_flags & SCX_ENQ_LAST) && bpf_cpumask_test_cpu(this_cpu, cast_mask(mask))) {
		note_queued(tctx, group, now, true, PLACED_GROUP);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice, enq_flags);
		return;
	}

	/* A task new to the group starts at its clock, not with another group's vtime. */
	if (tctx->group != group)
		tctx->vtime = st->vtime_now;
	note_queued(tctx, group, now, false, PLACED_GROUP);
	if (group >= CORRAL_MAX_GROUPS || st->order == CORRAL_ORDER_VTIME) {
		/* Bound the credit a task that slept long can bring back. */
		vtime = tctx->vtime;
		if (st->vtime_now > slice && vtime < st->vtime_now - slice)
			vtime = st->vtime_now - slice;
		tctx->vtime = vtime;
		scx_bpf_dsq_insert_vtime(p, group_dsq(group, CORRAL_ORDER_VTIME), slice, vtime,
					 enq_flags);
	} else {
		scx_bpf_dsq_insert(p, group_dsq(group, CORRAL_ORDER_FIFO), slice, enq_flags);
	}

	cpu = pick_idle_in(p, cast_mask(mask), -1);
	if (cpu < 0 && group < CORRAL_MAX_GROUPS && st->borrow)
		cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu >= 0) {
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		return;
	}
	if (group < CORRAL_MAX_GROUPS)
		preempt_guest(p, cast_mask(mask));
}

/*
 * Move the first task of DSQ @dsq_id that may run on @cpu to its local DSQ.
 * With @stuck_before non-zero, only a task queued before that time; with
 * @hard_before too, one queued after it only when its group cannot serve it
 * (see rescue()). A non-zero @slice replaces the task's slice. Returns whether a task moved. A global function, so that the
 * verifier checks it once rather than at each of its many call sites.
 */
__noinline int move_first(u64 dsq_id, s32 cpu, u64 stuck_before, u64 hard_before, u64 slice)
{
	struct task_struct *p;
	struct task_ctx *tctx;

	if (!scx_bpf_dsq_nr_queued(dsq_id))
		return false;
	bpf_for_each(scx_dsq, p, dsq_id, 0) {
		if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		if (is_migration_disabled(p) && scx_bpf_task_cpu(p) != cpu)
			continue;
		tctx = task_ctx_get(p, false);
		if (stuck_before && tctx && (!tctx->queued_at || tctx->queued_at > stuck_before))
			continue;
		/* Below the hard bound, rescue only tasks their group cannot serve. */
		if (hard_before && tctx && tctx->queued_at > hard_before &&
		    placeable(p, group_state_get(tctx->group)))
			continue;
		if (slice)
			scx_bpf_dsq_move_set_slice(BPF_FOR_EACH_ITER, slice);
		if (!scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL, 0))
			continue;
		if (stuck_before && tctx)
			tctx->why = PLACED_RESCUE;
		return true;
	}
	return false;
}

/*
 * Move remapped task @p (iterated in its old group's DSQ) to @now_group:
 * straight to @cpu's local DSQ when @cpu is one of the new group's that @p
 * may use (this CPU would otherwise idle with the task queued, its group
 * already tried this round), else into the new group's DSQ of its order
 * (vtime-ordered at the group's clock, like a fresh arrival) with a CPU of
 * the group kicked. @it is the DSQ iterator; inlined, so the verifier sees it
 * in the caller's frame. Returns 1 when @p went to @cpu, 0 when to the
 * group's DSQ, -1 when it did not move (it stays where it is).
 */
static __always_inline int regroup_task(struct bpf_iter_scx_dsq *it, struct task_struct *p,
					struct task_ctx *tctx, u32 now_group,
					struct group_state *nst, struct bpf_cpumask *nmask, s32 cpu)
{
	struct corral_group_stats *stats;
	u32 old_group = tctx->group;
	u64 old_vtime = tctx->vtime;
	s32 idle;

	/* Written before the move: once moved, another CPU may run it at once. */
	tctx->group = now_group;
	tctx->vtime = nst->vtime_now;
	if (bpf_cpumask_test_cpu(cpu, cast_mask(nmask)) && bpf_cpumask_test_cpu(cpu, p->cpus_ptr) &&
	    (!is_migration_disabled(p) || scx_bpf_task_cpu(p) == cpu) &&
	    scx_bpf_dsq_move(it, p, SCX_DSQ_LOCAL, 0)) {
		stats = stats_get(now_group);
		if (stats)
			stats->enqueues++;
		return 1;
	}
	if (nst->order == CORRAL_ORDER_VTIME) {
		scx_bpf_dsq_move_set_vtime(it, nst->vtime_now);
		if (!scx_bpf_dsq_move_vtime(it, p,
					    CORRAL_DSQ_VTIME_BASE + now_group, 0))
			goto unmoved;
	} else if (!scx_bpf_dsq_move(it, p, CORRAL_DSQ_FIFO_BASE + now_group, 0)) {
		goto unmoved;
	}
	stats = stats_get(now_group);
	if (stats)
		stats->enqueues++;
	idle = pick_idle_in(p, cast_mask(nmask), -1);
	if (idle >= 0)
		scx_bpf_kick_cpu(idle, SCX_KICK_IDLE);
	else
		preempt_guest(p, cast_mask(nmask));
	return 0;
unmoved:
	tctx->group = old_group;
	tctx->vtime = old_vtime;
	return -1;
}

/*
 * move_first() for @group's DSQ @dsq_id, with one more rule: a task whose
 * cgroup was remapped to another group while it waited here does not run
 * here; regroup_task() moves it to its new group, so a remapped cgroup's
 * queued tasks leave at the old group's next dispatch instead of each running
 * one more slice on the old CPUs. Remaps to the host group are left to the
 * task's next enqueue. A migration-disabled task moves only to a group
 * holding its CPU. Only the tasks dispatch reaches are checked, each with the
 * resolution cache's one lookup. Returns whether a task moved to @cpu's local
 * DSQ.
 */
__noinline int move_first_of_group(u64 dsq_id, s32 cpu, u32 group)
{
	struct group_state *nst;
	struct bpf_cpumask *nmask;
	struct task_struct *p;
	struct task_ctx *tctx;
	u32 now_group;
	int moved;

	if (!scx_bpf_dsq_nr_queued(dsq_id))
		return false;
	bpf_for_each(scx_dsq, p, dsq_id, 0) {
		tctx = task_ctx_get(p, false);
		if (tctx && tctx->why == PLACED_GROUP && tctx->group == group) {
			now_group = resolve_group(p, tctx);
			nst = now_group != group && now_group < CORRAL_MAX_GROUPS ?
				      group_state_get(now_group) : NULL;
			nmask = nst ? nst->mask : NULL;
			if (nmask && placeable(p, nst) &&
			    (!is_migration_disabled(p) ||
			     bpf_cpumask_test_cpu(scx_bpf_task_cpu(p), cast_mask(nmask)))) {
				moved = regroup_task(BPF_FOR_EACH_ITER, p, tctx, now_group, nst, nmask, cpu);
				if (moved > 0)
					return true;
				if (moved == 0)
					continue;
			}
		}
		if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		if (is_migration_disabled(p) && scx_bpf_task_cpu(p) != cpu)
			continue;
		if (scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL, 0))
			return true;
	}
	return false;
}

/* Move the first task of @group's DSQs that may run on @cpu to its local DSQ. */
static bool consume_group(u32 group, s32 cpu)
{
	struct corral_group_stats *stats;
	struct group_state *st = group_state_get(group);
	u64 first, second;

	if (!st)
		return false;
	first = group_dsq(group, st->order);
	second = group_dsq(group, st->order == CORRAL_ORDER_VTIME ? CORRAL_ORDER_FIFO :
								     CORRAL_ORDER_VTIME);
	if (!move_first_of_group(first, cpu, group) && !move_first_of_group(second, cpu, group))
		return false;
	stats = stats_get(group);
	if (stats)
		stats->dispatches++;
	return true;
}

static bool consume_host(s32 cpu)
{
	struct corral_group_stats *stats;

	if (!move_first(CORRAL_DSQ_HOST, cpu, 0, 0, 0))
		return false;
	stats = stats_get(CORRAL_HOST_GROUP);
	if (stats)
		stats->dispatches++;
	return true;
}

/*
 * Take a task that has waited longer than rescue_after_ns in any queue and
 * may run on @cpu: its group's CPUs are not serving it (a layout change or
 * hotplug left none it may use, or its group was deleted), or the CPU of its
 * override queue went offline.
 */
static bool rescue(s32 cpu, u64 now)
{
	u64 before = now > rescue_after_ns ? now - rescue_after_ns : 1;
	u64 hard = now > HARD_RESCUE_NS ? now - HARD_RESCUE_NS : 1;
	u32 group, other;

	if (move_first(CORRAL_DSQ_HOST, cpu, before, hard, STARVED_SLICE_NS))
		return true;
	bpf_for(group, 0, CORRAL_MAX_GROUPS) {
		if (move_first(CORRAL_DSQ_FIFO_BASE + group, cpu, before, hard, STARVED_SLICE_NS) ||
		    move_first(CORRAL_DSQ_VTIME_BASE + group, cpu, before, hard, STARVED_SLICE_NS))
			return true;
	}
	/* Override queues, of this CPU and of CPUs that went offline. */
	bpf_for(other, 0, nr_possible_cpus) {
		if (move_first(CORRAL_DSQ_CPU_BASE + other, cpu, before, 0, STARVED_SLICE_NS))
			return true;
	}
	return false;
}

static void check_debug_knob(s32 cpu, const char *where)
{
	if (debug_force_error)
		scx_bpf_error("debug_force_error=%u set by user space: exiting on purpose in %s on CPU %d",
			      debug_force_error, where, cpu);
}

void BPF_STRUCT_OPS(corral_dispatch, s32 cpu, struct task_struct *prev)
{
	struct cpu_ctx *cctx;
	u64 now = bpf_ktime_get_ns(), owners, lenders, starved;
	u64 own_dsq = CORRAL_DSQ_CPU_BASE + cpu;
	u32 start, group, stray;
	int i;

	check_debug_knob(cpu, "dispatch");

	cctx = cpu_ctx_get();
	if (!cctx)
		return;
	owners = cctx->owners;
	starved = now > host_starve_ns ? now - host_starve_ns : 1;

	/*
	 * Overrides queued on this CPU, and host tasks on a CPU shared with
	 * groups, that waited too long: one of them per host_starve_ns window,
	 * with a short slice, so that they are bounded both ways.
	 */
	if (now - cctx->starved_at > host_starve_ns) {
		if (move_first(own_dsq, cpu, starved, 0, STARVED_SLICE_NS) ||
		    (cctx->host && owners &&
		     move_first(CORRAL_DSQ_HOST, cpu, starved, 0, STARVED_SLICE_NS))) {
			cctx->starved_at = now;
			return;
		}
	}

	if (now - cctx->rescued_at > rescue_period_ns) {
		cctx->rescued_at = now;
		if (rescue(cpu, now))
			return;
	}

	/* The groups owning this CPU, round-robin. */
	if (owners) {
		start = cctx->rotor;
		bpf_for(i, 0, CORRAL_MAX_GROUPS) {
			group = (start + i) % CORRAL_MAX_GROUPS;
			if (!(owners & (1ULL << group)))
				continue;
			if (consume_group(group, cpu)) {
				cctx->rotor = (group + 1) % CORRAL_MAX_GROUPS;
				return;
			}
		}
	}

	if (cctx->host && consume_host(cpu))
		return;

	if (move_first(own_dsq, cpu, 0, 0, 0))
		return;

	/* Groups that lend their queued tasks to idle CPUs outside them. */
	lenders = lending_groups & ~owners;
	if (lenders) {
		bpf_for(group, 0, CORRAL_MAX_GROUPS) {
			if ((lenders & (1ULL << group)) && consume_group(group, cpu))
				return;
		}
	}

	stray = debug_stray_group;
	if (stray && stray <= CORRAL_MAX_GROUPS && !(owners & (1ULL << (stray - 1))))
		consume_group(stray - 1, cpu);
}

/*
 * A running task whose placement changed under it (its cgroup was remapped,
 * its group's CPUs changed, or in partial mode it just entered sched_ext
 * where it ran) gets its slice ended, so that it moves within a tick rather
 * than at the end of a long slice.
 */
void BPF_STRUCT_OPS(corral_tick, struct task_struct *p)
{
	struct group_state *st;
	struct task_ctx *tctx;
	struct bpf_cpumask *mask;
	s32 cpu = scx_bpf_task_cpu(p);
	u32 group;

	check_debug_knob(cpu, "tick");

	tctx = task_ctx_get(p, false);
	if (!tctx || tctx->why != PLACED_GROUP)
		return;
	group = resolve_group(p, tctx);
	st = group_state_get(group);
	mask = st ? st->mask : NULL;
	if (!mask)
		return;
	if (group != tctx->group ||
	    (!bpf_cpumask_test_cpu(cpu, cast_mask(mask)) &&
	     !(group < CORRAL_MAX_GROUPS && st->borrow)))
		scx_bpf_task_set_slice(p, 0);
}

void BPF_STRUCT_OPS(corral_running, struct task_struct *p)
{
	struct corral_group_stats *stats;
	struct group_state *st;
	struct task_ctx *tctx;
	struct cpu_ctx *cctx;
	struct bpf_cpumask *mask;
	u64 now = bpf_ktime_get_ns(), lat, nr;
	s32 cpu = scx_bpf_task_cpu(p);
	u32 group;
	bool outside;

	tctx = task_ctx_get(p, false);
	if (!tctx)
		return;
	tctx->running_at = now;
	group = tctx->group;

	/* What corral_kick_moved matches a remapped cgroup against. */
	cctx = cpu_ctx_of(cpu);
	if (cctx) {
		cctx->cur_group = group;
		cctx->cur_cgid = tctx->cgid;
		cctx->cur_mapped_cgid = tctx->mapped_cgid;
	}

	stats = stats_get(group);
	if (!stats)
		return;

	/*
	 * Only runs this scheduler queued are timed and judged: the kernel also
	 * resumes tasks without ops.enqueue (migration-disabled and exiting
	 * tasks, a task put back after a higher class preempted it).
	 */
	if (!tctx->queued_at)
		return;
	lat = now > tctx->queued_at ? now - tctx->queued_at : 0;
	stats->runs++;
	stats->lat_sum_ns += lat;
	stats->lat_hist[lat_bucket(lat) & (CORRAL_LAT_BUCKETS - 1)]++;
	if (lat > stats->lat_max_ns)
		stats->lat_max_ns = lat;
	tctx->queued_at = 0;

	st = group_state_get(group);
	if (!st)
		return;
	mask = st->mask;
	outside = mask && !bpf_cpumask_test_cpu(cpu, cast_mask(mask));
	if (outside) {
		if (tctx->why == PLACED_OVERRIDE ||
		    !bpf_cpumask_intersects(cast_mask(mask), p->cpus_ptr))
			stats->affinity_overrides++;
		else if (tctx->why == PLACED_RESCUE)
			stats->rescued++;
		else if (group < CORRAL_MAX_GROUPS && st->borrow)
			stats->borrowed_runs++;
		else
			stats->violations++;
	}

	/* A guest: preemptible by the groups owning this CPU (see preempt_guest). */
	if (cctx && cctx->owners && tctx->why != PLACED_OVERRIDE &&
	    (group >= CORRAL_MAX_GROUPS || !(cctx->owners & (1ULL << group)))) {
		if (!cctx->guest)
			__sync_fetch_and_add(&nr_guests, 1);
		cctx->guest = 1;
	}

	/* A long queue shrinks the slice, so that its last task waits boundedly. */
	nr = scx_bpf_dsq_nr_queued(group_dsq(group, st->order));
	if (nr > SLICE_QUEUE && p->scx.slice > min_slice_ns) {
		u64 slice = p->scx.slice * SLICE_QUEUE / nr;

		scx_bpf_task_set_slice(p, slice > min_slice_ns ? slice : min_slice_ns);
	}

	if ((group >= CORRAL_MAX_GROUPS || st->order == CORRAL_ORDER_VTIME) &&
	    st->vtime_now < tctx->vtime)
		st->vtime_now = tctx->vtime;
}

void BPF_STRUCT_OPS(corral_stopping, struct task_struct *p, bool runnable)
{
	struct corral_group_stats *stats;
	struct task_ctx *tctx;
	struct cpu_ctx *cctx;
	u64 now = bpf_ktime_get_ns(), ran;

	cctx = cpu_ctx_of(scx_bpf_task_cpu(p));
	if (cctx && cctx->guest) {
		cctx->guest = 0;
		__sync_fetch_and_sub(&nr_guests, 1);
	}
	if (cctx) {
		cctx->cur_group = NO_GROUP;
		cctx->cur_cgid = 0;
		cctx->cur_mapped_cgid = 0;
	}

	tctx = task_ctx_get(p, false);
	if (!tctx || !tctx->running_at)
		return;
	ran = now > tctx->running_at ? now - tctx->running_at : 0;
	tctx->running_at = 0;

	stats = stats_get(tctx->group);
	if (stats)
		stats->run_ns += ran;
	/* Charge virtual time inversely to weight (100 is nice 0). */
	if (p->scx.weight)
		tctx->vtime += ran * 100 / p->scx.weight;
}

/*
 * Put the tasks of this CPU's local DSQ back through enqueue, now, from
 * cpu_release. The kernel's older kfunc does it immediately; the newer form
 * (scx_bpf_dsq_reenq on SCX_DSQ_LOCAL, which the compat wrapper picks on 7.1
 * and later) only queues a per-CPU request on the runqueue and runs it later.
 * On 7.2 such a request could still be queued when the scheduler was
 * disabled (a CPU taken by a higher class need not return to sched_ext
 * first); the request lives in the scheduler's per-CPU memory, which is then
 * freed, and the next scheduler's first deferred run hit `list_del
 * corruption` in run_deferred (a kernel BUG, seen in the VM suite). The
 * immediate form leaves nothing behind.
 */
static __always_inline void reenqueue_displaced(void)
{
	if (bpf_ksym_exists(scx_bpf_reenqueue_local___v1))
		scx_bpf_reenqueue_local___v1();
	else
		scx_bpf_reenqueue_local();
}

/*
 * A higher class (fair in partial mode; RT, deadline or stop in both) took
 * @cpu: count it against the CPU's group, and put the tasks waiting in its
 * local DSQ back through enqueue so that other CPUs of their group can run
 * them instead of leaving them behind the intruder.
 */
void BPF_STRUCT_OPS(corral_cpu_release, s32 cpu, struct scx_cpu_release_args *args)
{
	struct corral_group_stats *stats;
	struct cpu_ctx *cctx = cpu_ctx_get();

	if (cctx) {
		cctx->released_at = bpf_ktime_get_ns();
		stats = stats_get(cctx->stat_group);
		if (stats)
			stats->displaced++;
	}
	reenqueue_displaced();
}

/* @cpu is ours again: charge the time the higher class held it. */
void BPF_STRUCT_OPS(corral_cpu_acquire, s32 cpu, struct scx_cpu_acquire_args *args)
{
	struct corral_group_stats *stats;
	struct cpu_ctx *cctx = cpu_ctx_get();
	u64 now = bpf_ktime_get_ns();

	if (!cctx || !cctx->released_at)
		return;
	stats = stats_get(cctx->stat_group);
	if (stats && now > cctx->released_at)
		stats->displaced_ns += now - cctx->released_at;
	cctx->released_at = 0;
}

/*
 * CPU hotplug. Implementing both callbacks keeps the scheduler attached
 * (without them the kernel exits it on every hotplug). They keep active_cpus,
 * which enqueue checks: a group with no active CPU the task may use makes it
 * an affinity override. The rescue scan is the net for anything left behind.
 */
static void set_active(s32 cpu, bool on)
{
	struct bpf_cpumask *active;

	active = active_cpus;
	if (active) {
		if (on)
			bpf_cpumask_set_cpu(cpu, active);
		else
			bpf_cpumask_clear_cpu(cpu, active);
	}
}

void BPF_STRUCT_OPS(corral_cpu_online, s32 cpu)
{
	__sync_fetch_and_add(&nr_hotplug_events, 1);
	set_active(cpu, true);
}

/*
 * @cpu stops dispatching. Put the tasks of the queues it served back through
 * enqueue, which now sees it inactive: its override queue, the host queue and
 * its groups' queues. Tasks re-enqueued on the offline CPU's own rq go to its
 * local DSQ, which the kernel's hotplug path empties.
 */
void BPF_STRUCT_OPS(corral_cpu_offline, s32 cpu)
{
	struct cpu_ctx *cctx = cpu_ctx_of(cpu);
	u64 owners = cctx ? cctx->owners : 0;
	u32 group;

	__sync_fetch_and_add(&nr_hotplug_events, 1);
	set_active(cpu, false);
	if (!__COMPAT_has_generic_reenq())
		return;
	scx_bpf_dsq_reenq(CORRAL_DSQ_CPU_BASE + cpu, 0);
	scx_bpf_dsq_reenq(CORRAL_DSQ_HOST, 0);
	bpf_for(group, 0, CORRAL_MAX_GROUPS) {
		if (owners & (1ULL << group)) {
			scx_bpf_dsq_reenq(CORRAL_DSQ_FIFO_BASE + group, 0);
			scx_bpf_dsq_reenq(CORRAL_DSQ_VTIME_BASE + group, 0);
		}
	}
}

s32 BPF_STRUCT_OPS(corral_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct task_ctx *tctx = task_ctx_get(p, true);

	if (!tctx)
		return -ENOMEM;
	/*
	 * Storage starts zeroed, and 0 is a real group: a task that runs before
	 * select_cpu or enqueue has noted its group must not be charged to group 0.
	 */
	tctx->group = NO_GROUP;
	return 0;
}

/*
 * Partial mode: a task that joins a mapped cgroup after the mapping stays on
 * the fair class unless someone switches it. Report it to user space, which
 * switches it (and its threads, for a whole-process move) to SCHED_EXT.
 * Loaded only in partial mode.
 */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(corral_cgroup_attach, struct cgroup *dst, const char *path,
	     struct task_struct *task, bool threadgroup)
{
	struct corral_cgroup *ent = NULL;
	struct corral_joiner *ev;
	u64 mapped;

	/* Only the cgroup v2 hierarchy (hierarchy id 0) maps tasks. */
	if (dst->root->hierarchy_id != 0)
		return 0;
	if (!threadgroup && task->policy == CORRAL_SCHED_EXT)
		return 0;
	mapped = find_mapping(dst, &ent);
	if (!mapped || !ent)
		return 0;

	ev = bpf_ringbuf_reserve(&corral_joiners, sizeof(*ev), 0);
	if (!ev)
		return 0;
	ev->pid = task->pid;
	ev->tgid = task->tgid;
	ev->cgid = dst->kn->id;
	ev->threadgroup = threadgroup;
	ev->reserved = 0;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/*
 * Rebuild group @group's state from the table: a fresh bpf_cpumask from the
 * bitmap (or none when the slot is empty), slice, order and borrow flag. An
 * empty host slot becomes every possible CPU, so that unmapped tasks can
 * always run. Returns 1 when the group has a mask, 0 when it is empty, < 0 on
 * error.
 */
static int build_group(u32 group)
{
	struct bpf_cpumask *mask = NULL, *old;
	struct corral_group *grp;
	struct group_state *st;
	bool host = group == CORRAL_HOST_GROUP;
	u32 cpu, word;

	grp = bpf_map_lookup_elem(&corral_groups, &group);
	st = group_state_get(group);
	if (!grp || !st)
		return -ENOENT;

	if (grp->nr_cpus || host) {
		mask = bpf_cpumask_create();
		if (!mask)
			return -ENOMEM;
		bpf_for(cpu, 0, nr_possible_cpus) {
			word = cpu / 64;
			if (word >= CORRAL_CPUMASK_WORDS)
				break;
			if (!grp->nr_cpus || (grp->cpus[word] & (1ULL << (cpu % 64))))
				bpf_cpumask_set_cpu(cpu, mask);
		}
	}

	st->slice_ns = grp->slice_ns ? grp->slice_ns : host_slice_ns;
	if (st->slice_ns > MAX_SLICE_NS)
		st->slice_ns = MAX_SLICE_NS;
	st->order = host ? CORRAL_ORDER_VTIME : grp->order;
	st->borrow = host ? 0 : grp->borrow;
	st->generation = grp->generation;

	old = bpf_kptr_xchg(&st->mask, mask);
	if (old)
		bpf_cpumask_release(old);
	return mask ? 1 : 0;
}

/*
 * Recompute every CPU's owners, host flag and statistics slot, and the
 * lending groups, from the group table's bitmaps (what build_group just
 * turned into masks).
 */
static void build_cpu_view(void)
{
	struct corral_group *grp;
	struct cpu_ctx *cctx;
	u64 owners, lenders = 0;
	u32 zero = 0, cpu, group, word, bit, first, host_slot = CORRAL_HOST_GROUP;
	bool host;

	bpf_for(group, 0, CORRAL_MAX_GROUPS) {
		grp = bpf_map_lookup_elem(&corral_groups, &group);
		if (grp && grp->nr_cpus && grp->borrow)
			lenders |= 1ULL << group;
	}
	lending_groups = lenders;

	bpf_for(cpu, 0, nr_possible_cpus) {
		word = cpu / 64;
		bit = cpu % 64;
		if (word >= CORRAL_CPUMASK_WORDS)
			break;
		owners = 0;
		first = CORRAL_HOST_GROUP;
		bpf_for(group, 0, CORRAL_MAX_GROUPS) {
			grp = bpf_map_lookup_elem(&corral_groups, &group);
			if (grp && grp->nr_cpus && (grp->cpus[word & 7] & (1ULL << bit))) {
				owners |= 1ULL << group;
				if (first == CORRAL_HOST_GROUP)
					first = group;
			}
		}
		grp = bpf_map_lookup_elem(&corral_groups, &host_slot);
		host = !grp || !grp->nr_cpus || (grp->cpus[word & 7] & (1ULL << bit));

		cctx = bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, cpu);
		if (!cctx)
			continue;
		cctx->owners = owners;
		cctx->host = host;
		cctx->stat_group = first;
	}
}

/*
 * Run by user space through BPF_PROG_TEST_RUN after it wrote group table
 * entries: rebuilds the named groups' cpumasks (user space cannot write kptrs).
 */
SEC("syscall")
int corral_build_masks(struct corral_build_args *args)
{
	u32 first = args->first_group, nr = args->nr_groups;
	int i, ret;

	args->nr_built = 0;
	args->nr_cleared = 0;
	bpf_for(i, 0, CORRAL_NR_GROUP_SLOTS) {
		if (i < first || i - first >= nr)
			continue;
		ret = build_group(i);
		if (ret < 0)
			return ret;
		if (ret)
			args->nr_built++;
		else
			args->nr_cleared++;
	}
	build_cpu_view();
	return 0;
}

/*
 * Run by user space through BPF_PROG_TEST_RUN after it changed the mapping of
 * args->cgroup_id: preempts each CPU whose running task is of that cgroup
 * (directly, or placed by its mapping) and was queued for another group than
 * args->group. The preempted task goes back through enqueue, which resolves
 * it again and queues it for its new group at once; without the kick it moves
 * at its next tick (corral_tick). Queued tasks need no kick: they leave at
 * their old group's next dispatch (move_first_of_group) or their next enqueue.
 * cpu_ctx is read without a lock: a CPU that just switched tasks may be kicked
 * for nothing (one more pass through dispatch) or missed (the tick catches it).
 */
SEC("syscall")
int corral_kick_moved(struct corral_kick_args *args)
{
	struct cpu_ctx *cctx;
	u64 cgid = args->cgroup_id;
	u32 group = args->group, zero = 0;
	s32 cpu;

	args->nr_kicked = 0;
	if (!cgid)
		return -EINVAL;
	bpf_for(cpu, 0, nr_possible_cpus) {
		cctx = bpf_map_lookup_percpu_elem(&cpu_ctxs, &zero, cpu);
		if (!cctx || cctx->cur_group == NO_GROUP || cctx->cur_group == group)
			continue;
		if (cctx->cur_cgid != cgid && cctx->cur_mapped_cgid != cgid)
			continue;
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
		args->nr_kicked++;
	}
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(corral_init)
{
	const struct cpumask *online;
	struct bpf_cpumask *active;
	s32 ret;
	int i;

	if (nr_possible_cpus > CORRAL_MAX_CPUS) {
		scx_bpf_error("%u possible CPUs: corral's bitmaps describe at most %d",
			      nr_possible_cpus, CORRAL_MAX_CPUS);
		return -E2BIG;
	}
	active = bpf_cpumask_create();
	if (!active) {
		scx_bpf_error("failed to allocate the active CPU mask");
		return -ENOMEM;
	}
	online = scx_bpf_get_online_cpumask();
	bpf_cpumask_copy(active, online);
	scx_bpf_put_cpumask(online);
	active = bpf_kptr_xchg(&active_cpus, active);
	if (active)
		bpf_cpumask_release(active);

	ret = scx_bpf_create_dsq(CORRAL_DSQ_HOST, -1);
	if (ret) {
		scx_bpf_error("failed to create the host DSQ %d: %d", CORRAL_DSQ_HOST, ret);
		return ret;
	}
	bpf_for(i, 0, CORRAL_MAX_GROUPS) {
		ret = scx_bpf_create_dsq(CORRAL_DSQ_FIFO_BASE + i, -1);
		if (ret) {
			scx_bpf_error("failed to create the FIFO DSQ of group %d: %d", i, ret);
			return ret;
		}
		ret = scx_bpf_create_dsq(CORRAL_DSQ_VTIME_BASE + i, -1);
		if (ret) {
			scx_bpf_error("failed to create the vtime DSQ of group %d: %d", i, ret);
			return ret;
		}
	}
	bpf_for(i, 0, nr_possible_cpus) {
		if (i >= CORRAL_MAX_CPUS)
			break;
		ret = scx_bpf_create_dsq(CORRAL_DSQ_CPU_BASE + i, -1);
		if (ret) {
			scx_bpf_error("failed to create the override DSQ of CPU %d: %d", i, ret);
			return ret;
		}
	}
	bpf_for(i, 0, CORRAL_NR_GROUP_SLOTS) {
		ret = build_group(i);
		if (ret < 0) {
			scx_bpf_error("failed to build the cpumask of group slot %d from the group table: %d",
				      i, ret);
			return ret;
		}
	}
	build_cpu_view();
	return 0;
}

void BPF_STRUCT_OPS(corral_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

/* Full switch by default; user space adds SCX_OPS_SWITCH_PARTIAL for partial mode. */
SCX_OPS_DEFINE(corral_ops,
	       .select_cpu		= (void *)corral_select_cpu,
	       .enqueue			= (void *)corral_enqueue,
	       .dispatch		= (void *)corral_dispatch,
	       .tick			= (void *)corral_tick,
	       .running			= (void *)corral_running,
	       .stopping		= (void *)corral_stopping,
	       .cpu_acquire		= (void *)corral_cpu_acquire,
	       .cpu_release		= (void *)corral_cpu_release,
	       .cpu_online		= (void *)corral_cpu_online,
	       .cpu_offline		= (void *)corral_cpu_offline,
	       .init_task		= (void *)corral_init_task,
	       .init			= (void *)corral_init,
	       .exit			= (void *)corral_exit,
	       .flags			= SCX_OPS_ENQ_LAST,
	       .timeout_ms		= 10000,
	       .name			= "corral");
