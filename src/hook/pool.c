/* SPDX-License-Identifier: MIT */
/*
 * Stream-ordered allocation (cuMemAllocAsync, cuMemAllocFromPoolAsync,
 * cuMemFreeAsync, and so cudaMallocAsync, JAX's and TensorFlow's async
 * allocators, CuPy's async pool, PyTorch's backend:cudaMallocAsync) served
 * from movable memory.
 *
 * The driver's pools hand out memory the hook cannot unmap, so the hook
 * keeps a pool of its own for every driver pool the program allocates from
 * (keyed by the driver's handle, which the program keeps using for
 * everything else): its memory comes from vram_hook_vmm_alloc, so it is
 * charged against the cap and moved by an offload like cuMemAlloc memory.
 *
 * Sizes up to CLASS_MAX are cut from chunks of CHUNK bytes in power-of-two
 * classes (so that many small allocations do not each take a 2 MiB
 * granule); larger ones get an allocation of their own, rounded up to the
 * granularity. A free (cuMemFreeAsync) records an event on its stream and
 * keeps the block in the pool; the block is handed out again:
 *  - at once to an allocation on the stream of the free (stream order);
 *  - to another stream when the event is done, if the pool allows
 *    opportunistic reuse (CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC);
 *  - to another stream at once, that stream waiting on the event, if the
 *    pool allows internal dependencies (..._ALLOW_INTERNAL_DEPENDENCIES);
 * otherwise new memory is made. All three policies are on by default, as
 * with the driver. REUSE_FOLLOW_EVENT_DEPENDENCIES is recorded and
 * answered but not followed (internal dependencies cover it).
 *
 * Idle memory beyond the release threshold (CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
 * default 0) is given back when a free finds the blocks before it done (the
 * driver does it at synchronization points, which the hook does not
 * intercept); chunks of small blocks are given back only by
 * cuMemPoolTrimTo, cuMemPoolDestroy, an allocation that finds the cap or
 * the device full, and an offload, which gives back every idle byte before
 * copying.
 *
 * Pools made for export (a shareable handle type), pools not located on
 * a device, allocations made while the stream is captured into a CUDA graph,
 * and every pool under VRAM_HOOK_VMM_ALLOC=0 are left to the driver: their
 * memory is charged and non-movable. cuMemPoolSetAccess is not applied to
 * the hook's memory: only the pool's own device can access it.
 *
 * Lock order: pool_lock, then vram_hook_lock (taken inside vram_hook_vmm_*).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hook/hook.h"

#define CLASS_MIN_SHIFT 9              /* 512 bytes */
#define CLASS_MAX_SHIFT 20             /* 1 MiB */
#define NCLASSES (CLASS_MAX_SHIFT - CLASS_MIN_SHIFT + 1)
#define CHUNK_BYTES (2ull << 20)       /* bytes per chunk of small blocks (at least) */

struct pool;

/* Memory of one small-block class, cut into pieces. */
struct chunk {
	CUdeviceptr va;
	uint64_t size;                 /* bytes */
	unsigned pieces, nfree;
	struct block *blocks;          /* pieces blocks, in address order */
	struct chunk *next;
};

struct block {
	CUdeviceptr va;
	uint64_t size;                 /* bytes the block spans (its class, or its rounded size) */
	uint64_t asked;                /* bytes of the allocation in use (0 while idle) */
	struct chunk *chunk;           /* NULL: an allocation of its own */
	struct pool *pool;
	CUstream free_stream;          /* the stream of the free, while idle */
	CUevent ev;                    /* recorded at the free; NULL until the first one */
	bool ev_pending;               /* ev may not be done yet */
	bool idle;
	bool freed_in_capture;         /* freed by a graph being captured: never handed out again */
	struct block *next, *prev;     /* in the pool's idle list of its class */
};

struct pool {
	CUmemoryPool real;             /* the driver's handle */
	int dev;
	bool destroyed;                /* cuMemPoolDestroy was called; freed when nothing is left */
	uint64_t release_threshold;    /* bytes */
	int reuse_follow, reuse_opportunistic, reuse_internal;
	uint64_t reserved, reserved_high; /* bytes of memory made */
	uint64_t used, used_high;      /* bytes handed out */
	unsigned live;                 /* blocks handed out */
	struct block *idle[NCLASSES + 1]; /* idle blocks per class; [NCLASSES]: large ones, oldest last */
	struct chunk *chunks;
	struct pool *next;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool *pools;                 /* every pool record, destroyed ones until empty */
static struct vram_hook_table pool_table;  /* driver pool handle -> struct pool (not destroyed) */
static struct vram_hook_table block_table; /* address handed out -> struct block */
static struct vram_hook_table passthrough_pools; /* driver pool handles left to the driver -> (void *)1 */

static unsigned class_of(uint64_t bytes)
{
	unsigned c = 0;
	while ((1ull << (c + CLASS_MIN_SHIFT)) < bytes)
		c++;
	return c;
}

static void idle_push(struct pool *pl, unsigned cls, struct block *b)
{
	b->idle = true;
	b->prev = NULL;
	b->next = pl->idle[cls];
	if (b->next)
		b->next->prev = b;
	pl->idle[cls] = b;
}

static void idle_unlink(struct pool *pl, unsigned cls, struct block *b)
{
	if (b->prev)
		b->prev->next = b->next;
	else
		pl->idle[cls] = b->next;
	if (b->next)
		b->next->prev = b->prev;
	b->next = b->prev = NULL;
	b->idle = false;
}

static unsigned block_class(const struct block *b)
{
	return b->chunk ? class_of(b->size) : NCLASSES;
}

/* true when the work before the block's free is done. */
static bool block_done(struct block *b)
{
	if (!b->ev_pending)
		return true;
	if (VRAM_REAL(cuEventQuery)(b->ev) == CUDA_ERROR_NOT_READY)
		return false;
	b->ev_pending = false;
	return true;
}

static void block_wait(struct block *b)
{
	if (b->ev_pending)
		VRAM_REAL(cuEventSynchronize)(b->ev);
	b->ev_pending = false;
}

static void block_forget(struct block *b)
{
	if (b->ev)
		VRAM_REAL(cuEventDestroy_v2)(b->ev);
	b->ev = NULL;
}

static void pool_note_reserved(struct pool *pl, int64_t delta)
{
	pl->reserved += (uint64_t)delta;
	if (pl->reserved > pl->reserved_high)
		pl->reserved_high = pl->reserved;
}

/* Gives back a large idle block; its work must be done. */
static void large_release(struct pool *pl, struct block *b)
{
	idle_unlink(pl, NCLASSES, b);
	vram_hook_table_del(&block_table, b->va);
	vram_hook_vmm_release(b->va);
	pool_note_reserved(pl, -(int64_t)b->size);
	block_forget(b);
	free(b);
}

/* Gives back a chunk whose pieces are all idle and done. */
static void chunk_release(struct pool *pl, struct chunk *c)
{
	unsigned cls = class_of(c->blocks[0].size);
	for (unsigned i = 0; i < c->pieces; i++) {
		idle_unlink(pl, cls, &c->blocks[i]);
		block_forget(&c->blocks[i]);
	}
	for (struct chunk **pp = &pl->chunks; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	vram_hook_vmm_release(c->va);
	pool_note_reserved(pl, -(int64_t)c->size);
	free(c->blocks);
	free(c);
}

static bool chunk_done(struct chunk *c, bool wait)
{
	if (c->nfree != c->pieces)
		return false;
	for (unsigned i = 0; i < c->pieces; i++) {
		if (wait)
			block_wait(&c->blocks[i]);
		else if (!block_done(&c->blocks[i]))
			return false;
	}
	return true;
}

/*
 * Gives idle memory back until the pool holds at most keep bytes: large
 * blocks oldest first, then (with chunks) whole idle chunks. wait: wait for
 * the frees in flight (an offload, after synchronizing); otherwise blocks
 * whose free is not done yet are kept. Returns the bytes released.
 */
static uint64_t pool_trim(struct pool *pl, uint64_t keep, bool chunks, bool wait)
{
	uint64_t before = pl->reserved;
	struct block *oldest = pl->idle[NCLASSES];
	while (oldest && oldest->next)
		oldest = oldest->next;
	for (struct block *b = oldest, *prev; b && pl->reserved > keep; b = prev) {
		prev = b->prev;
		if (wait)
			block_wait(b);
		if (block_done(b))
			large_release(pl, b);
	}
	for (struct chunk *c = pl->chunks, *next; chunks && c && pl->reserved > keep; c = next) {
		next = c->next;
		if (chunk_done(c, wait))
			chunk_release(pl, c);
	}
	return before - pl->reserved;
}

static void pool_maybe_free(struct pool *pl)
{
	if (!pl->destroyed || pl->live)
		return;
	pool_trim(pl, 0, true, true);
	if (pl->reserved)
		return;
	for (struct pool **pp = &pools; *pp; pp = &(*pp)->next) {
		if (*pp == pl) {
			*pp = pl->next;
			break;
		}
	}
	free(pl);
}

/* The record of a driver pool, made on first use. Called with pool_lock held. */
static struct pool *pool_get(CUmemoryPool real, int dev)
{
	struct pool *pl = vram_hook_table_get(&pool_table, (uint64_t)(uintptr_t)real);
	if (pl)
		return pl;
	pl = calloc(1, sizeof(*pl));
	if (!pl)
		return NULL;
	pl->real = real;
	pl->dev = dev;
	pl->reuse_follow = pl->reuse_opportunistic = pl->reuse_internal = 1;
	if (vram_hook_table_put(&pool_table, (uint64_t)(uintptr_t)real, pl) < 0) {
		free(pl);
		return NULL;
	}
	pl->next = pools;
	pools = pl;
	return pl;
}

/* Gives back idle memory of every pool (all of it when to_zero). Called with pool_lock held. */
static uint64_t trim_all(bool to_zero, bool wait)
{
	uint64_t freed = 0;
	for (struct pool *pl = pools, *next; pl; pl = next) {
		next = pl->next;
		freed += pool_trim(pl, to_zero ? 0 : pl->release_threshold, true, wait);
		pool_maybe_free(pl);
	}
	return freed;
}

/* Makes new memory for a pool; on a full cap or device gives back idle memory once and tries again. */
static CUresult pool_vmm(struct pool *pl, uint64_t bytes, CUdeviceptr *ret_va, uint64_t *ret_size)
{
	CUresult r = vram_hook_vmm_alloc(ret_va, bytes, pl->dev, ret_size);
	if (r == CUDA_ERROR_OUT_OF_MEMORY && trim_all(true, false) > 0)
		r = vram_hook_vmm_alloc(ret_va, bytes, pl->dev, ret_size);
	if (r == CUDA_SUCCESS)
		pool_note_reserved(pl, (int64_t)*ret_size);
	return r;
}

/* Can b be handed out on stream s now? May make s wait for b's free. */
static bool reusable(struct pool *pl, struct block *b, CUstream s)
{
	if (!b->ev_pending || b->free_stream == s)
		return true;
	if (pl->reuse_opportunistic && block_done(b))
		return true;
	if (pl->reuse_internal && VRAM_REAL(cuStreamWaitEvent)(s, b->ev, 0) == CUDA_SUCCESS)
		return true;
	return false;
}

static struct block *take_small(struct pool *pl, unsigned cls, CUstream s, CUresult *ret)
{
	for (struct block *b = pl->idle[cls]; b; b = b->next) {
		if (reusable(pl, b, s)) {
			idle_unlink(pl, cls, b);
			b->chunk->nfree--;
			return b;
		}
	}
	uint64_t piece = 1ull << (cls + CLASS_MIN_SHIFT);
	struct chunk *c = calloc(1, sizeof(*c));
	if (!c) {
		*ret = CUDA_ERROR_OUT_OF_MEMORY;
		return NULL;
	}
	*ret = pool_vmm(pl, CHUNK_BYTES, &c->va, &c->size);
	if (*ret != CUDA_SUCCESS) {
		free(c);
		return NULL;
	}
	c->pieces = (unsigned)(c->size / piece);
	c->blocks = calloc(c->pieces, sizeof(*c->blocks));
	if (!c->blocks) {
		vram_hook_vmm_release(c->va);
		pool_note_reserved(pl, -(int64_t)c->size);
		free(c);
		*ret = CUDA_ERROR_OUT_OF_MEMORY;
		return NULL;
	}
	/* Pushed in reverse, so the lowest address is handed out first. */
	for (unsigned i = c->pieces; i-- > 0;) {
		struct block *b = &c->blocks[i];
		b->va = c->va + i * piece;
		b->size = piece;
		b->chunk = c;
		b->pool = pl;
		idle_push(pl, cls, b);
	}
	c->nfree = c->pieces;
	c->next = pl->chunks;
	pl->chunks = c;
	struct block *b = pl->idle[cls];
	idle_unlink(pl, cls, b);
	c->nfree--;
	return b;
}

static struct block *take_large(struct pool *pl, uint64_t bytes, CUstream s, CUresult *ret)
{
	/* Best fit among the idle blocks that waste at most half of themselves. */
	struct block *best = NULL;
	for (struct block *b = pl->idle[NCLASSES]; b; b = b->next)
		if (b->size >= bytes && b->size / 2 <= bytes && (!best || b->size < best->size) &&
		    (!b->ev_pending || b->free_stream == s || pl->reuse_opportunistic || pl->reuse_internal))
			best = b;
	if (best && reusable(pl, best, s)) {
		idle_unlink(pl, NCLASSES, best);
		return best;
	}
	struct block *b = calloc(1, sizeof(*b));
	if (!b) {
		*ret = CUDA_ERROR_OUT_OF_MEMORY;
		return NULL;
	}
	*ret = pool_vmm(pl, bytes, &b->va, &b->size);
	if (*ret != CUDA_SUCCESS) {
		free(b);
		return NULL;
	}
	b->pool = pl;
	return b;
}

/* The pool a cuMemAllocAsync on dev draws from: the device's current pool. */
static CUmemoryPool current_pool(int dev)
{
	CUmemoryPool p = NULL;
	if (VRAM_CALL_REAL(cuDeviceGetMemPool, &p, dev) != CUDA_SUCCESS)
		p = NULL;
	return p;
}

/*
 * A stream being captured into a CUDA graph: its allocations and frees
 * become graph nodes that run at every replay, which the hook cannot
 * emulate; allocations are left to the driver (resident), and a block of
 * ours freed in a capture stays allocated (a replay may still use it).
 */
static bool capturing(CUstream s)
{
	CUstreamCaptureStatus st = 0;
	return VRAM_REAL(cuStreamIsCapturing)(s, &st) == CUDA_SUCCESS && st != 0;
}

static bool is_passthrough(CUmemoryPool real)
{
	return vram_hook_table_get(&passthrough_pools, (uint64_t)(uintptr_t)real) != NULL;
}

/* The device of a driver pool the hook has not seen made: a device's default pool. */
static int pool_device(CUmemoryPool real)
{
	for (int d = 0; d < vram_hook_ndev && d < VRAM_HOOK_MAX_DEVICES; d++) {
		CUmemoryPool p;
		if (VRAM_CALL_REAL(cuDeviceGetDefaultMemPool, &p, d) == CUDA_SUCCESS && p == real)
			return d;
	}
	return vram_hook_current_device();
}

static CUresult pool_alloc(CUdeviceptr *dptr, size_t bytes, CUmemoryPool real, CUstream s, bool explicit_pool,
			   CUresult (*driver)(CUdeviceptr *, size_t, CUmemoryPool, CUstream))
{
	if (!dptr || bytes == 0)
		return driver(dptr, bytes, real, s); /* the driver reports the error */
	int dev = explicit_pool ? -1 : vram_hook_current_device();
	if (!explicit_pool && dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES)
		real = current_pool(dev);
	pthread_mutex_lock(&pool_lock);
	bool ours = real && !is_passthrough(real) && vram_hook_use_vmm();
	pthread_mutex_unlock(&pool_lock);
	if (ours && capturing(s))
		ours = false;
	if (!ours) {
		/* A pool made for export, or no pool: the driver serves it, charged. */
		if (dev < 0)
			dev = vram_hook_current_device();
		if (vram_hook_charge(dev, bytes) < 0)
			return CUDA_ERROR_OUT_OF_MEMORY;
		return vram_hook_async_passthrough(driver(dptr, bytes, real, s), dptr, bytes, dev);
	}
	if (dev < 0)
		dev = pool_device(real);
	if (dev < 0 || dev >= VRAM_HOOK_MAX_DEVICES)
		return driver(dptr, bytes, real, s);

	CUresult r = CUDA_SUCCESS;
	pthread_mutex_lock(&pool_lock);
	struct pool *pl = pool_get(real, dev);
	struct block *b = NULL;
	if (!pl)
		r = CUDA_ERROR_OUT_OF_MEMORY;
	else if (bytes <= (1ull << CLASS_MAX_SHIFT))
		b = take_small(pl, class_of(bytes), s, &r);
	else
		b = take_large(pl, bytes, s, &r);
	if (b && vram_hook_table_put(&block_table, b->va, b) < 0) {
		/* Back to the idle list: the memory stays the pool's. */
		idle_push(pl, block_class(b), b);
		if (b->chunk)
			b->chunk->nfree++;
		b = NULL;
		r = CUDA_ERROR_OUT_OF_MEMORY;
	}
	if (b) {
		b->asked = bytes;
		pl->live++;
		pl->used += b->size;
		if (pl->used > pl->used_high)
			pl->used_high = pl->used;
		*dptr = b->va;
	}
	pthread_mutex_unlock(&pool_lock);
	return r;
}

/* Returns b to its pool, idle; with an event recorded on s unless sync. Called with pool_lock held. */
static CUresult block_free(struct block *b, CUstream s, bool sync)
{
	struct pool *pl = b->pool;
	CUresult r = CUDA_SUCCESS;
	if (!sync) {
		if (!b->ev)
			r = VRAM_REAL(cuEventCreate)(&b->ev, CU_EVENT_DISABLE_TIMING);
		if (r == CUDA_SUCCESS)
			r = VRAM_REAL(cuEventRecord)(b->ev, s);
		if (r != CUDA_SUCCESS) {
			/* No event: the free waits for the stream instead. */
			VRAM_CALL_REAL(cuStreamSynchronize, s);
			r = CUDA_SUCCESS;
			sync = true;
		}
	}
	vram_hook_table_del(&block_table, b->va);
	b->ev_pending = !sync;
	b->free_stream = s;
	b->asked = 0;
	pl->live--;
	pl->used -= b->size;
	if (b->chunk)
		b->chunk->nfree++;
	idle_push(pl, block_class(b), b);
	if (!b->chunk && pl->reserved - pl->used > pl->release_threshold)
		pool_trim(pl, pl->release_threshold + pl->used, false, false);
	pool_maybe_free(pl);
	return r;
}

static CUresult pool_free_async(CUdeviceptr dptr, CUstream s, CUresult (*driver)(CUdeviceptr, CUstream))
{
	pthread_mutex_lock(&pool_lock);
	struct block *b = dptr ? vram_hook_table_get(&block_table, dptr) : NULL;
	CUresult r = CUDA_SUCCESS;
	if (b && b->freed_in_capture)
		r = CUDA_ERROR_INVALID_VALUE; /* freed twice */
	else if (b && capturing(s))
		b->freed_in_capture = true;
	else if (b)
		r = block_free(b, s, false);
	pthread_mutex_unlock(&pool_lock);
	if (b)
		return r;
	r = driver(dptr, s);
	if (r == CUDA_SUCCESS && dptr)
		vram_hook_async_passthrough_freed(dptr);
	return r;
}

bool vram_hook_pool_free_sync(CUdeviceptr dptr, CUresult *ret)
{
	pthread_mutex_lock(&pool_lock);
	struct block *b = vram_hook_table_get(&block_table, dptr);
	if (b) {
		/* cuMemFree waits for the device before the memory is free. */
		VRAM_CALL_REAL(cuCtxSynchronize);
		*ret = block_free(b, NULL, true);
	}
	pthread_mutex_unlock(&pool_lock);
	return b != NULL;
}

uint64_t vram_hook_pool_trim_idle(void)
{
	pthread_mutex_lock(&pool_lock);
	uint64_t freed = trim_all(true, true);
	pthread_mutex_unlock(&pool_lock);
	return freed;
}

/* ----------------------------------------------------------------- wrappers */

/* The per-thread default stream of a _ptsz call, named so that an event records on it. */
static CUstream ptsz_stream(CUstream s)
{
	return s ? s : CU_STREAM_PER_THREAD;
}

static CUresult drv_alloc_async(CUdeviceptr *d, size_t n, CUmemoryPool p, CUstream s)
{
	(void)p;
	return VRAM_REAL(cuMemAllocAsync)(d, n, s);
}

static CUresult drv_alloc_async_ptsz(CUdeviceptr *d, size_t n, CUmemoryPool p, CUstream s)
{
	(void)p;
	return VRAM_REAL(cuMemAllocAsync_ptsz)(d, n, s);
}

static CUresult drv_alloc_pool(CUdeviceptr *d, size_t n, CUmemoryPool p, CUstream s)
{
	return VRAM_REAL(cuMemAllocFromPoolAsync)(d, n, p, s);
}

static CUresult drv_alloc_pool_ptsz(CUdeviceptr *d, size_t n, CUmemoryPool p, CUstream s)
{
	return VRAM_REAL(cuMemAllocFromPoolAsync_ptsz)(d, n, p, s);
}

VRAM_HOOK_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
	GATED_BEGIN();
	GATED_END(pool_alloc(dptr, bytesize, NULL, hStream, false, drv_alloc_async));
}

VRAM_HOOK_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
	GATED_BEGIN();
	GATED_END(pool_alloc(dptr, bytesize, NULL, ptsz_stream(hStream), false, drv_alloc_async_ptsz));
}

VRAM_HOOK_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
						  CUstream hStream)
{
	GATED_BEGIN();
	if (!pool)
		GATED_END(VRAM_REAL(cuMemAllocFromPoolAsync)(dptr, bytesize, pool, hStream));
	GATED_END(pool_alloc(dptr, bytesize, pool, hStream, true, drv_alloc_pool));
}

VRAM_HOOK_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
						       CUstream hStream)
{
	GATED_BEGIN();
	if (!pool)
		GATED_END(VRAM_REAL(cuMemAllocFromPoolAsync_ptsz)(dptr, bytesize, pool, hStream));
	GATED_END(pool_alloc(dptr, bytesize, pool, ptsz_stream(hStream), true, drv_alloc_pool_ptsz));
}

VRAM_HOOK_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
	GATED_BEGIN();
	GATED_END(pool_free_async(dptr, hStream, VRAM_REAL(cuMemFreeAsync)));
}

VRAM_HOOK_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream)
{
	GATED_BEGIN();
	GATED_END(pool_free_async(dptr, ptsz_stream(hStream), VRAM_REAL(cuMemFreeAsync_ptsz)));
}

VRAM_HOOK_EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
	if (!vram_hook_resolve())
		return CUDA_ERROR_NOT_FOUND;
	CUresult r = VRAM_REAL(cuMemPoolCreate)(pool, props);
	if (r != CUDA_SUCCESS || !pool || !props)
		return r;
	bool device = props->location.type == CU_MEM_LOCATION_TYPE_DEVICE && props->location.id >= 0 &&
		      props->location.id < VRAM_HOOK_MAX_DEVICES;
	pthread_mutex_lock(&pool_lock);
	if (!device || props->handleTypes != CU_MEM_HANDLE_TYPE_NONE) {
		/* Another process may map its memory: the driver's, resident. */
		if (vram_hook_table_put(&passthrough_pools, (uint64_t)(uintptr_t)*pool, (void *)1) < 0)
			r = CUDA_ERROR_OUT_OF_MEMORY;
	} else {
		vram_hook_table_del(&passthrough_pools, (uint64_t)(uintptr_t)*pool);
		if (!pool_get(*pool, props->location.id))
			r = CUDA_ERROR_OUT_OF_MEMORY;
	}
	pthread_mutex_unlock(&pool_lock);
	if (r != CUDA_SUCCESS)
		VRAM_REAL(cuMemPoolDestroy)(*pool);
	return r;
}

VRAM_HOOK_EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
	if (!vram_hook_resolve())
		return CUDA_ERROR_NOT_FOUND;
	CUresult r = VRAM_REAL(cuMemPoolDestroy)(pool);
	if (r != CUDA_SUCCESS)
		return r;
	/*
	 * As with the driver, blocks still allocated keep their memory until
	 * they are freed; the record leaves the table at once, since the
	 * driver may hand out the same handle again.
	 */
	pthread_mutex_lock(&pool_lock);
	vram_hook_table_del(&passthrough_pools, (uint64_t)(uintptr_t)pool);
	struct pool *pl = vram_hook_table_del(&pool_table, (uint64_t)(uintptr_t)pool);
	if (pl) {
		pl->destroyed = true;
		pool_trim(pl, 0, true, false);
		pool_maybe_free(pl);
	}
	pthread_mutex_unlock(&pool_lock);
	return r;
}

VRAM_HOOK_EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
	if (!vram_hook_resolve())
		return CUDA_ERROR_NOT_FOUND;
	CUresult r = VRAM_REAL(cuMemPoolTrimTo)(pool, minBytesToKeep);
	if (r != CUDA_SUCCESS)
		return r;
	pthread_mutex_lock(&pool_lock);
	struct pool *pl = vram_hook_table_get(&pool_table, (uint64_t)(uintptr_t)pool);
	if (pl)
		pool_trim(pl, minBytesToKeep, true, false);
	pthread_mutex_unlock(&pool_lock);
	return r;
}

/* Records an attribute the hook emulates. Returns false for one it leaves to the driver alone. */
static bool set_attr(struct pool *pl, CUmemPool_attribute attr, const void *value)
{
	switch (attr) {
	case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD:
		pl->release_threshold = *(const cuuint64_t *)value;
		return true;
	case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
		pl->reuse_follow = *(const int *)value != 0;
		return true;
	case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
		pl->reuse_opportunistic = *(const int *)value != 0;
		return true;
	case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
		pl->reuse_internal = *(const int *)value != 0;
		return true;
	case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
		pl->reserved_high = pl->reserved; /* the driver only accepts 0: reset to current */
		return true;
	case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
		pl->used_high = pl->used;
		return true;
	default:
		return false;
	}
}

static bool get_attr(const struct pool *pl, CUmemPool_attribute attr, void *value)
{
	switch (attr) {
	case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *(cuuint64_t *)value = pl->release_threshold; return true;
	case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: *(int *)value = pl->reuse_follow; return true;
	case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC: *(int *)value = pl->reuse_opportunistic; return true;
	case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: *(int *)value = pl->reuse_internal; return true;
	case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *(cuuint64_t *)value = pl->reserved; return true;
	case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *(cuuint64_t *)value = pl->reserved_high; return true;
	case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *(cuuint64_t *)value = pl->used; return true;
	case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *(cuuint64_t *)value = pl->used_high; return true;
	default: return false;
	}
}

/* Our record of a pool the program names, made for a device's default pool on first sight. */
static struct pool *pool_named(CUmemoryPool pool)
{
	if (!pool || is_passthrough(pool))
		return NULL;
	struct pool *pl = vram_hook_table_get(&pool_table, (uint64_t)(uintptr_t)pool);
	if (pl)
		return pl;
	int dev = pool_device(pool);
	return dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES ? pool_get(pool, dev) : NULL;
}

VRAM_HOOK_EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
	if (!vram_hook_resolve())
		return CUDA_ERROR_NOT_FOUND;
	/* The driver checks the pool, the attribute and the value first. */
	CUresult r = VRAM_REAL(cuMemPoolSetAttribute)(pool, attr, value);
	if (r != CUDA_SUCCESS || !value)
		return r;
	pthread_mutex_lock(&pool_lock);
	struct pool *pl = pool_named(pool);
	if (pl && set_attr(pl, attr, value) && attr == CU_MEMPOOL_ATTR_RELEASE_THRESHOLD)
		pool_trim(pl, pl->release_threshold + pl->used, false, false);
	pthread_mutex_unlock(&pool_lock);
	return r;
}

VRAM_HOOK_EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
	if (!vram_hook_resolve())
		return CUDA_ERROR_NOT_FOUND;
	if (value) {
		pthread_mutex_lock(&pool_lock);
		struct pool *pl = pool_named(pool);
		bool done = pl && get_attr(pl, attr, value);
		pthread_mutex_unlock(&pool_lock);
		if (done)
			return CUDA_SUCCESS;
	}
	return VRAM_REAL(cuMemPoolGetAttribute)(pool, attr, value);
}
