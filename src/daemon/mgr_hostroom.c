/* SPDX-License-Identifier: MIT */
/*
 * Host memory for offloads, on the manager's floor: an offload puts a
 * workload's GPU memory into host RAM, so before one begins the host ledger
 * (mgr_host.c) is asked whether the copy fits the budget, and
 * vram_host_make_room (core/hostplan.h) decides how to make room when it
 * does not: drop the kept buffers of ready workloads, park offloaded ones of
 * lower or equal priority on the disk tier, release them, or refuse with the
 * numbers. The kernel's OOM killer is never what decides.
 *
 * The steps take time (a park writes gigabytes), and their memory is still
 * held until they end, so the offload waits for them: it is remembered in
 * the workload's slot and begun from the kick once nothing that makes room
 * is still running and the ledger says it fits. While steps run, no new
 * plan is made (their memory still counts, and a second plan would pick
 * more victims than needed). A wait that cannot end (the steps failed, or
 * what they freed was not enough and nothing more can be freed) refuses the
 * offload with the numbers; so does one past HOST_WAIT_MAX_MS.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/units.h"
#include "core/hostplan.h"
#include "daemon/hookchan.h"

#define HOST_WAIT_MAX_MS 120000 /* the longest an offload waits for room in host memory */

/* A DROP_HOST answer: the pinned buffers a ready process kept are freed (or not). */
static void on_drop_done(const struct vram_hookchan_result *res, void *arg)
{
	struct vram_manager *m = arg;
	if (m->host_drops)
		m->host_drops--;
	if (res->status < 0)
		vram_warn("host memory: pid %d did not free its kept buffers: %s", (int)res->pid,
			  res->text[0] ? res->text : strerror(-res->status));
	else
		vram_info("host memory: pid %d freed %" PRIu64 " bytes of kept buffers",
			  (int)res->pid, res->bytes);
	mgr_kick(m);
}

/* Tells every hooked process of w to free the pinned buffers it kept after its restore. */
static void drop_kept(struct vram_manager *m, struct vram_workload *w)
{
	pid_t pids[VRAM_PLAN_MAX_GPUS * 4];
	size_t n = m->hookchan ? vram_hookchan_pids(m->hookchan, w->cfg->name, pids,
						    sizeof(pids) / sizeof(pids[0]))
			       : 0;
	for (size_t i = 0; i < n && i < sizeof(pids) / sizeof(pids[0]); i++) {
		int r = vram_hookchan_send_path(m->hookchan, pids[i], VRAM_HOOKCHAN_DROP_HOST, 0, NULL,
						on_drop_done, m, NULL);
		if (r == 0)
			m->host_drops++;
		else
			vram_debug("host memory: drop-host to pid %d: %s", (int)pids[i], strerror(-r));
	}
}

/* Begins the steps of a plan that makes room for asking. */
static void run_steps(struct vram_manager *m, const struct vram_workload *asking,
		      const struct vram_host_room *room)
{
	for (size_t i = 0; i < room->n_steps; i++) {
		const struct vram_host_step *st = &room->steps[i];
		struct vram_workload *v = st->w;
		char text[192], b[32];
		vram_units_format_bytes(st->bytes, b, sizeof(b));
		snprintf(text, sizeof(text), "%s of host memory for %s's offload", b,
			 asking->cfg->name);
		vram_info("host memory: %s %s to free %s", vram_host_action_name(st->action),
			  v->cfg->name, text);
		switch (st->action) {
		case VRAM_HOST_DROP_KEPT:
			drop_kept(m, v);
			break;
		case VRAM_HOST_PARK: {
			char why[224];
			snprintf(why, sizeof(why), "parked to make room: %s", text);
			mgr_begin_park(m, v, VRAM_REASON_HOST_ROOM, why);
			break;
		}
		case VRAM_HOST_RELEASE: {
			char why[224];
			snprintf(why, sizeof(why), "released to make room: %s", text);
			mgr_stop_workload(m, v, VRAM_REASON_HOST_ROOM, why);
			break;
		}
		}
	}
}

/* Whether something that makes room (or takes it) is still under way. */
static bool room_in_progress(const struct vram_manager *m)
{
	if (m->host_drops)
		return true;
	for (size_t k = 0; k < m->n_live; k++) {
		const struct vram_workload *w = m->wptrs[k];
		if (w->job || w->state == VRAM_WL_STOPPING)
			return true;
	}
	return false;
}

/*
 * The host memory w's offload will take: what its hooked processes report
 * they use and can move (a declared cap, 60 GiB for a model of 7, is not
 * what moves), else the GPU bytes charged to it.
 */
static uint64_t offload_need(struct vram_manager *m, const struct vram_workload *w)
{
	uint64_t used = 0, nonmovable = 0;
	if (m->hookchan && w->engine && (w->engine->kind == VRAM_ENGINE_HOOK ||
					 w->engine->kind == VRAM_ENGINE_HOOK_CHECKPOINT) &&
	    vram_hookchan_usage(m->hookchan, w->cfg->name, &used, &nonmovable) > 0)
		return used > nonmovable ? used - nonmovable : 0;
	return vram_workload_gpu_bytes(w);
}

/* The plan for w's offload now: 0 (fits: no steps), -EAGAIN (steps begun), -ENOSPC (err). */
static int plan(struct vram_manager *m, struct vram_workload *w, char *err, size_t err_size)
{
	uint64_t need = offload_need(m, w);
	if (!w->engine || !w->engine->keeps_process || need == 0)
		return 0;
	struct vram_host_ledger l;
	if (mgr_host_ledger(m, &l) < 0)
		return 0; /* nothing known: the offload goes on, as before there was a ledger */
	struct vram_host_room room;
	int r = vram_host_make_room(&l, w, need, &room);
	if (r == -ENOSPC)
		snprintf(err, err_size, "%s", room.message);
	else if (r == 0 && room.n_steps > 0)
		run_steps(m, w, &room);
	mgr_host_ledger_done(&l);
	if (r == -ENOSPC)
		return -ENOSPC;
	return r == 0 && room.n_steps > 0 ? -EAGAIN : 0;
}

int mgr_host_gate(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		  const char *text, bool then_park, char *err, size_t err_size)
{
	int r = plan(m, w, err, err_size);
	if (r != -EAGAIN)
		return r;
	struct mgr_slot *slot = mgr_slot(m, w);
	slot->host_wait = true;
	slot->host_reason = reason;
	snprintf(slot->host_text, sizeof(slot->host_text), "%s", text ? text : "");
	slot->host_then_park = then_park;
	slot->host_since_ms = vram_now_ms();
	vram_info("%s: its offload waits for room in host memory", w->cfg->name);
	return -EAGAIN;
}

/* The wait of w ends: its offload begins, or is refused with why. */
static void end_wait(struct vram_manager *m, struct vram_workload *w, int r, const char *why)
{
	struct mgr_slot *slot = mgr_slot(m, w);
	slot->host_wait = false;
	if (r == 0 && w->state == VRAM_WL_READY && !w->job) {
		mgr_begin_offload_now(m, w, slot->host_reason, slot->host_text,
				      slot->host_then_park);
		return;
	}
	if (r < 0)
		mgr_host_refused(m, w, slot->host_reason, r, why);
	mgr_resolve_waiters(m, w);
}

void mgr_host_refused(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		      int error, const char *why)
{
	mgr_fmt_error(w, error, "offload refused: %s", why);
	vram_warn("%s: %s", w->cfg->name, w->last_error);
	if (reason == VRAM_REASON_IDLE)
		w->last_used_ms = vram_now_ms(); /* tried again an idle period later */
	if (reason == VRAM_REASON_EVICTED && w->state == VRAM_WL_READY) {
		/* the GPU room is still needed: released, as an engine that cannot offload is */
		w->evicting = true;
		mgr_stop_workload(m, w, VRAM_REASON_EVICTED,
				  "released to make room on the GPU: no room in host memory for its copy");
	}
}

void mgr_host_kick(struct vram_manager *m)
{
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		struct mgr_slot *slot = mgr_slot(m, w);
		if (!slot->host_wait)
			continue;
		if (w->state != VRAM_WL_READY) {
			end_wait(m, w, 1, NULL); /* a stop or a crash took it elsewhere */
			continue;
		}
		uint64_t waited = vram_now_ms() - slot->host_since_ms;
		if (waited > HOST_WAIT_MAX_MS) {
			end_wait(m, w, -ETIMEDOUT, "the room made for it in host memory did not come "
				 "within 120 s");
			continue;
		}
		if (room_in_progress(m))
			continue;
		char err[1024];
		int r = plan(m, w, err, sizeof(err));
		if (r == -EAGAIN)
			continue; /* more steps begun */
		end_wait(m, w, r, err);
	}
}
