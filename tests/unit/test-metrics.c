/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus text format pieces: label values escaped as the format
 * says, histogram buckets cumulative and closed by +Inf equal to _count.
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
#include "daemon/metrics.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape_label),
		cmocka_unit_test(test_histogram),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
