/* SPDX-License-Identifier: MIT */
/*
 * Config loader: a full file lands in the struct field by field, defaults
 * resolve in the documented order (built-in < defaults: < workload <
 * command line), and every kind of mistake is reported with its exact
 * file:line:col, key path and expectation.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/strutil.h"
#include "config/config.h"

/* A workload "a" with a command; the lines appended start at line 4. */
#define WL_A "workloads:\n  a:\n    cmd: [x]\n"

static struct vram_config *parse_ok_ov(const char *yaml, const struct vram_config_overrides *ov)
{
	struct vram_config *cfg = NULL;
	char *err = NULL;
	int r = vram_config_parse(yaml, strlen(yaml), "t.yaml", ov, &cfg, &err);
	if (r != 0)
		fail_msg("unexpected error %d: %s", r, err ? err : "(none)");
	assert_null(err);
	assert_non_null(cfg);
	return cfg;
}

static struct vram_config *parse_ok(const char *yaml)
{
	return parse_ok_ov(yaml, NULL);
}

static void expect_error_ov(const char *yaml, const struct vram_config_overrides *ov,
			    const char *expected)
{
	struct vram_config *cfg = NULL;
	char *err = NULL;
	int r = vram_config_parse(yaml, strlen(yaml), "t.yaml", ov, &cfg, &err);
	assert_int_equal(r, -EINVAL);
	assert_null(cfg);
	assert_non_null(err);
	assert_string_equal(err, expected);
	free(err);
}

static void expect_error(const char *yaml, const char *expected)
{
	expect_error_ov(yaml, NULL, expected);
}

/* ---- a full file ---- */

static const char full_yaml[] =
	"daemon:\n"
	"  listen: 0.0.0.0:9000\n"
	"  socket: /tmp/v/ctl.sock\n"
	"  state_dir: /tmp/v\n"
	"  log: /tmp/v/vramd.log\n"
	"  log_level: debug\n"
	"  token: s3cret\n"
	"  workload_log_max: 1MiB\n"
	"  workload_log_keep: 5\n"
	"  port_range_start: 20000\n"
	"  upgrade_drain: 30s\n"
	"gpus:\n"
	"  backend: sim\n"
	"  reserve: 512MiB\n"
	"  sim:\n"
	"    - {name: Big, memory: 80GiB}\n"
	"    - memory: 24GiB\n"
	"defaults:\n"
	"  idle: {offload_after: 5m, release_after: never}\n"
	"  restart: {policy: always, backoff_max: 30s}\n"
	"  offload: checkpoint\n"
	"  placement: spread\n"
	"  fallback: cpu\n"
	"  start: eager\n"
	"  health: {interval: 250ms, timeout: 1s, start_timeout: 5m}\n"
	"  priority: 3\n"
	"  stop_grace: 4s\n"
	"  queue_max: 8\n"
	"  queue_timeout: 30s\n"
	"  max_concurrency: 2\n"
	"workloads:\n"
	"  llm:\n"
	"    cmd: [vllm, serve, \"${MODEL}\", --port, \"${PORT}\", 8]\n"
	"    env: {HF_HOME: /data/hf, EMPTY: , N: 3}\n"
	"    cwd: /srv/llm\n"
	"    gpus: [0, 2]\n"
	"    memory: 60GiB\n"
	"    models: [Qwen/Qwen2.5-32B-Instruct, qwen]\n"
	"    health: /health\n"
	"    port: 8001\n"
	"    priority: -2\n"
	"    idle: {offload_after: 0s, park_after: 2h}\n"
	"    offload: hook+checkpoint\n"
	"    restart: never\n"
	"    placement: most-free\n"
	"    fallback: share\n"
	"    start: lazy\n"
	"    stop_grace: 20s\n"
	"  rerank.v2:\n"
	"    cmd:\n"
	"      - python3\n"
	"      - rerank.py\n"
	"    replicas: 2\n"
	"    share: mps\n"
	"    compute: 30%\n"
	"    fallback: exclusive\n"
	"    memory: 0.3\n"
	"    avoid: [llm]\n"
	"    health: {tcp: true}\n"
	"    max_concurrency: 0\n"
	"    queue_max: 0\n"
	"    queue_timeout: 1m\n"
	"  cpu_tool:\n"
	"    cmd: [./tool]\n"
	"    gpus: 0\n"
	"    health: none\n"
	"    compute: 50\n"
	"    share: mps\n"
	"    offload: restart\n"
	"  any_gpu:\n"
	"    cmd: [./x]\n"
	"    gpus: any\n"
	"    restart: on-failure\n"
	"    idle: never\n"
	"    offload: sim\n"
	"    port: auto\n";

static void test_full_config_round_trip(void **state)
{
	struct vram_config *cfg = parse_ok(full_yaml);

	assert_string_equal(cfg->path, "t.yaml");
	assert_string_equal(cfg->daemon.listen, "0.0.0.0:9000");
	assert_string_equal(cfg->daemon.socket, "/tmp/v/ctl.sock");
	assert_string_equal(cfg->daemon.state_dir, "/tmp/v");
	assert_string_equal(cfg->daemon.log, "/tmp/v/vramd.log");
	assert_string_equal(cfg->daemon.log_level, "debug");
	assert_string_equal(cfg->daemon.token, "s3cret");
	assert_int_equal(cfg->daemon.workload_log_max_bytes, VRAM_MiB);
	assert_int_equal(cfg->daemon.workload_log_keep, 5);
	assert_int_equal(cfg->daemon.port_range_start, 20000);
	assert_int_equal(cfg->daemon.upgrade_drain_ms, 30000);

	assert_int_equal(cfg->gpus.backend, VRAM_GPU_BACKEND_SIM);
	assert_int_equal(cfg->gpus.reserve, 512 * VRAM_MiB);
	assert_int_equal(cfg->gpus.n_sim, 2);
	assert_string_equal(cfg->gpus.sim[0].name, "Big");
	assert_int_equal(cfg->gpus.sim[0].memory, 80 * VRAM_GiB);
	assert_string_equal(cfg->gpus.sim[1].name, "Simulated GPU");
	assert_int_equal(cfg->gpus.sim[1].memory, 24 * VRAM_GiB);

	assert_int_equal(cfg->n_workloads, 4);
	const struct vram_workload_config *w = &cfg->workloads[0];
	assert_ptr_equal(vram_config_find(cfg, "llm"), w);
	assert_string_equal(w->name, "llm");
	assert_int_equal(w->pos.line, 32);
	assert_int_equal(w->pos.col, 3);
	assert_int_equal(w->n_cmd, 6);
	const char *argv[] = { "vllm", "serve", "${MODEL}", "--port", "${PORT}", "8" };
	for (size_t i = 0; i < 6; i++)
		assert_string_equal(w->cmd[i], argv[i]);
	assert_null(w->cmd[6]);
	assert_int_equal(w->n_env, 3);
	assert_string_equal(w->env[0], "HF_HOME=/data/hf");
	assert_string_equal(w->env[1], "EMPTY=");
	assert_string_equal(w->env[2], "N=3");
	assert_null(w->env[3]);
	assert_string_equal(w->cwd, "/srv/llm");
	assert_int_equal(w->gpus.kind, VRAM_GPUS_LIST);
	assert_int_equal(w->gpus.count, 2);
	assert_int_equal(w->gpus.n_pins, 2);
	assert_int_equal(w->gpus.pins[0], 0);
	assert_int_equal(w->gpus.pins[1], 2);
	assert_false(w->memory.is_fraction);
	assert_int_equal(w->memory.bytes, 60 * VRAM_GiB);
	assert_int_equal(w->n_models, 2);
	assert_string_equal(w->models[0], "Qwen/Qwen2.5-32B-Instruct");
	assert_string_equal(w->models[1], "qwen");
	assert_null(w->models[2]);
	assert_int_equal(w->health.kind, VRAM_HEALTH_HTTP);
	assert_string_equal(w->health.path, "/health");
	/* Health timings come from defaults: the path alone does not reset them. */
	assert_int_equal(w->health.interval_ms, 250);
	assert_int_equal(w->health.timeout_ms, 1000);
	assert_int_equal(w->health.start_timeout_ms, 300000);
	assert_int_equal(w->port, 8001);
	assert_int_equal(w->priority, -2);
	assert_int_equal(w->idle.offload_after_ms, 0);
	assert_true(w->idle.release_after_ms == VRAM_DURATION_NEVER);
	assert_int_equal(w->idle.park_after_ms, 2 * 3600000);
	assert_int_equal(w->offload, VRAM_ENGINE_HOOK_CHECKPOINT);
	assert_int_equal(w->restart, VRAM_RESTART_NEVER);
	assert_int_equal(w->restart_backoff_max_ms, 30000);
	assert_int_equal(w->placement, VRAM_PLACEMENT_MOST_FREE);
	assert_int_equal(w->fallback, VRAM_FALLBACK_SHARE);
	assert_int_equal(w->start, VRAM_START_LAZY);
	assert_int_equal(w->stop_grace_ms, 20000);
	assert_int_equal(w->replicas, 1);
	assert_int_equal(w->share, VRAM_SHARE_NONE);
	assert_int_equal(w->compute_percent, 0);
	assert_int_equal(w->max_concurrency, 2);
	assert_int_equal(w->queue_max, 8);
	assert_int_equal(w->queue_timeout_ms, 30000);
	assert_int_equal(w->n_avoid, 0);
	assert_null(w->avoid);

	w = &cfg->workloads[1];
	assert_string_equal(w->name, "rerank.v2");
	assert_int_equal(w->n_cmd, 2);
	assert_string_equal(w->cmd[1], "rerank.py");
	assert_int_equal(w->replicas, 2);
	assert_int_equal(w->share, VRAM_SHARE_MPS);
	assert_int_equal(w->compute_percent, 30);
	assert_int_equal(w->fallback, VRAM_FALLBACK_EXCLUSIVE);
	assert_true(w->memory.is_fraction);
	assert_true(w->memory.fraction == 0.3);
	assert_int_equal(w->gpus.kind, VRAM_GPUS_COUNT);
	assert_int_equal(w->gpus.count, 1);
	assert_int_equal(w->n_avoid, 1);
	assert_string_equal(w->avoid[0], "llm");
	assert_int_equal(w->health.kind, VRAM_HEALTH_TCP);
	assert_null(w->health.path);
	assert_int_equal(w->max_concurrency, 0);
	assert_int_equal(w->queue_max, 0);
	assert_int_equal(w->queue_timeout_ms, 60000);
	assert_int_equal(w->restart, VRAM_RESTART_ALWAYS);
	assert_int_equal(w->offload, VRAM_ENGINE_CHECKPOINT);
	assert_int_equal(w->placement, VRAM_PLACEMENT_SPREAD);
	assert_int_equal(w->start, VRAM_START_EAGER);
	assert_int_equal(w->priority, 3);
	assert_int_equal(w->stop_grace_ms, 4000);
	assert_int_equal(w->idle.offload_after_ms, 300000);

	w = &cfg->workloads[2];
	assert_int_equal(w->gpus.kind, VRAM_GPUS_COUNT);
	assert_int_equal(w->gpus.count, 0);
	/* CPU only: no memory is declared or defaulted. */
	assert_false(w->memory.is_fraction);
	assert_int_equal(w->memory.bytes, 0);
	assert_int_equal(w->health.kind, VRAM_HEALTH_NONE);
	assert_int_equal(w->compute_percent, 50);
	assert_int_equal(w->offload, VRAM_ENGINE_RESTART);

	w = &cfg->workloads[3];
	assert_int_equal(w->gpus.kind, VRAM_GPUS_ANY);
	assert_int_equal(w->gpus.count, 1);
	assert_true(w->memory.is_fraction);
	assert_true(w->memory.fraction == 1.0);
	assert_int_equal(w->restart, VRAM_RESTART_ON_FAILURE);
	assert_true(w->idle.offload_after_ms == VRAM_DURATION_NEVER);
	assert_true(w->idle.release_after_ms == VRAM_DURATION_NEVER);
	/* park_after is off unless set: a model goes to disk only when asked to */
	assert_true(w->idle.park_after_ms == VRAM_DURATION_NEVER);
	assert_int_equal(w->offload, VRAM_ENGINE_SIM);
	assert_int_equal(w->port, 0);

	assert_null(vram_config_find(cfg, "nope"));
	assert_null(vram_config_find(NULL, "llm"));
	vram_config_free(cfg);
}

/* ---- defaults ---- */

static void test_builtin_defaults(void **state)
{
	struct vram_config *cfg = parse_ok(WL_A);

	assert_string_equal(cfg->daemon.listen, "127.0.0.1:8600");
	assert_string_equal(cfg->daemon.log_level, "info");
	assert_null(cfg->daemon.log);
	assert_null(cfg->daemon.token);
	assert_non_null(cfg->daemon.state_dir);
	char sock[4096];
	snprintf(sock, sizeof(sock), "%s/vramd.sock", cfg->daemon.state_dir);
	assert_string_equal(cfg->daemon.socket, sock);
	if (geteuid() == 0)
		assert_string_equal(cfg->daemon.state_dir, "/run/vramd");
	assert_int_equal(cfg->daemon.workload_log_max_bytes, 10 * VRAM_MiB);
	assert_int_equal(cfg->daemon.workload_log_keep, 3);
	assert_int_equal(cfg->daemon.port_range_start, 18000);
	assert_int_equal(cfg->daemon.upgrade_drain_ms, 10000);
	assert_int_equal(cfg->gpus.backend, VRAM_GPU_BACKEND_AUTO);
	assert_int_equal(cfg->gpus.reserve, 0);
	assert_int_equal(cfg->gpus.n_sim, 0);

	assert_int_equal(cfg->n_workloads, 1);
	const struct vram_workload_config *w = &cfg->workloads[0];
	assert_int_equal(w->pos.line, 2);
	assert_int_equal(w->pos.col, 3);
	assert_int_equal(w->n_cmd, 1);
	assert_string_equal(w->cmd[0], "x");
	assert_null(w->env);
	assert_null(w->cwd);
	assert_int_equal(w->gpus.kind, VRAM_GPUS_COUNT);
	assert_int_equal(w->gpus.count, 1);
	assert_true(w->memory.is_fraction);
	assert_true(w->memory.fraction == 1.0);
	assert_int_equal(w->replicas, 1);
	assert_int_equal(w->placement, VRAM_PLACEMENT_PACK);
	assert_int_equal(w->fallback, VRAM_FALLBACK_NONE);
	assert_int_equal(w->start, VRAM_START_LAZY);
	assert_int_equal(w->health.kind, VRAM_HEALTH_TCP);
	assert_null(w->health.path);
	assert_int_equal(w->health.interval_ms, 10000); /* the liveness period; starts probe every 500 ms */
	assert_int_equal(w->health.timeout_ms, 2000);
	assert_int_equal(w->health.start_timeout_ms, 120000);
	assert_int_equal(w->health.failures, 3);
	assert_int_equal(w->health.port_owner, VRAM_PORT_OWNER_WORKLOAD);
	assert_int_equal(w->port, 0);
	assert_int_equal(w->idle.offload_after_ms, 600000);
	assert_int_equal(w->idle.release_after_ms, 3600000);
	assert_int_equal(w->priority, 0);
	assert_int_equal(w->offload, VRAM_ENGINE_AUTO);
	assert_int_equal(w->restart, VRAM_RESTART_ON_FAILURE);
	assert_int_equal(w->restart_backoff_max_ms, 60000);
	assert_int_equal(w->restart_limit, 5);
	assert_int_equal(w->restart_window_ms, 10000);
	assert_int_equal(w->stop_grace_ms, 10000);
	assert_int_equal(w->share, VRAM_SHARE_NONE);
	assert_int_equal(w->compute_percent, 0);
	assert_int_equal(w->max_concurrency, 0);
	assert_int_equal(w->queue_max, 64);
	assert_int_equal(w->queue_timeout_ms, 120000);
	vram_config_free(cfg);
}

static void test_defaults_then_workload(void **state)
{
	struct vram_config *cfg = parse_ok(
		"workloads:\n"
		"  a:\n"
		"    cmd: [x]\n"
		"    idle: {release_after: 2h}\n"
		"    health: tcp\n"
		"  b:\n"
		"    cmd: [y]\n"
		"defaults:\n" /* after workloads on purpose: order in the file does not matter */
		"  idle: {offload_after: 1m}\n"
		"  health: /ready\n"
		"  restart: {backoff_max: 2m, limit: 0, window: 1m}\n");
	const struct vram_workload_config *a = vram_config_find(cfg, "a");
	const struct vram_workload_config *b = vram_config_find(cfg, "b");
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(a->idle.offload_after_ms, 60000);
	assert_int_equal(a->idle.release_after_ms, 7200000);
	assert_int_equal(a->health.kind, VRAM_HEALTH_TCP);
	assert_null(a->health.path);
	assert_int_equal(a->restart, VRAM_RESTART_ON_FAILURE);
	assert_int_equal(a->restart_backoff_max_ms, 120000);
	assert_int_equal(a->restart_limit, 0);
	assert_int_equal(a->restart_window_ms, 60000);
	assert_int_equal(b->idle.offload_after_ms, 60000);
	assert_int_equal(b->idle.release_after_ms, 3600000);
	assert_int_equal(b->health.kind, VRAM_HEALTH_HTTP);
	assert_string_equal(b->health.path, "/ready");
	/* Each workload owns its copy of the default path. */
	assert_ptr_not_equal(b->health.path, a->health.path);
	vram_config_free(cfg);
}

/* The liveness keys: from defaults by key, per workload, never, and each mistake. */
static void test_health_liveness_keys(void **state)
{
	struct vram_config *cfg = parse_ok(
		"defaults:\n"
		"  health: {interval: 30s, failures: 5}\n"
		"workloads:\n"
		"  a:\n"
		"    cmd: [x]\n"
		"    health: /health\n"
		"  b:\n"
		"    cmd: [y]\n"
		"    health: {path: /ready, interval: 2s, timeout: 500ms, failures: 1, port_owner: any}\n"
		"  c:\n"
		"    cmd: [z]\n"
		"    health: {tcp: true, interval: never}\n");
	const struct vram_workload_config *a = vram_config_find(cfg, "a");
	const struct vram_workload_config *b = vram_config_find(cfg, "b");
	const struct vram_workload_config *c = vram_config_find(cfg, "c");
	assert_int_equal(a->health.kind, VRAM_HEALTH_HTTP);
	assert_int_equal(a->health.interval_ms, 30000);
	assert_int_equal(a->health.failures, 5);
	assert_int_equal(a->health.port_owner, VRAM_PORT_OWNER_WORKLOAD);
	assert_int_equal(b->health.interval_ms, 2000);
	assert_int_equal(b->health.timeout_ms, 500);
	assert_int_equal(b->health.failures, 1);
	assert_int_equal(b->health.port_owner, VRAM_PORT_OWNER_ANY);
	assert_string_equal(vram_port_owner_name(b->health.port_owner), "any");
	assert_int_equal(c->health.kind, VRAM_HEALTH_TCP);
	assert_int_equal(c->health.interval_ms, VRAM_DURATION_NEVER);
	assert_int_equal(c->health.failures, 5);
	vram_config_free(cfg);

	expect_error(WL_A "    health: {failures: 0}\n",
		     "t.yaml:4:24: workloads.a.health.failures: expected a whole number from 1 to "
		     "1000, got \"0\"");
	expect_error(WL_A "    health: {failures: 1001}\n",
		     "t.yaml:4:24: workloads.a.health.failures: expected a whole number from 1 to "
		     "1000, got \"1001\"");
	expect_error(WL_A "    health: {failures: three}\n",
		     "t.yaml:4:24: workloads.a.health.failures: expected a whole number from 1 to "
		     "1000, got \"three\"");
	expect_error(WL_A "    health: {port_owner: nobody}\n",
		     "t.yaml:4:26: workloads.a.health.port_owner: expected one of workload, any, "
		     "got \"nobody\"");
	expect_error(WL_A "    health: {failure: 2}\n",
		     "t.yaml:4:14: workloads.a.health.failure: unknown key 'failure', did you "
		     "mean 'failures'?");
	expect_error(WL_A "    health: {interval: soon}\n",
		     "t.yaml:4:24: workloads.a.health.interval: expected a duration like 90s, 10m "
		     "or 1h, or never, got \"soon\"");
	/* timeout and start_timeout stay durations without never */
	expect_error(WL_A "    health: {timeout: never}\n",
		     "t.yaml:4:23: workloads.a.health.timeout: expected a duration like 500ms, 90s, "
		     "10m or 1h, got \"never\"");
}

static void test_empty_and_sparse_files(void **state)
{
	const char *texts[] = { "", "# nothing\n", "---\n", "daemon:\nworkloads:\n", "{}\n" };
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct vram_config *cfg = parse_ok(texts[i]);
		assert_int_equal(cfg->n_workloads, 0);
		assert_null(cfg->workloads);
		assert_string_equal(cfg->daemon.listen, "127.0.0.1:8600");
		vram_config_free(cfg);
	}
}

static void test_sim_gpu_string(void **state)
{
	struct vram_config *cfg = parse_ok("gpus:\n  backend: sim\n  sim: 1x24GiB,2x80GiB\n");
	assert_int_equal(cfg->gpus.n_sim, 3);
	assert_int_equal(cfg->gpus.sim[0].memory, 24 * VRAM_GiB);
	assert_int_equal(cfg->gpus.sim[2].memory, 80 * VRAM_GiB);
	assert_string_equal(cfg->gpus.sim[1].name, "Simulated GPU");
	vram_config_free(cfg);
}

static void test_token_allows_public_listen(void **state)
{
	struct vram_config *cfg = parse_ok("daemon:\n  listen: \"[::]:8600\"\n  token: t\n");
	assert_string_equal(cfg->daemon.listen, "[::]:8600");
	vram_config_free(cfg);
	cfg = parse_ok("daemon:\n  listen: \"[::1]:8600\"\n");
	vram_config_free(cfg);
	cfg = parse_ok("daemon:\n  listen: localhost:1\n");
	vram_config_free(cfg);
}

/* ---- secrets: several tokens, a token file, ${env:NAME} ---- */

/* Writes text to a fresh file of the given mode; returns its path (static). */
static const char *token_file(const char *text, mode_t mode)
{
	static char path[] = "/tmp/test-config-tokens-XXXXXX";
	strcpy(path, "/tmp/test-config-tokens-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
	return path;
}

static void test_tokens(void **state)
{
	(void)state;
	/* token and tokens join, one a line: what the API checks against */
	struct vram_config *cfg = parse_ok("daemon:\n  token: a1\n  tokens: [b2, c3]\n");
	assert_string_equal(cfg->daemon.token, "a1\nb2\nc3");
	vram_config_free(cfg);

	const char *path = token_file("# rotated 2026-12\nold-tok\n\n  new-tok  \n", 0600);
	char yaml[256];
	snprintf(yaml, sizeof(yaml), "daemon:\n  listen: \"0.0.0.0:1\"\n  token_file: %s\n", path);
	cfg = parse_ok(yaml);
	assert_string_equal(cfg->daemon.token, "old-tok\nnew-tok");
	vram_config_free(cfg);

	/* a file others may read is refused, naming the file and what was expected */
	assert_int_equal(chmod(path, 0644), 0);
	char want[512];
	snprintf(want, sizeof(want), "t.yaml:2:15: daemon.token_file: %s has mode 0644, expected "
		 "no access for group and others (chmod 600 %s)", path, path);
	snprintf(yaml, sizeof(yaml), "daemon:\n  token_file: %s\n", path);
	expect_error(yaml, want);
	assert_int_equal(chmod(path, 0640), 0);
	snprintf(want, sizeof(want), "t.yaml:2:15: daemon.token_file: %s has mode 0640, expected "
		 "no access for group and others (chmod 600 %s)", path, path);
	expect_error(yaml, want);
	unlink(path);
	snprintf(want, sizeof(want), "t.yaml:2:15: daemon.token_file: cannot open %s: No such file "
		 "or directory, expected a readable file of tokens, one a line", path);
	expect_error(yaml, want);

	path = token_file("# nothing yet\n", 0600);
	snprintf(yaml, sizeof(yaml), "daemon:\n  token_file: %s\n", path);
	snprintf(want, sizeof(want), "t.yaml:2:15: daemon.token_file: %s holds no token, expected "
		 "one token a line", path);
	expect_error(yaml, want);
	unlink(path);

	expect_error("daemon:\n  tokens: [ok, \"a b\"]\n",
		     "t.yaml:2:16: daemon.tokens[1]: expected a non-empty token without spaces "
		     "or control characters");
}

/* models: plain names go up as written; an alias names its upstream. */
static void test_model_aliases(void **state)
{
	(void)state;
	struct vram_config *cfg = parse_ok(WL_A "    models:\n      - plain\n"
					   "      - {name: chat, upstream: Qwen/Qwen2.5-7B}\n"
					   "      - {name: same}\n");
	const struct vram_workload_config *w = &cfg->workloads[0];
	assert_int_equal(w->n_models, 3);
	assert_string_equal(w->models[0], "plain");
	assert_string_equal(w->model_upstreams[0], "plain");
	assert_string_equal(w->models[1], "chat");
	assert_string_equal(w->model_upstreams[1], "Qwen/Qwen2.5-7B");
	assert_string_equal(w->models[2], "same");
	assert_string_equal(w->model_upstreams[2], "same");
	assert_null(w->models[3]);
	assert_null(w->model_upstreams[3]);
	vram_config_free(cfg);
	/* an alias's name is a model name like any: once across workloads */
	expect_error("workloads:\n  a:\n    cmd: [x]\n    models: [chat]\n"
		     "  b:\n    cmd: [x]\n    models: [{name: chat, upstream: y}]\n",
		     "t.yaml:7:14: workloads.b.models[0]: model 'chat' is already routed to "
		     "workload 'a', expected each model name once");
}

/* A model server is ready when its own routes say so, unless health: says how. */
static void test_model_server_health_default(void **state)
{
	(void)state;
	struct vram_config *cfg = parse_ok("workloads:\n"
					   "  llm: { cmd: [x], models: [m1] }\n"
					   "  tcp: { cmd: [x], models: [m2], health: tcp }\n"
					   "  plain: { cmd: [x] }\n"
					   "  timed: { cmd: [x], models: [m3], health: { interval: 2s } }\n");
	assert_int_equal(cfg->workloads[0].health.kind, VRAM_HEALTH_MODEL);
	assert_int_equal(cfg->workloads[1].health.kind, VRAM_HEALTH_TCP);
	assert_int_equal(cfg->workloads[2].health.kind, VRAM_HEALTH_TCP);
	assert_int_equal(cfg->workloads[3].health.kind, VRAM_HEALTH_MODEL);
	vram_config_free(cfg);
	cfg = parse_ok("defaults: { health: /ready }\nworkloads:\n  llm: { cmd: [x], models: [m1] }\n");
	assert_int_equal(cfg->workloads[0].health.kind, VRAM_HEALTH_HTTP);
	vram_config_free(cfg);
}

static void test_env_in_daemon_keys(void **state)
{
	(void)state;
	setenv("VRAMD_TEST_TOKEN", "from-env", 1);
	setenv("VRAMD_TEST_DIR", "/tmp/vramd-env-test", 1);
	struct vram_config *cfg = parse_ok("daemon:\n  token: ${env:VRAMD_TEST_TOKEN}\n"
					   "  tokens: [\"x-${env:VRAMD_TEST_TOKEN}\"]\n"
					   "  state_dir: ${env:VRAMD_TEST_DIR}/state\n");
	assert_string_equal(cfg->daemon.token, "from-env\nx-from-env");
	assert_string_equal(cfg->daemon.state_dir, "/tmp/vramd-env-test/state");
	vram_config_free(cfg);
	/* listen is checked as vramd will bind it, after the replacement */
	setenv("VRAMD_TEST_LISTEN", "127.0.0.1:8611", 1);
	cfg = parse_ok("daemon:\n  listen: ${env:VRAMD_TEST_LISTEN}\n");
	assert_string_equal(cfg->daemon.listen, "127.0.0.1:8611");
	vram_config_free(cfg);
	setenv("VRAMD_TEST_LISTEN", "nowhere", 1);
	expect_error("daemon:\n  listen: ${env:VRAMD_TEST_LISTEN}\n",
		     "t.yaml:2:11: daemon.listen: expected HOST:PORT like 127.0.0.1:8600 or "
		     "[::1]:8600, got \"${env:VRAMD_TEST_LISTEN}\" once ${env:...} is replaced");
	unsetenv("VRAMD_TEST_UNSET");
	expect_error("daemon:\n  token: ${env:VRAMD_TEST_UNSET}\n",
		     "t.yaml:2:10: daemon.token: environment variable VRAMD_TEST_UNSET is not "
		     "set, expected it set in vramd's environment for ${env:VRAMD_TEST_UNSET}");
	expect_error("daemon:\n  log: ${env:VRAMD_TEST_DIR\n",
		     "t.yaml:2:8: daemon.log: expected ${env:NAME} with a variable name of 1 "
		     "to 127 characters and a closing }");
	/* outside the daemon section the text is taken as written */
	cfg = parse_ok(WL_A "    env: {T: \"${env:VRAMD_TEST_UNSET}\"}\n");
	vram_config_free(cfg);
}

/* ---- overrides ---- */

static void test_overrides(void **state)
{
	struct vram_config_overrides ov = {
		.listen = "127.0.0.2:9999",
		.sim_gpus = "2x40GiB",
		.state_dir = "/tmp/vramd-test-state",
	};
	struct vram_config *cfg = parse_ok_ov(
		"daemon:\n  listen: 127.0.0.1:1234\n"
		"gpus:\n  backend: nvml\n  sim: [{memory: 8GiB}]\n" WL_A, &ov);
	assert_string_equal(cfg->daemon.listen, "127.0.0.2:9999");
	assert_int_equal(cfg->gpus.backend, VRAM_GPU_BACKEND_SIM);
	assert_int_equal(cfg->gpus.n_sim, 2);
	assert_int_equal(cfg->gpus.sim[0].memory, 40 * VRAM_GiB);
	assert_int_equal(cfg->gpus.sim[1].memory, 40 * VRAM_GiB);
	assert_string_equal(cfg->gpus.sim[1].name, "Simulated GPU");
	assert_string_equal(cfg->daemon.state_dir, "/tmp/vramd-test-state");
	assert_string_equal(cfg->daemon.socket, "/tmp/vramd-test-state/vramd.sock");
	vram_config_free(cfg);

	/* An explicit socket is kept when only the state dir is overridden. */
	struct vram_config_overrides ov2 = { .state_dir = "/s" };
	cfg = parse_ok_ov("daemon:\n  socket: /x.sock\n", &ov2);
	assert_string_equal(cfg->daemon.socket, "/x.sock");
	assert_string_equal(cfg->daemon.state_dir, "/s");
	vram_config_free(cfg);
}

static void test_override_errors(void **state)
{
	struct vram_config_overrides bad_gpus = { .sim_gpus = "2xlots" };
	expect_error_ov(WL_A, &bad_gpus,
			"t.yaml: --gpus: expected a list like 2x80GiB or 1x24GiB,1x80GiB "
			"(at most 64 GPUs), got \"2xlots\"");
	struct vram_config_overrides bad_listen = { .listen = "8600" };
	expect_error_ov(WL_A, &bad_listen,
			"t.yaml: --listen: expected HOST:PORT like 127.0.0.1:8600 or [::1]:8600, "
			"got \"8600\"");
	struct vram_config_overrides public_listen = { .listen = "0.0.0.0:8600" };
	expect_error_ov(WL_A, &public_listen,
			"t.yaml: --listen: 0.0.0.0:8600 is not a loopback address and "
			"daemon.token is not set, expected a token or a listen address like "
			"127.0.0.1:8600");
	struct vram_config *cfg = parse_ok_ov("daemon:\n  token: t\n", &public_listen);
	assert_string_equal(cfg->daemon.listen, "0.0.0.0:8600");
	vram_config_free(cfg);
}

/* ---- errors, one kind at a time ---- */

static void test_access_keys(void **state)
{
	struct vram_config *cfg = parse_ok("daemon:\n"
					   "  allowed_hosts: [GPU1.example.com, 'gpu1:8600', '[::1]:9']\n"
					   "  cors: {origins: ['http://localhost:3000', 'HTTPS://UI.example.com']}\n"
					   "  run_as: root\n" WL_A
					   "    first_byte_timeout: 30s\n"
					   "    stream_timeout: never\n");
	assert_int_equal(cfg->daemon.n_allowed_hosts, 3);
	assert_string_equal(cfg->daemon.allowed_hosts[0], "gpu1.example.com");
	assert_string_equal(cfg->daemon.allowed_hosts[2], "[::1]:9");
	assert_null(cfg->daemon.allowed_hosts[3]);
	assert_int_equal(cfg->daemon.n_cors_origins, 2);
	assert_string_equal(cfg->daemon.cors_origins[1], "https://ui.example.com");
	assert_true(cfg->daemon.has_run_as);
	assert_int_equal(cfg->daemon.run_as_uid, 0);
	assert_int_equal(cfg->daemon.run_as_gid, 0);
	assert_int_equal(cfg->workloads[0].first_byte_timeout_ms, 30000);
	assert_int_equal(cfg->workloads[0].stream_timeout_ms, VRAM_DURATION_NEVER);
	vram_config_free(cfg);

	cfg = parse_ok("daemon:\n  run_as: '0'\n" WL_A);
	assert_true(cfg->daemon.has_run_as);
	assert_int_equal(cfg->daemon.run_as_uid, 0);
	assert_int_equal(cfg->workloads[0].first_byte_timeout_ms, 300000);
	assert_int_equal(cfg->workloads[0].stream_timeout_ms, 600000);
	vram_config_free(cfg);
	cfg = parse_ok(WL_A);
	assert_false(cfg->daemon.has_run_as);
	assert_null(cfg->daemon.allowed_hosts);
	vram_config_free(cfg);

	expect_error("daemon:\n  allowed_hosts: [ok.example, 'bad host']\n",
		     "t.yaml:2:31: daemon.allowed_hosts[1]: expected a host name like "
		     "gpu1.example.com or gpu1:8600, got \"bad host\"");
	expect_error("daemon:\n  allowed_hosts: 'x:99999'\n",
		     "t.yaml:2:18: daemon.allowed_hosts: expected a list of host names, got "
		     "\"x:99999\"");
	expect_error("daemon:\n  cors: {origins: ['http://a.example/path']}\n",
		     "t.yaml:2:20: daemon.cors.origins[0]: expected an origin like "
		     "http://localhost:3000 or https://ui.example.com (scheme, host and port, no "
		     "path), got \"http://a.example/path\"");
	expect_error("daemon:\n  cors: {origin: []}\n",
		     "t.yaml:2:10: daemon.cors.origin: unknown key 'origin', did you mean "
		     "'origins'?");
	expect_error("daemon:\n  run_as: no-such-user-here\n",
		     "t.yaml:2:11: daemon.run_as: no such user \"no-such-user-here\", expected a "
		     "user name or uid that exists on this machine");
	expect_error(WL_A "    stop_grace: 10000000000000000000ms\n",
		     "t.yaml:4:17: workloads.a.stop_grace: out of range, expected at most 100 years "
		     "(36500d), got \"10000000000000000000ms\"");
	expect_error("daemon:\n  workload_log_max: 99999999999999999999\n",
		     "t.yaml:2:21: daemon.workload_log_max: out of range, expected a size below "
		     "16EiB, got \"99999999999999999999\"");
	expect_error(WL_A "    first_byte_timeout: 10ms\n",
		     "t.yaml:4:25: workloads.a.first_byte_timeout: too short, expected at least "
		     "1s, got \"10ms\"");
	expect_error("daemon:\n  upgrade_drain: never\n",
		     "t.yaml:2:18: daemon.upgrade_drain: expected a duration like 500ms, 90s, 10m "
		     "or 1h, got \"never\"");
}

static void test_socket_access(void **state)
{
	struct vram_config *cfg = parse_ok(WL_A);
	assert_int_equal(cfg->daemon.socket_mode, 0600);
	assert_false(cfg->daemon.has_socket_group);
	vram_config_free(cfg);
	cfg = parse_ok("daemon:\n  socket: /run/vramd.sock\n  socket_group: root\n" WL_A);
	assert_int_equal(cfg->daemon.socket_mode, 0660);
	assert_true(cfg->daemon.has_socket_group);
	assert_int_equal(cfg->daemon.socket_gid, 0);
	vram_config_free(cfg);
	cfg = parse_ok("daemon:\n  socket: /run/vramd.sock\n  socket_mode: '666'\n" WL_A);
	assert_int_equal(cfg->daemon.socket_mode, 0666);
	vram_config_free(cfg);
	cfg = parse_ok("daemon:\n  state_dir: /var/lib/vramd\n  socket_mode: 0600\n" WL_A);
	assert_int_equal(cfg->daemon.socket_mode, 0600);
	vram_config_free(cfg);

	expect_error("daemon:\n  socket: /run/vramd.sock\n  socket_mode: 0777\n",
		     "t.yaml:3:16: daemon.socket_mode: expected 0600 (vramd's user), 0660 (and "
		     "socket_group) or 0666 (every local user), got \"0777\"");
	expect_error("daemon:\n  socket_group: no-such-group-here\n",
		     "t.yaml:2:17: daemon.socket_group: no such group \"no-such-group-here\", "
		     "expected a group name or gid that exists on this machine");
	expect_error("daemon:\n  state_dir: /var/lib/vramd/\n  socket_mode: 0666\n",
		     "t.yaml:3:16: daemon.socket_mode: the control socket /var/lib/vramd//vramd.sock "
		     "is inside the state directory, which only vramd's user may enter (0700), so a "
		     "mode of 0666 reaches nobody else; expected daemon.socket outside it, like "
		     "/run/vramd.sock");
	expect_error("daemon:\n  state_dir: /var/lib/vramd\n  socket_group: root\n",
		     "t.yaml: daemon.socket_group: the control socket /var/lib/vramd/vramd.sock is "
		     "inside the state directory, which only vramd's user may enter (0700), so a "
		     "mode of 0660 reaches nobody else; expected daemon.socket outside it, like "
		     "/run/vramd.sock");
}

/*
 * host: the budget's keys land in the struct; left out, the reserve is the
 * default (resolved against MemTotal later), there is no limit and the park
 * directory is the state directory's; each mistake names the key, where it
 * is and what was expected.
 */
static void test_host_section(void **state)
{
	struct vram_config *cfg = parse_ok(WL_A);
	assert_true(cfg->host.reserve == VRAM_CONFIG_HOST_RESERVE_DEFAULT);
	assert_true(cfg->host.limit == 0);
	assert_null(cfg->host.park_dir);
	vram_config_free(cfg);

	cfg = parse_ok("host:\n  reserve: 8GiB\n  limit: 200GiB\n  park_dir: /var/lib/vramd/park\n");
	assert_true(cfg->host.reserve == 8 * VRAM_GiB);
	assert_true(cfg->host.limit == 200 * VRAM_GiB);
	assert_string_equal(cfg->host.park_dir, "/var/lib/vramd/park");
	vram_config_free(cfg);
	/* a reserve of 0 is a choice; an empty section is nothing set */
	cfg = parse_ok("host: {reserve: 0}\n");
	assert_true(cfg->host.reserve == 0);
	vram_config_free(cfg);
	cfg = parse_ok("host:\n");
	assert_true(cfg->host.reserve == VRAM_CONFIG_HOST_RESERVE_DEFAULT);
	vram_config_free(cfg);

	expect_error("host:\n  reserve: lots\n",
		     "t.yaml:2:12: host.reserve: expected a size like 512MiB or 24GiB, got \"lots\"");
	expect_error("host:\n  reserve: 0.1\n",
		     "t.yaml:2:12: host.reserve: expected a size like 512MiB or 24GiB, got \"0.1\"");
	expect_error("host:\n  limit: 0\n",
		     "t.yaml:2:10: host.limit: expected a size like 512MiB or 24GiB, got \"0\"");
	expect_error("host:\n  limit: 99999999999999999999\n",
		     "t.yaml:2:10: host.limit: out of range, expected a size below 16EiB, got "
		     "\"99999999999999999999\"");
	expect_error("host:\n  park_dir: park\n",
		     "t.yaml:2:13: host.park_dir: expected an absolute directory like "
		     "/var/lib/vramd/park, got \"park\"");
	expect_error("host:\n  park_dir: [a]\n",
		     "t.yaml:2:13: host.park_dir: expected an absolute directory like "
		     "/var/lib/vramd/park, got a list");
	expect_error("host:\n  reserv: 8GiB\n",
		     "t.yaml:2:3: host.reserv: unknown key 'reserv', did you mean 'reserve'?");
	expect_error("host: 8GiB\n",
		     "t.yaml:1:7: host: expected a mapping of keys to values, got \"8GiB\"");
	expect_error("hots:\n  reserve: 8GiB\n",
		     "t.yaml:1:1: hots: unknown key 'hots', did you mean 'host'?");

	/* the park files' paths must fit what the hook takes: the directory is bounded */
	char yaml[512], dir[VRAM_CONFIG_PARK_DIR_MAX + 2];
	memset(dir, 'p', sizeof(dir) - 1);
	dir[0] = '/';
	dir[sizeof(dir) - 1] = '\0';
	snprintf(yaml, sizeof(yaml), "host:\n  park_dir: %s\n", dir);
	expect_error(yaml, "t.yaml:2:13: host.park_dir: 161 bytes, expected a path of at most 160 "
			   "bytes (the park files' paths must fit what the hook takes)");
	dir[sizeof(dir) - 2] = '\0';
	snprintf(yaml, sizeof(yaml), "host:\n  park_dir: %s\n", dir);
	cfg = parse_ok(yaml);
	assert_int_equal(strlen(cfg->host.park_dir), VRAM_CONFIG_PARK_DIR_MAX);
	vram_config_free(cfg);
	/* so is the default one, <state_dir>/park, unless park_dir is set */
	dir[sizeof(dir) - 6] = '\0'; /* 156 bytes + "/park" = 161 */
	snprintf(yaml, sizeof(yaml), "daemon:\n  socket: /tmp/v.sock\n  state_dir: %s\n", dir);
	expect_error(yaml, "t.yaml:3:14: daemon.state_dir: the default park directory "
			   "(<state_dir>/park) would be 161 bytes, expected at most 160 bytes, or "
			   "host.park_dir set to a shorter one");
	snprintf(yaml, sizeof(yaml), "daemon:\n  socket: /tmp/v.sock\n  state_dir: %s\n"
		 "host: {park_dir: /var/park}\n", dir);
	cfg = parse_ok(yaml);
	vram_config_free(cfg);
}

/* What --check-config must refuse because it could never run. */
static void test_error_cannot_work(void **state)
{
	char yaml[1024];
	char longdir[200];
	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	snprintf(yaml, sizeof(yaml), "daemon:\n  socket: %s\n", longdir);
	expect_error(yaml, "t.yaml:2:11: daemon.socket: the control socket's path is 199 bytes, "
			   "expected a path of at most 102 bytes (a Unix socket's limit)");
	snprintf(yaml, sizeof(yaml), "daemon:\n  state_dir: %s\n", longdir);
	expect_error(yaml, "t.yaml:2:14: daemon.state_dir: the control socket's path "
			   "(<state_dir>/vramd.sock) is 210 bytes, expected a path of at most 102 "
			   "bytes (a Unix socket's limit)");
	expect_error(WL_A "    health: \"/he\\r\\nX-Evil: 1\"\n",
		     "t.yaml:4:13: workloads.a.health: a space or control character at byte 3, "
		     "expected an HTTP path like /health (percent-encode such characters)");
	expect_error(WL_A "    health: {path: \"/a b\"}\n",
		     "t.yaml:4:20: workloads.a.health.path: a space or control character at byte "
		     "2, expected an HTTP path like /health (percent-encode such characters)");
	expect_error("daemon:\n  listen: 127.0.0.1:8600\n" WL_A "    port: 8600\n",
		     "t.yaml:6:11: workloads.a.port: port 8600 is vramd's own (daemon.listen "
		     "127.0.0.1:8600), expected another port or auto");
	expect_error(WL_A "    port: 8600\n",
		     "t.yaml:4:11: workloads.a.port: port 8600 is vramd's own (daemon.listen "
		     "127.0.0.1:8600), expected another port or auto");
}

static void test_error_unknown_keys(void **state)
{
	expect_error(WL_A "    memroy: 1GiB\n",
		     "t.yaml:4:5: workloads.a.memroy: unknown key 'memroy', did you mean 'memory'?");
	expect_error("deamon:\n  listen: x\n",
		     "t.yaml:1:1: deamon: unknown key 'deamon', did you mean 'daemon'?");
	expect_error(WL_A "    zzzzzz: 1\n",
		     "t.yaml:4:5: workloads.a.zzzzzz: unknown key 'zzzzzz', expected one of: "
		     "cmd, container, env, cwd, gpus, memory, replicas, avoid, placement, fallback, start, "
		     "health, port, idle, priority, offload, restart, stop_grace, models, share, "
		     "compute, max_concurrency, queue_max, queue_timeout, first_byte_timeout, stream_timeout");
	expect_error(WL_A "    idle: {offload_afer: 1m}\n",
		     "t.yaml:4:12: workloads.a.idle.offload_afer: unknown key 'offload_afer', "
		     "did you mean 'offload_after'?");
	expect_error(WL_A "    health: {intervl: 1s}\n",
		     "t.yaml:4:14: workloads.a.health.intervl: unknown key 'intervl', did you "
		     "mean 'interval'?");
	expect_error("gpus:\n  reserv: 1GiB\n",
		     "t.yaml:2:3: gpus.reserv: unknown key 'reserv', did you mean 'reserve'?");
	/* In defaults only the keys that may have a default are suggested. */
	expect_error("defaults:\n  memory: 1GiB\n",
		     "t.yaml:2:3: defaults.memory: 'memory' cannot have a default, expected it "
		     "under each workload");
	expect_error("defaults:\n  prority: 1\n",
		     "t.yaml:2:3: defaults.prority: unknown key 'prority', did you mean 'priority'?");
}

static void test_error_values(void **state)
{
	expect_error(WL_A "    memory: lots\n",
		     "t.yaml:4:13: workloads.a.memory: expected a size like 24GiB or a fraction "
		     "like 0.8, got \"lots\"");
	expect_error(WL_A "    memory: 1.5\n",
		     "t.yaml:4:13: workloads.a.memory: expected a size like 24GiB or a fraction "
		     "like 0.8, got \"1.5\"");
	expect_error(WL_A "    memory: 0GiB\n",
		     "t.yaml:4:13: workloads.a.memory: expected a size like 24GiB or a fraction "
		     "like 0.8, got \"0GiB\"");
	expect_error(WL_A "    memory: [1]\n",
		     "t.yaml:4:13: workloads.a.memory: expected a size like 24GiB or a fraction "
		     "like 0.8, got a list");
	expect_error(WL_A "    memory:\n",
		     "t.yaml:4:5: workloads.a.memory: expected a size like 24GiB or a fraction "
		     "like 0.8, got nothing");
	expect_error(WL_A "    replicas: 0\n",
		     "t.yaml:4:15: workloads.a.replicas: expected a whole number from 1 to 64, "
		     "got \"0\"");
	expect_error(WL_A "    replicas: 65\n",
		     "t.yaml:4:15: workloads.a.replicas: expected a whole number from 1 to 64, "
		     "got \"65\"");
	expect_error(WL_A "    priority: high\n",
		     "t.yaml:4:15: workloads.a.priority: expected a whole number from -1000000 "
		     "to 1000000, got \"high\"");
	expect_error(WL_A "    port: 70000\n",
		     "t.yaml:4:11: workloads.a.port: expected auto or a port from 1 to 65535, "
		     "got \"70000\"");
	expect_error(WL_A "    placement: sprad\n",
		     "t.yaml:4:16: workloads.a.placement: expected one of pack, spread, "
		     "most-free, got \"sprad\" (did you mean 'spread'?)");
	expect_error(WL_A "    offload: swap\n",
		     "t.yaml:4:14: workloads.a.offload: expected one of auto, hook, checkpoint, "
		     "restart, hook+checkpoint, sim, got \"swap\"");
	expect_error(WL_A "    restart: {policy: sometimes}\n",
		     "t.yaml:4:23: workloads.a.restart.policy: expected one of on-failure, "
		     "always, never, got \"sometimes\"");
	expect_error(WL_A "    restart: {limit: 101}\n",
		     "t.yaml:4:22: workloads.a.restart.limit: expected a whole number from 0 to "
		     "100, got \"101\"");
	expect_error(WL_A "    restart: {window: 0}\n",
		     "t.yaml:4:23: workloads.a.restart.window: too short, expected at least 1ms, "
		     "got \"0\"");
	expect_error(WL_A "    restart: {backoff_max: never}\n",
		     "t.yaml:4:28: workloads.a.restart.backoff_max: expected a duration like "
		     "500ms, 90s, 10m or 1h, got \"never\"");
	expect_error(WL_A "    stop_grace: 10 parsecs\n",
		     "t.yaml:4:17: workloads.a.stop_grace: expected a duration like 500ms, 90s, "
		     "10m or 1h, got \"10 parsecs\"");
	expect_error(WL_A "    health: {interval: 1ms}\n",
		     "t.yaml:4:24: workloads.a.health.interval: too short, expected at least "
		     "10ms, got \"1ms\"");
	expect_error(WL_A "    idle: {offload_after: soon}\n",
		     "t.yaml:4:27: workloads.a.idle.offload_after: expected a duration like 90s, "
		     "10m or 1h, or never, got \"soon\"");
	expect_error(WL_A "    idle: 5m\n",
		     "t.yaml:4:11: workloads.a.idle: expected a mapping like {offload_after: 10m, "
		     "release_after: 1h}, or never, got \"5m\"");
	expect_error(WL_A "    share: mps\n    compute: 150%\n",
		     "t.yaml:5:14: workloads.a.compute: expected a percentage from 1 to 100 like "
		     "50%, got \"150%\"");
	expect_error(WL_A "    cwd: \"\"\n",
		     "t.yaml:4:10: workloads.a.cwd: expected a non-empty string, got \"\"");
	expect_error(WL_A "    health: ready\n",
		     "t.yaml:4:13: workloads.a.health: expected an HTTP path like /health, tcp "
		     "or none, got \"ready\"");
	expect_error(WL_A "    health: {path: ready}\n",
		     "t.yaml:4:20: workloads.a.health.path: expected an HTTP path like /health, "
		     "got \"ready\"");
	expect_error(WL_A "    health: {path: /h, tcp: true}\n",
		     "t.yaml:4:29: workloads.a.health.tcp: both path and tcp are set, expected "
		     "one of them");
	expect_error(WL_A "    health: {tcp: yes, path: /h}\n",
		     "t.yaml:4:19: workloads.a.health.tcp: both path and tcp are set, expected "
		     "one of them");
	expect_error(WL_A "    health: {tcp: maybe}\n",
		     "t.yaml:4:19: workloads.a.health.tcp: expected true or false, got \"maybe\"");
	expect_error(WL_A "    env: [A=1]\n",
		     "t.yaml:4:10: workloads.a.env: expected a mapping like {HF_HOME: /data/hf}, "
		     "got a list");
	expect_error(WL_A "    env: {1BAD: x, OK: [1]}\n",
		     "t.yaml:4:11: workloads.a.env.1BAD: invalid variable name, expected letters, "
		     "digits and _, got \"1BAD\"\n"
		     "t.yaml:4:24: workloads.a.env.OK: expected a string, got a list");
	expect_error(WL_A "    models: [a, {b: c}]\n",
		     "t.yaml:4:17: workloads.a.models[1]: expected a model name: a string, or "
		     "{name: alias, upstream: the name the model server knows}\n"
		     "t.yaml:4:18: workloads.a.models[1].b: unknown key 'b', expected name or upstream");
	expect_error(WL_A "    models: [a, [b]]\n",
		     "t.yaml:4:17: workloads.a.models[1]: expected a model name or "
		     "{name: alias, upstream: real-name}, got a list");
	expect_error(WL_A "    models: [{name: x, upstream: ''}]\n",
		     "t.yaml:4:34: workloads.a.models[0].upstream: expected a non-empty model name, got \"\"");
	expect_error(WL_A "    models: m\n",
		     "t.yaml:4:13: workloads.a.models: expected a list of model names like "
		     "[Qwen/Qwen2.5-7B] or {name: alias, upstream: real-name}, got \"m\"");
}

static void test_error_gpus(void **state)
{
	expect_error(WL_A "    gpus: [0, 2, 0]\n",
		     "t.yaml:4:18: workloads.a.gpus[2]: GPU 0 is listed twice, expected each GPU once");
	expect_error(WL_A "    gpus: [0, x]\n",
		     "t.yaml:4:15: workloads.a.gpus[1]: expected a GPU index from 0 to 63, got \"x\"");
	expect_error(WL_A "    gpus: []\n",
		     "t.yaml:4:11: workloads.a.gpus: an empty GPU list, expected indices like "
		     "[0, 2], or gpus: 0 for CPU only");
	expect_error(WL_A "    gpus: some\n",
		     "t.yaml:4:11: workloads.a.gpus: expected a GPU count like 1, a list of GPU "
		     "indices like [0, 2], or any (a count from 0 to 64), got \"some\"");
	expect_error(WL_A "    gpus: 65\n",
		     "t.yaml:4:11: workloads.a.gpus: expected a GPU count like 1, a list of GPU "
		     "indices like [0, 2], or any (a count from 0 to 64), got \"65\"");
	expect_error(WL_A "    gpus: {n: 1}\n",
		     "t.yaml:4:11: workloads.a.gpus: expected a GPU count like 1, a list of GPU "
		     "indices like [0, 2], or any, got a mapping");
	expect_error(WL_A "    gpus: 0\n    memory: 1GiB\n",
		     "t.yaml:5:13: workloads.a.memory: GPU memory for a CPU-only workload "
		     "(gpus: 0), expected no memory or gpus of 1 or more");
	/* Pinned GPUs with several replicas is fine: they share the pins. */
	struct vram_config *cfg = parse_ok(WL_A "    gpus: [1, 3]\n    replicas: 4\n");
	assert_int_equal(cfg->workloads[0].replicas, 4);
	assert_int_equal(cfg->workloads[0].gpus.pins[1], 3);
	vram_config_free(cfg);
}

static void test_error_cmd(void **state)
{
	expect_error("workloads:\n  a:\n    cmd: python3 server.py\n",
		     "t.yaml:3:10: workloads.a.cmd: commands are argv lists and never pass "
		     "through a shell, expected a list like [python3, server.py], got "
		     "\"python3 server.py\"");
	expect_error("workloads:\n  a:\n    cmd: []\n",
		     "t.yaml:3:10: workloads.a.cmd: empty command, expected a list like "
		     "[python3, server.py]");
	expect_error("workloads:\n  a:\n    cmd: [python3, [x]]\n",
		     "t.yaml:3:20: workloads.a.cmd[1]: expected a string, got a list");
	expect_error("workloads:\n  a:\n    gpus: 1\n",
		     "t.yaml:2:3: workloads.a: missing key 'cmd', expected an argv list like "
		     "[python3, server.py] (or container: {image: ...})");
	expect_error("workloads:\n  a:\n",
		     "t.yaml:2:3: workloads.a: expected a mapping with at least cmd, got nothing");
	expect_error("workloads:\n  a: [x]\n",
		     "t.yaml:2:6: workloads.a: expected a mapping with at least cmd, got a list");
	expect_error("workloads: [a, b]\n",
		     "t.yaml:1:12: workloads: expected a mapping of workload names to workloads, "
		     "got a list");
}

/* A container workload: every key read; cmd stays NULL. */
static void test_container(void **state)
{
	(void)state;
	struct vram_config *cfg = parse_ok(
		"workloads:\n  tts:\n    container:\n      image: localhost/tts:1\n"
		"      args: [--port, \"${PORT}\"]\n      runtime: podman\n"
		"      volumes: [\"/data/voices:/voices:ro\", \"hf:/root/.cache\"]\n"
		"      env: { HF_HOME: /root/.cache, EMPTY: }\n");
	const struct vram_workload_config *w = vram_config_find(cfg, "tts");
	assert_non_null(w);
	assert_null(w->cmd);
	assert_string_equal(w->container.image, "localhost/tts:1");
	assert_int_equal(w->container.n_args, 2);
	assert_string_equal(w->container.args[1], "${PORT}");
	assert_int_equal(w->container.runtime, VRAM_CONTAINER_PODMAN);
	assert_int_equal(w->container.n_volumes, 2);
	assert_string_equal(w->container.volumes[1], "hf:/root/.cache");
	assert_int_equal(w->container.n_env, 2);
	assert_string_equal(w->container.env[0], "HF_HOME=/root/.cache");
	assert_string_equal(w->container.env[1], "EMPTY=");
	assert_string_equal(vram_container_runtime_name(w->container.runtime), "podman");
	vram_config_free(cfg);
	cfg = parse_ok("workloads:\n  a:\n    container: {image: i}\n");
	assert_int_equal(vram_config_find(cfg, "a")->container.runtime, VRAM_CONTAINER_AUTO);
	vram_config_free(cfg);
}

/* What a user who got a container wrong is told: the key, what was expected. */
static void test_error_container(void **state)
{
	(void)state;
	expect_error(WL_A "    container: {image: i}\n",
		     "t.yaml:4:16: workloads.a.container: both cmd and container are set, expected "
		     "one of them (a container's command goes into container.args)");
	expect_error("workloads:\n  a:\n    container: {args: [x]}\n",
		     "t.yaml:3:16: workloads.a.container: missing key 'image', expected an image name "
		     "like docker.io/library/nginx:1.27");
	expect_error("workloads:\n  a:\n    container: {image: --privileged}\n",
		     "t.yaml:3:24: workloads.a.container.image: expected an image name like "
		     "docker.io/library/nginx:1.27 (1 to 255 printable characters, no spaces, not "
		     "beginning with '-'), got \"--privileged\"");
	expect_error("workloads:\n  a:\n    container: {image: i, runtime: lxc}\n",
		     "t.yaml:3:36: workloads.a.container.runtime: expected auto, podman or docker, "
		     "got \"lxc\"");
	expect_error("workloads:\n  a:\n    container: {image: i, volumes: [/data]}\n",
		     "t.yaml:3:37: workloads.a.container.volumes[0]: expected SOURCE:/path[:options] "
		     "(a host path or a volume name, then an absolute path in the container; no "
		     "spaces; at most 1024 bytes), got \"/data\"");
	expect_error("workloads:\n  a:\n    container: {image: i, env: {1X: y}}\n",
		     "t.yaml:3:33: workloads.a.container.env.1X: invalid variable name, expected "
		     "letters, digits and _, got \"1X\"");
	expect_error("workloads:\n  a:\n    container: {image: i}\n    cwd: /srv\n",
		     "t.yaml:4:10: workloads.a.cwd: cwd does not apply to a container, expected none "
		     "(the image's working directory applies; set it in the image)");
	expect_error("workloads:\n  a:\n    container: i\n",
		     "t.yaml:3:16: workloads.a.container: expected a mapping like {image: ..., args: "
		     "[...]}, got \"i\"");
	/* bounded: more volumes than allowed */
	char yaml[2048] = "workloads:\n  a:\n    container: {image: i, volumes: [";
	for (int i = 0; i < VRAM_CONTAINER_VOLUMES_MAX + 1; i++)
		strcat(yaml, i ? ",\"/d:/d\"" : "\"/d:/d\"");
	strcat(yaml, "]}\n");
	expect_error(yaml, "t.yaml:3:36: workloads.a.container.volumes: 65 entries, expected at most 64");
}

static void test_error_names(void **state)
{
	expect_error("workloads:\n  \"my model\":\n    cmd: [x]\n",
		     "t.yaml:2:3: workloads.my model: invalid workload name, expected 1 to 63 "
		     "characters of A-Z a-z 0-9 . _ -, got \"my model\"");
	char yaml[256];
	char name[65];
	memset(name, 'n', 64);
	name[64] = '\0';
	snprintf(yaml, sizeof(yaml), "workloads:\n  %s:\n    cmd: [x]\n", name);
	char expected[512];
	snprintf(expected, sizeof(expected),
		 "t.yaml:2:3: workloads.%s: invalid workload name, expected 1 to 63 characters "
		 "of A-Z a-z 0-9 . _ -, got \"%.48s...\"", name, name);
	expect_error(yaml, expected);
	/* 63 characters is the limit. */
	name[63] = '\0';
	snprintf(yaml, sizeof(yaml), "workloads:\n  %s:\n    cmd: [x]\n", name);
	struct vram_config *cfg = parse_ok(yaml);
	assert_string_equal(cfg->workloads[0].name, name);
	vram_config_free(cfg);
}

static void test_error_cross_workload(void **state)
{
	expect_error(WL_A "    avoid: [visoin]\n  vision:\n    cmd: [y]\n",
		     "t.yaml:4:13: workloads.a.avoid[0]: unknown workload 'visoin', did you "
		     "mean 'vision'?");
	expect_error(WL_A "    avoid: [zzz]\n",
		     "t.yaml:4:13: workloads.a.avoid[0]: unknown workload 'zzz', expected the "
		     "name of a workload in this file");
	expect_error(WL_A "    avoid: [a]\n",
		     "t.yaml:4:13: workloads.a.avoid[0]: a workload cannot avoid itself, "
		     "expected another workload's name");
	expect_error(WL_A "    models: [m1, m2]\n  b:\n    cmd: [y]\n    models: [m3, m1]\n",
		     "t.yaml:7:18: workloads.b.models[1]: model 'm1' is already routed to "
		     "workload 'a', expected each model name once");
	expect_error(WL_A "    models: [m1, m1]\n",
		     "t.yaml:4:18: workloads.a.models[1]: model 'm1' is already routed to "
		     "workload 'a', expected each model name once");
	expect_error(WL_A "    port: 9000\n  b:\n    cmd: [y]\n    port: 9000\n",
		     "t.yaml:7:11: workloads.b.port: port 9000 is already used by workload 'a', "
		     "expected a free port or auto");
	expect_error(WL_A "    port: 9000\n    replicas: 2\n",
		     "t.yaml:4:11: workloads.a.port: a fixed port cannot serve 2 replicas, "
		     "expected port: auto");
	expect_error(WL_A "    fallback: exclusive\n",
		     "t.yaml:4:15: workloads.a.fallback: exclusive only applies to share: mps, "
		     "expected none, share or cpu");
	expect_error(WL_A "    compute: 50%\n",
		     "t.yaml:4:14: workloads.a.compute: a compute share needs share: mps, "
		     "expected share: mps next to it");
}

static void test_error_daemon_and_gpus(void **state)
{
	expect_error("daemon:\n  listen: 0.0.0.0:8600\n",
		     "t.yaml:2:11: daemon.listen: 0.0.0.0:8600 is not a loopback address and "
		     "daemon.token is not set, expected a token or a listen address like "
		     "127.0.0.1:8600");
	expect_error("daemon:\n  listen: 8600\n",
		     "t.yaml:2:11: daemon.listen: expected HOST:PORT like 127.0.0.1:8600 or "
		     "[::1]:8600, got \"8600\"");
	expect_error("daemon:\n  listen: \"::1:8600\"\n",
		     "t.yaml:2:11: daemon.listen: expected HOST:PORT like 127.0.0.1:8600 or "
		     "[::1]:8600, got \"::1:8600\"");
	expect_error("daemon:\n  listen: 127.0.0.1:0\n",
		     "t.yaml:2:11: daemon.listen: expected HOST:PORT like 127.0.0.1:8600 or "
		     "[::1]:8600, got \"127.0.0.1:0\"");
	expect_error("daemon:\n  log_level: verbose\n",
		     "t.yaml:2:14: daemon.log_level: expected one of error, warn, info, debug, "
		     "got \"verbose\"");
	expect_error("daemon:\n  workload_log_max: big\n",
		     "t.yaml:2:21: daemon.workload_log_max: expected a size like 512MiB or "
		     "24GiB, got \"big\"");
	expect_error("daemon:\n  workload_log_keep: 101\n",
		     "t.yaml:2:22: daemon.workload_log_keep: expected a whole number from 0 to "
		     "100, got \"101\"");
	expect_error("daemon: [1]\n",
		     "t.yaml:1:9: daemon: expected a mapping of keys to values, got a list");
	expect_error("gpus:\n  backend: cuda\n",
		     "t.yaml:2:12: gpus.backend: expected one of auto, nvml, sim, got \"cuda\"");
	expect_error("gpus:\n  backend: sim\n",
		     "t.yaml: gpus.backend: sim needs GPUs, expected gpus.sim like 2x80GiB or "
		     "--gpus 2x80GiB");
	expect_error("gpus:\n  sim: 2x\n",
		     "t.yaml:2:8: gpus.sim: expected a list like 2x80GiB or 1x24GiB,1x80GiB, or "
		     "a list of {name, memory}, got \"2x\"");
	expect_error("gpus:\n  sim: 65x1GiB\n",
		     "t.yaml:2:8: gpus.sim: too many GPUs, expected at most 64");
	expect_error("gpus:\n  sim:\n    - name: A\n",
		     "t.yaml:3:7: gpus.sim[0]: missing key 'memory', expected a size like 80GiB");
	expect_error("gpus:\n  sim:\n    - 80GiB\n",
		     "t.yaml:3:7: gpus.sim[0]: expected {name: ..., memory: 80GiB}, got \"80GiB\"");
	expect_error("gpus:\n  reserve: 0.1\n",
		     "t.yaml:2:12: gpus.reserve: expected a size like 512MiB or 24GiB, got \"0.1\"");
	/* A sim list with the backend on auto is allowed: used when no GPU shows. */
	struct vram_config *cfg = parse_ok("gpus:\n  sim: 80GiB\n");
	assert_int_equal(cfg->gpus.backend, VRAM_GPU_BACKEND_AUTO);
	assert_int_equal(cfg->gpus.n_sim, 1);
	vram_config_free(cfg);
}

static void test_error_yaml(void **state)
{
	expect_error("- a\n- b\n",
		     "t.yaml:1:1: expected a mapping with daemon, gpus, host, defaults and "
		     "workloads, got a list");
	expect_error("workloads:\n  a:\n    cmd: [x, y\n",
		     "t.yaml:4:1: workloads.a.cmd: invalid YAML: flow sequence without a closing "
		     "bracket");
	expect_error("workloads:\n  a:\n    cmd: [x]\n    cmd: [y]\n",
		     "t.yaml:4:5: workloads.a.cmd: duplicate key, first set at line 3, expected "
		     "each key once");
	expect_error("workloads:\n  a: &base\n    cmd: [x]\n  b: *base\n",
		     "t.yaml:4:6: workloads.b: aliases (*name) are not supported, expected the "
		     "value written out");
	expect_error("daemon: {}\n---\ngpus: {}\n",
		     "t.yaml:2:1: a second YAML document, expected one document per file");
	expect_error("workloads:\n  {a: 1}: x\n",
		     "t.yaml:2:3: workloads: a key must be a plain string, got a mapping");

	char deep[200] = "a: ";
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	expect_error(deep, "t.yaml:1:35: a[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]"
			   "[0][0][0][0][0][0][0][0][0][0][0][0][0]: nested too deeply, expected "
			   "at most 32 levels");
}

static void test_error_encoding(void **state)
{
	/* libfyaml 0.7.12 loops forever on this one; it must not reach it. */
	expect_error("%\xe6", "t.yaml:1:2: invalid UTF-8 byte 0xe6, expected a UTF-8 text file");
	expect_error("workloads:\n  caf\xc3\xa9:\n    cmd: [\xc0\xaf]\n",
		     "t.yaml:3:11: invalid UTF-8 byte 0xc0, expected a UTF-8 text file");
	const char nul[] = "a: 1\n\0b: 2\n";
	struct vram_config *cfg = NULL;
	char *err = NULL;
	assert_int_equal(vram_config_parse(nul, sizeof(nul) - 1, "t.yaml", NULL, &cfg, &err),
			 -EINVAL);
	assert_string_equal(err, "t.yaml:2:1: a NUL byte, expected a UTF-8 text file");
	free(err);
	/* Valid UTF-8 passes through: a name with an accent is refused by the
	 * name rule, not by the decoder; the column counts characters. */
	expect_error("workloads:\n  caf\xc3\xa9:\n    cmd: [x]\n",
		     "t.yaml:2:3: workloads.caf\xc3\xa9: invalid workload name, expected 1 to 63 "
		     "characters of A-Z a-z 0-9 . _ -, got \"caf??\"");
	/* An unknown directive in valid UTF-8 is ignored, and does not hang. */
	cfg = parse_ok("%\xc3\xa6\n");
	assert_int_equal(cfg->n_workloads, 0);
	vram_config_free(cfg);
}

static void test_error_bounds(void **state)
{
	/* Too large: refused before parsing. */
	size_t len = VRAM_CONFIG_MAX_FILE_BYTES + 1;
	char *big = malloc(len);
	assert_non_null(big);
	memset(big, '#', len);
	struct vram_config *cfg = NULL;
	char *err = NULL;
	assert_int_equal(vram_config_parse(big, len, "big.yaml", NULL, &cfg, &err), -EFBIG);
	assert_null(cfg);
	assert_string_equal(err, "big.yaml: the file is 1048577 bytes, expected at most "
				 "1048576 bytes");
	free(err);
	free(big);

	/* Too many arguments. */
	char *yaml = malloc(8192);
	assert_non_null(yaml);
	strcpy(yaml, "workloads:\n  a:\n    cmd: [");
	for (int i = 0; i < VRAM_CONFIG_MAX_ARGS + 1; i++)
		strcat(yaml, i ? ",x" : "x");
	strcat(yaml, "]\n");
	expect_error(yaml, "t.yaml:3:10: workloads.a.cmd: 257 entries, expected at most 256");
	free(yaml);
}

static void test_error_many_collected(void **state)
{
	/* 25 bad workloads: 20 errors listed in file order, then a count. */
	char yaml[4096] = "workloads:\n";
	for (int i = 0; i < 25; i++) {
		size_t n = strlen(yaml);
		snprintf(yaml + n, sizeof(yaml) - n, "  w%02d: {cmd: [x], replicas: 0}\n", i);
	}
	struct vram_config *cfg = NULL;
	char *err = NULL;
	assert_int_equal(vram_config_parse(yaml, strlen(yaml), "t.yaml", NULL, &cfg, &err),
			 -EINVAL);
	assert_non_null(err);
	unsigned lines = 1;
	for (const char *p = err; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 21);
	assert_non_null(strstr(err, "t.yaml:2:29: workloads.w00.replicas: expected a whole "
				    "number from 1 to 64, got \"0\"\n"));
	assert_non_null(strstr(err, "t.yaml:21:29: workloads.w19.replicas:"));
	assert_null(strstr(err, "w20"));
	assert_non_null(strstr(err, "\nt.yaml: 5 more errors not shown"));
	free(err);
}

static void test_errors_sorted_by_position(void **state)
{
	/* The avoid check runs after the walk but is listed at its line. */
	expect_error("workloads:\n"
		     "  a:\n"
		     "    cmd: [x]\n"
		     "    avoid: [nope]\n"
		     "  b:\n"
		     "    cmd: [y]\n"
		     "    replicas: x\n",
		     "t.yaml:4:13: workloads.a.avoid[0]: unknown workload 'nope', expected the "
		     "name of a workload in this file\n"
		     "t.yaml:7:15: workloads.b.replicas: expected a whole number from 1 to 64, "
		     "got \"x\"");
}

/* ---- loading files ---- */

static void test_load_file(void **state)
{
	char dir[] = "/tmp/vram-test-config-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/c.yaml", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("workloads:\n  a:\n    cmd: [x]\n    memory: lots\n", f);
	fclose(f);

	struct vram_config *cfg = NULL;
	char *err = NULL;
	assert_int_equal(vram_config_load(path, NULL, &cfg, &err), -EINVAL);
	assert_null(cfg);
	char expected[512];
	snprintf(expected, sizeof(expected),
		 "%s:4:13: workloads.a.memory: expected a size like 24GiB or a fraction like "
		 "0.8, got \"lots\"", path);
	assert_string_equal(err, expected);
	free(err);

	f = fopen(path, "w");
	assert_non_null(f);
	fputs("workloads:\n  a:\n    cmd: [x]\n", f);
	fclose(f);
	assert_int_equal(vram_config_load(path, NULL, &cfg, &err), 0);
	assert_null(err);
	assert_string_equal(cfg->path, path);
	assert_int_equal(cfg->n_workloads, 1);
	vram_config_free(cfg);
	cfg = NULL;

	snprintf(expected, sizeof(expected), "%s: is a directory, expected a YAML file", dir);
	assert_int_equal(vram_config_load(dir, NULL, &cfg, &err), -EISDIR);
	assert_string_equal(err, expected);
	free(err);

	unlink(path);
	snprintf(expected, sizeof(expected), "%s: cannot open: No such file or directory", path);
	assert_int_equal(vram_config_load(path, NULL, &cfg, &err), -ENOENT);
	assert_null(cfg);
	assert_string_equal(err, expected);
	free(err);
	rmdir(dir);

	/* ret_error may be NULL. */
	assert_int_equal(vram_config_load(path, NULL, &cfg, NULL), -ENOENT);
	assert_int_equal(vram_config_parse("x: 1\n", 5, "t", NULL, &cfg, NULL), -EINVAL);
	assert_null(cfg);
}

static void test_examples_load(void **state)
{
	/* Every example config shipped in the tree loads without errors. */
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/examples", VRAM_SOURCE_ROOT);
	DIR *d = opendir(dir);
	if (!d)
		skip();
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len < 5 || strcmp(e->d_name + len - 5, ".yaml") != 0)
			continue;
		char path[2048];
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		struct vram_config *cfg = NULL;
		char *err = NULL;
		int r = vram_config_load(path, NULL, &cfg, &err);
		if (r != 0) {
			closedir(d);
			fail_msg("%s: %s", path, err ? err : "(no message)");
		}
		assert_true(cfg->n_workloads > 0);
		vram_config_free(cfg);
	}
	closedir(d);
}

/* ---- names and helpers ---- */

static void test_names(void **state)
{
	assert_string_equal(vram_placement_name(VRAM_PLACEMENT_MOST_FREE), "most-free");
	assert_string_equal(vram_fallback_name(VRAM_FALLBACK_EXCLUSIVE), "exclusive");
	assert_string_equal(vram_engine_name(VRAM_ENGINE_HOOK_CHECKPOINT), "hook+checkpoint");
	assert_string_equal(vram_restart_name(VRAM_RESTART_ON_FAILURE), "on-failure");
	assert_string_equal(vram_gpu_backend_name(VRAM_GPU_BACKEND_NVML), "nvml");
	assert_string_equal(vram_start_mode_name(VRAM_START_EAGER), "eager");
	assert_string_equal(vram_share_name(VRAM_SHARE_MPS), "mps");
	assert_string_equal(vram_health_kind_name(VRAM_HEALTH_TCP), "tcp");
	assert_string_equal(vram_placement_name((enum vram_placement)99), "unknown");
	vram_config_free(NULL);
}

static void test_edit_distance(void **state)
{
	assert_int_equal(vram_str_distance("memory", "memory"), 0);
	assert_int_equal(vram_str_distance("memroy", "memory"), 1);
	assert_int_equal(vram_str_distance("", "abc"), 3);
	assert_int_equal(vram_str_distance("kitten", "sitting"), 3);
	assert_int_equal(vram_str_distance("gpu", "gpus"), 1);
	char long_word[80];
	memset(long_word, 'a', sizeof(long_word) - 1);
	long_word[79] = '\0';
	assert_true(vram_str_distance(long_word, "a") == SIZE_MAX);

	const char *keys[] = { "cmd", "memory", "models", "idle" };
	assert_string_equal(vram_str_closest("memroy", keys, 4), "memory");
	assert_string_equal(vram_str_closest("idel", keys, 4), "idle");
	assert_string_equal(vram_str_closest("model", keys, 4), "models");
	assert_null(vram_str_closest("xyz", keys, 4));
	assert_null(vram_str_closest("ab", keys, 4));
	assert_null(vram_str_closest("x", keys, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_config_round_trip),
		cmocka_unit_test(test_builtin_defaults),
		cmocka_unit_test(test_defaults_then_workload),
		cmocka_unit_test(test_health_liveness_keys),
		cmocka_unit_test(test_empty_and_sparse_files),
		cmocka_unit_test(test_sim_gpu_string),
		cmocka_unit_test(test_token_allows_public_listen),
		cmocka_unit_test(test_overrides),
		cmocka_unit_test(test_override_errors),
		cmocka_unit_test(test_error_unknown_keys),
		cmocka_unit_test(test_error_values),
		cmocka_unit_test(test_error_gpus),
		cmocka_unit_test(test_error_cmd),
		cmocka_unit_test(test_container),
		cmocka_unit_test(test_error_container),
		cmocka_unit_test(test_error_names),
		cmocka_unit_test(test_error_cross_workload),
		cmocka_unit_test(test_error_daemon_and_gpus),
		cmocka_unit_test(test_error_yaml),
		cmocka_unit_test(test_error_encoding),
		cmocka_unit_test(test_error_bounds),
		cmocka_unit_test(test_error_many_collected),
		cmocka_unit_test(test_errors_sorted_by_position),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_examples_load),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_edit_distance),
		cmocka_unit_test(test_access_keys),
		cmocka_unit_test(test_error_cannot_work),
		cmocka_unit_test(test_host_section),
		cmocka_unit_test(test_socket_access),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_env_in_daemon_keys),
		cmocka_unit_test(test_model_aliases),
		cmocka_unit_test(test_model_server_health_default),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
