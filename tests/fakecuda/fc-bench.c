/* SPDX-License-Identifier: MIT */
/*
 * A loop for measuring what the hook adds per call on the fake driver
 * (bench/hook-overhead.sh runs it under callgrind with and without the
 * hook): N cuMemAlloc/cuMemFree pairs of 2 MiB, N cuMemGetInfo, N launches.
 * Usage: fc-bench N [alloc|info|launch]
 */
#include "fc-test.h"

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1000;
	const char *what = argc > 2 ? argv[2] : "alloc";
	fc_setup(0);
	if (!strcmp(what, "alloc")) {
		for (int i = 0; i < n; i++) {
			CUdeviceptr p;
			CK(cuMemAlloc_v2(&p, 2 * MiB));
			CK(cuMemFree_v2(p));
		}
	} else if (!strcmp(what, "info")) {
		for (int i = 0; i < n; i++) {
			size_t f, t;
			CK(cuMemGetInfo_v2(&f, &t));
		}
	} else if (!strcmp(what, "launch")) {
		CUmodule mod;
		CUfunction k;
		CK(cuModuleLoadData(&mod, "fake-kernels"));
		CK(cuModuleGetFunction(&k, mod, "sleep"));
		unsigned usec = 0;
		void *args[] = { &usec };
		for (int i = 0; i < n; i++)
			CK(cuLaunchKernel(k, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
		CK(cuCtxSynchronize());
	}
	printf("%s x %d: done\n", what, n);
	return 0;
}
