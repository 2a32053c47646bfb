/* SPDX-License-Identifier: MIT */
/*
 * Liveness decisions: the start probe period, when a ready workload is
 * checked at all, the count of failed checks before it is dead, the reason
 * it fails with, and the progress rule (a request in flight that sends
 * response bytes keeps it; one that sends none, or none in flight, does
 * not), and what status shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "daemon/liveness.h"

struct fixture {
	struct vram_workload_config cfg;
	struct vram_workload w;
	struct vram_instance in[2];
};

static struct fixture *fixture_new(unsigned failures, uint64_t interval_ms)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->cfg.name = "chat";
	f->cfg.health = (struct vram_health){.kind = VRAM_HEALTH_HTTP, .path = "/health",
					     .interval_ms = interval_ms, .timeout_ms = 2000,
					     .failures = failures};
	f->w.cfg = &f->cfg;
	f->w.instances = f->in;
	f->w.n_instances = 2;
	for (unsigned i = 0; i < 2; i++) {
		f->in[i].owner = &f->w;
		f->in[i].replica = i;
		f->in[i].pid = 4000 + (pid_t)i;
	}
	vram_liveness_reset(&f->w);
	return f;
}

static void test_periods(void **state)
{
	struct vram_health h = {.kind = VRAM_HEALTH_HTTP, .interval_ms = 10000, .failures = 3};
	/* existing configs with short intervals probe a start as often as before */
	assert_int_equal(vram_liveness_start_probe_ms(&h), 500);
	h.interval_ms = 200;
	assert_int_equal(vram_liveness_start_probe_ms(&h), 200);
	assert_true(vram_liveness_enabled(&h));
	/* the progress window: interval × failures, at least 3 s */
	assert_int_equal(vram_liveness_progress_window_ms(&h), 3000);
	h.interval_ms = 10000;
	assert_int_equal(vram_liveness_progress_window_ms(&h), 30000);
	h.interval_ms = VRAM_DURATION_NEVER;
	assert_false(vram_liveness_enabled(&h));
	assert_int_equal(vram_liveness_start_probe_ms(&h), 500);
	assert_true(vram_liveness_progress_window_ms(&h) >= VRAM_DURATION_NEVER); /* no overflow */
	h.interval_ms = 1000;
	h.kind = VRAM_HEALTH_NONE;
	assert_false(vram_liveness_enabled(&h));
	h.kind = VRAM_HEALTH_TCP;
	assert_true(vram_liveness_enabled(&h));
}

static void test_dead_after_failures_in_a_row(void **state)
{
	struct fixture *f = fixture_new(3, 1000);
	char reason[512] = "";
	const char *why = "no answer on port 20001 within 2s";
	assert_int_equal(vram_liveness_record(&f->w, &f->in[0], false, why, 1000, reason, sizeof(reason)),
			 VRAM_LIVENESS_FAILING);
	assert_int_equal(vram_liveness_record(&f->w, &f->in[0], false, why, 2000, reason, sizeof(reason)),
			 VRAM_LIVENESS_FAILING);
	/* a passed check starts the count again */
	assert_int_equal(vram_liveness_record(&f->w, &f->in[0], true, NULL, 3000, reason, sizeof(reason)),
			 VRAM_LIVENESS_OK);
	assert_int_equal(f->in[0].live_failures, 0);
	assert_string_equal(f->w.live_why, "");
	/* another replica's failures are its own */
	assert_int_equal(vram_liveness_record(&f->w, &f->in[1], false, why, 3500, reason, sizeof(reason)),
			 VRAM_LIVENESS_FAILING);
	assert_int_equal(f->in[0].live_failures, 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(vram_liveness_record(&f->w, &f->in[0], false, why, 4000 + 1000 * (uint64_t)i,
						      reason, sizeof(reason)),
				 VRAM_LIVENESS_FAILING);
	assert_string_equal(reason, "");
	assert_int_equal(vram_liveness_record(&f->w, &f->in[0], false, why, 6000, reason, sizeof(reason)),
			 VRAM_LIVENESS_DEAD);
	assert_string_equal(reason, "health check GET /health of replica 0 (pid 4000) failed 3 times "
				    "in a row, 1s apart; last: no answer on port 20001 within 2s");

	/* TCP, failures 1: the first failure */
	f->cfg.health.kind = VRAM_HEALTH_TCP;
	f->cfg.health.failures = 1;
	vram_liveness_reset(&f->w);
	assert_int_equal(vram_liveness_record(&f->w, &f->in[1], false, "port 20002: Connection refused",
					      100, reason, sizeof(reason)),
			 VRAM_LIVENESS_DEAD);
	assert_string_equal(reason, "health check (TCP connect) of replica 1 (pid 4001) failed 1 time "
				    "in a row, 1s apart; last: port 20002: Connection refused");
	free(f);
}

static void test_progress_keeps_it(void **state)
{
	struct fixture *f = fixture_new(2, 1000); /* window: max(2 × 1 s, 3 s) = 3 s */
	char reason[512] = "";
	struct vram_instance *in = &f->in[0];
	f->w.in_flight = 1;
	/* a request in flight, bytes 1 s ago: kept however often the check fails */
	uint64_t t = 100000;
	in->progress_ms = t - 1000;
	assert_int_equal(vram_liveness_record(&f->w, in, false, "GET /health answered HTTP 503", t,
					      reason, sizeof(reason)),
			 VRAM_LIVENESS_FAILING);
	for (int i = 1; i <= 5; i++) {
		t += 1000;
		in->progress_ms = t - 500; /* the stream goes on */
		assert_int_equal(vram_liveness_record(&f->w, in, false, "GET /health answered HTTP 503",
						      t, reason, sizeof(reason)),
				 VRAM_LIVENESS_HELD);
		assert_true(f->w.live_held);
	}
	json_t *j = vram_liveness_json(&f->w, t + 250);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "failures")), 6);
	assert_int_equal(json_integer_value(json_object_get(j, "failures_max")), 2);
	assert_true(json_is_true(json_object_get(j, "held")));
	assert_string_equal(json_string_value(json_object_get(j, "last_check")),
			    "GET /health answered HTTP 503");
	assert_true(json_real_value(json_object_get(j, "last_check_seconds")) == 0.25);
	assert_true(json_real_value(json_object_get(j, "interval_seconds")) == 1.0);
	json_decref(j);
	/* bytes on the other replica do not keep this one */
	f->in[1].progress_ms = t + 3000;
	/* the stream stops: once the window has passed, the next failure is the end */
	t += 2000;
	assert_int_equal(vram_liveness_record(&f->w, in, false, "GET /health answered HTTP 503", t,
					      reason, sizeof(reason)),
			 VRAM_LIVENESS_HELD);
	t += 1000;
	assert_int_equal(vram_liveness_record(&f->w, in, false, "GET /health answered HTTP 503", t,
					      reason, sizeof(reason)),
			 VRAM_LIVENESS_DEAD);
	assert_non_null(strstr(reason, "failed 8 times in a row"));
	assert_non_null(strstr(reason, "with requests in flight but no response bytes within 3s"));
	assert_false(f->w.live_held);

	/* bytes came, but nothing is in flight now: dead */
	vram_liveness_reset(&f->w);
	f->w.in_flight = 0;
	in->progress_ms = t;
	assert_int_equal(vram_liveness_record(&f->w, in, false, "x", t, reason, sizeof(reason)),
			 VRAM_LIVENESS_FAILING);
	assert_int_equal(vram_liveness_record(&f->w, in, false, "x", t + 1, reason, sizeof(reason)),
			 VRAM_LIVENESS_DEAD);
	/* a request in flight that never sent a byte does not keep a hung process */
	vram_liveness_reset(&f->w);
	f->w.in_flight = 3;
	assert_int_equal(in->progress_ms, 0);
	assert_int_equal(vram_liveness_record(&f->w, in, false, "x", t, reason, sizeof(reason)),
			 VRAM_LIVENESS_FAILING);
	assert_int_equal(vram_liveness_record(&f->w, in, false, "x", t + 1, reason, sizeof(reason)),
			 VRAM_LIVENESS_DEAD);
	free(f);
}

static void test_status(void **state)
{
	struct fixture *f = fixture_new(3, 10000);
	json_t *j = vram_liveness_json(&f->w, 5000);
	assert_true(json_is_null(json_object_get(j, "last_check")));
	assert_true(json_is_null(json_object_get(j, "last_check_seconds")));
	assert_int_equal(json_integer_value(json_object_get(j, "failures")), 0);
	json_decref(j);
	char reason[64];
	vram_liveness_record(&f->w, &f->in[1], true, NULL, 4000, reason, sizeof(reason));
	j = vram_liveness_json(&f->w, 5000);
	assert_string_equal(json_string_value(json_object_get(j, "last_check")), "ok");
	assert_true(json_real_value(json_object_get(j, "last_check_seconds")) == 1.0);
	json_decref(j);
	/* not checked: null */
	f->cfg.health.kind = VRAM_HEALTH_NONE;
	j = vram_liveness_json(&f->w, 5000);
	assert_true(json_is_null(j));
	json_decref(j);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_periods),
		cmocka_unit_test(test_dead_after_failures_in_a_row),
		cmocka_unit_test(test_progress_keeps_it),
		cmocka_unit_test(test_status),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
