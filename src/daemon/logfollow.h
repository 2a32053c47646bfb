/* SPDX-License-Identifier: MIT */
/*
 * Following a workload's log over HTTP (GET /api/workloads/{name}/logs?follow=1):
 * the last lines, then every byte appended to the file as it is written,
 * until the client closes, the workload is removed or the daemon drains.
 *
 * The file is written by the supervisor and, across a restart in place, by
 * an output relay (another process), so it is read back from the file
 * rather than hooked where it is written: each follower polls its file on a
 * short timer. The file itself is the buffer: a follower that is behind
 * reads on from its offset, and one whose client stopped reading is dropped
 * by the connection's write timeout. A rotation (the path names a new file)
 * is followed: the old file is read to its end first, then the new one from
 * its start.
 */
#ifndef VRAM_LOGFOLLOW_H
#define VRAM_LOGFOLLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct event_base;
struct evhttp_request;
struct vram_manager;
struct vram_logfollow;

#define VRAM_LOGFOLLOW_MAX 64           /* followers at once */
#define VRAM_LOGFOLLOW_UNIX_RESERVED 16 /* of them only for clients on the control socket */
#define VRAM_LOGFOLLOW_POLL_MS 200      /* ms between looks at a followed file */
#define VRAM_LOGFOLLOW_READ_MAX (256 * 1024) /* bytes sent to one follower per look */
#define VRAM_LOGFOLLOW_BACKLOG_MAX (1024 * 1024) /* bytes queued to a client before reading pauses */

/* The set of followers. Returns 0 or -ENOMEM. Free with vram_logfollow_free. */
int vram_logfollow_new(struct event_base *base, struct vram_manager *m,
		       struct vram_logfollow **ret);
/* Ends every stream cleanly, then frees. Accepts NULL. */
void vram_logfollow_free(struct vram_logfollow *lf);
/* Ends every stream cleanly (the daemon drains); the set stays usable. */
void vram_logfollow_end_all(struct vram_logfollow *lf);

/* Followers now, and of them TCP clients' (for the share a peer may take). */
void vram_logfollow_count(const struct vram_logfollow *lf, size_t *ret_n, size_t *ret_n_tcp);

/*
 * Starts following workload name's log for req (borrowed until the stream
 * ends): replies 200 text/plain, streamed, with the last tail lines, then
 * what is appended. tcp: the client came over TCP (counted apart). Returns
 * 0 once the reply started, or -ENOMEM (nothing was sent).
 */
int vram_logfollow_start(struct vram_logfollow *lf, struct evhttp_request *req, const char *name,
			 long tail, bool tcp);

/*
 * The last tail lines of the file open at fd (a last line without '\n'
 * counts), of its last max_bytes at most. *ret_text (caller frees; NULL
 * for an empty or unreadable file) holds *ret_len bytes; *ret_end is the
 * file offset just past them (the size read at). Returns 0 or -ENOMEM.
 */
int vram_logfollow_tail(int fd, long tail, size_t max_bytes, char **ret_text, size_t *ret_len,
			off_t *ret_end);

#endif
