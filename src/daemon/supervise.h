/* SPDX-License-Identifier: MIT */
/*
 * The supervisor: spawns workload processes (argv, never a shell) each in its
 * own process group, passes their stdout/stderr through an output relay
 * (relay.h: so that they can keep writing after the daemon died) into a
 * size-bounded rotating log file, reaps them on SIGCHLD with
 * waitpid(-1, WNOHANG) in a loop, and
 * stops them with SIGTERM to the group followed by SIGKILL after a grace.
 * A process a previous vramd started is adopted (vram_supervisor_adopt) and
 * then handled like a spawned one, its exit seen through a pidfd.
 * Also here: the health probe (HTTP GET or TCP connect, non-blocking on the
 * loop) and the log file. Restart policy and backoff live in the manager,
 * which knows the workload's state; this module only runs processes.
 */
#ifndef VRAM_SUPERVISE_H
#define VRAM_SUPERVISE_H

#include <stdbool.h>
#include <stddef.h>
#include <spawn.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "config/config.h"
#include "daemon/logfile.h"
#include "daemon/spawn.h"

struct event_base;

/* ---- processes (supervise.c) ---- */

struct vram_supervisor;
struct vram_child;

/* Maximum length of one argument or variable after ${VAR} substitution. */
#define VRAM_SUBST_MAX 65536

/*
 * Replaces ${NAME} in `in` with NAME's value from env ("KEY=VALUE" strings,
 * NULL-terminated; a later entry wins). "$$" gives a literal '$'. Sets
 * *ret (caller frees). Returns 0, -ENOENT (a variable is not set; err names
 * it), -EINVAL (an unterminated "${") or -ENOMEM.
 */
int vram_subst_vars(const char *in, char *const *env, char **ret, char *err, size_t err_size);

/* Creates the supervisor and installs the SIGCHLD handler on base. Returns 0 or -errno. */
int vram_supervisor_new(struct event_base *base, struct vram_supervisor **ret);
/*
 * Kills (SIGKILL to each group) and reaps every child still running, without
 * calling their exit callbacks, copies what their relays still pass on into
 * the logs (250 ms at most), reaps the relays that are done by then, and
 * frees. Accepts NULL.
 */
void vram_supervisor_free(struct vram_supervisor *s);
/*
 * Listens on a Unix socket at path (mode 0600; a stale socket there is
 * replaced, anything else is -EEXIST) for output relays handing a log
 * over to this daemon (relay.h). Relays spawned from now on are given the
 * path; an adoption (vram_supervisor_adopt) with a live relay then holds
 * the log (vram_logfile_hold) and asks the relay for it, and reads the
 * child's output from the relay's connection once it handed over. The hold
 * ends after 2 s at most, with a warning (a relay that hands over later is
 * still taken). Only a relay that catches the signal is asked (one started
 * without the socket would die of it). Only a connection from an adopted
 * child's relay, as the daemon's user (SO_PEERCRED), is kept. Closed and
 * removed by vram_supervisor_free. Returns 0, -EALREADY, -EEXIST (something
 * that is not a socket is at path), -ENAMETOOLONG or -errno.
 */
int vram_supervisor_relay_listen(struct vram_supervisor *s, const char *path);
/* Number of children whose exit callback has not been called yet. */
size_t vram_supervisor_live(const struct vram_supervisor *s);

/*
 * The reaper collects every child of the daemon (waitpid(-1)); a pid that is
 * not a workload process goes to cb (for modules that spawn commands of
 * their own, such as the MPS control commands), which returns whether it
 * knew the pid. cb NULL: such pids are dropped.
 */
typedef bool (*vram_reaped_cb)(pid_t pid, int wait_status, void *arg);
void vram_supervisor_set_reaped_other(struct vram_supervisor *s, vram_reaped_cb cb, void *arg);

struct vram_spawn {
	char *const *argv;  /* borrowed; NULL-terminated, ${VAR} substituted from the final env */
	char *const *env;   /* borrowed; "KEY=VALUE" set on top of the daemon's environment */
	const char *cwd;    /* borrowed; NULL = the daemon's working directory */
	struct vram_logfile *log; /* borrowed; outlives the child; stdout and stderr go here */
	/*
	 * Borrowed; NULL: the child runs as the daemon. Otherwise it runs as
	 * that user, and none of the daemon's environment is passed on (its
	 * secrets are not the user's): the child gets env only, plus
	 * PATH=VRAM_SPAWN_DEFAULT_PATH unless env sets PATH, which is then
	 * where a bare cmd[0] is looked for.
	 */
	const struct vram_creds *creds;
	/*
	 * Borrowed, copied; both NULL for a process. Otherwise argv is a
	 * container runtime's foreground run of the container named so
	 * (container.h): vram_child_stop has the runtime stop it (with the
	 * grace, plus 5 s for the runtime's own kill before vramd's), and each
	 * SIGKILL comes with the runtime's rm -f, since the container outlives
	 * the runtime's process.
	 */
	const char *container_runtime;
	const char *container_name;
};

/*
 * Called once from the loop after the child is reaped, with the waitpid
 * status, once its output is in the log: when its relay's pipe ends, or at
 * the latest 250 ms after the reap (a process that left the group may hold
 * the output open). The child is freed when the callback returns.
 */
typedef void (*vram_child_exit_cb)(struct vram_child *c, int wait_status, void *arg);

/*
 * Spawns a child in its own process group. On success *ret is a handle owned
 * by the supervisor, valid until the exit callback returns. Returns 0, or
 * -errno with a message in err ("cmd[0] vllm: No such file or directory",
 * "cmd[3]: ${PORT} is not set"; with creds, what failed as whom: "cwd /root:
 * Permission denied (as uid 1000)"). With creds, the loop waits for the child
 * to run its program at most the spawn wait (250 ms): the user's own file
 * systems may hold its chdir or exec for ever. Past that the spawn
 * succeeds, and a step that fails later is noted in the log before the
 * exit (status 127) is reported.
 */
int vram_supervisor_spawn(struct vram_supervisor *s, const struct vram_spawn *sp,
			  vram_child_exit_cb cb, void *arg, struct vram_child **ret,
			  char *err, size_t err_size);
/* For tests: how long a spawn with creds waits for the child's program (ms; 0: not at all). */
void vram_supervisor_set_spawn_wait(struct vram_supervisor *s, uint64_t ms);
pid_t vram_child_pid(const struct vram_child *c);
/* The child's output relay, 0 when there is none (or it is reaped already). */
pid_t vram_child_relay_pid(const struct vram_child *c);
/*
 * SIGTERM to the child's process group (and SIGCONT, so that a stopped
 * process acts on it), then SIGKILL to the group after grace_ms if it has
 * not been reaped. Calling it again does not restart the
 * grace period. Once the child is reaped (its exit callback may still be
 * pending) it and vram_child_kill send nothing: the pid may be reused.
 */
void vram_child_stop(struct vram_child *c, uint64_t grace_ms);
/* SIGKILL to the group now. */
void vram_child_kill(struct vram_child *c);
/* The name of the container the child runs (borrowed, valid while c is), NULL for a process. */
const char *vram_child_container(const struct vram_child *c);
/* Whether the child was sent SIGKILL because its grace ran out. */
bool vram_child_escalated(const struct vram_child *c);

/*
 * The exit status given to the exit callback of an adopted process that is not
 * this process's child: it ended, but how is unknown.
 */
#define VRAM_WAIT_STATUS_UNKNOWN (-1)

struct vram_adopt {
	pid_t pid;                  /* the process; leader of its own process group (pgid == pid) */
	uint64_t start_ticks;       /* its start time as recorded (vram_proc_start_ticks) */
	pid_t relay_pid;            /* its output relay, 0: none known */
	uint64_t relay_start_ticks; /* the relay's start time as recorded */
	struct vram_logfile *log;   /* borrowed, outlives the child, as in struct vram_spawn */
	const char *container_runtime; /* borrowed, as in struct vram_spawn: a container's run */
	const char *container_name;
};

/*
 * Takes back a running process that this daemon did not spawn (a previous
 * vramd did): opens a pidfd (pidfd_open) and then checks the start time, so
 * that a reused pid is never taken; watches the pidfd on the loop for its
 * exit. When the process is in fact our child (vramd executed itself anew in
 * place, its children stay its children), the reaper's waitpid status is
 * used; otherwise the callback gets VRAM_WAIT_STATUS_UNKNOWN. The returned
 * handle works with vram_child_pid/_stop/_kill/_escalated/_relay_pid like a
 * spawned one (signals to the group only while the pidfd says the leader is
 * alive). With a relay socket (vram_supervisor_relay_listen) and a live
 * relay, the log is held and the relay asked to hand it over (see there):
 * write the adoption's notes after this call, so that they are held too.
 * Returns 0 with *ret, -ESRCH (gone, or another process now has that
 * pid: err says which), -ENOSYS (no pidfd_open on this kernel) or -errno.
 */
int vram_supervisor_adopt(struct vram_supervisor *s, const struct vram_adopt *a,
			  vram_child_exit_cb cb, void *arg, struct vram_child **ret,
			  char *err, size_t err_size);
/* The child's start time and its relay's (0: unknown or none), for the state file. */
uint64_t vram_child_start_ticks(const struct vram_child *c);
uint64_t vram_child_relay_start_ticks(const struct vram_child *c);
/* Whether the child was adopted rather than spawned by this supervisor. */
bool vram_child_adopted(const struct vram_child *c);
/*
 * An adopted child that is never signalled (a process another manager owns,
 * e.g. a Slurm step's task): vram_child_stop and vram_child_kill let go of
 * it instead, its exit callback runs from the loop with
 * VRAM_WAIT_STATUS_UNKNOWN and the process runs on. No effect on a spawned
 * child.
 */
void vram_child_hands_off(struct vram_child *c);

/*
 * "exited with status 3", "killed by signal 9 (Killed)", "ended (its exit
 * status is unknown: this vramd did not start it)". Returns buf.
 */
char *vram_wait_status_format(int wait_status, char *buf, size_t size);

/* ---- health probe (health.c) ---- */

struct vram_health_probe;

/* ok: healthy; why: a reason when not ("connection refused", "HTTP 503", "timed out"). */
typedef void (*vram_probe_cb)(bool ok, const char *why, void *arg);

/*
 * Probes 127.0.0.1:port once: HTTP GET path (2xx = healthy) or a TCP connect.
 * cb is called exactly once from the loop, never from inside this call,
 * unless the probe is cancelled first. The probe frees itself after cb.
 * Returns 0 or -errno.
 */
int vram_health_probe_start(struct event_base *base, enum vram_health_kind kind, const char *path,
			    unsigned port, uint64_t timeout_ms, vram_probe_cb cb, void *arg,
			    struct vram_health_probe **ret);
/* Cancels and frees; cb is not called. Accepts NULL. */
void vram_health_probe_cancel(struct vram_health_probe *p);

#endif
