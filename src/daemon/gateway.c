/* SPDX-License-Identifier: MIT */
/*
 * The gateway's reverse proxy; see gateway.h. The upstream side is libevent's
 * HTTP client: a pool of keep-alive connections per workload, the response
 * headers taken as soon as they arrive (header callback) and the body handed
 * to the client chunk by chunk (chunked callback), so that server-sent events
 * pass through as they are written. When more than VRAM_GATEWAY_BACKLOG_MAX
 * bytes wait for a slow client, reading from the upstream pauses until the
 * client has taken them.
 *
 * A request lives in one of two places: its workload's queue (waiting for a
 * start or restore, under the queue timeout) or the active list (sent
 * upstream). Every way out of either goes through finish(), which does the
 * accounting (manager in-flight count, metrics) once.
 */
#include "daemon/gateway.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/log.h"
#include "daemon/api.h"
#include "daemon/http.h"
#include "daemon/manager.h"
#include "daemon/metrics.h"

struct gw_req;

/* One keep-alive connection to one upstream port. */
struct gw_conn {
	struct evhttp_connection *evcon; /* owned */
	unsigned port;
	struct gw_conn *next; /* in the workload's idle list */
};

struct gw_wl {
	struct vram_gateway *gw;
	const struct vram_workload_config *cfg; /* borrowed from the manager's config */
	struct gw_req *qhead, *qtail;           /* waiting for start/restore, FIFO */
	unsigned n_queued;
	unsigned in_flight;                     /* requests sent upstream */
	struct vram_manager_waiter *waiter;     /* the start/restore being waited for */
	bool retry_wake;                        /* act was refused (busy): retry on a state change */
	struct gw_conn *idle;                   /* idle upstream connections */
	unsigned n_idle;
};

struct vram_gateway {
	struct event_base *base;   /* borrowed */
	struct vram_manager *m;    /* borrowed */
	struct vram_api *api;      /* borrowed */
	struct vram_metrics *mx;   /* borrowed, may be NULL */
	struct vram_manager_sub *sub;
	struct gw_wl *wls;         /* owned array, config order */
	size_t n_wls;
	struct gw_req *active;     /* requests sent upstream (list) */
	bool closing;
};

enum gw_phase { GW_QUEUED, GW_PROXYING };

struct gw_req {
	struct vram_gateway *gw;
	struct gw_wl *wl;
	struct evhttp_request *req;  /* the client's; libevent's */
	struct gw_req *prev, *next;  /* queue or active list */
	enum gw_phase phase;
	struct event *timeout;       /* queue timeout; owned */
	struct gw_conn *conn;        /* upstream connection while proxying */
	struct evhttp_request *up;   /* upstream request; libevent's */
	char *uri;                   /* owned; upstream request-target */
	struct timespec started;
	bool replying;               /* the reply to the client has started */
	bool paused;                 /* upstream reads paused for backpressure */
	enum evhttp_request_error up_error;
	bool up_failed;
};

/* ------------------------------------------------------------ helpers */

static double seconds_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static struct gw_wl *wl_by_name(struct vram_gateway *gw, const char *name)
{
	for (size_t i = 0; i < gw->n_wls; i++)
		if (strcmp(gw->wls[i].cfg->name, name) == 0)
			return &gw->wls[i];
	return NULL;
}

/* "a, b, c": every model name, or every workload name when models is false. */
static void list_known(struct vram_gateway *gw, bool models, char *buf, size_t size)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < gw->n_wls && len + 1 < size; i++) {
		const struct vram_workload_config *c = gw->wls[i].cfg;
		if (!models) {
			len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "", c->name);
			continue;
		}
		for (size_t k = 0; k < c->n_models && len + 1 < size; k++)
			len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "",
						c->models[k]);
	}
	if (len >= size)
		buf[size - 1] = '\0';
}

bool vram_gateway_hop_by_hop(const char *name, const char *connection)
{
	static const char *const fixed[] = { "Connection", "Keep-Alive", "Proxy-Connection", "TE",
					     "Trailer", "Transfer-Encoding", "Upgrade" };
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (strcasecmp(name, fixed[i]) == 0)
			return true;
	size_t nlen = strlen(name);
	for (const char *p = connection; p && *p;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *end = p;
		while (*end && *end != ',')
			end++;
		const char *tail = end;
		while (tail > p && (tail[-1] == ' ' || tail[-1] == '\t'))
			tail--;
		if ((size_t)(tail - p) == nlen && nlen && strncasecmp(p, name, nlen) == 0)
			return true;
		p = end;
	}
	return false;
}

int vram_gateway_copy_headers(const struct evkeyvalq *src, struct evkeyvalq *dst)
{
	const char *connection = NULL;
	int n = 0;
	const struct evkeyval *kv;
	TAILQ_FOREACH(kv, src, next) {
		if (++n > VRAM_GATEWAY_HEADERS_COUNT_MAX)
			return -E2BIG;
		if (strcasecmp(kv->key, "Connection") == 0)
			connection = kv->value;
	}
	/* Several Connection lines are one list (RFC 9110 §5.3): check each. */
	int copied = 0;
	TAILQ_FOREACH(kv, src, next) {
		bool drop = vram_gateway_hop_by_hop(kv->key, connection);
		const struct evkeyval *c;
		TAILQ_FOREACH(c, src, next)
			if (!drop && c->value != connection && strcasecmp(c->key, "Connection") == 0)
				drop = vram_gateway_hop_by_hop(kv->key, c->value);
		if (drop)
			continue;
		if (evhttp_add_header(dst, kv->key, kv->value) == 0)
			copied++;
	}
	return copied;
}

/* ----------------------------------------------------- model extraction */

static int copy_model(const char *s, size_t len, char *ret, size_t size)
{
	if (len == 0)
		return -ENOENT;
	if (len >= size || memchr(s, '\0', len))
		return -E2BIG;
	memcpy(ret, s, len);
	ret[len] = '\0';
	return 0;
}

static int model_from_json(const char *body, size_t len, char *ret, size_t size)
{
	json_t *obj = json_loadb(body, len, 0, NULL);
	if (!obj)
		return -ENOENT;
	json_t *v = json_object_get(obj, "model");
	int r = json_is_string(v) ? copy_model(json_string_value(v), json_string_length(v), ret, size)
				  : -ENOENT;
	json_decref(obj);
	return r;
}

static int model_from_query(const char *query, size_t len, char *ret, size_t size)
{
	char *q = strndup(query, len);
	if (!q)
		return -ENOMEM;
	struct evkeyvalq kv;
	TAILQ_INIT(&kv);
	int r = -ENOENT;
	if (evhttp_parse_query_str(q, &kv) == 0) {
		const char *v = evhttp_find_header(&kv, "model");
		if (v)
			r = copy_model(v, strlen(v), ret, size);
	}
	evhttp_clear_headers(&kv);
	free(q);
	return r;
}

/* The value of param (e.g. "boundary") in a header value like a Content-Type. */
static bool header_param(const char *value, const char *param, char *ret, size_t size)
{
	size_t plen = strlen(param);
	for (const char *p = strchr(value, ';'); p; p = strchr(p + 1, ';')) {
		const char *s = p + 1;
		while (*s == ' ' || *s == '\t')
			s++;
		if (strncasecmp(s, param, plen) != 0 || s[plen] != '=')
			continue;
		s += plen + 1;
		size_t n = 0;
		if (*s == '"') {
			s++;
			while (s[n] && s[n] != '"')
				n++;
		} else {
			while (s[n] && s[n] != ';' && s[n] != ' ' && s[n] != '\t')
				n++;
		}
		if (n == 0 || n >= size)
			return false;
		memcpy(ret, s, n);
		ret[n] = '\0';
		return true;
	}
	return false;
}

static const char *find_bytes(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
	return memmem(hay, hlen, needle, nlen);
}

/* The "model" part of a multipart/form-data body (RFC 7578). */
static int model_from_multipart(const char *ctype, const char *body, size_t len, char *ret,
				size_t size)
{
	char boundary[80];
	char delim[84];
	if (!header_param(ctype, "boundary", boundary, sizeof(boundary)))
		return -ENOENT;
	int dlen = snprintf(delim, sizeof(delim), "--%s", boundary);
	const char *end = body + len;
	const char *p = find_bytes(body, len, delim, (size_t)dlen);
	while (p) {
		p += dlen;
		if (end - p >= 2 && p[0] == '-' && p[1] == '-')
			break; /* the closing delimiter */
		const char *hdr_end = find_bytes(p, (size_t)(end - p), "\r\n\r\n", 4);
		if (!hdr_end)
			break;
		const char *value = hdr_end + 4;
		const char *next = find_bytes(value, (size_t)(end - value), delim, (size_t)dlen);
		if (!next)
			break;
		/* Is this part's Content-Disposition name="model"? */
		bool is_model = false;
		for (const char *line = p; line < hdr_end;) {
			const char *eol = find_bytes(line, (size_t)(hdr_end + 2 - line), "\r\n", 2);
			if (!eol)
				break;
			size_t llen = (size_t)(eol - line);
			if (llen > 20 && strncasecmp(line, "Content-Disposition:", 20) == 0) {
				char hv[512], name[64];
				if (llen < sizeof(hv)) {
					memcpy(hv, line, llen);
					hv[llen] = '\0';
					is_model = header_param(hv, "name", name, sizeof(name)) &&
						   strcmp(name, "model") == 0;
				}
			}
			line = eol + 2;
		}
		if (is_model) {
			size_t vlen = (size_t)(next - value);
			if (vlen >= 2 && value[vlen - 2] == '\r' && value[vlen - 1] == '\n')
				vlen -= 2;
			return copy_model(value, vlen, ret, size);
		}
		p = next;
	}
	return -ENOENT;
}

int vram_gateway_find_model(const char *content_type, const char *body, size_t len,
			    const char *query, char *ret, size_t size)
{
	const char *ct = content_type ? content_type : "";
	int r = -ENOENT;
	if (len > 0) {
		if (strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0)
			r = model_from_query(body, len, ret, size);
		else if (strncasecmp(ct, "multipart/form-data", 19) == 0)
			r = model_from_multipart(ct, body, len, ret, size);
		else if (strncasecmp(ct, "application/json", 16) == 0 || strstr(ct, "+json"))
			r = model_from_json(body, len, ret, size);
		/* curl -d sends JSON as a form: a body that looks like JSON is read as JSON. */
		size_t lead = strspn(body, " \t\r\n");
		if (r == -ENOENT && lead < len && body[lead] == '{')
			r = model_from_json(body, len, ret, size);
	}
	if (r == -ENOENT && query && *query)
		r = model_from_query(query, strlen(query), ret, size);
	return r;
}

/* --------------------------------------------------- upstream connections */

static struct gw_conn *conn_get(struct gw_wl *wl, unsigned port)
{
	struct vram_gateway *gw = wl->gw;
	struct gw_conn *c = NULL;
	for (struct gw_conn **pp = &wl->idle; *pp; pp = &(*pp)->next) {
		if ((*pp)->port == port) {
			c = *pp;
			*pp = c->next;
			wl->n_idle--;
			c->next = NULL;
			return c;
		}
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->port = port;
	c->evcon = evhttp_connection_base_new(gw->base, NULL, "127.0.0.1", (unsigned short)port);
	if (!c->evcon) {
		free(c);
		return NULL;
	}
	evhttp_connection_set_timeout(c->evcon, VRAM_GATEWAY_UPSTREAM_TIMEOUT_S);
	evhttp_connection_set_max_headers_size(c->evcon, VRAM_GATEWAY_UP_HEADERS_MAX);
	evhttp_connection_set_max_body_size(c->evcon, (ev_ssize_t)VRAM_GATEWAY_RESPONSE_MAX);
	evhttp_connection_set_retries(c->evcon, 0);
	return c;
}

static void conn_free(struct gw_conn *c)
{
	if (!c)
		return;
	evhttp_connection_free(c->evcon);
	free(c);
}

/*
 * Back to the idle list. Never frees here: this runs inside the connection's
 * own callbacks. Extra connections are trimmed when one is taken.
 */
static void conn_put(struct gw_wl *wl, struct gw_conn *c)
{
	c->next = wl->idle;
	wl->idle = c;
	wl->n_idle++;
}

/* Frees idle connections beyond the cap (or all); not from their callbacks. */
static void conns_trim(struct gw_wl *wl, unsigned keep)
{
	while (wl->n_idle > keep) {
		struct gw_conn **pp = &wl->idle;
		while ((*pp)->next)
			pp = &(*pp)->next;
		conn_free(*pp);
		*pp = NULL;
		wl->n_idle--;
	}
}

/* ------------------------------------------------------------ requests */

static void queue_unlink(struct gw_req *r)
{
	struct gw_wl *wl = r->wl;
	if (r->prev)
		r->prev->next = r->next;
	else
		wl->qhead = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		wl->qtail = r->prev;
	r->prev = r->next = NULL;
	wl->n_queued--;
	vram_metrics_gateway_queue(r->gw->mx, wl->cfg->name, wl->n_queued);
}

static void active_unlink(struct gw_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		r->gw->active = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
}

/*
 * Takes r out of its list, does the accounting for a request that ended with
 * status (0 = the client went away) and frees r. The client request is not
 * touched.
 */
static void finish(struct gw_req *r, int status)
{
	struct vram_gateway *gw = r->gw;
	struct gw_wl *wl = r->wl;
	if (r->phase == GW_QUEUED) {
		queue_unlink(r);
	} else {
		active_unlink(r);
		wl->in_flight--;
		vram_manager_request_end(gw->m, wl->cfg->name);
		if (r->conn)
			conn_put(wl, r->conn);
	}
	vram_metrics_gateway_request(gw->mx, wl->cfg->name, status, seconds_since(&r->started));
	if (r->timeout)
		event_free(r->timeout);
	free(r->uri);
	free(r);
}

static void reply_error(struct evhttp_request *req, int status, const char *code, int retry_after,
			const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void reply_error(struct evhttp_request *req, int status, const char *code, int retry_after,
			const char *fmt, ...)
{
	char message[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	if (retry_after > 0) {
		char ra[16];
		snprintf(ra, sizeof(ra), "%d", retry_after);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
	}
	vram_http_reply_error(req, status, code, "%s", message);
}

/* Answers a request that has not been replied to yet and finishes it. */
static void fail_req(struct gw_req *r, int status, const char *code, int retry_after,
		     const char *message)
{
	struct evhttp_request *req = r->req;
	vram_http_unwatch(req);
	finish(r, status);
	reply_error(req, status, code, retry_after, "%s", message);
}

static void drain(struct gw_wl *wl, bool after_wake);

static void on_client_close(struct evhttp_connection *evcon, void *arg)
{
	struct gw_req *r = arg;
	struct evhttp_request *req = r->req;
	if (r->phase == GW_PROXYING && r->up) {
		/* Closes the upstream connection: the server sees the client leave. */
		evhttp_cancel_request(r->up);
		r->up = NULL;
	}
	struct gw_wl *wl = r->wl;
	bool was_proxying = r->phase == GW_PROXYING;
	finish(r, 0);
	vram_http_release_detached(req);
	if (was_proxying)
		drain(wl, false);
}

static void on_client_drained(struct evhttp_connection *evcon, void *arg)
{
	struct gw_req *r = arg;
	if (r->paused && r->conn) {
		r->paused = false;
		bufferevent_enable(evhttp_connection_get_bufferevent(r->conn->evcon), EV_READ);
	}
}

static void start_reply(struct gw_req *r, int code, const char *reason)
{
	struct evhttp_request *req = r->req;
	vram_http_unwatch(req);
	evhttp_send_reply_start(req, code, reason && *reason ? reason : vram_http_reason(code));
	r->replying = true;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	if (!evcon)
		return;
	/*
	 * evhttp reads during a streamed reply and notices the client closing;
	 * a quiet stream (a model thinking) is not an idle connection. A client
	 * that stops reading is caught by the write timeout.
	 */
	evhttp_connection_set_closecb(evcon, on_client_close, r);
	struct timeval write_tv = { VRAM_GATEWAY_UPSTREAM_TIMEOUT_S, 0 };
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(evcon), NULL, &write_tv);
}

static int on_up_headers(struct evhttp_request *up, void *arg)
{
	struct gw_req *r = arg;
	struct evkeyvalq *oh = evhttp_request_get_output_headers(r->req);
	if (vram_gateway_copy_headers(evhttp_request_get_input_headers(up), oh) < 0) {
		evhttp_clear_headers(oh);
		r->up_failed = true;
		return -1; /* the done callback answers 502 */
	}
	evhttp_add_header(oh, "Via", "1.1 vramd");
	start_reply(r, evhttp_request_get_response_code(up), evhttp_request_get_response_code_line(up));
	return 0;
}

static void send_body(struct gw_req *r, struct evbuffer *in)
{
	if (evbuffer_get_length(in) == 0)
		return;
	evhttp_send_reply_chunk_with_cb(r->req, in, on_client_drained, r);
	struct evhttp_connection *evcon = evhttp_request_get_connection(r->req);
	if (!evcon || !r->conn)
		return;
	struct bufferevent *cbev = evhttp_connection_get_bufferevent(evcon);
	if (evbuffer_get_length(bufferevent_get_output(cbev)) > VRAM_GATEWAY_BACKLOG_MAX) {
		r->paused = true;
		bufferevent_disable(evhttp_connection_get_bufferevent(r->conn->evcon), EV_READ);
	}
}

static void on_up_chunk(struct evhttp_request *up, void *arg)
{
	struct gw_req *r = arg;
	if (r->replying)
		send_body(r, evhttp_request_get_input_buffer(up));
}

static void on_up_error(enum evhttp_request_error error, void *arg)
{
	struct gw_req *r = arg;
	r->up_failed = true;
	r->up_error = error;
}

static const char *up_error_text(enum evhttp_request_error e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT: return "timed out";
	case EVREQ_HTTP_EOF: return "closed the connection";
	case EVREQ_HTTP_INVALID_HEADER: return "sent an invalid or too large header";
	case EVREQ_HTTP_BUFFER_ERROR: return "could not be reached";
	case EVREQ_HTTP_DATA_TOO_LONG: return "sent a response over the size limit";
	default: return "failed";
	}
}

static void on_up_done(struct evhttp_request *up, void *arg)
{
	struct gw_req *r = arg;
	struct gw_wl *wl = r->wl;
	struct evhttp_request *req = r->req;
	r->up = NULL;
	bool ok = up && !r->up_failed && evhttp_request_get_response_code(up) > 0;
	if (!r->replying) {
		char msg[512];
		snprintf(msg, sizeof(msg), "the upstream of %s (127.0.0.1:%u) %s", wl->cfg->name,
			 r->conn ? r->conn->port : 0,
			 r->up_failed ? up_error_text(r->up_error) : "sent no response");
		fail_req(r, 502, "bad_gateway", 0, msg);
	} else {
		int status = up ? evhttp_request_get_response_code(up) : 502;
		if (ok)
			send_body(r, evhttp_request_get_input_buffer(up));
		vram_http_unwatch(req);
		finish(r, ok ? status : 502);
		/* A broken upstream ends the reply early; the length or the chunking shows it. */
		evhttp_send_reply_end(req);
	}
	drain(wl, false);
}

/* Sends r upstream to port. On failure answers the client. */
static void forward(struct gw_req *r, unsigned port)
{
	struct vram_gateway *gw = r->gw;
	struct gw_wl *wl = r->wl;
	struct evhttp_request *req = r->req;
	if (r->timeout)
		event_del(r->timeout);
	if (r->phase == GW_QUEUED)
		queue_unlink(r);
	r->phase = GW_PROXYING;
	r->next = gw->active;
	if (gw->active)
		gw->active->prev = r;
	gw->active = r;
	wl->in_flight++;
	vram_manager_request_begin(gw->m, wl->cfg->name);

	conns_trim(wl, VRAM_GATEWAY_IDLE_CONNS_MAX);
	r->conn = conn_get(wl, port);
	struct evhttp_request *up = r->conn ? evhttp_request_new(on_up_done, r) : NULL;
	if (!up) {
		fail_req(r, 500, NULL, 0, "out of memory");
		return;
	}
	evhttp_request_set_header_cb(up, on_up_headers);
	evhttp_request_set_chunked_cb(up, on_up_chunk);
	evhttp_request_set_error_cb(up, on_up_error);

	struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
	struct evkeyvalq *uh = evhttp_request_get_output_headers(up);
	vram_gateway_copy_headers(ih, uh); /* the count was checked on arrival */
	evhttp_remove_header(uh, "Content-Length");
	evhttp_remove_header(uh, "Expect"); /* the body is here already */
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	size_t blen = evbuffer_get_length(body);
	if (blen > 0 || cmd == EVHTTP_REQ_POST || cmd == EVHTTP_REQ_PUT || cmd == EVHTTP_REQ_PATCH) {
		char cl[24];
		snprintf(cl, sizeof(cl), "%zu", blen);
		evhttp_add_header(uh, "Content-Length", cl);
	}
	char *peer = NULL;
	ev_uint16_t peer_port = 0;
	struct evhttp_connection *cevcon = evhttp_request_get_connection(req);
	if (cevcon)
		evhttp_connection_get_peer(cevcon, &peer, &peer_port);
	if (peer && *peer && strchr("0123456789abcdefABCDEF:", peer[0])) {
		const char *xff = evhttp_find_header(ih, "X-Forwarded-For");
		char v[512];
		if (xff)
			snprintf(v, sizeof(v), "%s, %s", xff, peer);
		else
			snprintf(v, sizeof(v), "%s", peer);
		evhttp_remove_header(uh, "X-Forwarded-For");
		evhttp_add_header(uh, "X-Forwarded-For", v);
	}
	const char *via = evhttp_find_header(ih, "Via");
	char v[512];
	snprintf(v, sizeof(v), "%s%s1.1 vramd", via ? via : "", via ? ", " : "");
	evhttp_remove_header(uh, "Via");
	evhttp_add_header(uh, "Via", v);
	evbuffer_add_buffer(evhttp_request_get_output_buffer(up), body);

	r->up = up;
	if (evhttp_make_request(r->conn->evcon, up, cmd, r->uri) < 0) {
		r->up = NULL; /* libevent freed it */
		fail_req(r, 502, "bad_gateway", 0, "could not send the request upstream");
	}
}

static void fail_queue(struct gw_wl *wl, const char *message)
{
	while (wl->qhead)
		fail_req(wl->qhead, 503, "unavailable", VRAM_GATEWAY_RETRY_AFTER_S, message);
}

static void on_woken(const struct vram_action_result *res, void *arg)
{
	struct gw_wl *wl = arg;
	wl->waiter = NULL;
	if (res->error) {
		char msg[1200];
		snprintf(msg, sizeof(msg), "%s could not be started: %s", wl->cfg->name, res->message);
		fail_queue(wl, msg);
		return;
	}
	drain(wl, true);
}

/* Asks the manager to make wl ready for the requests in its queue. */
static void wake(struct gw_wl *wl)
{
	struct vram_gateway *gw = wl->gw;
	if (wl->waiter || !wl->qhead || gw->closing)
		return;
	char err[1024];
	wl->retry_wake = false;
	int r = vram_manager_act(gw->m, wl->cfg->name, VRAM_ACTION_START, on_woken, wl, &wl->waiter,
				 err, sizeof(err));
	if (r == -EBUSY) {
		/* offloading or stopping: ask again when that is over */
		wl->retry_wake = true;
		return;
	}
	if (r < 0) {
		wl->waiter = NULL;
		char msg[1200];
		snprintf(msg, sizeof(msg), "%s could not be started: %s", wl->cfg->name, err);
		fail_queue(wl, msg);
	}
}

/* Sends queued requests upstream while the workload is ready and under its limit. */
static void drain(struct gw_wl *wl, bool after_wake)
{
	struct vram_gateway *gw = wl->gw;
	while (wl->qhead && !gw->closing) {
		unsigned max = wl->cfg->max_concurrency;
		if (max && wl->in_flight >= max)
			return;
		unsigned port = 0;
		int r = vram_manager_endpoint(gw->m, wl->cfg->name, &port);
		if (r < 0) {
			if (after_wake) {
				char msg[512];
				snprintf(msg, sizeof(msg), "%s is ready but none of its instances "
					 "answers health checks", wl->cfg->name);
				fail_queue(wl, msg);
			} else {
				wake(wl);
			}
			return;
		}
		forward(wl->qhead, port);
	}
}

static void on_queue_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct gw_req *r = arg;
	char msg[512];
	snprintf(msg, sizeof(msg), "%s did not become ready within %.1fs (queue_timeout)",
		 r->wl->cfg->name, (double)r->wl->cfg->queue_timeout_ms / 1000.0);
	fail_req(r, 503, "unavailable", VRAM_GATEWAY_RETRY_AFTER_S, msg);
}

static void on_state(const char *event, json_t *data, void *arg)
{
	struct vram_gateway *gw = arg;
	struct gw_wl *wl = wl_by_name(gw, json_string_value(json_object_get(data, "workload")));
	const char *to = json_string_value(json_object_get(data, "to"));
	if (!wl || !to)
		return;
	if (strcmp(to, "ready") != 0) {
		/* Its processes may change: connections to old ports are useless. */
		if (wl->in_flight == 0)
			conns_trim(wl, 0);
		if (wl->retry_wake && (strcmp(to, "offloaded") == 0 || strcmp(to, "stopped") == 0 ||
				       strcmp(to, "failed") == 0 || strcmp(to, "ready") == 0))
			wake(wl);
		return;
	}
	if (!wl->waiter)
		drain(wl, false);
}

/* -------------------------------------------------------------- routes */

static void reply_models(struct vram_gateway *gw, struct evhttp_request *req, const char *one)
{
	json_t *data = json_array();
	json_t *found = NULL;
	for (size_t i = 0; data && i < gw->n_wls; i++) {
		const struct vram_workload_config *c = gw->wls[i].cfg;
		for (size_t k = 0; k < c->n_models; k++) {
			json_t *m = json_pack("{s:s,s:s,s:i,s:s}", "id", c->models[k], "object",
					      "model", "created", 0, "owned_by", c->name);
			if (one && !found && strcmp(one, c->models[k]) == 0)
				found = json_incref(m);
			json_array_append_new(data, m);
		}
	}
	if (one) {
		if (found) {
			vram_http_reply_json(req, 200, found);
		} else {
			char known[1024];
			list_known(gw, true, known, sizeof(known));
			reply_error(req, 404, "model_not_found", 0,
				    "no workload serves model \"%.256s\" (known: %s)", one,
				    known[0] ? known : "none");
		}
		json_decref(found);
		json_decref(data);
		return;
	}
	json_t *body = json_pack("{s:s,s:o}", "object", "list", "data", data ? data : json_array());
	vram_http_reply_json(req, 200, body);
	json_decref(body);
}

/*
 * Admits a request for wl with upstream request-target uri (takes ownership):
 * sends it now, queues it, or refuses it (429, 503).
 */
static void admit(struct vram_gateway *gw, struct gw_wl *wl, struct evhttp_request *req, char *uri,
		  const struct timespec *started)
{
	unsigned port = 0;
	int ready = vram_manager_endpoint(gw->m, wl->cfg->name, &port);
	unsigned max = wl->cfg->max_concurrency;
	if (ready == 0 && !wl->qhead && max && wl->in_flight >= max) {
		free(uri);
		vram_metrics_gateway_request(gw->mx, wl->cfg->name, 429, seconds_since(started));
		reply_error(req, 429, "too_many_requests", VRAM_GATEWAY_RETRY_AFTER_S,
			    "%s has %u requests in flight, its max_concurrency", wl->cfg->name, max);
		return;
	}
	if (ready < 0 && wl->n_queued >= wl->cfg->queue_max) {
		free(uri);
		vram_metrics_gateway_request(gw->mx, wl->cfg->name, 503, seconds_since(started));
		reply_error(req, 503, "unavailable", VRAM_GATEWAY_RETRY_AFTER_S,
			    "%s is not ready and its queue is full (queue_max %u)", wl->cfg->name,
			    wl->cfg->queue_max);
		return;
	}
	struct gw_req *r = calloc(1, sizeof(*r));
	if (!r) {
		free(uri);
		vram_http_reply_error(req, 500, NULL, "out of memory");
		return;
	}
	r->gw = gw;
	r->wl = wl;
	r->req = req;
	r->uri = uri;
	r->started = *started;
	r->phase = GW_QUEUED;
	/* Linked as queued first, so that every path out goes through finish(). */
	r->prev = wl->qtail;
	if (wl->qtail)
		wl->qtail->next = r;
	else
		wl->qhead = r;
	wl->qtail = r;
	wl->n_queued++;
	vram_http_watch_close(req, on_client_close, r);
	if (ready == 0 && wl->qhead == r) {
		forward(r, port);
		return;
	}
	vram_metrics_gateway_queue(gw->mx, wl->cfg->name, wl->n_queued);
	r->timeout = evtimer_new(gw->base, on_queue_timeout, r);
	if (!r->timeout) {
		fail_req(r, 500, NULL, 0, "out of memory");
		return;
	}
	struct timeval tv = { (time_t)(wl->cfg->queue_timeout_ms / 1000),
			      (suseconds_t)(wl->cfg->queue_timeout_ms % 1000) * 1000 };
	evtimer_add(r->timeout, &tv);
	if (ready == 0)
		drain(wl, false);
	else
		wake(wl);
}

/* /w/{name}[/rest]: the workload by name, the rest as the upstream target. */
static void route_by_name(struct vram_gateway *gw, struct evhttp_request *req, const char *raw_uri,
			  const struct timespec *started)
{
	const char *seg = raw_uri + 3;
	size_t seglen = strcspn(seg, "/?");
	char name[VRAM_API_NAME_MAX + 1];
	size_t dlen = 0;
	char raw[VRAM_API_NAME_MAX * 3 + 1];
	char *dec = NULL;
	if (seglen > 0 && seglen < sizeof(raw)) {
		memcpy(raw, seg, seglen);
		raw[seglen] = '\0';
		dec = evhttp_uridecode(raw, 0, &dlen);
	}
	if (!dec || dlen == 0 || dlen >= sizeof(name) || strlen(dec) != dlen) {
		free(dec);
		reply_error(req, 404, NULL, 0, "expected /w/<workload>/<path>");
		return;
	}
	memcpy(name, dec, dlen + 1);
	free(dec);
	struct gw_wl *wl = wl_by_name(gw, name);
	if (!wl) {
		char known[1024];
		list_known(gw, false, known, sizeof(known));
		reply_error(req, 404, NULL, 0, "no workload named \"%s\" (known: %s)", name,
			    known[0] ? known : "none");
		return;
	}
	const char *rest = seg + seglen;
	char *uri = NULL;
	if (*rest == '/')
		uri = strdup(rest);
	else if (asprintf(&uri, "/%s", rest) < 0)
		uri = NULL;
	if (!uri) {
		vram_http_reply_error(req, 500, NULL, "out of memory");
		return;
	}
	admit(gw, wl, req, uri, started);
}

/* /v1/...: the workload serving the request's model. */
static void route_by_model(struct vram_gateway *gw, struct evhttp_request *req, const char *raw_uri,
			   const char *path, const struct timespec *started)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	bool get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
	if (get && strcmp(path, "/v1/models") == 0) {
		reply_models(gw, req, NULL);
		return;
	}
	if (get && strncmp(path, "/v1/models/", 11) == 0 && path[11]) {
		char *one = evhttp_uridecode(path + 11, 0, NULL);
		reply_models(gw, req, one ? one : path + 11);
		free(one);
		return;
	}
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
	const char *ctype = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
	char model[VRAM_GATEWAY_MODEL_MAX];
	int r = vram_gateway_find_model(ctype, body ? body : "", body ? len : 0,
					uri ? evhttp_uri_get_query(uri) : NULL, model, sizeof(model));
	char known[1024];
	list_known(gw, true, known, sizeof(known));
	if (r == -ENOENT || r == -E2BIG) {
		reply_error(req, 400, NULL, 0,
			    "%s names no model: give one in a JSON \"model\" field, a form field or "
			    "?model= (known: %s)", path, known[0] ? known : "none");
		return;
	}
	if (r < 0) {
		vram_http_reply_error(req, 500, NULL, "out of memory");
		return;
	}
	const char *name = NULL;
	if (vram_manager_find_model(gw->m, model, &name) < 0 || !(name && wl_by_name(gw, name))) {
		vram_metrics_gateway_request(gw->mx, "", 404, seconds_since(started));
		reply_error(req, 404, "model_not_found", 0,
			    "no workload serves model \"%s\" (known: %s)", model,
			    known[0] ? known : "none");
		return;
	}
	char *target = strdup(raw_uri);
	if (!target) {
		vram_http_reply_error(req, 500, NULL, "out of memory");
		return;
	}
	admit(gw, wl_by_name(gw, name), req, target, started);
}

void vram_gateway_handle(struct evhttp_request *req, bool trusted, void *arg)
{
	struct vram_gateway *gw = arg;
	const char *raw_uri = evhttp_request_get_uri(req);
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (!raw_uri || raw_uri[0] != '/' || !path)
		goto api;
	bool v1 = strncmp(path, "/v1/", 4) == 0 || strcmp(path, "/v1") == 0;
	bool by_name = strncmp(raw_uri, "/w/", 3) == 0;
	if (strcmp(path, "/metrics") == 0 && gw->mx) {
		vram_metrics_handle(gw->mx, req);
		return;
	}
	if (!v1 && !by_name)
		goto api;

	struct timespec started;
	clock_gettime(CLOCK_MONOTONIC, &started);
	if (gw->closing) {
		vram_http_reply_error(req, 503, "shutting_down", "vramd is shutting down");
		return;
	}
	int n = 0;
	const struct evkeyval *kv;
	TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next)
		n++;
	if (n > VRAM_GATEWAY_HEADERS_COUNT_MAX) {
		vram_http_reply_error(req, 431, "too_many_headers", "more than %d header lines",
				      VRAM_GATEWAY_HEADERS_COUNT_MAX);
		return;
	}
	if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > VRAM_GATEWAY_BODY_MAX) {
		vram_http_reply_error(req, 413, NULL, "the request body is over %u bytes",
				      VRAM_GATEWAY_BODY_MAX);
		return;
	}
	if (by_name)
		route_by_name(gw, req, raw_uri, &started);
	else
		route_by_model(gw, req, raw_uri, path, &started);
	return;
api:
	vram_api_handle(req, trusted, gw->api);
}

/* ---------------------------------------------------------- lifecycle */

int vram_gateway_new(struct event_base *base, struct vram_manager *m, struct vram_api *api,
		     struct vram_metrics *mx, struct vram_gateway **ret)
{
	struct vram_gateway *gw = calloc(1, sizeof(*gw));
	if (!gw)
		return -ENOMEM;
	const struct vram_config *cfg = vram_manager_config(m);
	gw->base = base;
	gw->m = m;
	gw->api = api;
	gw->mx = mx;
	gw->n_wls = cfg->n_workloads;
	gw->wls = calloc(gw->n_wls ? gw->n_wls : 1, sizeof(*gw->wls));
	if (!gw->wls)
		goto out_free;
	for (size_t i = 0; i < gw->n_wls; i++) {
		gw->wls[i].gw = gw;
		gw->wls[i].cfg = &cfg->workloads[i];
	}
	if (vram_manager_subscribe(m, on_state, gw, &gw->sub) < 0)
		goto out_free;
	*ret = gw;
	return 0;

out_free:
	free(gw->wls);
	free(gw);
	return -ENOMEM;
}

void vram_gateway_close_clients(struct vram_gateway *gw)
{
	if (!gw)
		return;
	gw->closing = true;
	for (size_t i = 0; i < gw->n_wls; i++) {
		struct gw_wl *wl = &gw->wls[i];
		if (wl->waiter) {
			vram_manager_waiter_cancel(wl->waiter);
			wl->waiter = NULL;
		}
		while (wl->qhead)
			fail_req(wl->qhead, 503, "shutting_down", 0, "vramd is shutting down");
	}
	while (gw->active) {
		struct gw_req *r = gw->active;
		struct evhttp_request *req = r->req;
		if (r->up) {
			evhttp_cancel_request(r->up);
			r->up = NULL;
		}
		if (r->replying) {
			vram_http_unwatch(req);
			finish(r, 503);
			evhttp_send_reply_end(req);
		} else {
			fail_req(r, 503, "shutting_down", 0, "vramd is shutting down");
		}
	}
}

void vram_gateway_free(struct vram_gateway *gw)
{
	if (!gw)
		return;
	vram_gateway_close_clients(gw);
	vram_manager_unsubscribe(gw->sub);
	for (size_t i = 0; i < gw->n_wls; i++)
		conns_trim(&gw->wls[i], 0);
	free(gw->wls);
	free(gw);
}
