/* SPDX-License-Identifier: MIT */
/*
 * The host ledger of the running daemon, on the registry's floor (it calls
 * none of the manager's files, so every floor above may ask it): what each
 * workload holds in host memory, the host's memory (/proc/meminfo), and the
 * budget of the config, as core/hostplan.h takes them, so that the manager
 * can decide with vram_host_make_room and status, /metrics and the
 * TTS-style status show the same numbers. It only reads.
 */
#include "daemon/manager_int.h"

#include <limits.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "gpu/gpu.h"

#include "common/meminfo.h"
#include "core/hostplan.h"
#include "daemon/hookchan.h"

/*
 * What w holds in host memory now: the one place these numbers come from.
 * A workload whose processes the hook counts (vram_hookchan_host): what they
 * report, pinned (held), kept after a restore, and parked on disk. Others:
 * while offloaded, what the engine measured its copy takes of host RAM (the
 * checkpoint engine: how much its processes' resident memory grew, since
 * the driver keeps the checkpoint in them), else the bytes it moved (the
 * sim engine's simulated copy); a restore and a park set them back to 0;
 * and parked_bytes on disk.
 */
void mgr_host_usage(struct vram_manager *m, const struct vram_workload *w,
		    struct mgr_host_usage *ret)
{
	*ret = (struct mgr_host_usage){ .held = w->host_held_bytes ? w->host_held_bytes : w->offloaded_bytes,
					.on_disk = w->parked_bytes };
	if (!m->hookchan || !w->engine || (w->engine->kind != VRAM_ENGINE_HOOK &&
					   w->engine->kind != VRAM_ENGINE_HOOK_CHECKPOINT))
		return;
	uint64_t pinned = 0, kept = 0, parked = 0;
	if (vram_hookchan_host(m->hookchan, w->cfg->name, &pinned, &kept, &parked) == 0)
		return; /* no process of it reports them (a hook older than protocol 3) */
	*ret = (struct mgr_host_usage){ .held = pinned, .kept = kept < pinned ? kept : pinned,
					.on_disk = parked };
}

/* Whether w's engine can move its host copy to the disk tier. */
static bool engine_can_park(const struct vram_engine *e)
{
	return e && e->park;
}

/* The hook frees the pinned buffers it kept after a restore when told to (DROP_HOST). */
static bool engine_can_drop_kept(const struct vram_engine *e)
{
	return e && (e->kind == VRAM_ENGINE_HOOK || e->kind == VRAM_ENGINE_HOOK_CHECKPOINT);
}

/*
 * Whether the disk tier can take a park file now, and its free bytes: the
 * park directory's file system (statvfs), or its parent's while it does
 * not exist yet (it is made on the first park).
 */
static void park_room(struct vram_manager *m, bool *ret_usable, uint64_t *ret_free)
{
	*ret_usable = false;
	*ret_free = VRAM_HOST_UNKNOWN;
	char dir[PATH_MAX];
	int n = snprintf(dir, sizeof(dir), "%s", mgr_park_dir(m));
	if (n < 0 || (size_t)n >= sizeof(dir))
		return;
	struct statvfs st;
	while (statvfs(dir, &st) < 0) {
		char *slash = strrchr(dir, '/');
		if (errno != ENOENT || !slash || slash == dir)
			return;
		*slash = '\0';
	}
	*ret_usable = true;
	*ret_free = (uint64_t)st.f_bavail * st.f_frsize;
}

/* Sums of sizes saturate: a process's report must not wrap a total into a small one. */
static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Host memory of a simulated machine: this many times its simulated GPUs' memory. */
#define SIM_HOST_PER_GPU_MEMORY 2

/*
 * The host's memory. With simulated GPUs the host is simulated too, unless
 * $VRAM_MEMINFO names a file: the simulated engines' copies are not in this
 * machine's RAM, and a demo of 2 x 80 GiB GPUs on a laptop must not find its
 * RAM full. Its total is SIM_HOST_PER_GPU_MEMORY times the GPUs' memory and
 * what is available is that less what the workloads hold. Returns 0 or
 * -errno (then nothing is known).
 */
static int host_meminfo(struct vram_manager *m, const struct vram_host_entry *entries, size_t n,
			struct vram_meminfo *ret)
{
	if (!vram_gpu_is_sim(m->gpus) || secure_getenv("VRAM_MEMINFO"))
		return vram_meminfo_read(NULL, ret);
	uint64_t gpu = 0, held = 0;
	for (unsigned i = 0; i < vram_gpu_count(m->gpus); i++) {
		struct vram_gpu_info info;
		if (vram_gpu_query(m->gpus, i, &info) == 0)
			gpu = sat_add(gpu, info.mem_total);
	}
	for (size_t k = 0; k < n; k++)
		held = sat_add(held, entries[k].held);
	uint64_t total = gpu > UINT64_MAX / SIM_HOST_PER_GPU_MEMORY ? UINT64_MAX
								   : gpu * SIM_HOST_PER_GPU_MEMORY;
	*ret = (struct vram_meminfo){.total = total, .available = total > held ? total - held : 0,
				     .has_available = true};
	return 0;
}

int mgr_host_ledger(struct vram_manager *m, struct vram_host_ledger *ret)
{
	struct vram_host_entry *entries = calloc(m->n_live ? m->n_live : 1, sizeof(*entries));
	if (!entries)
		return -ENOMEM;
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		struct mgr_host_usage u;
		mgr_host_usage(m, w, &u);
		entries[k] = (struct vram_host_entry){
			.w = w,
			.name = w->cfg->name,
			.state = w->state,
			.priority = w->cfg->priority,
			.last_used_ms = w->last_used_ms,
			.held = u.held,
			.kept = u.kept,
			.on_disk = u.on_disk,
			.can_park = engine_can_park(w->engine),
			.can_drop_kept = engine_can_drop_kept(w->engine),
			/* an action runs or waits on it, or requests wait for it to come back */
			.busy = w->job || w->awaiting_room || w->evicting ||
				(w->state != VRAM_WL_READY && w->in_flight > 0),
		};
	}
	struct vram_meminfo mi;
	bool known = host_meminfo(m, entries, m->n_live, &mi) == 0;
	const struct vram_config *cfg = m->cfg;
	uint64_t total = known ? mi.total : 0;
	*ret = (struct vram_host_ledger){
		.total = total,
		.available = known && mi.has_available ? mi.available : VRAM_HOST_UNKNOWN,
		.reserve = vram_host_reserve(total, cfg->host.reserve),
		.entries = entries,
		.n_entries = m->n_live,
	};
	ret->budget = vram_host_budget(total, ret->reserve, cfg->host.limit);
	park_room(m, &ret->park_usable, &ret->park_free);
	return 0;
}

void mgr_host_ledger_done(struct vram_host_ledger *l)
{
	free((void *)l->entries);
	l->entries = NULL;
	l->n_entries = 0;
}

/* Bytes as a JSON number; null for a size not known. */
static json_t *bytes_json(uint64_t v, bool known)
{
	if (!known)
		return json_null();
	return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

json_t *vram_manager_host_json(struct vram_manager *m)
{
	struct vram_host_ledger l;
	if (mgr_host_ledger(m, &l) < 0)
		return NULL;
	uint64_t parked = 0, kept = 0, on_disk = 0;
	for (size_t i = 0; i < l.n_entries; i++) {
		const struct vram_host_entry *e = &l.entries[i];
		uint64_t k = e->kept < e->held ? e->kept : e->held;
		parked = sat_add(parked, e->held - k);
		kept = sat_add(kept, k);
		on_disk = sat_add(on_disk, e->on_disk);
	}
	const struct vram_config *cfg = m->cfg;
	const char *dir = mgr_park_dir(m);
	json_t *o = json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:s}",
			      "total", bytes_json(l.total, l.total > 0),
			      "available", bytes_json(l.available, l.available != VRAM_HOST_UNKNOWN),
			      "reserve", bytes_json(l.reserve, true),
			      "limit", bytes_json(cfg->host.limit, cfg->host.limit > 0),
			      "budget", bytes_json(l.budget, l.budget != VRAM_HOST_UNKNOWN),
			      "parked", bytes_json(parked, true),
			      "kept", bytes_json(kept, true),
			      "on_disk", bytes_json(on_disk, true),
			      "park_dir", dir);
	mgr_host_ledger_done(&l);
	return o;
}
