/* SPDX-License-Identifier: MIT */
/*
 * Caps from VRAM_MEMORY_LIMIT (the mode argument says which form the test
 * runs with): out-of-memory beyond the cap for every kind of allocation,
 * and cuMemGetInfo_v2 / cuDeviceTotalMem_v2 reporting the cap, NULL-safe.
 * The fake device has 1 GiB and a 64 MiB context.
 */
#include "fc-test.h"

#define CTX (64 * MiB)

static void check_cap(int dev, size_t cap)
{
	size_t f = 0, t = 0;
	CK(cuMemGetInfo_v2(&f, &t));
	CHECK_EQ_U64(t, cap);
	CHECK_EQ_U64(f, cap - CTX);
	CK(cuMemGetInfo_v2(NULL, &t));
	CK(cuMemGetInfo_v2(&f, NULL));
	CK(cuMemGetInfo_v2(NULL, NULL));
	size_t total = 0;
	CK(cuDeviceTotalMem_v2(&total, dev));
	CHECK_EQ_U64(total, cap);
	CHECK(cuDeviceTotalMem_v2(NULL, dev) == CUDA_ERROR_INVALID_VALUE);
}

/* Fills the cap with 32 MiB allocations and checks the refusal. */
static void fill_cap(size_t cap)
{
	CUdeviceptr p[64];
	int n = 0;
	while (n < 64 && cuMemAlloc_v2(&p[n], 32 * MiB) == CUDA_SUCCESS)
		n++;
	CHECK_EQ_U64(n, (cap - CTX) / (32 * MiB));
	CHECK(cuMemAlloc_v2(&p[n], 32 * MiB) == CUDA_ERROR_OUT_OF_MEMORY);
	size_t f = 1, t = 0;
	CK(cuMemGetInfo_v2(&f, &t));
	CHECK_EQ_U64(f, (cap - CTX) % (32 * MiB));

	/* Every other way of getting device memory is refused too. */
	CUmemAllocationProp prop;
	memset(&prop, 0, sizeof(prop));
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	CUdevice dev;
	CK(cuCtxGetDevice(&dev));
	prop.location.id = dev;
	CUmemGenericAllocationHandle h;
	CHECK(cuMemCreate(&h, 32 * MiB, &prop, 0) == CUDA_ERROR_OUT_OF_MEMORY);
	CUdeviceptr a;
	CHECK(cuMemAllocAsync(&a, 32 * MiB, NULL) == CUDA_ERROR_OUT_OF_MEMORY);
	CHECK(cuMemAllocManaged(&a, 32 * MiB, CU_MEM_ATTACH_GLOBAL) == CUDA_ERROR_OUT_OF_MEMORY);
	size_t pitch;
	CHECK(cuMemAllocPitch_v2(&a, &pitch, 32 * MiB, 1, 4) == CUDA_ERROR_OUT_OF_MEMORY);
	/* Host memory is not device memory. */
	void *host;
	CK(cuMemAllocHost_v2(&host, 64 * MiB));
	CK(cuMemFreeHost(host));

	CK(cuMemFree_v2(p[--n]));
	CK(cuMemAlloc_v2(&p[n++], 32 * MiB));
	while (n > 0)
		CK(cuMemFree_v2(p[--n]));
	CK(cuMemGetInfo_v2(&f, &t));
	CHECK_EQ_U64(f, cap - CTX);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "bytes";
	if (!strcmp(mode, "bytes") || !strcmp(mode, "fraction")) {
		fc_setup(0);
		check_cap(0, 256 * MiB);
		fill_cap(256 * MiB);
	} else if (!strcmp(mode, "per-device")) {
		CUcontext c1;
		CUcontext c0 = fc_setup(0);
		check_cap(0, 128 * MiB);
		fill_cap(128 * MiB);
		CK(cuDevicePrimaryCtxRetain(&c1, 1));
		CK(cuCtxSetCurrent(c1));
		check_cap(1, 512 * MiB);
		fill_cap(512 * MiB);
		(void)c0;
	} else if (!strcmp(mode, "invalid")) {
		fc_setup(0);
		size_t f, t;
		CK(cuMemGetInfo_v2(&f, &t));
		CHECK_EQ_U64(t, 1024 * MiB);
		CUdeviceptr p;
		CK(cuMemAlloc_v2(&p, 512 * MiB)); /* no cap */
		CK(cuMemFree_v2(p));
		/* One clear line in the hook log. */
		const char *log = getenv("VRAM_HOOK_LOG");
		CHECK(log);
		FILE *fp = fopen(log, "r");
		CHECK(fp);
		char line[1024];
		int found = 0;
		while (fgets(line, sizeof(line), fp))
			if (strstr(line, "Ignoring VRAM_MEMORY_LIMIT=\"lots\""))
				found++;
		fclose(fp);
		CHECK(found >= 1);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	printf("cap %s: ok\n", mode);
	return 0;
}
