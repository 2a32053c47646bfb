/* SPDX-License-Identifier: MIT */
/*
 * The output relay (see relay.h for why it exists). Two halves: the relay
 * process's loop (vram_relay_main), which copies its fd 0 to its fd 1 and,
 * once fd 1 has no reader, into the log file through logfile.c, the same
 * code and limits the daemon uses; and vram_relay_spawn, which the
 * supervisor calls to start one next to each workload process. The relay
 * never decides anything: it ends when the last writer of its input is gone,
 * and hands the log over to a new vramd only when one asks.
 */
#include "daemon/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/logfile.h"
#include "daemon/spawn.h"

extern char **environ;

/* Borrowed from main(), or self_path; NULL: relays are off. */
static const char *relay_program;
/* "/proc/self/fd/N": the running binary, opened when it was set as "/proc/self/exe" */
static char self_path[32];
static int self_fd = -1;

bool vram_relay_requested(int argc, char *const *argv)
{
	return argc >= 2 && strcmp(argv[1], VRAM_RELAY_ARG) == 0;
}

void vram_relay_set_program(const char *exe)
{
	relay_program = exe;
	if (self_fd >= 0)
		(void)close(self_fd);
	self_fd = -1;
	if (!exe || strcmp(exe, "/proc/self/exe") != 0)
		return;
	/*
	 * The binary is opened now and relays are spawned through the open
	 * file: "/proc/self/exe" would be resolved in the child at spawn time,
	 * which under valgrind is valgrind's tool rather than the program (and
	 * after an upgrade on disk, the running binary is the one that knows
	 * its own relay arguments). The fd is close-on-exec, so neither
	 * workloads nor relays keep it.
	 */
	self_fd = vram_spawn_open_program(exe, self_path, sizeof(self_path));
	if (self_fd >= 0)
		relay_program = self_path;
}

const char *vram_relay_program(void)
{
	return relay_program;
}

/* ---- the relay process ---- */

/* Decimal digits only, no sign, no overflow. Returns 0 or -EINVAL. */
static int parse_u64(const char *s, uint64_t *ret)
{
	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* What the daemon left open without O_CLOEXEC must not live on in the relay. */
static void close_inherited(void)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
		return;
#endif
	long max = sysconf(_SC_OPEN_MAX);
	for (long fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
		(void)close((int)fd);
}

/* Writes len bytes to fd (blocking). Returns how many were written before a failure. */
static size_t write_all(int fd, const char *data, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(fd, data + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	return done;
}

/*
 * Leaves only the file name of a path in the command line (arg is one of
 * argv, rewritten in place): the state directory is often named after
 * vramd, and `pkill -f vramd` must not take the relays with the daemon.
 */
static void hide_dir(char *arg)
{
	const char *base = strrchr(arg, '/');
	if (!base)
		return;
	size_t n = strlen(arg), bn = strlen(base + 1);
	memmove(arg, base + 1, bn);
	memset(arg + bn, 0, n - bn);
}

/* What the relay process's loop keeps. */
struct relay {
	char *path;               /* owned; the log file, "" for none */
	uint64_t max_bytes;       /* the log's limits, as the daemon's */
	unsigned keep;
	char *sock_path;          /* owned; where a new vramd takes the log over, NULL: nowhere */
	bool daemon_gone;         /* fd 1 has no reader: the relay writes the log itself */
	struct vram_logfile *log; /* open while daemon_gone; NULL: no log, the output is dropped */
};

static volatile sig_atomic_t handover_asked; /* VRAM_RELAY_HANDOVER_SIGNAL came */

static void on_handover_signal(int sig)
{
	(void)sig;
	handover_asked = 1;
}

/*
 * Puts /dev/null on fd 1 in place of a lost reader. fd 1 is never left
 * closed, so that the log file or a socket never takes its number (if
 * /dev/null cannot be opened, the lost reader stays: fd 1 is not written
 * while the daemon is gone).
 */
static void stdout_to_null(void)
{
	int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (null < 0)
		return;
	(void)dup2(null, 1);
	(void)close(null);
}

/* fd 1 lost its reader, the daemon: from now on the relay writes the log file. */
static void lose_daemon(struct relay *r)
{
	r->daemon_gone = true;
	stdout_to_null();
	if (r->path[0] && vram_logfile_open(r->path, r->max_bytes, r->keep, &r->log) == 0)
		(void)vram_logfile_note(r->log, "vramd is gone; the output relay writes here directly");
}

/* Whether fd 1, a pipe or socket, has lost its reader (the daemon died or executed itself anew). */
static bool output_lost(void)
{
	struct pollfd p = {.fd = 1, .events = POLLOUT};
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL));
}

/*
 * A new vramd asks for the log: connects to r->sock_path, makes the
 * connection fd 1, sends VRAM_RELAY_HANDED_OVER and closes the log. The
 * relay's last write to the file came before the byte, and vramd writes
 * the file only after it read the byte, so the file has one writer at a
 * time and nothing is written twice. A relay whose daemon still reads fd 1
 * has nothing to hand over. On a failure it stays on the file; the next
 * signal tries again.
 */
static void hand_over(struct relay *r)
{
	if (!r->daemon_gone) {
		if (!output_lost())
			return;
		lose_daemon(r);
	}
	/* non-blocking connect: a listener with a full backlog must not hold the workload up */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	memcpy(sun.sun_path, r->sock_path, strlen(r->sock_path) + 1); /* fits: checked at start */
	int fl;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    (fl = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ||
	    dup2(fd, 1) < 0) {
		(void)close(fd);
		return;
	}
	(void)close(fd);
	const char done = VRAM_RELAY_HANDED_OVER;
	if (write_all(1, &done, 1) != 1) {
		stdout_to_null();
		return;
	}
	vram_logfile_close(r->log);
	r->log = NULL;
	r->daemon_gone = false;
}

int vram_relay_main(int argc, char *const *argv)
{
	struct relay r = {0};
	/* vramd alone starts it, with a keep the config bounds to 100; this only refuses nonsense */
	uint64_t keep;
	if ((argc != 5 && argc != 6) || parse_u64(argv[3], &r.max_bytes) < 0 ||
	    parse_u64(argv[4], &keep) < 0 || keep > 1000)
		return 2;
	if (argc == 6 && strlen(argv[5]) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return 2;
	r.keep = (unsigned)keep;
	r.path = strdup(argv[2]);
	if (argc == 6 && argv[5][0])
		r.sock_path = strdup(argv[5]);
	if (!r.path || (argc == 6 && argv[5][0] && !r.sock_path)) {
		free(r.path);
		return 1;
	}
	hide_dir(argv[2]);
	if (argc == 6)
		hide_dir(argv[5]);
	(void)prctl(PR_SET_NAME, VRAM_RELAY_NAME, 0, 0, 0);
	/* it ends at end of input, never by a signal sent to the daemon's group or terminal */
	static const int ignored[] = {SIGPIPE, SIGINT, SIGHUP, SIGTERM};
	for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
		(void)signal(ignored[i], SIG_IGN);
	close_inherited();

	/*
	 * The handover signal is caught only with a socket to hand over to (vramd
	 * signals only relays that catch it), and taken only while waiting for
	 * input (ppoll): the copy in progress is never cut in two.
	 */
	sigset_t waiting;
	if (r.sock_path) {
		sigset_t sig;
		sigemptyset(&sig);
		sigaddset(&sig, VRAM_RELAY_HANDOVER_SIGNAL);
		(void)sigprocmask(SIG_BLOCK, &sig, &waiting);
		sigdelset(&waiting, VRAM_RELAY_HANDOVER_SIGNAL);
		struct sigaction sa = {.sa_handler = on_handover_signal}; /* no SA_RESTART */
		sigemptyset(&sa.sa_mask);
		(void)sigaction(VRAM_RELAY_HANDOVER_SIGNAL, &sa, NULL);
	}

	static char buf[VRAM_RELAY_BUF_MAX];
	int status = 0;
	for (;;) {
		if (handover_asked) {
			handover_asked = 0;
			hand_over(&r);
		}
		if (r.sock_path) {
			struct pollfd p = {.fd = 0, .events = POLLIN};
			if (ppoll(&p, 1, NULL, &waiting) < 0) {
				if (errno == EINTR)
					continue;
				status = 1;
				break;
			}
		}
		ssize_t n = read(0, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			status = n < 0 ? 1 : 0;
			break;
		}
		size_t sent = 0;
		if (!r.daemon_gone) {
			sent = write_all(1, buf, (size_t)n);
			/* EPIPE: the daemon is gone. The workload must never block on us. */
			if (sent < (size_t)n)
				lose_daemon(&r);
		}
		if (r.log && sent < (size_t)n)
			(void)vram_logfile_write(r.log, buf + sent, (size_t)n - sent);
	}
	vram_logfile_close(r.log);
	free(r.sock_path);
	free(r.path);
	return status;
}

/* ---- starting one ---- */

int vram_relay_spawn(const struct vram_logfile *log, const char *sock_path, int in_fd, int out_fd,
		     pid_t *ret_pid)
{
	if (!relay_program)
		return -ENOTSUP;
	if (sock_path && strlen(sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	/* checked here: where spawning is emulated by fork (valgrind), exec errors never come back */
	if (access(relay_program, X_OK) < 0)
		return -errno;
	/* dup2 onto 0 and 1 in turn would clobber a source that is itself 0..2 */
	if (in_fd < 3 || out_fd < 3)
		return -EBADF;
	char name[] = VRAM_RELAY_NAME, arg[] = VRAM_RELAY_ARG, max_s[24], keep_s[16];
	snprintf(max_s, sizeof(max_s), "%" PRIu64, log ? vram_logfile_max_bytes(log) : (uint64_t)0);
	snprintf(keep_s, sizeof(keep_s), "%u", log ? vram_logfile_keep(log) : 0U);
	/* posix_spawn does not write to argv; the cast only matches its type */
	char *const argv[] = {name, arg, (char *)(log ? vram_logfile_path(log) : ""), max_s,
			      keep_s, (char *)sock_path, NULL};

	int r = -ENOMEM;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	if (posix_spawn_file_actions_init(&fa) != 0)
		return -ENOMEM;
	if (vram_spawn_attr_init(&attr, POSIX_SPAWN_SETSID) < 0)
		goto out_destroy_fa;
	if (posix_spawn_file_actions_adddup2(&fa, in_fd, 0) ||
	    posix_spawn_file_actions_adddup2(&fa, out_fd, 1) ||
	    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0))
		goto out_destroy_attr;
	pid_t pid;
	int e = vram_spawn_posix(&pid, relay_program, false, &fa, &attr, argv, environ);
	if (e != 0) {
		r = -e;
		goto out_destroy_attr;
	}
	*ret_pid = pid;
	r = 0;

out_destroy_attr:
	posix_spawnattr_destroy(&attr);
out_destroy_fa:
	posix_spawn_file_actions_destroy(&fa);
	return r;
}
