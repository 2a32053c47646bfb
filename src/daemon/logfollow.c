/* SPDX-License-Identifier: MIT */
/*
 * Followers of workload logs; see logfollow.h.
 */
#include "daemon/logfollow.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/fsutil.h"
#include "common/list.h"
#include "daemon/http.h"
#include "daemon/manager.h"

struct vram_logfollow {
	struct event_base *base; /* borrowed */
	struct vram_manager *m;  /* borrowed */
	struct vram_list followers; /* struct follower */
	size_t n;
	size_t n_tcp;
};

struct follower {
	struct vram_logfollow *lf;
	struct evhttp_request *req; /* borrowed from evhttp until the stream ends */
	char *name;  /* owned: the workload */
	char *path;  /* owned: the file fd is open on; NULL before there is one */
	int fd;      /* -1 until the log exists */
	off_t pos;   /* bytes of fd sent so far */
	struct event *tick;
	struct vram_list link; /* in lf->followers */
	bool tcp;
};

int vram_logfollow_tail(int fd, long tail, size_t max_bytes, char **ret_text, size_t *ret_len,
			off_t *ret_end)
{
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	off_t size = 0;
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0) {
		size = st.st_size;
		size_t want = (uint64_t)size > max_bytes ? max_bytes : (size_t)size;
		text = malloc(want + 1);
		if (!text)
			return -ENOMEM;
		ssize_t n = pread(fd, text, want, size - (off_t)want);
		len = n > 0 ? (size_t)n : 0;
		size = size - (off_t)want + (off_t)len;
	}
	/* Keep the last `tail` lines (a last line without '\n' counts). */
	size_t start = 0;
	if (text) {
		long lines = 0;
		size_t i = len;
		if (i > 0 && text[i - 1] == '\n')
			i--;
		while (i > 0) {
			if (text[i - 1] == '\n' && ++lines == tail)
				break;
			i--;
		}
		start = tail == 0 ? len : i;
		memmove(text, text + start, len - start);
		len -= start;
	}
	*ret_text = text;
	*ret_len = len;
	*ret_end = size;
	return 0;
}

static void follower_free(struct follower *f)
{
	struct vram_logfollow *lf = f->lf;
	if (f->tick)
		event_free(f->tick);
	if (f->fd >= 0)
		close(f->fd);
	vram_list_remove(&f->link);
	lf->n--;
	lf->n_tcp -= f->tcp;
	free(f->name);
	free(f->path);
	free(f);
}

/* The client went away: evhttp frees the connection; the request is ours to free. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
	struct follower *f = arg;
	vram_http_release_detached(f->req);
	follower_free(f);
}

/* Ends the stream cleanly (the terminating chunk) and frees f. */
static void follower_end(struct follower *f)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(f->req);
	if (evcon)
		evhttp_connection_set_closecb(evcon, NULL, NULL);
	evhttp_send_reply_end(f->req);
	follower_free(f);
}

/* Bytes queued to the client and not yet taken. */
static size_t backlog(struct follower *f)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(f->req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

/* Opens path (not through a link) as f's file, read from its start. */
static void follow_file(struct follower *f, const char *path)
{
	int fd = vram_open_file(path, O_RDONLY, 0);
	if (fd < 0)
		return; /* not there yet (rotation in progress, never written): next look */
	char *copy = strdup(path);
	if (!copy) {
		close(fd);
		return;
	}
	if (f->fd >= 0)
		close(f->fd);
	free(f->path);
	f->fd = fd;
	f->path = copy;
	f->pos = 0;
}

/*
 * Whether the log f reads is no longer the one the workload writes: the
 * path names another file (rotated, or the workload's log moved), or the
 * file was truncated in place (rotation with keep 0: read from its start).
 */
static bool file_replaced(struct follower *f, const char *current)
{
	struct stat a, b;
	if (!current)
		return false;
	if (strcmp(current, f->path) != 0)
		return true;
	if (fstat(f->fd, &a) < 0 || stat(current, &b) < 0)
		return false; /* between a rename and the new file: wait */
	if (a.st_ino != b.st_ino || a.st_dev != b.st_dev)
		return true;
	if (a.st_size < f->pos)
		f->pos = 0;
	return false;
}

/* Sends what was appended since the last look, at most READ_MAX bytes. */
static void pump(struct follower *f)
{
	const char *current = vram_manager_log_path(f->lf->m, f->name);
	if (f->fd < 0) {
		if (!current)
			return;
		follow_file(f, current);
		if (f->fd < 0)
			return;
	}
	size_t sent = 0;
	unsigned switches = 0;
	while (sent < VRAM_LOGFOLLOW_READ_MAX && backlog(f) < VRAM_LOGFOLLOW_BACKLOG_MAX) {
		struct evbuffer *buf = evbuffer_new();
		if (!buf)
			return;
		struct evbuffer_iovec vec;
		ssize_t n = -1;
		if (evbuffer_reserve_space(buf, 64 * 1024, &vec, 1) == 1) {
			n = pread(f->fd, vec.iov_base, vec.iov_len, f->pos);
			vec.iov_len = n > 0 ? (size_t)n : 0;
			evbuffer_commit_space(buf, &vec, 1);
		}
		if (n > 0) {
			f->pos += n;
			sent += (size_t)n;
			evhttp_send_reply_chunk(f->req, buf);
			evbuffer_free(buf);
			continue;
		}
		evbuffer_free(buf);
		/* At the end: go on in the new file if the log was rotated (once a look). */
		if (n < 0 || switches++ || !file_replaced(f, current))
			return;
		follow_file(f, current);
	}
}

/*
 * Every POLL_MS: a removed workload ends the stream (after what its file
 * still held); otherwise what was appended is sent.
 */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct follower *f = arg;
	enum vram_wl_state st;
	bool removed = vram_manager_state(f->lf->m, f->name, &st) == -ENOENT;
	pump(f); /* a removed workload's log path is gone: this reads on in its last file only */
	if (removed)
		follower_end(f);
}

int vram_logfollow_start(struct vram_logfollow *lf, struct evhttp_request *req, const char *name,
			 long tail, bool tcp)
{
	struct follower *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->lf = lf;
	f->req = req;
	f->fd = -1;
	f->tcp = tcp;
	f->name = strdup(name);
	f->tick = event_new(lf->base, -1, EV_PERSIST, on_tick, f);
	char *text = NULL;
	size_t len = 0;
	off_t end = 0;
	const char *path = vram_manager_log_path(lf->m, name);
	if (path)
		follow_file(f, path);
	if (!f->name || !f->tick ||
	    vram_logfollow_tail(f->fd, tail, VRAM_LOGFOLLOW_READ_MAX * 4, &text, &len, &end) < 0) {
		if (f->tick)
			event_free(f->tick);
		if (f->fd >= 0)
			close(f->fd);
		free(f->path);
		free(f->name);
		free(f);
		return -ENOMEM;
	}
	f->pos = end;
	vram_list_push_front(&lf->followers, &f->link);
	lf->n++;
	lf->n_tcp += tcp;

	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	evhttp_add_header(oh, "Content-Type", "text/plain; charset=utf-8");
	evhttp_add_header(oh, "Cache-Control", "no-cache");
	evhttp_add_header(oh, "X-Accel-Buffering", "no");
	evhttp_send_reply_start(req, 200, "OK");
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	evhttp_connection_set_closecb(evcon, on_close, f);
	/*
	 * As for the event stream (api.c): a quiet log is not idle; a client
	 * that stops reading is caught by the write timeout.
	 */
	struct timeval write_tv = { 30, 0 };
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(evcon), NULL, &write_tv);
	if (len) {
		struct evbuffer *buf = evbuffer_new();
		if (buf) {
			evbuffer_add(buf, text, len);
			evhttp_send_reply_chunk(req, buf);
			evbuffer_free(buf);
		}
	}
	free(text);
	struct timeval tv = { 0, VRAM_LOGFOLLOW_POLL_MS * 1000 };
	event_add(f->tick, &tv);
	return 0;
}

int vram_logfollow_new(struct event_base *base, struct vram_manager *m,
		       struct vram_logfollow **ret)
{
	struct vram_logfollow *lf = calloc(1, sizeof(*lf));
	if (!lf)
		return -ENOMEM;
	lf->base = base;
	lf->m = m;
	vram_list_init(&lf->followers);
	*ret = lf;
	return 0;
}

void vram_logfollow_count(const struct vram_logfollow *lf, size_t *ret_n, size_t *ret_n_tcp)
{
	*ret_n = lf->n;
	*ret_n_tcp = lf->n_tcp;
}

void vram_logfollow_end_all(struct vram_logfollow *lf)
{
	if (!lf)
		return;
	while (!vram_list_empty(&lf->followers))
		follower_end(vram_list_entry(vram_list_first(&lf->followers), struct follower, link));
}

void vram_logfollow_free(struct vram_logfollow *lf)
{
	if (!lf)
		return;
	vram_logfollow_end_all(lf);
	free(lf);
}
