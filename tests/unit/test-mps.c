/* SPDX-License-Identifier: MIT */
/*
 * MPS control daemons against a stand-in nvidia-cuda-mps-control
 * (tests/unit/data/mps-fake-control) that records how it was run: the
 * daemon is started once per GPU set with the right directories and
 * CUDA_VISIBLE_DEVICES, clients get the right variables, the daemon quits
 * with its last client, a daemon that dies under its clients is reported
 * with its log, a start that fails says why, status shows servers and
 * clients, and stopping by hand respects clients unless forced. A second
 * module on the same state directory (the next vramd after a crash or an
 * upgrade) takes back the first one's daemons instead of starting them
 * again, refuses what is not such a daemon, and quits the ones nothing uses.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>

#include "common/proc.h"
#include "daemon/mps.h"

#define FAKE VRAM_SOURCE_ROOT "/tests/unit/data/mps-fake-control"

struct fixture {
	struct event_base *base;
	struct vram_mps *mps;
	char dir[256];
};

struct seen {
	int n_ready, n_failed, n_crashed;
	char message[VRAM_MPS_MSG_MAX];
};

static void on_event(struct vram_mps_client *c, enum vram_mps_event ev, const char *message, void *arg)
{
	struct seen *s = arg;

	if (ev == VRAM_MPS_READY)
		s->n_ready++;
	else if (ev == VRAM_MPS_FAILED)
		s->n_failed++;
	else
		s->n_crashed++;
	snprintf(s->message, sizeof(s->message), "%s", message);
}

struct done {
	int calls, result;
	char message[1024];
};

static void on_done(int result, const char *message, void *arg)
{
	struct done *d = arg;

	d->calls++;
	d->result = result;
	snprintf(d->message, sizeof(d->message), "%s", message);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop until *flag becomes non-zero or 8 s pass. */
static bool run_until(struct event_base *base, const int *flag)
{
	uint64_t deadline = now_ms() + 8000;

	while (!*flag && now_ms() < deadline) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(2000);
	}
	return *flag != 0;
}

static void run_for(struct event_base *base, unsigned ms)
{
	uint64_t deadline = now_ms() + ms;

	while (now_ms() < deadline) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(2000);
	}
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 65536);
	size_t n;

	assert_non_null(buf);
	if (!f)
		return buf;
	n = fread(buf, 1, 65535, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int count_lines_starting(const char *text, const char *prefix)
{
	int n = 0;
	size_t len = strlen(prefix);

	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, prefix, len))
			n++;
	return n;
}

static char *calls(struct fixture *f, const char *key)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/mps/%s/log/calls.log", f->dir, key);
	return slurp(path);
}

/* Running, not a zombie waiting for init. */
static bool alive(pid_t pid)
{
	char path[64], *stat, *p;
	bool r;

	if (kill(pid, 0) < 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	stat = slurp(path);
	p = strrchr(stat, ')');
	r = !(p && (p[2] == 'Z' || p[2] == 'X'));
	free(stat);
	return r;
}

/* The control daemon's pid as status shows it (0 = none). */
static pid_t control_pid(struct fixture *f, unsigned first_gpu)
{
	json_t *st = vram_mps_status_json(f->mps);
	json_t *daemons = json_object_get(st, "daemons");
	pid_t pid = 0;
	size_t i;
	json_t *d;

	json_array_foreach(daemons, i, d) {
		if (json_integer_value(json_array_get(json_object_get(d, "gpus"), 0)) == first_gpu)
			pid = (pid_t)json_integer_value(json_object_get(d, "control_pid"));
	}
	json_decref(st);
	return pid;
}

static size_t n_daemons(struct fixture *f)
{
	json_t *st = vram_mps_status_json(f->mps);
	size_t n = json_array_size(json_object_get(st, "daemons"));

	json_decref(st);
	return n;
}

static void wait_dead(pid_t pid)
{
	uint64_t deadline = now_ms() + 5000;

	while (pid > 0 && alive(pid) && now_ms() < deadline)
		usleep(5000);
	assert_false(pid > 0 && alive(pid));
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct vram_mps_options opt = { 0 };

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/vram-mps-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->base = event_base_new();
	assert_non_null(f->base);
	opt.state_dir = f->dir;
	opt.control_path = FAKE;
	opt.command_timeout_ms = 5000;
	opt.start_timeout_ms = 3000;
	assert_int_equal(vram_mps_new(f->base, &opt, &f->mps), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[512];

	/* Any stand-in daemon left over by a failing test. */
	json_t *st = vram_mps_status_json(f->mps);
	size_t i;
	json_t *d;

	json_array_foreach(json_object_get(st, "daemons"), i, d) {
		pid_t pid = (pid_t)json_integer_value(json_object_get(d, "control_pid"));

		if (pid > 0)
			kill(pid, SIGKILL);
	}
	json_decref(st);
	vram_mps_free(f->mps);
	event_base_free(f->base);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", f->dir);
	free(f);
	return 0;
}

static void test_find_control(void **state)
{
	struct fixture *f = *state;
	char buf[512], link[512], *old_path;

	assert_int_equal(vram_mps_find_control(FAKE, buf, sizeof(buf)), 0);
	assert_string_equal(buf, FAKE);

	setenv("VRAM_MPS_CONTROL", FAKE, 1);
	assert_int_equal(vram_mps_find_control(NULL, buf, sizeof(buf)), 0);
	assert_string_equal(buf, FAKE);
	unsetenv("VRAM_MPS_CONTROL");

	old_path = strdup(getenv("PATH") ? getenv("PATH") : "");
	assert_non_null(old_path);
	setenv("PATH", f->dir, 1);
	assert_int_equal(vram_mps_find_control(NULL, buf, sizeof(buf)), -ENOENT);
	assert_non_null(strstr(buf, "nvidia-cuda-mps-control not found in PATH"));
	snprintf(link, sizeof(link), "%s/nvidia-cuda-mps-control", f->dir);
	assert_int_equal(symlink(FAKE, link), 0);
	assert_int_equal(vram_mps_find_control(NULL, buf, sizeof(buf)), 0);
	assert_string_equal(buf, link);
	setenv("PATH", old_path, 1);
	free(old_path);

	assert_int_equal(vram_mps_find_control("/nonexistent/mps-control", buf, sizeof(buf)), -ENOENT);
	assert_non_null(strstr(buf, "/nonexistent/mps-control"));
}

static void test_mem_limit_format(void **state)
{
	char buf[64];

	assert_int_equal(vram_mps_format_mem_limit(UINT64_C(2) << 30, 1, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "0=2G");
	assert_int_equal(vram_mps_format_mem_limit(UINT64_C(2) << 30, 2, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "0=2G,1=2G");
	assert_int_equal(vram_mps_format_mem_limit(UINT64_C(1536) << 20, 1, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "0=1536M");
	/* Never rounded down below what was asked. */
	assert_int_equal(vram_mps_format_mem_limit((UINT64_C(1) << 30) + 1, 1, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "0=1025M");
	assert_int_equal(vram_mps_format_mem_limit(UINT64_C(2) << 30, 8, buf, 10), -E2BIG);
}

static void test_clients_share_one_daemon_which_quits_with_the_last(void **state)
{
	struct fixture *f = *state;
	const unsigned gpus[] = { 1 };
	const char *ids[] = { "GPU-11111111-2222-3333-4444-555555555555" };
	struct vram_mps_client_spec spec = {
		.owner = "rerank#0", .gpus = gpus, .gpu_ids = ids, .n_gpus = 1,
		.mem_limit_bytes = UINT64_C(2) << 30, .compute_percent = 40,
	};
	struct vram_mps_client *c1 = NULL, *c2 = NULL;
	struct seen s1 = { 0 }, s2 = { 0 };
	char err[512] = "", expect[1024], **env = NULL;
	char *log;
	pid_t ctl;

	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s1, &c1, err, sizeof(err)), 0);
	/* Never from inside the call. */
	assert_int_equal(s1.n_ready, 0);
	assert_true(run_until(f->base, &s1.n_ready));
	assert_int_equal(s1.n_failed + s1.n_crashed, 0);

	log = calls(f, "gpu1");
	snprintf(expect, sizeof(expect),
		 "start args=-d visible=GPU-11111111-2222-3333-4444-555555555555 pipe=%s/mps/gpu1/pipe log=%s/mps/gpu1/log\n",
		 f->dir, f->dir);
	assert_string_equal(log, expect);
	free(log);
	ctl = control_pid(f, 1);
	assert_true(ctl > 0 && alive(ctl));

	/* What the client gets: the daemon's device set, its dirs, its caps. */
	assert_int_equal(vram_mps_client_env(c1, &env), 0);
	assert_string_equal(env[0], "CUDA_VISIBLE_DEVICES=GPU-11111111-2222-3333-4444-555555555555");
	snprintf(expect, sizeof(expect), "CUDA_MPS_PIPE_DIRECTORY=%s/mps/gpu1/pipe", f->dir);
	assert_string_equal(env[1], expect);
	snprintf(expect, sizeof(expect), "CUDA_MPS_LOG_DIRECTORY=%s/mps/gpu1/log", f->dir);
	assert_string_equal(env[2], expect);
	assert_string_equal(env[3], "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G");
	assert_string_equal(env[4], "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=40");
	assert_null(env[5]);
	vram_mps_env_free(env);

	/* A second client of the same GPU: no second daemon. */
	spec.owner = "rerank#1";
	spec.mem_limit_bytes = 0;
	spec.compute_percent = 0;
	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s2, &c2, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s2.n_ready));
	assert_int_equal(vram_mps_client_env(c2, &env), 0);
	assert_null(env[3]); /* no cap, no compute share asked */
	vram_mps_env_free(env);
	log = calls(f, "gpu1");
	assert_int_equal(count_lines_starting(log, "start "), 1);
	free(log);

	/* One client gone: the daemon stays. */
	vram_mps_client_free(c1);
	run_for(f->base, 300);
	assert_true(alive(ctl));
	log = calls(f, "gpu1");
	assert_int_equal(count_lines_starting(log, "cmd quit"), 0);
	free(log);

	/* The last one gone: quit, through the same pipe directory. */
	vram_mps_client_free(c2);
	wait_dead(ctl);
	log = calls(f, "gpu1");
	snprintf(expect, sizeof(expect), "cmd quit visible=unset pipe=%s/mps/gpu1/pipe", f->dir);
	assert_non_null(strstr(log, expect));
	free(log);
	{
		uint64_t deadline = now_ms() + 5000;

		while (n_daemons(f) > 0 && now_ms() < deadline)
			run_for(f->base, 20);
	}
	assert_int_equal(n_daemons(f), 0);
	assert_int_equal(s1.n_crashed + s2.n_crashed, 0);
}

static void test_crash_is_reported_with_the_log(void **state)
{
	struct fixture *f = *state;
	const unsigned gpus[] = { 0 };
	struct vram_mps_client_spec spec = { .owner = "w", .gpus = gpus, .n_gpus = 1 };
	struct vram_mps_client *c = NULL;
	struct seen s = { 0 };
	char err[512], *log;
	pid_t ctl;

	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s, &c, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s.n_ready));
	log = calls(f, "gpu0");
	assert_non_null(strstr(log, "start args=-d visible=0 ")); /* indices when no UUID is known */
	free(log);
	ctl = control_pid(f, 0);
	assert_true(ctl > 0);

	kill(ctl, SIGKILL);
	assert_true(run_until(f->base, &s.n_crashed));
	assert_non_null(strstr(s.message, "exited unexpectedly"));
	assert_non_null(strstr(s.message, "==> control.log <=="));
	assert_non_null(strstr(s.message, "[fake] control daemon"));
	{
		json_t *st = vram_mps_status_json(f->mps);
		json_t *d = json_array_get(json_object_get(st, "daemons"), 0);

		assert_string_equal(json_string_value(json_object_get(d, "state")), "crashed");
		assert_non_null(strstr(json_string_value(json_object_get(d, "log_tail")), "[fake] control daemon"));
		json_decref(st);
	}
	vram_mps_client_free(c);

	/* The next client starts it again. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s, &c, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s.n_ready));
	log = calls(f, "gpu0");
	assert_int_equal(count_lines_starting(log, "start "), 2);
	free(log);
	ctl = control_pid(f, 0);
	vram_mps_client_free(c);
	wait_dead(ctl);
}

static void test_failed_start_says_why(void **state)
{
	struct fixture *f = *state;
	const unsigned gpus[] = { 3 };
	struct vram_mps_client_spec spec = { .owner = "w", .gpus = gpus, .n_gpus = 1 };
	struct vram_mps_client *c = NULL;
	struct seen s = { 0 };
	char err[512], path[512];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/mps/fail-start", f->dir);
	snprintf(err, sizeof(err), "%s/mps", f->dir);
	mkdir(err, 0755);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fclose(fp);

	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s, &c, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s.n_failed));
	assert_int_equal(s.n_ready, 0);
	assert_non_null(strstr(s.message, "did not start"));
	assert_non_null(strstr(s.message, "An MPS control daemon could not be started"));
	assert_non_null(strstr(s.message, "the GPU is busy")); /* from control.log */
	vram_mps_client_free(c);
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_status_lists_servers_clients_and_limits(void **state)
{
	struct fixture *f = *state;
	const unsigned gpus[] = { 0, 1 };
	struct vram_mps_client_spec spec = {
		.owner = "llm#0", .gpus = gpus, .n_gpus = 2, .mem_limit_bytes = UINT64_C(3) << 30,
		.compute_percent = 50,
	};
	struct vram_mps_client *c = NULL;
	struct seen s = { 0 };
	struct done dn = { 0 };
	char err[512], path[512];
	json_t *st, *d, *srv, *cl;
	pid_t ctl;

	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s, &c, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s.n_ready));
	vram_mps_client_set_pid(c, 777);
	snprintf(path, sizeof(path), "%s/mps/gpu0-1/pipe/servers", f->dir);
	write_file(path, "4242\n");
	snprintf(path, sizeof(path), "%s/mps/gpu0-1/pipe/clients-4242", f->dir);
	write_file(path, "777\n778\n");

	assert_int_equal(vram_mps_refresh(f->mps, on_done, &dn), 0);
	assert_true(run_until(f->base, &dn.calls));
	assert_int_equal(dn.result, 0);

	st = vram_mps_status_json(f->mps);
	assert_true(json_is_true(json_object_get(st, "available")));
	assert_string_equal(json_string_value(json_object_get(st, "control")), FAKE);
	d = json_array_get(json_object_get(st, "daemons"), 0);
	assert_string_equal(json_string_value(json_object_get(d, "state")), "running");
	assert_int_equal(json_array_size(json_object_get(d, "gpus")), 2);
	srv = json_array_get(json_object_get(d, "servers"), 0);
	assert_int_equal(json_integer_value(json_object_get(srv, "pid")), 4242);
	assert_int_equal(json_array_size(json_object_get(srv, "clients")), 2);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(srv, "clients"), 1)), 778);
	cl = json_array_get(json_object_get(d, "clients"), 0);
	assert_string_equal(json_string_value(json_object_get(cl, "owner")), "llm#0");
	assert_int_equal(json_integer_value(json_object_get(cl, "pid")), 777);
	assert_string_equal(json_string_value(json_object_get(cl, "mem_limit")), "0=3G,1=3G");
	assert_int_equal(json_integer_value(json_object_get(cl, "compute_percent")), 50);
	json_decref(st);

	/* A set that overlaps a running one is refused. */
	{
		const unsigned one[] = { 1 };
		struct vram_mps_client_spec s1 = { .owner = "x", .gpus = one, .n_gpus = 1 };
		struct vram_mps_client *c1 = NULL;
		struct seen sx = { 0 };

		assert_int_equal(vram_mps_client_new(f->mps, &s1, on_event, &sx, &c1, err, sizeof(err)), -EBUSY);
		assert_non_null(strstr(err, "GPU 1 is already served by the MPS control daemon for gpu0-1"));
		assert_null(c1);
	}

	ctl = control_pid(f, 0);
	vram_mps_client_free(c);
	wait_dead(ctl);
}

static void test_manual_start_and_stop(void **state)
{
	struct fixture *f = *state;
	const unsigned gpus[] = { 2 };
	struct vram_mps_client_spec spec = { .owner = "w", .gpus = gpus, .n_gpus = 1 };
	struct vram_mps_client *c = NULL;
	struct seen s = { 0 };
	struct done started = { 0 }, stopped = { 0 };
	char err[512] = "";
	pid_t ctl;

	assert_int_equal(vram_mps_start(f->mps, gpus, NULL, 1, on_done, &started, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &started.calls));
	assert_int_equal(started.result, 0);
	ctl = control_pid(f, 2);
	assert_true(ctl > 0 && alive(ctl));
	/* Without clients it keeps running: it was started by hand. */
	run_for(f->base, 200);
	assert_true(alive(ctl));

	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s, &c, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s.n_ready));
	assert_int_equal(vram_mps_stop(f->mps, gpus, 1, false, on_done, &stopped, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "has 1 client"));
	assert_int_equal(vram_mps_stop(f->mps, NULL, 0, false, on_done, &stopped, err, sizeof(err)), -EBUSY);
	assert_true(alive(ctl));

	/* Forced: the client hears of it, and the daemon goes. */
	assert_int_equal(vram_mps_stop(f->mps, gpus, 1, true, on_done, &stopped, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s.n_crashed));
	assert_non_null(strstr(s.message, "stopped by hand"));
	vram_mps_client_free(c);
	assert_true(run_until(f->base, &stopped.calls));
	assert_int_equal(stopped.result, 0);
	wait_dead(ctl);

	assert_int_equal(vram_mps_stop(f->mps, gpus, 1, false, NULL, NULL, err, sizeof(err)), -ENOENT);
}

static void test_unavailable(void **state)
{
	struct fixture *f = *state;
	struct vram_mps_options opt = { .state_dir = f->dir, .control_path = "/nonexistent/nvidia-cuda-mps-control" };
	const unsigned gpus[] = { 0 };
	struct vram_mps_client_spec spec = { .owner = "w", .gpus = gpus, .n_gpus = 1 };
	struct vram_mps_client *c = NULL;
	struct vram_mps *m = NULL;
	struct seen s = { 0 };
	char why[512] = "", err[512] = "";
	json_t *st;

	assert_int_equal(vram_mps_new(f->base, &opt, &m), 0);
	assert_false(vram_mps_available(m, why, sizeof(why)));
	assert_non_null(strstr(why, "/nonexistent/nvidia-cuda-mps-control"));
	assert_int_equal(vram_mps_client_new(m, &spec, on_event, &s, &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "MPS is not available"));
	st = vram_mps_status_json(m);
	assert_true(json_is_false(json_object_get(st, "available")));
	assert_non_null(strstr(json_string_value(json_object_get(st, "why")), "/nonexistent"));
	json_decref(st);
	vram_mps_free(m);
}

static void on_shutdown(void *arg)
{
	*(int *)arg += 1;
}

static void test_shutdown_quits_every_daemon(void **state)
{
	struct fixture *f = *state;
	const unsigned g0[] = { 0 }, g1[] = { 1 };
	struct vram_mps_client_spec a = { .owner = "a", .gpus = g0, .n_gpus = 1 };
	struct vram_mps_client_spec b = { .owner = "b", .gpus = g1, .n_gpus = 1 };
	struct vram_mps_client *ca = NULL, *cb = NULL;
	struct seen sa = { 0 }, sb = { 0 };
	char err[512];
	int done = 0;
	pid_t p0, p1;

	assert_int_equal(vram_mps_client_new(f->mps, &a, on_event, &sa, &ca, err, sizeof(err)), 0);
	assert_int_equal(vram_mps_client_new(f->mps, &b, on_event, &sb, &cb, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &sa.n_ready));
	assert_true(run_until(f->base, &sb.n_ready));
	p0 = control_pid(f, 0);
	p1 = control_pid(f, 1);
	assert_true(p0 > 0 && p1 > 0 && p0 != p1);

	vram_mps_shutdown(f->mps, on_shutdown, &done);
	assert_true(run_until(f->base, &done));
	wait_dead(p0);
	wait_dead(p1);
	/* Clients got no events from the shutdown. */
	assert_int_equal(sa.n_crashed + sb.n_crashed, 0);
	vram_mps_client_free(ca);
	vram_mps_client_free(cb);
}


/* ---- a daemon of a previous vramd ---- */

/* Starts the daemon of a GPU set through a client of f->mps; returns the client (ready). */
static struct vram_mps_client *first_vramd_client(struct fixture *f, const unsigned *gpus, size_t n,
						  const char *const *ids)
{
	struct vram_mps_client_spec spec = { .owner = "old", .gpus = gpus, .gpu_ids = ids, .n_gpus = n };
	struct vram_mps_client *c = NULL;
	struct seen s = { 0 };
	char err[512] = "";

	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s, &c, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s.n_ready));
	return c;
}

/*
 * The first vramd dies (its module freed: daemons left running, as after a
 * crash) and the next one starts on the same state directory.
 */
static void next_vramd(struct fixture *f, struct vram_mps_client **old_clients, size_t n)
{
	struct vram_mps_options opt = { .state_dir = f->dir, .control_path = FAKE, .command_timeout_ms = 5000,
					.start_timeout_ms = 3000 };

	vram_mps_free(f->mps);
	for (size_t i = 0; i < n; i++)
		vram_mps_client_free(old_clients[i]);
	f->mps = NULL;
	assert_int_equal(vram_mps_new(f->base, &opt, &f->mps), 0);
}

static bool has_quit(struct fixture *f, const char *key)
{
	char *log = calls(f, key);
	bool r = strstr(log, "cmd quit") != NULL;

	free(log);
	return r;
}

static void test_adopted_daemon_serves_clients_without_a_second_start(void **state)
{
	struct fixture *f = *state;
	const unsigned gpus[] = { 1 };
	const char *ids[] = { "GPU-11111111-2222-3333-4444-555555555555" };
	struct vram_mps_daemon_info info[4], again[4];
	struct vram_mps_client *old, *running = NULL, *fresh = NULL;
	struct vram_mps_client_spec spec = {
		.owner = "rerank#0", .gpus = gpus, .n_gpus = 1, .mem_limit_bytes = UINT64_C(2) << 30,
	};
	struct seen s_running = { 0 }, s_fresh = { 0 };
	char err[512] = "", expect[1024], started[1024], **env = NULL, *log;
	uint64_t ticks = 0;
	json_t *st, *d;
	pid_t ctl;

	old = first_vramd_client(f, gpus, 1, ids);
	ctl = control_pid(f, 1);
	assert_true(ctl > 0);
	/* What the state file records. */
	assert_int_equal(vram_mps_daemons(f->mps, NULL, 0), 1);
	assert_int_equal(vram_mps_daemons(f->mps, info, 4), 1);
	snprintf(expect, sizeof(expect), "%s/mps/gpu1/pipe", f->dir);
	assert_string_equal(info[0].pipe_dir, expect);
	assert_int_equal(info[0].pid, ctl);
	assert_int_equal(vram_proc_start_ticks(ctl, &ticks), 0);
	assert_true(info[0].start_ticks == ticks && ticks > 0);
	snprintf(started, sizeof(started),
		 "start args=-d visible=%s pipe=%s/mps/gpu1/pipe log=%s/mps/gpu1/log\n", ids[0], f->dir, f->dir);

	next_vramd(f, &old, 1);
	assert_true(alive(ctl));
	assert_int_equal(vram_mps_adopt(f->mps, &info[0], err, sizeof(err)), 0);
	st = vram_mps_status_json(f->mps);
	d = json_array_get(json_object_get(st, "daemons"), 0);
	assert_string_equal(json_string_value(json_object_get(d, "state")), "running");
	assert_int_equal(json_integer_value(json_object_get(d, "control_pid")), ctl);
	json_decref(st);
	/* The next state file records the same daemon. */
	assert_int_equal(vram_mps_daemons(f->mps, again, 4), 1);
	assert_string_equal(again[0].pipe_dir, info[0].pipe_dir);
	assert_int_equal(again[0].pid, ctl);
	assert_true(again[0].start_ticks == ticks);

	/* The process that kept running under it: attached, given its pid, no READY. */
	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s_running, &running, err, sizeof(err)), 0);
	vram_mps_client_set_pid(running, 4321);
	/* A new process of the same GPU set: READY, from the daemon already there. */
	spec.owner = "rerank#1";
	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s_fresh, &fresh, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &s_fresh.n_ready));
	run_for(f->base, 200);
	assert_int_equal(s_running.n_ready + s_running.n_failed + s_running.n_crashed, 0);
	/* Nothing was started or told to the daemon: its record is the first start alone. */
	log = calls(f, "gpu1");
	assert_string_equal(log, started);
	free(log);

	/* New clients name the devices as the daemon was started with, read from it. */
	assert_int_equal(vram_mps_client_env(fresh, &env), 0);
	snprintf(expect, sizeof(expect), "CUDA_VISIBLE_DEVICES=%s", ids[0]);
	assert_string_equal(env[0], expect);
	snprintf(expect, sizeof(expect), "CUDA_MPS_PIPE_DIRECTORY=%s/mps/gpu1/pipe", f->dir);
	assert_string_equal(env[1], expect);
	assert_string_equal(env[3], "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2G");
	vram_mps_env_free(env);
	st = vram_mps_status_json(f->mps);
	d = json_array_get(json_object_get(st, "daemons"), 0);
	assert_int_equal(json_array_size(json_object_get(d, "clients")), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(d, "clients"), 0), "pid")),
			 4321);
	json_decref(st);

	/* Adoption over: it has clients, so it stays. */
	vram_mps_adopt_done(f->mps);
	run_for(f->base, 300);
	assert_true(alive(ctl));
	assert_false(has_quit(f, "gpu1"));

	/* And quits with its last client, as any daemon. */
	vram_mps_client_free(running);
	run_for(f->base, 200);
	assert_true(alive(ctl));
	vram_mps_client_free(fresh);
	wait_dead(ctl);
	assert_true(has_quit(f, "gpu1"));
	assert_int_equal(s_running.n_crashed + s_fresh.n_crashed, 0);
}

static void test_adopt_refuses_what_is_not_that_daemon(void **state)
{
	struct fixture *f = *state;
	const unsigned gpus[] = { 0 };
	struct vram_mps_daemon_info info, bad;
	struct vram_mps_client *old;
	char err[512];
	/* each under the state directory, or as it stands */
	const struct {
		bool under;
		const char *path;
	} not_ours[] = {
		{ false, "/tmp/vram-mps-elsewhere/mps/gpu0/pipe" }, { true, "/mps/gpu0/log" },
		{ true, "/mps/gpu00/pipe" }, { true, "/mps/gpux/pipe" }, { true, "/mps/gpu0-/pipe" },
		{ true, "/mps/../gpu0/pipe" }, { true, "/gpu0/pipe" }, { false, "gpu0/pipe" },
	};
	uint64_t own_ticks = 0;
	json_t *st;
	pid_t ctl;

	old = first_vramd_client(f, gpus, 1, NULL);
	ctl = control_pid(f, 0);
	assert_int_equal(vram_mps_daemons(f->mps, &info, 1), 1);
	next_vramd(f, &old, 1);

	/* The pid now belongs to a process started later. */
	bad = info;
	bad.start_ticks++;
	err[0] = '\0';
	assert_int_equal(vram_mps_adopt(f->mps, &bad, err, sizeof(err)), -ESRCH);
	assert_non_null(strstr(err, "is another process now"));
	/* A live process that is not the one the pid file names. */
	bad = info;
	bad.pid = getpid();
	assert_int_equal(vram_proc_start_ticks(bad.pid, &own_ticks), 0);
	bad.start_ticks = own_ticks;
	assert_int_equal(vram_mps_adopt(f->mps, &bad, err, sizeof(err)), -ESRCH);
	assert_non_null(strstr(err, "is not the MPS control daemon"));
	/* Directories this module would not use. */
	for (size_t i = 0; i < sizeof(not_ours) / sizeof(not_ours[0]); i++) {
		bad = info;
		snprintf(bad.pipe_dir, sizeof(bad.pipe_dir), "%s%s", not_ours[i].under ? f->dir : "",
			 not_ours[i].path);
		err[0] = '\0';
		assert_int_equal(vram_mps_adopt(f->mps, &bad, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "is not an MPS pipe directory of this vramd"));
		assert_non_null(strstr(err, bad.pipe_dir));
	}
	/* Refusals leave nothing behind, and the daemon was told nothing. */
	assert_int_equal(n_daemons(f), 0);
	assert_int_equal(vram_mps_daemons(f->mps, NULL, 0), 0);
	assert_true(alive(ctl));
	assert_false(has_quit(f, "gpu0"));

	/* The same state directory spelled otherwise is still ours. */
	bad = info;
	snprintf(bad.pipe_dir, sizeof(bad.pipe_dir), "%s/./mps/gpu0/pipe", f->dir);
	assert_int_equal(vram_mps_adopt(f->mps, &bad, err, sizeof(err)), 0);
	assert_int_equal(control_pid(f, 0), ctl);

	/* Once the daemon is dead, its record is refused. */
	kill(ctl, SIGKILL);
	wait_dead(ctl);
	{
		uint64_t deadline = now_ms() + 5000;

		while (control_pid(f, 0) != 0 && now_ms() < deadline)
			run_for(f->base, 20);
	}
	assert_int_equal(n_daemons(f), 1);
	st = vram_mps_status_json(f->mps);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(st, "daemons"), 0),
							      "state")),
			    "crashed");
	json_decref(st);
	err[0] = '\0';
	assert_int_equal(vram_mps_adopt(f->mps, &info, err, sizeof(err)), -ESRCH);
	assert_non_null(strstr(err, "is gone"));
}

/*
 * The first vramd runs the daemons of GPU a and GPU b; the next one takes
 * both back. Their pids in *ret_a and *ret_b, their records in info[2].
 */
static void adopt_two(struct fixture *f, unsigned a, unsigned b, pid_t *ret_a, pid_t *ret_b,
		      struct vram_mps_daemon_info *info)
{
	const unsigned ga[] = { a }, gb[] = { b };
	struct vram_mps_client *old[2];
	char err[512] = "";

	old[0] = first_vramd_client(f, ga, 1, NULL);
	old[1] = first_vramd_client(f, gb, 1, NULL);
	*ret_a = control_pid(f, a);
	*ret_b = control_pid(f, b);
	assert_int_equal(vram_mps_daemons(f->mps, info, 2), 2);
	next_vramd(f, old, 2);
	assert_int_equal(vram_mps_adopt(f->mps, &info[0], err, sizeof(err)), 0);
	assert_int_equal(vram_mps_adopt(f->mps, &info[1], err, sizeof(err)), 0);
}

static void test_adopt_done_quits_adopted_daemons_without_clients(void **state)
{
	struct fixture *f = *state;
	const unsigned g0[] = { 0 };
	struct vram_mps_client_spec spec = { .owner = "w#0", .gpus = g0, .n_gpus = 1 };
	struct vram_mps_daemon_info info[2];
	struct vram_mps_client *c = NULL;
	struct seen s = { 0 };
	char err[512];
	pid_t p0, p1;

	adopt_two(f, 0, 1, &p0, &p1, info);
	/* Taken back twice: still one daemon. */
	assert_int_equal(vram_mps_adopt(f->mps, &info[1], err, sizeof(err)), 0);
	assert_int_equal(n_daemons(f), 2);

	/* Until adoption is over, no client is no reason to quit. */
	run_for(f->base, 300);
	assert_true(alive(p0) && alive(p1));
	assert_false(has_quit(f, "gpu0") || has_quit(f, "gpu1"));

	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s, &c, err, sizeof(err)), 0);
	vram_mps_client_set_pid(c, 4321);
	vram_mps_adopt_done(f->mps);
	/* The one nothing uses quits through its pipe directory; the other stays. */
	wait_dead(p1);
	assert_true(has_quit(f, "gpu1"));
	{
		uint64_t deadline = now_ms() + 5000;

		while (n_daemons(f) > 1 && now_ms() < deadline)
			run_for(f->base, 20);
	}
	assert_int_equal(n_daemons(f), 1);
	assert_true(alive(p0));
	assert_false(has_quit(f, "gpu0"));
	assert_int_equal(vram_mps_daemons(f->mps, info, 2), 1);
	assert_int_equal(info[0].pid, p0);

	vram_mps_client_free(c);
	wait_dead(p0);
	assert_int_equal(s.n_ready + s.n_crashed, 0);
}

static void test_adopt_done_quits_unrecorded_daemons_of_ours(void **state)
{
	struct fixture *f = *state;
	const unsigned g0[] = { 0 }, g1[] = { 1 };
	struct vram_mps_client_spec spec = { .owner = "w#0", .gpus = g0, .n_gpus = 1 };
	struct vram_mps_daemon_info info[2];
	struct vram_mps_client *old[2], *c = NULL;
	struct seen s = { 0 };
	const struct vram_mps_daemon_info *rec0;
	char err[512], path[512], text[32];
	pid_t p0, p1, other;

	old[0] = first_vramd_client(f, g0, 1, NULL);
	old[1] = first_vramd_client(f, g1, 1, NULL);
	p0 = control_pid(f, 0);
	p1 = control_pid(f, 1);
	assert_int_equal(vram_mps_daemons(f->mps, info, 2), 2);
	/* A pid file of ours naming a process that is no MPS control program. */
	other = fork();
	assert_true(other >= 0);
	if (other == 0) {
		execlp("sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	snprintf(path, sizeof(path), "%s/mps/gpu7", f->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/mps/gpu7/pipe", f->dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/mps/gpu7/pipe/nvidia-cuda-mps-control.pid", f->dir);
	snprintf(text, sizeof(text), "%d\n", (int)other);
	write_file(path, text);

	next_vramd(f, old, 2);
	/* Only GPU 0's daemon was in the state file, and its process came back. */
	rec0 = info[0].pid == p0 ? &info[0] : &info[1];
	assert_int_equal(rec0->pid, p0);
	assert_int_equal(vram_mps_adopt(f->mps, rec0, err, sizeof(err)), 0);
	assert_int_equal(vram_mps_client_new(f->mps, &spec, on_event, &s, &c, err, sizeof(err)), 0);
	vram_mps_client_set_pid(c, 4321);
	run_for(f->base, 100);
	vram_mps_adopt_done(f->mps);
	/* The unrecorded one goes through its pipe directory; the rest stay. */
	wait_dead(p1);
	assert_true(has_quit(f, "gpu1"));
	run_for(f->base, 300);
	assert_true(alive(p0));
	assert_false(has_quit(f, "gpu0"));
	assert_true(alive(other));
	kill(other, SIGKILL);
	waitpid(other, NULL, 0);

	vram_mps_client_free(c);
	wait_dead(p0);
}

static void test_shutdown_and_stop_quit_adopted_daemons(void **state)
{
	struct fixture *f = *state;
	const unsigned g3[] = { 3 };
	struct vram_mps_daemon_info info[2];
	struct done stopped = { 0 };
	char err[512] = "";
	int done = 0;
	pid_t p2, p3;

	adopt_two(f, 2, 3, &p2, &p3, info);

	/* By hand: an adopted daemon without clients stops without force. */
	assert_int_equal(vram_mps_stop(f->mps, g3, 1, false, on_done, &stopped, err, sizeof(err)), 0);
	assert_true(run_until(f->base, &stopped.calls));
	assert_int_equal(stopped.result, 0);
	wait_dead(p3);

	/* At shutdown, before adoption is over. */
	vram_mps_shutdown(f->mps, on_shutdown, &done);
	assert_true(run_until(f->base, &done));
	wait_dead(p2);
	assert_true(has_quit(f, "gpu2"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_find_control, setup, teardown),
		cmocka_unit_test(test_mem_limit_format),
		cmocka_unit_test_setup_teardown(test_clients_share_one_daemon_which_quits_with_the_last, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_crash_is_reported_with_the_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_start_says_why, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_lists_servers_clients_and_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_manual_start_and_stop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unavailable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_quits_every_daemon, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adopted_daemon_serves_clients_without_a_second_start, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_adopt_refuses_what_is_not_that_daemon, setup, teardown),
		cmocka_unit_test_setup_teardown(test_adopt_done_quits_adopted_daemons_without_clients, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_adopt_done_quits_unrecorded_daemons_of_ours, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shutdown_and_stop_quit_adopted_daemons, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
