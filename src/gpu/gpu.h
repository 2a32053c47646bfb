/* SPDX-License-Identifier: MIT */
/*
 * GPU inventory. A backend is a const struct of function pointers; the
 * backends are listed in one array in gpu.c:
 *   nvml — libnvidia-ml.so.1 loaded with dlopen (no link-time dependency);
 *   sim  — simulated GPUs from the config or `--gpus 2x80GiB`, whose used
 *          memory is whatever the daemon charges to them for the workloads
 *          placed there (vram_gpu_sim_charge). With an empty gpus.sim list
 *          (auto falling back) there are two 80GiB GPUs named "Simulated
 *          GPU"; UUIDs are "GPU-sim-<index as 4 hex digits>-0000-0000-000000000000".
 * `auto` opens nvml and falls back to sim when the driver does not load or
 * shows no GPU; the reason is returned so that the caller logs one clear line.
 * A metric that a backend cannot read is marked invalid (-1, false), never 0.
 */
#ifndef VRAM_GPU_H
#define VRAM_GPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"

#define VRAM_GPU_MAX 64
#define VRAM_GPU_MAX_PROCS 64
#define VRAM_GPU_NAME_MAX 96
#define VRAM_GPU_UUID_MAX 80

struct vram_gpu_proc {
	pid_t pid;
	uint64_t used_bytes; /* bytes; UINT64_MAX when the driver cannot say */
};

struct vram_gpu_info {
	unsigned index;                   /* 0-based, in PCI bus order */
	char name[VRAM_GPU_NAME_MAX];     /* "NVIDIA H100 80GB HBM3" */
	char uuid[VRAM_GPU_UUID_MAX];     /* "GPU-xxxxxxxx-…" (sim: "GPU-sim-…") */
	char pci_bus_id[32];              /* "00000000:17:00.0" */
	uint64_t mem_total;               /* bytes */
	uint64_t mem_used;                /* bytes */
	uint64_t mem_free;                /* bytes */
	int util_percent;                 /* 0..100; -1 = not available */
	int mig_mode;                     /* 0 off, 1 on; -1 = not available */
	bool procs_valid;                 /* false when per-process usage is unavailable */
	size_t n_procs;
	struct vram_gpu_proc procs[VRAM_GPU_MAX_PROCS];
};

struct vram_gpu_backend {
	const char *name; /* "nvml", "sim" */
	/*
	 * Opens the backend. Returns 0 and sets *ret_ctx, or -errno with a
	 * reason written to why (e.g. "libnvidia-ml.so.1: cannot open shared
	 * object file"). -ENODEV: loaded but no GPU.
	 */
	int (*open)(const struct vram_config *cfg, void **ret_ctx, char *why, size_t why_size);
	void (*close)(void *ctx);
	unsigned (*count)(void *ctx);
	/* Fills *ret_info for GPU index. Returns 0 or -errno. */
	int (*query)(void *ctx, unsigned index, struct vram_gpu_info *ret_info);
	/* sim only (NULL for others): sets the bytes owner pid holds on GPU index; 0 removes.
	 * -ENOSPC beyond the GPU's total, -E2BIG past VRAM_GPU_MAX_PROCS pids, -ENODEV bad index. */
	int (*sim_charge)(void *ctx, unsigned index, pid_t pid, uint64_t bytes);
};

extern const struct vram_gpu_backend vram_gpu_backend_nvml;
extern const struct vram_gpu_backend vram_gpu_backend_sim;

/* The backend called name ("nvml", "sim"), or NULL. Borrowed, static. */
const struct vram_gpu_backend *vram_gpu_backend_find(const char *name);

/*
 * nvml loads the library named by the environment variable
 * VRAM_NVML_LIBRARY (a path) when it is set, and nothing else; otherwise
 * libnvidia-ml.so.1, then libnvidia-ml.so. For drivers installed outside the
 * loader's path, and for the tests' fake library.
 */
#define VRAM_NVML_LIBRARY_ENV "VRAM_NVML_LIBRARY"

struct vram_gpus; /* opaque: an opened backend */

/*
 * Opens the backend cfg->gpus.backend asks for (auto: nvml, else sim).
 * On success *ret is set (free with vram_gpu_close) and, if note is not
 * NULL, a one-line description of the choice is written to it, e.g.
 * "no NVIDIA driver (libnvidia-ml.so.1: cannot open shared object file): using 2 simulated GPUs".
 * Returns 0 or -errno (nvml asked for explicitly and not available; the
 * reason is in note).
 */
int vram_gpu_open(const struct vram_config *cfg, struct vram_gpus **ret, char *note, size_t note_size);
void vram_gpu_close(struct vram_gpus *g);

const char *vram_gpu_backend_name_of(const struct vram_gpus *g);
bool vram_gpu_is_sim(const struct vram_gpus *g);
unsigned vram_gpu_count(const struct vram_gpus *g);
int vram_gpu_query(struct vram_gpus *g, unsigned index, struct vram_gpu_info *ret_info);
/* The GPU's UUID, read once and cached (borrowed, valid while g lives);
 * NULL when index is out of range or the backend cannot say. */
const char *vram_gpu_uuid(struct vram_gpus *g, unsigned index);
/* -EOPNOTSUPP on a real backend. */
int vram_gpu_sim_charge(struct vram_gpus *g, unsigned index, pid_t pid, uint64_t bytes);

#endif
