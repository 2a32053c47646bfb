/* SPDX-License-Identifier: MIT */
/*
 * The manager proper: actions, start, offload and restore, placement and
 * eviction, the tick and the kick, and construction. It calls the
 * instances floor and the registry below it (manager_int.h). The features
 * on top call into it; it reaches them only through the kick, tick and free
 * jobs of those listed in features[].
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/units.h"
#include "core/plan.h"
#include "core/policy.h"
#include "daemon/hookchan.h"
#include "daemon/mps.h"
#include "daemon/supervise.h"
#include "common/workers.h"

#define TICK_MS 500                 /* period of the manager's tick */
#define RETRY_WAIT_EXIT_MS 100      /* restart due while processes still exit: look again */
#define WORKERS_THREADS 2
#define SIM_RATE_ENV "VRAMD_SIM_BANDWIDTH" /* bytes per second for the sim engine, e.g. 2GiB */
#define SIM_DISK_RATE_ENV "VRAMD_SIM_DISK_BANDWIDTH" /* bytes per second of the sim engine's disk */
#define SIM_FAIL_RESTORE_ENV "VRAMD_SIM_FAIL_RESTORE" /* "1": restores from parked fail (tests) */
#define MPS_REFRESH_TICKS 10        /* ask the MPS daemons for their servers every 10 ticks (5 s) */

/*
 * The features on the top floor that have jobs of their own, in the order
 * their kick jobs run. A feature that is only called (status, hook by pid,
 * the gateway's questions) is not listed.
 */
/* adopt before state: what it takes back is what the first state file written records */
static const struct mgr_feature *const features[] = {&mgr_adhoc_feature, &mgr_reload_feature,
						     &mgr_adopt_feature, &mgr_state_feature,
						     &mgr_decisions_feature, &mgr_container_feature};

#define N_FEATURES (sizeof(features) / sizeof(features[0]))

static void begin_offload(struct vram_manager *m, struct vram_workload *w,
			  enum vram_event_reason reason, const char *text, bool then_park);

/* ---- restart after backoff (the retry timer) ---- */

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	if (w->state != VRAM_WL_FAILED || m->shutting_down) {
		w->retry_pending = false;
		return;
	}
	if (mgr_any_process(w)) {
		struct timeval tv = mgr_tv(RETRY_WAIT_EXIT_MS);
		evtimer_add(mgr_slot(m, w)->retry_timer, &tv);
		return;
	}
	w->retry_pending = false;
	w->restarts++;
	char err[512];
	int r = mgr_begin_start(m, w, VRAM_REASON_RESTART, "restart after failure", err, sizeof(err));
	if (r < 0) {
		mgr_fmt_error(w, r, "restart: %s", err);
		vram_warn("Failed to restart %s: %s", w->cfg->name, err);
		mgr_schedule_retry(m, w);
	}
}

/* ---- engine host ---- */

static int host_stop_processes(void *ctx, struct vram_workload *w, struct vram_job *job)
{
	w->last_bytes = vram_workload_gpu_bytes(w);
	if (!mgr_any_process(w)) {
		vram_job_complete(job, 0, w->last_bytes, "no process to stop");
		return 0;
	}
	mgr_stop_processes(w);
	return 0;
}

static int host_park_path(void *ctx, const struct vram_workload *w, pid_t pid, char *buf, size_t size)
{
	return mgr_park_path(ctx, w->cfg->name, pid, true, buf, size);
}

static int host_spawn_processes(void *ctx, struct vram_workload *w, struct vram_job *job)
{
	struct vram_manager *m = ctx;
	char err[512];
	int r = mgr_start_processes(m, w, err, sizeof(err));
	if (r < 0) {
		job->process_lost = true;
		vram_job_complete(job, r, 0, "%s", err);
	}
	return 0;
}

/* ---- placement ---- */

static int gpu_infos(struct vram_manager *m, struct vram_gpu_info **ret, size_t *ret_n)
{
	size_t n = vram_gpu_count(m->gpus);
	if (n > VRAM_PLAN_MAX_GPUS)
		n = VRAM_PLAN_MAX_GPUS;
	struct vram_gpu_info *infos = calloc(n ? n : 1, sizeof(*infos));
	if (!infos)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (vram_gpu_query(m->gpus, (unsigned)i, &infos[i]) < 0) {
			infos[i].index = (unsigned)i;
			infos[i].mem_total = 0;
		}
	}
	*ret = infos;
	*ret_n = n;
	return 0;
}

/*
 * Plans w's instances. On success writes the assignment into w (GPUs, bytes)
 * and the victims to evict into *ret_victims. Returns 0, -ENOSPC/-EINVAL (err).
 */
int mgr_ledger_build(struct vram_manager *m, const struct vram_workload *exclude, struct vram_policy_ledger *l)
{
	struct vram_gpu_info *infos;
	size_t n;
	int r = gpu_infos(m, &infos, &n);
	if (r < 0)
		return r;
	r = vram_policy_ledger_build(l, infos, n, m->cfg->gpus.reserve, m->wptrs, m->n_live, exclude);
	free(infos);
	return r;
}

static int plan_workload(struct vram_manager *m, struct vram_workload *w, bool allow_evict,
			 enum vram_policy_where where, struct vram_policy_placement *pl, char *err,
			 size_t err_size)
{
	struct vram_policy_ledger l;
	int r = mgr_ledger_build(m, w, &l);
	if (r < 0)
		return r;
	r = vram_policy_place(&l, w, allow_evict, where, pl);
	vram_policy_ledger_done(&l);
	mgr_decision_plan(m, w, pl, r, allow_evict);
	if (r < 0) {
		snprintf(err, err_size, "%s", pl->message[0] ? pl->message : "does not fit");
		return r == -EINVAL ? -EINVAL : -ENOSPC;
	}
	for (size_t i = 0; i < w->n_instances && i < pl->n_results; i++) {
		struct vram_instance *in = &w->instances[i];
		const struct vram_plan_result *res = &pl->results[i];
		in->n_gpus = res->n_gpus;
		memcpy(in->gpus, res->gpus, res->n_gpus * sizeof(res->gpus[0]));
		memcpy(in->bytes_on_gpu, res->bytes, res->n_gpus * sizeof(res->bytes[0]));
		in->bytes_per_gpu = res->n_gpus ? res->bytes_per_gpu : 0;
	}
	if (pl->message[0])
		vram_info("%s: %s", w->cfg->name, pl->message);
	/* shown in its status: a fallback (fewer GPUs than asked, the CPU) is the user's to know */
	snprintf(w->placement_note, sizeof(w->placement_note), "%s", pl->message);
	w->placement_fallback = false;
	for (size_t i = 0; i < pl->n_results; i++)
		w->placement_fallback |= pl->results[i].outcome == VRAM_PLAN_SHARED ||
					 (pl->results[i].outcome == VRAM_PLAN_CPU &&
					  w->cfg->gpus.count > 0);
	return 0;
}

/*
 * Makes room for w: offloads (or, for engines that cannot, stops) each
 * victim; with overlap, those that can report their progress (w's restore
 * is granted the memory as it comes: mgr_overlap.c).
 */
static void evict(struct vram_manager *m, struct vram_workload *w,
		  const struct vram_policy_placement *pl, bool overlap)
{
	for (size_t v = 0; v < pl->n_victims; v++) {
		struct vram_workload *victim = pl->victims[v];
		if (victim->state != VRAM_WL_READY)
			continue;
		char text[160];
		snprintf(text, sizeof(text), "evicted to make room for %s", w->cfg->name);
		victim->evicting = true;
		victim->swap_progress = overlap && mgr_overlap_can(m, victim);
		begin_offload(m, victim, VRAM_REASON_EVICTED, text, false);
	}
}

/* ---- start, offload, restore, stop ---- */

int mgr_begin_start(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		    const char *text, char *err, size_t err_size)
{
	if (mgr_is_attached(w)) {
		/* there is no command to run: someone else started its processes */
		snprintf(err, err_size, "%s is attached (its processes were started by someone else, "
			 "e.g. a Slurm step): vramd does not start it", w->cfg->name);
		return -EBUSY;
	}
	w->engine = vram_engine_select(w, &m->host, w->engine_why, sizeof(w->engine_why));
	char why[512];
	if (mgr_mps_decide(m, w, why, sizeof(why)) < 0) {
		/* a clear failed state (visible in status), not a refusal: nothing to retry */
		mgr_fmt_error(w, -ENOENT, "%s", why);
		mgr_set_state(m, w, VRAM_WL_EV_START, reason, text);
		mgr_set_state(m, w, VRAM_WL_EV_START_FAILED, VRAM_REASON_MPS, w->last_error);
		return 0;
	}
	struct vram_policy_placement *pl = calloc(1, sizeof(*pl));
	if (!pl)
		return -ENOMEM;
	int r = plan_workload(m, w, true, VRAM_PLACE_ANY, pl, err, err_size);
	if (r < 0)
		goto out;
	r = mgr_assign_ports(m, w, err, err_size);
	if (r < 0)
		goto out;
	mgr_drop_copies(w);
	if (pl->n_victims > 0) {
		w->awaiting_room = true;
		mgr_set_state(m, w, VRAM_WL_EV_START, VRAM_REASON_WAIT_ROOM,
			      "waiting for evicted workloads to free memory");
		struct timeval tv = mgr_tv(w->cfg->health.start_timeout_ms);
		evtimer_add(mgr_slot(m, w)->start_timer, &tv);
		evict(m, w, pl, false);
		goto out;
	}
	mgr_set_state(m, w, VRAM_WL_EV_START, reason, text);
	r = mgr_start_processes(m, w, why, sizeof(why));
	if (r < 0) {
		mgr_fmt_error(w, r, "%s", why);
		mgr_set_state(m, w, VRAM_WL_EV_START_FAILED, VRAM_REASON_START_FAILED, w->last_error);
		r = 0; /* reported through the state, not as a refusal */
	}
out:
	free(pl);
	return r;
}

/* begin_start; a refusal is logged and kept as w's last error. Returns 0 or -errno. */
int mgr_start_logged(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		     const char *text)
{
	char err[VRAM_PLAN_MSG_MAX];
	int r = mgr_begin_start(m, w, reason, text, err, sizeof(err));
	if (r < 0) {
		mgr_fmt_error(w, r, "%s", err);
		vram_err("Failed to start %s: %s", w->cfg->name, err);
	}
	return r;
}

static void begin_park(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		       const char *text);

/* The event of a restore that did not begin: back to where it came from. */
static enum vram_wl_event restore_aborted(const struct vram_workload *w)
{
	return w->on_disk ? VRAM_WL_EV_UNPARK_ABORTED : VRAM_WL_EV_RESTORE_ABORTED;
}

static void offload_done(struct vram_manager *m, struct vram_workload *w, struct vram_job *job)
{
	for (size_t i = 0; i < w->n_instances; i++)
		w->instances[i].swap_base = w->instances[i].swap_freed = 0;
	if (job->error && job->still_offloaded) {
		/* an offload with progress takes nothing back: offloaded all the same */
		mgr_fmt_error(w, job->error, "offload with %s failed: %s", job->engine->name, job->message);
		vram_warn("%s: %s", w->cfg->name, w->last_error);
		w->offloaded_bytes = 0; /* not known: a restore brings back what went */
		mgr_set_state(m, w, VRAM_WL_EV_OFFLOADED, VRAM_REASON_OFFLOADED, w->last_error);
		return;
	}
	if (job->error) {
		w->park_queued = false;
		mgr_fmt_error(w, job->error, "offload with %s failed: %s", job->engine->name,
			      job->message);
		if (job->process_lost)
			mgr_fail_workload(m, w, VRAM_WL_EV_CRASH, VRAM_REASON_OFFLOAD_FAILED, true);
		else
			mgr_set_state(m, w, VRAM_WL_EV_OFFLOAD_FAILED, VRAM_REASON_OFFLOAD_FAILED,
				      w->last_error);
		return;
	}
	w->last_bytes = job->bytes;
	w->offloaded_bytes = job->engine->keeps_process ? job->bytes : 0;
	w->host_held_bytes = job->engine->keeps_process ? job->host_bytes : 0;
	mgr_set_state(m, w, VRAM_WL_EV_OFFLOADED, VRAM_REASON_OFFLOADED, job->message);
	/* a park asked while it was ready goes on, unless a start took it back meanwhile */
	if (w->park_queued && w->state == VRAM_WL_OFFLOADED && !w->job) {
		w->park_queued = false;
		begin_park(m, w, VRAM_REASON_ASKED, "park asked");
	}
}

static void restore_done(struct vram_manager *m, struct vram_workload *w, struct vram_job *job)
{
	w->swap_granted = false;
	w->swap_grant = 0;
	if (job->error) {
		mgr_fmt_error(w, job->error, "restore%s with %s failed: %s",
			      job->from_disk ? " from disk" : "", job->engine->name, job->message);
		if (job->process_lost || (job->engine->keeps_process && !job->still_offloaded))
			mgr_fail_workload(m, w, VRAM_WL_EV_RESTORE_FAILED, VRAM_REASON_RESTORE_FAILED, true);
		else
			mgr_set_state(m, w, restore_aborted(w), VRAM_REASON_RESTORE_FAILED, w->last_error);
		return;
	}
	/* the hook has read its files back: the disk is freed now, not at its exit */
	for (size_t i = 0; (job->from_disk || w->parked_bytes) && i < w->n_instances; i++)
		mgr_park_remove(m, w->cfg->name, w->instances[i].pid);
	w->last_bytes = job->bytes;
	mgr_drop_copies(w);
	w->last_error[0] = '\0';
	w->last_errno = 0;
	mgr_set_state(m, w, VRAM_WL_EV_RESTORED, VRAM_REASON_RESTORED, job->message);
}

/*
 * A park that failed without losing the process leaves the model in host
 * RAM, less what reached disk in processes that did park (a restore reads
 * those back).
 */
static void park_done(struct vram_manager *m, struct vram_workload *w, struct vram_job *job)
{
	uint64_t on_disk = job->bytes < w->offloaded_bytes ? job->bytes : w->offloaded_bytes;
	if (job->error) {
		mgr_fmt_error(w, job->error, "park with %s failed: %s", job->engine->name, job->message);
		if (job->process_lost) {
			mgr_fail_workload(m, w, VRAM_WL_EV_CRASH, VRAM_REASON_PARK_FAILED, true);
			return;
		}
		/* offloaded still: a restore is one from RAM, which the hook does from either */
		w->park_refused = true;
		w->parked_bytes = on_disk;
		w->offloaded_bytes -= on_disk;
		mgr_set_state(m, w, VRAM_WL_EV_PARK_FAILED, VRAM_REASON_PARK_FAILED, w->last_error);
		return;
	}
	w->last_bytes = job->bytes;
	w->parked_bytes = job->bytes;
	w->offloaded_bytes = 0;
	w->on_disk = true;
	mgr_set_state(m, w, VRAM_WL_EV_PARKED, VRAM_REASON_PARKED, job->message);
}

static void on_job_done(struct vram_job *job, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	w->job = NULL;
	w->last_action_seconds = job->seconds;
	switch (job->kind) {
	case VRAM_JOB_OFFLOAD:
		offload_done(m, w, job);
		break;
	case VRAM_JOB_RESTORE:
		restore_done(m, w, job);
		break;
	case VRAM_JOB_PARK:
		park_done(m, w, job);
		break;
	}
	vram_job_free(job);
}

/*
 * Begins offloading w, once its host copy has room in the host budget
 * (mgr_host_gate): at once, or when room has been made; refused with the
 * numbers when none can be.
 */
static void begin_offload(struct vram_manager *m, struct vram_workload *w,
			  enum vram_event_reason reason, const char *text, bool then_park)
{
	struct mgr_slot *slot = mgr_slot(m, w);
	if (slot->host_wait)
		return; /* it begins once the room is made */
	char err[1024];
	int r = mgr_host_gate(m, w, reason, text, then_park, err, sizeof(err));
	if (r == -EAGAIN)
		return;
	if (r < 0) {
		mgr_host_refused(m, w, reason, r, err);
		mgr_resolve_waiters(m, w);
		return;
	}
	mgr_begin_offload_now(m, w, reason, text, then_park);
}

void mgr_begin_offload_now(struct vram_manager *m, struct vram_workload *w,
			   enum vram_event_reason reason, const char *text, bool then_park)
{
	struct vram_job *job = vram_job_new(VRAM_JOB_OFFLOAD, w->engine, w, &m->host, on_job_done, w);
	if (!job) {
		mgr_fmt_error(w, -ENOMEM, "out of memory");
		return;
	}
	w->last_bytes = vram_workload_gpu_bytes(w);
	w->job = job;
	w->park_queued = then_park;
	job->progress = w->swap_progress;
	job->on_progress = mgr_overlap_on_progress;
	w->swap_progress = false;
	for (size_t i = 0; i < w->n_instances; i++)
		w->instances[i].swap_base = w->instances[i].swap_freed = 0;
	if (job->progress)
		mgr_overlap_offload_begins(m, w);
	mgr_set_state(m, w, VRAM_WL_EV_OFFLOAD, reason, text);
	int r = vram_job_start(job);
	if (r < 0) {
		w->job = NULL;
		w->park_queued = false;
		vram_job_free(job);
		mgr_fmt_error(w, r, "offload with %s could not begin: %s", w->engine->name, strerror(-r));
		mgr_set_state(m, w, VRAM_WL_EV_OFFLOAD_FAILED, VRAM_REASON_OFFLOAD_FAILED, w->last_error);
	}
}

/* Begins moving offloaded w's host copy to disk with its engine's park. */
static void begin_park(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		       const char *text)
{
	struct vram_job *job = vram_job_new(VRAM_JOB_PARK, w->engine, w, &m->host, on_job_done, w);
	if (!job) {
		mgr_fmt_error(w, -ENOMEM, "out of memory");
		return;
	}
	w->job = job;
	mgr_set_state(m, w, VRAM_WL_EV_PARK, reason, text);
	int r = vram_job_start(job);
	if (r < 0) {
		w->job = NULL;
		vram_job_free(job);
		w->park_refused = true;
		mgr_fmt_error(w, r, "park with %s could not begin: %s", w->engine->name, strerror(-r));
		mgr_set_state(m, w, VRAM_WL_EV_PARK_FAILED, VRAM_REASON_PARK_FAILED, w->last_error);
	}
}

static void run_restore_job(struct vram_manager *m, struct vram_workload *w)
{
	struct vram_job *job = vram_job_new(VRAM_JOB_RESTORE, w->engine, w, &m->host, on_job_done, w);
	if (!job) {
		mgr_fmt_error(w, -ENOMEM, "out of memory");
		mgr_set_state(m, w, restore_aborted(w), VRAM_REASON_RESTORE_FAILED, w->last_error);
		return;
	}
	job->from_disk = w->on_disk;
	job->granted = w->swap_granted;
	w->swap_grant = 0;
	w->job = job;
	int r = vram_job_start(job);
	if (r < 0) {
		w->swap_granted = false;
		w->job = NULL;
		vram_job_free(job);
		mgr_fmt_error(w, r, "restore with %s could not begin: %s", w->engine->name, strerror(-r));
		mgr_set_state(m, w, restore_aborted(w), VRAM_REASON_RESTORE_FAILED, w->last_error);
	}
}

/*
 * Where a restore may put w: a process that stays alive while offloaded comes
 * back on its own GPUs, or, with an engine that can move it (checkpoint), on
 * other GPUs of the same model when its own have no room; a restarted one
 * goes wherever the planner finds room, its own GPUs first.
 */
static enum vram_policy_where restore_where(const struct vram_workload *w)
{
	if (!w->engine || !w->engine->keeps_process)
		return VRAM_PLACE_PREFER;
	return w->engine->can_move ? VRAM_PLACE_SAME_MODEL : VRAM_PLACE_SAME_GPUS;
}

/* "GPU 1 (was GPU 0)" into buf when the plan moved an instance; "" otherwise. */
static void describe_move(const struct vram_workload *w, const unsigned (*old)[VRAM_PLAN_MAX_GPUS],
			  const size_t *old_n, char *buf, size_t size)
{
	buf[0] = '\0';
	for (size_t i = 0; i < w->n_instances; i++) {
		const struct vram_instance *in = &w->instances[i];
		if (in->n_gpus == old_n[i] && memcmp(in->gpus, old[i], old_n[i] * sizeof(unsigned)) == 0)
			continue;
		size_t len = strlen(buf);
		len += (size_t)snprintf(buf + len, size - len, "%sreplica %u onto GPU", len ? "; " : "",
					in->replica);
		for (size_t g = 0; g < in->n_gpus && len < size; g++)
			len += (size_t)snprintf(buf + len, size - len, "%s%u", g ? "," : " ", in->gpus[g]);
		for (size_t g = 0; g < old_n[i] && len < size; g++)
			len += (size_t)snprintf(buf + len, size - len, "%s%u", g ? "," : " (was GPU ",
						old[i][g]);
		if (old_n[i] && len < size)
			snprintf(buf + len, size - len, ")");
	}
}

static int begin_restore(struct vram_manager *m, struct vram_workload *w,
			 enum vram_event_reason reason, const char *text, char *err, size_t err_size)
{
	struct vram_policy_placement *pl = calloc(1, sizeof(*pl));
	unsigned (*old)[VRAM_PLAN_MAX_GPUS] = calloc(w->n_instances, sizeof(*old));
	size_t *old_n = calloc(w->n_instances, sizeof(*old_n));
	char why[512];
	int r = -ENOMEM;
	if (!pl || !old || !old_n)
		goto out;
	for (size_t i = 0; i < w->n_instances; i++) {
		old_n[i] = w->instances[i].n_gpus;
		memcpy(old[i], w->instances[i].gpus, old_n[i] * sizeof(unsigned));
	}
	w->park_queued = false; /* a start or restore wins over a park asked while it offloaded */
	r = plan_workload(m, w, true, restore_where(w), pl, err, err_size);
	if (r < 0)
		goto out;
	describe_move(w, old, old_n, why, sizeof(why));
	if (why[0] && !pl->n_victims) {
		size_t len = strlen(why);
		snprintf(why + len, sizeof(why) - len, ": %s", text);
		text = why;
	}
	/* restored as its victims' memory comes, when it and they can (mgr_overlap.c) */
	bool overlap = pl->n_victims > 0 && mgr_overlap_can(m, w);
	if (pl->n_victims && !overlap)
		mgr_set_state(m, w, VRAM_WL_EV_RESTORE, VRAM_REASON_WAIT_ROOM,
			      "waiting for evicted workloads to free memory");
	else if (overlap)
		mgr_set_state(m, w, VRAM_WL_EV_RESTORE, reason,
			      "restoring as evicted workloads free memory (overlapped)");
	else
		mgr_set_state(m, w, VRAM_WL_EV_RESTORE, reason, text);
	if (pl->n_victims > 0 && !overlap) {
		w->awaiting_room = true;
		struct timeval tv = mgr_tv(w->cfg->health.start_timeout_ms);
		evtimer_add(mgr_slot(m, w)->start_timer, &tv);
		evict(m, w, pl, false);
		goto out;
	}
	if (overlap) {
		evict(m, w, pl, true);
		w->swap_granted = true;
	}
	run_restore_job(m, w);
	if (overlap)
		mgr_overlap_regrant(m); /* the room there is already */
out:
	free(pl);
	free(old);
	free(old_n);
	return r;
}

/* Start/restore waiting for evicted memory: go ahead once it fits. */
static void retry_awaiting(struct vram_manager *m, struct vram_workload *w)
{
	struct vram_policy_placement *pl = calloc(1, sizeof(*pl));
	char err[VRAM_PLAN_MSG_MAX];
	if (!pl)
		return;
	int r = plan_workload(m, w, false,
			      w->state == VRAM_WL_RESTORING ? restore_where(w) : VRAM_PLACE_ANY, pl, err,
			      sizeof(err));
	free(pl);
	if (r < 0) {
		/* still evicting someone: wait for the next change */
		for (size_t k = 0; k < m->n_live; k++) {
			if (m->wptrs[k]->evicting)
				return;
		}
		evtimer_del(mgr_slot(m, w)->start_timer);
		w->awaiting_room = false;
		mgr_fmt_error(w, -ENOSPC, "%s", err);
		if (w->state == VRAM_WL_STARTING)
			mgr_set_state(m, w, VRAM_WL_EV_START_FAILED, VRAM_REASON_NO_ROOM, w->last_error);
		else
			mgr_set_state(m, w, restore_aborted(w), VRAM_REASON_NO_ROOM, w->last_error);
		return;
	}
	w->awaiting_room = false;
	if (w->state == VRAM_WL_RESTORING) {
		evtimer_del(mgr_slot(m, w)->start_timer);
		run_restore_job(m, w);
		return;
	}
	char why[512];
	r = mgr_start_processes(m, w, why, sizeof(why));
	if (r < 0) {
		evtimer_del(mgr_slot(m, w)->start_timer);
		mgr_fmt_error(w, r, "%s", why);
		mgr_set_state(m, w, VRAM_WL_EV_START_FAILED, VRAM_REASON_START_FAILED, w->last_error);
	}
}

/* Stops w whatever it is doing (stop, release, idle release, shutdown). */
void mgr_stop_workload(struct vram_manager *m, struct vram_workload *w,
		       enum vram_event_reason reason, const char *text)
{
	if (w->state == VRAM_WL_STOPPED)
		return;
	mgr_cancel_timers(m, w);
	evtimer_del(mgr_slot(m, w)->retry_timer);
	w->retry_pending = false;
	w->awaiting_room = false;
	w->swap_granted = false;
	if (w->job) {
		vram_job_cancel(w->job);
		w->job = NULL;
	}
	mgr_drop_copies(w); /* park files go with the processes' exits */
	mgr_mps_detach_idle(w);
	if (w->state != VRAM_WL_STOPPING)
		mgr_set_state(m, w, VRAM_WL_EV_STOP, reason, text);
	if (!mgr_any_process(w)) {
		mgr_set_state(m, w, VRAM_WL_EV_EXITED, VRAM_REASON_STOPPED, "no process left");
		return;
	}
	mgr_stop_processes(w);
}

/* ---- the kick ---- */

static void on_mps_quit(void *arg)
{
	struct vram_manager *m = arg;
	void (*done)(void *) = m->shutdown_done;
	m->shutdown_done = NULL;
	if (done)
		done(m->shutdown_arg);
}

/*
 * On the loop turn after a state change (mgr_kick), and after every tick:
 *   1. starts and restores waiting for evicted memory go ahead once it fits;
 *   2. the features' kick jobs (ad-hoc slots that ended are freed; a reload's
 *      pending restarts and removals go on; replaced configs are freed);
 *   3. shutdown: once every child is gone, the MPS daemons quit, then done.
 */
static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct vram_manager *m = arg;
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		if (w->awaiting_room && !m->shutting_down)
			retry_awaiting(m, w);
	}
	if (!m->shutting_down) {
		mgr_host_kick(m);
		mgr_overlap_regrant(m); /* an eviction that ended frees its memory for a granted restore */
		mgr_premake_kick(m);
	}
	for (size_t i = 0; i < N_FEATURES; i++)
		if (features[i]->kick)
			features[i]->kick(m);
	if (m->shutting_down && m->shutdown_done && !m->mps_quitting &&
	    vram_supervisor_live(m->sup) == 0) {
		/* every client is gone: the MPS daemons quit, then shutdown is done */
		m->mps_quitting = true;
		vram_mps_shutdown(m->mps, on_mps_quit, m);
	}
}

/* ---- the tick ---- */

static void on_mps_refreshed(int result, const char *message, void *arg)
{
}

/*
 * Every TICK_MS:
 *   1. the features' tick jobs (an ad-hoc workload that ended
 *      VRAM_MANAGER_ADHOC_LINGER_MS ago is removed);
 *   2. idle timers: offload workloads idle past offload_after, park offloaded
 *      ones idle past park_after, release those idle past release_after
 *      (never one with a request in flight);
 *   3. restart backoff: a workload ready for BACKOFF_RESET_MS starts its next
 *      backoff from 1 s again;
 *   4. room: workloads waiting for evicted memory look again (the kick,
 *      which also runs on every state change);
 *   5. MPS: every MPS_REFRESH_TICKS, the running MPS daemons are asked for
 *      their servers and clients (for status).
 */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct vram_manager *m = arg;
	uint64_t now = vram_now_ms();
	for (size_t i = 0; i < N_FEATURES && !m->shutting_down; i++)
		if (features[i]->tick)
			features[i]->tick(m, now);
	for (size_t k = 0; k < m->n_live && !m->shutting_down; k++) {
		struct vram_workload *w = m->wptrs[k];
		char text[96], dur[32];
		vram_units_format_duration_ms(vram_policy_idle_ms(w, now), dur, sizeof(dur));
		switch (vram_policy_idle_action(w, now)) {
		case VRAM_IDLE_OFFLOAD:
			snprintf(text, sizeof(text), "idle for %s", dur);
			begin_offload(m, w, VRAM_REASON_IDLE, text, false);
			break;
		case VRAM_IDLE_PARK:
			snprintf(text, sizeof(text), "idle for %s: parked on disk", dur);
			begin_park(m, w, VRAM_REASON_IDLE, text);
			break;
		case VRAM_IDLE_RELEASE:
			snprintf(text, sizeof(text), "idle for %s: released", dur);
			mgr_stop_workload(m, w, VRAM_REASON_IDLE, text);
			break;
		case VRAM_IDLE_NONE:
			break;
		}
		mgr_backoff_reset_if_settled(w);
	}
	/* the hook's numbers come after ready, at most once a second: look again */
	if (!m->shutting_down)
		mgr_premake_kick(m);
	if (++m->ticks % MPS_REFRESH_TICKS == 0 && !m->shutting_down)
		(void)vram_mps_refresh(m->mps, on_mps_refreshed, m);
	mgr_kick(m);
}

/* ---- construction ---- */

static const char *default_state_dir(char *buf, size_t size)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (getuid() == 0)
		snprintf(buf, size, "/run/vramd");
	else if (xdg && xdg[0])
		snprintf(buf, size, "%s/vramd", xdg);
	else
		snprintf(buf, size, "/tmp/vramd-%u", (unsigned)getuid());
	return buf;
}

/* fresh: the log starts empty (an ad-hoc name used before must not show the old output). */
int mgr_workload_init(struct vram_manager *m, struct vram_workload *w,
		      const struct vram_workload_config *cfg, size_t index, bool fresh)
{
	w->cfg = cfg;
	w->index = index;
	w->ctx = m;
	w->state = VRAM_WL_STOPPED;
	w->state_since_ms = vram_now_ms();
	w->last_used_ms = w->state_since_ms;
	w->offload_after_ms = cfg->idle.offload_after_ms;
	w->release_after_ms = cfg->idle.release_after_ms;
	w->park_after_ms = cfg->idle.park_after_ms;
	w->n_instances = cfg->replicas ? cfg->replicas : 1;
	w->instances = calloc(w->n_instances, sizeof(*w->instances));
	if (!w->instances)
		return -ENOMEM;
	for (size_t i = 0; i < w->n_instances; i++) {
		w->instances[i].owner = w;
		w->instances[i].replica = (unsigned)i;
	}
	struct mgr_slot *slot = mgr_slot(m, w);
	slot->retry_timer = evtimer_new(m->base, on_retry_timer, w);
	slot->start_timer = evtimer_new(m->base, mgr_on_start_timer, w);
	slot->probe_timer = evtimer_new(m->base, mgr_on_probe_timer, w);
	if (!slot->retry_timer || !slot->start_timer || !slot->probe_timer)
		return -ENOMEM;
	w->engine = vram_engine_select(w, &m->host, w->engine_why, sizeof(w->engine_why));
	w->log_path = mgr_asprintf("%s/logs/%s.log", m->state_dir, cfg->name);
	if (!w->log_path)
		return -ENOMEM;
	if (fresh)
		(void)unlink(w->log_path);
	int r = vram_logfile_open(w->log_path, m->cfg->daemon.workload_log_max_bytes
					      ? m->cfg->daemon.workload_log_max_bytes
					      : 10 * VRAM_MiB,
				  m->cfg->daemon.workload_log_keep, &w->log);
	if (r < 0) {
		vram_warn("Failed to open the log %s: %s; %s's output is dropped", w->log_path,
			  vram_open_strerror(r), cfg->name);
		w->log = NULL;
	}
	return 0;
}

/* Frees what w holds and clears its slot (w and what the daemon keeps beside it). */
void mgr_workload_done(struct vram_manager *m, struct vram_workload *w)
{
	struct mgr_slot *slot = mgr_slot(m, w);
	if (w->job)
		vram_job_cancel(w->job);
	for (size_t i = 0; w->instances && i < w->n_instances; i++) {
		vram_health_probe_cancel(w->instances[i].probe);
		vram_mps_client_free(w->instances[i].mps_client);
	}
	if (slot->retry_timer)
		event_free(slot->retry_timer);
	if (slot->start_timer)
		event_free(slot->start_timer);
	if (slot->probe_timer)
		event_free(slot->probe_timer);
	vram_logfile_close(w->log);
	free(w->log_path);
	free(w->instances);
	memset(w, 0, sizeof(*w));
	memset(slot, 0, sizeof(*slot));
}


/*
 * A workload's CUDA_VISIBLE_DEVICES names GPUs by the backend's index, with
 * CUDA_DEVICE_ORDER=PCI_BUS_ID: that is only the same GPU when the backend
 * lists GPUs by PCI bus id, as NVML does. Says so once at start when it does
 * not, naming the first pair out of order.
 */
static void check_gpu_order(struct vram_manager *m)
{
	if (m->cfg->gpus.visible_devices != VRAM_VISIBLE_INDEX)
		return;
	struct vram_gpu_info prev, cur;
	unsigned n = vram_gpu_count(m->gpus);
	for (unsigned i = 0; i < n; i++) {
		int r = vram_gpu_query(m->gpus, i, &cur);
		if (r < 0 || !cur.pci_bus_id[0]) {
			vram_debug("GPU order not checked: GPU %u has no PCI bus id (%s)", i,
				   r < 0 ? strerror(-r) : "not reported");
			return;
		}
		if (i && strcasecmp(prev.pci_bus_id, cur.pci_bus_id) > 0) {
			vram_warn("GPU %u (%s) comes before GPU %u (%s) but not in PCI bus order, "
				  "so CUDA_VISIBLE_DEVICES indices may name other GPUs; set "
				  "gpus.visible_devices: uuid", i - 1, prev.pci_bus_id, i,
				  cur.pci_bus_id);
			return;
		}
		prev = cur;
	}
}

int vram_manager_new(struct event_base *base, struct vram_config *cfg, struct vram_gpus *gpus,
		     struct vram_manager **ret)
{
	struct vram_manager *m = calloc(1, sizeof(*m));
	if (!m) {
		vram_config_free(cfg);
		vram_gpu_close(gpus);
		return -ENOMEM;
	}
	m->base = base;
	m->cfg = cfg;
	m->gpus = gpus;
	check_gpu_order(m);
	for (size_t i = 0; i < N_FEATURES; i++)
		if (features[i]->init)
			features[i]->init(m);
	int r = mgr_registry_init(m, on_kick);
	if (r < 0)
		goto out_free;
	r = -ENOMEM;
	char dir[256];
	m->state_dir = strdup(cfg->daemon.state_dir ? cfg->daemon.state_dir
						    : default_state_dir(dir, sizeof(dir)));
	m->tick = event_new(base, -1, EV_PERSIST, on_tick, m);
	m->park_dir = m->state_dir ? mgr_asprintf("%s/park", m->state_dir) : NULL;
	if (!m->state_dir || !m->tick || !m->park_dir)
		goto out_free;
	r = vram_supervisor_new(base, &m->sup);
	if (r < 0)
		goto out_free;
	r = vram_workers_new(base, WORKERS_THREADS, &m->workers);
	if (r < 0)
		goto out_free;
	/* MPS binaries missing is no error here: only a share: mps workload that starts says so */
	struct vram_mps_options mps_opt = {.state_dir = m->state_dir};
	r = vram_mps_new(base, &mps_opt, &m->mps);
	if (r < 0)
		goto out_free;
	vram_supervisor_set_reaped_other(m->sup, mgr_on_reaped_other, m);
	mgr_open_hook(m);
	/* before anything is spawned: relays started from now on can hand a log back to us */
	char *relay_sock = mgr_asprintf("%s/relay.sock", m->state_dir);
	r = relay_sock ? vram_supervisor_relay_listen(m->sup, relay_sock) : -ENOMEM;
	if (r < 0)
		vram_warn("Cannot listen on %s: %s; the output of workloads that outlive vramd stays "
			  "with their relays", relay_sock ? relay_sock : "the relay socket",
			  strerror(-r));
	free(relay_sock);
	m->host = (struct vram_engine_host){
		.base = base,
		.gpus = gpus,
		.workers = m->workers,
		.hookchan = m->hookchan,
		.hook_pids = vram_hookchan_pids, .hook_send = vram_hookchan_send, .hook_cancel = vram_hookchan_cancel,
		.hook_send_path = vram_hookchan_send_path, .hook_group = vram_hookchan_group,
		.hook_can_swap = vram_hookchan_can_swap, .hook_on_progress = vram_hookchan_on_progress,
		.hook_grant = vram_hookchan_grant,
		.hook_library = m->hook_library != NULL,
		.ctx = m,
		.stop_processes = host_stop_processes,
		.spawn_processes = host_spawn_processes,
		.park_path = host_park_path,
	};
	const char *rate = getenv(SIM_RATE_ENV);
	uint64_t bps;
	if (rate && vram_units_parse_bytes(rate, &bps) == 0 && bps > 0)
		vram_engine_sim_set_rate(bps, bps);
	rate = getenv(SIM_DISK_RATE_ENV);
	const char *fail = getenv(SIM_FAIL_RESTORE_ENV);
	if (!rate || vram_units_parse_bytes(rate, &bps) < 0)
		bps = 0; /* the default */
	vram_engine_sim_set_disk(bps, fail && strcmp(fail, "1") == 0);

	for (size_t i = 0; i < cfg->n_workloads; i++) {
		m->wptrs[i] = &m->ws[i];
		m->n_live = i + 1;
		r = mgr_workload_init(m, &m->ws[i], &cfg->workloads[i], i, false);
		if (r < 0)
			goto out_free;
	}
	*ret = m;
	return 0;

out_free:
	vram_manager_free(m);
	return r;
}

int vram_manager_run(struct vram_manager *m)
{
	if (m->running)
		return 0;
	struct timeval tv = mgr_tv(TICK_MS);
	if (event_add(m->tick, &tv) < 0)
		return -ENOMEM;
	m->running = true;
	/* adoption first: nothing the previous vramd left running is started twice */
	for (size_t i = 0; i < N_FEATURES; i++)
		if (features[i]->run)
			features[i]->run(m);
	/* after adoption, which keeps the files of the processes it took back parked */
	mgr_park_sweep(m);
	for (size_t k = 0; k < m->n_live; k++) {
		/* an ad-hoc workload starts when it is run, not here (one taken back ended) */
		if (mgr_is_adhoc(m, m->wptrs[k]))
			continue;
		if (m->wptrs[k]->cfg->start == VRAM_START_EAGER)
			mgr_start_logged(m, m->wptrs[k], VRAM_REASON_EAGER, "eager start");
	}
	return 0;
}

void vram_manager_shutdown(struct vram_manager *m, void (*done)(void *arg), void *arg)
{
	m->shutting_down = true;
	m->shutdown_done = done;
	m->shutdown_arg = arg;
	evtimer_del(m->tick);
	for (size_t k = 0; k < m->n_live; k++)
		mgr_stop_workload(m, m->wptrs[k], VRAM_REASON_SHUTDOWN, "vramd is shutting down");
	mgr_kick(m);
}

void vram_manager_free(struct vram_manager *m)
{
	if (!m)
		return;
	/* children first: their output goes into the workloads' log files */
	vram_supervisor_free(m->sup);
	for (size_t i = 0; m->ws && m->slots && i < m->n_ws; i++)
		mgr_workload_done(m, &m->ws[i]);
	for (size_t i = 0; i < N_FEATURES; i++)
		if (features[i]->done)
			features[i]->done(m);
	mgr_registry_done(m); /* before the hook channel: waiters by pid let go of their requests */
	vram_workers_free(m->workers);
	vram_mps_free(m->mps); /* after the workloads: they let go of their clients */
	vram_hookchan_free(m->hookchan); /* after the workloads: their jobs let go of requests */
	free(m->hook_library);
	if (m->tick)
		event_free(m->tick);
	free(m->state_dir);
	free(m->park_dir);
	vram_gpu_close(m->gpus);
	vram_config_free(m->cfg);
	free(m);
}

/* ---- MPS by hand (vramctl mps) ---- */

struct vram_mps *vram_manager_mps(struct vram_manager *m)
{
	return m->mps;
}

static void on_mps_by_hand(int result, const char *message, void *arg)
{
	if (result < 0)
		vram_warn("MPS: %s", message);
}

/* Checks GPU indices against the machine. Returns 0 or -EINVAL with err. */
static int check_gpus(struct vram_manager *m, const unsigned *gpus, size_t n, char *err, size_t err_size)
{
	unsigned count = vram_gpu_count(m->gpus);
	for (size_t i = 0; i < n; i++) {
		if (gpus[i] >= count) {
			snprintf(err, err_size, "no GPU %u: this machine has %u (0..%u)", gpus[i], count,
				 count ? count - 1 : 0);
			return -EINVAL;
		}
	}
	return 0;
}

int vram_manager_mps_start(struct vram_manager *m, const unsigned *gpus, size_t n, char *err, size_t err_size)
{
	char ids[VRAM_MPS_MAX_GPUS][VRAM_GPU_UUID_MAX];
	const char *id_ptrs[VRAM_MPS_MAX_GPUS];
	bool have_ids = true;
	if (n == 0 || n > VRAM_MPS_MAX_GPUS) {
		snprintf(err, err_size, "1 to %d GPUs", VRAM_MPS_MAX_GPUS);
		return -EINVAL;
	}
	int r = check_gpus(m, gpus, n, err, err_size);
	if (r < 0)
		return r;
	for (size_t g = 0; g < n; g++) {
		const char *uuid = vram_gpu_uuid(m->gpus, gpus[g]);
		ids[g][0] = '\0';
		if (uuid)
			snprintf(ids[g], sizeof(ids[g]), "%s", uuid);
		else
			have_ids = false;
		id_ptrs[g] = ids[g];
	}
	return vram_mps_start(m->mps, gpus, have_ids ? id_ptrs : NULL, n, on_mps_by_hand, NULL, err, err_size);
}

int vram_manager_mps_stop(struct vram_manager *m, const unsigned *gpus, size_t n, bool force, char *err,
			  size_t err_size)
{
	int r = check_gpus(m, gpus, n, err, err_size);
	if (r < 0)
		return r;
	return vram_mps_stop(m->mps, n ? gpus : NULL, n, force, on_mps_by_hand, NULL, err, err_size);
}

/* ---- actions ---- */

static int wrong_state(struct vram_workload *w, enum vram_action a, char *err, size_t err_size)
{
	static const char *const allowed[] = {
		[VRAM_ACTION_START] = "stopped, failed, offloaded or parked (or already starting/ready)",
		[VRAM_ACTION_STOP] = "any state",
		[VRAM_ACTION_OFFLOAD] = "ready (or already offloading/offloaded)",
		[VRAM_ACTION_RESTORE] = "offloaded or parked (or already restoring/ready)",
		[VRAM_ACTION_RELEASE] = "ready, offloaded or parked (or already stopping/stopped)",
		[VRAM_ACTION_PARK] = "ready or offloaded (or already offloading/parking/parked)",
	};
	snprintf(err, err_size, "%s is %s; %s is allowed when it is %s", w->cfg->name,
		 vram_wl_state_name(w->state), vram_action_name(a), allowed[a]);
	return -EBUSY;
}

/*
 * A workload's external processes (from before this vramd started) are not
 * its instances, so a refused offload or restore of the workload says how to
 * reach them. Appends to err.
 */
static void hint_external(struct vram_manager *m, const struct vram_workload *w, enum vram_action action,
			  char *err, size_t err_size)
{
	pid_t pid;
	size_t n = m->hookchan ? vram_hookchan_external_pids(m->hookchan, w->cfg->name, &pid, 1) : 0;
	size_t len = strlen(err);
	if (n == 0 || len + 1 >= err_size)
		return;
	snprintf(err + len, err_size - len,
		 "; %zu process%s of %s from before this vramd started %s still connected, not managed "
		 "as its instance: vramctl %s --pid %d",
		 n, n == 1 ? "" : "es", w->cfg->name, n == 1 ? "is" : "are", vram_action_name(action), (int)pid);
}

static void list_names(struct vram_manager *m, char *buf, size_t size)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t k = 0; k < m->n_live && len + 1 < size; k++)
		len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "",
					m->wptrs[k]->cfg->name);
}

/*
 * park: an offloaded workload is parked; a ready one is offloaded, then
 * parked (one action for the caller: its waiter waits for parked); one
 * being offloaded parks once it is offloaded. Refused with -EBUSY for an
 * engine that cannot park, with the reason.
 */
static int act_park(struct vram_manager *m, struct vram_workload *w, const char *why, char *err,
		    size_t err_size)
{
	enum vram_wl_state s = w->state;
	if (s == VRAM_WL_PARKING)
		return 0;
	if (s != VRAM_WL_READY && s != VRAM_WL_OFFLOADED && s != VRAM_WL_OFFLOADING)
		return wrong_state(w, VRAM_ACTION_PARK, err, err_size);
	if (!w->engine || !w->engine->park) {
		const char *name = w->engine ? w->engine->name : "none";
		snprintf(err, err_size, "%s cannot be parked: its offload engine %s %s; parking needs "
			 "the hook engine (offload: hook) or, on simulated GPUs, the sim engine",
			 w->cfg->name, name,
			 w->engine && !w->engine->keeps_process
				 ? "stops the process, so there is no memory to put on disk"
				 : "cannot write a process's memory to disk");
		return -EBUSY;
	}
	if (s == VRAM_WL_OFFLOADED) {
		w->park_refused = false; /* asked for: the idle timer may try again after this one */
		begin_park(m, w, VRAM_REASON_ASKED, why);
	} else if (s == VRAM_WL_OFFLOADING) {
		w->park_queued = true;
	} else {
		char text[128];
		snprintf(text, sizeof(text), "%s: offloaded first", why);
		begin_offload(m, w, VRAM_REASON_ASKED, text, true);
	}
	return 0;
}

int vram_manager_act(struct vram_manager *m, const char *name, enum vram_action action,
		     vram_action_cb cb, void *arg, struct vram_manager_waiter **ret_waiter,
		     char *err, size_t err_size)
{
	struct vram_workload *w = mgr_find(m, name);
	if (!w) {
		char names[512];
		list_names(m, names, sizeof(names));
		snprintf(err, err_size, "no workload named \"%s\" (known: %s)", name ? name : "",
			 names[0] ? names : "none");
		return -ENOENT;
	}
	if ((unsigned)action > VRAM_ACTION_PARK) {
		snprintf(err, err_size, "unknown action");
		return -EINVAL;
	}
	if (m->shutting_down) {
		snprintf(err, err_size, "vramd is shutting down");
		return -EBUSY;
	}
	struct mgr_slot *slot = mgr_slot(m, w);
	if (slot->removing && action != VRAM_ACTION_STOP && action != VRAM_ACTION_RELEASE) {
		snprintf(err, err_size, "%s was removed from the config by a reload; it stops once its "
			 "requests in flight end", name);
		return -ENOENT;
	}
	struct vram_manager_waiter *wt = mgr_waiter_new(m, w, action, cb, arg);
	if (!wt) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	wt->target = action == VRAM_ACTION_OFFLOAD                                    ? VRAM_WL_OFFLOADED
		     : action == VRAM_ACTION_PARK                                   ? VRAM_WL_PARKED
		     : action == VRAM_ACTION_STOP || action == VRAM_ACTION_RELEASE ? VRAM_WL_STOPPED
										   : VRAM_WL_READY;
	/* registered first: a change made below resolves it (from the loop) */
	mgr_waiter_link(m, wt);

	int r = 0;
	enum vram_wl_state s = w->state;
	char why[96];
	snprintf(why, sizeof(why), "%s asked", vram_action_name(action));
	if (slot->next) {
		if (action == VRAM_ACTION_START) {
			/* a reload's restart is pending: ready means ready with the new settings */
			wt->through_restart = true;
			slot->start_after = true;
			mgr_kick(m);
			goto out;
		}
		if (action == VRAM_ACTION_STOP || action == VRAM_ACTION_RELEASE)
			slot->start_after = false; /* asked to stop: it stays stopped after the restart */
	}
	if (s == wt->target) {
		mgr_waiter_resolve(wt, true);
		snprintf(wt->res.message, sizeof(wt->res.message), "%s is already %s", w->cfg->name,
			 vram_wl_state_name(s));
		wt->res.bytes = 0;
		wt->res.already = true;
		goto out;
	}
	switch (action) {
	case VRAM_ACTION_START:
		if (s == VRAM_WL_STARTING || s == VRAM_WL_RESTORING)
			break;
		if (s == VRAM_WL_STOPPED || s == VRAM_WL_FAILED) {
			evtimer_del(mgr_slot(m, w)->retry_timer);
			w->retry_pending = false;
			w->backoff_step = 0;
			vram_startlimit_reset(&slot->start_limit);
			r = mgr_begin_start(m, w, VRAM_REASON_ASKED, why, err, err_size);
		} else if (s == VRAM_WL_OFFLOADED || s == VRAM_WL_PARKED) {
			r = begin_restore(m, w, VRAM_REASON_ASKED, why, err, err_size);
		} else {
			r = wrong_state(w, action, err, err_size);
		}
		break;
	case VRAM_ACTION_STOP:
		if (s != VRAM_WL_STOPPING)
			mgr_stop_workload(m, w, VRAM_REASON_ASKED, why);
		break;
	case VRAM_ACTION_OFFLOAD:
		if (s == VRAM_WL_OFFLOADING)
			break;
		if (s == VRAM_WL_READY)
			begin_offload(m, w, VRAM_REASON_ASKED, why, false);
		else
			r = wrong_state(w, action, err, err_size);
		break;
	case VRAM_ACTION_RESTORE:
		if (s == VRAM_WL_RESTORING)
			break;
		if (s == VRAM_WL_OFFLOADED || s == VRAM_WL_PARKED)
			r = begin_restore(m, w, VRAM_REASON_ASKED, why, err, err_size);
		else
			r = wrong_state(w, action, err, err_size);
		break;
	case VRAM_ACTION_RELEASE:
		if (s == VRAM_WL_STOPPING)
			break;
		if (s == VRAM_WL_READY || s == VRAM_WL_OFFLOADED || s == VRAM_WL_PARKED)
			mgr_stop_workload(m, w, VRAM_REASON_ASKED, why);
		else
			r = wrong_state(w, action, err, err_size);
		break;
	case VRAM_ACTION_PARK:
		r = act_park(m, w, why, err, err_size);
		break;
	}
out:
	if (r < 0) {
		if (r == -EBUSY && (action == VRAM_ACTION_OFFLOAD || action == VRAM_ACTION_RESTORE))
			hint_external(m, w, action, err, err_size);
		mgr_waiter_free(wt);
		return r;
	}
	if (ret_waiter)
		*ret_waiter = wt;
	return 0;
}

int vram_manager_set_idle(struct vram_manager *m, const char *name, const struct vram_idle_set *set,
			  char *err, size_t err_size)
{
	struct vram_workload *w = NULL;
	if (name) {
		w = mgr_find(m, name);
		if (!w) {
			snprintf(err, err_size, "no workload named \"%s\"", name);
			return -ENOENT;
		}
	}
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *x = m->wptrs[k];
		if (w ? x != w : mgr_is_adhoc(m, x))
			continue;
		if (set->offload_after_ms != VRAM_IDLE_KEEP)
			x->offload_after_ms = set->offload_after_ms;
		if (set->release_after_ms != VRAM_IDLE_KEEP)
			x->release_after_ms = set->release_after_ms;
		if (set->park_after_ms != VRAM_IDLE_KEEP)
			x->park_after_ms = set->park_after_ms;
	}
	return 0;
}

void mgr_begin_park(struct vram_manager *m, struct vram_workload *w, enum vram_event_reason reason,
		    const char *text)
{
	begin_park(m, w, reason, text);
}
