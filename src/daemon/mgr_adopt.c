/* SPDX-License-Identifier: MIT */
/*
 * Adoption, a feature on the manager's top floor: when vramd starts, the
 * processes the previous vramd recorded in <state_dir>/state.json
 * (statefile.h, written by mgr_state.c) become instances of their workloads
 * again, instead of being listed as external and started a second time.
 *
 * It runs once, from vram_manager_run, before the eager starts and before
 * the loop serves a single request, so that nothing is started twice and no
 * port is taken twice. For each recorded workload (a workload of the config
 * by name, or an ad-hoc one made again from its spec):
 *   - the runtime settings (idle timers set through the API, CLI or MCP)
 *     are applied;
 *   - every recorded process must be alive with the same start time and the
 *     same command line, on GPUs this machine still has; then the supervisor
 *     takes it back (a pidfd watches its exit: vramd is not its parent) and
 *     the workload is ready, offloaded (its engine's bytes still in host
 *     RAM, restorable), parked (its park files on disk, restorable) or
 *     starting (its health checks go on), as recorded;
 *   - when not every replica passes, none is taken: the ones that are ours
 *     are sent SIGTERM (their group), a pid that is another program now is
 *     never signalled, and the restart policy decides, as for a crash: with
 *     on-failure or always it starts again at once (unless a process of ours
 *     is still ending: then on its next request), with never it stays
 *     stopped with the reason as its last error.
 * A recorded workload that the config no longer has gets its processes
 * stopped the same way. Every decision is one log line.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/proc.h"
#include "daemon/container.h"
#include "daemon/mps.h"
#include "daemon/peer.h"
#include "daemon/runas.h"
#include "daemon/statefile.h"
#include "daemon/supervise.h"
#include "gpu/gpu.h"

#define STATE_FILE_NAME "state.json"

/* What was learnt about the MPS control daemons before the workloads. */
struct adopt_ctx {
	size_t mps_adopted; /* control daemons taken back */
	bool mps_lost;      /* a recorded control daemon could not be taken back */
};

/* Counts for the summary line. */
struct adopt_sum {
	size_t ready, offloaded, parked, starting; /* workloads taken back in each state */
	size_t processes;                  /* processes taken back */
	size_t refused;                    /* recorded processes not taken back */
};

/*
 * Whether the recorded process si is there as recorded: alive, the same
 * start time, the same command line. If not, why (one phrase).
 */
static bool same_process(const struct vram_statefile_instance *si, char *why, size_t size)
{
	uint64_t ticks;
	if (vram_proc_start_ticks(si->pid, &ticks) < 0) {
		snprintf(why, size, "pid %d is gone", (int)si->pid);
		return false;
	}
	if (ticks != si->start_ticks) {
		snprintf(why, size, "pid %d is another process now (its start time differs)",
			 (int)si->pid);
		return false;
	}
	if (si->n_cmdline &&
	    !vram_proc_cmdline_is(si->pid, (const char *const *)si->cmdline, si->n_cmdline)) {
		snprintf(why, size, "pid %d runs another command now", (int)si->pid);
		return false;
	}
	return true;
}

#define RECORDED_CONTAINER_GRACE_MS 10000 /* the stop_grace default: the config may not name it any more */

/*
 * When the recorded process is a container runtime's run of the replica's
 * container (its command line as recorded holds --name=vramd-<name>-<N>),
 * the container is stopped through the runtime as well: the runtime passes
 * SIGTERM on, but a container's PID 1 may ignore it, and the container
 * would outlive everything that knows of it.
 */
static void stop_recorded_container(const char *name, const struct vram_statefile_instance *si)
{
	char ct[VRAM_CONTAINER_NAME_MAX], opt[VRAM_CONTAINER_NAME_MAX + 8];
	vram_container_name(name, si->replica, ct, sizeof(ct));
	snprintf(opt, sizeof(opt), "--name=%s", ct);
	for (size_t a = 1; a < si->n_cmdline; a++) {
		if (strcmp(si->cmdline[a], opt) != 0)
			continue;
		int r = vram_container_stop(si->cmdline[0], ct, RECORDED_CONTAINER_GRACE_MS);
		if (r < 0)
			vram_warn("Failed to run %s stop %s: %s", si->cmdline[0], ct, strerror(-r));
		else
			vram_info("state file: %s replica %u: container %s is stopped through %s", name,
				  si->replica, ct, si->cmdline[0]);
		return;
	}
}

/*
 * SIGTERM to the group of a process recorded as ours and found to be the
 * same one (a pidfd pins it while the start time is checked again, so a pid
 * reused meanwhile is never signalled).
 */
static void stop_recorded(const char *name, const struct vram_statefile_instance *si,
			  const char *why)
{
	int pfd = (int)syscall(SYS_pidfd_open, si->pid, 0);
	uint64_t ticks;
	if (pfd < 0 || vram_proc_start_ticks(si->pid, &ticks) < 0 || ticks != si->start_ticks) {
		if (pfd >= 0)
			close(pfd);
		return;
	}
	vram_warn("state file: %s replica %u: pid %d is stopped (SIGTERM to its group): %s", name,
		  si->replica, (int)si->pid, why);
	(void)kill(-si->pgid, SIGTERM);
	(void)syscall(SYS_pidfd_send_signal, pfd, SIGTERM, NULL, 0);
	close(pfd);
	stop_recorded_container(name, si);
}

/* The index of the GPU called uuid on this machine, or -1. */
static int gpu_index(struct vram_manager *m, const char *uuid)
{
	unsigned n = vram_gpu_count(m->gpus);
	for (unsigned i = 0; i < n; i++) {
		const char *u = vram_gpu_uuid(m->gpus, i);
		if (u && strcmp(u, uuid) == 0)
			return (int)i;
	}
	return -1;
}

/* The engine called name, or NULL. */
static const struct vram_engine *engine_named(const char *name)
{
	for (size_t i = 0; name && vram_engines[i]; i++)
		if (strcmp(vram_engines[i]->name, name) == 0)
			return vram_engines[i];
	return NULL;
}

/* The runtime settings changed through the API, CLI or MCP come back. */
static void apply_runtime(struct vram_workload *w, const struct vram_statefile_workload *sw)
{
	if (sw->offload_after.set)
		w->offload_after_ms = sw->offload_after.ms;
	if (sw->release_after.set)
		w->release_after_ms = sw->release_after.ms;
	if (sw->park_after.set)
		w->park_after_ms = sw->park_after.ms;
}

/*
 * Checks every recorded process of w: each replica once, alive as recorded,
 * on GPUs this machine has. Returns true when all of w's replicas pass;
 * otherwise says why in why.
 */
static bool check_workload(struct vram_manager *m, const struct vram_workload *w,
			   const struct vram_statefile_workload *sw, char *why, size_t size)
{
	if (sw->n_instances != w->n_instances) {
		snprintf(why, size, "%zu of its %zu replicas are recorded", sw->n_instances,
			 w->n_instances);
		return false;
	}
	bool seen[VRAM_STATEFILE_MAX_INSTANCES] = {false};
	for (size_t i = 0; i < sw->n_instances; i++) {
		const struct vram_statefile_instance *si = &sw->instances[i];
		if (si->replica >= w->n_instances || seen[si->replica]) {
			snprintf(why, size, "replica %u is recorded twice or does not exist",
				 si->replica);
			return false;
		}
		seen[si->replica] = true;
		if (si->state != sw->instances[0].state) {
			snprintf(why, size, "its replicas are recorded in different states");
			return false;
		}
		if (si->n_gpus > VRAM_PLAN_MAX_GPUS) {
			snprintf(why, size, "replica %u is recorded on %zu GPUs", si->replica,
				 si->n_gpus);
			return false;
		}
		for (size_t g = 0; g < si->n_gpus; g++) {
			if (gpu_index(m, si->gpu_uuids[g]) < 0) {
				snprintf(why, size, "GPU %s of replica %u is not on this machine",
					 si->gpu_uuids[g], si->replica);
				return false;
			}
		}
		char pwhy[128];
		if (!same_process(si, pwhy, sizeof(pwhy))) {
			snprintf(why, size, "replica %u: %s", si->replica, pwhy);
			return false;
		}
	}
	enum vram_statefile_inst_state st = sw->instances[0].state;
	bool kept = st == VRAM_STATEFILE_OFFLOADED || st == VRAM_STATEFILE_PARKED;
	const struct vram_engine *e = engine_named(sw->instances[0].engine);
	if (kept && sw->instances[0].engine && !e) {
		snprintf(why, size, "it was %s by the engine \"%s\", which this vramd does not "
			 "have", vram_statefile_inst_state_name(st), sw->instances[0].engine);
		return false;
	}
	if (st == VRAM_STATEFILE_PARKED && (!e || !e->park)) {
		snprintf(why, size, "it is recorded parked by %s, which cannot bring a parked "
			 "workload back", e ? e->name : "no engine");
		return false;
	}
	return true;
}

/* Fills in from si: port, GPUs by index, the bytes charged on each. */
static void place_instance(struct vram_manager *m, struct vram_instance *in,
			   const struct vram_statefile_instance *si)
{
	in->port = si->port;
	in->n_gpus = si->n_gpus;
	in->bytes_per_gpu = 0;
	for (size_t g = 0; g < si->n_gpus; g++) {
		in->gpus[g] = (unsigned)gpu_index(m, si->gpu_uuids[g]);
		in->bytes_on_gpu[g] = si->gpu_bytes ? si->gpu_bytes[g] : 0;
		if (in->bytes_on_gpu[g] > in->bytes_per_gpu)
			in->bytes_per_gpu = in->bytes_on_gpu[g];
	}
}

/* Takes w back from its record; on failure nothing of it is kept. Returns true when taken. */
static bool adopt_workload(struct vram_manager *m, struct vram_workload *w,
			   const struct vram_statefile_workload *sw, const struct adopt_ctx *ctx,
			   struct adopt_sum *sum)
{
	char why[512];
	const char *name = w->cfg->name;
	if (sw->n_instances == 0)
		return false;
	if (w->state != VRAM_WL_STOPPED) {
		snprintf(why, sizeof(why), "it is %s already", vram_wl_state_name(w->state));
		goto refuse;
	}
	if (!check_workload(m, w, sw, why, sizeof(why)))
		goto refuse;
	/*
	 * A process that runs through MPS lost its server with a control daemon
	 * that was not taken back; attaching it would start a new daemon under it.
	 */
	for (size_t i = 0; i < sw->n_instances; i++) {
		if (sw->instances[i].mps && (ctx->mps_lost || ctx->mps_adopted == 0 || !m->mps)) {
			snprintf(why, sizeof(why), "replica %u runs through MPS and its control "
				 "daemon was not taken back", sw->instances[i].replica);
			goto refuse;
		}
	}
	enum vram_statefile_inst_state st = sw->instances[0].state;
	bool resident = st != VRAM_STATEFILE_OFFLOADED && st != VRAM_STATEFILE_PARKED;
	uint64_t in_ram = 0, on_disk = 0;
	for (size_t i = 0; i < sw->n_instances; i++) {
		const struct vram_statefile_instance *si = &sw->instances[i];
		struct vram_instance *in = &w->instances[si->replica];
		place_instance(m, in, si);
		/* a container's run is taken back as one: it is stopped through its runtime again */
		char ct_name[VRAM_CONTAINER_NAME_MAX];
		enum vram_container_runtime kind = w->cfg->container.image
							   ? vram_container_resolve(w->cfg->container.runtime)
							   : VRAM_CONTAINER_AUTO;
		const char *runtime = kind != VRAM_CONTAINER_AUTO ? vram_container_runtime_name(kind) : NULL;
		vram_container_name(w->cfg->name, si->replica, ct_name, sizeof(ct_name));
		struct vram_adopt a = {
			.pid = si->pid,
			.start_ticks = si->start_ticks,
			.relay_pid = si->relay_pid,
			.relay_start_ticks = si->relay_start_ticks,
			.log = w->log,
			.container_runtime = runtime,
			.container_name = runtime ? ct_name : NULL,
		};
		char err[256];
		if (mgr_adopt_instance(m, w, in, &a, resident, si->mps, err, sizeof(err)) < 0) {
			snprintf(why, sizeof(why), "replica %u: %s", si->replica, err);
			/* the ones taken already are stopped through the normal path */
			mgr_stop_processes(w);
			goto refuse;
		}
		in_ram += si->offloaded_bytes;
		on_disk += si->parked_bytes;
	}
	mgr_slot(m, w)->adopted = true;
	const struct vram_engine *e = engine_named(sw->instances[0].engine);
	if ((st == VRAM_STATEFILE_OFFLOADED || st == VRAM_STATEFILE_PARKED) && e)
		w->engine = e; /* what offloaded or parked it brings it back */
	uint64_t now = vram_now_ms();
	w->last_used_ms = now;
	const char *text = "taken back from the previous vramd";
	/* a ready or parked one passed its checks under the previous vramd; liveness goes on */
	for (size_t i = 0; i < w->n_instances; i++)
		w->instances[i].healthy = st != VRAM_STATEFILE_STARTING;
	switch (st) {
	case VRAM_STATEFILE_READY:
		w->ready_since_ms = now;
		mgr_set_state(m, w, VRAM_WL_EV_ADOPTED_READY, VRAM_REASON_ADOPTED, text);
		mgr_liveness_arm(m, w);
		/* its health is checked at once, not one interval from now */
		struct event *t = mgr_slot(m, w)->probe_timer;
		if (t && evtimer_pending(t, NULL)) {
			struct timeval zero = {0, 0};
			evtimer_add(t, &zero);
		}
		sum->ready++;
		break;
	case VRAM_STATEFILE_OFFLOADED:
		w->offloaded_bytes = in_ram;
		mgr_set_state(m, w, VRAM_WL_EV_ADOPTED_OFFLOADED, VRAM_REASON_ADOPTED, text);
		sum->offloaded++;
		break;
	case VRAM_STATEFILE_PARKED:
		w->parked_bytes = on_disk;
		w->on_disk = true;
		mgr_set_state(m, w, VRAM_WL_EV_ADOPTED_PARKED, VRAM_REASON_ADOPTED, text);
		sum->parked++;
		break;
	case VRAM_STATEFILE_STARTING:
		mgr_set_state(m, w, VRAM_WL_EV_START, VRAM_REASON_ADOPTED, text);
		mgr_arm_start_checks(m, w);
		sum->starting++;
		break;
	}
	sum->processes += sw->n_instances;
	vram_info("state file: %s taken back %s with %zu process(es)", name,
		  vram_wl_state_name(w->state), sw->n_instances);
	return true;

refuse:
	vram_warn("state file: %s is not taken back: %s", name, why);
	bool ours_alive = false;
	for (size_t i = 0; i < sw->n_instances; i++) {
		char pwhy[128];
		if (mgr_is_attached(w)) {
			/* someone else's processes (a Slurm step): never signalled */
			vram_info("state file: %s replica %u: left running (attached)", name,
				  sw->instances[i].replica);
		} else if (same_process(&sw->instances[i], pwhy, sizeof(pwhy))) {
			stop_recorded(name, &sw->instances[i], "not every replica could be taken back");
			ours_alive = true;
		} else {
			vram_info("state file: %s replica %u: %s; not taken back", name,
				  sw->instances[i].replica, pwhy);
		}
	}
	sum->refused += sw->n_instances;
	/*
	 * Its processes ended while no vramd watched them: a crash, for the
	 * restart policy. An eager one is started by the eager starts anyway; one
	 * whose processes of ours are still ending starts on its next request
	 * (their port may not be free yet).
	 */
	mgr_fmt_error(w, -ECHILD, "not taken back from the previous vramd: %s", why);
	if (!ours_alive && w->state == VRAM_WL_STOPPED && w->cfg->restart != VRAM_RESTART_NEVER &&
	    w->cfg->start != VRAM_START_EAGER && !mgr_is_adhoc(m, w))
		(void)mgr_start_logged(m, w, VRAM_REASON_RESTART,
				       "restart: its process ended while vramd was down");
	return false;
}

/* The ad-hoc workload sw made again, stopped; NULL (logged) when it cannot be. */
static struct vram_workload *restore_adhoc(struct vram_manager *m,
					   const struct vram_statefile_workload *sw)
{
	const struct vram_statefile_adhoc *a = &sw->adhoc;
	struct vram_peer owner = {.transport = VRAM_PEER_UNIX, .uid = a->owner.uid,
				  .gid = a->owner.gid};
	struct vram_peer self;
	vram_peer_self(&self);
	if (a->owner.as_daemon) {
		owner = self;
	} else {
		for (size_t g = 0; g < a->owner.n_groups && g < VRAM_PEER_GROUPS_MAX; g++)
			owner.groups[owner.n_groups++] = (gid_t)a->owner.groups[g];
	}
	struct vram_runas runas;
	char err[512];
	if (vram_runas_for_peer(&owner, &self, m->cfg, &runas, err, sizeof(err)) < 0) {
		vram_warn("state file: ad-hoc workload %s is not made again: %s", sw->name, err);
		return NULL;
	}
	struct vram_adhoc_spec spec = {
		.runas = &runas,
		.cmd = (const char *const *)a->cmd,
		.env = (const char *const *)a->env,
		.cwd = a->cwd,
		.memory = a->memory,
		.gpus = a->gpus,
		.gpus_set = true,
	};
	struct vram_workload *w = mgr_adhoc_restore(m, sw->name, &spec, err, sizeof(err));
	if (!w)
		vram_warn("state file: ad-hoc workload %s is not made again: %s", sw->name, err);
	return w;
}

static void adopt_file(struct vram_manager *m);

static void adopt_run(struct vram_manager *m)
{
	adopt_file(m);
	/*
	 * An MPS control daemon taken back that no workload uses any more, or one
	 * in a pipe directory of ours that no state file recorded (a crash right
	 * after its start, a refused file), is told to quit: at every start.
	 */
	if (m->mps)
		vram_mps_adopt_done(m->mps);
	mgr_kick(m);
}

static void adopt_file(struct vram_manager *m)
{
	char path[4096], why[512];
	int n = snprintf(path, sizeof(path), "%s/" STATE_FILE_NAME, m->state_dir);
	if (n < 0 || (size_t)n >= sizeof(path))
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
	vram_info("state file %s (written by vramd %s): %zu workloads, %zu processes recorded",
		  path, sf.written_by[0] ? sf.written_by : "?", sf.n_workloads, n_proc);
	struct adopt_sum sum = {0};
	struct adopt_ctx ctx = {0};
	/* MPS control daemons first: the clients of the workloads attach to them */
	for (size_t k = 0; m->mps && k < sf.n_mps; k++) {
		struct vram_mps_daemon_info d = {.pid = sf.mps[k].pid,
						 .start_ticks = sf.mps[k].start_ticks};
		snprintf(d.pipe_dir, sizeof(d.pipe_dir), "%s", sf.mps[k].pipe_dir);
		char err[512];
		if (vram_mps_adopt(m->mps, &d, err, sizeof(err)) < 0) {
			vram_warn("state file: the MPS control daemon of %s is not taken back: %s",
				  d.pipe_dir, err);
			ctx.mps_lost = true;
		} else {
			ctx.mps_adopted++;
			vram_info("state file: took back the MPS control daemon of %s (pid %d)",
				  d.pipe_dir, (int)d.pid);
		}
	}
	for (size_t k = 0; k < sf.n_workloads; k++) {
		const struct vram_statefile_workload *sw = &sf.workloads[k];
		struct vram_workload *w = mgr_find(m, sw->name);
		if (sw->is_adhoc && !w)
			w = restore_adhoc(m, sw);
		if (!w) {
			for (size_t i = 0; i < sw->n_instances; i++) {
				char pwhy[128];
				if (same_process(&sw->instances[i], pwhy, sizeof(pwhy)))
					stop_recorded(sw->name, &sw->instances[i],
						      "the config has no such workload any more");
			}
			sum.refused += sw->n_instances;
			continue;
		}
		apply_runtime(w, sw);
		(void)adopt_workload(m, w, sw, &ctx, &sum);
	}
	vram_info("state file: took back %zu process(es): %zu workload(s) ready, %zu offloaded, "
		  "%zu parked, %zu starting; %zu recorded process(es) not taken back",
		  sum.processes, sum.ready, sum.offloaded, sum.parked, sum.starting, sum.refused);
	vram_statefile_done(&sf);
}

const struct mgr_feature mgr_adopt_feature = {
	.name = "adopt",
	.run = adopt_run,
};
