/* SPDX-License-Identifier: MIT */
/*
 * The gateway's client connections (see gateway_int.h): reading requests
 * with h1.c, the front door on each head (access.h, the token, the body's
 * limits and the body budget), handing complete requests to the routes,
 * writing answers and relayed responses, closing and dropping.
 */
#include "daemon/gateway_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon/http.h"
#include "daemon/web.h"

/* what the gateway relays, evhttp takes: it would answer a longer body with an HTML page */
_Static_assert(VRAM_GATEWAY_API_BODY_MAX <= VRAM_HTTP_HARD_BODY_MAX, "API bodies over evhttp's limit");

/* ---------------------------------------------------- the body budget */

/*
 * The body budget: c now holds bytes of it (0 releases what it held). Only
 * TCP clients hold any; see VRAM_GATEWAY_BODY_BUDGET.
 */
static void body_hold(struct gw_client *c, uint64_t bytes)
{
	struct vram_gateway *gw = c->gw;
	gw->body_bytes = gw->body_bytes - c->held + bytes;
	c->held = bytes;
}

/* Whether c may hold bytes of the budget, in place of what it holds now. */
static bool body_fits(const struct gw_client *c, uint64_t bytes)
{
	const struct vram_gateway *gw = c->gw;
	return gw->body_bytes - c->held + bytes <= gw->body_budget;
}

/* ------------------------------------------------------- client output */

/*
 * Sends n pieces to c: written at once when nothing waits, the rest queued
 * for the write event. Returns 0, or -errno after dropping c (the client is
 * gone or too far behind): the caller returns without touching c, its
 * request or that request's upstream.
 */
int gw__client_sendv(struct gw_client *c, struct iovec *iov, int n)
{
	size_t total = 0, done = 0;
	for (int i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (total == 0)
		return 0;
	if (gw__client_pending(c) == 0) {
		struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w;
		do
			w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w < 0 && errno != EAGAIN) {
			int e = errno;
			gw__client_drop(c);
			return -e;
		}
		done = w > 0 ? (size_t)w : 0;
		c->out_stamp = gw__now_s();
	}
	if (done == total)
		return 0;
	if (gw__client_pending(c) == 0) {
		vram_buf_reset(&c->out);
		c->out_off = 0;
	}
	for (int i = 0; i < n; i++) {
		size_t len = iov[i].iov_len;
		if (done >= len) {
			done -= len;
			continue;
		}
		if (vram_buf_append(&c->out, (const char *)iov[i].iov_base + done, len - done) < 0) {
			gw__client_drop(c);
			return -ENOBUFS;
		}
		done = 0;
	}
	event_add(c->wev, NULL);
	return 0;
}

static int client_send(struct gw_client *c, const void *p, size_t n)
{
	struct iovec iov = { (void *)p, n };
	return gw__client_sendv(c, &iov, 1);
}

/* Ends the connection once what is queued is sent: the write side is shut
 * and the rest of what the client sends is read and dropped (a close with
 * unread data would reset the connection and could lose the response). */
void gw__client_close_soon(struct gw_client *c)
{
	c->closing = true;
	if (gw__client_pending(c) > 0 || c->lingering)
		return;
	if (shutdown(c->fd, SHUT_WR) < 0) {
		gw__client_drop(c);
		return;
	}
	c->lingering = true;
	c->stamp = gw__now_s();
	if (c->read_paused) {
		c->read_paused = false;
		event_add(c->rev, NULL);
	}
}

void gw__client_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct gw_client *c = arg;
	size_t pending = gw__client_pending(c);
	ssize_t w = pending ? send(fd, c->out.data + c->out_off, pending, MSG_NOSIGNAL) : 0;
	if (w < 0 && errno != EAGAIN && errno != EINTR) {
		gw__client_drop(c);
		return;
	}
	if (w > 0) {
		c->out_off += (size_t)w;
		c->out_stamp = gw__now_s();
	}
	if (gw__client_pending(c) > 0) {
		event_add(c->wev, NULL);
		return;
	}
	vram_buf_reset(&c->out);
	vram_buf_shrink(&c->out, VRAM_GATEWAY_IDLE_BUF_MAX); /* a slow reader's backlog, gone */
	c->out_off = 0;
	if (c->req && c->req->up && c->req->up->paused)
		gw__up_resume(c->req->up);
	if (c->closing && !c->req)
		gw__client_close_soon(c);
}

/* A complete response with a body, as the gateway's own. */
int gw__client_reply(struct gw_client *c, int status, const char *extra, const char *ctype,
		     const char *body, size_t len, bool close)
{
	char cors[VRAM_ACCESS_HEADERS_MAX], head[1024 + VRAM_ACCESS_HEADERS_MAX];
	vram_access_cors_headers(c->cors_origin, cors, sizeof(cors));
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
			 status, vram_http_reason(status), ctype, len, extra ? extra : "", cors,
			 close ? "Connection: close\r\n" : "");
	struct iovec iov[2] = { { head, (size_t)n }, { (void *)body, len } };
	/* the gateway's own answer to the request being read (a refusal, an error, a list) */
	if (c->acc.pending && !c->req)
		gw__access_end(c->gw, &c->acc, status, (uint64_t)n + len, -1);
	int r = gw__client_sendv(c, iov, 2);
	if (r == 0 && close)
		gw__client_close_soon(c);
	return r;
}

/*
 * Replies with the JSON error shape; retry_after > 0 adds Retry-After.
 * Returns like gw__client_sendv.
 */
int gw__client_error(struct gw_client *c, int status, const char *code, int retry_after,
		     bool close, const char *fmt, ...)
{
	char message[1536], extra[96] = "";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	if (retry_after > 0)
		snprintf(extra, sizeof(extra), "Retry-After: %d\r\n", retry_after);
	if (status == 401)
		snprintf(extra, sizeof(extra), "WWW-Authenticate: Bearer\r\n");
	json_t *body = vram_http_error_json(status, code, message);
	char *text = body ? json_dumps(body, VRAM_HTTP_JSON_FLAGS) : NULL;
	json_decref(body);
	static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
	int r = gw__client_reply(c, text ? status : 500, extra, "application/json",
				 text ? text : oom, text ? strlen(text) : sizeof(oom) - 1, close);
	free(text);
	return r;
}

/* ------------------------------------------------------- client input */

/* A request head is read; its body is still coming: "100 Continue" if asked. */
static int maybe_continue(struct gw_client *c, const struct vram_h1_head *h)
{
	if (!h->expect_continue || c->continue_sent || h->minor < 1)
		return 0;
	c->continue_sent = true;
	static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
	return client_send(c, cont, sizeof(cont) - 1);
}

/* An error for a request that could not be read: answered, then the connection ends. */
static void bad_request(struct gw_client *c, int r)
{
	switch (r) {
	case -EMSGSIZE:
		gw__client_error(c, 431, NULL, 0, true, "the request head is over %d bytes",
				 VRAM_HTTP_HEADERS_MAX);
		break;
	case -E2BIG:
		gw__client_error(c, 431, "too_many_headers", 0, true, "more than %d header lines",
				 VRAM_H1_HEADERS_MAX);
		break;
	case -EPROTONOSUPPORT:
		gw__client_error(c, 505, NULL, 0, true, "only HTTP/1.0 and HTTP/1.1 are served");
		break;
	default:
		gw__client_error(c, 400, NULL, 0, true,
				 "the request is not valid HTTP/1.1 (or its length is ambiguous)");
	}
}

/* What vram_access_check needs to know of c's listener. */
static void access_listener(const struct gw_client *c, struct vram_access_listener *ret)
{
	const struct vram_gateway *gw = c->gw;
	const struct gw_listener *tcp = c->trusted ? NULL : c->listener;
	/* on the control socket, vramd's own origin is still its TCP listener's */
	for (size_t i = 0; !tcp && i < gw->n_listeners; i++)
		if (!gw->listeners[i].trusted)
			tcp = &gw->listeners[i];
	*ret = (struct vram_access_listener){ .unix_socket = c->trusted,
					      .host = tcp ? tcp->host : NULL,
					      .port = tcp ? tcp->port : 0,
					      .local_addr = c->local_addr };
}

/* Answers an allowed CORS preflight: 204 and the CORS headers. Returns like gw__client_sendv. */
static int client_preflight(struct gw_client *c, const struct vram_h1_head *h, bool close)
{
	char cors[VRAM_ACCESS_HEADERS_MAX], head[VRAM_ACCESS_HEADERS_MAX + 64];
	vram_access_preflight_headers(c->cors_origin, h, cors, sizeof(cors));
	int n = snprintf(head, sizeof(head), "HTTP/1.1 204 No Content\r\n%s%s\r\n", cors,
			 close ? "Connection: close\r\n" : "");
	if (c->acc.pending)
		gw__access_end(c->gw, &c->acc, 204, (uint64_t)n, -1);
	int r = client_send(c, head, (size_t)n);
	if (r == 0 && close)
		gw__client_close_soon(c);
	return r;
}

/* What the front door made of a request head. */
enum gw_door {
	GW_DOOR_CLOSED,   /* answered; the connection ends (c may be gone) */
	GW_DOOR_ANSWERED, /* answered, and it had no body: on to the next request */
	GW_DOOR_ADMITTED, /* its body may be read and the request served */
};

/*
 * Refuses the request with head h: answered with the JSON error. A request
 * with a body ends the connection (its body is not read); one without may
 * be followed by another.
 */
static enum gw_door door_refuse(struct gw_client *c, const struct vram_h1_head *h, int status,
				const char *code, int retry_after, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
static enum gw_door door_refuse(struct gw_client *c, const struct vram_h1_head *h, int status,
				const char *code, int retry_after, const char *fmt, ...)
{
	char message[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	bool close = !h->keep_alive || h->body != VRAM_H1_BODY_NONE;
	if (gw__client_error(c, status, code, retry_after, close, "%s", message) < 0 || close)
		return GW_DOOR_CLOSED;
	return GW_DOOR_ANSWERED;
}

/*
 * True when the request carries one of vramd's tokens, as
 * "Authorization: Bearer <token>" or as "X-Api-Key: <token>" (what
 * Anthropic's SDKs send); either header may be the one that matches.
 */
static bool door_carries_token(const struct vram_gateway *gw, const struct vram_h1_head *h)
{
	const struct vram_h1_header *auth = vram_h1_find(h, "Authorization");
	const struct vram_h1_header *key = vram_h1_find(h, "X-Api-Key");
	/* both are compared when both are sent: the time does not tell which one matched */
	bool bearer = auth && gw__carries_token(gw, auth->value, true);
	bool api_key = key && gw__carries_token(gw, key->value, false);
	return bearer || api_key;
}

/*
 * True for a GET of /healthz while daemon.open_healthz is on: a liveness
 * probe (a load balancer, systemd, a container runtime) needs no token.
 * The route answers {"status":"ok"} and nothing else, so it tells no more
 * than that the port answers.
 */
static bool door_open_healthz(const struct vram_gateway *gw, const struct vram_h1_head *h,
			      const char *t, size_t tlen)
{
	static const char path[] = "/healthz";
	const char *q = memchr(t, '?', tlen);
	size_t plen = q ? (size_t)(q - t) : tlen;
	return vram_manager_config(gw->m)->daemon.open_healthz &&
	       vram_h1_span_eq(h->method, "GET") && plen == sizeof(path) - 1 &&
	       memcmp(t, path, plen) == 0;
}

/*
 * Everything decided from a request's head, before its body is read: the
 * target's form, the browser rules (Host, Origin, preflights), the token on
 * TCP, the API's methods and body type, the body's size against its route's
 * limit and the body budget. A refused request is answered here.
 */
static enum gw_door front_door(struct gw_client *c, const struct vram_h1_head *h)
{
	struct vram_gateway *gw = c->gw;
	c->cors_origin[0] = '\0';
	c->ident.token = false;
	size_t tlen;
	const char *t = gw__origin_form(h->target, &tlen);
	if (!t) {
		/* malformed: whatever follows on the connection cannot be trusted to be framed right */
		gw__client_error(c, 400, NULL, 0, true,
				 "the request target must be a path, not \"%.*s\"",
				 (int)(h->target.n > 200 ? 200 : h->target.n), h->target.p);
		return GW_DOOR_CLOSED;
	}

	struct vram_access_listener l;
	struct vram_access a;
	access_listener(c, &l);
	vram_access_check(&l, vram_manager_config(gw->m), h, &a);
	if (a.verdict == VRAM_ACCESS_REFUSE)
		return door_refuse(c, h, a.status, a.code, 0, "%s", a.message);
	memcpy(c->cors_origin, a.origin, sizeof(a.origin));
	if (a.verdict == VRAM_ACCESS_PREFLIGHT) {
		/* before the token: a browser sends none with a preflight */
		bool close = !h->keep_alive || h->body != VRAM_H1_BODY_NONE;
		if (client_preflight(c, h, close) < 0 || close)
			return GW_DOOR_CLOSED;
		return GW_DOOR_ANSWERED;
	}

	/* the dashboard's files hold no secret: the page asks for the token (web.h) */
	bool open_file = vram_web_is_public(h->method.p, h->method.n, t, tlen);
	if (!c->trusted && gw->token && !open_file) {
		if (door_carries_token(gw, h))
			c->ident.token = true;
		else if (!door_open_healthz(gw, h, t, tlen))
			return door_refuse(c, h, 401, NULL, 0, "this API needs \"Authorization: Bearer "
					   "<token>\" or \"X-Api-Key: <token>\" (daemon.token)");
	}

	bool api = gw__route_of(t, tlen) == GW_ROUTE_API;
	if (api && !vram_access_check_api(h, &a))
		return door_refuse(c, h, a.status, a.code, 0, "%s", a.message);
	c->body_max = api ? VRAM_GATEWAY_API_BODY_MAX : VRAM_GATEWAY_BODY_MAX;
	if (h->body != VRAM_H1_BODY_LENGTH)
		return GW_DOOR_ADMITTED;
	if (h->content_length > c->body_max)
		return door_refuse(c, h, 413, NULL, 0, "the request body is over %zu bytes%s",
				   c->body_max, api ? " (the API's limit)" : "");
	if (c->trusted || h->content_length <= VRAM_GATEWAY_SMALL_BODY_MAX)
		return GW_DOOR_ADMITTED;
	if (!body_fits(c, h->content_length))
		return door_refuse(c, h, 503, "busy", VRAM_GATEWAY_RETRY_AFTER_S,
				   "the gateway holds %llu bytes of other request bodies, and a "
				   "%llu-byte body would pass its budget of %llu bytes: try again",
				   (unsigned long long)gw->body_bytes,
				   (unsigned long long)h->content_length,
				   (unsigned long long)gw->body_budget);
	body_hold(c, h->content_length);
	return GW_DOOR_ADMITTED;
}

/*
 * The request that took the first consumed bytes of c->in is dispatched or
 * answered: the state of one request is reset, and buffers a large one grew
 * shrink back to what an idle connection keeps.
 */
static void client_rest(struct gw_client *c, size_t consumed)
{
	vram_buf_consume(&c->in, consumed);
	vram_buf_shrink(&c->in, VRAM_GATEWAY_IDLE_BUF_MAX);
	vram_buf_reset(&c->body);
	vram_buf_shrink(&c->body, VRAM_GATEWAY_IDLE_BUF_MAX);
	memset(&c->ck, 0, sizeof(c->ck));
	c->ck_scanned = 0;
	c->continue_sent = false;
	c->admitted = false;
	c->stamp = gw__now_s();
}

/* Serves the complete requests in c->in, one at a time. */
static void client_process(struct gw_client *c)
{
	c->processing = true;
	while (!c->dead && !c->req && !c->closing && c->in.len) {
		size_t lead = 0;
		while (lead < c->in.len && (c->in.data[lead] == '\r' || c->in.data[lead] == '\n'))
			lead++;
		if (lead) {
			vram_buf_consume(&c->in, lead);
			continue;
		}
		struct vram_h1_head h;
		int hl = vram_h1_parse_request(c->in.data, c->in.len, VRAM_HTTP_HEADERS_MAX, &h);
		if (hl == 0)
			break;
		if (hl < 0) {
			c->cors_origin[0] = '\0';
			bad_request(c, hl);
			break;
		}
		/* draining for a restart: answered, then the connection ends (a new one waits for
		 * the next image in the kernel's backlog) */
		if (c->gw->draining)
			h.keep_alive = false;
		if (!c->admitted) {
			/* once per request: its head is read again while its body comes */
			gw__access_begin(c, &h);
			enum gw_door d = front_door(c, &h);
			if (d == GW_DOOR_CLOSED)
				break;
			if (d == GW_DOOR_ANSWERED) {
				client_rest(c, (size_t)hl);
				continue;
			}
			c->admitted = true;
		}
		const char *body = "";
		size_t blen = 0, total = (size_t)hl;
		if (h.body == VRAM_H1_BODY_LENGTH) {
			if (c->in.len - (size_t)hl < h.content_length) {
				maybe_continue(c, &h);
				break;
			}
			body = c->in.data + hl;
			blen = (size_t)h.content_length;
			total += blen;
		} else if (h.body == VRAM_H1_BODY_CHUNKED) {
			bool done = false;
			size_t from = (size_t)hl + c->ck_scanned;
			ssize_t s = vram_h1_chunked_scan(&c->ck, c->in.data + from, c->in.len - from,
							 &done, gw__append_to_buf, &c->body);
			if (s == -E2BIG || c->body.len > c->body_max) {
				gw__client_error(c, 413, NULL, 0, true,
						 "the request body is over %zu bytes", c->body_max);
				break;
			}
			if (s < 0) {
				bad_request(c, -EBADMSG);
				break;
			}
			c->ck_scanned += (size_t)s;
			/* a chunked body counts as it arrives: its framing and what it decodes to */
			uint64_t held = c->ck_scanned + c->body.len;
			if (!c->trusted && held > VRAM_GATEWAY_SMALL_BODY_MAX) {
				if (!body_fits(c, held)) {
					gw__client_error(c, 503, "busy", VRAM_GATEWAY_RETRY_AFTER_S, true,
							 "the gateway holds %llu bytes of request "
							 "bodies, its budget: this chunked body does "
							 "not fit now",
							 (unsigned long long)c->gw->body_bytes);
					break;
				}
				body_hold(c, held);
			}
			if (!done) {
				maybe_continue(c, &h);
				break;
			}
			body = c->body.data ? c->body.data : "";
			blen = c->body.len;
			total += c->ck_scanned;
		}
		gw__dispatch(c, &h, body, blen);
		if (c->dead)
			break;
		/* the body's share of the budget goes with its request, or now */
		if (c->req) {
			c->req->held = c->held;
			c->held = 0;
		} else {
			body_hold(c, 0);
		}
		client_rest(c, total);
	}
	c->processing = false;
	if (c->dead) {
		c->dead = false;
		gw__client_drop(c);
		return;
	}
	if (c->read_paused && !c->req) {
		c->read_paused = false;
		event_add(c->rev, NULL);
	}
}

void gw__access_begin(struct gw_client *c, const struct vram_h1_head *h)
{
	struct gw_access *a = &c->acc;
	a->pending = true;
	snprintf(a->client, sizeof(a->client), "%s", c->trusted ? "unix" : c->ident.addr);
	size_t n = h->method.n < sizeof(a->method) ? h->method.n : sizeof(a->method) - 1;
	memcpy(a->method, h->method.p, n);
	a->method[n] = '\0';
	n = h->target.n < sizeof(a->target) ? h->target.n : sizeof(a->target) - 1;
	memcpy(a->target, h->target.p, n);
	a->target[n] = '\0';
	a->model[0] = a->workload[0] = '\0';
	a->queue_s = 0;
	clock_gettime(CLOCK_MONOTONIC, &a->started);
}

/* The request in service ended: on to the next one if it is already here. */
void gw__client_next(struct gw_client *c)
{
	c->stamp = gw__now_s();
	if (c->read_paused) {
		c->read_paused = false;
		event_add(c->rev, NULL);
	}
	/* Not served from here: a long pipeline must not recurse. */
	if (c->in.len && !c->processing)
		event_active(c->rev, EV_READ, 0);
}

void gw__client_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct gw_client *c = arg;
	char *p;
	size_t avail;
	if (c->lingering) {
		char drop[4096];
		ssize_t n = recv(fd, drop, sizeof(drop), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			gw__client_drop(c);
		return;
	}
	if (c->req && c->in.len + GW_READ_MAX > VRAM_GATEWAY_IDLE_BUF_MAX) {
		/* What a client sends ahead of an answer waits in the kernel, not here. */
		c->read_paused = true;
		event_del(c->rev);
		return;
	}
	if (vram_buf_space(&c->in, GW_READ_MAX, &p, &avail) < 0) {
		if (!c->req) {
			/* Only a chunked body with too much framing gets here. */
			gw__client_error(c, 413, NULL, 0, true, "the request is over %u bytes",
					 (unsigned)c->in.max);
			return;
		}
		/* A request in service, and the client has sent on: wait for it. */
		c->read_paused = true;
		event_del(c->rev);
		return;
	}
	ssize_t n = recv(fd, p, avail, 0);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR) {
			if (!c->req && c->in.len)
				client_process(c); /* woken by gw__client_next */
			return;
		}
		gw__client_drop(c);
		return;
	}
	if (n == 0) {
		/* The client is gone: whatever it asked for is cancelled. */
		gw__client_drop(c);
		return;
	}
	if (c->in.len == 0 && !c->req)
		c->stamp = gw__now_s();
	vram_buf_commit(&c->in, (size_t)n);
	if (!c->req && !c->closing)
		client_process(c);
}

void gw__client_drop(struct gw_client *c)
{
	if (c->processing) {
		c->dead = true;
		return;
	}
	struct vram_gateway *gw = c->gw;
	if (c->req) {
		struct gw_req *r = c->req;
		struct gw_wl *wl = gw__wl_to_drain(r);
		bool was_proxying = r->phase == GW_PROXYING;
		r->c = NULL;
		gw__finish(r, 0);
		if (was_proxying && wl)
			gw__drain(wl, false);
	}
	vram_list_remove(&c->link);
	gw->n_clients--;
	if (!c->trusted) {
		gw->n_tcp_clients--;
		gw__addr_release(gw, c->addr_key);
	}
	body_hold(c, 0);
	event_free(c->rev);
	event_free(c->wev);
	close(c->fd);
	vram_buf_done(&c->in);
	vram_buf_done(&c->out);
	vram_buf_done(&c->body);
	free(c);
}
