/* SPDX-License-Identifier: MIT */
/*
 * What the Slurm plugins (spank_vramd.so, task_vramd.so) need of vramd: one
 * HTTP/1.1 request on its control socket, with a bounded wait, and the
 * socket's path from a template. Linked into each plugin; no Slurm calls.
 */
#ifndef VRAM_SPANK_VRAMD_CLIENT_H
#define VRAM_SPANK_VRAMD_CLIENT_H

#include <stddef.h>

/* Each plugin has its own copy: not exported, so two loaded in one slurmstepd never mix. */
#define VRAM_SLURM_LOCAL __attribute__((visibility("hidden")))

#define VRAM_SLURM_DEFAULT_SOCKET "/run/vramd/vramd.sock"
#define VRAM_SLURM_IO_TIMEOUT_S 10    /* a vramd that does not answer never holds Slurm longer */
#define VRAM_SLURM_ACTION_TIMEOUT_S 300 /* an offload or restore of a step, at most */
#define VRAM_SLURM_RESPONSE_MAX (4u << 20) /* bytes of an answer read, at most */

/* A connected Unix socket to path with timeout_s on reads and writes, or -errno. */
VRAM_SLURM_LOCAL int vram_slurm_connect(const char *path, int timeout_s);

/*
 * method path on the control socket sock with body (NULL: none), waiting
 * timeout_s at most. Returns the HTTP status, or -errno. *ret_body (may be
 * NULL) receives the answer's body, NUL-terminated (caller frees).
 */
VRAM_SLURM_LOCAL int vram_slurm_request(const char *sock, const char *method, const char *path, const char *body,
		       int timeout_s, char **ret_body);

/*
 * tmpl with "%n" replaced by node into out (size bytes, room kept for
 * ".hook" after it). Returns 0 or -ENAMETOOLONG.
 */
VRAM_SLURM_LOCAL int vram_slurm_socket_path(const char *tmpl, const char *node, char *out, size_t size);

#endif
