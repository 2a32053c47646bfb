/* SPDX-License-Identifier: MIT */
/*
 * NVIDIA MPS for workloads with `share: mps`: several worker processes share
 * one GPU through one MPS server, each capped in memory and optionally in
 * compute.
 *
 * vramd runs one MPS control daemon (`nvidia-cuda-mps-control -d`) per GPU
 * set, with its pipe and log directories under
 *   <state_dir>/mps/gpu<i>[-<j>…]/{pipe,log}
 * and CUDA_VISIBLE_DEVICES set to that set for the daemon. Clients get the
 * same pipe and log directories, CUDA_MPS_PINNED_DEVICE_MEM_LIMIT
 * ("0=2G,1=2G": device indices as the client sees them through the server,
 * 0..n-1), CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, and the daemon's own
 * CUDA_VISIBLE_DEVICES: without it, frameworks that count GPUs through NVML
 * (PyTorch) see every GPU of the machine and ask the server for devices it
 * does not serve (seen on 2 x H200: "device=1, num_gpus=1").
 *
 * The control daemon is started on the first client of its GPU set and told
 * to quit (`echo quit | nvidia-cuda-mps-control`) when the last client is
 * gone. Its pid (from nvidia-cuda-mps-control.pid in the pipe directory) is
 * watched: if it dies while clients use it, each client gets a "crashed"
 * event with the tail of the MPS logs.
 *
 * Control daemons outlive vramd (a crash, SIGKILL, an upgrade in place), as
 * the workload processes that use them do. vram_mps_daemons lists them for
 * the state file; the next vramd takes each back with vram_mps_adopt
 * instead of starting a second one on the same pipe directory, attaches the
 * clients of the processes it took back (vram_mps_client_new, then at once
 * vram_mps_client_set_pid: nothing is started and nothing is sent to the
 * daemon, since a running process got its caps from its environment when it
 * started), then calls vram_mps_adopt_done, which makes an adopted daemon
 * without clients quit as one whose last client left. It does the same with
 * a daemon found in a pipe directory of ours that no state file recorded
 * (a crash right after its start, a state file refused), so the caller
 * calls it once at every start, with or without a state file.
 *
 * Everything runs on the event loop without blocking: the control program is
 * spawned, fed its command on stdin, and its exit is watched through a pidfd
 * (a timer where pidfds are missing). The module reaps only the pids it
 * spawned, with waitpid(pid); when the daemon's SIGCHLD reaper gets one of
 * them first, the command's output still decides.
 *
 * The control program is $VRAM_MPS_CONTROL when set, else
 * nvidia-cuda-mps-control found in PATH.
 */
#ifndef VRAM_MPS_H
#define VRAM_MPS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct vram_mps;        /* every MPS control daemon of vramd */
struct vram_mps_client; /* one process (workload instance) that uses MPS */

#define VRAM_MPS_MAX_GPUS 64
#define VRAM_MPS_MSG_MAX 4096

struct vram_mps_options {
	const char *state_dir;       /* borrowed; must exist or be creatable */
	const char *control_path;    /* borrowed; NULL = $VRAM_MPS_CONTROL, else PATH lookup */
	uint64_t command_timeout_ms; /* ms one control command may take; 0 = 10000 */
	uint64_t start_timeout_ms;   /* ms for the control daemon to write its pid file; 0 = 5000 */
};

/*
 * Finds the control program: override, else $VRAM_MPS_CONTROL, else
 * nvidia-cuda-mps-control in PATH. Writes the path to buf. Returns 0 or
 * -ENOENT (with "nvidia-cuda-mps-control not found in PATH" in buf).
 */
int vram_mps_find_control(const char *override, char *buf, size_t size);

/*
 * Creates the MPS manager. It starts nothing yet; a missing control program
 * is reported by vram_mps_available() and when a client asks for MPS.
 * base and the strings in opt are borrowed (state_dir is copied).
 * Returns 0 or -errno.
 */
int vram_mps_new(struct event_base *base, const struct vram_mps_options *opt, struct vram_mps **ret);

/*
 * Tells every control daemon to quit (adopted ones too) and waits for them
 * (on the loop), then calls done(arg) from the loop. Clients still attached
 * get no more events.
 */
void vram_mps_shutdown(struct vram_mps *m, void (*done)(void *arg), void *arg);
/* Frees; control daemons still running are left running. Accepts NULL. */
void vram_mps_free(struct vram_mps *m);

/* True when the control program was found; otherwise why says so. */
bool vram_mps_available(const struct vram_mps *m, char *why, size_t why_size);

/* ---- clients ---- */

enum vram_mps_event {
	VRAM_MPS_READY = 0, /* the control daemon runs: spawn the client now with its env */
	VRAM_MPS_FAILED,    /* the control daemon could not start: message has why and the log tail */
	VRAM_MPS_CRASHED,   /* the control daemon died under running clients: message has the log tail */
};

/*
 * Called from the loop. c is the client the event is about; message is
 * borrowed for the call. After FAILED or CRASHED no further event comes; the
 * caller still frees c.
 */
typedef void (*vram_mps_event_cb)(struct vram_mps_client *c, enum vram_mps_event ev,
				  const char *message, void *arg);

struct vram_mps_client_spec {
	const char *owner;          /* borrowed; shown in status, e.g. "rerank#1" */
	const unsigned *gpus;       /* borrowed; GPU indices of the machine (the set's name) */
	const char *const *gpu_ids; /* borrowed; NULL, or per GPU its UUID for CUDA_VISIBLE_DEVICES of the daemon */
	size_t n_gpus;              /* 1..VRAM_MPS_MAX_GPUS */
	uint64_t mem_limit_bytes;   /* bytes per GPU; 0 = no cap */
	unsigned compute_percent;   /* 1..100; 0 = not set */
};

/*
 * Attaches a client to the control daemon of its GPU set, starting the daemon
 * when none runs. cb gets READY (or FAILED) once, from the loop, never from
 * inside this call. Returns 0 and sets *ret (free with vram_mps_client_free),
 * or, with a message in err:
 *   -ENOENT  the control program is missing,
 *   -EBUSY   a GPU of the set is already served by a daemon for another set,
 *   -EINVAL  bad spec, -ENAMETOOLONG state_dir too long for MPS's sockets, -ENOMEM.
 */
int vram_mps_client_new(struct vram_mps *m, const struct vram_mps_client_spec *spec, vram_mps_event_cb cb,
			void *arg, struct vram_mps_client **ret, char *err, size_t err_size);

/*
 * The variables to add to the client's environment: "KEY=VALUE" strings,
 * NULL-terminated (caller frees with vram_mps_env_free). Returns 0 or -ENOMEM.
 *   CUDA_MPS_PIPE_DIRECTORY, CUDA_MPS_LOG_DIRECTORY,
 *   CUDA_MPS_PINNED_DEVICE_MEM_LIMIT (when capped), CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (when set).
 */
int vram_mps_client_env(const struct vram_mps_client *c, char ***ret_env);
void vram_mps_env_free(char **env);

/*
 * Records the client's pid once spawned (for status). Given before READY
 * came, it says the process already runs (one taken back from a previous
 * vramd): the client gets no READY, as there is nothing to spawn, and still
 * gets CRASHED if its daemon dies. Nothing is sent to the control daemon.
 */
void vram_mps_client_set_pid(struct vram_mps_client *c, pid_t pid);

/*
 * Detaches the client (its process is gone or will not be started). The last
 * client of a daemon makes it quit. Accepts NULL.
 */
void vram_mps_client_free(struct vram_mps_client *c);

/* ---- by hand (vramctl mps start|stop) and status ---- */

/* cb(0 or -errno, message, arg) once from the loop. */
typedef void (*vram_mps_done_cb)(int result, const char *message, void *arg);

/*
 * Starts the control daemon for a GPU set and keeps it running without
 * clients until vram_mps_stop. gpu_ids as in the client spec. Returns 0
 * (cb comes later) or -errno with err, as vram_mps_client_new.
 */
int vram_mps_start(struct vram_mps *m, const unsigned *gpus, const char *const *gpu_ids, size_t n_gpus,
		   vram_mps_done_cb cb, void *arg, char *err, size_t err_size);

/*
 * Quits the control daemon of a GPU set (gpus NULL: every daemon). Refuses
 * with -EBUSY while clients are attached unless force; forced, the clients
 * get CRASHED. -ENOENT when no daemon runs for that set. Returns 0 (cb comes
 * later) or -errno with err.
 */
int vram_mps_stop(struct vram_mps *m, const unsigned *gpus, size_t n_gpus, bool force,
		  vram_mps_done_cb cb, void *arg, char *err, size_t err_size);

/*
 * Asks every running daemon for its servers (get_server_list) and their
 * clients (get_client_list) and keeps the answers for status. cb(0, …) once
 * from the loop when all answered. Returns 0 or -errno.
 */
int vram_mps_refresh(struct vram_mps *m, vram_mps_done_cb cb, void *arg);

/*
 * Status (new reference; NULL on out of memory):
 * {"available": bool, "control": path|null, "why": str (when not available),
 *  "daemons": [{"gpus": [0], "state": "starting|running|quitting|failed|crashed",
 *               "control_pid": int|null, "pipe_dir": str, "log_dir": str,
 *               "manual": bool, "servers": [{"pid": int, "clients": [pid…]}],
 *               "refreshed": bool, "error": str (failed/crashed), "log_tail": str (failed/crashed),
 *               "clients": [{"owner": str, "pid": int|null, "mem_limit": "0=2G", "compute_percent": int|null}]}]}
 */
json_t *vram_mps_status_json(const struct vram_mps *m);

/*
 * One client's part of the status, for its workload (new reference; NULL on
 * out of memory):
 * {"owner": str, "pid": int|null, "gpus": [0], "daemon": "starting|running|…",
 *  "control_pid": int|null, "server_pid": int|null (from the last refresh),
 *  "mem_limit": "0=2G"|null, "compute_percent": int|null}
 */
json_t *vram_mps_client_status_json(const struct vram_mps_client *c);

/*
 * Formats CUDA_MPS_PINNED_DEVICE_MEM_LIMIT's value for n_gpus devices as the
 * client sees them: "0=2G,1=2G" (whole GiB), else MiB ("0=1536M"). Returns 0
 * or -E2BIG.
 */
int vram_mps_format_mem_limit(uint64_t bytes, size_t n_gpus, char *buf, size_t size);

/*
 * The last size-1 bytes (at most) of control.log and server.log of a log
 * directory, each under a "==> file <==" line. Returns the length written.
 */
size_t vram_mps_log_tail(const char *log_dir, char *buf, size_t size);

/* ---- control daemons of a previous vramd ---- */

/* A running control daemon, for the state file. */
struct vram_mps_daemon_info {
	char pipe_dir[4096];   /* its CUDA_MPS_PIPE_DIRECTORY */
	pid_t pid;             /* the control daemon's pid (from its pid file) */
	uint64_t start_ticks;  /* its start time (src/common/proc.h vram_proc_start_ticks); 0 unknown */
};
/* Up to max running control daemons into out; returns how many there are. */
size_t vram_mps_daemons(const struct vram_mps *m, struct vram_mps_daemon_info *out, size_t max);
/*
 * Takes back a control daemon a previous vramd started: pipe_dir must be one
 * this module would use (under <state_dir>/mps/, its GPU set is read from
 * the directory name), pid alive with the same start ticks and matching the
 * pid file in pipe_dir. It is then this module's running daemon for that GPU
 * set: watched as usual, clients attach to it without a start. Returns 0,
 * -ESRCH (gone or another process), -EINVAL (not a pipe directory of ours)
 * or -errno, with one sentence in err.
 */
int vram_mps_adopt(struct vram_mps *m, const struct vram_mps_daemon_info *d, char *err, size_t err_size);
/*
 * Adoption is over: an adopted daemon that no client attached to is told to
 * quit, as one whose last client left.
 */
void vram_mps_adopt_done(struct vram_mps *m);

/*
 * The daemon's SIGCHLD reaper may hand over the status of a pid it reaped;
 * returns true when it was one of this module's commands.
 */
bool vram_mps_child_reaped(struct vram_mps *m, pid_t pid, int wait_status);

#endif
