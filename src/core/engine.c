/* SPDX-License-Identifier: MIT */
/*
 * The engine array, `offload: auto` selection, and the job object through
 * which engines report completion. Completion is always delivered on a later
 * loop turn (event_active on a per-job event) so that an engine which
 * finishes at once does not re-enter the manager in the middle of a change.
 */
#include "core/engine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "gpu/gpu.h"

const struct vram_engine *const vram_engines[] = {
	&vram_engine_sim,
	&vram_engine_hook, /* `offload: auto` tries it before checkpoint */
	&vram_engine_hook_checkpoint,
	&vram_engine_checkpoint,
	&vram_engine_restart,
	NULL,
};

const struct vram_engine *vram_engine_find(enum vram_engine_kind kind)
{
	for (size_t i = 0; vram_engines[i]; i++) {
		if (vram_engines[i]->kind == kind)
			return vram_engines[i];
	}
	return NULL;
}

uint64_t vram_workload_gpu_bytes(const struct vram_workload *w)
{
	uint64_t total = 0;
	for (size_t i = 0; i < w->n_instances; i++)
		total += w->instances[i].bytes_per_gpu * w->instances[i].n_gpus;
	return total;
}

/* Tries one engine; on refusal appends its reason to notes. */
static bool try_engine(const struct vram_engine *e, const struct vram_workload *w,
		       const struct vram_engine_host *host, char *notes, size_t notes_size)
{
	char why[160] = "";
	if (e->supports(w, host, why, sizeof(why)))
		return true;
	size_t len = strlen(notes);
	snprintf(notes + len, notes_size - len, "%s%s: %s", len ? "; " : "", e->name, why);
	return false;
}

const struct vram_engine *vram_engine_select(const struct vram_workload *w,
					     const struct vram_engine_host *host, char *why,
					     size_t why_size)
{
	enum vram_engine_kind want = w->cfg->offload;
	char notes[256] = "";
	bool sim = host->gpus && vram_gpu_is_sim(host->gpus);

	if (want == VRAM_ENGINE_AUTO) {
		static const enum vram_engine_kind order[] = {
			VRAM_ENGINE_SIM, VRAM_ENGINE_HOOK, VRAM_ENGINE_CHECKPOINT,
		};
		for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
			const struct vram_engine *e = vram_engine_find(order[i]);
			if (!e) {
				if (order[i] != VRAM_ENGINE_SIM || sim) {
					size_t len = strlen(notes);
					snprintf(notes + len, sizeof(notes) - len, "%s%s: not in this build",
						 len ? "; " : "", vram_engine_name(order[i]));
				}
				continue;
			}
			if (try_engine(e, w, host, notes, sizeof(notes))) {
				snprintf(why, why_size, "auto: %s", order[i] == VRAM_ENGINE_SIM
					 ? "simulated GPUs"
					 : "first engine that supports it");
				return e;
			}
		}
		snprintf(why, why_size, "auto: restart (%s)", notes[0] ? notes : "no other engine");
		return &vram_engine_restart;
	}

	const struct vram_engine *e = vram_engine_find(want);
	if (e && try_engine(e, w, host, notes, sizeof(notes))) {
		snprintf(why, why_size, "configured (offload: %s)", vram_engine_name(want));
		return e;
	}
	if (!e)
		snprintf(notes, sizeof(notes), "%s: not in this build", vram_engine_name(want));
	/* on simulated GPUs the sim engine stands in for engines that need a driver */
	const struct vram_engine *simeng = vram_engine_find(VRAM_ENGINE_SIM);
	if (sim && want != VRAM_ENGINE_RESTART && simeng && simeng->supports(w, host, NULL, 0)) {
		snprintf(why, why_size, "sim stands in for %s on simulated GPUs (%s)",
			 vram_engine_name(want), notes);
		return simeng;
	}
	snprintf(why, why_size, "restart (configured %s: %s)", vram_engine_name(want), notes);
	return &vram_engine_restart;
}

static void on_job_done(evutil_socket_t fd, short what, void *arg)
{
	struct vram_job *job = arg;
	job->done(job, job->done_arg);
}

struct vram_job *vram_job_new(enum vram_job_kind kind, const struct vram_engine *engine,
			      struct vram_workload *w, const struct vram_engine_host *host,
			      vram_job_done_cb done, void *done_arg)
{
	struct vram_job *job = calloc(1, sizeof(*job));
	if (!job)
		return NULL;
	job->kind = kind;
	job->engine = engine;
	job->w = w;
	job->host = host;
	job->done = done;
	job->done_arg = done_arg;
	job->started_ms = vram_now_ms();
	job->done_ev = event_new(host->base, -1, 0, on_job_done, job);
	if (!job->done_ev) {
		free(job);
		return NULL;
	}
	return job;
}

int vram_job_start(struct vram_job *job)
{
	job->started_ms = vram_now_ms();
	switch (job->kind) {
	case VRAM_JOB_OFFLOAD:
		return job->engine->offload(job->w, job);
	case VRAM_JOB_RESTORE:
		return job->engine->restore(job->w, job);
	case VRAM_JOB_PARK:
		return job->engine->park ? job->engine->park(job->w, job) : -EOPNOTSUPP;
	}
	return -EINVAL;
}

void vram_job_complete(struct vram_job *job, int error, uint64_t bytes, const char *fmt, ...)
{
	if (job->completed)
		return;
	job->completed = true;
	job->error = error;
	job->bytes = bytes;
	job->seconds = (double)(vram_now_ms() - job->started_ms) / 1000.0;
	job->message[0] = '\0';
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(job->message, sizeof(job->message), fmt, ap);
		va_end(ap);
	}
	event_active(job->done_ev, 0, 0);
}

int vram_job_grant(struct vram_job *job, uint64_t bytes, bool cancel)
{
	if (!job->granted || job->completed || !job->engine->grant)
		return -EOPNOTSUPP;
	return job->engine->grant(job, bytes, cancel);
}

void vram_job_cancel(struct vram_job *job)
{
	if (!job)
		return;
	if (!job->completed && job->engine->cancel)
		job->engine->cancel(job);
	vram_job_free(job);
}

void vram_job_free(struct vram_job *job)
{
	if (!job)
		return;
	if (job->done_ev)
		event_free(job->done_ev);
	free(job);
}
