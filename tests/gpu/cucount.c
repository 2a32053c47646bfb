/* SPDX-License-Identifier: MIT */
/*
 * Counts the calls a CUDA program makes to each driver entry point it got
 * from cuGetProcAddress (how libcudart, and so PyTorch, reach the driver),
 * so that a measurement of libvram.so can say which of its wrappers a
 * workload goes through and how often. libvram.so itself stays untouched:
 * this is a separate library, preloaded before it,
 *   LD_PRELOAD="cucount.so libvram.so" python3 infer_bench.py count ...
 * or alone to count without the hook.
 *
 * It takes dlsym's answers for cuGetProcAddress and cuGetProcAddress_v2
 * (libcudart dlopens the driver and looks them up), keeps them as the next
 * in line (libvram.so's wrapper when it is preloaded, else the driver's),
 * and answers with its own. It exports no cu* symbol: libvram.so hands out
 * the addresses of its exported wrappers, which a cu* export of this
 * library (first in the lookup order) would replace; so a program that
 * links libcuda and calls cuGetProcAddress directly is not counted. Those ask the next in line, then hand out a
 * counting stub in place of the function found: one locked increment and a
 * jump through a table, every argument register untouched. Each stub
 * belongs to one (name asked, function found) pair; the owner of the
 * function (libvram.so or the driver) is recorded with it.
 *
 * The program reads the counts through two functions found with
 * dlsym(RTLD_DEFAULT, ...) (Python: ctypes.CDLL(None)):
 *   void cucount_reset(void);
 *   int  cucount_dump(const char *path);  "CALLS<TAB>NAME<TAB>OWNER<TAB>SYMBOL"
 *                                          for every stub called (NAME as asked,
 *                                          "+ptsz" with the per-thread flag);
 *                                          0 or -errno
 * dlsym(RTLD_NEXT, ...) from elsewhere is answered as libvram.so answers
 * it for an object loaded before it. x86-64 only. A measuring tool: the
 * locked increment costs about 20 ns a call, so no timing is done with it.
 *   cc -O2 -shared -fPIC -o cucount.so cucount.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if !defined(__x86_64__)
#error "cucount: x86-64 only"
#endif

#define EXPORT __attribute__((visibility("default")))
#define CUCOUNT_STUBS 2048 /* keep in step with .rept below */
#define CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM 2

typedef int CUresult;
typedef unsigned long long cuuint64_t;
typedef CUresult (*gpa_fn)(const char *, void **, int, cuuint64_t);
typedef CUresult (*gpa_v2_fn)(const char *, void **, int, cuuint64_t, int *);
typedef void *(*dlsym_fn)(void *, const char *);

/* Read by the stubs; written under table_lock before a stub is handed out. */
__attribute__((visibility("hidden"))) uint64_t cucount_calls[CUCOUNT_STUBS];
__attribute__((visibility("hidden"))) void *cucount_target[CUCOUNT_STUBS];
extern char cucount_stubs[] __attribute__((visibility("hidden")));

/* Stub i, 16 bytes at cucount_stubs + 16 * i: lock incq (8 bytes), jmp
 * through the table (6 bytes). */
__asm__(".text\n"
	".p2align 4\n"
	".hidden cucount_stubs\n"
	"cucount_stubs:\n"
	".set cucount_i, 0\n"
	".rept 2048\n"
	".p2align 4\n"
	"lock incq cucount_calls+8*cucount_i(%rip)\n"
	"jmp *cucount_target+8*cucount_i(%rip)\n"
	".set cucount_i, cucount_i+1\n"
	".endr\n");

struct stub_info {
	char name[64];        /* the name asked for */
	bool ptsz;            /* asked for with the per-thread default stream flag */
	const char *owner;    /* basename of the object the function lies in */
	char symbol[64];      /* its exported name, when it has one */
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stub_info info[CUCOUNT_STUBS];
static int nstubs;
static int stubs_lacking;

static dlsym_fn libc_dlsym, next_dlsym;
static gpa_fn next_gpa;
static gpa_v2_fn next_gpa_v2;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init(void)
{
	/* From libc by name: libvram.so's dlsym carries no version, so a
	 * versioned lookup through RTLD_NEXT would find it first. */
	static const char *const versions[] = { "GLIBC_2.34", "GLIBC_2.2.5" };
	void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
	for (size_t i = 0; i < 2 && libc && !libc_dlsym; i++)
		libc_dlsym = (dlsym_fn)dlvsym(libc, "dlsym", versions[i]);
	/* The dlsym after this library: libvram.so's when preloaded, else libc's. */
	if (libc_dlsym)
		next_dlsym = (dlsym_fn)libc_dlsym(RTLD_NEXT, "dlsym");
	if (!next_dlsym)
		next_dlsym = libc_dlsym;
}

static void *stub_for(const char *name, cuuint64_t flags, void *fn)
{
	if (!fn)
		return fn;
	void *ret = fn;
	pthread_mutex_lock(&table_lock);
	for (int i = 0; i < nstubs; i++)
		if (cucount_target[i] == fn && strcmp(info[i].name, name) == 0) {
			ret = cucount_stubs + 16 * i;
			goto out_unlock;
		}
	if (nstubs == CUCOUNT_STUBS) {
		stubs_lacking++; /* handed out uncounted */
		goto out_unlock;
	}
	int i = nstubs;
	struct stub_info *s = &info[i];
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->ptsz = flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
	Dl_info dl;
	s->owner = "?";
	if (dladdr(fn, &dl) && dl.dli_fname) {
		const char *slash = strrchr(dl.dli_fname, '/');
		s->owner = slash ? slash + 1 : dl.dli_fname;
		/* Only an exact hit names the function; a nearby symbol would mislead. */
		if (dl.dli_sname && dl.dli_saddr == fn)
			snprintf(s->symbol, sizeof(s->symbol), "%s", dl.dli_sname);
	}
	__atomic_store_n(&cucount_target[i], fn, __ATOMIC_RELEASE);
	nstubs++;
	ret = cucount_stubs + 16 * i;
out_unlock:
	pthread_mutex_unlock(&table_lock);
	return ret;
}

static CUresult counted_gpa(const char *symbol, void **pfn, int version, cuuint64_t flags);
static CUresult counted_gpa_v2(const char *symbol, void **pfn, int version, cuuint64_t flags, int *status);

/* What cuGetProcAddress found for symbol, as the caller is to see it. */
static void hand_out(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
	if (!pfn || !*pfn)
		return;
	if (strcmp(symbol, "cuGetProcAddress") == 0) {
		/* The driver answers with _v2 from CUDA 12.0 on. */
		bool v2 = *pfn == (void *)next_gpa_v2 || (*pfn != (void *)next_gpa && version >= 12000);
		if (v2 && !next_gpa_v2)
			next_gpa_v2 = (gpa_v2_fn)*pfn;
		else if (!v2 && !next_gpa)
			next_gpa = (gpa_fn)*pfn;
		*pfn = v2 ? (void *)counted_gpa_v2 : (void *)counted_gpa;
		return;
	}
	*pfn = stub_for(symbol, flags, *pfn);
}

static CUresult counted_gpa(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
	pthread_once(&init_once, init);
	if (!next_gpa && libc_dlsym)
		next_gpa = (gpa_fn)libc_dlsym(RTLD_NEXT, "cuGetProcAddress");
	if (!next_gpa)
		return 500; /* CUDA_ERROR_NOT_FOUND */
	CUresult r = next_gpa(symbol, pfn, version, flags);
	if (r == 0 && symbol)
		hand_out(symbol, pfn, version, flags);
	return r;
}

static CUresult counted_gpa_v2(const char *symbol, void **pfn, int version, cuuint64_t flags, int *status)
{
	pthread_once(&init_once, init);
	if (!next_gpa_v2 && libc_dlsym)
		next_gpa_v2 = (gpa_v2_fn)libc_dlsym(RTLD_NEXT, "cuGetProcAddress_v2");
	if (!next_gpa_v2)
		return 500;
	CUresult r = next_gpa_v2(symbol, pfn, version, flags, status);
	if (r == 0 && symbol)
		hand_out(symbol, pfn, version, flags);
	return r;
}

EXPORT void *dlsym(void *handle, const char *name)
{
	pthread_once(&init_once, init);
	if (!next_dlsym)
		return NULL;
	void *r = next_dlsym(handle, name);
	if (!r || strncmp(name, "cuGetProcAddress", 16) != 0)
		return r;
	if (strcmp(name, "cuGetProcAddress") == 0) {
		if (!next_gpa)
			next_gpa = (gpa_fn)r;
		return (void *)counted_gpa;
	}
	if (strcmp(name, "cuGetProcAddress_v2") == 0) {
		if (!next_gpa_v2)
			next_gpa_v2 = (gpa_v2_fn)r;
		return (void *)counted_gpa_v2;
	}
	return r;
}

EXPORT void cucount_reset(void)
{
	for (int i = 0; i < CUCOUNT_STUBS; i++)
		__atomic_store_n(&cucount_calls[i], 0, __ATOMIC_RELAXED);
}

EXPORT int cucount_dump(const char *path)
{
	FILE *f = fopen(path, "we");
	if (!f)
		return -errno;
	pthread_mutex_lock(&table_lock);
	for (int i = 0; i < nstubs; i++) {
		uint64_t n = __atomic_load_n(&cucount_calls[i], __ATOMIC_RELAXED);
		if (n)
			fprintf(f, "%llu\t%s%s\t%s\t%s\n", (unsigned long long)n, info[i].name,
				info[i].ptsz ? "+ptsz" : "", info[i].owner,
				info[i].symbol[0] ? info[i].symbol : "-");
	}
	if (stubs_lacking)
		fprintf(f, "0\t(uncounted lookups: %d)\t-\t-\n", stubs_lacking);
	pthread_mutex_unlock(&table_lock);
	return fclose(f) == 0 ? 0 : -errno;
}
