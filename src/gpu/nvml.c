/* SPDX-License-Identifier: MIT */
/*
 * The NVML backend. libnvidia-ml is opened with dlopen at run time so that
 * vramd builds and starts on machines without the driver, and every entry
 * point is looked up with its older names as fallbacks (`nvmlInit_v2` →
 * `nvmlInit`), because the daemon meets drivers of many ages. Only the few
 * NVML types we use are declared here, with the layouts of NVML's public
 * header; the per-process list has a different struct per function version
 * and each version gets its own.
 *
 * Required: init, count, handle by index, memory info. Everything else is
 * optional and reads as "not available" (-1, false, "") when missing.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu.h"

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_VALUE_NOT_AVAILABLE (~0ULL)
#define NVML_PROCS_MAX 4096 /* bound on what one process query may allocate */

typedef struct {
	unsigned long long total; /* bytes */
	unsigned long long free;  /* bytes */
	unsigned long long used;  /* bytes */
} nvmlMemory_t;

typedef struct {
	unsigned int gpu;    /* percent */
	unsigned int memory; /* percent */
} nvmlUtilization_t;

/* nvmlDeviceGetPciInfo_v2/_v3 */
typedef struct {
	char busIdLegacy[16];
	unsigned int domain;
	unsigned int bus;
	unsigned int device;
	unsigned int pciDeviceId;
	unsigned int pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;

/* nvmlDeviceGetPciInfo (the first version) */
typedef struct {
	char busId[16];
	unsigned int domain;
	unsigned int bus;
	unsigned int device;
	unsigned int pciDeviceId;
	unsigned int pciSubSystemId;
	unsigned int reserved[4];
} nvmlPciInfo_v1_t;

/* nvmlDeviceGetComputeRunningProcesses (v1) */
typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory; /* bytes, or NVML_VALUE_NOT_AVAILABLE */
} nvmlProcessInfo_v1_t;

/* nvmlDeviceGetComputeRunningProcesses_v2 and _v3 share this layout. */
typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory; /* bytes, or NVML_VALUE_NOT_AVAILABLE */
	unsigned int gpuInstanceId;
	unsigned int computeInstanceId;
} nvmlProcessInfo_v2_t;

struct nvml {
	void *lib; /* dlopen handle */
	unsigned count;
	nvmlReturn_t (*init)(void);
	nvmlReturn_t (*shutdown)(void);
	const char *(*error_string)(nvmlReturn_t);
	nvmlReturn_t (*get_count)(unsigned int *);
	nvmlReturn_t (*get_handle)(unsigned int, nvmlDevice_t *);
	nvmlReturn_t (*get_name)(nvmlDevice_t, char *, unsigned int);
	nvmlReturn_t (*get_uuid)(nvmlDevice_t, char *, unsigned int);
	nvmlReturn_t (*get_pci)(nvmlDevice_t, void *);
	bool pci_v1; /* get_pci takes nvmlPciInfo_v1_t */
	nvmlReturn_t (*get_memory)(nvmlDevice_t, nvmlMemory_t *);
	nvmlReturn_t (*get_util)(nvmlDevice_t, nvmlUtilization_t *);
	nvmlReturn_t (*get_mig_mode)(nvmlDevice_t, unsigned int *, unsigned int *);
	nvmlReturn_t (*get_procs)(nvmlDevice_t, unsigned int *, void *);
	size_t proc_size; /* sizeof the struct get_procs fills */
};

/* The first of names that the library exports, or NULL. */
static void *sym_first(void *lib, const char *const *names)
{
	for (size_t i = 0; names[i]; i++) {
		void *f = dlsym(lib, names[i]);
		if (f)
			return f;
	}
	return NULL;
}

#define SYM(p, field, ...) \
	(*(void **)&(p)->field = sym_first((p)->lib, (const char *const[]){ __VA_ARGS__, NULL }))

static const char *nvml_strerror(const struct nvml *n, nvmlReturn_t rc, char *buf, size_t size)
{
	const char *s = n->error_string ? n->error_string(rc) : NULL;
	if (s && *s)
		snprintf(buf, size, "%s", s);
	else
		snprintf(buf, size, "NVML error %d", rc);
	return buf;
}

static void nvml_close(void *ctx)
{
	struct nvml *n = ctx;
	if (!n)
		return;
	if (n->shutdown)
		n->shutdown();
	if (n->lib)
		dlclose(n->lib);
	free(n);
}

static int nvml_open(const struct vram_config *cfg, void **ret_ctx, char *why, size_t why_size)
{
	struct nvml *n = calloc(1, sizeof(*n));
	if (!n) {
		snprintf(why, why_size, "out of memory");
		return -ENOMEM;
	}
	const char *path = secure_getenv(VRAM_NVML_LIBRARY_ENV);
	if (path && *path) {
		n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (!n->lib)
			snprintf(why, why_size, "%s", dlerror());
	} else {
		n->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
		if (!n->lib) {
			/* the first error says the most: the versioned name is what drivers install */
			snprintf(why, why_size, "%s", dlerror());
			n->lib = dlopen("libnvidia-ml.so", RTLD_NOW | RTLD_LOCAL);
		}
	}
	if (!n->lib) {
		free(n);
		return -ENOENT;
	}

	SYM(n, init, "nvmlInit_v2", "nvmlInit");
	SYM(n, get_count, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
	SYM(n, get_handle, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
	SYM(n, get_memory, "nvmlDeviceGetMemoryInfo");
	const char *missing = !n->init ? "nvmlInit" : !n->get_count ? "nvmlDeviceGetCount" :
			      !n->get_handle ? "nvmlDeviceGetHandleByIndex" :
			      !n->get_memory ? "nvmlDeviceGetMemoryInfo" : NULL;
	if (missing) {
		snprintf(why, why_size, "the NVML library lacks %s", missing);
		dlclose(n->lib);
		free(n);
		return -ENOSYS;
	}
	SYM(n, shutdown, "nvmlShutdown");
	SYM(n, error_string, "nvmlErrorString");
	SYM(n, get_name, "nvmlDeviceGetName");
	SYM(n, get_uuid, "nvmlDeviceGetUUID");
	SYM(n, get_pci, "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2");
	if (!n->get_pci) {
		SYM(n, get_pci, "nvmlDeviceGetPciInfo");
		n->pci_v1 = n->get_pci != NULL;
	}
	SYM(n, get_util, "nvmlDeviceGetUtilizationRates");
	SYM(n, get_mig_mode, "nvmlDeviceGetMigMode");
	SYM(n, get_procs, "nvmlDeviceGetComputeRunningProcesses_v3",
	    "nvmlDeviceGetComputeRunningProcesses_v2");
	n->proc_size = sizeof(nvmlProcessInfo_v2_t);
	if (!n->get_procs) {
		SYM(n, get_procs, "nvmlDeviceGetComputeRunningProcesses");
		n->proc_size = sizeof(nvmlProcessInfo_v1_t);
	}

	char err[128];
	nvmlReturn_t rc = n->init();
	if (rc != NVML_SUCCESS) {
		snprintf(why, why_size, "nvmlInit: %s", nvml_strerror(n, rc, err, sizeof(err)));
		n->shutdown = NULL; /* not initialised: nothing to shut down */
		nvml_close(n);
		return -EIO;
	}
	rc = n->get_count(&n->count);
	if (rc != NVML_SUCCESS) {
		snprintf(why, why_size, "nvmlDeviceGetCount: %s", nvml_strerror(n, rc, err, sizeof(err)));
		nvml_close(n);
		return -EIO;
	}
	if (n->count > VRAM_GPU_MAX)
		n->count = VRAM_GPU_MAX;
	*ret_ctx = n;
	return 0;
}

static unsigned nvml_count(void *ctx)
{
	return ((struct nvml *)ctx)->count;
}

static void query_procs(struct nvml *n, nvmlDevice_t dev, struct vram_gpu_info *info)
{
	info->procs_valid = false;
	info->n_procs = 0;
	if (!n->get_procs)
		return;
	unsigned int cap = 64;
	void *buf = NULL;
	nvmlReturn_t rc;
	/* Processes come and go between the two calls: try a few times. */
	for (int attempt = 0; attempt < 3; attempt++) {
		void *nb = realloc(buf, (size_t)cap * n->proc_size);
		if (!nb)
			goto out_free;
		buf = nb;
		unsigned int count = cap;
		rc = n->get_procs(dev, &count, buf);
		if (rc == NVML_SUCCESS) {
			if (count > cap)
				count = cap;
			for (unsigned int i = 0; i < count && info->n_procs < VRAM_GPU_MAX_PROCS; i++) {
				const char *e = (const char *)buf + (size_t)i * n->proc_size;
				unsigned int pid;
				unsigned long long used;
				/* pid and usedGpuMemory sit at the same offsets in v1 and v2 */
				memcpy(&pid, e + offsetof(nvmlProcessInfo_v1_t, pid), sizeof(pid));
				memcpy(&used, e + offsetof(nvmlProcessInfo_v1_t, usedGpuMemory), sizeof(used));
				info->procs[info->n_procs++] = (struct vram_gpu_proc){
					.pid = (pid_t)pid,
					.used_bytes = used == NVML_VALUE_NOT_AVAILABLE ? UINT64_MAX : used,
				};
			}
			info->procs_valid = true;
			goto out_free;
		}
		if (rc != NVML_ERROR_INSUFFICIENT_SIZE || count <= cap)
			goto out_free;
		if (count > NVML_PROCS_MAX)
			goto out_free;
		cap = count + 8;
	}
out_free:
	free(buf);
}

static int nvml_query(void *ctx, unsigned index, struct vram_gpu_info *ret_info)
{
	struct nvml *n = ctx;
	if (index >= n->count)
		return -ENODEV;
	nvmlDevice_t dev;
	if (n->get_handle(index, &dev) != NVML_SUCCESS)
		return -EIO;
	nvmlMemory_t mem;
	if (n->get_memory(dev, &mem) != NVML_SUCCESS)
		return -EIO;

	struct vram_gpu_info *info = ret_info;
	memset(info, 0, sizeof(*info));
	info->index = index;
	info->mem_total = mem.total;
	info->mem_used = mem.used;
	info->mem_free = mem.free;
	if (n->get_name && n->get_name(dev, info->name, sizeof(info->name)) != NVML_SUCCESS)
		info->name[0] = '\0';
	if (n->get_uuid && n->get_uuid(dev, info->uuid, sizeof(info->uuid)) != NVML_SUCCESS)
		info->uuid[0] = '\0';
	if (n->get_pci && !n->pci_v1) {
		nvmlPciInfo_t pci;
		if (n->get_pci(dev, &pci) == NVML_SUCCESS)
			snprintf(info->pci_bus_id, sizeof(info->pci_bus_id), "%.*s",
				 (int)sizeof(pci.busId), pci.busId);
	} else if (n->get_pci) {
		nvmlPciInfo_v1_t pci;
		if (n->get_pci(dev, &pci) == NVML_SUCCESS)
			snprintf(info->pci_bus_id, sizeof(info->pci_bus_id), "%08X:%02X:%02X.0",
				 pci.domain, pci.bus, pci.device);
	}
	info->util_percent = -1;
	nvmlUtilization_t util;
	if (n->get_util && n->get_util(dev, &util) == NVML_SUCCESS && util.gpu <= 100)
		info->util_percent = (int)util.gpu;
	info->mig_mode = -1;
	unsigned int mig_current, mig_pending;
	if (n->get_mig_mode && n->get_mig_mode(dev, &mig_current, &mig_pending) == NVML_SUCCESS)
		info->mig_mode = mig_current ? 1 : 0;
	query_procs(n, dev, info);
	return 0;
}

const struct vram_gpu_backend vram_gpu_backend_nvml = {
	.name = "nvml",
	.open = nvml_open,
	.close = nvml_close,
	.count = nvml_count,
	.query = nvml_query,
	.sim_charge = NULL,
};
