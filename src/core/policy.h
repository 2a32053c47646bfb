/* SPDX-License-Identifier: MIT */
/*
 * Lifecycle policy: the idle timers and the choice of what to evict.
 *
 * Idle timers: a workload is idle when no request is in flight; idle time
 * counts from the end of the last request (or from when it became ready).
 * Once idle for offload_after it is offloaded (from ready), once idle for
 * park_after it is parked (from offloaded, when its engine can park and its
 * last park did not fail), once idle for release_after it is released (from
 * ready, offloaded or parked). A workload with a request in flight is never
 * touched by a timer.
 *
 * Eviction: the planner's ledger is built from the runtime (what each GPU
 * holds, which instances are resident and idle), and vram_plan_place decides
 * where an instance goes and which residents would have to make room.
 */
#ifndef VRAM_POLICY_H
#define VRAM_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/plan.h"
#include "core/workload.h"
#include "gpu/gpu.h"

enum vram_idle_action {
	VRAM_IDLE_NONE = 0,
	VRAM_IDLE_OFFLOAD,
	VRAM_IDLE_RELEASE,
	VRAM_IDLE_PARK,
};

/* ms w has been idle at now_ms; 0 while a request is in flight. */
uint64_t vram_policy_idle_ms(const struct vram_workload *w, uint64_t now_ms);
/* What the idle timers ask of w at now_ms. Pure. */
enum vram_idle_action vram_policy_idle_action(const struct vram_workload *w, uint64_t now_ms);
/* True when w may be evicted to make room: ready, nothing in flight, no action pending. */
bool vram_policy_evictable(const struct vram_workload *w);

/* A planner ledger built from the runtime. Transparent: callers embed it. */
struct vram_policy_ledger {
	struct vram_plan_gpu gpus[VRAM_PLAN_MAX_GPUS];
	size_t n_gpus;
	struct vram_plan_resident *residents; /* owned */
	struct vram_workload **owners;        /* owned array; owners[i] holds residents[i] */
	uint64_t *bytes;                      /* owned; residents[i].bytes_on_gpu, VRAM_PLAN_MAX_GPUS each */
	size_t n_residents, cap;
	struct vram_plan_ledger ledger;       /* points into the arrays above */
};

/*
 * Builds the ledger: GPUs from infos (n_gpus of them, reserve bytes kept free
 * on each), residents from every resident instance of ws[] except those of
 * `exclude` (the workload being placed; may be NULL). Memory on a GPU that no
 * managed instance accounts for is "unmanaged". Each resident carries its
 * owner's `avoid:` list (anti-affinity is symmetric) and, per GPU, the larger
 * of the bytes it was given there and the bytes its process uses there (when
 * the backend lists processes). Release with vram_policy_ledger_done.
 * Returns 0 or -ENOMEM.
 */
int vram_policy_ledger_build(struct vram_policy_ledger *l, const struct vram_gpu_info *infos,
			     size_t n_gpus, uint64_t reserve, struct vram_workload *const *ws,
			     size_t n_ws, const struct vram_workload *exclude);
void vram_policy_ledger_done(struct vram_policy_ledger *l);
/* Bytes free on GPU index in l: its total less the reserve, other processes and every resident there. */
uint64_t vram_policy_room(const struct vram_policy_ledger *l, unsigned index);

/* Where one workload's instances go. */
struct vram_policy_placement {
	struct vram_plan_result results[VRAM_CONFIG_MAX_REPLICAS]; /* one per instance */
	size_t n_results;
	struct vram_workload *victims[VRAM_PLAN_MAX_VICTIMS]; /* workloads to evict, in order */
	size_t n_victims;
	char message[VRAM_PLAN_MSG_MAX]; /* the planner's note (fallback) or refusal */
};

/* Where the instances of a workload may go. */
enum vram_policy_where {
	VRAM_PLACE_ANY = 0,     /* wherever the planner likes (a fresh start) */
	VRAM_PLACE_PREFER,      /* the GPUs each instance had first, else anywhere (restart engine) */
	VRAM_PLACE_SAME_MODEL,  /* the GPUs it had first, else other GPUs of the same model
				 * (a kept process that can move: checkpoint) */
	VRAM_PLACE_SAME_GPUS,   /* only the GPUs each instance had (a kept process that cannot move: hook) */
};

/*
 * Plans every instance of w, one after the other: each placed one counts for
 * the next, and the residents of a workload chosen as victim for one are
 * taken out of the ledger before the next is planned (its memory is freed
 * once, for whichever instance needs it). Returns 0 (ret->victims may be
 * non-empty when allow_evict), -ENOSPC or -EINVAL with ret->message. Does not
 * change w or the ledger's caller-visible residents. ret->results[i].victims
 * index the ledger as instance i saw it: use ret->victims.
 */
int vram_policy_place(struct vram_policy_ledger *l, const struct vram_workload *w,
		      bool allow_evict, enum vram_policy_where where, struct vram_policy_placement *ret);

#endif
