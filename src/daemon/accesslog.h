/* SPDX-License-Identifier: MIT */
/*
 * The gateway's access log (daemon.access_log): one JSON line per request
 * that vramd answered on its front door (the REST API, /mcp, /metrics,
 * /v1 and /w), in its own file, rotated like the workload logs
 * (logfile.h). Off unless configured.
 */
#ifndef VRAM_ACCESSLOG_H
#define VRAM_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

struct vram_accesslog;

#define VRAM_ACCESSLOG_PATH_MAX 1024 /* bytes of a request-target kept in a line; the rest is cut */
#define VRAM_ACCESSLOG_LINE_MAX 4096 /* bytes of one line, at most */

/* One request, as it ended. Strings borrowed for the call; "" where none. */
struct vram_accesslog_entry {
	const char *client;   /* TCP address, or "unix" for the control socket */
	const char *method;
	const char *path;     /* the request-target as the client sent it (query included) */
	const char *model;    /* the model a /v1 request named */
	const char *workload; /* the workload it went to; "" for the API and unmatched ones */
	int status;           /* HTTP status; 0: the client went away first */
	uint64_t bytes;       /* bytes of the response sent to the client, head included */
	double first_byte_s;  /* s from arrival to the response's first byte; < 0: none sent */
	double total_s;       /* s from arrival to the end */
	double queue_s;       /* s waited for the workload to start or restore */
};

/*
 * Opens (appends to) path, rotated past max_bytes with keep old files.
 * Returns 0 or -errno (path is a link, cannot be created, ...). Caller frees
 * with vram_accesslog_close.
 */
int vram_accesslog_open(const char *path, uint64_t max_bytes, unsigned keep,
			struct vram_accesslog **ret);
void vram_accesslog_close(struct vram_accesslog *al); /* accepts NULL */

/*
 * The line of e (JSON object, '\n' ended) at wall-clock time wall_ms (ms
 * since the epoch) into buf. Strings that are not UTF-8 are made so (U+FFFD).
 * Returns the length, or -ENOMEM / -E2BIG.
 */
int vram_accesslog_format(const struct vram_accesslog_entry *e, int64_t wall_ms, char *buf,
			  size_t size);
/* Appends e's line; al may be NULL (off). A failed write is dropped: logging never fails a request. */
void vram_accesslog_write(struct vram_accesslog *al, const struct vram_accesslog_entry *e);

#endif
