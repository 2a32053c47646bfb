/* SPDX-License-Identifier: MIT */
/*
 * Overlapped swaps: when making room for B means offloading A on the same
 * GPU, B's restore does not wait for A's offload to end. A reports the
 * memory it has given back as it goes (PROGRESS of the hook protocol), the
 * ledger counts A for what it still holds (core/policy.c), and B's restore
 * creates memory only within the grant this file sends it (GRANT): the
 * room the ledger shows on B's GPU, less what B holds there already (its
 * context and whatever did not move). Pieces of B are mapped while pieces
 * of A still copy out, so the two transfers share the PCIe link, one in
 * each direction, and the GPU's budget holds at every instant: the
 * ordering rule lives here, in the grant, and the hook enforces it.
 *
 * It applies when B and A are each one process on one GPU with a hook of
 * protocol 4 (engine can_overlap); other victims are counted whole until
 * their offload ends, as without overlap, and B is granted what is left.
 * A victim with progress never takes memory back: a copy that fails after
 * some went leaves it offloaded. A grant that can no longer grow (nothing
 * is being evicted and the room is short) cancels B's restore, which is
 * undone and leaves B offloaded, as a refused restore does.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/units.h"
#include "core/policy.h"

/* VRAMD_SWAP_OVERLAP=0 turns overlap off, for measuring swaps one transfer after the other. */
#define OVERLAP_ENV "VRAMD_SWAP_OVERLAP"

bool mgr_overlap_can(struct vram_manager *m, const struct vram_workload *w)
{
	const char *env = getenv(OVERLAP_ENV);
	if (env && strcmp(env, "0") == 0)
		return false;
	return w->engine && w->engine->can_overlap && w->engine->grant &&
	       w->engine->can_overlap(w, &m->host);
}

void mgr_overlap_offload_begins(struct vram_manager *m, struct vram_workload *w)
{
	struct vram_instance *in = &w->instances[0];
	in->swap_base = in->swap_freed = 0;
	if (w->n_instances != 1 || in->n_gpus != 1)
		return;
	struct vram_policy_ledger l;
	if (mgr_ledger_build(m, NULL, &l) < 0)
		return;
	for (size_t i = 0; i < l.n_residents; i++)
		if (l.owners[i] == w && l.residents[i].n_gpus == 1)
			in->swap_base = l.residents[i].bytes_on_gpu ? l.residents[i].bytes_on_gpu[0]
								    : l.residents[i].bytes_per_gpu;
	vram_policy_ledger_done(&l);
}

void mgr_overlap_on_progress(struct vram_job *job, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	if (w->job != job || w->n_instances != 1)
		return;
	w->instances[0].swap_freed = job->freed;
	char b[32];
	vram_units_format_bytes(job->freed, b, sizeof(b));
	vram_debug("%s: the offload has given back %s", w->cfg->name, b);
	mgr_overlap_regrant(m);
}

/* The bytes w's restore must create in all: what it moved out. 0: not known. */
static uint64_t restore_need(const struct vram_workload *w)
{
	return w->offloaded_bytes > w->parked_bytes ? w->offloaded_bytes : w->parked_bytes;
}

/* Whether a workload is still being evicted: room may still come. */
static bool room_may_come(struct vram_manager *m)
{
	for (size_t k = 0; k < m->n_live; k++)
		if (m->wptrs[k]->evicting)
			return true;
	return false;
}

/* Sends w's granted restore the room there is now. */
static void regrant_one(struct vram_manager *m, struct vram_workload *w)
{
	const struct vram_instance *in = &w->instances[0];
	if (w->swap_grant == UINT64_MAX)
		return; /* all of it granted */
	struct vram_policy_ledger l;
	if (mgr_ledger_build(m, w, &l) < 0)
		return;
	uint64_t room = vram_policy_room(&l, in->gpus[0]);
	vram_policy_ledger_done(&l);
	/* what w holds on its GPU already, however much of it moved: its plan less what moved */
	uint64_t given = in->bytes_on_gpu[0] ? in->bytes_on_gpu[0] : in->bytes_per_gpu;
	uint64_t need = restore_need(w);
	uint64_t stays = given > need ? given - need : 0;
	uint64_t grant = room > stays ? room - stays : 0;
	/* all of its plan fits: nothing to hold back, however much it moves */
	if (room >= given)
		grant = UINT64_MAX;
	if (grant <= w->swap_grant && grant != UINT64_MAX) {
		if (!room_may_come(m) && (need == 0 || grant < need)) {
			char r[32], n[32];
			vram_units_format_bytes(room, r, sizeof(r));
			vram_units_format_bytes(given, n, sizeof(n));
			vram_info("%s: the restore is given up: GPU %u has %s free of the %s it needs, and "
				  "no eviction is under way", w->cfg->name, in->gpus[0], r, n);
			w->swap_granted = false;
			vram_job_grant(w->job, 0, true); /* completes the job: touch nothing after */
		}
		return;
	}
	w->swap_grant = grant;
	char g[32];
	vram_units_format_bytes(grant == UINT64_MAX ? need : grant, g, sizeof(g));
	vram_debug("%s: restore granted %s%s on GPU %u", w->cfg->name, g, grant == UINT64_MAX ? " (all)" : "",
		   in->gpus[0]);
	vram_job_grant(w->job, grant, false);
}

void mgr_overlap_regrant(struct vram_manager *m)
{
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		if (w->swap_granted && w->job && w->job->kind == VRAM_JOB_RESTORE && w->job->granted &&
		    !w->job->completed)
			regrant_one(m, w);
	}
}
