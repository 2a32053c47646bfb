/* SPDX-License-Identifier: MIT */
/*
 * The manager's internal tier, shared by the files that make up the manager
 * and by nothing else (the public API is daemon/manager.h). The manager is a
 * house of floors; a file calls only the floors below its own, and a lower
 * floor reaches an upper one only through a callback handed to it (a timer,
 * a kick job, a feature's hooks), the way struct vram_engine_host works for
 * the engines:
 *
 *   top       mgr_reload.c   config reload: diff, pending restarts, removals
 *             mgr_adhoc.c    ad-hoc workloads (vramctl run): slots, owners
 *             mgr_status.c   status, GPU and workload JSON
 *             mgr_hookpid.c  offload/restore of a hooked process by pid
 *             mgr_route.c    the gateway's questions: model, endpoint, requests
 *             mgr_state.c    the state file: written on change, read on start
 *   manager   manager.c      actions, start/offload/restore, placement and
 *                            eviction, the tick and the kick, construction
 *   instances mgr_instance.c ports, environment, spawn, exit, health and
 *                            liveness probes, port ownership, backoff, MPS
 *             mgr_park.c     park files: the directory, a process's file, removal
 *   registry  mgr_registry.c slots and the live list, lookup, set_state,
 *                            waiters, events and subscribers
 *             mgr_host.c     the host ledger: what workloads hold in host
 *                            memory, the host's memory, the budget (reads only)
 *
 * Data is shared through struct vram_manager and struct mgr_slot below:
 * every floor may read them; a field is written by the floor named at it.
 * Internal functions are mgr_<what>() and return as the public ones do
 * (0 or -errno).
 */
#ifndef VRAM_MANAGER_INT_H
#define VRAM_MANAGER_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>
#include <sys/types.h>

#include <event2/util.h>

#include "common/list.h"
#include "core/engine.h"
#include "core/workload.h"
#include "daemon/hookchan.h"
#include "daemon/manager.h"
#include "daemon/runas.h"
#include "daemon/startlimit.h"

struct event;

/* ---- data ---- */

/*
 * A waiter of an action (registry): its result is delivered from the loop.
 * w is NULL for an action on one hooked process by pid (mgr_hookpid.c).
 */
struct vram_manager_waiter {
	struct vram_manager *m;
	struct vram_list link; /* on m->waiters */
	struct vram_workload *w;
	enum vram_action action;
	enum vram_wl_state target;
	vram_action_cb cb;
	void *arg;
	struct event *ev;      /* delivers the result from the loop */
	bool resolved;
	uint64_t started_ms;
	struct vram_action_result res;
	/* an action on one hooked process by pid (w is NULL): */
	struct vram_hookchan_req *hook_req; /* in flight, or NULL */
	bool through_restart; /* a start asked while a reload's restart was pending: resolved after it */
	char hook_workload[VRAM_HOOKCHAN_NAME_MAX]; /* the process's workload, for res.workload */
};

/*
 * What the daemon keeps for one workload slot beside core's struct
 * vram_workload (the same index in ws): its timers, whom it runs as, how its
 * process last ended, and what a config reload left for it to do. Zeroed
 * while the slot is free. Owned by the registry's slot array.
 */
struct mgr_slot {
	/* made and freed by manager.c (mgr_workload_init/done), armed by the floors that use them */
	struct event *retry_timer;  /* restart after backoff; owned */
	struct event *start_timer;  /* start/restore timeout; owned */
	struct event *probe_timer;  /* next health probe round; owned */
	/* written by mgr_adhoc.c */
	const struct vram_runas *owner; /* an ad-hoc workload's: whom it runs as, its owner
					   (borrowed from its ad-hoc record); NULL for the config's */
	/* written by mgr_instance.c */
	bool exited;          /* its process ended since the last spawn */
	/* written by mgr_hostroom.c: an offload waiting for host memory to be made room for */
	bool host_wait;       /* the offload below begins once there is room */
	enum vram_event_reason host_reason;
	char host_text[160];
	bool host_then_park;
	uint64_t host_since_ms; /* monotonic ms it began to wait */
	bool adopted;         /* its processes were taken back from the previous vramd, not
				 spawned (written by mgr_adopt.c; cleared by the next spawn) */
	int wait_status;      /* waitpid status of that end */
	uint64_t finished_ms; /* monotonic ms it ended */
	struct vram_startlimit start_limit; /* failed starts; reset by a start asked for */
	/*
	 * A workload of the config: what a reload left for it to do (written by
	 * mgr_reload.c; an action asked meanwhile decides start_after). Such
	 * work waits until no request is in flight and no action runs, so that
	 * a reload never cuts a request short. Always clear for an ad-hoc slot.
	 */
	bool removing;   /* gone from the config: stopped, then freed */
	bool start_after; /* start again once the restart is done */
	const struct vram_workload_config *next; /* borrowed (m->cfg or a retired config): the
						     settings it restarts with; NULL: none pending */
	char keys[512];  /* the keys that changed, for status and the log */
};

/* An ad-hoc workload's own config and owner (mgr_adhoc.c). */
struct mgr_adhoc {
	bool used;           /* the slot holds a workload */
	struct vram_runas runas; /* who it runs as: its owner */
	bool removing;       /* freed once it has exited and nothing refers to it */
	struct vram_workload_config cfg; /* owned */
};

struct vram_manager {
	/* manager.c: construction */
	struct event_base *base; /* borrowed */
	struct vram_config *cfg; /* owned; replaced by mgr_reload.c */
	struct vram_gpus *gpus;  /* owned */
	struct vram_supervisor *sup;
	struct vram_workers *workers;
	struct vram_engine_host host;
	char *state_dir; /* owned */
	char *park_dir;  /* owned; <state_dir>/park: the park files' directory unless the config names one */
	struct vram_mps *mps; /* owned; MPS control daemons for share: mps */
	struct vram_hookchan *hookchan; /* owned; NULL when the socket could not be opened */
	char *hook_library;   /* owned; libvram.so to preload, NULL when not found */
	struct event *tick;
	bool running;
	bool shutting_down;
	void (*shutdown_done)(void *arg);
	void *shutdown_arg;
	unsigned ticks;       /* ticks since start, for jobs that run every few ticks */
	bool mps_quitting;    /* shutdown: waiting for the MPS daemons to quit */

	/* mgr_registry.c */
	struct vram_workload *ws; /* owned array: config order, then the ad-hoc slots */
	struct mgr_slot *slots; /* owned array of n_ws: what the daemon keeps beside each ws[k] */
	struct vram_workload **wptrs; /* the live workloads (n_live), for the planner */
	size_t n_ws;          /* n_cfg + VRAM_MANAGER_ADHOC_MAX slots */
	size_t n_cfg;         /* slots for workloads of the config, ws[0..n_cfg): room for a reload */
	size_t n_live;
	struct vram_list waiters; /* struct vram_manager_waiter, newest first */
	struct vram_list subs;    /* subscribers, newest first */
	struct event *kick;

	/* mgr_instance.c */
	bool shared_hook_failed; /* the hook socket for other users could not be opened (logged once) */

	/* mgr_adhoc.c */
	struct mgr_adhoc adhoc[VRAM_MANAGER_ADHOC_MAX]; /* for ws[n_cfg + i] */
	unsigned adhoc_seq;   /* numbers "run-<n>" names */

	/* mgr_reload.c */
	struct vram_list retired; /* configs replaced by reloads, still in use */
	char *cfg_path;       /* owned; the file a reload reads, or NULL */
	char *ov_listen, *ov_sim_gpus, *ov_state_dir; /* owned; the command line's overrides */
	bool keep_log_level;  /* the command line set it: a reload leaves it */

	/* mgr_hostroom.c */
	unsigned host_drops; /* DROP_HOST commands in flight (room being made) */

	/* mgr_state.c */
	bool state_written;   /* state_print is of a file written (or tried) */
	bool state_removed;   /* a clean stop removed it: nothing is written any more */
	uint64_t state_print; /* fingerprint of what was last written (or tried) */
	uint64_t state_warned_ms; /* monotonic ms of the last failed write's warning; 0 = none */

	/* mgr_decisions.c */
	struct mgr_decisions *decisions; /* owned; NULL until the first record */
};

/*
 * A feature on the top floor that needs more than to be called: the jobs it
 * runs on the manager's kick and tick and what it frees with it. Each may be
 * NULL. manager.c lists them in one array.
 */
struct mgr_feature {
	const char *name;
	void (*init)(struct vram_manager *m);          /* vram_manager_new, first; cannot fail */
	void (*kick)(struct vram_manager *m);          /* after state changes, from the loop */
	void (*tick)(struct vram_manager *m, uint64_t now_ms); /* every tick, before the idle timers */
	void (*run)(struct vram_manager *m);           /* vram_manager_run, before eager starts */
	void (*done)(struct vram_manager *m);          /* vram_manager_free, after the workloads */
};

extern const struct mgr_feature mgr_adhoc_feature;  /* mgr_adhoc.c */
extern const struct mgr_feature mgr_adopt_feature;  /* mgr_adopt.c */
extern const struct mgr_feature mgr_reload_feature; /* mgr_reload.c */
extern const struct mgr_feature mgr_state_feature;  /* mgr_state.c */
extern const struct mgr_feature mgr_decisions_feature; /* mgr_decisions.c */

/* ---- decisions: mgr_decisions.c (decisions.h) ---- */

struct vram_policy_placement;

/*
 * Records the planner's outcome for w (result: what plan_workload returns).
 * first_try: the plan may evict; a retry of a start that waits for room
 * records only a success.
 */
void mgr_decision_plan(struct vram_manager *m, const struct vram_workload *w,
		       const struct vram_policy_placement *pl, int result, bool first_try);
/* Records w's change from `from` when reason is a decision (eviction, idle timer, room). */
void mgr_decision_state(struct vram_manager *m, const struct vram_workload *w,
			enum vram_wl_state from, enum vram_event_reason reason, const char *text);

extern const struct mgr_feature mgr_container_feature; /* mgr_hookpid.c */

/*
 * The hook socket as containers reach it: a hard link to it in
 * <state_dir>/ct (made or renewed here), a directory of its own that is
 * mounted into them, so that a container taken back after a vramd restart
 * sees the new socket, which a mount of the socket file itself would not.
 * Writes its path into ret_path. Returns 0 or -errno.
 */
int mgr_container_hook_socket(struct vram_manager *m, char *ret_path, size_t size);
/* Forgets in's container process (it ended): its claim on the hook channel goes. */
void mgr_container_forget(struct vram_manager *m, struct vram_instance *in);

static inline struct timeval mgr_tv(uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

/* A free slot has no config; every walk over ws skips it. */
static inline bool mgr_live(const struct vram_workload *w)
{
	return w->cfg != NULL;
}

/* Whether w sits in an ad-hoc slot rather than one of the config's. */
static inline bool mgr_is_adhoc(const struct vram_manager *m, const struct vram_workload *w)
{
	return (size_t)(w - m->ws) >= m->n_cfg;
}

/*
 * The first word of an attached workload's command (mgr_attach.c): its
 * processes were started by someone else (a Slurm step) and vramd never
 * signals them; a stop lets go of them.
 */
#define MGR_ATTACHED_CMD "(attached)"
/* Names that only attached workloads may take: Slurm's steps, slurm-JOBID.STEP. */
#define MGR_ATTACHED_PREFIX "slurm-"

/* Whether w is an attached workload (see MGR_ATTACHED_CMD). */
static inline bool mgr_is_attached(const struct vram_workload *w)
{
	return w->cfg && w->cfg->n_cmd > 0 && strcmp(w->cfg->cmd[0], MGR_ATTACHED_CMD) == 0;
}

/* What the daemon keeps beside w. */
static inline struct mgr_slot *mgr_slot(struct vram_manager *m, const struct vram_workload *w)
{
	return &m->slots[w - m->ws];
}

/* ---- registry: mgr_registry.c ---- */

/*
 * Allocates the slots (room for every workload a reload may bring, then the
 * ad-hoc ones), the lists and the kick event, whose handler is on_kick
 * (handed in by manager.c). Returns 0 or -ENOMEM; mgr_registry_done frees
 * what was made.
 */
int mgr_registry_init(struct vram_manager *m,
		      void (*on_kick)(evutil_socket_t fd, short what, void *arg));
/* Frees the waiters (without calling them), subscribers, slots and the kick event. */
void mgr_registry_done(struct vram_manager *m);
/* Pokes the kick event: its jobs run on the next loop turn. */
void mgr_kick(struct vram_manager *m);
/* The live list, in the order of the config, then workloads being removed, then ad-hoc ones. */
void mgr_rebuild_live(struct vram_manager *m);
/* Any live workload by name, also one being removed; NULL if none. */
struct vram_workload *mgr_find(struct vram_manager *m, const char *name);
bool mgr_any_process(const struct vram_workload *w);
/* Sets w's last error (the message) and errno. */
void mgr_fmt_error(struct vram_workload *w, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/*
 * Applies ev to w through the lifecycle table: logs, tells subscribers,
 * resolves waiters and kicks. reason is why, for subscribers to decide on;
 * text the same in words for people (logs, the event stream), borrowed,
 * NULL for none. Returns 0 or -EINVAL (not allowed: nothing changes).
 */
int mgr_set_state(struct vram_manager *m, struct vram_workload *w, enum vram_wl_event ev,
		  enum vram_event_reason reason, const char *text);
/* w became ready, or its health settings changed: liveness restarts, its probe timer is re-armed. */
void mgr_liveness_arm(struct vram_manager *m, struct vram_workload *w);
/* Hands ev (borrowed for the call) to every subscriber. */
void mgr_emit(struct vram_manager *m, const struct vram_event *ev);

/* A waiter for action on w (NULL: on a hooked process), not linked yet. NULL on out of memory. */
struct vram_manager_waiter *mgr_waiter_new(struct vram_manager *m, struct vram_workload *w,
					   enum vram_action action, vram_action_cb cb, void *arg);
/* Links wt on the waiters (newest first). */
void mgr_waiter_link(struct vram_manager *m, struct vram_manager_waiter *wt);
/* Unlinks (when linked) and frees wt without calling it. */
void mgr_waiter_free(struct vram_manager_waiter *wt);
/* Fills the result from the workload's state and schedules the callback. */
void mgr_waiter_resolve(struct vram_manager_waiter *wt, bool ok);
/* Resolves the waiters of w whose target w reached, or that it cannot reach now. */
void mgr_resolve_waiters(struct vram_manager *m, struct vram_workload *w);
/* Whether a waiter still refers to w (it may be resolved and not delivered yet). */
bool mgr_waiter_holds(struct vram_manager *m, const struct vram_workload *w);
/* The start waiters held back by a pending restart of w take part from here on. */
void mgr_release_held_waiters(struct vram_manager *m, struct vram_workload *w);

/*
 * The shared hook socket beside the control socket (hookchan.h), opened the
 * first time it is needed: processes of other users register there (only
 * for their own ad-hoc workloads), and root and vramd's user are served as
 * on hook.sock, since that user must already reach the control socket's
 * directory to ask for a command. NULL when it cannot be opened (logged
 * once; such commands then run without the hook). Borrowed (mgr_instance.c).
 */
const char *mgr_shared_hook_socket(struct vram_manager *m);

/* ---- ad-hoc workloads: mgr_adhoc.c (top floor; for the others on it) ---- */

/*
 * Makes an ad-hoc workload called name from spec again, stopped, with its
 * log kept: a workload the previous vramd ran (mgr_adopt.c). Returns it, or
 * NULL with err.
 */
struct vram_adhoc_spec;
/*
 * Checks spec and makes its workload in a free ad-hoc slot, stopped (fresh:
 * its log starts empty). attached: a workload of processes vramd did not
 * start (mgr_attach.c), which alone may have the command MGR_ATTACHED_CMD
 * and is not held to the per-user limit (whoever placed the processes
 * decided). Sets *ret_w. Returns 0 or -errno with err, as
 * vram_manager_add_adhoc.
 */
int mgr_adhoc_create(struct vram_manager *m, const struct vram_adhoc_spec *spec, bool fresh,
		     bool attached, struct vram_workload **ret_w, char *err, size_t err_size);
struct vram_workload *mgr_adhoc_restore(struct vram_manager *m, const char *name,
					const struct vram_adhoc_spec *spec, char *err,
					size_t err_size);

/*
 * What w holds outside its GPUs is gone (its processes stopped or failed,
 * or it is back on them): so is a park asked for, and a park that failed
 * no longer holds the idle timer back.
 */
static inline void mgr_drop_copies(struct vram_workload *w)
{
	w->offloaded_bytes = 0;
	w->host_held_bytes = 0;
	w->parked_bytes = 0;
	w->on_disk = false;
	w->park_queued = false;
	w->park_refused = false;
}

/* ---- park files: mgr_park.c (beside the instances floor) ---- */

/*
 * The directory of the park files (borrowed, valid until the next reload):
 * the config's host.park_dir, else <state_dir>/park.
 */
const char *mgr_park_dir(const struct vram_manager *m);
/*
 * The park file of workload's process pid, <park_dir>/<workload>-<pid>.park,
 * into buf (size bytes); with make_dir, the directory is made private to
 * vramd's user (0700) first. Returns 0, or -errno with the reason in buf:
 * -ENAMETOOLONG (longer than size or than the hook's 255 bytes), or the
 * directory's error.
 */
int mgr_park_path(struct vram_manager *m, const char *workload, pid_t pid, bool make_dir, char *buf,
		  size_t size);
/* Removes the park file of workload's process pid, if there is one (logged when it was). */
void mgr_park_remove(struct vram_manager *m, const char *workload, pid_t pid);
/* Removes every park file whose process no longer runs (at start). */
void mgr_park_sweep(struct vram_manager *m);

/* ---- instances: mgr_instance.c ---- */

/* Opens the hook channel (state_dir/hook.sock) and finds libvram.so; vramd runs on without them. */
void mgr_open_hook(struct vram_manager *m);
/* For the supervisor: a child it reaped that is not a workload's (an MPS daemon's). */
bool mgr_on_reaped_other(pid_t pid, int wait_status, void *arg);
/* Gives every instance of w a port: the configured one (+ replica), or a free one. */
int mgr_assign_ports(struct vram_manager *m, struct vram_workload *w, char *err, size_t err_size);
/* Decides whether this run of w goes through MPS: 0, or -ENOENT with the message. */
int mgr_mps_decide(struct vram_manager *m, struct vram_workload *w, char *err, size_t err_size);
/* Lets go of the MPS clients of instances that have no process. */
void mgr_mps_detach_idle(struct vram_workload *w);
/* Spawns every instance and starts the health checks; on failure nothing is left running. */
int mgr_start_processes(struct vram_manager *m, struct vram_workload *w, char *err,
			size_t err_size);
/* SIGTERM (SIGKILL after the grace) to every process of w; exits are expected. */
void mgr_stop_processes(struct vram_workload *w);
/* Stops w's start timeout and health probes. */
void mgr_cancel_timers(struct vram_manager *m, struct vram_workload *w);
/* A process died, or a start/restore did not become healthy: go to failed (and retry). */
void mgr_fail_workload(struct vram_manager *m, struct vram_workload *w, enum vram_wl_event ev,
		       enum vram_event_reason reason, bool retry);
/* Restart after a failure, with the delay doubling up to restart_backoff_max (retry timer). */
void mgr_schedule_retry(struct vram_manager *m, struct vram_workload *w);
/* A workload ready for a while starts its next backoff from 1 s again. */
void mgr_backoff_reset_if_settled(struct vram_workload *w);
/* Timer callbacks (arg: the workload), made by mgr_workload_init. */
void mgr_on_probe_timer(evutil_socket_t fd, short what, void *arg);
void mgr_on_start_timer(evutil_socket_t fd, short what, void *arg);
/* For the gateway: whether in may be sent a request (its port's listener is its own). */
bool mgr_endpoint_port_ours(struct vram_manager *m, struct vram_workload *w,
			    struct vram_instance *in);
/* vasprintf that returns the string (caller frees) or NULL. */
char *mgr_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Frees a NULL-terminated list of strings (NULL accepted). */
void mgr_strv_free(char **v);

/*
 * Takes back the running process a into in (its pid, port and GPUs already
 * set by the caller), watched by the supervisor as if spawned: its exit
 * goes through the restart policy. resident: it holds its GPU memory now
 * (charged on simulated GPUs); mps: it runs through the MPS control daemon
 * of its GPUs (taken back before). Returns 0 or -errno with err.
 */
struct vram_adopt;
int mgr_adopt_instance(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in,
		       const struct vram_adopt *a, bool resident, bool mps, char *err,
		       size_t err_size);
/* Arms w's start timeout and its first health probe (its processes run). */
void mgr_arm_start_checks(struct vram_manager *m, struct vram_workload *w);

/* ---- host memory for offloads: mgr_hostroom.c (manager floor) ---- */

/*
 * Whether w's offload may begin now as far as host memory goes (the host
 * ledger, core/hostplan.h): 0 (it fits, or nothing can be known); -EAGAIN:
 * room is being made (kept buffers dropped, workloads parked or released,
 * each step begun now) and the offload is remembered in w's slot, to begin
 * once there is room (mgr_host_kick); -ENOSPC with the numbers in err: no
 * room can be made. Only engines that keep the process hold host memory.
 */
int mgr_host_gate(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		  const char *text, bool then_park, char *err, size_t err_size);
/*
 * An offload of w refused for host memory (error, why: the plan's numbers):
 * its last error says so; an idle offload is tried again an idle period
 * later; an eviction's victim is released instead, since the GPU room is
 * still needed.
 */
void mgr_host_refused(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		      int error, const char *why);
/* From the kick: offloads waiting for host memory begin, wait on, or are refused. */
void mgr_host_kick(struct vram_manager *m);

/* ---- the manager proper: manager.c ---- */

/*
 * Makes w in its slot from cfg (borrowed, outlives w): instances, timers,
 * engine, log (fresh: starts empty). Returns 0 or -ENOMEM; on failure
 * mgr_workload_done frees what was made.
 */
int mgr_workload_init(struct vram_manager *m, struct vram_workload *w,
		      const struct vram_workload_config *cfg, size_t index, bool fresh);
/* Frees what w holds and clears its slot (w and what the daemon keeps beside it). */
void mgr_workload_done(struct vram_manager *m, struct vram_workload *w);
/*
 * Begins starting w (placement, eviction, spawn); reason and text say why
 * (mgr_set_state). Returns 0, or -ENOSPC/-EINVAL/... with err.
 */
int mgr_begin_start(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		    const char *text, char *err, size_t err_size);
/*
 * Begins offloading w now, whatever host memory holds (mgr_hostroom.c has
 * decided); then_park: a park follows. And begins parking offloaded w.
 */
void mgr_begin_offload_now(struct vram_manager *m, struct vram_workload *w,
			   enum vram_event_reason reason, const char *text, bool then_park);
void mgr_begin_park(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		    const char *text);
/* mgr_begin_start; a refusal is logged and kept as w's last error. Returns 0 or -errno. */
int mgr_start_logged(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		     const char *text);
/* Stops w whatever it is doing (stop, release, idle release, shutdown); reason and text say why. */
void mgr_stop_workload(struct vram_manager *m, struct vram_workload *w,
		       enum vram_event_reason reason, const char *text);
struct vram_policy_ledger;
/* The GPU ledger of now (core/policy.h), every live workload but exclude (may be NULL). 0 or -ENOMEM. */
int mgr_ledger_build(struct vram_manager *m, const struct vram_workload *exclude, struct vram_policy_ledger *l);

/* ---- host buffers made ahead: mgr_premake.c (the manager floor) ---- */

/* Asks the processes of ready hooked workloads to make their host buffers ahead, where the budget has room. */
void mgr_premake_kick(struct vram_manager *m);

/* ---- overlapped swaps: mgr_overlap.c (the manager floor) ---- */

/* Whether w's restore can overlap its victims' offloads, and a victim's offload report progress. */
bool mgr_overlap_can(struct vram_manager *m, const struct vram_workload *w);
/* Notes what w holds on its GPU as its offload with progress begins. */
void mgr_overlap_offload_begins(struct vram_manager *m, struct vram_workload *w);
/* job->on_progress of an offload with progress (arg: its workload). */
void mgr_overlap_on_progress(struct vram_job *job, void *arg);
/* Sends each granted restore the room there is now, or gives it up when none can come. */
void mgr_overlap_regrant(struct vram_manager *m);

/* ---- the host ledger: mgr_host.c (on the registry floor: any floor may ask) ---- */

/* What one workload holds in host memory now. */
struct mgr_host_usage {
	uint64_t held;    /* bytes of host RAM: its offloaded copy and the buffers it kept */
	uint64_t kept;    /* bytes of held that a ready workload kept after a restore */
	uint64_t on_disk; /* bytes in its park files (not RAM) */
};

/* w's host memory now, from where it is known (see mgr_host.c). */
void mgr_host_usage(struct vram_manager *m, const struct vram_workload *w,
		    struct mgr_host_usage *ret);

struct vram_host_ledger; /* core/hostplan.h */
/*
 * The host ledger of now, for vram_host_make_room: the host's memory
 * (/proc/meminfo, or $VRAM_MEMINFO), the budget of the config, and an entry
 * per live workload (allocated: mgr_host_ledger_done frees them). A host
 * whose meminfo cannot be read has total 0 and available not known.
 * Returns 0 or -ENOMEM (*ret untouched).
 */
int mgr_host_ledger(struct vram_manager *m, struct vram_host_ledger *ret);
void mgr_host_ledger_done(struct vram_host_ledger *l); /* accepts a zeroed one */

#endif
