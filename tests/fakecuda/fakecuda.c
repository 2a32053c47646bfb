/* SPDX-License-Identifier: MIT */
/*
 * A fake CUDA driver (libcuda.so.1) for tests. "Device" memory is host
 * memory: physical allocations are memfd files, virtual address ranges are
 * PROT_NONE reservations, and cuMemMap maps the file there with MAP_FIXED.
 * Unmapping therefore really makes the memory inaccessible (a kernel that
 * touches it crashes the test), and mapping new physical memory at the same
 * address shows whatever was copied into it.
 *
 * Streams run on one worker thread each, so work is really in flight after a
 * launch returns. A module loaded with cuModuleLoadData offers a few named
 * kernels: fill, checksum, add, sleep.
 *
 * Asynchronous copies can be slowed down, and a copy or a cuMemMap made to
 * fail, on request (fakecuda_set_copy_delay, fakecuda_fail_copy,
 * fakecuda_fail_map), and the fake counts the VMM calls made while copies
 * are still queued (fakecuda_calls_during_copies), so that tests can see
 * that the hook overlaps its bookkeeping with its copies and that it undoes
 * half-done work.
 *
 * Device size: VRAM_FAKE_MEMORY (bytes, default 4 GiB per device), VMM
 * granularity: VRAM_FAKE_GRANULARITY (default 2 MiB), count:
 * VRAM_FAKE_DEVICES (default 1, at most 8), context overhead:
 * VRAM_FAKE_CONTEXT_MEMORY (default 64 MiB per device). Test programs can
 * inspect and steer the fake through the fakecuda_* functions at the end.
 *
 * Several processes can share one tally of device memory: with
 * VRAM_FAKE_SHARED_USAGE=FILE each adds what it charges to the two 64-bit
 * counters in FILE (bytes in use on all devices, and the most ever), so a
 * test sees the peak of a whole swap between processes. From the
 * environment too: VRAM_FAKE_COPY_DELAY_US, VRAM_FAKE_FAIL_COPY and
 * VRAM_FAKE_FAIL_MAP (as the functions below, counted from the start, or
 * with VRAM_FAKE_ARM=FILE from the first copy or map after FILE appears,
 * which the fake then removes).
 *
 * The library is linked with -Bsymbolic-functions so that the pointers
 * cuGetProcAddress hands out are its own functions, as with the real driver.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hook/cuda_api.h"

#define FAKE_EXPORT __attribute__((visibility("default")))
#define FAKE_MAX_DEVICES 8
#define FAKE_GRANULARITY fake_granularity
#define FAKE_DRIVER_VERSION 13000

/* Testing interface, found by tests with dlsym(RTLD_DEFAULT, ...). */
FAKE_EXPORT size_t fakecuda_used(int dev);
FAKE_EXPORT void fakecuda_set_available(int dev, size_t bytes);
FAKE_EXPORT int fakecuda_live_phys(void);
FAKE_EXPORT int fakecuda_unknown_frees(void);
FAKE_EXPORT int fakecuda_is_mapped(CUdeviceptr p);
FAKE_EXPORT void *fakecuda_self_sym(const char *exact_name);
FAKE_EXPORT int fakecuda_host_registered(void);
FAKE_EXPORT long fakecuda_unpinned_copies(void);
FAKE_EXPORT void fakecuda_set_register_limit(int live);
FAKE_EXPORT void fakecuda_set_copy_delay(unsigned usec);
FAKE_EXPORT void fakecuda_fail_copy(long nth);
FAKE_EXPORT void fakecuda_fail_map(long nth);
FAKE_EXPORT long fakecuda_calls_during_copies(const char *call);

/* ---------------------------------------------------------------- state */

struct fake_phys {
	int fd;
	size_t size;            /* bytes */
	int dev;                /* -1: host location, not charged */
	int refs;               /* the handle + one per mapping */
	CUmemAllocationProp prop;
};

struct fake_map {
	CUdeviceptr va;
	size_t size;            /* bytes */
	size_t offset;          /* bytes into phys */
	struct fake_phys *phys;
};

struct fake_resv {
	CUdeviceptr va;
	size_t size;            /* bytes */
};

enum fake_alloc_kind { FAKE_LINEAR, FAKE_MANAGED, FAKE_POOL, FAKE_IPC };

/* A linear allocation made by the driver itself: a reservation + one map. */
struct fake_alloc {
	CUdeviceptr va;
	size_t size;            /* bytes, rounded to the granularity */
	enum fake_alloc_kind kind;
	struct fake_phys *phys;
	struct fake_pool *pool;
};

struct fake_pool {
	int dev;
	size_t reserved;        /* bytes */
	cuuint64_t release_threshold; /* bytes; recorded and answered, nothing else */
};

struct fake_op {
	void (*run)(struct fake_op *op);
	struct fake_op *next;
	struct fake_stream *stream;     /* where it runs */
	union {
		struct { void *dst; const void *src; size_t n; bool fail; } copy;
		struct { void *dst; uint32_t value; size_t n; int width; } set;
		struct { int kind; uint64_t a, b, c, d; } kernel;
		struct { struct fake_event *ev; uint64_t gen; } event;
		struct { CUdeviceptr ptr; } free;
	} u;
};

struct fake_stream {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct fake_op *head, *tail;
	bool busy;
	bool quit;
	CUresult error;         /* of a failed op, until cuStreamSynchronize reports it */
	bool capturing;         /* between cuStreamBeginCapture and cuStreamEndCapture (work still runs) */
	struct fake_stream *next_all;
};

/*
 * As with the driver, an event stands for its latest record: a record that
 * an older, still queued one completes after is not done; a stream waits
 * for the record that was the latest when it was told to wait.
 */
struct fake_event {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t recorded;      /* records made */
	uint64_t completed;     /* the latest record that ran */
	CUresult error;         /* the stream's error when the event ran */
};

struct CUctx_st {
	int dev;
	bool primary;
	int refs;
	struct fake_stream *null_stream;
};

struct CUmod_st { int unused; };
struct CUfunc_st { int kind; const char *name; };
struct CUarray_st { size_t size; int dev; void *data; };

enum { K_FILL, K_CHECKSUM, K_ADD, K_SLEEP };
static struct CUfunc_st fake_kernels[] = {
	{ K_FILL, "fill" }, { K_CHECKSUM, "checksum" }, { K_ADD, "add" }, { K_SLEEP, "sleep" },
};
static struct CUmod_st fake_module;

static pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t fake_stream_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fake_once = PTHREAD_ONCE_INIT;
static bool fake_initialized;
static int fake_ndev = 1;
static size_t fake_total[FAKE_MAX_DEVICES];     /* bytes */
static size_t fake_available[FAKE_MAX_DEVICES]; /* bytes, can shrink for tests */
static _Atomic size_t fake_used_bytes[FAKE_MAX_DEVICES];
static size_t fake_ctx_mem = 64u << 20;
static size_t fake_granularity = 2u << 20; /* bytes, VRAM_FAKE_GRANULARITY */
static unsigned fake_address_free_delay_us; /* VRAM_FAKE_ADDRESS_FREE_DELAY_US */
static struct CUctx_st *fake_primary[FAKE_MAX_DEVICES];
static struct fake_pool fake_default_pool[FAKE_MAX_DEVICES];
static struct fake_pool *fake_current_pool[FAKE_MAX_DEVICES]; /* cuDeviceSetMemPool; NULL: the default */
static _Thread_local struct CUctx_st *fake_current;
static struct fake_stream *fake_streams;
static _Atomic int fake_live_phys_count;
static _Atomic int fake_unknown_free_count;
/* Testing knobs and counters of copies and VMM calls. */
static atomic_long fake_copies_pending;     /* asynchronous copies queued or running */
static atomic_uint fake_copy_delay_us;      /* added to each asynchronous copy */
static atomic_long fake_copy_fail_in;       /* the copy that many from now fails; 0: none */
static atomic_long fake_map_fail_in;        /* the cuMemMap that many from now fails; 0: none */
enum { DURING_CREATE, DURING_MAP, DURING_UNMAP, DURING_RELEASE, DURING_N };
static const char *const during_names[DURING_N] = { "cuMemCreate", "cuMemMap", "cuMemUnmap", "cuMemRelease" };
static atomic_long fake_during_copies[DURING_N]; /* calls made while a copy was pending */

static void note_call(int which)
{
	if (atomic_load(&fake_copies_pending) > 0)
		atomic_fetch_add(&fake_during_copies[which], 1);
}

/* Growable arrays guarded by fake_lock. */
static struct fake_map *maps;
static size_t nmaps, capmaps;
static struct fake_resv *resvs;
static size_t nresvs, capresvs;
static struct fake_alloc *allocs;
static size_t nallocs, capallocs;

static void *grow(void *arr, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return arr;
	size_t n = *cap ? *cap * 2 : 64;
	while (n < need)
		n *= 2;
	void *p = realloc(arr, n * elem);
	if (!p)
		abort();
	*cap = n;
	return p;
}

static size_t parse_size(const char *s, size_t dflt)
{
	if (!s || !*s)
		return dflt;
	char *end;
	double v = strtod(s, &end);
	size_t mul = 1;
	if (*end == 'K' || *end == 'k')
		mul = 1ull << 10;
	else if (*end == 'M' || *end == 'm')
		mul = 1ull << 20;
	else if (*end == 'G' || *end == 'g')
		mul = 1ull << 30;
	else if (*end == 'T' || *end == 't')
		mul = 1ull << 40;
	return (size_t)(v * (double)mul);
}

/* The failures asked for in the environment, and the file that arms them. */
static long fake_env_fail_copy, fake_env_fail_map;
static char fake_arm_path[256];

static void fake_arm_now(void)
{
	if (fake_env_fail_copy)
		atomic_store(&fake_copy_fail_in, fake_env_fail_copy);
	if (fake_env_fail_map)
		atomic_store(&fake_map_fail_in, fake_env_fail_map);
}

/* With VRAM_FAKE_ARM: arms the failures once its file appears. */
static void fake_arm_check(void)
{
	if (fake_arm_path[0] && access(fake_arm_path, F_OK) == 0 && unlink(fake_arm_path) == 0)
		fake_arm_now();
}

/* VRAM_FAKE_SHARED_USAGE: bytes in use by every process that shares it, and the peak. */
struct fake_shared {
	_Atomic uint64_t used;
	_Atomic uint64_t peak;
};
static struct fake_shared *fake_shared;

static void shared_open(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	struct stat st;
	if (fstat(fd, &st) == 0 && (size_t)st.st_size < sizeof(struct fake_shared) &&
	    ftruncate(fd, sizeof(struct fake_shared)) < 0) {
		close(fd);
		return;
	}
	void *p = mmap(NULL, sizeof(struct fake_shared), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p != MAP_FAILED)
		fake_shared = p;
}

static void shared_add(size_t bytes, bool add)
{
	if (!fake_shared)
		return;
	if (!add) {
		atomic_fetch_sub(&fake_shared->used, bytes);
		return;
	}
	uint64_t now = atomic_fetch_add(&fake_shared->used, bytes) + bytes;
	uint64_t peak = atomic_load(&fake_shared->peak);
	while (now > peak && !atomic_compare_exchange_weak(&fake_shared->peak, &peak, now))
		;
}

static void fake_setup(void)
{
	const char *s = getenv("VRAM_FAKE_DEVICES");
	if (s && atoi(s) >= 1)
		fake_ndev = atoi(s) > FAKE_MAX_DEVICES ? FAKE_MAX_DEVICES : atoi(s);
	size_t total = parse_size(getenv("VRAM_FAKE_MEMORY"), 4ull << 30);
	fake_ctx_mem = parse_size(getenv("VRAM_FAKE_CONTEXT_MEMORY"), 64u << 20);
	fake_granularity = parse_size(getenv("VRAM_FAKE_GRANULARITY"), 2u << 20);
	if (fake_granularity < 4096 || (fake_granularity & (fake_granularity - 1)))
		fake_granularity = 2u << 20;
	/* Holds cuMemAddressFree after the range is free again, so that a
	 * test can reserve it from another thread before the call returns. */
	s = getenv("VRAM_FAKE_ADDRESS_FREE_DELAY_US");
	if (s && atoi(s) > 0)
		fake_address_free_delay_us = (unsigned)atoi(s);
	s = getenv("VRAM_FAKE_SHARED_USAGE");
	if (s && s[0])
		shared_open(s);
	s = getenv("VRAM_FAKE_COPY_DELAY_US");
	if (s && atoi(s) > 0)
		atomic_store(&fake_copy_delay_us, (unsigned)atoi(s));
	s = getenv("VRAM_FAKE_FAIL_COPY");
	fake_env_fail_copy = s && atol(s) > 0 ? atol(s) : 0;
	s = getenv("VRAM_FAKE_FAIL_MAP");
	fake_env_fail_map = s && atol(s) > 0 ? atol(s) : 0;
	s = getenv("VRAM_FAKE_ARM");
	if (s && s[0])
		snprintf(fake_arm_path, sizeof(fake_arm_path), "%s", s);
	else
		fake_arm_now();
	for (int i = 0; i < fake_ndev; i++) {
		fake_total[i] = total;
		fake_available[i] = total;
		fake_default_pool[i].dev = i;
	}
}

static bool charge(int dev, size_t bytes)
{
	size_t cur = atomic_load(&fake_used_bytes[dev]);
	do {
		if (cur + bytes > fake_available[dev])
			return false;
	} while (!atomic_compare_exchange_weak(&fake_used_bytes[dev], &cur, cur + bytes));
	shared_add(bytes, true);
	return true;
}

static void uncharge(int dev, size_t bytes)
{
	atomic_fetch_sub(&fake_used_bytes[dev], bytes);
	shared_add(bytes, false);
}

static size_t round_up(size_t v, size_t a)
{
	return (v + a - 1) / a * a;
}

#define NEED_INIT() do { if (!fake_initialized) return CUDA_ERROR_NOT_INITIALIZED; } while (0)
#define NEED_CTX() do { NEED_INIT(); if (!fake_current) return CUDA_ERROR_INVALID_CONTEXT; } while (0)

/* --------------------------------------------------------------- streams */

static void *stream_main(void *arg)
{
	struct fake_stream *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->head && !s->quit)
			pthread_cond_wait(&s->cond, &s->lock);
		if (!s->head && s->quit)
			break;
		struct fake_op *op = s->head;
		s->head = op->next;
		if (!s->head)
			s->tail = NULL;
		s->busy = true;
		pthread_mutex_unlock(&s->lock);
		op->run(op);
		free(op);
		pthread_mutex_lock(&s->lock);
		s->busy = false;
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static struct fake_stream *stream_new(void)
{
	struct fake_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
		free(s);
		return NULL;
	}
	pthread_mutex_lock(&fake_stream_lock);
	s->next_all = fake_streams;
	fake_streams = s;
	pthread_mutex_unlock(&fake_stream_lock);
	return s;
}

static void stream_sync(struct fake_stream *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->head || s->busy)
		pthread_cond_wait(&s->cond, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

static struct fake_stream *stream_of(CUstream h)
{
	if (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD)
		return fake_current ? fake_current->null_stream : NULL;
	return (struct fake_stream *)h;
}

static CUresult enqueue(CUstream h, struct fake_op *op)
{
	struct fake_stream *s = stream_of(h);
	if (!s) {
		free(op);
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	op->next = NULL;
	op->stream = s;
	pthread_mutex_lock(&s->lock);
	if (s->tail)
		s->tail->next = op;
	else
		s->head = op;
	s->tail = op;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return CUDA_SUCCESS;
}

static struct fake_op *op_new(void (*run)(struct fake_op *))
{
	struct fake_op *op = calloc(1, sizeof(*op));
	if (!op)
		abort();
	op->run = run;
	return op;
}

/* --------------------------------------------------------------- init */

FAKE_EXPORT CUresult cuInit(unsigned int flags)
{
	(void)flags;
	pthread_once(&fake_once, fake_setup);
	fake_initialized = true;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDriverGetVersion(int *version)
{
	if (!version)
		return CUDA_ERROR_INVALID_VALUE;
	*version = FAKE_DRIVER_VERSION;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
	NEED_INIT();
	if (!device || ordinal < 0 || ordinal >= fake_ndev)
		return CUDA_ERROR_INVALID_DEVICE;
	*device = ordinal;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetCount(int *count)
{
	NEED_INIT();
	if (!count)
		return CUDA_ERROR_INVALID_VALUE;
	*count = fake_ndev;
	return CUDA_SUCCESS;
}

#define CHECK_DEV(d) do { if ((d) < 0 || (d) >= fake_ndev) return CUDA_ERROR_INVALID_DEVICE; } while (0)

FAKE_EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
	NEED_INIT();
	CHECK_DEV(dev);
	if (!name || len <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	snprintf(name, (size_t)len, "Fake CUDA Device %d", dev);
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
	NEED_INIT();
	CHECK_DEV(dev);
	if (!uuid)
		return CUDA_ERROR_INVALID_VALUE;
	memset(uuid->bytes, 0xfa, sizeof(uuid->bytes));
	uuid->bytes[15] = (char)dev;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
	NEED_INIT();
	CHECK_DEV(dev);
	if (!bytes)
		return CUDA_ERROR_INVALID_VALUE;
	*bytes = fake_total[dev];
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
	NEED_INIT();
	CHECK_DEV(dev);
	if (!pi)
		return CUDA_ERROR_INVALID_VALUE;
	switch (attrib) {
	case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
	case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *pi = 32; break;
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = 4; break;
	case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *pi = dev + 1; break;
	case CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT: *pi = 512; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = 9; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = 0; break;
	case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
	case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY:
	case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
	case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *pi = 1; break;
	default: *pi = 0; break;
	}
	return CUDA_SUCCESS;
}

/* ------------------------------------------------------------- contexts */

static struct CUctx_st *ctx_new(int dev, bool primary)
{
	if (!charge(dev, fake_ctx_mem))
		return NULL;
	struct CUctx_st *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->dev = dev;
	c->primary = primary;
	c->null_stream = stream_new();
	return c;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
	NEED_INIT();
	CHECK_DEV(dev);
	if (!pctx)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&fake_lock);
	if (!fake_primary[dev])
		fake_primary[dev] = ctx_new(dev, true);
	struct CUctx_st *c = fake_primary[dev];
	if (c)
		c->refs++;
	pthread_mutex_unlock(&fake_lock);
	if (!c)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*pctx = c;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
	NEED_INIT();
	CHECK_DEV(dev);
	/* The primary context stays: tests keep using it after a release. */
	pthread_mutex_lock(&fake_lock);
	if (fake_primary[dev] && fake_primary[dev]->refs > 0)
		fake_primary[dev]->refs--;
	pthread_mutex_unlock(&fake_lock);
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
	(void)flags;
	NEED_INIT();
	CHECK_DEV(dev);
	if (!pctx)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&fake_lock);
	struct CUctx_st *c = ctx_new(dev, false);
	pthread_mutex_unlock(&fake_lock);
	if (!c)
		return CUDA_ERROR_OUT_OF_MEMORY;
	fake_current = c;
	*pctx = c;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params, unsigned int flags,
				    CUdevice dev)
{
	(void)params;
	return cuCtxCreate_v2(pctx, flags, dev);
}

FAKE_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
	NEED_INIT();
	if (!ctx || ctx->primary)
		return CUDA_ERROR_INVALID_CONTEXT;
	stream_sync(ctx->null_stream);
	uncharge(ctx->dev, fake_ctx_mem);
	if (fake_current == ctx)
		fake_current = NULL;
	/* The stream thread and the struct are leaked on purpose: other
	 * threads may still name them in a test that checks errors. */
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
	NEED_INIT();
	fake_current = ctx;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx)
{
	NEED_INIT();
	if (!pctx)
		return CUDA_ERROR_INVALID_VALUE;
	*pctx = fake_current;
	return CUDA_SUCCESS;
}

/* One level of push/pop is all the tests and the hook need. */
static _Thread_local struct CUctx_st *fake_pushed[8];
static _Thread_local int fake_npushed;

FAKE_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
	NEED_INIT();
	if (fake_npushed >= 8)
		return CUDA_ERROR_INVALID_VALUE;
	fake_pushed[fake_npushed++] = fake_current;
	fake_current = ctx;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
	NEED_INIT();
	if (fake_npushed <= 0)
		return CUDA_ERROR_INVALID_CONTEXT;
	if (pctx)
		*pctx = fake_current;
	fake_current = fake_pushed[--fake_npushed];
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetDevice(CUdevice *device)
{
	NEED_CTX();
	if (!device)
		return CUDA_ERROR_INVALID_VALUE;
	*device = fake_current->dev;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxSynchronize(void)
{
	NEED_CTX();
	pthread_mutex_lock(&fake_stream_lock);
	struct fake_stream *list = fake_streams;
	pthread_mutex_unlock(&fake_stream_lock);
	/* Streams are only ever prepended, so the snapshot stays valid. */
	for (struct fake_stream *s = list; s; s = s->next_all)
		stream_sync(s);
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGetErrorString(CUresult error, const char **pStr)
{
	if (!pStr)
		return CUDA_ERROR_INVALID_VALUE;
	*pStr = error == CUDA_SUCCESS ? "no error" : "fake driver error";
	return CUDA_SUCCESS;
}

static const uint64_t fake_export_table[4] = { 4 * sizeof(uint64_t), 0, 0, 0 };

FAKE_EXPORT CUresult cuGetExportTable(const void **ppExportTable, const CUuuid *pExportTableId)
{
	if (!ppExportTable || !pExportTableId)
		return CUDA_ERROR_INVALID_VALUE;
	*ppExportTable = fake_export_table;
	return CUDA_SUCCESS;
}

/* ---------------------------------------------------------- VMM physical */

static struct fake_phys *phys_new(size_t size, int dev, const CUmemAllocationProp *prop)
{
	if (dev >= 0 && !charge(dev, size))
		return NULL;
	int fd = memfd_create("fakecuda", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		if (fd >= 0)
			close(fd);
		if (dev >= 0)
			uncharge(dev, size);
		return NULL;
	}
	struct fake_phys *p = calloc(1, sizeof(*p));
	if (!p)
		abort();
	p->fd = fd;
	p->size = size;
	p->dev = dev;
	p->refs = 1;
	if (prop)
		p->prop = *prop;
	atomic_fetch_add(&fake_live_phys_count, 1);
	return p;
}

/* Called with fake_lock held. */
static void phys_unref(struct fake_phys *p)
{
	if (--p->refs > 0)
		return;
	close(p->fd);
	if (p->dev >= 0)
		uncharge(p->dev, p->size);
	atomic_fetch_sub(&fake_live_phys_count, 1);
	free(p);
}

static struct fake_resv *resv_find(CUdeviceptr va, size_t size)
{
	for (size_t i = 0; i < nresvs; i++)
		if (va >= resvs[i].va && va + size <= resvs[i].va + resvs[i].size)
			return &resvs[i];
	return NULL;
}

static CUdeviceptr va_reserve(size_t size, size_t align)
{
	if (align < FAKE_GRANULARITY)
		align = FAKE_GRANULARITY;
	size_t len = size + align;
	void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return 0;
	uintptr_t base = (uintptr_t)p, aligned = round_up(base, align);
	if (aligned > base)
		munmap(p, aligned - base);
	if (base + len > aligned + size)
		munmap((void *)(aligned + size), base + len - aligned - size);
	resvs = grow(resvs, &capresvs, nresvs + 1, sizeof(*resvs));
	resvs[nresvs++] = (struct fake_resv){ aligned, size };
	return aligned;
}

static int map_containing(CUdeviceptr va)
{
	for (size_t i = 0; i < nmaps; i++)
		if (va >= maps[i].va && va < maps[i].va + maps[i].size)
			return (int)i;
	return -1;
}

/* Called with fake_lock held. */
static CUresult do_map(CUdeviceptr va, size_t size, size_t offset, struct fake_phys *p, int prot)
{
	if (!resv_find(va, size))
		return CUDA_ERROR_INVALID_VALUE;
	if (size == 0 || size % FAKE_GRANULARITY || offset % FAKE_GRANULARITY || offset + size > p->size)
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < nmaps; i++)
		if (va < maps[i].va + maps[i].size && maps[i].va < va + size)
			return CUDA_ERROR_ALREADY_MAPPED;
	if (mmap((void *)va, size, prot, MAP_SHARED | MAP_FIXED, p->fd, (off_t)offset) == MAP_FAILED)
		return CUDA_ERROR_OUT_OF_MEMORY;
	maps = grow(maps, &capmaps, nmaps + 1, sizeof(*maps));
	maps[nmaps++] = (struct fake_map){ va, size, offset, p };
	p->refs++;
	return CUDA_SUCCESS;
}

/* Called with fake_lock held: unmaps every mapping inside [va, va+size). */
static CUresult do_unmap(CUdeviceptr va, size_t size)
{
	bool any = false;
	for (size_t i = 0; i < nmaps;) {
		struct fake_map *m = &maps[i];
		if (m->va >= va && m->va + m->size <= va + size) {
			mmap((void *)m->va, m->size, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
			phys_unref(m->phys);
			maps[i] = maps[--nmaps];
			any = true;
			continue;
		}
		if (m->va < va + size && va < m->va + m->size)
			return CUDA_ERROR_INVALID_VALUE; /* partial unmap */
		i++;
	}
	return any ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

static void va_free(CUdeviceptr va, size_t size)
{
	for (size_t i = 0; i < nresvs; i++) {
		if (resvs[i].va == va) {
			munmap((void *)va, resvs[i].size);
			resvs[i] = resvs[--nresvs];
			return;
		}
	}
	(void)size;
}

FAKE_EXPORT CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
					 unsigned long long flags)
{
	(void)addr;
	(void)flags;
	NEED_INIT();
	if (!ptr || size == 0 || size % FAKE_GRANULARITY)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&fake_lock);
	CUdeviceptr va = va_reserve(size, alignment);
	pthread_mutex_unlock(&fake_lock);
	if (!va)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*ptr = va;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
	NEED_INIT();
	CUresult r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&fake_lock);
	for (size_t i = 0; i < nresvs; i++) {
		if (resvs[i].va == ptr && resvs[i].size == size) {
			bool mapped = false;
			for (size_t j = 0; j < nmaps; j++)
				if (maps[j].va >= ptr && maps[j].va < ptr + size)
					mapped = true;
			if (!mapped) {
				va_free(ptr, size);
				r = CUDA_SUCCESS;
			}
			break;
		}
	}
	pthread_mutex_unlock(&fake_lock);
	if (r == CUDA_SUCCESS && fake_address_free_delay_us)
		usleep(fake_address_free_delay_us);
	return r;
}

FAKE_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
				 const CUmemAllocationProp *prop, unsigned long long flags)
{
	(void)flags;
	NEED_INIT();
	if (!handle || !prop || size == 0 || size % FAKE_GRANULARITY)
		return CUDA_ERROR_INVALID_VALUE;
	int dev;
	if (prop->location.type == CU_MEM_LOCATION_TYPE_DEVICE) {
		CHECK_DEV(prop->location.id);
		dev = prop->location.id;
	} else if (prop->location.type == CU_MEM_LOCATION_TYPE_HOST ||
		   prop->location.type == CU_MEM_LOCATION_TYPE_HOST_NUMA ||
		   prop->location.type == CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT) {
		dev = -1;
	} else {
		return CUDA_ERROR_INVALID_VALUE;
	}
	note_call(DURING_CREATE);
	struct fake_phys *p = phys_new(size, dev, prop);
	if (!p)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*handle = (CUmemGenericAllocationHandle)(uintptr_t)p;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle)
{
	NEED_INIT();
	if (!handle)
		return CUDA_ERROR_INVALID_VALUE;
	note_call(DURING_RELEASE);
	pthread_mutex_lock(&fake_lock);
	phys_unref((struct fake_phys *)(uintptr_t)handle);
	pthread_mutex_unlock(&fake_lock);
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
			      unsigned long long flags)
{
	(void)flags;
	NEED_INIT();
	if (!handle)
		return CUDA_ERROR_INVALID_HANDLE;
	note_call(DURING_MAP);
	fake_arm_check();
	long fail = atomic_load(&fake_map_fail_in);
	if (fail > 0 && atomic_fetch_sub(&fake_map_fail_in, 1) == 1)
		return CUDA_ERROR_OUT_OF_MEMORY;
	pthread_mutex_lock(&fake_lock);
	/* Mapped without access, as on the GPU: cuMemSetAccess grants it. */
	CUresult r = do_map(ptr, size, offset, (struct fake_phys *)(uintptr_t)handle, PROT_NONE);
	pthread_mutex_unlock(&fake_lock);
	return r;
}

FAKE_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size)
{
	NEED_INIT();
	note_call(DURING_UNMAP);
	pthread_mutex_lock(&fake_lock);
	CUresult r = do_unmap(ptr, size);
	pthread_mutex_unlock(&fake_lock);
	return r;
}

FAKE_EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count)
{
	NEED_INIT();
	if (!desc || count == 0)
		return CUDA_ERROR_INVALID_VALUE;
	int prot = PROT_NONE;
	for (size_t i = 0; i < count; i++) {
		if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE)
			return CUDA_ERROR_INVALID_VALUE;
		if (desc[i].location.id < 0 || desc[i].location.id >= fake_ndev)
			return CUDA_ERROR_INVALID_DEVICE;
		if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
			prot = PROT_READ | PROT_WRITE;
		else if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READ && prot == PROT_NONE)
			prot = PROT_READ;
	}
	pthread_mutex_lock(&fake_lock);
	/* The whole range must be mapped. */
	size_t covered = 0;
	for (size_t i = 0; i < nmaps; i++)
		if (maps[i].va >= ptr && maps[i].va + maps[i].size <= ptr + size)
			covered += maps[i].size;
	CUresult r = covered == size ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
	if (r == CUDA_SUCCESS && mprotect((void *)ptr, size, prot) < 0)
		r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_unlock(&fake_lock);
	return r;
}

FAKE_EXPORT CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
						   CUmemAllocationGranularity_flags option)
{
	(void)option;
	NEED_INIT();
	if (!granularity || !prop)
		return CUDA_ERROR_INVALID_VALUE;
	*granularity = FAKE_GRANULARITY;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr)
{
	NEED_INIT();
	if (!handle)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&fake_lock);
	int i = map_containing((CUdeviceptr)(uintptr_t)addr);
	if (i >= 0) {
		maps[i].phys->refs++;
		*handle = (CUmemGenericAllocationHandle)(uintptr_t)maps[i].phys;
	}
	pthread_mutex_unlock(&fake_lock);
	return i >= 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop,
							    CUmemGenericAllocationHandle handle)
{
	NEED_INIT();
	if (!prop || !handle)
		return CUDA_ERROR_INVALID_VALUE;
	*prop = ((struct fake_phys *)(uintptr_t)handle)->prop;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemExportToShareableHandle(void *shareableHandle, CUmemGenericAllocationHandle handle,
						  CUmemAllocationHandleType handleType, unsigned long long flags)
{
	(void)flags;
	NEED_INIT();
	if (!shareableHandle || !handle || handleType != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		return CUDA_ERROR_INVALID_VALUE;
	/* As the driver: only memory created for this handle type can be exported. */
	if (!(((struct fake_phys *)(uintptr_t)handle)->prop.requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))
		return CUDA_ERROR_INVALID_VALUE;
	int fd = dup(((struct fake_phys *)(uintptr_t)handle)->fd);
	if (fd < 0)
		return CUDA_ERROR_OPERATING_SYSTEM;
	*(int *)shareableHandle = fd;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle, void *osHandle,
						    CUmemAllocationHandleType shHandleType)
{
	NEED_INIT();
	if (!handle || shHandleType != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
		return CUDA_ERROR_INVALID_VALUE;
	int fd = dup((int)(intptr_t)osHandle);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return CUDA_ERROR_INVALID_VALUE;
	}
	struct fake_phys *p = calloc(1, sizeof(*p));
	if (!p)
		abort();
	p->fd = fd;
	p->size = (size_t)st.st_size;
	p->dev = -1; /* the exporter pays for it */
	p->refs = 1;
	p->prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	p->prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	atomic_fetch_add(&fake_live_phys_count, 1);
	*handle = (CUmemGenericAllocationHandle)(uintptr_t)p;
	return CUDA_SUCCESS;
}

/* ------------------------------------------------------- linear memory */

static CUresult alloc_linear(CUdeviceptr *dptr, size_t bytes, enum fake_alloc_kind kind, int dev,
			     struct fake_pool *pool, struct fake_phys *shared)
{
	size_t size = round_up(bytes ? bytes : 1, FAKE_GRANULARITY);
	CUresult r = CUDA_ERROR_OUT_OF_MEMORY;
	struct fake_phys *p = shared;
	if (!p) {
		CUmemAllocationProp prop = { .type = CU_MEM_ALLOCATION_TYPE_PINNED,
					     .location = { CU_MEM_LOCATION_TYPE_DEVICE, dev } };
		p = phys_new(size, dev, &prop);
		if (!p)
			return CUDA_ERROR_OUT_OF_MEMORY;
	} else {
		size = p->size;
	}
	pthread_mutex_lock(&fake_lock);
	CUdeviceptr va = va_reserve(size, FAKE_GRANULARITY);
	if (!va)
		goto out_unref;
	r = do_map(va, size, 0, p, PROT_READ | PROT_WRITE);
	if (r != CUDA_SUCCESS) {
		va_free(va, size);
		goto out_unref;
	}
	if (!shared)
		phys_unref(p); /* the mapping holds it now */
	allocs = grow(allocs, &capallocs, nallocs + 1, sizeof(*allocs));
	allocs[nallocs++] = (struct fake_alloc){ va, size, kind, p, pool };
	if (pool)
		pool->reserved += size;
	pthread_mutex_unlock(&fake_lock);
	*dptr = va;
	return CUDA_SUCCESS;

out_unref:
	if (!shared)
		phys_unref(p);
	pthread_mutex_unlock(&fake_lock);
	return r;
}

static CUresult free_linear(CUdeviceptr ptr, int kind_mask)
{
	pthread_mutex_lock(&fake_lock);
	for (size_t i = 0; i < nallocs; i++) {
		struct fake_alloc a = allocs[i];
		if (a.va != ptr || !(kind_mask & (1 << a.kind)))
			continue;
		do_unmap(a.va, a.size);
		va_free(a.va, a.size);
		if (a.pool)
			a.pool->reserved -= a.size;
		allocs[i] = allocs[--nallocs];
		pthread_mutex_unlock(&fake_lock);
		return CUDA_SUCCESS;
	}
	pthread_mutex_unlock(&fake_lock);
	atomic_fetch_add(&fake_unknown_free_count, 1);
	return CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
	NEED_CTX();
	int dev = fake_current->dev;
	size_t used = atomic_load(&fake_used_bytes[dev]);
	if (free_bytes)
		*free_bytes = fake_available[dev] > used ? fake_available[dev] - used : 0;
	if (total)
		*total = fake_total[dev];
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize)
{
	NEED_CTX();
	if (!dptr || bytesize == 0)
		return CUDA_ERROR_INVALID_VALUE;
	return alloc_linear(dptr, bytesize, FAKE_LINEAR, fake_current->dev, NULL, NULL);
}

FAKE_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pPitch, size_t WidthInBytes, size_t Height,
					unsigned int ElementSizeBytes)
{
	NEED_CTX();
	if (!dptr || !pPitch || WidthInBytes == 0 || Height == 0 ||
	    (ElementSizeBytes != 4 && ElementSizeBytes != 8 && ElementSizeBytes != 16))
		return CUDA_ERROR_INVALID_VALUE;
	size_t pitch = round_up(WidthInBytes, 512);
	CUresult r = alloc_linear(dptr, pitch * Height, FAKE_LINEAR, fake_current->dev, NULL, NULL);
	if (r == CUDA_SUCCESS)
		*pPitch = pitch;
	return r;
}

FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
	NEED_INIT();
	if (!dptr)
		return CUDA_SUCCESS;
	return free_linear(dptr, 1 << FAKE_LINEAR | 1 << FAKE_MANAGED | 1 << FAKE_POOL);
}

FAKE_EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr)
{
	NEED_INIT();
	pthread_mutex_lock(&fake_lock);
	int i = map_containing(dptr);
	if (i >= 0) {
		if (pbase)
			*pbase = maps[i].va;
		if (psize)
			*psize = maps[i].size;
	}
	pthread_mutex_unlock(&fake_lock);
	return i >= 0 ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

FAKE_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytesize, unsigned int flags)
{
	(void)flags;
	NEED_CTX();
	if (!dptr || bytesize == 0)
		return CUDA_ERROR_INVALID_VALUE;
	return alloc_linear(dptr, bytesize, FAKE_MANAGED, fake_current->dev, NULL, NULL);
}

static CUresult host_alloc(void **pp, size_t bytesize)
{
	if (!pp || bytesize == 0)
		return CUDA_ERROR_INVALID_VALUE;
	void *p = mmap(NULL, bytesize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return CUDA_ERROR_OUT_OF_MEMORY;
	/* Remember the size in front of nothing: keep a small side table. */
	pthread_mutex_lock(&fake_lock);
	resvs = grow(resvs, &capresvs, nresvs + 1, sizeof(*resvs));
	/* Host blocks are kept apart by a size with the top bit set. */
	resvs[nresvs++] = (struct fake_resv){ (CUdeviceptr)(uintptr_t)p, bytesize | (1ull << 63) };
	pthread_mutex_unlock(&fake_lock);
	*pp = p;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t bytesize)
{
	NEED_CTX();
	return host_alloc(pp, bytesize);
}

FAKE_EXPORT CUresult cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
	(void)Flags;
	NEED_CTX();
	return host_alloc(pp, bytesize);
}

FAKE_EXPORT CUresult cuMemFreeHost(void *p)
{
	NEED_INIT();
	pthread_mutex_lock(&fake_lock);
	for (size_t i = 0; i < nresvs; i++) {
		if (resvs[i].va == (CUdeviceptr)(uintptr_t)p && (resvs[i].size >> 63)) {
			munmap(p, resvs[i].size & ~(1ull << 63));
			resvs[i] = resvs[--nresvs];
			pthread_mutex_unlock(&fake_lock);
			return CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&fake_lock);
	return CUDA_ERROR_INVALID_VALUE;
}

/*
 * Registered host ranges, checked like the driver does: a range may not
 * overlap one already registered, and only the base of a registration
 * unregisters it.
 */
struct fake_reg {
	uintptr_t base;
	size_t size;            /* bytes */
};
static struct fake_reg *regs;
static size_t nregs, capregs;
static atomic_long fake_unpinned;
static int reg_limit = -1;      /* live registrations allowed; -1: no limit */

FAKE_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)
{
	(void)Flags;
	NEED_CTX();
	if (!p || !bytesize)
		return CUDA_ERROR_INVALID_VALUE;
	uintptr_t b = (uintptr_t)p;
	pthread_mutex_lock(&fake_lock);
	for (size_t i = 0; i < nregs; i++) {
		if (b < regs[i].base + regs[i].size && regs[i].base < b + bytesize) {
			pthread_mutex_unlock(&fake_lock);
			return CUDA_ERROR_INVALID_VALUE; /* the driver: already registered */
		}
	}
	if (reg_limit >= 0 && nregs >= (size_t)reg_limit) {
		pthread_mutex_unlock(&fake_lock);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	regs = grow(regs, &capregs, nregs + 1, sizeof(*regs));
	regs[nregs++] = (struct fake_reg){ b, bytesize };
	pthread_mutex_unlock(&fake_lock);
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemHostUnregister(void *p)
{
	NEED_INIT();
	pthread_mutex_lock(&fake_lock);
	for (size_t i = 0; i < nregs; i++) {
		if (regs[i].base == (uintptr_t)p) {
			regs[i] = regs[--nregs];
			pthread_mutex_unlock(&fake_lock);
			return CUDA_SUCCESS;
		}
	}
	pthread_mutex_unlock(&fake_lock);
	return CUDA_ERROR_INVALID_VALUE; /* the driver: not registered */
}

/* Whether [p, p + n) lies in one pinned block: one cuMemHostAlloc or one
 * registration. A copy that crosses from one into the next is staged by the
 * real driver at pageable speed. */
static bool host_pinned(const void *p, size_t n)
{
	uintptr_t b = (uintptr_t)p;
	bool ok = false;
	pthread_mutex_lock(&fake_lock);
	for (size_t i = 0; i < nregs && !ok; i++)
		ok = b >= regs[i].base && b + n <= regs[i].base + regs[i].size;
	for (size_t i = 0; i < nresvs && !ok; i++) {
		if (!(resvs[i].size >> 63))
			continue;
		uintptr_t base = (uintptr_t)resvs[i].va, size = resvs[i].size & ~(1ull << 63);
		ok = b >= base && b + n <= base + size;
	}
	pthread_mutex_unlock(&fake_lock);
	return ok;
}

static void count_unpinned(const void *host, size_t n)
{
	if (n && !host_pinned(host, n))
		atomic_fetch_add(&fake_unpinned, 1);
}

FAKE_EXPORT int fakecuda_host_registered(void)
{
	pthread_mutex_lock(&fake_lock);
	int n = (int)nregs;
	pthread_mutex_unlock(&fake_lock);
	return n;
}

/* Makes cuMemHostRegister fail once live registrations exist (-1: never). */
FAKE_EXPORT void fakecuda_set_register_limit(int live)
{
	pthread_mutex_lock(&fake_lock);
	reg_limit = live;
	pthread_mutex_unlock(&fake_lock);
}

/* Asynchronous host copies so far whose host side was not pinned. */
FAKE_EXPORT long fakecuda_unpinned_copies(void)
{
	return atomic_load(&fake_unpinned);
}

static size_t format_bytes(CUarray_format f)
{
	switch (f) {
	case CU_AD_FORMAT_UNSIGNED_INT8: case CU_AD_FORMAT_SIGNED_INT8: return 1;
	case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16: case CU_AD_FORMAT_HALF: return 2;
	case CU_AD_FORMAT_UNSIGNED_INT32: case CU_AD_FORMAT_SIGNED_INT32: case CU_AD_FORMAT_FLOAT: return 4;
	default: return 0;
	}
}

FAKE_EXPORT CUresult cuArrayCreate_v2(CUarray *pHandle, const CUDA_ARRAY_DESCRIPTOR *d)
{
	NEED_CTX();
	if (!pHandle || !d || !format_bytes(d->Format) || d->Width == 0)
		return CUDA_ERROR_INVALID_VALUE;
	size_t size = d->Width * (d->Height ? d->Height : 1) * format_bytes(d->Format) * d->NumChannels;
	int dev = fake_current->dev;
	if (!charge(dev, size))
		return CUDA_ERROR_OUT_OF_MEMORY;
	struct CUarray_st *a = calloc(1, sizeof(*a));
	if (!a)
		abort();
	a->size = size;
	a->dev = dev;
	*pHandle = a;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuArrayDestroy(CUarray hArray)
{
	NEED_INIT();
	if (!hArray)
		return CUDA_ERROR_INVALID_HANDLE;
	uncharge(hArray->dev, hArray->size);
	free(hArray);
	return CUDA_SUCCESS;
}

/* IPC handles carry the exporting pid and the allocation's address. */
struct fake_ipc {
	uint32_t magic;
	uint32_t pid;
	uint64_t va;
};
#define FAKE_IPC_MAGIC 0xfa4ec0deu

FAKE_EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *pHandle, CUdeviceptr dptr)
{
	NEED_CTX();
	if (!pHandle)
		return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&fake_lock);
	bool found = false;
	for (size_t i = 0; i < nallocs; i++)
		if (allocs[i].va == dptr && allocs[i].kind == FAKE_LINEAR)
			found = true;
	pthread_mutex_unlock(&fake_lock);
	if (!found)
		return CUDA_ERROR_INVALID_VALUE; /* like the driver: cuMemAlloc memory only */
	struct fake_ipc h = { FAKE_IPC_MAGIC, (uint32_t)getpid(), dptr };
	memset(pHandle, 0, sizeof(*pHandle));
	memcpy(pHandle->reserved, &h, sizeof(h));
	return CUDA_SUCCESS;
}

static CUresult ipc_open(CUdeviceptr *pdptr, CUipcMemHandle handle)
{
	NEED_CTX();
	struct fake_ipc h;
	memcpy(&h, handle.reserved, sizeof(h));
	if (!pdptr || h.magic != FAKE_IPC_MAGIC || h.pid != (uint32_t)getpid())
		return CUDA_ERROR_INVALID_VALUE; /* the fake shares within one process only */
	pthread_mutex_lock(&fake_lock);
	struct fake_phys *p = NULL;
	for (size_t i = 0; i < nallocs; i++)
		if (allocs[i].va == h.va)
			p = allocs[i].phys;
	if (p)
		p->refs++;
	pthread_mutex_unlock(&fake_lock);
	if (!p)
		return CUDA_ERROR_INVALID_VALUE;
	CUresult r = alloc_linear(pdptr, p->size, FAKE_IPC, -1, NULL, p);
	pthread_mutex_lock(&fake_lock);
	phys_unref(p);
	pthread_mutex_unlock(&fake_lock);
	return r;
}

/* The pre-11.0 form: the fake keeps it as a distinct symbol so tests can see
 * which version cuGetProcAddress handed out. */
FAKE_EXPORT CUresult cuIpcOpenMemHandle(CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int Flags)
{
	(void)Flags;
	return ipc_open(pdptr, handle);
}

FAKE_EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int Flags)
{
	(void)Flags;
	return ipc_open(pdptr, handle);
}

FAKE_EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr dptr)
{
	NEED_INIT();
	return free_linear(dptr, 1 << FAKE_IPC);
}

/* ----------------------------------------------------------------- pools */

static CUresult alloc_async(CUdeviceptr *dptr, size_t bytesize, struct fake_pool *pool, CUstream h)
{
	NEED_CTX();
	if (!dptr || bytesize == 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (!stream_of(h))
		return CUDA_ERROR_INVALID_HANDLE;
	if (!pool)
		pool = fake_current_pool[fake_current->dev] ? fake_current_pool[fake_current->dev]
							    : &fake_default_pool[fake_current->dev];
	return alloc_linear(dptr, bytesize, FAKE_POOL, pool->dev, pool, NULL);
}

static void run_free(struct fake_op *op)
{
	free_linear(op->u.free.ptr, 1 << FAKE_POOL);
}

static CUresult free_async(CUdeviceptr dptr, CUstream h)
{
	NEED_CTX();
	pthread_mutex_lock(&fake_lock);
	bool found = false;
	for (size_t i = 0; i < nallocs; i++)
		if (allocs[i].va == dptr && allocs[i].kind == FAKE_POOL)
			found = true;
	pthread_mutex_unlock(&fake_lock);
	if (!found) {
		atomic_fetch_add(&fake_unknown_free_count, 1);
		return CUDA_ERROR_INVALID_VALUE;
	}
	struct fake_op *op = op_new(run_free);
	op->u.free.ptr = dptr;
	return enqueue(h, op);
}

FAKE_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
	return alloc_async(dptr, bytesize, NULL, hStream);
}

FAKE_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUstream hStream)
{
	return alloc_async(dptr, bytesize, NULL, hStream);
}

FAKE_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
					     CUstream hStream)
{
	if (!pool)
		return CUDA_ERROR_INVALID_VALUE;
	return alloc_async(dptr, bytesize, (struct fake_pool *)pool, hStream);
}

FAKE_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytesize, CUmemoryPool pool,
						  CUstream hStream)
{
	return cuMemAllocFromPoolAsync(dptr, bytesize, pool, hStream);
}

FAKE_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream)
{
	return free_async(dptr, hStream);
}

FAKE_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream)
{
	return free_async(dptr, hStream);
}

FAKE_EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
	NEED_INIT();
	if (!pool || !props || props->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
		return CUDA_ERROR_INVALID_VALUE;
	CHECK_DEV(props->location.id);
	struct fake_pool *p = calloc(1, sizeof(*p));
	if (!p)
		abort();
	p->dev = props->location.id;
	*pool = (CUmemoryPool)p;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
	NEED_INIT();
	if (!pool)
		return CUDA_ERROR_INVALID_VALUE;
	for (int d = 0; d < FAKE_MAX_DEVICES; d++)
		if (fake_current_pool[d] == (struct fake_pool *)pool)
			fake_current_pool[d] = NULL;
	free(pool); /* the fake does not check for live allocations */
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t minBytesToKeep)
{
	(void)minBytesToKeep;
	NEED_INIT();
	return pool ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

FAKE_EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
	NEED_INIT();
	if (!pool || !value)
		return CUDA_ERROR_INVALID_VALUE;
	struct fake_pool *p = (struct fake_pool *)pool;
	switch (attr) {
	case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT:
	case CU_MEMPOOL_ATTR_USED_MEM_CURRENT:
		pthread_mutex_lock(&fake_lock);
		*(cuuint64_t *)value = p->reserved;
		pthread_mutex_unlock(&fake_lock);
		return CUDA_SUCCESS;
	case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD:
		*(cuuint64_t *)value = p->release_threshold;
		return CUDA_SUCCESS;
	default:
		return CUDA_ERROR_NOT_SUPPORTED;
	}
}

FAKE_EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void *value)
{
	NEED_INIT();
	if (!pool || !value)
		return CUDA_ERROR_INVALID_VALUE;
	struct fake_pool *p = (struct fake_pool *)pool;
	switch (attr) {
	case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD:
		p->release_threshold = *(cuuint64_t *)value;
		return CUDA_SUCCESS;
	case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES:
	case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC:
	case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES:
		return CUDA_SUCCESS;
	case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
	case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
		return *(cuuint64_t *)value == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
}

FAKE_EXPORT CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
	NEED_INIT();
	CHECK_DEV(dev);
	if (!pool || ((struct fake_pool *)pool)->dev != dev)
		return CUDA_ERROR_INVALID_VALUE;
	fake_current_pool[dev] = (struct fake_pool *)pool;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool_out, CUdevice dev)
{
	NEED_INIT();
	CHECK_DEV(dev);
	if (!pool_out)
		return CUDA_ERROR_INVALID_VALUE;
	*pool_out = (CUmemoryPool)&fake_default_pool[dev];
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
	NEED_INIT();
	CHECK_DEV(dev);
	if (pool && fake_current_pool[dev]) {
		*pool = (CUmemoryPool)fake_current_pool[dev];
		return CUDA_SUCCESS;
	}
	return cuDeviceGetDefaultMemPool(pool, dev);
}

/* ------------------------------------------------------- streams, events */

FAKE_EXPORT CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags)
{
	(void)Flags;
	NEED_CTX();
	if (!phStream)
		return CUDA_ERROR_INVALID_VALUE;
	struct fake_stream *s = stream_new();
	if (!s)
		return CUDA_ERROR_OUT_OF_MEMORY;
	*phStream = (CUstream)s;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamDestroy_v2(CUstream hStream)
{
	NEED_INIT();
	if (!hStream)
		return CUDA_ERROR_INVALID_HANDLE;
	/* Finishes the queued work; the thread stays parked (streams are
	 * kept on the global list, which is never shortened). */
	stream_sync((struct fake_stream *)hStream);
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamSynchronize(CUstream hStream)
{
	NEED_CTX();
	struct fake_stream *s = stream_of(hStream);
	if (!s)
		return CUDA_ERROR_INVALID_HANDLE;
	stream_sync(s);
	/* A failed copy is reported once, then the stream works again. */
	pthread_mutex_lock(&s->lock);
	CUresult r = s->error;
	s->error = CUDA_SUCCESS;
	pthread_mutex_unlock(&s->lock);
	return r;
}

FAKE_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream hStream)
{
	return cuStreamSynchronize(hStream);
}

/* Capture: only the state is kept (cuStreamIsCapturing); the work still runs and no graph is made. */
FAKE_EXPORT CUresult cuStreamBeginCapture_v2(CUstream hStream, int mode)
{
	(void)mode;
	NEED_CTX();
	struct fake_stream *s = stream_of(hStream);
	if (!s || s->capturing)
		return CUDA_ERROR_INVALID_VALUE;
	s->capturing = true;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamEndCapture(CUstream hStream, CUgraph *phGraph)
{
	NEED_CTX();
	struct fake_stream *s = stream_of(hStream);
	if (!s || !s->capturing || !phGraph)
		return CUDA_ERROR_INVALID_VALUE;
	s->capturing = false;
	*phGraph = (CUgraph)s;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *status)
{
	NEED_CTX();
	struct fake_stream *s = stream_of(hStream);
	if (!s || !status)
		return CUDA_ERROR_INVALID_VALUE;
	*status = s->capturing ? 1 : 0;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamQuery(CUstream hStream)
{
	NEED_CTX();
	struct fake_stream *s = stream_of(hStream);
	if (!s)
		return CUDA_ERROR_INVALID_HANDLE;
	pthread_mutex_lock(&s->lock);
	bool idle = !s->head && !s->busy;
	pthread_mutex_unlock(&s->lock);
	return idle ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

FAKE_EXPORT CUresult cuEventCreate(CUevent *phEvent, unsigned int Flags)
{
	(void)Flags;
	NEED_CTX();
	if (!phEvent)
		return CUDA_ERROR_INVALID_VALUE;
	struct fake_event *e = calloc(1, sizeof(*e));
	if (!e)
		abort();
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);
	*phEvent = (CUevent)e;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuEventDestroy_v2(CUevent hEvent)
{
	NEED_INIT();
	if (!hEvent)
		return CUDA_ERROR_INVALID_HANDLE;
	/* Leaked on purpose: a queued record may still name it. */
	return CUDA_SUCCESS;
}

static void run_event(struct fake_op *op)
{
	struct fake_event *e = op->u.event.ev;
	pthread_mutex_lock(&op->stream->lock);
	CUresult error = op->stream->error;
	pthread_mutex_unlock(&op->stream->lock);
	pthread_mutex_lock(&e->lock);
	if (op->u.event.gen > e->completed) {
		e->completed = op->u.event.gen;
		if (e->completed == e->recorded)
			e->error = error;
	}
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

FAKE_EXPORT CUresult cuEventRecord(CUevent hEvent, CUstream hStream)
{
	NEED_CTX();
	if (!hEvent)
		return CUDA_ERROR_INVALID_HANDLE;
	struct fake_event *e = (struct fake_event *)hEvent;
	struct fake_op *op = op_new(run_event);
	pthread_mutex_lock(&e->lock);
	op->u.event.gen = ++e->recorded;
	e->error = CUDA_SUCCESS;
	pthread_mutex_unlock(&e->lock);
	op->u.event.ev = e;
	return enqueue(hStream, op);
}

FAKE_EXPORT CUresult cuEventRecord_ptsz(CUevent hEvent, CUstream hStream)
{
	return cuEventRecord(hEvent, hStream);
}

/* Waits until record gen ran. Returns the error of the stream's work before the event. */
static CUresult event_wait_gen(struct fake_event *e, uint64_t gen)
{
	pthread_mutex_lock(&e->lock);
	while (e->completed < gen)
		pthread_cond_wait(&e->cond, &e->lock);
	CUresult r = e->error;
	pthread_mutex_unlock(&e->lock);
	return r;
}

FAKE_EXPORT CUresult cuEventSynchronize(CUevent hEvent)
{
	NEED_INIT();
	if (!hEvent)
		return CUDA_ERROR_INVALID_HANDLE;
	struct fake_event *e = (struct fake_event *)hEvent;
	pthread_mutex_lock(&e->lock);
	uint64_t gen = e->recorded;
	pthread_mutex_unlock(&e->lock);
	return event_wait_gen(e, gen);
}

FAKE_EXPORT CUresult cuEventQuery(CUevent hEvent)
{
	NEED_INIT();
	if (!hEvent)
		return CUDA_ERROR_INVALID_HANDLE;
	struct fake_event *e = (struct fake_event *)hEvent;
	pthread_mutex_lock(&e->lock);
	CUresult r = e->completed == e->recorded ? e->error : CUDA_ERROR_NOT_READY;
	pthread_mutex_unlock(&e->lock);
	return r;
}

static void run_wait_event(struct fake_op *op)
{
	(void)event_wait_gen(op->u.event.ev, op->u.event.gen);
}

FAKE_EXPORT CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
{
	(void)Flags;
	NEED_CTX();
	if (!hEvent)
		return CUDA_ERROR_INVALID_HANDLE;
	struct fake_event *e = (struct fake_event *)hEvent;
	struct fake_op *op = op_new(run_wait_event);
	pthread_mutex_lock(&e->lock);
	op->u.event.gen = e->recorded;
	pthread_mutex_unlock(&e->lock);
	op->u.event.ev = e;
	return enqueue(hStream, op);
}

/* ------------------------------------------------------ copies, memsets */

static void run_copy(struct fake_op *op)
{
	unsigned delay = atomic_load(&fake_copy_delay_us);
	if (delay)
		usleep(delay);
	if (op->u.copy.fail) {
		/* Reported by the events after it and by cuStreamSynchronize. */
		pthread_mutex_lock(&op->stream->lock);
		op->stream->error = CUDA_ERROR_ILLEGAL_ADDRESS;
		pthread_mutex_unlock(&op->stream->lock);
	} else {
		memmove(op->u.copy.dst, op->u.copy.src, op->u.copy.n);
	}
	atomic_fetch_sub(&fake_copies_pending, 1);
}

static CUresult copy_async(void *dst, const void *src, size_t n, CUstream h)
{
	NEED_CTX();
	if ((!dst || !src) && n)
		return CUDA_ERROR_INVALID_VALUE;
	struct fake_op *op = op_new(run_copy);
	op->u.copy.dst = dst;
	op->u.copy.src = src;
	op->u.copy.n = n;
	fake_arm_check();
	long fail = atomic_load(&fake_copy_fail_in);
	op->u.copy.fail = fail > 0 && atomic_fetch_sub(&fake_copy_fail_in, 1) == 1;
	atomic_fetch_add(&fake_copies_pending, 1);
	CUresult r = enqueue(h, op);
	if (r != CUDA_SUCCESS)
		atomic_fetch_sub(&fake_copies_pending, 1);
	return r;
}

static CUresult copy_sync(void *dst, const void *src, size_t n)
{
	CUresult r = copy_async(dst, src, n, NULL);
	if (r == CUDA_SUCCESS)
		stream_sync(fake_current->null_stream);
	return r;
}

#define DP(x) ((void *)(uintptr_t)(x))

FAKE_EXPORT CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) { return copy_sync(DP(dst), DP(src), n); }
FAKE_EXPORT CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n) { return copy_sync(DP(dst), DP(src), n); }
FAKE_EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h) { return copy_async(DP(dst), DP(src), n, h); }
FAKE_EXPORT CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h) { return copy_async(DP(dst), DP(src), n, h); }
FAKE_EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) { return copy_sync(DP(dst), src, n); }
FAKE_EXPORT CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dst, const void *src, size_t n) { return copy_sync(DP(dst), src, n); }
FAKE_EXPORT CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) { return copy_sync(dst, DP(src), n); }
FAKE_EXPORT CUresult cuMemcpyDtoH_v2_ptds(void *dst, CUdeviceptr src, size_t n) { return copy_sync(dst, DP(src), n); }
FAKE_EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) { return copy_sync(DP(dst), DP(src), n); }
FAKE_EXPORT CUresult cuMemcpyDtoD_v2_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n) { return copy_sync(DP(dst), DP(src), n); }
FAKE_EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream h) { count_unpinned(src, n); return copy_async(DP(dst), src, n, h); }
FAKE_EXPORT CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dst, const void *src, size_t n, CUstream h) { count_unpinned(src, n); return copy_async(DP(dst), src, n, h); }
FAKE_EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream h) { count_unpinned(dst, n); return copy_async(dst, DP(src), n, h); }
FAKE_EXPORT CUresult cuMemcpyDtoHAsync_v2_ptsz(void *dst, CUdeviceptr src, size_t n, CUstream h) { count_unpinned(dst, n); return copy_async(dst, DP(src), n, h); }
FAKE_EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h) { return copy_async(DP(dst), DP(src), n, h); }
FAKE_EXPORT CUresult cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h) { return copy_async(DP(dst), DP(src), n, h); }
FAKE_EXPORT CUresult cuMemcpyPeer(CUdeviceptr dst, CUcontext dc, CUdeviceptr src, CUcontext sc, size_t n)
{
	(void)dc; (void)sc;
	return copy_sync(DP(dst), DP(src), n);
}
FAKE_EXPORT CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dc, CUdeviceptr src, CUcontext sc, size_t n,
				       CUstream h)
{
	(void)dc; (void)sc;
	return copy_async(DP(dst), DP(src), n, h);
}
/* 2D copies are not emulated; the symbols exist so lookups behave. */
FAKE_EXPORT CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *p) { (void)p; return CUDA_ERROR_NOT_SUPPORTED; }
FAKE_EXPORT CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *p) { (void)p; return CUDA_ERROR_NOT_SUPPORTED; }
FAKE_EXPORT CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *p, CUstream h) { (void)p; (void)h; return CUDA_ERROR_NOT_SUPPORTED; }
FAKE_EXPORT CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *p, CUstream h) { (void)p; (void)h; return CUDA_ERROR_NOT_SUPPORTED; }

static void run_set(struct fake_op *op)
{
	if (op->u.set.width == 1) {
		memset(op->u.set.dst, (int)op->u.set.value, op->u.set.n);
		return;
	}
	uint32_t *d = op->u.set.dst;
	for (size_t i = 0; i < op->u.set.n; i++)
		d[i] = op->u.set.value;
}

static CUresult set_async(CUdeviceptr dst, uint32_t value, size_t n, int width, CUstream h, bool sync)
{
	NEED_CTX();
	if (!dst && n)
		return CUDA_ERROR_INVALID_VALUE;
	struct fake_op *op = op_new(run_set);
	op->u.set.dst = DP(dst);
	op->u.set.value = value;
	op->u.set.n = n;
	op->u.set.width = width;
	CUresult r = enqueue(h, op);
	if (r == CUDA_SUCCESS && sync)
		stream_sync(stream_of(h));
	return r;
}

FAKE_EXPORT CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { return set_async(d, v, n, 1, NULL, true); }
FAKE_EXPORT CUresult cuMemsetD8_v2_ptds(CUdeviceptr d, unsigned char v, size_t n) { return set_async(d, v, n, 1, NULL, true); }
FAKE_EXPORT CUresult cuMemsetD32_v2(CUdeviceptr d, unsigned int v, size_t n) { return set_async(d, v, n, 4, NULL, true); }
FAKE_EXPORT CUresult cuMemsetD32_v2_ptds(CUdeviceptr d, unsigned int v, size_t n) { return set_async(d, v, n, 4, NULL, true); }
FAKE_EXPORT CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream h) { return set_async(d, v, n, 1, h, false); }
FAKE_EXPORT CUresult cuMemsetD8Async_ptsz(CUdeviceptr d, unsigned char v, size_t n, CUstream h) { return set_async(d, v, n, 1, h, false); }
FAKE_EXPORT CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream h) { return set_async(d, v, n, 4, h, false); }
FAKE_EXPORT CUresult cuMemsetD32Async_ptsz(CUdeviceptr d, unsigned int v, size_t n, CUstream h) { return set_async(d, v, n, 4, h, false); }

/* ------------------------------------------------------ modules, kernels */

FAKE_EXPORT CUresult cuModuleLoadData(CUmodule *module, const void *image)
{
	NEED_CTX();
	if (!module || !image)
		return CUDA_ERROR_INVALID_VALUE;
	*module = &fake_module;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuModuleUnload(CUmodule hmod)
{
	NEED_INIT();
	return hmod == &fake_module ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

FAKE_EXPORT CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name)
{
	NEED_INIT();
	if (!hfunc || !name || hmod != &fake_module)
		return CUDA_ERROR_INVALID_VALUE;
	for (size_t i = 0; i < sizeof(fake_kernels) / sizeof(fake_kernels[0]); i++) {
		if (strcmp(fake_kernels[i].name, name) == 0) {
			*hfunc = &fake_kernels[i];
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_NOT_FOUND;
}

/*
 * Kernel parameters (kernelParams[i] points at each argument):
 *   fill(CUdeviceptr dst, uint32_t value, size_t n)          dst[i] = value + i
 *   checksum(CUdeviceptr src, size_t n, CUdeviceptr out)     *(uint64_t *)out = sum of (i+1)*src[i]
 *   add(CUdeviceptr dst, CUdeviceptr a, CUdeviceptr b, size_t n)  dst[i] = a[i] + b[i]
 *   sleep(uint32_t usec)
 * where n counts uint32_t elements.
 */
static void run_kernel(struct fake_op *op)
{
	uint64_t a = op->u.kernel.a, b = op->u.kernel.b, c = op->u.kernel.c, d = op->u.kernel.d;
	switch (op->u.kernel.kind) {
	case K_FILL: {
		uint32_t *dst = DP(a);
		for (size_t i = 0; i < c; i++)
			dst[i] = (uint32_t)b + (uint32_t)i;
		break;
	}
	case K_CHECKSUM: {
		const uint32_t *src = DP(a);
		uint64_t sum = 0;
		for (size_t i = 0; i < b; i++)
			sum += (uint64_t)(i + 1) * src[i];
		*(uint64_t *)DP(c) = sum;
		break;
	}
	case K_ADD: {
		uint32_t *dst = DP(a);
		const uint32_t *x = DP(b), *y = DP(c);
		for (size_t i = 0; i < d; i++)
			dst[i] = x[i] + y[i];
		break;
	}
	case K_SLEEP: {
		struct timespec ts = { 0, (long)a * 1000 };
		nanosleep(&ts, NULL);
		break;
	}
	}
}

static CUresult launch(CUfunction f, CUstream h, void **params)
{
	NEED_CTX();
	if (!f || !params)
		return CUDA_ERROR_INVALID_VALUE;
	struct fake_op *op = op_new(run_kernel);
	op->u.kernel.kind = f->kind;
	switch (f->kind) {
	case K_FILL:
		op->u.kernel.a = *(CUdeviceptr *)params[0];
		op->u.kernel.b = *(uint32_t *)params[1];
		op->u.kernel.c = *(size_t *)params[2];
		break;
	case K_CHECKSUM:
		op->u.kernel.a = *(CUdeviceptr *)params[0];
		op->u.kernel.b = *(size_t *)params[1];
		op->u.kernel.c = *(CUdeviceptr *)params[2];
		break;
	case K_ADD:
		op->u.kernel.a = *(CUdeviceptr *)params[0];
		op->u.kernel.b = *(CUdeviceptr *)params[1];
		op->u.kernel.c = *(CUdeviceptr *)params[2];
		op->u.kernel.d = *(size_t *)params[3];
		break;
	case K_SLEEP:
		op->u.kernel.a = *(uint32_t *)params[0];
		break;
	}
	return enqueue(h, op);
}

FAKE_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
				    unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,
				    CUstream h, void **params, void **extra)
{
	(void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)shmem; (void)extra;
	return launch(f, h, params);
}

FAKE_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
					 unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,
					 CUstream h, void **params, void **extra)
{
	(void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)shmem; (void)extra;
	return launch(f, h, params);
}

FAKE_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
{
	(void)config; (void)f; (void)params; (void)extra;
	return CUDA_ERROR_NOT_SUPPORTED;
}

FAKE_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **params, void **extra)
{
	return cuLaunchKernelEx(config, f, params, extra);
}

FAKE_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
					       unsigned int bx, unsigned int by, unsigned int bz,
					       unsigned int shmem, CUstream h, void **params)
{
	(void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)shmem;
	return launch(f, h, params);
}

FAKE_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
						    unsigned int gz, unsigned int bx, unsigned int by,
						    unsigned int bz, unsigned int shmem, CUstream h,
						    void **params)
{
	(void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)shmem;
	return launch(f, h, params);
}

FAKE_EXPORT CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream)
{
	(void)hGraphExec; (void)hStream;
	return CUDA_ERROR_NOT_SUPPORTED;
}

FAKE_EXPORT CUresult cuGraphLaunch_ptsz(CUgraphExec hGraphExec, CUstream hStream)
{
	return cuGraphLaunch(hGraphExec, hStream);
}

/* ------------------------------------------------------ cuGetProcAddress */

struct fake_sym {
	const char *name;       /* the name callers ask for */
	int min_version;        /* first CUDA version (1000*major + 10*minor) */
	bool per_thread;        /* a per-thread-default-stream form */
	const char *exact;      /* the exported symbol */
	void *fn;
};

#define SYM(name, ver, ptds, fn) { name, ver, ptds, #fn, (void *)fn }
static const struct fake_sym fake_syms[] = {
	SYM("cuInit", 2000, false, cuInit),
	SYM("cuDriverGetVersion", 2020, false, cuDriverGetVersion),
	SYM("cuDeviceGet", 2000, false, cuDeviceGet),
	SYM("cuDeviceGetCount", 2000, false, cuDeviceGetCount),
	SYM("cuDeviceGetName", 2000, false, cuDeviceGetName),
	SYM("cuDeviceGetUuid", 11040, false, cuDeviceGetUuid_v2),
	SYM("cuDeviceTotalMem", 3020, false, cuDeviceTotalMem_v2),
	SYM("cuDeviceGetAttribute", 2000, false, cuDeviceGetAttribute),
	SYM("cuDevicePrimaryCtxRetain", 7000, false, cuDevicePrimaryCtxRetain),
	SYM("cuDevicePrimaryCtxRelease", 11000, false, cuDevicePrimaryCtxRelease_v2),
	SYM("cuCtxCreate", 3020, false, cuCtxCreate_v2),
	SYM("cuCtxCreate", 12050, false, cuCtxCreate_v4),
	SYM("cuCtxDestroy", 4000, false, cuCtxDestroy_v2),
	SYM("cuCtxSetCurrent", 4000, false, cuCtxSetCurrent),
	SYM("cuCtxGetCurrent", 4000, false, cuCtxGetCurrent),
	SYM("cuCtxPushCurrent", 4000, false, cuCtxPushCurrent_v2),
	SYM("cuCtxPopCurrent", 4000, false, cuCtxPopCurrent_v2),
	SYM("cuCtxGetDevice", 2000, false, cuCtxGetDevice),
	SYM("cuCtxSynchronize", 2000, false, cuCtxSynchronize),
	SYM("cuGetProcAddress", 11030, false, cuGetProcAddress),
	SYM("cuGetProcAddress", 12000, false, cuGetProcAddress_v2),
	SYM("cuGetExportTable", 3000, false, cuGetExportTable),
	SYM("cuGetErrorString", 6000, false, cuGetErrorString),
	SYM("cuMemGetInfo", 3020, false, cuMemGetInfo_v2),
	SYM("cuMemAlloc", 3020, false, cuMemAlloc_v2),
	SYM("cuMemAllocPitch", 3020, false, cuMemAllocPitch_v2),
	SYM("cuMemFree", 3020, false, cuMemFree_v2),
	SYM("cuMemGetAddressRange", 3020, false, cuMemGetAddressRange_v2),
	SYM("cuMemAllocHost", 3020, false, cuMemAllocHost_v2),
	SYM("cuMemHostAlloc", 2020, false, cuMemHostAlloc),
	SYM("cuMemFreeHost", 2000, false, cuMemFreeHost),
	SYM("cuMemHostRegister", 6050, false, cuMemHostRegister_v2),
	SYM("cuMemHostUnregister", 4000, false, cuMemHostUnregister),
	SYM("cuMemAllocManaged", 6000, false, cuMemAllocManaged),
	SYM("cuArrayCreate", 3020, false, cuArrayCreate_v2),
	SYM("cuArrayDestroy", 2000, false, cuArrayDestroy),
	SYM("cuIpcGetMemHandle", 4010, false, cuIpcGetMemHandle),
	SYM("cuIpcOpenMemHandle", 4010, false, cuIpcOpenMemHandle),
	SYM("cuIpcOpenMemHandle", 11000, false, cuIpcOpenMemHandle_v2),
	SYM("cuIpcCloseMemHandle", 4010, false, cuIpcCloseMemHandle),
	SYM("cuMemAddressReserve", 10020, false, cuMemAddressReserve),
	SYM("cuMemAddressFree", 10020, false, cuMemAddressFree),
	SYM("cuMemCreate", 10020, false, cuMemCreate),
	SYM("cuMemRelease", 10020, false, cuMemRelease),
	SYM("cuMemMap", 10020, false, cuMemMap),
	SYM("cuMemUnmap", 10020, false, cuMemUnmap),
	SYM("cuMemSetAccess", 10020, false, cuMemSetAccess),
	SYM("cuMemGetAllocationGranularity", 10020, false, cuMemGetAllocationGranularity),
	SYM("cuMemRetainAllocationHandle", 11000, false, cuMemRetainAllocationHandle),
	SYM("cuMemGetAllocationPropertiesFromHandle", 10020, false, cuMemGetAllocationPropertiesFromHandle),
	SYM("cuMemExportToShareableHandle", 10020, false, cuMemExportToShareableHandle),
	SYM("cuMemImportFromShareableHandle", 10020, false, cuMemImportFromShareableHandle),
	SYM("cuMemAllocAsync", 11020, false, cuMemAllocAsync),
	SYM("cuMemAllocAsync", 11020, true, cuMemAllocAsync_ptsz),
	SYM("cuMemAllocFromPoolAsync", 11020, false, cuMemAllocFromPoolAsync),
	SYM("cuMemAllocFromPoolAsync", 11020, true, cuMemAllocFromPoolAsync_ptsz),
	SYM("cuMemFreeAsync", 11020, false, cuMemFreeAsync),
	SYM("cuMemFreeAsync", 11020, true, cuMemFreeAsync_ptsz),
	SYM("cuMemPoolCreate", 11020, false, cuMemPoolCreate),
	SYM("cuMemPoolDestroy", 11020, false, cuMemPoolDestroy),
	SYM("cuMemPoolTrimTo", 11020, false, cuMemPoolTrimTo),
	SYM("cuMemPoolGetAttribute", 11020, false, cuMemPoolGetAttribute),
	SYM("cuMemPoolSetAttribute", 11020, false, cuMemPoolSetAttribute),
	SYM("cuDeviceSetMemPool", 11020, false, cuDeviceSetMemPool),
	SYM("cuDeviceGetDefaultMemPool", 11020, false, cuDeviceGetDefaultMemPool),
	SYM("cuDeviceGetMemPool", 11020, false, cuDeviceGetMemPool),
	SYM("cuStreamCreate", 2000, false, cuStreamCreate),
	SYM("cuStreamDestroy", 4000, false, cuStreamDestroy_v2),
	SYM("cuStreamSynchronize", 2000, false, cuStreamSynchronize),
	SYM("cuStreamSynchronize", 7000, true, cuStreamSynchronize_ptsz),
	SYM("cuStreamQuery", 2000, false, cuStreamQuery),
	SYM("cuStreamBeginCapture", 10010, false, cuStreamBeginCapture_v2),
	SYM("cuStreamEndCapture", 10000, false, cuStreamEndCapture),
	SYM("cuStreamIsCapturing", 10000, false, cuStreamIsCapturing),
	SYM("cuStreamWaitEvent", 3020, false, cuStreamWaitEvent),
	SYM("cuEventCreate", 2000, false, cuEventCreate),
	SYM("cuEventDestroy", 4000, false, cuEventDestroy_v2),
	SYM("cuEventRecord", 2000, false, cuEventRecord),
	SYM("cuEventRecord", 7000, true, cuEventRecord_ptsz),
	SYM("cuEventSynchronize", 2000, false, cuEventSynchronize),
	SYM("cuEventQuery", 2000, false, cuEventQuery),
	SYM("cuMemcpy", 4000, false, cuMemcpy),
	SYM("cuMemcpy", 7000, true, cuMemcpy_ptds),
	SYM("cuMemcpyAsync", 4000, false, cuMemcpyAsync),
	SYM("cuMemcpyAsync", 7000, true, cuMemcpyAsync_ptsz),
	SYM("cuMemcpyHtoD", 3020, false, cuMemcpyHtoD_v2),
	SYM("cuMemcpyHtoD", 7000, true, cuMemcpyHtoD_v2_ptds),
	SYM("cuMemcpyDtoH", 3020, false, cuMemcpyDtoH_v2),
	SYM("cuMemcpyDtoH", 7000, true, cuMemcpyDtoH_v2_ptds),
	SYM("cuMemcpyDtoD", 3020, false, cuMemcpyDtoD_v2),
	SYM("cuMemcpyDtoD", 7000, true, cuMemcpyDtoD_v2_ptds),
	SYM("cuMemcpyHtoDAsync", 3020, false, cuMemcpyHtoDAsync_v2),
	SYM("cuMemcpyHtoDAsync", 7000, true, cuMemcpyHtoDAsync_v2_ptsz),
	SYM("cuMemcpyDtoHAsync", 3020, false, cuMemcpyDtoHAsync_v2),
	SYM("cuMemcpyDtoHAsync", 7000, true, cuMemcpyDtoHAsync_v2_ptsz),
	SYM("cuMemcpyDtoDAsync", 3020, false, cuMemcpyDtoDAsync_v2),
	SYM("cuMemcpyDtoDAsync", 7000, true, cuMemcpyDtoDAsync_v2_ptsz),
	SYM("cuMemcpy2D", 3020, false, cuMemcpy2D_v2),
	SYM("cuMemcpy2D", 7000, true, cuMemcpy2D_v2_ptds),
	SYM("cuMemcpy2DAsync", 3020, false, cuMemcpy2DAsync_v2),
	SYM("cuMemcpy2DAsync", 7000, true, cuMemcpy2DAsync_v2_ptsz),
	SYM("cuMemcpyPeer", 4000, false, cuMemcpyPeer),
	SYM("cuMemcpyPeerAsync", 4000, false, cuMemcpyPeerAsync),
	SYM("cuMemsetD8", 3020, false, cuMemsetD8_v2),
	SYM("cuMemsetD8", 7000, true, cuMemsetD8_v2_ptds),
	SYM("cuMemsetD32", 3020, false, cuMemsetD32_v2),
	SYM("cuMemsetD32", 7000, true, cuMemsetD32_v2_ptds),
	SYM("cuMemsetD8Async", 3020, false, cuMemsetD8Async),
	SYM("cuMemsetD8Async", 7000, true, cuMemsetD8Async_ptsz),
	SYM("cuMemsetD32Async", 3020, false, cuMemsetD32Async),
	SYM("cuMemsetD32Async", 7000, true, cuMemsetD32Async_ptsz),
	SYM("cuModuleLoadData", 2000, false, cuModuleLoadData),
	SYM("cuModuleUnload", 2000, false, cuModuleUnload),
	SYM("cuModuleGetFunction", 2000, false, cuModuleGetFunction),
	SYM("cuLaunchKernel", 4000, false, cuLaunchKernel),
	SYM("cuLaunchKernel", 7000, true, cuLaunchKernel_ptsz),
	SYM("cuLaunchKernelEx", 11060, false, cuLaunchKernelEx),
	SYM("cuLaunchKernelEx", 11060, true, cuLaunchKernelEx_ptsz),
	SYM("cuLaunchCooperativeKernel", 9000, false, cuLaunchCooperativeKernel),
	SYM("cuLaunchCooperativeKernel", 9000, true, cuLaunchCooperativeKernel_ptsz),
	SYM("cuGraphLaunch", 10000, false, cuGraphLaunch),
	SYM("cuGraphLaunch", 10000, true, cuGraphLaunch_ptsz),
};
#define FAKE_NSYMS (sizeof(fake_syms) / sizeof(fake_syms[0]))

FAKE_EXPORT void *fakecuda_self_sym(const char *exact_name)
{
	for (size_t i = 0; i < FAKE_NSYMS; i++)
		if (strcmp(fake_syms[i].exact, exact_name) == 0)
			return fake_syms[i].fn;
	return NULL;
}

static CUresult proc_address(const char *symbol, void **pfn, int version, cuuint64_t flags,
			     CUdriverProcAddressQueryResult *status)
{
	if (!symbol || !pfn)
		return CUDA_ERROR_INVALID_VALUE;
	bool per_thread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
	const struct fake_sym *best = NULL;
	bool known = false;
	for (size_t i = 0; i < FAKE_NSYMS; i++) {
		const struct fake_sym *s = &fake_syms[i];
		if (strcmp(s->name, symbol) != 0)
			continue;
		known = true;
		if (s->min_version > version)
			continue;
		/* A per-thread form wins when asked for; a legacy form otherwise. */
		if (s->per_thread && !per_thread)
			continue;
		if (!best || s->min_version > best->min_version ||
		    (s->min_version == best->min_version && s->per_thread))
			best = s;
	}
	if (!best) {
		*pfn = NULL;
		if (status)
			*status = known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
					: CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
		return CUDA_ERROR_NOT_FOUND;
	}
	*pfn = best->fn;
	if (status)
		*status = CU_GET_PROC_ADDRESS_SUCCESS;
	return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
	return proc_address(symbol, pfn, cudaVersion, flags, NULL);
}

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
					 CUdriverProcAddressQueryResult *symbolStatus)
{
	return proc_address(symbol, pfn, cudaVersion, flags, symbolStatus);
}

/* ------------------------------------------------------ testing interface */

FAKE_EXPORT size_t fakecuda_used(int dev)
{
	return dev >= 0 && dev < FAKE_MAX_DEVICES ? atomic_load(&fake_used_bytes[dev]) : 0;
}

FAKE_EXPORT void fakecuda_set_available(int dev, size_t bytes)
{
	if (dev >= 0 && dev < FAKE_MAX_DEVICES)
		fake_available[dev] = bytes ? bytes : fake_total[dev];
}

FAKE_EXPORT int fakecuda_live_phys(void)
{
	return atomic_load(&fake_live_phys_count);
}

FAKE_EXPORT int fakecuda_unknown_frees(void)
{
	return atomic_load(&fake_unknown_free_count);
}

/* Adds usec to every asynchronous copy from now on (0: none). */
FAKE_EXPORT void fakecuda_set_copy_delay(unsigned usec)
{
	atomic_store(&fake_copy_delay_us, usec);
}

/* The nth copy made from now on (1: the next) fails when it runs: it copies
 * nothing, and the events recorded after it on its stream and the next
 * cuStreamSynchronize of the stream return CUDA_ERROR_ILLEGAL_ADDRESS.
 * 0 cancels. */
FAKE_EXPORT void fakecuda_fail_copy(long nth)
{
	atomic_store(&fake_copy_fail_in, nth);
}

/* The nth cuMemMap from now on (1: the next) fails with
 * CUDA_ERROR_OUT_OF_MEMORY. 0 cancels. */
FAKE_EXPORT void fakecuda_fail_map(long nth)
{
	atomic_store(&fake_map_fail_in, nth);
}

/* How many calls of cuMemCreate, cuMemMap, cuMemUnmap or cuMemRelease (by
 * name) were made while an asynchronous copy was queued or running; -1 for
 * another name. */
FAKE_EXPORT long fakecuda_calls_during_copies(const char *call)
{
	for (int i = 0; i < DURING_N; i++)
		if (!strcmp(call, during_names[i]))
			return atomic_load(&fake_during_copies[i]);
	return -1;
}

FAKE_EXPORT int fakecuda_is_mapped(CUdeviceptr p)
{
	pthread_mutex_lock(&fake_lock);
	int i = map_containing(p);
	pthread_mutex_unlock(&fake_lock);
	return i >= 0;
}
