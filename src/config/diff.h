/* SPDX-License-Identifier: MIT */
/*
 * What changed between two loaded configs, for a reload: which keys a
 * running vramd cannot take without a restart of its own, and for each
 * workload whether a change applies to the running process as it is or
 * needs a new process.
 */
#ifndef VRAM_DIFF_H
#define VRAM_DIFF_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

enum vram_diff_kind {
	VRAM_DIFF_SAME = 0, /* nothing that matters changed (positions in the file may have) */
	VRAM_DIFF_LIVE,     /* applies to the running process: timers, limits, routing, policy */
	VRAM_DIFF_PROCESS,  /* needs a new process: command, environment, GPUs, memory, ... */
};

/*
 * Whether b keeps everything of a that only a restart of vramd can change:
 * every daemon key but log_level, the GPU backend and the simulated GPUs.
 * If not, keys receives the changed ones ("daemon.listen, gpus.sim"),
 * truncated to size. Returns true when a reload may go ahead.
 */
bool vram_diff_fixed(const struct vram_config *a, const struct vram_config *b, char *keys,
		     size_t size);

/*
 * How workload b differs from a (same name); keys receives the changed keys
 * ("cmd, idle.offload_after"), truncated to size, "" when none.
 */
enum vram_diff_kind vram_diff_workload(const struct vram_workload_config *a,
				       const struct vram_workload_config *b, char *keys,
				       size_t size);

/* "same", "live", "process". */
const char *vram_diff_kind_name(enum vram_diff_kind k);

#endif
