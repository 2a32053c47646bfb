/* SPDX-License-Identifier: MIT */
/*
 * The access log's line: every field in its place, a path that is not
 * UTF-8 still a JSON line (U+FFFD), a long path cut, no first byte as null,
 * and a line that does not fit refused rather than cut.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "daemon/accesslog.h"

static void test_fields(void **state)
{
	(void)state;
	struct vram_accesslog_entry e = {
		.client = "127.0.0.1", .method = "POST", .path = "/v1/chat/completions?x=1",
		.model = "chat-model", .workload = "chat", .status = 200, .bytes = 1234,
		.first_byte_s = 0.0123, .total_s = 0.4567, .queue_s = 0.25,
	};
	char buf[VRAM_ACCESSLOG_LINE_MAX];
	int n = vram_accesslog_format(&e, 1765104000123LL, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(buf));
	assert_int_equal(buf[n - 1], '\n');
	assert_string_equal(buf,
		"{\"time\":\"2025-12-07T10:40:00.123Z\",\"client\":\"127.0.0.1\",\"method\":\"POST\","
		"\"path\":\"/v1/chat/completions?x=1\",\"model\":\"chat-model\",\"workload\":\"chat\","
		"\"status\":200,\"bytes\":1234,\"first_byte_ms\":12.3,\"total_ms\":456.7,"
		"\"queue_ms\":250.0}\n");
}

static void test_odd_input(void **state)
{
	(void)state;
	char path[3000];
	memset(path, 'a', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	memcpy(path, "/\xff\xfe", 3);
	struct vram_accesslog_entry e = {
		.client = "unix", .method = "GET", .path = path, .model = "", .workload = "",
		.status = 0, .first_byte_s = -1, .total_s = 1,
	};
	char buf[VRAM_ACCESSLOG_LINE_MAX];
	int n = vram_accesslog_format(&e, 0, buf, sizeof(buf));
	assert_true(n > 0);
	json_error_t err;
	json_t *o = json_loads(buf, 0, &err);
	assert_non_null(o);
	const char *p = json_string_value(json_object_get(o, "path"));
	assert_memory_equal(p, "/\xef\xbf\xbd\xef\xbf\xbd" "aaa", 9); /* two U+FFFD */
	assert_int_equal(strlen(p), VRAM_ACCESSLOG_PATH_MAX + 4); /* cut at 1024 bytes of input */
	assert_true(json_is_null(json_object_get(o, "first_byte_ms")));
	assert_int_equal(json_integer_value(json_object_get(o, "status")), 0);
	json_decref(o);
	/* too small a buffer: refused */
	char small[64];
	assert_int_equal(vram_accesslog_format(&e, 0, small, sizeof(small)), -E2BIG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_odd_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
