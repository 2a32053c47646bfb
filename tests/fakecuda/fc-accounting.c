/* SPDX-License-Identifier: MIT */
/*
 * Accounting through every kind of allocation, with no cap: what is charged,
 * what is not, what counts as non-movable, and that frees the hook does not
 * know still reach the driver. With the argument "plain" the hook runs with
 * VRAM_HOOK_VMM_ALLOC=0 (cuMemAlloc passed through, non-movable).
 */
#include "fc-test.h"

#define CTX (64 * MiB)

static void test_linear(bool plain)
{
	unsigned long long base = fc_hook_used(0);
	CHECK_EQ_U64(base, CTX);

	CUdeviceptr p;
	CK(cuMemAlloc_v2(&p, 3 * MiB));
	/* VMM-served: charged by the physical size (2 MiB granules). */
	CHECK_EQ_U64(fc_hook_used(0), CTX + (plain ? 3 * MiB : 4 * MiB));
	CHECK(fc_is_mapped(p));
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + (plain ? 3 * MiB : 0));

	uint32_t in[1024], out[1024];
	for (int i = 0; i < 1024; i++)
		in[i] = (uint32_t)i * 2654435761u;
	CK(cuMemcpyHtoD_v2(p + MiB, in, sizeof(in)));
	CK(cuMemcpyDtoH_v2(out, p + MiB, sizeof(out)));
	CHECK(memcmp(in, out, sizeof(in)) == 0);

	CUdeviceptr q;
	size_t pitch = 0;
	CK(cuMemAllocPitch_v2(&q, &pitch, 1000, 100, 4));
	CHECK(pitch >= 1000 && pitch % 512 == 0);
	unsigned long long pitched = plain ? (unsigned long long)pitch * 100 : 2 * MiB;
	CHECK_EQ_U64(fc_hook_used(0), CTX + (plain ? 3 * MiB : 4 * MiB) + pitched);

	CK(cuMemFree_v2(q));
	CK(cuMemFree_v2(p));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_used(0), CTX);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);
}

static void test_host_and_unknown(void)
{
	void *h1, *h2;
	char buf[4096];
	CK(cuMemAllocHost_v2(&h1, 8 * MiB));
	CK(cuMemHostAlloc(&h2, 8 * MiB, CU_MEMHOSTALLOC_PORTABLE));
	CK(cuMemHostRegister_v2(buf, sizeof(buf), 0));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CK(cuMemHostUnregister(buf));
	CK(cuMemFreeHost(h1));
	CK(cuMemFreeHost(h2));

	int before = fc_unknown_frees();
	CHECK(cuMemFree_v2((CUdeviceptr)0xdead0000ull) == CUDA_ERROR_INVALID_VALUE);
	CHECK(cuMemFreeAsync((CUdeviceptr)0xdead0000ull, NULL) == CUDA_ERROR_INVALID_VALUE);
	CHECK_EQ_U64(fc_unknown_frees(), before + 2);
	CHECK_EQ_U64(fc_hook_used(0), CTX);
}

static void test_nonmovable(bool plain)
{
	CUdeviceptr m;
	CK(cuMemAllocManaged(&m, MiB, CU_MEM_ATTACH_GLOBAL));
	CHECK_EQ_U64(fc_hook_used(0), CTX + MiB);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + MiB);

	CUarray arr;
	CUDA_ARRAY_DESCRIPTOR d = { 256, 256, CU_AD_FORMAT_FLOAT, 1 };
	CK(cuArrayCreate_v2(&arr, &d));
	CHECK_EQ_U64(fc_hook_used(0), CTX + MiB + 256 * 1024);
	CK(cuArrayDestroy(arr));
	CK(cuMemFree_v2(m));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);

	/* Stream-ordered allocations, default pool and an explicit one. */
	CUstream s;
	CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CUdeviceptr a1, a2, a3;
	CK(cuMemAllocAsync(&a1, MiB, s));
	CK(cuMemAllocAsync_ptsz(&a2, 2 * MiB, s));
	CUmemoryPool pool;
	CUmemPoolProps props;
	memset(&props, 0, sizeof(props));
	props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
	props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	props.location.id = 0;
	CK(cuMemPoolCreate(&pool, &props));
	CK(cuMemAllocFromPoolAsync(&a3, 3 * MiB, pool, s));
	if (plain) {
		/* Left to the driver: charged as asked, non-movable. */
		CHECK_EQ_U64(fc_hook_used(0), CTX + 6 * MiB);
		CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + 6 * MiB);
	} else {
		/* Movable: a 1 MiB block is cut from a 2 MiB chunk, 2 and 3 MiB
		 * get 2 and 4 MiB of their own. */
		CHECK_EQ_U64(fc_hook_used(0), CTX + 8 * MiB);
		CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);
	}
	CK(cuMemFreeAsync(a1, s));
	CK(cuMemFreeAsync_ptsz(a2, s));
	CK(cuMemFree_v2(a3)); /* a plain free of pool memory is allowed */
	CK(cuStreamSynchronize(s));
	/* Idle pool memory goes back on a trim and with its pool. */
	CUmemoryPool dflt;
	CK(cuDeviceGetDefaultMemPool(&dflt, 0));
	CK(cuMemPoolTrimTo(dflt, 0));
	CK(cuMemPoolDestroy(pool));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_used(0), CTX);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);
}

static void test_vmm(void)
{
	int phys0 = fc_live_phys();
	CUmemAllocationProp prop;
	memset(&prop, 0, sizeof(prop));
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = 0;
	size_t gran = 0;
	CK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
	CHECK(gran == 2 * MiB);

	CUdeviceptr va;
	CK(cuMemAddressReserve(&va, 16 * MiB, 0, 0, 0));
	CUmemGenericAllocationHandle h;
	CK(cuMemCreate(&h, 4 * MiB, &prop, 0));
	CHECK_EQ_U64(fc_hook_used(0), CTX + 4 * MiB);
	CK(cuMemMap(va, 4 * MiB, 0, h, 0));
	CUmemAccessDesc acc = { { CU_MEM_LOCATION_TYPE_DEVICE, 0 }, CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CK(cuMemSetAccess(va, 4 * MiB, &acc, 1));
	CK(cuMemsetD32_v2(va, 0x5a5a5a5a, MiB));

	CUmemAllocationProp got;
	CK(cuMemGetAllocationPropertiesFromHandle(&got, h));
	CHECK(got.location.id == 0 && got.type == CU_MEM_ALLOCATION_TYPE_PINNED);

	CUmemGenericAllocationHandle again;
	CK(cuMemRetainAllocationHandle(&again, (void *)(uintptr_t)(va + MiB)));
	CHECK(again == h);
	CK(cuMemRelease(again));

	/* Released while mapped: still there until unmapped, as on the GPU. */
	CK(cuMemRelease(h));
	CHECK_EQ_U64(fc_hook_used(0), CTX + 4 * MiB);
	uint32_t v = 0;
	CK(cuMemcpyDtoH_v2(&v, va + 3 * MiB, 4));
	CHECK(v == 0x5a5a5a5a);
	CK(cuMemUnmap(va, 4 * MiB));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_live_phys(), phys0);
	CK(cuMemAddressFree(va, 16 * MiB));

	/* Host-located physical memory (NCCL does this) is not charged. */
	prop.location.type = CU_MEM_LOCATION_TYPE_HOST;
	CK(cuMemCreate(&h, 2 * MiB, &prop, 0));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CK(cuMemRelease(h));
	CHECK_EQ_U64(fc_live_phys(), phys0);

	/* Exported memory stays where it is: non-movable. */
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
	CK(cuMemCreate(&h, 2 * MiB, &prop, 0));
	int fd = -1;
	CK(cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
	CHECK(fd >= 0);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + 2 * MiB);
	CUmemGenericAllocationHandle imported;
	CK(cuMemImportFromShareableHandle(&imported, (void *)(intptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
	CHECK_EQ_U64(fc_hook_used(0), CTX + 2 * MiB); /* the exporter pays */
	CK(cuMemRelease(imported));
	CK(cuMemRelease(h));
	close(fd);
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);
	CHECK_EQ_U64(fc_live_phys(), phys0);
}

static void test_ipc(bool plain)
{
	CUdeviceptr p;
	CK(cuMemAlloc_v2(&p, 2 * MiB));
	CUipcMemHandle ipc;
	CUresult r = cuIpcGetMemHandle(&ipc, p);
	if (!plain) {
		/* VMM memory: the hook's own handle (fc-ipc opens it from another
		 * process); movable until another process opens it. */
		CK(r);
		CHECK(memcmp(ipc.reserved, "VRAMIPC1", 8) == 0);
		CHECK_EQ_U64(fc_hook_nonmovable(0), CTX);
		CK(cuMemFree_v2(p));
		return;
	}
	CK(r);
	CUdeviceptr opened;
	CK(cuIpcOpenMemHandle_v2(&opened, ipc, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
	CHECK_EQ_U64(fc_hook_used(0), CTX + 4 * MiB);
	CHECK_EQ_U64(fc_hook_nonmovable(0), CTX + 4 * MiB);
	CK(cuIpcCloseMemHandle(opened));
	CK(cuMemFree_v2(p));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
}

int main(int argc, char **argv)
{
	bool plain = argc > 1 && strcmp(argv[1], "plain") == 0;
	fc_setup(0);
	test_linear(plain);
	test_host_and_unknown();
	test_nonmovable(plain);
	test_vmm();
	test_ipc(plain);
	printf("accounting%s: ok\n", plain ? " (plain)" : "");
	return 0;
}
