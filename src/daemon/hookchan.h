/* SPDX-License-Identifier: MIT */
/*
 * The daemon side of the hook channel: a Unix socket (state_dir/hook.sock,
 * mode 0600) on the event loop to which libvram.so connects from inside each
 * hooked process (src/proto/hook_proto.h). Every process registers with its
 * pid and workload name (VRAM_WORKLOAD), so a workload of several processes
 * is offloaded and restored as a whole by the hook engine. The channel keeps
 * each process's last usage (bytes, non-movable bytes, cap, and from
 * protocol version 3 the host memory it holds: pinned, kept, parked), sends
 * OFFLOAD, RESTORE, PARK and DROP_HOST commands and delivers their results
 * through callbacks.
 *
 * A process that disconnects stays listed (connected: false) until it exits
 * or connects again; a command in flight to it fails at once.
 *
 * A process that started before the channel opened (a survivor of a vramd
 * that was killed or restarted, whose hook reconnected) is external: it is
 * listed under its workload but is not one of the workload's processes for
 * vram_hookchan_pids() and vram_hookchan_usage(), so the workload's engine
 * never touches it; it is offloaded and restored by pid.
 */
#ifndef VRAM_HOOKCHAN_H
#define VRAM_HOOKCHAN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/hookcmd.h" /* the command and its result, which the hook engines share */

struct event_base;

#define VRAM_HOOKCHAN_MAX_CONNS 256      /* hooked processes connected at once */
#define VRAM_HOOKCHAN_MAX_SHARED_CONNS 64 /* of other users' processes on the shared socket, apart */
#define VRAM_HOOKCHAN_MAX_PROCS 512      /* processes listed (connected or not) */
#define VRAM_HOOKCHAN_TIMEOUT_MS 600000  /* ms an offload or restore may take */
#define VRAM_HOOKCHAN_NAME_MAX 64        /* bytes of a workload name, NUL included (the protocol's) */
#define VRAM_HOOKCHAN_PATH_MAX 256       /* bytes of a park file's path, NUL included (the protocol's) */

/* A hooked process as last reported. */
struct vram_hookchan_proc_info {
	pid_t pid;
	char workload[VRAM_HOOKCHAN_NAME_MAX];
	bool connected;
	unsigned state;          /* enum vram_hook_state */
	unsigned ndev;
	uint64_t used;           /* bytes charged on all its devices, context included */
	uint64_t resident;       /* bytes on the devices now */
	uint64_t nonmovable;     /* bytes an offload cannot move */
	uint64_t cap;            /* bytes, the largest per-device cap; 0 = none */
	bool limit_invalid;      /* its VRAM_MEMORY_LIMIT did not parse: it runs uncapped */
	bool external;           /* started before the channel opened: not spawned by this vramd */
	uint64_t host_pinned, host_kept, parked; /* bytes: pinned host memory it holds, the part of
						  * it kept after a restore, bytes in its park file */
	bool host_reported;      /* false for a hook older than protocol 3: the three above are unknown (0) */
	unsigned version;        /* protocol version of its hook */
	bool premade_asked;      /* it was asked to make its host buffers ahead (vram_hookchan_mark_premade) */
};

/*
 * Listens on path (an old socket there is replaced; mode 0600). base is
 * borrowed and outlives the channel. Returns 0 or -errno.
 */
int vram_hookchan_new(struct event_base *base, const char *path, struct vram_hookchan **ret);
/*
 * Whether a process of uid may use the shared socket: called with workload
 * NULL when it connects (does uid have anything to register for?), and
 * with the workload its HELLO names (VRAM_WORKLOAD). Returns whether to
 * accept.
 */
typedef bool (*vram_hookchan_authorize_cb)(uid_t uid, const char *workload, void *arg);

/*
 * Listens also on path, mode 0666 (an old socket there is replaced), for
 * hooked processes that run as other users than vramd's: hook.sock is in
 * the state directory, which is vramd's alone, and stays so. Such a
 * process's kernel credentials (SO_PEERCRED), not the socket's mode,
 * decide what it may do: one of vramd's own user or root is served as on
 * hook.sock; one of any other uid is closed unless authorize(uid, NULL)
 * holds, and its HELLO is refused unless authorize(uid, workload) does, so
 * that it can register only for what authorize grants (its user's own
 * ad-hoc workloads), never for another user's or a configured workload. At
 * most VRAM_HOOKCHAN_MAX_SHARED_CONNS such connections at once, apart from
 * those of vramd's own processes. authorize and arg are borrowed and
 * outlive hc. Once listening, another call returns 0 and changes nothing.
 * Returns 0 or -errno.
 */
int vram_hookchan_listen_shared(struct vram_hookchan *hc, const char *path,
				vram_hookchan_authorize_cb authorize, void *arg);
/* The shared socket's path (borrowed, valid while hc lives), NULL until it listens. */
const char *vram_hookchan_shared_path(const struct vram_hookchan *hc);

/* Closes every connection and removes the socket files. Accepts NULL. */
void vram_hookchan_free(struct vram_hookchan *hc);
/* The socket path (borrowed, valid while hc lives). */
const char *vram_hookchan_path(const struct vram_hookchan *hc);

/*
 * The pids of workload's connected processes that are not external, at most
 * max, in registration order. Returns how many there are (may exceed max).
 */
size_t vram_hookchan_pids(struct vram_hookchan *hc, const char *workload, pid_t *pids, size_t max);
/* true when pid is connected and its hook takes part in group moves (VRAM_HOOK_HELLO_GROUP). */
bool vram_hookchan_group(struct vram_hookchan *hc, pid_t pid);
/*
 * Claims the process group pgid as this vramd's: its processes are not
 * external even though they started before the channel opened (a workload
 * process taken back from the previous vramd, mgr_adopt.c). Applies to the
 * processes registered already and to those that register later, until
 * vram_hookchan_unclaim(pgid). At most VRAM_HOOKCHAN_MAX_PROCS groups;
 * beyond that the claim is dropped with a warning. Accepts hc NULL.
 */
void vram_hookchan_claim(struct vram_hookchan *hc, pid_t pgid);
void vram_hookchan_unclaim(struct vram_hookchan *hc, pid_t pgid);
/* The same for workload's connected external processes. */
size_t vram_hookchan_external_pids(struct vram_hookchan *hc, const char *workload, pid_t *pids, size_t max);
/*
 * Sums of workload's connected processes that are not external (bytes used,
 * non-movable bytes). Returns how many processes were counted.
 */
size_t vram_hookchan_usage(struct vram_hookchan *hc, const char *workload, uint64_t *ret_used,
			   uint64_t *ret_nonmovable);
/*
 * Sums of the host memory of workload's connected processes that are not
 * external, as their hooks last reported it (bytes): pinned host memory,
 * the part of it kept after a restore (droppable), bytes in park files.
 * Processes of a hook older than protocol 3 do not report these and are
 * left out. Any of the outputs may be NULL. Returns how many processes
 * were counted.
 */
size_t vram_hookchan_host(struct vram_hookchan *hc, const char *workload, uint64_t *pinned, uint64_t *kept,
			  uint64_t *parked);
/* The listed process pid into *ret. Returns 0 or -ENOENT. */
int vram_hookchan_proc(struct vram_hookchan *hc, pid_t pid, struct vram_hookchan_proc_info *ret);
/*
 * "running", "offloading", "offloaded", "restoring", "parking", "parked" for
 * an enum vram_hook_state, "unknown" for anything else (static string).
 */
const char *vram_hookchan_state_name(unsigned state);
/*
 * Every listed process of workload, as a JSON array of {pid, connected,
 * state, devices, used_bytes, resident_bytes, nonmovable_bytes, cap_bytes,
 * limit_invalid, external, host_pinned_bytes, host_kept_bytes,
 * parked_bytes} (the last three null for a hook older than protocol 3)
 * (new reference; NULL on out of memory).
 */
json_t *vram_hookchan_workload_json(struct vram_hookchan *hc, const char *workload);
/* Every listed process of every workload, the same objects with "workload" added. */
json_t *vram_hookchan_json(struct vram_hookchan *hc);
/* True when a process of workload reported an unparsable VRAM_MEMORY_LIMIT. */
bool vram_hookchan_limit_invalid(struct vram_hookchan *hc, const char *workload);
/*
 * The warning for workload's status (new reference): a JSON string naming
 * the first process whose VRAM_MEMORY_LIMIT did not parse, its text and how
 * many more did the same; JSON null when none did; NULL on out of memory.
 */
json_t *vram_hookchan_warning_json(struct vram_hookchan *hc, const char *workload);

/*
 * Sends op to the connected process pid (flags: VRAM_HOOK_OFFLOAD_*). cb
 * runs once, later, from the loop, with its answer or an error (the process
 * went away, timeout). ret_req, if not NULL, receives a handle valid until
 * cb runs or it is cancelled. path (borrowed for the call) is the park file
 * for VRAM_HOOKCHAN_PARK: an absolute path of at most
 * VRAM_HOOKCHAN_PATH_MAX - 1 bytes, which the hook creates (it must not
 * exist); NULL for every other op. Returns 0, -ENOENT (no such connected
 * process), -EBUSY (a command is already in flight to it), -EOPNOTSUPP (PARK
 * or DROP_HOST to a hook older than protocol 3, which knows neither),
 * -EINVAL (a PARK without a valid path, a path with another op) or -errno.
 */
int vram_hookchan_send_path(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op, unsigned flags,
			    const char *path, vram_hookchan_done_cb cb, void *arg,
			    struct vram_hookchan_req **ret_req);
/*
 * Overlapped swaps: progress (may be NULL) runs for each PROGRESS the
 * offload req reports (sent with VRAM_HOOKCHAN_PROGRESS), until it is
 * answered or cancelled.
 */
void vram_hookchan_on_progress(struct vram_hookchan_req *req, vram_hookchan_progress_cb progress, void *arg);
/*
 * Lets the restore req (sent with VRAM_HOOKCHAN_GRANTED) create up to
 * bytes[d] of device memory on the process's device ordinal d, in all, or
 * with cancel gives it up (it is undone and answered -ECANCELED). Returns 0,
 * -EALREADY (req is not a granted restore in flight) or -errno.
 */
int vram_hookchan_grant(struct vram_hookchan_req *req, const uint64_t bytes[VRAM_HOOKCHAN_MAX_DEVICES],
			bool cancel);
/*
 * Has running process pid make the pinned host buffers of its first offload
 * ahead, in the background, at most limit bytes (protocol 4); cb answers at
 * once with the bytes it will make. Returns as vram_hookchan_send.
 */
int vram_hookchan_prepare_host(struct vram_hookchan *hc, pid_t pid, uint64_t limit, vram_hookchan_done_cb cb,
			       void *arg);
/* Notes that process pid was asked to make its host buffers ahead: once per process. */
void vram_hookchan_mark_premade(struct vram_hookchan *hc, pid_t pid);
/* Whether the hook of process pid takes VRAM_HOOKCHAN_PROGRESS and GRANTED (protocol 4). */
bool vram_hookchan_can_swap(struct vram_hookchan *hc, pid_t pid);

/* vram_hookchan_send_path() without a path (every op but PARK). */
int vram_hookchan_send(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op, unsigned flags,
		       vram_hookchan_done_cb cb, void *arg, struct vram_hookchan_req **ret_req);
/* Forgets a request: cb is not called. Accepts NULL. */
void vram_hookchan_cancel(struct vram_hookchan_req *req);

#endif
