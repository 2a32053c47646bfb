/* SPDX-License-Identifier: MIT */
/*
 * The manager's last placement decisions and evictions, with their reasons,
 * for people (the dashboard, GET /api/decisions): a bounded ring kept by
 * mgr_decisions.c. The planner's outcome for each start and restore (the
 * GPUs chosen, a fallback, the workloads it evicts, a refusal with its
 * numbers) and the state changes that are decisions rather than requests
 * (an eviction, an idle timer, room made in host memory, a start or
 * restore given up for want of room) are kept, newest last.
 *
 * Nothing decides on these records: they are words and numbers after the
 * fact. Losing one (out of memory) loses only the record.
 */
#ifndef VRAM_DECISIONS_H
#define VRAM_DECISIONS_H

#include <jansson.h>

struct vram_manager;

#define VRAM_DECISIONS_MAX 64        /* records kept; the oldest goes first */
#define VRAM_DECISIONS_TEXT_MAX 512  /* bytes of a record's reason kept */

/*
 * {"decisions": [{"id", "time", "kind", "workload", "reason", ...}], "max"}
 * oldest first (docs/api.md, GET /api/decisions). New reference; NULL on out
 * of memory.
 */
json_t *vram_manager_decisions_json(struct vram_manager *m);

#endif
