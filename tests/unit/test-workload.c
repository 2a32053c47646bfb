/* SPDX-License-Identifier: MIT */
/*
 * Lifecycle table tests: the paths a user sees (lazy start, idle offload and
 * restore, release, park to disk and back), crashes in every running state
 * including during start, offload and park, every transition the table
 * must refuse, and the whole table against a copy written out here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "core/workload.h"

/* Applies events in order from `from` and returns the final state (or -EINVAL). */
static int walk(enum vram_wl_state from, const enum vram_wl_event *evs, size_t n)
{
	int s = (int)from;
	for (size_t i = 0; i < n && s >= 0; i++)
		s = vram_wl_transition((enum vram_wl_state)s, evs[i]);
	return s;
}

/* Applies evs in order from stopped; after each, the state must be expect[i]. */
static void expect_path(const enum vram_wl_event *evs, const enum vram_wl_state *expect, size_t n)
{
	int s = VRAM_WL_STOPPED;
	for (size_t i = 0; i < n; i++) {
		s = vram_wl_transition((enum vram_wl_state)s, evs[i]);
		assert_int_equal(s, expect[i]);
	}
}

static void test_happy_path(void **state)
{
	const enum vram_wl_event evs[] = {
		VRAM_WL_EV_START, VRAM_WL_EV_HEALTHY, VRAM_WL_EV_OFFLOAD, VRAM_WL_EV_OFFLOADED,
		VRAM_WL_EV_RESTORE, VRAM_WL_EV_RESTORED, VRAM_WL_EV_STOP, VRAM_WL_EV_EXITED,
	};
	const enum vram_wl_state expect[] = {
		VRAM_WL_STARTING, VRAM_WL_READY, VRAM_WL_OFFLOADING, VRAM_WL_OFFLOADED,
		VRAM_WL_RESTORING, VRAM_WL_READY, VRAM_WL_STOPPING, VRAM_WL_STOPPED,
	};
	expect_path(evs, expect, sizeof(evs) / sizeof(evs[0]));
}

static void test_crash_during_start(void **state)
{
	assert_int_equal(vram_wl_transition(VRAM_WL_STARTING, VRAM_WL_EV_CRASH), VRAM_WL_FAILED);
	assert_int_equal(vram_wl_transition(VRAM_WL_STARTING, VRAM_WL_EV_START_FAILED),
			 VRAM_WL_FAILED);
	/* and the restart after backoff begins from failed */
	assert_int_equal(vram_wl_transition(VRAM_WL_FAILED, VRAM_WL_EV_START), VRAM_WL_STARTING);
}

static void test_crash_during_offload(void **state)
{
	const enum vram_wl_event evs[] = {VRAM_WL_EV_START, VRAM_WL_EV_HEALTHY, VRAM_WL_EV_OFFLOAD,
					  VRAM_WL_EV_CRASH};
	assert_int_equal(walk(VRAM_WL_STOPPED, evs, 4), VRAM_WL_FAILED);
	/* an offload the engine refused leaves it usable */
	assert_int_equal(vram_wl_transition(VRAM_WL_OFFLOADING, VRAM_WL_EV_OFFLOAD_FAILED),
			 VRAM_WL_READY);
}

static void test_crash_in_other_states(void **state)
{
	assert_int_equal(vram_wl_transition(VRAM_WL_READY, VRAM_WL_EV_CRASH), VRAM_WL_FAILED);
	assert_int_equal(vram_wl_transition(VRAM_WL_OFFLOADED, VRAM_WL_EV_CRASH), VRAM_WL_FAILED);
	assert_int_equal(vram_wl_transition(VRAM_WL_RESTORING, VRAM_WL_EV_CRASH), VRAM_WL_FAILED);
	/* dying while being stopped is what was asked for */
	assert_int_equal(vram_wl_transition(VRAM_WL_STOPPING, VRAM_WL_EV_CRASH), VRAM_WL_STOPPED);
	/* nothing runs in stopped: a crash there is a bug */
	assert_int_equal(vram_wl_transition(VRAM_WL_STOPPED, VRAM_WL_EV_CRASH), -EINVAL);
}

static void test_restore_outcomes(void **state)
{
	assert_int_equal(vram_wl_transition(VRAM_WL_RESTORING, VRAM_WL_EV_RESTORE_FAILED),
			 VRAM_WL_FAILED);
	assert_int_equal(vram_wl_transition(VRAM_WL_RESTORING, VRAM_WL_EV_RESTORE_ABORTED),
			 VRAM_WL_OFFLOADED);
}

/* offloaded -park-> parking -parked-> parked -restore-> restoring -restored-> ready */
static void test_park_round_trip(void **state)
{
	const enum vram_wl_event evs[] = {
		VRAM_WL_EV_START, VRAM_WL_EV_HEALTHY, VRAM_WL_EV_OFFLOAD, VRAM_WL_EV_OFFLOADED,
		VRAM_WL_EV_PARK, VRAM_WL_EV_PARKED, VRAM_WL_EV_RESTORE, VRAM_WL_EV_RESTORED,
	};
	const enum vram_wl_state expect[] = {
		VRAM_WL_STARTING, VRAM_WL_READY, VRAM_WL_OFFLOADING, VRAM_WL_OFFLOADED,
		VRAM_WL_PARKING, VRAM_WL_PARKED, VRAM_WL_RESTORING, VRAM_WL_READY,
	};
	expect_path(evs, expect, sizeof(evs) / sizeof(evs[0]));
	/* only an offloaded workload parks: a ready one is offloaded first by the manager */
	assert_int_equal(vram_wl_transition(VRAM_WL_READY, VRAM_WL_EV_PARK), -EINVAL);
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKED, VRAM_WL_EV_PARK), -EINVAL);
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKED, VRAM_WL_EV_OFFLOAD), -EINVAL);
}

static void test_park_outcomes(void **state)
{
	/* a full disk: the model stays in host RAM */
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKING, VRAM_WL_EV_PARK_FAILED),
			 VRAM_WL_OFFLOADED);
	/* a restore from disk that fails (a checksum mismatch) fails it: it restarts cold */
	const enum vram_wl_event bad[] = {VRAM_WL_EV_RESTORE, VRAM_WL_EV_RESTORE_FAILED,
					  VRAM_WL_EV_START};
	assert_int_equal(walk(VRAM_WL_PARKED, bad, 3), VRAM_WL_STARTING);
	/* a restore from disk that did not begin (no room) leaves it parked, not offloaded */
	assert_int_equal(vram_wl_transition(VRAM_WL_RESTORING, VRAM_WL_EV_UNPARK_ABORTED),
			 VRAM_WL_PARKED);
	assert_int_equal(vram_wl_transition(VRAM_WL_RESTORING, VRAM_WL_EV_RESTORE_ABORTED),
			 VRAM_WL_OFFLOADED);
	/* crashes, a stop, and a process that ends cleanly while parked */
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKING, VRAM_WL_EV_CRASH), VRAM_WL_FAILED);
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKED, VRAM_WL_EV_CRASH), VRAM_WL_FAILED);
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKED, VRAM_WL_EV_STOP), VRAM_WL_STOPPING);
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKING, VRAM_WL_EV_STOP), VRAM_WL_STOPPING);
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKED, VRAM_WL_EV_EXITED), VRAM_WL_STOPPED);
	assert_int_equal(vram_wl_transition(VRAM_WL_PARKING, VRAM_WL_EV_EXITED), -EINVAL);
	/* a new vramd takes a parked workload back parked */
	assert_int_equal(vram_wl_transition(VRAM_WL_STOPPED, VRAM_WL_EV_ADOPTED_PARKED),
			 VRAM_WL_PARKED);
	assert_int_equal(vram_wl_transition(VRAM_WL_READY, VRAM_WL_EV_ADOPTED_PARKED), -EINVAL);
}

static void test_stop_allowed_and_refused(void **state)
{
	const enum vram_wl_state ok[] = {VRAM_WL_STARTING, VRAM_WL_READY, VRAM_WL_OFFLOADING,
					  VRAM_WL_OFFLOADED, VRAM_WL_RESTORING, VRAM_WL_FAILED,
					  VRAM_WL_PARKING, VRAM_WL_PARKED};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_int_equal(vram_wl_transition(ok[i], VRAM_WL_EV_STOP), VRAM_WL_STOPPING);
	assert_int_equal(vram_wl_transition(VRAM_WL_STOPPED, VRAM_WL_EV_STOP), -EINVAL);
	assert_int_equal(vram_wl_transition(VRAM_WL_STOPPING, VRAM_WL_EV_STOP), -EINVAL);
}

static void test_refused(void **state)
{
	/*
	 * offload only from ready, restore only from offloaded or parked, park only
	 * from offloaded, start only from stopped/failed
	 */
	for (int s = 0; s < VRAM_WL_N_STATES; s++) {
		int off = vram_wl_transition((enum vram_wl_state)s, VRAM_WL_EV_OFFLOAD);
		int res = vram_wl_transition((enum vram_wl_state)s, VRAM_WL_EV_RESTORE);
		int park = vram_wl_transition((enum vram_wl_state)s, VRAM_WL_EV_PARK);
		int start = vram_wl_transition((enum vram_wl_state)s, VRAM_WL_EV_START);
		assert_int_equal(off, s == VRAM_WL_READY ? VRAM_WL_OFFLOADING : -EINVAL);
		assert_int_equal(res, s == VRAM_WL_OFFLOADED || s == VRAM_WL_PARKED ? VRAM_WL_RESTORING
										      : -EINVAL);
		assert_int_equal(park, s == VRAM_WL_OFFLOADED ? VRAM_WL_PARKING : -EINVAL);
		assert_int_equal(start, s == VRAM_WL_STOPPED || s == VRAM_WL_FAILED
						? VRAM_WL_STARTING : -EINVAL);
		assert_int_equal(vram_wl_transition((enum vram_wl_state)s, VRAM_WL_EV_HEALTHY),
				 s == VRAM_WL_STARTING ? VRAM_WL_READY : -EINVAL);
	}
	assert_int_equal(vram_wl_transition(VRAM_WL_N_STATES, VRAM_WL_EV_START), -EINVAL);
	assert_int_equal(vram_wl_transition(VRAM_WL_READY, VRAM_WL_N_EVENTS), -EINVAL);
}

/*
 * The table, written out here independently of core/workload.c: the
 * module's table holds exactly these rows, each (state, event) pair once,
 * and vram_wl_transition() accepts every listed transition and no other
 * pair of all states and events. A rule changed in one place only fails.
 */
static void test_table_exact(void **state)
{
	static const struct vram_wl_transition expect[] = {
		{VRAM_WL_STOPPED, VRAM_WL_EV_START, VRAM_WL_STARTING},
		{VRAM_WL_FAILED, VRAM_WL_EV_START, VRAM_WL_STARTING},
		{VRAM_WL_STARTING, VRAM_WL_EV_HEALTHY, VRAM_WL_READY},
		{VRAM_WL_STARTING, VRAM_WL_EV_START_FAILED, VRAM_WL_FAILED},
		{VRAM_WL_READY, VRAM_WL_EV_OFFLOAD, VRAM_WL_OFFLOADING},
		{VRAM_WL_OFFLOADING, VRAM_WL_EV_OFFLOADED, VRAM_WL_OFFLOADED},
		{VRAM_WL_OFFLOADING, VRAM_WL_EV_OFFLOAD_FAILED, VRAM_WL_READY},
		{VRAM_WL_OFFLOADED, VRAM_WL_EV_RESTORE, VRAM_WL_RESTORING},
		{VRAM_WL_RESTORING, VRAM_WL_EV_RESTORED, VRAM_WL_READY},
		{VRAM_WL_RESTORING, VRAM_WL_EV_RESTORE_FAILED, VRAM_WL_FAILED},
		{VRAM_WL_RESTORING, VRAM_WL_EV_RESTORE_ABORTED, VRAM_WL_OFFLOADED},
		{VRAM_WL_OFFLOADED, VRAM_WL_EV_PARK, VRAM_WL_PARKING},
		{VRAM_WL_PARKING, VRAM_WL_EV_PARKED, VRAM_WL_PARKED},
		{VRAM_WL_PARKING, VRAM_WL_EV_PARK_FAILED, VRAM_WL_OFFLOADED},
		{VRAM_WL_PARKED, VRAM_WL_EV_RESTORE, VRAM_WL_RESTORING},
		{VRAM_WL_RESTORING, VRAM_WL_EV_UNPARK_ABORTED, VRAM_WL_PARKED},
		{VRAM_WL_STARTING, VRAM_WL_EV_STOP, VRAM_WL_STOPPING},
		{VRAM_WL_READY, VRAM_WL_EV_STOP, VRAM_WL_STOPPING},
		{VRAM_WL_OFFLOADING, VRAM_WL_EV_STOP, VRAM_WL_STOPPING},
		{VRAM_WL_OFFLOADED, VRAM_WL_EV_STOP, VRAM_WL_STOPPING},
		{VRAM_WL_RESTORING, VRAM_WL_EV_STOP, VRAM_WL_STOPPING},
		{VRAM_WL_FAILED, VRAM_WL_EV_STOP, VRAM_WL_STOPPING},
		{VRAM_WL_PARKING, VRAM_WL_EV_STOP, VRAM_WL_STOPPING},
		{VRAM_WL_PARKED, VRAM_WL_EV_STOP, VRAM_WL_STOPPING},
		{VRAM_WL_STOPPING, VRAM_WL_EV_EXITED, VRAM_WL_STOPPED},
		{VRAM_WL_READY, VRAM_WL_EV_EXITED, VRAM_WL_STOPPED},
		{VRAM_WL_OFFLOADED, VRAM_WL_EV_EXITED, VRAM_WL_STOPPED},
		{VRAM_WL_PARKED, VRAM_WL_EV_EXITED, VRAM_WL_STOPPED},
		{VRAM_WL_STARTING, VRAM_WL_EV_CRASH, VRAM_WL_FAILED},
		{VRAM_WL_READY, VRAM_WL_EV_CRASH, VRAM_WL_FAILED},
		{VRAM_WL_OFFLOADING, VRAM_WL_EV_CRASH, VRAM_WL_FAILED},
		{VRAM_WL_OFFLOADED, VRAM_WL_EV_CRASH, VRAM_WL_FAILED},
		{VRAM_WL_RESTORING, VRAM_WL_EV_CRASH, VRAM_WL_FAILED},
		{VRAM_WL_PARKING, VRAM_WL_EV_CRASH, VRAM_WL_FAILED},
		{VRAM_WL_PARKED, VRAM_WL_EV_CRASH, VRAM_WL_FAILED},
		{VRAM_WL_FAILED, VRAM_WL_EV_CRASH, VRAM_WL_FAILED},
		{VRAM_WL_STOPPING, VRAM_WL_EV_CRASH, VRAM_WL_STOPPED},
		{VRAM_WL_STOPPED, VRAM_WL_EV_ADOPTED_READY, VRAM_WL_READY},
		{VRAM_WL_STOPPED, VRAM_WL_EV_ADOPTED_OFFLOADED, VRAM_WL_OFFLOADED},
		{VRAM_WL_STOPPED, VRAM_WL_EV_ADOPTED_PARKED, VRAM_WL_PARKED},
	};
	const size_t n_expect = sizeof(expect) / sizeof(expect[0]);

	/* the module's rows: the same set, no pair twice */
	assert_int_equal(vram_wl_n_transitions, n_expect);
	for (size_t i = 0; i < vram_wl_n_transitions; i++) {
		const struct vram_wl_transition *t = &vram_wl_transitions[i];
		size_t found = 0;
		for (size_t j = 0; j < n_expect; j++)
			found += expect[j].from == t->from && expect[j].event == t->event &&
				 expect[j].to == t->to;
		if (found != 1)
			fail_msg("row %zu (%s --%s--> %s) is not in the expected table", i,
				 vram_wl_state_name(t->from), vram_wl_event_name(t->event),
				 vram_wl_state_name(t->to));
		for (size_t j = 0; j < i; j++)
			if (vram_wl_transitions[j].from == t->from && vram_wl_transitions[j].event == t->event)
				fail_msg("%s on %s is listed twice", vram_wl_state_name(t->from),
					 vram_wl_event_name(t->event));
	}

	/* every pair of every state and event: the listed target, or refused */
	for (int s = 0; s < VRAM_WL_N_STATES; s++) {
		for (int e = 0; e < VRAM_WL_N_EVENTS; e++) {
			int want = -EINVAL;
			for (size_t j = 0; j < n_expect; j++)
				if ((int)expect[j].from == s && (int)expect[j].event == e)
					want = (int)expect[j].to;
			int got = vram_wl_transition((enum vram_wl_state)s, (enum vram_wl_event)e);
			if (got != want)
				fail_msg("%s on %s: got %d, expected %d", vram_wl_state_name((enum vram_wl_state)s),
					 vram_wl_event_name((enum vram_wl_event)e), got, want);
		}
	}
}

static void test_names(void **state)
{
	for (int s = 0; s < VRAM_WL_N_STATES; s++) {
		enum vram_wl_state back;
		const char *name = vram_wl_state_name((enum vram_wl_state)s);
		assert_string_not_equal(name, "?");
		assert_int_equal(vram_wl_state_parse(name, &back), 0);
		assert_int_equal(back, s);
	}
	assert_string_equal(vram_wl_state_name(VRAM_WL_OFFLOADED), "offloaded");
	assert_string_equal(vram_wl_state_name(VRAM_WL_PARKING), "parking");
	assert_string_equal(vram_wl_state_name(VRAM_WL_PARKED), "parked");
	assert_string_equal(vram_wl_state_name(VRAM_WL_N_STATES), "?");
	enum vram_wl_state untouched = VRAM_WL_READY;
	assert_int_equal(vram_wl_state_parse("on-disk", &untouched), -EINVAL);
	assert_int_equal(untouched, VRAM_WL_READY);
	for (int e = 0; e < VRAM_WL_N_EVENTS; e++)
		assert_string_not_equal(vram_wl_event_name((enum vram_wl_event)e), "?");
	assert_true(vram_wl_state_settled(VRAM_WL_FAILED));
	assert_false(vram_wl_state_settled(VRAM_WL_OFFLOADING));
	assert_true(vram_wl_state_on_gpu(VRAM_WL_READY));
	assert_false(vram_wl_state_on_gpu(VRAM_WL_OFFLOADED));
	/* parked is where a park ends (its waiters resolve); parking is under way */
	assert_true(vram_wl_state_settled(VRAM_WL_PARKED));
	assert_false(vram_wl_state_settled(VRAM_WL_PARKING));
	assert_false(vram_wl_state_on_gpu(VRAM_WL_PARKED));
	assert_false(vram_wl_state_on_gpu(VRAM_WL_PARKING));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_happy_path),
		cmocka_unit_test(test_crash_during_start),
		cmocka_unit_test(test_crash_during_offload),
		cmocka_unit_test(test_crash_in_other_states),
		cmocka_unit_test(test_restore_outcomes),
		cmocka_unit_test(test_park_round_trip),
		cmocka_unit_test(test_park_outcomes),
		cmocka_unit_test(test_stop_allowed_and_refused),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_table_exact),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
