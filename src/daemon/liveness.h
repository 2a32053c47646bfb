/* SPDX-License-Identifier: MIT */
/*
 * Liveness of ready workloads. Once a workload is ready, its health check
 * (health.path or tcp) runs every health.interval against each instance.
 * After health.failures checks of one instance have failed in a row, the
 * workload is dead and the manager fails it (it then restarts under its
 * restart policy), unless a request is in flight and progressing.
 *
 * "Progressing" is precise: the gateway reports response bytes coming from
 * an instance (vram_manager_note_progress: a response's first bytes, then at
 * most once a second per upstream connection), and an instance whose
 * workload has a request in
 * flight and that sent response bytes within the progress window,
 * health.interval × health.failures but at least
 * VRAM_LIVENESS_PROGRESS_MIN_MS, is kept however its checks fail: a busy
 * model server may answer its health route late while it generates. It is
 * declared dead at the first failed check after the bytes stop. A request
 * that has not had its first byte yet does not count: a hung process with
 * clients queueing on it must still be found.
 *
 * The module keeps the per-instance count and the workload's last result
 * (core/workload.h) and decides; the manager runs the probes on its
 * probe timer (one per workload, daemon side) and does the failing.
 */
#ifndef VRAM_LIVENESS_H
#define VRAM_LIVENESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/workload.h"

#define VRAM_LIVENESS_START_PROBE_MS 500   /* longest period of probes while starting */
#define VRAM_LIVENESS_PROGRESS_MIN_MS 3000 /* shortest progress window: the gateway reports
					      at most once a second per connection */

enum vram_liveness_verdict {
	VRAM_LIVENESS_OK = 0, /* the check passed */
	VRAM_LIVENESS_FAILING, /* failed, fewer than health.failures in a row */
	VRAM_LIVENESS_HELD,    /* failed past the limit, kept: a request in flight progresses */
	VRAM_LIVENESS_DEAD,    /* failed past the limit: fail the workload */
};

/* Period of the probes while starting: min(interval, VRAM_LIVENESS_START_PROBE_MS). */
uint64_t vram_liveness_start_probe_ms(const struct vram_health *h);
/* Whether a ready workload is checked: an HTTP or TCP check and an interval that is not never. */
bool vram_liveness_enabled(const struct vram_health *h);
/* ms within which response bytes count as progress. */
uint64_t vram_liveness_progress_window_ms(const struct vram_health *h);

/*
 * w just became ready, or its health settings changed: forgets earlier
 * results. The manager then schedules the first check one interval from now
 * (or none when w is not checked).
 */
void vram_liveness_reset(struct vram_workload *w);

/*
 * Records the result of one check of in (ok, or why not) at now_ms and
 * decides. On VRAM_LIVENESS_DEAD, reason receives what the workload failed
 * with ("health check GET /health of replica 0 (pid 42) failed 3 times in a
 * row, 10s apart; last: no answer on port 20001 within 2s").
 */
enum vram_liveness_verdict vram_liveness_record(struct vram_workload *w, struct vram_instance *in,
						bool ok, const char *why, uint64_t now_ms,
						char *reason, size_t size);

/*
 * For status: null when w is not checked, else {"interval_seconds",
 * "failures" (the most of any instance, in a row), "last_check" ("ok", the
 * reason of the last failure, or null before the first), "last_check_seconds"
 * (ago, or null), "held"}. New reference; NULL on out of memory.
 */
json_t *vram_liveness_json(const struct vram_workload *w, uint64_t now_ms);

#endif
