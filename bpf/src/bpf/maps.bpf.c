/* SPDX-License-Identifier: GPL-2.0 */
/*
 * maps.bpf.c - an object holding only corral's pinned maps.
 *
 * Loading it creates and pins the maps (with BTF, so bpftool prints field
 * names) on any kernel with BPF, including hosts without sched_ext. The
 * control plane can then populate the maps before, and independently of, the
 * scheduler, which reuses the same pins when it loads.
 */
/* Not scx/common.bpf.h: it brings sched_ext programs this object must not carry. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "maps.bpf.h"

char _license[] SEC("license") = "GPL";
