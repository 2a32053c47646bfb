/* SPDX-License-Identifier: MIT */
/*
 * Liveness of ready workloads (see liveness.h): the count of failed checks
 * per instance, the progress rule, and the reason a workload fails with.
 */
#include "daemon/liveness.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/units.h"

uint64_t vram_liveness_start_probe_ms(const struct vram_health *h)
{
	return h->interval_ms < VRAM_LIVENESS_START_PROBE_MS ? h->interval_ms
							      : VRAM_LIVENESS_START_PROBE_MS;
}

bool vram_liveness_enabled(const struct vram_health *h)
{
	return h->kind != VRAM_HEALTH_NONE && h->interval_ms != VRAM_DURATION_NEVER;
}

static unsigned limit_of(const struct vram_health *h)
{
	return h->failures ? h->failures : 1;
}

uint64_t vram_liveness_progress_window_ms(const struct vram_health *h)
{
	uint64_t n = limit_of(h);
	/* interval is at most VRAM_DURATION_NEVER - 1 ms here: cap instead of overflowing */
	uint64_t w = h->interval_ms > UINT64_MAX / n ? UINT64_MAX : h->interval_ms * n;
	return w < VRAM_LIVENESS_PROGRESS_MIN_MS ? VRAM_LIVENESS_PROGRESS_MIN_MS : w;
}

void vram_liveness_reset(struct vram_workload *w)
{
	for (size_t i = 0; i < w->n_instances; i++) {
		w->instances[i].live_failures = 0;
		w->instances[i].progress_ms = 0;
	}
	w->live_checked_ms = 0;
	w->live_why[0] = '\0';
	w->live_held = false;
}

static bool any_failing(const struct vram_workload *w)
{
	for (size_t i = 0; i < w->n_instances; i++)
		if (w->instances[i].live_failures)
			return true;
	return false;
}

enum vram_liveness_verdict vram_liveness_record(struct vram_workload *w, struct vram_instance *in,
						bool ok, const char *why, uint64_t now_ms,
						char *reason, size_t size)
{
	const struct vram_health *h = &w->cfg->health;
	w->live_checked_ms = now_ms ? now_ms : 1;
	if (ok) {
		in->live_failures = 0;
		if (!any_failing(w)) {
			w->live_why[0] = '\0';
			w->live_held = false;
		}
		return VRAM_LIVENESS_OK;
	}
	if (in->live_failures < UINT_MAX)
		in->live_failures++;
	snprintf(w->live_why, sizeof(w->live_why), "%s", why && why[0] ? why : "failed");
	if (in->live_failures < limit_of(h))
		return VRAM_LIVENESS_FAILING;
	if (w->in_flight > 0 && in->progress_ms && now_ms >= in->progress_ms &&
	    now_ms - in->progress_ms <= vram_liveness_progress_window_ms(h)) {
		w->live_held = true;
		return VRAM_LIVENESS_HELD;
	}
	w->live_held = false;
	char what[160], every[32], window[32], stalled[96] = "";
	if (h->kind == VRAM_HEALTH_HTTP)
		snprintf(what, sizeof(what), "GET %s", h->path ? h->path : "/");
	else if (h->kind == VRAM_HEALTH_MODEL)
		snprintf(what, sizeof(what), "GET /health or /v1/models");
	else
		snprintf(what, sizeof(what), "(TCP connect)");
	vram_units_format_duration_ms(h->interval_ms, every, sizeof(every));
	if (w->in_flight)
		snprintf(stalled, sizeof(stalled), ", with requests in flight but no response bytes within %s",
			 vram_units_format_duration_ms(vram_liveness_progress_window_ms(h), window,
						       sizeof(window)));
	snprintf(reason, size,
		 "health check %s of replica %u (pid %d) failed %u time%s in a row, %s apart%s; last: %s",
		 what, in->replica, (int)in->pid, in->live_failures, in->live_failures == 1 ? "" : "s",
		 every, stalled, w->live_why);
	return VRAM_LIVENESS_DEAD;
}

json_t *vram_liveness_json(const struct vram_workload *w, uint64_t now_ms)
{
	const struct vram_health *h = &w->cfg->health;
	if (!vram_liveness_enabled(h))
		return json_null();
	unsigned failures = 0;
	for (size_t i = 0; i < w->n_instances; i++)
		if (w->instances[i].live_failures > failures)
			failures = w->instances[i].live_failures;
	json_t *last = json_null(), *ago = json_null();
	if (w->live_checked_ms) {
		last = json_string(w->live_why[0] ? w->live_why : "ok");
		ago = json_real((double)(now_ms > w->live_checked_ms ? now_ms - w->live_checked_ms : 0) /
				1000.0);
	}
	return json_pack("{s:f,s:i,s:I,s:o,s:o,s:b}", "interval_seconds",
			 (double)h->interval_ms / 1000.0, "failures", (int)failures, "failures_max",
			 (json_int_t)limit_of(h), "last_check", last, "last_check_seconds", ago, "held",
			 w->live_held);
}
