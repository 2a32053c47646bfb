/* SPDX-License-Identifier: MIT */
/*
 * Stream-ordered pool memory under the hook: movable, charged, and as
 * ordered as the driver documents.
 *  1. xla: one big allocation from an explicit pool with a release
 *     threshold (JAX/XLA's preallocation), cut up by the program, offloaded
 *     and restored with every byte back at the same address and only the
 *     context left on the device;
 *  2. tf: TensorFlow's cuda_async allocator (the default pool, threshold
 *     raised, an allocation and free to warm it, then allocations and frees
 *     of many sizes on one stream), offloaded with live and idle blocks:
 *     only the live ones are copied;
 *  3. async: four threads, each with its stream, allocating and freeing
 *     small and large blocks (cudaMallocAsync), contents checked, across
 *     offload/restore cycles;
 *  4. order: a block freed on stream A while A still copies into it is not
 *     handed to stream B before A reaches the free: with internal
 *     dependencies B waits, without them B gets other memory; the stream of
 *     the free reuses at once;
 *  5. attrs: release threshold, reserved/used current and high,
 *     cuMemPoolTrimTo, cuDeviceSetMemPool, the cap (idle memory given back
 *     to make room), a pool made for export left resident.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "fc-test.h"

#define CTX (64 * MiB)

static cuuint64_t pool_attr(CUmemoryPool pool, CUmemPool_attribute a)
{
	cuuint64_t v = 0;
	CK(cuMemPoolGetAttribute(pool, a, &v));
	return v;
}

static void offload_restore(uint64_t want_moved, uint64_t want_resident)
{
	char out[1024];
	fc_ctl_ok("offload", out, sizeof(out));
	if (want_moved)
		CHECK_EQ_U64(fc_field(out, "bytes="), want_moved);
	CHECK_EQ_U64(fc_field(out, "nonmovable="), CTX);
	CHECK_EQ_U64(fc_used(0), want_resident);
	fc_ctl_ok("restore", out, sizeof(out));
}

static void test_xla(void)
{
	CUstream s;
	CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CUmemoryPool pool;
	CUmemPoolProps props;
	memset(&props, 0, sizeof(props));
	props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
	props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	CK(cuMemPoolCreate(&pool, &props));
	cuuint64_t big = 96 * MiB;
	CK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &big));
	CUdeviceptr arena;
	CK(cuMemAllocFromPoolAsync(&arena, big, pool, s));
	CHECK_EQ_U64(fc_hook_used(0), CTX + big);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);
	/* The program's own allocator cuts the arena into buffers. */
	for (int i = 0; i < 12; i++)
		fc_put_pattern(arena + (uint64_t)i * 8 * MiB, 8 * MiB, 100 + (uint32_t)i, s);
	for (int round = 0; round < 2; round++) {
		offload_restore(big, CTX);
		for (int i = 0; i < 12; i++)
			CHECK(fc_has_pattern(arena + (uint64_t)i * 8 * MiB, 8 * MiB, 100 + (uint32_t)i, s));
	}
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT), big);
	CK(cuMemFreeAsync(arena, s));
	CK(cuStreamSynchronize(s));
	/* Under the threshold: the pool keeps it. */
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), big);
	CHECK_EQ_U64(fc_hook_used(0), CTX + big);
	CK(cuMemPoolDestroy(pool));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_used(0), CTX);
}

static void test_tf(void)
{
	CUstream s;
	CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CUmemoryPool pool;
	CK(cuDeviceGetMemPool(&pool, 0));
	cuuint64_t limit = 256 * MiB;
	CK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &limit));
	cuuint64_t got = 0;
	CK(cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &got));
	CHECK_EQ_U64(got, limit);
	/* Warm-up: allocate and free, the pool keeps it. */
	CUdeviceptr warm;
	CK(cuMemAllocAsync(&warm, 4 * MiB, s));
	CK(cuMemFreeAsync(warm, s));
	CK(cuStreamSynchronize(s));
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), 4 * MiB);

	enum { N = 40 };
	CUdeviceptr p[N];
	size_t sz[N];
	for (int i = 0; i < N; i++) {
		sz[i] = (i % 5 == 0) ? (size_t)(3 + i / 5) * MiB : (size_t)(4096u << (i % 7));
		CK(cuMemAllocAsync(&p[i], sz[i], s));
		fc_put_pattern(p[i], sz[i], (uint32_t)i, s);
	}
	/* The warm block was reused in place of a new allocation. */
	CHECK(p[0] == warm);
	for (int i = 1; i < N; i += 2)
		CK(cuMemFreeAsync(p[i], s));
	CK(cuStreamSynchronize(s));
	char out[1024];
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "nonmovable="), CTX);
	CHECK_EQ_U64(fc_used(0), CTX);
	uint64_t moved = fc_field(out, "bytes=");
	fc_ctl_ok("restore", out, sizeof(out));
	/* Idle blocks were given back before the copy, not copied. */
	CHECK(moved == pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT));
	CHECK(moved < 4 * MiB + 2 * MiB * N);
	for (int i = 0; i < N; i += 2)
		CHECK(fc_has_pattern(p[i], sz[i], (uint32_t)i, s));
	for (int i = 0; i < N; i += 2)
		CK(cuMemFreeAsync(p[i], s));
	CK(cuStreamSynchronize(s));
	CK(cuMemPoolTrimTo(pool, 0));
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), 0);
	cuuint64_t zero = 0;
	CK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &zero));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_used(0), CTX);
}

#define WORKERS 4
static atomic_int stop;
static atomic_long rounds[WORKERS];

static void *async_worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	CUcontext ctx;
	CUdevice d;
	CK(cuDeviceGet(&d, 0));
	CK(cuDevicePrimaryCtxRetain(&ctx, d));
	CK(cuCtxSetCurrent(ctx));
	CUstream s;
	CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	enum { LIVE = 16 };
	CUdeviceptr p[LIVE] = { 0 };
	size_t sz[LIVE];
	uint32_t seed[LIVE];
	for (long n = 0; !atomic_load(&stop); n++) {
		int i = (int)(n % LIVE);
		if (p[i]) {
			CHECK(fc_has_pattern(p[i], sz[i], seed[i], s));
			/* Half on the legacy per-thread path, as libcudart with --default-stream per-thread. */
			if (n & 1)
				CK(cuMemFreeAsync(p[i], s));
			else
				CK(cuMemFreeAsync_ptsz(p[i], s));
		}
		sz[i] = (n % 9 == 0) ? 3 * MiB : (size_t)(512u << (n % 8));
		seed[i] = (uint32_t)(id * 1000003 + n);
		if (n & 2)
			CK(cuMemAllocAsync(&p[i], sz[i], s));
		else
			CK(cuMemAllocAsync_ptsz(&p[i], sz[i], s));
		fc_put_pattern(p[i], sz[i], seed[i], s);
		atomic_fetch_add(&rounds[id], 1);
	}
	for (int i = 0; i < LIVE; i++) {
		CHECK(fc_has_pattern(p[i], sz[i], seed[i], s));
		CK(cuMemFreeAsync(p[i], s));
	}
	CK(cuStreamSynchronize(s));
	return NULL;
}

static void test_async(int cycles)
{
	pthread_t t[WORKERS];
	for (int i = 0; i < WORKERS; i++)
		CHECK(pthread_create(&t[i], NULL, async_worker, (void *)(intptr_t)i) == 0);
	char out[1024];
	for (int c = 0; c < cycles; c++) {
		long before[WORKERS];
		for (int i = 0; i < WORKERS; i++)
			before[i] = atomic_load(&rounds[i]);
		/* Every worker makes progress between two offloads. */
		for (int i = 0; i < WORKERS; i++)
			while (atomic_load(&rounds[i]) < before[i] + 3)
				usleep(1000);
		fc_ctl_ok("offload", out, sizeof(out));
		CHECK_EQ_U64(fc_field(out, "nonmovable="), CTX);
		CHECK_EQ_U64(fc_used(0), CTX);
		fc_ctl_ok("restore", out, sizeof(out));
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < WORKERS; i++)
		CHECK(pthread_join(t[i], NULL) == 0);
	CUmemoryPool pool;
	CK(cuDeviceGetMemPool(&pool, 0));
	CK(cuMemPoolTrimTo(pool, 0));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_used(0), CTX);
}

static void set_int_attr(CUmemoryPool pool, CUmemPool_attribute a, int v)
{
	CK(cuMemPoolSetAttribute(pool, a, &v));
	int got = -1;
	CK(cuMemPoolGetAttribute(pool, a, &got));
	CHECK_EQ_U64(got, v);
}

static void test_order(void)
{
	CUstream a, b;
	CK(cuStreamCreate(&a, CU_STREAM_NON_BLOCKING));
	CK(cuStreamCreate(&b, CU_STREAM_NON_BLOCKING));
	CUmemoryPool pool;
	CK(cuDeviceGetMemPool(&pool, 0));
	cuuint64_t keep = 64 * MiB;
	CK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep));
	const size_t n = 4 * MiB;
	char *src = malloc(n);
	CHECK(src);
	memset(src, 0xaa, n);

	/* Same stream: the freed block comes back at once. */
	CUdeviceptr x, y;
	CK(cuMemAllocAsync(&x, n, a));
	CK(cuMemFreeAsync(x, a));
	CK(cuMemAllocAsync(&y, n, a));
	CHECK(y == x);

	/* Internal dependencies (the default): B gets the block and waits for A's free. */
	fc_set_copy_delay(200000);
	CK(cuMemcpyHtoDAsync_v2(y, src, n, a));
	CK(cuMemFreeAsync(y, a));
	CUdeviceptr z;
	CK(cuMemAllocAsync(&z, n, b));
	CHECK(z == y);
	CK(cuMemsetD8Async(z, 0x55, n, b));
	CK(cuStreamSynchronize(b));
	CK(cuStreamSynchronize(a)); /* had B not waited, A's late copy lands now */
	fc_set_copy_delay(0);
	unsigned char probe[64];
	CK(cuMemcpyDtoH_v2(probe, z + n - sizeof(probe), sizeof(probe)));
	for (size_t i = 0; i < sizeof(probe); i++)
		CHECK_EQ_U64(probe[i], 0x55); /* B's memset ran after A's copy */

	/* Neither policy: B never gets a block A has not reached the free of. */
	set_int_attr(pool, CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES, 0);
	set_int_attr(pool, CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC, 0);
	fc_set_copy_delay(200000);
	CK(cuMemcpyHtoDAsync_v2(z, src, n, b));
	CK(cuMemFreeAsync(z, b));
	CUdeviceptr w;
	CK(cuMemAllocAsync(&w, n, a));
	CHECK(w != z);
	CK(cuStreamSynchronize(b));
	fc_set_copy_delay(0);

	/* Opportunistic only: once B is past the free, A may take it. */
	set_int_attr(pool, CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC, 1);
	CUdeviceptr v;
	CK(cuMemAllocAsync(&v, n, a));
	CHECK(v == z);
	set_int_attr(pool, CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES, 1);
	set_int_attr(pool, CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES, 1);

	CK(cuMemFreeAsync(v, a));
	CK(cuMemFreeAsync(w, a));
	CK(cuStreamSynchronize(a));
	cuuint64_t zero = 0;
	CK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &zero));
	CK(cuMemPoolTrimTo(pool, 0));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	free(src);
}

static void test_attrs(void)
{
	CUstream s;
	CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CUmemoryPool dflt, pool;
	CK(cuDeviceGetDefaultMemPool(&dflt, 0));
	CUmemPoolProps props;
	memset(&props, 0, sizeof(props));
	props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
	props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	CK(cuMemPoolCreate(&pool, &props));

	/* cuDeviceSetMemPool: cuMemAllocAsync draws from the device's current pool. */
	CK(cuDeviceSetMemPool(0, pool));
	CUdeviceptr a, b;
	CK(cuMemAllocAsync(&a, 6 * MiB, s));
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), 6 * MiB);
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT), 6 * MiB);
	CHECK_EQ_U64(pool_attr(dflt, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), 0);
	CK(cuMemAllocAsync(&b, 10 * MiB, s));
	CK(cuMemFreeAsync(b, s));
	CK(cuStreamSynchronize(s));
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH), 16 * MiB);
	cuuint64_t zero = 0;
	CK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH, &zero));
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH), 6 * MiB);
	CK(cuDeviceSetMemPool(0, dflt));

	/* Threshold 0: the next free gives back what is done. */
	CHECK(pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT) <= 16 * MiB);
	CK(cuMemFreeAsync(a, s));
	CK(cuStreamSynchronize(s));
	CK(cuMemPoolTrimTo(pool, 0));
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), 0);
	CHECK_EQ_U64(fc_hook_used(0), CTX);

	/* The cap (VRAM_MEMORY_LIMIT=256MiB): idle memory of any pool makes room. */
	cuuint64_t keep = 1ull << 40;
	CK(cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep));
	CUdeviceptr c, d, e;
	CK(cuMemAllocFromPoolAsync(&c, 150 * MiB, pool, s));
	CK(cuMemFreeAsync(c, s));
	CK(cuStreamSynchronize(s));
	CHECK_EQ_U64(fc_hook_used(0), CTX + 150 * MiB);
	CK(cuMemAllocAsync(&d, 180 * MiB, s)); /* default pool: 64 + 150 + 180 > 256 */
	CHECK_EQ_U64(pool_attr(pool, CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT), 0);
	CHECK(cuMemAllocAsync(&e, 20 * MiB, s) == CUDA_ERROR_OUT_OF_MEMORY);
	CK(cuMemFreeAsync(d, s));
	CK(cuStreamSynchronize(s));
	CK(cuMemPoolTrimTo(dflt, 0));
	CK(cuMemPoolDestroy(pool));

	/* A pool made for export: the driver's memory, resident and reported. */
	props.handleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	CUmemoryPool shared;
	CK(cuMemPoolCreate(&shared, &props));
	CUdeviceptr f;
	CK(cuMemAllocFromPoolAsync(&f, 4 * MiB, shared, s));
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + 4 * MiB);
	char out[1024];
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "nonmovable="), CTX + 4 * MiB);
	CHECK(fc_is_mapped(f));
	fc_ctl_ok("restore", out, sizeof(out));
	CK(cuMemFreeAsync(f, s));
	CK(cuStreamSynchronize(s));
	CK(cuMemPoolDestroy(shared));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);

	/* Stream capture (CUDA graphs): what a capture allocates is the
	 * driver's, resident; a block freed in a capture is never handed out
	 * again (a replay may still use it). */
	cuuint64_t keep_all = 1ull << 40;
	CK(cuMemPoolSetAttribute(dflt, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep_all));
	CUdeviceptr before, in_graph, again;
	CK(cuMemAllocAsync(&before, 4 * MiB, s));
	CK(cuStreamBeginCapture_v2(s, 0));
	CK(cuMemAllocAsync(&in_graph, 2 * MiB, s));
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + 2 * MiB);
	CK(cuMemFreeAsync(before, s));
	CK(cuMemFreeAsync(in_graph, s));
	CUgraph graph;
	CK(cuStreamEndCapture(s, &graph));
	CK(cuStreamSynchronize(s));
	CK(cuMemAllocAsync(&again, 4 * MiB, s));
	CHECK(again != before);
	CHECK(cuMemFreeAsync(before, s) == CUDA_ERROR_INVALID_VALUE);
	CK(cuMemFreeAsync(again, s));
	CK(cuStreamSynchronize(s));
}

int main(int argc, char **argv)
{
	CHECK(argc > 1);
	fc_setup(0);
	if (!strcmp(argv[1], "xla"))
		test_xla();
	else if (!strcmp(argv[1], "tf"))
		test_tf();
	else if (!strcmp(argv[1], "async"))
		test_async(argc > 2 ? atoi(argv[2]) : 50);
	else if (!strcmp(argv[1], "order"))
		test_order();
	else if (!strcmp(argv[1], "attrs"))
		test_attrs();
	else
		CHECK(!"unknown test");
	return 0;
}
