/* SPDX-License-Identifier: MIT */
/*
 * Simulated GPUs, for machines without a driver, for tests and for
 * `vramctl plan`. The GPUs come from cfg->gpus.sim (the config's `gpus.sim`
 * list or `--gpus 2x80GiB`); with an empty list there are two GPUs of 80GiB
 * named "Simulated GPU". Their used memory is exactly what the daemon charged
 * to them for the workloads placed there (vram_gpu_sim_charge), so the
 * inventory, the planner and the status API agree without any guessing.
 * UUIDs are stable per index ("GPU-sim-0000-0000-0000-000000000000" for GPU0)
 * so that CUDA_VISIBLE_DEVICES built from them reads the same every run.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu.h"

#define SIM_DEFAULT_COUNT 2
#define SIM_DEFAULT_MEMORY (80 * VRAM_GiB)
#define SIM_DEFAULT_NAME "Simulated GPU"

struct sim_gpu {
	char name[VRAM_GPU_NAME_MAX];
	uint64_t total;                              /* bytes */
	size_t n_charges;
	struct vram_gpu_proc charges[VRAM_GPU_MAX_PROCS]; /* bytes per pid */
};

struct sim_ctx {
	pthread_mutex_t lock; /* charges may come from the loop while a worker queries */
	unsigned count;
	struct sim_gpu gpus[VRAM_GPU_MAX];
};

static int sim_open(const struct vram_config *cfg, void **ret_ctx, char *why, size_t why_size)
{
	size_t n = cfg ? cfg->gpus.n_sim : 0;
	if (n > VRAM_GPU_MAX) {
		snprintf(why, why_size, "%zu simulated GPUs asked for, at most %d", n, VRAM_GPU_MAX);
		return -E2BIG;
	}
	struct sim_ctx *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(why, why_size, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	if (n == 0) {
		s->count = SIM_DEFAULT_COUNT;
		for (unsigned i = 0; i < s->count; i++) {
			snprintf(s->gpus[i].name, sizeof(s->gpus[i].name), "%s", SIM_DEFAULT_NAME);
			s->gpus[i].total = SIM_DEFAULT_MEMORY;
		}
	} else {
		s->count = (unsigned)n;
		for (unsigned i = 0; i < s->count; i++) {
			const struct vram_sim_gpu_config *g = &cfg->gpus.sim[i];
			snprintf(s->gpus[i].name, sizeof(s->gpus[i].name), "%s",
				 g->name && g->name[0] ? g->name : SIM_DEFAULT_NAME);
			s->gpus[i].total = g->memory;
		}
	}
	*ret_ctx = s;
	return 0;
}

static void sim_close(void *ctx)
{
	struct sim_ctx *s = ctx;
	if (!s)
		return;
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static unsigned sim_count(void *ctx)
{
	return ((struct sim_ctx *)ctx)->count;
}

static int sim_query(void *ctx, unsigned index, struct vram_gpu_info *ret_info)
{
	struct sim_ctx *s = ctx;
	if (index >= s->count)
		return -ENODEV;
	struct vram_gpu_info *info = ret_info;
	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&s->lock);
	const struct sim_gpu *g = &s->gpus[index];
	info->index = index;
	snprintf(info->name, sizeof(info->name), "%s", g->name);
	snprintf(info->uuid, sizeof(info->uuid), "GPU-sim-%04x-0000-0000-000000000000", index);
	snprintf(info->pci_bus_id, sizeof(info->pci_bus_id), "00000000:%02X:00.0", index + 1);
	info->mem_total = g->total;
	uint64_t used = 0;
	for (size_t i = 0; i < g->n_charges; i++) {
		info->procs[i] = g->charges[i];
		used += g->charges[i].used_bytes;
	}
	info->n_procs = g->n_charges;
	pthread_mutex_unlock(&s->lock);
	info->mem_used = used;
	info->mem_free = g->total > used ? g->total - used : 0;
	info->util_percent = -1; /* nothing runs on a simulated GPU to measure */
	info->mig_mode = 0;      /* a simulated GPU has no MIG: off, not unknown */
	info->procs_valid = true;
	return 0;
}

/*
 * Sets (not adds) what pid holds on GPU index; 0 removes the pid.
 * -ENOSPC when the GPU would hold more than its total (a real GPU would
 * fail the allocation), -E2BIG when VRAM_GPU_MAX_PROCS pids already hold
 * memory there; nothing changes on failure.
 */
static int sim_charge(void *ctx, unsigned index, pid_t pid, uint64_t bytes)
{
	struct sim_ctx *s = ctx;
	if (index >= s->count)
		return -ENODEV;
	int r = 0;
	pthread_mutex_lock(&s->lock);
	struct sim_gpu *g = &s->gpus[index];
	size_t at = g->n_charges;
	uint64_t others = 0;
	for (size_t i = 0; i < g->n_charges; i++) {
		if (g->charges[i].pid == pid)
			at = i;
		else
			others += g->charges[i].used_bytes;
	}
	if (bytes == 0) {
		if (at < g->n_charges)
			g->charges[at] = g->charges[--g->n_charges];
		goto out_unlock;
	}
	if (bytes > g->total || others > g->total - bytes) {
		r = -ENOSPC;
		goto out_unlock;
	}
	if (at == g->n_charges) {
		if (g->n_charges == VRAM_GPU_MAX_PROCS) {
			r = -E2BIG;
			goto out_unlock;
		}
		g->n_charges++;
	}
	g->charges[at] = (struct vram_gpu_proc){ .pid = pid, .used_bytes = bytes };
out_unlock:
	pthread_mutex_unlock(&s->lock);
	return r;
}

const struct vram_gpu_backend vram_gpu_backend_sim = {
	.name = "sim",
	.open = sim_open,
	.close = sim_close,
	.count = sim_count,
	.query = sim_query,
	.sim_charge = sim_charge,
};
