/* SPDX-License-Identifier: MIT */
/*
 * MPS control daemons, one per GPU set (see mps.h).
 *
 * A daemon object goes starting → running → quitting → (freed), or ends in
 * failed / crashed, where it stays for status until a new client of the same
 * GPU set starts it again. One taken back from a previous vramd
 * (vram_mps_adopt) enters as running; until vram_mps_adopt_done it is held
 * as one started by hand is, so that it waits for the clients of the
 * processes taken back instead of quitting at once. vram_mps_adopt_done also
 * takes back, to quit them, daemons running in pipe directories of ours
 * that no record named.
 *
 * Events to clients and callbacks of start/stop are delivered from one
 * zero-delay timer per daemon (notify_ev), never from inside an API call,
 * so callers may free clients from their callbacks.
 *
 * A control command is nvidia-cuda-mps-control spawned with the command on
 * stdin (a pipe written before the spawn; commands are a few bytes) and
 * stdout+stderr in a file next to the pipe directory, read once it exits.
 */
#include "daemon/mps.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/list.h"
#include "common/log.h"
#include "common/proc.h"
#include "daemon/spawn.h"

extern char **environ;

#define MPS_OUTPUT_MAX 65536       /* bytes of a command's output read */
#define MPS_TAIL_MAX 1400          /* bytes of each MPS log in a failure message */
#define MPS_MAX_SERVERS 16
#define MPS_MAX_SERVER_CLIENTS 64
#define MPS_PIPE_DIR_MAX 90        /* MPS puts sockets in it; sun_path is 108 bytes */
#define MPS_POLL_MS 50             /* pid file wait, and liveness checks without pidfd */
#define MPS_QUIT_GRACE_MS 5000     /* after quit, before SIGTERM to the control daemon */
#define MPS_PID_FILE "nvidia-cuda-mps-control.pid"
#define MPS_ENVIRON_MAX (256 * 1024) /* bytes of an adopted control daemon's environment read */
#define MPS_SCAN_MAX 256           /* entries of <state_dir>/mps looked at for unrecorded daemons */

enum daemon_state {
	D_STARTING = 0,
	D_RUNNING,
	D_QUITTING,
	D_FAILED,
	D_CRASHED,
};

enum cmd_kind {
	CMD_START = 0, /* -d */
	CMD_QUIT,
	CMD_SERVER_LIST,
	CMD_CLIENT_LIST,
};

struct mps_daemon;
struct mps_refresh;

struct mps_cmd {
	struct vram_list link; /* in the daemon's cmds */
	struct mps_daemon *d;
	enum cmd_kind kind;
	pid_t pid;
	pid_t about_pid;      /* CLIENT_LIST: the server asked about */
	int pidfd;            /* -1 when polling */
	struct event *exit_ev;
	struct event *timeout_ev;
	int wait_status;      /* -1 until known; stays -1 when reaped elsewhere */
	bool timed_out;
	struct mps_refresh *refresh; /* SERVER_LIST/CLIENT_LIST of a refresh, or NULL */
	char out_path[160];
};

struct mps_waiter {
	struct vram_list link; /* in the daemon's waiters */
	vram_mps_done_cb cb;
	void *arg;
	bool for_stop; /* completes when the daemon is gone, not when it runs */
};

struct mps_server_info {
	pid_t pid;
	pid_t clients[MPS_MAX_SERVER_CLIENTS];
	size_t n_clients;
};

struct vram_mps_client {
	struct vram_list link; /* in the daemon's clients; on none once the daemon is gone */
	struct mps_daemon *d;
	char *owner;
	pid_t pid;
	uint64_t mem_limit_bytes;
	unsigned compute_percent;
	vram_mps_event_cb cb;
	void *arg;
	bool notified_ready;
	bool dead; /* got FAILED/CRASHED, or the daemon was shut down: no more events */
};

struct mps_daemon {
	struct vram_list link; /* in m->daemons */
	struct vram_mps *m;
	unsigned gpus[VRAM_MPS_MAX_GPUS];
	size_t n_gpus;
	char *visible;        /* CUDA_VISIBLE_DEVICES of the control daemon */
	char key[64 + 8 * VRAM_MPS_MAX_GPUS]; /* "gpu0-1" */
	char dir[128], pipe_dir[136], log_dir[136];
	enum daemon_state state;
	pid_t control_pid;    /* 0 = unknown */
	uint64_t control_start_ticks; /* the control daemon's start time (clock ticks since boot); 0 = unknown */
	int control_pidfd;
	struct event *watch_ev;   /* control_pidfd readable, or a poll timer */
	struct event *wait_ev;    /* pid file wait; quit grace */
	struct event *notify_ev;  /* zero-delay: deliver events */
	uint64_t deadline_ms;
	bool manual;          /* started by hand: runs without clients */
	bool adopt_pending;   /* taken back from a previous vramd: runs without clients until vram_mps_adopt_done */
	bool visible_guessed; /* adopted without its CUDA_VISIBLE_DEVICES: the next client's GPU ids say it */
	bool restart_after_quit;
	bool forced;          /* stopped by hand under clients: they get CRASHED */
	bool free_when_idle;  /* quit done; freed when the last command ends */
	unsigned cmd_seq;
	struct vram_list cmds;    /* struct mps_cmd in flight, newest first */
	struct vram_list clients; /* struct vram_mps_client, in the order they came */
	struct vram_list waiters; /* struct mps_waiter, newest first */
	struct mps_server_info servers[MPS_MAX_SERVERS];
	size_t n_servers;
	bool refreshed;
	char error[1024];
	char log_tail[2 * MPS_TAIL_MAX + 128];
};

struct mps_refresh {
	struct vram_list link; /* in vram_mps.refreshes */
	struct vram_mps *m;
	vram_mps_done_cb cb;
	void *arg;
	unsigned outstanding;
	struct event *ev; /* deferred completion when nothing runs */
};

struct vram_mps {
	struct event_base *base;
	char *state_dir;
	char control[PATH_MAX];
	bool available;
	char why[256];
	uint64_t command_timeout_ms;
	uint64_t start_timeout_ms;
	struct vram_list daemons;   /* struct mps_daemon, newest first */
	struct vram_list refreshes; /* struct mps_refresh not answered yet, newest first */
	void (*shutdown_done)(void *arg);
	void *shutdown_arg;
	bool shutting_down;
	struct event *shutdown_ev;
};

static void daemon_step(struct mps_daemon *d);
static void refresh_free(struct mps_refresh *rf);
static void daemon_schedule_notify(struct mps_daemon *d);
static void maybe_shutdown_done(struct vram_mps *m);

static struct timeval tv_ms(uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	return tv;
}

/* ---- finding the program ---- */

int vram_mps_find_control(const char *override, char *buf, size_t size)
{
	const char *path;
	char *copy, *save = NULL;
	int r = -ENOENT;

	if (!override || !*override)
		override = getenv("VRAM_MPS_CONTROL");
	if (override && *override) {
		if (access(override, X_OK) < 0) {
			snprintf(buf, size, "%s: %s", override, strerror(errno));
			return -ENOENT;
		}
		snprintf(buf, size, "%s", override);
		return 0;
	}
	path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		char cand[PATH_MAX];

		if (snprintf(cand, sizeof(cand), "%s/nvidia-cuda-mps-control", dir) >= (int)sizeof(cand))
			continue;
		if (access(cand, X_OK) == 0) {
			snprintf(buf, size, "%s", cand);
			r = 0;
			break;
		}
	}
	free(copy);
	if (r < 0)
		snprintf(buf, size, "nvidia-cuda-mps-control not found in PATH (install the NVIDIA "
			 "compute utilities, or set VRAM_MPS_CONTROL)");
	return r;
}

/* ---- formatting ---- */

int vram_mps_format_mem_limit(uint64_t bytes, size_t n_gpus, char *buf, size_t size)
{
	size_t off = 0;
	char one[64];

	if (bytes % (UINT64_C(1) << 30) == 0)
		snprintf(one, sizeof(one), "%" PRIu64 "G", bytes >> 30);
	else
		snprintf(one, sizeof(one), "%" PRIu64 "M", (bytes + (UINT64_C(1) << 20) - 1) >> 20);
	if (size == 0)
		return -E2BIG;
	buf[0] = '\0';
	for (size_t i = 0; i < n_gpus; i++) {
		int n = snprintf(buf + off, size - off, "%s%zu=%s", i ? "," : "", i, one);

		if (n < 0 || (size_t)n >= size - off)
			return -E2BIG;
		off += (size_t)n;
	}
	return 0;
}

static size_t append_tail(const char *path, const char *label, char *buf, size_t size, size_t off)
{
	char chunk[MPS_TAIL_MAX + 1];
	struct stat st;
	ssize_t n;
	off_t from;
	int fd;

	if (off + 1 >= size)
		return off;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return off;
	if (fstat(fd, &st) < 0 || st.st_size == 0) {
		close(fd);
		return off;
	}
	from = st.st_size > MPS_TAIL_MAX ? st.st_size - MPS_TAIL_MAX : 0;
	n = pread(fd, chunk, MPS_TAIL_MAX, from);
	close(fd);
	if (n <= 0)
		return off;
	chunk[n] = '\0';
	{
		/* Start at a line boundary when the file was cut. */
		char *start = chunk;

		if (from > 0) {
			char *nl = strchr(chunk, '\n');

			if (nl && nl[1])
				start = nl + 1;
		}
		int w = snprintf(buf + off, size - off, "%s==> %s <==\n%s%s", off ? "\n" : "", label, start,
				 start[0] && start[strlen(start) - 1] != '\n' ? "\n" : "");
		if (w < 0)
			return off;
		off += (size_t)w < size - off ? (size_t)w : size - off - 1;
	}
	return off;
}

size_t vram_mps_log_tail(const char *log_dir, char *buf, size_t size)
{
	char path[PATH_MAX];
	size_t off = 0;

	if (size == 0)
		return 0;
	buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/control.log", log_dir);
	off = append_tail(path, "control.log", buf, size, off);
	snprintf(path, sizeof(path), "%s/server.log", log_dir);
	off = append_tail(path, "server.log", buf, size, off);
	return off;
}

/* ---- commands ---- */

static char **build_env(const struct mps_daemon *d, bool for_start)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + 4, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (!strncmp(environ[i], "CUDA_MPS_PIPE_DIRECTORY=", 24) ||
		    !strncmp(environ[i], "CUDA_MPS_LOG_DIRECTORY=", 23) ||
		    !strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21))
			continue;
		env[k++] = environ[i]; /* borrowed */
	}
	if (asprintf(&env[k++], "CUDA_MPS_PIPE_DIRECTORY=%s", d->pipe_dir) < 0)
		env[--k] = NULL;
	if (asprintf(&env[k++], "CUDA_MPS_LOG_DIRECTORY=%s", d->log_dir) < 0)
		env[--k] = NULL;
	if (for_start && asprintf(&env[k++], "CUDA_VISIBLE_DEVICES=%s", d->visible) < 0)
		env[--k] = NULL;
	env[k] = NULL;
	return env;
}

static void free_env(char **env)
{
	/* Only the entries this module added are owned: the last ones, after environ's. */
	size_t n = 0, k = 0;

	if (!env)
		return;
	while (environ[n])
		n++;
	for (size_t i = 0; env[i]; i++) {
		if (!strncmp(env[i], "CUDA_MPS_PIPE_DIRECTORY=", 24) ||
		    !strncmp(env[i], "CUDA_MPS_LOG_DIRECTORY=", 23) ||
		    !strncmp(env[i], "CUDA_VISIBLE_DEVICES=", 21)) {
			bool from_environ = false;

			for (size_t j = 0; j < n && !from_environ; j++)
				from_environ = environ[j] == env[i];
			if (!from_environ)
				free(env[i]);
		}
		k++;
	}
	free(env);
}

static void cmd_free(struct mps_cmd *c)
{
	if (c->exit_ev)
		event_free(c->exit_ev);
	if (c->timeout_ev)
		event_free(c->timeout_ev);
	if (c->pidfd >= 0)
		close(c->pidfd);
	if (c->out_path[0])
		unlink(c->out_path);
	free(c);
}

static void cmd_unlink(struct mps_cmd *c)
{
	vram_list_remove(&c->link); /* nothing when it is on none */
}

static void cmd_finished(struct mps_cmd *c);

/* Collects the exit when the pid has gone. Returns true when the command is over. */
static bool cmd_try_reap(struct mps_cmd *c)
{
	int st;
	pid_t r = waitpid(c->pid, &st, WNOHANG);

	if (r == c->pid) {
		c->wait_status = st;
		return true;
	}
	if (r < 0 && errno == ECHILD)
		return true; /* reaped by the daemon's reaper: the output decides */
	return false;
}

static void on_cmd_exit(evutil_socket_t fd, short what, void *arg)
{
	struct mps_cmd *c = arg;

	if (!cmd_try_reap(c)) {
		if (c->pidfd < 0) {
			struct timeval tv = tv_ms(MPS_POLL_MS);

			event_add(c->exit_ev, &tv);
		}
		return;
	}
	cmd_finished(c);
}

static void on_cmd_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct mps_cmd *c = arg;

	c->timed_out = true;
	kill(c->pid, SIGKILL);
}

/*
 * Spawns the control program for d: with "-d" for CMD_START, else with
 * text written to its stdin. Returns 0 or -errno (err filled).
 */
static int cmd_spawn(struct mps_daemon *d, enum cmd_kind kind, const char *text, pid_t about_pid,
		     struct mps_refresh *refresh, char *err, size_t err_size)
{
	struct vram_mps *m = d->m;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	char *argv[3] = { m->control, NULL, NULL };
	struct mps_cmd *c;
	char **env = NULL;
	int in[2] = { -1, -1 };
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->d = d;
	vram_list_init(&c->link);
	c->kind = kind;
	c->about_pid = about_pid;
	c->refresh = refresh;
	c->pidfd = -1;
	c->wait_status = -1;
	snprintf(c->out_path, sizeof(c->out_path), "%s/cmd-%u.out", d->dir, ++d->cmd_seq);

	if (kind == CMD_START) {
		argv[1] = "-d";
	} else {
		size_t len = strlen(text);

		if (pipe2(in, O_CLOEXEC) < 0) {
			r = -errno;
			goto out_free;
		}
		/* A few bytes: the pipe takes them without blocking. */
		if (write(in[1], text, len) != (ssize_t)len) {
			r = -EIO;
			goto out_close;
		}
		close(in[1]);
		in[1] = -1;
	}
	env = build_env(d, kind == CMD_START);
	if (!env) {
		r = -ENOMEM;
		goto out_close;
	}

	posix_spawn_file_actions_init(&fa);
	if (in[0] >= 0)
		posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
	else
		posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	/* the child's stdout: close-on-exec would close it, but never through a link */
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, c->out_path,
					 O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
	posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
	/* Its own process group: a Ctrl-C meant for vramd does not reach it. */
	r = vram_spawn_attr_init(&attr, POSIX_SPAWN_SETPGROUP);
	if (r == 0) {
		r = -vram_spawn_posix(&c->pid, m->control, false, &fa, &attr, argv, env);
		posix_spawnattr_destroy(&attr);
	}
	posix_spawn_file_actions_destroy(&fa);
	free_env(env);
	if (r < 0) {
		snprintf(err, err_size, "cannot run %.300s: %s", m->control, strerror(-r));
		goto out_close;
	}
	if (in[0] >= 0) {
		close(in[0]);
		in[0] = -1;
	}

	c->pidfd = (int)syscall(SYS_pidfd_open, c->pid, 0);
	if (c->pidfd >= 0) {
		c->exit_ev = event_new(m->base, c->pidfd, EV_READ | EV_PERSIST, on_cmd_exit, c);
		if (c->exit_ev)
			event_add(c->exit_ev, NULL);
	} else {
		struct timeval tv = tv_ms(MPS_POLL_MS);

		c->exit_ev = evtimer_new(m->base, on_cmd_exit, c);
		if (c->exit_ev)
			event_add(c->exit_ev, &tv);
	}
	c->timeout_ev = evtimer_new(m->base, on_cmd_timeout, c);
	if (!c->exit_ev || !c->timeout_ev) {
		/* Cannot watch it: stop it and forget it. */
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		r = -ENOMEM;
		goto out_free;
	}
	{
		struct timeval tv = tv_ms(m->command_timeout_ms);

		event_add(c->timeout_ev, &tv);
	}
	vram_list_push_front(&d->cmds, &c->link);
	if (refresh)
		refresh->outstanding++;
	vram_debug("mps %s: ran %s %s (pid %d)", d->key, m->control, kind == CMD_START ? "-d" : text,
		   (int)c->pid);
	return 0;

out_close:
	if (in[0] >= 0)
		close(in[0]);
	if (in[1] >= 0)
		close(in[1]);
out_free:
	cmd_free(c);
	return r;
}

static char *read_output(const char *path)
{
	char *buf = malloc(MPS_OUTPUT_MAX + 1);
	ssize_t n = 0;
	int fd;

	if (!buf)
		return NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) {
		n = read(fd, buf, MPS_OUTPUT_MAX);
		close(fd);
	}
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* Parses whitespace-separated pids. Returns how many. */
static size_t parse_pids(const char *s, pid_t *out, size_t max)
{
	size_t n = 0;

	while (*s && n < max) {
		char *end;
		long v = strtol(s, &end, 10);

		if (end == s) {
			s++;
			continue;
		}
		if (v > 0)
			out[n++] = (pid_t)v;
		s = end;
	}
	return n;
}

/* Reads /proc/<pid>/<name> into buf (NUL-terminated). Returns the bytes read, or -1. */
static ssize_t read_proc(pid_t pid, const char *name, char *buf, size_t size)
{
	char path[64];
	size_t len = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	/* environ comes a page per read */
	while (len < size - 1) {
		n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

/* Alive and not a zombie (a daemon that died waits to be reaped by init). */
static bool pid_alive(pid_t pid)
{
	char buf[256], *p;

	if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
		return false;
	if (read_proc(pid, "stat", buf, sizeof(buf)) <= 0)
		return true;
	p = strrchr(buf, ')');
	return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/*
 * Whether pid runs an MPS control program (guards against a reused pid): a
 * word of its command line is nvidia-cuda-mps-control or the control program
 * of m, wherever it lies (a script's name comes after its interpreter's).
 */
static bool is_mps_control(const struct vram_mps *m, pid_t pid)
{
	const char *ours = base_name(m->control);
	char buf[1024];
	ssize_t n = read_proc(pid, "cmdline", buf, sizeof(buf));

	for (ssize_t off = 0; n > 0 && off < n; off += (ssize_t)strlen(buf + off) + 1) {
		const char *word = base_name(buf + off);

		if (!strcmp(word, "nvidia-cuda-mps-control") || (*ours && !strcmp(word, ours)))
			return true;
	}
	return false;
}

/* ---- daemon objects ---- */

static void set_failure(struct mps_daemon *d, enum daemon_state st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_failure(struct mps_daemon *d, enum daemon_state st, const char *fmt, ...)
{
	va_list ap;

	d->state = st;
	va_start(ap, fmt);
	vsnprintf(d->error, sizeof(d->error), fmt, ap);
	va_end(ap);
	vram_mps_log_tail(d->log_dir, d->log_tail, sizeof(d->log_tail));
	vram_debug("mps %s: %s", d->key, d->error);
}

static void unwatch_control(struct mps_daemon *d)
{
	if (d->watch_ev) {
		event_free(d->watch_ev);
		d->watch_ev = NULL;
	}
	if (d->control_pidfd >= 0) {
		close(d->control_pidfd);
		d->control_pidfd = -1;
	}
}

static void daemon_free(struct mps_daemon *d)
{
	vram_list_remove(&d->link);
	while (!vram_list_empty(&d->cmds)) {
		struct mps_cmd *c = vram_list_entry(vram_list_first(&d->cmds), struct mps_cmd, link);

		vram_list_remove(&c->link);
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
		/* A refresh waiting for it is dropped without its callback. */
		if (c->refresh && --c->refresh->outstanding == 0)
			refresh_free(c->refresh);
		cmd_free(c);
	}
	while (!vram_list_empty(&d->clients)) {
		struct vram_mps_client *c = vram_list_entry(vram_list_first(&d->clients),
							    struct vram_mps_client, link);

		/* The caller still holds it; it no longer belongs to a daemon. */
		vram_list_remove(&c->link);
		c->d = NULL;
		c->dead = true;
	}
	while (!vram_list_empty(&d->waiters)) {
		struct mps_waiter *w = vram_list_entry(vram_list_first(&d->waiters), struct mps_waiter,
						       link);

		vram_list_remove(&w->link);
		free(w);
	}
	unwatch_control(d);
	if (d->wait_ev)
		event_free(d->wait_ev);
	if (d->notify_ev)
		event_free(d->notify_ev);
	free(d->visible);
	free(d);
}

/* Clients that still hear from the daemon. */
static size_t client_refs(const struct mps_daemon *d)
{
	size_t n = 0;

	vram_list_for_each_entry(c, &d->clients, const struct vram_mps_client, link)
		if (!c->dead)
			n++;
	return n;
}

/* What keeps a daemon running: its clients, a start by hand, an adoption not yet done. */
static size_t live_refs(const struct mps_daemon *d)
{
	return client_refs(d) + (d->manual ? 1 : 0) + (d->adopt_pending ? 1 : 0);
}

static bool settled(const struct mps_daemon *d)
{
	return d->state == D_RUNNING || d->state == D_FAILED || d->state == D_CRASHED;
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
	struct mps_daemon *d = arg;
	struct vram_mps *m = d->m;
	bool again = true;

	/*
	 * Callbacks may free clients (even the last one, which starts a quit)
	 * but the daemon object itself is only freed from command and watch
	 * handlers, never from inside this function. After each callback the
	 * scan starts over, as the list may have changed.
	 */
	while (again) {
		again = false;
		vram_list_for_each_entry(c, &d->clients, struct vram_mps_client, link) {
			enum vram_mps_event ev;
			const char *msg;
			char buf[VRAM_MPS_MSG_MAX];

			if (c->dead)
				continue;
			if (d->forced || d->state == D_FAILED || d->state == D_CRASHED) {
				ev = d->state == D_FAILED ? VRAM_MPS_FAILED : VRAM_MPS_CRASHED;
				c->dead = true;
				snprintf(buf, sizeof(buf), "%s%s%s", d->error, d->log_tail[0] ? "\n" : "",
					 d->log_tail);
				msg = buf;
			} else if (d->state == D_RUNNING && !c->notified_ready) {
				ev = VRAM_MPS_READY;
				c->notified_ready = true;
				msg = "MPS control daemon running";
			} else {
				continue;
			}
			c->cb(c, ev, msg, c->arg);
			again = true;
			break;
		}
	}
	for (;;) {
		struct mps_waiter *w = NULL;
		int result = 0;
		const char *msg = "";

		vram_list_for_each_entry(it, &d->waiters, struct mps_waiter, link) {
			w = it;
			if (!w->for_stop && settled(d)) {
				result = d->state == D_RUNNING ? 0 : -EIO;
				msg = d->state == D_RUNNING ? "MPS control daemon running" : d->error;
				break;
			}
			if (w->for_stop && (d->state == D_FAILED || d->state == D_CRASHED)) {
				msg = "MPS control daemon not running";
				break;
			}
			w = NULL;
		}
		if (!w)
			break;
		vram_list_remove(&w->link);
		w->cb(result, msg, w->arg);
		free(w);
	}
	maybe_shutdown_done(m);
}

static void daemon_schedule_notify(struct mps_daemon *d)
{
	struct timeval zero = { 0, 0 };

	event_add(d->notify_ev, &zero);
}

/* Stop waiters complete when the daemon goes; called right before daemon_free. */
static void finish_stop_waiters(struct mps_daemon *d, int result, const char *msg)
{
	/* after each callback the walk goes on from the node before, whatever it did */
	struct vram_list *before = &d->waiters;

	while (before->next != &d->waiters) {
		struct mps_waiter *w = vram_list_entry(before->next, struct mps_waiter, link);

		if (!w->for_stop) {
			before = &w->link;
			continue;
		}
		vram_list_remove(&w->link);
		w->cb(result, msg, w->arg);
		free(w);
	}
}

static void on_control_gone(struct mps_daemon *d);

static void on_watch(evutil_socket_t fd, short what, void *arg)
{
	struct mps_daemon *d = arg;

	if (d->control_pidfd < 0 && pid_alive(d->control_pid)) {
		struct timeval tv = tv_ms(MPS_POLL_MS * 4);

		event_add(d->watch_ev, &tv);
		return;
	}
	on_control_gone(d);
}

static void watch_control(struct mps_daemon *d)
{
	struct vram_mps *m = d->m;

	unwatch_control(d);
	d->control_pidfd = (int)syscall(SYS_pidfd_open, d->control_pid, 0);
	if (d->control_pidfd >= 0) {
		d->watch_ev = event_new(m->base, d->control_pidfd, EV_READ, on_watch, d);
		if (d->watch_ev)
			event_add(d->watch_ev, NULL);
	} else {
		struct timeval tv = tv_ms(MPS_POLL_MS * 4);

		d->watch_ev = evtimer_new(m->base, on_watch, d);
		if (d->watch_ev)
			event_add(d->watch_ev, &tv);
	}
}

/* The pid the pid file of a pipe directory names, else 0. */
static pid_t pid_file_pid(const char *pipe_dir)
{
	char path[PATH_MAX], buf[32];
	ssize_t n;
	long v;
	int fd;

	if ((size_t)snprintf(path, sizeof(path), "%s/" MPS_PID_FILE, pipe_dir) >= sizeof(path))
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	v = strtol(buf, NULL, 10);
	return v > 0 && v <= INT_MAX ? (pid_t)v : 0;
}

/* Reads the pid file. Returns the pid of a live control daemon, else 0. */
static pid_t read_pid_file(const struct mps_daemon *d)
{
	pid_t pid = pid_file_pid(d->pipe_dir);

	if (pid <= 0 || !pid_alive(pid) || !is_mps_control(d->m, pid))
		return 0;
	return pid;
}

static void on_wait(evutil_socket_t fd, short what, void *arg);

static void arm_wait(struct mps_daemon *d, uint64_t ms)
{
	struct timeval tv = tv_ms(ms);

	event_add(d->wait_ev, &tv);
}

static void became_running(struct mps_daemon *d, pid_t pid)
{
	uint64_t ticks;

	d->state = D_RUNNING;
	d->control_pid = pid;
	/* For the state file: a later vramd takes back only this very process. */
	d->control_start_ticks = vram_proc_start_ticks(pid, &ticks) == 0 ? ticks : 0;
	d->error[0] = '\0';
	d->log_tail[0] = '\0';
	watch_control(d);
	vram_debug("mps %s: control daemon %d running", d->key, (int)pid);
	daemon_schedule_notify(d);
	daemon_step(d);
}

static void start_daemon(struct mps_daemon *d)
{
	char err[512] = "";
	pid_t pid;
	int r;

	d->state = D_STARTING;
	d->forced = false;
	d->free_when_idle = false;
	d->control_pid = 0;
	d->control_start_ticks = 0;
	d->n_servers = 0;
	d->refreshed = false;
	d->error[0] = '\0';
	d->log_tail[0] = '\0';
	/*
	 * A daemon left by a previous vramd with our pipe directory that was
	 * not taken back with vram_mps_adopt (not in the state file, or the file
	 * was lost): take it over rather than fail on a pipe directory in use.
	 */
	pid = read_pid_file(d);
	if (pid > 0) {
		became_running(d, pid);
		return;
	}
	r = cmd_spawn(d, CMD_START, NULL, 0, NULL, err, sizeof(err));
	if (r < 0) {
		set_failure(d, D_FAILED, "cannot start the MPS control daemon for %s: %s", d->key,
			    err[0] ? err : strerror(-r));
		daemon_schedule_notify(d);
	}
}

static void quit_daemon(struct mps_daemon *d)
{
	char err[512] = "";
	int r;

	d->state = D_QUITTING;
	d->deadline_ms = vram_now_ms() + MPS_QUIT_GRACE_MS;
	r = cmd_spawn(d, CMD_QUIT, "quit\n", 0, NULL, err, sizeof(err));
	if (r < 0) {
		vram_debug("mps %s: quit command failed (%s): sending SIGTERM", d->key, err);
		if (d->control_pid > 0)
			kill(d->control_pid, SIGTERM);
	}
	arm_wait(d, MPS_POLL_MS);
}

/* The daemon object is done with (quit finished): free it or start again. */
static void quit_complete(struct mps_daemon *d)
{
	struct vram_mps *m = d->m;

	unwatch_control(d);
	d->control_pid = 0;
	d->control_start_ticks = 0;
	d->forced = false;
	event_del(d->wait_ev);
	if (d->restart_after_quit && live_refs(d) > 0 && !m->shutting_down) {
		d->restart_after_quit = false;
		start_daemon(d);
		return;
	}
	finish_stop_waiters(d, 0, "MPS control daemon stopped");
	if (!vram_list_empty(&d->cmds)) {
		/* Refresh commands still out: freed when the last one ends. */
		d->free_when_idle = true;
		return;
	}
	daemon_free(d);
	maybe_shutdown_done(m);
}

static void on_control_gone(struct mps_daemon *d)
{
	unwatch_control(d);
	if (d->state == D_QUITTING) {
		quit_complete(d);
		return;
	}
	if (d->state == D_RUNNING) {
		set_failure(d, D_CRASHED, "the MPS control daemon for %s (pid %d) exited unexpectedly",
			    d->key, (int)d->control_pid);
		d->control_pid = 0;
		d->control_start_ticks = 0;
		finish_stop_waiters(d, 0, "MPS control daemon already gone");
		daemon_schedule_notify(d);
	}
}

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
	struct mps_daemon *d = arg;
	pid_t pid;

	switch (d->state) {
	case D_STARTING:
		/* The -d command has exited; waiting for the pid file. */
		pid = read_pid_file(d);
		if (pid > 0) {
			became_running(d, pid);
			return;
		}
		if (vram_now_ms() >= d->deadline_ms) {
			set_failure(d, D_FAILED,
				    "the MPS control daemon for %s did not start: no %s in %s after %" PRIu64 " ms",
				    d->key, MPS_PID_FILE, d->pipe_dir, d->m->start_timeout_ms);
			daemon_schedule_notify(d);
			return;
		}
		arm_wait(d, MPS_POLL_MS);
		return;
	case D_QUITTING:
		if (d->free_when_idle)
			return;
		if (d->control_pid > 0 && pid_alive(d->control_pid)) {
			if (d->deadline_ms && vram_now_ms() >= d->deadline_ms) {
				vram_debug("mps %s: control daemon %d ignored quit: SIGTERM", d->key,
					   (int)d->control_pid);
				kill(d->control_pid, SIGTERM);
				d->deadline_ms = 0;
			}
			arm_wait(d, MPS_POLL_MS);
			return;
		}
		if (!vram_list_empty(&d->cmds)) {
			arm_wait(d, MPS_POLL_MS); /* the quit command itself is still out */
			return;
		}
		quit_complete(d);
		return;
	default:
		return;
	}
}

/* Decides what a settled daemon should do next. */
static void daemon_step(struct mps_daemon *d)
{
	if (d->state == D_RUNNING && (d->m->shutting_down || live_refs(d) == 0))
		quit_daemon(d);
}

static struct mps_daemon *find_daemon(struct vram_mps *m, const unsigned *gpus, size_t n)
{
	vram_list_for_each_entry(d, &m->daemons, struct mps_daemon, link) {
		if (d->n_gpus != n)
			continue;
		if (memcmp(d->gpus, gpus, n * sizeof(*gpus)) == 0)
			return d;
	}
	return NULL;
}

static int check_gpu_set(const unsigned *gpus, size_t n, char *err, size_t err_size)
{
	if (n == 0 || n > VRAM_MPS_MAX_GPUS || !gpus) {
		snprintf(err, err_size, "an MPS GPU set needs 1 to %d GPUs", VRAM_MPS_MAX_GPUS);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (gpus[i] == gpus[j]) {
				snprintf(err, err_size, "GPU %u is listed twice", gpus[i]);
				return -EINVAL;
			}
	return 0;
}

/* The name of a GPU set, "gpu0-1": its directory under <state_dir>/mps. */
static void key_of(const unsigned *gpus, size_t n, char *buf, size_t size)
{
	size_t off = (size_t)snprintf(buf, size, "gpu");

	for (size_t i = 0; i < n && off < size; i++)
		off += (size_t)snprintf(buf + off, size - off, "%s%u", i ? "-" : "", gpus[i]);
}

/*
 * CUDA_VISIBLE_DEVICES of a GPU set's daemon: the UUIDs where known, else
 * the indices. Returns a new string or NULL on out of memory.
 */
static char *visible_of(const unsigned *gpus, const char *const *gpu_ids, size_t n)
{
	size_t len = 1, off = 0;
	char *v;

	for (size_t i = 0; i < n; i++)
		len += (gpu_ids && gpu_ids[i] ? strlen(gpu_ids[i]) : 12) + 1;
	v = calloc(1, len);
	if (!v)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (gpu_ids && gpu_ids[i])
			off += (size_t)snprintf(v + off, len - off, "%s%s", i ? "," : "", gpu_ids[i]);
		else
			off += (size_t)snprintf(v + off, len - off, "%s%u", i ? "," : "", gpus[i]);
	}
	return v;
}

/* Finds or creates the daemon object of a GPU set. */
static int get_daemon(struct vram_mps *m, const unsigned *gpus, const char *const *gpu_ids, size_t n,
		      struct mps_daemon **ret, char *err, size_t err_size)
{
	struct mps_daemon *d;
	int r;

	if (!m->available) {
		snprintf(err, err_size, "MPS is not available: %s", m->why);
		return -ENOENT;
	}
	if (m->shutting_down) {
		snprintf(err, err_size, "MPS is shutting down");
		return -ESHUTDOWN;
	}
	r = check_gpu_set(gpus, n, err, err_size);
	if (r < 0)
		return r;
	d = find_daemon(m, gpus, n);
	/* One control daemon per GPU: refuse a set that overlaps a live one. */
	vram_list_for_each_entry(o, &m->daemons, struct mps_daemon, link) {
		if (o == d || o->state == D_FAILED || o->state == D_CRASHED)
			continue;
		for (size_t i = 0; i < n; i++)
			for (size_t j = 0; j < o->n_gpus; j++)
				if (gpus[i] == o->gpus[j]) {
					snprintf(err, err_size,
						 "GPU %u is already served by the MPS control daemon for %s",
						 gpus[i], o->key);
					return -EBUSY;
				}
	}
	if (d) {
		/* Adopted without its environment: the devices as this client names them. */
		if (d->visible_guessed && gpu_ids) {
			char *v = visible_of(gpus, gpu_ids, n);

			if (!v)
				return -ENOMEM;
			free(d->visible);
			d->visible = v;
			d->visible_guessed = false;
		}
		*ret = d;
		return 0;
	}

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->m = m;
	vram_list_init(&d->link);
	vram_list_init(&d->cmds);
	vram_list_init(&d->clients);
	vram_list_init(&d->waiters);
	d->control_pidfd = -1;
	d->n_gpus = n;
	memcpy(d->gpus, gpus, n * sizeof(*gpus));
	key_of(gpus, n, d->key, sizeof(d->key));
	d->visible = visible_of(gpus, gpu_ids, n);
	if (!d->visible) {
		free(d);
		return -ENOMEM;
	}
	if ((size_t)snprintf(d->dir, sizeof(d->dir), "%s/mps/%s", m->state_dir, d->key) >= sizeof(d->dir) ||
	    (size_t)snprintf(d->pipe_dir, sizeof(d->pipe_dir), "%s/pipe", d->dir) > MPS_PIPE_DIR_MAX) {
		snprintf(err, err_size,
			 "the MPS pipe directory %s/mps/%s/pipe is longer than %d characters (sockets "
			 "go there): choose a shorter daemon.state_dir",
			 m->state_dir, d->key, MPS_PIPE_DIR_MAX);
		free(d->visible);
		free(d);
		return -ENAMETOOLONG;
	}
	snprintf(d->log_dir, sizeof(d->log_dir), "%s/log", d->dir);
	r = vram_mkdir_p(d->pipe_dir, 0755, 0755);
	if (r == 0)
		r = vram_mkdir_p(d->log_dir, 0755, 0755);
	if (r < 0) {
		snprintf(err, err_size, "cannot create %s: %s", d->dir, strerror(-r));
		free(d->visible);
		free(d);
		return r;
	}
	d->wait_ev = evtimer_new(m->base, on_wait, d);
	d->notify_ev = evtimer_new(m->base, on_notify, d);
	if (!d->wait_ev || !d->notify_ev) {
		if (d->wait_ev)
			event_free(d->wait_ev);
		if (d->notify_ev)
			event_free(d->notify_ev);
		free(d->visible);
		free(d);
		return -ENOMEM;
	}
	d->state = D_FAILED; /* not started yet: the caller starts it */
	snprintf(d->error, sizeof(d->error), "not started");
	vram_list_push_front(&m->daemons, &d->link);
	*ret = d;
	return 0;
}

/* Brings a daemon towards running for a new user. */
static void daemon_wanted(struct mps_daemon *d)
{
	switch (d->state) {
	case D_RUNNING:
		daemon_schedule_notify(d);
		break;
	case D_STARTING:
		break;
	case D_QUITTING:
		d->restart_after_quit = true;
		break;
	case D_FAILED:
	case D_CRASHED:
		start_daemon(d);
		break;
	}
}

/* ---- command completion ---- */

static void refresh_free(struct mps_refresh *rf)
{
	vram_list_remove(&rf->link);
	event_free(rf->ev);
	free(rf);
}

static void refresh_done_one(struct mps_refresh *rf)
{
	if (!rf || --rf->outstanding > 0)
		return;
	rf->cb(0, "refreshed", rf->arg);
	refresh_free(rf);
}

static void cmd_finished(struct mps_cmd *c)
{
	struct mps_daemon *d = c->d;
	struct vram_mps *m = d->m;
	struct mps_refresh *rf = c->refresh;
	char *out = read_output(c->out_path);
	bool ok = c->wait_status < 0 ? true : (WIFEXITED(c->wait_status) && WEXITSTATUS(c->wait_status) == 0);
	enum cmd_kind kind = c->kind;
	pid_t about = c->about_pid;

	/* The control program says so on stdout when no daemon answers. */
	if (out && (strstr(out, "Cannot find MPS control daemon") || strstr(out, "cannot find MPS control daemon")))
		ok = false;
	if (c->timed_out)
		ok = false;
	cmd_unlink(c);
	vram_debug("mps %s: command pid %d ended (%s): %s", d->key, (int)c->pid, ok ? "ok" : "failed",
		   out ? out : "");

	switch (kind) {
	case CMD_START:
		if (d->state != D_STARTING)
			break;
		if (!ok) {
			set_failure(d, D_FAILED, "the MPS control daemon for %s did not start (%s)%s%s", d->key,
				    c->timed_out ? "timed out" : "nvidia-cuda-mps-control -d failed",
				    out && out[0] ? ": " : "", out ? out : "");
			/* Trim a trailing newline of the program's output. */
			size_t l = strlen(d->error);

			while (l && d->error[l - 1] == '\n')
				d->error[--l] = '\0';
			daemon_schedule_notify(d);
			break;
		}
		d->deadline_ms = vram_now_ms() + m->start_timeout_ms;
		arm_wait(d, 0);
		break;
	case CMD_QUIT:
		/* on_wait (armed by quit_daemon) sees the control daemon go. */
		break;
	case CMD_SERVER_LIST:
		if (ok && out) {
			pid_t pids[MPS_MAX_SERVERS];
			size_t n = parse_pids(out, pids, MPS_MAX_SERVERS);

			d->n_servers = n;
			for (size_t i = 0; i < n; i++) {
				char text[64], err[256];

				d->servers[i].pid = pids[i];
				d->servers[i].n_clients = 0;
				snprintf(text, sizeof(text), "get_client_list %d\n", (int)pids[i]);
				if (cmd_spawn(d, CMD_CLIENT_LIST, text, pids[i], rf, err, sizeof(err)) < 0)
					vram_debug("mps %s: %s", d->key, err);
			}
			d->refreshed = true;
		} else {
			d->n_servers = 0;
			d->refreshed = false;
		}
		break;
	case CMD_CLIENT_LIST:
		for (size_t i = 0; i < d->n_servers; i++) {
			if (d->servers[i].pid != about)
				continue;
			d->servers[i].n_clients =
				ok && out ? parse_pids(out, d->servers[i].clients, MPS_MAX_SERVER_CLIENTS) : 0;
		}
		break;
	}
	free(out);
	cmd_free(c);
	refresh_done_one(rf);
	/* A quit that finished while refresh commands were still out. */
	if (d->free_when_idle && vram_list_empty(&d->cmds)) {
		daemon_free(d);
		maybe_shutdown_done(m);
	}
}

bool vram_mps_child_reaped(struct vram_mps *m, pid_t pid, int wait_status)
{
	vram_list_for_each_entry(d, &m->daemons, struct mps_daemon, link)
		vram_list_for_each_entry(c, &d->cmds, struct mps_cmd, link)
			if (c->pid == pid) {
				c->wait_status = wait_status;
				/* The pidfd (or poll) event finishes it with this status. */
				return true;
			}
	return false;
}

/* ---- public API ---- */

int vram_mps_new(struct event_base *base, const struct vram_mps_options *opt, struct vram_mps **ret)
{
	struct vram_mps *m;

	if (!opt || !opt->state_dir)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->base = base;
	vram_list_init(&m->daemons);
	vram_list_init(&m->refreshes);
	m->state_dir = strdup(opt->state_dir);
	if (!m->state_dir) {
		free(m);
		return -ENOMEM;
	}
	m->command_timeout_ms = opt->command_timeout_ms ? opt->command_timeout_ms : 10000;
	m->start_timeout_ms = opt->start_timeout_ms ? opt->start_timeout_ms : 5000;
	if (vram_mps_find_control(opt->control_path, m->control, sizeof(m->control)) == 0) {
		m->available = true;
	} else {
		snprintf(m->why, sizeof(m->why), "%.250s", m->control);
		m->control[0] = '\0';
	}
	*ret = m;
	return 0;
}

bool vram_mps_available(const struct vram_mps *m, char *why, size_t why_size)
{
	if (!m->available && why && why_size)
		snprintf(why, why_size, "%s", m->why);
	return m->available;
}

int vram_mps_client_new(struct vram_mps *m, const struct vram_mps_client_spec *spec, vram_mps_event_cb cb,
			void *arg, struct vram_mps_client **ret, char *err, size_t err_size)
{
	struct vram_mps_client *c;
	struct mps_daemon *d;
	int r;

	if (!spec || !cb || (spec->compute_percent > 100)) {
		snprintf(err, err_size, "compute share must be 1..100 percent");
		return -EINVAL;
	}
	r = get_daemon(m, spec->gpus, spec->gpu_ids, spec->n_gpus, &d, err, err_size);
	if (r < 0)
		return r;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->owner = strdup(spec->owner ? spec->owner : "");
	if (!c->owner) {
		free(c);
		return -ENOMEM;
	}
	c->d = d;
	vram_list_init(&c->link);
	c->mem_limit_bytes = spec->mem_limit_bytes;
	c->compute_percent = spec->compute_percent;
	c->cb = cb;
	c->arg = arg;
	/* Appended: events go out in the order clients came. */
	vram_list_push_back(&d->clients, &c->link);
	daemon_wanted(d);
	*ret = c;
	return 0;
}

int vram_mps_client_env(const struct vram_mps_client *c, char ***ret_env)
{
	const struct mps_daemon *d = c->d;
	char **env;
	size_t k = 0;
	char limit[1024];

	if (!d)
		return -ENOENT;
	env = calloc(6, sizeof(*env));
	if (!env)
		return -ENOMEM;
	/*
	 * The server's own device set, spelled the same way: frameworks count
	 * GPUs through NVML when CUDA_VISIBLE_DEVICES is unset (PyTorch does),
	 * see every GPU of the machine and then ask the server for one it does
	 * not serve.
	 */
	if (asprintf(&env[k++], "CUDA_VISIBLE_DEVICES=%s", d->visible) < 0)
		goto out_nomem;
	if (asprintf(&env[k++], "CUDA_MPS_PIPE_DIRECTORY=%s", d->pipe_dir) < 0)
		goto out_nomem;
	if (asprintf(&env[k++], "CUDA_MPS_LOG_DIRECTORY=%s", d->log_dir) < 0)
		goto out_nomem;
	if (c->mem_limit_bytes) {
		if (vram_mps_format_mem_limit(c->mem_limit_bytes, d->n_gpus, limit, sizeof(limit)) < 0 ||
		    asprintf(&env[k++], "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=%s", limit) < 0)
			goto out_nomem;
	}
	if (c->compute_percent &&
	    asprintf(&env[k++], "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=%u", c->compute_percent) < 0)
		goto out_nomem;
	*ret_env = env;
	return 0;

out_nomem:
	env[--k] = NULL; /* asprintf left it undefined */
	vram_mps_env_free(env);
	return -ENOMEM;
}

void vram_mps_env_free(char **env)
{
	if (!env)
		return;
	for (size_t i = 0; env[i]; i++)
		free(env[i]);
	free(env);
}

void vram_mps_client_set_pid(struct vram_mps_client *c, pid_t pid)
{
	/*
	 * Given before READY, the process already runs (taken back from a
	 * previous vramd): READY would tell the caller to spawn it again.
	 */
	c->notified_ready = true;
	c->pid = pid;
}

void vram_mps_client_free(struct vram_mps_client *c)
{
	struct mps_daemon *d;

	if (!c)
		return;
	d = c->d;
	if (d)
		vram_list_remove(&c->link);
	free(c->owner);
	free(c);
	if (d) {
		if (d->state == D_QUITTING && live_refs(d) == 0)
			d->restart_after_quit = false;
		daemon_step(d);
	}
}

static int add_waiter(struct mps_daemon *d, vram_mps_done_cb cb, void *arg, bool for_stop)
{
	struct mps_waiter *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	w->cb = cb;
	w->arg = arg;
	w->for_stop = for_stop;
	vram_list_push_front(&d->waiters, &w->link);
	return 0;
}

int vram_mps_start(struct vram_mps *m, const unsigned *gpus, const char *const *gpu_ids, size_t n_gpus,
		   vram_mps_done_cb cb, void *arg, char *err, size_t err_size)
{
	struct mps_daemon *d;
	int r;

	r = get_daemon(m, gpus, gpu_ids, n_gpus, &d, err, err_size);
	if (r < 0)
		return r;
	r = add_waiter(d, cb, arg, false);
	if (r < 0)
		return r;
	d->manual = true;
	daemon_wanted(d);
	return 0;
}

static int stop_one(struct mps_daemon *d, bool force, vram_mps_done_cb cb, void *arg, char *err,
		    size_t err_size)
{
	size_t clients = client_refs(d);

	if (clients > 0 && !force) {
		snprintf(err, err_size, "the MPS control daemon for %s has %zu client%s: stop them first, "
			 "or force",
			 d->key, clients, clients == 1 ? "" : "s");
		return -EBUSY;
	}
	if (cb && add_waiter(d, cb, arg, true) < 0)
		return -ENOMEM;
	d->manual = false;
	d->adopt_pending = false;
	d->restart_after_quit = false;
	if (clients > 0) {
		/* Forced: the clients hear (from the loop) that their daemon is gone. */
		snprintf(d->error, sizeof(d->error), "the MPS control daemon for %s was stopped by hand", d->key);
		d->log_tail[0] = '\0';
		d->forced = true;
		daemon_schedule_notify(d);
	}
	/* Starting: it quits once up, having no user left. Quitting: on its way. */
	if (d->state == D_RUNNING)
		quit_daemon(d);
	return 0;
}

int vram_mps_stop(struct vram_mps *m, const unsigned *gpus, size_t n_gpus, bool force, vram_mps_done_cb cb,
		  void *arg, char *err, size_t err_size)
{
	struct mps_daemon *d;
	int r;

	if (gpus) {
		d = find_daemon(m, gpus, n_gpus);
		if (!d || d->state == D_FAILED || d->state == D_CRASHED) {
			snprintf(err, err_size, "no MPS control daemon runs for those GPUs");
			return -ENOENT;
		}
		return stop_one(d, force, cb, arg, err, err_size);
	}
	/* All: check first so that nothing stops when one refuses. */
	if (!force)
		vram_list_for_each_entry(o, &m->daemons, struct mps_daemon, link)
			if ((o->state == D_RUNNING || o->state == D_STARTING) &&
			    client_refs(o) > 0) {
				snprintf(err, err_size, "the MPS control daemon for %s has clients: stop them "
					 "first, or force",
					 o->key);
				return -EBUSY;
			}
	r = -ENOENT;
	vram_list_for_each_entry(o, &m->daemons, struct mps_daemon, link) {
		if (o->state != D_RUNNING && o->state != D_STARTING)
			continue;
		/* The callback goes with the first; the others just stop. */
		r = stop_one(o, force, r == -ENOENT ? cb : NULL, arg, err, err_size);
		if (r < 0)
			return r;
	}
	if (r == -ENOENT)
		snprintf(err, err_size, "no MPS control daemon is running");
	return r;
}

static void on_refresh_nothing(evutil_socket_t fd, short what, void *arg)
{
	struct mps_refresh *rf = arg;

	rf->outstanding = 1;
	refresh_done_one(rf);
}

int vram_mps_refresh(struct vram_mps *m, vram_mps_done_cb cb, void *arg)
{
	struct mps_refresh *rf = calloc(1, sizeof(*rf));

	if (!rf)
		return -ENOMEM;
	rf->m = m;
	rf->cb = cb;
	rf->arg = arg;
	rf->ev = evtimer_new(m->base, on_refresh_nothing, rf);
	if (!rf->ev) {
		free(rf);
		return -ENOMEM;
	}
	vram_list_push_front(&m->refreshes, &rf->link);
	/* Held by this call until all are spawned. */
	rf->outstanding = 1;
	vram_list_for_each_entry(d, &m->daemons, struct mps_daemon, link) {
		char err[256];

		if (d->state != D_RUNNING)
			continue;
		if (cmd_spawn(d, CMD_SERVER_LIST, "get_server_list\n", 0, rf, err, sizeof(err)) < 0)
			vram_debug("mps %s: %s", d->key, err);
	}
	if (--rf->outstanding == 0) {
		struct timeval zero = { 0, 0 };

		event_add(rf->ev, &zero);
	}
	return 0;
}

/* ---- daemons of a previous vramd ---- */

size_t vram_mps_daemons(const struct vram_mps *m, struct vram_mps_daemon_info *out, size_t max)
{
	size_t n = 0;

	/* A quitting one still runs: a vramd that dies now leaves it to the next. */
	vram_list_for_each_entry(d, &m->daemons, const struct mps_daemon, link) {
		if ((d->state != D_RUNNING && d->state != D_QUITTING) || d->control_pid <= 0)
			continue;
		if (n < max) {
			snprintf(out[n].pipe_dir, sizeof(out[n].pipe_dir), "%s", d->pipe_dir);
			out[n].pid = d->control_pid;
			out[n].start_ticks = d->control_start_ticks;
		}
		n++;
	}
	return n;
}

/*
 * The GPU set of a pipe directory this module would use,
 * <state_dir>/mps/gpu<i>[-<j>…]/pipe, spelled as this module spells it.
 * The mps directory itself may be spelled otherwise (state_dir given with a
 * trailing slash, or through a link) if it is the same directory. Returns
 * 0 and fills gpus (VRAM_MPS_MAX_GPUS) and *ret_n, or -EINVAL.
 */
static int parse_pipe_dir(const struct vram_mps *m, const char *pipe_dir, unsigned *gpus, size_t *ret_n)
{
	char buf[PATH_MAX], ours[PATH_MAX], key[sizeof(((struct mps_daemon *)NULL)->key)];
	char *slash, *name, *p;
	size_t len = strnlen(pipe_dir, sizeof(buf)), n = 0;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, pipe_dir, len + 1);
	slash = strrchr(buf, '/');
	if (!slash || strcmp(slash, "/pipe") != 0)
		return -EINVAL;
	*slash = '\0';
	slash = strrchr(buf, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	name = slash + 1;
	if (strncmp(name, "gpu", 3) != 0)
		return -EINVAL;
	for (p = name + 3;;) {
		unsigned long v;
		char *end;

		if (*p < '0' || *p > '9' || n == VRAM_MPS_MAX_GPUS)
			return -EINVAL;
		errno = 0;
		v = strtoul(p, &end, 10);
		if (errno || v > UINT_MAX)
			return -EINVAL;
		gpus[n++] = (unsigned)v;
		if (*end == '\0')
			break;
		if (*end != '-')
			return -EINVAL;
		p = end + 1;
	}
	/* "gpu01" or "gpu1-" is no directory of ours */
	key_of(gpus, n, key, sizeof(key));
	if (strcmp(key, name) != 0)
		return -EINVAL;
	if ((size_t)snprintf(ours, sizeof(ours), "%s/mps", m->state_dir) >= sizeof(ours))
		return -EINVAL;
	if (strcmp(buf, ours) != 0) {
		char real_theirs[PATH_MAX], real_ours[PATH_MAX];

		if (!realpath(buf, real_theirs) || !realpath(ours, real_ours) || strcmp(real_theirs, real_ours) != 0)
			return -EINVAL;
	}
	*ret_n = n;
	return 0;
}

/*
 * Whether d is still the control daemon it was: alive, started when it
 * did, named by its pipe directory's pid file, an MPS program. Returns 0 and
 * its start ticks, or -ESRCH with why in err.
 */
static int check_adoptable(const struct vram_mps *m, const struct vram_mps_daemon_info *d, uint64_t *ret_ticks,
			   char *err, size_t err_size)
{
	uint64_t ticks = 0;
	pid_t named;

	if (d->pid <= 0 || !pid_alive(d->pid) || vram_proc_start_ticks(d->pid, &ticks) < 0) {
		snprintf(err, err_size, "the MPS control daemon %d of %.300s is gone", (int)d->pid, d->pipe_dir);
		return -ESRCH;
	}
	/* A reused pid always starts later. */
	if (d->start_ticks && ticks != d->start_ticks) {
		snprintf(err, err_size,
			 "the MPS control daemon %d of %.300s is gone: pid %d is another process now (started at "
			 "tick %" PRIu64 ", the daemon at %" PRIu64 ")",
			 (int)d->pid, d->pipe_dir, (int)d->pid, ticks, d->start_ticks);
		return -ESRCH;
	}
	named = pid_file_pid(d->pipe_dir);
	if (named != d->pid || !is_mps_control(m, d->pid)) {
		snprintf(err, err_size,
			 "pid %d is not the MPS control daemon of %.300s (its %s names %d, and the process must run "
			 "an MPS control program)",
			 (int)d->pid, d->pipe_dir, MPS_PID_FILE, (int)named);
		return -ESRCH;
	}
	*ret_ticks = ticks;
	return 0;
}

/*
 * The CUDA_VISIBLE_DEVICES a running control daemon was started with (new
 * string), so that later clients name its devices as it does; NULL when it
 * cannot be read (another user, out of memory) or is not set.
 */
static char *environ_visible(pid_t pid)
{
	char *buf = malloc(MPS_ENVIRON_MAX + 1), *v = NULL;
	ssize_t n;

	if (!buf)
		return NULL;
	n = read_proc(pid, "environ", buf, MPS_ENVIRON_MAX + 1);
	/* Cut off at the limit: the last entry may be cut too, so it is not read. */
	if (n == MPS_ENVIRON_MAX)
		while (n > 0 && buf[n - 1] != '\0')
			n--;
	for (ssize_t off = 0; n > 0 && off < n; off += (ssize_t)strlen(buf + off) + 1)
		if (!strncmp(buf + off, "CUDA_VISIBLE_DEVICES=", 21)) {
			v = strdup(buf + off + 21);
			break;
		}
	free(buf);
	return v;
}

int vram_mps_adopt(struct vram_mps *m, const struct vram_mps_daemon_info *info, char *err, size_t err_size)
{
	unsigned gpus[VRAM_MPS_MAX_GPUS];
	struct mps_daemon *d;
	uint64_t ticks;
	size_t n = 0;
	char *visible;
	int r;

	if (parse_pipe_dir(m, info->pipe_dir, gpus, &n) < 0) {
		snprintf(err, err_size,
			 "%.300s is not an MPS pipe directory of this vramd (expected %.300s/mps/gpu<i>[-<j>...]/pipe)",
			 info->pipe_dir, m->state_dir);
		return -EINVAL;
	}
	/* Checked before a daemon object exists: a refusal leaves nothing behind in status. */
	r = check_adoptable(m, info, &ticks, err, err_size);
	if (r < 0)
		return r;
	d = find_daemon(m, gpus, n);
	if (d && d->control_pid == info->pid && (d->state == D_RUNNING || d->state == D_QUITTING))
		return 0; /* already ours */
	r = get_daemon(m, gpus, NULL, n, &d, err, err_size);
	if (r == -ENOMEM)
		snprintf(err, err_size, "out of memory taking back the MPS control daemon of %.300s", info->pipe_dir);
	if (r < 0)
		return r;
	if (d->state != D_FAILED && d->state != D_CRASHED) {
		snprintf(err, err_size, "the MPS control daemon for %s is already %s here (pid %d)", d->key,
			 d->state == D_STARTING ? "starting" : "running", (int)d->control_pid);
		return -EBUSY;
	}
	visible = environ_visible(info->pid);
	if (visible) {
		free(d->visible);
		d->visible = visible;
	}
	d->visible_guessed = !visible;
	d->forced = false;
	d->free_when_idle = false;
	d->restart_after_quit = false;
	d->n_servers = 0;
	d->refreshed = false;
	/* Held until vram_mps_adopt_done: the clients of its processes come first. */
	d->adopt_pending = true;
	became_running(d, info->pid);
	vram_debug("mps %s: took back control daemon %d (started at tick %" PRIu64 ")", d->key, (int)info->pid,
		   ticks);
	return 0;
}

/*
 * Daemons in pipe directories of ours that no record named (a crash between
 * a daemon's start and the next state file, or a state file refused): taken
 * back so that vram_mps_adopt_done quits them, as nothing attached to them.
 */
static void adopt_unrecorded(struct vram_mps *m)
{
	char mps_dir[PATH_MAX];
	struct dirent *e;
	size_t seen = 0;
	DIR *dir;

	if ((size_t)snprintf(mps_dir, sizeof(mps_dir), "%s/mps", m->state_dir) >= sizeof(mps_dir))
		return;
	dir = opendir(mps_dir);
	if (!dir)
		return;
	while ((e = readdir(dir)) && seen++ < MPS_SCAN_MAX) {
		struct vram_mps_daemon_info info = { .pid = 0 };
		unsigned gpus[VRAM_MPS_MAX_GPUS];
		char err[512];
		size_t n = 0;

		if (strncmp(e->d_name, "gpu", 3) != 0 ||
		    (size_t)snprintf(info.pipe_dir, sizeof(info.pipe_dir), "%s/%s/pipe", mps_dir, e->d_name) >=
			    sizeof(info.pipe_dir))
			continue;
		/* Known ones were adopted, or started here, already. */
		if (parse_pipe_dir(m, info.pipe_dir, gpus, &n) < 0 || find_daemon(m, gpus, n))
			continue;
		info.pid = pid_file_pid(info.pipe_dir);
		if (info.pid <= 0 || !pid_alive(info.pid))
			continue;
		/* start_ticks unknown: the pid file and the program name decide. */
		if (vram_mps_adopt(m, &info, err, sizeof(err)) < 0)
			vram_debug("mps: leaving %s alone: %s", info.pipe_dir, err);
		else
			vram_debug("mps: control daemon %d of %s was not recorded: it quits", (int)info.pid,
				   info.pipe_dir);
	}
	closedir(dir);
}

void vram_mps_adopt_done(struct vram_mps *m)
{
	if (m->available && !m->shutting_down)
		adopt_unrecorded(m);
	/* daemon_step only starts a quit: no daemon object is freed under the walk. */
	vram_list_for_each_entry(d, &m->daemons, struct mps_daemon, link) {
		if (!d->adopt_pending)
			continue;
		d->adopt_pending = false;
		daemon_step(d);
	}
}

static const char *state_name(enum daemon_state s)
{
	switch (s) {
	case D_STARTING:
		return "starting";
	case D_RUNNING:
		return "running";
	case D_QUITTING:
		return "quitting";
	case D_FAILED:
		return "failed";
	case D_CRASHED:
		return "crashed";
	}
	return "?";
}

json_t *vram_mps_status_json(const struct vram_mps *m)
{
	json_t *root = json_object(), *daemons = json_array();

	if (!root || !daemons)
		goto out_nomem;
	json_object_set_new(root, "available", json_boolean(m->available));
	json_object_set_new(root, "control", m->available ? json_string(m->control) : json_null());
	if (!m->available)
		json_object_set_new(root, "why", json_string(m->why));
	vram_list_for_each_entry(d, &m->daemons, const struct mps_daemon, link) {
		json_t *o = json_object(), *gpus = json_array(), *servers = json_array(), *clients = json_array();

		if (!o || !gpus || !servers || !clients) {
			json_decref(o);
			json_decref(gpus);
			json_decref(servers);
			json_decref(clients);
			goto out_nomem;
		}
		for (size_t i = 0; i < d->n_gpus; i++)
			json_array_append_new(gpus, json_integer(d->gpus[i]));
		json_object_set_new(o, "gpus", gpus);
		json_object_set_new(o, "state", json_string(state_name(d->state)));
		json_object_set_new(o, "control_pid", d->control_pid > 0 ? json_integer(d->control_pid) : json_null());
		json_object_set_new(o, "pipe_dir", json_string(d->pipe_dir));
		json_object_set_new(o, "log_dir", json_string(d->log_dir));
		json_object_set_new(o, "manual", json_boolean(d->manual));
		json_object_set_new(o, "refreshed", json_boolean(d->refreshed));
		for (size_t i = 0; i < d->n_servers; i++) {
			json_t *s = json_object(), *cl = json_array();

			for (size_t j = 0; j < d->servers[i].n_clients; j++)
				json_array_append_new(cl, json_integer(d->servers[i].clients[j]));
			json_object_set_new(s, "pid", json_integer(d->servers[i].pid));
			json_object_set_new(s, "clients", cl);
			json_array_append_new(servers, s);
		}
		json_object_set_new(o, "servers", servers);
		if (d->state == D_FAILED || d->state == D_CRASHED) {
			json_object_set_new(o, "error", json_string(d->error));
			json_object_set_new(o, "log_tail", json_string(d->log_tail));
		}
		vram_list_for_each_entry(c, &d->clients, const struct vram_mps_client, link) {
			json_t *co = json_object();
			char limit[1024] = "";

			if (c->mem_limit_bytes)
				vram_mps_format_mem_limit(c->mem_limit_bytes, d->n_gpus, limit, sizeof(limit));
			json_object_set_new(co, "owner", json_string(c->owner));
			json_object_set_new(co, "pid", c->pid > 0 ? json_integer(c->pid) : json_null());
			json_object_set_new(co, "mem_limit", limit[0] ? json_string(limit) : json_null());
			json_object_set_new(co, "compute_percent",
					    c->compute_percent ? json_integer(c->compute_percent) : json_null());
			json_array_append_new(clients, co);
		}
		json_object_set_new(o, "clients", clients);
		json_array_append_new(daemons, o);
	}
	json_object_set_new(root, "daemons", daemons);
	return root;

out_nomem:
	json_decref(root);
	json_decref(daemons);
	return NULL;
}

json_t *vram_mps_client_status_json(const struct vram_mps_client *c)
{
	const struct mps_daemon *d = c->d;
	json_t *o = json_object(), *gpus = json_array();
	pid_t server = 0;
	char limit[1024] = "";

	if (!o || !gpus) {
		json_decref(o);
		json_decref(gpus);
		return NULL;
	}
	for (size_t i = 0; d && i < d->n_servers; i++) {
		for (size_t j = 0; j < d->servers[i].n_clients; j++)
			if (c->pid > 0 && d->servers[i].clients[j] == c->pid)
				server = d->servers[i].pid;
	}
	/* One server per daemon is the usual case: its clients may not be listed yet. */
	if (!server && d && d->n_servers == 1)
		server = d->servers[0].pid;
	for (size_t i = 0; d && i < d->n_gpus; i++)
		json_array_append_new(gpus, json_integer(d->gpus[i]));
	if (c->mem_limit_bytes && d)
		vram_mps_format_mem_limit(c->mem_limit_bytes, d->n_gpus, limit, sizeof(limit));
	json_object_set_new(o, "owner", json_string(c->owner));
	json_object_set_new(o, "pid", c->pid > 0 ? json_integer(c->pid) : json_null());
	json_object_set_new(o, "gpus", gpus);
	json_object_set_new(o, "daemon", d ? json_string(state_name(d->state)) : json_null());
	json_object_set_new(o, "control_pid", d && d->control_pid > 0 ? json_integer(d->control_pid) : json_null());
	json_object_set_new(o, "server_pid", server > 0 ? json_integer(server) : json_null());
	json_object_set_new(o, "mem_limit", limit[0] ? json_string(limit) : json_null());
	json_object_set_new(o, "compute_percent", c->compute_percent ? json_integer(c->compute_percent) : json_null());
	return o;
}

static void maybe_shutdown_done(struct vram_mps *m)
{
	struct timeval zero = { 0, 0 };

	if (!m->shutting_down || !m->shutdown_done)
		return;
	vram_list_for_each_entry(d, &m->daemons, struct mps_daemon, link)
		if (d->state != D_FAILED && d->state != D_CRASHED)
			return;
	event_add(m->shutdown_ev, &zero);
}

static void on_shutdown_done(evutil_socket_t fd, short what, void *arg)
{
	struct vram_mps *m = arg;
	void (*done)(void *) = m->shutdown_done;

	m->shutdown_done = NULL;
	if (done)
		done(m->shutdown_arg);
}

void vram_mps_shutdown(struct vram_mps *m, void (*done)(void *arg), void *arg)
{
	m->shutting_down = true;
	m->shutdown_done = done;
	m->shutdown_arg = arg;
	if (!m->shutdown_ev)
		m->shutdown_ev = evtimer_new(m->base, on_shutdown_done, m);
	vram_list_for_each_entry(d, &m->daemons, struct mps_daemon, link) {
		vram_list_for_each_entry(c, &d->clients, struct vram_mps_client, link)
			c->dead = true;
		d->manual = false;
		d->adopt_pending = false; /* adopted ones quit too */
		d->restart_after_quit = false;
		if (d->state == D_RUNNING)
			quit_daemon(d);
	}
	/* A daemon still starting quits once its start completes (see became_running). */
	maybe_shutdown_done(m);
}

void vram_mps_free(struct vram_mps *m)
{
	if (!m)
		return;
	while (!vram_list_empty(&m->daemons))
		daemon_free(vram_list_entry(vram_list_first(&m->daemons), struct mps_daemon, link));
	while (!vram_list_empty(&m->refreshes))
		refresh_free(vram_list_entry(vram_list_first(&m->refreshes), struct mps_refresh, link));
	if (m->shutdown_ev)
		event_free(m->shutdown_ev);
	free(m->state_dir);
	free(m);
}
