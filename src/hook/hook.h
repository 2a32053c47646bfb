/* SPDX-License-Identifier: MIT */
/*
 * Internals of libvram.so shared by its modules: the table of real driver
 * entry points, the wrappers' common helpers, accounting, the gate and the
 * offload engine. Nothing here is exported; the only exported symbols are the
 * cu* wrappers and dlsym (see libvram.map).
 *
 * Modules: interpose.c (symbol resolution, dlsym, cuGetProcAddress, plain
 * gated wrappers, log), alloc.c (allocations and VMM tracking), pool.c
 * (stream-ordered allocations and pools on movable memory), ipc.c (legacy
 * CUDA IPC on hook memory), limit.c
 * (caps, cuMemGetInfo), suspend.c (gate, offload, restore, park, drop of
 * host buffers), park.c (the park file's I/O), chan.c (vramd channel and
 * the per-process control socket).
 */
#ifndef VRAM_HOOK_H
#define VRAM_HOOK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hook/cuda_api.h"

#define VRAM_HOOK_EXPORT __attribute__((visibility("default")))
#define VRAM_HOOK_MAX_DEVICES 16
#define VRAM_HOOK_MAX_ACCESS 8

#define vram_hook_likely(x) __builtin_expect(!!(x), 1)
#define vram_hook_unlikely(x) __builtin_expect(!!(x), 0)

/*
 * Every entry point the hook exports and wraps. A wrapper is handed out in
 * place of the real function only when the driver returned exactly the
 * function of that name.
 */
#define VRAM_HOOK_WRAPPED(X) \
	X(cuInit) X(cuGetProcAddress) X(cuGetProcAddress_v2) \
	X(cuMemGetInfo_v2) X(cuDeviceTotalMem_v2) \
	X(cuDevicePrimaryCtxRetain) X(cuCtxCreate_v2) X(cuCtxCreate_v4) X(cuCtxDestroy_v2) \
	X(cuMemAlloc_v2) X(cuMemAllocPitch_v2) X(cuMemFree_v2) X(cuMemAllocManaged) \
	X(cuArrayCreate_v2) X(cuArrayDestroy) \
	X(cuIpcGetMemHandle) X(cuIpcOpenMemHandle) X(cuIpcOpenMemHandle_v2) X(cuIpcCloseMemHandle) \
	X(cuMemCreate) X(cuMemRelease) X(cuMemMap) X(cuMemUnmap) X(cuMemSetAccess) \
	X(cuMemRetainAllocationHandle) X(cuMemGetAllocationPropertiesFromHandle) \
	X(cuMemExportToShareableHandle) X(cuMemImportFromShareableHandle) \
	X(cuMemAllocAsync) X(cuMemAllocAsync_ptsz) X(cuMemAllocFromPoolAsync) \
	X(cuMemAllocFromPoolAsync_ptsz) X(cuMemFreeAsync) X(cuMemFreeAsync_ptsz) \
	X(cuMemPoolCreate) X(cuMemPoolDestroy) X(cuMemPoolTrimTo) X(cuMemPoolSetAttribute) \
	X(cuMemPoolGetAttribute) \
	X(cuMemcpy) X(cuMemcpy_ptds) X(cuMemcpyAsync) X(cuMemcpyAsync_ptsz) \
	X(cuMemcpyHtoD_v2) X(cuMemcpyHtoD_v2_ptds) X(cuMemcpyDtoH_v2) X(cuMemcpyDtoH_v2_ptds) \
	X(cuMemcpyDtoD_v2) X(cuMemcpyDtoD_v2_ptds) X(cuMemcpyHtoDAsync_v2) X(cuMemcpyHtoDAsync_v2_ptsz) \
	X(cuMemcpyDtoHAsync_v2) X(cuMemcpyDtoHAsync_v2_ptsz) X(cuMemcpyDtoDAsync_v2) \
	X(cuMemcpyDtoDAsync_v2_ptsz) X(cuMemcpy2D_v2) X(cuMemcpy2D_v2_ptds) X(cuMemcpy2DAsync_v2) \
	X(cuMemcpy2DAsync_v2_ptsz) X(cuMemcpyPeer) X(cuMemcpyPeerAsync) \
	X(cuMemsetD8_v2) X(cuMemsetD8_v2_ptds) X(cuMemsetD32_v2) X(cuMemsetD32_v2_ptds) \
	X(cuMemsetD8Async) X(cuMemsetD8Async_ptsz) X(cuMemsetD32Async) X(cuMemsetD32Async_ptsz) \
	X(cuLaunchKernel) X(cuLaunchKernel_ptsz) X(cuLaunchKernelEx) X(cuLaunchKernelEx_ptsz) \
	X(cuLaunchCooperativeKernel) X(cuLaunchCooperativeKernel_ptsz) \
	X(cuGraphLaunch) X(cuGraphLaunch_ptsz)

/* Entry points the hook calls but does not wrap. */
#define VRAM_HOOK_CALLED(X) \
	X(cuDeviceGetCount) X(cuDeviceGetAttribute) X(cuDeviceGetUuid_v2) X(cuCtxGetDevice) \
	X(cuCtxSetCurrent) X(cuCtxGetCurrent) X(cuCtxPushCurrent_v2) X(cuCtxPopCurrent_v2) \
	X(cuCtxSynchronize) X(cuMemAddressReserve) X(cuMemAddressFree) \
	X(cuMemGetAllocationGranularity) X(cuMemGetAddressRange_v2) X(cuMemHostAlloc) \
	X(cuMemFreeHost) X(cuMemHostRegister_v2) X(cuMemHostUnregister) \
	X(cuStreamCreate) X(cuStreamSynchronize) X(cuDeviceGetDefaultMemPool) X(cuDeviceGetMemPool) \
	X(cuEventCreate) X(cuEventRecord) X(cuEventSynchronize) X(cuEventDestroy_v2) \
	X(cuEventQuery) X(cuStreamWaitEvent) X(cuStreamIsCapturing)

enum vram_hook_sym {
#define VRAM_HOOK_X(n) VRAM_HOOK_SYM_##n,
	VRAM_HOOK_WRAPPED(VRAM_HOOK_X)
	VRAM_HOOK_NWRAPPED_MARK,
	VRAM_HOOK_CALLED(VRAM_HOOK_X)
#undef VRAM_HOOK_X
	VRAM_HOOK_NSYMS,
};
#define VRAM_HOOK_NWRAPPED ((int)VRAM_HOOK_NWRAPPED_MARK)

/* The driver's functions by enum vram_hook_sym; NULL where it has none. */
extern void *vram_hook_real_fn[VRAM_HOOK_NSYMS];
extern _Atomic bool vram_hook_resolved;

/* Resolves the real driver once. Returns true when the driver was found. */
bool vram_hook_resolve_slow(void);
static inline bool vram_hook_resolve(void)
{
	if (vram_hook_likely(atomic_load_explicit(&vram_hook_resolved, memory_order_acquire)))
		return true;
	return vram_hook_resolve_slow();
}

/* The real function of a wrapped or called symbol, typed like it. */
#define VRAM_REAL(name) ((__typeof__(&name))vram_hook_real_fn[VRAM_HOOK_SYM_##name])

/* Calls the real function, or returns CUDA_ERROR_NOT_FOUND if there is none. */
#define VRAM_CALL_REAL(name, ...) \
	(vram_hook_resolve() && VRAM_REAL(name) ? VRAM_REAL(name)(__VA_ARGS__) : CUDA_ERROR_NOT_FOUND)

/* ---- log (interpose.c): VRAM_HOOK_LOG file, never the app's stdio */

enum vram_hook_log_level { VRAM_HOOK_LOG_ERROR, VRAM_HOOK_LOG_WARN, VRAM_HOOK_LOG_INFO, VRAM_HOOK_LOG_DEBUG };
void vram_hook_log(enum vram_hook_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * snprintf into a fixed field for people (an answer's text, an error),
 * cut to cap bytes on purpose: a long path must not cost the message.
 */
void vram_hook_textf(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Parses "20GiB", "512MiB", "1.5G", "123" into bytes. Returns 0 or -EINVAL. */
int vram_hook_parse_bytes(const char *s, uint64_t *ret_bytes);

/* ---- accounting and caps (limit.c) */

struct vram_hook_usage {
	_Atomic uint64_t used;        /* bytes charged: allocations + context */
	_Atomic uint64_t nonmovable;  /* bytes of used that an offload cannot move */
	_Atomic uint64_t offloaded;   /* bytes of used that now live in host buffers */
	uint64_t cap;                 /* bytes, 0 = none */
	uint64_t physical;            /* bytes, the device's memory (0 until known) */
};
extern struct vram_hook_usage vram_hook_usage[VRAM_HOOK_MAX_DEVICES];
extern int vram_hook_ndev;            /* devices seen by the process */

/* Reads VRAM_MEMORY_LIMIT once the driver is initialized. */
void vram_hook_limit_init(void);
/* The VRAM_MEMORY_LIMIT that did not parse (borrowed, cut to 127 bytes), or
 * NULL when it parsed or is unset. Valid after vram_hook_limit_init(). */
const char *vram_hook_limit_invalid_text(void);
/* Charges bytes to dev. Returns 0, or -ENOMEM when the cap would be passed.
 * An out-of-range dev is not charged (returns 0). */
int vram_hook_charge(int dev, uint64_t bytes);
/* Charges regardless of the cap (memory that already exists). */
void vram_hook_charge_force(int dev, uint64_t bytes);
void vram_hook_uncharge(int dev, uint64_t bytes);
void vram_hook_nonmovable_add(int dev, uint64_t bytes);
void vram_hook_nonmovable_sub(int dev, uint64_t bytes);
/* Charges the context's own memory once per context. */
void vram_hook_context_created(int dev);
void vram_hook_context_destroyed(int dev);
/* Waits for the work of every context created with cuCtxCreate. */
void vram_hook_contexts_synchronize(void);

/* ---- the gate (suspend.c) */

struct vram_hook_gate_slot {
	_Atomic int inflight;         /* gated calls of the owning thread(s) in progress */
	_Atomic int taken;
	bool shared;                  /* slot of the threads beyond the table: atomic updates */
};
extern _Atomic int vram_hook_gate_closed;
/*
 * true once the process is registered for membarrier(PRIVATE_EXPEDITED)
 * (before the control thread exists, so before any offload): then the
 * offload forces the barrier on every thread and a gated call needs only a
 * compiler barrier; otherwise the call pays a full fence.
 */
extern _Atomic bool vram_hook_gate_asym;
/* The calling thread's slot; slow path on the first call of a thread. */
struct vram_hook_gate_slot *vram_hook_gate_slot_slow(void);
void vram_hook_gate_wait(struct vram_hook_gate_slot *slot);
/* Registers for membarrier; called once at the first successful cuInit. */
void vram_hook_gate_init(void);
/*
 * initial-exec: the hook is preloaded at start-up, so its TLS sits in the
 * static block and a gated call reads it with one instruction instead of a
 * __tls_get_addr call.
 */
#define VRAM_HOOK_TLS _Thread_local __attribute__((tls_model("initial-exec")))
extern VRAM_HOOK_TLS struct vram_hook_gate_slot *vram_hook_gate_mine;

/*
 * Entered by every app call that touches device memory or allocates it;
 * blocks while the process is offloaded. Only its own thread writes a slot
 * (but the shared one), so the count is a plain store, no locked
 * instruction. The store must be visible before "closed" is read (the
 * offload does the reverse): a compiler barrier when the offload issues
 * membarrier, a full fence otherwise.
 */
static inline struct vram_hook_gate_slot *vram_hook_gate_enter(void)
{
	struct vram_hook_gate_slot *s = vram_hook_gate_mine;
	if (vram_hook_unlikely(!s))
		s = vram_hook_gate_slot_slow();
	if (vram_hook_likely(!s->shared)) {
		int n = atomic_load_explicit(&s->inflight, memory_order_relaxed);
		atomic_store_explicit(&s->inflight, n + 1, memory_order_relaxed);
		if (vram_hook_likely(atomic_load_explicit(&vram_hook_gate_asym, memory_order_relaxed)))
			atomic_signal_fence(memory_order_seq_cst);
		else
			atomic_thread_fence(memory_order_seq_cst);
	} else {
		atomic_fetch_add_explicit(&s->inflight, 1, memory_order_seq_cst);
	}
	if (vram_hook_unlikely(atomic_load_explicit(&vram_hook_gate_closed, memory_order_relaxed)))
		vram_hook_gate_wait(s);
	return s;
}

static inline void vram_hook_gate_leave(struct vram_hook_gate_slot *s)
{
	if (vram_hook_likely(!s->shared))
		atomic_store_explicit(&s->inflight, atomic_load_explicit(&s->inflight, memory_order_relaxed) - 1,
				      memory_order_release);
	else
		atomic_fetch_sub_explicit(&s->inflight, 1, memory_order_release);
}

/* Opens and closes the body of a wrapper that allocates or frees: it waits
 * at the gate while the process is offloaded. GATED_END evaluates its
 * argument (often the call itself) before it leaves the gate. */
#define GATED_BEGIN()                                                   \
	if (vram_hook_unlikely(!vram_hook_resolve()))                   \
		return CUDA_ERROR_NOT_FOUND;                            \
	struct vram_hook_gate_slot *gate_ = vram_hook_gate_enter()
#define GATED_END(r)                                                    \
	do {                                                            \
		CUresult gated_r_ = (r);                                \
		vram_hook_gate_leave(gate_);                            \
		return gated_r_;                                        \
	} while (0)

/* ---- allocation tracking (alloc.c) */

/* Open-addressing hash table over 64-bit keys; keys 0 and 1 are reserved
 * (no pointer or handle is either). The caller guards it. */
struct vram_hook_table {
	uint64_t *keys;
	void **vals;
	size_t cap;                   /* slots, a power of two */
	size_t filled;                /* live + deleted */
	size_t live;
};
#define VRAM_HOOK_TABLE_EMPTY 0
#define VRAM_HOOK_TABLE_DELETED 1
void *vram_hook_table_get(const struct vram_hook_table *t, uint64_t key);
/* Returns 0 or -ENOMEM. */
int vram_hook_table_put(struct vram_hook_table *t, uint64_t key, void *val);
/* Returns the value removed, or NULL. */
void *vram_hook_table_del(struct vram_hook_table *t, uint64_t key);

/* false when VRAM_HOOK_VMM_ALLOC=0: cuMemAlloc and pools are left to the driver. */
bool vram_hook_use_vmm(void);
/* The current thread's device, or -1 (no context). */
int vram_hook_current_device(void);
/*
 * Movable memory for a pool (pool.c): bytes on dev, rounded up to the
 * granularity (*ret_size), charged against the cap (CUDA_ERROR_OUT_OF_MEMORY
 * past it), mapped read-write at *ret_va and moved by offloads like
 * cuMemAlloc memory, but unknown to cuMemFree.
 */
CUresult vram_hook_vmm_alloc(CUdeviceptr *ret_va, uint64_t bytes, int dev, uint64_t *ret_size);
/* Unmaps, releases and uncharges what vram_hook_vmm_alloc gave at va; no work may still use it. */
CUresult vram_hook_vmm_release(CUdeviceptr va);
/*
 * Stream-ordered memory the driver serves itself (pools made for export):
 * r_call is the driver's answer for bytes on dev, already charged; records
 * it as non-movable or uncharges it. Returns r_call.
 */
CUresult vram_hook_async_passthrough(CUresult r_call, CUdeviceptr *dptr, size_t bytes, int dev);
/* Forgets a pass-through stream-ordered allocation at dptr after its free; uncharges it. */
void vram_hook_async_passthrough_freed(CUdeviceptr dptr);

/* Called with vram_hook_lock held: the cuMemAlloc allocation at dptr, or NULL. */
struct vram_hook_phys *vram_hook_alloc_lookup(CUdeviceptr dptr);
/*
 * Called with vram_hook_lock held: another process opened (on) or closed
 * (off) p through IPC; p stays resident (non-movable) while one has it open.
 */
void vram_hook_phys_share(struct vram_hook_phys *p, bool on);
/* The driver's own legacy IPC, for memory the hook does not serve: counted, not movable. */
CUresult vram_hook_ipc_passthrough_get(CUipcMemHandle *pHandle, CUdeviceptr dptr);
CUresult vram_hook_ipc_passthrough_open(CUresult (*real)(CUdeviceptr *, CUipcMemHandle, unsigned int),
					CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int flags);
CUresult vram_hook_ipc_passthrough_close(CUdeviceptr dptr);

/* ---- legacy IPC on hook memory (ipc.c) */

/* Called with vram_hook_lock held when p goes: its export, if any, is forgotten. */
void vram_hook_ipc_forget(struct vram_hook_phys *p);
void vram_hook_ipc_atfork_child(void);
/*
 * Offload, with the gate closed and before listing the memory: an export
 * that other processes have open is made movable for this offload when all
 * of them are gated too (waiting up to 2 s for them), else it stays.
 */
void vram_hook_ipc_offload_begin(void);
/* Offload done (the device idle): the imported mappings are unmapped, the addresses kept. */
void vram_hook_ipc_offloaded(void);
/*
 * Restore done, before the gate opens: moved exports are resident again
 * while shared; imports are mapped again at their addresses from what their
 * exporters hold now (waiting up to 60 s for an exporter being restored).
 * Returns 0, or -errno with why.
 */
int vram_hook_ipc_restored(char *why, size_t cap);

/* ---- stream-ordered pools (pool.c) */

/*
 * cuMemFree of pool memory (allowed by the driver, synchronous): returns
 * true when dptr was a pool block of ours, now free; false: not ours.
 */
bool vram_hook_pool_free_sync(CUdeviceptr dptr, CUresult *ret);
/*
 * Called by an offload with the gate closed, before it lists the memory:
 * waits for the frees in flight and gives every pool's idle memory back,
 * so that only memory in use is copied. Returns the bytes released.
 */
uint64_t vram_hook_pool_trim_idle(void);

struct vram_hook_phys;

struct vram_hook_map {
	CUdeviceptr va;
	uint64_t size;                /* bytes */
	uint64_t offset;              /* bytes into the physical allocation */
	struct vram_hook_phys *phys;
	CUmemAccessDesc access[VRAM_HOOK_MAX_ACCESS];
	unsigned naccess;
	struct vram_hook_map *next_in_phys;
};

/* Physical memory under a handle of ours. */
struct vram_hook_phys {
	uint64_t magic;
	CUmemGenericAllocationHandle real; /* 0 while offloaded */
	uint64_t size;                /* bytes */
	int dev;                      /* -1: not device memory (not charged, not moved) */
	CUmemAllocationProp prop;
	unsigned app_refs;            /* handles the app (or a cuMemAlloc of ours) holds */
	unsigned nmaps;
	bool movable;
	bool imported;
	bool offloaded;
	void *host;                   /* pinned copy, size bytes; kept across restores; NULL while parked */
	uint64_t host_piece;          /* bytes per cuMemHostRegister range of host; 0: cuMemHostAlloc */
	bool parked;                  /* offloaded, its copy in the park file only */
	uint32_t park_index;          /* while parked: its allocation's index in the park file */
	uint64_t ipc_id;              /* its cuIpcGetMemHandle export (ipc.c), 0: none */
	unsigned ipc_opens;           /* processes that have it open through IPC */
	bool ipc_pinned;              /* non-movable only while ipc_opens > 0 */
	bool ipc_moving;              /* shared, moved by this offload with every importer gated */
	struct vram_hook_map *maps;
	struct vram_hook_phys *prev, *next;
};

extern pthread_mutex_t vram_hook_lock;      /* guards every table in alloc.c */
extern struct vram_hook_phys *vram_hook_phys_list;

/* Bytes still on the device that an offload leaves (pools, managed, ...). */
uint64_t vram_hook_nonmovable_total(void);

/* ---- offload engine (suspend.c) */

struct vram_hook_op_result {
	int status;                   /* 0 or -errno */
	uint64_t bytes;               /* bytes moved */
	uint64_t nonmovable;          /* bytes that stayed on the device */
	uint64_t missing;             /* bytes a failed restore lacked */
	uint64_t usec;
	char text[256];
};

/* As enum vram_hook_state of the protocol, which carries them as they are. */
enum vram_hook_state_e {
	VRAM_HOOK_RUNNING, VRAM_HOOK_OFFLOADING, VRAM_HOOK_OFFLOADED, VRAM_HOOK_RESTORING,
	VRAM_HOOK_PARKING, VRAM_HOOK_PARKED,
};
extern _Atomic int vram_hook_state;

/* Frees p's pinned host buffer, however it was made; p->host becomes NULL. */
void vram_hook_host_free(struct vram_hook_phys *p);
/*
 * How an offload and a restore take part in an overlapped swap (chan.c
 * implements both over the connection to vramd). NULL: a plain offload or
 * restore.
 */
struct vram_hook_swap {
	/*
	 * An offload with it reports the device memory it has given back so
	 * far (freed[dev], bytes, cumulative) as it goes, and never takes
	 * memory back once some is given back: a copy that fails then leaves
	 * the process offloaded, since vramd may have granted that memory to
	 * another process already.
	 */
	void (*progress)(void *arg, const uint64_t freed[VRAM_HOOK_MAX_DEVICES]);
	/*
	 * A restore with it creates device memory only within the grant:
	 * before creating more on dev it waits until the grant covers need
	 * (bytes created on dev by this restore, in all). Returns 0, or
	 * -ECANCELED (vramd gave up the restore), -ETIMEDOUT or -EPIPE (vramd
	 * is gone); the restore is then undone.
	 */
	int (*wait_grant)(void *arg, int dev, uint64_t need);
	void *arg;
};

void vram_hook_offload(bool drop_host, const struct vram_hook_swap *swap, struct vram_hook_op_result *ret);
/* Restores an offloaded process from its host buffers, a parked one from its park file;
 * opens a gate held by a group (vram_hook_gate_hold, vram_hook_restore_hold). */
void vram_hook_restore(const struct vram_hook_swap *swap, struct vram_hook_op_result *ret);
/* Groups: closes the gate and waits for the calls in it (state offloading); the next offload copies. */
void vram_hook_gate_hold(struct vram_hook_op_result *ret);
/* Groups: restores and keeps the gate closed (state restoring) until the next vram_hook_restore. */
void vram_hook_restore_hold(struct vram_hook_op_result *ret);
/*
 * An offloaded process writes its host copy to a new file at path (absolute,
 * < VRAM_HOOK_PARK_PATH_MAX bytes) and frees its pinned buffers; on any
 * failure the file is removed and the process stays offloaded in host
 * memory. ret->bytes: bytes written.
 */
void vram_hook_park(const char *path, struct vram_hook_op_result *ret);
/*
 * A running process makes the pinned buffers of its first offload ahead, in
 * the background, at most limit bytes of them; answers at once (ret->bytes:
 * what it will make).
 */
void vram_hook_prepare_host(uint64_t limit, struct vram_hook_op_result *ret);
/* A running process frees the pinned buffers it kept after a restore. ret->bytes: bytes freed. */
void vram_hook_drop_host(struct vram_hook_op_result *ret);
/* Bytes of pinned host memory held now, the part of it kept after a restore, bytes in the park file. */
void vram_hook_host_usage(uint64_t *ret_pinned, uint64_t *ret_kept, uint64_t *ret_parked);
/* At exit: removes the park file of this process, if it has one (best effort). */
void vram_hook_park_exit(void);
void vram_hook_suspend_atfork_prepare(void);
void vram_hook_suspend_atfork_parent(void);
void vram_hook_suspend_atfork_child(void);

/* ---- park files (park.c, format in proto/park_file.h) */

#define VRAM_HOOK_PARK_PATH_MAX 256   /* bytes, NUL included: the protocol's */

/* One allocation's host copy, to be written. */
struct vram_hook_park_alloc {
	const void *host;             /* borrowed for the write */
	uint64_t size;                /* bytes */
};

struct vram_hook_park_stats {
	uint64_t total;               /* bytes of the host copy */
	uint64_t written;             /* of them written (a failed write: how far it got) */
	uint64_t file_bytes;          /* the file's size, header and padding included */
	uint64_t staging_bytes;       /* read: bytes per staging buffer */
	uint64_t usec;                /* write: the whole write; read: time the restore waited for the disk */
	size_t pieces;
	unsigned threads;             /* writers, or readers (one per staging buffer) */
	bool direct;                  /* O_DIRECT; false: buffered */
	dev_t dev;                    /* the file written or read, for vram_hook_park_remove */
	ino_t ino;
};

/*
 * Removes path if it still is the file dev/ino (from the stats of its write
 * or read): a file that took its place is not ours to remove.
 */
void vram_hook_park_remove(const char *path, dev_t dev, ino_t ino);
/* This process's start time, clock ticks since boot (/proc/self/stat). Returns 0 or -errno. */
int vram_hook_self_start_ticks(uint64_t *ret);
/*
 * Writes allocs[0, n) to a new file at path (see park.c). Returns 0, or
 * -errno with why (cap bytes) saying what failed and how many bytes were
 * written; the file is then removed (unless it existed before: -EEXIST).
 */
int vram_hook_park_write(const char *path, const struct vram_hook_park_alloc *allocs, size_t n,
			 struct vram_hook_park_stats *st, char *why, size_t cap);

struct vram_hook_park_reader;
/* One piece, read and verified, in a staging buffer until handed back. */
struct vram_hook_park_chunk {
	size_t index;                 /* of the piece in the file */
	uint32_t alloc;               /* the allocation's index in the file */
	uint64_t offset, length;      /* bytes in the allocation */
	const void *data;             /* length bytes, pinned; valid until vram_hook_park_read_done */
};
/*
 * Opens the park file at path and checks it against this process (pid,
 * start time; expected[i]: the size of allocation i here, 0 when it is gone),
 * then starts reading pieces into the staging ring. Returns 0, or -errno
 * with why: -ENOENT (missing), -EPERM (not this process's, or not its
 * user's), -EBADMSG (not a park file, or not of this memory), -ENODATA
 * (truncated). *ret is freed with vram_hook_park_read_close.
 */
int vram_hook_park_read_open(const char *path, const uint64_t *expected, size_t n,
			     struct vram_hook_park_reader **ret, char *why, size_t cap);
/* The next piece in file order, waiting for it: 1, 0 at the end, or -errno with why (-EBADMSG: checksum). */
int vram_hook_park_read_next(struct vram_hook_park_reader *r, struct vram_hook_park_chunk *ret, char *why,
			     size_t cap);
/*
 * Hands the last piece's buffer back: its copies were issued on stream of
 * dev (whose context is current), and the buffer is read into again once
 * they are done; dev -1: nothing was copied from it. Returns 0 or -EIO.
 */
int vram_hook_park_read_done(struct vram_hook_park_reader *r, int dev, CUstream stream);
void vram_hook_park_read_info(const struct vram_hook_park_reader *r, struct vram_hook_park_stats *ret);
/* Stops the readers and frees everything. Accepts NULL. The streams must be synchronized first. */
void vram_hook_park_read_close(struct vram_hook_park_reader *r);

/* ---- channel (chan.c) */

/* Starts the control thread once (after the first successful cuInit). */
void vram_hook_chan_start(void);
void vram_hook_chan_atfork_child(void);
/* Tells the channel that usage changed (cheap). */
extern _Atomic unsigned vram_hook_usage_seq;

#endif
