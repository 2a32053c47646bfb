/* SPDX-License-Identifier: MIT */
/*
 * Supervisor tests with real children (/bin/sh): the environment and ${VAR}
 * substitution they get, their own process group, output into a rotating
 * log through the output relay (this binary run again, as vramd is), the
 * last output in the log before the exit is reported, SIGTERM then SIGKILL
 * for a child that ignores SIGTERM, exit statuses, spawn errors, the direct
 * pipe when no relay can start, and the health probe against a port with
 * nobody listening.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "daemon/relay.h"
#include "daemon/supervise.h"
#include "textfile.h"

struct ctx {
	struct event_base *base;
	struct vram_supervisor *sup;
	char dir[64];
	char log_path[128];
	struct vram_logfile *log;
	int exits;
	int status;
	pid_t pid;
	bool escalated;
	char tail_at_exit[VRAM_LOGFILE_TAIL_MAX]; /* the log's tail when the exit was reported */
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	snprintf(c->dir, sizeof(c->dir), "/tmp/vram-test-supervise-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(c->log_path, sizeof(c->log_path), "%s/logs/w.log", c->dir);
	c->base = event_base_new();
	assert_non_null(c->base);
	assert_int_equal(vram_supervisor_new(c->base, &c->sup), 0);
	/*
	 * A spawn as another user answers at once when its child fails within the
	 * wait; on a loaded machine (or under valgrind) a forked child may take
	 * longer than the daemon's 250 ms, so the tests wait as long as it takes.
	 */
	vram_supervisor_set_spawn_wait(c->sup, 30000);
	assert_int_equal(vram_logfile_open(c->log_path, 1 << 20, 2, &c->log), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	vram_relay_set_program("/proc/self/exe"); /* whatever a test set */
	vram_supervisor_free(c->sup);
	vram_logfile_close(c->log);
	event_base_free(c->base);
	char cmd[160];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		return -1;
	free(c);
	return 0;
}

static void on_exit_cb(struct vram_child *child, int status, void *arg)
{
	struct ctx *c = arg;
	c->exits++;
	c->status = status;
	c->pid = vram_child_pid(child);
	c->escalated = vram_child_escalated(child);
	vram_logfile_tail(c->log, c->tail_at_exit, sizeof(c->tail_at_exit));
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/* Runs the loop until a child exits or 5 s pass. */
static void run_until_exit(struct ctx *c)
{
	struct timeval tv = {5, 0};
	struct event *guard = evtimer_new(c->base, on_guard, c->base);
	evtimer_add(guard, &tv);
	int before = c->exits;
	while (c->exits == before && evtimer_pending(guard, NULL))
		event_base_loop(c->base, EVLOOP_ONCE);
	event_free(guard);
	assert_int_equal(c->exits, before + 1);
}

/* Spawns argv with its output into c->log; the exit goes to on_exit_cb. */
static struct vram_child *spawn(struct ctx *c, char **argv)
{
	struct vram_spawn sp = {.argv = argv, .log = c->log};
	struct vram_child *child = NULL;
	char err[256];
	int r = vram_supervisor_spawn(c->sup, &sp, on_exit_cb, c, &child, err, sizeof(err));
	if (r < 0)
		fail_msg("spawn: %s", err);
	return child;
}

static void test_env_pgroup_and_log(void **state)
{
	struct ctx *c = *state;
	char *argv[] = {"/bin/sh", "-c",
			"echo \"cvd=[$CUDA_VISIBLE_DEVICES] port=$PORT extra=$EXTRA\"; "
			"echo \"arg=$0\"; echo \"pgid=$(cut -d' ' -f5 /proc/$$$$/stat) pid=$$$$\"; "
			"echo oops >&2; exit 3",
			"${PORT}-$$-${EXTRA}", NULL};
	char *env[] = {"CUDA_VISIBLE_DEVICES=GPU-a,GPU-b", "PORT=8123", "EXTRA=x", "EXTRA=y", NULL};
	struct vram_spawn sp = {.argv = argv, .env = env, .log = c->log};
	struct vram_child *child;
	char err[256];
	assert_int_equal(vram_supervisor_spawn(c->sup, &sp, on_exit_cb, c, &child, err, sizeof(err)), 0);
	pid_t pid = vram_child_pid(child);
	assert_true(pid > 0);
	assert_int_equal(vram_supervisor_live(c->sup), 1);
	run_until_exit(c);
	assert_int_equal(vram_supervisor_live(c->sup), 0);
	assert_true(WIFEXITED(c->status));
	assert_int_equal(WEXITSTATUS(c->status), 3);

	char *text = read_file(c->log_path);
	assert_non_null(text);
	assert_non_null(strstr(text, "cvd=[GPU-a,GPU-b] port=8123 extra=y")); /* later entry wins */
	assert_non_null(strstr(text, "arg=8123-$-y"));                        /* ${VAR} and $$ */
	assert_non_null(strstr(text, "oops"));                                /* stderr too */
	char expect[64];
	snprintf(expect, sizeof(expect), "pgid=%d pid=%d", (int)pid, (int)pid); /* own group */
	assert_non_null(strstr(text, expect));
	free(text);

	char tail[64];
	vram_logfile_tail(c->log, tail, sizeof(tail));
	assert_non_null(strstr(tail, "oops"));
	char how[64];
	assert_string_equal(vram_wait_status_format(c->status, how, sizeof(how)),
			    "exited with status 3");
}

/* Whether pid runs (a zombie does not). */
static bool running(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *paren = strrchr(buf, ')');
	return paren && paren[1] == ' ' && paren[2] != 'Z';
}

/* The process's name (comm), or "" when it is gone. */
static void proc_comm(pid_t pid, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	FILE *f = fopen(path, "r");
	buf[0] = '\0';
	if (f) {
		if (fgets(buf, (int)size, f))
			buf[strcspn(buf, "\n")] = '\0';
		fclose(f);
	}
}

static void test_relay_passes_all_output(void **state)
{
	struct ctx *c = *state;
	/* far more than the pipes between child, relay and loop hold */
	char *argv[] = {"/bin/sh", "-c",
			"head -c 300000 /dev/zero | tr '\\0' x; echo; echo 'the last line'; exit 7",
			NULL};
	struct vram_child *child = spawn(c, argv);
	pid_t relay = vram_child_relay_pid(child);
	assert_true(relay > 0);
	/* named so that `pkill vramd` leaves it alone, in a session of its own */
	char comm[32];
	for (int i = 0; i < 200; i++) {
		proc_comm(relay, comm, sizeof(comm));
		if (strcmp(comm, VRAM_RELAY_NAME) == 0)
			break;
		usleep(10 * 1000);
	}
	assert_string_equal(comm, VRAM_RELAY_NAME);
	assert_int_equal(getsid(relay), relay);
	run_until_exit(c);
	assert_true(WIFEXITED(c->status));
	assert_int_equal(WEXITSTATUS(c->status), 7);
	assert_non_null(strstr(c->tail_at_exit, "the last line\n"));

	char *text = read_file(c->log_path);
	assert_non_null(text);
	assert_int_equal(strspn(text, "x"), 300000); /* nothing lost or added on the way */
	assert_string_equal(text + 300000, "\nthe last line\n");
	free(text);
	/* the relay ended with its input and was reaped by the loop */
	for (int i = 0; i < 100 && kill(relay, 0) == 0; i++)
		event_base_loop(c->base, EVLOOP_NONBLOCK), usleep(10 * 1000);
	assert_int_equal(kill(relay, 0), -1);
}

static void test_relay_last_output_before_exit(void **state)
{
	struct ctx *c = *state;
	char *argv[] = {"/bin/sh", "-c", "sleep 0.3; echo 'the last line'; exit 7", NULL};
	struct vram_child *child = spawn(c, argv);
	pid_t pid = vram_child_pid(child), relay = vram_child_relay_pid(child);
	assert_true(relay > 0);
	/* the relay lags: its last line is still in the child's pipe when the child is reaped */
	assert_int_equal(kill(relay, SIGSTOP), 0);
	while (c->exits == 0 && kill(pid, 0) == 0)
		event_base_loop(c->base, EVLOOP_ONCE);
	assert_int_equal(c->exits, 0); /* reaped, not reported before its output is in */
	assert_int_equal(kill(relay, SIGCONT), 0);
	run_until_exit(c);
	assert_true(WIFEXITED(c->status));
	assert_int_equal(WEXITSTATUS(c->status), 7);
	assert_string_equal(c->tail_at_exit, "the last line\n");
}

static void test_relay_does_not_wait_for_leavers(void **state)
{
	struct ctx *c = *state;
	/*
	 * A process that leaves the group keeps the child's output open after the
	 * child exits. The child waits until it has its own session (field 6 of
	 * its stat), else the SIGKILL to the group could catch it before.
	 */
	char *argv[] = {"/bin/sh", "-c",
			"setsid sleep 30 & l=$!; "
			"until [ \"$(cut -d' ' -f6 /proc/$l/stat)\" = $l ]; do sleep 0.01; done; "
			"echo \"leaver $l\"; exit 0",
			NULL};
	struct vram_child *child = spawn(c, argv);
	pid_t pid = vram_child_pid(child), relay = vram_child_relay_pid(child);
	assert_true(relay > 0);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* reaped, not reported yet: stop and kill send nothing, its pid may be somebody's now */
	while (c->exits == 0 && kill(pid, 0) == 0)
		event_base_loop(c->base, EVLOOP_ONCE);
	assert_int_equal(c->exits, 0);
	vram_child_stop(child, 1);
	vram_child_kill(child);
	run_until_exit(c);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	assert_true(waited < 2.0);
	assert_true(WIFEXITED(c->status));
	assert_false(c->escalated);
	int leaver = 0;
	assert_non_null(strstr(c->tail_at_exit, "leaver "));
	sscanf(strstr(c->tail_at_exit, "leaver ") + 7, "%d", &leaver);
	assert_true(leaver > 0);
	/* its relay was sent SIGKILL rather than left to write the log on its own */
	for (int i = 0; i < 100 && kill(relay, 0) == 0; i++)
		event_base_loop(c->base, EVLOOP_NONBLOCK), usleep(10 * 1000);
	assert_int_equal(kill(relay, 0), -1);
	assert_true(running(leaver));
	(void)kill(leaver, SIGKILL);
}

static void test_no_relay_falls_back_to_a_pipe(void **state)
{
	struct ctx *c = *state;
	vram_relay_set_program("/nonexistent/vramd");
	char *argv[] = {"/bin/sh", "-c", "echo direct; exit 0", NULL};
	struct vram_child *child = spawn(c, argv);
	vram_relay_set_program("/proc/self/exe");
	assert_int_equal(vram_child_relay_pid(child), 0);
	run_until_exit(c);
	assert_non_null(strstr(c->tail_at_exit, "direct\n"));
}

static void test_sigterm_then_sigkill(void **state)
{
	struct ctx *c = *state;
	/* ignores SIGTERM, and has a child of its own in the same group */
	char *argv[] = {"/bin/sh", "-c", "trap '' TERM; sleep 30 & while :; do sleep 0.05; done", NULL};
	struct vram_child *child = spawn(c, argv);
	pid_t pid = vram_child_pid(child);
	usleep(100 * 1000);
	vram_child_stop(child, 200);
	vram_child_stop(child, 10000); /* a second stop does not extend the grace */
	run_until_exit(c);
	assert_true(WIFSIGNALED(c->status));
	assert_int_equal(WTERMSIG(c->status), SIGKILL);
	/* nobody is left in its group (the orphaned sleep is reaped by init) */
	for (int i = 0; i < 100 && kill(-pid, 0) == 0; i++)
		usleep(20 * 1000);
	assert_int_equal(kill(-pid, 0), -1);
	assert_int_equal(errno, ESRCH);
}

static void test_sigterm_obeyed(void **state)
{
	struct ctx *c = *state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct vram_child *child = spawn(c, argv);
	vram_child_stop(child, 5000);
	run_until_exit(c);
	assert_true(WIFSIGNALED(c->status));
	assert_int_equal(WTERMSIG(c->status), SIGTERM);
}

/* A stopped (SIGSTOP) child acts on the SIGTERM at once, without waiting for the SIGKILL. */
static void test_stopped_child_stops(void **state)
{
	struct ctx *c = *state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct vram_child *child = spawn(c, argv);
	pid_t pid = vram_child_pid(child);
	assert_int_equal(kill(pid, SIGSTOP), 0);
	char path[64], text[256] = "";
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 100; i++) {
		FILE *f = fopen(path, "r");
		assert_non_null(f);
		assert_non_null(fgets(text, sizeof(text), f));
		fclose(f);
		if (strstr(text, ") T "))
			break;
		usleep(10 * 1000);
	}
	assert_non_null(strstr(text, ") T ")); /* stopped */
	vram_child_stop(child, 10000); /* the SIGKILL would come after the 5 s run_until_exit waits */
	run_until_exit(c);
	assert_true(WIFSIGNALED(c->status));
	assert_int_equal(WTERMSIG(c->status), SIGTERM);
	assert_false(c->escalated);
}

static void test_spawn_errors(void **state)
{
	struct ctx *c = *state;
	struct vram_child *child = NULL;
	char err[256];
	char *missing[] = {"/nonexistent/model-server", NULL};
	struct vram_spawn sp = {.argv = missing, .log = c->log};
	assert_int_equal(vram_supervisor_spawn(c->sup, &sp, on_exit_cb, c, &child, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "/nonexistent/model-server"));
	char *unset[] = {"/bin/true", "--port", "${NOT_SET_ANYWHERE}", NULL};
	sp.argv = unset;
	assert_int_equal(vram_supervisor_spawn(c->sup, &sp, on_exit_cb, c, &child, err, sizeof(err)),
			 -ENOENT);
	assert_string_equal(err, "cmd[2]: ${NOT_SET_ANYWHERE} is not set");
	assert_int_equal(vram_supervisor_live(c->sup), 0);
}

/* Spawns argv as cr; returns what vram_supervisor_spawn returned, its message in err. */
static int spawn_as_user(struct ctx *c, char **argv, const char *cwd, const struct vram_creds *cr,
			 char *err, size_t err_size)
{
	struct vram_spawn sp = {.argv = argv, .cwd = cwd, .log = c->log, .creds = cr};
	struct vram_child *child = NULL;
	return vram_supervisor_spawn(c->sup, &sp, on_exit_cb, c, &child, err, err_size);
}

/*
 * A child with credentials runs as that user, group and groups (all of real,
 * effective and saved), in its own group, with none of the daemon's
 * environment: a secret vramd holds in its own does not reach the user.
 */
static void test_creds_run_as_the_user(void **state)
{
	struct ctx *c = *state;
	if (geteuid() != 0)
		skip(); /* only root can start processes as another user */
	static const gid_t groups[] = {65533, 4242};
	struct vram_creds cr = {.uid = 65534, .gid = 65533, .groups = groups, .n_groups = 2};
	setenv("VRAM_TEST_SECRET", "s3cret", 1);
	char *argv[] = {"sh", "-c",
			"echo \"ids=$(id -u) $(id -g) groups=$(id -G)\"; "
			"echo \"secret=[$VRAM_TEST_SECRET] mine=$MINE path=$PATH cwd=$(pwd)\"; "
			"grep -E '^(Uid|Gid):' /proc/$$$$/status; "
			"echo \"pgid=$(cut -d' ' -f5 /proc/$$$$/stat) pid=$$$$\"",
			NULL};
	char *env[] = {"MINE=yes", NULL};
	struct vram_spawn sp = {.argv = argv, .env = env, .cwd = "/", .log = c->log, .creds = &cr};
	struct vram_child *child = NULL;
	char err[256];
	int r = vram_supervisor_spawn(c->sup, &sp, on_exit_cb, c, &child, err, sizeof(err));
	unsetenv("VRAM_TEST_SECRET");
	if (r < 0)
		fail_msg("spawn: %s", err);
	pid_t pid = vram_child_pid(child);
	run_until_exit(c);
	assert_true(WIFEXITED(c->status));
	assert_int_equal(WEXITSTATUS(c->status), 0);
	char *text = read_file(c->log_path);
	assert_non_null(text);
	assert_non_null(strstr(text, "ids=65534 65533 groups=65533 4242"));
	assert_non_null(strstr(text, "Uid:\t65534\t65534\t65534\t65534"));
	assert_non_null(strstr(text, "Gid:\t65533\t65533\t65533\t65533"));
	assert_non_null(strstr(text, "secret=[] mine=yes path=" VRAM_SPAWN_DEFAULT_PATH " cwd=/\n"));
	char expect[64];
	snprintf(expect, sizeof(expect), "pgid=%d pid=%d", (int)pid, (int)pid);
	assert_non_null(strstr(text, expect));
	free(text);
}

/*
 * The working directory and the program are looked up as the user: one the
 * user may not enter or run is an error of the spawn that says so and as
 * whom, not a child that exits 127; nothing is left running.
 */
static void test_creds_errors_name_the_step(void **state)
{
	struct ctx *c = *state;
	if (geteuid() != 0)
		skip();
	struct vram_creds cr = {.uid = 65534, .gid = 65534};
	char err[512], expect[512];
	char *id[] = {"id", NULL};
	/* c->dir is root's, mode 0700 */
	assert_int_equal(spawn_as_user(c, id, c->dir, &cr, err, sizeof(err)), -EACCES);
	snprintf(expect, sizeof(expect), "cwd %s: Permission denied (as uid 65534)", c->dir);
	assert_string_equal(err, expect);

	char script[160];
	snprintf(script, sizeof(script), "%s/root-only.sh", c->dir);
	FILE *f = fopen(script, "w");
	assert_non_null(f);
	fputs("#!/bin/sh\necho ran\n", f);
	fclose(f);
	assert_int_equal(chmod(script, 0700), 0);
	assert_int_equal(chmod(c->dir, 0755), 0);
	char *denied[] = {script, NULL};
	assert_int_equal(spawn_as_user(c, denied, "/", &cr, err, sizeof(err)), -EACCES);
	snprintf(expect, sizeof(expect), "cmd[0] %s: Permission denied (as uid 65534)", script);
	assert_string_equal(err, expect);

	char *missing[] = {"no-such-program-anywhere", NULL};
	assert_int_equal(spawn_as_user(c, missing, "/", &cr, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "cmd[0] no-such-program-anywhere: No such file or directory (as uid 65534)");
	assert_int_equal(vram_supervisor_live(c->sup), 0);
	assert_int_equal(c->exits, 0);
	/* the same program runs as root, whose rights it needs */
	struct vram_creds root = {.uid = 0, .gid = 0};
	assert_int_equal(spawn_as_user(c, denied, "/", &root, err, sizeof(err)), 0);
	run_until_exit(c);
	assert_int_equal(WEXITSTATUS(c->status), 0);
}

/*
 * A child that has not run its program when the spawn stops waiting (a
 * user's file system may hold it): the spawn succeeds, and why the program
 * never ran is in the log before its exit is reported. One that runs is
 * unaffected.
 */
static void test_creds_late_failure_is_logged(void **state)
{
	struct ctx *c = *state;
	if (geteuid() != 0)
		skip();
	vram_supervisor_set_spawn_wait(c->sup, 0); /* never wait: every outcome comes later */
	struct vram_creds cr = {.uid = 65534, .gid = 65534};
	char err[256], expect[256];
	char *id[] = {"sh", "-c", "echo ran as $(id -u)", NULL};
	assert_int_equal(spawn_as_user(c, id, c->dir, &cr, err, sizeof(err)), 0);
	run_until_exit(c);
	assert_int_equal(WEXITSTATUS(c->status), 127);
	snprintf(expect, sizeof(expect), "[vramd] cwd %s: Permission denied (as uid 65534)", c->dir);
	assert_non_null(strstr(c->tail_at_exit, expect));

	assert_int_equal(spawn_as_user(c, id, "/", &cr, err, sizeof(err)), 0);
	run_until_exit(c);
	assert_int_equal(WEXITSTATUS(c->status), 0);
	assert_non_null(strstr(c->tail_at_exit, "ran as 65534"));
	assert_int_equal(vram_supervisor_live(c->sup), 0);
}

static void test_subst(void **state)
{
	char *env[] = {"A=1", "B=two", NULL};
	char *out = NULL, err[128];
	assert_int_equal(vram_subst_vars("x${A}y${B}$${A}", env, &out, err, sizeof(err)), 0);
	assert_string_equal(out, "x1ytwo${A}");
	free(out);
	assert_int_equal(vram_subst_vars("${A", env, &out, err, sizeof(err)), -EINVAL);
	assert_int_equal(vram_subst_vars("${}", env, &out, err, sizeof(err)), -ENOENT);
	assert_int_equal(vram_subst_vars("plain", NULL, &out, err, sizeof(err)), 0);
	assert_string_equal(out, "plain");
	free(out);
}

static void test_log_rotation(void **state)
{
	struct ctx *c = *state;
	char path[160], rotated[176];
	snprintf(path, sizeof(path), "%s/rot/r.log", c->dir);
	struct vram_logfile *l;
	assert_int_equal(vram_logfile_open(path, 100, 2, &l), 0);
	char line[40];
	for (int i = 0; i < 20; i++) {
		int n = snprintf(line, sizeof(line), "line %02d ...........\n", i); /* 20 bytes */
		assert_int_equal(vram_logfile_write(l, line, (size_t)n), 0);
	}
	/* 400 bytes written, 100 per file, 2 rotated kept: the last 300 bytes survive */
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size <= 100);
	for (int i = 1; i <= 2; i++) {
		snprintf(rotated, sizeof(rotated), "%s.%d", path, i);
		assert_int_equal(stat(rotated, &st), 0);
		assert_int_equal(st.st_size, 100);
	}
	snprintf(rotated, sizeof(rotated), "%s.3", path);
	assert_int_equal(stat(rotated, &st), -1);
	char *cur = read_file(path);
	assert_non_null(strstr(cur, "line 19"));
	free(cur);
	snprintf(rotated, sizeof(rotated), "%s.2", path);
	char *old = read_file(rotated);
	assert_non_null(strstr(old, "line 05"));
	assert_null(strstr(old, "line 04"));
	free(old);
	/* the in-memory tail starts on a line boundary */
	char tail[50];
	vram_logfile_tail(l, tail, sizeof(tail));
	assert_string_equal(tail, "line 18 ...........\nline 19 ...........\n");
	vram_logfile_close(l);
}

/*
 * While a log is held (another process, a relay, writes the file), the
 * daemon's writes stay in memory; the last release reopens the file, which
 * the other writer may have rotated, and appends them with the limits
 * counted afresh.
 */
static void test_log_hold(void **state)
{
	struct ctx *c = *state;
	char path[160], rotated[176];
	snprintf(path, sizeof(path), "%s/hold/h.log", c->dir);
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	struct vram_logfile *l, *relay;
	assert_int_equal(vram_logfile_open(path, 200, 1, &l), 0);
	assert_int_equal(vram_logfile_write(l, "before\n", 7), 0);
	vram_logfile_hold(l);
	vram_logfile_hold(l); /* two relays write the file meanwhile */
	assert_int_equal(vram_logfile_write(l, "held line .........\n", 20), 0);
	assert_int_equal(vram_logfile_note(l, "adopted"), 0);
	/* the other writer: 18 lines of 20 bytes rotate the file once, 180 bytes stay */
	assert_int_equal(vram_logfile_open(path, 200, 1, &relay), 0);
	char line[40];
	for (int i = 0; i < 18; i++) {
		int n = snprintf(line, sizeof(line), "line %02d ...........\n", i);
		assert_int_equal(vram_logfile_write(relay, line, (size_t)n), 0);
	}
	vram_logfile_close(relay);
	char *text = read_file(path);
	assert_null(strstr(text, "held"));
	free(text);
	vram_logfile_release(l);
	text = read_file(path);
	assert_null(strstr(text, "held")); /* one hold is left */
	free(text);
	vram_logfile_release(l);
	vram_logfile_release(l); /* one too many: nothing */
	/* 180 + 36 bytes would pass 200: rotated with the size the other writer left */
	text = read_file(path);
	assert_string_equal(text, "held line .........\n[vramd] adopted\n");
	free(text);
	text = read_file(rotated);
	assert_int_equal(strlen(text), 180);
	assert_non_null(strstr(text, "line 09 ...........\n"));
	assert_non_null(strstr(text, "line 17 ...........\n"));
	free(text);
	char tail[64];
	vram_logfile_tail(l, tail, sizeof(tail));
	assert_string_equal(tail, "before\nheld line .........\n[vramd] adopted\n");

	/* past VRAM_LOGFILE_HOLD_MAX bytes: dropped, and one line says how many */
	vram_logfile_close(l);
	assert_int_equal(vram_logfile_open(path, 1 << 20, 1, &l), 0);
	assert_int_equal(vram_logfile_write(l, "", 0), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	off_t before = st.st_size;
	vram_logfile_hold(l);
	static char chunk[1000];
	memset(chunk, 'y', sizeof(chunk));
	for (int i = 0; i < 70; i++)
		assert_int_equal(vram_logfile_write(l, chunk, sizeof(chunk)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, before);
	vram_logfile_release(l);
	text = read_file(path);
	assert_int_equal(strspn(text + before, "y"), VRAM_LOGFILE_HOLD_MAX);
	char expect[200];
	snprintf(expect, sizeof(expect),
		 "[vramd] %d bytes of output were dropped here while another process wrote this "
		 "file (at most %d are kept)\n",
		 70000 - VRAM_LOGFILE_HOLD_MAX, VRAM_LOGFILE_HOLD_MAX);
	assert_string_equal(text + before + VRAM_LOGFILE_HOLD_MAX, expect);
	free(text);
	vram_logfile_close(l);
}

struct probe_result {
	int calls;
	bool ok;
	char why[128];
};

static void on_probe(bool ok, const char *why, void *arg)
{
	struct probe_result *p = arg;
	p->calls++;
	p->ok = ok;
	snprintf(p->why, sizeof(p->why), "%s", why);
}

static void test_probe_refused(void **state)
{
	struct ctx *c = *state;
	struct probe_result res = {0};
	struct vram_health_probe *p;
	/* port 1 on loopback: nobody listens there in a test environment */
	assert_int_equal(vram_health_probe_start(c->base, VRAM_HEALTH_HTTP, "/health", 1, 1000,
						 on_probe, &res, &p), 0);
	assert_int_equal(res.calls, 0); /* never from inside the call */
	while (res.calls == 0)
		event_base_loop(c->base, EVLOOP_ONCE);
	assert_int_equal(res.calls, 1);
	assert_false(res.ok);
	assert_non_null(strstr(res.why, "port 1"));

	/* a cancelled probe never calls back */
	res.calls = 0;
	assert_int_equal(vram_health_probe_start(c->base, VRAM_HEALTH_TCP, NULL, 1, 1000, on_probe,
						 &res, &p), 0);
	vram_health_probe_cancel(p);
	event_base_loop(c->base, EVLOOP_NONBLOCK);
	assert_int_equal(res.calls, 0);
}

/* Marks the descriptors this process has open (below 1024) in open_fds. */
static void list_fds(bool open_fds[1024])
{
	memset(open_fds, 0, 1024 * sizeof(bool));
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	for (struct dirent *e; (e = readdir(d));) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] != '.' && fd >= 0 && fd < 1024 && fd != dirfd(d))
			open_fds[fd] = true;
	}
	closedir(d);
}

static void test_probe_socket_not_inherited(void **state)
{
	struct ctx *c = *state;
	/* a port that takes connections and never answers keeps the probe open */
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(sin);
	assert_int_equal(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(l, 4), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sin, &len), 0);
	static bool before[1024], during[1024];
	list_fds(before);
	struct probe_result res = {0};
	struct vram_health_probe *p;
	assert_int_equal(vram_health_probe_start(c->base, VRAM_HEALTH_HTTP, "/health",
						 ntohs(sin.sin_port), 5000, on_probe, &res, &p), 0);
	for (int i = 0; i < 10; i++)
		event_base_loop(c->base, EVLOOP_NONBLOCK);
	list_fds(during);

	/* a workload started meanwhile does not hold the probe's socket */
	char *argv[] = {"/bin/sh", "-c", "echo \" $(ls /proc/$$$$/fd | tr '\\n' ' ')\"", NULL};
	(void)spawn(c, argv);
	run_until_exit(c);
	assert_non_null(strstr(c->tail_at_exit, " 0 1 ")); /* the listing is there */
	int probe_fds = 0;
	for (int fd = 3; fd < 1024; fd++) {
		if (!during[fd] || before[fd])
			continue;
		probe_fds++;
		char token[16];
		snprintf(token, sizeof(token), " %d ", fd);
		assert_null(strstr(c->tail_at_exit, token));
	}
	assert_true(probe_fds >= 1);
	assert_int_equal(res.calls, 0);
	vram_health_probe_cancel(p);
	close(l);
}

static void test_children_keep_the_starting_nofile(void **state)
{
	struct ctx *c = *state;
	struct rlimit orig;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &orig), 0);
	if (orig.rlim_max != RLIM_INFINITY && orig.rlim_max < 128)
		skip();
	struct rlimit low = { .rlim_cur = 64, .rlim_max = orig.rlim_max };
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	assert_int_equal(vram_spawn_nofile_raise(128), 128);
	struct rlimit now;
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &now), 0);
	assert_int_equal(now.rlim_cur, 128);
	assert_int_equal(vram_spawn_nofile_raise(100), 128); /* never lowered */
	char *argv[] = {"/bin/sh", "-c", "echo nofile=$(ulimit -n)", NULL};
	spawn(c, argv);
	run_until_exit(c);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &now), 0);
	assert_int_equal(now.rlim_cur, 128); /* the daemon's again after the spawn */
	/* valgrind emulates the limit for its client, so a child sees the real one */
	const char *pre = getenv("LD_PRELOAD");
	if (!pre || !strstr(pre, "vgpreload"))
		assert_non_null(strstr(c->tail_at_exit, "nofile=64\n"));
	(void)setrlimit(RLIMIT_NOFILE, &orig);
}

int main(int argc, char **argv)
{
	/* like vramd: this binary is the output relay of the children it spawns */
	if (vram_relay_requested(argc, argv))
		return vram_relay_main(argc, argv);
	vram_relay_set_program("/proc/self/exe");
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_env_pgroup_and_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_passes_all_output, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_last_output_before_exit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_does_not_wait_for_leavers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_relay_falls_back_to_a_pipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_then_sigkill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigterm_obeyed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stopped_child_stops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spawn_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_creds_run_as_the_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_creds_errors_name_the_step, setup, teardown),
		cmocka_unit_test_setup_teardown(test_creds_late_failure_is_logged, setup, teardown),
		cmocka_unit_test(test_subst),
		cmocka_unit_test_setup_teardown(test_log_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_hold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_probe_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_probe_socket_not_inherited, setup, teardown),
		/* last: the raised limit stays for the rest of the process */
		cmocka_unit_test_setup_teardown(test_children_keep_the_starting_nofile, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
