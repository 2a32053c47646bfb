/* SPDX-License-Identifier: MIT */
/*
 * Attached workloads, a feature on the manager's top floor: a process group
 * that someone else started and owns (a Slurm step's tasks, registered by
 * the SPANK plugin src/spank/) becomes an ad-hoc workload without a spawn.
 * It is listed in status and /metrics, its bytes are charged on its GPUs,
 * its hooked processes are offloaded and restored with it and its idle
 * timer runs; it is never signalled: a stop or a removal lets go of it and
 * its processes run on (supervise.h, vram_child_hands_off). It is taken
 * back by the next vramd like any ad-hoc workload (mgr_adopt.c).
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/proc.h"
#include "core/engine.h"
#include "daemon/peer.h"
#include "daemon/runas.h"
#include "daemon/supervise.h"
#include "gpu/gpu.h"

/* Places the one instance of w on spec's GPUs with its bytes; -EINVAL with err. */
static int place(struct vram_manager *m, struct vram_instance *in,
		 const struct vram_attach_spec *spec, char *err, size_t err_size)
{
	unsigned n = vram_gpu_count(m->gpus);
	in->n_gpus = spec->n_gpus;
	in->bytes_per_gpu = 0;
	for (size_t g = 0; g < spec->n_gpus; g++) {
		if (spec->gpus[g] >= n) {
			snprintf(err, err_size, "gpus[%zu]: GPU %u is not on this machine (it has %u)",
				 g, spec->gpus[g], n);
			return -EINVAL;
		}
		in->gpus[g] = spec->gpus[g];
		uint64_t bytes = spec->memory.bytes;
		if (spec->memory.is_fraction) {
			struct vram_gpu_info info;
			if (vram_gpu_query(m->gpus, spec->gpus[g], &info) < 0) {
				snprintf(err, err_size, "gpus[%zu]: GPU %u cannot be read", g,
					 spec->gpus[g]);
				return -EIO;
			}
			bytes = (uint64_t)(spec->memory.fraction * (double)info.mem_total);
		}
		in->bytes_on_gpu[g] = bytes;
		if (bytes > in->bytes_per_gpu)
			in->bytes_per_gpu = bytes;
	}
	return 0;
}

int vram_manager_attach(struct vram_manager *m, const struct vram_attach_spec *spec,
			const char **ret_name, const char **ret_hook_socket, char *err,
			size_t err_size)
{
	if (m->shutting_down) {
		snprintf(err, err_size, "vramd is shutting down");
		return -EBUSY;
	}
	if (!spec->name || !spec->name[0]) {
		snprintf(err, err_size, "name: expected a workload name");
		return -EINVAL;
	}
	if (spec->n_gpus > VRAM_PLAN_MAX_GPUS) {
		snprintf(err, err_size, "gpus: expected at most %d GPUs", VRAM_PLAN_MAX_GPUS);
		return -EINVAL;
	}
	struct vram_attach_spec placed = *spec;
	if (placed.n_gpus == 0 && (spec->memory.bytes || spec->memory.is_fraction) &&
	    vram_gpu_count(m->gpus) == 1) {
		/* a cap without GPU indices (gres/shard without device indices) is on the only GPU */
		placed.n_gpus = 1;
		placed.gpus[0] = 0;
	}
	uint64_t ticks;
	if (spec->pid <= 1 || vram_proc_start_ticks(spec->pid, &ticks) < 0) {
		snprintf(err, err_size, "pid: %d is not a running process", (int)spec->pid);
		return -ESRCH;
	}
	/* the owner is the processes' user: they reach the shared hook socket as that user */
	struct vram_peer owner = {.transport = VRAM_PEER_UNIX, .uid = spec->uid, .gid = spec->gid};
	struct vram_peer self;
	vram_peer_self(&self);
	struct vram_runas runas;
	char why[512];
	if (vram_runas_for_peer(&owner, &self, m->cfg, &runas, why, sizeof(why)) < 0) {
		snprintf(err, err_size, "uid %lu: %s", (unsigned long)spec->uid, why);
		return -EPERM;
	}
	char pidword[24];
	snprintf(pidword, sizeof(pidword), "pid=%d", (int)spec->pid);
	const char *cmd[] = {MGR_ATTACHED_CMD, pidword, NULL};
	struct vram_adhoc_spec as = {
		.name = spec->name,
		.runas = &runas,
		.cmd = cmd,
		.memory = spec->memory,
		.gpus = (unsigned)placed.n_gpus,
		.gpus_set = true,
	};
	struct vram_workload *w;
	int r = mgr_adhoc_create(m, &as, true, true, &w, err, err_size);
	if (r < 0)
		return r;
	/* the ad-hoc record owns the config; these two are the attach's own settings */
	struct vram_workload_config *c = (struct vram_workload_config *)w->cfg;
	c->priority = spec->priority;
	c->idle.offload_after_ms = spec->offload_after_ms;
	w->offload_after_ms = spec->offload_after_ms;
	w->engine = vram_engine_select(w, &m->host, w->engine_why, sizeof(w->engine_why));
	struct vram_instance *in = &w->instances[0];
	r = place(m, in, &placed, err, err_size);
	if (r < 0)
		goto out_remove;
	struct vram_adopt a = {.pid = spec->pid, .start_ticks = ticks, .log = w->log};
	char aerr[256];
	r = mgr_adopt_instance(m, w, in, &a, true, false, aerr, sizeof(aerr));
	if (r < 0) {
		snprintf(err, err_size, "pid: %s", aerr);
		goto out_remove;
	}
	mgr_slot(m, w)->adopted = true;
	in->healthy = true;
	uint64_t now = vram_now_ms();
	w->ready_since_ms = now;
	w->last_used_ms = now;
	char text[96];
	snprintf(text, sizeof(text), "attached: process group %d", (int)spec->pid);
	mgr_set_state(m, w, VRAM_WL_EV_ADOPTED_READY, VRAM_REASON_ADOPTED, text);
	vram_info("%s: attached process group %d as uid %lu, %zu GPU(s), %llu bytes each", w->cfg->name,
		  (int)spec->pid, (unsigned long)spec->uid, in->n_gpus,
		  (unsigned long long)in->bytes_per_gpu);
	if (ret_name)
		*ret_name = w->cfg->name;
	if (ret_hook_socket)
		*ret_hook_socket = mgr_shared_hook_socket(m);
	mgr_kick(m);
	return 0;

out_remove:
	{
		char rerr[128];
		(void)vram_manager_remove_adhoc(m, spec->name, rerr, sizeof(rerr));
	}
	return r;
}
