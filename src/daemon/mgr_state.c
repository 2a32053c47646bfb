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
 * Read once, by mgr_adopt.c, when the manager starts running.
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
#include "daemon/mps.h"
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

/*
 * The state an instance of w is recorded in, or -1 when it is not recorded.
 * A workload in the middle of an offload, restore or park is recorded as it
 * was before it: the action has not finished as far as vramd knows, and the
 * next vramd can ask again (the hook restores a process from wherever it
 * is, RAM or its park file).
 */
static int recorded_as(const struct vram_workload *w, const struct vram_instance *in)
{
	if (in->pid <= 0)
		return -1;
	switch (w->state) {
	case VRAM_WL_READY:
	case VRAM_WL_OFFLOADING:
		return VRAM_STATEFILE_READY;
	case VRAM_WL_RESTORING:
		return w->on_disk ? VRAM_STATEFILE_PARKED : VRAM_STATEFILE_OFFLOADED;
	case VRAM_WL_OFFLOADED:
	case VRAM_WL_PARKING:
		return VRAM_STATEFILE_OFFLOADED;
	case VRAM_WL_PARKED:
		return VRAM_STATEFILE_PARKED;
	case VRAM_WL_STARTING:
		return VRAM_STATEFILE_STARTING;
	default:
		return -1;
	}
}

static bool recorded(const struct vram_workload *w, const struct vram_instance *in)
{
	return recorded_as(w, in) >= 0;
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
		struct vram_statefile_ms p = runtime_ms(w->park_after_ms, w->cfg->idle.park_after_ms);
		FNV_VAL(h, o.set);
		FNV_VAL(h, o.ms);
		FNV_VAL(h, r.set);
		FNV_VAL(h, r.ms);
		FNV_VAL(h, p.set);
		FNV_VAL(h, p.ms);
		bool adhoc = mgr_is_adhoc(m, w);
		FNV_VAL(h, adhoc);
		int as = w->n_instances ? recorded_as(w, &w->instances[0]) : -1;
		FNV_VAL(h, as);
		FNV_VAL(h, w->offloaded_bytes);
		FNV_VAL(h, w->parked_bytes);
		FNV_VAL(h, w->engine);
		for (size_t i = 0; i < w->n_instances; i++) {
			const struct vram_instance *in = &w->instances[i];
			if (!recorded(w, in))
				continue;
			FNV_VAL(h, in->pid);
			pid_t relay = in->child ? vram_child_relay_pid(in->child) : 0;
			FNV_VAL(h, relay);
			FNV_VAL(h, in->port);
			FNV_VAL(h, in->n_gpus);
			h = fnv(h, in->gpus, in->n_gpus * sizeof(in->gpus[0]));
		}
	}
	return h;
}

/*
 * The command line of pid into si (owned copies), so that the next vramd
 * takes back only a process that still runs it. One that cannot be read (a
 * zombie, a process of another user without access) is left unrecorded:
 * the start time alone then decides. Returns 0 or -ENOMEM.
 */
static int read_cmdline(pid_t pid, struct vram_statefile_instance *si)
{
	static char buf[VRAM_PROC_CMDLINE_MAX];
	ssize_t len = vram_proc_cmdline(pid, buf, sizeof(buf));
	if (len <= 0)
		return 0;
	size_t n = 0;
	for (ssize_t i = 0; i < len; i++)
		n += buf[i] == '\0';
	if (n == 0 || n > VRAM_STATEFILE_MAX_ARGS)
		return 0;
	si->cmdline = calloc(n + 1, sizeof(char *));
	if (!si->cmdline)
		return -ENOMEM;
	for (const char *p = buf; p < buf + len && si->n_cmdline < n; p += strlen(p) + 1) {
		if (strlen(p) > VRAM_STATEFILE_STRING_MAX)
			break;
		si->cmdline[si->n_cmdline] = strdup(p);
		if (!si->cmdline[si->n_cmdline])
			return -ENOMEM;
		si->n_cmdline++;
	}
	if (si->n_cmdline < n) {
		/* a word too long to record: the start time alone decides */
		for (size_t a = 0; a < si->n_cmdline; a++)
			free(si->cmdline[a]);
		free(si->cmdline);
		si->cmdline = NULL;
		si->n_cmdline = 0;
	}
	return 0;
}

/* Frees what fill() allocated; the strings in sf are borrowed from the manager. */
static void fill_free(struct vram_statefile *sf)
{
	for (size_t k = 0; k < sf->n_workloads; k++) {
		struct vram_statefile_workload *sw = &sf->workloads[k];
		for (size_t i = 0; i < sw->n_instances; i++) {
			free(sw->instances[i].gpu_uuids);
			free(sw->instances[i].gpu_bytes);
			for (size_t a = 0; a < sw->instances[i].n_cmdline; a++)
				free(sw->instances[i].cmdline[a]);
			free(sw->instances[i].cmdline);
		}
		free(sw->instances);
		free(sw->adhoc.owner.groups);
	}
	free(sf->workloads);
	for (size_t i = 0; i < sf->n_mps; i++)
		free(sf->mps[i].pipe_dir);
	free(sf->mps);
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
		sw->park_after = runtime_ms(w->park_after_ms, w->cfg->idle.park_after_ms);
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
			si->replica = in->replica;
			si->pid = in->pid;
			si->start_ticks = ticks;
			si->pgid = pgid > 0 ? pgid : in->pid; /* spawn makes each its own group */
			/* an attached one may not have executed its command yet: its start time names it */
			if (!mgr_is_attached(w) && read_cmdline(in->pid, si) < 0)
				return -ENOMEM;
			pid_t relay = in->child ? vram_child_relay_pid(in->child) : 0;
			if (relay > 0 && vram_proc_start_ticks(relay, &si->relay_start_ticks) == 0)
				si->relay_pid = relay;
			si->port = in->port;
			si->mps = in->mps_client != NULL;
			si->engine = w->engine ? (char *)w->engine->name : NULL;
			si->state = (enum vram_statefile_inst_state)recorded_as(w, in);
			/* the engines count a workload's bytes: shared evenly among its processes */
			si->offloaded_bytes = si->state == VRAM_STATEFILE_OFFLOADED
						      ? w->offloaded_bytes / n_with : 0;
			si->parked_bytes = si->state == VRAM_STATEFILE_PARKED ? w->parked_bytes / n_with : 0;
			if (in->n_gpus) {
				si->gpu_uuids = calloc(in->n_gpus + 1, sizeof(char *));
				if (!si->gpu_uuids)
					return -ENOMEM;
				si->gpu_bytes = calloc(in->n_gpus + 1, sizeof(uint64_t));
				if (!si->gpu_bytes)
					return -ENOMEM;
				for (size_t g = 0; g < in->n_gpus; g++) {
					const char *u = vram_gpu_uuid(m->gpus, in->gpus[g]);
					if (!u)
						continue;
					si->gpu_bytes[si->n_gpus] = in->bytes_on_gpu[g]
									    ? in->bytes_on_gpu[g]
									    : in->bytes_per_gpu;
					si->gpu_uuids[si->n_gpus++] = (char *)u;
				}
			}
		}
	}
	/* MPS control daemons, so that the next vramd takes them back instead of starting more */
	if (m->mps) {
		struct vram_mps_daemon_info *d = calloc(VRAM_STATEFILE_MAX_MPS, sizeof(*d));
		if (!d)
			return -ENOMEM;
		size_t n = vram_mps_daemons(m->mps, d, VRAM_STATEFILE_MAX_MPS);
		if (n > VRAM_STATEFILE_MAX_MPS)
			n = VRAM_STATEFILE_MAX_MPS;
		sf->mps = n ? calloc(n, sizeof(*sf->mps)) : NULL;
		for (size_t i = 0; sf->mps && i < n; i++) {
			sf->mps[i].pipe_dir = strdup(d[i].pipe_dir);
			if (!sf->mps[i].pipe_dir)
				break;
			sf->mps[i].pid = d[i].pid;
			sf->mps[i].start_ticks = d[i].start_ticks;
			sf->n_mps++;
		}
		free(d);
		if (n && sf->n_mps < n)
			return -ENOMEM;
	}
	return 0;
}

/* Writes the file now. Returns 0, or -errno with why (why_size bytes). */
static int write_file(struct vram_manager *m, char *why, size_t why_size)
{
	char path[4096];
	if (state_path(m, path, sizeof(path)) < 0) {
		snprintf(why, why_size, "the state directory's path is too long");
		return -ENAMETOOLONG;
	}
	struct vram_statefile sf;
	int r = fill(m, &sf);
	if (r == 0)
		r = vram_statefile_write(path, &sf, why, why_size);
	else
		snprintf(why, why_size, "out of memory");
	fill_free(&sf);
	if (r == 0)
		vram_debug("state file %s written", path);
	return r;
}

static void write_now(struct vram_manager *m)
{
	char why[512];
	if (write_file(m, why, sizeof(why)) == 0)
		return;
	uint64_t now = vram_now_ms();
	if (m->state_warned_ms == 0 || now - m->state_warned_ms >= WARN_EVERY_MS) {
		m->state_warned_ms = now;
		vram_warn("Could not write the state file: %s; tried again on the next change", why);
	}
}

int vram_manager_prepare_exec(struct vram_manager *m, char *err, size_t err_size)
{
	if (m->shutting_down) {
		snprintf(err, err_size, "vramd is shutting down");
		return -EBUSY;
	}
	for (size_t k = 0; k < m->n_live; k++) {
		const struct vram_workload *w = m->wptrs[k];
		if (w->job) {
			snprintf(err, err_size, "%s is %s; restart once it is done", w->cfg->name,
				 vram_wl_state_name(w->state));
			return -EBUSY;
		}
	}
	char why[512];
	int r = write_file(m, why, sizeof(why));
	if (r < 0) {
		snprintf(err, err_size, "could not write the state file: %s", why);
		return r;
	}
	m->state_written = true;
	m->state_print = fingerprint(m);
	return 0;
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
