/* SPDX-License-Identifier: MIT */
/*
 * mps-tool: vramd's MPS module (src/daemon/mps.c) driven from the command
 * line, for tests/gpu/run-mps.sh. It needs libevent and jansson, which the
 * GPU hosts lack, so it is linked statically where they are installed:
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Isrc tests/gpu/mps-tool.c src/daemon/mps.c src/common/log.c \
 *       -Wl,-Bstatic -levent_core -ljansson -Wl,-Bdynamic -lpthread -o mps-tool
 *
 *   mps-tool STATE_DIR GPU CAP_GIB -- WORKER_CMD...
 *
 * Scenario, one line per step ("step <name> ok|FAIL <detail>"), then a JSON
 * status after each phase:
 *   1. two clients of GPU GPU, each capped at CAP_GIB, start the MPS control
 *      daemon once; each runs WORKER_CMD with its MPS environment and
 *      WORKER_ROLE=0|1 (role 0 allocates over its cap, role 1 within it);
 *   2. status lists the server and both clients;
 *   3. the workers exit, the clients are freed, the control daemon quits;
 *   4. a daemon started by hand runs without clients and stops by hand.
 * Exits 0 when every step passed.
 */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "daemon/mps.h"

extern char **environ;

static int failures;

static void step(const char *name, bool ok, const char *detail)
{
	printf("step %s %s %s\n", name, ok ? "ok" : "FAIL", detail ? detail : "");
	fflush(stdout);
	if (!ok)
		failures++;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool run_until(struct event_base *b, const int *flag, unsigned ms)
{
	uint64_t deadline = now_ms() + ms;

	while (!*flag && now_ms() < deadline) {
		event_base_loop(b, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(5000);
	}
	return *flag != 0;
}

struct seen {
	int ready, failed, crashed;
	char msg[VRAM_MPS_MSG_MAX];
};

static void on_event(struct vram_mps_client *c, enum vram_mps_event ev, const char *m, void *arg)
{
	struct seen *s = arg;

	if (ev == VRAM_MPS_READY)
		s->ready = 1;
	else if (ev == VRAM_MPS_FAILED)
		s->failed = 1;
	else
		s->crashed = 1;
	snprintf(s->msg, sizeof(s->msg), "%s", m);
}

struct done {
	int called, result;
	char msg[1024];
};

static void on_done(int r, const char *m, void *arg)
{
	struct done *d = arg;

	d->called = 1;
	d->result = r;
	snprintf(d->msg, sizeof(d->msg), "%s", m);
}

static void on_shutdown(void *arg)
{
	*(int *)arg = 1;
}

static void print_status(struct vram_mps *m, const char *label)
{
	json_t *st = vram_mps_status_json(m);
	char *s = json_dumps(st, JSON_COMPACT);

	printf("status %s %s\n", label, s ? s : "null");
	free(s);
	json_decref(st);
}

/* environ without its CUDA_VISIBLE_DEVICES, plus add[] (which sets the MPS
 * daemon's) and WORKER_ROLE. */
static char **client_environ(char **add, int role)
{
	size_t n = 0, k = 0, extra = 0;
	char **env;

	while (environ[n])
		n++;
	while (add[extra])
		extra++;
	env = calloc(n + extra + 2, sizeof(*env));
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21))
			env[k++] = environ[i];
	for (size_t i = 0; i < extra; i++)
		env[k++] = add[i];
	env[k++] = role ? "WORKER_ROLE=1" : "WORKER_ROLE=0";
	env[k] = NULL;
	return env;
}

static pid_t control_pid_of(struct vram_mps *m)
{
	json_t *st = vram_mps_status_json(m);
	json_t *d = json_array_get(json_object_get(st, "daemons"), 0);
	pid_t pid = (pid_t)json_integer_value(json_object_get(d, "control_pid"));

	json_decref(st);
	return pid;
}

static bool wait_gone(pid_t pid, unsigned ms)
{
	uint64_t deadline = now_ms() + ms;

	while (pid > 0 && kill(pid, 0) == 0 && now_ms() < deadline)
		usleep(20000);
	return pid <= 0 || kill(pid, 0) < 0;
}

int main(int argc, char **argv)
{
	struct vram_mps_options opt = { 0 };
	struct event_base *base;
	struct vram_mps *m;
	struct vram_mps_client *c[2] = { NULL, NULL };
	struct seen s[2];
	pid_t wpid[2] = { 0, 0 };
	unsigned gpu;
	uint64_t cap;
	char err[1024], detail[2048];
	int argi = 4;

	if (argc < 6 || strcmp(argv[4], "--")) {
		fprintf(stderr, "usage: mps-tool STATE_DIR GPU CAP_GIB -- WORKER_CMD...\n");
		return 2;
	}
	gpu = (unsigned)atoi(argv[2]);
	cap = (uint64_t)atoi(argv[3]) << 30;
	argi++;

	base = event_base_new();
	opt.state_dir = argv[1];
	if (vram_mps_new(base, &opt, &m) < 0)
		return 1;
	step("available", vram_mps_available(m, err, sizeof(err)), err);
	if (failures)
		return 1;

	/* 1. two capped clients, one control daemon */
	memset(s, 0, sizeof(s));
	for (int i = 0; i < 2; i++) {
		struct vram_mps_client_spec spec = {
			.owner = i ? "worker#1" : "worker#0", .gpus = &gpu, .n_gpus = 1, .mem_limit_bytes = cap,
			.compute_percent = 50,
		};
		int r = vram_mps_client_new(m, &spec, on_event, &s[i], &c[i], err, sizeof(err));

		step("client_new", r == 0, err);
		if (r < 0)
			return 1;
	}
	run_until(base, &s[0].ready, 15000);
	run_until(base, &s[1].ready, 15000);
	step("daemon_ready", s[0].ready && s[1].ready, s[0].msg);
	if (!s[0].ready || !s[1].ready)
		goto out;
	for (int i = 0; i < 2; i++) {
		char **add = NULL, **env;

		vram_mps_client_env(c[i], &add);
		for (size_t k = 0; add[k]; k++)
			printf("env worker#%d %s\n", i, add[k]);
		env = client_environ(add, i);
		if (posix_spawnp(&wpid[i], argv[argi], NULL, NULL, &argv[argi], env) != 0)
			wpid[i] = 0;
		step("spawn_worker", wpid[i] > 0, argv[argi]);
		vram_mps_client_set_pid(c[i], wpid[i]);
		free(env);
		vram_mps_env_free(add);
	}

	/* 2. status while they run (the workers hold for a few seconds) */
	sleep(3);
	{
		struct done d = { 0 };
		json_t *st, *srv;

		vram_mps_refresh(m, on_done, &d);
		run_until(base, &d.called, 10000);
		st = vram_mps_status_json(m);
		srv = json_array_get(json_object_get(json_array_get(json_object_get(st, "daemons"), 0), "servers"), 0);
		snprintf(detail, sizeof(detail), "server pid %lld, %zu clients",
			 (long long)json_integer_value(json_object_get(srv, "pid")),
			 json_array_size(json_object_get(srv, "clients")));
		step("status_server_and_clients", srv && json_array_size(json_object_get(srv, "clients")) == 2, detail);
		json_decref(st);
		print_status(m, "running");
	}

	/* 3. workers exit; the last client gone makes the daemon quit */
	for (int i = 0; i < 2; i++) {
		int ws = 0;

		if (wpid[i] > 0 && waitpid(wpid[i], &ws, 0) == wpid[i]) {
			snprintf(detail, sizeof(detail), "worker#%d exit %d", i, WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
			step("worker_result", WIFEXITED(ws) && WEXITSTATUS(ws) == 0, detail);
		}
	}
	{
		pid_t ctl = control_pid_of(m);

		vram_mps_client_free(c[0]);
		vram_mps_client_free(c[1]);
		c[0] = c[1] = NULL;
		for (int i = 0; i < 400 && kill(ctl, 0) == 0; i++) {
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
			usleep(20000);
		}
		step("quit_on_last_client", wait_gone(ctl, 2000), NULL);
		print_status(m, "after-quit");
	}

	/* 4. by hand */
	{
		struct done st = { 0 }, sp = { 0 };
		pid_t ctl;

		if (vram_mps_start(m, &gpu, NULL, 1, on_done, &st, err, sizeof(err)) == 0)
			run_until(base, &st.called, 15000);
		step("manual_start", st.called && st.result == 0, st.msg);
		ctl = control_pid_of(m);
		print_status(m, "manual");
		if (vram_mps_stop(m, &gpu, 1, false, on_done, &sp, err, sizeof(err)) == 0)
			run_until(base, &sp.called, 15000);
		step("manual_stop", sp.called && sp.result == 0 && wait_gone(ctl, 5000), sp.msg);
		print_status(m, "stopped");
	}

out:
	for (int i = 0; i < 2; i++) {
		if (wpid[i] > 0 && kill(wpid[i], 0) == 0) {
			kill(wpid[i], SIGKILL);
			waitpid(wpid[i], NULL, 0);
		}
		vram_mps_client_free(c[i]);
	}
	{
		int done = 0;

		vram_mps_shutdown(m, on_shutdown, &done);
		run_until(base, &done, 10000);
	}
	vram_mps_free(m);
	event_base_free(base);
	printf("mps-tool: %d failure%s\n", failures, failures == 1 ? "" : "s");
	return failures ? 1 : 0;
}
