/* SPDX-License-Identifier: MIT */
/* The start limit's bookkeeping (see startlimit.h). */
#include "daemon/startlimit.h"

#include <string.h>

#include "config/config.h"

_Static_assert(VRAM_STARTLIMIT_MAX >= VRAM_CONFIG_RESTART_LIMIT_MAX,
	       "restart.limit's bound fits the failures kept");

bool vram_startlimit_fail(struct vram_startlimit *sl, unsigned limit, uint64_t window_ms,
			  uint64_t now_ms)
{
	if (limit == 0)
		return false;
	if (limit > VRAM_STARTLIMIT_MAX)
		limit = VRAM_STARTLIMIT_MAX;
	/* the trying clock: monotonic time less the waits for retries */
	uint64_t t = now_ms > sl->waited_ms ? now_ms - sl->waited_ms : 0;
	/* a wait cut short (a reload's restart) would move it back: it never goes back */
	uint64_t last = sl->failed_at[(sl->next + VRAM_STARTLIMIT_MAX - 1) % VRAM_STARTLIMIT_MAX];
	if (sl->n > 0 && t < last)
		t = last;
	sl->failed_at[sl->next] = t;
	sl->next = (sl->next + 1) % VRAM_STARTLIMIT_MAX;
	if (sl->n < VRAM_STARTLIMIT_MAX)
		sl->n++;
	if (sl->n < limit)
		return false;
	/* the limit-th failure back from this one */
	unsigned oldest = (sl->next + VRAM_STARTLIMIT_MAX - limit) % VRAM_STARTLIMIT_MAX;
	return t - sl->failed_at[oldest] <= window_ms;
}

void vram_startlimit_waiting(struct vram_startlimit *sl, uint64_t delay_ms)
{
	sl->waited_ms += delay_ms;
}

void vram_startlimit_reset(struct vram_startlimit *sl)
{
	memset(sl, 0, sizeof(*sl));
}
