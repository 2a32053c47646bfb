/* SPDX-License-Identifier: MIT */
#include "config/diff.h"

#include <stdio.h>
#include <string.h>

/* Appends ", key" (or "key" first) to keys; truncation keeps it terminated. */
static void add_key(char *keys, size_t size, const char *key)
{
	size_t n = strnlen(keys, size);
	if (size && n < size - 1)
		snprintf(keys + n, size - n, "%s%s", n ? ", " : "", key);
}

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* NULL-terminated lists of n entries each. */
static bool strv_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!str_eq(a[i], b[i]))
			return false;
	return true;
}

/* Environments as sets: the order of `env:` entries does not change the process. */
static bool env_eq(const struct vram_workload_config *a, const struct vram_workload_config *b)
{
	if (a->n_env != b->n_env)
		return false;
	for (size_t i = 0; i < a->n_env; i++) {
		bool found = false;
		for (size_t j = 0; !found && j < b->n_env; j++)
			found = strcmp(a->env[i], b->env[j]) == 0;
		if (!found)
			return false;
	}
	return true;
}

static bool gpus_eq(const struct vram_gpu_request *a, const struct vram_gpu_request *b)
{
	if (a->kind != b->kind || a->count != b->count || a->n_pins != b->n_pins)
		return false;
	return a->n_pins == 0 || memcmp(a->pins, b->pins, a->n_pins * sizeof(*a->pins)) == 0;
}

static bool mem_eq(const struct vram_mem *a, const struct vram_mem *b)
{
	return a->is_fraction == b->is_fraction &&
	       (a->is_fraction ? a->fraction == b->fraction : a->bytes == b->bytes);
}

bool vram_diff_fixed(const struct vram_config *a, const struct vram_config *b, char *keys,
		     size_t size)
{
	if (size)
		keys[0] = '\0';
	bool same = true;
#define FIXED(cond, key)                    \
	do {                                \
		if (!(cond)) {              \
			add_key(keys, size, key); \
			same = false;       \
		}                           \
	} while (0)
	FIXED(str_eq(a->daemon.listen, b->daemon.listen), "daemon.listen");
	FIXED(str_eq(a->daemon.socket, b->daemon.socket), "daemon.socket");
	FIXED(str_eq(a->daemon.state_dir, b->daemon.state_dir), "daemon.state_dir");
	FIXED(str_eq(a->daemon.log, b->daemon.log), "daemon.log");
	FIXED(str_eq(a->daemon.token, b->daemon.token), "daemon.token");
	FIXED(str_eq(a->daemon.hook_library, b->daemon.hook_library), "daemon.hook_library");
	FIXED(a->daemon.workload_log_max_bytes == b->daemon.workload_log_max_bytes,
	      "daemon.workload_log_max");
	FIXED(a->daemon.workload_log_keep == b->daemon.workload_log_keep, "daemon.workload_log_keep");
	FIXED(a->daemon.port_range_start == b->daemon.port_range_start, "daemon.port_range_start");
	FIXED(strv_eq(a->daemon.allowed_hosts, a->daemon.n_allowed_hosts, b->daemon.allowed_hosts,
		      b->daemon.n_allowed_hosts),
	      "daemon.allowed_hosts");
	FIXED(strv_eq(a->daemon.cors_origins, a->daemon.n_cors_origins, b->daemon.cors_origins,
		      b->daemon.n_cors_origins),
	      "daemon.cors.origins");
	FIXED(str_eq(a->daemon.run_as, b->daemon.run_as), "daemon.run_as");
	FIXED(a->daemon.socket_mode == b->daemon.socket_mode, "daemon.socket_mode");
	FIXED(str_eq(a->daemon.socket_group, b->daemon.socket_group), "daemon.socket_group");
	FIXED(a->gpus.backend == b->gpus.backend, "gpus.backend");
	bool sim = a->gpus.n_sim == b->gpus.n_sim;
	for (size_t i = 0; sim && i < a->gpus.n_sim; i++)
		sim = str_eq(a->gpus.sim[i].name, b->gpus.sim[i].name) &&
		      a->gpus.sim[i].memory == b->gpus.sim[i].memory;
	FIXED(sim, "gpus.sim");
#undef FIXED
	return same;
}

enum vram_diff_kind vram_diff_workload(const struct vram_workload_config *a,
				       const struct vram_workload_config *b, char *keys,
				       size_t size)
{
	enum vram_diff_kind kind = VRAM_DIFF_SAME;
	if (size)
		keys[0] = '\0';
#define CHANGED(cond, key, k)                      \
	do {                                       \
		if (!(cond)) {                     \
			add_key(keys, size, key);  \
			if (kind < (k))            \
				kind = (k);        \
		}                                  \
	} while (0)
#define P VRAM_DIFF_PROCESS
#define L VRAM_DIFF_LIVE
	/* what the process is made of */
	CHANGED(strv_eq(a->cmd, a->n_cmd, b->cmd, b->n_cmd), "cmd", P);
	CHANGED(env_eq(a, b), "env", P);
	CHANGED(str_eq(a->cwd, b->cwd), "cwd", P);
	CHANGED(gpus_eq(&a->gpus, &b->gpus), "gpus", P);
	CHANGED(mem_eq(&a->memory, &b->memory), "memory", P);
	CHANGED(a->replicas == b->replicas, "replicas", P);
	CHANGED(a->port == b->port, "port", P);
	CHANGED(a->offload == b->offload, "offload", P);
	CHANGED(a->share == b->share, "share", P);
	CHANGED(a->compute_percent == b->compute_percent, "compute_percent", P);
	/* how vramd treats it: read at the moment it is needed */
	CHANGED(strv_eq(a->avoid, a->n_avoid, b->avoid, b->n_avoid), "avoid", L);
	CHANGED(a->placement == b->placement, "placement", L);
	CHANGED(a->fallback == b->fallback, "fallback", L);
	CHANGED(a->start == b->start, "start", L);
	CHANGED(a->health.kind == b->health.kind && str_eq(a->health.path, b->health.path) &&
			a->health.interval_ms == b->health.interval_ms &&
			a->health.timeout_ms == b->health.timeout_ms &&
			a->health.start_timeout_ms == b->health.start_timeout_ms &&
			a->health.failures == b->health.failures &&
			a->health.port_owner == b->health.port_owner,
		"health", L);
	CHANGED(a->idle.offload_after_ms == b->idle.offload_after_ms, "idle.offload_after", L);
	CHANGED(a->idle.release_after_ms == b->idle.release_after_ms, "idle.release_after", L);
	CHANGED(a->priority == b->priority, "priority", L);
	CHANGED(a->restart == b->restart && a->restart_backoff_max_ms == b->restart_backoff_max_ms,
		"restart", L);
	CHANGED(a->stop_grace_ms == b->stop_grace_ms, "stop_grace", L);
	CHANGED(strv_eq(a->models, a->n_models, b->models, b->n_models), "models", L);
	CHANGED(a->max_concurrency == b->max_concurrency, "max_concurrency", L);
	CHANGED(a->queue_max == b->queue_max && a->queue_timeout_ms == b->queue_timeout_ms, "queue",
		L);
	CHANGED(a->first_byte_timeout_ms == b->first_byte_timeout_ms, "first_byte_timeout", L);
	CHANGED(a->stream_timeout_ms == b->stream_timeout_ms, "stream_timeout", L);
#undef P
#undef L
#undef CHANGED
	return kind;
}

const char *vram_diff_kind_name(enum vram_diff_kind k)
{
	switch (k) {
	case VRAM_DIFF_SAME:
		return "same";
	case VRAM_DIFF_LIVE:
		return "live";
	case VRAM_DIFF_PROCESS:
		return "process";
	}
	return "?";
}
