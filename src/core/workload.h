/* SPDX-License-Identifier: MIT */
/*
 * The workload lifecycle: states, the events that move between them, and the
 * runtime object that the manager, the policy and the offload engines share.
 *
 *   stopped ──start──▶ starting ──healthy──▶ ready ◀──restored── restoring ◀──────┐
 *                                             │  ▲                   ▲            │
 *                                       offload  offload failed      │ restore    │ restore
 *                                             ▼  │                   │            │
 *                                          offloading ──offloaded──▶ offloaded    │
 *                                                                park │  ▲ park   │
 *                                                                     ▼  │ failed │
 *                                                                    parking ──parked──▶ parked
 *   any running state ──stop──▶ stopping ──exited──▶ stopped
 *   an unexpected exit, or a failed start/restore ──▶ failed ──start (backoff)──▶ starting
 *
 * Parked is the disk tier: the process lives on, its GPU memory is in one
 * file per process (or, on the sim engine, nowhere at all) and host RAM is
 * freed. A restore from parked that fails (a checksum mismatch, a missing
 * file) fails the workload, so that the restart policy starts it cold
 * rather than let it compute on wrong weights.
 *
 * vram_wl_transitions[] is the whole table, as data, and vram_wl_transition()
 * looks it up, so the rules are testable without a daemon; the manager
 * applies it and refuses what it refuses.
 */
#ifndef VRAM_WORKLOAD_H
#define VRAM_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "core/plan.h"

enum vram_wl_state {
	VRAM_WL_STOPPED = 0, /* no process, nothing held */
	VRAM_WL_STARTING,    /* spawned (or waiting for room), not healthy yet */
	VRAM_WL_READY,       /* healthy, memory on its GPUs */
	VRAM_WL_OFFLOADING,  /* an engine is moving its memory off the GPUs */
	VRAM_WL_OFFLOADED,   /* GPU memory freed; parked in host RAM (or stopped, for restart) */
	VRAM_WL_RESTORING,   /* an engine is bringing it back */
	VRAM_WL_STOPPING,    /* SIGTERM sent, waiting for the process group to exit */
	VRAM_WL_FAILED,      /* start/restore failed or it crashed; see last_error */
	VRAM_WL_PARKING,     /* an engine is writing its host copy to disk */
	VRAM_WL_PARKED,      /* GPU memory in park files on disk, host RAM freed; the process lives */
	VRAM_WL_N_STATES,
};

enum vram_wl_event {
	VRAM_WL_EV_START = 0,          /* start asked (API, gateway, eager, restart after backoff) */
	VRAM_WL_EV_HEALTHY,            /* every instance passed its health check */
	VRAM_WL_EV_START_FAILED,       /* spawn error, start timeout, no room */
	VRAM_WL_EV_OFFLOAD,            /* offload asked (API or idle timer) */
	VRAM_WL_EV_OFFLOADED,          /* the engine finished the offload */
	VRAM_WL_EV_OFFLOAD_FAILED,     /* the engine could not offload; the process is intact */
	VRAM_WL_EV_RESTORE,            /* restore asked (API, gateway) */
	VRAM_WL_EV_RESTORED,           /* the engine finished the restore */
	VRAM_WL_EV_RESTORE_FAILED,     /* the engine failed half-way: the process is not usable */
	VRAM_WL_EV_RESTORE_ABORTED,    /* the restore did not begin (no room): still offloaded */
	VRAM_WL_EV_STOP,               /* stop or release asked (API, idle timer, shutdown) */
	VRAM_WL_EV_EXITED,             /* every process exited, as asked or cleanly by itself */
	VRAM_WL_EV_CRASH,              /* a process exited unexpectedly (non-zero, signal) */
	VRAM_WL_EV_ADOPTED_READY,      /* a new vramd took back its processes, serving */
	VRAM_WL_EV_ADOPTED_OFFLOADED,  /* a new vramd took back its processes, offloaded */
	VRAM_WL_EV_PARK,               /* park asked of an offloaded workload (API or idle timer) */
	VRAM_WL_EV_PARKED,             /* the engine finished writing it to disk */
	VRAM_WL_EV_PARK_FAILED,        /* the engine could not park it: still in host RAM */
	VRAM_WL_EV_UNPARK_ABORTED,     /* a restore from parked did not begin (no room): still parked */
	VRAM_WL_EV_ADOPTED_PARKED,     /* a new vramd took back its processes, parked */
	VRAM_WL_N_EVENTS,
};

/* One allowed transition: on event in state from, the workload goes to to. */
struct vram_wl_transition {
	enum vram_wl_state from;
	enum vram_wl_event event;
	enum vram_wl_state to;
};

/* The whole table (core/workload.c), vram_wl_n_transitions rows; nothing else is allowed. */
extern const struct vram_wl_transition vram_wl_transitions[];
extern const size_t vram_wl_n_transitions;

/*
 * The state reached from `from` on `ev` by the table, or -EINVAL when the
 * event is not allowed in that state. Pure.
 */
int vram_wl_transition(enum vram_wl_state from, enum vram_wl_event ev);

/* "stopped", "starting", … as shown in status; "?" for out-of-range values. */
const char *vram_wl_state_name(enum vram_wl_state s);
const char *vram_wl_event_name(enum vram_wl_event ev);
/* Parses a state name. Returns 0 or -EINVAL. */
int vram_wl_state_parse(const char *s, enum vram_wl_state *ret_state);

/* True for the states in which nothing is in progress (stopped, ready, offloaded, parked, failed). */
bool vram_wl_state_settled(enum vram_wl_state s);
/* True when the workload's instances hold their GPU memory in state s. */
bool vram_wl_state_on_gpu(enum vram_wl_state s);

struct vram_child;      /* daemon/supervise.h */
struct vram_health_probe; /* daemon/supervise.h */
struct vram_engine;     /* core/engine.h */
struct vram_job;        /* core/engine.h */
struct vram_logfile;    /* daemon/logfile.h */
struct vram_mps_client; /* daemon/mps.h */

/* One process of a workload (a workload has `replicas` of them). */
struct vram_instance {
	struct vram_workload *owner; /* back pointer */
	unsigned replica;
	struct vram_child *child;  /* owned by the supervisor; NULL when no process */
	pid_t pid;                 /* 0 when no process */
	unsigned port;             /* TCP port passed as PORT; 0 when not assigned yet */
	unsigned gpus[VRAM_PLAN_MAX_GPUS]; /* GPU indices assigned (CUDA_VISIBLE_DEVICES) */
	size_t n_gpus;             /* 0 = CPU */
	uint64_t bytes_per_gpu;    /* bytes charged on each of its GPUs while resident */
	uint64_t bytes_on_gpu[VRAM_PLAN_MAX_GPUS]; /* bytes given on gpus[i] (a fraction differs by GPU size); 0 = bytes_per_gpu */
	bool resident;             /* its GPU memory is held now */
	uint64_t swap_base;        /* overlapped swaps: bytes it held on its GPU when an offload
				      with progress began; 0 otherwise */
	uint64_t swap_freed;       /* bytes that offload has given back so far: while it
				      offloads it holds swap_base less these */
	bool healthy;              /* passed the health check since the last spawn */
	bool port_verified;        /* its port's listener was found to be its own since the last spawn */
	bool stop_requested;       /* an exit now is expected, not a crash */
	struct vram_health_probe *probe; /* in-flight health probe, or NULL */
	unsigned live_failures;    /* liveness checks failed in a row since it became ready */
	uint64_t progress_ms;      /* monotonic ms response bytes last came from it through the
				      gateway; 0 = none since it became ready */
	struct vram_mps_client *mps_client; /* its MPS client from before spawn until its process is gone, or NULL */
	pid_t container_pid;       /* a container's: its process connected to the hook, by its host pid
				      (GPU memory is accounted to it as to pid); 0: none known */
	pid_t container_pgid;      /* that process's group, claimed on the hook channel for a container
				      taken back from the previous vramd; 0: none */
};

/*
 * A workload at run time. The config part is borrowed from the manager's
 * config (which never changes); everything else is owned here.
 */
struct vram_workload {
	const struct vram_workload_config *cfg; /* borrowed */
	size_t index;                /* position in the config */
	enum vram_wl_state state;
	uint64_t state_since_ms;     /* monotonic ms of the last state change */

	struct vram_instance *instances; /* owned array of cfg->replicas */
	size_t n_instances;

	uint64_t offload_after_ms;   /* ms idle before offload; VRAM_DURATION_NEVER = off */
	uint64_t release_after_ms;   /* ms idle before release; VRAM_DURATION_NEVER = off */
	uint64_t park_after_ms;      /* ms idle before an offloaded one is parked; VRAM_DURATION_NEVER = off */
	unsigned in_flight;          /* requests being served now (gateway) */
	uint64_t last_used_ms;       /* monotonic ms: end of the last request, or became ready */

	const struct vram_engine *engine; /* chosen offload engine */
	char engine_why[160];        /* why that engine was chosen */
	struct vram_job *job;        /* offload/restore in progress, or NULL */
	uint64_t offloaded_bytes;    /* bytes held in host RAM now (offloaded) */
	uint64_t parked_bytes;       /* bytes in park files now (parked, or restoring from parked) */
	bool on_disk;                /* its GPU memory is in park files: parked, or restoring from there */
	bool park_queued;            /* a park was asked while it was ready: it parks once offloaded */
	bool park_refused;           /* the last park failed: the idle timer does not try again
					until it has been ready */
	double last_action_seconds;  /* wall time of the last offload/restore */

	unsigned restarts;           /* restarts after a crash or failed start */
	unsigned backoff_step;       /* consecutive failures; delay = 1 s << step, capped */
	bool awaiting_room;          /* start/restore waits for evicted workloads */
	bool retry_pending;          /* a restart after backoff is scheduled */
	bool evicting;               /* being offloaded/released to make room for another */
	uint64_t host_held_bytes;    /* host RAM its offloaded copy takes, as its engine measured it
					(checkpoint: the processes' growth); 0 = not measured */
	bool swap_progress;          /* its next offload reports progress (overlapped swaps) */
	bool swap_granted;           /* its restore in flight creates memory within grants */
	uint64_t swap_grant;         /* bytes granted to that restore so far */
	char last_error[512];        /* "" when none */
	int last_errno;              /* -errno of the last failure (-ENOSPC: no room), 0 when none */
	uint64_t last_bytes;         /* bytes moved by the last offload/restore */
	uint64_t ready_since_ms;     /* monotonic ms it last became ready */
	uint64_t retry_at_ms;        /* monotonic ms of the scheduled restart, when retry_pending */
	unsigned next_port_rr;       /* round-robin position for endpoint lookups */
	void *ctx;                   /* the manager */
	char last_probe[128];        /* why the last health probe failed */
	uint64_t live_checked_ms;    /* monotonic ms of the last liveness check's result; 0 = none
					since it became ready */
	char live_why[128];          /* why the last failed liveness check failed; "" = none failing */
	bool live_held;              /* checks failed past health.failures, but it is kept: a
					request in flight progresses */
	char log_tail[2048];         /* last lines of the log at the last failure */
	char *log_path;              /* owned */
	struct vram_logfile *log;    /* owned; daemon/logfile.h */
	bool use_mps;                /* this run goes through MPS (share: mps and MPS is there) */
	char placement_note[VRAM_PLAN_MSG_MAX]; /* the planner's note on the last placement (a
					* fallback, evictions); "" when it simply fit */
	bool placement_fallback;     /* the last placement was the fallback's, not as asked */
	char mps_note[256];          /* why share: mps runs without MPS (fallback: exclusive); "" when it does not */
};

#endif
