/* SPDX-License-Identifier: MIT */
/*
 * Placement: a ledger of GPU memory and a planner that decides where a
 * workload instance goes. Pure functions of their inputs — no I/O, no clock —
 * so the daemon, `vramctl plan` and the tests share them.
 *
 * Ledger per GPU: total, reserve kept free, memory of processes vramd does not
 * manage, and the residents (managed instances holding memory now).
 * A request: N GPUs x M bytes each (or a fraction of each GPU), optional pins,
 * anti-affinity (avoid), pack | spread | most-free, fallback share | cpu.
 * If it does not fit, evictable residents (idle) of lower or equal priority
 * may be evicted (see vram_plan_place for the exact rule); if it still does
 * not fit, the result is a refusal whose message carries the numbers.
 */
#ifndef VRAM_PLAN_H
#define VRAM_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define VRAM_PLAN_MAX_GPUS 64
#define VRAM_PLAN_MAX_VICTIMS 64
#define VRAM_PLAN_MSG_MAX 2048

struct vram_plan_gpu {
	unsigned index;
	char name[96];      /* GPU model; moves only between GPUs of one model */
	uint64_t total;     /* bytes */
	uint64_t reserve;   /* bytes kept free */
	uint64_t unmanaged; /* bytes held by processes vramd does not manage */
};

/* A managed instance that holds GPU memory now. */
struct vram_plan_resident {
	const char *name;        /* borrowed; workload name */
	unsigned replica;
	unsigned gpus[VRAM_PLAN_MAX_GPUS];
	size_t n_gpus;
	uint64_t bytes_per_gpu;  /* bytes on each of its GPUs */
	int priority;
	bool evictable;          /* idle: no request in flight, not starting/restoring */
	uint64_t last_used_ms;   /* ms, any monotonic clock; smaller = less recently used */
	/* Optional (NULL = bytes_per_gpu on each): bytes on gpus[i], n_gpus entries; borrowed. */
	const uint64_t *bytes_on_gpu;
	/* Optional (NULL = none): the resident's own `avoid:` list, NULL-terminated,
	 * borrowed. Anti-affinity is symmetric: a request is kept off a GPU whose
	 * resident avoids the request's workload, too. */
	const char *const *avoid;
};

struct vram_plan_ledger {
	const struct vram_plan_gpu *gpus;           /* borrowed */
	size_t n_gpus;
	const struct vram_plan_resident *residents; /* borrowed */
	size_t n_residents;
};

struct vram_plan_request {
	const struct vram_workload_config *wl; /* borrowed */
	unsigned replica;
	/* Only GPUs with this model name may be chosen (NULL = any); used when a
	 * checkpointed process is restored onto another GPU. */
	const char *same_model_as;
	/* Prefer these GPUs if they fit (e.g. where the instance ran before). */
	const unsigned *prefer;
	size_t n_prefer;
	bool allow_evict;   /* consider evicting evictable residents */
};

enum vram_plan_outcome {
	VRAM_PLAN_FITS = 0,    /* gpus[] chosen, nothing to evict */
	VRAM_PLAN_EVICT,       /* fits once victims[] are offloaded/released */
	VRAM_PLAN_SHARED,      /* fallback share: fewer GPUs than asked */
	VRAM_PLAN_CPU,         /* fallback cpu: no GPU */
	VRAM_PLAN_REFUSED,     /* does not fit; message says why with numbers */
};

struct vram_plan_result {
	enum vram_plan_outcome outcome;
	unsigned gpus[VRAM_PLAN_MAX_GPUS];
	size_t n_gpus;
	uint64_t bytes_per_gpu;           /* bytes charged on each chosen GPU (the largest of bytes[]) */
	uint64_t bytes[VRAM_PLAN_MAX_GPUS]; /* bytes on gpus[i]; differ only for a fraction on GPUs of different sizes */
	/* Indices into ledger->residents, eviction order. Set with EVICT, and
	 * also with SHARED when the fallback placement needs room: evict every
	 * victim whenever n_victims > 0. */
	size_t victims[VRAM_PLAN_MAX_VICTIMS];
	size_t n_victims;
	int error;                        /* what vram_plan_place returned: 0, -ENOSPC or -EINVAL */
	char message[VRAM_PLAN_MSG_MAX];  /* why (fallback, refusal, eviction), with the numbers; "" when it simply fits */
};

/*
 * Places one instance.
 *
 * Rules, in order:
 *  - Memory per GPU is wl->memory: bytes, or a fraction of each GPU's total
 *    (the cap the process is given). Free memory of a GPU is
 *    total - reserve - unmanaged - residents. Undeclared memory counts as 0.
 *  - Candidates: the pinned GPUs (`gpus: [..]`) or all GPUs; minus GPUs of
 *    another model than same_model_as; minus GPUs that hold a resident the
 *    workload avoids or that avoids it (anti-affinity is symmetric and is
 *    never resolved by eviction).
 *  - A TP request for N GPUs needs N distinct candidates that all fit at once.
 *  - Choice among the candidates that fit: GPUs in prefer[] first, then
 *      pack:      GPUs already in use (residents or unmanaged memory) first,
 *                 the one left with the least free memory first (best fit),
 *                 so that whole GPUs stay free;
 *      spread:    the fewest instances of this workload, then the fewest
 *                 residents, then the most free memory;
 *      most-free: the most free memory;
 *    ties go to the lower GPU index. gpus[] is returned in ascending order.
 *  - Eviction (allow_evict): victims are evictable residents of another
 *    workload whose priority is lower than or equal to the request's, never
 *    higher: lower priority first (lowest first), then equal; least recently
 *    used first within a priority. Only residents on the chosen GPUs that
 *    are still short are taken, and a victim that turns out not to be needed
 *    once the others are gone is dropped again. GPUs that fit without
 *    eviction are always preferred to GPUs that need it.
 *  - Order of attempts: the request as written; then with eviction; then,
 *    with fallback share, fewer GPUs (N..1, pins that exist kept, those that
 *    do not dropped; bytes: N x M spread over k GPUs, fractions unchanged),
 *    first respecting avoid, then sharing a GPU with avoided workloads, first
 *    without and then with eviction; then, with fallback cpu, the CPU.
 *  - gpus: 0 is a CPU workload: outcome CPU.
 *
 * Returns 0 with outcome FITS, EVICT, SHARED or CPU;
 * -ENOSPC with outcome REFUSED and the message
 *   "llm: needs 3 GPUs x 60GiB; free: GPU0 38.0GiB, GPU1 39.0GiB; could evict: rerank (GPU0, 4GiB); ..."
 * -EINVAL when the request cannot be satisfied on this machine at all (pin
 * to a GPU that does not exist, more GPUs than exist), with a message.
 * *ret is always filled.
 */
int vram_plan_place(const struct vram_plan_ledger *ledger, const struct vram_plan_request *req,
		    struct vram_plan_result *ret);

/* Free bytes on GPU i given the ledger (total - reserve - unmanaged - residents), clamped at 0. */
uint64_t vram_plan_free_bytes(const struct vram_plan_ledger *ledger, unsigned gpu_index);

/* One row of a whole-config plan. */
struct vram_plan_row {
	const char *workload; /* borrowed from the config */
	unsigned replica;
	unsigned n_replicas;  /* the workload's replicas, to name rows "rerank#1" */
	/* In a table, result.victims[] are indices into the table's rows. */
	struct vram_plan_result result;
};

struct vram_plan_table {
	struct vram_plan_row *rows; /* owned */
	size_t n_rows;
	const struct vram_plan_gpu *gpus; /* owned copy */
	size_t n_gpus;
};

/*
 * Plans every workload and replica of cfg on hypothetical GPUs, as if all
 * were started at once (higher priority first, then file order), each placed
 * instance becoming a resident for the next. Rows come in that order.
 * Each GPU keeps the larger of its own reserve and cfg->gpus.reserve.
 * Lazy workloads start on demand, so an instance that does not fit may evict
 * an earlier lazy instance of lower or equal priority (outcome EVICT, the
 * victims being rows); eager instances are never evicted. gpus is copied.
 * Caller frees with vram_plan_table_free. Returns 0, -EINVAL (more than
 * VRAM_PLAN_MAX_GPUS GPUs) or -ENOMEM.
 */
int vram_plan_config(const struct vram_config *cfg, const struct vram_plan_gpu *gpus, size_t n_gpus,
		     struct vram_plan_table **ret_table);
void vram_plan_table_free(struct vram_plan_table *t);

/* Renders the table for a person (caller frees). */
char *vram_plan_table_format(const struct vram_plan_table *t);
/* Renders the table as JSON text (caller frees). */
char *vram_plan_table_json(const struct vram_plan_table *t);

const char *vram_plan_outcome_name(enum vram_plan_outcome o);

#endif
