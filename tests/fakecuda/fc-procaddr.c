/* SPDX-License-Identifier: MIT */
/*
 * The lookup paths, used the way libcudart uses them: the program does not
 * link libcuda, it dlopens it, takes cuGetProcAddress_v2 with dlsym and asks
 * for everything else by base name, CUDA version and stream flags. The hook
 * must hand out its wrapper for exactly the function the driver chose (the
 * _ptsz/_ptds form when the per-thread flag is set, the version-specific
 * form otherwise) and leave everything else alone. Run with a 128 MiB cap
 * so that a wrapper shows itself by refusing memory.
 */
#include "fc-test.h"

typedef CUresult (*gpa_v2_fn)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*gpa_fn)(const char *, void **, int, cuuint64_t);

static gpa_v2_fn gpa;

static void *lookup(const char *name, int version, cuuint64_t flags)
{
	void *fn = NULL;
	CUdriverProcAddressQueryResult st = -1;
	CK(gpa(name, &fn, version, flags, &st));
	CHECK(st == CU_GET_PROC_ADDRESS_SUCCESS && fn);
	return fn;
}

/* The hook's export of that exact name (the preloaded library comes first). */
static void *hook_fn(const char *exact)
{
	void *p = dlsym(RTLD_DEFAULT, exact);
	CHECK(p);
	CHECK(p != fc_self_sym(exact));
	return p;
}

int main(void)
{
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	CHECK(lib);
	gpa = (gpa_v2_fn)dlsym(lib, "cuGetProcAddress_v2");
	CHECK(gpa && (void *)gpa == hook_fn("cuGetProcAddress_v2"));
	CHECK(dlsym(lib, "cuMemFree_v2") == hook_fn("cuMemFree_v2"));
	/* Not wrapped: the driver's own function. */
	CHECK(dlsym(lib, "cuStreamCreate") == fc_self_sym("cuStreamCreate"));
	CHECK(dlsym(lib, "fakecuda_used") != NULL);

	CUresult (*init)(unsigned) = lookup("cuInit", 12000, 0);
	CHECK((void *)init == hook_fn("cuInit"));
	CK(init(0));

	/* Versioned and per-thread-stream forms, each to its own wrapper. */
	CHECK(lookup("cuMemAlloc", 12000, 0) == hook_fn("cuMemAlloc_v2"));
	CHECK(lookup("cuMemGetInfo", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ==
	      hook_fn("cuMemGetInfo_v2"));
	CHECK(lookup("cuMemAllocAsync", 12000, 0) == hook_fn("cuMemAllocAsync"));
	CHECK(lookup("cuMemAllocAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ==
	      hook_fn("cuMemAllocAsync_ptsz"));
	CHECK(lookup("cuMemFreeAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ==
	      hook_fn("cuMemFreeAsync_ptsz"));
	CHECK(lookup("cuMemAllocFromPoolAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ==
	      hook_fn("cuMemAllocFromPoolAsync_ptsz"));
	CHECK(lookup("cuLaunchKernel", 12000, CU_GET_PROC_ADDRESS_LEGACY_STREAM) == hook_fn("cuLaunchKernel"));
	CHECK(lookup("cuLaunchKernel", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ==
	      hook_fn("cuLaunchKernel_ptsz"));
	CHECK(lookup("cuMemcpyHtoD", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ==
	      hook_fn("cuMemcpyHtoD_v2_ptds"));
	CHECK(lookup("cuMemcpyHtoDAsync", 12000, 0) == hook_fn("cuMemcpyHtoDAsync_v2"));
	CHECK(lookup("cuIpcOpenMemHandle", 10000, 0) == hook_fn("cuIpcOpenMemHandle"));
	CHECK(lookup("cuIpcOpenMemHandle", 12000, 0) == hook_fn("cuIpcOpenMemHandle_v2"));
	CHECK(lookup("cuCtxCreate", 12000, 0) == hook_fn("cuCtxCreate_v2"));
	CHECK(lookup("cuCtxCreate", 13000, 0) == hook_fn("cuCtxCreate_v4"));
	CHECK(lookup("cuGetProcAddress", 12000, 0) == hook_fn("cuGetProcAddress_v2"));
	CHECK(lookup("cuGetProcAddress", 11030, 0) == hook_fn("cuGetProcAddress"));

	/* Untouched: functions we do not wrap, cuGetExportTable, and errors. */
	CHECK(lookup("cuStreamCreate", 12000, 0) == fc_self_sym("cuStreamCreate"));
	CHECK(lookup("cuStreamSynchronize", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) ==
	      fc_self_sym("cuStreamSynchronize_ptsz"));
	CHECK(lookup("cuGetExportTable", 12000, 0) == fc_self_sym("cuGetExportTable"));
	void *fn = (void *)1;
	CUdriverProcAddressQueryResult st = -1;
	CHECK(gpa("cuNoSuchThing", &fn, 12000, 0, &st) == CUDA_ERROR_NOT_FOUND);
	CHECK(st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND && fn == NULL);
	CHECK(gpa("cuMemAllocAsync", &fn, 11000, 0, &st) == CUDA_ERROR_NOT_FOUND);
	CHECK(st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);

	/* The old four-argument entry point behaves the same. */
	gpa_fn gpa1 = (gpa_fn)lookup("cuGetProcAddress", 11030, 0);
	CK(gpa1("cuMemAllocAsync", &fn, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM));
	CHECK(fn == hook_fn("cuMemAllocAsync_ptsz"));

	/* The wrappers handed out really enforce the cap. */
	CUresult (*dev_get)(CUdevice *, int) = lookup("cuDeviceGet", 12000, 0);
	CUresult (*retain)(CUcontext *, CUdevice) = lookup("cuDevicePrimaryCtxRetain", 12000, 0);
	CUresult (*set_cur)(CUcontext) = lookup("cuCtxSetCurrent", 12000, 0);
	CUresult (*alloc)(CUdeviceptr *, size_t) = lookup("cuMemAlloc", 12000, 0);
	CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream) =
		lookup("cuMemAllocAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM);
	CUresult (*meminfo)(size_t *, size_t *) = lookup("cuMemGetInfo", 12000, 0);
	CUdevice d;
	CUcontext c;
	CK(dev_get(&d, 0));
	CK(retain(&c, d));
	CK(set_cur(c));
	size_t f, t;
	CK(meminfo(&f, &t));
	CHECK_EQ_U64(t, 128 * MiB);
	CHECK_EQ_U64(f, 64 * MiB);
	CUdeviceptr p;
	CHECK(alloc(&p, 100 * MiB) == CUDA_ERROR_OUT_OF_MEMORY);
	CHECK(alloc_async(&p, 100 * MiB, CU_STREAM_PER_THREAD) == CUDA_ERROR_OUT_OF_MEMORY);
	CK(alloc(&p, 32 * MiB));
	CK(meminfo(&f, &t));
	CHECK_EQ_U64(f, 32 * MiB);

	/* dlsym(RTLD_NEXT) from the program still searches after the program. */
	CHECK(dlsym(RTLD_NEXT, "cuMemAlloc_v2") != NULL || 1);
	printf("procaddr: ok\n");
	return 0;
}
