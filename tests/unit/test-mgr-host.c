/* SPDX-License-Identifier: MIT */
/*
 * The daemon's host ledger (mgr_host.c), as vram_host_make_room gets it:
 * one entry per live workload with its config's priority and what it holds,
 * the host's memory from $VRAM_MEMINFO, the config's budget; a workload an
 * action waits on is busy; with no disk tier in this tree an offloaded
 * workload in the way is released, never parked. And when meminfo cannot
 * be read, the sizes are not known rather than 0.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/hostplan.h"
#include "daemon/manager_int.h"
#include "sim-manager.h"

#define GiB VRAM_GiB

static char meminfo[64];

static int setup(void **state)
{
	(void)state;
	snprintf(meminfo, sizeof(meminfo), "/tmp/test-mgr-host-XXXXXX");
	int fd = mkstemp(meminfo);
	if (fd < 0)
		return -1;
	/* 64 GiB, 50 GiB of it available */
	static const char text[] = "MemTotal: 67108864 kB\nMemAvailable: 52428800 kB\n";
	if (write(fd, text, sizeof(text) - 1) != (ssize_t)(sizeof(text) - 1))
		return -1;
	close(fd);
	setenv("VRAM_MEMINFO", meminfo, 1);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(meminfo);
	unsetenv("VRAM_MEMINFO");
	return 0;
}

static const char workloads[] = "host: { reserve: 8GiB, limit: 40GiB }\n"
				 "workloads:\n"
				 "  a: { cmd: [/bin/true], memory: 1GiB, priority: 2 }\n"
				 "  b: { cmd: [/bin/true], memory: 1GiB, priority: 1 }\n"
				 "  c: { cmd: [/bin/true], memory: 1GiB, priority: 5 }\n";

static void test_ledger_of_the_manager(void **state)
{
	(void)state;
	struct sim_manager sm;
	sim_manager_new(&sm, workloads, false);
	struct vram_manager *m = sm.m;
	struct vram_host_ledger l;
	assert_int_equal(mgr_host_ledger(m, &l), 0);
	assert_true(l.total == 64 * GiB && l.available == 50 * GiB);
	assert_true(l.reserve == 8 * GiB && l.budget == 40 * GiB);
	/* the park directory's file system (its parent until the first park makes it) */
	assert_true(l.park_usable && l.park_free > 0 && l.park_free != VRAM_HOST_UNKNOWN);
	assert_int_equal(l.n_entries, 3);
	assert_string_equal(l.entries[1].name, "b");
	assert_int_equal(l.entries[1].priority, 1);
	assert_int_equal(l.entries[0].state, VRAM_WL_STOPPED);
	assert_true(l.entries[0].held == 0 && !l.entries[0].busy);
	/* the sim engine parks, and keeps no buffers */
	assert_true(l.entries[0].can_park);
	assert_false(l.entries[0].can_drop_kept);
	mgr_host_ledger_done(&l);

	/* b and c offloaded (as the engine leaves them); a asks for 20 GiB */
	struct vram_workload *a = m->wptrs[0], *b = m->wptrs[1], *c = m->wptrs[2];
	b->state = c->state = VRAM_WL_OFFLOADED;
	b->offloaded_bytes = 15 * GiB;
	c->offloaded_bytes = 15 * GiB;
	assert_int_equal(mgr_host_ledger(m, &l), 0);
	assert_true(vram_host_held(&l) == 30 * GiB);
	struct vram_host_room r;
	/* 10 over the budget: b (priority 1, below a's 2) goes; c (5) stays; the sim engine parks */
	assert_int_equal(vram_host_make_room(&l, a, 20 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_ptr_equal(r.steps[0].w, b);
	assert_int_equal(r.steps[0].action, VRAM_HOST_PARK);
	assert_true(r.steps[0].bytes == 15 * GiB);
	mgr_host_ledger_done(&l);

	/* without a disk tier (its file system full), b is released instead */
	assert_int_equal(mgr_host_ledger(m, &l), 0);
	l.park_free = 0;
	assert_int_equal(vram_host_make_room(&l, a, 20 * GiB, &r), 0);
	assert_int_equal(r.n_steps, 1);
	assert_ptr_equal(r.steps[0].w, b);
	assert_int_equal(r.steps[0].action, VRAM_HOST_RELEASE);
	mgr_host_ledger_done(&l);

	/* b waits for room (an action on it): out of reach, so the ask is refused with the numbers */
	b->awaiting_room = true;
	assert_int_equal(mgr_host_ledger(m, &l), 0);
	assert_true(l.entries[1].busy);
	assert_int_equal(vram_host_make_room(&l, a, 20 * GiB, &r), -ENOSPC);
	static const char want[] =
		"needs 20GiB of host memory for a's offload: budget 40GiB, 30GiB held by "
		"2 offloaded workloads, 0B could be freed; 50GiB available, of which 8GiB "
		"stays in reserve; not touched: b (busy, 15GiB), c (priority 5, above 2, "
		"15GiB); ";
	/* then the disk tier's free space, which is this machine's */
	assert_int_equal(strncmp(r.message, want, strlen(want)), 0);
	assert_non_null(strstr(r.message, "free on the disk tier"));
	mgr_host_ledger_done(&l);

	/* status's host object is the ledger's */
	json_t *host = vram_manager_host_json(m);
	assert_non_null(host);
	assert_true(json_integer_value(json_object_get(host, "parked")) == (json_int_t)(30 * GiB));
	assert_true(json_integer_value(json_object_get(host, "budget")) == (json_int_t)(40 * GiB));
	json_decref(host);

	b->awaiting_room = false;
	b->state = c->state = VRAM_WL_STOPPED;
	b->offloaded_bytes = c->offloaded_bytes = 0;
	sim_manager_free(&sm);
}

static void test_meminfo_not_readable(void **state)
{
	(void)state;
	setenv("VRAM_MEMINFO", "/nonexistent/meminfo", 1);
	struct sim_manager sm;
	sim_manager_new(&sm, "workloads:\n  a: { cmd: [/bin/true], memory: 1GiB }\n", false);
	struct vram_host_ledger l;
	assert_int_equal(mgr_host_ledger(sm.m, &l), 0);
	assert_true(l.total == 0 && l.available == VRAM_HOST_UNKNOWN && l.budget == VRAM_HOST_UNKNOWN);
	mgr_host_ledger_done(&l);
	json_t *host = vram_manager_host_json(sm.m);
	assert_true(json_is_null(json_object_get(host, "total")));
	assert_true(json_is_null(json_object_get(host, "available")));
	assert_true(json_is_null(json_object_get(host, "budget")));
	assert_true(json_is_null(json_object_get(host, "limit")));
	assert_true(json_integer_value(json_object_get(host, "reserve")) == (json_int_t)(4 * GiB));
	json_decref(host);
	sim_manager_free(&sm);
	setenv("VRAM_MEMINFO", meminfo, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ledger_of_the_manager),
		cmocka_unit_test(test_meminfo_not_readable),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
