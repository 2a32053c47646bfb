/* SPDX-License-Identifier: MIT */
/*
 * The restart engine: offload stops the workload's processes (everything on
 * the GPU is freed, nothing is kept in host RAM), restore starts them again
 * on the GPUs now assigned and waits until they are healthy. It takes any
 * workload, so it is the last resort of `offload: auto` and the engine for
 * CPU workloads. The host (the manager) does the process work and completes
 * the job.
 */
#include "core/engine.h"

#include <errno.h>

static bool restart_supports(const struct vram_workload *w, const struct vram_engine_host *host,
			     char *why, size_t why_size)
{
	return true;
}

static int restart_offload(struct vram_workload *w, struct vram_job *job)
{
	if (!job->host->stop_processes)
		return -EOPNOTSUPP;
	return job->host->stop_processes(job->host->ctx, w, job);
}

static int restart_restore(struct vram_workload *w, struct vram_job *job)
{
	if (!job->host->spawn_processes)
		return -EOPNOTSUPP;
	return job->host->spawn_processes(job->host->ctx, w, job);
}

const struct vram_engine vram_engine_restart = {
	.name = "restart",
	.kind = VRAM_ENGINE_RESTART,
	.keeps_process = false,
	.supports = restart_supports,
	.offload = restart_offload,
	.restore = restart_restore,
	.cancel = NULL, /* the host's process work is cancelled by the host */
};
