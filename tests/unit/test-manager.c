/* SPDX-License-Identifier: MIT */
/*
 * The manager end to end on simulated GPUs with the demo model server:
 * start → ready → offload → offloaded → restore → ready → release, with the
 * simulated GPU memory following each step; wrong-state and unknown-workload
 * errors; a kill -9 followed by a restart with backoff; idle offload that a
 * request in flight holds off; eviction of an idle workload to make room;
 * events; shutdown with no child left; share: mps against a stand-in
 * nvidia-cuda-mps-control (one daemon for both replicas, each client with its
 * MPS variables, the daemon quits with the workload; a crash fails the
 * workload with the MPS log and restarts it; fallback exclusive without the
 * binary, and a clear failure without the fallback); the disk tier: a park
 * of a ready workload (offloaded first, one action), restore from parked,
 * park_after, a park refused for the restart engine, a failed restore from
 * parked that restarts cold, and park files removed at start, on restore
 * and on exit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "core/engine.h"
#include "daemon/manager.h"
#include "daemon/waitact.h"

#define GiB VRAM_GiB
#define DEMO VRAM_BUILD_ROOT "/src/demo/vram-demo-server"
#define FAKE_MPS VRAM_SOURCE_ROOT "/tests/unit/data/mps-fake-control"

struct ctx {
	struct event_base *base;
	struct vram_manager *m;
	char dir[64];
	/* last action result */
	int results;
	struct vram_action_result res;
	char res_state[32];
	/* events */
	int n_events;
	char events[64][64]; /* "name:from>to" */
	enum vram_event_reason reasons[64]; /* of events[] */
	bool shut_down;
	struct vram_gpus *gpus; /* borrowed from the manager */
};

/*
 * Two 24 GiB GPUs, or one 10 GiB GPU for the eviction test. Ports for the
 * demo servers come from a range that depends on the pid, so that several
 * build directories can run this test at the same time.
 */
static void start_manager(struct ctx *c, const char *gpus, const char *extra_workload)
{
	char text[4096];
	snprintf(text, sizeof(text),
		 "daemon: { state_dir: %s, port_range_start: %u }\n"
		 "gpus: { backend: sim, reserve: 0, sim: %s }\n"
		 "defaults:\n"
		 "  idle: { offload_after: never, release_after: never }\n"
		 "  restart: { policy: on-failure, backoff_max: 4s }\n"
		 "  stop_grace: 2s\n"
		 "  health: { path: /health, interval: 50ms, start_timeout: 10s }\n"
		 "workloads:\n"
		 "  demo:\n"
		 "    cmd: [%s, --port, \"${PORT}\", --model, demo, --memory, 4GiB, --load-time, 150ms]\n"
		 "    memory: 4GiB\n"
		 "    models: [demo-model]\n"
		 "%s",
		 c->dir, 24000u + (unsigned)(getpid() % 400) * 100u, gpus, DEMO,
		 extra_workload ? extra_workload : "");
	struct vram_config *cfg = NULL;
	char *err = NULL;
	if (vram_config_parse(text, strlen(text), "test.yaml", NULL, &cfg, &err) < 0)
		fail_msg("config: %s", err);
	struct vram_gpus *g = NULL;
	char note[256];
	assert_int_equal(vram_gpu_open(cfg, &g, note, sizeof(note)), 0);
	assert_true(vram_gpu_is_sim(g));
	c->gpus = g;
	assert_int_equal(vram_manager_new(c->base, cfg, g, &c->m), 0);
	assert_int_equal(vram_manager_run(c->m), 0);
}

static void on_event(const struct vram_event *ev, void *arg)
{
	struct ctx *c = arg;
	assert_int_equal(ev->kind, VRAM_EVENT_STATE);
	if (c->n_events < 64) {
		c->reasons[c->n_events] = ev->reason;
		snprintf(c->events[c->n_events++], sizeof(c->events[0]), "%s:%s>%s", ev->workload,
			 vram_wl_state_name(ev->from), vram_wl_state_name(ev->to));
	}
}

/* The reason of the first event "name:from>to" seen, or -1 if none. */
static int reason_of(struct ctx *c, const char *event)
{
	for (int i = 0; i < c->n_events; i++)
		if (strcmp(c->events[i], event) == 0)
			return (int)c->reasons[i];
	return -1;
}

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	snprintf(c->dir, sizeof(c->dir), "/tmp/vram-test-manager-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	c->base = event_base_new();
	assert_non_null(c->base);
	/* 4 GiB at 16 GiB/s: offload and restore take a quarter second */
	vram_engine_sim_set_rate(16 * GiB, 16 * GiB);
	/* and a park or a restore from parked half a second; restores from parked succeed */
	vram_engine_sim_set_disk(8 * GiB, false);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	vram_manager_free(c->m);
	event_base_free(c->base);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		return -1;
	free(c);
	return 0;
}

static void on_result(const struct vram_action_result *res, void *arg)
{
	struct ctx *c = arg;
	c->results++;
	c->res = *res;
	snprintf(c->res_state, sizeof(c->res_state), "%s", res->state);
	c->res.state = c->res_state;
	c->res.workload = NULL;
	c->res.engine = NULL;
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

/* Runs the loop until cond(c) holds or seconds pass; returns cond(c). */
static bool run_until(struct ctx *c, bool (*cond)(struct ctx *, const void *), const void *arg,
		      double seconds)
{
	bool expired = false;
	struct event *guard = evtimer_new(c->base, on_guard, &expired);
	struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
	evtimer_add(guard, &tv);
	while (!cond(c, arg) && !expired)
		event_base_loop(c->base, EVLOOP_ONCE);
	event_free(guard);
	return cond(c, arg);
}

static bool have_results(struct ctx *c, const void *arg)
{
	return c->results >= *(const int *)arg;
}

static const char *state_of(struct ctx *c, const char *name, char *buf, size_t size)
{
	json_t *w = vram_manager_workload_json(c->m, name);
	assert_non_null(w);
	snprintf(buf, size, "%s", json_string_value(json_object_get(w, "state")));
	json_decref(w);
	return buf;
}

static bool in_state(struct ctx *c, const void *arg)
{
	const char *const *want = arg; /* {name, state} */
	char buf[32];
	return strcmp(state_of(c, want[0], buf, sizeof(buf)), want[1]) == 0;
}

static json_int_t wl_int(struct ctx *c, const char *name, const char *key)
{
	json_t *w = vram_manager_workload_json(c->m, name);
	json_int_t v = json_integer_value(json_object_get(w, key));
	json_decref(w);
	return v;
}

static uint64_t gpu_used(struct ctx *c, unsigned index)
{
	json_t *g = vram_manager_gpus_json(c->m);
	json_t *mem = json_object_get(json_array_get(g, index), "memory");
	uint64_t used = (uint64_t)json_integer_value(json_object_get(mem, "used"));
	json_decref(g);
	return used;
}

/* Acts and waits for the callback; returns the HTTP status the API answers it with. */
static int act_wait(struct ctx *c, const char *name, enum vram_action a)
{
	char err[1024];
	int want = c->results + 1;
	int r = vram_manager_act(c->m, name, a, on_result, c, NULL, err, sizeof(err));
	if (r < 0)
		fail_msg("act %d on %s: %d %s", (int)a, name, r, err);
	assert_int_equal(c->results, want - 1); /* never from inside act */
	assert_true(run_until(c, have_results, &want, 15));
	if (vram_waitact_status_of(&c->res) != 200)
		print_message("%s\n", c->res.message);
	return vram_waitact_status_of(&c->res);
}

/* Sets the idle timers (ms, VRAM_DURATION_NEVER or VRAM_IDLE_KEEP) of name, or of all. */
static int set_idle(struct ctx *c, const char *name, uint64_t offload_ms, uint64_t release_ms,
		    uint64_t park_ms, char *err, size_t err_size)
{
	struct vram_idle_set set = {offload_ms, release_ms, park_ms};
	return vram_manager_set_idle(c->m, name, &set, err, err_size);
}

static void test_lifecycle(void **state)
{
	struct ctx *c = *state;
	start_manager(c, "2x24GiB", NULL);
	struct vram_manager_sub *sub;
	assert_int_equal(vram_manager_subscribe(c->m, on_event, c, &sub), 0);
	char buf[32];
	assert_string_equal(state_of(c, "demo", buf, sizeof(buf)), "stopped"); /* lazy */
	assert_int_equal(gpu_used(c, 0) + gpu_used(c, 1), 0);

	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	assert_string_equal(c->res.state, "ready");
	pid_t pid = (pid_t)wl_int(c, "demo", "pid");
	assert_true(pid > 0);
	assert_int_equal(kill(pid, 0), 0);
	assert_int_equal(gpu_used(c, 0), 4 * GiB);
	unsigned port = 0;
	assert_int_equal(vram_manager_endpoint(c->m, "demo", &port), 0);
	assert_int_equal(port, (unsigned)wl_int(c, "demo", "port"));
	const char *by_model = NULL;
	assert_int_equal(vram_manager_find_model(c->m, "demo-model", &by_model, NULL), 0);
	assert_string_equal(by_model, "demo");
	const char *log = vram_manager_log_path(c->m, "demo");
	assert_non_null(strstr(log, "/logs/demo.log"));

	/* offload: offloading is observable, then the GPU memory is free, the process alive */
	char err[512];
	int want = c->results + 1;
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_OFFLOAD, on_result, c, NULL, err,
					  sizeof(err)), 0);
	assert_string_equal(state_of(c, "demo", buf, sizeof(buf)), "offloading");
	assert_true(run_until(c, have_results, &want, 10));
	assert_int_equal(vram_waitact_status_of(&c->res), 200);
	assert_string_equal(c->res.state, "offloaded");
	assert_int_equal(c->res.bytes, 4 * GiB);
	assert_true(c->res.seconds >= 0.2);
	assert_int_equal(gpu_used(c, 0), 0);
	assert_int_equal(kill(pid, 0), 0);
	json_t *compat = vram_manager_compat_status_json(c->m);
	assert_string_equal(json_string_value(json_object_get(json_object_get(compat, "demo"),
							      "location")), "CPU");
	json_decref(compat);

	/* wrong state: restore is the way back, offload again succeeds at once */
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_RELEASE, on_result, c, NULL, err,
					  sizeof(err)), 0); /* release is allowed from offloaded */
	vram_manager_waiter_cancel(NULL);
	assert_true(run_until(c, have_results, &(int){c->results + 1}, 10));
	assert_string_equal(c->res.state, "stopped");
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	pid = (pid_t)wl_int(c, "demo", "pid");
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_OFFLOAD), 200);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_RESTORE), 200);
	assert_string_equal(c->res.state, "ready");
	assert_int_equal(c->res.bytes, 4 * GiB);
	assert_int_equal(gpu_used(c, 0), 4 * GiB);
	assert_int_equal((pid_t)wl_int(c, "demo", "pid"), pid); /* the same process came back */

	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_RELEASE), 200);
	assert_string_equal(c->res.state, "stopped");
	assert_int_equal(gpu_used(c, 0), 0);
	for (int i = 0; i < 50 && kill(pid, 0) == 0; i++)
		usleep(10000);
	assert_int_equal(kill(pid, 0), -1);

	/* the event stream saw every change, in order */
	const char *expect[] = {
		"demo:stopped>starting", "demo:starting>ready", "demo:ready>offloading",
		"demo:offloading>offloaded", "demo:offloaded>stopping", "demo:stopping>stopped",
	};
	assert_true(c->n_events >= 6);
	for (size_t i = 0; i < 6; i++)
		assert_string_equal(c->events[i], expect[i]);
	assert_string_equal(c->events[c->n_events - 1], "demo:stopping>stopped");
	vram_manager_unsubscribe(sub);
}

static json_int_t mem_int(struct ctx *c, const char *name, const char *key)
{
	json_t *w = vram_manager_workload_json(c->m, name);
	json_int_t v = json_integer_value(json_object_get(json_object_get(w, "memory"), key));
	json_decref(w);
	return v;
}

static bool has_event(struct ctx *c, const char *event)
{
	return reason_of(c, event) >= 0;
}

static void test_park(void **state)
{
	struct ctx *c = *state;
	start_manager(c, "2x24GiB", NULL);
	struct vram_manager_sub *sub;
	assert_int_equal(vram_manager_subscribe(c->m, on_event, c, &sub), 0);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	pid_t pid = (pid_t)wl_int(c, "demo", "pid");

	/* park of a ready workload: offloaded, then parked, and the caller hears once, parked */
	int n0 = c->n_events;
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_PARK), 200);
	assert_string_equal(c->res.state, "parked");
	assert_int_equal(c->res.bytes, 4 * GiB);
	assert_non_null(strstr(c->res.message, "demo is parked (parked 4GiB in "));
	const char *path[] = {"demo:ready>offloading", "demo:offloading>offloaded",
			      "demo:offloaded>parking", "demo:parking>parked"};
	assert_int_equal(c->n_events - n0, 4);
	for (int i = 0; i < 4; i++)
		assert_string_equal(c->events[n0 + i], path[i]);
	assert_int_equal(reason_of(c, "demo:parking>parked"), VRAM_REASON_PARKED);
	/* neither GPU nor host memory: its bytes are on disk; the process lives */
	assert_int_equal(gpu_used(c, 0) + gpu_used(c, 1), 0);
	assert_int_equal(mem_int(c, "demo", "offloaded_bytes"), 0);
	assert_int_equal(mem_int(c, "demo", "parked_bytes"), 4 * GiB);
	assert_int_equal(kill(pid, 0), 0);
	json_t *compat = vram_manager_compat_status_json(c->m);
	assert_string_equal(json_string_value(json_object_get(json_object_get(compat, "demo"),
							      "location")), "disk");
	json_decref(compat);

	/* parked already; an offload of a parked one says what it is and what to do */
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_PARK), 200);
	assert_string_equal(c->res.message, "demo is already parked");
	char err[512];
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_OFFLOAD, on_result, c, NULL, err,
					  sizeof(err)), -EBUSY);
	assert_string_equal(err, "demo is parked; offload is allowed when it is ready (or already "
				 "offloading/offloaded)");

	/* restore from disk: the same process, at the disk's rate */
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_RESTORE), 200);
	assert_string_equal(c->res.state, "ready");
	assert_int_equal(c->res.bytes, 4 * GiB);
	assert_true(c->res.seconds >= 0.4);
	assert_int_equal((pid_t)wl_int(c, "demo", "pid"), pid);
	assert_int_equal(gpu_used(c, 0) + gpu_used(c, 1), 4 * GiB);
	assert_int_equal(mem_int(c, "demo", "parked_bytes"), 0);

	/* park of an offloaded one; then a start (a gateway request's way in) restores it */
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_OFFLOAD), 200);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_PARK), 200);
	assert_string_equal(c->res.state, "parked");
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	assert_string_equal(c->res.state, "ready");
	assert_int_equal((pid_t)wl_int(c, "demo", "pid"), pid);

	/* park_after: idle past offload_after it is offloaded, past park_after parked */
	c->n_events = 0;
	assert_int_equal(set_idle(c, "demo", 100, VRAM_IDLE_KEEP, 600, err, sizeof(err)), 0);
	json_t *w = vram_manager_workload_json(c->m, "demo");
	assert_true(json_real_value(json_object_get(json_object_get(w, "timeouts"),
						    "park_after_seconds")) == 0.6);
	json_decref(w);
	const char *parked[] = {"demo", "parked"};
	assert_true(run_until(c, in_state, parked, 5));
	assert_int_equal(reason_of(c, "demo:ready>offloading"), VRAM_REASON_IDLE);
	assert_int_equal(reason_of(c, "demo:offloaded>parking"), VRAM_REASON_IDLE);
	assert_int_equal(set_idle(c, "demo", VRAM_DURATION_NEVER, VRAM_IDLE_KEEP, VRAM_DURATION_NEVER,
				  err, sizeof(err)), 0);
	/* a parked process that ends cleanly is stopped, not failed */
	assert_int_equal(kill(pid, SIGTERM), 0);
	const char *stopped[] = {"demo", "stopped"};
	assert_true(run_until(c, in_state, stopped, 5));
	assert_int_equal(wl_int(c, "demo", "restarts"), 0);
	assert_true(has_event(c, "demo:parked>stopped"));
	vram_manager_unsubscribe(sub);
}

/* The manager with demo and "cpu", a CPU-only demo server with the restart engine. */
static void start_with_cpu(struct ctx *c)
{
	char cpu[512];
	snprintf(cpu, sizeof(cpu),
		 "  cpu:\n"
		 "    cmd: [%s, --port, \"${PORT}\", --load-time, 50ms]\n"
		 "    gpus: 0\n"
		 "    offload: restart\n"
		 "    health: { tcp: true, interval: 50ms }\n",
		 DEMO);
	start_manager(c, "2x24GiB", cpu);
}

static void test_park_refused_and_failed_restore(void **state)
{
	struct ctx *c = *state;
	start_with_cpu(c);
	/* the restart engine stops the process: nothing to park, said at once */
	assert_int_equal(act_wait(c, "cpu", VRAM_ACTION_START), 200);
	char err[512];
	assert_int_equal(vram_manager_act(c->m, "cpu", VRAM_ACTION_PARK, on_result, c, NULL, err,
					  sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "cpu cannot be parked: its offload engine restart stops the "
				    "process"));
	assert_string_equal(state_of(c, "cpu", (char[32]){0}, 32), "ready"); /* untouched */

	/* a restore from parked that fails (a checksum mismatch) fails it; it starts again cold */
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	pid_t pid = (pid_t)wl_int(c, "demo", "pid");
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_PARK), 200);
	vram_engine_sim_set_disk(0, true);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_RESTORE), 500);
	vram_engine_sim_set_disk(0, false);
	assert_string_equal(c->res.state, "failed");
	assert_non_null(strstr(c->res.message, "restore from disk with sim failed: checksum mismatch"));
	const char *ready[] = {"demo", "ready"};
	assert_true(run_until(c, in_state, ready, 10));
	pid_t again = (pid_t)wl_int(c, "demo", "pid");
	assert_true(again > 0 && again != pid);
	assert_int_equal(wl_int(c, "demo", "restarts"), 1);
	assert_int_equal(mem_int(c, "demo", "parked_bytes"), 0);
	for (int i = 0; i < 100 && kill(pid, 0) == 0; i++)
		usleep(10000);
	assert_int_equal(kill(pid, 0), -1);
}

/* Writes an empty file dir/name. */
static void touch(const char *dir, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	close(fd);
}

static bool exists(const char *dir, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

static bool file_gone(struct ctx *c, const void *arg)
{
	return access(arg, F_OK) < 0;
}

static void test_park_files_removed(void **state)
{
	struct ctx *c = *state;
	char dir[128], name[64], path[256];
	snprintf(dir, sizeof(dir), "%s/park", c->dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	/* at start: the file of a pid that no longer runs goes, others stay */
	pid_t dead = fork();
	if (dead == 0)
		_exit(0);
	assert_int_equal(waitpid(dead, NULL, 0), dead);
	char dead_name[64], live_name[64];
	snprintf(dead_name, sizeof(dead_name), "old-%d.park", (int)dead);
	snprintf(live_name, sizeof(live_name), "other-%d.park", (int)getpid());
	touch(dir, dead_name);
	touch(dir, live_name);
	touch(dir, "notes.txt");
	start_manager(c, "2x24GiB", NULL);
	assert_false(exists(dir, dead_name));
	assert_true(exists(dir, live_name));
	assert_true(exists(dir, "notes.txt"));

	/* after a restore from parked, the file has been read back: it goes */
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	pid_t pid = (pid_t)wl_int(c, "demo", "pid");
	snprintf(name, sizeof(name), "demo-%d.park", (int)pid);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_PARK), 200);
	touch(dir, name); /* where the hook would have written it */
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_RESTORE), 200);
	assert_false(exists(dir, name));

	/* a process that exits takes its file with it (a release stops it) */
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_PARK), 200);
	touch(dir, name);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_RELEASE), 200);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_true(run_until(c, file_gone, path, 5));
	assert_true(exists(dir, live_name));
}

static void test_errors(void **state)
{
	struct ctx *c = *state;
	start_manager(c, "2x24GiB", NULL);
	char err[512];
	assert_int_equal(vram_manager_act(c->m, "nope", VRAM_ACTION_START, on_result, c, NULL, err,
					  sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "nope"));
	assert_non_null(strstr(err, "demo")); /* names what exists */
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_OFFLOAD, on_result, c, NULL, err,
					  sizeof(err)), -EBUSY);
	assert_string_equal(err, "demo is stopped; offload is allowed when it is ready "
				 "(or already offloading/offloaded)");
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_RESTORE, on_result, c, NULL, err,
					  sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "stopped"));
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_RELEASE, on_result, c, NULL, err,
					  sizeof(err)), 0); /* already stopped: succeeds */
	assert_true(run_until(c, have_results, &(int){1}, 5));
	assert_int_equal(vram_waitact_status_of(&c->res), 200);
	assert_string_equal(c->res.message, "demo is already stopped");
	assert_int_equal(set_idle(c, "nope", 1, 1, VRAM_IDLE_KEEP, err, sizeof(err)), -ENOENT);
	assert_int_equal(vram_manager_request_begin(c->m, "nope"), -ENOENT);

	/* a cancelled waiter is never called, the action goes on */
	struct vram_manager_waiter *wt = NULL;
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_START, on_result, c, &wt, err,
					  sizeof(err)), 0);
	vram_manager_waiter_cancel(wt);
	const char *ready[] = {"demo", "ready"};
	assert_true(run_until(c, in_state, ready, 10));
	assert_int_equal(c->results, 1);
	/* starting while starting/ready is fine; offload while starting is not */
}

static bool restarted(struct ctx *c, const void *arg)
{
	return wl_int(c, "demo", "restarts") >= 1 && in_state(c, (const char *[]){"demo", "ready"});
}

static void test_crash_restarts_with_backoff(void **state)
{
	struct ctx *c = *state;
	start_manager(c, "2x24GiB", NULL);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	pid_t pid = (pid_t)wl_int(c, "demo", "pid");
	kill(pid, SIGKILL);
	const char *failed[] = {"demo", "failed"};
	assert_true(run_until(c, in_state, failed, 5));
	json_t *w = vram_manager_workload_json(c->m, "demo");
	assert_non_null(strstr(json_string_value(json_object_get(w, "last_error")),
			       "killed by signal 9"));
	assert_non_null(strstr(json_string_value(json_object_get(w, "log_tail")), "loaded"));
	assert_true(json_real_value(json_object_get(w, "next_restart_seconds")) > 0.5);
	json_decref(w);
	assert_int_equal(gpu_used(c, 0), 0);
	/* 1 s of backoff, not at once */
	const char *ready[] = {"demo", "ready"};
	assert_false(run_until(c, in_state, ready, 0.6));
	assert_true(run_until(c, restarted, NULL, 5));
	pid_t again = (pid_t)wl_int(c, "demo", "pid");
	assert_true(again > 0 && again != pid);
	assert_int_equal(gpu_used(c, 0), 4 * GiB);

	/* the second crash waits twice as long */
	kill(again, SIGKILL);
	assert_true(run_until(c, in_state, failed, 5));
	w = vram_manager_workload_json(c->m, "demo");
	assert_true(json_real_value(json_object_get(w, "next_restart_seconds")) > 1.5);
	json_decref(w);
	/* an explicit stop cancels the pending restart */
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_STOP), 200);
	assert_false(run_until(c, in_state, ready, 2.5));
	assert_string_equal(c->res.state, "stopped");
}

static void test_idle_offload_waits_for_requests(void **state)
{
	struct ctx *c = *state;
	start_manager(c, "2x24GiB", NULL);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	char err[256];
	assert_int_equal(vram_manager_request_begin(c->m, "demo"), 0);
	assert_int_equal(set_idle(c, NULL, 200, VRAM_IDLE_KEEP, VRAM_IDLE_KEEP, err, sizeof(err)), 0);
	const char *offloaded[] = {"demo", "offloaded"};
	/* a request in flight: several ticks pass and nothing happens */
	assert_false(run_until(c, in_state, offloaded, 1.2));
	assert_int_equal(vram_manager_request_end(c->m, "demo"), 0);
	assert_true(run_until(c, in_state, offloaded, 3));
	assert_int_equal(gpu_used(c, 0), 0);
	/* release_after then stops it */
	assert_int_equal(set_idle(c, "demo", VRAM_IDLE_KEEP, 300, VRAM_IDLE_KEEP, err, sizeof(err)), 0);
	const char *stopped[] = {"demo", "stopped"};
	assert_true(run_until(c, in_state, stopped, 3));
	json_t *w = vram_manager_workload_json(c->m, "demo");
	json_t *t = json_object_get(w, "timeouts");
	assert_true(json_real_value(json_object_get(t, "offload_after_seconds")) == 0.2);
	assert_true(json_real_value(json_object_get(t, "release_after_seconds")) == 0.3);
	json_decref(w);
}

static void test_eviction(void **state)
{
	struct ctx *c = *state;
	/* one 10 GiB GPU: demo (4 GiB) and big (8 GiB) do not fit together */
	char big[512];
	snprintf(big, sizeof(big),
		 "  big:\n"
		 "    cmd: [%s, --port, \"${PORT}\", --load-time, 50ms]\n"
		 "    memory: 8GiB\n",
		 DEMO);
	start_manager(c, "1x10GiB", big);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	assert_int_equal(vram_manager_subscribe(c->m, on_event, c, NULL), 0);
	assert_int_equal(act_wait(c, "big", VRAM_ACTION_START), 200);
	char buf[32];
	assert_string_equal(state_of(c, "demo", buf, sizeof(buf)), "offloaded"); /* evicted */
	/* what metrics count evictions by, and why big waited */
	assert_int_equal(reason_of(c, "demo:ready>offloading"), VRAM_REASON_EVICTED);
	assert_int_equal(reason_of(c, "big:stopped>starting"), VRAM_REASON_WAIT_ROOM);
	assert_int_equal(reason_of(c, "big:starting>ready"), VRAM_REASON_HEALTHY);
	assert_int_equal(gpu_used(c, 0), 8 * GiB);
	/* big is busy now: demo cannot come back, and says why with numbers */
	assert_int_equal(vram_manager_request_begin(c->m, "big"), 0);
	char err[1024];
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_RESTORE, on_result, c, NULL, err,
					  sizeof(err)), -ENOSPC);
	assert_non_null(strstr(err, "GPU0"));
	assert_string_equal(state_of(c, "demo", buf, sizeof(buf)), "offloaded"); /* unchanged */
	assert_int_equal(vram_manager_request_end(c->m, "big"), 0);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_RESTORE), 200);
	assert_string_equal(state_of(c, "big", buf, sizeof(buf)), "offloaded");
}

static void test_restart_engine(void **state)
{
	struct ctx *c = *state;
	start_with_cpu(c);
	assert_int_equal(act_wait(c, "cpu", VRAM_ACTION_START), 200);
	pid_t pid = (pid_t)wl_int(c, "cpu", "pid");
	json_t *w = vram_manager_workload_json(c->m, "cpu");
	assert_string_equal(json_string_value(json_object_get(json_object_get(w, "engine"), "name")),
			    "restart");
	assert_int_equal(json_array_size(json_object_get(w, "gpus")), 0);
	json_decref(w);
	/* offload with restart: the process goes, the state says offloaded */
	assert_int_equal(act_wait(c, "cpu", VRAM_ACTION_OFFLOAD), 200);
	assert_string_equal(c->res.state, "offloaded");
	for (int i = 0; i < 50 && kill(pid, 0) == 0; i++)
		usleep(10000);
	assert_int_equal(kill(pid, 0), -1);
	assert_int_equal(wl_int(c, "cpu", "pid"), 0);
	/* restore starts it again and waits for its health check */
	assert_int_equal(act_wait(c, "cpu", VRAM_ACTION_RESTORE), 200);
	assert_string_equal(c->res.state, "ready");
	pid_t again = (pid_t)wl_int(c, "cpu", "pid");
	assert_true(again > 0 && again != pid);
	assert_int_equal(wl_int(c, "cpu", "restarts"), 0); /* not a crash */
	/* the CPU workload holds no GPU memory */
	json_t *compat = vram_manager_compat_status_json(c->m);
	assert_string_equal(json_string_value(json_object_get(json_object_get(compat, "cpu"),
							      "location")), "CPU");
	json_decref(compat);
}

static void test_start_failure(void **state)
{
	struct ctx *c = *state;
	/* exits with status 3 before it is healthy: failed, with the status and the log tail */
	char bad[512];
	snprintf(bad, sizeof(bad),
		 "  bad:\n"
		 "    cmd: [%s, --port, \"${PORT}\", --load-time, 5s, --fail-after, 100ms]\n"
		 "    memory: 1GiB\n"
		 "    restart: { policy: never }\n",
		 DEMO);
	start_manager(c, "2x24GiB", bad);
	assert_int_equal(act_wait(c, "bad", VRAM_ACTION_START), 500);
	assert_string_equal(c->res.state, "failed");
	assert_non_null(strstr(c->res.message, "exited with status 3"));
	json_t *w = vram_manager_workload_json(c->m, "bad");
	assert_non_null(strstr(json_string_value(json_object_get(w, "log_tail")), "--fail-after"));
	assert_true(json_is_null(json_object_get(w, "next_restart_seconds"))); /* policy never */
	json_decref(w);
	assert_int_equal(gpu_used(c, 0) + gpu_used(c, 1), 0);
}

/*
 * A kept process comes back on another GPU of the same model when its own has
 * no room, and status shows where it is now.
 */
static void test_restore_onto_another_gpu(void **state)
{
	struct ctx *c = *state;
	char moving[512];
	snprintf(moving, sizeof(moving),
		 "  moving:\n"
		 "    cmd: [%s, --port, \"${PORT}\", --load-time, 50ms]\n"
		 "    memory: 4GiB\n"
		 "    offload: checkpoint\n",
		 DEMO);
	start_manager(c, "2x24GiB", moving);
	assert_int_equal(act_wait(c, "moving", VRAM_ACTION_START), 200);
	json_t *w = vram_manager_workload_json(c->m, "moving");
	json_t *g0 = json_array_get(json_object_get(w, "gpus"), 0);
	assert_int_equal(json_integer_value(json_object_get(g0, "index")), 0);
	char uuid0[96];
	snprintf(uuid0, sizeof(uuid0), "%s", json_string_value(json_object_get(g0, "uuid")));
	json_decref(w);
	assert_int_equal(act_wait(c, "moving", VRAM_ACTION_OFFLOAD), 200);
	assert_int_equal(gpu_used(c, 0), 0);
	/* something vramd does not manage fills GPU0 */
	assert_int_equal(vram_gpu_sim_charge(c->gpus, 0, 999999, 22 * GiB), 0);
	assert_int_equal(act_wait(c, "moving", VRAM_ACTION_RESTORE), 200);
	assert_string_equal(c->res.state, "ready");
	w = vram_manager_workload_json(c->m, "moving");
	json_t *g = json_array_get(json_object_get(w, "gpus"), 0);
	assert_int_equal(json_integer_value(json_object_get(g, "index")), 1);
	const char *uuid1 = json_string_value(json_object_get(g, "uuid"));
	assert_non_null(uuid1);
	assert_true(uuid1[0] && strcmp(uuid1, uuid0) != 0);
	json_t *in0 = json_array_get(json_object_get(w, "instances"), 0);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(in0, "gpus"), 0),
							    "index")), 1);
	json_decref(w);
	assert_int_equal(gpu_used(c, 1), 4 * GiB);
	assert_int_equal(gpu_used(c, 0), 22 * GiB);
}

/* ---- share: mps ---- */

static char *slurp_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *buf = calloc(1, 1 << 16);
	size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
	fclose(f);
	if (ret_len)
		*ret_len = n;
	return buf;
}

/* The value of name in the environment of pid, or "" (static buffer). */
static const char *env_of(pid_t pid, const char *name)
{
	static char val[512];
	char path[64];
	size_t len = 0;
	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	char *env = slurp_file(path, &len);
	val[0] = '\0';
	for (size_t off = 0; env && off < len; off += strlen(env + off) + 1) {
		size_t n = strlen(name);
		if (strncmp(env + off, name, n) == 0 && env[off + n] == '=')
			snprintf(val, sizeof(val), "%s", env + off + n + 1);
	}
	free(env);
	return val;
}

static json_t *mps_daemons(struct ctx *c)
{
	json_t *st = vram_manager_status_json(c->m);
	json_t *d = json_incref(json_object_get(json_object_get(st, "mps"), "daemons"));
	json_decref(st);
	return d;
}

static bool no_mps_daemon(struct ctx *c, const void *arg)
{
	json_t *d = mps_daemons(c);
	size_t n = json_array_size(d);
	json_decref(d);
	return n == 0;
}

static const char mps_workload[] =
	"  rerank:\n"
	"    cmd: [" DEMO ", --port, \"${PORT}\", --load-time, 50ms]\n"
	"    memory: 2GiB\n"
	"    gpus: [0]\n"
	"    replicas: 2\n"
	"    share: mps\n"
	"    compute: 50\n";

static void test_mps_two_replicas_one_daemon(void **state)
{
	struct ctx *c = *state;
	setenv("VRAM_MPS_CONTROL", FAKE_MPS, 1);
	start_manager(c, "2x24GiB", mps_workload);
	assert_int_equal(act_wait(c, "rerank", VRAM_ACTION_START), 200);

	json_t *d = mps_daemons(c);
	assert_int_equal(json_array_size(d), 1);
	json_t *d0 = json_array_get(d, 0);
	assert_string_equal(json_string_value(json_object_get(d0, "state")), "running");
	pid_t ctl = (pid_t)json_integer_value(json_object_get(d0, "control_pid"));
	assert_true(ctl > 0);
	assert_int_equal(json_array_size(json_object_get(d0, "clients")), 2);
	char pipe_dir[512];
	snprintf(pipe_dir, sizeof(pipe_dir), "%s", json_string_value(json_object_get(d0, "pipe_dir")));
	json_decref(d);

	json_t *w = vram_manager_workload_json(c->m, "rerank");
	json_t *mps = json_object_get(w, "mps");
	assert_true(json_is_true(json_object_get(mps, "used")));
	json_t *clients = json_object_get(mps, "clients");
	assert_int_equal(json_array_size(clients), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *cl = json_array_get(clients, i);
		pid_t pid = (pid_t)json_integer_value(json_object_get(cl, "pid"));
		assert_true(pid > 0);
		assert_int_equal(json_integer_value(json_object_get(cl, "control_pid")), ctl);
		assert_string_equal(json_string_value(json_object_get(cl, "mem_limit")), "0=2G");
		assert_int_equal(json_integer_value(json_object_get(cl, "compute_percent")), 50);
		/* what the process really got */
		assert_string_equal(env_of(pid, "CUDA_MPS_PIPE_DIRECTORY"), pipe_dir);
		assert_string_equal(env_of(pid, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"), "0=2G");
		assert_string_equal(env_of(pid, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), "50");
		/* index naming (the default): the MPS server numbers its GPU from 0 */
		assert_string_equal(env_of(pid, "CUDA_VISIBLE_DEVICES"), "0");
	}
	json_decref(w);
	char path[512];
	snprintf(path, sizeof(path), "%s/mps/gpu0/log/calls.log", c->dir);
	char *calls = slurp_file(path, NULL);
	assert_non_null(calls);
	assert_non_null(strstr(calls, "start args=-d"));
	assert_null(strstr(strstr(calls, "start args=-d") + 1, "start args=-d")); /* once */
	free(calls);

	/* the workload stops: its clients go, and the daemon quits with the last */
	assert_int_equal(act_wait(c, "rerank", VRAM_ACTION_STOP), 200);
	assert_true(run_until(c, no_mps_daemon, NULL, 10));
	for (int i = 0; i < 200 && kill(ctl, 0) == 0; i++)
		usleep(10000);
	assert_int_equal(kill(ctl, 0), -1);
	unsetenv("VRAM_MPS_CONTROL");
}

static bool mps_crashed_and_back(struct ctx *c, const void *arg)
{
	return wl_int(c, "rerank", "restarts") >= 1 && in_state(c, (const char *const[]){"rerank", "ready"});
}

static void test_mps_crash_fails_and_restarts(void **state)
{
	struct ctx *c = *state;
	setenv("VRAM_MPS_CONTROL", FAKE_MPS, 1);
	start_manager(c, "2x24GiB", mps_workload);
	assert_int_equal(vram_manager_subscribe(c->m, on_event, c, NULL), 0);
	assert_int_equal(act_wait(c, "rerank", VRAM_ACTION_START), 200);
	json_t *d = mps_daemons(c);
	pid_t ctl = (pid_t)json_integer_value(json_object_get(json_array_get(d, 0), "control_pid"));
	json_decref(d);
	assert_true(ctl > 0);
	kill(ctl, SIGKILL);
	const char *failed[] = {"rerank", "failed"};
	assert_true(run_until(c, in_state, failed, 10));
	json_t *w = vram_manager_workload_json(c->m, "rerank");
	assert_non_null(strstr(json_string_value(json_object_get(w, "last_error")), "MPS control daemon died"));
	assert_non_null(strstr(json_string_value(json_object_get(w, "log_tail")), "[fake] control daemon"));
	assert_false(json_is_null(json_object_get(w, "next_restart_seconds"))); /* on-failure */
	json_decref(w);
	/* restarted per its policy, with a new MPS daemon */
	assert_true(run_until(c, mps_crashed_and_back, NULL, 15));
	d = mps_daemons(c);
	pid_t again = (pid_t)json_integer_value(json_object_get(json_array_get(d, 0), "control_pid"));
	json_decref(d);
	assert_true(again > 0 && again != ctl);
	assert_int_equal(act_wait(c, "rerank", VRAM_ACTION_STOP), 200);
	assert_true(run_until(c, no_mps_daemon, NULL, 10));
	unsetenv("VRAM_MPS_CONTROL");
}

static void test_mps_missing(void **state)
{
	struct ctx *c = *state;
	char two[1024];
	snprintf(two, sizeof(two),
		 "%s"
		 "    fallback: exclusive\n"
		 "  strict:\n"
		 "    cmd: [%s, --port, \"${PORT}\", --load-time, 50ms]\n"
		 "    memory: 2GiB\n"
		 "    share: mps\n",
		 mps_workload, DEMO);
	setenv("VRAM_MPS_CONTROL", "/no-such-dir/nvidia-cuda-mps-control", 1);
	start_manager(c, "2x24GiB", two);
	/* fallback exclusive: runs, without MPS, and says so */
	assert_int_equal(act_wait(c, "rerank", VRAM_ACTION_START), 200);
	json_t *w = vram_manager_workload_json(c->m, "rerank");
	json_t *mps = json_object_get(w, "mps");
	assert_true(json_is_false(json_object_get(mps, "used")));
	assert_non_null(strstr(json_string_value(json_object_get(mps, "why")), "fallback exclusive"));
	pid_t pid = (pid_t)json_integer_value(json_object_get(w, "pid"));
	assert_true(pid > 0);
	assert_string_equal(env_of(pid, "CUDA_MPS_PIPE_DIRECTORY"), "");
	json_decref(w);
	/* no fallback: a clear failed state */
	assert_int_equal(act_wait(c, "strict", VRAM_ACTION_START), 500);
	assert_string_equal(c->res.state, "failed");
	assert_non_null(strstr(c->res.message, "share: mps needs"));
	assert_non_null(strstr(c->res.message, "set fallback: exclusive to run without MPS"));
	w = vram_manager_workload_json(c->m, "strict");
	assert_true(json_is_null(json_object_get(w, "next_restart_seconds")));
	json_decref(w);
	json_t *st = vram_manager_status_json(c->m);
	assert_true(json_is_false(json_object_get(json_object_get(st, "mps"), "available")));
	json_decref(st);
	unsetenv("VRAM_MPS_CONTROL");
}

static void on_shut_down(void *arg)
{
	((struct ctx *)arg)->shut_down = true;
}

static bool is_shut_down(struct ctx *c, const void *arg)
{
	return c->shut_down;
}

static void test_shutdown(void **state)
{
	struct ctx *c = *state;
	start_manager(c, "2x24GiB", NULL);
	assert_int_equal(act_wait(c, "demo", VRAM_ACTION_START), 200);
	pid_t pid = (pid_t)wl_int(c, "demo", "pid");
	vram_manager_shutdown(c->m, on_shut_down, c);
	assert_true(run_until(c, is_shut_down, NULL, 5));
	assert_int_equal(kill(pid, 0), -1);
	char err[256];
	assert_int_equal(vram_manager_act(c->m, "demo", VRAM_ACTION_START, on_result, c, NULL, err,
					  sizeof(err)), -EBUSY);
}

static bool adhoc_exited(struct ctx *c, const void *arg)
{
	json_t *w = vram_manager_workload_json(c->m, arg);
	bool done = w && json_is_object(json_object_get(w, "exit"));
	json_decref(w);
	return done;
}

static bool adhoc_gone(struct ctx *c, const void *arg)
{
	json_t *w = vram_manager_workload_json(c->m, arg);
	json_decref(w);
	return w == NULL;
}

/*
 * An ad-hoc workload asked for by another user runs as that user, with its
 * HOME and names where its environment does not set them, and status says
 * whom it runs as; one asked for in-process runs as vramd.
 */
static void test_adhoc_runs_as_its_owner(void **state)
{
	struct ctx *c = *state;
	if (geteuid() != 0)
		skip(); /* only root starts processes as another user */
	start_manager(c, "1x24GiB", NULL);
	struct vram_runas nobody = {.uid = 65534, .gid = 65534, .groups = {65534}, .n_groups = 1};
	snprintf(nobody.user, sizeof(nobody.user), "nobody");
	snprintf(nobody.home, sizeof(nobody.home), "/nonexistent");
	const char *const who[] = {"/bin/sh", "-c",
				   "echo \"who=$(id -u):$(id -g) home=$HOME user=$USER logname=$LOGNAME\"",
				   NULL};
	const char *const env[] = {"LOGNAME=mine", NULL};
	struct vram_adhoc_spec spec = {.cmd = who, .env = env, .name = "theirs", .runas = &nobody};
	char err[512];
	assert_int_equal(vram_manager_add_adhoc(c->m, &spec, NULL, err, sizeof(err)), 0);
	assert_true(run_until(c, adhoc_exited, "theirs", 5));
	json_t *w = vram_manager_workload_json(c->m, "theirs");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(w, "exit"), "status")), 0);
	json_t *owner = json_object_get(w, "owner");
	assert_int_equal(json_integer_value(json_object_get(owner, "uid")), 65534);
	assert_string_equal(json_string_value(json_object_get(owner, "user")), "nobody");
	char *log = slurp_file(json_string_value(json_object_get(w, "log")), NULL);
	json_decref(w);
	assert_non_null(log);
	assert_non_null(strstr(log, "who=65534:65534 home=/nonexistent user=nobody logname=mine\n"));
	assert_non_null(strstr(log, ", as user nobody"));
	free(log);
	uid_t uid = 1;
	char user[64] = "";
	assert_true(vram_manager_adhoc_owner(c->m, "theirs", &uid, user, sizeof(user)));
	assert_int_equal(uid, 65534);
	assert_string_equal(user, "nobody");
	assert_false(vram_manager_adhoc_owner(c->m, "demo", &uid, NULL, 0));
	w = vram_manager_workload_json(c->m, "demo");
	assert_true(json_is_null(json_object_get(w, "owner")));
	json_decref(w);
	/* idle timers set for all apply to the config's workloads, not to a user's command */
	assert_int_equal(set_idle(c, NULL, VRAM_IDLE_KEEP, 1000, VRAM_IDLE_KEEP, err, sizeof(err)), 0);
	w = vram_manager_workload_json(c->m, "theirs");
	assert_true(json_is_null(json_object_get(json_object_get(w, "timeouts"), "release_after_seconds")));
	json_decref(w);
	w = vram_manager_workload_json(c->m, "demo");
	assert_true(json_real_value(json_object_get(json_object_get(w, "timeouts"), "release_after_seconds")) == 1.0);
	json_decref(w);

	/* without runas: vramd's own user */
	spec = (struct vram_adhoc_spec){.cmd = who, .name = "ours"};
	assert_int_equal(vram_manager_add_adhoc(c->m, &spec, NULL, err, sizeof(err)), 0);
	assert_true(run_until(c, adhoc_exited, "ours", 5));
	assert_true(vram_manager_adhoc_owner(c->m, "ours", &uid, NULL, 0));
	assert_int_equal(uid, geteuid());
}

/* Ad-hoc workloads: added and started, shown with their exit, removed, slots reused, refusals. */
static void test_adhoc(void **state)
{
	struct ctx *c = *state;
	start_manager(c, "1x24GiB", NULL);
	char err[512];
	const char *name = NULL;
	const char *const exit3[] = {"/bin/sh", "-c", "exit 3", NULL};
	struct vram_adhoc_spec spec = {.cmd = exit3};
	assert_int_equal(vram_manager_add_adhoc(c->m, &spec, &name, err, sizeof(err)), 0);
	assert_string_equal(name, "run-1");
	assert_true(run_until(c, adhoc_exited, "run-1", 5));
	json_t *w = vram_manager_workload_json(c->m, "run-1");
	assert_true(json_is_true(json_object_get(w, "adhoc")));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(w, "exit"), "status")), 3);
	assert_string_equal(json_string_value(json_object_get(w, "state")), "failed");
	json_decref(w);
	w = vram_manager_workload_json(c->m, "demo");
	assert_true(json_is_false(json_object_get(w, "adhoc")));
	assert_null(json_object_get(w, "exit"));
	json_decref(w);

	/* refusals: name taken, bad name, no command, configured workload not removable */
	spec.name = "demo";
	assert_int_equal(vram_manager_add_adhoc(c->m, &spec, NULL, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "demo"));
	spec.name = "no/slash";
	assert_int_equal(vram_manager_add_adhoc(c->m, &spec, NULL, err, sizeof(err)), -EINVAL);
	const char *const empty[] = {NULL};
	struct vram_adhoc_spec bad = {.cmd = empty};
	assert_int_equal(vram_manager_add_adhoc(c->m, &bad, NULL, err, sizeof(err)), -EINVAL);
	assert_int_equal(vram_manager_remove_adhoc(c->m, "demo", err, sizeof(err)), -EPERM);
	assert_int_equal(vram_manager_remove_adhoc(c->m, "nope", err, sizeof(err)), -ENOENT);
	/* more memory than the GPU has: no room, and no slot kept */
	struct vram_adhoc_spec big = {.cmd = exit3, .name = "big", .memory = {.bytes = 100 * GiB}};
	assert_int_equal(vram_manager_add_adhoc(c->m, &big, NULL, err, sizeof(err)), -ENOSPC);
	assert_null(vram_manager_workload_json(c->m, "big"));

	/* a running one is stopped and removed; the name is free again */
	const char *const sleeper[] = {"/bin/sleep", "30", NULL};
	struct vram_adhoc_spec s2 = {.cmd = sleeper, .name = "sleepy"};
	assert_int_equal(vram_manager_add_adhoc(c->m, &s2, NULL, err, sizeof(err)), 0);
	pid_t pid = (pid_t)wl_int(c, "sleepy", "pid");
	assert_true(pid > 0);
	assert_int_equal(vram_manager_remove_adhoc(c->m, "sleepy", err, sizeof(err)), 0);
	assert_true(run_until(c, adhoc_gone, "sleepy", 5));
	assert_int_equal(kill(pid, 0), -1);
	assert_int_equal(vram_manager_remove_adhoc(c->m, "run-1", err, sizeof(err)), 0);
	assert_true(run_until(c, adhoc_gone, "run-1", 5));

	/* every slot taken by a running one: refused; a finished one is reused */
	char names[VRAM_MANAGER_ADHOC_MAX][16];
	for (int i = 0; i < VRAM_MANAGER_ADHOC_MAX; i++) {
		snprintf(names[i], sizeof(names[i]), "s%d", i);
		struct vram_adhoc_spec s = {.cmd = i == 0 ? exit3 : sleeper, .name = names[i]};
		assert_int_equal(vram_manager_add_adhoc(c->m, &s, NULL, err, sizeof(err)), 0);
	}
	struct vram_adhoc_spec one_more = {.cmd = sleeper};
	assert_true(run_until(c, adhoc_exited, "s0", 5));
	assert_int_equal(vram_manager_add_adhoc(c->m, &one_more, &name, err, sizeof(err)), 0);
	assert_null(vram_manager_workload_json(c->m, "s0")); /* its slot went to the new one */
	assert_int_equal(vram_manager_add_adhoc(c->m, &one_more, NULL, err, sizeof(err)), -EAGAIN);
	json_t *st = vram_manager_status_json(c->m);
	assert_int_equal(json_array_size(json_object_get(st, "workloads")), 1 + VRAM_MANAGER_ADHOC_MAX);
	json_decref(st);
	vram_manager_shutdown(c->m, on_shut_down, c);
	assert_true(run_until(c, is_shut_down, NULL, 10));
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_park, setup, teardown),
		cmocka_unit_test_setup_teardown(test_park_refused_and_failed_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_park_files_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_restarts_with_backoff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_offload_waits_for_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_eviction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_engine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adhoc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adhoc_runs_as_its_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore_onto_another_gpu, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mps_two_replicas_one_daemon, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mps_crash_fails_and_restarts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mps_missing, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
