// SPDX-License-Identifier: MIT
/*
 * What a CUDA program pays per call, for comparing runs with and without
 * libvram.so (tests/gpu/run-hook.sh builds and runs it):
 *  - launches of an empty kernel through the runtime API (<<<>>> reaches the
 *    driver's cuLaunchKernel through cuGetProcAddress, the path PyTorch takes
 *    and the hook wraps), synchronizing every 1000 launches so the queue
 *    stays short and the time is the CPU cost of a launch;
 *  - cudaMalloc + cudaFree pairs of 4 KiB to 1 MiB.
 * Prints one line: RESULT mode=launch_bench launches=N launch_ns=X
 * alloc_us=Y alloc_us_4K=... (the per-size figures), times per call.
 *   nvcc -O2 -arch=sm_90 -o launch_bench launch_bench.cu
 *   launch_bench [LAUNCHES] [ALLOC_PAIRS_PER_SIZE]
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define SYNC_EVERY 1000

__global__ void empty_kernel(void) {}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(cudaError_t e, const char *what)
{
	if (e != cudaSuccess) {
		fprintf(stderr, "Failed to %s: %s\n", what, cudaGetErrorString(e));
		exit(1);
	}
}

/* Seconds for n launches, synchronizing every SYNC_EVERY. */
static double launches(long n)
{
	double t = now_s();
	for (long i = 0; i < n; i++) {
		empty_kernel<<<1, 1>>>();
		if ((i + 1) % SYNC_EVERY == 0)
			check(cudaStreamSynchronize(0), "synchronize");
	}
	check(cudaStreamSynchronize(0), "synchronize");
	check(cudaGetLastError(), "launch");
	return now_s() - t;
}

/* Seconds for n cudaMalloc + cudaFree pairs of bytes. */
static double alloc_pairs(long n, size_t bytes)
{
	double t = now_s();
	for (long i = 0; i < n; i++) {
		void *p;
		check(cudaMalloc(&p, bytes), "allocate");
		check(cudaFree(p), "free");
	}
	return now_s() - t;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	long pairs = argc > 2 ? atol(argv[2]) : 2000;
	static const size_t sizes[] = { 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20 };
	static const char *const names[] = { "4K", "16K", "64K", "256K", "1M" };
	const int nsizes = (int)(sizeof(sizes) / sizeof(sizes[0]));
	double per_size[sizeof(sizes) / sizeof(sizes[0])];

	check(cudaFree(0), "create the context");
	launches(20000); /* warm-up: module load, queue set-up */
	double launch_s = launches(n);

	alloc_pairs(100, 1 << 20);
	double alloc_total = 0;
	for (int i = 0; i < nsizes; i++) {
		per_size[i] = alloc_pairs(pairs, sizes[i]) / (double)pairs * 1e6;
		alloc_total += per_size[i];
	}

	printf("RESULT mode=launch_bench launches=%ld launch_ns=%.1f alloc_pairs=%ld alloc_us=%.2f", n,
	       launch_s / (double)n * 1e9, pairs, alloc_total / nsizes);
	for (int i = 0; i < nsizes; i++)
		printf(" alloc_us_%s=%.2f", names[i], per_size[i]);
	printf("\n");
	return 0;
}
