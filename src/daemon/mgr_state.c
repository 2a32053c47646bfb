/* SPDX-License-Identifier: MIT */
/*
 * The state file on the top floor: <state_dir>/state.json, what the next
 * vramd needs to adopt the processes that outlive this one (statefile.h).
 *
 * Written from the kick job, so at most once per loop turn and never on a
 * request's path: the kick computes a fingerprint of what the file records
 * (cheap, no system call) and writes only when it differs from the one last
 * written. The gateway's request accounting (in_flight, last_used_ms) is not
 * part of it, so requests never cause a write. A failed write logs a warning
 * (at most one a minute) and is tried again on the next change.
 *
 * Read once, on the first kick after vram_manager_run: a missing file is
 * silent, a bad one gets one line and vramd starts clean, a good one one
 * line saying what it records. Adoption is not implemented yet.
 *
 * On a deliberate stop (shutdown, once every child is gone) the file is
 * removed, so that a clean stop leaves nothing to adopt.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/proc.h"
#include "common/clock.h"
#include "daemon/statefile.h"
#include "daemon/supervise.h"
#include "gpu/gpu.h"

#define STATE_FILE_NAME "state.json"
#define WARN_EVERY_MS 60000 /* a failing write warns at most this often */

static int state_path(const struct vram_manager *m, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s/" STATE_FILE_NAME, m->state_dir);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Whether an instance of w is recorded: w holds its GPU memory or parked it, with a process. */
static bool recorded(const struct vram_workload *w, const struct vram_instance *in)
{
	return (w->state == VRAM_WL_READY || w->state == VRAM_WL_OFFLOADED) && in->pid > 0;
}

/* A setting is recorded as set when it differs from the config's (the API changed it). */
static struct vram_statefile_ms runtime_ms(uint64_t now_ms, uint64_t cfg_ms)
{
	return (struct vram_statefile_ms){.set = now_ms != cfg_ms, .ms = now_ms};
}

/* FNV-1a over size bytes of p, onto h. */
static uint64_t fnv(uint64_t h, const void *p, size_t size)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < size; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}

#define FNV_VAL(h, v) ((h) = fnv((h), &(v), sizeof(v)))

/* The fingerprint of what the file records: changes whenever the file would. */
static uint64_t fingerprint(const struct vram_manager *m)
{
	uint64_t h = 14695981039346656037ULL;
	for (size_t k = 0; k < m->n_live; k++) {
		const struct vram_workload *w = m->wptrs[k];
		h = fnv(h, w->cfg->name, strlen(w->cfg->name) + 1);
		struct vram_statefile_ms o = runtime_ms(w->offload_after_ms, w->cfg->idle.offload_after_ms);
		struct vram_statefile_ms r = runtime_ms(w->release_after_ms, w->cfg->idle.release_after_ms);
		FNV_VAL(h, o.set);
		FNV_VAL(h, o.ms);
		FNV_VAL(h, r.set);
		FNV_VAL(h, r.ms);
		bool adhoc = mgr_is_adhoc(m, w);
		FNV_VAL(h, adhoc);
		FNV_VAL(h, w->state);
		FNV_VAL(h, w->offloaded_bytes);
		FNV_VAL(h, w->engine);
		for (size_t i = 0; i < w->n_instances; i++) {
			const struct vram_instance *in = &w->instances[i];
			if (!recorded(w, in))
				continue;
			FNV_VAL(h, in->pid);
			FNV_VAL(h, in->port);
			FNV_VAL(h, in->n_gpus);
			h = fnv(h, in->gpus, in->n_gpus * sizeof(in->gpus[0]));
		}
	}
	return h;
}

/* Frees what fill() allocated; the strings in sf are borrowed from the manager. */
static void fill_free(struct vram_statefile *sf)
{
	for (size_t k = 0; k < sf->n_workloads; k++) {
		struct vram_statefile_workload *sw = &sf->workloads[k];
		for (size_t i = 0; i < sw->n_instances; i++)
			free(sw->instances[i].gpu_uuids);
		free(sw->instances);
		free(sw->adhoc.owner.groups);
	}
	free(sf->workloads);
	memset(sf, 0, sizeof(*sf));
}

/*
 * Fills sf from the registry. Strings are borrowed from the manager (valid
 * until it changes, i.e. for this loop turn); arrays are allocated and freed
 * by fill_free. Returns 0 or -ENOMEM (then fill_free frees the rest).
 */
static int fill(struct vram_manager *m, struct vram_statefile *sf)
{
	memset(sf, 0, sizeof(*sf));
	if (m->n_live == 0)
		return 0;
	sf->workloads = calloc(m->n_live, sizeof(*sf->workloads));
	if (!sf->workloads)
		return -ENOMEM;
	for (size_t k = 0; k < m->n_live && k < VRAM_STATEFILE_MAX_WORKLOADS; k++) {
		struct vram_workload *w = m->wptrs[k];
		struct vram_statefile_workload *sw = &sf->workloads[sf->n_workloads++];
		sw->name = (char *)w->cfg->name;
		sw->offload_after = runtime_ms(w->offload_after_ms, w->cfg->idle.offload_after_ms);
		sw->release_after = runtime_ms(w->release_after_ms, w->cfg->idle.release_after_ms);
		const struct vram_runas *owner = mgr_slot(m, w)->owner;
		if (mgr_is_adhoc(m, w) && owner) {
			const struct vram_workload_config *c = w->cfg;
			sw->is_adhoc = true;
			sw->adhoc.cmd = c->cmd;
			sw->adhoc.n_cmd = c->n_cmd;
			sw->adhoc.env = c->env;
			sw->adhoc.n_env = c->n_env;
			sw->adhoc.cwd = c->cwd;
			sw->adhoc.memory = c->memory;
			sw->adhoc.gpus = c->gpus.count;
			sw->adhoc.owner.as_daemon = owner->as_daemon;
			sw->adhoc.owner.uid = (uint32_t)owner->uid;
			sw->adhoc.owner.gid = (uint32_t)owner->gid;
			if (owner->n_groups) {
				sw->adhoc.owner.groups = calloc(owner->n_groups, sizeof(uint32_t));
				if (!sw->adhoc.owner.groups)
					return -ENOMEM;
				for (size_t g = 0; g < owner->n_groups; g++)
					sw->adhoc.owner.groups[g] = (uint32_t)owner->groups[g];
				sw->adhoc.owner.n_groups = owner->n_groups;
			}
		}
		size_t n_with = 0;
		for (size_t i = 0; i < w->n_instances; i++)
			n_with += recorded(w, &w->instances[i]);
		if (n_with == 0)
			continue;
		sw->instances = calloc(n_with, sizeof(*sw->instances));
		if (!sw->instances)
			return -ENOMEM;
		for (size_t i = 0; i < w->n_instances; i++) {
			struct vram_instance *in = &w->instances[i];
			uint64_t ticks;
			if (!recorded(w, in) || vram_proc_start_ticks(in->pid, &ticks) < 0)
				continue; /* gone already: its exit is on its way */
			struct vram_statefile_instance *si = &sw->instances[sw->n_instances++];
			pid_t pgid = getpgid(in->pid);
			si->pid = in->pid;
			si->start_ticks = ticks;
			si->pgid = pgid > 0 ? pgid : in->pid; /* spawn makes each its own group */
			si->port = in->port;
			si->engine = w->engine ? (char *)w->engine->name : NULL;
			si->state = w->state == VRAM_WL_OFFLOADED ? VRAM_STATEFILE_OFFLOADED
								  : VRAM_STATEFILE_READY;
			/* the engines count a workload's bytes: shared evenly among its processes */
			si->offloaded_bytes = si->state == VRAM_STATEFILE_OFFLOADED
						      ? w->offloaded_bytes / n_with : 0;
			if (in->n_gpus) {
				si->gpu_uuids = calloc(in->n_gpus + 1, sizeof(char *));
				if (!si->gpu_uuids)
					return -ENOMEM;
				for (size_t g = 0; g < in->n_gpus; g++) {
					const char *u = vram_gpu_uuid(m->gpus, in->gpus[g]);
					if (!u)
						continue;
					si->gpu_uuids[si->n_gpus++] = (char *)u;
				}
			}
		}
	}
	/* MPS control daemons: not recorded yet (mps.h offers no list of them) */
	return 0;
}

static void write_now(struct vram_manager *m)
{
	char path[4096], why[512];
	if (state_path(m, path, sizeof(path)) < 0)
		return;
	struct vram_statefile sf;
	int r = fill(m, &sf);
	if (r == 0)
		r = vram_statefile_write(path, &sf, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "out of memory");
	fill_free(&sf);
	if (r == 0) {
		vram_debug("state file %s written", path);
		return;
	}
	uint64_t now = vram_now_ms();
	if (m->state_warned_ms == 0 || now - m->state_warned_ms >= WARN_EVERY_MS) {
		m->state_warned_ms = now;
		vram_warn("Could not write the state file: %s; tried again on the next change", why);
	}
}

/* The file of the previous vramd: one line, then it is left to be overwritten. */
static void read_previous(struct vram_manager *m)
{
	char path[4096], why[512];
	if (state_path(m, path, sizeof(path)) < 0)
		return;
	struct vram_statefile sf;
	int r = vram_statefile_read(path, &sf, why, sizeof(why));
	if (r == -ENOENT)
		return;
	if (r < 0) {
		vram_warn("Ignoring the state file %s: %s; starting clean", path, why);
		return;
	}
	size_t n_proc = 0;
	for (size_t k = 0; k < sf.n_workloads; k++)
		n_proc += sf.workloads[k].n_instances;
	vram_info("state file: %zu workloads, %zu processes recorded; adoption of running "
		  "processes is not implemented yet, they are listed as external",
		  sf.n_workloads, n_proc);
	vram_statefile_done(&sf);
}

static void remove_file(struct vram_manager *m)
{
	char path[4096];
	m->state_removed = true;
	if (state_path(m, path, sizeof(path)) < 0)
		return;
	if (unlink(path) < 0 && errno != ENOENT)
		vram_warn("Could not remove the state file %s: %s", path, strerror(errno));
}

static void state_kick(struct vram_manager *m)
{
	if (!m->running || m->state_removed)
		return;
	if (!m->state_read) {
		m->state_read = true;
		read_previous(m);
	}
	if (m->shutting_down) {
		/* a deliberate stop: once every process is gone, nothing is left to adopt */
		if (vram_supervisor_live(m->sup) == 0)
			remove_file(m);
		return;
	}
	uint64_t print = fingerprint(m);
	if (m->state_written && print == m->state_print)
		return;
	m->state_written = true;
	m->state_print = print;
	write_now(m);
}

static void state_done(struct vram_manager *m)
{
	if (m->shutting_down && m->running && !m->state_removed)
		remove_file(m);
}

const struct mgr_feature mgr_state_feature = {
	.name = "state",
	.kick = state_kick,
	.done = state_done,
};
