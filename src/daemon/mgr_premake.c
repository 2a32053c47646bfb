/* SPDX-License-Identifier: MIT */
/*
 * Host buffers made ahead (host.premake_buffers, on by default): a process
 * makes the pinned host buffers of its first offload on the spot, and
 * making them, not copying, is what runs slowly then (first touch of host
 * memory: 3-19 GB/s against the link's 55). So once a hooked workload is
 * ready, and the host budget has room for all of its buffers besides what
 * every workload holds already, each of its processes is asked to make
 * them in the background at the lowest CPU priority (PREPARE_HOST), once it
 * has been ready for PREMAKE_SETTLE_MS; its
 * first offload then runs at link speed. The buffers are kept buffers: the
 * host ledger counts them, and they are the first thing the host policy
 * frees (DROP_HOST) when host memory is short. A workload is asked once per
 * process; one whose buffers do not fit is not asked, and nothing is freed
 * to make them fit.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/units.h"
#include "core/hostplan.h"
#include "proto/hook_proto.h"

#define PREMAKE_PROCS 16 /* processes of one workload asked at once */
/*
 * ms a workload is ready before it is asked: its hook reports its usage at
 * most once a second, and the numbers must hold all it allocated, or the
 * ask would be for part of its buffers only.
 */
#define PREMAKE_SETTLE_MS 2500

static void on_prepared(const struct vram_hookchan_result *res, void *arg)
{
	(void)arg;
	if (res->status != 0 && res->status != -EALREADY)
		vram_debug("hook: process %d: %s", (int)res->pid, res->text);
	else if (res->bytes) {
		char b[32];
		vram_units_format_bytes(res->bytes, b, sizeof(b));
		vram_debug("hook: process %d makes %s of host buffers ahead", (int)res->pid, b);
	}
}

/* Bytes of host memory the ledger still has room for: within the budget and what the host has free. */
static uint64_t host_room(struct vram_manager *m)
{
	struct vram_host_ledger l = { 0 };
	if (mgr_host_ledger(m, &l) < 0)
		return 0;
	uint64_t held = 0;
	for (size_t i = 0; i < l.n_entries; i++)
		held += l.entries[i].held;
	uint64_t room = UINT64_MAX;
	if (l.budget != VRAM_HOST_UNKNOWN)
		room = l.budget > held ? l.budget - held : 0;
	if (l.available != VRAM_HOST_UNKNOWN) {
		uint64_t free = l.available > l.reserve ? l.available - l.reserve : 0;
		room = room < free ? room : free;
	}
	mgr_host_ledger_done(&l);
	return room;
}

/* The host's room, read (meminfo) only when a process is to be asked: this runs every tick. */
struct room {
	uint64_t bytes;
	bool known;
};

static void premake_one(struct vram_manager *m, struct vram_workload *w, struct room *room)
{
	pid_t pids[PREMAKE_PROCS];
	size_t n = vram_hookchan_pids(m->hookchan, w->cfg->name, pids, PREMAKE_PROCS);
	if (n > PREMAKE_PROCS)
		n = PREMAKE_PROCS;
	for (size_t i = 0; i < n; i++) {
		struct vram_hookchan_proc_info info;
		if (vram_hookchan_proc(m->hookchan, pids[i], &info) < 0 || info.premade_asked)
			continue;
		if (!info.connected || info.version < VRAM_HOOK_PROTO_VERSION_GRANT ||
		    info.state != VRAM_HOOK_STATE_RUNNING)
			continue;
		uint64_t movable = info.used > info.nonmovable ? info.used - info.nonmovable : 0;
		uint64_t need = movable > info.host_pinned ? movable - info.host_pinned : 0;
		if (!need)
			continue;
		if (!room->known) {
			room->bytes = host_room(m);
			room->known = true;
		}
		if (need > room->bytes)
			continue;
		if (vram_hookchan_prepare_host(m->hookchan, pids[i], need, on_prepared, NULL) == 0) {
			vram_hookchan_mark_premade(m->hookchan, pids[i]);
			room->bytes -= need;
		}
	}
}

void mgr_premake_kick(struct vram_manager *m)
{
	if (!m->hookchan || !m->cfg->host.premake_buffers)
		return;
	struct room room = { 0 };
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		if (w->state != VRAM_WL_READY || w->job || !w->engine ||
		    vram_now_ms() - w->ready_since_ms < PREMAKE_SETTLE_MS ||
		    (w->engine->kind != VRAM_ENGINE_HOOK && w->engine->kind != VRAM_ENGINE_HOOK_CHECKPOINT))
			continue;
		premake_one(m, w, &room);
	}
}
