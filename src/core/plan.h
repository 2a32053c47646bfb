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
 * If it does not fit, evictable residents (idle) of lower or equal... see
 * vram_plan_place for the exact rule; if it still does not fit, the result is
 * a refusal whose message carries the numbers.
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
	uint64_t bytes_per_gpu;           /* bytes charged on each chosen GPU */
	size_t victims[VRAM_PLAN_MAX_VICTIMS]; /* indices into ledger->residents, eviction order */
	size_t n_victims;
	char message[VRAM_PLAN_MSG_MAX];  /* why (fallback, refusal), with the numbers; "" when it simply fits */
};

/*
 * Places one instance. Returns 0 with outcome FITS, EVICT, SHARED or CPU;
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
 * instance becoming a resident for the next. Caller frees with
 * vram_plan_table_free. Returns 0 or -ENOMEM.
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
