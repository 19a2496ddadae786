/* SPDX-License-Identifier: GPL-2.0 */
/*
 * maps.bpf.h - the pinned maps, declared once for both BPF objects.
 *
 * maps.bpf.c (maps only, loadable on any kernel with BPF) and main.bpf.c (the
 * scheduler) include this file, so both objects carry identical definitions
 * and BTF. User space pins the maps of whichever object it loads first and the
 * other reuses the pins (libbpf checks type, key/value size, max_entries and
 * flags; the layout map guards against a layout change those checks miss).
 */
#ifndef __CORRAL_MAPS_BPF_H
#define __CORRAL_MAPS_BPF_H

#include "intf.h"

/* One entry: the layout version and the global generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct corral_layout);
	__uint(max_entries, 1);
} corral_layout SEC(".maps");

/* Cgroup id -> group. One element update is the atomic enforcement step. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, u64);
	__type(value, struct corral_cgroup);
	__uint(max_entries, CORRAL_MAX_CGROUPS);
} corral_cgroups SEC(".maps");

/* Group id -> bitmap and settings, as user space published them; slot 64 is the host group. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, u32);
	__type(value, struct corral_group);
	__uint(max_entries, CORRAL_NR_GROUP_SLOTS);
} corral_groups SEC(".maps");

/* Per-CPU statistics, one entry per group plus CORRAL_HOST_GROUP. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, u32);
	__type(value, struct corral_group_stats);
	__uint(max_entries, CORRAL_NR_STATS);
} corral_stats SEC(".maps");

#endif /* __CORRAL_MAPS_BPF_H */
