/* SPDX-License-Identifier: MIT */
/*
 * Process supervision on the daemon's single loop. A child is spawned with
 * posix_spawnp (no shell) in a new process group, with signal mask and
 * dispositions reset, stdin on /dev/null and stdout/stderr on a pipe read by
 * its output relay (relay.c), a small process that passes the output on
 * through a second pipe that the loop copies into the workload's log file.
 * The relay, not the daemon, holds the workload's pipe, so a workload that
 * writes after the daemon died does not get EPIPE: the relay then writes the
 * log file itself. Without a relay program (or when one cannot start) the
 * loop reads the workload's pipe directly.
 *
 * A child that runs as another user (struct vram_creds) is forked instead
 * (spawn.c, which also holds what the relays and the MPS commands share);
 * a step of its start that fails after the spawn returned is written into
 * its log.
 *
 * SIGCHLD is an evsignal: its callback reaps with waitpid(-1, WNOHANG) until
 * nothing is left, sends SIGKILL to whatever is left of the child's group
 * (helpers must not outlive the workload and keep GPU memory), and reports
 * the status once the relay has passed on the last output (its pipe ends)
 * or FINISH_WAIT_MS have passed, whichever comes first. Relays are reaped
 * by the same loop.
 *
 * A process a previous vramd started is adopted through a pidfd: its exit is
 * the pidfd becoming readable (vramd is not its parent, waitpid cannot see
 * it), and its pid is trusted only while the pidfd says it lives, since a
 * pid that nobody of ours holds as a zombie may be reused at once.
 *
 * Its relay writes the log file itself since that vramd died. With a relay
 * socket (vram_supervisor_relay_listen), the adoption holds the log and asks
 * the relay to hand it over (relay.h): the relay connects, stops writing the
 * file and says so with one byte; the log is then reopened, what was held
 * written, and the connection read like a spawned child's relay pipe.
 */
#include "daemon/supervise.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
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

#include "common/clock.h"
#include "common/list.h"
#include "common/log.h"
#include "common/proc.h"
#include "daemon/container.h"
#include "daemon/relay.h"
#include "daemon/spawn.h"

extern char **environ;

/* ms the exit callback waits after the reap for the relay to pass on the last output */
#define FINISH_WAIT_MS 250
/*
 * ms a spawn as another user waits for the child to run its program. The
 * user's own file systems (a FUSE mount that never answers) could hold its
 * chdir or exec for ever, and the loop must not wait with it: after this
 * the spawn succeeds, and a failure that comes later goes into the log.
 */
#define SPAWN_SYNC_MS 250
/*
 * ms an adoption holds the log for the relay to hand it over. After that
 * (a relay that cannot reach the socket, or is stopped) vramd writes the
 * file too, as before relays could hand over, until the relay does.
 */
#define HANDOVER_WAIT_MS 2000
/* Connections taken from the relay socket per loop turn, so that a flood cannot hold the loop */
#define RELAY_ACCEPT_BATCH 32
/* Bytes of /proc/PID/status read to find SigCgt (a relay has few groups: it is far shorter) */
#define PROC_STATUS_MAX 16384

struct late_report;

struct vram_child {
	struct vram_supervisor *s;
	struct vram_list link;      /* in s->children until its exit callback runs */
	pid_t pid;                  /* the workload process (its group's id too) */
	pid_t relay_pid;            /* its output relay until that is reaped; 0: none */
	int out_fd;                 /* read end of the pipe from the relay (or from the child
				       without one), -1 once closed */
	bool out_ended;             /* out_fd reached end of file: every writer is gone */
	struct event *out_ev;       /* readable output */
	struct event *kill_timer;   /* SIGKILL after grace */
	struct event *finish_timer; /* exit callback FINISH_WAIT_MS after the reap at the latest */
	struct vram_logfile *log;   /* borrowed */
	struct late_report *late;   /* a spawn as another user not finished in time, or NULL */
	bool stopping;              /* SIGTERM sent */
	bool escalated;             /* SIGKILL sent after the grace ran out */
	bool reaped;                /* it ended (waitpid returned pid, or its pidfd said so): its
				       pid may be reused, nothing is sent to it */
	int wait_status;            /* waitpid's status, once reaped (VRAM_WAIT_STATUS_UNKNOWN:
				       an adopted process that is not our child) */
	uint64_t start_ticks;       /* its start time (clock ticks since boot); 0: unknown */
	uint64_t relay_start_ticks; /* the relay's; 0: unknown or none */
	bool adopted;               /* taken back by vram_supervisor_adopt, not spawned here */
	bool hands_off;             /* adopted and never signalled: a stop lets go of it */
	bool our_child;             /* waitpid reaps it: spawned, or adopted after an exec in place */
	bool relay_our_child;       /* the same for its relay */
	int pidfd;                  /* adopted: the process, -1 for a spawned one */
	struct event *pidfd_ev;     /* adopted: readable once it ended */
	int relay_pidfd;            /* adopted: its relay, -1 when none or once it ended */
	struct event *relay_ev;     /* readable once the relay ended */
	bool relay_ended;           /* the relay's pidfd said it ended */
	bool handing_over;          /* adopted: the relay was asked for the log, which is held */
	struct event *handover_timer; /* the hold ends after HANDOVER_WAIT_MS */
	int handover_fd;            /* the relay's connection until its byte came; -1: none */
	struct event *handover_ev;  /* handover_fd readable */
	vram_child_exit_cb cb;
	void *arg;
	struct vram_container_ref *container; /* owned; NULL: a process, stopped with signals */
};

/* A child that is a container runtime's foreground run of a container (container.h). */
struct vram_container_ref {
	char *runtime; /* owned; "podman" or "docker" */
	char *name;    /* owned; the container's name */
};

/* Extra time the runtime's own stop gets past the grace before vramd removes the container. */
#define CONTAINER_STOP_MARGIN_MS 5000

struct vram_supervisor {
	struct event_base *base; /* borrowed */
	struct event *sigchld;
	struct vram_list children;   /* struct vram_child whose exit callback has not run, newest first */
	vram_reaped_cb reaped_other; /* pids that are not children of ours; may be NULL */
	void *reaped_other_arg;
	size_t n_children;
	pid_t *relays;               /* relays of finished children, not reaped yet */
	size_t n_relays, relays_cap; /* each ends once its input does (or by SIGKILL) */
	bool relay_warned;           /* "cannot start a relay" was logged */
	uint64_t spawn_wait_ms;      /* SPAWN_SYNC_MS, or what a test set */
	int listen_fd;               /* the relay socket, -1 when not listening */
	struct event *listen_ev;     /* a relay connects */
	char *listen_path;           /* owned; given to relays spawned while listening */
};

/* ---- ${VAR} substitution ---- */

static const char *env_lookup(char *const *env, const char *name, size_t name_len)
{
	const char *found = NULL;
	for (size_t i = 0; env && env[i]; i++) {
		if (strncmp(env[i], name, name_len) == 0 && env[i][name_len] == '=')
			found = env[i] + name_len + 1; /* later entries win */
	}
	return found;
}

int vram_subst_vars(const char *in, char *const *env, char **ret, char *err, size_t err_size)
{
	size_t cap = strlen(in) + 1, len = 0;
	char *out = malloc(cap);
	if (!out)
		return -ENOMEM;
	for (const char *p = in; *p;) {
		const char *piece = p;
		size_t piece_len = 1;
		if (p[0] == '$' && p[1] == '$') {
			p += 2;
		} else if (p[0] == '$' && p[1] == '{') {
			const char *end = strchr(p + 2, '}');
			if (!end) {
				snprintf(err, err_size, "unterminated ${ in \"%s\"", in);
				free(out);
				return -EINVAL;
			}
			size_t name_len = (size_t)(end - (p + 2));
			piece = env_lookup(env, p + 2, name_len);
			if (!piece || name_len == 0) {
				snprintf(err, err_size, "${%.*s} is not set", (int)name_len, p + 2);
				free(out);
				return -ENOENT;
			}
			piece_len = strlen(piece);
			p = end + 1;
		} else {
			p++;
		}
		if (len + piece_len + 1 > VRAM_SUBST_MAX) {
			snprintf(err, err_size, "\"%s\" is longer than %d bytes once expanded", in,
				 VRAM_SUBST_MAX);
			free(out);
			return -E2BIG;
		}
		if (len + piece_len + 1 > cap) {
			size_t ncap = (len + piece_len + 1) * 2;
			char *n = realloc(out, ncap);
			if (!n) {
				free(out);
				return -ENOMEM;
			}
			out = n;
			cap = ncap;
		}
		memcpy(out + len, piece, piece_len);
		len += piece_len;
	}
	out[len] = '\0';
	*ret = out;
	return 0;
}

/* ---- pidfds ---- */

/* The kernel's P_PIDFD for waitid (Linux 5.4); older C libraries lack the name. */
#define WAIT_P_PIDFD ((idtype_t)3)

/* A pidfd for pid (close-on-exec). Returns it or -errno (-ENOSYS: no pidfd_open). */
static int pidfd_open_pid(pid_t pid)
{
#ifdef SYS_pidfd_open
	int fd = (int)syscall(SYS_pidfd_open, pid, 0U);
	return fd >= 0 ? fd : -errno;
#else
	return -ENOSYS;
#endif
}

/* Whether the process behind pidfd has ended (a zombie has). */
static bool pidfd_ended(int pidfd)
{
	struct pollfd p = {.fd = pidfd, .events = POLLIN};
	int r;
	while ((r = poll(&p, 1, 0)) < 0 && errno == EINTR)
		;
	return r > 0;
}

/* sig to the very process behind pidfd, never to a later holder of its pid. Returns 0 or -errno. */
static int pidfd_signal(int pidfd, int sig)
{
#ifdef SYS_pidfd_send_signal
	return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0U) == 0 ? 0 : -errno;
#else
	return -ENOSYS;
#endif
}

/* Whether the process behind pidfd is a child of ours, which waitid can reap. */
static bool pidfd_is_child(int pidfd)
{
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	return waitid(WAIT_P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/* The waitpid status that waitid's si describes. */
static int wait_status_of(const siginfo_t *si)
{
	switch (si->si_code) {
	case CLD_EXITED:
		return (si->si_status & 0xff) << 8;
	case CLD_DUMPED:
		return (si->si_status & 0x7f) | 0x80;
	default: /* CLD_KILLED */
		return si->si_status & 0x7f;
	}
}

/* ---- children ---- */

static void child_unlink(struct vram_child *c)
{
	struct vram_supervisor *s = c->s;
	if (!vram_list_linked(&c->link))
		return;
	vram_list_remove(&c->link);
	s->n_children--;
}

static void child_close_output(struct vram_child *c)
{
	if (c->out_ev) {
		event_free(c->out_ev);
		c->out_ev = NULL;
	}
	if (c->out_fd >= 0) {
		close(c->out_fd);
		c->out_fd = -1;
	}
}

static void late_report_free(struct late_report *l);
static void late_report_read(struct vram_child *c);

/* Stops watching the adopted child's relay (it ended, or the child is finished). */
static void child_unwatch_relay(struct vram_child *c)
{
	if (c->relay_ev) {
		event_free(c->relay_ev);
		c->relay_ev = NULL;
	}
	if (c->relay_pidfd >= 0) {
		close(c->relay_pidfd);
		c->relay_pidfd = -1;
	}
}

static void child_free(struct vram_child *c)
{
	if (c->container) {
		free(c->container->runtime);
		free(c->container->name);
		free(c->container);
	}
	late_report_free(c->late);
	child_close_output(c);
	child_unwatch_relay(c);
	if (c->pidfd_ev)
		event_free(c->pidfd_ev);
	if (c->pidfd >= 0)
		close(c->pidfd);
	if (c->kill_timer)
		event_free(c->kill_timer);
	if (c->finish_timer)
		event_free(c->finish_timer);
	free(c);
}

/*
 * Copies what the pipe holds now into the log. Returns false at EOF (then
 * out_ended is set) or on error.
 */
static bool child_drain_output(struct vram_child *c)
{
	char buf[8192];
	for (;;) {
		ssize_t n = read(c->out_fd, buf, sizeof(buf));
		if (n > 0) {
			if (c->log)
				(void)vram_logfile_write(c->log, buf, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n == 0)
			c->out_ended = true;
		return false;
	}
}

/* Remembers a relay whose child is gone, so that its exit is reaped quietly. */
static void relay_keep(struct vram_supervisor *s, pid_t pid)
{
	if (s->n_relays == s->relays_cap) {
		size_t ncap = s->relays_cap ? s->relays_cap * 2 : 8;
		pid_t *n = realloc(s->relays, ncap * sizeof(*n));
		if (!n)
			return; /* it is then reaped as "not a workload process" */
		s->relays = n;
		s->relays_cap = ncap;
	}
	s->relays[s->n_relays++] = pid;
}

/* Whether pid is one of our relays; if so it is forgotten (reaped now). */
static bool relay_reaped(struct vram_supervisor *s, pid_t pid, int status)
{
	vram_list_for_each_entry(c, &s->children, struct vram_child, link) {
		/* an adopted relay that is not ours may have ended, and its pid be a new child's */
		if (c->relay_pid != pid || (c->adopted && !c->relay_our_child))
			continue;
		c->relay_pid = 0;
		/* a workload that closes its stdout and stderr ends its relay early; that is fine */
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			char how[96];
			vram_warn("The output relay of pid %d %s; its output is lost from now on",
				  (int)c->pid, vram_wait_status_format(status, how, sizeof(how)));
		}
		return true;
	}
	for (size_t i = 0; i < s->n_relays; i++) {
		if (s->relays[i] == pid) {
			s->relays[i] = s->relays[--s->n_relays];
			return true;
		}
	}
	return false;
}

/* ---- the relay's handover of the log ---- */

static void on_output(evutil_socket_t fd, short what, void *arg);

/* Ends the hold of c's log for its relay: the log is reopened and what was held written. */
static void handover_release(struct vram_child *c)
{
	if (c->handover_timer) {
		event_free(c->handover_timer);
		c->handover_timer = NULL;
	}
	if (c->handing_over) {
		c->handing_over = false;
		if (c->log)
			vram_logfile_release(c->log);
	}
}

/* Ends c's handover, done or not: its connection, if not the output now, and the hold. */
static void handover_end(struct vram_child *c)
{
	if (c->handover_ev) {
		event_free(c->handover_ev);
		c->handover_ev = NULL;
	}
	if (c->handover_fd >= 0) {
		close(c->handover_fd);
		c->handover_fd = -1;
	}
	handover_release(c);
}

/*
 * Reads the relay's byte from its connection. Once it came, the relay no
 * longer writes the file: the hold ends (the log is reopened and what was
 * held written) and the connection is read as the relay's pipe would be.
 * Returns false while the byte has not come yet.
 */
static bool handover_read(struct vram_child *c)
{
	char byte;
	ssize_t n = read(c->handover_fd, &byte, 1);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return false;
	if (n == 1 && byte == VRAM_RELAY_HANDED_OVER) {
		struct event *ev = event_new(c->s->base, c->handover_fd, EV_READ | EV_PERSIST, on_output, c);
		if (ev && event_add(ev, NULL) == 0) {
			c->out_fd = c->handover_fd;
			c->out_ev = ev;
			c->out_ended = false;
			c->handover_fd = -1;
			vram_debug("The output relay %d of pid %d handed over %s", (int)c->relay_pid,
				   (int)c->pid, c->log ? vram_logfile_path(c->log) : "its output");
		} else if (ev) {
			/* closed below: the relay's next write fails and it takes the file back */
			event_free(ev);
		}
	} else {
		vram_warn("The output relay %d of pid %d closed its connection without handing over "
			  "its log: it goes on writing the file itself", (int)c->relay_pid, (int)c->pid);
	}
	handover_end(c);
	return true;
}

/*
 * Whether pid catches sig (/proc/PID/status, SigCgt). A relay started
 * without a socket does not catch the handover signal, which would end it
 * and with it the workload's output.
 */
static bool catches_signal(pid_t pid, int sig)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	char *buf = malloc(PROC_STATUS_MAX);
	size_t len = 0;
	while (buf && len < PROC_STATUS_MAX - 1) {
		ssize_t n = read(fd, buf + len, PROC_STATUS_MAX - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	bool caught = false;
	if (buf) {
		buf[len] = '\0';
		const char *line = strstr(buf, "\nSigCgt:");
		if (line && sig >= 1 && sig <= 64) {
			unsigned long long mask = strtoull(line + strlen("\nSigCgt:"), NULL, 16);
			caught = (mask >> (sig - 1)) & 1;
		}
	}
	free(buf);
	return caught;
}

static void on_handover_timeout(evutil_socket_t fd, short what, void *arg);

/*
 * Holds the log of adopted child c and asks its relay, which writes the log
 * itself, to hand it over. Only a relay that catches the signal is asked.
 */
static void handover_ask(struct vram_child *c)
{
	if (!catches_signal(c->relay_pid, VRAM_RELAY_HANDOVER_SIGNAL)) {
		vram_info("The output relay %d of pid %d was started without a relay socket: it goes "
			  "on writing the log itself, and vramd writes there too", (int)c->relay_pid,
			  (int)c->pid);
		return;
	}
	struct timeval tv = {HANDOVER_WAIT_MS / 1000, (HANDOVER_WAIT_MS % 1000) * 1000};
	c->handover_timer = evtimer_new(c->s->base, on_handover_timeout, c);
	if (!c->handover_timer || evtimer_add(c->handover_timer, &tv) < 0) {
		handover_end(c);
		return;
	}
	c->handing_over = true;
	if (c->log)
		vram_logfile_hold(c->log);
	int r = pidfd_signal(c->relay_pidfd, VRAM_RELAY_HANDOVER_SIGNAL);
	if (r < 0) {
		vram_debug("pid %d: asking its relay %d for the log: %s", (int)c->pid,
			   (int)c->relay_pid, strerror(-r));
		handover_end(c);
	}
}

/*
 * Closes the output and hands the relay over to the supervisor's list. A
 * relay whose input has not ended by now is held open by a process that
 * left the group: it is sent SIGKILL, so that process's writes fail as they
 * did before relays, and so that the relay does not take the closed pipe
 * for the daemon's death and write into a log the next instance may use.
 */
static void child_release_output(struct vram_child *c)
{
	handover_end(c);
	child_close_output(c);
	if (c->relay_pid > 0) {
		if (!c->out_ended && !c->relay_ended) {
			/* an adopted relay's pid is trusted only through its pidfd */
			if (c->relay_pidfd >= 0)
				(void)pidfd_signal(c->relay_pidfd, SIGKILL);
			else if (!c->adopted)
				(void)kill(c->relay_pid, SIGKILL);
		}
		/* only our children come back through waitpid */
		if (!c->adopted || c->relay_our_child)
			relay_keep(c->s, c->relay_pid);
		c->relay_pid = 0;
	}
	child_unwatch_relay(c);
}

/*
 * Whether output of c may still come: its pipe (or its relay's connection)
 * is open, or an adopted relay still runs.
 */
static bool child_output_pending(const struct vram_child *c)
{
	return c->out_fd >= 0 || c->relay_pidfd >= 0 || c->handover_fd >= 0;
}

/* Reports a reaped child with the output it wrote up to now, and frees it. */
static void child_finish(struct vram_child *c)
{
	/* why it never ran belongs in the log before its exit is reported */
	if (c->late)
		late_report_read(c);
	/* a relay that handed over and ended at once: its last output is in the connection */
	if (c->handover_fd >= 0)
		(void)handover_read(c);
	if (c->out_fd >= 0)
		(void)child_drain_output(c);
	child_release_output(c);
	child_unlink(c);
	if (c->cb)
		c->cb(c, c->wait_status, c->arg);
	child_free(c);
}

/* Reports c once it was reaped and its output is all in. */
static void child_maybe_finish(struct vram_child *c)
{
	if (c->reaped && !child_output_pending(c))
		child_finish(c);
}

static void on_output(evutil_socket_t fd, short what, void *arg)
{
	struct vram_child *c = arg;
	if (child_drain_output(c))
		return;
	child_close_output(c);
	child_maybe_finish(c);
}

static void on_handover(evutil_socket_t fd, short what, void *arg)
{
	struct vram_child *c = arg;
	if (handover_read(c))
		child_maybe_finish(c);
}

static void on_handover_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct vram_child *c = arg;
	/* one that connects later is still taken: it then stops writing the file */
	vram_warn("The output relay %d of pid %d did not hand over %s within %d ms: until it "
		  "does, it and vramd both write the file", (int)c->relay_pid, (int)c->pid,
		  c->log ? vram_logfile_path(c->log) : "its output", HANDOVER_WAIT_MS);
	handover_release(c);
}

/* The adopted child's relay ended: what the child wrote is in the log. */
static void on_relay_ended(evutil_socket_t fd, short what, void *arg)
{
	struct vram_child *c = arg;
	c->relay_ended = true;
	child_unwatch_relay(c);
	if (!c->relay_our_child) {
		/* nobody of ours holds its pid now */
		c->relay_pid = 0;
		c->relay_start_ticks = 0;
	}
	child_maybe_finish(c);
}

/*
 * Sends sig to c's process group while its leader is known to hold the pid:
 * a child of ours until it is reaped (its zombie keeps the pid), an adopted
 * process that is not ours while its pidfd says it has not ended; never a
 * hands-off one. Returns whether it was sent.
 */
static bool child_signal_group(struct vram_child *c, int sig)
{
	if (c->reaped || c->hands_off)
		return false;
	if (!c->our_child && pidfd_ended(c->pidfd))
		return false;
	return kill(-c->pid, sig) == 0;
}

/*
 * SIGKILL to what is left of the group of c, which ended. For an adopted
 * process that was not ours, its pid may be free already: the group is
 * signalled only when no process has that pid or it is still the same
 * (a zombie its parent has not reaped). While a member of the group lives,
 * the kernel does not hand its id to a new process.
 */
static void child_kill_leftovers(struct vram_child *c)
{
	if (c->hands_off)
		return; /* the other tasks of a step run on */
	if (!c->our_child) {
		uint64_t ticks;
		if (vram_proc_start_ticks(c->pid, &ticks) == 0 && ticks != c->start_ticks)
			return;
	}
	(void)kill(-c->pid, SIGKILL);
}

/*
 * SIGKILL to c's group; a container's runtime is told to remove it as well
 * (killing the runtime's foreground process leaves the container running).
 */
static void child_kill_now(struct vram_child *c)
{
	if (c->container) {
		int r = vram_container_remove(c->container->runtime, c->container->name);
		if (r < 0)
			vram_warn("Failed to run %s rm -f %s: %s", c->container->runtime, c->container->name,
				  strerror(-r));
	}
	child_signal_group(c, SIGKILL);
}

static void on_kill_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vram_child *c = arg;
	if (c->reaped)
		return;
	vram_debug("pid %d did not exit within its grace: SIGKILL to its group", (int)c->pid);
	c->escalated = true;
	child_kill_now(c);
}

static void on_finish_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vram_child *c = arg;
	vram_debug("the output of pid %d did not end within %d ms of its exit", (int)c->pid,
		   FINISH_WAIT_MS);
	child_finish(c);
}

static void child_reaped(struct vram_child *c, int status)
{
	c->reaped = true;
	c->wait_status = status;
	evtimer_del(c->kill_timer);
	if (c->pidfd_ev)
		event_del(c->pidfd_ev); /* an ended process's pidfd stays readable */
	/* whatever the leader left behind in its group goes with it */
	child_kill_leftovers(c);
	if (c->out_fd >= 0 && !child_drain_output(c))
		child_close_output(c);
	if (!child_output_pending(c)) {
		child_finish(c);
		return;
	}
	/* the relay may still hold the last lines: they belong in the log before the report */
	struct timeval tv = {0, FINISH_WAIT_MS * 1000};
	if (evtimer_add(c->finish_timer, &tv) < 0)
		child_finish(c);
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
	struct vram_supervisor *s = arg;
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			break;
		/* a reaped child's pid is free for reuse: it never matches again */
		struct vram_child *found = NULL;
		vram_list_for_each_entry(c, &s->children, struct vram_child, link)
			if (!c->reaped && c->our_child && c->pid == pid) {
				found = c;
				break;
			}
		if (found) {
			child_reaped(found, status);
			continue;
		}
		if (relay_reaped(s, pid, status))
			continue;
		if (!s->reaped_other || !s->reaped_other(pid, status, s->reaped_other_arg))
			vram_debug("reaped pid %d, not a workload process", (int)pid);
	}
}

int vram_supervisor_new(struct event_base *base, struct vram_supervisor **ret)
{
	struct vram_supervisor *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = base;
	s->listen_fd = -1;
	vram_list_init(&s->children);
	s->spawn_wait_ms = SPAWN_SYNC_MS;
	s->sigchld = evsignal_new(base, SIGCHLD, on_sigchld, s);
	if (!s->sigchld || evsignal_add(s->sigchld, NULL) < 0) {
		vram_supervisor_free(s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

/*
 * Copies c's output into its log until it ends (an adopted relay that
 * writes the file itself: until it exits) or deadline (CLOCK_MONOTONIC ms)
 * passes.
 */
static void child_drain_until(struct vram_child *c, uint64_t deadline)
{
	while (child_output_pending(c)) {
		if (c->out_fd >= 0 && !child_drain_output(c))
			child_close_output(c);
		if (c->relay_pidfd >= 0 && pidfd_ended(c->relay_pidfd)) {
			c->relay_ended = true;
			child_unwatch_relay(c);
		}
		if (c->handover_fd >= 0)
			(void)handover_read(c);
		uint64_t now = vram_now_ms();
		if (!child_output_pending(c) || now >= deadline)
			return;
		struct pollfd pfd[3] = {{.fd = c->out_fd, .events = POLLIN},
					{.fd = c->relay_pidfd, .events = POLLIN},
					{.fd = c->handover_fd, .events = POLLIN}};
		if (poll(pfd, 3, (int)(deadline - now)) < 0 && errno != EINTR)
			return;
	}
}

void vram_supervisor_free(struct vram_supervisor *s)
{
	if (!s)
		return;
	vram_list_for_each_entry(c, &s->children, struct vram_child, link) {
		if (c->reaped)
			continue;
		if (c->container)
			(void)vram_container_remove(c->container->runtime, c->container->name);
		bool sent = child_signal_group(c, SIGKILL);
		if (c->our_child) {
			while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
				;
		} else if (sent) {
			/* not ours to reap: its end is the pidfd becoming readable */
			struct pollfd pfd = {.fd = c->pidfd, .events = POLLIN};
			while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
				;
		}
		c->reaped = true;
	}
	/* with every writer gone the relays pass on the rest and exit; not forever */
	uint64_t deadline = vram_now_ms() + FINISH_WAIT_MS;
	vram_list_for_each_entry(c, &s->children, struct vram_child, link)
		child_drain_until(c, deadline);
	while (!vram_list_empty(&s->children)) {
		struct vram_child *c = vram_list_entry(vram_list_first(&s->children), struct vram_child,
						       link);
		vram_list_remove(&c->link);
		child_release_output(c);
		child_free(c);
	}
	deadline = vram_now_ms() + FINISH_WAIT_MS;
	while (s->n_relays > 0 && vram_now_ms() < deadline) {
		for (size_t i = 0; i < s->n_relays;) {
			pid_t r = waitpid(s->relays[i], NULL, WNOHANG);
			if (r != 0 && !(r < 0 && errno == EINTR))
				s->relays[i] = s->relays[--s->n_relays]; /* reaped, or not ours */
			else
				i++;
		}
		if (s->n_relays > 0)
			(void)poll(NULL, 0, 5);
	}
	free(s->relays);
	if (s->sigchld)
		event_free(s->sigchld);
	if (s->listen_ev)
		event_free(s->listen_ev);
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		(void)unlink(s->listen_path); /* a relay finds nobody there and stays on its file */
	}
	free(s->listen_path);
	free(s);
}

/*
 * The adopted child whose relay is pid and has not handed over yet; NULL:
 * none. One that connects after its hold ended is taken as well: it stops
 * writing the file then, and what it sent would be lost if it were closed.
 */
static struct vram_child *handover_child(struct vram_supervisor *s, pid_t pid)
{
	vram_list_for_each_entry(c, &s->children, struct vram_child, link) {
		/* while its pidfd says the relay lives, nobody else has its pid */
		if (c->adopted && c->handover_fd < 0 && c->out_fd < 0 &&
		    c->relay_pid == pid && c->relay_pidfd >= 0 && !pidfd_ended(c->relay_pidfd))
			return c;
	}
	return NULL;
}

/* A connection on the relay socket: taken only from an adopted child's relay. */
static void on_relay_connect(evutil_socket_t fd, short what, void *arg)
{
	struct vram_supervisor *s = arg;
	for (int i = 0; i < RELAY_ACCEPT_BATCH; i++) {
		int conn = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (conn < 0)
			return;
		struct ucred cr = {.pid = 0, .uid = (uid_t)-1};
		socklen_t len = sizeof(cr);
		struct vram_child *c = NULL;
		if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.uid == geteuid())
			c = handover_child(s, cr.pid);
		if (!c) {
			vram_debug("Closed a connection to the relay socket: pid %d is not the relay of "
				   "an adopted process", (int)cr.pid);
			close(conn);
			continue;
		}
		c->handover_fd = conn;
		c->handover_ev = event_new(s->base, conn, EV_READ | EV_PERSIST, on_handover, c);
		if (!c->handover_ev || event_add(c->handover_ev, NULL) < 0)
			handover_end(c); /* the relay's next write fails and it takes the file back */
	}
}

int vram_supervisor_relay_listen(struct vram_supervisor *s, const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (s->listen_fd >= 0)
		return -EALREADY;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int r = -ENOMEM;
	char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		goto out_free;
	}
	/* a socket left by a vramd that died is replaced; anything else there is not ours */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			r = -EEXIST;
			goto out_close;
		}
		if (unlink(path) < 0) {
			r = -errno;
			goto out_close;
		}
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		r = -errno;
		goto out_close;
	}
	/* the state directory is 0700 already; the socket is the daemon's alone as well */
	if (chmod(path, 0600) < 0 || listen(fd, SOMAXCONN) < 0) {
		r = -errno;
		goto out_unlink;
	}
	s->listen_ev = event_new(s->base, fd, EV_READ | EV_PERSIST, on_relay_connect, s);
	if (!s->listen_ev || event_add(s->listen_ev, NULL) < 0) {
		if (s->listen_ev)
			event_free(s->listen_ev);
		s->listen_ev = NULL;
		r = -ENOMEM;
		goto out_unlink;
	}
	s->listen_fd = fd;
	s->listen_path = copy;
	return 0;

out_unlink:
	(void)unlink(path);
out_close:
	close(fd);
out_free:
	free(copy);
	return r;
}

size_t vram_supervisor_live(const struct vram_supervisor *s)
{
	return s->n_children;
}

/*
 * What the service manager told vramd itself, which a workload must not
 * take as said to it: a model server that speaks sd_notify would report
 * READY or STOPPING for vramd, or claim vramd's sockets. A workload's own
 * env: may still set them.
 */
static const char *const daemon_only_env[] = {
	"NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
	"JOURNAL_STREAM", NULL,
};

static bool daemon_only(const char *e)
{
	for (const char *const *d = daemon_only_env; *d; d++) {
		size_t len = strlen(*d);
		if (strncmp(e, *d, len) == 0 && e[len] == '=')
			return true;
	}
	return false;
}

/*
 * base (the daemon's environment, or only PATH=VRAM_SPAWN_DEFAULT_PATH) less
 * what the service manager said to vramd alone, with extra on top (same key:
 * replaced). Array freed by caller; the strings are borrowed.
 */
static char **build_env(char *const *base, char *const *extra)
{
	size_t n_base = 0, n_extra = 0;
	while (base && base[n_base])
		n_base++;
	while (extra && extra[n_extra])
		n_extra++;
	char **env = calloc(n_base + n_extra + 1, sizeof(*env));
	if (!env)
		return NULL;
	size_t n = 0;
	for (size_t i = 0; i < n_base; i++)
		if (!daemon_only(base[i]))
			env[n++] = base[i];
	for (size_t i = 0; i < n_extra; i++) {
		const char *eq = strchr(extra[i], '=');
		size_t key_len = eq ? (size_t)(eq - extra[i]) : strlen(extra[i]);
		size_t j;
		for (j = 0; j < n; j++) {
			if (strncmp(env[j], extra[i], key_len) == 0 && env[j][key_len] == '=')
				break;
		}
		env[j] = extra[i];
		if (j == n)
			n++;
	}
	env[n] = NULL;
	return env;
}

static void free_argv(char **argv)
{
	for (size_t i = 0; argv && argv[i]; i++)
		free(argv[i]);
	free(argv);
}




/* The report pipe of a child that had not run its program when the spawn returned. */
struct late_report {
	int fd;                /* owned; the read end */
	struct event *ev;      /* readable */
	struct vram_creds cr;  /* groups not kept: only the count is told */
	char *cwd, *prog;      /* owned; for the message */
};

static void late_report_free(struct late_report *l)
{
	if (!l)
		return;
	if (l->ev)
		event_free(l->ev);
	close(l->fd);
	free(l->cwd);
	free(l->prog);
	free(l);
}

/* Reads what the child reported (a failed step goes into its log), and closes. */
static void late_report_read(struct vram_child *c)
{
	struct late_report *l = c->late;
	char text[512];
	int r = vram_spawn_as_late(l->fd, &l->cr, l->cwd ? l->cwd : "", l->prog, text, sizeof(text));
	if (r == -EAGAIN)
		return; /* nothing yet: the program may still be starting */
	if (r > 0 && c->log)
		(void)vram_logfile_note(c->log, "%s", text);
	late_report_free(l);
	c->late = NULL;
}

static void on_late_report(evutil_socket_t fd, short what, void *arg)
{
	late_report_read(arg);
}


/*
 * Watches fd, the report pipe of c (spawned from sp, program prog), on the
 * loop; takes fd. Returns 0 or -ENOMEM (fd closed).
 */
static int late_watch(struct vram_child *c, const struct vram_spawn *sp, const char *prog, int fd)
{
	struct late_report *l = calloc(1, sizeof(*l));
	if (!l) {
		close(fd);
		return -ENOMEM;
	}
	l->fd = fd;
	l->cr = *sp->creds;
	l->cr.groups = NULL;
	l->cwd = sp->cwd ? strdup(sp->cwd) : NULL;
	l->prog = strdup(prog);
	l->ev = event_new(c->s->base, fd, EV_READ | EV_PERSIST, on_late_report, c);
	if (!l->prog || (sp->cwd && !l->cwd) || !l->ev || event_add(l->ev, NULL) < 0) {
		late_report_free(l);
		return -ENOMEM;
	}
	c->late = l;
	return 0;
}

/*
 * A child forked as another user (vram_spawn_as) that fails before exec
 * leaves through _exit with a copy of the daemon's memory; the vram_child
 * being spawned is the one block of it that nothing points to yet. Held
 * here, it stays reachable in the child too, for leak checkers that follow
 * fork (valgrind).
 */
static struct vram_child *volatile forking;

/* A child handle with nothing running yet (pid 0, no output); NULL when out of memory. */
static struct vram_child *child_new(struct vram_supervisor *s, struct vram_logfile *log,
				    vram_child_exit_cb cb, void *arg)
{
	struct vram_child *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->s = s;
	vram_list_init(&c->link);
	c->out_fd = -1;
	c->pidfd = -1;
	c->relay_pidfd = -1;
	c->handover_fd = -1;
	c->log = log;
	c->cb = cb;
	c->arg = arg;
	c->kill_timer = evtimer_new(s->base, on_kill_timer, c);
	c->finish_timer = evtimer_new(s->base, on_finish_timer, c);
	if (!c->kill_timer || !c->finish_timer) {
		child_free(c);
		return NULL;
	}
	return c;
}

/* Makes c a container's (runtime and name copied; both NULL: a process). Returns 0 or -ENOMEM. */
static int child_set_container(struct vram_child *c, const char *runtime, const char *name)
{
	if (!runtime || !name)
		return 0;
	c->container = calloc(1, sizeof(*c->container));
	if (!c->container)
		return -ENOMEM;
	c->container->runtime = strdup(runtime);
	c->container->name = strdup(name);
	return c->container->runtime && c->container->name ? 0 : -ENOMEM;
}

/* Adds c, which runs now, to the children whose exit is awaited. */
static void child_link(struct vram_child *c)
{
	vram_list_push_front(&c->s->children, &c->link);
	c->s->n_children++;
}

/*
 * Starts a relay reading child_out (the read end of the child's pipe; the
 * caller still closes it). Sets *ret_pid. Returns the read end of the pipe
 * from the relay (caller closes) or -errno.
 */
static int start_relay(const struct vram_supervisor *s, const struct vram_logfile *log,
		       int child_out, pid_t *ret_pid)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	int r = vram_relay_spawn(log, s->listen_path, child_out, fds[1], ret_pid);
	close(fds[1]);
	if (r < 0) {
		close(fds[0]);
		return r;
	}
	return fds[0];
}

int vram_supervisor_spawn(struct vram_supervisor *s, const struct vram_spawn *sp,
			  vram_child_exit_cb cb, void *arg, struct vram_child **ret,
			  char *err, size_t err_size)
{
	int r;
	size_t argc = 0;
	if (err_size)
		err[0] = '\0';
	while (sp->argv && sp->argv[argc])
		argc++;
	if (argc == 0) {
		snprintf(err, err_size, "empty command");
		return -EINVAL;
	}

	static char *const default_path[] = {"PATH=" VRAM_SPAWN_DEFAULT_PATH, NULL};
	char **env = build_env(sp->creds ? default_path : environ, sp->env);
	char **argv = calloc(argc + 1, sizeof(*argv));
	int pipefd[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	bool have_fa = false, have_attr = false;
	struct vram_child *c = NULL;
	if (!env || !argv) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < argc; i++) {
		char why[256];
		r = vram_subst_vars(sp->argv[i], env, &argv[i], why, sizeof(why));
		if (r < 0) {
			snprintf(err, err_size, "cmd[%zu]: %s", i, r == -ENOMEM ? "out of memory" : why);
			goto out;
		}
	}

	/* as another user, the child looks for it with that user's rights and says what failed */
	r = sp->creds ? 0 : vram_spawn_check_executable(argv[0], sp->cwd);
	if (r < 0) {
		snprintf(err, err_size, "cmd[0] %s: %s", argv[0], strerror(-r));
		goto out;
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		r = -errno;
		snprintf(err, err_size, "pipe: %s", strerror(errno));
		goto out;
	}
	r = -ENOMEM;
	if (posix_spawn_file_actions_init(&fa) != 0)
		goto out;
	have_fa = true;
	if (vram_spawn_attr_init(&attr, POSIX_SPAWN_SETPGROUP) < 0)
		goto out;
	have_attr = true;

	if (posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) ||
	    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1) ||
	    posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2))
		goto out;
	if (sp->cwd && posix_spawn_file_actions_addchdir_np(&fa, sp->cwd))
		goto out;

	c = child_new(s, sp->log, cb, arg);
	if (!c || child_set_container(c, sp->container_runtime, sp->container_name) < 0)
		goto out;
	c->our_child = true;

	pid_t pid;
	if (sp->creds) {
		int late_fd = -1;
		forking = c;
		r = vram_spawn_as(sp->creds, sp->cwd, argv, env, pipefd[1], s->spawn_wait_ms, &pid,
				  &late_fd, err, err_size);
		forking = NULL;
		if (r < 0)
			goto out;
		if (late_fd >= 0 && late_watch(c, sp, argv[0], late_fd) < 0)
			vram_warn("Failed to watch the start of pid %d: out of memory; if it cannot run "
				  "its program, its log will not say why", (int)pid);
	} else {
		int e = vram_spawn_posix(&pid, argv[0], true, &fa, &attr, argv, env);
		if (e != 0) {
			r = -e;
			snprintf(err, err_size, "cmd[0] %s: %s", argv[0], strerror(e));
			goto out;
		}
	}
	close(pipefd[1]);
	pipefd[1] = -1;
	c->pid = pid;
	/* recorded for the state file; our unreaped child cannot be another process yet */
	(void)vram_proc_start_ticks(pid, &c->start_ticks);
	c->out_fd = pipefd[0];
	pipefd[0] = -1;
	if (vram_relay_program()) {
		int relay_out = start_relay(s, sp->log, c->out_fd, &c->relay_pid);
		if (relay_out >= 0) {
			close(c->out_fd);
			c->out_fd = relay_out;
			(void)vram_proc_start_ticks(c->relay_pid, &c->relay_start_ticks);
		} else if (!s->relay_warned) {
			s->relay_warned = true;
			vram_warn("Failed to start an output relay (%s): workloads write into a pipe "
				  "vramd reads, and one that writes after vramd died gets EPIPE",
				  strerror(-relay_out));
		}
	}
	(void)fcntl(c->out_fd, F_SETFL, fcntl(c->out_fd, F_GETFL) | O_NONBLOCK);
	c->out_ev = event_new(s->base, c->out_fd, EV_READ | EV_PERSIST, on_output, c);
	if (!c->out_ev || event_add(c->out_ev, NULL) < 0) {
		/* the process runs; without its output it is still supervised */
		child_close_output(c);
	}
	child_link(c);
	*ret = c;
	c = NULL;
	r = 0;

out:
	if (r == -ENOMEM && err[0] == '\0')
		snprintf(err, err_size, "out of memory");
	if (c)
		child_free(c);
	if (have_attr)
		posix_spawnattr_destroy(&attr);
	if (have_fa)
		posix_spawn_file_actions_destroy(&fa);
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	free_argv(argv);
	free(env);
	return r;
}

/* ---- adoption ---- */

/*
 * A pidfd for the process at pid that started at start_ticks (what names it
 * in err: "pid", "relay"). Opened first and checked after: whoever has the
 * pid at the check is the process the pidfd holds, since the recorded one
 * started before the pidfd was opened and a pid is reused only by a
 * process that starts later. Returns the pidfd or -ESRCH (gone, or another
 * process), -ENOSYS, -errno, with a sentence in err.
 */
static int open_recorded(pid_t pid, uint64_t start_ticks, const char *what, char *err,
			 size_t err_size)
{
	int fd = pidfd_open_pid(pid);
	if (fd == -ENOSYS) {
		snprintf(err, err_size, "pidfd_open is not available on this kernel (Linux 5.3 or "
			 "later is needed to adopt a process)");
		return fd;
	}
	if (fd == -ESRCH) {
		snprintf(err, err_size, "%s %d is gone", what, (int)pid);
		return fd;
	}
	if (fd < 0) {
		snprintf(err, err_size, "pidfd_open of %s %d: %s", what, (int)pid, strerror(-fd));
		return fd;
	}
	uint64_t ticks = 0;
	int r = vram_proc_start_ticks(pid, &ticks);
	if (r == -ENOENT || r == -ESRCH) {
		snprintf(err, err_size, "%s %d is gone", what, (int)pid);
		r = -ESRCH;
	} else if (r < 0) {
		snprintf(err, err_size, "the start time of %s %d: %s", what, (int)pid, strerror(-r));
	} else if (ticks != start_ticks) {
		snprintf(err, err_size,
			 "%s %d is another process now (started at tick %llu, the recorded one at %llu)",
			 what, (int)pid, (unsigned long long)ticks, (unsigned long long)start_ticks);
		r = -ESRCH;
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/* The adopted process ended (its pidfd is readable). */
static void on_adopted_ended(evutil_socket_t fd, short what, void *arg)
{
	struct vram_child *c = arg;
	if (c->reaped)
		return;
	int status = VRAM_WAIT_STATUS_UNKNOWN;
	if (c->our_child && !(c->hands_off && c->stopping)) {
		/*
		 * Reaped here as well as by the SIGCHLD loop: one that ended while
		 * vramd executed itself anew sent its SIGCHLD to nobody.
		 */
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		if (waitid(WAIT_P_PIDFD, (id_t)c->pidfd, &si, WEXITED | WNOHANG) == 0) {
			if (si.si_pid == 0)
				return; /* not yet */
			status = wait_status_of(&si);
		}
	}
	child_reaped(c, status);
}

/*
 * Watches the adopted child's relay when it still runs as recorded: the
 * exit callback then waits for it as for a spawned child's pipe. One that
 * does not is left out: there is nothing of it to wait for.
 */
static void adopt_relay(struct vram_child *c, const struct vram_adopt *a)
{
	char why[160];
	int fd = open_recorded(a->relay_pid, a->relay_start_ticks, "relay", why, sizeof(why));
	if (fd < 0) {
		vram_debug("pid %d: its output relay is not watched: %s", (int)c->pid, why);
		return;
	}
	if (pidfd_ended(fd)) {
		close(fd);
		return;
	}
	c->relay_ev = event_new(c->s->base, fd, EV_READ, on_relay_ended, c);
	if (!c->relay_ev || event_add(c->relay_ev, NULL) < 0) {
		/* its exit is then reported without waiting for the relay */
		if (c->relay_ev)
			event_free(c->relay_ev);
		c->relay_ev = NULL;
		close(fd);
		return;
	}
	c->relay_pidfd = fd;
	c->relay_our_child = pidfd_is_child(fd);
	c->relay_pid = a->relay_pid;
	c->relay_start_ticks = a->relay_start_ticks;
}

int vram_supervisor_adopt(struct vram_supervisor *s, const struct vram_adopt *a,
			  vram_child_exit_cb cb, void *arg, struct vram_child **ret,
			  char *err, size_t err_size)
{
	struct vram_child *c = NULL;
	int r;
	if (err_size)
		err[0] = '\0';
	if (a->pid <= 0) {
		snprintf(err, err_size, "pid %d is not a process", (int)a->pid);
		return -EINVAL;
	}
	int pidfd = open_recorded(a->pid, a->start_ticks, "pid", err, err_size);
	if (pidfd < 0)
		return pidfd;
	bool ours = pidfd_is_child(pidfd);
	/* a zombie of ours is taken: its exit status is ours to report */
	if (!ours && pidfd_ended(pidfd)) {
		snprintf(err, err_size, "pid %d has ended", (int)a->pid);
		r = -ESRCH;
		goto out;
	}
	pid_t pgid = getpgid(a->pid);
	if (pgid < 0) {
		r = -errno;
		snprintf(err, err_size, "pid %d: %s", (int)a->pid,
			 r == -ESRCH ? "gone" : strerror(-r));
		goto out;
	}
	if (pgid != a->pid) {
		/* stop and kill signal the group: one not its own would reach other processes */
		snprintf(err, err_size, "pid %d is not the leader of its process group (%d)",
			 (int)a->pid, (int)pgid);
		r = -EINVAL;
		goto out;
	}
	r = -ENOMEM;
	c = child_new(s, a->log, cb, arg);
	if (!c || child_set_container(c, a->container_runtime, a->container_name) < 0)
		goto out;
	c->adopted = true;
	c->our_child = ours;
	c->pid = a->pid;
	c->start_ticks = a->start_ticks;
	c->pidfd = pidfd;
	pidfd = -1;
	c->pidfd_ev = event_new(s->base, c->pidfd, EV_READ | EV_PERSIST, on_adopted_ended, c);
	if (!c->pidfd_ev || event_add(c->pidfd_ev, NULL) < 0)
		goto out;
	if (a->relay_pid > 0)
		adopt_relay(c, a);
	if (c->relay_pidfd >= 0 && s->listen_fd >= 0)
		handover_ask(c);
	child_link(c);
	*ret = c;
	c = NULL;
	r = 0;

out:
	if (r == -ENOMEM && err_size && err[0] == '\0')
		snprintf(err, err_size, "out of memory");
	if (c)
		child_free(c);
	if (pidfd >= 0)
		close(pidfd);
	return r;
}

pid_t vram_child_pid(const struct vram_child *c)
{
	return c->pid;
}

pid_t vram_child_relay_pid(const struct vram_child *c)
{
	return c->relay_pid;
}

/*
 * A hands-off child is let go of instead of signalled: its end is reported
 * from the loop (status unknown), as if its pidfd had said so, and the
 * process runs on.
 */
static bool let_go(struct vram_child *c)
{
	if (!c->hands_off)
		return false;
	c->stopping = true;
	event_active(c->pidfd_ev, EV_READ, 0);
	return true;
}

void vram_child_hands_off(struct vram_child *c)
{
	if (c->adopted && c->pidfd_ev)
		c->hands_off = true;
}

void vram_child_stop(struct vram_child *c, uint64_t grace_ms)
{
	if (c->stopping || c->reaped || let_go(c))
		return;
	c->stopping = true;
	if (c->container) {
		/* the runtime signals the container's process and kills it after the grace */
		int r = vram_container_stop(c->container->runtime, c->container->name, grace_ms);
		if (r < 0)
			vram_warn("Failed to run %s stop %s: %s", c->container->runtime, c->container->name,
				  strerror(-r));
		if (c->log)
			vram_logfile_note(c->log, "stopping container %s through %s (grace %" PRIu64 " ms)",
					  c->container->name, c->container->runtime, grace_ms);
		grace_ms += CONTAINER_STOP_MARGIN_MS;
	} else {
		child_signal_group(c, SIGTERM);
		/* a stopped process (SIGSTOP, a debugger gone) acts on SIGTERM only once it runs again */
		child_signal_group(c, SIGCONT);
	}
	struct timeval tv = {.tv_sec = (time_t)(grace_ms / 1000),
			     .tv_usec = (suseconds_t)(grace_ms % 1000) * 1000};
	evtimer_add(c->kill_timer, &tv);
}

void vram_child_kill(struct vram_child *c)
{
	if (c->reaped || let_go(c))
		return;
	c->stopping = true;
	child_kill_now(c);
}

const char *vram_child_container(const struct vram_child *c)
{
	return c->container ? c->container->name : NULL;
}

bool vram_child_escalated(const struct vram_child *c)
{
	return c->escalated;
}

uint64_t vram_child_start_ticks(const struct vram_child *c)
{
	return c->start_ticks;
}

uint64_t vram_child_relay_start_ticks(const struct vram_child *c)
{
	return c->relay_start_ticks;
}

bool vram_child_adopted(const struct vram_child *c)
{
	return c->adopted;
}

char *vram_wait_status_format(int wait_status, char *buf, size_t size)
{
	if (wait_status == VRAM_WAIT_STATUS_UNKNOWN)
		snprintf(buf, size, "ended (its exit status is unknown: this vramd did not start it)");
	else if (WIFEXITED(wait_status))
		snprintf(buf, size, "exited with status %d", WEXITSTATUS(wait_status));
	else if (WIFSIGNALED(wait_status))
		snprintf(buf, size, "killed by signal %d (%s)%s", WTERMSIG(wait_status),
			 strsignal(WTERMSIG(wait_status)),
			 WCOREDUMP(wait_status) ? ", core dumped" : "");
	else
		snprintf(buf, size, "wait status 0x%x", (unsigned)wait_status);
	return buf;
}

void vram_supervisor_set_spawn_wait(struct vram_supervisor *s, uint64_t ms)
{
	s->spawn_wait_ms = ms;
}

void vram_supervisor_set_reaped_other(struct vram_supervisor *s, vram_reaped_cb cb, void *arg)
{
	s->reaped_other = cb;
	s->reaped_other_arg = arg;
}
