/* SPDX-License-Identifier: MIT */
/*
 * A short history of GPU memory for the dashboard's chart (GET
 * /api/history): every VRAM_HISTORY_INTERVAL_MS the memory used on each GPU
 * is sampled from the manager's GPU view, and the last VRAM_HISTORY_SAMPLES
 * samples are kept in a fixed ring (about ten minutes). Memory is bounded:
 * at most VRAM_HISTORY_GPUS GPUs are kept per sample, whatever the machine.
 */
#ifndef VRAM_HISTORY_H
#define VRAM_HISTORY_H

#include <jansson.h>

struct event_base;
struct vram_manager;
struct vram_history;

#define VRAM_HISTORY_INTERVAL_MS 2000 /* ms between samples */
#define VRAM_HISTORY_SAMPLES 300      /* samples kept: 10 minutes */
#define VRAM_HISTORY_GPUS 16          /* GPUs kept per sample (the first ones) */

/*
 * Starts sampling on base over m (both borrowed, outlive the history); the
 * first sample is taken at once. Returns 0 or -ENOMEM.
 */
int vram_history_new(struct event_base *base, struct vram_manager *m, struct vram_history **ret);
/* Stops the timer and frees. Accepts NULL. */
void vram_history_free(struct vram_history *h);

/*
 * {"interval_seconds", "gpus": [{"index", "total"}], "samples": [{"time",
 * "used": [bytes or null per GPU]}]}, oldest first (docs/api.md). New
 * reference; NULL on out of memory.
 */
json_t *vram_history_json(const struct vram_history *h);

#endif
