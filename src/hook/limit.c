/* SPDX-License-Identifier: MIT */
/*
 * Accounting and caps. Every byte of device memory the process gets through
 * a wrapped call is charged to its device here, with one compare-and-swap:
 * no lock, so the allocation wrappers stay well under a microsecond.
 *
 * VRAM_MEMORY_LIMIT sets the cap: "20GiB" (bytes, units K/M/G/T, KiB..TiB,
 * KB..TB), "0.8" (a fraction of the device), or per device
 * "0=20GiB,1=0.5" (devices not named have no cap). A value that does not
 * parse leaves the process without a cap and says so once in the hook log;
 * the hello to vramd carries it too, so that vramd's status shows it.
 *
 * cuMemGetInfo_v2 and cuDeviceTotalMem_v2 report the cap, so frameworks
 * that size caches from free memory size them to it: total = min(cap,
 * physical), free = total - used, never more than the device really has
 * free. The context's own memory (VRAM_HOOK_CONTEXT_MEMORY, default 512 MiB,
 * the usual size on current GPUs) is charged once per context.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hook/hook.h"

struct vram_hook_usage vram_hook_usage[VRAM_HOOK_MAX_DEVICES];
int vram_hook_ndev;
_Atomic unsigned vram_hook_usage_seq;

static uint64_t context_bytes = 512ull << 20;
/* The setting that did not parse, for vramd's status; "" when it parsed. */
static char invalid_limit[128];
static _Atomic bool primary_charged[VRAM_HOOK_MAX_DEVICES];

static bool dev_ok(int dev)
{
	return dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES;
}

int vram_hook_charge(int dev, uint64_t bytes)
{
	if (!dev_ok(dev))
		return 0;
	struct vram_hook_usage *u = &vram_hook_usage[dev];
	uint64_t cap = u->cap;
	uint64_t cur = atomic_load_explicit(&u->used, memory_order_relaxed);
	do {
		if (cap && cur + bytes > cap)
			return -ENOMEM;
	} while (!atomic_compare_exchange_weak_explicit(&u->used, &cur, cur + bytes, memory_order_relaxed,
							  memory_order_relaxed));
	atomic_fetch_add_explicit(&vram_hook_usage_seq, 1, memory_order_relaxed);
	return 0;
}

void vram_hook_charge_force(int dev, uint64_t bytes)
{
	if (!dev_ok(dev))
		return;
	atomic_fetch_add_explicit(&vram_hook_usage[dev].used, bytes, memory_order_relaxed);
	atomic_fetch_add_explicit(&vram_hook_usage_seq, 1, memory_order_relaxed);
}

void vram_hook_uncharge(int dev, uint64_t bytes)
{
	if (!dev_ok(dev))
		return;
	atomic_fetch_sub_explicit(&vram_hook_usage[dev].used, bytes, memory_order_relaxed);
	atomic_fetch_add_explicit(&vram_hook_usage_seq, 1, memory_order_relaxed);
}

void vram_hook_nonmovable_add(int dev, uint64_t bytes)
{
	if (dev_ok(dev))
		atomic_fetch_add_explicit(&vram_hook_usage[dev].nonmovable, bytes, memory_order_relaxed);
}

void vram_hook_nonmovable_sub(int dev, uint64_t bytes)
{
	if (dev_ok(dev))
		atomic_fetch_sub_explicit(&vram_hook_usage[dev].nonmovable, bytes, memory_order_relaxed);
}

void vram_hook_context_created(int dev)
{
	vram_hook_charge_force(dev, context_bytes);
	vram_hook_nonmovable_add(dev, context_bytes);
}

void vram_hook_context_destroyed(int dev)
{
	vram_hook_uncharge(dev, context_bytes);
	vram_hook_nonmovable_sub(dev, context_bytes);
}

/* One cap: bytes, or a fraction when the value has a point and no unit. */
static int parse_cap(const char *s, uint64_t physical, uint64_t *ret_cap)
{
	const char *dot = strchr(s, '.');
	bool has_unit = strpbrk(s, "KkMmGgTtBb") != NULL;
	if (dot && !has_unit) {
		char *end;
		double f = strtod(s, &end);
		if (*end || !(f > 0.0 && f <= 1.0))
			return -EINVAL;
		*ret_cap = (uint64_t)(f * (double)physical);
		return 0;
	}
	uint64_t b;
	int r = vram_hook_parse_bytes(s, &b);
	if (r < 0)
		return r;
	if (b == 0)
		return -EINVAL;
	*ret_cap = b;
	return 0;
}

/* Parses the whole setting into caps[]; nothing is applied on error. */
static int parse_limit(const char *value, uint64_t caps[VRAM_HOOK_MAX_DEVICES])
{
	char buf[512];
	if (strlen(value) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, value);
	memset(caps, 0, sizeof(uint64_t) * VRAM_HOOK_MAX_DEVICES);
	if (!strchr(buf, '=')) {
		for (int d = 0; d < vram_hook_ndev; d++)
			if (parse_cap(buf, vram_hook_usage[d].physical, &caps[d]) < 0)
				return -EINVAL;
		return 0;
	}
	char *save = NULL;
	for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '=');
		if (!eq)
			return -EINVAL;
		*eq = '\0';
		char *end;
		long dev = strtol(item, &end, 10);
		if (end == item || *end || dev < 0 || dev >= VRAM_HOOK_MAX_DEVICES)
			return -EINVAL;
		if (parse_cap(eq + 1, vram_hook_usage[dev].physical, &caps[dev]) < 0)
			return -EINVAL;
	}
	return 0;
}

void vram_hook_limit_init(void)
{
	int count = 0;
	if (VRAM_CALL_REAL(cuDeviceGetCount, &count) != CUDA_SUCCESS)
		count = 0;
	vram_hook_ndev = count > VRAM_HOOK_MAX_DEVICES ? VRAM_HOOK_MAX_DEVICES : count;
	for (int d = 0; d < vram_hook_ndev; d++) {
		size_t total = 0;
		if (VRAM_CALL_REAL(cuDeviceTotalMem_v2, &total, d) == CUDA_SUCCESS)
			vram_hook_usage[d].physical = total;
	}

	const char *ctx = secure_getenv("VRAM_HOOK_CONTEXT_MEMORY");
	uint64_t b;
	if (ctx && *ctx) {
		if (vram_hook_parse_bytes(ctx, &b) == 0)
			context_bytes = b;
		else
			vram_hook_log(VRAM_HOOK_LOG_WARN, "Ignoring VRAM_HOOK_CONTEXT_MEMORY=\"%s\": not a size", ctx);
	}

	const char *limit = secure_getenv("VRAM_MEMORY_LIMIT");
	if (!limit || !*limit)
		return;
	uint64_t caps[VRAM_HOOK_MAX_DEVICES];
	if (parse_limit(limit, caps) < 0) {
		vram_hook_log(VRAM_HOOK_LOG_ERROR,
			      "Ignoring VRAM_MEMORY_LIMIT=\"%s\": expected bytes (20GiB), a fraction (0.8) "
			      "or a per-device list (0=20GiB,1=0.5); running without a cap", limit);
		snprintf(invalid_limit, sizeof(invalid_limit), "%s", limit);
		return;
	}
	for (int d = 0; d < VRAM_HOOK_MAX_DEVICES; d++) {
		vram_hook_usage[d].cap = caps[d];
		if (caps[d])
			vram_hook_log(VRAM_HOOK_LOG_INFO, "device %d: cap %llu bytes", d, (unsigned long long)caps[d]);
	}
}

const char *vram_hook_limit_invalid_text(void)
{
	return invalid_limit[0] ? invalid_limit : NULL;
}

/* --------------------------------------------------------------- wrappers */

VRAM_HOOK_EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
	size_t f = 0, t = 0;
	CUresult r = VRAM_CALL_REAL(cuMemGetInfo_v2, &f, &t);
	if (r != CUDA_SUCCESS)
		return r;
	CUdevice dev = -1;
	if (VRAM_CALL_REAL(cuCtxGetDevice, &dev) == CUDA_SUCCESS && dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES &&
	    vram_hook_usage[dev].cap) {
		uint64_t cap = vram_hook_usage[dev].cap;
		uint64_t used = atomic_load_explicit(&vram_hook_usage[dev].used, memory_order_relaxed);
		uint64_t ct = cap < t ? cap : t;
		uint64_t cf = ct > used ? ct - used : 0;
		/* Never promise more than the device really has free. */
		if (cf > f)
			cf = f;
		t = ct;
		f = cf;
	}
	if (free_bytes)
		*free_bytes = f;
	if (total)
		*total = t;
	return CUDA_SUCCESS;
}

VRAM_HOOK_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
	size_t t = 0;
	CUresult r = VRAM_CALL_REAL(cuDeviceTotalMem_v2, &t, dev);
	if (r != CUDA_SUCCESS || !bytes)
		return bytes ? r : CUDA_ERROR_INVALID_VALUE;
	if (dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES && vram_hook_usage[dev].cap && vram_hook_usage[dev].cap < t)
		t = vram_hook_usage[dev].cap;
	*bytes = t;
	return CUDA_SUCCESS;
}

VRAM_HOOK_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
	CUresult r = VRAM_CALL_REAL(cuDevicePrimaryCtxRetain, pctx, dev);
	if (r == CUDA_SUCCESS && dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES &&
	    !atomic_exchange(&primary_charged[dev], true))
		vram_hook_context_created(dev);
	return r;
}

/* Contexts created with cuCtxCreate, so that their destruction uncharges. */
#define MAX_CREATED 64
static pthread_mutex_t created_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { CUcontext ctx; int dev; } created[MAX_CREATED];

static void remember_created(CUcontext ctx, int dev)
{
	vram_hook_context_created(dev);
	pthread_mutex_lock(&created_lock);
	for (int i = 0; i < MAX_CREATED; i++) {
		if (!created[i].ctx) {
			created[i].ctx = ctx;
			created[i].dev = dev;
			break;
		}
	}
	pthread_mutex_unlock(&created_lock);
}

VRAM_HOOK_EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
	CUresult r = VRAM_CALL_REAL(cuCtxCreate_v2, pctx, flags, dev);
	if (r == CUDA_SUCCESS && pctx)
		remember_created(*pctx, dev);
	return r;
}

VRAM_HOOK_EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, CUctxCreateParams *params, unsigned int flags,
					 CUdevice dev)
{
	CUresult r = VRAM_CALL_REAL(cuCtxCreate_v4, pctx, params, flags, dev);
	if (r == CUDA_SUCCESS && pctx)
		remember_created(*pctx, dev);
	return r;
}

VRAM_HOOK_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
	CUresult r = VRAM_CALL_REAL(cuCtxDestroy_v2, ctx);
	if (r != CUDA_SUCCESS || !ctx)
		return r;
	pthread_mutex_lock(&created_lock);
	for (int i = 0; i < MAX_CREATED; i++) {
		if (created[i].ctx == ctx) {
			vram_hook_context_destroyed(created[i].dev);
			created[i].ctx = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&created_lock);
	return r;
}

void vram_hook_contexts_synchronize(void)
{
	pthread_mutex_lock(&created_lock);
	for (int i = 0; i < MAX_CREATED; i++) {
		if (!created[i].ctx)
			continue;
		if (VRAM_CALL_REAL(cuCtxPushCurrent_v2, created[i].ctx) == CUDA_SUCCESS) {
			VRAM_CALL_REAL(cuCtxSynchronize);
			VRAM_CALL_REAL(cuCtxPopCurrent_v2, NULL);
		}
	}
	pthread_mutex_unlock(&created_lock);
}
