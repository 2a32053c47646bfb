/* SPDX-License-Identifier: MIT */
/*
 * A waiting action, shown: while vramctl waits for an action's reply, a
 * terminal gets one line on stderr, redrawn in place, with the workload's
 * state as the event stream tells it and the time waited
 * ("chat: starting, 3.2 s"). The line is erased before the result is
 * printed, so the terminal keeps only the result.
 */
#ifndef VRAM_PROGRESS_H
#define VRAM_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>

#include "ctl/client.h"

#define VRAM_PROGRESS_REDRAW_MS 100 /* ms between redraws of the line */

/*
 * Whether progress is shown: stderr is a terminal that can move the cursor
 * (TERM is set and not "dumb").
 */
bool vram_progress_wanted(void);

/*
 * Sends method path (body may be NULL) like vram_client_request, and while
 * it waits shows the line for workload (borrowed) on stderr, following
 * GET /api/events. The reply and the returns are vram_client_request's.
 */
int vram_progress_request(const struct vram_client_url *url, const char *method, const char *path,
			  const char *body, const char *token, int timeout_ms, const char *workload,
			  const char *action, struct vram_client_response *ret, char *err,
			  size_t err_size);

/*
 * The line shown (without the erase and carriage return): "NAME: STATE
 * (REASON), 3.2 s", the reason of the last change as the event said it
 * ("chat: starting (waiting for evicted workloads to free memory), 1.0 s").
 * state NULL: the action's name ("chat: start, 0.1 s"), not yet a state.
 * Into buf.
 */
char *vram_progress_line(const char *workload, const char *action, const char *state,
			 const char *reason, double seconds, char *buf, size_t size);

#endif
