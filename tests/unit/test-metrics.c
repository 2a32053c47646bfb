/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus text format pieces: label values escaped as the format
 * says, histogram buckets cumulative and closed by +Inf equal to _count.
 * Reloads of the config: a removed workload's counts leave the scrape, a
 * changed one's go on, an added one's start from zero. State events:
 * evictions by their reason, durations by the monotonic clock. (metrics.c
 * is included to hand its subscriber the manager's events.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "daemon/metrics.c"
#include "sim-manager.h"

static void test_escape_label(void **state)
{
	struct vram_buf b;
	vram_buf_init(&b, 1024);
	assert_int_equal(vram_metrics_escape_label(&b, "plain"), 0);
	assert_string_equal(b.data, "plain");
	vram_buf_reset(&b);
	assert_int_equal(vram_metrics_escape_label(&b, "a\\b\"c\nd{e}=,f"), 0);
	assert_string_equal(b.data, "a\\\\b\\\"c\\nd{e}=,f");
	vram_buf_reset(&b);
	assert_int_equal(vram_metrics_escape_label(&b, ""), 0);
	assert_int_equal(b.len, 0);
	vram_buf_done(&b);

	/* Bounded like every buffer. */
	vram_buf_init(&b, 4);
	assert_int_equal(vram_metrics_escape_label(&b, "\"\"\""), -E2BIG);
	vram_buf_done(&b);
}

static void test_histogram(void **state)
{
	static const double bounds[] = { 0.1, 1, 10 };
	struct vram_histogram h;
	vram_histogram_init(&h, bounds, 3);
	vram_histogram_observe(&h, 0.05);
	vram_histogram_observe(&h, 0.1); /* le is inclusive */
	vram_histogram_observe(&h, 5);
	vram_histogram_observe(&h, 100);
	assert_int_equal(h.count, 4);

	struct vram_buf b;
	vram_buf_init(&b, 4096);
	assert_int_equal(vram_histogram_write(&b, "x_seconds", "workload=\"a\"", &h), 0);
	assert_string_equal(b.data,
			    "x_seconds_bucket{workload=\"a\",le=\"0.1\"} 2\n"
			    "x_seconds_bucket{workload=\"a\",le=\"1\"} 2\n"
			    "x_seconds_bucket{workload=\"a\",le=\"10\"} 3\n"
			    "x_seconds_bucket{workload=\"a\",le=\"+Inf\"} 4\n"
			    "x_seconds_sum{workload=\"a\"} 105.15000000000001\n"
			    "x_seconds_count{workload=\"a\"} 4\n");
	vram_buf_reset(&b);
	struct vram_histogram empty;
	vram_histogram_init(&empty, bounds, 3);
	assert_int_equal(vram_histogram_write(&b, "y", "", &empty), 0);
	assert_string_equal(b.data, "y_bucket{le=\"0.1\"} 0\n"
				    "y_bucket{le=\"1\"} 0\n"
				    "y_bucket{le=\"10\"} 0\n"
				    "y_bucket{le=\"+Inf\"} 0\n"
				    "y_sum{} 0\n"
				    "y_count{} 0\n");
	vram_buf_done(&b);
}

/* The scrape, as a string to search (caller frees). */
static char *scrape(struct vram_metrics *mx)
{
	struct vram_buf out;
	vram_buf_init(&out, VRAM_METRICS_TEXT_MAX);
	assert_int_equal(vram_metrics_render(mx, &out), 0);
	char *text = vram_buf_take(&out);
	assert_non_null(text);
	return text;
}

static void reload(struct vram_metrics *mx, const char *diff)
{
	sim_manager_reload(on_event, mx, diff);
}

static void test_reload(void **state)
{
	struct sim_manager sm;
	sim_manager_new(&sm,
			"workloads:\n"
			"  a: { cmd: [/bin/true], memory: 1GiB }\n"
			"  b: { cmd: [/bin/true], memory: 1GiB }\n",
			false);
	struct vram_metrics *mx = NULL;
	assert_int_equal(vram_metrics_new(sm.m, &mx), 0);

	vram_metrics_gateway_request(mx, "a", 200, 0.01);
	vram_metrics_gateway_request(mx, "a", 200, 0.01);
	vram_metrics_gateway_request(mx, "b", 502, 0.01);
	vram_metrics_gateway_request(mx, "", 404, 0.01);
	vram_metrics_gateway_queue(mx, "b", 3);
	char *t = scrape(mx);
	assert_non_null(strstr(t, "vram_gateway_requests_total{workload=\"a\",code=\"2xx\"} 2\n"));
	assert_non_null(strstr(t, "vram_gateway_requests_total{workload=\"b\",code=\"5xx\"} 1\n"));
	assert_non_null(strstr(t, "vram_gateway_queue_depth{workload=\"b\"} 3\n"));
	free(t);

	/* a changed, b removed: a counts on; b is no longer counted nor shown. */
	reload(mx, "{\"added\": [], \"removed\": [\"b\"], \"changed\": [\"a\"]}");
	vram_metrics_gateway_request(mx, "a", 200, 0.01);
	vram_metrics_gateway_request(mx, "b", 502, 0.01);
	t = scrape(mx);
	assert_non_null(strstr(t, "vram_gateway_requests_total{workload=\"a\",code=\"2xx\"} 3\n"));
	assert_null(strstr(t, "vram_gateway_requests_total{workload=\"b\""));
	assert_null(strstr(t, "vram_gateway_queue_depth{workload=\"b\"}"));
	assert_null(strstr(t, "vram_workload_offloads_total{workload=\"b\"}"));
	/* the bucket for requests that matched no workload stays */
	assert_non_null(strstr(t, "vram_gateway_requests_total{workload=\"\",code=\"4xx\"} 1\n"));
	free(t);

	/* b added back: from zero; state events count for it again. */
	reload(mx, "{\"added\": [\"b\"], \"removed\": [], \"changed\": []}");
	struct vram_event ev = { .kind = VRAM_EVENT_STATE, .workload = "b",
				 .from = VRAM_WL_OFFLOADING, .to = VRAM_WL_OFFLOADED,
				 .reason = VRAM_REASON_IDLE, .text = "idle", .wall_s = 10.0 };
	on_event(&ev, mx);
	t = scrape(mx);
	assert_non_null(strstr(t, "vram_gateway_requests_total{workload=\"b\",code=\"2xx\"} 0\n"));
	assert_null(strstr(t, "vram_gateway_requests_total{workload=\"b\",code=\"5xx\"}"));
	assert_non_null(strstr(t, "vram_gateway_queue_depth{workload=\"b\"} 0\n"));
	assert_non_null(strstr(t, "vram_workload_offloads_total{workload=\"b\"} 1\n"));
	assert_non_null(strstr(t, "vram_gateway_requests_total{workload=\"a\",code=\"2xx\"} 3\n"));
	free(t);

	vram_metrics_free(mx);
	sim_manager_free(&sm);
}

/* A state event of workload "a" at mono_ms, with wall-clock time wall_s. */
static void state_event(struct vram_metrics *mx, enum vram_wl_state from, enum vram_wl_state to,
			enum vram_event_reason reason, const char *text, uint64_t mono_ms,
			double wall_s)
{
	struct vram_event ev = { .kind = VRAM_EVENT_STATE, .workload = "a", .from = from, .to = to,
				 .reason = reason, .text = text, .mono_ms = mono_ms, .wall_s = wall_s };
	on_event(&ev, mx);
}

/*
 * Evictions are counted by the event's reason whatever its sentence says,
 * and durations come from the monotonic clock: a wall clock stepped back
 * in between (NTP) neither loses nor skews an observation.
 */
static void test_state_events(void **state)
{
	struct sim_manager sm;
	sim_manager_new(&sm, "workloads:\n  a: { cmd: [/bin/true], memory: 1GiB }\n", false);
	struct vram_metrics *mx = NULL;
	assert_int_equal(vram_metrics_new(sm.m, &mx), 0);

	/* an eviction in other words is one; an idle offload whose text says "evicted" is not */
	state_event(mx, VRAM_WL_READY, VRAM_WL_OFFLOADING, VRAM_REASON_EVICTED, "made room for b",
		    1000, 5000.0);
	state_event(mx, VRAM_WL_OFFLOADING, VRAM_WL_OFFLOADED, VRAM_REASON_OFFLOADED, "done", 3500,
		    4000.0);
	state_event(mx, VRAM_WL_OFFLOADED, VRAM_WL_RESTORING, VRAM_REASON_ASKED, "restore asked",
		    10000, 4100.0);
	state_event(mx, VRAM_WL_RESTORING, VRAM_WL_READY, VRAM_REASON_RESTORED, "done", 10250,
		    3000.0);
	state_event(mx, VRAM_WL_READY, VRAM_WL_OFFLOADING, VRAM_REASON_IDLE, "evicted by the idle timer",
		    20000, 3100.0);
	char *t = scrape(mx);
	assert_non_null(strstr(t, "vram_evictions_total{workload=\"a\"} 1\n"));
	assert_non_null(strstr(t, "vram_workload_offloads_total{workload=\"a\"} 1\n"));
	assert_non_null(strstr(t, "vram_workload_restores_total{workload=\"a\"} 1\n"));
	assert_non_null(strstr(t, "vram_workload_offload_duration_seconds_sum{workload=\"a\"} 2.5\n"));
	assert_non_null(strstr(t, "vram_workload_offload_duration_seconds_count{workload=\"a\"} 1\n"));
	assert_non_null(strstr(t, "vram_workload_restore_duration_seconds_sum{workload=\"a\"} 0.25\n"));
	assert_non_null(strstr(t, "vram_workload_restore_duration_seconds_count{workload=\"a\"} 1\n"));
	free(t);

	vram_metrics_free(mx);
	sim_manager_free(&sm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_label),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_state_events),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
