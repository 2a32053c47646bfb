/* SPDX-License-Identifier: MIT */
/*
 * Planner tests: exact GPUs, exact victims and the numbers in messages, on
 * hand-built ledgers; then the example configs of examples/ planned on 1, 2
 * and 4 hypothetical GPUs, as `vramctl plan` would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/plan.h"

#define GiB VRAM_GiB

static struct vram_workload_config mkwl(const char *name, unsigned count, uint64_t bytes)
{
	struct vram_workload_config w;
	memset(&w, 0, sizeof(w));
	w.name = (char *)name;
	w.gpus.kind = VRAM_GPUS_COUNT;
	w.gpus.count = count;
	w.memory.bytes = bytes;
	w.replicas = 1;
	return w;
}

static struct vram_plan_resident mkres(const char *name, unsigned gpu, uint64_t bytes, int priority,
				       bool evictable, uint64_t last_used_ms)
{
	struct vram_plan_resident r;
	memset(&r, 0, sizeof(r));
	r.name = name;
	r.gpus[0] = gpu;
	r.n_gpus = 1;
	r.bytes_per_gpu = bytes;
	r.priority = priority;
	r.evictable = evictable;
	r.last_used_ms = last_used_ms;
	return r;
}

static void mkgpus(struct vram_plan_gpu *g, size_t n, uint64_t total)
{
	memset(g, 0, n * sizeof(*g));
	for (size_t i = 0; i < n; i++) {
		g[i].index = (unsigned)i;
		g[i].total = total;
		snprintf(g[i].name, sizeof(g[i].name), "Test GPU");
	}
}

static int place(const struct vram_plan_gpu *g, size_t n_gpus, const struct vram_plan_resident *res,
		 size_t n_res, const struct vram_workload_config *wl, bool allow_evict,
		 struct vram_plan_result *out)
{
	struct vram_plan_ledger l = { .gpus = g, .n_gpus = n_gpus, .residents = res, .n_residents = n_res };
	struct vram_plan_request req = { .wl = wl, .allow_evict = allow_evict };
	return vram_plan_place(&l, &req, out);
}

static void assert_gpus(const struct vram_plan_result *r, size_t n, ...)
{
	va_list ap;
	va_start(ap, n);
	assert_int_equal(r->n_gpus, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(r->gpus[i], va_arg(ap, unsigned));
	va_end(ap);
}

/* GPU0: 30GiB unmanaged, GPU1: a 1GiB resident, GPU2: a 40GiB resident,
 * GPU3: 10GiB unmanaged; a 10GiB request goes to a different GPU per policy. */
static void test_pack_spread_most_free(void **state)
{
	struct vram_plan_gpu g[4];
	mkgpus(g, 4, 80 * GiB);
	g[0].unmanaged = 30 * GiB;
	g[3].unmanaged = 10 * GiB;
	struct vram_plan_resident res[] = {
		mkres("b", 1, 1 * GiB, 0, false, 0),
		mkres("a", 2, 40 * GiB, 0, false, 0),
	};
	struct vram_workload_config w = mkwl("new", 1, 10 * GiB);
	struct vram_plan_result r;

	w.placement = VRAM_PLACEMENT_PACK; /* best fit among used GPUs: 30GiB left on GPU2 */
	assert_int_equal(place(g, 4, res, 2, &w, false, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_FITS);
	assert_gpus(&r, 1, 2);
	assert_int_equal(r.bytes_per_gpu, 10 * GiB);
	assert_string_equal(r.message, "");

	w.placement = VRAM_PLACEMENT_SPREAD; /* no resident on GPU0 or GPU3; GPU3 has more free */
	assert_int_equal(place(g, 4, res, 2, &w, false, &r), 0);
	assert_gpus(&r, 1, 3);

	w.placement = VRAM_PLACEMENT_MOST_FREE; /* GPU1: 79GiB free */
	assert_int_equal(place(g, 4, res, 2, &w, false, &r), 0);
	assert_gpus(&r, 1, 1);
}

/* Pack keeps whole GPUs free: with nothing in use it takes GPU0, and a second
 * small workload joins it rather than opening GPU1. */
static void test_pack_keeps_whole_gpus_free(void **state)
{
	struct vram_plan_gpu g[2];
	mkgpus(g, 2, 80 * GiB);
	struct vram_workload_config w = mkwl("small", 1, 8 * GiB);
	struct vram_plan_result r;
	assert_int_equal(place(g, 2, NULL, 0, &w, false, &r), 0);
	assert_gpus(&r, 1, 0);
	struct vram_plan_resident res[] = { mkres("other", 0, 8 * GiB, 0, false, 0) };
	assert_int_equal(place(g, 2, res, 1, &w, false, &r), 0);
	assert_gpus(&r, 1, 0);
	/* the used 80GiB GPU wins over an empty 40GiB one that would fit tighter */
	struct vram_plan_gpu mixed[2];
	mkgpus(mixed, 2, 80 * GiB);
	mixed[1].total = 40 * GiB;
	struct vram_plan_resident used[] = { mkres("other", 0, 10 * GiB, 0, false, 0) };
	assert_int_equal(place(mixed, 2, used, 1, &w, false, &r), 0);
	assert_gpus(&r, 1, 0);
	w.placement = VRAM_PLACEMENT_MOST_FREE;
	assert_int_equal(place(mixed, 2, used, 1, &w, false, &r), 0);
	assert_gpus(&r, 1, 0);
	w.placement = VRAM_PLACEMENT_SPREAD; /* no resident on GPU1 */
	assert_int_equal(place(mixed, 2, used, 1, &w, false, &r), 0);
	assert_gpus(&r, 1, 1);

	/* spread puts the second replica of a workload on the other GPU */
	struct vram_plan_resident sib[] = { mkres("small", 0, 8 * GiB, 0, false, 0) };
	w.placement = VRAM_PLACEMENT_SPREAD;
	assert_int_equal(place(g, 2, sib, 1, &w, false, &r), 0);
	assert_gpus(&r, 1, 1);
}

static void test_reserve(void **state)
{
	struct vram_plan_gpu g[1];
	mkgpus(g, 1, 24 * GiB);
	g[0].reserve = 2 * GiB;
	struct vram_plan_ledger l = { .gpus = g, .n_gpus = 1 };
	assert_int_equal(vram_plan_free_bytes(&l, 0), 22 * GiB);
	assert_int_equal(vram_plan_free_bytes(&l, 7), 0);

	struct vram_workload_config w = mkwl("tts", 1, 22 * GiB);
	struct vram_plan_result r;
	assert_int_equal(place(g, 1, NULL, 0, &w, false, &r), 0);
	assert_gpus(&r, 1, 0);

	w.memory.bytes = 22 * GiB + 1;
	assert_int_equal(place(g, 1, NULL, 0, &w, false, &r), -ENOSPC);
	assert_int_equal(r.outcome, VRAM_PLAN_REFUSED);
	assert_int_equal(r.error, -ENOSPC);
	assert_int_equal(r.n_gpus, 0);
	assert_string_equal(r.message,
			    "tts: needs 1 GPU x 22.0GiB; room on 0 of the 1 GPU needed; "
			    "free: GPU0 22GiB; fallback: none");
}

/* A TP request needs all its GPUs at once; the GPU with a resident is skipped. */
static void test_tensor_parallel(void **state)
{
	struct vram_plan_gpu g[4];
	mkgpus(g, 4, 40 * GiB);
	struct vram_plan_resident res[] = { mkres("emb", 1, 30 * GiB, 0, false, 0) };
	struct vram_workload_config w = mkwl("llm", 3, 20 * GiB);
	struct vram_plan_result r;
	assert_int_equal(place(g, 4, res, 1, &w, false, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_FITS);
	assert_gpus(&r, 3, 0, 2, 3);

	/* two GPUs with room are not enough for three */
	struct vram_plan_resident res2[] = {
		mkres("emb", 1, 30 * GiB, 0, false, 0),
		mkres("rr", 3, 25 * GiB, 0, false, 0),
	};
	assert_int_equal(place(g, 4, res2, 2, &w, false, &r), -ENOSPC);
	assert_string_equal(r.message,
			    "llm: needs 3 GPUs x 20GiB; room on 2 of the 3 GPUs needed; "
			    "free: GPU0 40GiB, GPU1 10GiB, GPU2 40GiB, GPU3 15GiB; fallback: none");
}

static void test_pins(void **state)
{
	struct vram_plan_gpu g[2];
	mkgpus(g, 2, 80 * GiB);
	unsigned pins[] = { 1 };
	struct vram_workload_config w = mkwl("emb", 1, 4 * GiB);
	w.gpus.kind = VRAM_GPUS_LIST;
	w.gpus.pins = pins;
	w.gpus.n_pins = 1;
	struct vram_plan_result r;
	assert_int_equal(place(g, 2, NULL, 0, &w, false, &r), 0);
	assert_gpus(&r, 1, 1);

	unsigned missing[] = { 0, 5 };
	w.gpus.pins = missing;
	w.gpus.n_pins = 2;
	assert_int_equal(place(g, 2, NULL, 0, &w, false, &r), -EINVAL);
	assert_int_equal(r.outcome, VRAM_PLAN_REFUSED);
	assert_int_equal(r.error, -EINVAL);
	assert_non_null(strstr(r.message, "emb: needs 2 GPUs x 4GiB on GPU0,5; GPU5 does not exist (2 GPUs here)"));

	/* more GPUs than exist */
	struct vram_workload_config big = mkwl("llm", 3, 10 * GiB);
	assert_int_equal(place(g, 2, NULL, 0, &big, false, &r), -EINVAL);
	assert_non_null(strstr(r.message, "only 2 GPUs here"));

	/* fallback share keeps the pins that exist */
	w.fallback = VRAM_FALLBACK_SHARE;
	assert_int_equal(place(g, 2, NULL, 0, &w, false, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_SHARED);
	assert_gpus(&r, 1, 0);
	assert_int_equal(r.bytes_per_gpu, 8 * GiB);
	assert_string_equal(r.message, "fallback share: GPU5 does not exist (2 GPUs here); on GPU0 as 1 GPU x 8GiB");
}

/* Victims: lower priority first (LRU within it), then equal, never higher,
 * never busy ones, never more than needed. */
static void test_eviction_order(void **state)
{
	struct vram_plan_gpu g[1];
	mkgpus(g, 1, 80 * GiB);
	struct vram_plan_resident res[] = {
		mkres("low-recent", 0, 30 * GiB, 0, true, 100),
		mkres("low-old", 0, 20 * GiB, 0, true, 50),
		mkres("equal", 0, 15 * GiB, 5, true, 10),
		mkres("high", 0, 10 * GiB, 9, true, 1),
		mkres("busy", 0, 4 * GiB, 0, false, 1),
	};
	struct vram_workload_config w = mkwl("new", 1, 40 * GiB);
	w.priority = 5;
	struct vram_plan_result r;

	/* 1GiB free: low-old (20) then low-recent (30) make 51GiB */
	assert_int_equal(place(g, 1, res, 5, &w, true, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_EVICT);
	assert_gpus(&r, 1, 0);
	assert_int_equal(r.n_victims, 2);
	assert_int_equal(r.victims[0], 1);
	assert_int_equal(r.victims[1], 0);
	assert_string_equal(r.message, "new: evicts low-old (GPU0, 20GiB, priority 0), "
				       "low-recent (GPU0, 30GiB, priority 0)");

	/* 60GiB: the equal-priority one goes too, the higher one never */
	w.memory.bytes = 60 * GiB;
	assert_int_equal(place(g, 1, res, 5, &w, true, &r), 0);
	assert_int_equal(r.n_victims, 3);
	assert_int_equal(r.victims[0], 1);
	assert_int_equal(r.victims[1], 0);
	assert_int_equal(r.victims[2], 2);

	/* 70GiB would need "high" or "busy": refused, with what could and could not go */
	w.memory.bytes = 70 * GiB;
	assert_int_equal(place(g, 1, res, 5, &w, true, &r), -ENOSPC);
	assert_int_equal(r.n_victims, 0);
	assert_string_equal(r.message,
			    "new: needs 1 GPU x 70GiB; room on 0 of the 1 GPU needed; free: GPU0 1GiB; "
			    "could evict: low-old (GPU0, 20GiB, priority 0), low-recent (GPU0, 30GiB, priority 0), "
			    "equal (GPU0, 15GiB, priority 5); kept: high (GPU0, 10GiB, priority 9 > 5), "
			    "busy (GPU0, 4GiB, busy); evicting all of it leaves room on 0 of the 1 GPU needed; "
			    "fallback: none");

	/* without allow_evict nothing is evicted */
	w.memory.bytes = 40 * GiB;
	assert_int_equal(place(g, 1, res, 5, &w, false, &r), -ENOSPC);
	assert_int_equal(r.n_victims, 0);
}

/* Only residents on the GPU being freed are evicted, and a GPU that fits as
 * it is wins over one that needs eviction. */
static void test_eviction_only_helpful(void **state)
{
	struct vram_plan_gpu g[2];
	mkgpus(g, 2, 80 * GiB);
	struct vram_plan_resident res[] = {
		mkres("old-on-1", 1, 5 * GiB, 0, true, 1),   /* oldest, but on a GPU that cannot make room */
		mkres("pinned-1", 1, 70 * GiB, 0, false, 2),
		mkres("idle-on-0", 0, 60 * GiB, 0, true, 3),
	};
	struct vram_workload_config w = mkwl("new", 1, 40 * GiB);
	struct vram_plan_result r;
	assert_int_equal(place(g, 2, res, 3, &w, true, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_EVICT);
	assert_gpus(&r, 1, 0);
	assert_int_equal(r.n_victims, 1);
	assert_int_equal(r.victims[0], 2);

	/* with 15GiB, GPU0 fits as it is: nothing evicted */
	w.memory.bytes = 15 * GiB;
	assert_int_equal(place(g, 2, res, 3, &w, true, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_FITS);
	assert_gpus(&r, 1, 0);
	assert_int_equal(r.n_victims, 0);
}

/* A TP victim frees both GPUs and makes an earlier pick needless: dropped. */
static void test_eviction_smallest_set(void **state)
{
	struct vram_plan_gpu g[2];
	mkgpus(g, 2, 40 * GiB);
	struct vram_plan_resident res[] = {
		mkres("x", 0, 10 * GiB, 0, true, 1),
		mkres("y", 0, 30 * GiB, 0, true, 2),
	};
	res[1].gpus[1] = 1;
	res[1].n_gpus = 2;
	struct vram_workload_config w = mkwl("tp", 2, 30 * GiB);
	struct vram_plan_result r;
	assert_int_equal(place(g, 2, res, 2, &w, true, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_EVICT);
	assert_gpus(&r, 2, 0, 1);
	assert_int_equal(r.n_victims, 1);
	assert_int_equal(r.victims[0], 1);
}

static void test_never_evicts_own_workload(void **state)
{
	struct vram_plan_gpu g[1];
	mkgpus(g, 1, 40 * GiB);
	struct vram_plan_resident res[] = { mkres("rerank", 0, 30 * GiB, 0, true, 1) };
	struct vram_workload_config w = mkwl("rerank", 1, 30 * GiB);
	w.replicas = 2;
	struct vram_plan_request req = { .wl = &w, .replica = 1, .allow_evict = true };
	struct vram_plan_ledger l = { .gpus = g, .n_gpus = 1, .residents = res, .n_residents = 1 };
	struct vram_plan_result r;
	assert_int_equal(vram_plan_place(&l, &req, &r), -ENOSPC);
	assert_non_null(strstr(r.message, "rerank#1: needs 1 GPU x 30GiB"));
	assert_non_null(strstr(r.message, "kept: rerank (GPU0, 30GiB, same workload)"));
}

static void test_avoid_symmetric(void **state)
{
	struct vram_plan_gpu g[2];
	mkgpus(g, 2, 80 * GiB);
	char *avoid[] = { "llm", NULL };
	struct vram_workload_config vision = mkwl("vision", 1, 4 * GiB);
	vision.avoid = avoid;
	vision.n_avoid = 1;
	struct vram_plan_resident llm_res[] = { mkres("llm", 0, 40 * GiB, 0, false, 0) };
	struct vram_plan_result r;
	assert_int_equal(place(g, 2, llm_res, 1, &vision, false, &r), 0);
	assert_gpus(&r, 1, 1); /* pack alone would pick GPU0 */

	/* the other way round: vision is resident and avoids llm */
	const char *const res_avoid[] = { "llm", NULL };
	struct vram_plan_resident vis_res[] = { mkres("vision", 0, 4 * GiB, 0, false, 0) };
	vis_res[0].avoid = res_avoid;
	struct vram_workload_config llm = mkwl("llm", 1, 40 * GiB);
	assert_int_equal(place(g, 2, vis_res, 1, &llm, false, &r), 0);
	assert_gpus(&r, 1, 1);

	/* one GPU: refused without share, shared with it */
	assert_int_equal(place(g, 1, llm_res, 1, &vision, false, &r), -ENOSPC);
	assert_non_null(strstr(r.message, "0 of the GPUs may be used (anti-affinity or GPU model), 1 needed"));
	assert_non_null(strstr(r.message, "free: GPU0 40GiB (holds llm, avoided)"));
	vision.fallback = VRAM_FALLBACK_SHARE;
	assert_int_equal(place(g, 1, llm_res, 1, &vision, false, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_SHARED);
	assert_gpus(&r, 1, 0);
	assert_non_null(strstr(r.message, "next to a workload it avoids"));
}

static void test_fallback_share_fewer_gpus(void **state)
{
	struct vram_plan_gpu g[2];
	mkgpus(g, 2, 40 * GiB);
	struct vram_workload_config w = mkwl("llm", 3, 20 * GiB);
	w.fallback = VRAM_FALLBACK_SHARE;
	struct vram_plan_result r;
	/* 60GiB over 2 GPUs: 30GiB each */
	assert_int_equal(place(g, 2, NULL, 0, &w, false, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_SHARED);
	assert_gpus(&r, 2, 0, 1);
	assert_int_equal(r.bytes_per_gpu, 30 * GiB);
	assert_string_equal(r.message, "fallback share: only 2 GPUs here; on GPU0,1 as 2 GPUs x 30GiB");

	/* on one 80GiB GPU: all 60GiB there */
	struct vram_plan_gpu one[1];
	mkgpus(one, 1, 80 * GiB);
	assert_int_equal(place(one, 1, NULL, 0, &w, false, &r), 0);
	assert_gpus(&r, 1, 0);
	assert_int_equal(r.bytes_per_gpu, 60 * GiB);

	/* on one 40GiB GPU nothing fits: refused with both attempts named */
	assert_int_equal(place(g, 1, NULL, 0, &w, false, &r), -EINVAL);
	assert_string_equal(r.message, "llm: needs 3 GPUs x 20GiB; only 1 GPU here; free: GPU0 40GiB; "
				       "fallback share: no room for 1 GPU x 60GiB");
}

static void test_fallback_cpu_and_cpu_only(void **state)
{
	struct vram_plan_gpu g[1];
	mkgpus(g, 1, 24 * GiB);
	struct vram_workload_config w = mkwl("rerank", 1, 30 * GiB);
	w.fallback = VRAM_FALLBACK_CPU;
	struct vram_plan_result r;
	assert_int_equal(place(g, 1, NULL, 0, &w, false, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_CPU);
	assert_int_equal(r.n_gpus, 0);
	assert_string_equal(r.message, "fallback cpu: rerank: needs 1 GPU x 30GiB; room on 0 of the 1 GPU needed; "
				       "free: GPU0 24GiB");

	struct vram_workload_config cpu = mkwl("tok", 0, 0);
	assert_int_equal(place(g, 1, NULL, 0, &cpu, false, &r), 0);
	assert_int_equal(r.outcome, VRAM_PLAN_CPU);
	assert_string_equal(r.message, "runs on the CPU (gpus: 0)");
}

static void test_fraction_per_gpu_size(void **state)
{
	struct vram_plan_gpu g[2];
	mkgpus(g, 2, 80 * GiB);
	g[0].total = 24 * GiB;
	struct vram_workload_config w = mkwl("bench", 2, 0);
	w.memory.is_fraction = true;
	w.memory.fraction = 0.5;
	struct vram_plan_result r;
	assert_int_equal(place(g, 2, NULL, 0, &w, false, &r), 0);
	assert_gpus(&r, 2, 0, 1);
	assert_int_equal(r.bytes[0], 12 * GiB);
	assert_int_equal(r.bytes[1], 40 * GiB);
	assert_int_equal(r.bytes_per_gpu, 40 * GiB);
}

static void test_prefer_and_same_model(void **state)
{
	struct vram_plan_gpu g[3];
	mkgpus(g, 3, 80 * GiB);
	snprintf(g[1].name, sizeof(g[1].name), "Other GPU");
	struct vram_workload_config w = mkwl("w", 1, 10 * GiB);
	unsigned prefer[] = { 2 };
	struct vram_plan_ledger l = { .gpus = g, .n_gpus = 3 };
	struct vram_plan_request req = { .wl = &w, .prefer = prefer, .n_prefer = 1 };
	struct vram_plan_result r;
	assert_int_equal(vram_plan_place(&l, &req, &r), 0);
	assert_gpus(&r, 1, 2);

	/* restore of a checkpoint: only GPUs of the same model */
	struct vram_plan_resident res[] = { mkres("big", 0, 75 * GiB, 9, false, 0) };
	l.residents = res;
	l.n_residents = 1;
	req.prefer = NULL;
	req.n_prefer = 0;
	req.same_model_as = "Other GPU";
	assert_int_equal(vram_plan_place(&l, &req, &r), 0);
	assert_gpus(&r, 1, 1);
	req.same_model_as = "Test GPU";
	assert_int_equal(vram_plan_place(&l, &req, &r), 0);
	assert_gpus(&r, 1, 2);
}

/* GPU indices need not be positions (e.g. a MIG GPU left out). */
static void test_sparse_indices(void **state)
{
	struct vram_plan_gpu g[2];
	mkgpus(g, 2, 40 * GiB);
	g[0].index = 1;
	g[1].index = 3;
	struct vram_plan_resident res[] = { mkres("a", 1, 35 * GiB, 0, false, 0) };
	struct vram_workload_config w = mkwl("w", 1, 10 * GiB);
	struct vram_plan_result r;
	assert_int_equal(place(g, 2, res, 1, &w, false, &r), 0);
	assert_gpus(&r, 1, 3);
	struct vram_plan_ledger l = { .gpus = g, .n_gpus = 2, .residents = res, .n_residents = 1 };
	assert_int_equal(vram_plan_free_bytes(&l, 1), 5 * GiB);
	assert_int_equal(vram_plan_free_bytes(&l, 3), 40 * GiB);
}

/* ------------------------------------------------------------------ */
/* Whole configs: the examples                                          */

static struct vram_config *load_example(const char *file)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/examples/%s", VRAM_SOURCE_ROOT, file);
	struct vram_config *cfg = NULL;
	char *err = NULL;
	int r = vram_config_load(path, NULL, &cfg, &err);
	if (r < 0)
		fail_msg("loading %s: %s", path, err ? err : "?");
	free(err);
	return cfg;
}

static struct vram_plan_table *plan_on(const struct vram_config *cfg, size_t n, uint64_t each)
{
	struct vram_plan_gpu g[8];
	mkgpus(g, n, each);
	struct vram_plan_table *t = NULL;
	assert_int_equal(vram_plan_config(cfg, g, n, &t), 0);
	assert_non_null(t);
	return t;
}

static const struct vram_plan_row *row(const struct vram_plan_table *t, const char *name, unsigned replica)
{
	for (size_t i = 0; i < t->n_rows; i++)
		if (strcmp(t->rows[i].workload, name) == 0 && t->rows[i].replica == replica)
			return &t->rows[i];
	fail_msg("no row %s#%u", name, replica);
	return NULL;
}

static void test_example_rag(void **state)
{
	struct vram_config *cfg = load_example("rag.yaml");
	/* 2 GPUs: vLLM on GPU0, embedding and reranker on GPU1 */
	struct vram_plan_table *t = plan_on(cfg, 2, 80 * GiB);
	assert_int_equal(t->n_rows, 3);
	assert_string_equal(t->rows[0].workload, "llm"); /* highest priority first */
	assert_int_equal(row(t, "llm", 0)->result.outcome, VRAM_PLAN_FITS);
	assert_gpus(&row(t, "llm", 0)->result, 1, 0);
	assert_int_equal(row(t, "llm", 0)->result.bytes_per_gpu, 48 * GiB);
	assert_gpus(&row(t, "embed", 0)->result, 1, 1);
	assert_gpus(&row(t, "rerank", 0)->result, 1, 1);
	vram_plan_table_free(t);

	/* 4 GPUs: the same, GPUs 2-3 stay free */
	t = plan_on(cfg, 4, 80 * GiB);
	assert_gpus(&row(t, "llm", 0)->result, 1, 0);
	assert_gpus(&row(t, "embed", 0)->result, 1, 1);
	assert_gpus(&row(t, "rerank", 0)->result, 1, 1);
	vram_plan_table_free(t);

	/* 1 GPU: everything on GPU0 through fallback share */
	t = plan_on(cfg, 1, 80 * GiB);
	assert_int_equal(row(t, "llm", 0)->result.outcome, VRAM_PLAN_FITS);
	assert_gpus(&row(t, "llm", 0)->result, 1, 0);
	assert_int_equal(row(t, "embed", 0)->result.outcome, VRAM_PLAN_SHARED);
	assert_gpus(&row(t, "embed", 0)->result, 1, 0);
	assert_int_equal(row(t, "rerank", 0)->result.outcome, VRAM_PLAN_SHARED);
	assert_gpus(&row(t, "rerank", 0)->result, 1, 0);
	assert_string_equal(row(t, "embed", 0)->result.message,
			    "fallback share: GPU1 does not exist (1 GPU here); on GPU0 as 1 GPU x 6GiB");
	vram_plan_table_free(t);
	vram_config_free(cfg);
}

static void test_example_agents_tp3(void **state)
{
	struct vram_config *cfg = load_example("agents-tp3.yaml");
	/* 4 GPUs: LLM on 0-2, vision on 3 */
	struct vram_plan_table *t = plan_on(cfg, 4, 80 * GiB);
	assert_int_equal(row(t, "llm", 0)->result.outcome, VRAM_PLAN_FITS);
	assert_gpus(&row(t, "llm", 0)->result, 3, 0, 1, 2);
	assert_int_equal(row(t, "vision", 0)->result.outcome, VRAM_PLAN_FITS);
	assert_gpus(&row(t, "vision", 0)->result, 1, 3);
	vram_plan_table_free(t);

	/* 2 x 40GiB: the LLM is refused with the numbers; vision still runs */
	t = plan_on(cfg, 2, 40 * GiB);
	const struct vram_plan_row *llm = row(t, "llm", 0);
	assert_int_equal(llm->result.outcome, VRAM_PLAN_REFUSED);
	assert_int_equal(llm->result.error, -EINVAL);
	assert_string_equal(llm->result.message,
			    "llm: needs 3 GPUs x 30GiB; only 2 GPUs here; free: GPU0 39GiB, GPU1 39GiB; "
			    "nothing to evict; fallback share: no room for 2 GPUs x 45GiB or 1 GPU x 90GiB");
	assert_int_equal(row(t, "vision", 0)->result.outcome, VRAM_PLAN_FITS);
	assert_gpus(&row(t, "vision", 0)->result, 1, 0);
	vram_plan_table_free(t);

	/* 1 x 80GiB: refused as well */
	t = plan_on(cfg, 1, 80 * GiB);
	assert_int_equal(row(t, "llm", 0)->result.outcome, VRAM_PLAN_REFUSED);
	assert_gpus(&row(t, "vision", 0)->result, 1, 0);
	vram_plan_table_free(t);
	vram_config_free(cfg);
}

static void test_example_bench_runner(void **state)
{
	struct vram_config *cfg = load_example("bench-runner.yaml");
	/* 1 GPU: 0.8 each, so each lazy model evicts the previous one */
	struct vram_plan_table *t = plan_on(cfg, 1, 80 * GiB);
	assert_true(t->n_rows >= 3);
	assert_int_equal(t->rows[0].result.outcome, VRAM_PLAN_FITS);
	assert_int_equal(t->rows[0].result.bytes_per_gpu, 64 * GiB);
	for (size_t i = 1; i < t->n_rows; i++) {
		assert_int_equal(t->rows[i].result.outcome, VRAM_PLAN_EVICT);
		assert_int_equal(t->rows[i].result.n_victims, 1);
		assert_int_equal(t->rows[i].result.victims[0], i - 1);
	}
	vram_plan_table_free(t);
	/* 4 GPUs: one model per GPU, nothing evicted */
	t = plan_on(cfg, 4, 80 * GiB);
	for (size_t i = 0; i < t->n_rows && i < 4; i++) {
		assert_int_equal(t->rows[i].result.outcome, VRAM_PLAN_FITS);
		assert_gpus(&t->rows[i].result, 1, (unsigned)i);
	}
	vram_plan_table_free(t);
	vram_config_free(cfg);
}

static void test_example_rerank_mps(void **state)
{
	struct vram_config *cfg = load_example("rerank-mps.yaml");
	for (size_t n = 1; n <= 4; n *= 2) {
		struct vram_plan_table *t = plan_on(cfg, n, 24 * GiB);
		assert_int_equal(t->n_rows, 4);
		for (unsigned i = 0; i < 4; i++) {
			const struct vram_plan_row *rw = row(t, "rerank", i);
			assert_int_equal(rw->result.outcome, VRAM_PLAN_FITS);
			assert_gpus(&rw->result, 1, 0);
			assert_int_equal(rw->result.bytes_per_gpu, 5 * GiB);
		}
		vram_plan_table_free(t);
	}
	vram_config_free(cfg);
}

static void test_example_tts(void **state)
{
	struct vram_config *cfg = load_example("tts.yaml");
	for (size_t n = 1; n <= 4; n *= 2) {
		struct vram_plan_table *t = plan_on(cfg, n, 24 * GiB);
		assert_gpus(&row(t, "tts", 0)->result, 1, 0);
		assert_gpus(&row(t, "codec", 0)->result, 1, 0);
		vram_plan_table_free(t);
	}
	/* a 16GiB card cannot hold the 8B model: refused, codec still fits */
	struct vram_plan_table *t = plan_on(cfg, 1, 16 * GiB);
	assert_int_equal(row(t, "tts", 0)->result.outcome, VRAM_PLAN_REFUSED);
	assert_int_equal(row(t, "codec", 0)->result.outcome, VRAM_PLAN_FITS);
	vram_plan_table_free(t);
	vram_config_free(cfg);
}

static void test_table_format_and_json(void **state)
{
	struct vram_config *cfg = load_example("agents-tp3.yaml");
	struct vram_plan_table *t = plan_on(cfg, 4, 80 * GiB);
	char *text = vram_plan_table_format(t);
	assert_non_null(text);
	assert_non_null(strstr(text, "GPU   MODEL"));
	assert_non_null(strstr(text, "WORKLOAD"));
	assert_non_null(strstr(text, "llm       0,1,2"));
	assert_non_null(strstr(text, "fits"));
	free(text);

	char *js = vram_plan_table_json(t);
	assert_non_null(js);
	json_error_t jerr;
	json_t *root = json_loads(js, 0, &jerr);
	assert_non_null(root);
	json_t *gpus = json_object_get(root, "gpus");
	assert_int_equal(json_array_size(gpus), 4);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(gpus, 0), "planned_bytes")),
			 (json_int_t)(30 * GiB));
	json_t *w0 = json_array_get(json_object_get(root, "workloads"), 0);
	assert_string_equal(json_string_value(json_object_get(w0, "workload")), "llm");
	assert_string_equal(json_string_value(json_object_get(w0, "outcome")), "fits");
	assert_int_equal(json_array_size(json_object_get(w0, "gpus")), 3);
	json_decref(root);
	free(js);
	vram_plan_table_free(t);
	vram_config_free(cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pack_spread_most_free),
		cmocka_unit_test(test_pack_keeps_whole_gpus_free),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_tensor_parallel),
		cmocka_unit_test(test_pins),
		cmocka_unit_test(test_eviction_order),
		cmocka_unit_test(test_eviction_only_helpful),
		cmocka_unit_test(test_eviction_smallest_set),
		cmocka_unit_test(test_never_evicts_own_workload),
		cmocka_unit_test(test_avoid_symmetric),
		cmocka_unit_test(test_fallback_share_fewer_gpus),
		cmocka_unit_test(test_fallback_cpu_and_cpu_only),
		cmocka_unit_test(test_fraction_per_gpu_size),
		cmocka_unit_test(test_prefer_and_same_model),
		cmocka_unit_test(test_sparse_indices),
		cmocka_unit_test(test_example_rag),
		cmocka_unit_test(test_example_agents_tp3),
		cmocka_unit_test(test_example_bench_runner),
		cmocka_unit_test(test_example_rerank_mps),
		cmocka_unit_test(test_example_tts),
		cmocka_unit_test(test_table_format_and_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
