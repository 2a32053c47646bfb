/* SPDX-License-Identifier: MIT */
/*
 * A streamed GET for vramctl: a reply read as it comes (a followed log, the
 * event stream) rather than whole, as client.h does. Blocking, one request
 * per connection; a chunked body is decoded on the way.
 */
#ifndef VRAM_STREAM_H
#define VRAM_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ctl/client.h"

#define VRAM_STREAM_BUF 65536 /* bytes: the longest header block or chunk-size line */

struct vram_stream;

/*
 * Sends GET path and reads the reply's head (within timeout_ms; 0 = none).
 * On 200, returns 0 with *ret_stream set (caller frees with
 * vram_stream_close). Any other status: returns 0 with *ret_stream NULL
 * and the whole reply in *ret_error (release with
 * vram_client_response_done). Returns -errno with a reason in err when
 * there is no reply.
 */
int vram_stream_open(const struct vram_client_url *url, const char *path, const char *token,
		     int timeout_ms, struct vram_stream **ret_stream,
		     struct vram_client_response *ret_error, char *err, size_t err_size);
/*
 * Reads body bytes into buf (at most size), waiting up to timeout_ms
 * (-1: forever). Returns the count, 0 at the end of the body, -ETIMEDOUT,
 * or -errno / -EPROTO with a reason in err.
 */
ssize_t vram_stream_read(struct vram_stream *s, char *buf, size_t size, int timeout_ms, char *err,
			 size_t err_size);
/* The socket, for poll(); data may also wait in the stream: see vram_stream_buffered. */
int vram_stream_fd(const struct vram_stream *s);
/* Whether body bytes are already read and wait in the stream (no poll needed). */
bool vram_stream_buffered(const struct vram_stream *s);
void vram_stream_close(struct vram_stream *s); /* accepts NULL */

/*
 * Splits an event stream (text/event-stream) into its "data:" lines: feed
 * it the bytes as they come; on_data gets each data line's text (without
 * "data: "), NUL-terminated, borrowed for the call. A line over the buffer
 * is dropped.
 */
struct vram_sse_reader {
	char line[8192];
	size_t len;
	bool overflow; /* the current line did not fit: dropped */
};
void vram_sse_feed(struct vram_sse_reader *r, const char *p, size_t n,
		   void (*on_data)(const char *data, void *arg), void *arg);

#endif
