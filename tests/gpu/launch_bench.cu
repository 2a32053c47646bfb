// SPDX-License-Identifier: MIT
/*
 * What a CUDA program pays per call with libvram.so, measured so that a
 * difference well under 1 % shows through the noise of a shared VM, where
 * whole runs of the same program differ by 10-40 % (tests/gpu/run-overhead.sh
 * runs it, tests/gpu/overhead_pairs.py reads what it prints).
 *
 *   launch_bench ab [LAUNCH_PAIRS [LAUNCH_BLOCK [ALLOC_PAIRS [ALLOC_BLOCK]]]]
 *     In one process with libvram.so preloaded: the hook's cuLaunchKernel
 *     (what dlsym on the driver hands the program) against the driver's own
 *     (looked up with libc's dlsym, reached by version as the hook itself
 *     reaches it, so the hook never sees that lookup), in blocks of
 *     LAUNCH_BLOCK launches (default 2048) that run with-without, then
 *     without-with, ... for LAUNCH_PAIRS pairs (default 512); then
 *     cuMemAlloc_v2 + cuMemFree_v2 pairs of 4 KiB to 1 MiB the same way
 *     (ALLOC_PAIRS blocks of ALLOC_BLOCK, default 256 of 32). Both sides
 *     share the context, the stream, the kernel, the core and the moment,
 *     so what differs is the wrapper alone. Prints one line per pair of
 *     blocks, times in ns:
 *       PAIR launch|alloc CALLS WITH_FIRST WALL_WITH WALL_WITHOUT CPU_WITH CPU_WITHOUT
 *   launch_bench serve
 *     One of the two processes of a turn-taking comparison (one with the
 *     hook, one without; overhead_pairs.py turns): the runtime API as a
 *     program uses it (<<<>>> reaches cuLaunchKernel through
 *     cuGetProcAddress). Prints "READY hook=0|1 launch_entry=OBJECT", then
 *     answers each line "launch N WARM" or "alloc N WARM" (WARM untimed
 *     calls first) with "WALL_NS CPU_NS".
 *   launch_bench [LAUNCHES] [ALLOC_PAIRS_PER_SIZE]
 *     The one-shot figures (tests/gpu/run-hook.sh): one RESULT line.
 *
 * Launches are timed in runs of SEGMENT; the synchronization after each
 * run is not timed, so the time is what the CPU pays to launch and the queue
 * never fills (a full queue would make launches wait for the GPU and hide
 * the CPU's cost). Wall time and the thread's CPU time are both kept.
 *
 *   nvcc -O2 -arch=sm_90 -o launch_bench launch_bench.cu -ldl
 * The ab mode uses only the driver API, so the file also builds as C
 *   cc -x c -O2 -o launch_bench launch_bench.cu -ldl
 * and then runs on any driver: it loads an empty PTX kernel named and
 * typed like the fake driver's sleep kernel, so it runs on that one too.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __CUDACC__
#include <cuda_runtime.h>
#endif

#define SEGMENT 256 /* launches between two synchronizations */

static const size_t alloc_sizes[] = { 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20 };
#define NSIZES ((long)(sizeof(alloc_sizes) / sizeof(alloc_sizes[0])))

struct span {
	int64_t wall_ns;
	int64_t cpu_ns; /* the calling thread's */
};

struct stopwatch {
	int64_t wall0, cpu0; /* ns */
};

static int64_t clock_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void stopwatch_start(struct stopwatch *w)
{
	w->wall0 = clock_ns(CLOCK_MONOTONIC);
	w->cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

/* Adds the time since stopwatch_start to acc. */
static void stopwatch_stop(const struct stopwatch *w, struct span *acc)
{
	int64_t cpu = clock_ns(CLOCK_THREAD_CPUTIME_ID);
	int64_t wall = clock_ns(CLOCK_MONOTONIC);
	acc->cpu_ns += cpu - w->cpu0;
	acc->wall_ns += wall - w->wall0;
}

static void fail(const char *what, const char *why)
{
	fprintf(stderr, "Failed to %s: %s\n", what, why);
	exit(1);
}

static void check_driver(int result, const char *what)
{
	char why[32];
	if (result != 0) {
		snprintf(why, sizeof(why), "CUresult %d", result);
		fail(what, why);
	}
}

/* The file of the object that holds p. */
static const char *object_of(const void *p)
{
	Dl_info info;
	return p && dladdr(p, &info) && info.dli_fname ? info.dli_fname : "?";
}

static int is_hook_object(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	(void)data;
	return info->dlpi_name && strstr(info->dlpi_name, "libvram") != NULL;
}

/* 1 when libvram.so is loaded in this process. */
static int hook_loaded(void)
{
	return dl_iterate_phdr(is_hook_object, NULL);
}

/* ------------------------------------------ in-process comparison (ab) */

typedef int (*launch_fn)(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
			 unsigned shmem, void *stream, void **params, void **extra);
typedef int (*mem_alloc_fn)(unsigned long long *dptr, size_t bytes);
typedef int (*mem_free_fn)(unsigned long long dptr);
typedef int (*stream_sync_fn)(void *stream);
typedef void *(*dlsym_fn)(void *handle, const char *name);

struct entry_points {
	launch_fn launch;
	mem_alloc_fn alloc;
	mem_free_fn free;
};

struct ab {
	void *kernel;           /* CUfunction taking one unsigned */
	stream_sync_fn sync;    /* cuStreamSynchronize, not wrapped */
	struct entry_points with, without;
};

/* libc's dlsym, which a preloaded hook does not replace for a lookup by version. */
static dlsym_fn libc_dlsym(void)
{
	static const char *const versions[] = { "GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0" };
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		void *p = dlvsym(RTLD_DEFAULT, "dlsym", versions[i]);
		if (p)
			return (dlsym_fn)p;
	}
	return NULL;
}

static void *lookup(dlsym_fn find, void *driver, const char *name)
{
	void *p = find(driver, name);
	if (!p)
		fail("find the driver's entry point", name);
	return p;
}

static void entry_points_find(dlsym_fn find, void *driver, struct entry_points *ret)
{
	ret->launch = (launch_fn)lookup(find, driver, "cuLaunchKernel");
	ret->alloc = (mem_alloc_fn)lookup(find, driver, "cuMemAlloc_v2");
	ret->free = (mem_free_fn)lookup(find, driver, "cuMemFree_v2");
}

#ifdef __CUDACC__
__global__ void empty_kernel(unsigned usec)
{
	(void)usec;
}

static void check(cudaError_t e, const char *what)
{
	if (e != cudaSuccess)
		fail(what, cudaGetErrorString(e));
}

/* The primary context, made current by the runtime, and its empty kernel. */
static void *ab_setup(void *driver)
{
	(void)driver;
	cudaFunction_t f;
	check(cudaFree(0), "create the context");
	check(cudaGetFuncBySymbol(&f, (const void *)empty_kernel), "find the kernel");
	return (void *)f;
}
#else
typedef int (*init_fn)(unsigned flags);
typedef int (*device_get_fn)(int *dev, int ordinal);
typedef int (*ctx_retain_fn)(void **ctx, int dev);
typedef int (*ctx_set_fn)(void *ctx);
typedef int (*module_load_fn)(void **module, const void *image);
typedef int (*module_function_fn)(void **f, void *module, const char *name);

static const char empty_ptx[] = ".version 7.0\n.target sm_75\n.address_size 64\n"
				".visible .entry sleep(.param .u32 usec)\n{\n\tret;\n}\n";

/* The primary context of device 0, made current, and the empty kernel. */
static void *ab_setup(void *driver)
{
	int dev;
	void *ctx, *module, *f;
	check_driver(((init_fn)lookup(dlsym, driver, "cuInit"))(0), "initialize the driver");
	check_driver(((device_get_fn)lookup(dlsym, driver, "cuDeviceGet"))(&dev, 0), "get device 0");
	check_driver(((ctx_retain_fn)lookup(dlsym, driver, "cuDevicePrimaryCtxRetain"))(&ctx, dev),
		     "retain the primary context");
	check_driver(((ctx_set_fn)lookup(dlsym, driver, "cuCtxSetCurrent"))(ctx), "make the context current");
	check_driver(((module_load_fn)lookup(dlsym, driver, "cuModuleLoadData"))(&module, empty_ptx),
		     "load the kernel");
	check_driver(((module_function_fn)lookup(dlsym, driver, "cuModuleGetFunction"))(&f, module, "sleep"),
		     "find the kernel");
	return f;
}
#endif

static struct span launch_block(const struct ab *ab, launch_fn launch, long n)
{
	unsigned usec = 0;
	void *params[1] = { &usec };
	struct span s = { 0, 0 };
	for (long done = 0; done < n; done += SEGMENT) {
		long seg = n - done < SEGMENT ? n - done : SEGMENT;
		int bad = 0;
		struct stopwatch w;
		stopwatch_start(&w);
		for (long i = 0; i < seg; i++)
			bad |= launch(ab->kernel, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL);
		stopwatch_stop(&w, &s);
		check_driver(bad, "launch");
		check_driver(ab->sync(NULL), "synchronize");
	}
	return s;
}

static struct span alloc_block(const struct entry_points *e, long n)
{
	int bad = 0;
	struct span s = { 0, 0 };
	struct stopwatch w;
	stopwatch_start(&w);
	for (long i = 0; i < n; i++) {
		unsigned long long p = 0;
		bad |= e->alloc(&p, alloc_sizes[i % NSIZES]);
		bad |= e->free(p);
	}
	stopwatch_stop(&w, &s);
	check_driver(bad, "allocate and free");
	return s;
}

static struct span ab_block(const struct ab *ab, const struct entry_points *e, int alloc, long calls)
{
	return alloc ? alloc_block(e, calls) : launch_block(ab, e->launch, calls);
}

/* pairs pairs of blocks, their order alternating so that a drift cancels. */
static void ab_run(const struct ab *ab, int alloc, long pairs, long calls)
{
	if (pairs <= 0 || calls <= 0)
		return;
	for (int i = 0; i < 2; i++) { /* warm-up: first calls, caches, the hook's thread slot */
		ab_block(ab, &ab->with, alloc, calls);
		ab_block(ab, &ab->without, alloc, calls);
	}
	for (long p = 0; p < pairs; p++) {
		int with_first = (int)(p & 1);
		struct span with, without;
		if (with_first) {
			with = ab_block(ab, &ab->with, alloc, calls);
			without = ab_block(ab, &ab->without, alloc, calls);
		} else {
			without = ab_block(ab, &ab->without, alloc, calls);
			with = ab_block(ab, &ab->with, alloc, calls);
		}
		printf("PAIR %s %ld %d %lld %lld %lld %lld\n", alloc ? "alloc" : "launch", calls, with_first,
		       (long long)with.wall_ns, (long long)without.wall_ns, (long long)with.cpu_ns,
		       (long long)without.cpu_ns);
	}
	fflush(stdout);
}

static int ab_main(int argc, char **argv)
{
	long launch_pairs = argc > 2 ? atol(argv[2]) : 512;
	long launch_block_n = argc > 3 ? atol(argv[3]) : 2048;
	long alloc_pairs = argc > 4 ? atol(argv[4]) : 256;
	long alloc_block_n = argc > 5 ? atol(argv[5]) : 32;
	struct ab ab;
	void *driver = dlopen("libcuda.so.1", RTLD_NOW);
	if (!driver)
		fail("load libcuda.so.1", dlerror());
	ab.kernel = ab_setup(driver);
	dlsym_fn own = libc_dlsym();
	if (!own)
		fail("find libc's dlsym", "no known version");
	/* Through dlsym, the door a program uses: the hook hands out its wrapper. */
	entry_points_find(dlsym, driver, &ab.with);
	entry_points_find(own, driver, &ab.without);
	ab.sync = (stream_sync_fn)lookup(own, driver, "cuStreamSynchronize");
	printf("AB hook=%d launch_with=%s launch_without=%s alloc_with=%s alloc_without=%s\n", hook_loaded(),
	       object_of((void *)ab.with.launch),
	       object_of((void *)ab.without.launch), object_of((void *)ab.with.alloc),
	       object_of((void *)ab.without.alloc));
	if (ab.with.launch == ab.without.launch || ab.with.alloc == ab.without.alloc || ab.with.free == ab.without.free)
		fail("compare", "dlsym hands out the driver's own functions: is libvram.so preloaded?");
	ab_run(&ab, 0, launch_pairs, launch_block_n);
	ab_run(&ab, 1, alloc_pairs, alloc_block_n);
	return 0;
}

/* ------------------------------------------- the runtime API (nvcc only) */

#ifdef __CUDACC__
/* n launches through the runtime, in timed runs of SEGMENT. */
static struct span runtime_launches(long n)
{
	struct span s = { 0, 0 };
	for (long done = 0; done < n; done += SEGMENT) {
		long seg = n - done < SEGMENT ? n - done : SEGMENT;
		struct stopwatch w;
		stopwatch_start(&w);
		for (long i = 0; i < seg; i++)
			empty_kernel<<<1, 1>>>(0u);
		stopwatch_stop(&w, &s);
		check(cudaStreamSynchronize(0), "synchronize");
	}
	check(cudaGetLastError(), "launch");
	return s;
}

/* n cudaMalloc + cudaFree pairs, of bytes each, or of each size in turn when bytes is 0. */
static struct span runtime_allocs(long n, size_t bytes)
{
	struct span s = { 0, 0 };
	struct stopwatch w;
	stopwatch_start(&w);
	for (long i = 0; i < n; i++) {
		void *p;
		check(cudaMalloc(&p, bytes ? bytes : alloc_sizes[i % NSIZES]), "allocate");
		check(cudaFree(p), "free");
	}
	stopwatch_stop(&w, &s);
	return s;
}

/* The object whose cuLaunchKernel the runtime gets from cuGetProcAddress. */
static const char *launch_entry(void)
{
#if CUDART_VERSION >= 12050
	void *p = NULL;
	cudaDriverEntryPointQueryResult q;
	if (cudaGetDriverEntryPointByVersion("cuLaunchKernel", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
	    q != cudaDriverEntryPointSuccess)
		return "?";
	const char *name = object_of(p);
	const char *slash = strrchr(name, '/');
	return slash ? slash + 1 : name;
#else
	return "?";
#endif
}

static int serve_main(void)
{
	char line[128];
	check(cudaFree(0), "create the context");
	runtime_launches(20000); /* module load, queue set-up */
	runtime_allocs(100, 0);
	printf("READY hook=%d launch_entry=%s\n", hook_loaded(), launch_entry());
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		char kind[16];
		long n = 0, warm = 0;
		struct span s;
		if (sscanf(line, "%15s %ld %ld", kind, &n, &warm) < 2 || n <= 0 || warm < 0) {
			if (strncmp(line, "quit", 4) == 0)
				break;
			printf("ERR bad request\n");
		} else if (strcmp(kind, "launch") == 0) {
			runtime_launches(warm);
			s = runtime_launches(n);
			printf("%lld %lld\n", (long long)s.wall_ns, (long long)s.cpu_ns);
		} else if (strcmp(kind, "alloc") == 0) {
			runtime_allocs(warm, 0);
			s = runtime_allocs(n, 0);
			printf("%lld %lld\n", (long long)s.wall_ns, (long long)s.cpu_ns);
		} else {
			printf("ERR unknown job %s\n", kind);
		}
		fflush(stdout);
	}
	return 0;
}

static int oneshot_main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	long pairs = argc > 2 ? atol(argv[2]) : 2000;
	static const char *const names[] = { "4K", "16K", "64K", "256K", "1M" };
	double per_size[NSIZES], alloc_total = 0;

	check(cudaFree(0), "create the context");
	runtime_launches(20000); /* warm-up: module load, queue set-up */
	struct span launches = runtime_launches(n);
	runtime_allocs(100, 1 << 20);
	for (long i = 0; i < NSIZES; i++) {
		per_size[i] = (double)runtime_allocs(pairs, alloc_sizes[i]).wall_ns / (double)pairs / 1e3;
		alloc_total += per_size[i];
	}
	printf("RESULT mode=launch_bench launches=%ld launch_ns=%.1f alloc_pairs=%ld alloc_us=%.2f", n,
	       (double)launches.wall_ns / (double)n, pairs, alloc_total / NSIZES);
	for (long i = 0; i < NSIZES; i++)
		printf(" alloc_us_%s=%.2f", names[i], per_size[i]);
	printf("\n");
	return 0;
}
#endif

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "ab") == 0)
		return ab_main(argc, argv);
#ifdef __CUDACC__
	if (argc > 1 && strcmp(argv[1], "serve") == 0)
		return serve_main();
	return oneshot_main(argc, argv);
#else
	fprintf(stderr, "usage: %s ab [LAUNCH_PAIRS [LAUNCH_BLOCK [ALLOC_PAIRS [ALLOC_BLOCK]]]]\n"
			"(serve and the one-shot figures need the nvcc build)\n", argv[0]);
	return 2;
#endif
}
