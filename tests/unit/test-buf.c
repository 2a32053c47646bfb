/* SPDX-License-Identifier: MIT */
/*
 * The bounded buffer: it grows up to its maximum and no further, a refused
 * append leaves the contents as they were, and the data stays terminated.
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

static void test_append_and_take(void **state)
{
	struct vram_buf b;
	vram_buf_init(&b, 1024);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(vram_buf_puts(&b, "hello"), 0);
	assert_int_equal(vram_buf_append(&b, ", world", 7), 0);
	assert_int_equal(vram_buf_append(&b, NULL, 0), 0);
	assert_int_equal(b.len, 12);
	assert_string_equal(b.data, "hello, world");

	char *s = vram_buf_take(&b);
	assert_string_equal(s, "hello, world");
	free(s);
	/* Taken: empty again, the maximum kept. */
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.max, 1024);
	s = vram_buf_take(&b);
	assert_string_equal(s, "");
	free(s);
	vram_buf_done(&b);
}

static void test_max_is_enforced(void **state)
{
	struct vram_buf b;
	vram_buf_init(&b, 10);
	assert_int_equal(vram_buf_puts(&b, "0123456789"), 0);
	assert_int_equal(b.len, 10);
	assert_int_equal(vram_buf_puts(&b, "x"), -E2BIG);
	assert_int_equal(b.len, 10);
	assert_string_equal(b.data, "0123456789");
	assert_true(b.cap <= 11);
	vram_buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	assert_int_equal(vram_buf_puts(&b, "01234567890"), -E2BIG);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	/* A length that would wrap around is refused, not wrapped. */
	assert_int_equal(vram_buf_append(&b, "x", SIZE_MAX), -E2BIG);
	vram_buf_done(&b);
	vram_buf_done(NULL);
}

static void test_printf(void **state)
{
	struct vram_buf b;
	vram_buf_init(&b, 16);
	assert_int_equal(vram_buf_printf(&b, "%d-%s", 42, "ab"), 0);
	assert_string_equal(b.data, "42-ab");
	assert_int_equal(vram_buf_printf(&b, "%s", "0123456789"), 0);
	assert_int_equal(b.len, 15);
	assert_int_equal(vram_buf_printf(&b, "%s", "xy"), -E2BIG);
	assert_int_equal(b.len, 15);
	assert_string_equal(b.data, "42-ab0123456789");
	assert_int_equal(vram_buf_printf(&b, "%s", "z"), 0);
	assert_int_equal(b.len, 16);
	vram_buf_done(&b);
}

static void test_growth(void **state)
{
	struct vram_buf b;
	vram_buf_init(&b, 100000);
	for (int i = 0; i < 10000; i++)
		assert_int_equal(vram_buf_append(&b, "abcdefghij", 10), 0);
	assert_int_equal(b.len, 100000);
	assert_int_equal(b.data[b.len], '\0');
	assert_memory_equal(b.data + 99990, "abcdefghij", 10);
	assert_int_equal(vram_buf_append(&b, "a", 1), -E2BIG);
	vram_buf_done(&b);
	assert_null(b.data);
}

static void test_space_commit_consume(void **state)
{
	struct vram_buf b;
	vram_buf_init(&b, 10);
	char *p;
	size_t avail;
	assert_int_equal(vram_buf_space(&b, 100, &p, &avail), 0);
	assert_int_equal(avail, 10); /* the maximum bounds the space */
	memcpy(p, "abcdef", 6);
	vram_buf_commit(&b, 6);
	assert_string_equal(b.data, "abcdef");
	vram_buf_consume(&b, 2);
	assert_string_equal(b.data, "cdef");
	assert_int_equal(b.len, 4);
	assert_int_equal(vram_buf_space(&b, 3, &p, &avail), 0);
	assert_true(avail >= 3 && avail <= 6);
	memcpy(p, "ghijkl", 6);
	vram_buf_commit(&b, 6);
	assert_int_equal(vram_buf_space(&b, 1, &p, &avail), -E2BIG);
	vram_buf_consume(&b, 99);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	vram_buf_done(&b);
}

static void test_shrink(void **state)
{
	struct vram_buf b;
	vram_buf_init(&b, 1 << 24);
	char *p;
	size_t avail;
	/* A large message grew it; what is left of it fits the small size. */
	assert_int_equal(vram_buf_space(&b, 1 << 20, &p, &avail), 0);
	memset(p, 'x', 1 << 20);
	vram_buf_commit(&b, 1 << 20);
	assert_true(b.cap > (1 << 20));
	vram_buf_consume(&b, (1 << 20) - 3);
	vram_buf_shrink(&b, 4096);
	assert_int_equal(b.cap, 4096);
	assert_int_equal(b.len, 3);
	assert_string_equal(b.data, "xxx");
	/* It still grows afterwards. */
	assert_int_equal(vram_buf_append(&b, "yz", 2), 0);
	assert_string_equal(b.data, "xxxyz");
	/* Small enough already, or more data than the small size: kept. */
	vram_buf_shrink(&b, 4096);
	assert_int_equal(b.cap, 4096);
	assert_int_equal(vram_buf_space(&b, 10000, &p, &avail), 0);
	memset(p, 'a', 10000);
	vram_buf_commit(&b, 10000);
	size_t cap = b.cap;
	vram_buf_shrink(&b, 4096);
	assert_int_equal(b.cap, cap);
	assert_int_equal(b.len, 10005);
	/* Empty: nothing stays allocated. */
	vram_buf_reset(&b);
	vram_buf_shrink(&b, 4096);
	assert_null(b.data);
	assert_int_equal(b.cap, 0);
	assert_int_equal(vram_buf_append(&b, "q", 1), 0);
	assert_string_equal(b.data, "q");
	vram_buf_done(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_append_and_take),
		cmocka_unit_test(test_max_is_enforced),
		cmocka_unit_test(test_printf),
		cmocka_unit_test(test_growth),
		cmocka_unit_test(test_space_commit_consume),
		cmocka_unit_test(test_shrink),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
