/* SPDX-License-Identifier: MIT */
/*
 * The start limit: the limit-th failure within the window stops the
 * retries, the waits between retries do not count, failures spread wider
 * than the window never reach it, and a reset forgets them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/startlimit.h"

/* A command that exits at once, retried with the default doubling backoff. */
static void test_fast_failures_with_backoff(void **state)
{
	(void)state;
	struct vram_startlimit sl = { 0 };
	uint64_t now = 1000000, delay = 1000;
	for (int i = 0; i < 4; i++) {
		assert_false(vram_startlimit_fail(&sl, 5, 10000, now));
		vram_startlimit_waiting(&sl, delay);
		now += delay + 50; /* the wait, then 50 ms of trying */
		delay *= 2;
	}
	/* 15 s of wall clock, but only 200 ms of trying: the fifth failure hits */
	assert_true(vram_startlimit_fail(&sl, 5, 10000, now));
}

/* A workload that runs for a while before each crash never reaches the limit. */
static void test_slow_failures(void **state)
{
	(void)state;
	struct vram_startlimit sl = { 0 };
	uint64_t now = 0;
	for (int i = 0; i < 50; i++) {
		now += 3000; /* 3 s of running, then it dies: 5 take 12 s > 10 s */
		assert_false(vram_startlimit_fail(&sl, 5, 10000, now));
		vram_startlimit_waiting(&sl, 60000);
		now += 60000;
	}
	/* then 2 s each: the last five span 3+3+3+2 = 11 s, then 3+3+2+2 = 10 s */
	assert_false(vram_startlimit_fail(&sl, 5, 10000, now += 2000));
	assert_true(vram_startlimit_fail(&sl, 5, 10000, now += 2000));
}

static void test_reset_and_no_limit(void **state)
{
	(void)state;
	struct vram_startlimit sl = { 0 };
	for (int i = 0; i < 2; i++)
		assert_false(vram_startlimit_fail(&sl, 3, 10000, 100));
	vram_startlimit_reset(&sl);
	/* after the reset it takes three again */
	assert_false(vram_startlimit_fail(&sl, 3, 10000, 200));
	assert_false(vram_startlimit_fail(&sl, 3, 10000, 300));
	assert_true(vram_startlimit_fail(&sl, 3, 10000, 400));
	/* limit 0: never */
	struct vram_startlimit none = { 0 };
	for (int i = 0; i < 1000; i++)
		assert_false(vram_startlimit_fail(&none, 0, 10000, 5));
	/* limit 1: the first failure */
	struct vram_startlimit one = { 0 };
	assert_true(vram_startlimit_fail(&one, 1, 0, 5));
}

/* A limit over the ring's size is clamped; the ring wraps correctly. */
static void test_clamp_and_wrap(void **state)
{
	(void)state;
	struct vram_startlimit sl = { 0 };
	uint64_t now = 0;
	/* 250 failures 1 s apart: 100 of them span 99 s, more than a window of 98.999 s */
	for (int i = 0; i < 250; i++)
		assert_false(vram_startlimit_fail(&sl, 1000, 98999, now += 1000));
	/* a window of 99 s holds them: the 100th back (not the 1000th) is 99 s ago */
	assert_true(vram_startlimit_fail(&sl, 1000, 99000, now += 1000));
}

/* A wait cut short must not move the trying clock back (no wrap-around). */
static void test_clock_never_goes_back(void **state)
{
	(void)state;
	struct vram_startlimit sl = { 0 };
	assert_false(vram_startlimit_fail(&sl, 2, 1000, 100000));
	vram_startlimit_waiting(&sl, 60000); /* the retry came after 1 s, not 60 */
	assert_true(vram_startlimit_fail(&sl, 2, 1000, 101000));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fast_failures_with_backoff),
		cmocka_unit_test(test_slow_failures),
		cmocka_unit_test(test_reset_and_no_limit),
		cmocka_unit_test(test_clamp_and_wrap),
		cmocka_unit_test(test_clock_never_goes_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
