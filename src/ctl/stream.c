/* SPDX-License-Identifier: MIT */
/* Streamed replies for vramctl; see stream.h. */
#include "ctl/stream.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"

struct vram_stream {
	int fd;
	bool chunked;
	bool ended;               /* the last chunk or the end of the connection was seen */
	unsigned long long chunk_left; /* bytes of the current chunk not yet returned */
	size_t start, end;        /* unread bytes in raw[start..end) */
	char raw[VRAM_STREAM_BUF];
};

/* Reads more into raw (after making room). Returns bytes read, 0 at EOF, or -errno. */
static ssize_t fill(struct vram_stream *s, long long deadline)
{
	if (s->start > 0) {
		memmove(s->raw, s->raw + s->start, s->end - s->start);
		s->end -= s->start;
		s->start = 0;
	}
	if (s->end == sizeof(s->raw))
		return -ENOBUFS;
	for (;;) {
		int r = vram_client_wait_fd(s->fd, POLLIN, deadline);
		if (r < 0)
			return r;
		ssize_t n = recv(s->fd, s->raw + s->end, sizeof(s->raw) - s->end, 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return -errno;
		s->end += (size_t)n;
		return n;
	}
}

static long long deadline_of(int timeout_ms)
{
	/* 0 means "no deadline" to vram_client_wait_fd: a zero timeout is 1 ms */
	return timeout_ms < 0 ? 0 : vram_client_now_ms() + (timeout_ms ? timeout_ms : 1);
}

int vram_stream_open(const struct vram_client_url *url, const char *path, const char *token,
		     int timeout_ms, struct vram_stream **ret_stream,
		     struct vram_client_response *ret_error, char *err, size_t err_size)
{
	long long deadline = timeout_ms > 0 ? vram_client_now_ms() + timeout_ms : 0;
	struct vram_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	struct vram_buf req;
	vram_buf_init(&req, VRAM_CLIENT_HEAD_MAX);
	int r = vram_client_format_request(&req, url, "GET", path, NULL, NULL, token);
	if (r < 0) {
		snprintf(err, err_size, "request too large");
		goto out_free;
	}
	s->fd = vram_client_connect(url, err, err_size);
	if (s->fd < 0) {
		r = s->fd;
		goto out_free;
	}
	for (size_t off = 0; off < req.len;) {
		if ((r = vram_client_wait_fd(s->fd, POLLOUT, deadline)) < 0)
			goto out_io;
		ssize_t n = send(s->fd, req.data + off, req.len - off, MSG_NOSIGNAL);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			r = -errno;
			goto out_io;
		}
		off += (size_t)n;
	}
	/* The head: up to the empty line. */
	char *head_end;
	for (;;) {
		ssize_t n = fill(s, deadline);
		if (n == 0 || n == -ENOBUFS) {
			snprintf(err, err_size, "vramd closed the connection before a complete reply");
			r = -EPROTO;
			goto out_close;
		}
		if (n < 0) {
			r = (int)n;
			goto out_io;
		}
		s->raw[s->end < sizeof(s->raw) ? s->end : sizeof(s->raw) - 1] = '\0';
		if ((head_end = strstr(s->raw, "\r\n\r\n")))
			break;
	}
	int major, minor, status;
	if (sscanf(s->raw, "HTTP/%d.%d %3d", &major, &minor, &status) != 3) {
		snprintf(err, err_size, "not an HTTP response");
		r = -EPROTO;
		goto out_close;
	}
	if (status != 200) {
		/* An error: read it whole and hand it over as a response. */
		struct vram_buf all;
		vram_buf_init(&all, VRAM_CLIENT_RESPONSE_MAX);
		r = vram_buf_append(&all, s->raw, s->end);
		char chunk[16384];
		for (ssize_t n = 1; r == 0 && n > 0;) {
			if ((r = vram_client_wait_fd(s->fd, POLLIN, deadline)) < 0)
				break;
			n = recv(s->fd, chunk, sizeof(chunk), 0);
			if (n > 0)
				r = vram_buf_append(&all, chunk, (size_t)n);
		}
		if (r == 0)
			r = vram_client_parse_response(all.data, all.len, ret_error, err, err_size);
		else
			snprintf(err, err_size, "reading an error reply: %s", strerror(-r));
		vram_buf_done(&all);
		if (r == 0)
			*ret_stream = NULL;
		goto out_close;
	}
	/* Transfer-Encoding: chunked among the headers? */
	for (char *line = strstr(s->raw, "\r\n"); line && line < head_end; line = strstr(line + 2, "\r\n")) {
		const char *h = line + 2;
		if (strncasecmp(h, "Transfer-Encoding:", 18) == 0) {
			h += 18;
			while (*h == ' ' || *h == '\t')
				h++;
			s->chunked = strncasecmp(h, "chunked", 7) == 0;
		}
	}
	s->start = (size_t)(head_end + 4 - s->raw);
	vram_buf_done(&req);
	*ret_stream = s;
	return 0;

out_io:
	vram_client_io_error(url, r, timeout_ms, err, err_size);
out_close:
	close(s->fd);
out_free:
	vram_buf_done(&req);
	free(s);
	return r;
}

ssize_t vram_stream_read(struct vram_stream *s, char *buf, size_t size, int timeout_ms, char *err,
			 size_t err_size)
{
	long long deadline = deadline_of(timeout_ms);
	for (;;) {
		if (s->ended)
			return 0;
		size_t have = s->end - s->start;
		if (!s->chunked || s->chunk_left > 0) {
			if (have > 0) {
				size_t n = have < size ? have : size;
				if (s->chunked && n > s->chunk_left)
					n = (size_t)s->chunk_left;
				memcpy(buf, s->raw + s->start, n);
				s->start += n;
				if (s->chunked)
					s->chunk_left -= n;
				return (ssize_t)n;
			}
		} else {
			/* A chunk-size line, after the CRLF that ends the previous chunk. */
			char *nl = memchr(s->raw + s->start, '\n', have);
			while (nl && nl == s->raw + s->start + (s->raw[s->start] == '\r')) {
				s->start = (size_t)(nl + 1 - s->raw);
				have = s->end - s->start;
				nl = memchr(s->raw + s->start, '\n', have);
			}
			if (nl) {
				char *stop;
				unsigned long long size_hex = strtoull(s->raw + s->start, &stop, 16);
				if (stop == s->raw + s->start) {
					snprintf(err, err_size, "bad chunk size in the reply");
					return -EPROTO;
				}
				s->start = (size_t)(nl + 1 - s->raw);
				if (size_hex == 0) {
					s->ended = true;
					return 0;
				}
				s->chunk_left = size_hex;
				continue;
			}
		}
		ssize_t n = fill(s, deadline);
		if (n == 0) {
			s->ended = true;
			if (s->chunked) {
				snprintf(err, err_size, "vramd closed the stream in the middle of a chunk");
				return -EPROTO;
			}
			return 0;
		}
		if (n == -ENOBUFS) {
			snprintf(err, err_size, "a chunk-size line over %d bytes", VRAM_STREAM_BUF);
			return -EPROTO;
		}
		if (n < 0) {
			if (n != -ETIMEDOUT)
				snprintf(err, err_size, "reading from vramd: %s", strerror((int)-n));
			return n;
		}
	}
}

int vram_stream_fd(const struct vram_stream *s)
{
	return s->fd;
}

bool vram_stream_buffered(const struct vram_stream *s)
{
	return s->end > s->start && (!s->chunked || s->chunk_left > 0);
}

void vram_stream_close(struct vram_stream *s)
{
	if (!s)
		return;
	close(s->fd);
	free(s);
}

void vram_sse_feed(struct vram_sse_reader *r, const char *p, size_t n,
		   void (*on_data)(const char *data, void *arg), void *arg)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != '\n') {
			if (r->len + 1 < sizeof(r->line))
				r->line[r->len++] = p[i];
			else
				r->overflow = true;
			continue;
		}
		if (r->len && r->line[r->len - 1] == '\r')
			r->len--;
		r->line[r->len] = '\0';
		if (!r->overflow && strncmp(r->line, "data: ", 6) == 0)
			on_data(r->line + 6, arg);
		r->len = 0;
		r->overflow = false;
	}
}
