/* SPDX-License-Identifier: MIT */
/*
 * Offload and restore through the control socket, checked by the bytes:
 *  1. every layout a framework produces (cuMemAlloc, pitch, expandable
 *     segments with one access call over several mappings, one physical
 *     allocation mapped twice, one mapped only in part, one not mapped at
 *     all) comes back with the same content at the same addresses, while
 *     managed and pool memory stay and are reported;
 *  2. a launch made while offloaded waits for the restore;
 *  3. a restore without enough device memory fails cleanly, says how much
 *     was missing, and succeeds once memory is back;
 *  4. threads that keep launching, copying and allocating see the right
 *     checksums across N offload/restore cycles;
 *  5. the first offload makes its pinned buffers in pieces on several
 *     threads and copies each piece as it comes: the bytes come back, every
 *     copy runs from pinned memory, warm offloads make no new buffers,
 *     buffers are freed with their allocation or on drop-host, and running
 *     out of pinned memory half-way leaves the process running and intact.
 *  6. an allocation freed on one thread while another allocates and gets
 *     the same address range: the second keeps its mapping on record, the
 *     first leaves none behind, and an offload and restore afterwards move
 *     only live memory.
 *  7. the offload releases each allocation's memory while later copies still
 *     run, and the restore creates and maps allocations while earlier ones
 *     copy; a restore that runs out of device memory or fails to map half
 *     way undoes what it did and keeps the host copies; an offload whose
 *     copy fails after allocations were released brings them back, or stays
 *     offloaded when even that fails; the answers carry phase timings.
 * Usage: fc-offload layouts | fc-offload stress N (run the stress with
 * VRAM_FAKE_GRANULARITY=64KiB so that each cycle moves little data) |
 * fc-offload pieces register|hostalloc (with VRAM_HOOK_PIN_PIECE=1MiB,
 * VRAM_HOOK_PIN_THREADS=4 and VRAM_HOOK_PIN_METHOD set to the same method) |
 * fc-offload reuse (with VRAM_FAKE_GRANULARITY=64KiB and
 * VRAM_FAKE_ADDRESS_FREE_DELAY_US set, so that a free lingers after the
 * range is given back) | fc-offload pipeline (with VRAM_FAKE_GRANULARITY,
 * VRAM_HOOK_COPY_CHUNK=64KiB and VRAM_HOOK_COPY_STREAMS=2, so that every
 * allocation is a release ticket of its own, more than the hook keeps).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "fc-test.h"

#define CTX (64 * MiB)

static CUfunction k_fill, k_checksum;
static CUcontext g_ctx;

static uint64_t expected(uint32_t seed, size_t n)
{
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += (uint64_t)(i + 1) * (uint32_t)(seed + (uint32_t)i);
	return sum;
}

static void fill(CUdeviceptr p, uint32_t seed, size_t bytes, CUstream s)
{
	size_t n = bytes / 4;
	void *args[] = { &p, &seed, &n };
	CK(cuLaunchKernel(k_fill, 1, 1, 1, 32, 1, 1, 0, s, args, NULL));
}

/* Checksum of bytes at p; out is 8 bytes of device memory for the result. */
static uint64_t checksum(CUdeviceptr p, size_t bytes, CUdeviceptr out, CUstream s)
{
	size_t n = bytes / 4;
	void *args[] = { &p, &n, &out };
	uint64_t res = 0;
	CK(cuLaunchKernel_ptsz(k_checksum, 1, 1, 1, 32, 1, 1, 0, s, args, NULL));
	CK(cuMemcpyDtoHAsync_v2(&res, out, sizeof(res), s));
	CK(cuStreamSynchronize(s));
	return res;
}

/* ------------------------------------------------------------ layouts */

struct region {
	CUdeviceptr va;
	size_t bytes;
	uint32_t seed;
};

static CUmemAllocationProp dev_prop(void)
{
	CUmemAllocationProp prop;
	memset(&prop, 0, sizeof(prop));
	prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
	prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
	prop.location.id = 0;
	return prop;
}

static void set_rw(CUdeviceptr va, size_t size)
{
	CUmemAccessDesc acc = { { CU_MEM_LOCATION_TYPE_DEVICE, 0 }, CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	CK(cuMemSetAccess(va, size, &acc, 1));
}

static atomic_int late_launch_done;
static CUdeviceptr late_ptr;

static void *late_launcher(void *arg)
{
	(void)arg;
	CK(cuCtxSetCurrent(g_ctx));
	fill(late_ptr, 777, 2 * MiB, NULL);
	CK(cuCtxSynchronize());
	atomic_store(&late_launch_done, 1);
	return NULL;
}

static void test_layouts(void)
{
	char out[1024];
	CUmemAllocationProp prop = dev_prop();
	struct region r[16];
	int nr = 0;
	CUdeviceptr res;
	CK(cuMemAlloc_v2(&res, 8)); /* result slot: 2 MiB, movable too */

	CUdeviceptr a1, a2, pitched;
	size_t pitch;
	CK(cuMemAlloc_v2(&a1, MiB));
	CK(cuMemAlloc_v2(&a2, 5 * MiB));
	CK(cuMemAllocPitch_v2(&pitched, &pitch, 4096, 256, 4));
	r[nr++] = (struct region){ a1, MiB, 11 };
	r[nr++] = (struct region){ a2, 5 * MiB, 12 };
	r[nr++] = (struct region){ pitched, pitch * 256, 13 };

	/* Expandable segment: four 2 MiB chunks, one access call for all. */
	CUdeviceptr seg;
	CUmemGenericAllocationHandle hs[4];
	CK(cuMemAddressReserve(&seg, 32 * MiB, 0, 0, 0));
	for (int i = 0; i < 4; i++) {
		CK(cuMemCreate(&hs[i], 2 * MiB, &prop, 0));
		CK(cuMemMap(seg + (CUdeviceptr)i * 2 * MiB, 2 * MiB, 0, hs[i], 0));
	}
	set_rw(seg, 8 * MiB);
	r[nr++] = (struct region){ seg, 8 * MiB, 14 };

	/* One physical allocation mapped twice. */
	CUdeviceptr alias;
	CUmemGenericAllocationHandle ha;
	CK(cuMemAddressReserve(&alias, 8 * MiB, 0, 0, 0));
	CK(cuMemCreate(&ha, 4 * MiB, &prop, 0));
	CK(cuMemMap(alias, 4 * MiB, 0, ha, 0));
	CK(cuMemMap(alias + 4 * MiB, 4 * MiB, 0, ha, 0));
	set_rw(alias, 8 * MiB);
	r[nr++] = (struct region){ alias, 4 * MiB, 15 };

	/* Mapped only in part: its first half is reachable through no mapping. */
	CUdeviceptr part;
	CUmemGenericAllocationHandle hp;
	CK(cuMemAddressReserve(&part, 4 * MiB, 0, 0, 0));
	CK(cuMemCreate(&hp, 4 * MiB, &prop, 0));
	CK(cuMemMap(part, 4 * MiB, 0, hp, 0));
	set_rw(part, 4 * MiB);
	fill(part, 16, 4 * MiB, NULL);
	CK(cuCtxSynchronize());
	CK(cuMemUnmap(part, 4 * MiB));
	CK(cuMemMap(part + 2 * MiB, 2 * MiB, 2 * MiB, hp, 0));
	set_rw(part + 2 * MiB, 2 * MiB);

	/* Not mapped at all, but holding data. */
	CUdeviceptr loose;
	CUmemGenericAllocationHandle hl;
	CK(cuMemAddressReserve(&loose, 2 * MiB, 0, 0, 0));
	CK(cuMemCreate(&hl, 2 * MiB, &prop, 0));
	CK(cuMemMap(loose, 2 * MiB, 0, hl, 0));
	set_rw(loose, 2 * MiB);
	fill(loose, 17, 2 * MiB, NULL);
	CK(cuCtxSynchronize());
	CK(cuMemUnmap(loose, 2 * MiB));

	/* Memory that stays. */
	CUdeviceptr managed, pooled;
	CK(cuMemAllocManaged(&managed, MiB, CU_MEM_ATTACH_GLOBAL));
	CK(cuMemAllocAsync(&pooled, MiB, NULL));
	CK(cuMemsetD32_v2(managed, 0xabcdef01, MiB / 4));

	for (int i = 0; i < nr; i++)
		fill(r[i].va, r[i].seed, r[i].bytes, NULL);
	CK(cuCtxSynchronize());
	for (int i = 0; i < nr; i++)
		CHECK_EQ_U64(checksum(r[i].va, r[i].bytes, res, NULL), expected(r[i].seed, r[i].bytes / 4));

	/* The pool block moves with its 2 MiB chunk; managed memory stays. */
	const uint64_t movable = 2 * MiB /* res */ + 2 * MiB + 6 * MiB + 2 * MiB + 8 * MiB + 4 * MiB + 4 * MiB +
				 2 * MiB + 2 * MiB /* pooled */;
	const uint64_t stays = CTX + MiB;
	const uint64_t fake_stays = CTX + 2 * MiB; /* the fake rounds it to 2 MiB */

	for (int round = 0; round < 2; round++) {
		fc_ctl_ok("offload", out, sizeof(out));
		CHECK_EQ_U64(fc_field(out, "bytes="), movable);
		CHECK_EQ_U64(fc_field(out, "nonmovable="), stays);
		CHECK(strstr(out, "state=offloaded"));
		CHECK_EQ_U64(fc_used(0), fake_stays);
		CHECK(!fc_is_mapped(a1) && !fc_is_mapped(seg + 6 * MiB) && !fc_is_mapped(alias + 4 * MiB));
		CHECK(!fc_is_mapped(part + 2 * MiB));
		CHECK(fc_is_mapped(managed));

		if (round == 0) {
			/* A launch while offloaded waits at the gate. */
			late_ptr = a1;
			pthread_t th;
			CHECK(pthread_create(&th, NULL, late_launcher, NULL) == 0);
			usleep(100 * 1000);
			CHECK(!atomic_load(&late_launch_done));
			fc_ctl_ok("restore", out, sizeof(out));
			pthread_join(th, NULL);
			CHECK(atomic_load(&late_launch_done));
			r[0].seed = 777;
			r[0].bytes = MiB;
			/* fill() wrote 2 MiB from a1: the whole physical allocation */
		} else {
			/* Not enough device memory: stays offloaded, says what is missing. */
			fc_set_available(0, fc_used(0) + 10 * MiB);
			fc_ctl("restore", out, sizeof(out));
			CHECK(strncmp(out, "error restore", 13) == 0);
			CHECK(strstr(out, "state=offloaded"));
			CHECK(strstr(out, "missing"));
			CHECK_EQ_U64(fc_field(out, "missing="), movable - 10 * MiB);
			CHECK_EQ_U64(fc_used(0), fake_stays);
			fc_ctl("offload", out, sizeof(out));
			CHECK(strncmp(out, "error offload", 13) == 0);
			fc_set_available(0, 0);
			fc_ctl_ok("restore", out, sizeof(out));
		}
		CHECK_EQ_U64(fc_field(out, "bytes="), movable);
		CHECK_EQ_U64(fc_used(0), fake_stays + movable);
		for (int i = 0; i < nr; i++)
			CHECK_EQ_U64(checksum(r[i].va, r[i].bytes, res, NULL), expected(r[i].seed, r[i].bytes / 4));
		CHECK_EQ_U64(checksum(alias + 4 * MiB, 4 * MiB, res, NULL), expected(15, MiB));
		/* The second half of the partly mapped allocation. */
		uint64_t want = 0;
		for (size_t i = 0; i < MiB / 2; i++)
			want += (uint64_t)(i + 1) * (uint32_t)(16u + (uint32_t)(MiB / 2 + i));
		CHECK_EQ_U64(checksum(part + 2 * MiB, 2 * MiB, res, NULL), want);
		uint32_t m;
		CK(cuMemcpyDtoH_v2(&m, managed + 1000, 4));
		CHECK(m == 0xabcdef01);
	}

	/* The loose allocation kept its data too. */
	CK(cuMemMap(loose, 2 * MiB, 0, hl, 0));
	set_rw(loose, 2 * MiB);
	CHECK_EQ_U64(checksum(loose, 2 * MiB, res, NULL), expected(17, MiB / 2));
	/* So did the unmapped half of the partial one. */
	CK(cuMemUnmap(part + 2 * MiB, 2 * MiB));
	CK(cuMemMap(part, 4 * MiB, 0, hp, 0));
	set_rw(part, 4 * MiB);
	CHECK_EQ_U64(checksum(part, 4 * MiB, res, NULL), expected(16, MiB));

	/* Clean up; everything is uncharged. */
	CK(cuMemUnmap(loose, 2 * MiB));
	CK(cuMemUnmap(part, 4 * MiB));
	CK(cuMemUnmap(alias, 8 * MiB));
	CK(cuMemUnmap(seg, 8 * MiB));
	CK(cuMemRelease(hl));
	CK(cuMemRelease(hp));
	CK(cuMemRelease(ha));
	for (int i = 0; i < 4; i++)
		CK(cuMemRelease(hs[i]));
	CK(cuMemAddressFree(loose, 2 * MiB));
	CK(cuMemAddressFree(part, 4 * MiB));
	CK(cuMemAddressFree(alias, 8 * MiB));
	CK(cuMemAddressFree(seg, 32 * MiB));
	CK(cuMemFree_v2(a1));
	CK(cuMemFree_v2(a2));
	CK(cuMemFree_v2(pitched));
	CK(cuMemFree_v2(res));
	CK(cuMemFree_v2(managed));
	CK(cuMemFreeAsync(pooled, NULL));
	CK(cuCtxSynchronize());
	CUmemoryPool dflt;
	CK(cuDeviceGetDefaultMemPool(&dflt, 0));
	CK(cuMemPoolTrimTo(dflt, 0));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
	CHECK_EQ_U64(fc_used(0), CTX);
}

/* ----------------------------------------------------------------- stress */

#define WORKERS 4
#define WBUF (64 * 1024)          /* bytes per worker buffer */
static atomic_int stop;
static atomic_long iterations[WORKERS];

struct worker {
	int id;
	CUdeviceptr buf;          /* cuMemAlloc, WBUF bytes */
	CUdeviceptr seg;          /* a VMM chunk, WBUF bytes */
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	CUstream s;
	CK(cuCtxSetCurrent(g_ctx));
	CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	uint32_t seed = (uint32_t)w->id * 1000003u;
	while (!atomic_load(&stop)) {
		seed = seed * 1664525u + 1013904223u;
		/* data in buf, result in the last 8 bytes of seg */
		fill(w->buf, seed, WBUF, s);
		uint64_t got = checksum(w->buf, WBUF, w->seg + WBUF - 8, s);
		if (got != expected(seed, WBUF / 4)) {
			fprintf(stderr, "worker %d: checksum %llu, expected %llu\n", w->id,
				(unsigned long long)got, (unsigned long long)expected(seed, WBUF / 4));
			abort();
		}
		/* copies through the host too */
		uint32_t probe[4];
		CK(cuMemcpyDtoH_v2(probe, w->buf + 4096, sizeof(probe)));
		CHECK(probe[0] == seed + 1024 && probe[3] == seed + 1027);
		if (atomic_load(&iterations[w->id]) % 8 == 0) {
			CUdeviceptr scratch;
			CK(cuMemAlloc_v2(&scratch, WBUF));
			CK(cuMemsetD8Async(scratch, 7, WBUF, s));
			CK(cuStreamSynchronize(s));
			CK(cuMemFree_v2(scratch));
		}
		atomic_fetch_add(&iterations[w->id], 1);
	}
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_stress(int cycles)
{
	char out[1024];
	struct worker w[WORKERS];
	pthread_t th[WORKERS];
	CUmemAllocationProp prop = dev_prop();
	CUdeviceptr seg;
	CUmemGenericAllocationHandle h[WORKERS];
	CK(cuMemAddressReserve(&seg, WORKERS * WBUF, 0, 0, 0));
	for (int i = 0; i < WORKERS; i++) {
		w[i].id = i;
		CK(cuMemAlloc_v2(&w[i].buf, WBUF));
		CK(cuMemCreate(&h[i], WBUF, &prop, 0));
		w[i].seg = seg + (CUdeviceptr)i * WBUF;
		CK(cuMemMap(w[i].seg, WBUF, 0, h[i], 0));
	}
	set_rw(seg, WORKERS * WBUF);
	for (int i = 0; i < WORKERS; i++)
		CHECK(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0);

	double t0 = now_s();
	long before[WORKERS];
	for (int c = 0; c < cycles; c++) {
		if (c == cycles / 2)
			for (int i = 0; i < WORKERS; i++)
				before[i] = atomic_load(&iterations[i]);
		fc_ctl_ok(c % 100 == 7 ? "offload drop-host" : "offload", out, sizeof(out));
		CHECK(!fc_is_mapped(w[c % WORKERS].buf));
		CHECK_EQ_U64(fc_used(0), CTX);
		fc_ctl_ok("restore", out, sizeof(out));
	}
	double t1 = now_s();
	/* Let the workers run a little after the last restore. */
	usleep(20 * 1000);
	atomic_store(&stop, 1);
	long total = 0;
	for (int i = 0; i < WORKERS; i++) {
		pthread_join(th[i], NULL);
		CHECK(atomic_load(&iterations[i]) > before[i]); /* everyone kept working */
		total += atomic_load(&iterations[i]);
	}
	printf("stress: %d cycles in %.2f s (%.2f ms each), %ld checked launches\n", cycles, t1 - t0,
	       (t1 - t0) * 1000 / cycles, total);
	for (int i = 0; i < WORKERS; i++) {
		CK(cuMemFree_v2(w[i].buf));
		CK(cuMemUnmap(w[i].seg, WBUF));
		CK(cuMemRelease(h[i]));
	}
	CK(cuMemAddressFree(seg, WORKERS * WBUF));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
}

/* ------------------------------------------------------------- pieces */

#define PIECE MiB
#define NPIECE_REGIONS 6

static void check_regions(const struct region *r, int nr, CUdeviceptr res)
{
	for (int i = 0; i < nr; i++)
		CHECK_EQ_U64(checksum(r[i].va, r[i].bytes, res, NULL), expected(r[i].seed, r[i].bytes / 4));
}

static void fill_regions(struct region *r, int nr, uint32_t seed)
{
	for (int i = 0; i < nr; i++) {
		r[i].seed = seed + (uint32_t)i;
		fill(r[i].va, r[i].seed, r[i].bytes, NULL);
	}
	CK(cuCtxSynchronize());
}

/* "pinned N new bytes in P pieces on T threads" of an offload answer; 0 when
 * the offload made no new buffer. */
static unsigned long long pinned_pieces(const char *answer, unsigned *ret_threads)
{
	const char *p = strstr(answer, "; pinned ");
	if (!p)
		return 0;
	const char *in = strstr(p, " in ");
	CHECK(in);
	unsigned long long pieces = strtoull(in + 4, NULL, 10);
	const char *on = strstr(in, " on ");
	CHECK(on);
	*ret_threads = (unsigned)strtoul(on + 4, NULL, 10);
	return pieces;
}

static void test_pieces(bool registered)
{
	char out[1024];
	CUmemAllocationProp prop = dev_prop();
	struct region r[NPIECE_REGIONS];
	CUdeviceptr res;
	unsigned threads = 0;
	CK(cuMemAlloc_v2(&res, 8));

	/* Sizes in 2 MiB units: several pieces each, one not a whole piece
	 * count of copy chunks. */
	static const size_t sizes[] = { 2 * MiB, 6 * MiB, 10 * MiB, 12 * MiB, 14 * MiB };
	int nr = 0;
	size_t expect_pieces = 2 * MiB / PIECE; /* the result slot */
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		CK(cuMemAlloc_v2(&r[nr].va, sizes[i]));
		r[nr++].bytes = sizes[i];
		expect_pieces += registered ? sizes[i] / PIECE : 1;
	}
	/* VMM memory mapped only in part: copied through a mapping of its own. */
	CUdeviceptr part;
	CUmemGenericAllocationHandle hp;
	CK(cuMemAddressReserve(&part, 8 * MiB, 0, 0, 0));
	CK(cuMemCreate(&hp, 8 * MiB, &prop, 0));
	CK(cuMemMap(part, 4 * MiB, 4 * MiB, hp, 0));
	set_rw(part, 4 * MiB);
	r[nr++] = (struct region){ part, 4 * MiB, 0 };
	expect_pieces += registered ? 8 * MiB / PIECE : 1;
	if (!registered)
		expect_pieces = expect_pieces - (2 * MiB / PIECE) + 1;
	CHECK(nr == NPIECE_REGIONS);

	fill_regions(r, nr, 100);
	check_regions(r, nr, res);

	/* First offload: new buffers, in pieces, on several threads. */
	long unpinned = fc_unpinned_copies();
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(pinned_pieces(out, &threads), expect_pieces);
	CHECK(threads == 4);
	CHECK_EQ_U64(fc_unpinned_copies(), unpinned);
	CHECK_EQ_U64(fc_host_registered(), registered ? expect_pieces : 0);
	fc_ctl_ok("restore", out, sizeof(out));
	check_regions(r, nr, res);

	/* Warm: the same buffers, no new ones; new contents come back. */
	fill_regions(r, nr, 200);
	unpinned = fc_unpinned_copies();
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(pinned_pieces(out, &threads), 0);
	fc_ctl_ok("restore", out, sizeof(out));
	CHECK_EQ_U64(fc_unpinned_copies(), unpinned);
	check_regions(r, nr, res);

	/* A freed allocation takes its buffer with it. */
	CK(cuMemFree_v2(r[1].va));
	r[1] = r[--nr];
	if (registered)
		CHECK_EQ_U64(fc_host_registered(), expect_pieces - 6 * MiB / PIECE);

	/* drop-host: every buffer is gone after the restore. */
	fc_ctl_ok("offload drop-host", out, sizeof(out));
	fc_ctl_ok("restore", out, sizeof(out));
	CHECK_EQ_U64(fc_host_registered(), 0);
	check_regions(r, nr, res);

	/* Out of pinned memory half-way: the offload fails, the process runs on
	 * with its memory, and the next offload completes the buffers. */
	if (registered) {
		fc_set_register_limit(5);
		fc_ctl("offload", out, sizeof(out));
		CHECK(strncmp(out, "error offload", 13) == 0);
		CHECK(strstr(out, "pinned host memory"));
		CHECK(fc_host_registered() <= 5);
		fill_regions(r, nr, 300);
		check_regions(r, nr, res);
		fc_set_register_limit(-1);
		fc_ctl_ok("offload", out, sizeof(out));
		CHECK(pinned_pieces(out, &threads) > 0);
		fc_ctl_ok("restore", out, sizeof(out));
		check_regions(r, nr, res);
	}

	for (int i = 0; i < nr; i++)
		if (r[i].va != part)
			CK(cuMemFree_v2(r[i].va));
	CK(cuMemUnmap(part, 4 * MiB));
	CK(cuMemRelease(hp));
	CK(cuMemAddressFree(part, 8 * MiB));
	CK(cuMemFree_v2(res));
	CHECK_EQ_U64(fc_host_registered(), 0);
	CHECK_EQ_U64(fc_hook_used(0), CTX);
}

/* ------------------------------------------------------------- reuse */

#define REUSE_TRIES 64
static CUdeviceptr reuse_victim;

static void *reuse_freer(void *arg)
{
	(void)arg;
	CK(cuCtxSetCurrent(g_ctx));
	CK(cuMemFree_v2(reuse_victim));
	return NULL;
}

/*
 * cuMemFree gives the address range back to the driver; a cuMemAlloc on
 * another thread may reserve the same range before the free returns. The
 * free must then forget its own mapping, not the new allocation's, or the
 * next offload copies from (and the restore maps at) a range nobody owns.
 */
static void test_reuse(void)
{
	char out[1024];
	CUdeviceptr res, keep[REUSE_TRIES];
	int nkeep = 0, reused = 0;
	CK(cuMemAlloc_v2(&res, 8));
	for (int round = 0; round < 8; round++) {
		CK(cuMemAlloc_v2(&reuse_victim, WBUF));
		fill(reuse_victim, 5, WBUF, NULL);
		CK(cuCtxSynchronize());
		pthread_t th;
		CHECK(pthread_create(&th, NULL, reuse_freer, NULL) == 0);
		/* The range is free again while the free still runs. */
		usleep(50 * 1000);
		CUdeviceptr b = 0;
		CK(cuMemAlloc_v2(&b, WBUF));
		pthread_join(th, NULL);
		reused += b == reuse_victim;
		fill(b, 100u + (uint32_t)round, WBUF, NULL);
		keep[nkeep++] = b;
	}
	printf("reuse: the freed range came back %d of 8 times\n", reused);
	CK(cuCtxSynchronize());
	CHECK_EQ_U64(fc_hook_used(0), CTX + (uint64_t)(nkeep + 1) * WBUF);
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), (uint64_t)(nkeep + 1) * WBUF);
	fc_ctl_ok("restore", out, sizeof(out));
	for (int i = 0; i < nkeep; i++)
		CHECK_EQ_U64(checksum(keep[i], WBUF, res, NULL), expected(100u + (uint32_t)i, WBUF / 4));
	for (int i = 0; i < nkeep; i++)
		CK(cuMemFree_v2(keep[i]));
	CK(cuMemFree_v2(res));
	CHECK_EQ_U64(fc_hook_used(0), CTX);
}

/* ------------------------------------------------------------- pipeline */

#define PIPE_BIG 4
#define PIPE_SMALL 96
#define PIPE_REGIONS (PIPE_BIG + PIPE_SMALL)
#define PIPE_SMALL_BYTES (64 * 1024)

static void check_unmapped(const struct region *r, int nr)
{
	for (int i = 0; i < nr; i++)
		CHECK(!fc_is_mapped(r[i].va));
}

/*
 * The copies are slowed down (200 us each) so that they are still running
 * when the hook does its other work: the fake counts the VMM calls made
 * while a copy was pending. Allocations are listed newest first, so the
 * small ones go first and the big ones after them.
 */
static void test_pipeline(void)
{
	char out[1024];
	static struct region r[PIPE_REGIONS];
	CUdeviceptr res;
	unsigned threads = 0;
	CK(cuMemAlloc_v2(&res, 8));
	for (int i = 0; i < PIPE_REGIONS; i++) {
		r[i].bytes = i < PIPE_BIG ? 4 * MiB : PIPE_SMALL_BYTES;
		CK(cuMemAlloc_v2(&r[i].va, r[i].bytes));
	}
	const uint64_t movable = PIPE_SMALL_BYTES /* res */ + PIPE_BIG * 4 * MiB + PIPE_SMALL * PIPE_SMALL_BYTES;

	fill_regions(r, PIPE_REGIONS, 100);
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK(pinned_pieces(out, &threads) > 0);
	fc_ctl_ok("restore", out, sizeof(out));
	check_regions(r, PIPE_REGIONS, res);
	int registered = fc_host_registered();

	/* Warm: memory goes while later copies run, comes while earlier ones run. */
	fc_set_copy_delay(200);
	fill_regions(r, PIPE_REGIONS, 200);
	long unmaps = fc_calls_during_copies("cuMemUnmap"), releases = fc_calls_during_copies("cuMemRelease");
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), movable);
	CHECK(strstr(out, "[ms: drain="));
	CHECK(strstr(out, " copy=") && strstr(out, " release=") && strstr(out, " tail="));
	CHECK(fc_calls_during_copies("cuMemUnmap") > unmaps);
	CHECK(fc_calls_during_copies("cuMemRelease") > releases);
	CHECK_EQ_U64(fc_used(0), CTX);
	check_unmapped(r, PIPE_REGIONS);
	long creates = fc_calls_during_copies("cuMemCreate"), maps = fc_calls_during_copies("cuMemMap");
	fc_ctl_ok("restore", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), movable);
	CHECK(strstr(out, "[ms: create=") && strstr(out, " head="));
	CHECK(fc_calls_during_copies("cuMemCreate") > creates);
	CHECK(fc_calls_during_copies("cuMemMap") > maps);
	check_regions(r, PIPE_REGIONS, res);

	/* Out of device memory half-way through the restore: the allocations
	 * made so far, copies in flight, are given back; the host copies stay. */
	fill_regions(r, PIPE_REGIONS, 300);
	fc_ctl_ok("offload", out, sizeof(out));
	fc_set_available(0, fc_used(0) + MiB);
	creates = fc_calls_during_copies("cuMemCreate");
	fc_ctl("restore", out, sizeof(out));
	CHECK(strncmp(out, "error restore", 13) == 0);
	CHECK(strstr(out, "state=offloaded"));
	CHECK_EQ_U64(fc_field(out, "missing="), movable - MiB);
	CHECK(fc_calls_during_copies("cuMemCreate") > creates);
	CHECK_EQ_U64(fc_used(0), CTX);
	check_unmapped(r, PIPE_REGIONS);
	CHECK(fc_host_registered() == registered);
	fc_set_available(0, 0);
	fc_ctl_ok("restore", out, sizeof(out));
	check_regions(r, PIPE_REGIONS, res);

	/* A mapping fails half-way: the same. */
	fill_regions(r, PIPE_REGIONS, 400);
	fc_ctl_ok("offload", out, sizeof(out));
	fc_fail_map(30);
	fc_ctl("restore", out, sizeof(out));
	CHECK(strncmp(out, "error restore", 13) == 0);
	CHECK(strstr(out, "state=offloaded") && strstr(out, "cannot map"));
	CHECK_EQ_U64(fc_used(0), CTX);
	check_unmapped(r, PIPE_REGIONS);
	fc_ctl_ok("restore", out, sizeof(out));
	check_regions(r, PIPE_REGIONS, res);

	/* A copy fails after the small allocations and one big one were
	 * released: they come back from their host copies, the process runs on. */
	fill_regions(r, PIPE_REGIONS, 500);
	releases = fc_calls_during_copies("cuMemRelease");
	fc_fail_copy(200);
	fc_ctl("offload", out, sizeof(out));
	CHECK(strncmp(out, "error offload", 13) == 0);
	CHECK(strstr(out, "state=running") && strstr(out, "brought back"));
	CHECK(fc_calls_during_copies("cuMemRelease") > releases);
	CHECK_EQ_U64(fc_used(0), CTX + movable);
	check_regions(r, PIPE_REGIONS, res);
	fc_ctl_ok("offload", out, sizeof(out));
	fc_ctl_ok("restore", out, sizeof(out));
	check_regions(r, PIPE_REGIONS, res);

	/* The same, and bringing them back fails too: the process stays
	 * offloaded, and a restore brings everything back. */
	fill_regions(r, PIPE_REGIONS, 600);
	fc_fail_copy(200);
	fc_fail_map(1);
	fc_ctl("offload", out, sizeof(out));
	CHECK(strncmp(out, "error offload", 13) == 0);
	CHECK(strstr(out, "state=offloaded") && strstr(out, "could not come back"));
	CHECK(fc_used(0) < CTX + movable);
	fc_ctl_ok("restore", out, sizeof(out));
	CHECK(fc_field(out, "bytes=") < movable);
	CHECK_EQ_U64(fc_used(0), CTX + movable);
	check_regions(r, PIPE_REGIONS, res);
	fc_set_copy_delay(0);
	fc_ctl_ok("offload", out, sizeof(out));
	CHECK_EQ_U64(fc_field(out, "bytes="), movable);
	fc_ctl_ok("restore", out, sizeof(out));
	check_regions(r, PIPE_REGIONS, res);
	CHECK(fc_host_registered() == registered);

	for (int i = 0; i < PIPE_REGIONS; i++)
		CK(cuMemFree_v2(r[i].va));
	CK(cuMemFree_v2(res));
	CHECK_EQ_U64(fc_host_registered(), 0);
	CHECK_EQ_U64(fc_hook_used(0), CTX);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "layouts";
	int cycles = argc > 2 ? atoi(argv[2]) : 1000;
	g_ctx = fc_setup(0);
	CUmodule mod;
	CK(cuModuleLoadData(&mod, "fake-kernels"));
	CK(cuModuleGetFunction(&k_fill, mod, "fill"));
	CK(cuModuleGetFunction(&k_checksum, mod, "checksum"));
	if (!strcmp(mode, "layouts"))
		test_layouts();
	else if (!strcmp(mode, "stress"))
		test_stress(cycles);
	else if (!strcmp(mode, "reuse"))
		test_reuse();
	else if (!strcmp(mode, "pipeline"))
		test_pipeline();
	else if (!strcmp(mode, "pieces"))
		test_pieces(argc < 3 || strcmp(argv[2], "hostalloc") != 0);
	else
		return 2;
	printf("offload %s: ok\n", mode);
	return 0;
}
