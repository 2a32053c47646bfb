/* SPDX-License-Identifier: MIT */
/*
 * Restart in place (vramctl daemon restart, POST /api/daemon/restart,
 * SIGUSR2): vramd executes the vramd binary on disk, possibly a new
 * version, in its own process, with the arguments it was started with.
 * execve keeps the pid, so the workloads stay its children and a service
 * manager sees the same main pid; the listening sockets are kept open
 * across it, so that a client never meets a refused connection: what
 * arrives meanwhile waits in the kernel's backlog and the new image
 * accepts it.
 *
 * The sequence (struct vram_upgrade):
 *  1. check: the binary on disk is run with --check-config and the same
 *     config file and overrides, for at most VRAM_UPGRADE_CHECK_S, off the
 *     loop; a failure is answered with its output and nothing changes. With
 *     VRAM_UPGRADE_CHECK_ENV set, a binary that takes listeners over says
 *     so in one more line (vram_upgrade_check_note); one that does not (an
 *     older vramd) would fail to bind the sockets still open, and is
 *     refused;
 *  2. drain: every listener stops accepting (the sockets stay open), the
 *     requests in flight finish, up to daemon.upgrade_drain; each answer
 *     from then on closes its connection, idle connections are closed;
 *     the request that asked is answered (202) when the drain begins;
 *  3. the manager writes its state (vram_manager_prepare_exec);
 *  4. the signal mask is cleared but for the signals vramd handles
 *     (vram_upgrade_signals: one that comes before the new image has its
 *     handlers waits for them instead of killing it; the new image
 *     unblocks them), SIGPIPE is set back to its default, close-on-exec is
 *     cleared on the listeners, their descriptors and roles go into
 *     VRAM_UPGRADE_ENV, and the binary is executed. When execve fails, all
 *     of it is undone and vramd serves on.
 * What drains and what the listeners are is the host's (struct
 * vram_upgrade_host, main.c: the gateway, the API, the manager); this
 * module calls nothing else of the daemon.
 *
 * The new image reads VRAM_UPGRADE_ENV first thing, removes it from its
 * environment (workloads never see it), checks every descriptor named
 * (vram_upgrade_inherit) and listens on those instead of binding.
 *
 * The variable: comma-separated entries, the count of restarts in place
 * this process has been through, then one entry per listener, ROLE=FD:ADDR
 * (ADDR percent-encoded where it holds ',' or '%'):
 *   VRAMD_LISTEN_FDS=restarts=1,tcp=5:127.0.0.1:8600,control=6:/run/vramd/vramd.sock,api=7:/run/vramd/vramd.sock.api
 * Roles: tcp (a gateway TCP listener, "HOST:PORT" with IPv6 in brackets),
 * control (the control socket), api (the API server's private socket).
 */
#ifndef VRAM_UPGRADE_H
#define VRAM_UPGRADE_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>

struct event_base;
struct vram_upgrade;

#define VRAM_UPGRADE_ENV "VRAMD_LISTEN_FDS"
/* set for the check: the binary answers with vram_upgrade_check_note's line */
#define VRAM_UPGRADE_CHECK_ENV "VRAMD_CHECK_FOR_RESTART"
#define VRAM_UPGRADE_CHECK_NOTE "restart-in-place: " VRAM_UPGRADE_ENV " version "
#define VRAM_UPGRADE_FDS_MAX 16          /* listeners handed over */
#define VRAM_UPGRADE_ENV_MAX 4096        /* bytes of the variable's value */
#define VRAM_UPGRADE_ADDR_MAX 264        /* bytes of an address, NUL included */
#define VRAM_UPGRADE_RESTARTS_MAX 1000000000u
#define VRAM_UPGRADE_CHECK_S 10          /* s the binary's --check-config may take */
#define VRAM_UPGRADE_CHECK_OUTPUT_MAX 4096 /* bytes of its output kept for the answer */
/* ms an idle keep-alive connection is left open into a drain, for a request on its way */
#define VRAM_UPGRADE_IDLE_GRACE_MS 200
/* ms given, once the drain's time is up, for the last answers to be sent */
#define VRAM_UPGRADE_CUT_FLUSH_MS 500

enum vram_listen_role {
	VRAM_LISTEN_TCP = 0, /* a gateway TCP listener */
	VRAM_LISTEN_CONTROL, /* the control socket (Unix) */
	VRAM_LISTEN_API,     /* the API server's private socket (Unix) */
};

/* "tcp", "control", "api". */
const char *vram_listen_role_name(enum vram_listen_role role);

struct vram_listen_fd {
	enum vram_listen_role role;
	int fd;
	char addr[VRAM_UPGRADE_ADDR_MAX]; /* tcp: "127.0.0.1:8600", "[::1]:8600"; Unix: the path */
};

struct vram_listen_fds {
	unsigned restarts; /* restarts in place this process has been through */
	struct vram_listen_fd fds[VRAM_UPGRADE_FDS_MAX];
	size_t n;
};

/*
 * Writes the variable's value for l into buf. Returns its length, or
 * -ENOSPC when it does not fit, -EINVAL for an entry it cannot carry (a
 * negative descriptor, an empty address).
 */
int vram_upgrade_format(const struct vram_listen_fds *l, char *buf, size_t size);
/*
 * Parses a value written by vram_upgrade_format, strictly: every entry
 * once, known roles, descriptors 3 and up, no descriptor twice, at most one
 * control and one api socket, addresses that decode. Returns 0 and fills
 * *ret, or -EINVAL with err naming the entry and what was expected.
 */
int vram_upgrade_parse(const char *value, struct vram_listen_fds *ret, char *err, size_t err_size);
/*
 * Checks that l->fd is what l says: an open socket, SOCK_STREAM, listening,
 * of the role's family (IPv4 or IPv6 for tcp, Unix otherwise), bound to
 * l->addr. Returns 0 or -errno with err saying what it is instead.
 */
int vram_upgrade_check_fd(const struct vram_listen_fd *l, char *err, size_t err_size);
/*
 * Describes the listening socket fd as an entry of role: its address as
 * the variable carries it. Returns 0 or -errno.
 */
int vram_upgrade_describe_fd(int fd, enum vram_listen_role role, struct vram_listen_fd *ret);

/*
 * For the new image, first thing in main: reads VRAM_UPGRADE_ENV, removes
 * it from the environment, parses it and checks every descriptor; each one
 * taken gets close-on-exec again. Returns 1 with *ret filled, 0 when the
 * variable is not set, or -errno with err saying what is wrong; then no
 * descriptor is used, the listening sockets among those named (never
 * anything else) are closed so that their addresses can be bound again,
 * and *ret is empty.
 */
int vram_upgrade_inherit(struct vram_listen_fds *ret, char *err, size_t err_size);
/*
 * Takes the inherited listener of role at addr out of l: for Unix
 * sockets the same path, for tcp an address that "HOST:PORT" (as
 * daemon.listen has it; port 0 takes any port) resolves to. Returns the
 * descriptor (the caller owns it) or -ENOENT.
 */
int vram_upgrade_take(struct vram_listen_fds *l, enum vram_listen_role role, const char *addr);
/*
 * Closes what is left in l (listeners the config no longer asks for),
 * each with a line in the log, and removes the socket files of Unix ones.
 */
void vram_upgrade_close_rest(struct vram_listen_fds *l);

/*
 * For --check-config: when VRAM_UPGRADE_CHECK_ENV is set, writes the line
 * that tells a restart in place that this binary takes listeners over
 * ("restart-in-place: VRAMD_LISTEN_FDS version 0.2.0") to f.
 */
void vram_upgrade_check_note(FILE *f);
/*
 * The signals vramd handles on its loop (SIGTERM, SIGINT, SIGHUP,
 * SIGUSR2), into *ret: blocked across the execve, unblocked by the new
 * image once its handlers are in place.
 */
void vram_upgrade_signals(sigset_t *ret);

/*
 * The binary on disk this process was started from: /proc/self/exe read
 * with readlink, without the " (deleted)" the kernel adds once the file
 * was replaced. Returns 0 or -errno.
 */
int vram_upgrade_self_exe(char *buf, size_t size);

/* What the daemon lends the restart: see the sequence above. */
struct vram_upgrade_host {
	void *arg;
	/* Every listener stops accepting (sockets open); answers close their connections. */
	void (*drain_begin)(void *arg);
	/*
	 * What is still in flight: requests, answers being sent, requests half
	 * read. Closes connections idle for idle_grace_ms. 0 ends the drain.
	 */
	size_t (*drain_left)(void *arg, uint64_t idle_grace_ms);
	/* The drain's time is up: what still waits is answered 503, the rest cut. */
	void (*drain_cut)(void *arg);
	/* The restart did not happen: accepting again, as before the drain. */
	void (*drain_end)(void *arg);
	/* vram_manager_prepare_exec. */
	int (*prepare_exec)(void *arg, char *err, size_t err_size);
	/* The listeners to hand over, into *ret (restarts aside). Returns 0 or -errno. */
	int (*listeners)(void *arg, struct vram_listen_fds *ret);
};

struct vram_upgrade_options {
	const char *exe;          /* the binary on disk (vram_upgrade_self_exe) */
	char *const *argv;        /* vramd's own, NULL-terminated: what the new image gets */
	const char *config;       /* the config file, for --check-config */
	const char *listen;       /* --listen, or NULL */
	const char *gpus;         /* --gpus, or NULL */
	const char *state_dir;    /* --state-dir, or NULL */
	unsigned restarts;        /* restarts in place so far (from the variable) */
	/* the descriptor limit vramd started with, which the new image gets; NULL: as it is */
	const struct rlimit *nofile;
};

/*
 * Creates the restart's state on base (borrowed, outlives it); everything
 * in opt is copied, host too. Returns 0 or -ENOMEM.
 */
int vram_upgrade_new(struct event_base *base, const struct vram_upgrade_options *opt,
		     const struct vram_upgrade_host *host, struct vram_upgrade **ret);
/* Calls off a restart under way (vram_upgrade_cancel) and frees. Accepts NULL. */
void vram_upgrade_free(struct vram_upgrade *up);

/*
 * How a restart request is answered, once: result 0 when the check passed
 * and the drain begins (the execve follows; a failure from here on is only
 * logged and shown in vram_upgrade_status_json), or -errno with message:
 * -EINVAL the binary's check failed (message: its output), -ECANCELED
 * called off (vramd stops), anything else the check could not be run.
 */
typedef void (*vram_upgrade_answer_cb)(int result, const char *message, void *arg);

/*
 * Begins a restart, asked by who (for the log: "SIGUSR2", "uid 1000 on the
 * control socket"); the drain waits at most drain_ms for the requests in
 * flight. answer (may be NULL) is called exactly once, from the loop,
 * never from here. Returns 0, -EBUSY while a restart is under way, or
 * -errno with err when the check cannot be started.
 */
int vram_upgrade_start(struct vram_upgrade *up, const char *who, uint64_t drain_ms,
		       vram_upgrade_answer_cb answer, void *arg, char *err, size_t err_size);
/*
 * Calls off a restart under way, for a stop: the check is killed and the
 * answer given (-ECANCELED); a drain is left as it is (the stop closes
 * every connection anyway) and nothing is executed.
 */
void vram_upgrade_cancel(struct vram_upgrade *up);
/* Restarts in place this process has been through. */
unsigned vram_upgrade_restarts(const struct vram_upgrade *up);
/*
 * {"restarting": bool, "phase": "idle"|"check"|"drain"|"exec", "pid",
 * "version", "restarts", "binary", "last_error": null or why the last one
 * failed}; with_error false leaves the text of last_error out ("failed":
 * bool stays). New reference; NULL when out of memory.
 */
json_t *vram_upgrade_status_json(const struct vram_upgrade *up, bool with_error);

#endif
