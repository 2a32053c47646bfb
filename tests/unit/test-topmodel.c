/* SPDX-License-Identifier: MIT */
/*
 * What vramctl top shows: workloads sorted by the GPU memory they hold, the
 * selection following its workload when the order changes, state events
 * shown before the next status, request rates from /metrics.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ctl/topmodel.h"

static json_t *status(uint64_t a_bytes, uint64_t b_bytes)
{
	return json_pack("{s:[{s:i,s:s,s:{s:I,s:I,s:I}}],s:{s:I,s:I},s:["
			 "{s:s,s:s,s:{s:I,s:I,s:s},s:f,s:{s:s},s:[{s:i}]},"
			 "{s:s,s:s,s:{s:I,s:I,s:s},s:f,s:{s:s},s:[]}]}",
			 "gpus", "index", 0, "name", "GPU", "memory", "total", (json_int_t)80 << 30,
			 "used", (json_int_t)(a_bytes + b_bytes), "reserve", (json_int_t)0, "host",
			 "budget", (json_int_t)10, "parked", (json_int_t)0, "workloads", "name", "a",
			 "state", "ready", "memory", "gpu_bytes", (json_int_t)a_bytes, "host_bytes",
			 (json_int_t)0, "declared", "4GiB", "idle_seconds", 1.0, "engine", "name",
			 "sim", "gpus", "index", 0, "name", "b", "state", "stopped", "memory",
			 "gpu_bytes", (json_int_t)b_bytes, "host_bytes", (json_int_t)0, "declared",
			 "20GiB", "idle_seconds", 0.0, "engine", "name", "sim", "gpus");
}

static void test_sort_and_selection(void **state)
{
	(void)state;
	struct vram_top t;
	vram_top_init(&t);
	json_t *s = status(4, 0);
	assert_int_equal(vram_top_set_status(&t, s), 0);
	json_decref(s);
	assert_int_equal(t.n_wls, 2);
	assert_string_equal(t.wls[0].name, "a"); /* holds memory: first */
	assert_string_equal(t.wls[0].gpus, "0");
	assert_string_equal(t.wls[1].gpus, "");
	assert_string_equal(t.selected, "a");
	vram_top_move(&t, 1);
	assert_string_equal(t.selected, "b");
	vram_top_move(&t, 5); /* stays on the last row */
	assert_string_equal(t.selected, "b");
	/* b now holds more: it goes first, and stays selected */
	s = status(4, 20);
	assert_int_equal(vram_top_set_status(&t, s), 0);
	json_decref(s);
	assert_string_equal(t.wls[0].name, "b");
	assert_int_equal(vram_top_selected_row(&t), 0);
	/* an event shows before the next status */
	assert_true(vram_top_event(&t, "a", "offloading"));
	assert_string_equal(t.wls[1].state, "offloading");
	assert_false(vram_top_event(&t, "nope", "ready"));
	vram_top_done(&t);
}

static void test_request_rates(void **state)
{
	(void)state;
	struct vram_top t;
	vram_top_init(&t);
	json_t *s = status(4, 0);
	vram_top_set_status(&t, s);
	json_decref(s);
	static const char m1[] = "# TYPE vram_gateway_requests_total counter\n"
				 "vram_gateway_requests_total{workload=\"a\",code=\"2xx\"} 10\n"
				 "vram_gateway_requests_total{workload=\"a\",code=\"5xx\"} 2\n"
				 "vram_gateway_requests_total{workload=\"\",code=\"4xx\"} 7\n"
				 "vram_gateway_requests_total{workload=\"ab\",code=\"2xx\"} 99\n";
	vram_top_set_metrics(&t, m1, strlen(m1), 1000);
	assert_true(t.wls[0].req_rate < 0); /* one read: no rate yet */
	assert_int_equal(t.wls[0].requests, 12);
	static const char m2[] = "vram_gateway_requests_total{workload=\"a\",code=\"2xx\"} 20\n"
				 "vram_gateway_requests_total{workload=\"a\",code=\"5xx\"} 2\n";
	vram_top_set_metrics(&t, m2, strlen(m2), 3000);
	assert_true(t.wls[0].req_rate > 4.99 && t.wls[0].req_rate < 5.01); /* 10 in 2 s */
	assert_true(t.wls[1].req_rate == 0);
	/* the rate survives a new status */
	s = status(4, 0);
	vram_top_set_status(&t, s);
	json_decref(s);
	assert_true(t.wls[0].req_rate > 4.99);
	vram_top_done(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sort_and_selection),
		cmocka_unit_test(test_request_rates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
