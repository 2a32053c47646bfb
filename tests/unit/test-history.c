/* SPDX-License-Identifier: MIT */
/*
 * GPU memory over the last minutes (daemon/history.h): a fixed ring of
 * samples, oldest first, whatever the number of samples or GPUs.
 */
#include "sim-manager.h"

#include "../../src/daemon/history.c"

static void test_samples_are_bounded_and_oldest_first(void **state)
{
	struct sim_manager sm;
	sim_manager_new(&sm, "workloads:\n  a: { cmd: [/bin/true], memory: 1GiB }\n", false);
	struct vram_history *h = NULL;
	assert_int_equal(vram_history_new(sm.base, sm.m, &h), 0);
	for (size_t i = 0; i < VRAM_HISTORY_SAMPLES + 20; i++) {
		take_sample(h);
		/* a clock that moves: each sample later than the one before */
		h->ring[(h->next + VRAM_HISTORY_SAMPLES - 1) % VRAM_HISTORY_SAMPLES].wall_s = (double)i;
	}
	json_t *j = vram_history_json(h);
	assert_non_null(j);
	json_t *samples = json_object_get(j, "samples");
	assert_int_equal(json_array_size(samples), VRAM_HISTORY_SAMPLES);
	/* the first sample (from vram_history_new) and the 20 oldest went */
	assert_true(json_real_value(json_object_get(json_array_get(samples, 0), "time")) == 20.0);
	assert_true(json_real_value(json_object_get(json_array_get(samples, VRAM_HISTORY_SAMPLES - 1),
						    "time")) == (double)(VRAM_HISTORY_SAMPLES + 19));
	json_t *gpus = json_object_get(j, "gpus");
	assert_int_equal(json_array_size(gpus), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(gpus, 0), "total")),
			 24LL << 30);
	json_t *used = json_object_get(json_array_get(samples, 0), "used");
	assert_int_equal(json_array_size(used), 1);
	assert_int_equal(json_integer_value(json_array_get(used, 0)), 0);
	json_decref(j);
	vram_history_free(h);
	sim_manager_free(&sm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_samples_are_bounded_and_oldest_first),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
