/* SPDX-License-Identifier: MIT */
/*
 * Offload and restore of the process's device memory, and the gate that
 * keeps the program away from its memory while it is in host RAM.
 *
 * Gate: every wrapper that touches or allocates device memory enters the
 * gate, which costs a plain increment of a counter owned by the calling
 * thread and one load of the shared "closed" flag; the offload closes the
 * gate and issues membarrier so that the two are ordered on every thread
 * (a full fence per call where membarrier is missing). It then
 * waits until no thread is inside, then synchronizes the contexts, so
 * no work is in flight. Threads that arrive later sleep until the restore
 * opens the gate again.
 *
 * Offload: every movable physical allocation is copied to a pinned host
 * buffer, in chunks (256 MiB) over two streams per device, and each of its
 * mappings is then unmapped and the physical memory released. The virtual
 * address ranges stay reserved. When every allocation already has its
 * buffer (every offload but the first), the release runs behind the copies:
 * an allocation's memory goes as soon as its own copies are done, while the
 * later ones still copy (see "release behind the copies"). The first offload
 * makes the buffers in pieces on several threads and copies each piece as
 * soon as it is pinned (see "pinned buffers" below); pinning can still fail
 * half-way, so it releases nothing before every copy is done. Host buffers
 * are kept after a restore, so the next offload runs at link speed;
 * VRAM_HOOK_KEEP_HOST=0 (or the drop-host flag of a command) frees them.
 *
 * Restore: allocation by allocation, physical memory is created, mapped at
 * the addresses it had with the access it had, and its copies are issued;
 * the copies of one allocation run while the next is created and mapped.
 * If the device cannot give the memory (or a mapping fails), everything
 * done so far is undone once the copies in flight have finished: the
 * process stays offloaded with its host copies, and the error says how many
 * bytes were missing. Otherwise the gate opens once every copy is done.
 *
 * An offload whose copies fail after some allocations were released brings
 * those back from their host copies, and the process runs on; if even that
 * fails, the process stays offloaded and a restore brings the rest back.
 *
 * Each answer says where the time went (struct phases): for an offload
 * "[ms: drain= sync= copy= release= tail=]", for a restore
 * "[ms: create= map= head= copy= tail=]".
 */
#include <errno.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hook/hook.h"

#define GATE_SLOTS 4096
#define DRAIN_TIMEOUT_MS 30000

struct padded_slot {
	struct vram_hook_gate_slot s;
	char pad[64 - sizeof(struct vram_hook_gate_slot)];
};

_Atomic int vram_hook_gate_closed;
_Atomic bool vram_hook_gate_asym;
_Atomic int vram_hook_state = VRAM_HOOK_RUNNING;
VRAM_HOOK_TLS struct vram_hook_gate_slot *vram_hook_gate_mine;

static struct padded_slot slots[GATE_SLOTS] = { [0].s.shared = true }; /* slot 0: overflow threads */
static _Atomic int slots_high = 1;             /* slots in use are below this */
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t slot_key;
static pthread_once_t slot_key_once = PTHREAD_ONCE_INIT;

static pthread_mutex_t gate_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t suspend_mutex = PTHREAD_MUTEX_INITIALIZER; /* one offload/restore at a time */

static void slot_release(void *arg)
{
	struct vram_hook_gate_slot *s = arg;
	if (s != &slots[0].s)
		atomic_store(&s->taken, 0);
}

static void slot_key_create(void)
{
	pthread_key_create(&slot_key, slot_release);
}

struct vram_hook_gate_slot *vram_hook_gate_slot_slow(void)
{
	pthread_once(&slot_key_once, slot_key_create);
	struct vram_hook_gate_slot *mine = &slots[0].s;
	pthread_mutex_lock(&slot_lock);
	for (int i = 1; i < GATE_SLOTS; i++) {
		if (!atomic_load(&slots[i].s.taken)) {
			atomic_store(&slots[i].s.taken, 1);
			mine = &slots[i].s;
			if (i >= atomic_load(&slots_high))
				atomic_store(&slots_high, i + 1);
			break;
		}
	}
	pthread_mutex_unlock(&slot_lock);
	vram_hook_gate_mine = mine;
	pthread_setspecific(slot_key, mine);
	return mine;
}

void vram_hook_gate_wait(struct vram_hook_gate_slot *s)
{
	for (;;) {
		atomic_fetch_sub(&s->inflight, 1);
		pthread_mutex_lock(&gate_mutex);
		pthread_cond_broadcast(&gate_cond); /* the offload may wait for us */
		while (atomic_load(&vram_hook_gate_closed))
			pthread_cond_wait(&gate_cond, &gate_mutex);
		pthread_mutex_unlock(&gate_mutex);
		atomic_fetch_add(&s->inflight, 1);
		if (!atomic_load(&vram_hook_gate_closed))
			return;
	}
}

static bool gate_busy(void)
{
	int high = atomic_load(&slots_high);
	for (int i = 0; i < high; i++)
		if (atomic_load(&slots[i].s.inflight) > 0)
			return true;
	return false;
}

static void gate_open(void)
{
	pthread_mutex_lock(&gate_mutex);
	atomic_store(&vram_hook_gate_closed, 0);
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_mutex);
}

void vram_hook_gate_init(void)
{
	const char *s = secure_getenv("VRAM_HOOK_MEMBARRIER");
	if (s && s[0] == '0')
		return;
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
		atomic_store(&vram_hook_gate_asym, true);
	vram_hook_log(VRAM_HOOK_LOG_DEBUG, "gate: %s", atomic_load(&vram_hook_gate_asym)
		      ? "membarrier at offload, no fence per call" : "a full fence per call");
}

/* Closes the gate and waits for the calls inside. Returns 0, -EBUSY (calls
 * did not finish in time) or -EIO (the barrier failed). */
static int gate_close(int timeout_ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (deadline.tv_nsec >= 1000000000) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000;
	}
	atomic_store(&vram_hook_gate_closed, 1);
	/* Every thread passes a full barrier now: a call that entered without a
	 * fence has its count visible below, or sees the gate closed. */
	if (atomic_load(&vram_hook_gate_asym) &&
	    syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) {
		gate_open();
		return -EIO;
	}
	pthread_mutex_lock(&gate_mutex);
	while (gate_busy()) {
		struct timespec now, step;
		clock_gettime(CLOCK_REALTIME, &now);
		if (now.tv_sec > deadline.tv_sec || (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
			pthread_mutex_unlock(&gate_mutex);
			gate_open();
			return -EBUSY;
		}
		step = now;
		step.tv_nsec += 1000000;
		if (step.tv_nsec >= 1000000000) {
			step.tv_sec++;
			step.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&gate_cond, &gate_mutex, &step);
	}
	pthread_mutex_unlock(&gate_mutex);
	return 0;
}

/* ------------------------------------------------------- device contexts */

/*
 * Copies: one copy engine per direction fills the PCIe link (55 GB/s each
 * way on the H100, the same with one stream or four), so two streams are
 * enough to keep one copy queued behind the running one, and large chunks
 * keep the per-copy cost out of sight. VRAM_HOOK_COPY_STREAMS and
 * VRAM_HOOK_COPY_CHUNK change both for measurements and tests.
 */
#define COPY_STREAMS_MAX 4
#define COPY_STREAMS_DEFAULT 2
#define COPY_CHUNK_DEFAULT (256ull << 20) /* bytes */
#define COPY_CHUNK_MIN (64ull << 10)      /* bytes */
#define TICKETS 64                        /* runs of copies whose release is pending, at most */

struct dev_ctx {
	CUcontext ctx;                 /* the device's primary context, retained once */
	CUstream streams[COPY_STREAMS_MAX];
	CUevent done[TICKETS][COPY_STREAMS_MAX]; /* per ticket slot and stream, made when first needed */
	bool ready;
};
static struct dev_ctx devctx[VRAM_HOOK_MAX_DEVICES];

/* Makes dev's primary context current on this thread, with copy streams. */
static int use_device(int dev)
{
	struct dev_ctx *d = &devctx[dev];
	if (!d->ready) {
		if (VRAM_REAL(cuDevicePrimaryCtxRetain)(&d->ctx, dev) != CUDA_SUCCESS)
			return -ENODEV;
		if (VRAM_REAL(cuCtxSetCurrent)(d->ctx) != CUDA_SUCCESS)
			return -ENODEV;
		for (int i = 0; i < COPY_STREAMS_MAX; i++)
			if (VRAM_REAL(cuStreamCreate)(&d->streams[i], CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS)
				return -ENOMEM;
		d->ready = true;
	}
	return VRAM_REAL(cuCtxSetCurrent)(d->ctx) == CUDA_SUCCESS ? 0 : -ENODEV;
}

static int sync_device_streams(int dev)
{
	int err = 0;
	if (use_device(dev) < 0)
		return -ENODEV;
	for (int i = 0; i < COPY_STREAMS_MAX; i++)
		if (VRAM_REAL(cuStreamSynchronize)(devctx[dev].streams[i]) != CUDA_SUCCESS)
			err = -EIO;
	return err;
}

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The largest power of two that is <= v (v > 0). */
static uint64_t pow2_floor(uint64_t v)
{
	while (v & (v - 1))
		v &= v - 1;
	return v;
}

/* ------------------------------------------------------------ work lists */

struct item {
	struct vram_hook_phys *phys;
	CUdeviceptr va;                /* where the whole allocation is mapped */
	bool temp_va;                  /* va was mapped for the copy only */
	CUmemGenericAllocationHandle fresh; /* restore: the new physical memory */
};

/* A mapping that covers the whole of p, or 0. */
static CUdeviceptr full_mapping(const struct vram_hook_phys *p)
{
	for (const struct vram_hook_map *m = p->maps; m; m = m->next_in_phys)
		if (m->offset == 0 && m->size == p->size)
			return m->va;
	return 0;
}

/* Maps handle somewhere for a copy, when the program has no full mapping. */
static int temp_map(struct item *it, CUmemGenericAllocationHandle handle)
{
	struct vram_hook_phys *p = it->phys;
	CUmemAccessDesc acc = { { CU_MEM_LOCATION_TYPE_DEVICE, p->dev }, CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CUdeviceptr va = 0;
	if (VRAM_REAL(cuMemAddressReserve)(&va, p->size, 0, 0, 0) != CUDA_SUCCESS)
		return -ENOMEM;
	if (VRAM_REAL(cuMemMap)(va, p->size, 0, handle, 0) != CUDA_SUCCESS)
		goto out_free;
	if (VRAM_REAL(cuMemSetAccess)(va, p->size, &acc, 1) != CUDA_SUCCESS)
		goto out_unmap;
	it->va = va;
	it->temp_va = true;
	return 0;
out_unmap:
	VRAM_REAL(cuMemUnmap)(va, p->size);
out_free:
	VRAM_REAL(cuMemAddressFree)(va, p->size);
	return -EIO;
}

static void temp_unmap(struct item *it)
{
	if (!it->temp_va)
		return;
	VRAM_REAL(cuMemUnmap)(it->va, it->phys->size);
	VRAM_REAL(cuMemAddressFree)(it->va, it->phys->size);
	it->temp_va = false;
	it->va = 0;
}

/* How copies are cut and spread over the streams, for one operation. */
struct copier {
	unsigned streams;              /* streams used per device, 1..COPY_STREAMS_MAX */
	uint64_t chunk;                /* bytes per copy at most, a power of two */
	unsigned next;                 /* round robin over the streams */
	unsigned used;                 /* bit mask: streams given a copy since the last ticket */
};

static struct copier copier_new(void)
{
	struct copier cp = { .streams = COPY_STREAMS_DEFAULT, .chunk = COPY_CHUNK_DEFAULT };
	const char *s = secure_getenv("VRAM_HOOK_COPY_STREAMS");
	if (s && *s) {
		long v = strtol(s, NULL, 10);
		if (v >= 1 && v <= COPY_STREAMS_MAX)
			cp.streams = (unsigned)v;
	}
	uint64_t chunk;
	const char *c = secure_getenv("VRAM_HOOK_COPY_CHUNK");
	if (c && vram_hook_parse_bytes(c, &chunk) == 0 && chunk >= COPY_CHUNK_MIN)
		cp.chunk = pow2_floor(chunk);
	return cp;
}

/* Bytes per asynchronous copy of p: never across two pinned ranges. */
static uint64_t copy_step(const struct vram_hook_phys *p, const struct copier *cp)
{
	return p->host_piece && p->host_piece < cp->chunk ? p->host_piece : cp->chunk;
}

/* Issues the copies of [off, off + len) of an item between the device and
 * host (the item's whole buffer), in chunks over its device's streams. */
static int copy_range(struct item *it, void *host, uint64_t off, uint64_t len, bool to_host, struct copier *cp)
{
	struct vram_hook_phys *p = it->phys;
	uint64_t step = copy_step(p, cp), end = off + len;
	if (use_device(p->dev) < 0)
		return -ENODEV;
	for (; off < end; off += step) {
		uint64_t n = end - off < step ? end - off : step;
		unsigned si = cp->next++ % cp->streams;
		CUstream s = devctx[p->dev].streams[si];
		CUresult r = to_host
			? VRAM_REAL(cuMemcpyDtoHAsync_v2)((char *)host + off, it->va + off, n, s)
			: VRAM_REAL(cuMemcpyHtoDAsync_v2)(it->va + off, (char *)host + off, n, s);
		if (r != CUDA_SUCCESS)
			return -EIO;
		cp->used |= 1u << si;
	}
	return 0;
}

static int copy_item(struct item *it, bool to_host, struct copier *cp)
{
	return copy_range(it, it->phys->host, 0, it->phys->size, to_host, cp);
}

static int sync_all_streams(void)
{
	int err = 0;
	for (int d = 0; d < VRAM_HOOK_MAX_DEVICES; d++)
		if (devctx[d].ready && sync_device_streams(d) < 0)
			err = -EIO;
	return err;
}

/* ------------------------------------------------------- pinned buffers */

/*
 * The first offload of an allocation needs a pinned host buffer, and in a VM
 * getting one is bound by first touch of host memory (~2 GB/s from one
 * thread), far below the link. So buffers are made in pieces by several
 * threads at once, and each piece goes to the copy engine the moment it is
 * pinned, while the other threads still fault theirs in.
 *
 * Two ways to make a buffer (VRAM_HOOK_PIN_METHOD):
 *  - register (default): one anonymous mapping per allocation, aligned for
 *    huge pages; each piece is faulted in by a worker (MADV_POPULATE_WRITE,
 *    else one store per page) and pinned with cuMemHostRegister on its own.
 *    Copies never cross a piece, so each runs from one pinned range.
 *  - hostalloc: one cuMemHostAlloc per allocation, allocations spread over
 *    the workers.
 */
#define PIN_PIECE_DEFAULT (256ull << 20) /* bytes */
#define PIN_THREADS_MAX 64
#define HUGE_PAGE (2ull << 20)            /* bytes */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define CU_MEMHOSTREGISTER_PORTABLE 0x01

_Static_assert((PIN_PIECE_DEFAULT & (PIN_PIECE_DEFAULT - 1)) == 0 &&
	       (COPY_CHUNK_DEFAULT & (COPY_CHUNK_DEFAULT - 1)) == 0, "pieces and chunks nest");

enum pin_method { PIN_REGISTER, PIN_HOSTALLOC };

struct pin_settings {
	enum pin_method method;
	unsigned threads;
	uint64_t piece;                /* bytes, a power of two >= the page */
};

static uint64_t page_size(void)
{
	long p = sysconf(_SC_PAGESIZE);
	return p > 0 ? (uint64_t)p : 4096;
}

static struct pin_settings pin_settings(void)
{
	struct pin_settings ps = { PIN_REGISTER, 8, PIN_PIECE_DEFAULT };
	const char *m = secure_getenv("VRAM_HOOK_PIN_METHOD");
	if (m && !strcmp(m, "hostalloc"))
		ps.method = PIN_HOSTALLOC;
	cpu_set_t cpus;
	if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0 && CPU_COUNT(&cpus) > 0 &&
	    (unsigned)CPU_COUNT(&cpus) < ps.threads)
		ps.threads = (unsigned)CPU_COUNT(&cpus);
	const char *t = secure_getenv("VRAM_HOOK_PIN_THREADS");
	if (t && *t) {
		long v = strtol(t, NULL, 10);
		if (v >= 1 && v <= PIN_THREADS_MAX)
			ps.threads = (unsigned)v;
	}
	uint64_t piece;
	const char *pc = secure_getenv("VRAM_HOOK_PIN_PIECE");
	if (pc && vram_hook_parse_bytes(pc, &piece) == 0 && piece >= page_size())
		ps.piece = pow2_floor(piece);
	return ps;
}

void vram_hook_host_free(struct vram_hook_phys *p)
{
	if (!p->host)
		return;
	if (p->host_piece) {
		for (uint64_t off = 0; off < p->size; off += p->host_piece)
			VRAM_REAL(cuMemHostUnregister)((char *)p->host + off);
		munmap(p->host, p->size);
	} else {
		VRAM_REAL(cuMemFreeHost)(p->host);
	}
	p->host = NULL;
	p->host_piece = 0;
}

/* Reserves size bytes of host memory, 2 MiB aligned so that the kernel can
 * back it with huge pages, not inherited by a child. Nothing is touched. */
static void *host_map(uint64_t size)
{
	uint64_t len = size + HUGE_PAGE;
	char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	char *start = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
	if (start > raw)
		munmap(raw, (size_t)(start - raw));
	if (raw + len > start + size)
		munmap(start + size, (size_t)(raw + len - (start + size)));
	madvise(start, size, MADV_HUGEPAGE);
	madvise(start, size, MADV_DONTFORK); /* pinned pages must not turn copy-on-write */
	return start;
}

/* Faults [p, p + len) in; the kernel does it in one call where it can. */
static void host_populate(char *p, uint64_t len)
{
	if (madvise(p, len, MADV_POPULATE_WRITE) == 0)
		return;
	uint64_t step = page_size();
	for (uint64_t off = 0; off < len; off += step)
		((volatile char *)p)[off] = 0;
}

/* One piece of a pinned buffer, made by a worker. */
struct pin_unit {
	uint32_t item;                 /* index into the job's items */
	uint64_t offset, len;          /* bytes into the allocation */
	_Atomic int state;             /* 0 pending, 1 pinned, -1 failed */
};

struct pin_job {
	struct item *items;
	void **host;                   /* per item: the buffer being made, or NULL */
	struct pin_unit *units;
	size_t nunits;
	_Atomic size_t next;           /* next unit a worker takes */
	_Atomic int failed;            /* a unit failed: workers stop */
	enum pin_method method;
	uint64_t piece;                /* bytes */
	CUcontext ctx;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static void *pin_worker(void *arg)
{
	struct pin_job *job = arg;
	if (job->ctx)
		VRAM_REAL(cuCtxSetCurrent)(job->ctx);
	for (;;) {
		size_t u = atomic_fetch_add(&job->next, 1);
		if (u >= job->nunits || atomic_load(&job->failed))
			break;
		struct pin_unit *un = &job->units[u];
		int state = 1;
		if (job->method == PIN_HOSTALLOC) {
			void *h = NULL;
			if (VRAM_REAL(cuMemHostAlloc)(&h, un->len, CU_MEMHOSTALLOC_PORTABLE) != CUDA_SUCCESS || !h)
				state = -1;
			else
				job->host[un->item] = h;
		} else {
			char *base = (char *)job->host[un->item] + un->offset;
			host_populate(base, un->len);
			if (VRAM_REAL(cuMemHostRegister_v2)(base, un->len, CU_MEMHOSTREGISTER_PORTABLE) != CUDA_SUCCESS)
				state = -1;
		}
		pthread_mutex_lock(&job->lock);
		atomic_store(&un->state, state);
		if (state < 0)
			atomic_store(&job->failed, 1);
		pthread_cond_broadcast(&job->cond);
		pthread_mutex_unlock(&job->lock);
	}
	return NULL;
}

/* Waits until unit u is pinned. Returns false when it failed or will never
 * be made. */
static bool pin_wait(struct pin_job *job, size_t u)
{
	struct pin_unit *un = &job->units[u];
	pthread_mutex_lock(&job->lock);
	while (atomic_load(&un->state) == 0 && !atomic_load(&job->failed))
		pthread_cond_wait(&job->cond, &job->lock);
	pthread_mutex_unlock(&job->lock);
	return atomic_load(&un->state) > 0;
}

/*
 * After the workers are gone: hands each complete buffer to its allocation,
 * and takes apart the ones that are not complete.
 */
static void pin_finish(struct pin_job *job, size_t nitems)
{
	size_t u = 0;
	for (size_t i = 0; i < nitems; i++) {
		if (!job->host[i])
			continue;
		struct vram_hook_phys *p = job->items[i].phys;
		bool complete = true;
		while (u < job->nunits && job->units[u].item < i)
			u++;
		size_t first = u;
		while (u < job->nunits && job->units[u].item == i) {
			if (atomic_load(&job->units[u].state) <= 0)
				complete = false;
			u++;
		}
		if (complete) {
			p->host = job->host[i];
			p->host_piece = job->method == PIN_REGISTER ? job->piece : 0;
			continue;
		}
		if (job->method == PIN_REGISTER) {
			for (size_t k = first; k < u; k++)
				if (atomic_load(&job->units[k].state) > 0)
					VRAM_REAL(cuMemHostUnregister)((char *)job->host[i] + job->units[k].offset);
			munmap(job->host[i], p->size);
		} else {
			VRAM_REAL(cuMemFreeHost)(job->host[i]);
		}
	}
}

struct pin_stats {
	uint64_t bytes;                /* of new pinned buffers */
	size_t pieces;
	unsigned threads;
};

/*
 * Copies every item to its host buffer, making the buffers that do not exist
 * yet on worker threads while the copies of the ready pieces run. The copies
 * are issued, not waited for. Returns 0, -ENOMEM (no pinned memory) or -EIO;
 * bytes counts what was issued.
 */
static int offload_copy_out(struct item *items, size_t n, struct copier *cp, struct pin_stats *ret_stats,
			    uint64_t *ret_bytes)
{
	struct pin_settings ps = pin_settings();
	struct pin_job job = { .items = items, .method = ps.method, .piece = ps.piece };
	pthread_t workers[PIN_THREADS_MAX];
	unsigned nworkers = 0;
	int err = 0;

	for (size_t i = 0; i < n; i++)
		if (!items[i].phys->host)
			job.nunits += ps.method == PIN_HOSTALLOC ? 1 : (items[i].phys->size + ps.piece - 1) / ps.piece;
	if (job.nunits) {
		job.host = calloc(n, sizeof(*job.host));
		job.units = calloc(job.nunits, sizeof(*job.units));
		if (!job.host || !job.units) {
			err = -ENOMEM;
			goto out_free;
		}
	}
	size_t u = 0;
	for (size_t i = 0; i < n && job.nunits; i++) {
		struct vram_hook_phys *p = items[i].phys;
		if (p->host)
			continue;
		if (ps.method == PIN_HOSTALLOC) {
			job.units[u++] = (struct pin_unit){ .item = (uint32_t)i, .offset = 0, .len = p->size };
			continue;
		}
		job.host[i] = host_map(p->size);
		if (!job.host[i]) {
			err = -ENOMEM;
			goto out_finish;
		}
		for (uint64_t off = 0; off < p->size; off += ps.piece)
			job.units[u++] = (struct pin_unit){ .item = (uint32_t)i, .offset = off,
							    .len = p->size - off < ps.piece ? p->size - off : ps.piece };
		ret_stats->bytes += p->size;
	}
	if (ps.method == PIN_HOSTALLOC)
		for (size_t k = 0; k < job.nunits; k++)
			ret_stats->bytes += job.units[k].len;
	ret_stats->pieces = job.nunits;

	pthread_mutex_init(&job.lock, NULL);
	pthread_cond_init(&job.cond, NULL);
	if (job.nunits) {
		job.ctx = use_device(items[0].phys->dev) == 0 ? devctx[items[0].phys->dev].ctx : NULL;
		unsigned want = ps.threads < job.nunits ? ps.threads : (unsigned)job.nunits;
		while (nworkers < want && pthread_create(&workers[nworkers], NULL, pin_worker, &job) == 0)
			nworkers++;
		if (!nworkers)
			pin_worker(&job); /* no thread to be had: make them all first */
	}
	ret_stats->threads = nworkers ? nworkers : (job.nunits ? 1 : 0);

	/* Items in order; within a new buffer, piece by piece as they come. */
	u = 0;
	for (size_t i = 0; i < n && !err; i++) {
		struct vram_hook_phys *p = items[i].phys;
		if (p->host) {
			err = copy_item(&items[i], true, cp);
			*ret_bytes += p->size;
			continue;
		}
		for (; u < job.nunits && job.units[u].item == i && !err; u++) {
			if (!pin_wait(&job, u)) {
				err = -ENOMEM;
				break;
			}
			err = copy_range(&items[i], job.host[i], job.units[u].offset, job.units[u].len, true, cp);
			*ret_bytes += job.units[u].len;
		}
	}
	if (err)
		atomic_store(&job.failed, 1);
	for (unsigned w = 0; w < nworkers; w++)
		pthread_join(workers[w], NULL);
	pthread_mutex_destroy(&job.lock);
	pthread_cond_destroy(&job.cond);
	/* A buffer that is taken apart must have no copy left into it. */
	if (err)
		sync_all_streams();
out_finish:
	if (job.nunits)
		pin_finish(&job, n);
out_free:
	free(job.units);
	free(job.host);
	return err;
}

/* ------------------------------------------------- buffers made ahead */

/*
 * PREPARE_HOST: vramd, when its host budget allows, has a running process
 * make the pinned buffers of its first offload ahead of time, so that the
 * offload runs at link speed. One background thread at the lowest CPU
 * priority (SCHED_IDLE) makes them allocation by allocation, piece by
 * piece as the first offload does, and hands each complete buffer to its
 * allocation under the allocation lock, provided the allocation is still
 * there, on the device and without one. It stops as soon as the process is
 * no longer running (an offload takes over: it holds the lock throughout
 * and makes the rest itself), at a DROP_HOST (which waits for it), or when
 * its limit of bytes is made. The buffers are kept buffers like those kept
 * after a restore: they count in vramd's host ledger and DROP_HOST frees
 * them first when host memory is short.
 */
static pthread_mutex_t prep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_t prep_thread;
static bool prep_joinable;          /* under prep_lock */
static _Atomic bool prep_stop;
static _Atomic bool prep_busy;
static _Atomic uint64_t prep_limit; /* bytes the running one may still make */

/* The next allocation that has no buffer, or NULL; under vram_hook_lock. */
static struct vram_hook_phys *prep_next(uint64_t *ret_size, CUmemGenericAllocationHandle *ret_real, int *ret_dev)
{
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next) {
		if (p->movable && p->real && p->dev >= 0 && !p->host && !p->offloaded) {
			*ret_size = p->size;
			*ret_real = p->real;
			*ret_dev = p->dev;
			return p;
		}
	}
	return NULL;
}

static void *prep_main(void *arg)
{
	(void)arg;
	struct sched_param sp = { 0 };
	pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
	struct pin_settings ps = pin_settings();
	uint64_t made = 0, start = now_usec();
	unsigned buffers = 0;
	CUcontext ctx = NULL;
	int ctx_dev = -1;
	for (;;) {
		uint64_t size = 0;
		CUmemGenericAllocationHandle real = 0;
		int dev = -1;
		pthread_mutex_lock(&vram_hook_lock);
		struct vram_hook_phys *p = atomic_load(&vram_hook_state) == VRAM_HOOK_RUNNING
						   ? prep_next(&size, &real, &dev) : NULL;
		pthread_mutex_unlock(&vram_hook_lock);
		if (!p || atomic_load(&prep_stop) || size > atomic_load(&prep_limit))
			break;
		if (dev != ctx_dev) {
			/* retained for good, as the copy streams' contexts are (use_device) */
			ctx = NULL;
			if (VRAM_REAL(cuDevicePrimaryCtxRetain)(&ctx, dev) != CUDA_SUCCESS ||
			    VRAM_REAL(cuCtxSetCurrent)(ctx) != CUDA_SUCCESS)
				break;
			ctx_dev = dev;
		}
		char *h = host_map(size);
		if (!h)
			break;
		uint64_t done = 0;
		for (; done < size && !atomic_load(&prep_stop) &&
		       atomic_load(&vram_hook_state) == VRAM_HOOK_RUNNING; done += ps.piece) {
			uint64_t len = size - done < ps.piece ? size - done : ps.piece;
			host_populate(h + done, len);
			if (VRAM_REAL(cuMemHostRegister_v2)(h + done, len, CU_MEMHOSTREGISTER_PORTABLE) != CUDA_SUCCESS)
				break;
		}
		bool given = false;
		if (done >= size) {
			pthread_mutex_lock(&vram_hook_lock);
			/* still there as it was, on the device, running, without a buffer */
			for (struct vram_hook_phys *q = vram_hook_phys_list; q; q = q->next)
				if (q == p && q->real == real && q->size == size && !q->host && !q->offloaded &&
				    atomic_load(&vram_hook_state) == VRAM_HOOK_RUNNING && !atomic_load(&prep_stop)) {
					q->host = h;
					q->host_piece = ps.piece;
					given = true;
				}
			pthread_mutex_unlock(&vram_hook_lock);
		}
		if (!given) {
			for (uint64_t off = 0; off < done && off < size; off += ps.piece)
				VRAM_REAL(cuMemHostUnregister)(h + off);
			munmap(h, size);
			if (done < size)
				break;
			continue;
		}
		made += size;
		buffers++;
		atomic_fetch_sub(&prep_limit, size);
		atomic_fetch_add(&vram_hook_usage_seq, 1);
	}
	vram_hook_log(VRAM_HOOK_LOG_INFO, "made %llu bytes of pinned host buffers ahead (%u buffers) in %.3f s",
		      (unsigned long long)made, buffers, (double)(now_usec() - start) / 1e6);
	atomic_store(&prep_busy, false);
	return NULL;
}

/* Stops the buffer maker and waits for it; a no-op when none runs. */
static void prep_join(void)
{
	pthread_mutex_lock(&prep_lock);
	if (prep_joinable) {
		atomic_store(&prep_stop, true);
		pthread_join(prep_thread, NULL);
		prep_joinable = false;
	}
	pthread_mutex_unlock(&prep_lock);
}

void vram_hook_prepare_host(uint64_t limit, struct vram_hook_op_result *ret)
{
	memset(ret, 0, sizeof(*ret));
	uint64_t want = 0;
	pthread_mutex_lock(&vram_hook_lock);
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next)
		if (p->movable && p->real && p->dev >= 0 && !p->host && !p->offloaded)
			want += p->size;
	pthread_mutex_unlock(&vram_hook_lock);
	if (atomic_load(&vram_hook_state) != VRAM_HOOK_RUNNING) {
		ret->status = -EBUSY;
		vram_hook_textf(ret->text, sizeof(ret->text),
				"Failed to make host buffers ahead: the process is not running on the GPU");
		return;
	}
	if (atomic_load(&prep_busy)) {
		ret->status = -EALREADY;
		vram_hook_textf(ret->text, sizeof(ret->text), "host buffers are being made already");
		return;
	}
	prep_join(); /* the last one's thread, finished */
	pthread_mutex_lock(&prep_lock);
	atomic_store(&prep_stop, false);
	atomic_store(&prep_limit, limit);
	atomic_store(&prep_busy, true);
	if (want && pthread_create(&prep_thread, NULL, prep_main, NULL) == 0) {
		prep_joinable = true;
	} else {
		atomic_store(&prep_busy, false);
		if (want)
			ret->status = -EAGAIN;
	}
	pthread_mutex_unlock(&prep_lock);
	ret->bytes = want < limit ? want : limit;
	vram_hook_textf(ret->text, sizeof(ret->text), "%s %llu bytes of host buffers ahead, in the background",
			ret->status ? "could not start making" : "making", (unsigned long long)ret->bytes);
}

static bool keep_host_default(void)
{
	const char *s = secure_getenv("VRAM_HOOK_KEEP_HOST");
	return !(s && s[0] == '0');
}

static bool drop_host_after_restore;

/* The running offload's or restore's part in an overlapped swap; NULL:
 * none (see vram_hook_offload). */
static const struct vram_hook_swap *swap_now;

static double gbps(uint64_t bytes, uint64_t usec)
{
	return usec ? (double)bytes / (double)usec / 1000.0 : 0.0;
}

/* ------------------------------------------------------ phase timings */

/*
 * Where an offload or a restore spent its time, reported in its answer.
 * Offload: drain (closing the gate: the program's calls finishing) + sync
 * (listing, synchronizing the contexts, trimming pools, mapping for copies)
 * + copy (first copy issued to every copy seen done) + tail (after the
 * copies) = the total; release is the time in cuMemUnmap and cuMemRelease,
 * behind the copies but for what falls into tail. Restore: head (up to the
 * first copy: the first allocation created and mapped) + copy + tail = the
 * total; create and map are the time in cuMemCreate and in mapping, most of
 * it behind the copies.
 */
struct phases {
	uint64_t start;                /* usec, monotonic */
	uint64_t first_copy;           /* usec: the first copy issued; 0: none yet */
	uint64_t copies_done;          /* usec: every copy seen done; 0: not yet */
	uint64_t drain_us;
	uint64_t release_us;
	uint64_t create_us;
	uint64_t map_us;
};

static double ms(uint64_t usec)
{
	return (double)usec / 1000.0;
}

/* Writes "[ms: ...]" of an operation that ended at end (usec) to out;
 * returns what snprintf returns. */
static int phases_format(char *out, size_t cap, const struct phases *ph, bool offload, uint64_t end)
{
	uint64_t first = ph->first_copy ? ph->first_copy : end;
	uint64_t done = ph->copies_done > first ? ph->copies_done : first;
	uint64_t before = first - ph->start;
	if (offload)
		return snprintf(out, cap, "[ms: drain=%.1f sync=%.1f copy=%.1f release=%.1f tail=%.1f]",
				ms(ph->drain_us), ms(before > ph->drain_us ? before - ph->drain_us : 0),
				ms(done - first), ms(ph->release_us), ms(end > done ? end - done : 0));
	return snprintf(out, cap, "[ms: create=%.1f map=%.1f head=%.1f copy=%.1f tail=%.1f]", ms(ph->create_us),
			ms(ph->map_us), ms(before), ms(done - first), ms(end > done ? end - done : 0));
}

/* ------------------------------------------------ release behind the copies */

/* Gives the device memory of an item whose copy is in host memory back. */
static void release_item(struct item *it)
{
	struct vram_hook_phys *p = it->phys;
	temp_unmap(it);
	for (struct vram_hook_map *m = p->maps; m; m = m->next_in_phys)
		if (VRAM_REAL(cuMemUnmap)(m->va, m->size) != CUDA_SUCCESS)
			vram_hook_log(VRAM_HOOK_LOG_WARN, "unmap of %#llx failed during offload",
				      (unsigned long long)m->va);
	VRAM_REAL(cuMemRelease)(p->real);
	p->real = 0;
	p->offloaded = true;
	atomic_fetch_add(&vram_hook_usage[p->dev].offloaded, p->size);
}

/*
 * A warm offload issues its copies item by item without waiting, and cuts
 * them into tickets: runs of items on one device worth a chunk or more,
 * each closed by an event on every stream that got one of its copies.
 * Streams run in order, so once a ticket's events are done its items are in
 * host memory, and their device memory goes while the copies of later
 * tickets still run. Tickets are released in order, so the released items
 * are always the first of the list. At most TICKETS are pending; issuing
 * waits for the oldest when all are taken, with TICKETS - 1 chunks still
 * queued (a quarter of a second of copies at the default chunk).
 */
struct ticket {
	size_t end;                    /* its items end here and start at the previous ticket's end */
	int dev;
	unsigned streams;              /* bit mask: the streams with an event */
};

struct release_pipe {
	struct item *items;
	struct copier *cp;
	uint64_t freed[VRAM_HOOK_MAX_DEVICES]; /* bytes released so far, per device */
	struct ticket ring[TICKETS];
	unsigned head, count;          /* slot of the oldest pending ticket; pending tickets */
	size_t issued;                 /* items whose copies are all issued */
	size_t released;               /* items released: items[0, released) */
	uint64_t open_bytes;           /* bytes issued since the last ticket */
	int open_dev;                  /* their device; -1: none */
	uint64_t release_us;           /* in release_item */
	uint64_t copies_done;          /* usec: the last ticket seen done */
};

/* Waits for the oldest ticket and releases its items. Returns 0, or -EIO
 * when one of its copies failed (nothing of it is released). */
static int pipe_release_oldest(struct release_pipe *pp)
{
	struct ticket *t = &pp->ring[pp->head];
	for (unsigned s = 0; s < COPY_STREAMS_MAX; s++)
		if ((t->streams & (1u << s)) &&
		    VRAM_REAL(cuEventSynchronize)(devctx[t->dev].done[pp->head][s]) != CUDA_SUCCESS)
			return -EIO;
	uint64_t t0 = now_usec();
	pp->copies_done = t0;
	for (; pp->released < t->end; pp->released++) {
		pp->freed[pp->items[pp->released].phys->dev] += pp->items[pp->released].phys->size;
		release_item(&pp->items[pp->released]);
	}
	pp->release_us += now_usec() - t0;
	if (swap_now && swap_now->progress)
		swap_now->progress(swap_now->arg, pp->freed);
	pp->head = (pp->head + 1) % TICKETS;
	pp->count--;
	return 0;
}

/* Closes the open ticket with an event behind its copies on each stream it
 * used. Returns 0, -EIO or -ENODEV. */
static int pipe_close(struct release_pipe *pp)
{
	if (pp->open_dev < 0)
		return 0;
	if (pp->count == TICKETS) {
		int err = pipe_release_oldest(pp);
		if (err < 0)
			return err;
	}
	unsigned slot = (pp->head + pp->count) % TICKETS;
	struct dev_ctx *d = &devctx[pp->open_dev];
	if (use_device(pp->open_dev) < 0)
		return -ENODEV;
	for (unsigned s = 0; s < COPY_STREAMS_MAX; s++) {
		if (!(pp->cp->used & (1u << s)))
			continue;
		if (!d->done[slot][s] &&
		    VRAM_REAL(cuEventCreate)(&d->done[slot][s], CU_EVENT_DISABLE_TIMING) != CUDA_SUCCESS) {
			d->done[slot][s] = NULL;
			return -EIO;
		}
		if (VRAM_REAL(cuEventRecord)(d->done[slot][s], d->streams[s]) != CUDA_SUCCESS)
			return -EIO;
	}
	pp->ring[slot] = (struct ticket){ .end = pp->issued, .dev = pp->open_dev, .streams = pp->cp->used };
	pp->count++;
	pp->cp->used = 0;
	pp->open_bytes = 0;
	pp->open_dev = -1;
	return 0;
}

/*
 * Warm offload: every item has its host buffer, so only a copy can fail.
 * Issues the copies item by item, closes a ticket whenever a chunk's worth
 * is issued or the device changes, then waits for the tickets in turn and
 * releases their items. Returns 0 or -EIO; bytes counts what was issued.
 * On failure, items[0, pp->released) are released and copies may still run.
 */
static int offload_pipelined(struct release_pipe *pp, size_t n, uint64_t *ret_bytes)
{
	int err = 0;
	for (size_t i = 0; i < n && !err; i++) {
		struct vram_hook_phys *p = pp->items[i].phys;
		if (pp->open_dev >= 0 && pp->open_dev != p->dev && (err = pipe_close(pp)) < 0)
			break;
		err = copy_item(&pp->items[i], true, pp->cp);
		if (err < 0)
			break;
		*ret_bytes += p->size;
		pp->issued = i + 1;
		pp->open_dev = p->dev;
		pp->open_bytes += p->size;
		if (pp->open_bytes >= pp->cp->chunk)
			err = pipe_close(pp);
	}
	if (!err)
		err = pipe_close(pp);
	while (!err && pp->count)
		err = pipe_release_oldest(pp);
	return err < 0 ? -EIO : 0;
}

/* ------------------------------------------------ mapping for a restore */

static void free_fresh(struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (items[i].fresh)
			VRAM_REAL(cuMemRelease)(items[i].fresh);
		items[i].fresh = 0;
	}
}

/* Unmaps p's mappings from the first up to stop (NULL: all). */
static void unmap_upto(struct vram_hook_phys *p, const struct vram_hook_map *stop)
{
	for (struct vram_hook_map *m = p->maps; m != stop; m = m->next_in_phys)
		VRAM_REAL(cuMemUnmap)(m->va, m->size);
}

/* Maps it->fresh at every address it had, with the access it had, and sets
 * where to copy: a full mapping, else one of its own. Returns 0, or -EIO
 * with nothing of it mapped and why (cap bytes) saying what failed. */
static int map_item(struct item *it, char *why, size_t cap)
{
	struct vram_hook_phys *p = it->phys;
	for (struct vram_hook_map *m = p->maps; m; m = m->next_in_phys) {
		if (VRAM_REAL(cuMemMap)(m->va, m->size, m->offset, it->fresh, 0) != CUDA_SUCCESS ||
		    (m->naccess && VRAM_REAL(cuMemSetAccess)(m->va, m->size, m->access, m->naccess) != CUDA_SUCCESS)) {
			unmap_upto(p, m);
			VRAM_REAL(cuMemUnmap)(m->va, m->size); /* mapped, but without its access */
			snprintf(why, cap, "cannot map %#llx again", (unsigned long long)m->va);
			return -EIO;
		}
	}
	it->va = full_mapping(p);
	it->temp_va = false;
	if (!it->va && temp_map(it, it->fresh) < 0) {
		unmap_upto(p, NULL);
		snprintf(why, cap, "cannot map memory for copying");
		return -EIO;
	}
	return 0;
}

/* Bytes of free device memory, or 0 if unknown. */
static uint64_t device_free(int dev)
{
	size_t f = 0, t = 0;
	if (use_device(dev) < 0 || VRAM_REAL(cuMemGetInfo_v2)(&f, &t) != CUDA_SUCCESS)
		return 0;
	return f;
}

/* How far map_items got: what settle_items must undo, and what it lacked. */
struct map_run {
	size_t mapped;                 /* items[0, mapped) have their memory and mappings */
	int short_dev;                 /* the device that had too little memory; -1: none */
	uint64_t short_size;           /* bytes of the allocation it could not give */
};

/*
 * For items[0, n) in turn: new physical memory, its mappings, then (with
 * cp) its copies from its host buffer, so that the copies of one run while
 * the next is created and mapped. Without cp nothing is copied: the caller
 * fills the memory (a restore from the park file). Returns 0, -ENOMEM (the
 * device has too little memory: run says which) or -EIO with why (cap
 * bytes); either way settle_items comes next.
 */
static int map_items(struct item *items, size_t n, struct copier *cp, struct phases *ph, struct map_run *run,
		     char *why, size_t cap)
{
	uint64_t created[VRAM_HOOK_MAX_DEVICES] = { 0 }; /* bytes, for the grant */
	int err = 0;
	while (run->mapped < n && !err) {
		struct item *it = &items[run->mapped];
		struct vram_hook_phys *p = it->phys;
		if (swap_now && swap_now->wait_grant) {
			/* the copies issued so far run on while this waits */
			err = swap_now->wait_grant(swap_now->arg, p->dev, created[p->dev] + p->size);
			if (err < 0) {
				snprintf(why, cap, "%s", err == -ECANCELED ? "vramd gave the restore up"
							 : err == -ETIMEDOUT ? "no grant of device memory came in time"
									     : "vramd went away during the restore");
				break;
			}
		}
		created[p->dev] += p->size;
		uint64_t t0 = now_usec();
		CUresult r = VRAM_REAL(cuMemCreate)(&it->fresh, p->size, &p->prop, 0);
		uint64_t t1 = now_usec();
		ph->create_us += t1 - t0;
		if (r != CUDA_SUCCESS) {
			it->fresh = 0;
			run->short_dev = p->dev;
			run->short_size = p->size;
			return -ENOMEM;
		}
		err = map_item(it, why, cap);
		ph->map_us += now_usec() - t1;
		if (err < 0)
			break;
		run->mapped++;
		if (!cp)
			continue;
		if (!ph->first_copy)
			ph->first_copy = now_usec();
		if (copy_item(it, false, cp) < 0) {
			snprintf(why, cap, "a copy to the device failed");
			err = -EIO;
		}
	}
	return err;
}

/*
 * Waits for every copy issued, then either (err 0, and every copy done)
 * makes items[0, n) the device memory of their allocations, no longer
 * offloaded nor parked, or undoes what map_items did: the items stay
 * offloaded, their host copies (or park file) untouched. Returns 0, or
 * the error with why (cap bytes); for -ENOMEM *ret_missing says how many
 * bytes the device lacked.
 */
static int settle_items(struct item *items, size_t n, const struct map_run *run, int err, struct phases *ph,
			char *why, size_t cap, uint64_t *ret_missing)
{
	/* Nothing may copy into memory that is mapped away below. */
	if (sync_all_streams() < 0 && !err) {
		snprintf(why, cap, "a copy to the device failed");
		err = -EIO;
	}
	ph->copies_done = now_usec();
	for (size_t i = 0; i < run->mapped; i++)
		temp_unmap(&items[i]);
	if (err) {
		for (size_t i = 0; i < run->mapped; i++)
			unmap_upto(items[i].phys, NULL);
		free_fresh(items, n);
		if (err == -ENOMEM && run->short_dev >= 0) {
			uint64_t need = 0;
			for (size_t j = 0; j < n; j++)
				if (items[j].phys->dev == run->short_dev)
					need += items[j].phys->size;
			uint64_t avail = device_free(run->short_dev);
			*ret_missing = need > avail ? need - avail : run->short_size;
			snprintf(why, cap, "device %d needs %llu bytes but has %llu free (%llu bytes missing)",
				 run->short_dev, (unsigned long long)need, (unsigned long long)avail,
				 (unsigned long long)*ret_missing);
		}
		return err;
	}
	for (size_t i = 0; i < n; i++) {
		struct vram_hook_phys *p = items[i].phys;
		p->real = items[i].fresh;
		items[i].fresh = 0;
		p->offloaded = false;
		p->parked = false;
		atomic_fetch_sub(&vram_hook_usage[p->dev].offloaded, p->size);
	}
	return 0;
}

/*
 * Brings items[0, n) back to the device from their host buffers. Returns
 * 0 (the items are on the device again), or with everything undone (the
 * items stay offloaded, their host copies untouched): -ENOMEM (the device
 * has too little memory; *ret_missing says how many bytes) or -EIO; why
 * (cap bytes) then says what failed.
 */
static int restore_items(struct item *items, size_t n, struct copier *cp, struct phases *ph, char *why,
			 size_t cap, uint64_t *ret_missing)
{
	struct map_run run = { .short_dev = -1 };
	int err = map_items(items, n, cp, ph, &run, why, cap);
	return settle_items(items, n, &run, err, ph, why, cap, ret_missing);
}

/* ---------------------------------------------------------------- offload */

/*
 * Groups (see proto/hook_proto.h): the gate of a process held closed by
 * vramd between the phases of a group's offload or restore. Guarded by
 * suspend_mutex.
 */
static bool gate_held;
static bool restore_keeps_gate; /* set by vram_hook_restore_hold for its call */

void vram_hook_gate_hold(struct vram_hook_op_result *ret)
{
	memset(ret, 0, sizeof(*ret));
	uint64_t start = now_usec();
	pthread_mutex_lock(&suspend_mutex);
	if (gate_held || atomic_load(&vram_hook_state) != VRAM_HOOK_RUNNING) {
		ret->status = -EALREADY;
		snprintf(ret->text, sizeof(ret->text), "Failed to close the gate: the process is not running");
		goto out_unlock;
	}
	atomic_store(&vram_hook_state, VRAM_HOOK_OFFLOADING);
	int err = gate_close(DRAIN_TIMEOUT_MS);
	if (err < 0) {
		ret->status = err;
		snprintf(ret->text, sizeof(ret->text),
			 err == -EIO ? "Failed to close the gate: membarrier failed"
				     : "Failed to close the gate: CUDA calls of the program did not finish within %d ms",
			 DRAIN_TIMEOUT_MS);
		atomic_store(&vram_hook_state, VRAM_HOOK_RUNNING);
		goto out_unlock;
	}
	gate_held = true;
	ret->usec = now_usec() - start;
	ret->nonmovable = vram_hook_nonmovable_total();
	snprintf(ret->text, sizeof(ret->text), "gate closed in %.1f ms; the process waits for the offload",
		 (double)ret->usec / 1000.0);
	vram_hook_log(VRAM_HOOK_LOG_INFO, "%s", ret->text);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
out_unlock:
	pthread_mutex_unlock(&suspend_mutex);
}

/* A RESTORE to a process whose gate is held: opens it. Called with suspend_mutex held. */
static void gate_release(struct vram_hook_op_result *ret)
{
	gate_held = false;
	ret->nonmovable = vram_hook_nonmovable_total();
	snprintf(ret->text, sizeof(ret->text), "gate opened; the process runs");
	vram_hook_log(VRAM_HOOK_LOG_INFO, "%s", ret->text);
	atomic_store(&vram_hook_state, VRAM_HOOK_RUNNING);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
	gate_open();
}

void vram_hook_restore_hold(struct vram_hook_op_result *ret)
{
	pthread_mutex_lock(&suspend_mutex);
	restore_keeps_gate = true;
	pthread_mutex_unlock(&suspend_mutex);
	vram_hook_restore(NULL, ret);
	pthread_mutex_lock(&suspend_mutex);
	restore_keeps_gate = false;
	pthread_mutex_unlock(&suspend_mutex);
}

static void offload_run(bool drop_host, struct vram_hook_op_result *ret)
{
	struct item *items = NULL;
	size_t n = 0;
	struct phases ph = { .start = now_usec() };
	struct copier cp = copier_new();
	struct release_pipe pipe = { .cp = &cp, .open_dev = -1 };
	struct pin_stats pinned = { 0 };
	uint64_t bytes = 0;
	bool warm = true;
	int err;

	memset(ret, 0, sizeof(*ret));
	pthread_mutex_lock(&suspend_mutex);
	/* A group's offload closed the gate already (vram_hook_gate_hold), or
	 * rolls back a restore that kept it closed. */
	bool held = gate_held;
	if (!held && atomic_load(&vram_hook_state) != VRAM_HOOK_RUNNING) {
		ret->status = -EALREADY;
		snprintf(ret->text, sizeof(ret->text), "Failed to offload: the process is already %s",
			 atomic_load(&vram_hook_state) == VRAM_HOOK_PARKED ? "parked" : "offloaded");
		goto out_unlock;
	}
	if (!vram_hook_resolve()) {
		ret->status = -ENODEV;
		snprintf(ret->text, sizeof(ret->text), "Failed to offload: the CUDA driver is not loaded");
		goto out_unlock;
	}
	atomic_store(&vram_hook_state, VRAM_HOOK_OFFLOADING);
	gate_held = false;
	err = held ? 0 : gate_close(DRAIN_TIMEOUT_MS);
	ph.drain_us = now_usec() - ph.start;
	if (err < 0) {
		ret->status = err;
		if (err == -EIO)
			snprintf(ret->text, sizeof(ret->text), "Failed to offload: membarrier failed");
		else
			snprintf(ret->text, sizeof(ret->text),
				 "Failed to offload: CUDA calls of the program did not finish within %d ms",
				 DRAIN_TIMEOUT_MS);
		atomic_store(&vram_hook_state, VRAM_HOOK_RUNNING);
		goto out_unlock;
	}

	/* Idle pool memory is given back, not copied (pool.c); shared memory
	 * moves only with its importers gated (ipc.c). */
	vram_hook_pool_trim_idle();
	vram_hook_ipc_offload_begin();
	pthread_mutex_lock(&vram_hook_lock);
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next)
		if (p->movable && p->real && p->dev >= 0)
			n++;
	items = n ? calloc(n, sizeof(*items)) : NULL;
	if (n && !items) {
		err = -ENOMEM;
		snprintf(ret->text, sizeof(ret->text), "Failed to offload: out of host memory for bookkeeping");
		goto out_abort;
	}
	n = 0;
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next)
		if (p->movable && p->real && p->dev >= 0)
			items[n++].phys = p;

	/* Nothing may be in flight on the device when its memory goes. */
	for (int d = 0; d < VRAM_HOOK_MAX_DEVICES; d++) {
		bool used = atomic_load(&vram_hook_usage[d].used) > 0;
		if (!used || use_device(d) < 0)
			continue;
		VRAM_REAL(cuCtxSynchronize)();
		CUmemoryPool pool;
		if (VRAM_REAL(cuDeviceGetDefaultMemPool)(&pool, d) == CUDA_SUCCESS)
			VRAM_REAL(cuMemPoolTrimTo)(pool, 0);
	}
	vram_hook_contexts_synchronize();

	for (size_t i = 0; i < n; i++) {
		items[i].va = full_mapping(items[i].phys);
		if (!items[i].va && temp_map(&items[i], items[i].phys->real) < 0) {
			err = -EIO;
			snprintf(ret->text, sizeof(ret->text), "Failed to offload: cannot map memory for copying");
			goto out_abort;
		}
		warm = warm && items[i].phys->host;
	}

	pipe.items = items;
	ph.first_copy = now_usec();
	if (warm) {
		err = offload_pipelined(&pipe, n, &bytes);
		ph.copies_done = pipe.copies_done;
		ph.release_us = pipe.release_us;
	} else {
		/* Copies start as soon as each piece of a new buffer is pinned.
		 * Pinning may fail after the first copies, when the process must
		 * run on with all of its memory: nothing goes before the end. */
		err = offload_copy_out(items, n, &cp, &pinned, &bytes);
		if (sync_all_streams() < 0 && !err)
			err = -EIO;
		ph.copies_done = now_usec();
		for (size_t i = 0; i < n && !err; i++) {
			pipe.freed[items[i].phys->dev] += items[i].phys->size;
			release_item(&items[i]);
		}
		ph.release_us = err ? 0 : now_usec() - ph.copies_done;
		if (!err && n && swap_now && swap_now->progress)
			swap_now->progress(swap_now->arg, pipe.freed);
	}
	if (err) {
		uint64_t need = 0, back = 0;
		/* Nothing may still copy into a buffer or out of memory given back. */
		sync_all_streams();
		for (size_t i = 0; i < n; i++)
			if (!items[i].phys->host)
				need += items[i].phys->size;
		for (size_t i = 0; i < pipe.released; i++)
			back += items[i].phys->size;

		if (err == -ENOMEM) {
			snprintf(ret->text, sizeof(ret->text),
				 "Failed to offload: could not allocate %llu bytes of pinned host memory",
				 (unsigned long long)need);
		} else if (!pipe.released) {
			snprintf(ret->text, sizeof(ret->text), "Failed to offload: a copy to host memory failed");
		} else if (swap_now && swap_now->progress) {
			/* what went may be another process's already: nothing comes back */
			snprintf(ret->text, sizeof(ret->text),
				 "Failed to offload: a copy to host memory failed after %llu bytes were given "
				 "back; the process stays offloaded and a restore brings it all back",
				 (unsigned long long)back);
			goto out_partial;
		} else {
			/* Bring back what went already, from its complete host copy. */
			struct phases again = { .start = now_usec() };
			char why[100];
			uint64_t missing = 0;
			if (restore_items(items, pipe.released, &cp, &again, why, sizeof(why), &missing) < 0) {
				snprintf(ret->text, sizeof(ret->text),
					 "Failed to offload: a copy failed; the %llu bytes given back could not "
					 "come back (%s): the process stays offloaded",
					 (unsigned long long)back, why);
				ret->missing = missing;
				goto out_partial;
			}
			snprintf(ret->text, sizeof(ret->text),
				 "Failed to offload: a copy to host memory failed; the %llu bytes given back "
				 "already were brought back", (unsigned long long)back);
		}
		goto out_abort;
	}
	pthread_mutex_unlock(&vram_hook_lock);
	vram_hook_ipc_offloaded();

	drop_host_after_restore = drop_host || !keep_host_default();
	atomic_store(&vram_hook_state, VRAM_HOOK_OFFLOADED);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
	uint64_t end = now_usec();
	char phase_text[96];
	phases_format(phase_text, sizeof(phase_text), &ph, true, end);
	ret->bytes = bytes;
	ret->nonmovable = vram_hook_nonmovable_total();
	ret->usec = end - ph.start;
	int len = snprintf(ret->text, sizeof(ret->text),
			   "offloaded %llu bytes in %.3f s (%.1f GB/s) %s; %llu bytes stay on the device "
			   "(context, managed, shared through IPC, exported, export pools)",
			   (unsigned long long)bytes, (double)ret->usec / 1e6, gbps(bytes, ret->usec), phase_text,
			   (unsigned long long)ret->nonmovable);
	if (pinned.bytes && len > 0 && (size_t)len < sizeof(ret->text))
		snprintf(ret->text + len, sizeof(ret->text) - (size_t)len,
			 "; pinned %llu new bytes in %zu pieces on %u threads", (unsigned long long)pinned.bytes,
			 pinned.pieces, pinned.threads);
	vram_hook_log(VRAM_HOOK_LOG_INFO, "%s", ret->text);
	vram_hook_log(VRAM_HOOK_LOG_DEBUG, "offload: %zu allocations, %s, %u streams, %llu-byte chunks", n,
		      warm ? "released behind the copies" : "new buffers, released after the copies", cp.streams,
		      (unsigned long long)cp.chunk);
	free(items);
	pthread_mutex_unlock(&suspend_mutex);
	return;

out_partial:
	/* Some memory is in host buffers only: the gate stays closed until a
	 * restore brings it back; the rest never left the device. */
	for (size_t i = 0; i < n; i++)
		temp_unmap(&items[i]);
	pthread_mutex_unlock(&vram_hook_lock);
	vram_hook_ipc_offloaded();
	free(items);
	ret->status = err;
	ret->usec = now_usec() - ph.start;
	vram_hook_log(VRAM_HOOK_LOG_ERROR, "%s", ret->text);
	drop_host_after_restore = drop_host || !keep_host_default();
	atomic_store(&vram_hook_state, VRAM_HOOK_OFFLOADED);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
	pthread_mutex_unlock(&suspend_mutex);
	return;

out_abort:
	for (size_t i = 0; i < n; i++)
		temp_unmap(&items[i]);
	pthread_mutex_unlock(&vram_hook_lock);
	free(items);
	ret->status = err;
	ret->usec = now_usec() - ph.start;
	vram_hook_log(VRAM_HOOK_LOG_ERROR, "%s", ret->text);
	atomic_store(&vram_hook_state, VRAM_HOOK_RUNNING);
	gate_open();
out_unlock:
	pthread_mutex_unlock(&suspend_mutex);
}

/* ---------------------------------------------------------------- restore */

static void restore_parked(struct vram_hook_op_result *ret);

/*
 * The swap part is passed through swap_now: offloads and restores run on
 * the hook's control thread only, one at a time.
 */
void vram_hook_offload(bool drop_host, const struct vram_hook_swap *swap, struct vram_hook_op_result *ret)
{
	swap_now = swap;
	offload_run(drop_host, ret);
	swap_now = NULL;
}

static void restore_run(struct vram_hook_op_result *ret);

void vram_hook_restore(const struct vram_hook_swap *swap, struct vram_hook_op_result *ret)
{
	swap_now = swap;
	restore_run(ret);
	swap_now = NULL;
}

static void restore_run(struct vram_hook_op_result *ret)
{
	struct item *items = NULL;
	size_t n = 0;
	struct phases ph = { .start = now_usec() };
	struct copier cp = copier_new();
	uint64_t bytes = 0;
	char why[200];
	int err = 0;

	memset(ret, 0, sizeof(*ret));
	pthread_mutex_lock(&suspend_mutex);
	if (gate_held && atomic_load(&vram_hook_state) != VRAM_HOOK_OFFLOADED) {
		gate_release(ret);
		pthread_mutex_unlock(&suspend_mutex);
		return;
	}
	if (atomic_load(&vram_hook_state) == VRAM_HOOK_PARKED) {
		restore_parked(ret);
		pthread_mutex_unlock(&suspend_mutex);
		return;
	}
	if (atomic_load(&vram_hook_state) != VRAM_HOOK_OFFLOADED) {
		ret->status = -EALREADY;
		snprintf(ret->text, sizeof(ret->text), "Failed to restore: the process is not offloaded");
		pthread_mutex_unlock(&suspend_mutex);
		return;
	}
	atomic_store(&vram_hook_state, VRAM_HOOK_RESTORING);
	pthread_mutex_lock(&vram_hook_lock);
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next)
		if (p->offloaded)
			n++;
	items = n ? calloc(n, sizeof(*items)) : NULL;
	if (n && !items) {
		err = -ENOMEM;
		snprintf(ret->text, sizeof(ret->text), "Failed to restore: out of host memory for bookkeeping");
		goto out_fail;
	}
	n = 0;
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next)
		if (p->offloaded)
			items[n++].phys = p;

	err = restore_items(items, n, &cp, &ph, why, sizeof(why), &ret->missing);
	if (err < 0) {
		snprintf(ret->text, sizeof(ret->text), "Failed to restore: %s; the process stays offloaded", why);
		goto out_fail;
	}
	for (size_t i = 0; i < n; i++) {
		bytes += items[i].phys->size;
		if (drop_host_after_restore)
			vram_hook_host_free(items[i].phys);
	}
	pthread_mutex_unlock(&vram_hook_lock);
	free(items);
	items = NULL;
	err = vram_hook_ipc_restored(why, sizeof(why));
	if (err < 0) {
		/* Its own memory is back; the gate stays closed until a restore maps the rest. */
		snprintf(ret->text, sizeof(ret->text), "Failed to restore: %s; the process stays offloaded", why);
		pthread_mutex_lock(&vram_hook_lock);
		goto out_fail;
	}
	uint64_t end = now_usec();
	char phase_text[96];
	phases_format(phase_text, sizeof(phase_text), &ph, false, end);
	ret->bytes = bytes;
	ret->nonmovable = vram_hook_nonmovable_total();
	ret->usec = end - ph.start;
	snprintf(ret->text, sizeof(ret->text), "restored %llu bytes in %.3f s (%.1f GB/s) %s",
		 (unsigned long long)bytes, (double)ret->usec / 1e6, gbps(bytes, ret->usec), phase_text);
	vram_hook_log(VRAM_HOOK_LOG_INFO, "%s", ret->text);
	if (restore_keeps_gate) {
		/* A group's restore: the gate opens with everyone's (a RESTORE). */
		gate_held = true;
		atomic_store(&vram_hook_state, VRAM_HOOK_RESTORING);
		atomic_fetch_add(&vram_hook_usage_seq, 1);
		pthread_mutex_unlock(&suspend_mutex);
		return;
	}
	atomic_store(&vram_hook_state, VRAM_HOOK_RUNNING);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
	gate_open();
	pthread_mutex_unlock(&suspend_mutex);
	return;

out_fail:
	pthread_mutex_unlock(&vram_hook_lock);
	free(items);
	ret->status = err;
	ret->usec = now_usec() - ph.start;
	vram_hook_log(VRAM_HOOK_LOG_ERROR, "%s", ret->text);
	atomic_store(&vram_hook_state, VRAM_HOOK_OFFLOADED);
	pthread_mutex_unlock(&suspend_mutex);
}

/* ------------------------------------------------------------------ park */

/*
 * The disk tier. PARK takes an offloaded process's host copy to a file
 * (park.c writes it) and frees the pinned buffers; the virtual address
 * ranges and every allocation's bookkeeping stay, as for an offload, so a
 * restore brings the memory back from the file to the same addresses. Each
 * parked allocation remembers its index in the file. A failed park leaves
 * the process offloaded in host memory, as it was.
 */
static char park_path[VRAM_HOOK_PARK_PATH_MAX]; /* the park file; "" when not parked */
static uint32_t park_allocs;                   /* allocations in it */
static _Atomic uint64_t park_bytes;            /* bytes of memory in it */
static pid_t park_owner;                       /* the process that wrote it (not a forked child) */
static dev_t park_dev;                         /* the file as written, to remove it and nothing else */
static ino_t park_ino;

void vram_hook_park(const char *path, struct vram_hook_op_result *ret)
{
	uint64_t start = now_usec();
	struct vram_hook_park_alloc *allocs = NULL;
	struct vram_hook_park_stats st;
	size_t n = 0;
	char why[200];

	memset(ret, 0, sizeof(*ret));
	pthread_mutex_lock(&suspend_mutex);
	int state = atomic_load(&vram_hook_state);
	if (state != VRAM_HOOK_OFFLOADED) {
		ret->status = -EALREADY;
		if (state == VRAM_HOOK_PARKED)
			vram_hook_textf(ret->text, sizeof(ret->text),
					"Failed to park: the process is parked already (in %s)", park_path);
		else
			vram_hook_textf(ret->text, sizeof(ret->text),
					"Failed to park: the process is not offloaded: offload it first");
		goto out_unlock;
	}
	if (!path || path[0] != '/' || strnlen(path, VRAM_HOOK_PARK_PATH_MAX) >= VRAM_HOOK_PARK_PATH_MAX) {
		ret->status = -EINVAL;
		vram_hook_textf(ret->text, sizeof(ret->text),
				"Failed to park: the park file must be an absolute path of at most %d bytes",
				VRAM_HOOK_PARK_PATH_MAX - 1);
		goto out_unlock;
	}
	atomic_store(&vram_hook_state, VRAM_HOOK_PARKING);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
	pthread_mutex_lock(&vram_hook_lock);
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next)
		if (p->offloaded)
			n++;
	allocs = n ? calloc(n, sizeof(*allocs)) : NULL;
	if (n && !allocs) {
		ret->status = -ENOMEM;
		vram_hook_textf(ret->text, sizeof(ret->text), "Failed to park: out of host memory for bookkeeping");
		goto out_refused;
	}
	n = 0;
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next) {
		if (!p->offloaded)
			continue;
		if (!p->host) { /* every offloaded allocation has its copy in a host buffer */
			ret->status = -EIO;
			vram_hook_textf(ret->text, sizeof(ret->text),
					"Failed to park: an offloaded allocation of %llu bytes has no host copy",
					(unsigned long long)p->size);
			goto out_refused;
		}
		allocs[n++] = (struct vram_hook_park_alloc){ .host = p->host, .size = p->size };
	}
	int err = vram_hook_park_write(path, allocs, n, &st, why, sizeof(why));
	if (err < 0) {
		ret->status = err;
		vram_hook_textf(ret->text, sizeof(ret->text),
				"Failed to park: %s; the process stays offloaded in host memory", why);
		goto out_refused;
	}
	uint64_t freed = 0;
	uint32_t index = 0;
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next) {
		if (!p->offloaded)
			continue;
		p->parked = true;
		p->park_index = index++;
		freed += p->size;
		vram_hook_host_free(p);
	}
	pthread_mutex_unlock(&vram_hook_lock);
	snprintf(park_path, sizeof(park_path), "%s", path);
	park_allocs = index;
	park_owner = getpid();
	park_dev = st.dev;
	park_ino = st.ino;
	atomic_store(&park_bytes, st.total);
	atomic_store(&vram_hook_state, VRAM_HOOK_PARKED);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
	ret->bytes = st.total;
	ret->nonmovable = vram_hook_nonmovable_total();
	ret->usec = now_usec() - start;
	vram_hook_textf(ret->text, sizeof(ret->text),
			"parked %llu bytes to %s in %.3f s (%.1f GB/s, %s, %u writers, %zu pieces); "
			"freed %llu bytes of pinned host memory", (unsigned long long)st.total, path,
			(double)ret->usec / 1e6, gbps(st.total, ret->usec), st.direct ? "O_DIRECT" : "buffered",
			st.threads, st.pieces, (unsigned long long)freed);
	vram_hook_log(VRAM_HOOK_LOG_INFO, "%s", ret->text);
	free(allocs);
	pthread_mutex_unlock(&suspend_mutex);
	return;

out_refused:
	pthread_mutex_unlock(&vram_hook_lock);
	free(allocs);
	ret->usec = now_usec() - start;
	vram_hook_log(VRAM_HOOK_LOG_ERROR, "%s", ret->text);
	atomic_store(&vram_hook_state, VRAM_HOOK_OFFLOADED);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
out_unlock:
	pthread_mutex_unlock(&suspend_mutex);
}

/* Issues the copies of one piece (len bytes at src, pinned) to offset off of an item, on one stream. */
static int copy_piece(struct item *it, const void *src, uint64_t off, uint64_t len, struct copier *cp,
		      CUstream *ret_stream)
{
	int dev = it->phys->dev;
	if (use_device(dev) < 0)
		return -ENODEV;
	CUstream s = devctx[dev].streams[cp->next++ % cp->streams];
	for (uint64_t done = 0; done < len; done += cp->chunk) {
		uint64_t n = len - done < cp->chunk ? len - done : cp->chunk;
		CUresult r = VRAM_REAL(cuMemcpyHtoDAsync_v2)(it->va + off + done, (const char *)src + done, n, s);
		if (r != CUDA_SUCCESS)
			return -EIO;
	}
	*ret_stream = s;
	return 0;
}

/*
 * Feeds every piece of the park file to the device as it arrives: items
 * by their index in the file (slot[i]: the item of allocation i, -1 when it
 * is gone), each piece copied from its staging buffer, which goes back to
 * the reader once the copies are issued. Returns 0 or -errno with why.
 */
static int copy_pieces(struct vram_hook_park_reader *rd, struct item *items, const long *slot, size_t nslot,
		       struct copier *cp, struct phases *ph, char *why, size_t cap)
{
	struct vram_hook_park_chunk c;
	int r;
	while ((r = vram_hook_park_read_next(rd, &c, why, cap)) > 0) {
		if (!ph->first_copy)
			ph->first_copy = now_usec();
		long i = c.alloc < nslot ? slot[c.alloc] : -1;
		CUstream stream = NULL;
		int dev = -1;
		if (i >= 0) {
			if (copy_piece(&items[i], c.data, c.offset, c.length, cp, &stream) < 0) {
				vram_hook_textf(why, cap, "a copy to the device failed (piece %zu of %s)", c.index,
						park_path);
				vram_hook_park_read_done(rd, -1, NULL);
				return -EIO;
			}
			dev = items[i].phys->dev;
		}
		if (vram_hook_park_read_done(rd, dev, stream) < 0) {
			vram_hook_textf(why, cap, "a copy to the device failed (piece %zu of %s)", c.index, park_path);
			return -EIO;
		}
	}
	return r;
}

/*
 * RESTORE of a parked process (suspend_mutex held): the memory is made and
 * mapped while the readers fill the staging ring, then every piece is
 * copied as it arrives. Any failure (the file missing, not this process's,
 * truncated, a checksum, the device short of memory) undoes everything on
 * the device and the process stays parked: nothing it computes ever sees
 * memory that did not come back whole. After a success the file goes.
 */
static void restore_parked(struct vram_hook_op_result *ret)
{
	struct phases ph = { .start = now_usec() };
	struct copier cp = copier_new();
	struct map_run run = { .short_dev = -1 };
	struct vram_hook_park_reader *rd = NULL;
	struct vram_hook_park_stats st;
	struct item *items = NULL;
	uint64_t *expected = NULL;
	long *slot = NULL;
	size_t n = 0;
	char why[200];
	int err = -ENOMEM;

	atomic_store(&vram_hook_state, VRAM_HOOK_RESTORING);
	pthread_mutex_lock(&vram_hook_lock);
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next)
		if (p->parked)
			n++;
	items = n ? calloc(n, sizeof(*items)) : NULL;
	expected = park_allocs ? calloc(park_allocs, sizeof(*expected)) : NULL;
	slot = park_allocs ? calloc(park_allocs, sizeof(*slot)) : NULL;
	if ((n && !items) || (park_allocs && (!expected || !slot))) {
		vram_hook_textf(why, sizeof(why), "out of host memory for bookkeeping");
		goto out_fail;
	}
	for (uint32_t a = 0; a < park_allocs; a++)
		slot[a] = -1;
	n = 0;
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next) {
		if (!p->parked || p->park_index >= park_allocs)
			continue;
		expected[p->park_index] = p->size;
		slot[p->park_index] = (long)n;
		items[n++].phys = p;
	}
	if (n && use_device(items[0].phys->dev) < 0) { /* the staging buffers are pinned in its context */
		err = -ENODEV;
		vram_hook_textf(why, sizeof(why), "device %d cannot be used", items[0].phys->dev);
		goto out_fail;
	}
	err = vram_hook_park_read_open(park_path, expected, park_allocs, &rd, why, sizeof(why));
	if (err < 0)
		goto out_fail;
	err = map_items(items, n, NULL, &ph, &run, why, sizeof(why));
	if (!err)
		err = copy_pieces(rd, items, slot, park_allocs, &cp, &ph, why, sizeof(why));
	err = settle_items(items, n, &run, err, &ph, why, sizeof(why), &ret->missing);
	vram_hook_park_read_info(rd, &st);
	vram_hook_park_read_close(rd);
	if (err < 0)
		goto out_fail;
	pthread_mutex_unlock(&vram_hook_lock);

	/* the memory is back: the file it came from has served */
	vram_hook_park_remove(park_path, st.dev, st.ino);
	uint64_t end = now_usec();
	char phase_text[96];
	phases_format(phase_text, sizeof(phase_text), &ph, false, end);
	ret->bytes = st.total;
	ret->nonmovable = vram_hook_nonmovable_total();
	ret->usec = end - ph.start;
	vram_hook_textf(ret->text, sizeof(ret->text), "restored %llu bytes from %s in %.3f s (%.1f GB/s, %s, %u x %llu "
			"bytes staging, waited %.1f ms for the disk) %s", (unsigned long long)st.total, park_path,
			(double)ret->usec / 1e6, gbps(st.total, ret->usec), st.direct ? "O_DIRECT" : "buffered",
			st.threads, (unsigned long long)st.staging_bytes, (double)st.usec / 1000.0, phase_text);
	vram_hook_log(VRAM_HOOK_LOG_INFO, "%s", ret->text);
	park_path[0] = '\0';
	park_allocs = 0;
	atomic_store(&park_bytes, 0);
	free(items);
	free(expected);
	free(slot);
	if (vram_hook_ipc_restored(why, sizeof(why)) < 0) {
		/* Its own memory is back, the file gone: offloaded with nothing
		 * in host memory, until a restore maps the rest. */
		ret->status = -EAGAIN;
		vram_hook_textf(ret->text, sizeof(ret->text), "Failed to restore: %s; the process stays offloaded",
				why);
		vram_hook_log(VRAM_HOOK_LOG_ERROR, "%s", ret->text);
		atomic_store(&vram_hook_state, VRAM_HOOK_OFFLOADED);
		atomic_fetch_add(&vram_hook_usage_seq, 1);
		return;
	}
	if (restore_keeps_gate) {
		gate_held = true;
		atomic_store(&vram_hook_state, VRAM_HOOK_RESTORING);
		atomic_fetch_add(&vram_hook_usage_seq, 1);
		return;
	}
	atomic_store(&vram_hook_state, VRAM_HOOK_RUNNING);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
	gate_open();
	return;

out_fail:
	pthread_mutex_unlock(&vram_hook_lock);
	free(items);
	free(expected);
	free(slot);
	ret->status = err;
	ret->usec = now_usec() - ph.start;
	vram_hook_textf(ret->text, sizeof(ret->text), "Failed to restore: %s; the process stays parked", why);
	vram_hook_log(VRAM_HOOK_LOG_ERROR, "%s", ret->text);
	atomic_store(&vram_hook_state, VRAM_HOOK_PARKED);
}

void vram_hook_drop_host(struct vram_hook_op_result *ret)
{
	uint64_t start = now_usec(), freed = 0;
	memset(ret, 0, sizeof(*ret));
	pthread_mutex_lock(&suspend_mutex);
	int state = atomic_load(&vram_hook_state);
	if (state != VRAM_HOOK_RUNNING) {
		/* offloaded: the buffers hold its memory; parked: it has none */
		ret->status = -EBUSY;
		vram_hook_textf(ret->text, sizeof(ret->text),
				"Failed to drop the host buffers: the process is %s, its host memory is not kept "
				"but in use (restore it first)", state == VRAM_HOOK_PARKED ? "parked" : "offloaded");
		pthread_mutex_unlock(&suspend_mutex);
		return;
	}
	prep_join(); /* nothing is made behind the drop */
	pthread_mutex_lock(&vram_hook_lock);
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next) {
		if (p->host && !p->offloaded) {
			freed += p->size;
			vram_hook_host_free(p);
		}
	}
	pthread_mutex_unlock(&vram_hook_lock);
	atomic_fetch_add(&vram_hook_usage_seq, 1);
	ret->bytes = freed;
	ret->nonmovable = vram_hook_nonmovable_total();
	ret->usec = now_usec() - start;
	vram_hook_textf(ret->text, sizeof(ret->text), "dropped %llu bytes of pinned host buffers kept after a restore",
			(unsigned long long)freed);
	vram_hook_log(VRAM_HOOK_LOG_INFO, "%s", ret->text);
	pthread_mutex_unlock(&suspend_mutex);
}

void vram_hook_host_usage(uint64_t *ret_pinned, uint64_t *ret_kept, uint64_t *ret_parked)
{
	uint64_t pinned = 0, kept = 0;
	pthread_mutex_lock(&vram_hook_lock);
	for (const struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next) {
		if (!p->host)
			continue;
		pinned += p->size;
		if (!p->offloaded)
			kept += p->size;
	}
	pthread_mutex_unlock(&vram_hook_lock);
	*ret_pinned = pinned;
	*ret_kept = kept;
	*ret_parked = atomic_load(&park_bytes);
}

void vram_hook_park_exit(void)
{
	/* a forked child never removes its parent's file; nor is the lock taken at exit */
	if (park_path[0] && park_owner == getpid())
		vram_hook_park_remove(park_path, park_dev, park_ino);
}

/* ------------------------------------------------------------------- fork */

void vram_hook_suspend_atfork_prepare(void)
{
	pthread_mutex_lock(&suspend_mutex);
	pthread_mutex_lock(&vram_hook_lock);
}

void vram_hook_suspend_atfork_parent(void)
{
	pthread_mutex_unlock(&vram_hook_lock);
	pthread_mutex_unlock(&suspend_mutex);
}

void vram_hook_suspend_atfork_child(void)
{
	pthread_mutex_unlock(&vram_hook_lock);
	pthread_mutex_unlock(&suspend_mutex);
	/* The child cannot use the parent's CUDA state; it must not block on it. */
	atomic_store(&vram_hook_gate_closed, 0);
	/* Its streams and events are the parent's. */
	memset(devctx, 0, sizeof(devctx));
}
