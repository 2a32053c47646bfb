/* SPDX-License-Identifier: MIT */
/*
 * The ring of the manager's last decisions (daemon/decisions.h,
 * mgr_decisions.c): bounded, oldest first, the planner's outcome in words
 * and GPUs, only state changes that are decisions.
 */
#include "sim-manager.h"

#include "core/policy.h"
#include "daemon/decisions.h"
#include "daemon/manager_int.h"

static const char workloads[] = "workloads:\n"
				"  chat: { cmd: [/bin/true], memory: 1GiB }\n"
				"  embed: { cmd: [/bin/true], memory: 1GiB }\n";

static json_t *decisions(struct vram_manager *m)
{
	json_t *d = vram_manager_decisions_json(m);
	assert_non_null(d);
	assert_int_equal(json_integer_value(json_object_get(d, "max")), VRAM_DECISIONS_MAX);
	return d;
}

static void test_empty_until_something_is_decided(void **state)
{
	struct sim_manager sm;
	sim_manager_new(&sm, workloads, false);
	json_t *d = decisions(sm.m);
	assert_int_equal(json_array_size(json_object_get(d, "decisions")), 0);
	json_decref(d);
	sim_manager_free(&sm);
}

static void test_ring_keeps_the_last_max_oldest_first(void **state)
{
	struct sim_manager sm;
	sim_manager_new(&sm, workloads, false);
	struct vram_workload *w = mgr_find(sm.m, "chat");
	assert_non_null(w);
	size_t total = VRAM_DECISIONS_MAX + 6;
	for (size_t i = 0; i < total; i++)
		mgr_decision_state(sm.m, w, VRAM_WL_READY, VRAM_REASON_IDLE, "idle for 10m");
	json_t *d = decisions(sm.m);
	json_t *a = json_object_get(d, "decisions");
	assert_int_equal(json_array_size(a), VRAM_DECISIONS_MAX);
	/* the six oldest went: ids 7..70, in order */
	for (size_t i = 0; i < VRAM_DECISIONS_MAX; i++)
		assert_int_equal(json_integer_value(json_object_get(json_array_get(a, i), "id")),
				 (json_int_t)(i + 7));
	json_t *last = json_array_get(a, VRAM_DECISIONS_MAX - 1);
	assert_string_equal(json_string_value(json_object_get(last, "kind")), "idle");
	assert_string_equal(json_string_value(json_object_get(last, "workload")), "chat");
	assert_string_equal(json_string_value(json_object_get(last, "reason")), "idle for 10m");
	json_decref(d);
	sim_manager_free(&sm);
}

static void test_only_decisions_are_recorded(void **state)
{
	struct sim_manager sm;
	sim_manager_new(&sm, workloads, false);
	struct vram_workload *w = mgr_find(sm.m, "chat");
	mgr_decision_state(sm.m, w, VRAM_WL_STOPPED, VRAM_REASON_ASKED, "start asked");
	mgr_decision_state(sm.m, w, VRAM_WL_STARTING, VRAM_REASON_HEALTHY, "healthy");
	mgr_decision_state(sm.m, w, VRAM_WL_READY, VRAM_REASON_EVICTED, "evicted to make room for embed");
	json_t *d = decisions(sm.m);
	json_t *a = json_object_get(d, "decisions");
	assert_int_equal(json_array_size(a), 1);
	json_t *e = json_array_get(a, 0);
	assert_string_equal(json_string_value(json_object_get(e, "kind")), "evicted");
	assert_string_equal(json_string_value(json_object_get(e, "reason")),
			    "evicted to make room for embed");
	assert_string_equal(json_string_value(json_object_get(e, "from")), "ready");
	json_decref(d);
	sim_manager_free(&sm);
}

static void test_placement_names_gpus_victims_and_refusals(void **state)
{
	struct sim_manager sm;
	sim_manager_new(&sm, workloads, false);
	struct vram_workload *chat = mgr_find(sm.m, "chat"), *embed = mgr_find(sm.m, "embed");
	struct vram_policy_placement *pl = calloc(1, sizeof(*pl));
	assert_non_null(pl);
	pl->n_results = 2; /* two replicas, both on GPU 3: listed once */
	pl->results[0].n_gpus = 1;
	pl->results[0].gpus[0] = 3;
	pl->results[0].bytes_per_gpu = 1 << 30;
	pl->results[1] = pl->results[0];
	pl->victims[0] = embed;
	pl->n_victims = 1;
	mgr_decision_plan(sm.m, chat, pl, 0, true);
	/* a retry of a start waiting for room that still fails is no new decision */
	snprintf(pl->message, sizeof(pl->message), "needs 1 GiB, GPU 3 has 0 B free");
	mgr_decision_plan(sm.m, chat, pl, -ENOSPC, false);
	mgr_decision_plan(sm.m, chat, pl, -ENOSPC, true);
	free(pl);

	json_t *d = decisions(sm.m);
	json_t *a = json_object_get(d, "decisions");
	assert_int_equal(json_array_size(a), 2);
	json_t *p = json_array_get(a, 0);
	assert_string_equal(json_string_value(json_object_get(p, "kind")), "placed");
	assert_string_equal(json_string_value(json_object_get(p, "reason")), "fits on GPU 3");
	assert_int_equal(json_array_size(json_object_get(p, "gpus")), 1);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(p, "gpus"), 0)), 3);
	assert_string_equal(json_string_value(json_array_get(json_object_get(p, "evicts"), 0)), "embed");
	assert_int_equal(json_integer_value(json_object_get(p, "bytes_per_gpu")), 1 << 30);
	json_t *r = json_array_get(a, 1);
	assert_string_equal(json_string_value(json_object_get(r, "kind")), "refused");
	assert_string_equal(json_string_value(json_object_get(r, "reason")),
			    "needs 1 GiB, GPU 3 has 0 B free");
	json_decref(d);
	sim_manager_free(&sm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty_until_something_is_decided),
		cmocka_unit_test(test_ring_keeps_the_last_max_oldest_first),
		cmocka_unit_test(test_only_decisions_are_recorded),
		cmocka_unit_test(test_placement_names_gpus_victims_and_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
