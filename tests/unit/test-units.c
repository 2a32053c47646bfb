/* SPDX-License-Identifier: MIT */
/*
 * Units as users write them: sizes, memory fractions, durations and GPU
 * lists parse to exact values, bad input is refused without touching the
 * output, and formatting reads back the way people write it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/units.h"

static void test_bytes(void **state)
{
	static const struct {
		const char *s;
		uint64_t bytes;
	} ok[] = {
		{ "0", 0 },
		{ "4096", 4096 },
		{ "100B", 100 },
		{ "512MiB", 512 * VRAM_MiB },
		{ "24GiB", 24 * VRAM_GiB },
		{ "1.5GiB", 3 * VRAM_GiB / 2 },
		{ "2TiB", 2 * VRAM_TiB },
		{ "8KiB", 8 * VRAM_KiB },
		{ "1G", VRAM_GiB },
		{ "16M", 16 * VRAM_MiB },
		{ "1.5GB", 1500000000 },
		{ "1kB", 1000 },
		{ "1KB", 1000 },
		{ "3MB", 3000000 },
		{ "1TB", UINT64_C(1000000000000) },
		{ "24 GiB", 24 * VRAM_GiB },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t v = 7;
		if (vram_units_parse_bytes(ok[i].s, &v) != 0)
			fail_msg("\"%s\" was refused", ok[i].s);
		if (v != ok[i].bytes)
			fail_msg("\"%s\" gave %llu", ok[i].s, (unsigned long long)v);
	}

	static const char *const bad[] = {
		"", "lots", "GiB", "-1GiB", "1.5", "24gib", "24 GiB x", "1e3", "0x10", ".",
		"1..2GiB", "24GiBs",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 7;
		if (vram_units_parse_bytes(bad[i], &v) != -EINVAL)
			fail_msg("\"%s\" was not refused with -EINVAL", bad[i]);
		assert_int_equal(v, 7);
	}
	uint64_t v = 7;
	assert_int_equal(vram_units_parse_bytes("99999999TiB", &v), -ERANGE);
	assert_int_equal(vram_units_parse_bytes(NULL, &v), -EINVAL);
	assert_int_equal(v, 7);
}

static void test_mem(void **state)
{
	struct vram_mem m;
	assert_int_equal(vram_units_parse_mem("0.8", &m), 0);
	assert_true(m.is_fraction);
	assert_true(m.fraction == 0.8);
	assert_int_equal(vram_units_parse_mem("1", &m), 0);
	assert_true(m.is_fraction);
	assert_true(m.fraction == 1.0);
	assert_int_equal(vram_units_parse_mem("1.0", &m), 0);
	assert_true(m.is_fraction);
	assert_int_equal(vram_units_parse_mem(".25", &m), 0);
	assert_true(m.fraction == 0.25);
	assert_int_equal(vram_units_parse_mem("20GiB", &m), 0);
	assert_false(m.is_fraction);
	assert_int_equal(m.bytes, 20 * VRAM_GiB);
	assert_int_equal(vram_units_parse_mem("2", &m), 0);
	assert_false(m.is_fraction);
	assert_int_equal(m.bytes, 2);

	m = (struct vram_mem){ .bytes = 99 };
	assert_int_equal(vram_units_parse_mem("1.5", &m), -ERANGE);
	assert_int_equal(vram_units_parse_mem("0.0", &m), -ERANGE);
	assert_int_equal(vram_units_parse_mem("0.8x", &m), -EINVAL);
	assert_int_equal(vram_units_parse_mem("", &m), -EINVAL);
	assert_int_equal(vram_units_parse_mem(NULL, &m), -EINVAL);
	assert_false(m.is_fraction);
	assert_int_equal(m.bytes, 99);

	struct vram_mem frac = { .is_fraction = true, .fraction = 0.5 };
	assert_int_equal(vram_mem_resolve(&frac, 80 * VRAM_GiB), 40 * VRAM_GiB);
	struct vram_mem abs = { .bytes = 3 * VRAM_GiB };
	assert_int_equal(vram_mem_resolve(&abs, 80 * VRAM_GiB), 3 * VRAM_GiB);
}

static void test_durations(void **state)
{
	static const struct {
		const char *s;
		uint64_t ms;
	} ok[] = {
		{ "90s", 90000 },
		{ "10m", 600000 },
		{ "1h", 3600000 },
		{ "1h30m", 5400000 },
		{ "250ms", 250 },
		{ "1.5s", 1500 },
		{ "2d", 172800000 },
		{ "45", 45000 },
		{ "0", 0 },
		{ "0s", 0 },
		{ "1m30s", 90000 },
		{ "never", VRAM_DURATION_NEVER },
		{ "off", VRAM_DURATION_NEVER },
		{ "Never", VRAM_DURATION_NEVER },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t v = 7;
		if (vram_units_parse_duration_ms(ok[i].s, &v) != 0)
			fail_msg("\"%s\" was refused", ok[i].s);
		if (v != ok[i].ms)
			fail_msg("\"%s\" gave %llu", ok[i].s, (unsigned long long)v);
	}
	static const char *const bad[] = {
		"", "soon", "10 m", "1h30", "-5s", "10y", "s", "1hh", "ms", "10M",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t v = 7;
		if (vram_units_parse_duration_ms(bad[i], &v) >= 0)
			fail_msg("\"%s\" was accepted", bad[i]);
		assert_int_equal(v, 7);
	}
	uint64_t v = 7;
	assert_int_equal(vram_units_parse_duration_ms("999999999999999999d", &v), -ERANGE);
	assert_int_equal(vram_units_parse_duration_ms(NULL, &v), -EINVAL);
	assert_int_equal(v, 7);
}

/*
 * Durations past VRAM_DURATION_MAX_MS are out of range, exactly at the
 * bound and whatever the way to get there; before, 1e19 ms came back as
 * 9223372036854775808 (llround of a value past INT64_MAX).
 */
static void test_duration_range(void **state)
{
	static const char *const out[] = {
		"10000000000000000000ms", /* 1e19 ms, written out */
		"9300000000000000000ms",  /* past INT64_MAX */
		"18446744073709551615ms", /* UINT64_MAX: "never" must not be reachable by number */
		"18446744073709551616ms", /* past UINT64_MAX */
		"200000000000d",
		"36500d1ms",              /* one ms past the bound */
		"36501d",
		"3153600000.001",         /* seconds, with a fraction */
		"36499d24h1s",            /* the sum past the bound */
		"876001h",
		"99999999999999999999999999999999999999999999999999999999999999999999s", /* 70 digits */
	};
	for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++) {
		uint64_t v = 7;
		int r = vram_units_parse_duration_ms(out[i], &v);
		if (r != -ERANGE)
			fail_msg("\"%s\" gave %d (%llu), not -ERANGE", out[i], r, (unsigned long long)v);
		assert_int_equal(v, 7);
	}
	/* "1e19ms" is not a duration at all: no exponents */
	uint64_t v = 7;
	assert_int_equal(vram_units_parse_duration_ms("1e19ms", &v), -EINVAL);

	static const struct {
		const char *s;
		uint64_t ms;
	} ok[] = {
		{ "36500d", VRAM_DURATION_MAX_MS },
		{ "3153600000", VRAM_DURATION_MAX_MS }, /* seconds */
		{ "3153599999999ms", VRAM_DURATION_MAX_MS - 1 },
		{ "876000h", VRAM_DURATION_MAX_MS },
		{ "36499d24h", VRAM_DURATION_MAX_MS },
		{ "0.0005s", 1 },  /* rounded to the nearest ms */
		{ "0.0004s", 0 },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		v = 7;
		if (vram_units_parse_duration_ms(ok[i].s, &v) != 0)
			fail_msg("\"%s\" was refused", ok[i].s);
		if (v != ok[i].ms)
			fail_msg("\"%s\" gave %llu", ok[i].s, (unsigned long long)v);
	}
	/* the bound formats and parses back */
	char buf[32];
	vram_units_format_duration_ms(VRAM_DURATION_MAX_MS, buf, sizeof(buf));
	assert_int_equal(vram_units_parse_duration_ms(buf, &v), 0);
	assert_int_equal(v, VRAM_DURATION_MAX_MS);
}

/* Sizes are exact however large, and out of range past VRAM_BYTES_MAX. */
static void test_bytes_range(void **state)
{
	static const char *const out[] = {
		"17179869184GiB",        /* 2^64 */
		"18446744073709551616",  /* 2^64 bytes */
		"18447000TB",             /* past 2^64 in decimal units */
		"16777216TiB",           /* 2^64 */
		"18446744073709551615",  /* UINT64_MAX stands for "unknown" */
		"99999999999999999999999",
		"16777215.99999999999TiB", /* a fraction that rounds to 2^64 */
	};
	for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++) {
		uint64_t v = 7;
		int r = vram_units_parse_bytes(out[i], &v);
		if (r != -ERANGE && r != -EINVAL)
			fail_msg("\"%s\" was accepted as %llu", out[i], (unsigned long long)v);
		if (r != -ERANGE)
			fail_msg("\"%s\" gave %d, not -ERANGE", out[i], r);
		assert_int_equal(v, 7);
	}
	static const struct {
		const char *s;
		uint64_t bytes;
	} ok[] = {
		/* past INT64_MAX, which llround could not return; and exact, not via a double */
		{ "15000000000GiB", UINT64_C(15000000000) * VRAM_GiB },
		{ "9000000000000000001", UINT64_C(9000000000000000001) },
		{ "18446744073709551614", VRAM_BYTES_MAX },
		{ "16777215TiB", UINT64_C(16777215) * VRAM_TiB },
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		uint64_t v = 7;
		if (vram_units_parse_bytes(ok[i].s, &v) != 0)
			fail_msg("\"%s\" was refused", ok[i].s);
		if (v != ok[i].bytes)
			fail_msg("\"%s\" gave %llu", ok[i].s, (unsigned long long)v);
	}
}

static void test_gpu_lists(void **state)
{
	uint64_t sizes[8] = { 0 };
	assert_int_equal(vram_units_parse_gpu_list("2x80GiB", sizes, 8), 2);
	assert_int_equal(sizes[0], 80 * VRAM_GiB);
	assert_int_equal(sizes[1], 80 * VRAM_GiB);

	assert_int_equal(vram_units_parse_gpu_list("1x24GiB,1x80GiB", sizes, 8), 2);
	assert_int_equal(sizes[0], 24 * VRAM_GiB);
	assert_int_equal(sizes[1], 80 * VRAM_GiB);

	assert_int_equal(vram_units_parse_gpu_list("40GiB, 3x16GiB", sizes, 8), 4);
	assert_int_equal(sizes[0], 40 * VRAM_GiB);
	assert_int_equal(sizes[3], 16 * VRAM_GiB);

	memset(sizes, 0, sizeof(sizes));
	static const char *const bad[] = {
		"", "x80GiB", "0x80GiB", "2x", "2x0GiB", "2xlots", "2y80GiB", ",", "2x80GiB,",
		"-1x8GiB",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = vram_units_parse_gpu_list(bad[i], sizes, 8);
		/* A trailing comma is skipped by the tokenizer; it still lists GPUs. */
		if (strcmp(bad[i], "2x80GiB,") == 0) {
			assert_int_equal(r, 2);
			memset(sizes, 0, sizeof(sizes));
			continue;
		}
		if (r != -EINVAL)
			fail_msg("\"%s\" gave %d", bad[i], r);
	}
	assert_int_equal(sizes[0], 0);
	assert_int_equal(vram_units_parse_gpu_list("9x1GiB", sizes, 8), -E2BIG);
	assert_int_equal(sizes[0], 0);
	assert_int_equal(vram_units_parse_gpu_list(NULL, sizes, 8), -EINVAL);

	/* a size without a unit is a mistake, not bytes: refused, with the fix to suggest */
	static const char *const unitless[] = { "2x80", "80", "1x24GiB,1x80", "2x80 ", "2x1024B,4096" };
	for (size_t i = 0; i < sizeof(unitless) / sizeof(unitless[0]); i++)
		if (vram_units_parse_gpu_list(unitless[i], sizes, 8) != -EDOM)
			fail_msg("\"%s\" was not refused for its missing unit", unitless[i]);
	assert_int_equal(sizes[0], 0);
	assert_int_equal(vram_units_parse_gpu_list("2x1024B", sizes, 8), 2); /* B is a unit */
	char hint[64];
	assert_string_equal(vram_units_gpu_list_hint("2x80", hint, sizeof(hint)), "2x80GiB");
	assert_string_equal(vram_units_gpu_list_hint("1x24GiB,1x80", hint, sizeof(hint)),
			    "1x24GiB,1x80GiB");
	assert_string_equal(vram_units_gpu_list_hint("24,2x80", hint, sizeof(hint)), "24GiB,2x80GiB");
	assert_string_equal(vram_units_gpu_list_hint("2x80", hint, 5), "2x80"); /* cut, terminated */
}

static void test_format(void **state)
{
	char buf[32];
	assert_string_equal(vram_units_format_bytes(100, buf, sizeof(buf)), "100B");
	assert_string_equal(vram_units_format_bytes(512 * VRAM_MiB, buf, sizeof(buf)), "512MiB");
	assert_string_equal(vram_units_format_bytes(24 * VRAM_GiB, buf, sizeof(buf)), "24GiB");
	assert_string_equal(vram_units_format_bytes(47 * VRAM_GiB / 2, buf, sizeof(buf)), "23.5GiB");
	assert_string_equal(vram_units_format_bytes(3 * VRAM_TiB, buf, sizeof(buf)), "3TiB");
	assert_string_equal(vram_units_format_bytes(0, buf, sizeof(buf)), "0B");

	assert_string_equal(vram_units_format_duration_ms(90000, buf, sizeof(buf)), "1m30s");
	assert_string_equal(vram_units_format_duration_ms(600000, buf, sizeof(buf)), "10m");
	assert_string_equal(vram_units_format_duration_ms(5400000, buf, sizeof(buf)), "1h30m");
	assert_string_equal(vram_units_format_duration_ms(3600000, buf, sizeof(buf)), "1h");
	assert_string_equal(vram_units_format_duration_ms(250, buf, sizeof(buf)), "250ms");
	assert_string_equal(vram_units_format_duration_ms(1500, buf, sizeof(buf)), "1.5s");
	assert_string_equal(vram_units_format_duration_ms(0, buf, sizeof(buf)), "0s");
	assert_string_equal(vram_units_format_duration_ms(VRAM_DURATION_NEVER, buf, sizeof(buf)),
			    "never");

	struct vram_mem frac = { .is_fraction = true, .fraction = 0.8 };
	assert_string_equal(vram_units_format_mem(&frac, buf, sizeof(buf)), "0.8");
	struct vram_mem abs = { .bytes = 4 * VRAM_GiB };
	assert_string_equal(vram_units_format_mem(&abs, buf, sizeof(buf)), "4GiB");

	/* A small buffer is truncated but stays terminated. */
	char tiny[4];
	vram_units_format_duration_ms(5400000, tiny, sizeof(tiny));
	assert_int_equal(strlen(tiny), 3);
}

static void test_round_trip(void **state)
{
	/* What is formatted parses back to the same value. */
	const uint64_t ms[] = { 250, 1000, 90000, 5400000, 86400000 };
	for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
		char buf[32];
		uint64_t back = 0;
		vram_units_format_duration_ms(ms[i], buf, sizeof(buf));
		assert_int_equal(vram_units_parse_duration_ms(buf, &back), 0);
		assert_int_equal(back, ms[i]);
	}
	const uint64_t bytes[] = { 100, 512 * VRAM_MiB, 24 * VRAM_GiB, 3 * VRAM_GiB / 2 };
	for (size_t i = 0; i < sizeof(bytes) / sizeof(bytes[0]); i++) {
		char buf[32];
		uint64_t back = 0;
		vram_units_format_bytes(bytes[i], buf, sizeof(buf));
		assert_int_equal(vram_units_parse_bytes(buf, &back), 0);
		assert_int_equal(back, bytes[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bytes),
		cmocka_unit_test(test_mem),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_duration_range),
		cmocka_unit_test(test_bytes_range),
		cmocka_unit_test(test_gpu_lists),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
