/* SPDX-License-Identifier: MIT */
/*
 * For the unit tests of the manager's subscribers (the gateway, the
 * metrics): a manager on one simulated 24 GiB GPU, made from YAML text with
 * its state in a new temporary directory, and the manager's reload event
 * handed to a subscriber as the manager would hand it.
 */
#ifndef VRAM_TEST_SIM_MANAGER_H
#define VRAM_TEST_SIM_MANAGER_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>

#include "daemon/manager.h"

struct sim_manager {
	struct event_base *base; /* owned */
	struct vram_manager *m;  /* owned */
	char dir[64];            /* the state directory, removed by sim_manager_free */
	bool shut_down;
};

/*
 * Makes s->base and s->m from rest, the YAML after the daemon and gpus
 * sections ("defaults: ...", "workloads: ..."); with run, starts the manager.
 */
static inline void sim_manager_new(struct sim_manager *s, const char *rest, bool run)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/vram-test-sim-XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	char *text = NULL;
	assert_true(asprintf(&text, "daemon: { state_dir: %s }\n"
				    "gpus: { backend: sim, reserve: 0, sim: 1x24GiB }\n%s",
			     s->dir, rest) > 0);
	struct vram_config *cfg = NULL;
	char *err = NULL;
	if (vram_config_parse(text, strlen(text), "test.yaml", NULL, &cfg, &err) < 0)
		fail_msg("config: %s", err);
	free(text);
	struct vram_gpus *gpus = NULL;
	char note[256];
	assert_int_equal(vram_gpu_open(cfg, &gpus, note, sizeof(note)), 0);
	s->base = event_base_new();
	assert_non_null(s->base);
	assert_int_equal(vram_manager_new(s->base, cfg, gpus, &s->m), 0);
	if (run)
		assert_int_equal(vram_manager_run(s->m), 0);
}

static inline void sim_manager_on_shut_down(void *arg)
{
	struct sim_manager *s = arg;
	s->shut_down = true;
	event_base_loopbreak(s->base);
}

/* Stops every workload, frees the manager and the loop, removes the state directory. */
static inline void sim_manager_free(struct sim_manager *s)
{
	vram_manager_shutdown(s->m, sim_manager_on_shut_down, s);
	if (!s->shut_down)
		event_base_dispatch(s->base);
	assert_true(s->shut_down);
	vram_manager_free(s->m);
	event_base_free(s->base);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
	assert_int_equal(system(cmd), 0);
}

/* The names of array key of obj into names (at most max); returns how many. */
static inline size_t sim_manager_names(json_t *obj, const char *key, const char **names, size_t max)
{
	size_t i, n = 0;
	json_t *v;
	json_array_foreach(json_object_get(obj, key), i, v) {
		assert_true(json_is_string(v) && n < max);
		names[n++] = json_string_value(v);
	}
	return n;
}

/*
 * Calls the subscriber cb with a reload event whose names come from json,
 * {"added": [names], "removed": [names], "changed": [names]}: the event
 * stream's form of it (docs/api.md).
 */
static inline void sim_manager_reload(vram_event_cb cb, void *arg, const char *json)
{
	json_t *data = json_loads(json, 0, NULL);
	assert_non_null(data);
	const char *added[16], *removed[16], *changed[16];
	struct vram_reload_summary sum = {
		.added = added,
		.n_added = sim_manager_names(data, "added", added, 16),
		.removed = removed,
		.n_removed = sim_manager_names(data, "removed", removed, 16),
		.changed = changed,
		.n_changed = sim_manager_names(data, "changed", changed, 16),
	};
	struct vram_event ev = { .kind = VRAM_EVENT_RELOAD, .reload = &sum };
	cb(&ev, arg);
	json_decref(data);
}

#endif
