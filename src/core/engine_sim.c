/* SPDX-License-Identifier: MIT */
/*
 * The sim engine, for the simulated GPU backend: offload frees the simulated
 * memory that the workload's processes hold (the processes keep running, as
 * they would with the hook), restore charges it back onto the GPUs now
 * assigned. Both take bytes / rate so that the offloading and restoring states
 * can be watched; the default rate is the hook's measured 50 GB/s.
 *
 * Park writes nothing: it takes bytes / the simulated disk's rate (default
 * 2 GB/s, a virtio disk's), after which the workload holds no host memory;
 * a restore from parked takes bytes / that rate too. For tests, a restore
 * from parked can be made to fail as a checksum mismatch would.
 */
#include "core/engine.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include <event2/event.h>

#include "gpu/gpu.h"

static uint64_t sim_offload_rate = UINT64_C(50000000000); /* bytes per second */
static uint64_t sim_restore_rate = UINT64_C(50000000000); /* bytes per second */
static uint64_t sim_disk_rate = UINT64_C(2000000000);     /* bytes per second */
static bool sim_fail_restore;                              /* restores from parked fail */

void vram_engine_sim_set_rate(uint64_t offload_bytes_per_s, uint64_t restore_bytes_per_s)
{
	if (offload_bytes_per_s)
		sim_offload_rate = offload_bytes_per_s;
	if (restore_bytes_per_s)
		sim_restore_rate = restore_bytes_per_s;
}

void vram_engine_sim_set_disk(uint64_t bytes_per_s, bool fail_restore)
{
	if (bytes_per_s)
		sim_disk_rate = bytes_per_s;
	sim_fail_restore = fail_restore;
}

static bool sim_supports(const struct vram_workload *w, const struct vram_engine_host *host,
			 char *why, size_t why_size)
{
	if (host->gpus && vram_gpu_is_sim(host->gpus))
		return true;
	if (why)
		snprintf(why, why_size, "only on simulated GPUs");
	return false;
}

/* Sets every instance's charge on its GPUs to its bytes (on) or 0 (off). */
static int sim_charge_all(struct vram_workload *w, struct vram_gpus *gpus, bool on)
{
	int r = 0;
	for (size_t i = 0; i < w->n_instances; i++) {
		struct vram_instance *in = &w->instances[i];
		if (in->pid <= 0)
			continue;
		for (size_t g = 0; g < in->n_gpus; g++) {
			int e = vram_gpu_sim_charge(gpus, in->gpus[g], in->pid,
						    on ? in->bytes_per_gpu : 0);
			if (e < 0 && r == 0)
				r = e;
		}
		in->resident = on;
	}
	return r;
}

static void sim_finish(evutil_socket_t fd, short what, void *arg)
{
	struct vram_job *job = arg;
	struct event *timer = job->priv;
	job->priv = NULL;
	event_free(timer);
	uint64_t bytes = vram_workload_gpu_bytes(job->w);
	int r = 0;
	if (job->kind == VRAM_JOB_RESTORE && job->from_disk && sim_fail_restore) {
		/* the file is wrong: the process cannot be trusted with what it read */
		job->process_lost = true;
		vram_job_complete(job, -EBADMSG, 0, "checksum mismatch in the park file (simulated: "
				  "restores from parked fail on request)");
		return;
	}
	if (job->kind == VRAM_JOB_OFFLOAD)
		r = sim_charge_all(job->w, job->host->gpus, false);
	if (r < 0)
		vram_job_complete(job, r, 0, "simulated GPU refused the change");
	else
		vram_job_complete(job, 0, bytes, "%s %llu bytes%s (simulated)",
				  job->kind == VRAM_JOB_OFFLOAD ? "offloaded"
				  : job->kind == VRAM_JOB_PARK  ? "parked"
								: "restored",
				  (unsigned long long)bytes,
				  job->kind == VRAM_JOB_PARK ? " to disk"
				  : job->from_disk           ? " from disk"
							     : "");
}

static int sim_begin(struct vram_workload *w, struct vram_job *job, uint64_t rate)
{
	uint64_t bytes = vram_workload_gpu_bytes(w);
	uint64_t us = bytes / (rate / 1000000u ? rate / 1000000u : 1);
	struct event *timer = evtimer_new(job->host->base, sim_finish, job);
	if (!timer)
		return -ENOMEM;
	if (job->kind == VRAM_JOB_RESTORE) {
		/* the memory is claimed when the copy begins */
		int r = sim_charge_all(w, job->host->gpus, true);
		if (r < 0) {
			event_free(timer);
			return r;
		}
	}
	job->priv = timer;
	struct timeval tv = {.tv_sec = (time_t)(us / 1000000u), .tv_usec = (suseconds_t)(us % 1000000u)};
	evtimer_add(timer, &tv);
	return 0;
}

static int sim_offload(struct vram_workload *w, struct vram_job *job)
{
	return sim_begin(w, job, sim_offload_rate);
}

static int sim_restore(struct vram_workload *w, struct vram_job *job)
{
	return sim_begin(w, job, job->from_disk ? sim_disk_rate : sim_restore_rate);
}

static int sim_park(struct vram_workload *w, struct vram_job *job)
{
	return sim_begin(w, job, sim_disk_rate);
}

static void sim_cancel(struct vram_job *job)
{
	if (job->priv)
		event_free(job->priv);
	job->priv = NULL;
}

const struct vram_engine vram_engine_sim = {
	.name = "sim",
	.kind = VRAM_ENGINE_SIM,
	.keeps_process = true,
	.can_move = true, /* the charge follows the GPUs assigned, as checkpoint's restore does */
	.supports = sim_supports,
	.offload = sim_offload,
	.restore = sim_restore,
	.park = sim_park,
	.cancel = sim_cancel,
};
