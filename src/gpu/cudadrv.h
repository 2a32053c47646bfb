/* SPDX-License-Identifier: MIT */
/*
 * The CUDA driver as the daemon uses it: libcuda.so.1 opened with dlopen at
 * run time (no link-time dependency, so vramd starts on a machine without the
 * driver and says what is missing), device enumeration by UUID, and the
 * driver's process checkpoint API (cuCheckpointProcess*, driver >= 550) that
 * the `checkpoint` offload engine is built on.
 *
 * The checkpoint calls block for seconds (1.8 GB/s out, 4.2 GB/s in on an
 * H100): call them from the worker pool, never from the event loop. The
 * handle is read-only once opened, so several workers may share it.
 *
 * The module also finds a workload's processes: the process tree under the
 * supervised pid, read from /proc, narrowed to the processes that hold GPU
 * memory.
 *
 * Self-contained on purpose: it needs only libc and libdl, so the GPU test
 * tools compile it alone (gcc -Isrc src/gpu/cudadrv.c ... -ldl) on machines
 * without the daemon's libraries. The few driver types it needs are declared
 * here with the driver's layouts (cuda.h 13.0).
 */
#ifndef VRAM_CUDADRV_H
#define VRAM_CUDADRV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VRAM_CUDA_MAX_DEVICES 64
#define VRAM_CUDA_NAME_MAX 96
#define VRAM_CUDA_UUID_STR_MAX 48 /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" + NUL */
#define VRAM_CUDA_MSG_MAX 512

/* CUresult values the module tells apart (cuda.h). */
enum {
	VRAM_CU_SUCCESS = 0,
	VRAM_CU_ERROR_INVALID_VALUE = 1,
	VRAM_CU_ERROR_OUT_OF_MEMORY = 2,
	VRAM_CU_ERROR_NOT_INITIALIZED = 3,
	VRAM_CU_ERROR_NO_DEVICE = 100,
	VRAM_CU_ERROR_INVALID_DEVICE = 101,
	VRAM_CU_ERROR_OPERATING_SYSTEM = 304,
	VRAM_CU_ERROR_ILLEGAL_STATE = 401,
	VRAM_CU_ERROR_NOT_FOUND = 500,
	VRAM_CU_ERROR_NOT_READY = 600,
	VRAM_CU_ERROR_NOT_PERMITTED = 800,
	VRAM_CU_ERROR_NOT_SUPPORTED = 801,
	VRAM_CU_ERROR_TIMEOUT = 909,
	VRAM_CU_ERROR_UNKNOWN = 999,
};

/* CUprocessState. */
enum vram_cuda_proc_state {
	VRAM_CUDA_PROC_RUNNING = 0,      /* normal */
	VRAM_CUDA_PROC_LOCKED = 1,       /* CUDA calls block */
	VRAM_CUDA_PROC_CHECKPOINTED = 2, /* GPU memory in host memory, GPU resources released */
	VRAM_CUDA_PROC_FAILED = 3,       /* an uncorrectable error during checkpoint/restore */
};

/* CUuuid. */
struct vram_cu_uuid {
	unsigned char bytes[16];
};

/* CUcheckpointLockArgs. */
struct vram_cu_checkpoint_lock_args {
	unsigned int timeout_ms; /* ms; 0 = wait forever */
	unsigned int reserved0;
	uint64_t reserved1[7];
};

/* CUcheckpointCheckpointArgs and CUcheckpointUnlockArgs. */
struct vram_cu_checkpoint_args {
	uint64_t reserved[8];
};

/* CUcheckpointGpuPair. */
struct vram_cu_gpu_pair {
	struct vram_cu_uuid old_uuid; /* GPU the process was checkpointed on */
	struct vram_cu_uuid new_uuid; /* GPU to restore it onto */
};

/* CUcheckpointRestoreArgs. */
struct vram_cu_checkpoint_restore_args {
	struct vram_cu_gpu_pair *gpu_pairs;
	unsigned int gpu_pairs_count;
	char reserved[52 - sizeof(struct vram_cu_gpu_pair *)];
	uint64_t reserved1;
};

struct vram_cuda_device {
	int ordinal;                          /* CUdevice ordinal, as this process sees it */
	char name[VRAM_CUDA_NAME_MAX];        /* "NVIDIA H100 80GB HBM3" */
	struct vram_cu_uuid uuid;
	char uuid_str[VRAM_CUDA_UUID_STR_MAX]; /* "GPU-…", as NVML and CUDA_VISIBLE_DEVICES write it */
};

/* What a failed driver call means, for the status line and the log. */
struct vram_cuda_error {
	int cu_result;                /* the CUresult, 0 when the failure is not the driver's */
	char message[VRAM_CUDA_MSG_MAX];
};

/* The operations whose errors are explained differently. */
enum vram_cuda_op {
	VRAM_CUDA_OP_GET_STATE = 0,
	VRAM_CUDA_OP_LOCK,
	VRAM_CUDA_OP_CHECKPOINT,
	VRAM_CUDA_OP_RESTORE,
	VRAM_CUDA_OP_UNLOCK,
	VRAM_CUDA_OP_RESTORE_TID,
	VRAM_CUDA_OP_DEVICES,
};

struct vram_cudadrv; /* opaque: the opened driver */

/*
 * Opens the driver: path, else $VRAM_LIBCUDA, else "libcuda.so.1"; resolves
 * the symbols and calls cuInit(0). Returns 0 and sets *ret (free with
 * vram_cudadrv_close), or -errno with the reason in why:
 *   -ENOENT  the library does not load ("libcuda.so.1: cannot open shared object file …"),
 *   -ENOSYS  a required symbol is missing (named in why),
 *   -ENODEV  cuInit failed (no device, driver/kernel mismatch; the CUresult is named).
 * A driver older than 550 opens; vram_cudadrv_has_checkpoint() is then false.
 */
int vram_cudadrv_open(const char *path, struct vram_cudadrv **ret, char *why, size_t why_size);
/* Accepts NULL. */
void vram_cudadrv_close(struct vram_cudadrv *d);

/* cuDriverGetVersion, e.g. 13000 for 13.0. */
int vram_cudadrv_driver_version(const struct vram_cudadrv *d);
/* True when all cuCheckpointProcess* symbols resolved. */
bool vram_cudadrv_has_checkpoint(const struct vram_cudadrv *d);

/*
 * Lists the devices this process sees (all of the machine's unless
 * CUDA_VISIBLE_DEVICES narrows it: the daemon must not set it for itself).
 * Fills up to max entries and sets *ret_n. Returns 0 or -errno (err filled).
 */
int vram_cudadrv_devices(const struct vram_cudadrv *d, struct vram_cuda_device *ret_devs, size_t max,
			 size_t *ret_n, struct vram_cuda_error *err);

/*
 * Checkpoint API wrappers. Each blocks until the driver answers; each returns
 * 0 or -errno with err filled (see vram_cudadrv_map_error):
 *   -EOPNOTSUPP  MPS client, UVM or IPC memory, or the driver has no checkpoint support;
 *   -ETIMEDOUT   lock only: the work did not drain in timeout_ms, the process goes on running;
 *   -EBUSY       the process is not in the state the call needs;
 *   -ESRCH       not a CUDA process (or gone);
 *   -EINVAL      bad arguments (a restore whose GPU pairs are not a full permutation);
 *   -EIO         anything else (the CUresult is named in the message).
 */
int vram_cudadrv_get_state(const struct vram_cudadrv *d, pid_t pid, enum vram_cuda_proc_state *ret_state,
			   struct vram_cuda_error *err);
/* timeout_ms 0 waits forever. */
int vram_cudadrv_lock(const struct vram_cudadrv *d, pid_t pid, unsigned timeout_ms,
		      struct vram_cuda_error *err);
int vram_cudadrv_checkpoint(const struct vram_cudadrv *d, pid_t pid, struct vram_cuda_error *err);
/* pairs NULL / n_pairs 0: back onto the GPUs it ran on. pairs is borrowed for the call. */
int vram_cudadrv_restore(const struct vram_cudadrv *d, pid_t pid, const struct vram_cu_gpu_pair *pairs,
			 size_t n_pairs, struct vram_cuda_error *err);
int vram_cudadrv_unlock(const struct vram_cudadrv *d, pid_t pid, struct vram_cuda_error *err);
int vram_cudadrv_restore_tid(const struct vram_cudadrv *d, pid_t pid, int *ret_tid,
			     struct vram_cuda_error *err);

/*
 * Turns a CUresult of op on pid into -errno and a message for people (always
 * written to err when err is not NULL). timeout_ms is the lock timeout, used
 * in the lock's message. Pure: no driver needed.
 *   NOT_SUPPORTED → -EOPNOTSUPP "… the process is an MPS client or uses UVM/IPC memory: use the hook or the restart engine"
 *   NOT_READY / TIMEOUT on lock → -ETIMEDOUT "… did not drain within N ms; the process was left running"
 */
int vram_cudadrv_map_error(int cu_result, enum vram_cuda_op op, pid_t pid, unsigned timeout_ms,
			   struct vram_cuda_error *err);

/* "CUDA_ERROR_NOT_SUPPORTED" for the results above, else "CUDA error N" written into buf. */
const char *vram_cudadrv_result_name(int cu_result, char *buf, size_t size);
/* "running", "locked", "checkpointed", "failed", "unknown". */
const char *vram_cuda_proc_state_name(enum vram_cuda_proc_state s);

/* Formats a UUID as "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (size >= 41). */
void vram_cuda_uuid_format(const struct vram_cu_uuid *u, char *buf, size_t size);
/* Parses that form (the "GPU-" prefix is optional). Returns 0 or -EINVAL. */
int vram_cuda_uuid_parse(const char *s, struct vram_cu_uuid *ret);

/*
 * Builds the GPU pairs for restoring a process that was checkpointed on
 * GPUs from[i] onto GPUs to[i] (indices into devs, which lists every GPU of
 * the machine). The driver wants a full permutation of the machine's GPUs: the
 * result maps from[i] → to[i], each GPU taken over but not vacated goes to a
 * vacated one (a plain move a→b becomes the swap {a→b, b→a}), and every other
 * GPU maps to itself. Writes devs-count pairs to ret_pairs (max entries) and
 * sets *ret_n. Returns 0, or -EINVAL (an index out of range, a GPU twice in
 * from or to, a move between different GPU models; why says which) or -E2BIG.
 */
int vram_cudadrv_move_pairs(const struct vram_cuda_device *devs, size_t n_devs, const unsigned *from,
			    const unsigned *to, size_t n_moves, struct vram_cu_gpu_pair *ret_pairs,
			    size_t max, size_t *ret_n, char *why, size_t why_size);

/*
 * Lists root and its descendants (children, recursively) from /proc, root
 * first, then breadth first. Fills up to max pids and sets *ret_n. Returns 0,
 * -ESRCH (root does not exist), -E2BIG (more than max; the first max are
 * filled) or -errno reading /proc.
 */
int vram_proc_tree(pid_t root, pid_t *ret_pids, size_t max, size_t *ret_n);

/*
 * Keeps, in place and in order, the pids that are also in gpu_pids (the
 * processes NVML reports on the workload's GPUs). Returns the new count.
 */
size_t vram_proc_filter(pid_t *pids, size_t n, const pid_t *gpu_pids, size_t n_gpu);

/*
 * Keeps, in place, the pids that the driver knows as CUDA processes (its
 * checkpoint state can be read): the fallback when NVML cannot list
 * processes (pid namespaces, old drivers). Returns the new count.
 */
size_t vram_cudadrv_filter_cuda(const struct vram_cudadrv *d, pid_t *pids, size_t n);

#endif
