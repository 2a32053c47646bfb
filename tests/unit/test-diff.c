/* SPDX-License-Identifier: MIT */
/*
 * What a config reload may change: every daemon key but the log level and
 * the GPUs but the reserve need a restart of vramd; a workload's change is
 * "live" (applies to the running process) or "process" (needs a new one),
 * and the changed keys are named. Every key of the loader's tables has a
 * class and a comparison, and each key changed alone is reported with it.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/*
 * Every key of the loader's tables declares its reload class and how to
 * tell a change: a key added without them fails here, before a reload can
 * report "unchanged" for it and never apply it.
 */
static void test_every_key_declared(void **state)
{
	struct vram_config_key k;
	size_t n = 0;
	for (size_t i = 0; vram_config_workload_key(i, &k); i++, n++) {
		if (k.reload != VRAM_RELOAD_LIVE && k.reload != VRAM_RELOAD_PROCESS)
			fail_msg("workload key %s: no reload class (live or process)", k.name);
		if (!k.same_workload || k.same_config)
			fail_msg("workload key %s: no comparison of two workloads", k.name);
		assert_true(k.name[0] && k.reported[0]);
	}
	assert_true(n >= 25);
	n = 0;
	for (size_t i = 0; vram_config_daemon_key(i, &k); i++, n++) {
		if (k.reload != VRAM_RELOAD_LIVE && k.reload != VRAM_RELOAD_DAEMON)
			fail_msg("daemon key %s: no reload class (live or daemon)", k.name);
		if (!k.same_config || k.same_workload)
			fail_msg("daemon key %s: no comparison of two configs", k.name);
		assert_true(strncmp(k.name, "daemon.", 7) == 0 || strncmp(k.name, "gpus.", 5) == 0 ||
			    strncmp(k.name, "host.", 5) == 0);
	}
	assert_true(n >= 21);
}

/* A change of one workload key: workload a as it is before and after. */
struct wl_sample {
	const char *key;
	const char *before, *after; /* a's body, one key per line, 4 spaces in */
};

static const struct wl_sample wl_samples[] = {
	{ "cmd", "", "    cmd: [serve2]\n" },
	{ "container.image", "    container: { image: i1 }\n", "    container: { image: i2 }\n" },
	{ "container.args", "    container: { image: i }\n", "    container: { image: i, args: [x] }\n" },
	{ "container.runtime", "    container: { image: i }\n", "    container: { image: i, runtime: docker }\n" },
	{ "container.volumes", "    container: { image: i }\n",
	  "    container: { image: i, volumes: [\"/d:/d\"] }\n" },
	{ "container.env", "    container: { image: i }\n", "    container: { image: i, env: { A: x } }\n" },
	{ "env", "", "    env: { A: x }\n" },
	{ "cwd", "", "    cwd: /tmp\n" },
	{ "gpus", "", "    gpus: 2\n" },
	{ "memory", "    memory: 4GiB\n", "    memory: 5GiB\n" },
	{ "replicas", "", "    replicas: 2\n" },
	{ "avoid", "", "    avoid: [b]\n" },
	{ "placement", "", "    placement: spread\n" },
	{ "fallback", "", "    fallback: share\n" },
	{ "start", "", "    start: eager\n" },
	{ "health.path", "", "    health: { path: /ready }\n" },
	{ "health.tcp", "    health: /ready\n", "    health: { tcp: true }\n" },
	{ "health.interval", "", "    health: { interval: 2s }\n" },
	{ "health.timeout", "", "    health: { timeout: 1s }\n" },
	{ "health.start_timeout", "", "    health: { start_timeout: 10s }\n" },
	{ "health.failures", "", "    health: { failures: 5 }\n" },
	{ "health.port_owner", "", "    health: { port_owner: any }\n" },
	{ "port", "", "    port: 9000\n" },
	{ "idle.offload_after", "", "    idle: { offload_after: 1m }\n" },
	{ "idle.release_after", "", "    idle: { release_after: 2h }\n" },
	{ "idle.park_after", "", "    idle: { park_after: 3h }\n" },
	{ "priority", "", "    priority: 5\n" },
	{ "offload", "", "    offload: restart\n" },
	{ "restart.policy", "", "    restart: never\n" },
	{ "restart.backoff_max", "", "    restart: { backoff_max: 5m }\n" },
	{ "restart.limit", "", "    restart: { limit: 3 }\n" },
	{ "restart.window", "", "    restart: { window: 1m }\n" },
	{ "stop_grace", "", "    stop_grace: 30s\n" },
	{ "models", "", "    models: [m1]\n" },
	/* an alias's upstream alone changes what goes up */
	{ "models", "    models: [{name: m1, upstream: u1}]\n",
	  "    models: [{name: m1, upstream: u2}]\n" },
	{ "share", "", "    share: mps\n" },
	{ "compute", "    share: mps\n", "    share: mps\n    compute: 50%\n" },
	{ "max_concurrency", "", "    max_concurrency: 4\n" },
	{ "queue_max", "", "    queue_max: 10\n" },
	{ "queue_timeout", "", "    queue_timeout: 5s\n" },
	{ "first_byte_timeout", "", "    first_byte_timeout: 5s\n" },
	{ "stream_timeout", "", "    stream_timeout: 1m\n" },
};

/* Parses BASE with workloads b and a (a's body after cmd: [serve] unless it has a cmd or a container). */
static struct vram_config *parse_with(const char *body)
{
	char yaml[1024];
	snprintf(yaml, sizeof(yaml), BASE "workloads:\n  b:\n    cmd: [other]\n  a:\n%s%s",
		 strstr(body, "cmd:") || strstr(body, "container:") ? "" : "    cmd: [serve]\n", body);
	return parse(yaml);
}

/*
 * Each workload key changed alone is reported under its name, with its
 * class; every key has a sample here, so that a new key is tested too.
 */
static void test_each_workload_key_changed(void **state)
{
	const size_t n_samples = sizeof(wl_samples) / sizeof(wl_samples[0]);
	bool used[sizeof(wl_samples) / sizeof(wl_samples[0])] = { false };
	struct vram_config_key k;
	for (size_t i = 0; vram_config_workload_key(i, &k); i++) {
		const struct wl_sample *sm = NULL;
		for (size_t j = 0; j < n_samples; j++)
			if (strcmp(wl_samples[j].key, k.name) == 0) {
				sm = &wl_samples[j];
				used[j] = true;
			}
		if (!sm)
			fail_msg("workload key %s has no sample in test-diff.c: add one to wl_samples", k.name);
		struct vram_config *a = parse_with(sm->before);
		struct vram_config *b = parse_with(sm->after);
		char keys[256] = "junk";
		enum vram_diff_kind kind = vram_diff_workload(vram_config_find(a, "a"),
							      vram_config_find(b, "a"), keys, sizeof(keys));
		if (strcmp(keys, k.reported) != 0)
			fail_msg("%s changed: reported \"%s\", expected \"%s\"", k.name, keys, k.reported);
		assert_int_equal(kind, k.reload == VRAM_RELOAD_PROCESS ? VRAM_DIFF_PROCESS : VRAM_DIFF_LIVE);
		/* and the same config again: nothing */
		assert_int_equal(vram_diff_workload(vram_config_find(b, "a"), vram_config_find(b, "a"),
						    keys, sizeof(keys)),
				 VRAM_DIFF_SAME);
		assert_string_equal(keys, "");
		vram_config_free(a);
		vram_config_free(b);
	}
	for (size_t j = 0; j < n_samples; j++)
		if (!used[j])
			fail_msg("sample %s names no workload key", wl_samples[j].key);
}

/* A change of one daemon or gpus key: the daemon: and gpus: lines after it. */
struct daemon_sample {
	const char *key;
	const char *after;
	const char *before; /* NULL: DAEMON_LINE("") GPUS_LINE */
};

/*
 * The daemon: line with a socket of its own (one derived from the state
 * directory would change with it), and the gpus: line.
 */
#define DAEMON_LINE(extra) "daemon: { listen: 127.0.0.1:8600, log_level: info, socket: /tmp/t.sock" extra " }\n"
#define TOKEN_FILE "/tmp/vramd-test-diff-tokens"
#define GPUS_LINE "gpus: { backend: sim, reserve: 1GiB, sim: [ { name: g, memory: 24GiB } ] }\n"

static const struct daemon_sample daemon_samples[] = {
	{ "daemon.listen", "daemon: { listen: 127.0.0.1:8601, log_level: info, socket: /tmp/t.sock }\n"
			   GPUS_LINE },
	{ "daemon.socket", "daemon: { listen: 127.0.0.1:8600, log_level: info, socket: /tmp/u.sock }\n"
			   GPUS_LINE },
	{ "daemon.state_dir", DAEMON_LINE(", state_dir: /tmp/t-state") GPUS_LINE },
	{ "daemon.log", DAEMON_LINE(", log: /tmp/t.log") GPUS_LINE },
	{ "daemon.log_level", "daemon: { listen: 127.0.0.1:8600, log_level: debug, socket: /tmp/t.sock }\n"
			      GPUS_LINE },
	{ "daemon.token", DAEMON_LINE(", token: s3cret-t0ken-0123456789") GPUS_LINE },
	/* the tokens apply at once: a rotated token file needs no restart */
	{ "daemon.tokens", DAEMON_LINE(", tokens: [s3cret-t0ken-0123456789]") GPUS_LINE },
	{ "daemon.token_file", DAEMON_LINE(", token_file: " TOKEN_FILE) GPUS_LINE },
	{ "daemon.hook_library", DAEMON_LINE(", hook_library: /tmp/libvram.so") GPUS_LINE },
	{ "daemon.workload_log_max", DAEMON_LINE(", workload_log_max: 1MiB") GPUS_LINE },
	{ "daemon.workload_log_keep", DAEMON_LINE(", workload_log_keep: 9") GPUS_LINE },
	{ "daemon.access_log.path", DAEMON_LINE(", access_log: { path: /tmp/t-access.log }") GPUS_LINE },
	{ "daemon.access_log.max_size", DAEMON_LINE(", access_log: { max_size: 1MiB }") GPUS_LINE },
	{ "daemon.access_log.keep", DAEMON_LINE(", access_log: { keep: 9 }") GPUS_LINE },
	{ "daemon.port_range_start", DAEMON_LINE(", port_range_start: 30000") GPUS_LINE },
	{ "daemon.upgrade_drain", DAEMON_LINE(", upgrade_drain: 30s") GPUS_LINE },
	{ "daemon.allowed_hosts", DAEMON_LINE(", allowed_hosts: [gpu1]") GPUS_LINE },
	{ "daemon.cors.origins", DAEMON_LINE(", cors: { origins: ['http://ui:3000'] }") GPUS_LINE },
	{ "daemon.open_healthz", DAEMON_LINE(", open_healthz: false") GPUS_LINE },
	{ "daemon.run_as", DAEMON_LINE(", run_as: root") GPUS_LINE },
	{ "daemon.socket_mode", DAEMON_LINE(", socket_mode: '0666'") GPUS_LINE },
	/* a group makes the mode 0660 unless it is given */
	{ "daemon.socket_group", DAEMON_LINE(", socket_mode: '0660', socket_group: 0") GPUS_LINE,
	  DAEMON_LINE(", socket_mode: '0660'") GPUS_LINE },
	{ "gpus.backend", DAEMON_LINE("") "gpus: { backend: auto, reserve: 1GiB, sim: [ { name: g, memory: 24GiB } ] }\n" },
	{ "gpus.reserve", DAEMON_LINE("") "gpus: { backend: sim, reserve: 2GiB, sim: [ { name: g, memory: 24GiB } ] }\n" },
	{ "gpus.visible_devices", DAEMON_LINE("") "gpus: { backend: sim, reserve: 1GiB, visible_devices: uuid, sim: [ { name: g, memory: 24GiB } ] }\n" },
	{ "gpus.sim", DAEMON_LINE("") "gpus: { backend: sim, reserve: 1GiB, sim: [ { name: g, memory: 48GiB } ] }\n" },
	/* the budget applies at once; the park directory holds parked processes' files */
	{ "host.reserve", DAEMON_LINE("") GPUS_LINE "host: { reserve: 8GiB }\n" },
	{ "host.limit", DAEMON_LINE("") GPUS_LINE "host: { limit: 100GiB }\n" },
	{ "host.park_dir", DAEMON_LINE("") GPUS_LINE "host: { park_dir: /var/park }\n" },
	{ "host.premake_buffers", DAEMON_LINE("") GPUS_LINE "host: { premake_buffers: false }\n" },
};

/* Each daemon or gpus key changed alone: refused under its name, or (live) let through. */
static void test_each_daemon_key_changed(void **state)
{
	const size_t n_samples = sizeof(daemon_samples) / sizeof(daemon_samples[0]);
	bool used[sizeof(daemon_samples) / sizeof(daemon_samples[0])] = { false };
	struct vram_config_key k;
	unlink(TOKEN_FILE);
	int fd = open(TOKEN_FILE, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "t0ken-from-file\n", 16), 16);
	close(fd);
	for (size_t i = 0; vram_config_daemon_key(i, &k); i++) {
		const struct daemon_sample *sm = NULL;
		for (size_t j = 0; j < n_samples; j++)
			if (strcmp(daemon_samples[j].key, k.name) == 0) {
				sm = &daemon_samples[j];
				used[j] = true;
			}
		if (!sm)
			fail_msg("key %s has no sample in test-diff.c: add one to daemon_samples", k.name);
		char yaml[1024];
		snprintf(yaml, sizeof(yaml), "%s" WL, sm->before ? sm->before : DAEMON_LINE("") GPUS_LINE);
		struct vram_config *a = parse(yaml);
		snprintf(yaml, sizeof(yaml), "%s" WL, sm->after);
		struct vram_config *b = parse(yaml);
		assert_false(k.same_config(a, b));
		char keys[256] = "junk";
		bool fixed = vram_diff_fixed(a, b, keys, sizeof(keys));
		if (k.reload == VRAM_RELOAD_DAEMON) {
			assert_false(fixed);
			if (strcmp(keys, k.reported) != 0)
				fail_msg("%s changed: reported \"%s\", expected \"%s\"", k.name, keys,
					 k.reported);
		} else {
			assert_true(fixed);
			assert_string_equal(keys, "");
		}
		vram_config_free(a);
		vram_config_free(b);
	}
	for (size_t j = 0; j < n_samples; j++)
		if (!used[j])
			fail_msg("sample %s names no daemon or gpus key", daemon_samples[j].key);
	unlink(TOKEN_FILE);
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
		cmocka_unit_test(test_every_key_declared),
		cmocka_unit_test(test_each_workload_key_changed),
		cmocka_unit_test(test_each_daemon_key_changed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
