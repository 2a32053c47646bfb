/* SPDX-License-Identifier: MIT */
/*
 * Policy tests: idle timers (never with a request in flight, idle counted
 * from the last request; park only of an offloaded workload whose engine
 * can park, and not again after a park failed) and the choice of eviction victim from a ledger
 * built out of runtime workloads on simulated GPUs; anti-affinity that holds
 * from either side; a resident's measured use counted over what it was
 * given; a victim's memory freed once across replicas; where a restore may
 * go (same GPUs, same model, anywhere).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "config/config.h"
#include "core/engine.h"
#include "core/policy.h"

#define GiB VRAM_GiB

static struct vram_workload mkw(enum vram_wl_state st, uint64_t last_used, uint64_t off,
				uint64_t rel)
{
	struct vram_workload w;
	memset(&w, 0, sizeof(w));
	w.state = st;
	w.last_used_ms = last_used;
	w.offload_after_ms = off;
	w.release_after_ms = rel;
	w.park_after_ms = VRAM_DURATION_NEVER;
	return w;
}

static void test_idle_timers(void **state)
{
	struct vram_workload w = mkw(VRAM_WL_READY, 1000, 5000, 60000);
	assert_int_equal(vram_policy_idle_action(&w, 5999), VRAM_IDLE_NONE);
	assert_int_equal(vram_policy_idle_action(&w, 6000), VRAM_IDLE_OFFLOAD);
	assert_int_equal(vram_policy_idle_ms(&w, 6000), 5000);
	/* a request in flight: never touched, however old the last one */
	w.in_flight = 1;
	assert_int_equal(vram_policy_idle_action(&w, 1000000), VRAM_IDLE_NONE);
	assert_int_equal(vram_policy_idle_ms(&w, 1000000), 0);
	w.in_flight = 0;
	/* past release_after: release wins, from ready and from offloaded */
	assert_int_equal(vram_policy_idle_action(&w, 61000), VRAM_IDLE_RELEASE);
	w.state = VRAM_WL_OFFLOADED;
	assert_int_equal(vram_policy_idle_action(&w, 30000), VRAM_IDLE_NONE);
	assert_int_equal(vram_policy_idle_action(&w, 61000), VRAM_IDLE_RELEASE);
	/* transitions in progress are left alone */
	w.state = VRAM_WL_RESTORING;
	assert_int_equal(vram_policy_idle_action(&w, 1000000), VRAM_IDLE_NONE);
	/* never */
	struct vram_workload n = mkw(VRAM_WL_READY, 0, VRAM_DURATION_NEVER, VRAM_DURATION_NEVER);
	assert_int_equal(vram_policy_idle_action(&n, UINT64_C(1) << 50), VRAM_IDLE_NONE);
	/* offload after 0: right after the request ends */
	struct vram_workload z = mkw(VRAM_WL_READY, 500, 0, VRAM_DURATION_NEVER);
	assert_int_equal(vram_policy_idle_action(&z, 500), VRAM_IDLE_OFFLOAD);
}

static void test_idle_park(void **state)
{
	/* offloaded, idle since 1 s: parked at 11 s, released at 61 s */
	struct vram_workload w = mkw(VRAM_WL_OFFLOADED, 1000, 5000, 60000);
	w.park_after_ms = 10000;
	w.engine = &vram_engine_sim;
	assert_int_equal(vram_policy_idle_action(&w, 10999), VRAM_IDLE_NONE);
	assert_int_equal(vram_policy_idle_action(&w, 11000), VRAM_IDLE_PARK);
	assert_int_equal(vram_policy_idle_action(&w, 61000), VRAM_IDLE_RELEASE);
	/* a request in flight holds it too */
	w.in_flight = 1;
	assert_int_equal(vram_policy_idle_action(&w, 11000), VRAM_IDLE_NONE);
	w.in_flight = 0;
	/* a park that failed (a full disk) is not tried again on every tick */
	w.park_refused = true;
	assert_int_equal(vram_policy_idle_action(&w, 11000), VRAM_IDLE_NONE);
	w.park_refused = false;
	/* an engine that cannot park: the timer asks nothing of it */
	w.engine = &vram_engine_restart;
	assert_int_equal(vram_policy_idle_action(&w, 11000), VRAM_IDLE_NONE);
	w.engine = NULL;
	assert_int_equal(vram_policy_idle_action(&w, 11000), VRAM_IDLE_NONE);
	w.engine = &vram_engine_sim;
	/* a ready one is offloaded by its own timer, never parked directly */
	w.state = VRAM_WL_READY;
	w.offload_after_ms = VRAM_DURATION_NEVER;
	assert_int_equal(vram_policy_idle_action(&w, 11000), VRAM_IDLE_NONE);
	/* parked: only release_after is left */
	w.state = VRAM_WL_PARKED;
	assert_int_equal(vram_policy_idle_action(&w, 30000), VRAM_IDLE_NONE);
	assert_int_equal(vram_policy_idle_action(&w, 61000), VRAM_IDLE_RELEASE);
	/* while it parks, nothing */
	w.state = VRAM_WL_PARKING;
	assert_int_equal(vram_policy_idle_action(&w, 1000000), VRAM_IDLE_NONE);
}

struct fixture {
	struct vram_config *cfg;
	struct vram_workload ws[3];
	struct vram_instance inst[3];
	struct vram_workload *ptrs[3];
	struct vram_gpu_info gpu;
};

static const char cfg_text[] =
	"gpus: { backend: sim, reserve: 0, sim: 1x24GiB }\n"
	"workloads:\n"
	"  a: { cmd: [a], memory: 10GiB }\n"
	"  b: { cmd: [b], memory: 10GiB }\n"
	"  c: { cmd: [c], memory: 8GiB }\n";

/* a and b resident on GPU0 (10 GiB each, ready, idle); c stopped and to be placed. */
static void fixture_init(struct fixture *f, int prio_a, int prio_b)
{
	char *err = NULL;
	memset(f, 0, sizeof(*f));
	int r = vram_config_parse(cfg_text, strlen(cfg_text), "policy.yaml", NULL, &f->cfg, &err);
	if (r < 0)
		fail_msg("%s", err);
	f->cfg->workloads[0].priority = prio_a;
	f->cfg->workloads[1].priority = prio_b;
	for (int i = 0; i < 3; i++) {
		struct vram_workload *w = &f->ws[i];
		w->cfg = &f->cfg->workloads[i];
		w->instances = &f->inst[i];
		w->n_instances = 1;
		f->inst[i].owner = w;
		f->ptrs[i] = w;
		if (i < 2) {
			w->state = VRAM_WL_READY;
			f->inst[i].resident = true;
			f->inst[i].n_gpus = 1;
			f->inst[i].gpus[0] = 0;
			f->inst[i].bytes_per_gpu = 10 * GiB;
			f->inst[i].pid = 100 + i;
		}
	}
	f->ws[0].last_used_ms = 2000; /* a used more recently */
	f->ws[1].last_used_ms = 1000;
	f->gpu.index = 0;
	strcpy(f->gpu.name, "Simulated GPU");
	f->gpu.mem_total = 24 * GiB;
	f->gpu.mem_used = 20 * GiB;
	f->gpu.procs_valid = true;
	f->gpu.n_procs = 2;
	f->gpu.procs[0] = (struct vram_gpu_proc){.pid = 100, .used_bytes = 10 * GiB};
	f->gpu.procs[1] = (struct vram_gpu_proc){.pid = 101, .used_bytes = 10 * GiB};
}

static int place_c(struct fixture *f, struct vram_policy_placement *pl, bool allow_evict)
{
	struct vram_policy_ledger l;
	assert_int_equal(vram_policy_ledger_build(&l, &f->gpu, 1, 0, f->ptrs, 3, &f->ws[2]), 0);
	assert_int_equal(l.n_residents, 2);
	assert_int_equal(l.gpus[0].unmanaged, 0);
	int r = vram_policy_place(&l, &f->ws[2], allow_evict, VRAM_PLACE_ANY, pl);
	assert_int_equal(l.n_residents, 2); /* handed back as it was */
	vram_policy_ledger_done(&l);
	return r;
}

static void test_victim_least_recently_used(void **state)
{
	struct fixture f;
	struct vram_policy_placement pl;
	fixture_init(&f, 0, 0);
	assert_int_equal(place_c(&f, &pl, true), 0);
	assert_int_equal(pl.n_victims, 1);
	assert_ptr_equal(pl.victims[0], &f.ws[1]); /* b: used longest ago */
	assert_int_equal(pl.results[0].outcome, VRAM_PLAN_EVICT);
	assert_int_equal(pl.results[0].gpus[0], 0);
	vram_config_free(f.cfg);
}

static void test_victim_busy_or_higher_priority(void **state)
{
	struct fixture f;
	struct vram_policy_placement pl;
	/* b serves a request: a must go although used more recently */
	fixture_init(&f, 0, 0);
	f.ws[1].in_flight = 1;
	assert_int_equal(place_c(&f, &pl, true), 0);
	assert_int_equal(pl.n_victims, 1);
	assert_ptr_equal(pl.victims[0], &f.ws[0]);
	vram_config_free(f.cfg);

	/* b has a higher priority than c: a goes */
	fixture_init(&f, 0, 5);
	assert_int_equal(place_c(&f, &pl, true), 0);
	assert_int_equal(pl.n_victims, 1);
	assert_ptr_equal(pl.victims[0], &f.ws[0]);
	vram_config_free(f.cfg);

	/* both busy: refused, with numbers */
	fixture_init(&f, 0, 0);
	f.ws[0].in_flight = 1;
	f.ws[1].in_flight = 1;
	assert_int_equal(place_c(&f, &pl, true), -ENOSPC);
	assert_int_equal(pl.n_victims, 0);
	assert_non_null(strstr(pl.message, "c"));
	assert_non_null(strstr(pl.message, "GPU0"));
	vram_config_free(f.cfg);

	/* eviction not allowed: refused */
	fixture_init(&f, 0, 0);
	assert_int_equal(place_c(&f, &pl, false), -ENOSPC);
	vram_config_free(f.cfg);
}

static void test_evictable(void **state)
{
	struct vram_workload w = mkw(VRAM_WL_READY, 0, 0, 0);
	assert_true(vram_policy_evictable(&w));
	w.in_flight = 2;
	assert_false(vram_policy_evictable(&w));
	w.in_flight = 0;
	w.state = VRAM_WL_STARTING;
	assert_false(vram_policy_evictable(&w));
}

/* ---- ledger from hand-made runtime workloads on hand-made GPUs ---- */

struct world {
	struct vram_config *cfg;
	struct vram_workload ws[4];
	struct vram_instance inst[4][2];
	struct vram_workload *ptrs[4];
	struct vram_gpu_info gpus[3];
	size_t n_gpus;
};

static void world_init(struct world *wd, const char *text, size_t n_gpus, const char *const *names,
		       uint64_t total)
{
	char *err = NULL;
	memset(wd, 0, sizeof(*wd));
	if (vram_config_parse(text, strlen(text), "policy.yaml", NULL, &wd->cfg, &err) < 0)
		fail_msg("%s", err);
	for (size_t i = 0; i < wd->cfg->n_workloads && i < 4; i++) {
		struct vram_workload *w = &wd->ws[i];
		w->cfg = &wd->cfg->workloads[i];
		w->instances = wd->inst[i];
		w->n_instances = w->cfg->replicas;
		for (size_t k = 0; k < w->n_instances; k++) {
			wd->inst[i][k].owner = w;
			wd->inst[i][k].replica = (unsigned)k;
		}
		wd->ptrs[i] = w;
	}
	wd->n_gpus = n_gpus;
	for (size_t g = 0; g < n_gpus; g++) {
		wd->gpus[g].index = (unsigned)g;
		snprintf(wd->gpus[g].name, sizeof(wd->gpus[g].name), "%s", names[g]);
		wd->gpus[g].mem_total = total;
		wd->gpus[g].procs_valid = true;
	}
}

/* Makes workload i ready and resident on GPU gpu with bytes given, its process using `used`. */
static void world_resident(struct world *wd, size_t i, unsigned gpu, uint64_t given, uint64_t used)
{
	struct vram_workload *w = &wd->ws[i];
	struct vram_instance *in = &w->instances[0];
	w->state = VRAM_WL_READY;
	in->resident = true;
	in->n_gpus = 1;
	in->gpus[0] = gpu;
	in->bytes_per_gpu = given;
	in->pid = (pid_t)(1000 + i);
	struct vram_gpu_info *info = &wd->gpus[gpu];
	info->procs[info->n_procs++] = (struct vram_gpu_proc){.pid = in->pid, .used_bytes = used};
	info->mem_used += used;
}

static int world_place(struct world *wd, size_t i, bool allow_evict, enum vram_policy_where where,
		       struct vram_policy_placement *pl)
{
	struct vram_policy_ledger l;
	assert_int_equal(vram_policy_ledger_build(&l, wd->gpus, wd->n_gpus, 0, wd->ptrs,
						  wd->cfg->n_workloads, &wd->ws[i]), 0);
	size_t before = l.n_residents;
	uint64_t free0 = vram_plan_free_bytes(&l.ledger, 0);
	int r = vram_policy_place(&l, &wd->ws[i], allow_evict, where, pl);
	/* handed back as it was, victims included */
	assert_int_equal(l.n_residents, before);
	assert_int_equal(vram_plan_free_bytes(&l.ledger, 0), free0);
	vram_policy_ledger_done(&l);
	return r;
}

static const char *const two_same[] = {"Simulated GPU", "Simulated GPU"};

static void test_avoid_is_symmetric(void **state)
{
	/* a avoids c; c says nothing. pack would put c next to a on GPU0. */
	struct world wd;
	struct vram_policy_placement pl;
	world_init(&wd,
		   "workloads:\n"
		   "  a: { cmd: [a], memory: 4GiB, avoid: [c] }\n"
		   "  c: { cmd: [c], memory: 4GiB }\n",
		   2, two_same, 24 * GiB);
	world_resident(&wd, 0, 0, 4 * GiB, 4 * GiB);
	assert_int_equal(world_place(&wd, 1, false, VRAM_PLACE_ANY, &pl), 0);
	assert_int_equal(pl.results[0].n_gpus, 1);
	assert_int_equal(pl.results[0].gpus[0], 1);
	vram_config_free(wd.cfg);
}

static void test_resident_counts_what_it_uses(void **state)
{
	/* a was given 4 GiB on GPU0 and its process uses 10 GiB there: 14 GiB left, not 20 */
	struct world wd;
	world_init(&wd, "workloads:\n  a: { cmd: [a], memory: 4GiB }\n  c: { cmd: [c], memory: 4GiB }\n",
		   1, two_same, 24 * GiB);
	world_resident(&wd, 0, 0, 4 * GiB, 10 * GiB);
	struct vram_policy_ledger l;
	assert_int_equal(vram_policy_ledger_build(&l, wd.gpus, 1, 0, wd.ptrs, 2, &wd.ws[1]), 0);
	assert_int_equal(l.n_residents, 1);
	assert_non_null(l.residents[0].bytes_on_gpu);
	assert_int_equal(l.residents[0].bytes_on_gpu[0], 10 * GiB);
	assert_int_equal(vram_plan_free_bytes(&l.ledger, 0), 14 * GiB);
	vram_policy_ledger_done(&l);
	/* it uses less than it was given: what it was given still counts */
	wd.gpus[0].procs[0].used_bytes = 1 * GiB;
	wd.gpus[0].mem_used = 1 * GiB;
	assert_int_equal(vram_policy_ledger_build(&l, wd.gpus, 1, 0, wd.ptrs, 2, &wd.ws[1]), 0);
	assert_int_equal(vram_plan_free_bytes(&l.ledger, 0), 20 * GiB);
	vram_policy_ledger_done(&l);
	vram_config_free(wd.cfg);
}

static void test_victim_freed_once_across_replicas(void **state)
{
	/*
	 * GPU0: v (90 GiB, idle). GPU1: u (80 GiB, busy). w: 2 replicas x 40 GiB.
	 * Replica 0 needs v gone; replica 1 then fits on GPU0 in what v left
	 * (100 - 40 = 60 GiB) without evicting v a second time.
	 */
	struct world wd;
	struct vram_policy_placement pl;
	world_init(&wd,
		   "workloads:\n"
		   "  v: { cmd: [v], memory: 90GiB }\n"
		   "  u: { cmd: [u], memory: 80GiB }\n"
		   "  w: { cmd: [w], memory: 40GiB, replicas: 2 }\n",
		   2, two_same, 100 * GiB);
	world_resident(&wd, 0, 0, 90 * GiB, 90 * GiB);
	world_resident(&wd, 1, 1, 80 * GiB, 80 * GiB);
	wd.ws[1].in_flight = 1;
	assert_int_equal(world_place(&wd, 2, true, VRAM_PLACE_ANY, &pl), 0);
	assert_int_equal(pl.n_results, 2);
	assert_int_equal(pl.n_victims, 1);
	assert_ptr_equal(pl.victims[0], &wd.ws[0]);
	assert_int_equal(pl.results[0].gpus[0], 0);
	assert_int_equal(pl.results[1].outcome, VRAM_PLAN_FITS);
	assert_int_equal(pl.results[1].gpus[0], 0);
	vram_config_free(wd.cfg);
}

static void test_restore_where(void **state)
{
	/* r ran on GPU1 (an H200); GPU1 is now full. GPU0 is another model, GPU2 the same. */
	static const char *const models[] = {"NVIDIA A100", "NVIDIA H200", "NVIDIA H200"};
	struct world wd;
	struct vram_policy_placement pl;
	world_init(&wd,
		   "workloads:\n"
		   "  r: { cmd: [r], memory: 30GiB, placement: most-free }\n"
		   "  big: { cmd: [big], memory: 70GiB }\n",
		   3, models, 80 * GiB);
	wd.gpus[2].mem_total = 60 * GiB; /* GPU0 has the most room but is another model */
	world_resident(&wd, 1, 1, 70 * GiB, 70 * GiB);
	wd.ws[1].in_flight = 1; /* busy: not evictable */
	wd.inst[0][0].n_gpus = 1;
	wd.inst[0][0].gpus[0] = 1;
	wd.inst[0][0].bytes_per_gpu = 30 * GiB;
	wd.ws[0].state = VRAM_WL_OFFLOADED;

	/* a kept process that can move: another GPU of the same model */
	assert_int_equal(world_place(&wd, 0, true, VRAM_PLACE_SAME_MODEL, &pl), 0);
	assert_int_equal(pl.results[0].gpus[0], 2);
	/* one that cannot move: refused, with numbers, and nothing evicted */
	assert_int_equal(world_place(&wd, 0, true, VRAM_PLACE_SAME_GPUS, &pl), -ENOSPC);
	assert_int_equal(pl.n_victims, 0);
	assert_non_null(strstr(pl.message, "GPU1"));
	/* a restarted one goes where there is the most room */
	assert_int_equal(world_place(&wd, 0, true, VRAM_PLACE_PREFER, &pl), 0);
	assert_int_equal(pl.results[0].gpus[0], 0);
	/* its own GPU has room again: it stays there whatever the engine */
	wd.ws[1].instances[0].resident = false;
	wd.gpus[1].n_procs = 0;
	wd.gpus[1].mem_used = 0;
	assert_int_equal(world_place(&wd, 0, true, VRAM_PLACE_SAME_MODEL, &pl), 0);
	assert_int_equal(pl.results[0].gpus[0], 1);
	assert_int_equal(world_place(&wd, 0, true, VRAM_PLACE_PREFER, &pl), 0);
	assert_int_equal(pl.results[0].gpus[0], 1);
	vram_config_free(wd.cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idle_timers),
		cmocka_unit_test(test_idle_park),
		cmocka_unit_test(test_victim_least_recently_used),
		cmocka_unit_test(test_victim_busy_or_higher_priority),
		cmocka_unit_test(test_evictable),
		cmocka_unit_test(test_avoid_is_symmetric),
		cmocka_unit_test(test_resident_counts_what_it_uses),
		cmocka_unit_test(test_victim_freed_once_across_replicas),
		cmocka_unit_test(test_restore_where),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
