/* SPDX-License-Identifier: MIT */
/*
 * The hook engine: every process of the workload runs with libvram.so and is
 * registered on the hook channel under the workload's name. Offload sends
 * OFFLOAD to each of them and completes when all have answered: the bytes
 * are summed, the time is the slowest process's, errors are joined. The
 * process keeps its context (about 0.5 GiB) and its virtual addresses, so it
 * comes back on the GPUs it left (can_move is false).
 *
 * A workload is offloaded or restored as a whole: when some processes
 * succeed and others fail, the ones that succeeded are taken back (restored
 * after a failed offload, offloaded again after a failed restore) before the
 * job reports the failure, so the workload is never left half parked. A
 * restore that failed for lack of memory leaves every process intact and
 * offloaded (job->still_offloaded), with the hook's message.
 *
 * Park (the disk tier) sends PARK to every process of an offloaded workload
 * with its own file, <park_dir>/<workload>-<pid>.park: the hook writes its
 * host copy there and frees its pinned buffers; RESTORE of a parked process
 * reads the file back. There is no way back from disk to host RAM but a
 * restore, so a park that fails in some processes is not rolled back: the
 * processes that parked stay on disk (the job's bytes count them) and a
 * restore brings every process back from wherever it is. A restore from
 * disk that fails in some processes and not others is not rolled back
 * either: the workload is lost and restarted cold, since its data cannot
 * be trusted to be whole.
 *
 * hook+checkpoint: the hook moves the data at link speed, then the
 * checkpoint engine frees what is left, CUDA context included. Restore runs
 * the checkpoint restore, then the hook restore.
 *
 * Groups: a workload of several processes whose hooks all take part
 * (VRAM_HOOK_HELLO_GROUP, e.g. the ranks of a tensor-parallel model, which
 * wait on each other in every collective and may share memory through
 * IPC) moves in phases. Offload: every gate closes first (OFFLOAD with
 * GATE_ONLY), then every process copies and releases (OFFLOAD); a process
 * whose gate does not close makes the others open theirs (RESTORE) and the
 * offload fails with nothing moved. Restore: every process restores with
 * its gate held (RESTORE with HOLD_GATE), and only when all have, every
 * gate opens (RESTORE); one that fails makes the others move out again
 * (OFFLOAD), so no rank runs while another is still offloaded.
 *
 * The hook channel is the daemon's (daemon/hookchan.c); the engines reach it
 * only through the functions struct vram_engine_host lends them.
 */
#include "core/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "proto/hook_proto.h"

#define MAX_PROCS 64 /* hooked processes of one workload in one job */
#define PARK_PATH_MAX VRAM_HOOK_PROTO_PATH_MAX /* bytes of a park file's path, NUL included */

enum phase {
	PHASE_MAIN = 0,  /* the asked operation on every process */
	PHASE_ROLLBACK,  /* the opposite operation on those that succeeded */
	PHASE_CKPT,      /* the checkpoint engine's part (hook+checkpoint) */
	PHASE_GATE,      /* a group's offload: every gate closes first */
	PHASE_RELEASE,   /* a group's restore: every gate opens last */
};

struct hook_job;

struct slot {
	struct hook_job *hj;
	pid_t pid;
	struct vram_hookchan_req *req; /* in flight, or NULL */
	bool ok;
	struct vram_hookchan_result res;
};

struct hook_job {
	struct vram_job *job;
	bool with_ckpt;
	bool from_disk;            /* a restore of a parked workload */
	enum phase phase;
	enum vram_hookchan_op op;  /* of the running hook phase */
	unsigned flags;            /* VRAM_HOOK_OFFLOAD_* / VRAM_HOOK_RESTORE_* of the running phase */
	bool group;                /* moved in phases (see the top of the file) */
	struct slot slots[MAX_PROCS];
	size_t n;
	size_t pending;
	struct vram_job *inner;    /* the checkpoint engine's job, or NULL */
	/* the main phase's outcome */
	int error;
	bool lost;
	bool intact;               /* every failed process is still offloaded (restore; an offload
				      with progress: every failed one is offloaded all the same) */
	uint64_t bytes, nonmovable, missing;
	uint64_t ckpt_bytes;
	char errors[400];
	char ckpt_note[200];
};

static bool wants_gpus(const struct vram_workload *w)
{
	return w->cfg->gpus.kind != VRAM_GPUS_COUNT || w->cfg->gpus.count > 0;
}

/* Whether host lends an open hook channel. */
static bool have_channel(const struct vram_engine_host *host)
{
	return host->hookchan && host->hook_pids && host->hook_send && host->hook_cancel;
}

static bool hook_supports(const struct vram_workload *w, const struct vram_engine_host *host, char *why,
			  size_t why_size)
{
	const char *no = NULL;
	if (!have_channel(host))
		no = "the hook channel is not open";
	else if (host->hook_pids(host->hookchan, w->cfg->name, NULL, 0) > 0)
		return true;
	else if (!host->hook_library)
		no = "libvram.so was not found (daemon.hook_library) and no process of it is hooked";
	else if (w->cfg->offload == VRAM_ENGINE_AUTO && !wants_gpus(w))
		no = "it uses no GPU";
	if (!no)
		return true;
	if (why)
		snprintf(why, why_size, "%s", no);
	return false;
}

static bool hook_ckpt_supports(const struct vram_workload *w, const struct vram_engine_host *host,
			       char *why, size_t why_size)
{
	return hook_supports(w, host, why, why_size) &&
	       vram_engine_checkpoint.supports(w, host, why, why_size);
}

static void set_resident(struct vram_workload *w, bool on)
{
	for (size_t i = 0; i < w->n_instances; i++)
		if (w->instances[i].pid > 0)
			w->instances[i].resident = on;
}

static void hj_free(struct hook_job *hj)
{
	for (size_t i = 0; i < hj->n; i++)
		hj->job->host->hook_cancel(hj->slots[i].req);
	if (hj->inner)
		vram_job_cancel(hj->inner);
	free(hj);
}

/* Frees hj and completes its job with the main phase's outcome. */
static void finish(struct hook_job *hj)
{
	struct vram_job *job = hj->job;
	job->priv = NULL;
	bool offload = job->kind == VRAM_JOB_OFFLOAD;
	bool park = job->kind == VRAM_JOB_PARK;
	char moved[32], stuck[32];
	vram_units_format_bytes(hj->bytes, moved, sizeof(moved));
	vram_units_format_bytes(hj->nonmovable, stuck, sizeof(stuck));
	if (hj->error) {
		job->process_lost = hj->lost;
		job->still_offloaded = (job->kind == VRAM_JOB_RESTORE || job->progress) && !hj->lost &&
				       hj->intact && !hj->with_ckpt;
		if (job->kind == VRAM_JOB_OFFLOAD && job->still_offloaded)
			set_resident(job->w, false);
		struct hook_job copy = *hj;
		free(hj);
		if (park && copy.bytes) {
			/* no way back to RAM but a restore: say what stays on disk */
			vram_job_complete(job, copy.error, copy.bytes, "%s; %s parked by the other "
					  "processes stay on disk until the restore", copy.errors, moved);
			return;
		}
		vram_job_complete(job, copy.error, 0, "%s%s%s", copy.errors,
				  copy.ckpt_note[0] ? "; " : "", copy.ckpt_note);
		return;
	}
	struct hook_job copy = *hj;
	free(hj);
	if (!park)
		set_resident(job->w, !offload);
	char procs[48] = "";
	if (copy.n > 1)
		snprintf(procs, sizeof(procs), " from %zu processes", copy.n);
	char extra[96] = "";
	if (copy.nonmovable && offload)
		snprintf(extra, sizeof(extra), ", %s stayed on the GPU (context, IPC/managed)", stuck);
	vram_job_complete(job, 0, copy.bytes + copy.ckpt_bytes, "%s %s%s%s%s%s", moved,
			  offload ? "offloaded" : park ? "parked to disk"
				  : copy.from_disk ? "restored from disk" : "restored", procs, extra,
			  copy.ckpt_note[0] ? "; " : "", copy.ckpt_note);
}

/* Appends "pid N<what>: text" to the joined errors. */
static void add_error(struct hook_job *hj, pid_t pid, const char *what, const char *text)
{
	size_t len = strlen(hj->errors);
	if (len + 1 >= sizeof(hj->errors))
		return;
	snprintf(hj->errors + len, sizeof(hj->errors) - len, "%s", len ? "; " : "");
	len = strlen(hj->errors);
	snprintf(hj->errors + len, sizeof(hj->errors) - len, "pid %d%s: %s", (int)pid, what, text);
}

static void on_proc_done(const struct vram_hookchan_result *res, void *arg);
static void phase_done(struct hook_job *hj);

/* PROGRESS of the one process of an offload with progress (can_overlap). */
static void on_hook_progress(const uint64_t freed[VRAM_HOOKCHAN_MAX_DEVICES], void *arg)
{
	struct slot *s = arg;
	struct vram_job *job = s->hj->job;
	uint64_t sum = 0;
	for (int d = 0; d < VRAM_HOOKCHAN_MAX_DEVICES; d++)
		sum += freed[d];
	if (sum <= job->freed)
		return;
	job->freed = sum;
	if (job->on_progress)
		job->on_progress(job, job->done_arg);
}
static void start_ckpt(struct hook_job *hj);

/*
 * Sends op to s's process; PARK with its park file's path. Returns 0, or
 * -errno with, when the path could not be made, the reason in path.
 */
static int send_one(struct hook_job *hj, struct slot *s, enum vram_hookchan_op op, char *path,
		    size_t path_size)
{
	const struct vram_engine_host *host = hj->job->host;
	if (op != VRAM_HOOKCHAN_PARK) {
		/* overlapped swaps in the main phase only: a rollback is plain */
		bool main = hj->phase == PHASE_MAIN;
		unsigned flags = hj->flags |
				 (main && op == VRAM_HOOKCHAN_OFFLOAD && hj->job->progress ? VRAM_HOOKCHAN_PROGRESS
				  : main && op == VRAM_HOOKCHAN_RESTORE && hj->job->granted ? VRAM_HOOKCHAN_GRANTED
											    : 0);
		int r = host->hook_send(host->hookchan, s->pid, op, flags, on_proc_done, s, &s->req);
		if (r == 0 && (flags & VRAM_HOOKCHAN_PROGRESS) && host->hook_on_progress)
			host->hook_on_progress(s->req, on_hook_progress, s);
		return r;
	}
	if (!host->hook_send_path || !host->park_path)
		return -EOPNOTSUPP;
	int r = host->park_path(host->ctx, hj->job->w, s->pid, path, path_size);
	if (r < 0)
		return r; /* the reason is in path */
	r = host->hook_send_path(host->hookchan, s->pid, op, 0, path, on_proc_done, s, &s->req);
	path[0] = '\0'; /* a path, not a reason */
	return r;
}

/* Sends op with flags to every process, or only to those that succeeded in the main phase. */
static void run_phase_flags(struct hook_job *hj, enum phase phase, enum vram_hookchan_op op, unsigned flags,
			    bool only_ok)
{
	hj->phase = phase;
	hj->op = op;
	hj->flags = flags;
	hj->pending = 0;
	for (size_t i = 0; i < hj->n; i++)
		if (!only_ok || hj->slots[i].ok)
			hj->pending++;
	size_t remaining = hj->pending;
	if (remaining == 0) {
		phase_done(hj);
		return;
	}
	/* the last answer may free hj: the loop stops right after it is sent */
	for (size_t i = 0; remaining > 0; i++) {
		struct slot *s = &hj->slots[i];
		if (only_ok && !s->ok)
			continue;
		remaining--;
		char path[PARK_PATH_MAX] = "";
		int r = send_one(hj, s, op, path, sizeof(path));
		if (r < 0) {
			struct vram_hookchan_result res = {.pid = s->pid, .status = r};
			snprintf(res.text, sizeof(res.text), "%s",
				 path[0] ? path
				 : r == -ENOENT ? "not connected to the hook channel"
				 : r == -EOPNOTSUPP && op == VRAM_HOOKCHAN_PARK
					 ? "this vramd's hook channel cannot send PARK (protocol version 3)"
					 : strerror(-r));
			s->req = NULL;
			on_proc_done(&res, s); /* may finish hj: touch nothing after the last */
		}
	}
}

static void run_phase(struct hook_job *hj, enum phase phase, enum vram_hookchan_op op, bool only_ok)
{
	run_phase_flags(hj, phase, op, 0, only_ok);
}

static void phase_done(struct hook_job *hj)
{
	bool offload = hj->job->kind == VRAM_JOB_OFFLOAD;
	if (hj->phase == PHASE_ROLLBACK || hj->phase == PHASE_RELEASE) {
		finish(hj);
		return;
	}
	if (hj->phase == PHASE_GATE) {
		if (hj->error) /* open the gates that closed: nothing moved */
			run_phase(hj, PHASE_ROLLBACK, VRAM_HOOKCHAN_RESTORE, true);
		else
			run_phase(hj, PHASE_MAIN, VRAM_HOOKCHAN_OFFLOAD, false);
		return;
	}
	/* PHASE_MAIN */
	size_t n_ok = 0;
	for (size_t i = 0; i < hj->n; i++)
		n_ok += hj->slots[i].ok;
	if (!hj->error) {
		if (hj->with_ckpt && offload)
			start_ckpt(hj);
		else if (hj->group && hj->job->kind == VRAM_JOB_RESTORE)
			run_phase(hj, PHASE_RELEASE, VRAM_HOOKCHAN_RESTORE, false); /* every rank is back: go */
		else
			finish(hj);
		return;
	}
	if (n_ok == 0 || hj->job->kind == VRAM_JOB_PARK) {
		/* nothing to take back, or no way back to RAM from disk but a restore */
		finish(hj);
		return;
	}
	if (hj->from_disk) {
		/* some read their files and some did not: not whole, and not to be trusted */
		hj->lost = true;
		finish(hj);
		return;
	}
	/* take back the processes that made it, so the workload stays whole */
	run_phase(hj, PHASE_ROLLBACK, offload ? VRAM_HOOKCHAN_RESTORE : VRAM_HOOKCHAN_OFFLOAD, true);
}

static void on_proc_done(const struct vram_hookchan_result *res, void *arg)
{
	struct slot *s = arg;
	struct hook_job *hj = s->hj;
	s->req = NULL;
	if (hj->phase == PHASE_MAIN || hj->phase == PHASE_GATE) {
		s->res = *res;
		s->ok = res->status == 0;
		if (s->ok) {
			if (hj->phase == PHASE_MAIN) {
				hj->bytes += res->bytes;
				hj->nonmovable += res->nonmovable;
			}
		} else if (hj->phase == PHASE_GATE) {
			if (!hj->error)
				hj->error = res->status;
			if (res->status == -EPIPE)
				hj->lost = true;
			add_error(hj, res->pid, " (closing its gate)", res->text[0] ? res->text : strerror(-res->status));
		} else {
			if (!hj->error)
				hj->error = res->status;
			hj->missing += res->missing;
			if (res->status == -EPIPE)
				hj->lost = true;
			/*
			 * Intact: left as it was. From disk, only a lack of GPU
			 * memory leaves it so; a bad file (a checksum mismatch, a
			 * short read) never counts, so the workload starts cold.
			 */
			if (hj->from_disk ? res->status != -ENOMEM || res->state != VRAM_HOOK_STATE_PARKED
					  : res->state != VRAM_HOOK_STATE_OFFLOADED)
				hj->intact = false;
			add_error(hj, res->pid, "", res->text[0] ? res->text : strerror(-res->status));
		}
	} else if (res->status != 0) {
		/* a process that cannot be taken back is half parked: restart it */
		hj->lost = true;
		add_error(hj, res->pid, " could not be taken back", res->text[0] ? res->text : strerror(-res->status));
	}
	if (--hj->pending == 0)
		phase_done(hj);
}

/* ---- hook+checkpoint ---- */

/* The checkpoint part failed: after an offload the hook part is undone. */
static void ckpt_failed(struct hook_job *hj, int error, bool lost)
{
	hj->error = error;
	hj->lost = lost;
	if (hj->job->kind == VRAM_JOB_OFFLOAD)
		run_phase(hj, PHASE_ROLLBACK, VRAM_HOOKCHAN_RESTORE, true);
	else
		finish(hj);
}

static void on_inner_done(struct vram_job *inner, void *arg)
{
	struct hook_job *hj = arg;
	hj->inner = NULL;
	int error = inner->error;
	bool lost = inner->process_lost;
	uint64_t bytes = inner->bytes;
	snprintf(hj->ckpt_note, sizeof(hj->ckpt_note), "checkpoint: %.180s", inner->message);
	vram_job_free(inner);
	if (error) {
		ckpt_failed(hj, error, lost);
		return;
	}
	hj->ckpt_bytes = bytes;
	if (hj->job->kind == VRAM_JOB_OFFLOAD)
		finish(hj);
	else
		run_phase(hj, PHASE_MAIN, VRAM_HOOKCHAN_RESTORE, false);
}

static void start_ckpt(struct hook_job *hj)
{
	hj->phase = PHASE_CKPT;
	struct vram_job *job = hj->job;
	hj->inner = vram_job_new(job->kind, &vram_engine_checkpoint, job->w, job->host, on_inner_done, hj);
	int r = hj->inner ? vram_job_start(hj->inner) : -ENOMEM;
	if (r < 0) {
		vram_job_free(hj->inner);
		hj->inner = NULL;
		snprintf(hj->ckpt_note, sizeof(hj->ckpt_note), "checkpoint could not begin: %s", strerror(-r));
		ckpt_failed(hj, r, false);
	}
}

/* ---- engine entry points ---- */

static int begin(struct vram_workload *w, struct vram_job *job, bool with_ckpt)
{
	const struct vram_engine_host *host = job->host;
	if (!have_channel(host))
		return -ENOTCONN;
	pid_t pids[MAX_PROCS];
	size_t n = host->hook_pids(host->hookchan, w->cfg->name, pids, MAX_PROCS);
	if (n == 0) {
		vram_job_complete(job, -ENOTCONN, 0,
				  "no process of %s is connected to the hook (none has initialized CUDA "
				  "with libvram.so loaded)", w->cfg->name);
		return 0;
	}
	if (n > MAX_PROCS)
		n = MAX_PROCS;
	struct hook_job *hj = calloc(1, sizeof(*hj));
	if (!hj)
		return -ENOMEM;
	hj->job = job;
	hj->with_ckpt = with_ckpt;
	hj->from_disk = job->kind == VRAM_JOB_RESTORE && job->from_disk;
	hj->intact = true;
	hj->n = n;
	/* several processes whose hooks all know groups (a plain hook+checkpoint
	 * job and parking keep the one-phase way) */
	hj->group = n > 1 && host->hook_group && !with_ckpt && job->kind != VRAM_JOB_PARK;
	for (size_t i = 0; i < n; i++) {
		hj->slots[i].hj = hj;
		hj->slots[i].pid = pids[i];
		if (hj->group && !host->hook_group(host->hookchan, pids[i]))
			hj->group = false;
	}
	job->priv = hj;
	if (with_ckpt && job->kind == VRAM_JOB_RESTORE)
		start_ckpt(hj);
	else if (hj->group && job->kind == VRAM_JOB_OFFLOAD)
		run_phase_flags(hj, PHASE_GATE, VRAM_HOOKCHAN_OFFLOAD, VRAM_HOOK_OFFLOAD_GATE_ONLY, false);
	else if (hj->group && job->kind == VRAM_JOB_RESTORE)
		run_phase_flags(hj, PHASE_MAIN, VRAM_HOOKCHAN_RESTORE, VRAM_HOOK_RESTORE_HOLD_GATE, false);
	else
		run_phase(hj, PHASE_MAIN,
			  job->kind == VRAM_JOB_OFFLOAD ? VRAM_HOOKCHAN_OFFLOAD
			  : job->kind == VRAM_JOB_PARK  ? VRAM_HOOKCHAN_PARK
							: VRAM_HOOKCHAN_RESTORE,
			  false);
	return 0;
}

static int hook_offload(struct vram_workload *w, struct vram_job *job)
{
	return begin(w, job, false);
}

static int hook_restore(struct vram_workload *w, struct vram_job *job)
{
	return begin(w, job, false);
}

static int hook_park(struct vram_workload *w, struct vram_job *job)
{
	return begin(w, job, false);
}

static int hook_ckpt_offload(struct vram_workload *w, struct vram_job *job)
{
	return begin(w, job, true);
}

static int hook_ckpt_restore(struct vram_workload *w, struct vram_job *job)
{
	return begin(w, job, true);
}

/*
 * Overlapped swaps take one process on one GPU: its device ordinal 0 is
 * that GPU, and its offload's progress is the workload's.
 */
static bool hook_can_overlap(const struct vram_workload *w, const struct vram_engine_host *host)
{
	pid_t pids[2];
	if (!have_channel(host) || !host->hook_can_swap || !host->hook_on_progress || !host->hook_grant)
		return false;
	if (w->n_instances != 1 || w->instances[0].n_gpus != 1)
		return false;
	if (host->hook_pids(host->hookchan, w->cfg->name, pids, 2) != 1)
		return false;
	return host->hook_can_swap(host->hookchan, pids[0]);
}

static int hook_grant(struct vram_job *job, uint64_t bytes, bool cancel)
{
	struct hook_job *hj = job->priv;
	if (!hj || hj->phase != PHASE_MAIN || hj->op != VRAM_HOOKCHAN_RESTORE || hj->n != 1 || !hj->slots[0].req)
		return -EALREADY;
	uint64_t per_dev[VRAM_HOOKCHAN_MAX_DEVICES] = { bytes };
	return job->host->hook_grant(hj->slots[0].req, per_dev, cancel);
}

static void hook_cancel(struct vram_job *job)
{
	if (job->priv)
		hj_free(job->priv);
	job->priv = NULL;
}

const struct vram_engine vram_engine_hook = {
	.name = "hook",
	.kind = VRAM_ENGINE_HOOK,
	.keeps_process = true,
	.can_move = false, /* the process keeps its context on the GPU it left */
	.supports = hook_supports,
	.offload = hook_offload,
	.restore = hook_restore,
	.park = hook_park,
	.cancel = hook_cancel,
	.can_overlap = hook_can_overlap,
	.grant = hook_grant,
};

/*
 * No park: a checkpointed process cannot run the CUDA calls that free its
 * pinned buffers until it is restored.
 */
const struct vram_engine vram_engine_hook_checkpoint = {
	.name = "hook+checkpoint",
	.kind = VRAM_ENGINE_HOOK_CHECKPOINT,
	.keeps_process = true,
	.can_move = false, /* the hook's virtual addresses stay where they were */
	.supports = hook_ckpt_supports,
	.offload = hook_ckpt_offload,
	.restore = hook_ckpt_restore,
	.cancel = hook_cancel,
};
