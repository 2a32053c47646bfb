/* SPDX-License-Identifier: MIT */
/*
 * How libvram.so gets between a program and the CUDA driver.
 *
 * Three doors lead into the driver and all three are watched:
 *  - the exported cu* symbols: the preloaded library comes first in symbol
 *    lookup, so a program linked against libcuda calls our wrappers;
 *  - dlsym: a program that dlopens libcuda and looks functions up gets our
 *    wrapper when the lookup returned exactly the driver's function of that
 *    name;
 *  - cuGetProcAddress / cuGetProcAddress_v2 (how libcudart, and so PyTorch,
 *    reach the driver): the real driver answers first, with the caller's
 *    cudaVersion and flags, and the pointer it returns is swapped for our
 *    wrapper only if it is identical to the driver's exported function we
 *    wrap. No suffix is ever guessed, so a per-thread-stream (_ptsz) or a
 *    versioned (_v2) answer maps to the wrapper with the same ABI, and
 *    anything we do not know (cuGetExportTable included) passes untouched.
 *
 * This file also holds the wrappers that only pass through the gate
 * (copies, memsets, launches) and the log, which writes to the file named by
 * VRAM_HOOK_LOG and nowhere else.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "hook/hook.h"

void *vram_hook_real_fn[VRAM_HOOK_NSYMS];
_Atomic bool vram_hook_resolved;

static const char *const sym_names[VRAM_HOOK_NSYMS] = {
#define VRAM_HOOK_X(n) #n,
	VRAM_HOOK_WRAPPED(VRAM_HOOK_X)
	"",
	VRAM_HOOK_CALLED(VRAM_HOOK_X)
#undef VRAM_HOOK_X
};

static void *const wrapper_fn[VRAM_HOOK_NWRAPPED] = {
#define VRAM_HOOK_X(n) (void *)&n,
	VRAM_HOOK_WRAPPED(VRAM_HOOK_X)
#undef VRAM_HOOK_X
};

/* dlsym runs before everything else in the process, sanitizer runtimes
 * included (they look up their own targets with it), so its path is never
 * instrumented. */
#define VRAM_HOOK_EARLY __attribute__((no_sanitize_address, no_sanitize_undefined))

typedef void *(*dlsym_fn)(void *, const char *);
static dlsym_fn real_dlsym;
static pthread_once_t real_dlsym_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t resolve_lock = PTHREAD_MUTEX_INITIALIZER;
static bool resolve_failed;
static VRAM_HOOK_TLS bool resolving; /* the driver's constructors may call dlsym */

VRAM_HOOK_EARLY static void find_real_dlsym(void)
{
	static const char *const versions[] = { "GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17", "GLIBC_2.0" };
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]) && !real_dlsym; i++)
		real_dlsym = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", versions[i]);
}

/* Stands in for an entry point the driver lacks; every driver function
 * returns a CUresult in the same register whatever its arguments. */
static CUresult missing_entry_point(void)
{
	return CUDA_ERROR_NOT_FOUND;
}

bool vram_hook_resolve_slow(void)
{
	if (resolving)
		return false;
	pthread_once(&real_dlsym_once, find_real_dlsym);
	pthread_mutex_lock(&resolve_lock);
	if (atomic_load(&vram_hook_resolved) || resolve_failed)
		goto out_unlock;
	resolving = true;
	const char *path = secure_getenv("VRAM_HOOK_CUDA_LIBRARY");
	void *lib = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib || !real_dlsym) {
		resolve_failed = true;
		resolving = false;
		vram_hook_log(VRAM_HOOK_LOG_ERROR, "Failed to load the CUDA driver: %s",
			      lib ? "no dlsym" : dlerror());
		goto out_unlock;
	}
	for (int i = 0; i < VRAM_HOOK_NSYMS; i++) {
		if (!sym_names[i][0])
			continue;
		void *fn = real_dlsym(lib, sym_names[i]);
		/* A driver without this entry point: the wrapper answers
		 * "not found" instead of calling NULL. Gated wrappers read the
		 * table without the lock. */
		__atomic_store_n(&vram_hook_real_fn[i], fn ? fn : (void *)missing_entry_point, __ATOMIC_RELEASE);
	}
	resolving = false;
	atomic_store_explicit(&vram_hook_resolved, true, memory_order_release);
out_unlock:
	pthread_mutex_unlock(&resolve_lock);
	return atomic_load(&vram_hook_resolved);
}

static int wrapped_index(const char *name)
{
	for (int i = 0; i < VRAM_HOOK_NWRAPPED; i++)
		if (strcmp(sym_names[i], name) == 0)
			return i;
	return -1;
}

/* Our wrapper for exactly this driver function, or the function itself. */
static void *substitute(void *fn)
{
	if (!fn)
		return fn;
	for (int i = 0; i < VRAM_HOOK_NWRAPPED; i++)
		if (vram_hook_real_fn[i] == fn)
			return wrapper_fn[i];
	return fn;
}

/*
 * dlsym(RTLD_NEXT, ...) must search after the object that called dlsym, not
 * after us. For an object loaded before us (the program, a sanitizer
 * runtime preloaded first) the answer is what follows us, or our own
 * definition; for one loaded after us, walk the link maps that follow it.
 */
VRAM_HOOK_EARLY static void *next_after(const void *caller, const char *name)
{
	Dl_info info;
	struct link_map *lm = NULL, *self = NULL;
	if (!dladdr1(caller, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm ||
	    !dladdr1((void *)&next_after, &info, (void **)&self, RTLD_DL_LINKMAP) || !self)
		return real_dlsym(RTLD_NEXT, name);
	bool before_us = false;
	for (struct link_map *l = lm->l_next; l; l = l->l_next)
		if (l == self)
			before_us = true;
	if (before_us) {
		void *own = real_dlsym(RTLD_DEFAULT, name);
		struct link_map *owner = NULL;
		if (own && dladdr1(own, &info, (void **)&owner, RTLD_DL_LINKMAP) && owner == self)
			return own;
		return real_dlsym(RTLD_NEXT, name);
	}
	/* A link map is not a dlsym handle: reopen each object to get one. */
	for (lm = lm->l_next; lm; lm = lm->l_next) {
		if (!lm->l_name || !lm->l_name[0])
			continue;
		void *h = dlopen(lm->l_name, RTLD_LAZY | RTLD_NOLOAD);
		if (!h)
			continue;
		void *s = real_dlsym(h, name);
		struct link_map *owner = NULL;
		bool found = s && dladdr1(s, &info, (void **)&owner, RTLD_DL_LINKMAP) && owner == lm;
		dlclose(h);
		if (found)
			return s;
	}
	return NULL;
}

VRAM_HOOK_EARLY VRAM_HOOK_EXPORT void *dlsym(void *handle, const char *name)
{
	if (!real_dlsym)
		find_real_dlsym(); /* idempotent; no lock this early */
	if (!real_dlsym)
		return NULL;
	void *r = handle == RTLD_NEXT ? next_after(__builtin_return_address(0), name)
				      : real_dlsym(handle, name);
	if (!r || name[0] != 'c' || name[1] != 'u' || resolving)
		return r;
	if (!vram_hook_resolve())
		return r;
	int i = wrapped_index(name);
	if (i >= 0 && vram_hook_real_fn[i] == r)
		return wrapper_fn[i];
	return r;
}

VRAM_HOOK_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags)
{
	CUresult r = VRAM_CALL_REAL(cuGetProcAddress, symbol, pfn, cudaVersion, flags);
	if (r == CUDA_SUCCESS && pfn)
		*pfn = substitute(*pfn);
	return r;
}

VRAM_HOOK_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
					      CUdriverProcAddressQueryResult *symbolStatus)
{
	CUresult r = VRAM_CALL_REAL(cuGetProcAddress_v2, symbol, pfn, cudaVersion, flags, symbolStatus);
	if (r == CUDA_SUCCESS && pfn)
		*pfn = substitute(*pfn);
	return r;
}

static pthread_once_t started_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void)
{
	vram_hook_suspend_atfork_prepare();
}

static void atfork_parent(void)
{
	vram_hook_suspend_atfork_parent();
}

static void atfork_child(void)
{
	vram_hook_suspend_atfork_child();
	vram_hook_chan_atfork_child();
	vram_hook_ipc_atfork_child();
}

static void start_after_init(void)
{
	vram_hook_limit_init();
	vram_hook_gate_init(); /* before the control thread, so before any offload */
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	vram_hook_chan_start();
}

VRAM_HOOK_EXPORT CUresult cuInit(unsigned int flags)
{
	CUresult r = VRAM_CALL_REAL(cuInit, flags);
	if (r == CUDA_SUCCESS)
		pthread_once(&started_once, start_after_init);
	return r;
}

/* ------------------------------------------------- gated pass-through */

/*
 * The table entry is NULL exactly until the driver is resolved (a missing
 * entry point gets missing_entry_point), so one load of it replaces the
 * "resolved" flag on the hot path.
 */
#define VRAM_GATED(name, params, args)                                         \
	VRAM_HOOK_EXPORT CUresult name params                                  \
	{                                                                      \
		__typeof__(&name) fn_ = (__typeof__(&name))__atomic_load_n(    \
			&vram_hook_real_fn[VRAM_HOOK_SYM_##name], __ATOMIC_ACQUIRE); \
		if (vram_hook_unlikely(!fn_)) {                                \
			if (!vram_hook_resolve() || !VRAM_REAL(name))          \
				return CUDA_ERROR_NOT_FOUND;                   \
			fn_ = VRAM_REAL(name);                                 \
		}                                                              \
		struct vram_hook_gate_slot *gate_ = vram_hook_gate_enter();    \
		CUresult r_ = fn_ args;                                        \
		vram_hook_gate_leave(gate_);                                   \
		return r_;                                                     \
	}

#define P_CPY (CUdeviceptr dst, CUdeviceptr src, size_t n)
#define A_CPY (dst, src, n)
#define P_CPYA (CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s)
#define A_CPYA (dst, src, n, s)
VRAM_GATED(cuMemcpy, P_CPY, A_CPY)
VRAM_GATED(cuMemcpy_ptds, P_CPY, A_CPY)
VRAM_GATED(cuMemcpyAsync, P_CPYA, A_CPYA)
VRAM_GATED(cuMemcpyAsync_ptsz, P_CPYA, A_CPYA)
VRAM_GATED(cuMemcpyDtoD_v2, P_CPY, A_CPY)
VRAM_GATED(cuMemcpyDtoD_v2_ptds, P_CPY, A_CPY)
VRAM_GATED(cuMemcpyDtoDAsync_v2, P_CPYA, A_CPYA)
VRAM_GATED(cuMemcpyDtoDAsync_v2_ptsz, P_CPYA, A_CPYA)
VRAM_GATED(cuMemcpyHtoD_v2, (CUdeviceptr dst, const void *src, size_t n), A_CPY)
VRAM_GATED(cuMemcpyHtoD_v2_ptds, (CUdeviceptr dst, const void *src, size_t n), A_CPY)
VRAM_GATED(cuMemcpyHtoDAsync_v2, (CUdeviceptr dst, const void *src, size_t n, CUstream s), A_CPYA)
VRAM_GATED(cuMemcpyHtoDAsync_v2_ptsz, (CUdeviceptr dst, const void *src, size_t n, CUstream s), A_CPYA)
VRAM_GATED(cuMemcpyDtoH_v2, (void *dst, CUdeviceptr src, size_t n), A_CPY)
VRAM_GATED(cuMemcpyDtoH_v2_ptds, (void *dst, CUdeviceptr src, size_t n), A_CPY)
VRAM_GATED(cuMemcpyDtoHAsync_v2, (void *dst, CUdeviceptr src, size_t n, CUstream s), A_CPYA)
VRAM_GATED(cuMemcpyDtoHAsync_v2_ptsz, (void *dst, CUdeviceptr src, size_t n, CUstream s), A_CPYA)
VRAM_GATED(cuMemcpy2D_v2, (const CUDA_MEMCPY2D *c), (c))
VRAM_GATED(cuMemcpy2D_v2_ptds, (const CUDA_MEMCPY2D *c), (c))
VRAM_GATED(cuMemcpy2DAsync_v2, (const CUDA_MEMCPY2D *c, CUstream s), (c, s))
VRAM_GATED(cuMemcpy2DAsync_v2_ptsz, (const CUDA_MEMCPY2D *c, CUstream s), (c, s))
VRAM_GATED(cuMemcpyPeer, (CUdeviceptr dst, CUcontext dc, CUdeviceptr src, CUcontext sc, size_t n),
	   (dst, dc, src, sc, n))
VRAM_GATED(cuMemcpyPeerAsync, (CUdeviceptr dst, CUcontext dc, CUdeviceptr src, CUcontext sc, size_t n, CUstream s),
	   (dst, dc, src, sc, n, s))
VRAM_GATED(cuMemsetD8_v2, (CUdeviceptr d, unsigned char v, size_t n), (d, v, n))
VRAM_GATED(cuMemsetD8_v2_ptds, (CUdeviceptr d, unsigned char v, size_t n), (d, v, n))
VRAM_GATED(cuMemsetD32_v2, (CUdeviceptr d, unsigned int v, size_t n), (d, v, n))
VRAM_GATED(cuMemsetD32_v2_ptds, (CUdeviceptr d, unsigned int v, size_t n), (d, v, n))
VRAM_GATED(cuMemsetD8Async, (CUdeviceptr d, unsigned char v, size_t n, CUstream s), (d, v, n, s))
VRAM_GATED(cuMemsetD8Async_ptsz, (CUdeviceptr d, unsigned char v, size_t n, CUstream s), (d, v, n, s))
VRAM_GATED(cuMemsetD32Async, (CUdeviceptr d, unsigned int v, size_t n, CUstream s), (d, v, n, s))
VRAM_GATED(cuMemsetD32Async_ptsz, (CUdeviceptr d, unsigned int v, size_t n, CUstream s), (d, v, n, s))

#define P_LAUNCH (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, \
		  unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params, void **extra)
#define A_LAUNCH (f, gx, gy, gz, bx, by, bz, shmem, s, params, extra)
VRAM_GATED(cuLaunchKernel, P_LAUNCH, A_LAUNCH)
VRAM_GATED(cuLaunchKernel_ptsz, P_LAUNCH, A_LAUNCH)
VRAM_GATED(cuLaunchKernelEx, (const CUlaunchConfig *c, CUfunction f, void **params, void **extra),
	   (c, f, params, extra))
VRAM_GATED(cuLaunchKernelEx_ptsz, (const CUlaunchConfig *c, CUfunction f, void **params, void **extra),
	   (c, f, params, extra))
#define P_COOP (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, \
		unsigned int by, unsigned int bz, unsigned int shmem, CUstream s, void **params)
#define A_COOP (f, gx, gy, gz, bx, by, bz, shmem, s, params)
VRAM_GATED(cuLaunchCooperativeKernel, P_COOP, A_COOP)
VRAM_GATED(cuLaunchCooperativeKernel_ptsz, P_COOP, A_COOP)
VRAM_GATED(cuGraphLaunch, (CUgraphExec g, CUstream s), (g, s))
VRAM_GATED(cuGraphLaunch_ptsz, (CUgraphExec g, CUstream s), (g, s))

/* ------------------------------------------------------------------ log */

static int log_fd = -1;
static enum vram_hook_log_level log_level = VRAM_HOOK_LOG_INFO;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_open(void)
{
	const char *lvl = secure_getenv("VRAM_HOOK_LOG_LEVEL");
	if (lvl) {
		if (!strcmp(lvl, "error"))
			log_level = VRAM_HOOK_LOG_ERROR;
		else if (!strcmp(lvl, "warn"))
			log_level = VRAM_HOOK_LOG_WARN;
		else if (!strcmp(lvl, "debug"))
			log_level = VRAM_HOOK_LOG_DEBUG;
	}
	const char *path = secure_getenv("VRAM_HOOK_LOG");
	if (path && *path)
		log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

void vram_hook_log(enum vram_hook_log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	pthread_once(&log_once, log_open);
	if (log_fd < 0 || level > log_level)
		return;
	char line[768];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int n = snprintf(line, sizeof(line), "%lld.%03ld libvram[%d] %s: ", (long long)ts.tv_sec,
			 ts.tv_nsec / 1000000, (int)getpid(), names[level]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	ssize_t w = write(log_fd, line, len);
	(void)w;
}

void vram_hook_textf(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	(void)vsnprintf(out, cap, fmt, ap);
	va_end(ap);
}

int vram_hook_parse_bytes(const char *s, uint64_t *ret_bytes)
{
	if (!s)
		return -EINVAL;
	while (*s == ' ')
		s++;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	static const struct { const char *suffix; double mul; } units[] = {
		{ "", 1 }, { "B", 1 },
		{ "K", 1024.0 }, { "KiB", 1024.0 }, { "KB", 1e3 },
		{ "M", 1048576.0 }, { "MiB", 1048576.0 }, { "MB", 1e6 },
		{ "G", 1073741824.0 }, { "GiB", 1073741824.0 }, { "GB", 1e9 },
		{ "T", 1099511627776.0 }, { "TiB", 1099511627776.0 }, { "TB", 1e12 },
	};
	size_t ulen = strlen(end);
	while (ulen && end[ulen - 1] == ' ')
		ulen--;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strlen(units[i].suffix) == ulen && strncasecmp(end, units[i].suffix, ulen) == 0) {
			double b = v * units[i].mul;
			if (b >= 18446744073709551615.0)
				return -ERANGE;
			*ret_bytes = (uint64_t)b;
			return 0;
		}
	}
	return -EINVAL;
}
