/* SPDX-License-Identifier: MIT */
/*
 * The gateway's upstream client and its pools (see gateway_int.h): one
 * connection per request in service, to a workload's port or to the API
 * socket; the request head that goes there and the response head that
 * comes back for the client; streaming the body with backpressure; kept-alive
 * connections waiting in their pool, most recently used first.
 */
#include "daemon/gateway_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "daemon/http.h"

/* ---------------------------------------------------------- upstreams */

static void up_on_read(evutil_socket_t fd, short what, void *arg);
static void up_on_write(evutil_socket_t fd, short what, void *arg);

static void pool_remove(struct gw_up *up)
{
	vram_list_remove(&up->link);
	up->pool->n_idle--;
}

/* Closes and frees up; it must not carry a request (see gw__finish). */
void gw__up_close(struct gw_up *up)
{
	if (!up)
		return;
	if (vram_list_linked(&up->link))
		pool_remove(up);
	if (up->rev)
		event_free(up->rev);
	if (up->wev)
		event_free(up->wev);
	if (up->fd >= 0)
		close(up->fd);
	vram_buf_done(&up->in);
	free(up);
}

/*
 * Closes idle connections of p, oldest first, while there are more than keep
 * or the oldest has sat unused for more than max_idle_s (0: no age limit).
 */
void gw__pool_trim(struct gw_pool *p, unsigned keep, time_t max_idle_s)
{
	time_t now = max_idle_s ? gw__now_s() : 0;
	/* the count alone decides without a walk: pool_put runs for every response */
	while (p->n_idle > keep || (p->n_idle > 0 && max_idle_s)) {
		struct gw_up *last = vram_list_entry(p->idle.prev, struct gw_up, link);
		if (p->n_idle <= keep && now - last->stamp <= max_idle_s)
			break;
		gw__up_close(last);
	}
}

void gw__pool_touch(struct gw_pool *p)
{
	struct vram_list *pos;
	time_t now = gw__now_s();
	vram_list_for_each(pos, &p->idle)
		vram_list_entry(pos, struct gw_up, link)->stamp = now;
}

static void pool_put(struct gw_up *up)
{
	struct gw_pool *p = up->pool;
	up->reused = true;
	vram_buf_shrink(&up->in, VRAM_GATEWAY_IDLE_BUF_MAX);
	if (up->paused)
		gw__up_resume(up);
	vram_list_push_front(&p->idle, &up->link);
	p->n_idle++;
	gw__pool_trim(p, VRAM_GATEWAY_IDLE_CONNS_MAX, 0);
}

static struct gw_up *pool_take(struct gw_pool *p, unsigned port)
{
	struct vram_list *pos;
	vram_list_for_each(pos, &p->idle) {
		struct gw_up *up = vram_list_entry(pos, struct gw_up, link);
		if (up->port == port) {
			pool_remove(up);
			return up;
		}
	}
	return NULL;
}

/* Connects to port on 127.0.0.1, or to the API socket for port 0. Returns NULL with errno. */
static struct gw_up *up_open(struct vram_gateway *gw, struct gw_pool *pool, unsigned port)
{
	struct gw_up *up = calloc(1, sizeof(*up));
	if (!up)
		return NULL;
	up->gw = gw;
	vram_list_init(&up->link);
	up->pool = pool;
	up->port = port;
	vram_buf_init(&up->in, VRAM_GATEWAY_UP_HEADERS_MAX + GW_READ_MAX);
	int r;
	if (port) {
		up->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (up->fd < 0)
			goto out_free;
		int one = 1;
		setsockopt(up->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		r = connect(up->fd, (struct sockaddr *)&sa, sizeof(sa));
	} else {
		up->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (up->fd < 0)
			goto out_free;
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", gw->api_socket);
		r = connect(up->fd, (struct sockaddr *)&sa, sizeof(sa));
	}
	if (r < 0 && errno != EINPROGRESS)
		goto out_close;
	up->connecting = r < 0;
	up->rev = event_new(gw->base, up->fd, EV_READ | EV_PERSIST, up_on_read, up);
	up->wev = event_new(gw->base, up->fd, EV_WRITE, up_on_write, up);
	if (!up->rev || !up->wev || event_add(up->rev, NULL) < 0) {
		errno = ENOMEM;
		goto out_close;
	}
	return up;

out_close:;
	int e = errno;
	gw__up_close(up);
	errno = e;
	return NULL;
out_free:
	e = errno;
	vram_buf_done(&up->in);
	free(up);
	errno = e;
	return NULL;
}

void gw__up_resume(struct gw_up *up)
{
	up->paused = false;
	up->stamp = gw__now_s();
	event_add(up->rev, NULL);
}

/* Writes what is left of the request. Returns 0 or -errno. */
static int up_flush(struct gw_up *up)
{
	struct gw_req *r = up->req;
	while (r->sent < r->wire.len) {
		ssize_t w = send(up->fd, r->wire.data + r->sent, r->wire.len - r->sent, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				event_add(up->wev, NULL);
				return 0;
			}
			return -errno;
		}
		r->sent += (size_t)w;
		up->stamp = gw__now_s();
	}
	return 0;
}

static const char *upstream_name(const struct gw_req *r, char *buf, size_t size)
{
	if (!r->wl)
		snprintf(buf, size, "the API server (%s)", r->gw->api_socket);
	else
		snprintf(buf, size, "the upstream of %s (127.0.0.1:%u)", r->wl->name,
			 r->up ? r->up->port : 0);
	return buf;
}

/*
 * The upstream connection failed or timed out (why: what it did). Before
 * any response a failed request that went out on a kept-alive connection is
 * sent once more on a new one (the server may have closed it just then);
 * otherwise the client gets status with code (502 "bad_gateway", 504
 * "timeout"), or, in the middle of a response, its connection is closed
 * after what it has been sent (the length or the chunking shows the cut).
 */
void gw__up_break(struct gw_up *up, int status, const char *code, const char *why)
{
	struct gw_req *r = up->req;
	if (!r) {
		gw__up_close(up);
		return;
	}
	char who[PATH_MAX + 64];
	upstream_name(r, who, sizeof(who));
	unsigned port = up->port;
	bool retry = status == 502 && up->reused && !up->got_bytes && !r->retried && !r->replying;
	up->req = NULL;
	r->up = NULL;
	gw__up_close(up);
	if (retry) {
		r->retried = true;
		gw__send_upstream(r, port);
		return;
	}
	struct gw_wl *wl = gw__wl_to_drain(r);
	if (!r->replying) {
		gw__fail_req(r, status, code, 0, "%s %s", who, why);
	} else {
		struct gw_client *c = r->c;
		vram_debug("gateway: %s %s in the middle of a response", who, why);
		gw__finish(r, status);
		gw__client_close_soon(c);
	}
	if (wl)
		gw__drain(wl, false);
}

static void up_fail(struct gw_up *up, const char *why)
{
	gw__up_break(up, 502, "bad_gateway", why);
}

/* The response ended: the connection goes back to its pool, the client on. */
static void up_done(struct gw_up *up)
{
	struct gw_req *r = up->req;
	struct gw_client *c = r->c;
	struct gw_wl *wl = gw__wl_to_drain(r);
	bool close = r->close_after;
	/* a removed workload's pool goes with it: nothing more is sent there */
	bool keep = up->keep_alive && up->in.len == 0 && !up->gw->closing &&
		    !(r->wl && r->wl->removed);
	up->req = NULL;
	r->up = NULL;
	if (keep)
		pool_put(up);
	else
		gw__up_close(up);
	gw__finish(r, r->status);
	if (close)
		gw__client_close_soon(c);
	else
		gw__client_next(c);
	if (wl)
		gw__drain(wl, false);
}

/* Appends "name: value\r\n" (no printf: this runs for every header of every request). */
static int put_field(struct vram_buf *b, struct vram_h1_span name, struct vram_h1_span value)
{
	int e = vram_buf_append(b, name.p, name.n);
	if (e == 0)
		e = vram_buf_append(b, ": ", 2);
	if (e == 0)
		e = vram_buf_append(b, value.p, value.n);
	if (e == 0)
		e = vram_buf_append(b, "\r\n", 2);
	return e;
}

/* Appends the decimal digits of v. */
static int put_u64(struct vram_buf *b, uint64_t v)
{
	char d[20];
	size_t n = 0;
	do {
		d[sizeof(d) - 1 - n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return vram_buf_append(b, d + sizeof(d) - n, n);
}

/* Appends "name: v\r\n". */
static int put_field_u64(struct vram_buf *b, const char *name, uint64_t v)
{
	int e = vram_buf_puts(b, name);
	if (e == 0)
		e = vram_buf_append(b, ": ", 2);
	if (e == 0)
		e = put_u64(b, v);
	if (e == 0)
		e = vram_buf_append(b, "\r\n", 2);
	return e;
}

/* Appends "name: <every value of name in h>, ours\r\n" (Via, X-Forwarded-For). */
static int put_hop_list(struct vram_buf *b, const struct vram_h1_head *h, const char *name,
			const char *ours)
{
	int e = vram_buf_puts(b, name);
	if (e == 0)
		e = vram_buf_append(b, ": ", 2);
	for (size_t i = 0; i < h->nh && e == 0; i++)
		if (vram_h1_span_eq(h->h[i].name, name)) {
			e = vram_buf_append(b, h->h[i].value.p, h->h[i].value.n);
			if (e == 0)
				e = vram_buf_append(b, ", ", 2);
		}
	if (e == 0)
		e = vram_buf_puts(b, ours);
	if (e == 0)
		e = vram_buf_append(b, "\r\n", 2);
	return e;
}

/*
 * Builds r->wire: the request for the upstream, with target and body.
 * Returns 0, -EMSGSIZE when the head for the API would pass what its server
 * takes (VRAM_HTTP_RELAY_HEADERS_MAX), or -ENOMEM.
 */
int gw__build_request(struct gw_req *r, const struct vram_h1_head *h, const char *target,
		      const char *body, size_t blen)
{
	struct gw_client *c = r->c;
	struct vram_gateway *gw = r->gw;
	struct vram_buf *b = &r->wire;
	/* the head, what is added to it (at most about 1.3 KiB), the body: one allocation */
	vram_buf_init(b, h->len + strlen(target) + 4096 + blen);
	char *unused;
	size_t room;
	int e = vram_buf_space(b, b->max, &unused, &room);
	if (e == 0)
		e = vram_buf_append(b, h->method.p, h->method.n);
	if (e == 0)
		e = vram_buf_append(b, " ", 1);
	if (e == 0)
		e = vram_buf_puts(b, target);
	if (e == 0)
		e = vram_buf_append(b, " HTTP/1.1\r\n", 11);
	bool has_host = false;
	for (size_t i = 0; i < h->nh && e == 0; i++) {
		struct vram_h1_span n = h->h[i].name, v = h->h[i].value;
		if (vram_h1_hop_by_hop(h, n) || vram_h1_span_eq(n, "Content-Length") ||
		    vram_h1_span_eq(n, "Expect") || vram_h1_span_eq(n, "Via") ||
		    vram_h1_span_eq(n, "X-Forwarded-For"))
			continue;
		/* Only the gateway says who asks, and only to the API. */
		if (vram_h1_span_eq(n, VRAM_PEER_HEADER))
			continue;
		/* vramd's token goes no further than vramd: a squatter on a port must not get it. */
		if ((vram_h1_span_eq(n, "Authorization") && gw__carries_token(gw, v, true)) ||
		    (vram_h1_span_eq(n, "X-Api-Key") && gw__carries_token(gw, v, false)))
			continue;
		has_host |= vram_h1_span_eq(n, "Host");
		e = put_field(b, n, v);
	}
	if (e == 0 && !has_host)
		e = vram_buf_puts(b, "Host: localhost\r\n");
	bool with_body = vram_h1_span_eq(h->method, "POST") || vram_h1_span_eq(h->method, "PUT") ||
			 vram_h1_span_eq(h->method, "PATCH");
	if (e == 0 && (blen || with_body))
		e = put_field_u64(b, "Content-Length", blen);
	/* The earlier hops' values, then ours (no address for the Unix socket). */
	if (e == 0)
		e = put_hop_list(b, h, "Via", "1.1 vramd");
	if (e == 0 && c->ident.transport == VRAM_PEER_TCP && c->ident.addr[0])
		e = put_hop_list(b, h, "X-Forwarded-For", c->ident.addr);
	if (e == 0 && !r->wl) {
		char peer[VRAM_PEER_TEXT_MAX];
		int n = vram_peer_format(&c->ident, peer, sizeof(peer));
		struct vram_h1_span name = { VRAM_PEER_HEADER, strlen(VRAM_PEER_HEADER) };
		e = n < 0 ? n : put_field(b, name, (struct vram_h1_span){ peer, (size_t)n });
	}
	if (e == 0)
		e = vram_buf_puts(b, "\r\n");
	if (e == 0 && !r->wl && b->len > VRAM_HTTP_RELAY_HEADERS_MAX)
		return -EMSGSIZE;
	if (e == 0)
		e = vram_buf_append(b, body, blen);
	return e;
}

/* The response head for the client, from the upstream's head h. */
static int build_response_head(struct gw_req *r, const struct vram_h1_head *h, struct vram_buf *b)
{
	vram_buf_reset(b);
	int e = vram_buf_append(b, "HTTP/1.1 ", 9);
	if (e == 0)
		e = put_u64(b, (uint64_t)h->status);
	if (e == 0)
		e = vram_buf_append(b, " ", 1);
	if (e == 0)
		e = vram_buf_append(b, h->reason.p, h->reason.n);
	if (e == 0)
		e = vram_buf_append(b, "\r\n", 2);
	for (size_t i = 0; i < h->nh && e == 0; i++) {
		const struct vram_h1_header *hd = &h->h[i];
		/* vramd decides which origins may read a response, not the upstream */
		if (vram_h1_hop_by_hop(h, hd->name) || vram_h1_span_eq(hd->name, "Via") ||
		    vram_access_is_cors_header(hd->name))
			continue;
		if (h->body == VRAM_H1_BODY_CHUNKED && vram_h1_span_eq(hd->name, "Content-Length"))
			continue;
		e = put_field(b, hd->name, hd->value);
	}
	if (e == 0)
		e = put_hop_list(b, h, "Via", "1.1 vramd");
	if (e == 0 && r->c->cors_origin[0]) {
		char cors[VRAM_ACCESS_HEADERS_MAX];
		e = vram_access_cors_headers(r->c->cors_origin, cors, sizeof(cors));
		if (e >= 0)
			e = vram_buf_puts(b, cors);
	}
	r->close_after = !r->keep_alive || h->body == VRAM_H1_BODY_CLOSE;
	if (e == 0 && h->body == VRAM_H1_BODY_CHUNKED) {
		if (r->minor >= 1) {
			e = vram_buf_puts(b, "Transfer-Encoding: chunked\r\n");
		} else {
			r->dechunk = true; /* HTTP/1.0 has no chunks: the body runs to the close */
			r->close_after = true;
		}
	}
	if (e == 0 && r->close_after)
		e = vram_buf_puts(b, "Connection: close\r\n");
	else if (e == 0 && r->minor == 0)
		e = vram_buf_puts(b, "Connection: keep-alive\r\n");
	if (e == 0)
		e = vram_buf_puts(b, "\r\n");
	return e;
}

/* Handles what up->in holds: the response head once, then body bytes. */
static void up_process(struct gw_up *up)
{
	struct vram_gateway *gw = up->gw;
	struct gw_req *r = up->req;
	size_t pos = 0;
	bool send_head = false;
	while (!up->head_done) {
		struct vram_h1_head h;
		int hl = vram_h1_parse_response(up->in.data + pos, up->in.len - pos,
						VRAM_GATEWAY_UP_HEADERS_MAX, r->head_request, &h);
		if (hl == 0) {
			if (pos)
				vram_buf_consume(&up->in, pos);
			return;
		}
		if (hl < 0) {
			up_fail(up, hl == -EMSGSIZE ? "sent a response head over 64 KiB"
				    : hl == -E2BIG ? "sent more than 100 header lines"
						   : "sent a response that is not valid HTTP/1.1");
			return;
		}
		pos += (size_t)hl;
		if (h.status == 101) {
			up_fail(up, "switched protocols, which the gateway does not carry");
			return;
		}
		if (h.status < 200)
			continue; /* an interim response: the real one follows */
		if (build_response_head(r, &h, &gw->head) < 0) {
			up_fail(up, "sent a response head the gateway could not copy");
			return;
		}
		up->head_done = true;
		up->body = h.body;
		up->left = h.content_length;
		up->keep_alive = h.keep_alive;
		memset(&up->ck, 0, sizeof(up->ck));
		r->status = h.status;
		send_head = true;
	}

	const char *bp = up->in.data + pos;
	size_t avail = up->in.len - pos, take = 0;
	bool end = false;
	struct iovec iov[2];
	int n = 0;
	if (send_head)
		iov[n++] = (struct iovec){ gw->head.data, gw->head.len };
	switch (up->body) {
	case VRAM_H1_BODY_NONE:
		end = true;
		break;
	case VRAM_H1_BODY_LENGTH:
		take = (uint64_t)avail < up->left ? avail : (size_t)up->left;
		up->left -= take;
		end = up->left == 0;
		break;
	case VRAM_H1_BODY_CLOSE:
		take = avail;
		break;
	case VRAM_H1_BODY_CHUNKED: {
		vram_buf_reset(&gw->dechunked);
		ssize_t s = vram_h1_chunked_scan(&up->ck, bp, avail, &end,
						 r->dechunk ? gw__append_to_buf : NULL,
						 &gw->dechunked);
		if (s < 0) {
			up_fail(up, "sent a broken chunked body");
			return;
		}
		take = (size_t)s;
		break;
	}
	}
	up->total += take;
	if (up->total > VRAM_GATEWAY_RESPONSE_MAX) {
		up_fail(up, "sent a response over the size limit");
		return;
	}
	if (r->dechunk && gw->dechunked.len)
		iov[n++] = (struct iovec){ gw->dechunked.data, gw->dechunked.len };
	else if (!r->dechunk && take)
		iov[n++] = (struct iovec){ (void *)bp, take };
	if (end && pos + take < up->in.len)
		up->keep_alive = false; /* bytes beyond the response: not a connection to reuse */
	if (send_head) {
		r->replying = true;
		r->first_byte_s = gw__seconds_since(&r->acc.started);
	}
	for (int i = 0; i < n; i++)
		r->bytes_out += iov[i].iov_len;
	struct gw_client *c = r->c;
	if (gw__client_sendv(c, iov, n) < 0)
		return; /* c, r and up are gone */
	vram_buf_consume(&up->in, pos + take);
	if (end) {
		up_done(up);
		return;
	}
	if (gw__client_pending(c) > VRAM_GATEWAY_BACKLOG_MAX && !up->paused) {
		up->paused = true;
		event_del(up->rev);
	}
}

static void up_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct gw_up *up = arg;
	char *p;
	size_t avail;
	if (vram_buf_space(&up->in, GW_READ_MAX, &p, &avail) < 0) {
		up_fail(up, "sent a response head over 64 KiB");
		return;
	}
	ssize_t n = recv(fd, p, avail, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		up_fail(up, strerror(errno));
		return;
	}
	if (!up->req) {
		/* An idle connection closed, or sent what nobody asked for. */
		gw__up_close(up);
		return;
	}
	if (n == 0) {
		if (up->head_done && up->body == VRAM_H1_BODY_CLOSE) {
			up->keep_alive = false;
			up_done(up);
		} else {
			up_fail(up, up->got_bytes ? "closed the connection in the middle of a response"
						  : "closed the connection without a response");
		}
		return;
	}
	vram_buf_commit(&up->in, (size_t)n);
	time_t now = gw__now_s();
	/* for the workload's liveness checks: bytes flow (a response's first, then once a second) */
	if ((now != up->stamp || !up->got_bytes) && up->req->wl)
		vram_manager_note_progress(up->gw->m, up->req->wl->name, up->port);
	up->stamp = now;
	up->got_bytes = true;
	up_process(up);
}

static void up_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct gw_up *up = arg;
	if (up->connecting) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			char why[160];
			snprintf(why, sizeof(why), "could not be reached: %s", strerror(err));
			up_fail(up, why);
			return;
		}
		up->connecting = false;
	}
	if (!up->req)
		return;
	int r = up_flush(up);
	if (r < 0) {
		char why[160];
		snprintf(why, sizeof(why), "stopped taking the request: %s", strerror(-r));
		up_fail(up, why);
	}
}

/* Sends r (proxying) on a kept-alive connection to port, or a new one. */
void gw__send_upstream(struct gw_req *r, unsigned port)
{
	struct vram_gateway *gw = r->gw;
	struct gw_pool *pool = r->wl ? &r->wl->pool : &gw->api_pool;
	struct gw_up *up = r->retried ? NULL : pool_take(pool, port);
	if (!up)
		up = up_open(gw, pool, port);
	if (!up) {
		char who[PATH_MAX + 64];
		gw__fail_req(r, 502, "bad_gateway", 0, "%s could not be reached: %s",
			     upstream_name(r, who, sizeof(who)), strerror(errno));
		return;
	}
	up->req = r;
	r->up = up;
	r->sent = 0;
	r->sent_stamp = gw__now_s();
	up->head_done = up->got_bytes = false;
	up->total = 0;
	up->stamp = gw__now_s();
	if (up->connecting) {
		event_add(up->wev, NULL);
		return;
	}
	int e = up_flush(up);
	if (e < 0) {
		char why[160];
		snprintf(why, sizeof(why), "did not take the request: %s", strerror(-e));
		up_fail(up, why);
	}
}
