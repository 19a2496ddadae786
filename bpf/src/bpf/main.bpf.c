/* SPDX-License-Identifier: GPL-2.0 */
/*
 * main.bpf.c - corral's sched_ext scheduler: cgroup -> CPU-group placement.
 *
 * A task's cgroup (its cgroup v2 dfl_cgrp, or the nearest mapped ancestor)
 * decides its group through the pinned cgroup map. Each group owns a set of
 * CPUs, a time slice and an order (FIFO or vtime), and has its own DSQs.
 *
 * - select_cpu keeps a task on an idle CPU of its group (the previous CPU
 *   first) and inserts it straight into that CPU's local DSQ;
 * - enqueue puts it on its group's DSQ and kicks an idle CPU of the group;
 * - dispatch serves the groups owning the CPU, then the fallback DSQ, then
 *   groups that allow borrowing;
 * - a task with no usable mapping goes to the fallback DSQ, which every CPU
 *   serves, so nothing stalls.
 *
 * User space publishes groups as plain bitmaps in the pinned group table and
 * then runs corral_build_masks (SEC("syscall"), through test_run), which turns
 * them into the bpf_cpumask kptrs the hot paths use. Only SCHED_EXT tasks are
 * scheduled here (SCX_OPS_SWITCH_PARTIAL); the control plane switches a
 * mapped cgroup's threads to SCHED_EXT.
 */
#include <scx/common.bpf.h>

#include "intf.h"
#include "maps.bpf.h"

char _license[] SEC("license") = "GPL";

UEI_DEFINE(uei);

/* Group id of a task without a usable mapping. */
#define NO_GROUP ((u32)-1)

/*
 * Time slice of tasks on the fallback DSQ (unmapped tasks). Longer slices
 * mean fewer scheduling events but a longer wait for other fallback tasks.
 */
const volatile u64 fallback_slice_ns = 5000000ULL;

/*
 * Once this long has passed since the last check, a CPU serves the fallback
 * DSQ and the queues of deleted groups before its own groups. Bounds the wait
 * of tasks no CPU owns on fully loaded CPUs (the sched_ext watchdog disables a
 * scheduler that starves a task); smaller values let them intrude on groups'
 * CPUs more often, and cost a scan of the group table more often.
 */
const volatile u64 fallback_starve_ns = 20000000ULL;

/* Number of possible CPUs, set by user space; bounds the bitmap walk. */
const volatile u32 nr_possible_cpus = 1;

/*
 * Debug knob, written by user space at run time: when non-zero, the next
 * dispatch or tick calls scx_bpf_error(), which makes the kernel disable the
 * scheduler. Exists for the failure test; costs one load per dispatch/tick.
 */
volatile u32 debug_force_error;

/* Last time (ns) a CPU served the fallback DSQ; see fallback_starve_ns. */
static u64 fallback_served_at;

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
	__uint(max_entries, CORRAL_MAX_GROUPS);
} group_states SEC(".maps");

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
	/* Group the task was queued for, NO_GROUP for the fallback DSQ. */
	u32 group;
	/*
	 * Non-zero when this scheduler put the task on the CPU it is about to run
	 * on (a direct insert, or a move from a DSQ in dispatch). Only such runs
	 * are judged against the group's mask: the kernel also resumes a task
	 * without asking (a running task that entered sched_ext or changed cgroup
	 * continues where it was), and enqueue preempts those at once.
	 */
	u32 placed;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

/* Per-CPU round-robin start over the groups, so overlapping groups share a CPU. */
struct cpu_ctx {
	/* Next group index dispatch looks at first. */
	u32 rotor;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct cpu_ctx);
	__uint(max_entries, 1);
} cpu_ctxs SEC(".maps");

static struct task_ctx *task_ctx_get(struct task_struct *p, bool create)
{
	return bpf_task_storage_get(&task_ctxs, p, 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static struct group_state *group_state_get(u32 group)
{
	if (group >= CORRAL_MAX_GROUPS)
		return NULL;
	return bpf_map_lookup_elem(&group_states, &group);
}

static struct corral_group_stats *stats_get(u32 group)
{
	u32 idx = group < CORRAL_MAX_GROUPS ? group : CORRAL_FALLBACK_STATS;

	return bpf_map_lookup_elem(&corral_stats, &idx);
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

/* The group a mapping entry applies, or NO_GROUP when it has no usable group. */
static u32 usable_group(struct corral_cgroup *ent)
{
	struct group_state *st = group_state_get(ent->group_id);

	if (!st || !st->mask)
		return NO_GROUP;
	return ent->group_id;
}

/*
 * Resolve @p's group: its dfl_cgrp's mapping, or the nearest mapped ancestor's
 * (CORRAL_MAX_CGROUP_DEPTH levels at most). The mapped cgroup is cached in
 * @tctx; the cache is used while the task stays in the same cgroup and the map
 * generation is unchanged, and its entry is looked up on every use, so a
 * single update of that entry takes effect at the task's next enqueue.
 */
static u32 resolve_group(struct task_struct *p, struct task_ctx *tctx)
{
	struct corral_cgroup *ent;
	struct cgroup *dfl;
	u64 gen = map_generation();
	u64 cgid;
	u32 group = NO_GROUP;
	int level, i;

	dfl = p->cgroups->dfl_cgrp;
	if (!dfl)
		return NO_GROUP;
	cgid = dfl->kn->id;

	if (tctx->mapped_cgid && tctx->cgid == cgid && tctx->generation == gen) {
		ent = bpf_map_lookup_elem(&corral_cgroups, &tctx->mapped_cgid);
		if (ent && (tctx->mapped_cgid == cgid ||
			    !(ent->flags & CORRAL_CGROUP_NO_INHERIT))) {
			group = usable_group(ent);
			if (group != NO_GROUP)
				return group;
		}
	}

	tctx->cgid = cgid;
	tctx->generation = gen;
	tctx->mapped_cgid = 0;

	ent = bpf_map_lookup_elem(&corral_cgroups, &cgid);
	if (ent) {
		group = usable_group(ent);
		if (group != NO_GROUP)
			tctx->mapped_cgid = cgid;
		return group;
	}

	level = dfl->level;
	bpf_for(i, 1, CORRAL_MAX_CGROUP_DEPTH) {
		struct cgroup *anc;
		u64 id;

		if (level - i < 0)
			break;
		anc = bpf_cgroup_ancestor(dfl, level - i);
		if (!anc)
			break;
		id = anc->kn->id;
		bpf_cgroup_release(anc);

		ent = bpf_map_lookup_elem(&corral_cgroups, &id);
		if (!ent || (ent->flags & CORRAL_CGROUP_NO_INHERIT))
			continue;
		group = usable_group(ent);
		if (group != NO_GROUP)
			tctx->mapped_cgid = id;
		break;
	}
	return group;
}

/* Record that @p was queued for @group at @now. */
static void note_queued(struct task_ctx *tctx, u32 group, u64 now, bool direct)
{
	struct corral_group_stats *stats = stats_get(group);

	tctx->group = group;
	tctx->queued_at = now;
	tctx->placed = direct;
	if (stats) {
		stats->enqueues++;
		if (direct)
			stats->direct_dispatches++;
	}
}

/* Claim an idle CPU of @mask that @p may run on: @prev_cpu first. */
static s32 pick_idle_in(struct task_struct *p, const struct cpumask *mask, s32 prev_cpu)
{
	s32 cpu;

	if (bpf_cpumask_test_cpu(prev_cpu, mask) &&
	    bpf_cpumask_test_cpu(prev_cpu, p->cpus_ptr) &&
	    scx_bpf_test_and_clear_cpu_idle(prev_cpu))
		return prev_cpu;

	cpu = scx_bpf_pick_idle_cpu(mask, 0);
	if (cpu < 0)
		return -1;
	if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr)) {
		/* Claimed a CPU @p may not use: wake it so it re-enters idle. */
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		return -1;
	}
	return cpu;
}

s32 BPF_STRUCT_OPS(corral_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct group_state *st;
	struct task_ctx *tctx;
	struct bpf_cpumask *mask;
	bool is_idle = false;
	u32 group;
	s32 cpu;

	tctx = task_ctx_get(p, true);
	if (!tctx)
		return prev_cpu;

	group = resolve_group(p, tctx);
	st = group_state_get(group);
	mask = st ? st->mask : NULL;
	if (!st || !mask || !bpf_cpumask_intersects(cast_mask(mask), p->cpus_ptr)) {
		cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
		if (is_idle) {
			note_queued(tctx, NO_GROUP, bpf_ktime_get_ns(), true);
			scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, fallback_slice_ns, 0);
		}
		return cpu;
	}

	cpu = pick_idle_in(p, cast_mask(mask), prev_cpu);
	if (cpu >= 0) {
		note_queued(tctx, group, bpf_ktime_get_ns(), true);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, st->slice_ns, 0);
		return cpu;
	}

	/* No idle CPU: enqueue decides; hint at a CPU of the group. */
	if (bpf_cpumask_test_cpu(prev_cpu, cast_mask(mask)))
		return prev_cpu;
	cpu = bpf_cpumask_any_distribute(cast_mask(mask));
	if (cpu < nr_possible_cpus && bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
		return cpu;
	return prev_cpu;
}

void BPF_STRUCT_OPS(corral_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct group_state *st;
	struct task_ctx *tctx;
	struct bpf_cpumask *mask;
	u64 now = bpf_ktime_get_ns();
	u64 vtime;
	u32 group;
	s32 cpu, this_cpu;

	tctx = task_ctx_get(p, true);
	if (!tctx) {
		scx_bpf_dsq_insert(p, CORRAL_DSQ_FALLBACK, fallback_slice_ns, enq_flags);
		return;
	}

	group = resolve_group(p, tctx);
	st = group_state_get(group);
	mask = st ? st->mask : NULL;
	/*
	 * SCX_ENQ_LAST: dispatch found nothing for this CPU and @p is its last
	 * runnable task. Keep it here when the CPU is one @p may use, or the CPU
	 * would idle with @p queued (nothing else triggers a dispatch).
	 */
	this_cpu = scx_bpf_task_cpu(p);
	if (!st || !mask || !bpf_cpumask_intersects(cast_mask(mask), p->cpus_ptr)) {
		if (enq_flags & SCX_ENQ_LAST) {
			note_queued(tctx, NO_GROUP, now, true);
			scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, fallback_slice_ns, enq_flags);
			return;
		}
		note_queued(tctx, NO_GROUP, now, false);
		scx_bpf_dsq_insert(p, CORRAL_DSQ_FALLBACK, fallback_slice_ns, enq_flags);
		cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
		if (cpu >= 0)
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
		return;
	}

	if ((enq_flags & SCX_ENQ_LAST) && bpf_cpumask_test_cpu(this_cpu, cast_mask(mask))) {
		note_queued(tctx, group, now, true);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, st->slice_ns, enq_flags);
		return;
	}

	/*
	 * @p is running on a CPU outside its group (it just entered sched_ext,
	 * or its group changed under it): preempt it so it moves now rather
	 * than at the end of its slice.
	 */
	if (!(enq_flags & SCX_ENQ_LAST) && scx_bpf_task_running(p) &&
	    !bpf_cpumask_test_cpu(this_cpu, cast_mask(mask)))
		scx_bpf_kick_cpu(this_cpu, SCX_KICK_PREEMPT);

	note_queued(tctx, group, now, false);
	if (st->order == CORRAL_ORDER_VTIME) {
		/* Bound the credit a task that slept long can bring back. */
		vtime = tctx->vtime;
		if (st->vtime_now > st->slice_ns && vtime < st->vtime_now - st->slice_ns)
			vtime = st->vtime_now - st->slice_ns;
		tctx->vtime = vtime;
		scx_bpf_dsq_insert_vtime(p, CORRAL_DSQ_VTIME_BASE + group, st->slice_ns,
					 vtime, enq_flags);
	} else {
		scx_bpf_dsq_insert(p, CORRAL_DSQ_FIFO_BASE + group, st->slice_ns, enq_flags);
	}

	cpu = scx_bpf_pick_idle_cpu(cast_mask(mask), 0);
	if (cpu < 0 && st->borrow)
		cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu >= 0)
		scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

/*
 * Move the first task of DSQ @dsq_id that may run on this CPU to its local
 * DSQ, and mark it placed (see task_ctx.placed).
 */
static bool move_first(u64 dsq_id)
{
	struct task_struct *p;
	struct task_ctx *tctx;

	if (!scx_bpf_dsq_nr_queued(dsq_id))
		return false;
	bpf_for_each(scx_dsq, p, dsq_id, 0) {
		if (!scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL, 0))
			continue;
		tctx = task_ctx_get(p, false);
		if (tctx)
			tctx->placed = 1;
		return true;
	}
	return false;
}

/* Move the first task of @group's DSQs to this CPU's local DSQ. */
static bool consume_group(u32 group, struct group_state *st)
{
	u64 first = CORRAL_DSQ_FIFO_BASE + group, second = CORRAL_DSQ_VTIME_BASE + group;
	struct corral_group_stats *stats;

	if (st->order == CORRAL_ORDER_VTIME) {
		first = CORRAL_DSQ_VTIME_BASE + group;
		second = CORRAL_DSQ_FIFO_BASE + group;
	}
	if (!move_first(first) && !move_first(second))
		return false;
	stats = stats_get(group);
	if (stats)
		stats->dispatches++;
	return true;
}

static bool consume_fallback(u64 now)
{
	if (!move_first(CORRAL_DSQ_FALLBACK))
		return false;
	fallback_served_at = now;
	return true;
}

/* Drain the queues of groups that have no CPUs any more (deleted while tasks were queued). */
static bool consume_orphans(void)
{
	struct group_state *st;
	u32 group;

	bpf_for(group, 0, CORRAL_MAX_GROUPS) {
		st = group_state_get(group);
		if (!st || st->mask)
			continue;
		if (consume_group(group, st))
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
	struct group_state *st;
	struct bpf_cpumask *mask;
	struct cpu_ctx *cctx;
	u64 now = bpf_ktime_get_ns();
	u32 zero = 0, start = 0, group;
	int i;

	check_debug_knob(cpu, "dispatch");

	/*
	 * Queues no CPU owns, served first once in a while so that they cannot
	 * starve behind fully loaded groups.
	 */
	if (now - fallback_served_at > fallback_starve_ns) {
		fallback_served_at = now;
		if (consume_fallback(now) || consume_orphans())
			return;
	}

	cctx = bpf_map_lookup_elem(&cpu_ctxs, &zero);
	if (cctx)
		start = cctx->rotor;

	/* The groups owning this CPU, round-robin. */
	bpf_for(i, 0, CORRAL_MAX_GROUPS) {
		group = (start + i) % CORRAL_MAX_GROUPS;
		st = group_state_get(group);
		if (!st)
			continue;
		mask = st->mask;
		if (!mask || !bpf_cpumask_test_cpu(cpu, cast_mask(mask)))
			continue;
		if (consume_group(group, st)) {
			if (cctx)
				cctx->rotor = (group + 1) % CORRAL_MAX_GROUPS;
			return;
		}
	}

	if (consume_fallback(now))
		return;

	if (consume_orphans())
		return;

	/* Groups that lend their queued tasks to CPUs outside the group. */
	bpf_for(i, 0, CORRAL_MAX_GROUPS) {
		group = (start + i) % CORRAL_MAX_GROUPS;
		st = group_state_get(group);
		if (!st || !st->borrow)
			continue;
		mask = st->mask;
		if (!mask || bpf_cpumask_test_cpu(cpu, cast_mask(mask)))
			continue;
		if (consume_group(group, st))
			return;
	}
}

void BPF_STRUCT_OPS(corral_tick, struct task_struct *p)
{
	check_debug_knob(scx_bpf_task_cpu(p), "tick");
}

void BPF_STRUCT_OPS(corral_running, struct task_struct *p)
{
	struct corral_group_stats *stats;
	struct group_state *st;
	struct task_ctx *tctx;
	struct bpf_cpumask *mask;
	u64 now = bpf_ktime_get_ns(), lat;
	s32 cpu = scx_bpf_task_cpu(p);
	u32 b, placed;

	tctx = task_ctx_get(p, false);
	if (!tctx)
		return;
	tctx->running_at = now;
	placed = tctx->placed;
	tctx->placed = 0;

	stats = stats_get(tctx->group);
	if (!stats)
		return;

	if (tctx->queued_at) {
		lat = now > tctx->queued_at ? now - tctx->queued_at : 0;
		b = lat_bucket(lat);
		stats->runs++;
		stats->lat_sum_ns += lat;
		if (b < CORRAL_LAT_BUCKETS)
			stats->lat_hist[b]++;
		tctx->queued_at = 0;
	}

	st = group_state_get(tctx->group);
	if (!st)
		return;
	mask = st->mask;
	if (placed && mask && !bpf_cpumask_test_cpu(cpu, cast_mask(mask))) {
		if (st->borrow)
			stats->borrowed_runs++;
		else
			stats->violations++;
	}
	if (st->order == CORRAL_ORDER_VTIME && st->vtime_now < tctx->vtime)
		st->vtime_now = tctx->vtime;
}

void BPF_STRUCT_OPS(corral_stopping, struct task_struct *p, bool runnable)
{
	struct corral_group_stats *stats;
	struct task_ctx *tctx;
	u64 now = bpf_ktime_get_ns(), ran;

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
 * Rebuild group @group's state from the table: a fresh bpf_cpumask from the
 * bitmap (or none when the slot is empty), slice, order and borrow flag.
 * Returns 1 when the group has a mask, 0 when it is empty, < 0 on error.
 */
static int build_group(u32 group)
{
	struct bpf_cpumask *mask = NULL, *old;
	struct corral_group *grp;
	struct group_state *st;
	u32 cpu, word;

	grp = bpf_map_lookup_elem(&corral_groups, &group);
	st = group_state_get(group);
	if (!grp || !st)
		return -ENOENT;

	if (grp->nr_cpus) {
		mask = bpf_cpumask_create();
		if (!mask)
			return -ENOMEM;
		bpf_for(cpu, 0, nr_possible_cpus) {
			word = cpu / 64;
			if (word >= CORRAL_CPUMASK_WORDS)
				break;
			if (grp->cpus[word] & (1ULL << (cpu % 64)))
				bpf_cpumask_set_cpu(cpu, mask);
		}
	}

	st->slice_ns = grp->slice_ns;
	st->order = grp->order;
	st->borrow = grp->borrow;
	st->generation = grp->generation;

	old = bpf_kptr_xchg(&st->mask, mask);
	if (old)
		bpf_cpumask_release(old);
	return grp->nr_cpus ? 1 : 0;
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
	bpf_for(i, 0, CORRAL_MAX_GROUPS) {
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
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(corral_init)
{
	s32 ret;
	int i;

	fallback_served_at = bpf_ktime_get_ns();

	ret = scx_bpf_create_dsq(CORRAL_DSQ_FALLBACK, -1);
	if (ret) {
		scx_bpf_error("failed to create the fallback DSQ %d: %d", CORRAL_DSQ_FALLBACK, ret);
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
		ret = build_group(i);
		if (ret < 0) {
			scx_bpf_error("failed to build the cpumask of group %d from the group table: %d",
				      i, ret);
			return ret;
		}
	}
	return 0;
}

void BPF_STRUCT_OPS(corral_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(corral_ops,
	       .select_cpu		= (void *)corral_select_cpu,
	       .enqueue			= (void *)corral_enqueue,
	       .dispatch		= (void *)corral_dispatch,
	       .tick			= (void *)corral_tick,
	       .running			= (void *)corral_running,
	       .stopping		= (void *)corral_stopping,
	       .init_task		= (void *)corral_init_task,
	       .init			= (void *)corral_init,
	       .exit			= (void *)corral_exit,
	       .flags			= SCX_OPS_SWITCH_PARTIAL | SCX_OPS_ENQ_LAST,
	       .timeout_ms		= 10000,
	       .name			= "corral");
