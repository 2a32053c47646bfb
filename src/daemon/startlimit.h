/* SPDX-License-Identifier: MIT */
/*
 * The start limit: a workload whose start fails `limit` times within
 * `window` stops being restarted (restart: {limit, window}), so that a
 * command that always fails is not retried forever. The waits between
 * retries do not count towards the window: the restart backoff doubles from
 * 1 s, so with a wall clock a window of 10 s could never hold 5 failures and
 * the limit would depend on backoff_max. What counts is the time the
 * workload spent trying (starting, running, failing).
 *
 * Pure bookkeeping on times the caller passes; embedded by value in the
 * manager's per-workload slot; zeroed (or vram_startlimit_reset) = no
 * failure recorded.
 */
#ifndef VRAM_STARTLIMIT_H
#define VRAM_STARTLIMIT_H

#include <stdbool.h>
#include <stdint.h>

/* The largest `limit` the config accepts: the failures kept per workload. */
#define VRAM_STARTLIMIT_MAX 100

struct vram_startlimit {
	uint64_t failed_at[VRAM_STARTLIMIT_MAX]; /* trying-clock ms of the last failures, a ring */
	unsigned n;          /* failures in failed_at, <= VRAM_STARTLIMIT_MAX */
	unsigned next;       /* ring index the next failure goes to */
	uint64_t waited_ms;  /* ms spent waiting for retries since the reset: not counted */
};

/*
 * Records a failure at now_ms (monotonic). Returns true when it is the
 * limit-th failure within window_ms of trying: the workload is not to be
 * restarted. limit 0 means no limit (always false); limit is clamped to
 * VRAM_STARTLIMIT_MAX.
 */
bool vram_startlimit_fail(struct vram_startlimit *sl, unsigned limit, uint64_t window_ms,
			  uint64_t now_ms);

/* The workload now waits delay_ms before its retry: time that does not count. */
void vram_startlimit_waiting(struct vram_startlimit *sl, uint64_t delay_ms);

/* Forgets every failure: a start by hand or by a request. */
void vram_startlimit_reset(struct vram_startlimit *sl);

#endif
