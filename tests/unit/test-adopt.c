/* SPDX-License-Identifier: MIT */
/*
 * Adoption tests: a supervisor takes back processes that another one
 * started. The other one is this binary run again as a small daemon
 * (--test-daemon: its own loop, supervisor and log, and the output relay
 * that vramd would give the workload), which the tests SIGKILL as vramd
 * would die; or a process started with a double fork, which is nobody's
 * child of ours. What is checked: the exit is noticed (status unknown for
 * a process that is not ours, the real one for our own child), stop and
 * kill reach the group only while the process lives, a pid that is
 * another process now or gone is refused, the relay's last output is in
 * the log before the exit is reported, and freeing the supervisor ends
 * adopted processes as it ends spawned ones. Then the log's handover: the
 * relay, which writes the log since its daemon died, hands it to the
 * supervisor that adopted its workload, so that every line is in the log
 * once and in order; a relay that cannot connect keeps the file and the
 * hold ends after 2 s; a relay that cannot hand over is not asked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/proc.h"
#include "daemon/relay.h"
#include "daemon/supervise.h"
#include "textfile.h"

#define DAEMON_ARG "--test-daemon"
#define GONE_NOTE "[vramd] vramd is gone; the output relay writes here directly\n"

/* This binary, read at start: under valgrind, "/proc/self/exe" run by a child is valgrind */
static char self_exe[4096];
/* Whether pidfd_open works here (valgrind 3.19 does not know it) */
static bool have_pidfd;

/*
 * Skips the test where pidfd_open is missing, after checking that adopting
 * then fails as it says: -ENOSYS, with a message that names it.
 */
static void require_pidfd(struct vram_supervisor *sup)
{
	if (have_pidfd)
		return;
	struct vram_adopt a = {.pid = getpid(), .start_ticks = 1};
	struct vram_child *child = NULL;
	char err[256];
	assert_int_equal(vram_supervisor_adopt(sup, &a, NULL, NULL, &child, err, sizeof(err)),
			 -ENOSYS);
	assert_non_null(strstr(err, "pidfd_open is not available"));
	skip();
}

struct ctx {
	struct event_base *base;
	struct vram_supervisor *sup;
	char dir[64];
	char log_path[128];
	char go_path[128];        /* the workloads wait for this file before their main part */
	char stop_path[128];      /* the numbered workload stops at this file */
	char sock_path[128];      /* the daemons' relay socket */
	struct vram_logfile *log;
	int exits;
	int status;
	bool escalated;
	bool relay_ran_at_exit;   /* the child's relay was still running when its exit was reported */
	char *file_at_exit;       /* the log file's text when the exit was reported */
	pid_t daemon;             /* the --test-daemon process, 0 when none */
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	snprintf(c->dir, sizeof(c->dir), "/tmp/vram-test-adopt-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(c->log_path, sizeof(c->log_path), "%s/logs/w.log", c->dir);
	snprintf(c->go_path, sizeof(c->go_path), "%s/go", c->dir);
	snprintf(c->stop_path, sizeof(c->stop_path), "%s/stop", c->dir);
	snprintf(c->sock_path, sizeof(c->sock_path), "%s/relay.sock", c->dir);
	c->base = event_base_new();
	assert_non_null(c->base);
	assert_int_equal(vram_supervisor_new(c->base, &c->sup), 0);
	assert_int_equal(vram_logfile_open(c->log_path, 1 << 20, 2, &c->log), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	if (c->daemon > 0) {
		(void)kill(c->daemon, SIGKILL);
		(void)waitpid(c->daemon, NULL, 0);
	}
	vram_supervisor_free(c->sup);
	vram_logfile_close(c->log);
	event_base_free(c->base);
	free(c->file_at_exit);
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
	c->escalated = vram_child_escalated(child);
	pid_t relay = vram_child_relay_pid(child);
	c->relay_ran_at_exit = relay > 0 && kill(relay, 0) == 0;
	free(c->file_at_exit);
	c->file_at_exit = read_file(c->log_path);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/* Runs the loop until a child exits or secs pass; asserts that one exited. */
static void run_until_exit_within(struct ctx *c, long secs)
{
	struct timeval tv = {secs, 0};
	struct event *guard = evtimer_new(c->base, on_guard, c->base);
	evtimer_add(guard, &tv);
	int before = c->exits;
	while (c->exits == before && evtimer_pending(guard, NULL))
		event_base_loop(c->base, EVLOOP_ONCE);
	event_free(guard);
	assert_int_equal(c->exits, before + 1);
}

static void run_until_exit(struct ctx *c)
{
	run_until_exit_within(c, 5);
}

static uint64_t start_ticks(pid_t pid)
{
	uint64_t t = 0;
	assert_int_equal(vram_proc_start_ticks(pid, &t), 0);
	return t;
}

/* Waits (5 s at most) until nothing of process group pgid is left. */
static void expect_group_gone(pid_t pgid)
{
	for (int i = 0; i < 250 && kill(-pgid, 0) == 0; i++)
		usleep(20 * 1000);
	assert_int_equal(kill(-pgid, 0), -1);
	assert_int_equal(errno, ESRCH);
}

/*
 * Starts `sh -c script` as nobody's child of ours (a double fork: init
 * reaps it), leader of its own process group, output to /dev/null.
 * Returns its pid.
 */
static pid_t start_orphan(const char *script)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t mid = fork();
	assert_true(mid >= 0);
	if (mid == 0) {
		pid_t gc = fork();
		if (gc == 0) {
			(void)setpgid(0, 0);
			int null = open("/dev/null", O_RDWR);
			dup2(null, 0), dup2(null, 1), dup2(null, 2);
			execl("/bin/sh", "sh", "-c", script, (char *)NULL);
			_exit(127);
		}
		/* both sides set the group, so that it is set whoever runs first */
		(void)setpgid(gc, gc);
		(void)!write(p[1], &gc, sizeof(gc));
		_exit(0);
	}
	close(p[1]);
	pid_t pid = 0;
	assert_int_equal(read(p[0], &pid, sizeof(pid)), (ssize_t)sizeof(pid));
	close(p[0]);
	assert_int_equal(waitpid(mid, NULL, 0), mid);
	return pid;
}

/* Forks `sh -c script` as a child of ours, leader of its own group. */
static pid_t start_own_child(const char *script)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		(void)setpgid(0, 0);
		execl("/bin/sh", "sh", "-c", script, (char *)NULL);
		_exit(127);
	}
	(void)setpgid(pid, pid);
	return pid;
}

struct started {
	pid_t pid, relay;
	uint64_t ticks, relay_ticks;
};

/*
 * Runs this binary as a daemon (DAEMON_ARG) that spawns `sh -c script`
 * through its own supervisor into c->log_path, listening for relays at
 * sock (NULL: not at all), and reads back what it spawned. The daemon runs
 * until the test kills it.
 */
static struct started start_daemon_at(struct ctx *c, const char *script, const char *sock)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(p[1], 1);
		execl(self_exe, "test-adopt", DAEMON_ARG, c->log_path, script, sock, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	c->daemon = pid;
	char line[256] = "";
	size_t len = 0;
	while (len < sizeof(line) - 1 && !memchr(line, '\n', len)) {
		struct pollfd pfd = {.fd = p[0], .events = POLLIN};
		assert_int_equal(poll(&pfd, 1, 10000), 1);
		ssize_t n = read(p[0], line + len, sizeof(line) - 1 - len);
		assert_true(n > 0);
		len += (size_t)n;
		line[len] = '\0';
	}
	close(p[0]);
	struct started st = {0};
	unsigned long long t, rt;
	int pid_i, relay_i;
	assert_int_equal(sscanf(line, "%d %llu %d %llu", &pid_i, &t, &relay_i, &rt), 4);
	st.pid = pid_i, st.relay = relay_i, st.ticks = t, st.relay_ticks = rt;
	assert_true(st.pid > 0);
	assert_true(st.relay > 0);
	return st;
}

static struct started start_daemon(struct ctx *c, const char *script)
{
	return start_daemon_at(c, script, NULL);
}

/* The daemon dies as vramd would, by SIGKILL; its children are init's now. */
static void kill_daemon(struct ctx *c)
{
	assert_int_equal(kill(c->daemon, SIGKILL), 0);
	assert_int_equal(waitpid(c->daemon, NULL, 0), c->daemon);
	c->daemon = 0;
}

static void go(struct ctx *c)
{
	FILE *f = fopen(c->go_path, "w");
	assert_non_null(f);
	fclose(f);
}

static struct vram_child *adopt(struct ctx *c, const struct started *st)
{
	struct vram_adopt a = {.pid = st->pid, .start_ticks = st->ticks, .relay_pid = st->relay,
			       .relay_start_ticks = st->relay_ticks, .log = c->log};
	struct vram_child *child = NULL;
	char err[256];
	int r = vram_supervisor_adopt(c->sup, &a, on_exit_cb, c, &child, err, sizeof(err));
	if (r < 0)
		fail_msg("adopt: %s", err);
	return child;
}

/*
 * A workload whose daemon died is adopted with its relay: its exit is
 * reported with an unknown status, and only once the relay has written its
 * last output into the log file.
 */
static void test_exit_of_an_adopted_process(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	char script[512];
	snprintf(script, sizeof(script),
		 "echo started; while [ ! -e '%s' ]; do sleep 0.01; done; "
		 "echo 'the last line'; exit 3",
		 c->go_path);
	struct started st = start_daemon(c, script);
	wait_for_text(c->log_path, "started\n"); /* written by the daemon */
	kill_daemon(c);
	struct vram_child *child = adopt(c, &st);
	assert_true(vram_child_adopted(child));
	assert_int_equal(vram_child_pid(child), st.pid);
	assert_int_equal(vram_child_relay_pid(child), st.relay);
	assert_true(vram_child_start_ticks(child) == st.ticks);
	assert_true(vram_child_relay_start_ticks(child) == st.relay_ticks);
	assert_int_equal(vram_supervisor_live(c->sup), 1);
	/* the relay lags: the last line is still in its pipe when the workload ends */
	assert_int_equal(kill(st.relay, SIGSTOP), 0);
	go(c);
	int ended = (int)syscall(SYS_pidfd_open, st.pid, 0U);
	assert_true(ended >= 0);
	struct pollfd pfd = {.fd = ended, .events = POLLIN};
	while (c->exits == 0 && poll(&pfd, 1, 0) == 0)
		event_base_loop(c->base, EVLOOP_ONCE);
	close(ended);
	assert_int_equal(c->exits, 0); /* ended, not reported before its output is in */
	assert_int_equal(kill(st.relay, SIGCONT), 0);
	run_until_exit(c);
	assert_int_equal(vram_supervisor_live(c->sup), 0);
	assert_int_equal(c->status, VRAM_WAIT_STATUS_UNKNOWN);
	char how[128];
	assert_string_equal(vram_wait_status_format(c->status, how, sizeof(how)),
			    "ended (its exit status is unknown: this vramd did not start it)");
	/* the relay wrote the last line itself, and ended, before the exit was reported */
	assert_false(c->relay_ran_at_exit);
	assert_non_null(c->file_at_exit);
	const char *note = strstr(c->file_at_exit, GONE_NOTE);
	assert_non_null(note);
	assert_string_equal(note + strlen(GONE_NOTE), "the last line\n");
}

/*
 * stop: SIGTERM to the group of an adopted process; one that ignores it gets
 * SIGKILL after the grace, with everything in its group. One that obeys is
 * not escalated.
 */
static void test_stop_an_adopted_process(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	pid_t pid = start_orphan("trap '' TERM; sleep 30 & while :; do sleep 0.05; done");
	struct started st = {.pid = pid, .ticks = start_ticks(pid)};
	struct vram_child *child = adopt(c, &st);
	assert_int_equal(vram_child_relay_pid(child), 0);
	usleep(100 * 1000);
	vram_child_stop(child, 200);
	run_until_exit(c);
	assert_int_equal(c->status, VRAM_WAIT_STATUS_UNKNOWN);
	assert_true(c->escalated);
	expect_group_gone(pid);

	pid = start_orphan("exec sleep 30");
	st = (struct started){.pid = pid, .ticks = start_ticks(pid)};
	child = adopt(c, &st);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	vram_child_stop(child, 10000);
	run_until_exit(c);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 5);
	assert_false(c->escalated);
	expect_group_gone(pid);

	/* kill: SIGKILL to the group at once */
	pid = start_orphan("trap '' TERM; sleep 30 & wait");
	st = (struct started){.pid = pid, .ticks = start_ticks(pid)};
	child = adopt(c, &st);
	vram_child_kill(child);
	run_until_exit(c);
	expect_group_gone(pid);
}

/*
 * A pid that another process has now (its start time differs), or that
 * nobody has, is refused with -ESRCH and a message that says which; the
 * process with the pid is left alone. A process that does not lead its
 * own group is refused too: stopping it would signal somebody's group.
 */
static void test_refuses_what_is_not_the_recorded_process(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	pid_t pid = start_orphan("exec sleep 30");
	uint64_t ticks = start_ticks(pid);
	struct vram_adopt a = {.pid = pid, .start_ticks = ticks - 1, .log = c->log};
	struct vram_child *child = NULL;
	char err[256], expect[256];
	assert_int_equal(vram_supervisor_adopt(c->sup, &a, on_exit_cb, c, &child, err, sizeof(err)),
			 -ESRCH);
	snprintf(expect, sizeof(expect),
		 "pid %d is another process now (started at tick %llu, the recorded one at %llu)",
		 (int)pid, (unsigned long long)ticks, (unsigned long long)(ticks - 1));
	assert_string_equal(err, expect);
	assert_null(child);
	assert_int_equal(vram_supervisor_live(c->sup), 0);
	assert_int_equal(kill(pid, 0), 0); /* untouched */
	(void)kill(pid, SIGKILL);

	/* gone: a child that exited and was reaped */
	pid_t gone = start_own_child("exit 0");
	assert_int_equal(waitpid(gone, NULL, 0), gone);
	a = (struct vram_adopt){.pid = gone, .start_ticks = 1, .log = c->log};
	assert_int_equal(vram_supervisor_adopt(c->sup, &a, on_exit_cb, c, &child, err, sizeof(err)),
			 -ESRCH);
	snprintf(expect, sizeof(expect), "pid %d is gone", (int)gone);
	assert_string_equal(err, expect);

	/* in our own process group: not its group's leader */
	pid_t member = fork();
	assert_true(member >= 0);
	if (member == 0) {
		execl("/bin/sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	a = (struct vram_adopt){.pid = member, .start_ticks = start_ticks(member), .log = c->log};
	assert_int_equal(vram_supervisor_adopt(c->sup, &a, on_exit_cb, c, &child, err, sizeof(err)),
			 -EINVAL);
	snprintf(expect, sizeof(expect), "pid %d is not the leader of its process group (%d)",
		 (int)member, (int)getpgrp());
	assert_string_equal(err, expect);
	(void)kill(member, SIGKILL);
	(void)waitpid(member, NULL, 0);
	assert_int_equal(vram_supervisor_live(c->sup), 0);
	assert_int_equal(c->exits, 0);
}

/*
 * A process that is our child (vramd executed itself anew in place) gets
 * its real exit status, from the reaper while it runs when adopted and
 * also when it had ended already (its SIGCHLD went to nobody).
 */
static void test_adopting_our_own_child_gives_its_status(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	pid_t pid = start_own_child("sleep 0.2; exit 5");
	struct started st = {.pid = pid, .ticks = start_ticks(pid)};
	struct vram_child *child = adopt(c, &st);
	assert_true(vram_child_adopted(child));
	run_until_exit(c);
	assert_true(WIFEXITED(c->status));
	assert_int_equal(WEXITSTATUS(c->status), 5);

	/*
	 * Ended before it was adopted, while no supervisor was there to hear
	 * its SIGCHLD: a zombie of ours that only its pidfd tells about.
	 */
	vram_supervisor_free(c->sup);
	c->sup = NULL;
	pid = start_own_child("kill -SEGV $$");
	st = (struct started){.pid = pid, .ticks = start_ticks(pid)};
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	assert_int_equal(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
	assert_int_equal(vram_supervisor_new(c->base, &c->sup), 0);
	child = adopt(c, &st);
	run_until_exit(c);
	assert_true(WIFSIGNALED(c->status));
	assert_int_equal(WTERMSIG(c->status), SIGSEGV);
	assert_int_equal(kill(pid, 0), -1); /* reaped */
}

/* Freeing the supervisor kills adopted processes' groups as it kills spawned ones'. */
static void test_free_ends_adopted_processes(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	pid_t pid = start_orphan("trap '' TERM; sleep 30 & wait");
	struct started st = {.pid = pid, .ticks = start_ticks(pid)};
	(void)adopt(c, &st);
	pid_t own = start_own_child("sleep 30 & wait");
	st = (struct started){.pid = own, .ticks = start_ticks(own)};
	(void)adopt(c, &st);
	assert_int_equal(vram_supervisor_live(c->sup), 2);
	vram_supervisor_free(c->sup);
	c->sup = NULL;
	assert_int_equal(c->exits, 0); /* no callbacks, as for spawned children */
	assert_int_equal(kill(own, 0), -1); /* our child is reaped */
	expect_group_gone(pid);
	expect_group_gone(own);
	assert_int_equal(vram_supervisor_new(c->base, &c->sup), 0);
}

/* Spawned children record their start time and their relay's, for the state file. */
static void test_spawned_children_record_start_ticks(void **state)
{
	struct ctx *c = *state;
	char *argv[] = {"/bin/sleep", "30", NULL};
	struct vram_spawn sp = {.argv = argv, .log = c->log};
	struct vram_child *child = NULL;
	char err[256];
	assert_int_equal(vram_supervisor_spawn(c->sup, &sp, on_exit_cb, c, &child, err, sizeof(err)),
			 0);
	assert_false(vram_child_adopted(child));
	assert_true(vram_child_start_ticks(child) == start_ticks(vram_child_pid(child)));
	assert_true(vram_child_relay_pid(child) > 0);
	assert_true(vram_child_relay_start_ticks(child) ==
		    start_ticks(vram_child_relay_pid(child)));
	vram_child_stop(child, 5000);
	run_until_exit(c);
}

/*
 * A workload that prints "line N" for N from 0: 50 lines at once, then,
 * once the go file is there, a line every 3 ms until the stop file is.
 */
static void numbered_script(struct ctx *c, char *buf, size_t size)
{
	snprintf(buf, size,
		 "i=0; while [ $i -lt 50 ]; do echo \"line $i\"; i=$((i+1)); done; "
		 "while [ ! -e '%s' ]; do sleep 0.01; done; "
		 "while [ ! -e '%s' ]; do echo \"line $i\"; i=$((i+1)); sleep 0.003; done",
		 c->go_path, c->stop_path);
}

/*
 * Asserts that text holds "line 0" to "line N-1", each once and in order,
 * and nothing else but [vramd] notes; returns N.
 */
static int expect_numbered(const char *text)
{
	int next = 0;
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		assert_non_null(nl); /* whole lines only */
		int n = -1, len = 0;
		if (strncmp(p, "[vramd] ", 8) != 0) {
			if (sscanf(p, "line %d%n", &n, &len) != 1 || p + len != nl)
				fail_msg("not a numbered line: %.*s", (int)(nl - p), p);
			if (n != next)
				fail_msg("line %d where line %d belongs", n, next);
			next++;
		}
		p = nl + 1;
	}
	return next;
}

/* Runs the loop for ms. */
static void run_for(struct ctx *c, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	event_base_loopexit(c->base, &tv);
	event_base_dispatch(c->base);
}

/*
 * The numbered workload, started by a daemon listening at daemon_sock
 * (NULL: not listening) that then died, adopted by c->sup listening at
 * our_sock (NULL: not listening) with its relay stopped (SIGSTOP) first
 * if stop_relay. What was started goes to *ret.
 */
static struct vram_child *adopt_numbered(struct ctx *c, const char *daemon_sock,
					 const char *our_sock, bool stop_relay, struct started *ret)
{
	char script[512];
	numbered_script(c, script, sizeof(script));
	struct started st = start_daemon_at(c, script, daemon_sock);
	wait_for_text(c->log_path, "line 49\n"); /* all written by the daemon: nothing left in its pipe */
	kill_daemon(c);
	go(c);
	wait_for_text(c->log_path, GONE_NOTE);
	wait_for_text(c->log_path, "line 80\n"); /* the relay writes the file now */
	if (our_sock)
		assert_int_equal(vram_supervisor_relay_listen(c->sup, our_sock), 0);
	if (stop_relay)
		assert_int_equal(kill(st.relay, SIGSTOP), 0);
	struct vram_child *child = adopt(c, &st);
	/* held until the relay handed over, or written at once */
	assert_int_equal(vram_logfile_note(c->log, "adopted"), 0);
	*ret = st;
	return child;
}

static void stop_numbered(struct ctx *c)
{
	FILE *f = fopen(c->stop_path, "w");
	assert_non_null(f);
	fclose(f);
	run_until_exit_within(c, 10);
}

/*
 * The relay hands the log over to the supervisor that adopted its
 * workload: the workload goes on printing, every line is in the log once
 * and in order, the note written at the adoption comes after the relay's
 * last line in the file, and from the handover on the supervisor writes
 * what the workload prints (it is in its tail), the relay no longer. A
 * connection from another process is not taken for the relay's.
 */
static void test_relay_hands_the_log_over(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	struct started st;
	(void)adopt_numbered(c, c->sock_path, c->sock_path, false, &st);
	char *text = read_file(c->log_path);
	assert_null(strstr(text, "[vramd] adopted")); /* held */
	free(text);

	/* somebody else connects first: closed, the handover goes on */
	int other = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	memcpy(sun.sun_path, c->sock_path, strlen(c->sock_path) + 1);
	assert_int_equal(connect(other, (struct sockaddr *)&sun, sizeof(sun)), 0);

	run_for(c, 700);
	char byte;
	assert_int_equal(read(other, &byte, 1), 0); /* closed by the supervisor */
	close(other);
	assert_int_equal(kill(st.relay, 0), 0);
	stop_numbered(c);
	assert_int_equal(c->status, VRAM_WAIT_STATUS_UNKNOWN);

	text = c->file_at_exit;
	int n = expect_numbered(text);
	const char *gone = strstr(text, GONE_NOTE);
	assert_non_null(gone);
	assert_null(strstr(gone + 1, GONE_NOTE));
	const char *adopted = strstr(text, "[vramd] adopted\n");
	assert_non_null(adopted);
	assert_true(adopted > gone);
	/* lines the relay wrote itself, between its note and the handover */
	int by_relay = 0, first_after = -1;
	for (const char *p = gone; p < adopted; p++)
		by_relay += strncmp(p, "\nline ", 6) == 0;
	assert_true(by_relay >= 30);
	/* the workload went on after the handover, and its lines came to the supervisor */
	assert_int_equal(sscanf(adopted + strlen("[vramd] adopted\n"), "line %d", &first_after), 1);
	assert_true(n - first_after >= 20);
	char tail[VRAM_LOGFILE_TAIL_MAX], last[32];
	vram_logfile_tail(c->log, tail, sizeof(tail));
	snprintf(last, sizeof(last), "\nline %d\n", n - 1);
	assert_non_null(strstr(tail, last));
	assert_non_null(strstr(tail, "[vramd] adopted\n"));
}

/*
 * A relay that cannot reach the new supervisor's socket (it has the old
 * one's path) stays on the file and loses nothing; the hold ends after
 * 2 s, and the held note is written then.
 */
static void test_hold_ends_when_the_relay_cannot_connect(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	char other_sock[160];
	snprintf(other_sock, sizeof(other_sock), "%s/other.sock", c->dir);
	struct started st;
	(void)adopt_numbered(c, c->sock_path, other_sock, false, &st);
	run_for(c, 1200);
	char *text = read_file(c->log_path);
	assert_null(strstr(text, "[vramd] adopted")); /* still held */
	free(text);
	run_for(c, 1300);
	text = read_file(c->log_path);
	assert_non_null(strstr(text, "[vramd] adopted\n"));
	free(text);
	assert_int_equal(kill(st.relay, 0), 0);
	stop_numbered(c);
	int n = expect_numbered(c->file_at_exit);
	assert_true(n > 150);
	/* the relay wrote them all, not the supervisor */
	char tail[VRAM_LOGFILE_TAIL_MAX];
	vram_logfile_tail(c->log, tail, sizeof(tail));
	assert_null(strstr(tail, "line "));
}

/*
 * A relay that hands over only after the hold ended (it was stopped) is
 * still taken: the held note is written when the hold ends, and what the
 * relay passes on from then comes to the supervisor, nothing lost.
 */
static void test_late_handover_is_taken(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	struct started st;
	(void)adopt_numbered(c, c->sock_path, c->sock_path, true, &st);
	run_for(c, 2300);
	char *text = read_file(c->log_path);
	assert_non_null(strstr(text, "[vramd] adopted\n")); /* the hold ended */
	free(text);
	assert_int_equal(kill(st.relay, SIGCONT), 0);
	run_for(c, 500);
	stop_numbered(c);
	int n = expect_numbered(c->file_at_exit);
	const char *adopted = strstr(c->file_at_exit, "[vramd] adopted\n");
	int first_after = -1;
	assert_int_equal(sscanf(adopted + strlen("[vramd] adopted\n"), "line %d", &first_after), 1);
	assert_true(n - first_after >= 50); /* the lines it kept while stopped, and more */
	char tail[VRAM_LOGFILE_TAIL_MAX], last[32];
	vram_logfile_tail(c->log, tail, sizeof(tail));
	snprintf(last, sizeof(last), "\nline %d\n", n - 1);
	assert_non_null(strstr(tail, last));
}

/*
 * A relay started without a socket (by a daemon that did not listen, or
 * an older vramd) does not catch the handover signal, which would end it
 * and leave the workload writing into a pipe nobody reads: it is not
 * asked, the log is not held, and both go on.
 */
static void test_relay_without_a_socket_is_not_asked(void **state)
{
	struct ctx *c = *state;
	require_pidfd(c->sup);
	struct started st;
	(void)adopt_numbered(c, NULL, c->sock_path, false, &st);
	char *text = read_file(c->log_path);
	assert_non_null(strstr(text, "[vramd] adopted\n")); /* not held */
	free(text);
	run_for(c, 300);
	assert_int_equal(kill(st.relay, 0), 0);
	assert_int_equal(kill(st.pid, 0), 0);
	stop_numbered(c);
	assert_true(expect_numbered(c->file_at_exit) > 100);
}

/*
 * The daemon of start_daemon: listens for relays at argv[4] if given,
 * spawns `sh -c argv[3]` with its output into the log at argv[2], writes
 * "pid ticks relay relay_ticks" to stdout, and runs its loop until it is
 * killed.
 */
static int daemon_main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	vram_relay_set_program("/proc/self/exe");
	signal(SIGPIPE, SIG_IGN);
	struct event_base *base = event_base_new();
	struct vram_supervisor *sup = NULL;
	struct vram_logfile *log = NULL;
	if (!base || vram_supervisor_new(base, &sup) < 0 ||
	    vram_logfile_open(argv[2], 1 << 20, 2, &log) < 0)
		return 1;
	if (argc >= 5 && vram_supervisor_relay_listen(sup, argv[4]) < 0)
		return 1;
	char *cmd[] = {"/bin/sh", "-c", argv[3], NULL};
	struct vram_spawn sp = {.argv = cmd, .log = log};
	struct vram_child *child = NULL;
	char err[256];
	if (vram_supervisor_spawn(sup, &sp, NULL, NULL, &child, err, sizeof(err)) < 0) {
		fprintf(stderr, "spawn: %s\n", err);
		return 1;
	}
	printf("%d %llu %d %llu\n", (int)vram_child_pid(child),
	       (unsigned long long)vram_child_start_ticks(child), (int)vram_child_relay_pid(child),
	       (unsigned long long)vram_child_relay_start_ticks(child));
	fflush(stdout);
	event_base_dispatch(base);
	return 0;
}

int main(int argc, char **argv)
{
	if (vram_relay_requested(argc, argv))
		return vram_relay_main(argc, argv);
	if (argc >= 2 && strcmp(argv[1], DAEMON_ARG) == 0)
		return daemon_main(argc, argv);
	vram_relay_set_program("/proc/self/exe");
	signal(SIGPIPE, SIG_IGN);
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n <= 0)
		return 1;
	self_exe[n] = '\0';
	int fd = (int)syscall(SYS_pidfd_open, getpid(), 0U);
	have_pidfd = fd >= 0;
	if (fd >= 0)
		close(fd);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_exit_of_an_adopted_process, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_an_adopted_process, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refuses_what_is_not_the_recorded_process, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_adopting_our_own_child_gives_its_status, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_free_ends_adopted_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spawned_children_record_start_ticks, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_relay_hands_the_log_over, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hold_ends_when_the_relay_cannot_connect, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_late_handover_is_taken, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_without_a_socket_is_not_asked, setup,
						teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
