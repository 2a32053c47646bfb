/* SPDX-License-Identifier: MIT */
/*
 * Policy tests: idle timers (never with a request in flight, idle counted
 * from the last request) and the choice of eviction victim from a ledger
 * built out of runtime workloads on simulated GPUs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "config/config.h"
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
	int r = vram_policy_place(&l, &f->ws[2], allow_evict, false, pl);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idle_timers),
		cmocka_unit_test(test_victim_least_recently_used),
		cmocka_unit_test(test_victim_busy_or_higher_priority),
		cmocka_unit_test(test_evictable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
