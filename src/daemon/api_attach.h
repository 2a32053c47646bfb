/* SPDX-License-Identifier: MIT */
/*
 * POST /api/attach: a process group that vramd did not start (a Slurm
 * step's tasks) becomes an attached workload (manager.h,
 * vram_manager_attach). Only root and vramd's own user on the control
 * socket may ask: whoever attaches names a pid and a uid, which only the
 * node's administrator (slurmstepd runs SPANK plugins as root) may vouch
 * for.
 */
#ifndef VRAM_DAEMON_API_ATTACH_H
#define VRAM_DAEMON_API_ATTACH_H

#include <jansson.h>

#include "daemon/manager.h"
#include "daemon/peer.h"

/* The body's keys, NULL-terminated. */
extern const char *const vram_api_attach_fields[];

/*
 * Checks peer and the body obj (borrowed; its keys checked against
 * vram_api_attach_fields already) and attaches. Returns 201 with the
 * workload's status plus "hook_socket" in *ret, or an error status with the
 * error shape in *ret (403 forbidden, 400, 404 not_found for a pid that
 * does not run, 409 name_taken, 503 no_slot or shutting_down).
 */
int vram_api_attach(struct vram_manager *m, const struct vram_peer *peer, json_t *obj, json_t **ret);

#endif
