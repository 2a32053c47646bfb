/* SPDX-License-Identifier: MIT */
/*
 * A stand-in for libnvidia-ml.so.1 with two GPUs, for testing the nvml
 * backend's dlopen/dlsym path, fallbacks and struct layouts on machines
 * without a GPU. Built twice (see meson.build): with the current entry
 * points, and with -DFAKENVML_V1 with only the first versions.
 *
 * GPU0 "Fake GPU 80GB": 80GiB, 3.5GiB used, utilization 37%, MIG off,
 *      processes 1234 (1GiB) and 5678 (2GiB).
 * GPU1 "Fake GPU 40GB": 40GiB, 0.5GiB used, utilization not supported,
 *      MIG on, process 4321 whose memory NVML cannot tell.
 * Environment, read on every call so that one process can test several cases:
 *   FAKENVML_GPUS=N       show N GPUs (0..2, default 2)
 *   FAKENVML_INIT_FAIL=1  nvmlInit fails with "Driver Not Loaded"
 *   FAKENVML_PROCS=N      GPU0 shows N processes (pid 1000+i, i MiB each)
 */
#include <stdlib.h>
#include <string.h>

#define GiB (1ULL << 30)
#define MiB (1ULL << 20)
#define EXPORT __attribute__((visibility("default")))

typedef int nvmlReturn_t;
typedef struct fake_device *nvmlDevice_t;

enum {
	NVML_SUCCESS = 0,
	NVML_ERROR_UNINITIALIZED = 1,
	NVML_ERROR_INVALID_ARGUMENT = 2,
	NVML_ERROR_NOT_SUPPORTED = 3,
	NVML_ERROR_INSUFFICIENT_SIZE = 7,
	NVML_ERROR_DRIVER_NOT_LOADED = 9,
};

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
	char busIdLegacy[16];
	unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;
typedef struct {
	char busId[16];
	unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
	unsigned int reserved0, reserved1, reserved2, reserved3;
} nvmlPciInfo_v1_t;
typedef struct { unsigned int pid; unsigned long long usedGpuMemory; } nvmlProcessInfo_v1_t;
typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

struct fake_proc {
	unsigned int pid;
	unsigned long long used;
};

struct fake_device {
	const char *name, *uuid;
	unsigned int bus;
	unsigned long long total, used;
	int util; /* -1: not supported */
	unsigned int mig;
	unsigned int n_procs;
	struct fake_proc procs[2];
};

static struct fake_device devices[2] = {
	{ "Fake GPU 80GB", "GPU-fa4e0000-0000-0000-0000-000000000000", 0x17, 80 * GiB,
	  3 * GiB + 512 * MiB, 37, 0, 2, { { 1234, 1 * GiB }, { 5678, 2 * GiB } } },
	{ "Fake GPU 40GB", "GPU-fa4e0001-0000-0000-0000-000000000000", 0x65, 40 * GiB,
	  512 * MiB, -1, 1, 1, { { 4321, ~0ULL } } },
};

static int initialised;

static unsigned env_uint(const char *name, unsigned dflt)
{
	const char *s = getenv(name);
	return s && *s ? (unsigned)strtoul(s, NULL, 10) : dflt;
}

static unsigned gpu_count(void)
{
	unsigned n = env_uint("FAKENVML_GPUS", 2);
	return n > 2 ? 2 : n;
}

static int valid(nvmlDevice_t d)
{
	return initialised && (d == &devices[0] || d == &devices[1]) &&
	       (unsigned)(d - devices) < gpu_count();
}

/* FAKENVML_BUS_SWAPPED=1: the first GPU on the higher bus, an order that
 * CUDA's PCI_BUS_ID order would not give. */
static unsigned bus_of(nvmlDevice_t d)
{
	if (env_uint("FAKENVML_BUS_SWAPPED", 0))
		return devices[d == &devices[0] ? 1 : 0].bus;
	return d->bus;
}

static void copy_str(char *dst, unsigned int len, const char *src)
{
	size_t n = strlen(src);
	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Prototypes, as NVML's header would give them. */
EXPORT nvmlReturn_t nvmlInit(void);
EXPORT nvmlReturn_t nvmlShutdown(void);
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count);
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *dev);
EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t dev, char *name, unsigned int len);
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t dev, char *uuid, unsigned int len);
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem);
#ifdef FAKENVML_V1
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t dev, nvmlPciInfo_v1_t *pci);
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t dev, unsigned int *count,
							  nvmlProcessInfo_v1_t *infos);
#else
EXPORT nvmlReturn_t nvmlInit_v2(void);
EXPORT const char *nvmlErrorString(nvmlReturn_t rc);
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count);
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *dev);
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t dev, nvmlPciInfo_t *pci);
EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t dev, nvmlUtilization_t *util);
EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t dev, unsigned int *current, unsigned int *pending);
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t dev, unsigned int *count,
							     nvmlProcessInfo_t *infos);
#endif

nvmlReturn_t nvmlInit(void)
{
	if (env_uint("FAKENVML_INIT_FAIL", 0))
		return NVML_ERROR_DRIVER_NOT_LOADED;
	initialised++;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void)
{
	if (!initialised)
		return NVML_ERROR_UNINITIALIZED;
	initialised--;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *count)
{
	if (!initialised)
		return NVML_ERROR_UNINITIALIZED;
	*count = gpu_count();
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *dev)
{
	if (!initialised)
		return NVML_ERROR_UNINITIALIZED;
	if (index >= gpu_count())
		return NVML_ERROR_INVALID_ARGUMENT;
	*dev = &devices[index];
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t dev, char *name, unsigned int len)
{
	if (!valid(dev))
		return NVML_ERROR_INVALID_ARGUMENT;
	copy_str(name, len, dev->name);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t dev, char *uuid, unsigned int len)
{
	if (!valid(dev))
		return NVML_ERROR_INVALID_ARGUMENT;
	copy_str(uuid, len, dev->uuid);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem)
{
	if (!valid(dev))
		return NVML_ERROR_INVALID_ARGUMENT;
	mem->total = dev->total;
	mem->used = dev->used;
	mem->free = dev->total - dev->used;
	return NVML_SUCCESS;
}

/* Fills up to *count entries of stride `size` through put(); NVML's contract:
 * INSUFFICIENT_SIZE with the needed count when the array is too small. */
static nvmlReturn_t procs(nvmlDevice_t dev, unsigned int *count, void *infos, size_t size,
			  void (*put)(void *at, unsigned int pid, unsigned long long used))
{
	if (!valid(dev))
		return NVML_ERROR_INVALID_ARGUMENT;
	unsigned many = dev == &devices[0] ? env_uint("FAKENVML_PROCS", 0) : 0;
	unsigned n = many ? many : dev->n_procs;
	if (*count < n) {
		*count = n;
		return NVML_ERROR_INSUFFICIENT_SIZE;
	}
	for (unsigned i = 0; i < n; i++) {
		char *at = (char *)infos + i * size;
		if (many)
			put(at, 1000 + i, (unsigned long long)i * MiB);
		else
			put(at, dev->procs[i].pid, dev->procs[i].used);
	}
	*count = n;
	return NVML_SUCCESS;
}

#ifdef FAKENVML_V1
nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t dev, nvmlPciInfo_v1_t *pci)
{
	if (!valid(dev))
		return NVML_ERROR_INVALID_ARGUMENT;
	memset(pci, 0, sizeof(*pci));
	pci->bus = bus_of(dev);
	copy_str(pci->busId, sizeof(pci->busId), "0000:??:00.0"); /* must not be used */
	return NVML_SUCCESS;
}

static void put_v1(void *at, unsigned int pid, unsigned long long used)
{
	nvmlProcessInfo_v1_t *p = at;
	p->pid = pid;
	p->usedGpuMemory = used;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t dev, unsigned int *count,
						  nvmlProcessInfo_v1_t *infos)
{
	return procs(dev, count, infos, sizeof(*infos), put_v1);
}
#else
nvmlReturn_t nvmlInit_v2(void)
{
	return nvmlInit();
}

const char *nvmlErrorString(nvmlReturn_t rc)
{
	switch (rc) {
	case NVML_SUCCESS: return "Success";
	case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
	case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
	case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
	case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
	case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
	}
	return "Unknown Error";
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
	return nvmlDeviceGetCount(count);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *dev)
{
	return nvmlDeviceGetHandleByIndex(index, dev);
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t dev, nvmlPciInfo_t *pci)
{
	if (!valid(dev))
		return NVML_ERROR_INVALID_ARGUMENT;
	memset(pci, 0, sizeof(*pci));
	pci->bus = bus_of(dev);
	char id[32] = "00000000:00:00.0";
	const char hex[] = "0123456789ABCDEF";
	id[9] = hex[(pci->bus >> 4) & 15];
	id[10] = hex[pci->bus & 15];
	copy_str(pci->busId, sizeof(pci->busId), id);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t dev, nvmlUtilization_t *util)
{
	if (!valid(dev))
		return NVML_ERROR_INVALID_ARGUMENT;
	if (dev->util < 0)
		return NVML_ERROR_NOT_SUPPORTED;
	util->gpu = (unsigned)dev->util;
	util->memory = 5;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t dev, unsigned int *current, unsigned int *pending)
{
	if (!valid(dev))
		return NVML_ERROR_INVALID_ARGUMENT;
	*current = *pending = dev->mig;
	return NVML_SUCCESS;
}

static void put_v3(void *at, unsigned int pid, unsigned long long used)
{
	nvmlProcessInfo_t *p = at;
	p->pid = pid;
	p->usedGpuMemory = used;
	p->gpuInstanceId = 0xFFFFFFFFu;
	p->computeInstanceId = 0xFFFFFFFFu;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t dev, unsigned int *count,
						     nvmlProcessInfo_t *infos)
{
	return procs(dev, count, infos, sizeof(*infos), put_v3);
}
#endif
