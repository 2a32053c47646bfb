/* SPDX-License-Identifier: MIT */
/*
 * The manager: vramd's runtime state and the one entry point through which
 * the REST API, the gateway, MCP and timers change it. It owns the config,
 * the GPU backend, the workloads (their state machines, processes, timers)
 * and the ledger, and it runs on the daemon's single libevent loop.
 *
 * Actions are asynchronous: vram_manager_act() validates and begins the
 * action, then calls the callback exactly once from the event loop when the
 * workload reaches the target state or the action fails. A waiter can be
 * cancelled (its HTTP client went away) and its callback is then never called;
 * the action itself goes on.
 */
#ifndef VRAM_MANAGER_H
#define VRAM_MANAGER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "core/workload.h"
#include "daemon/runas.h"
#include "gpu/gpu.h"

struct event_base;
struct vram_manager;
struct vram_manager_waiter;
struct vram_manager_sub;
struct vram_mps; /* daemon/mps.h */

enum vram_action {
	VRAM_ACTION_START = 0, /* stopped/failed → ready */
	VRAM_ACTION_STOP,      /* any → stopped (SIGTERM, then SIGKILL) */
	VRAM_ACTION_OFFLOAD,   /* ready → offloaded */
	VRAM_ACTION_RESTORE,   /* offloaded → ready */
	VRAM_ACTION_RELEASE,   /* ready/offloaded/parked → stopped, frees GPU and host memory */
	VRAM_ACTION_PARK,      /* ready/offloaded → parked (on disk): a ready one is offloaded first */
};

/* "start", "stop", "offload", "restore", "release", "park"; "?" for anything else. */
const char *vram_action_name(enum vram_action action);

/*
 * How an action ended, for the caller to answer by (the API layer turns it
 * into an HTTP status: waitact.h). The manager knows no HTTP.
 */
enum vram_action_outcome {
	VRAM_OUTCOME_DONE = 0,  /* the target state was reached (or held already) */
	VRAM_OUTCOME_NO_ROOM,   /* no room on the GPUs (error -ENOSPC) */
	VRAM_OUTCOME_FAILED,    /* the action failed: error and message say why */
	VRAM_OUTCOME_PREEMPTED, /* another action changed the workload first, or one on the process runs */
	VRAM_OUTCOME_GONE,      /* by pid: the process went away before it answered */
};

struct vram_action_result {
	int error;            /* 0, or -errno */
	enum vram_action_outcome outcome; /* DONE exactly when error is 0 */
	const char *workload; /* borrowed, valid during the callback */
	const char *state;    /* state name reached */
	double seconds;       /* wall time of the action */
	uint64_t bytes;       /* bytes moved (offload/restore), 0 if none */
	const char *engine;   /* engine used, or NULL */
	char message[1024];   /* what happened, or why it failed */
	pid_t pid;            /* the process of an action by pid (vram_manager_hook_act); 0 otherwise */
	bool already;         /* the workload was in the asked state already: nothing was done */
};

typedef void (*vram_action_cb)(const struct vram_action_result *res, void *arg);

/*
 * Creates the manager. Takes ownership of cfg and gpus (freed by
 * vram_manager_free, also on failure). base is borrowed and outlives it.
 * Returns 0 or -errno.
 */
int vram_manager_new(struct event_base *base, struct vram_config *cfg, struct vram_gpus *gpus,
		     struct vram_manager **ret);
/* Starts eager workloads and the periodic tick. Returns 0 or -errno. */
int vram_manager_run(struct vram_manager *m);
/*
 * Before vramd executes itself anew in place (a restart in place, upgrade.h):
 * writes the state file now, synchronously, so that the new image takes back
 * every workload. Nothing is stopped and nothing is frozen: when the exec
 * fails after this, vramd simply goes on. Returns 0, or -errno with err (the
 * restart is then called off): -EBUSY (shutting down, or an offload,
 * restore or park in progress, whose result the state file could not
 * record), or
 * the write's error.
 */
int vram_manager_prepare_exec(struct vram_manager *m, char *err, size_t err_size);
/*
 * Stops every workload (SIGTERM to each process group, SIGKILL after its
 * grace) and calls done(arg) from the loop once all children are reaped.
 */
void vram_manager_shutdown(struct vram_manager *m, void (*done)(void *arg), void *arg);
void vram_manager_free(struct vram_manager *m);

const struct vram_config *vram_manager_config(const struct vram_manager *m);
/* The MPS control daemons (borrowed, valid while the manager lives): for vramctl mps. */
struct vram_mps *vram_manager_mps(struct vram_manager *m);
/*
 * By hand (vramctl mps start|stop): starts the MPS control daemon of a GPU
 * set (kept without clients), or quits it (n 0: every daemon; refused with
 * -EBUSY while clients use it unless force). Both return at once; the change
 * shows in vram_mps_status_json. Returns 0 or -errno with err: -EINVAL (no
 * such GPU), -ENOENT (no MPS binary, or no daemon to stop), -EBUSY.
 */
int vram_manager_mps_start(struct vram_manager *m, const unsigned *gpus, size_t n, char *err,
			   size_t err_size);
int vram_manager_mps_stop(struct vram_manager *m, const unsigned *gpus, size_t n, bool force, char *err,
			  size_t err_size);

/*
 * Begins an action on a workload. Returns 0 and calls cb later (exactly once
 * unless the waiter is cancelled); if ret_waiter is not NULL it receives a
 * handle valid until cb runs or it is cancelled. Returns, without calling cb:
 *   -ENOENT unknown workload,
 *   -EBUSY  wrong state for this action (err says which state and what is allowed),
 *           or a park asked of a workload whose engine cannot park,
 *   -ENOSPC no room on the GPUs (err has the planner's numbers),
 * with a message in err.
 * An action that finds the workload already in its target state succeeds at once
 * (cb still runs from the loop).
 */
int vram_manager_act(struct vram_manager *m, const char *name, enum vram_action action,
		     vram_action_cb cb, void *arg, struct vram_manager_waiter **ret_waiter,
		     char *err, size_t err_size);
void vram_manager_waiter_cancel(struct vram_manager_waiter *w);

/*
 * Offload or restore one process that runs with libvram.so and is connected
 * to the hook channel, by pid: for a process vramd did not start, such as a
 * survivor of a vramd restart whose hook reconnected (external in status).
 * The workload's state does not change. cb and the waiter work as for
 * vram_manager_act; the result has pid, the process's workload, its state
 * as the hook reports it ("running", "offloaded", ...), engine "hook" and
 * the hook's text in message. Returns, without calling cb: -EINVAL (another
 * action), -ENOENT (no such connected process), -EBUSY (a process of a
 * workload vramd runs: act on the workload; or a command to it is running;
 * or shutting down), -ENOMEM, with a message in err.
 */
int vram_manager_hook_act(struct vram_manager *m, pid_t pid, enum vram_action action, vram_action_cb cb,
			  void *arg, struct vram_manager_waiter **ret_waiter, char *err, size_t err_size);
/* Every process listed on the hook channel, with its workload (new reference; NULL on out of memory). */
json_t *vram_manager_hook_json(struct vram_manager *m);

/*
 * Config reload. vram_manager_set_source records the file and command-line
 * overrides the config came from (copied); vram_manager_reload_file reads
 * that file again and applies it with vram_manager_reload, which takes
 * ownership of cfg whatever it returns. daemon.log_level takes effect on a
 * reload unless keep_log_level (the command line set the level).
 *
 * A reload is all or nothing. It changes nothing and returns, with the
 * reason (file:line:col where there is one) in err: the config's own error
 * from the loader (-EINVAL, -ENOENT, ...); -EPERM when it changes what only
 * a restart of vramd applies (see config/diff.h); -EEXIST when a workload
 * name is taken by an ad-hoc workload; -ENOSPC when removed workloads still
 * hold the slots new ones need; -EBUSY while shutting down. Otherwise, at once:
 *  - new workloads are added (eager ones start);
 *  - changes that apply to a running process (idle timers, priority,
 *    models, limits, health, restart policy, placement for the next start)
 *    take effect;
 *  - a workload whose process must change (cmd, env, cwd, gpus, memory,
 *    replicas, port, offload, share) is restarted once no request is in
 *    flight; meanwhile the gateway holds new requests for it, and a start
 *    asked for it resolves when it is ready with the new settings. One that
 *    was not running takes the new settings at once;
 *  - a removed workload is stopped once no request is in flight, then
 *    dropped from status.
 * Subscribers get a VRAM_EVENT_RELOAD event with the names added, removed
 * and changed once vram_manager_config returns the new config;
 * pointers into the previous config must not be kept past that call.
 * *ret_report (new reference, may be NULL) receives {"added": [names],
 * "removed": [names], "changed": [{"workload", "keys", "applies": "now" |
 * "restart"}], "restarting": [names], "unchanged": N}. Returns 0 or -errno.
 */
int vram_manager_set_source(struct vram_manager *m, const char *path,
			    const struct vram_config_overrides *ov, bool keep_log_level);
int vram_manager_reload_file(struct vram_manager *m, json_t **ret_report, char *err,
			     size_t err_size);
int vram_manager_reload(struct vram_manager *m, struct vram_config *cfg, json_t **ret_report,
			char *err, size_t err_size);

/*
 * Sets idle timeouts of one workload (name) or of all the config's (name
 * NULL: an ad-hoc workload keeps its own, it belongs to the user who ran
 * it). A field left at VRAM_IDLE_KEEP is not changed. Returns 0, -ENOENT or
 * -EINVAL (err).
 */
#define VRAM_IDLE_KEEP (UINT64_MAX - 1)
struct vram_idle_set {
	uint64_t offload_after_ms; /* ms, VRAM_DURATION_NEVER, or VRAM_IDLE_KEEP */
	uint64_t release_after_ms; /* the same */
	uint64_t park_after_ms;    /* the same */
};
int vram_manager_set_idle(struct vram_manager *m, const char *name, const struct vram_idle_set *set,
			  char *err, size_t err_size);

/*
 * Ad-hoc workloads (vramctl run, POST /api/workloads): commands started by
 * hand rather than from the config. They take one of VRAM_MANAGER_ADHOC_MAX
 * slots reserved in the workload array when the manager is made (the array
 * never moves, so pointers held by jobs and waiters stay valid). An ad-hoc
 * workload runs with offload: hook, restart: never, health: none and no idle
 * timers, and starts at once. Once it has exited it stays in status with its
 * exit status ("adhoc": true, "exit") until it is removed, until
 * VRAM_MANAGER_ADHOC_LINGER_MS have passed, or until its slot is needed by a
 * new one; the slot is freed only when no job or waiter refers to it.
 */
#define VRAM_MANAGER_ADHOC_MAX 16
/* ad-hoc workloads one user other than root or vramd's own may hold (running or not) */
#define VRAM_MANAGER_ADHOC_PER_USER_MAX 4
#define VRAM_MANAGER_ADHOC_LINGER_MS (10 * 60 * 1000) /* ms a finished one stays in status */
#define VRAM_MANAGER_ADHOC_MAX_ENV 4096 /* environment entries */
/* The hook socket for processes of other users: the control socket's path with this appended. */
#define VRAM_MANAGER_SHARED_HOOK_SUFFIX ".hook"

struct vram_adhoc_spec {
	const char *name;         /* NULL or "": "run-<n>" */
	const struct vram_runas *runas; /* who it runs as (runas.h), copied; NULL: as vramd */
	const char *const *cmd;   /* argv, NULL-terminated, at least one word; copied */
	const char *const *env;   /* "KEY=VALUE", NULL-terminated, or NULL; copied */
	const char *cwd;          /* NULL: the daemon's working directory; copied */
	struct vram_mem memory;   /* per GPU; zero: not declared */
	unsigned gpus;            /* GPUs (0 = CPU only) */
	bool gpus_set;            /* false: 1 when memory is declared, else 0 */
};

/*
 * Creates an ad-hoc workload and starts it. On success *ret_name (may be
 * NULL) receives its name (borrowed, valid until it is removed). Returns 0,
 * or with a message in err: -EINVAL (bad name, command or environment),
 * -EEXIST (name taken), -EAGAIN (no free slot), -EDQUOT (the user holds
 * VRAM_MANAGER_ADHOC_PER_USER_MAX already), -ENOSPC (no room on the
 * GPUs), -EBUSY (shutting down), -ENOMEM.
 */
int vram_manager_add_adhoc(struct vram_manager *m, const struct vram_adhoc_spec *spec,
			   const char **ret_name, char *err, size_t err_size);
/*
 * Whether name is an ad-hoc workload; if so, the uid it runs as (its owner)
 * into *ret_uid and that user's name into user (size bytes), either may be
 * NULL.
 */
bool vram_manager_adhoc_owner(struct vram_manager *m, const char *name, uid_t *ret_uid, char *user,
			      size_t size);
/*
 * Stops an ad-hoc workload (if it runs) and removes it once it has exited
 * and nothing refers to it. Returns 0, -ENOENT, or -EPERM for a workload of
 * the config (err says so).
 */
int vram_manager_remove_adhoc(struct vram_manager *m, const char *name, char *err, size_t err_size);

/* What makes a running process group an attached workload (mgr_attach.c). */
struct vram_attach_spec {
	const char *name;         /* the workload's name; borrowed */
	pid_t pid;                /* the leader of the process group */
	uid_t uid;                /* its user: the workload's owner */
	gid_t gid;
	struct vram_mem memory;   /* its cap per GPU, charged there; zero: none */
	unsigned gpus[VRAM_PLAN_MAX_GPUS]; /* vramd's indices of its GPUs */
	size_t n_gpus;
	uint64_t offload_after_ms; /* idle timer; VRAM_DURATION_NEVER: none */
	int priority;             /* as the config's priority */
};

/*
 * Makes the running process group spec->pid an ad-hoc workload that vramd
 * did not start and never signals (attached): ready, charged on its GPUs,
 * offloaded and restored through the hooks of its processes; a stop or
 * DELETE lets go of it. *ret_name (borrowed, valid until it is removed) and
 * *ret_hook_socket (the shared hook socket its processes use, borrowed; NULL
 * if it cannot be opened) are set on success. Returns 0, or -errno with
 * err: -EINVAL (bad name, GPUs), -ESRCH (no such process, not a group
 * leader), -EEXIST (name taken), -EPERM (vramd cannot act for that user),
 * -EAGAIN (no ad-hoc slot), -EBUSY (shutting down).
 */
int vram_manager_attach(struct vram_manager *m, const struct vram_attach_spec *spec,
			const char **ret_name, const char **ret_hook_socket, char *err,
			size_t err_size);

/* New references; NULL on out of memory (or, for one workload, if unknown). */
json_t *vram_manager_status_json(struct vram_manager *m);
json_t *vram_manager_gpus_json(struct vram_manager *m);
json_t *vram_manager_workload_json(struct vram_manager *m, const char *name);
/* The TTS-style status object keyed by workload name (see docs/api.md). */
json_t *vram_manager_compat_status_json(struct vram_manager *m);
/*
 * The host's memory as status shows it (docs/api.md, "host"): total,
 * available, reserve, limit, budget, parked, kept and on_disk, in bytes
 * (null where not known). New reference; NULL on out of memory.
 */
json_t *vram_manager_host_json(struct vram_manager *m);

/* A live workload's state into *ret_state. Returns 0 or -ENOENT (no such workload). */
int vram_manager_state(struct vram_manager *m, const char *name, enum vram_wl_state *ret_state);

/* Path of a workload's current log file (borrowed), NULL if unknown. */
const char *vram_manager_log_path(struct vram_manager *m, const char *name);

/*
 * Events: what the manager tells its subscribers, as typed data. JSON is
 * made from an event only where it leaves the process (GET /api/events).
 *
 * Why a workload changed state. Decisions are made on this, never on the
 * human sentence that goes with it (struct vram_event's text), which may be
 * reworded at will.
 */
enum vram_event_reason {
	VRAM_REASON_OTHER = 0,      /* none of those below */
	VRAM_REASON_ASKED,          /* an action asked (API, MCP, vramctl, the gateway): "start asked" */
	VRAM_REASON_EAGER,          /* start: the config says start: eager, and vramd runs */
	VRAM_REASON_RESTART,        /* start: again after a failure, once the backoff passed */
	VRAM_REASON_RUN,            /* start: an ad-hoc workload run by hand */
	VRAM_REASON_WAIT_ROOM,      /* start/restore waiting for evicted workloads to free memory */
	VRAM_REASON_HEALTHY,        /* ready: every instance passed its health check */
	VRAM_REASON_IDLE,           /* offload or release by an idle timer */
	VRAM_REASON_EVICTED,        /* offload to make room for another workload */
	VRAM_REASON_OFFLOADED,      /* offloaded: the engine finished (its message is the text) */
	VRAM_REASON_RESTORED,       /* ready: the engine finished a restore */
	VRAM_REASON_START_FAILED,   /* a start failed: the processes could not be spawned */
	VRAM_REASON_OFFLOAD_FAILED, /* an offload failed or could not begin, or lost the process */
	VRAM_REASON_RESTORE_FAILED, /* a restore failed or could not begin */
	VRAM_REASON_NO_ROOM,        /* a start/restore found no room on the GPUs */
	VRAM_REASON_TIMEOUT,        /* not healthy within health.start_timeout */
	VRAM_REASON_CRASH,          /* a process exited unexpectedly */
	VRAM_REASON_LIVENESS,       /* a ready workload failed its liveness checks */
	VRAM_REASON_PORT_TAKEN,     /* its port is held by another process */
	VRAM_REASON_MPS,            /* MPS refused it or its MPS server failed */
	VRAM_REASON_STOPPED,        /* stopped: its processes exited after a stop */
	VRAM_REASON_EXITED,         /* its processes finished by themselves, cleanly */
	VRAM_REASON_RELOAD,         /* a config reload: a restart, removal or addition */
	VRAM_REASON_REMOVED,        /* an ad-hoc workload was removed */
	VRAM_REASON_SHUTDOWN,       /* vramd is shutting down */
	VRAM_REASON_ADOPTED,        /* a new vramd took back the processes of the one before */
	VRAM_REASON_HOST_ROOM,      /* park or release to make room in host memory for an offload */
	VRAM_REASON_PARKED,         /* parked: the engine finished writing it to disk (its message is the text) */
	VRAM_REASON_PARK_FAILED,    /* a park failed or could not begin: still in host RAM, or lost */
};

enum vram_event_kind {
	VRAM_EVENT_STATE = 0, /* a workload changed state */
	VRAM_EVENT_RELOAD,    /* the config was replaced (vram_manager_config is the new one) */
};

/* What a reload changed: workload names (borrowed for the call). */
struct vram_reload_summary {
	const char *const *added;
	size_t n_added;
	const char *const *removed;
	size_t n_removed;
	const char *const *changed; /* applied now or restarting */
	size_t n_changed;
};

struct vram_event {
	enum vram_event_kind kind;
	/* VRAM_EVENT_STATE: */
	const char *workload;  /* borrowed for the call */
	enum vram_wl_state from;
	enum vram_wl_state to;
	enum vram_event_reason reason;
	const char *text;      /* the human sentence ("start asked"), "" if none; borrowed for the call */
	uint64_t mono_ms;      /* when, ms of the monotonic clock (common/clock.h): for durations */
	double wall_s;         /* when, s since the epoch: only for the JSON edge ("time") */
	/* VRAM_EVENT_RELOAD: */
	const struct vram_reload_summary *reload; /* borrowed for the call; NULL for other kinds */
};

/*
 * Subscribes to the events: cb(ev, arg) is called from the loop, ev and
 * what it points to borrowed for the call. Subscribers are called newest
 * first; one may unsubscribe itself from its callback. Returns 0 or
 * -ENOMEM; unsubscribe accepts NULL.
 */
typedef void (*vram_event_cb)(const struct vram_event *ev, void *arg);
int vram_manager_subscribe(struct vram_manager *m, vram_event_cb cb, void *arg,
			   struct vram_manager_sub **ret_sub);
void vram_manager_unsubscribe(struct vram_manager_sub *sub);

/*
 * Request accounting for the gateway: a workload with requests in flight is
 * never offloaded or stopped by a timer; idle time counts from the end of
 * the last request. Returns 0 or -ENOENT.
 */
int vram_manager_request_begin(struct vram_manager *m, const char *name);
int vram_manager_request_end(struct vram_manager *m, const char *name);
/*
 * For the gateway: response bytes came from the workload's instance on port
 * (loopback). An instance that sends them while a request is in flight is
 * not failed by its liveness checks (daemon/liveness.h). It looks the
 * workload up by name, as request_begin does: call it for a response's first
 * bytes, then at most about once a second per connection. Returns 0 or
 * -ENOENT.
 */
int vram_manager_note_progress(struct vram_manager *m, const char *name, unsigned port);

/*
 * For the gateway. find_model: the workload serving an OpenAI "model" name
 * and the name its model server knows it by (*ret_name and *ret_upstream
 * borrowed, valid until the next config reload; ret_upstream may be NULL;
 * *ret_upstream equals model unless model is an alias); returns 0 or -ENOENT.
 * endpoint: the loopback port of a healthy instance of a ready workload,
 * round-robin over replicas; returns 0, -ENOENT, or -EAGAIN (not ready).
 */
int vram_manager_find_model(struct vram_manager *m, const char *model, const char **ret_name,
			    const char **ret_upstream);
int vram_manager_endpoint(struct vram_manager *m, const char *name, unsigned *ret_port);

#endif
