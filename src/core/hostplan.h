/* SPDX-License-Identifier: MIT */
/*
 * The host ledger and the decision that makes room in host memory. Pure
 * functions of their inputs (no I/O, no clock), like the GPU planner
 * (core/plan.h), so that the daemon, `vramctl plan` and the tests share them.
 *
 * Host RAM is the tier offloaded GPU memory lives in: the copies of
 * offloaded workloads, and the pinned buffers a ready workload kept after a
 * restore (so that its next offload need not allocate them again). Both
 * count against a budget: MemTotal less host.reserve, or host.limit,
 * whichever is smaller. Memory moved on to the disk tier (a parked
 * workload's files) is not RAM and does not count. Besides the budget, what
 * the kernel says is available (MemAvailable) must keep host.reserve after
 * the new memory is taken: the workloads' own processes use RAM too, and the
 * kernel's OOM killer must never be what decides.
 *
 * A workload asking for host memory (an offload) that would cross either
 * line makes room first, in this order:
 *   1. the kept buffers of ready workloads are dropped, least recently used
 *      first (any priority: dropping them costs only the next offload's
 *      allocation);
 *   2. offloaded workloads of lower or equal priority are parked on the disk
 *      tier, lower priority first, least recently used first within one;
 *      only those whose engine can park, while a park directory is usable
 *      and has room for them;
 *   3. the same workloads are released (stopped) when there is no disk tier,
 *      it is full, or their engine cannot park;
 *   4. otherwise the ask is refused, with the numbers, the way the GPU
 *      planner refuses.
 * A step that turns out not to be needed once the later ones are taken is
 * dropped again, so that as little as possible is disturbed.
 */
#ifndef VRAM_HOSTPLAN_H
#define VRAM_HOSTPLAN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/plan.h"
#include "core/workload.h"

/* A size that is not known (MemAvailable on an old kernel, a budget without MemTotal). */
#define VRAM_HOST_UNKNOWN UINT64_MAX
#define VRAM_HOST_RESERVE_MIN (UINT64_C(4) << 30) /* bytes: the least default reserve */
#define VRAM_HOST_RESERVE_PERCENT 10              /* of MemTotal: the default reserve */
#define VRAM_HOST_MAX_STEPS 64   /* steps of one decision; needing more is a refusal */
#define VRAM_HOST_MSG_MAX 1024   /* bytes of a decision's message */

/* What one step does to a workload to free host memory. */
enum vram_host_action {
	VRAM_HOST_DROP_KEPT = 0, /* a ready workload frees the pinned buffers it kept after a restore */
	VRAM_HOST_PARK,          /* an offloaded workload moves its host copy to the disk tier */
	VRAM_HOST_RELEASE,       /* an offloaded workload is stopped: its host copy is gone */
};

/* One live workload as the ledger sees it. */
struct vram_host_entry {
	struct vram_workload *w;   /* borrowed; who it is (steps name it); never read or written here */
	const char *name;          /* borrowed; for messages */
	enum vram_wl_state state;
	int priority;              /* higher wins, as in the GPU planner */
	uint64_t last_used_ms;     /* ms, any monotonic clock; smaller = less recently used */
	uint64_t held;             /* bytes of host RAM it holds now: offloaded copy and kept buffers */
	uint64_t kept;             /* bytes of held that are buffers a ready workload kept (droppable) */
	uint64_t on_disk;          /* bytes in its park files: not RAM, not counted */
	bool can_park;             /* its engine can move its host copy to the disk tier */
	bool can_drop_kept;        /* its engine can free kept buffers while it runs (the hook) */
	bool busy;                 /* an action runs or waits on it: it is never a step */
};

struct vram_host_ledger {
	uint64_t total;      /* bytes: MemTotal; 0 = not known */
	uint64_t available;  /* bytes: MemAvailable; VRAM_HOST_UNKNOWN = not known (not checked) */
	uint64_t reserve;    /* bytes of available memory that must stay free (vram_host_reserve) */
	uint64_t budget;     /* bytes all entries may hold (vram_host_budget); VRAM_HOST_UNKNOWN = no cap */
	bool park_usable;    /* a disk tier: the park directory can take files now */
	uint64_t park_free;  /* bytes free in it; VRAM_HOST_UNKNOWN = not known (not checked) */
	const struct vram_host_entry *entries; /* borrowed */
	size_t n_entries;
};

struct vram_host_step {
	struct vram_workload *w;   /* borrowed from the ledger's entry */
	const char *name;          /* borrowed from the ledger's entry */
	enum vram_host_action action;
	uint64_t bytes;            /* bytes of host RAM it frees */
};

struct vram_host_room {
	int error;              /* what vram_host_make_room returned */
	uint64_t need;          /* bytes asked */
	uint64_t held;          /* bytes all entries hold now */
	uint64_t shortfall;     /* bytes to free before the ask fits; 0 = it fits as it is */
	uint64_t freed;         /* bytes the steps free (>= shortfall when error is 0) */
	uint64_t freeable;      /* bytes every step allowed to this ask could free */
	struct vram_host_step steps[VRAM_HOST_MAX_STEPS]; /* in the order to take them */
	size_t n_steps;         /* 0 when it fits, or on a refusal */
	/*
	 * The steps ("room for 16GiB of host memory for chat's offload: park
	 * tts (8GiB)"), or why not, with the numbers; "" when it fits.
	 */
	char message[VRAM_HOST_MSG_MAX];
};

/*
 * host.reserve resolved against MemTotal (bytes; 0 = not known):
 * VRAM_CONFIG_HOST_RESERVE_DEFAULT gives VRAM_HOST_RESERVE_PERCENT % of
 * total, at least VRAM_HOST_RESERVE_MIN; anything else is itself.
 */
uint64_t vram_host_reserve(uint64_t total, uint64_t configured);

/*
 * What held host memory may reach: total - reserve (0 when the reserve is
 * all of it), capped by limit when limit is not 0; the smaller wins. With
 * total 0 (not known) it is limit, or VRAM_HOST_UNKNOWN without one.
 */
uint64_t vram_host_budget(uint64_t total, uint64_t reserve, uint64_t limit);

/*
 * The config's host section in words, for --check-config, into buf (size
 * bytes, always terminated): "host: budget 57.6GiB of 64GiB (reserve 6.4GiB:
 * 10 % of MemTotal, at least 4GiB; no limit); park_dir /run/vramd/park".
 * total is MemTotal in bytes, 0 when it could not be read.
 */
void vram_host_describe(const struct vram_config *cfg, uint64_t total, char *buf, size_t size);

/* Bytes all entries hold in RAM now. */
uint64_t vram_host_held(const struct vram_host_ledger *l);

/*
 * Decides how asking (the workload that will take need_bytes more of host
 * memory; never a step itself) gets them: the rule at the top of this file.
 * Its priority is its entry's, or its config's when it has no entry.
 *
 * Returns 0 when it fits, with ret->n_steps steps to take first (none when
 * it fits as it is; then the message is ""), applying which leaves every
 * entry within the budget and the reserve available; -ENOSPC when even every
 * allowed step would not free enough, with no steps and the message
 *   "needs 16GiB of host memory for chat's offload: budget 56GiB, 48GiB held
 *    by 3 offloaded workloads, 2GiB could be freed; ..."
 * -EINVAL when l or asking is NULL. *ret (not NULL) is always filled.
 */
int vram_host_make_room(const struct vram_host_ledger *l, const struct vram_workload *asking,
			uint64_t need_bytes, struct vram_host_room *ret);

/* "drop_kept", "park", "release". */
const char *vram_host_action_name(enum vram_host_action a);

/* ---- the host part of `vramctl plan` ---- */

struct vram_host_plan_row {
	const char *workload; /* borrowed from the config */
	uint64_t bytes;       /* host RAM all its replicas hold when offloaded */
};

struct vram_host_plan {
	uint64_t total;     /* bytes of the host asked about */
	uint64_t reserve;   /* bytes: host.reserve resolved */
	uint64_t limit;     /* bytes: host.limit; 0 = none */
	uint64_t budget;    /* bytes */
	uint64_t offloaded; /* bytes all workloads hold when all are offloaded at once */
	struct vram_host_plan_row *rows; /* owned; the config's workloads, in its order */
	size_t n_rows;
};

/*
 * What the config's workloads would hold in a host of total bytes when all
 * are offloaded: each placed instance of the GPU plan t its GPU bytes
 * (`offload: restart` keeps no copy: 0). Caller frees with
 * vram_host_plan_free. Returns 0 or -ENOMEM.
 */
int vram_host_plan_config(const struct vram_config *cfg, const struct vram_plan_table *t,
			  uint64_t total, struct vram_host_plan **ret);
void vram_host_plan_free(struct vram_host_plan *p); /* accepts NULL */

/* Renders it for a person (caller frees); NULL on out of memory. */
char *vram_host_plan_format(const struct vram_host_plan *p);
/* As a JSON object (new reference); NULL on out of memory. */
json_t *vram_host_plan_json(const struct vram_host_plan *p);

#endif
