/* SPDX-License-Identifier: MIT */
/*
 * Offload engines: one interface, several implementations, listed in one
 * explicit array (vram_engines). An engine moves a workload's GPU memory out
 * (offload) and back (restore), and an engine that can moves an offloaded
 * workload's host copy on to disk (park); its restore brings a parked
 * workload back too. Engines are asynchronous: offload/restore
 * begin a job and return; the engine later calls vram_job_complete() from the
 * loop (a timer, a reaped child, a worker-pool completion, a hook message),
 * and the job's owner hears about it from the next loop turn. Blocking work
 * goes to host->workers, never onto the loop.
 *
 * Engines now: checkpoint (the driver's process checkpoint: frees everything,
 * context included, and can restore onto other GPUs of the same model),
 * restart (stop the process; start it again on restore), sim (simulated
 * GPUs: frees and takes back the simulated memory at a realistic rate), hook
 * (libvram.so in every process of the workload moves its memory to host RAM
 * over the hook channel) and hook+checkpoint (the hook moves the data, then
 * the checkpoint engine frees the rest, context included).
 */
#ifndef VRAM_ENGINE_H
#define VRAM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/clock.h" /* vram_now_ms: jobs, the policy and the manager */

#include "config/config.h"
#include "core/hookcmd.h"
#include "core/workload.h"

struct event;
struct event_base;
struct vram_gpus;
struct vram_workers;
struct vram_job;

/* What the daemon lends to engines. */
struct vram_engine_host {
	struct event_base *base;      /* the loop */
	struct vram_gpus *gpus;       /* the GPU backend */
	struct vram_workers *workers; /* for blocking work */
	bool hook_library;            /* libvram.so was found: processes are spawned with it */
	/*
	 * The hook channel, for the hook engines: the channel (NULL when it is
	 * not open) is handed back to the three functions, which the daemon
	 * sets to its own (daemon/hookchan.h), so that engines never call the
	 * daemon themselves.
	 */
	struct vram_hookchan *hookchan;
	/*
	 * The pids of workload's processes registered on the channel (those
	 * that started before it opened are not), at most max of them into
	 * pids (may be NULL with max 0). Returns how many there are.
	 */
	size_t (*hook_pids)(struct vram_hookchan *hc, const char *workload, pid_t *pids, size_t max);
	/*
	 * Sends op to the process pid; cb runs once, later, from the loop,
	 * with its answer or an error. *ret_req (may be NULL) is valid until
	 * cb runs or it is cancelled. Returns 0, -ENOENT (pid is not
	 * connected), -EBUSY (a command to it is in flight) or -errno.
	 */
	int (*hook_send)(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op, unsigned flags,
			 vram_hookchan_done_cb cb, void *arg, struct vram_hookchan_req **ret_req);
	/*
	 * hook_send with a path: the park file for VRAM_HOOKCHAN_PARK (at most
	 * 255 bytes, borrowed for the call), NULL for other ops. Returns as
	 * hook_send, or -EOPNOTSUPP where the channel cannot send a path.
	 */
	int (*hook_send_path)(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op,
			      unsigned flags, const char *path, vram_hookchan_done_cb cb, void *arg,
			      struct vram_hookchan_req **ret_req);
	/*
	 * true when pid's hook moves with a group (VRAM_HOOK_HELLO_GROUP):
	 * the hook engine then offloads and restores a workload of several
	 * processes in phases (gate all, copy; restore all, open all). NULL:
	 * never.
	 */
	bool (*hook_group)(struct vram_hookchan *hc, pid_t pid);
	/* Forgets a request: its cb is not called. Accepts NULL. */
	void (*hook_cancel)(struct vram_hookchan_req *req);
	/*
	 * Overlapped swaps (may be NULL: none): whether pid's hook takes the
	 * flags VRAM_HOOKCHAN_PROGRESS and _GRANTED; progress for an offload
	 * sent with PROGRESS; the grant of a restore sent with GRANTED (its
	 * done cb may run before hook_grant returns, when the process is gone).
	 */
	bool (*hook_can_swap)(struct vram_hookchan *hc, pid_t pid);
	void (*hook_on_progress)(struct vram_hookchan_req *req, vram_hookchan_progress_cb cb, void *arg);
	int (*hook_grant)(struct vram_hookchan_req *req, const uint64_t bytes[VRAM_HOOKCHAN_MAX_DEVICES],
			  bool cancel);
	void *ctx;                    /* passed back to the functions below */
	/*
	 * Stops every process of w (SIGTERM to its group, SIGKILL after the
	 * grace) and completes job once all are reaped. Returns 0 or -errno.
	 */
	int (*stop_processes)(void *ctx, struct vram_workload *w, struct vram_job *job);
	/*
	 * Spawns w's processes on the GPUs assigned in w->instances and
	 * completes job once all are healthy (or failed). Returns 0 or -errno.
	 */
	int (*spawn_processes)(void *ctx, struct vram_workload *w, struct vram_job *job);
	/*
	 * The park file of w's process pid into buf (size bytes):
	 * <park_dir>/<workload>-<pid>.park, the directory made (0700) on first
	 * use. Returns 0, or -errno (-ENAMETOOLONG: over size, or the hook's
	 * 255 bytes) with the reason in buf.
	 */
	int (*park_path)(void *ctx, const struct vram_workload *w, pid_t pid, char *buf, size_t size);
};

enum vram_job_kind {
	VRAM_JOB_OFFLOAD = 0,
	VRAM_JOB_RESTORE,
	VRAM_JOB_PARK,    /* an offloaded workload's host copy to disk (engine park) */
};

struct vram_job;
typedef void (*vram_job_done_cb)(struct vram_job *job, void *arg);

struct vram_job {
	enum vram_job_kind kind;
	const struct vram_engine *engine;     /* borrowed */
	struct vram_workload *w;              /* borrowed; outlives the job */
	const struct vram_engine_host *host;  /* borrowed */
	bool from_disk;          /* VRAM_JOB_RESTORE of a parked workload (set before the start) */
	/*
	 * Overlapped swaps, set before the start for an engine whose
	 * can_overlap said yes. progress (OFFLOAD): freed counts the bytes
	 * given back so far, and on_progress(job, done_arg) runs from the loop
	 * each time it grows; the offload never takes memory back, so a
	 * failure after some went leaves w offloaded (still_offloaded).
	 * granted (RESTORE): the restore creates device memory only within
	 * what vram_job_grant allows.
	 */
	bool progress;
	bool granted;
	uint64_t freed;
	void (*on_progress)(struct vram_job *job, void *arg);

	/* results, set by vram_job_complete() */
	bool completed;
	int error;               /* 0 or -errno */
	bool process_lost;       /* the process is gone or unusable (restore half done) */
	bool still_offloaded;    /* a failed restore left the process intact and offloaded (or,
				    from_disk, parked); a failed offload with progress left it
				    offloaded */
	uint64_t bytes;          /* bytes moved */
	uint64_t host_bytes;     /* OFFLOAD: host RAM the copy takes, where the engine measures it
				    (checkpoint: the processes' resident growth); 0 = not measured */
	double seconds;          /* wall time from start to completion */
	char message[512];

	/* engine-private state: the engine frees it before it completes the job, or in cancel() */
	void *priv;

	/* owner's */
	vram_job_done_cb done;
	void *done_arg;
	struct event *done_ev;   /* delivers the completion on the next loop turn */
	uint64_t started_ms;     /* monotonic ms */
};

struct vram_engine {
	const char *name;
	enum vram_engine_kind kind;
	/* The process lives on while offloaded (sim, hook, checkpoint); false for restart. */
	bool keeps_process;
	/*
	 * A kept process may come back on other GPUs of the same model than it
	 * left (checkpoint, sim). An engine that keeps its process and cannot
	 * move (hook) is restored onto the GPUs it left; one that keeps no
	 * process (restart) starts wherever the planner puts it.
	 */
	bool can_move;
	/* Whether this engine can take w on this host; if not, why (one line). */
	bool (*supports)(const struct vram_workload *w, const struct vram_engine_host *host,
			 char *why, size_t why_size);
	/* Begins moving w's GPU memory out. Returns 0 (completion follows) or -errno. */
	int (*offload)(struct vram_workload *w, struct vram_job *job);
	/*
	 * Begins bringing w back onto the GPUs now assigned in w->instances
	 * (the planner may have picked others than before, for engines that
	 * can move). Returns 0 (completion follows) or -errno.
	 */
	int (*restore)(struct vram_workload *w, struct vram_job *job);
	/*
	 * Begins writing offloaded w's host copy to disk and freeing that host
	 * memory; the process lives on and restore brings it back. A failure
	 * that lost nothing leaves w offloaded (in host RAM); the bytes of a
	 * failed park are those that did reach disk. NULL: this engine cannot
	 * park. Returns 0 (completion follows) or -errno.
	 */
	int (*park)(struct vram_workload *w, struct vram_job *job);
	/* Abandons the job's work and frees job->priv; no completion follows. May be NULL. */
	void (*cancel)(struct vram_job *job);
	/*
	 * Overlapped swaps (NULL: this engine cannot): whether w's offload can
	 * report progress and its restore take grants (one process on one GPU
	 * whose hook speaks protocol 4), and the grant of a granted restore
	 * job: bytes of device memory it may create in all, or cancel. The
	 * job may complete before grant returns.
	 */
	bool (*can_overlap)(const struct vram_workload *w, const struct vram_engine_host *host);
	int (*grant)(struct vram_job *job, uint64_t bytes, bool cancel);
};

extern const struct vram_engine vram_engine_checkpoint;
extern const struct vram_engine vram_engine_hook;
extern const struct vram_engine vram_engine_hook_checkpoint;
extern const struct vram_engine vram_engine_restart;
extern const struct vram_engine vram_engine_sim;

/* Every engine in this build, NULL-terminated. */
extern const struct vram_engine *const vram_engines[];

/* By kind; NULL when this build has none of that kind. */
const struct vram_engine *vram_engine_find(enum vram_engine_kind kind);

/*
 * Chooses the engine for w: the configured one, or for `offload: auto` hook,
 * then checkpoint, then restart (the sim engine on simulated GPUs). Never
 * NULL: restart takes anything. Writes why it was chosen (for status).
 */
const struct vram_engine *vram_engine_select(const struct vram_workload *w,
					     const struct vram_engine_host *host, char *why,
					     size_t why_size);

/*
 * Creates a job (caller frees with vram_job_free, or it is freed by
 * vram_job_cancel). done(job, arg) is called once from the loop after the
 * engine completes it. Returns NULL on out of memory.
 */
struct vram_job *vram_job_new(enum vram_job_kind kind, const struct vram_engine *engine,
			      struct vram_workload *w, const struct vram_engine_host *host,
			      vram_job_done_cb done, void *done_arg);
/* Calls the engine's offload, restore or park. Returns its result (-EOPNOTSUPP: no park). */
int vram_job_start(struct vram_job *job);
/*
 * For engines: records the result and schedules done() for the next loop
 * turn. A second call is ignored. message may be NULL.
 */
void vram_job_complete(struct vram_job *job, int error, uint64_t bytes, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The grant of a granted restore (engine grant). Returns 0, -EOPNOTSUPP or -errno. */
int vram_job_grant(struct vram_job *job, uint64_t bytes, bool cancel);
/* Stops the engine's work (engine cancel), and frees the job; done() is not called. */
void vram_job_cancel(struct vram_job *job);
void vram_job_free(struct vram_job *job); /* accepts NULL */

/* Bytes w's instances hold on GPUs when resident. */
uint64_t vram_workload_gpu_bytes(const struct vram_workload *w);

/*
 * Sim engine tuning: the simulated copy rate (bytes per second, > 0) for
 * offload and restore. Default 50 GB/s, like the hook on PCIe gen5.
 */
void vram_engine_sim_set_rate(uint64_t offload_bytes_per_s, uint64_t restore_bytes_per_s);
/*
 * The simulated disk: parks and restores from parked take bytes / rate
 * (bytes per second, > 0; default 2 GB/s, like a virtio disk). With
 * fail_restore, every restore from parked fails as a checksum mismatch
 * would (for tests: the workload is failed and restarted cold).
 */
void vram_engine_sim_set_disk(uint64_t bytes_per_s, bool fail_restore);

#endif
