/* SPDX-License-Identifier: MIT */
/*
 * What a config reload may change: every daemon key but the log level and
 * the GPUs but the reserve need a restart of vramd; a workload's change is
 * "live" (applies to the running process) or "process" (needs a new one),
 * and the changed keys are named.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "config/diff.h"

#define BASE                                                                     \
	"daemon: { listen: 127.0.0.1:8600, log_level: info }\n"                  \
	"gpus: { backend: sim, reserve: 1GiB, sim: [ { name: g, memory: 24GiB } ] }\n"

#define WL                                                                       \
	"workloads:\n"                                                           \
	"  a:\n"                                                                 \
	"    cmd: [serve, --port, \"${PORT}\"]\n"                                \
	"    env: { A: x1, B: x2 }\n"                                                  \
	"    memory: 4GiB\n"                                                     \
	"    models: [m1]\n"                                                     \
	"    idle: { offload_after: 5m }\n"

static struct vram_config *parse(const char *yaml)
{
	struct vram_config *cfg = NULL;
	char *err = NULL;
	int r = vram_config_parse(yaml, strlen(yaml), "t.yaml", NULL, &cfg, &err);
	if (r != 0)
		fail_msg("unexpected error %d: %s", r, err ? err : "(none)");
	return cfg;
}

static void test_fixed_same_and_live_daemon_keys(void **state)
{
	struct vram_config *a = parse(BASE WL);
	struct vram_config *b = parse("daemon: { listen: 127.0.0.1:8600, log_level: debug }\n"
				      "gpus: { backend: sim, reserve: 2GiB, sim: [ { name: g, memory: 24GiB } ] }\n" WL);
	char keys[256] = "junk";
	assert_true(vram_diff_fixed(a, b, keys, sizeof(keys)));
	assert_string_equal(keys, "");
	vram_config_free(a);
	vram_config_free(b);
}

static void test_fixed_keys_named(void **state)
{
	struct vram_config *a = parse(BASE WL);
	struct vram_config *b = parse("daemon: { listen: 127.0.0.1:8601, port_range_start: 30000 }\n"
				      "gpus: { backend: sim, sim: [ { name: g, memory: 48GiB } ] }\n" WL);
	char keys[256];
	assert_false(vram_diff_fixed(a, b, keys, sizeof(keys)));
	assert_string_equal(keys, "daemon.listen, daemon.port_range_start, gpus.sim");
	/* truncated, still terminated */
	char small[10];
	assert_false(vram_diff_fixed(a, b, small, sizeof(small)));
	assert_true(strlen(small) < sizeof(small));
	vram_config_free(a);
	vram_config_free(b);
}

/* The kind of change from WL to the same with `line` replaced or added. */
static enum vram_diff_kind kind_of(const char *yaml_b, char *keys, size_t size)
{
	struct vram_config *a = parse(BASE WL);
	struct vram_config *b = parse(yaml_b);
	const struct vram_workload_config *wa = vram_config_find(a, "a");
	const struct vram_workload_config *wb = vram_config_find(b, "a");
	assert_non_null(wa);
	assert_non_null(wb);
	enum vram_diff_kind k = vram_diff_workload(wa, wb, keys, size);
	vram_config_free(a);
	vram_config_free(b);
	return k;
}

static void test_workload_same(void **state)
{
	char keys[256];
	/* moved in the file, env reordered: the same process */
	assert_int_equal(kind_of(BASE "\n\n" "workloads:\n"
				 "  a:\n"
				 "    env: { B: x2, A: x1 }\n"
				 "    cmd: [serve, --port, \"${PORT}\"]\n"
				 "    idle: { offload_after: 5m }\n"
				 "    memory: 4GiB\n"
				 "    models: [m1]\n",
				 keys, sizeof(keys)),
			 VRAM_DIFF_SAME);
	assert_string_equal(keys, "");
}

static void test_workload_live(void **state)
{
	char keys[256];
	assert_int_equal(kind_of(BASE WL "    priority: 5\n    max_concurrency: 4\n", keys, sizeof(keys)),
			 VRAM_DIFF_LIVE);
	assert_string_equal(keys, "priority, max_concurrency");
	assert_int_equal(kind_of(BASE "workloads:\n  a:\n    cmd: [serve, --port, \"${PORT}\"]\n"
				 "    env: { A: x1, B: x2 }\n    memory: 4GiB\n    models: [m1, m2]\n"
				 "    idle: { offload_after: 10m }\n",
				 keys, sizeof(keys)),
			 VRAM_DIFF_LIVE);
	assert_string_equal(keys, "idle.offload_after, models");
}

static void test_access_and_timeouts(void **state)
{
	char keys[256];
	assert_int_equal(kind_of(BASE WL "    first_byte_timeout: 5s\n    stream_timeout: 1m\n", keys,
				 sizeof(keys)),
			 VRAM_DIFF_LIVE);
	assert_string_equal(keys, "first_byte_timeout, stream_timeout");
	struct vram_config *a = parse(BASE WL);
	struct vram_config *b = parse("daemon: { listen: 127.0.0.1:8600, allowed_hosts: [gpu1], "
				      "cors: { origins: ['http://ui:3000'] }, run_as: root }\n"
				      "gpus: { backend: sim, sim: [ { name: g, memory: 24GiB } ] }\n" WL);
	assert_false(vram_diff_fixed(a, b, keys, sizeof(keys)));
	assert_string_equal(keys, "daemon.allowed_hosts, daemon.cors.origins, daemon.run_as");
	vram_config_free(a);
	vram_config_free(b);
}

static void test_workload_process(void **state)
{
	char keys[256];
	assert_int_equal(kind_of(BASE "workloads:\n  a:\n    cmd: [serve2, --port, \"${PORT}\"]\n"
				 "    env: { A: x1, B: x3 }\n    memory: 4GiB\n    models: [m1]\n"
				 "    idle: { offload_after: 5m }\n    priority: 1\n",
				 keys, sizeof(keys)),
			 VRAM_DIFF_PROCESS);
	/* a live change next to a process one: still a new process, every key named */
	assert_string_equal(keys, "cmd, env, priority");
	assert_int_equal(kind_of(BASE WL "    replicas: 2\n", keys, sizeof(keys)), VRAM_DIFF_PROCESS);
	assert_string_equal(keys, "replicas");
	assert_int_equal(kind_of(BASE "workloads:\n  a:\n    cmd: [serve, --port, \"${PORT}\"]\n"
				 "    env: { A: x1, B: x2 }\n    memory: 0.5\n    models: [m1]\n"
				 "    idle: { offload_after: 5m }\n",
				 keys, sizeof(keys)),
			 VRAM_DIFF_PROCESS);
	assert_string_equal(keys, "memory");
	assert_string_equal(vram_diff_kind_name(VRAM_DIFF_PROCESS), "process");
}

/* Each health key applies to the running process: a reload changes the checks, not the process. */
static void test_health_keys_are_live(void **state)
{
	static const char *const lines[] = {
		"    health: { interval: 2s }\n",
		"    health: { failures: 5 }\n",
		"    health: { timeout: 1s }\n",
		"    health: { port_owner: any }\n",
		"    health: { interval: never }\n",
		"    health: /ready\n",
	};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		char yaml[512], keys[256];
		snprintf(yaml, sizeof(yaml), "%s%s", BASE WL, lines[i]);
		assert_int_equal(kind_of(yaml, keys, sizeof(keys)), VRAM_DIFF_LIVE);
		assert_string_equal(keys, "health");
	}
	/* the defaults written out: no change */
	char keys[256];
	assert_int_equal(kind_of(BASE WL "    health: { interval: 10s, failures: 3, port_owner: workload }\n",
				 keys, sizeof(keys)),
			 VRAM_DIFF_SAME);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixed_same_and_live_daemon_keys),
		cmocka_unit_test(test_fixed_keys_named),
		cmocka_unit_test(test_workload_same),
		cmocka_unit_test(test_workload_live),
		cmocka_unit_test(test_workload_process),
		cmocka_unit_test(test_access_and_timeouts),
		cmocka_unit_test(test_health_keys_are_live),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
