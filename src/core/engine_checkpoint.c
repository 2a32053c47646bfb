/* SPDX-License-Identifier: MIT */
/*
 * The checkpoint engine: the CUDA driver's process checkpoint API, for any
 * process without the hook. Offload locks every CUDA process of the workload
 * (waiting up to LOCK_TIMEOUT_MS for its GPU work to drain) and checkpoints
 * it: all its GPU memory, CUDA context included, goes to host memory kept by
 * the driver. Restore brings it back and unlocks it, onto the GPUs now
 * assigned in w->instances: when the planner picked other GPUs of the same
 * model (the old ones had no room), the restore passes the full permutation
 * of the machine's GPUs that moves it there.
 *
 * The driver calls block for seconds: they run in the worker pool; discovery
 * of the processes (/proc and NVML) and the bookkeeping stay on the loop.
 * What each checkpointed instance was (its pids and GPUs) is kept here
 * between the offload and the restore, keyed by workload and replica.
 */
#include "core/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/list.h"
#include "common/proc.h"
#include "common/workers.h"
#include "gpu/cudadrv.h"
#include "gpu/gpu.h"

#define LOCK_TIMEOUT_MS 15000 /* ms for a busy process's GPU work to drain */
#define MAX_PIDS 64           /* CUDA processes per instance */

/* The driver, opened once (on the loop, like NVML) the first time it is asked about. */
static struct vram_cudadrv *drv;
static bool drv_tried;
static char drv_why[256];

static bool driver_ready(char *why, size_t why_size)
{
	if (!drv_tried) {
		drv_tried = true;
		if (vram_cudadrv_open(NULL, &drv, drv_why, sizeof(drv_why)) == 0 &&
		    !vram_cudadrv_has_checkpoint(drv))
			snprintf(drv_why, sizeof(drv_why), "the CUDA driver (%d) has no checkpoint API (550 or newer needed)",
				 vram_cudadrv_driver_version(drv));
	}
	if (drv && vram_cudadrv_has_checkpoint(drv))
		return true;
	if (why)
		snprintf(why, why_size, "%s", drv_why);
	return false;
}

/* An instance as it was checkpointed. */
struct saved {
	struct vram_list link; /* in saved_list */
	const struct vram_workload *w;
	unsigned replica;
	pid_t root;           /* the instance's process: another one means the entry is stale */
	pid_t pids[MAX_PIDS];
	size_t n_pids;
	unsigned gpus[VRAM_PLAN_MAX_GPUS];
	size_t n_gpus;
	uint64_t bytes;
};

static struct vram_list saved_list = { &saved_list, &saved_list }; /* struct saved; loop only */

static struct saved *saved_find(const struct vram_workload *w, unsigned replica)
{
	vram_list_for_each_entry(s, &saved_list, struct saved, link)
		if (s->w == w && s->replica == replica)
			return s;
	return NULL;
}

/* s is on saved_list (saved_find found it). */
static void saved_drop(struct saved *s)
{
	vram_list_remove(&s->link);
	free(s);
}

/* One instance's part of a job. */
struct part {
	unsigned replica;
	pid_t root;
	pid_t pids[MAX_PIDS];
	size_t n_pids;
	bool filter_cuda;   /* NVML could not tell: keep the pids the driver knows */
	unsigned old_gpus[VRAM_PLAN_MAX_GPUS], new_gpus[VRAM_PLAN_MAX_GPUS];
	size_t n_gpus;
	struct vram_cu_gpu_pair pairs[VRAM_CUDA_MAX_DEVICES];
	size_t n_pairs;     /* 0: in place */
	uint64_t bytes;     /* bytes on its GPUs, as NVML saw them (0 = unknown) */
	/* results, written by the worker */
	uint64_t host_growth; /* offload: bytes its processes' resident memory grew by */
	int error;
	bool lost;          /* a process is FAILED or half restored */
};

struct ckpt_job {
	struct vram_job *job;       /* NULL once cancelled */
	enum vram_job_kind kind;
	struct part *parts;
	size_t n_parts;
	int error;                  /* the first error, 0 if none */
	bool lost;
	char message[640];          /* worker: the first error's message */
};

/* ---- worker side: no loop state is touched here ---- */

static void set_first_error(struct ckpt_job *cj, int r, const char *msg)
{
	if (cj->error)
		return;
	cj->error = r;
	snprintf(cj->message, sizeof(cj->message), "%s", msg);
}

static bool still_checkpointed(pid_t pid)
{
	enum vram_cuda_proc_state st;
	struct vram_cuda_error e;

	return vram_cudadrv_get_state(drv, pid, &st, &e) == 0 && st == VRAM_CUDA_PROC_CHECKPOINTED;
}

/*
 * After a failed driver call on pid: a process the driver left in its FAILED
 * state is unusable (the workload is restarted per its policy); says so.
 */
static void check_failed(struct ckpt_job *cj, struct part *p, pid_t pid, const char *what)
{
	enum vram_cuda_proc_state st;
	struct vram_cuda_error e;

	if (vram_cudadrv_get_state(drv, pid, &st, &e) < 0 || st != VRAM_CUDA_PROC_FAILED)
		return;
	p->lost = true;
	snprintf(cj->message, sizeof(cj->message), "process %d is in the FAILED checkpoint state after: %s",
		 (int)pid, what);
}

static void offload_part(struct ckpt_job *cj, struct part *p)
{
	struct vram_cuda_error e;
	size_t locked = 0, done = 0;
	int r = 0;

	if (p->filter_cuda)
		p->n_pids = vram_cudadrv_filter_cuda(drv, p->pids, p->n_pids);
	if (p->n_pids == 0) {
		set_first_error(cj, -ESRCH, "no CUDA process found in the workload's process tree");
		p->error = -ESRCH;
		return;
	}
	/*
	 * The driver keeps the checkpoint in the process's own host memory: its
	 * growth is what the offload takes of host RAM (for the host ledger).
	 */
	uint64_t before = 0;
	for (size_t i = 0; i < p->n_pids; i++) {
		uint64_t rss = 0;
		if (vram_proc_rss(p->pids[i], &rss) == 0)
			before += rss;
	}
	/* Lock all first: no process is checkpointed while another still runs work. */
	for (; locked < p->n_pids; locked++) {
		r = vram_cudadrv_lock(drv, p->pids[locked], LOCK_TIMEOUT_MS, &e);
		if (r < 0)
			goto out_unlock;
	}
	for (; done < p->n_pids; done++) {
		r = vram_cudadrv_checkpoint(drv, p->pids[done], &e);
		if (r < 0)
			goto out_restore;
	}
	uint64_t after = 0;
	for (size_t i = 0; i < p->n_pids; i++) {
		uint64_t rss = 0;
		if (vram_proc_rss(p->pids[i], &rss) == 0)
			after += rss;
	}
	p->host_growth = after > before ? after - before : 0;
	return;

out_restore:
	/* Put back what was taken, so the workload goes on running as before. */
	set_first_error(cj, r, e.message);
	p->error = r;
	check_failed(cj, p, p->pids[done], e.message);
	for (size_t i = 0; i < done; i++) {
		struct vram_cuda_error e2;

		if (vram_cudadrv_restore(drv, p->pids[i], NULL, 0, &e2) < 0)
			p->lost = true;
	}
	r = 0;
out_unlock:
	if (r < 0) {
		set_first_error(cj, r, e.message);
		p->error = r;
		check_failed(cj, p, p->pids[locked], e.message);
	}
	for (size_t i = 0; i < locked; i++) {
		struct vram_cuda_error e2;

		vram_cudadrv_unlock(drv, p->pids[i], &e2);
	}
}

static void restore_part(struct ckpt_job *cj, struct part *p)
{
	struct vram_cuda_error e;
	size_t restored = 0;
	int r;

	for (; restored < p->n_pids; restored++) {
		r = vram_cudadrv_restore(drv, p->pids[restored], p->n_pairs ? p->pairs : NULL, p->n_pairs, &e);
		if (r < 0)
			goto out_fail;
	}
	for (size_t i = 0; i < p->n_pids; i++) {
		r = vram_cudadrv_unlock(drv, p->pids[i], &e);
		if (r < 0)
			goto out_fail_unlock;
	}
	return;

out_fail:
	set_first_error(cj, r, e.message);
	p->error = r;
	/* Untouched when nothing was restored and the driver left it checkpointed. */
	p->lost = restored > 0 || !still_checkpointed(p->pids[restored]);
	if (p->lost)
		check_failed(cj, p, p->pids[restored], e.message);
	return;
out_fail_unlock:
	set_first_error(cj, r, e.message);
	p->error = r;
	p->lost = true;
}

static void ckpt_work(void *arg)
{
	struct ckpt_job *cj = arg;

	for (size_t i = 0; i < cj->n_parts; i++) {
		if (cj->kind == VRAM_JOB_OFFLOAD)
			offload_part(cj, &cj->parts[i]);
		else
			restore_part(cj, &cj->parts[i]);
	}
}

/* ---- loop side ---- */

static void ckpt_job_free(struct ckpt_job *cj)
{
	if (!cj)
		return;
	free(cj->parts);
	free(cj);
}

static void ckpt_done(void *arg)
{
	struct ckpt_job *cj = arg;
	struct vram_job *job = cj->job;
	uint64_t bytes = 0;

	if (!job) { /* cancelled while the driver worked */
		ckpt_job_free(cj);
		return;
	}
	job->priv = NULL;
	for (size_t i = 0; i < cj->n_parts; i++) {
		struct part *p = &cj->parts[i];
		struct vram_instance *in = NULL;

		for (size_t k = 0; k < job->w->n_instances; k++)
			if (job->w->instances[k].replica == p->replica)
				in = &job->w->instances[k];
		if (cj->kind == VRAM_JOB_OFFLOAD && p->error == 0) {
			struct saved *s = calloc(1, sizeof(*s));

			if (s) {
				struct saved *old = saved_find(job->w, p->replica);

				if (old)
					saved_drop(old);
				s->w = job->w;
				s->replica = p->replica;
				s->root = p->root;
				memcpy(s->pids, p->pids, p->n_pids * sizeof(pid_t));
				s->n_pids = p->n_pids;
				memcpy(s->gpus, p->old_gpus, p->n_gpus * sizeof(unsigned));
				s->n_gpus = p->n_gpus;
				s->bytes = p->bytes;
				vram_list_push_front(&saved_list, &s->link);
			}
			if (in)
				in->resident = false;
		} else if (cj->kind == VRAM_JOB_RESTORE && p->error == 0) {
			struct saved *s = saved_find(job->w, p->replica);

			if (s)
				saved_drop(s);
			if (in)
				in->resident = true;
		}
		if (p->error == 0) {
			bytes += p->bytes;
			if (cj->kind == VRAM_JOB_OFFLOAD)
				job->host_bytes += p->host_growth;
		}
	}
	if (!bytes)
		bytes = vram_workload_gpu_bytes(job->w);
	job->process_lost = cj->lost;
	for (size_t i = 0; i < cj->n_parts; i++)
		job->process_lost = job->process_lost || cj->parts[i].lost;
	if (cj->error)
		vram_job_complete(job, cj->error, 0, "%s", cj->message);
	else
		vram_job_complete(job, 0, bytes, "%s %zu instance%s with the driver's checkpoint",
				  cj->kind == VRAM_JOB_OFFLOAD ? "checkpointed" : "restored", cj->n_parts,
				  cj->n_parts == 1 ? "" : "s");
	ckpt_job_free(cj);
}

static bool ckpt_supports(const struct vram_workload *w, const struct vram_engine_host *host, char *why,
			  size_t why_size)
{
	if (host->gpus && vram_gpu_is_sim(host->gpus)) {
		snprintf(why, why_size, "the GPUs are simulated");
		return false;
	}
	if (w->cfg && w->cfg->share == VRAM_SHARE_MPS) {
		snprintf(why, why_size, "MPS clients cannot be checkpointed by the driver (CUDA_ERROR_NOT_SUPPORTED)");
		return false;
	}
	if (w->cfg && w->cfg->gpus.kind == VRAM_GPUS_COUNT && w->cfg->gpus.count == 0) {
		snprintf(why, why_size, "the workload uses no GPU");
		return false;
	}
	if (!host->workers) {
		snprintf(why, why_size, "no worker pool");
		return false;
	}
	return driver_ready(why, why_size);
}

/*
 * The pids of one instance: its process tree, narrowed to the processes
 * NVML shows on its GPUs. When NVML cannot list processes (or shows none of
 * them: another pid namespace), the worker keeps those the driver knows.
 */
static int discover(const struct vram_engine_host *host, const struct vram_instance *in, struct part *p)
{
	pid_t gpu_pids[VRAM_GPU_MAX_PROCS * 8];
	size_t n_gpu = 0;
	bool valid = true;
	int r;

	r = vram_proc_tree(in->pid, p->pids, MAX_PIDS, &p->n_pids);
	if (r < 0 && r != -E2BIG)
		return r;
	p->bytes = 0;
	for (size_t g = 0; g < in->n_gpus && host->gpus; g++) {
		struct vram_gpu_info *info = malloc(sizeof(*info));

		if (!info)
			return -ENOMEM;
		if (vram_gpu_query(host->gpus, in->gpus[g], info) < 0 || !info->procs_valid) {
			valid = false;
			free(info);
			continue;
		}
		for (size_t k = 0; k < info->n_procs && n_gpu < sizeof(gpu_pids) / sizeof(gpu_pids[0]); k++) {
			gpu_pids[n_gpu++] = info->procs[k].pid;
			for (size_t t = 0; t < p->n_pids; t++)
				if (p->pids[t] == info->procs[k].pid && info->procs[k].used_bytes != UINT64_MAX)
					p->bytes += info->procs[k].used_bytes;
		}
		free(info);
	}
	if (valid && n_gpu > 0) {
		pid_t copy[MAX_PIDS];
		size_t n;

		memcpy(copy, p->pids, p->n_pids * sizeof(pid_t));
		n = vram_proc_filter(copy, p->n_pids, gpu_pids, n_gpu);
		if (n > 0) {
			memcpy(p->pids, copy, n * sizeof(pid_t));
			p->n_pids = n;
			return 0;
		}
	}
	p->filter_cuda = true;
	return 0;
}

static int submit(struct vram_job *job, struct ckpt_job *cj)
{
	int r = vram_workers_submit(job->host->workers, ckpt_work, ckpt_done, cj);

	if (r < 0) {
		ckpt_job_free(cj);
		return r;
	}
	job->priv = cj;
	return 0;
}

static struct ckpt_job *ckpt_job_new(struct vram_job *job, struct vram_workload *w)
{
	struct ckpt_job *cj = calloc(1, sizeof(*cj));

	if (!cj)
		return NULL;
	cj->job = job;
	cj->kind = job->kind;
	cj->parts = calloc(w->n_instances ? w->n_instances : 1, sizeof(*cj->parts));
	if (!cj->parts) {
		free(cj);
		return NULL;
	}
	return cj;
}

/*
 * Checks the driver and creates the job's state. NULL when there is nothing
 * to do: *ret is then 0 (the job was completed with the reason) or -ENOMEM.
 */
static struct ckpt_job *begin(struct vram_workload *w, struct vram_job *job, int *ret)
{
	struct ckpt_job *cj;
	char why[256];

	*ret = 0;
	if (!driver_ready(why, sizeof(why))) {
		vram_job_complete(job, -EOPNOTSUPP, 0, "%s", why);
		return NULL;
	}
	cj = ckpt_job_new(job, w);
	if (!cj)
		*ret = -ENOMEM;
	return cj;
}

static int ckpt_offload(struct vram_workload *w, struct vram_job *job)
{
	struct ckpt_job *cj;
	int r;

	cj = begin(w, job, &r);
	if (!cj)
		return r;
	for (size_t i = 0; i < w->n_instances; i++) {
		const struct vram_instance *in = &w->instances[i];
		struct part *p = &cj->parts[cj->n_parts];

		if (in->pid <= 0 || !in->resident)
			continue;
		p->replica = in->replica;
		p->root = in->pid;
		p->n_gpus = in->n_gpus;
		memcpy(p->old_gpus, in->gpus, in->n_gpus * sizeof(unsigned));
		r = discover(job->host, in, p);
		if (r < 0) {
			ckpt_job_free(cj);
			vram_job_complete(job, r, 0, "cannot find the processes of %s#%u: %s", w->cfg->name,
					  in->replica, strerror(-r));
			return 0;
		}
		cj->n_parts++;
	}
	if (cj->n_parts == 0) {
		ckpt_job_free(cj);
		vram_job_complete(job, 0, 0, "nothing on the GPUs to checkpoint");
		return 0;
	}
	return submit(job, cj);
}

/* The machine's GPUs in the backend's order, for the permutation. */
static int machine_devices(const struct vram_engine_host *host, struct vram_cuda_device *devs, size_t *ret_n,
			   char *why, size_t why_size)
{
	unsigned n = host->gpus ? vram_gpu_count(host->gpus) : 0;
	struct vram_gpu_info *info = malloc(sizeof(*info));

	if (!info)
		return -ENOMEM;
	if (n > VRAM_CUDA_MAX_DEVICES)
		n = VRAM_CUDA_MAX_DEVICES;
	for (unsigned i = 0; i < n; i++) {
		int r = vram_gpu_query(host->gpus, i, info);

		if (r == 0)
			r = vram_cuda_uuid_parse(info->uuid, &devs[i].uuid);
		if (r < 0) {
			snprintf(why, why_size, "cannot read the UUID of GPU %u", i);
			free(info);
			return r;
		}
		devs[i].ordinal = (int)i;
		snprintf(devs[i].name, sizeof(devs[i].name), "%s", info->name);
		snprintf(devs[i].uuid_str, sizeof(devs[i].uuid_str), "%.47s", info->uuid);
	}
	free(info);
	*ret_n = n;
	return 0;
}

static int ckpt_restore(struct vram_workload *w, struct vram_job *job)
{
	struct vram_cuda_device *devs = NULL;
	size_t n_devs = 0;
	struct ckpt_job *cj;
	char why[256];
	int r;

	cj = begin(w, job, &r);
	if (!cj)
		return r;
	for (size_t i = 0; i < w->n_instances; i++) {
		const struct vram_instance *in = &w->instances[i];
		struct saved *s = saved_find(w, in->replica);
		struct part *p = &cj->parts[cj->n_parts];
		bool moved;

		if (!s)
			continue;
		if (s->root != in->pid) {
			/* The process was replaced since it was checkpointed. */
			saved_drop(s);
			continue;
		}
		p->replica = in->replica;
		memcpy(p->pids, s->pids, s->n_pids * sizeof(pid_t));
		p->n_pids = s->n_pids;
		p->bytes = s->bytes;
		p->n_gpus = s->n_gpus;
		memcpy(p->old_gpus, s->gpus, s->n_gpus * sizeof(unsigned));
		memcpy(p->new_gpus, in->gpus, in->n_gpus * sizeof(unsigned));
		moved = in->n_gpus != s->n_gpus || memcmp(in->gpus, s->gpus, s->n_gpus * sizeof(unsigned)) != 0;
		if (moved) {
			if (in->n_gpus != s->n_gpus) {
				r = -EINVAL;
				snprintf(why, sizeof(why), "it was checkpointed on %zu GPUs and is assigned %zu",
					 s->n_gpus, in->n_gpus);
				goto out_refuse;
			}
			if (!devs) {
				devs = calloc(VRAM_CUDA_MAX_DEVICES, sizeof(*devs));
				if (!devs) {
					r = -ENOMEM;
					snprintf(why, sizeof(why), "out of memory");
					goto out_refuse;
				}
				r = machine_devices(job->host, devs, &n_devs, why, sizeof(why));
				if (r < 0)
					goto out_refuse;
			}
			r = vram_cudadrv_move_pairs(devs, n_devs, s->gpus, in->gpus, s->n_gpus, p->pairs,
						    VRAM_CUDA_MAX_DEVICES, &p->n_pairs, why, sizeof(why));
			if (r < 0)
				goto out_refuse;
		}
		cj->n_parts++;
	}
	free(devs);
	if (cj->n_parts == 0) {
		ckpt_job_free(cj);
		vram_job_complete(job, -ENOENT, 0, "%s has no checkpointed process to restore", w->cfg->name);
		return 0;
	}
	return submit(job, cj);

out_refuse:
	free(devs);
	ckpt_job_free(cj);
	/* Nothing was touched: the workload stays offloaded. */
	vram_job_complete(job, r, 0, "cannot restore %s onto the GPUs assigned: %s", w->cfg->name, why);
	return 0;
}

static void ckpt_cancel(struct vram_job *job)
{
	struct ckpt_job *cj = job->priv;

	/* The driver call cannot be interrupted: the worker finishes, ckpt_done frees. */
	if (cj)
		cj->job = NULL;
	job->priv = NULL;
}

const struct vram_engine vram_engine_checkpoint = {
	.name = "checkpoint",
	.kind = VRAM_ENGINE_CHECKPOINT,
	.keeps_process = true,
	.can_move = true,
	.supports = ckpt_supports,
	.offload = ckpt_offload,
	.restore = ckpt_restore,
	.cancel = ckpt_cancel,
};
