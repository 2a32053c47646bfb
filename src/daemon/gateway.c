/* SPDX-License-Identifier: MIT */
/*
 * The gateway's front end and reverse proxy; see gateway.h.
 *
 * Connections. A client connection (struct gw_client) reads requests with
 * h1.c; one request at a time is in service, pipelined ones wait in its
 * input buffer. An upstream connection (struct gw_up) goes to one workload
 * port, or to the API socket, and carries one request at a time; kept-alive
 * ones wait in their pool. Both keep a persistent read event, so that a peer
 * that closes is seen at once, and add a write event only while bytes wait:
 * a proxied request usually costs one read and one write on each side and no
 * change to the epoll set.
 *
 * Requests. A request (struct gw_req) lives in its workload's queue (waiting
 * for a start or restore, under the queue timeout) or the active list (sent
 * upstream). Every way out of either goes through gw__finish(), which does
 * the accounting (manager in-flight count, metrics) once and breaks off an
 * upstream connection that is still busy with it.
 *
 * Freeing. gw__client_drop, gw__up_close, gw__finish and gw__fail_req may
 * free what they are given (and, for gw__client_drop, its request and
 * upstream): their callers return right after. Inside client_process a
 * drop is deferred (c->dead) until the loop is out of the client's buffers.
 *
 * Timeouts are checked by one sweep a second over the connections, not by a
 * timer per request (two heap operations each on the hot path).
 *
 * Memory. Every byte a client makes the gateway hold is bounded: a head by
 * VRAM_HTTP_HEADERS_MAX, a body by its route's limit and, for TCP clients,
 * by the global body budget (body_hold), input sent ahead of an answer by
 * VRAM_GATEWAY_IDLE_BUF_MAX, output by the backlog limit. Buffers a large
 * message grew shrink back when it ends (client_rest).
 */
#include "daemon/gateway.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sys/random.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/units.h"
#include "daemon/access.h"
#include "daemon/api.h"
#include "daemon/h1.h"
#include "daemon/http.h"
#include "daemon/manager.h"
#include "daemon/metrics.h"
#include "daemon/peer.h"

#define GW_READ_MAX (32 * 1024) /* bytes asked of one read(2) */
#define GW_LISTENERS_MAX 8
#define GW_SWEEP_S 1            /* s between timeout sweeps */
#define GW_LINGER_S 2           /* s a closing client may keep sending before it is cut */
#define GW_CHUNK_SLACK (1024 * 1024) /* bytes of chunked framing allowed on top of a body */
#define GW_REFUSE_WARN_S 10     /* s between two warnings about refused connections */
/* slots of the per-address connection counts: a power of two, over twice the TCP clients */
#define GW_ADDR_SLOTS 8192
/* what the gateway relays, evhttp takes: it would answer a longer body with an HTML page */
_Static_assert(VRAM_GATEWAY_API_BODY_MAX <= VRAM_HTTP_HARD_BODY_MAX, "API bodies over evhttp's limit");
/* bytes from which glibc maps a block on its own (see vram_gateway_new) */
/* bytes queued to a client: the backlog limit plus what one upstream read adds */
#define GW_CLIENT_OUT_MAX (VRAM_GATEWAY_BACKLOG_MAX + 2 * GW_READ_MAX + VRAM_GATEWAY_UP_HEADERS_MAX)

struct gw_req;
struct gw_pool;

/* A connection to an upstream: a workload's port, or the API socket (port 0). */
struct gw_up {
	struct vram_gateway *gw;
	struct gw_pool *pool;      /* where it waits when idle */
	unsigned port;             /* 0: the API socket */
	int fd;                    /* owned */
	struct event *rev;         /* persistent: responses and closes */
	struct event *wev;         /* while connecting or while the request waits */
	struct vram_buf in;        /* response bytes not handled yet */
	struct gw_req *req;        /* in service; NULL when idle */
	struct gw_up *prev, *next; /* in the pool's idle list */
	time_t stamp;              /* s, coarse monotonic: last progress */
	bool connecting;
	bool reused;               /* carried an earlier request */
	bool got_bytes;            /* bytes of the current response arrived */
	bool head_done;            /* its response head was handled */
	bool keep_alive;           /* reusable once the response ends */
	bool paused;               /* reads stopped: the client is behind */
	enum vram_h1_body body;
	uint64_t left;             /* bytes of a length-framed body still to come */
	uint64_t total;            /* bytes of the current body so far */
	struct vram_h1_chunked ck;
};

struct gw_pool {
	struct gw_up *idle; /* most recently used first */
	unsigned n_idle;
};

/*
 * A workload as the gateway serves it: its own copy of the config's name and
 * limits, so that a reload may free the config it came from. Requests point
 * at it (r->wl); one that a reload removed stays, out of the lookup, until
 * the last of them has finished.
 */
struct gw_wl {
	struct vram_gateway *gw;
	char name[VRAM_CONFIG_NAME_MAX + 1];
	unsigned max_concurrency;           /* requests in flight at once; 0 = unlimited */
	unsigned queue_max;                 /* requests waiting for start/restore */
	uint64_t queue_timeout_ms;          /* ms a request waits; for those queued from now on */
	uint64_t first_byte_timeout_ms;     /* ms from sending a request to its first response byte;
					     * VRAM_DURATION_NEVER = none */
	uint64_t stream_timeout_ms;         /* ms a begun response may stay silent; NEVER = none */
	struct gw_req *qhead, *qtail;       /* waiting for start/restore, FIFO */
	unsigned n_queued;
	unsigned in_flight;                 /* requests sent upstream */
	struct vram_manager_waiter *waiter; /* the start/restore being waited for */
	bool retry_wake;                    /* act was refused (busy): retry on a state change */
	bool removed;                       /* by a reload: in gw->removed until in_flight is 0 */
	struct gw_wl *next_removed;         /* in gw->removed */
	struct gw_pool pool;
};

struct gw_listener;

struct gw_client {
	struct vram_gateway *gw;
	struct gw_listener *listener;  /* borrowed: where it came in */
	struct gw_client *prev, *next; /* every client */
	int fd;                        /* owned */
	struct event *rev;             /* persistent */
	struct event *wev;             /* while out has bytes */
	struct vram_buf in;            /* received, not served yet */
	struct vram_buf out;           /* to send; out_off bytes of it sent */
	size_t out_off;
	struct vram_buf body;          /* a chunked request body, decoded */
	struct vram_h1_chunked ck;
	size_t ck_scanned;             /* bytes after the head that ck has seen */
	struct gw_req *req;            /* the request in service */
	struct vram_peer ident;        /* who it is: kernel credentials, or the TCP address
					* (ident.addr) and, per request, whether the token came */
	char local_addr[INET6_ADDRSTRLEN]; /* TCP: the address it came in on; "" for the Unix socket */
	unsigned char addr_key[16];    /* TCP: ident.addr as counted per address (IPv4 mapped) */
	char cors_origin[VRAM_ACCESS_ORIGIN_MAX]; /* the allowed Origin of the request being
					* served, for its CORS headers; "" = none */
	uint64_t held;                 /* bytes of the body budget the request being read holds */
	size_t body_max;               /* bytes: the body limit of the request being read */
	time_t stamp;                  /* s: start of the request being read, or of idleness */
	time_t out_stamp;              /* s: last write progress */
	bool trusted;                  /* the Unix socket: no token asked */
	bool processing;               /* inside client_process */
	bool dead;                     /* dropped while processing: freed on the way out */
	bool closing;                  /* no more requests: close once out is sent */
	bool lingering;                /* write side shut; reading until EOF */
	bool continue_sent;            /* "100 Continue" sent for the request being read */
	bool admitted;                 /* the request being read passed the front door */
	bool read_paused;              /* the input buffer is full */
};

enum gw_phase { GW_QUEUED, GW_PROXYING };

/* TCP connections from one address; n == 0 marks a free slot. */
struct gw_addr_count {
	unsigned char addr[16]; /* IPv6, or IPv4 mapped (::ffff:a.b.c.d) */
	unsigned n;
};

struct gw_req {
	struct vram_gateway *gw;
	struct gw_wl *wl;            /* NULL: relayed to the API */
	struct gw_client *c;         /* borrowed; it points back through c->req */
	struct gw_req *prev, *next;  /* queue or active list */
	enum gw_phase phase;
	struct event *timeout;       /* queue timeout; owned */
	struct gw_up *up;            /* while proxying */
	struct vram_buf wire;        /* the request as it goes upstream */
	size_t sent;                 /* bytes of wire written */
	struct timespec started;
	time_t sent_stamp;           /* s, coarse monotonic: sent upstream (the first-byte timeout) */
	uint64_t held;               /* bytes of the body budget it holds until it finishes */
	int status;                  /* the response's, once known */
	int minor;                   /* the client's HTTP/1.minor */
	bool keep_alive;             /* the client allows another request */
	bool head_request;
	bool replying;               /* the response head went to the client */
	bool dechunk;                /* chunked upstream body decoded for an HTTP/1.0 client */
	bool close_after;            /* the client connection ends with this response */
	bool retried;                /* resent once after a kept-alive connection failed */
};

struct gw_listener {
	struct vram_gateway *gw;
	struct evconnlistener *l; /* owned */
	bool trusted;
	char *path;               /* owned; Unix socket file to remove, or NULL */
	char *host;               /* owned; TCP: the listen host, without brackets */
	unsigned port;            /* TCP: the port bound */
	struct vram_accept_guard *guard; /* owned; NULL once closing */
};

struct vram_gateway {
	struct event_base *base;   /* borrowed */
	struct vram_manager *m;    /* borrowed */
	struct vram_api *api;      /* borrowed */
	struct vram_metrics *mx;   /* borrowed, may be NULL */
	struct vram_manager_sub *sub;
	char *token;               /* owned; NULL = none */
	char *api_socket;          /* owned */
	struct gw_wl **wls;        /* owned array of owned entries: the workloads served */
	size_t n_wls, cap_wls;
	struct gw_wl *removed;     /* owned list: removed by a reload, requests still in flight */
	struct gw_pool api_pool;
	struct gw_req *active;     /* requests sent upstream */
	struct gw_client *clients;
	unsigned n_clients;
	unsigned n_tcp_clients;    /* of n_clients, from TCP listeners */
	struct gw_addr_count *addrs; /* owned array of GW_ADDR_SLOTS: TCP connections per address */
	uint32_t addr_seed;        /* of the hash: addresses chosen to collide cost more probes */
	time_t refuse_warned;      /* s, coarse monotonic: the last warning about refused connections */
	unsigned n_refused;        /* connections refused since that warning */
	uint64_t body_bytes;       /* bytes of the body budget held, over every client and request */
	uint64_t body_budget;      /* bytes: VRAM_GATEWAY_BODY_BUDGET or VRAMD_BODY_BUDGET */
	struct gw_listener listeners[GW_LISTENERS_MAX];
	size_t n_listeners;
	struct event *sweep;       /* owned */
	struct vram_buf head;      /* a response head being built */
	struct vram_buf dechunked; /* body bytes decoded for an HTTP/1.0 client */
	bool closing;
};

/* ------------------------------------------------------------ helpers */

static time_t gw__now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec;
}

static double gw__seconds_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

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

/* The index of name in gw->wls, or -1. A scan: it runs for every request. */
static ssize_t wl_index(const struct vram_gateway *gw, const char *name)
{
	for (size_t i = 0; i < gw->n_wls; i++)
		if (strcmp(gw->wls[i]->name, name) == 0)
			return (ssize_t)i;
	return -1;
}

/* Borrowed, valid until a reload removes it and its last request finishes. */
static struct gw_wl *gw__wl_by_name(struct vram_gateway *gw, const char *name)
{
	ssize_t i = name ? wl_index(gw, name) : -1;
	return i < 0 ? NULL : gw->wls[i];
}

/* "a, b, c": every model name, or every workload name when models is false. */
static void list_known(struct vram_gateway *gw, bool models, char *buf, size_t size)
{
	const struct vram_config *cfg = vram_manager_config(gw->m);
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < cfg->n_workloads && len + 1 < size; i++) {
		const struct vram_workload_config *c = &cfg->workloads[i];
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

/* ------------------------------------------------------- client output */

static void gw__client_drop(struct gw_client *c);
static void gw__client_next(struct gw_client *c);
static void gw__addr_release(struct vram_gateway *gw, const unsigned char key[16]);
static void gw__up_resume(struct gw_up *up);

static size_t gw__client_pending(const struct gw_client *c)
{
	return c->out.len - c->out_off;
}

/*
 * Sends n pieces to c: written at once when nothing waits, the rest queued
 * for the write event. Returns 0, or -errno after dropping c (the client is
 * gone or too far behind): the caller returns without touching c, its
 * request or that request's upstream.
 */
static int gw__client_sendv(struct gw_client *c, struct iovec *iov, int n)
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
static void gw__client_close_soon(struct gw_client *c)
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

static void gw__client_on_write(evutil_socket_t fd, short what, void *arg)
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
static int gw__client_reply(struct gw_client *c, int status, const char *extra, const char *ctype,
			    const char *body, size_t len, bool close)
{
	char cors[VRAM_ACCESS_HEADERS_MAX], head[1024 + VRAM_ACCESS_HEADERS_MAX];
	vram_access_cors_headers(c->cors_origin, cors, sizeof(cors));
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s%s\r\n",
			 status, vram_http_reason(status), ctype, len, extra ? extra : "", cors,
			 close ? "Connection: close\r\n" : "");
	struct iovec iov[2] = { { head, (size_t)n }, { (void *)body, len } };
	int r = gw__client_sendv(c, iov, 2);
	if (r == 0 && close)
		gw__client_close_soon(c);
	return r;
}

/*
 * Replies with the JSON error shape; retry_after > 0 adds Retry-After.
 * Returns like gw__client_sendv.
 */
static int gw__client_error(struct gw_client *c, int status, const char *code, int retry_after,
			    bool close, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int gw__client_error(struct gw_client *c, int status, const char *code, int retry_after,
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
	vram_metrics_gateway_queue(r->gw->mx, wl->name, wl->n_queued);
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

static void gw__up_close(struct gw_up *up);
static void wl_release(struct gw_wl *wl);

/*
 * r's workload when there may be a queue to drain once r has finished: NULL
 * for the API and for a workload a reload removed (it has no queue, and
 * gw__finish may free it).
 */
static struct gw_wl *gw__wl_to_drain(const struct gw_req *r)
{
	return r->wl && !r->wl->removed ? r->wl : NULL;
}

/*
 * Takes r out of its list, does the accounting for a request that ended with
 * status (0 = the client went away), breaks off its upstream connection if
 * it still has one, detaches it from its client and frees it. The last
 * request of a workload a reload removed frees that workload too.
 */
static void gw__finish(struct gw_req *r, int status)
{
	struct vram_gateway *gw = r->gw;
	struct gw_wl *wl = r->wl;
	if (r->phase == GW_QUEUED) {
		queue_unlink(r);
	} else {
		active_unlink(r);
		if (wl) {
			wl->in_flight--;
			vram_manager_request_end(gw->m, wl->name);
		}
	}
	if (r->up) {
		/* Closing it is how the upstream learns that nobody waits any more. */
		r->up->req = NULL;
		gw__up_close(r->up);
	}
	if (wl)
		vram_metrics_gateway_request(gw->mx, wl->name, status,
					     gw__seconds_since(&r->started));
	if (r->timeout)
		event_free(r->timeout);
	if (r->c)
		r->c->req = NULL;
	gw->body_bytes -= r->held;
	vram_buf_done(&r->wire);
	free(r);
	if (wl && wl->removed && wl->in_flight == 0 && !wl->qhead)
		wl_release(wl);
}

/* Answers a request whose response has not started, and finishes it. */
static void gw__fail_req(struct gw_req *r, int status, const char *code, int retry_after,
			 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void gw__fail_req(struct gw_req *r, int status, const char *code, int retry_after,
			 const char *fmt, ...)
{
	char message[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	struct gw_client *c = r->c;
	bool close = !r->keep_alive;
	gw__finish(r, status);
	if (gw__client_error(c, status, code, retry_after, close, "%s", message) == 0 && !close)
		gw__client_next(c);
}

/* ---------------------------------------------------------- upstreams */

static void up_on_read(evutil_socket_t fd, short what, void *arg);
static void up_on_write(evutil_socket_t fd, short what, void *arg);

static void pool_remove(struct gw_up *up)
{
	struct gw_pool *p = up->pool;
	if (up->prev)
		up->prev->next = up->next;
	else
		p->idle = up->next;
	if (up->next)
		up->next->prev = up->prev;
	up->prev = up->next = NULL;
	p->n_idle--;
}

/* Closes and frees up; it must not carry a request (see gw__finish). */
static void gw__up_close(struct gw_up *up)
{
	if (!up)
		return;
	if (!up->req && (up->prev || up->next || (up->pool && up->pool->idle == up)))
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
static void gw__pool_trim(struct gw_pool *p, unsigned keep, time_t max_idle_s)
{
	time_t now = max_idle_s ? gw__now_s() : 0;
	/* the count alone decides without a walk: pool_put runs for every response */
	while (p->n_idle > keep || (p->n_idle > 0 && max_idle_s)) {
		struct gw_up *last = p->idle;
		while (last->next)
			last = last->next;
		if (p->n_idle <= keep && now - last->stamp <= max_idle_s)
			break;
		gw__up_close(last);
	}
}

static void pool_put(struct gw_up *up)
{
	struct gw_pool *p = up->pool;
	up->reused = true;
	vram_buf_shrink(&up->in, VRAM_GATEWAY_IDLE_BUF_MAX);
	if (up->paused)
		gw__up_resume(up);
	up->prev = NULL;
	up->next = p->idle;
	if (p->idle)
		p->idle->prev = up;
	p->idle = up;
	p->n_idle++;
	gw__pool_trim(p, VRAM_GATEWAY_IDLE_CONNS_MAX, 0);
}

static struct gw_up *pool_take(struct gw_pool *p, unsigned port)
{
	for (struct gw_up *up = p->idle; up; up = up->next) {
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

static void gw__up_resume(struct gw_up *up)
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

static void gw__send_upstream(struct gw_req *r, unsigned port);
static void gw__drain(struct gw_wl *wl, bool after_wake);

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
static void gw__up_break(struct gw_up *up, int status, const char *code, const char *why)
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

/* A vram_h1_data_fn that appends to the struct vram_buf at arg. */
static int gw__append_to_buf(void *arg, const char *p, size_t n)
{
	return vram_buf_append(arg, p, n);
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
	if (send_head)
		r->replying = true;
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
static void gw__send_upstream(struct gw_req *r, unsigned port)
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

/* r leaves the queue (if it was there) and goes upstream to port. */
static void gw__forward(struct gw_req *r, unsigned port)
{
	struct vram_gateway *gw = r->gw;
	struct gw_wl *wl = r->wl;
	if (r->timeout)
		event_del(r->timeout);
	if (r->phase == GW_QUEUED && wl)
		queue_unlink(r);
	r->phase = GW_PROXYING;
	r->prev = NULL;
	r->next = gw->active;
	if (gw->active)
		gw->active->prev = r;
	gw->active = r;
	if (wl) {
		wl->in_flight++;
		vram_manager_request_begin(gw->m, wl->name);
	}
	gw__send_upstream(r, port);
}

/* ---------------------------------------------- waking workloads, queues */

/* Answers every request in wl's queue 503 with code and message. */
static void fail_queue(struct gw_wl *wl, const char *code, const char *message)
{
	while (wl->qhead)
		gw__fail_req(wl->qhead, 503, code, VRAM_GATEWAY_RETRY_AFTER_S, "%s", message);
}

static void on_woken(const struct vram_action_result *res, void *arg)
{
	struct gw_wl *wl = arg;
	wl->waiter = NULL;
	if (res->error) {
		char msg[1200];
		snprintf(msg, sizeof(msg), "%s could not be started: %s", wl->name, res->message);
		fail_queue(wl, "unavailable", msg);
		return;
	}
	gw__drain(wl, true);
}

/* Asks the manager to make wl ready for the requests in its queue. */
static void wake(struct gw_wl *wl)
{
	struct vram_gateway *gw = wl->gw;
	if (wl->waiter || !wl->qhead || gw->closing)
		return;
	char err[1024];
	wl->retry_wake = false;
	int r = vram_manager_act(gw->m, wl->name, VRAM_ACTION_START, on_woken, wl, &wl->waiter,
				 err, sizeof(err));
	if (r == -EBUSY) {
		/* offloading or stopping: ask again when that is over */
		wl->retry_wake = true;
		return;
	}
	if (r < 0) {
		wl->waiter = NULL;
		char msg[1200];
		snprintf(msg, sizeof(msg), "%s could not be started: %s", wl->name, err);
		fail_queue(wl, "unavailable", msg);
	}
}

/* Sends queued requests upstream while the workload is ready and under its limit. */
static void gw__drain(struct gw_wl *wl, bool after_wake)
{
	struct vram_gateway *gw = wl->gw;
	while (wl->qhead && !gw->closing) {
		unsigned max = wl->max_concurrency;
		if (max && wl->in_flight >= max)
			return;
		unsigned port = 0;
		int r = vram_manager_endpoint(gw->m, wl->name, &port);
		if (r < 0) {
			if (after_wake) {
				char msg[512];
				snprintf(msg, sizeof(msg), "%s is ready but none of its instances "
					 "answers health checks", wl->name);
				fail_queue(wl, "unavailable", msg);
			} else {
				wake(wl);
			}
			return;
		}
		gw__forward(wl->qhead, port);
	}
}

static void on_queue_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct gw_req *r = arg;
	/* the time waited: a reload since it was queued may have changed queue_timeout */
	gw__fail_req(r, 503, "unavailable", VRAM_GATEWAY_RETRY_AFTER_S,
		     "%s did not become ready within %.1fs (queue_timeout)", r->wl->name,
		     gw__seconds_since(&r->started));
}

/* A workload changed state (data: see vram_manager_subscribe). */
static void on_state(struct vram_gateway *gw, json_t *data)
{
	struct gw_wl *wl = gw__wl_by_name(gw, json_string_value(json_object_get(data, "workload")));
	const char *to = json_string_value(json_object_get(data, "to"));
	if (!wl || !to)
		return;
	if (strcmp(to, "ready") != 0) {
		/* Its processes may change: connections to old ports are useless. */
		if (wl->in_flight == 0)
			gw__pool_trim(&wl->pool, 0, 0);
		if (wl->retry_wake && (strcmp(to, "offloaded") == 0 || strcmp(to, "stopped") == 0 ||
				       strcmp(to, "failed") == 0))
			wake(wl);
		return;
	}
	if (!wl->waiter)
		gw__drain(wl, false);
}

/* ------------------------------------------- the workloads, and reloads */

static void wl_set_limits(struct gw_wl *wl, const struct vram_workload_config *c)
{
	wl->max_concurrency = c->max_concurrency;
	wl->queue_max = c->queue_max;
	wl->queue_timeout_ms = c->queue_timeout_ms;
	wl->first_byte_timeout_ms = c->first_byte_timeout_ms;
	wl->stream_timeout_ms = c->stream_timeout_ms;
}

/* Serves workload c (copied) from now on. Returns 0 or -ENOMEM. */
static int gw__wl_add(struct vram_gateway *gw, const struct vram_workload_config *c)
{
	if (gw->n_wls == gw->cap_wls) {
		size_t cap = gw->cap_wls ? 2 * gw->cap_wls : 8;
		struct gw_wl **wls = realloc(gw->wls, cap * sizeof(*wls));
		if (!wls)
			return -ENOMEM;
		gw->wls = wls;
		gw->cap_wls = cap;
	}
	struct gw_wl *wl = calloc(1, sizeof(*wl));
	if (!wl)
		return -ENOMEM;
	wl->gw = gw;
	snprintf(wl->name, sizeof(wl->name), "%s", c->name); /* the config checked its length */
	wl_set_limits(wl, c);
	gw->wls[gw->n_wls++] = wl;
	return 0;
}

/* Frees wl and its idle connections; no request may refer to it. */
static void wl_free(struct gw_wl *wl)
{
	if (wl->waiter)
		vram_manager_waiter_cancel(wl->waiter);
	gw__pool_trim(&wl->pool, 0, 0);
	free(wl);
}

/* Frees wl, removed by a reload, once its last request has finished. */
static void wl_release(struct gw_wl *wl)
{
	struct gw_wl **p = &wl->gw->removed;
	while (*p && *p != wl)
		p = &(*p)->next_removed;
	if (*p)
		*p = wl->next_removed;
	wl_free(wl);
}

/*
 * A reload removed gw->wls[i]: its queue is answered 503, its start is no
 * longer waited for, and it leaves the lookup, so that a new request for it
 * gets the answer of any unknown workload. Requests in flight go on; the
 * last of them to finish frees it (gw__finish).
 */
static void wl_remove(struct vram_gateway *gw, size_t i)
{
	struct gw_wl *wl = gw->wls[i];
	memmove(&gw->wls[i], &gw->wls[i + 1], (gw->n_wls - i - 1) * sizeof(*gw->wls));
	gw->n_wls--;
	if (wl->waiter) {
		vram_manager_waiter_cancel(wl->waiter);
		wl->waiter = NULL;
	}
	wl->retry_wake = false;
	char msg[128];
	snprintf(msg, sizeof(msg), "%s was removed from the config by a reload", wl->name);
	fail_queue(wl, "removed", msg);
	if (wl->in_flight == 0) {
		wl_free(wl);
		return;
	}
	wl->removed = true;
	gw__pool_trim(&wl->pool, 0, 0);
	wl->next_removed = gw->removed;
	gw->removed = wl;
}

/*
 * The manager's config was replaced (data: {"added", "removed", "changed"},
 * arrays of workload names; vram_manager_config is already the new one).
 * Added workloads are served from now on; changed ones take their new
 * limits in place, and requests already queued keep waiting (under the
 * queue_timeout they were queued with); removed ones go (wl_remove). A name
 * under "added" that is already served, or under "changed" that is not, is
 * taken for what the config now says.
 */
static void on_reload(struct vram_gateway *gw, json_t *data)
{
	const struct vram_config *cfg = vram_manager_config(gw->m);
	size_t k;
	json_t *v;
	json_array_foreach(json_object_get(data, "removed"), k, v) {
		ssize_t i = json_is_string(v) ? wl_index(gw, json_string_value(v)) : -1;
		if (i >= 0)
			wl_remove(gw, (size_t)i);
	}
	static const char *const keys[] = { "added", "changed" };
	for (size_t n = 0; n < sizeof(keys) / sizeof(keys[0]); n++) {
		json_array_foreach(json_object_get(data, keys[n]), k, v) {
			const char *name = json_string_value(v);
			const struct vram_workload_config *c = name ? vram_config_find(cfg, name) : NULL;
			if (!c)
				continue;
			struct gw_wl *wl = gw__wl_by_name(gw, name);
			if (!wl) {
				if (gw__wl_add(gw, c) < 0)
					vram_warn("Failed to route requests to workload %s: out of memory",
						  name);
				continue;
			}
			wl_set_limits(wl, c);
			/* a higher max_concurrency may let queued requests go now */
			if (wl->qhead && !wl->waiter)
				gw__drain(wl, false);
		}
	}
}

static void gw__on_event(const char *event, json_t *data, void *arg)
{
	if (strcmp(event, "state") == 0)
		on_state(arg, data);
	else if (strcmp(event, "reload") == 0)
		on_reload(arg, data);
}

/* ------------------------------------------------------------- routes */

/*
 * True when v carries vramd's token, as "Bearer <token>" (an Authorization
 * value) or bare (an X-Api-Key value); compared in constant time.
 */
static bool gw__carries_token(const struct vram_gateway *gw, struct vram_h1_span v, bool bearer)
{
	if (!gw->token)
		return false;
	return bearer ? vram_http_token_ok_n(v.p, v.n, gw->token)
		      : vram_http_token_equal(v.p, v.n, gw->token);
}

/*
 * Builds r->wire: the request for the upstream, with target and body.
 * Returns 0, -EMSGSIZE when the head for the API would pass what its server
 * takes (VRAM_HTTP_RELAY_HEADERS_MAX), or -ENOMEM.
 */
static int gw__build_request(struct gw_req *r, const struct vram_h1_head *h, const char *target,
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

/* A new request of c (not linked anywhere yet); NULL with errno (see gw__build_request). */
static struct gw_req *gw__req_new(struct gw_client *c, struct gw_wl *wl,
				  const struct vram_h1_head *h, const char *target,
				  const char *body, size_t blen, const struct timespec *started)
{
	struct gw_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->gw = c->gw;
	r->wl = wl;
	r->c = c;
	r->started = *started;
	r->minor = h->minor;
	r->keep_alive = h->keep_alive;
	r->head_request = vram_h1_span_eq(h->method, "HEAD");
	int e = gw__build_request(r, h, target, body, blen);
	if (e < 0) {
		vram_buf_done(&r->wire);
		free(r);
		errno = -e;
		return NULL;
	}
	return r;
}

/* Relays a request for the REST API, /mcp or /metrics to the evhttp server. */
static void relay_api(struct gw_client *c, const struct vram_h1_head *h, const char *target,
		      const char *body, size_t blen, const struct timespec *started)
{
	struct gw_req *r = gw__req_new(c, NULL, h, target, body, blen, started);
	if (!r && errno == EMSGSIZE) {
		gw__client_error(c, 431, NULL, 0, true, "the request head, with the fields vramd "
				 "adds, is over %d bytes", VRAM_HTTP_RELAY_HEADERS_MAX);
		return;
	}
	if (!r) {
		gw__client_error(c, 500, NULL, 0, true, "out of memory");
		return;
	}
	c->req = r;
	r->phase = GW_PROXYING; /* linked by gw__forward */
	gw__forward(r, 0);
}

/*
 * Admits a request for wl: sends it now, queues it, or refuses it (429,
 * 503). target: the upstream request-target.
 */
static void gw__admit(struct gw_client *c, struct gw_wl *wl, const struct vram_h1_head *h,
		      const char *target, const char *body, size_t blen,
		      const struct timespec *started)
{
	struct vram_gateway *gw = c->gw;
	unsigned port = 0;
	int ready = vram_manager_endpoint(gw->m, wl->name, &port);
	unsigned max = wl->max_concurrency;
	if (ready == 0 && !wl->qhead && max && wl->in_flight >= max) {
		vram_metrics_gateway_request(gw->mx, wl->name, 429, gw__seconds_since(started));
		gw__client_error(c, 429, "too_many_requests", VRAM_GATEWAY_RETRY_AFTER_S,
				 !h->keep_alive,
				 "%s has %u requests in flight, its max_concurrency", wl->name, max);
		return;
	}
	if (ready < 0 && wl->n_queued >= wl->queue_max) {
		vram_metrics_gateway_request(gw->mx, wl->name, 503, gw__seconds_since(started));
		gw__client_error(c, 503, "unavailable", VRAM_GATEWAY_RETRY_AFTER_S, !h->keep_alive,
				 "%s is not ready and its queue is full (queue_max %u)", wl->name,
				 wl->queue_max);
		return;
	}
	struct gw_req *r = gw__req_new(c, wl, h, target, body, blen, started);
	if (!r) {
		gw__client_error(c, 500, NULL, 0, true, "out of memory");
		return;
	}
	c->req = r;
	/* Linked as queued first, so that every path out goes through gw__finish(). */
	r->phase = GW_QUEUED;
	r->prev = wl->qtail;
	if (wl->qtail)
		wl->qtail->next = r;
	else
		wl->qhead = r;
	wl->qtail = r;
	wl->n_queued++;
	if (ready == 0 && wl->qhead == r) {
		gw__forward(r, port);
		return;
	}
	vram_metrics_gateway_queue(gw->mx, wl->name, wl->n_queued);
	r->timeout = evtimer_new(gw->base, on_queue_timeout, r);
	if (!r->timeout) {
		gw__fail_req(r, 500, NULL, 0, "out of memory");
		return;
	}
	struct timeval tv = { (time_t)(wl->queue_timeout_ms / 1000),
			      (suseconds_t)(wl->queue_timeout_ms % 1000) * 1000 };
	evtimer_add(r->timeout, &tv);
	if (ready == 0)
		gw__drain(wl, false);
	else
		wake(wl);
}

static void reply_json(struct gw_client *c, int status, json_t *body, bool close)
{
	char *text = body ? json_dumps(body, VRAM_HTTP_JSON_FLAGS) : NULL;
	if (!text) {
		gw__client_error(c, 500, NULL, 0, true, "out of memory");
		return;
	}
	gw__client_reply(c, status, NULL, "application/json", text, strlen(text), close);
	free(text);
}

static void reply_models(struct gw_client *c, const char *one, bool close)
{
	struct vram_gateway *gw = c->gw;
	const struct vram_config *config = vram_manager_config(gw->m);
	json_t *data = json_array();
	json_t *found = NULL;
	for (size_t i = 0; data && i < config->n_workloads; i++) {
		const struct vram_workload_config *cfg = &config->workloads[i];
		for (size_t k = 0; k < cfg->n_models; k++) {
			json_t *m = json_pack("{s:s,s:s,s:i,s:s}", "id", cfg->models[k], "object",
					      "model", "created", 0, "owned_by", cfg->name);
			if (one && !found && strcmp(one, cfg->models[k]) == 0)
				found = json_incref(m);
			json_array_append_new(data, m);
		}
	}
	if (one) {
		if (found) {
			reply_json(c, 200, found, close);
		} else {
			char known[1024];
			list_known(gw, true, known, sizeof(known));
			gw__client_error(c, 404, "model_not_found", 0, close,
					 "no workload serves model \"%.256s\" (known: %s)", one,
					 known[0] ? known : "none");
		}
		json_decref(found);
		json_decref(data);
		return;
	}
	json_t *body = json_pack("{s:s,s:o}", "object", "list", "data", data ? data : json_array());
	reply_json(c, 200, body, close);
	json_decref(body);
}

/* /w/{name}[/rest]: the workload by name, the rest as the upstream target. */
static void route_by_name(struct gw_client *c, const struct vram_h1_head *h, const char *target,
			  const char *body, size_t blen, const struct timespec *started)
{
	struct vram_gateway *gw = c->gw;
	const char *seg = target + 3;
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
		gw__client_error(c, 404, NULL, 0, !h->keep_alive, "expected /w/<workload>/<path>");
		return;
	}
	memcpy(name, dec, dlen + 1);
	free(dec);
	struct gw_wl *wl = gw__wl_by_name(gw, name);
	if (!wl) {
		char known[1024];
		list_known(gw, false, known, sizeof(known));
		gw__client_error(c, 404, NULL, 0, !h->keep_alive,
				 "no workload named \"%s\" (known: %s)", name,
				 known[0] ? known : "none");
		return;
	}
	const char *rest = seg + seglen;
	char up_target[VRAM_HTTP_HEADERS_MAX + 2];
	snprintf(up_target, sizeof(up_target), "%s%s", *rest == '/' ? "" : "/", rest);
	gw__admit(c, wl, h, up_target, body, blen, started);
}

/* /v1/...: the workload serving the request's model. */
static void route_by_model(struct gw_client *c, const struct vram_h1_head *h, const char *target,
			   const char *path, const char *query, const char *body, size_t blen,
			   const struct timespec *started)
{
	struct vram_gateway *gw = c->gw;
	bool close = !h->keep_alive;
	bool get = vram_h1_span_eq(h->method, "GET") || vram_h1_span_eq(h->method, "HEAD");
	if (get && strcmp(path, "/v1/models") == 0) {
		reply_models(c, NULL, close);
		return;
	}
	if (get && strncmp(path, "/v1/models/", 11) == 0 && path[11]) {
		char *one = evhttp_uridecode(path + 11, 0, NULL);
		reply_models(c, one ? one : path + 11, close);
		free(one);
		return;
	}
	char ctype[512] = "";
	const struct vram_h1_header *ct = vram_h1_find(h, "Content-Type");
	if (ct && ct->value.n < sizeof(ctype)) {
		memcpy(ctype, ct->value.p, ct->value.n);
		ctype[ct->value.n] = '\0';
	}
	char model[VRAM_GATEWAY_MODEL_MAX];
	int r = vram_gateway_find_model(ctype[0] ? ctype : NULL, body, blen, query, model,
					sizeof(model));
	char known[1024];
	if (r == -ENOENT || r == -E2BIG) {
		list_known(gw, true, known, sizeof(known));
		gw__client_error(c, 400, NULL, 0, close,
				 "%s names no model: give one in a JSON \"model\" field, a form "
				 "field or ?model= (known: %s)", path, known[0] ? known : "none");
		return;
	}
	if (r < 0) {
		gw__client_error(c, 500, NULL, 0, true, "out of memory");
		return;
	}
	const char *name = NULL;
	struct gw_wl *wl = NULL;
	if (vram_manager_find_model(gw->m, model, &name) == 0 && name)
		wl = gw__wl_by_name(gw, name);
	if (!wl) {
		list_known(gw, true, known, sizeof(known));
		vram_metrics_gateway_request(gw->mx, "", 404, gw__seconds_since(started));
		gw__client_error(c, 404, "model_not_found", 0, close,
				 "no workload serves model \"%s\" (known: %s)", model,
				 known[0] ? known : "none");
		return;
	}
	gw__admit(c, wl, h, target, body, blen, started);
}

/*
 * The origin form of target t: "http://host/p?q" is "/p?q" (RFC 9112
 * §3.2.2), "http://host" is "/". NULL for a target that is neither a path
 * nor "*"; *ret_len gets the length.
 */
static const char *gw__origin_form(struct vram_h1_span t, size_t *ret_len)
{
	const char *p = t.p;
	size_t n = t.n;
	if (n > 7 && (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0)) {
		const char *auth = (const char *)memchr(p, ':', n) + 3;
		const char *slash = memchr(auth, '/', n - (size_t)(auth - p));
		n = slash ? n - (size_t)(slash - p) : 1;
		p = slash ? slash : "/";
	}
	if (p[0] != '/' && !(n == 1 && p[0] == '*'))
		return NULL;
	*ret_len = n;
	return p;
}

enum gw_route {
	GW_ROUTE_API,   /* relayed to the evhttp server: the REST API, /mcp, /metrics */
	GW_ROUTE_MODEL, /* /v1/...: by the request's model */
	GW_ROUTE_NAME,  /* /w/{name}/...: by workload name */
};

/* The route of an origin-form target (n bytes at t). */
static enum gw_route gw__route_of(const char *t, size_t n)
{
	size_t plen = 0;
	while (plen < n && t[plen] != '?' && t[plen] != '#')
		plen++;
	if (plen >= 3 && memcmp(t, "/v1", 3) == 0 && (plen == 3 || t[3] == '/'))
		return GW_ROUTE_MODEL;
	if (plen >= 3 && memcmp(t, "/w/", 3) == 0)
		return GW_ROUTE_NAME;
	return GW_ROUTE_API;
}

/*
 * Serves one complete request of c that passed the front door: head h,
 * body (blen bytes, NUL after).
 */
static void gw__dispatch(struct gw_client *c, const struct vram_h1_head *h, const char *body,
			 size_t blen)
{
	struct vram_gateway *gw = c->gw;
	struct timespec started;
	clock_gettime(CLOCK_MONOTONIC, &started);
	bool close = !h->keep_alive;

	size_t tlen = 0;
	const char *t = gw__origin_form(h->target, &tlen); /* the front door checked it */
	char target[VRAM_HTTP_HEADERS_MAX + 1];
	memcpy(target, t, tlen);
	target[tlen] = '\0';
	char path[VRAM_HTTP_HEADERS_MAX + 1];
	size_t plen = strcspn(target, "?#");
	memcpy(path, target, plen);
	path[plen] = '\0';
	const char *query = target[plen] == '?' ? target + plen + 1 : NULL;

	enum gw_route route = gw__route_of(target, tlen);
	if (!query && strcmp(path, "/api/status") == 0 && vram_h1_span_eq(h->method, "GET")) {
		/*
		 * What dashboards and scripts poll, served here from the API's
		 * rendered text: a relay hop through evhttp would double its cost.
		 */
		const char *text;
		size_t len;
		if (vram_api_status_text(gw->api, &text, &len) == 0) {
			gw__client_reply(c, 200, NULL, "application/json", text, len, close);
			return;
		}
	}
	if (route == GW_ROUTE_API) {
		relay_api(c, h, target, body, blen, &started);
		return;
	}
	if (gw->closing) {
		gw__client_error(c, 503, "shutting_down", 0, true, "vramd is shutting down");
		return;
	}
	if (route == GW_ROUTE_NAME)
		route_by_name(c, h, target, body, blen, &started);
	else
		route_by_model(c, h, target, path, query, body, blen, &started);
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

	if (!c->trusted && gw->token) {
		const struct vram_h1_header *auth = vram_h1_find(h, "Authorization");
		if (!auth || !gw__carries_token(gw, auth->value, true))
			return door_refuse(c, h, 401, NULL, 0, "this API needs \"Authorization: Bearer "
					   "<token>\" (daemon.token)");
		c->ident.token = true;
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
		if (!c->admitted) {
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

/* The request in service ended: on to the next one if it is already here. */
static void gw__client_next(struct gw_client *c)
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

static void gw__client_on_read(evutil_socket_t fd, short what, void *arg)
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

static void gw__client_drop(struct gw_client *c)
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
	if (c->prev)
		c->prev->next = c->next;
	else
		gw->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
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

/* ---------------------------------------------------------- listeners */

/* The home slot of an address in gw->addrs. */
static size_t addr_slot(const struct vram_gateway *gw, const unsigned char key[16])
{
	uint32_t h = 2166136261u ^ gw->addr_seed; /* FNV-1a */
	for (size_t i = 0; i < 16; i++) {
		h ^= key[i];
		h *= 16777619u;
	}
	return h & (GW_ADDR_SLOTS - 1);
}

/* The entry of key, or the free slot where it goes (the table is never full). */
static struct gw_addr_count *addr_find(struct vram_gateway *gw, const unsigned char key[16])
{
	size_t i = addr_slot(gw, key);
	while (gw->addrs[i].n && memcmp(gw->addrs[i].addr, key, 16) != 0)
		i = (i + 1) & (GW_ADDR_SLOTS - 1);
	return &gw->addrs[i];
}

/* One connection of key fewer; an address with none leaves the table. */
static void gw__addr_release(struct vram_gateway *gw, const unsigned char key[16])
{
	const size_t mask = GW_ADDR_SLOTS - 1;
	struct gw_addr_count *e = addr_find(gw, key);
	if (!e->n || --e->n)
		return;
	/* Linear probing without tombstones: later entries of the run move into the hole. */
	size_t hole = (size_t)(e - gw->addrs);
	for (size_t j = (hole + 1) & mask; gw->addrs[j].n; j = (j + 1) & mask) {
		size_t home = addr_slot(gw, gw->addrs[j].addr);
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			gw->addrs[hole] = gw->addrs[j];
			gw->addrs[j].n = 0;
			hole = j;
		}
	}
}

/*
 * The text of a TCP address (IPv4-mapped IPv6 as IPv4) and the key it is
 * counted under: the address, or for IPv6 its /64, which one host or one
 * network usually has to itself.
 */
static void addr_of(const struct sockaddr *sa, char *text, size_t size, unsigned char key[16])
{
	static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
	memset(key, 0, 16);
	text[0] = '\0';
	if (sa->sa_family == AF_INET) {
		memcpy(key, mapped, 12);
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		inet_ntop(AF_INET, key + 12, text, (socklen_t)size);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		if (memcmp(key, mapped, 12) == 0) {
			inet_ntop(AF_INET, key + 12, text, (socklen_t)size);
		} else {
			inet_ntop(AF_INET6, key, text, (socklen_t)size);
			memset(key + 8, 0, 8);
		}
	}
}

/* Closes a connection over a limit: a debug line each, a warning every GW_REFUSE_WARN_S. */
static void refuse_connection(struct vram_gateway *gw, int fd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void refuse_connection(struct vram_gateway *gw, int fd, const char *fmt, ...)
{
	close(fd);
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	vram_debug("gateway: refusing a connection: %s", why);
	gw->n_refused++;
	time_t now = gw__now_s();
	if (gw->refuse_warned && now - gw->refuse_warned < GW_REFUSE_WARN_S)
		return;
	vram_warn("gateway: refused %u connection%s since the last warning, the last one: %s",
		  gw->n_refused, gw->n_refused == 1 ? "" : "s", why);
	gw->refuse_warned = now ? now : 1;
	gw->n_refused = 0;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		      void *arg)
{
	struct gw_listener *gl = arg;
	struct vram_gateway *gw = gl->gw;
	bool tcp = !gl->trusted;
	if (gw->closing) {
		vram_debug("gateway: refusing a connection: shutting down");
		close(fd);
		return;
	}
	char addr[INET6_ADDRSTRLEN] = "";
	unsigned char key[16];
	struct gw_addr_count *count = NULL;
	if (tcp) {
		addr_of(sa, addr, sizeof(addr), key);
		count = addr_find(gw, key);
		if (gw->n_tcp_clients >= VRAM_GATEWAY_CLIENTS_MAX - VRAM_GATEWAY_UNIX_RESERVED ||
		    gw->n_clients >= VRAM_GATEWAY_CLIENTS_MAX) {
			refuse_connection(gw, fd, "%u TCP clients are connected, the most there may be "
					  "(%u of %u kept for the control socket)", gw->n_tcp_clients,
					  VRAM_GATEWAY_UNIX_RESERVED, VRAM_GATEWAY_CLIENTS_MAX);
			return;
		}
		if (count->n >= VRAM_GATEWAY_CLIENTS_PER_ADDR_MAX) {
			refuse_connection(gw, fd, "%s has %u connections open, the most one address may",
					  addr, count->n);
			return;
		}
	} else if (gw->n_clients >= VRAM_GATEWAY_CLIENTS_MAX) {
		refuse_connection(gw, fd, "%u clients are connected, the most there may be",
				  gw->n_clients);
		return;
	}
	struct gw_client *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->gw = gw;
	c->listener = gl;
	c->fd = fd;
	c->trusted = gl->trusted;
	vram_buf_init(&c->in, VRAM_HTTP_HEADERS_MAX + VRAM_GATEWAY_BODY_MAX + GW_CHUNK_SLACK);
	vram_buf_init(&c->out, GW_CLIENT_OUT_MAX);
	vram_buf_init(&c->body, VRAM_GATEWAY_BODY_MAX);
	if (tcp) {
		c->ident.transport = VRAM_PEER_TCP;
		snprintf(c->ident.addr, sizeof(c->ident.addr), "%s", addr);
		memcpy(c->addr_key, key, sizeof(key));
		struct sockaddr_storage local;
		socklen_t llen = sizeof(local);
		unsigned char unused[16];
		if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
			addr_of((struct sockaddr *)&local, c->local_addr, sizeof(c->local_addr), unused);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	} else {
		int r = vram_peer_from_unix_socket(fd, &c->ident);
		if (r < 0) {
			/* the kernel always knows the peer of a connected Unix socket */
			vram_debug("gateway: refusing a connection: its credentials: %s", strerror(-r));
			close(fd);
			free(c);
			return;
		}
	}
	c->rev = event_new(gw->base, fd, EV_READ | EV_PERSIST, gw__client_on_read, c);
	c->wev = event_new(gw->base, fd, EV_WRITE, gw__client_on_write, c);
	if (!c->rev || !c->wev || event_add(c->rev, NULL) < 0) {
		if (c->rev)
			event_free(c->rev);
		if (c->wev)
			event_free(c->wev);
		close(fd);
		free(c);
		return;
	}
	if (tcp) {
		memcpy(count->addr, key, sizeof(key));
		count->n++;
		gw->n_tcp_clients++;
	}
	c->stamp = c->out_stamp = gw__now_s();
	c->next = gw->clients;
	if (gw->clients)
		gw->clients->prev = c;
	gw->clients = c;
	gw->n_clients++;
}

/* Listens on fd (taken): a Unix socket at path, or TCP on host (copied) and port. */
static int listener_add(struct vram_gateway *gw, int fd, bool trusted, const char *path,
			const char *host, unsigned port, char *err, size_t err_size)
{
	if (gw->n_listeners == GW_LISTENERS_MAX) {
		snprintf(err, err_size, "too many listeners");
		close(fd);
		return -ENOSPC;
	}
	struct gw_listener *gl = &gw->listeners[gw->n_listeners];
	*gl = (struct gw_listener){ .gw = gw, .trusted = trusted, .port = port };
	gl->path = path ? strdup(path) : NULL;
	gl->host = host ? strdup(host) : NULL;
	gl->l = evconnlistener_new(gw->base, on_accept, gl,
				   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (!gl->l || (path && !gl->path) || (host && !gl->host)) {
		snprintf(err, err_size, "out of memory");
		if (gl->l)
			evconnlistener_free(gl->l);
		else
			close(fd);
		free(gl->path);
		free(gl->host);
		return -ENOMEM;
	}
	/* without it the listener would still work, only spin when out of descriptors */
	gl->guard = vram_accept_guard_new(gw->base, gl->l, "gateway");
	gw->n_listeners++;
	return 0;
}

int vram_gateway_listen_tcp(struct vram_gateway *gw, const char *hostport, unsigned *ret_port,
			    char *err, size_t err_size)
{
	unsigned port = 0;
	char host[256];
	int fd = vram_http_listen_tcp(hostport, &port, err, err_size);
	if (fd < 0)
		return fd;
	if (vram_http_split_hostport(hostport, host, sizeof(host), &(unsigned){ 0 }) < 0)
		host[0] = '\0'; /* vram_http_listen_tcp split it already */
	if (ret_port)
		*ret_port = port;
	return listener_add(gw, fd, false, NULL, host, port, err, err_size);
}

int vram_gateway_listen_unix(struct vram_gateway *gw, const char *path, char *err, size_t err_size)
{
	return vram_gateway_listen_unix_shared(gw, path, 0600, (gid_t)-1, err, err_size);
}

int vram_gateway_listen_unix_shared(struct vram_gateway *gw, const char *path, mode_t mode,
				    gid_t gid, char *err, size_t err_size)
{
	int fd = vram_http_listen_unix_shared(path, mode, gid, err, err_size);
	if (fd < 0)
		return fd;
	int r = listener_add(gw, fd, true, path, NULL, 0, err, err_size);
	if (r < 0)
		unlink(path);
	return r;
}

/* ------------------------------------------------------------- sweep */

/*
 * Once a second: clients idle or slow to send a request past the idle
 * timeout, clients that stopped reading a response, lingering closes, and
 * upstreams of workloads past their first_byte_timeout (no response yet) or
 * stream_timeout (silent in the middle of one). (Relayed API requests have
 * no upstream timeout: an event stream may be quiet for long.)
 */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct vram_gateway *gw = arg;
	time_t now = gw__now_s();
	for (struct gw_client *c = gw->clients, *next; c; c = next) {
		next = c->next;
		if (c->lingering) {
			if (now - c->stamp > GW_LINGER_S)
				gw__client_drop(c);
		} else if (gw__client_pending(c) > 0) {
			if (now - c->out_stamp > VRAM_GATEWAY_CLIENT_STALL_S)
				gw__client_drop(c);
		} else if (!c->req && now - c->stamp > VRAM_HTTP_IDLE_TIMEOUT_S) {
			if (c->in.len && !c->closing)
				gw__client_error(c, 408, NULL, 0, true,
						 "the request did not arrive within %ds",
						 VRAM_HTTP_IDLE_TIMEOUT_S);
			else
				gw__client_drop(c);
		}
	}
	for (struct gw_req *r = gw->active, *next; r; r = next) {
		next = r->next;
		struct gw_up *up = r->up;
		if (!r->wl || !up || up->paused)
			continue;
		/* Until its first byte the upstream is thinking (prefill); after it, streaming. */
		bool first = !up->got_bytes;
		uint64_t limit_ms = first ? r->wl->first_byte_timeout_ms : r->wl->stream_timeout_ms;
		time_t since = first ? r->sent_stamp : up->stamp;
		if (limit_ms == VRAM_DURATION_NEVER || (uint64_t)(now - since) * 1000 <= limit_ms)
			continue;
		char why[128];
		if (first)
			snprintf(why, sizeof(why), "sent no response within %.1fs of the request "
				 "(first_byte_timeout)", (double)limit_ms / 1000.0);
		else
			snprintf(why, sizeof(why), "sent nothing for %.1fs in the middle of its "
				 "response (stream_timeout)", (double)limit_ms / 1000.0);
		gw__up_break(up, 504, "timeout", why);
		next = gw->active; /* the list may have changed: start over */
	}
	for (size_t i = 0; i < gw->n_wls; i++)
		gw__pool_trim(&gw->wls[i]->pool, VRAM_GATEWAY_IDLE_CONNS_MAX,
			      VRAM_GATEWAY_UPSTREAM_IDLE_S);
	gw__pool_trim(&gw->api_pool, VRAM_GATEWAY_IDLE_CONNS_MAX, VRAM_GATEWAY_UPSTREAM_IDLE_S);
}

/* ----------------------------------------- the evhttp side (relayed) */

void vram_gateway_handle(struct evhttp_request *req, bool trusted, void *arg)
{
	struct vram_gateway *gw = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (path && strcmp(path, "/metrics") == 0 && gw->mx) {
		vram_metrics_handle(gw->mx, req);
		return;
	}
	vram_api_handle(req, trusted, gw->api);
}

/* ---------------------------------------------------------- lifecycle */

/* Frees every workload entry, removed ones too: no request may be left. */
static void gw__wls_free(struct vram_gateway *gw)
{
	for (size_t i = 0; i < gw->n_wls; i++)
		wl_free(gw->wls[i]);
	free(gw->wls);
	gw->wls = NULL;
	gw->n_wls = gw->cap_wls = 0;
	while (gw->removed) {
		struct gw_wl *wl = gw->removed;
		gw->removed = wl->next_removed;
		wl_free(wl);
	}
}

int vram_gateway_new(struct event_base *base, struct vram_manager *m, struct vram_api *api,
		     struct vram_metrics *mx, const char *token, const char *api_socket,
		     struct vram_gateway **ret)
{
	struct vram_gateway *gw = calloc(1, sizeof(*gw));
	if (!gw)
		return -ENOMEM;
	const struct vram_config *cfg = vram_manager_config(m);
	gw->base = base;
	gw->m = m;
	gw->api = api;
	gw->mx = mx;
	vram_buf_init(&gw->head, VRAM_GATEWAY_UP_HEADERS_MAX + 4096);
	vram_buf_init(&gw->dechunked, GW_READ_MAX + VRAM_GATEWAY_UP_HEADERS_MAX);
	gw->token = token && *token ? strdup(token) : NULL;
	gw->api_socket = strdup(api_socket);
	gw->addrs = calloc(GW_ADDR_SLOTS, sizeof(*gw->addrs));
	if (getrandom(&gw->addr_seed, sizeof(gw->addr_seed), GRND_NONBLOCK) < 0)
		gw->addr_seed = (uint32_t)time(NULL); /* a weaker seed is still a seed */
	gw->body_budget = VRAM_GATEWAY_BODY_BUDGET;
	const char *budget = getenv("VRAMD_BODY_BUDGET");
	uint64_t bytes;
	if (budget && *budget) {
		if (vram_units_parse_bytes(budget, &bytes) == 0 && bytes > 0)
			gw->body_budget = bytes;
		else
			vram_warn("Ignoring VRAMD_BODY_BUDGET=\"%.64s\": expected a size like 64MiB; "
				  "the request body budget stays %llu bytes", budget,
				  (unsigned long long)gw->body_budget);
	}
	gw->sweep = event_new(base, -1, EV_PERSIST, on_sweep, gw);
	struct timeval tv = { GW_SWEEP_S, 0 };
	if (!gw->api_socket || (token && *token && !gw->token) || !gw->addrs || !gw->sweep ||
	    event_add(gw->sweep, &tv) < 0)
		goto out_free;
	for (size_t i = 0; i < cfg->n_workloads; i++)
		if (gw__wl_add(gw, &cfg->workloads[i]) < 0)
			goto out_free;
	if (vram_manager_subscribe(m, gw__on_event, gw, &gw->sub) < 0)
		goto out_free;
	*ret = gw;
	return 0;

out_free:
	if (gw->sweep)
		event_free(gw->sweep);
	gw__wls_free(gw);
	free(gw->addrs);
	free(gw->token);
	free(gw->api_socket);
	free(gw);
	return -ENOMEM;
}

void vram_gateway_close_clients(struct vram_gateway *gw)
{
	if (!gw)
		return;
	gw->closing = true;
	for (size_t i = 0; i < gw->n_listeners; i++) {
		/* first: a pause in progress would end by enabling the listener */
		vram_accept_guard_free(gw->listeners[i].guard);
		gw->listeners[i].guard = NULL;
		evconnlistener_disable(gw->listeners[i].l);
	}
	for (size_t i = 0; i < gw->n_wls; i++) {
		struct gw_wl *wl = gw->wls[i];
		if (wl->waiter) {
			vram_manager_waiter_cancel(wl->waiter);
			wl->waiter = NULL;
		}
		while (wl->qhead)
			gw__fail_req(wl->qhead, 503, "shutting_down", 0, "vramd is shutting down");
	}
	while (gw->active) {
		struct gw_req *r = gw->active;
		struct gw_client *c = r->c;
		if (r->replying) {
			gw__finish(r, 503);
			gw__client_close_soon(c);
		} else {
			r->keep_alive = false;
			gw__fail_req(r, 503, "shutting_down", 0, "vramd is shutting down");
		}
	}
}

void vram_gateway_free(struct vram_gateway *gw)
{
	if (!gw)
		return;
	vram_gateway_close_clients(gw);
	vram_manager_unsubscribe(gw->sub);
	while (gw->clients)
		gw__client_drop(gw->clients);
	gw__wls_free(gw);
	gw__pool_trim(&gw->api_pool, 0, 0);
	for (size_t i = 0; i < gw->n_listeners; i++) {
		evconnlistener_free(gw->listeners[i].l);
		if (gw->listeners[i].path)
			unlink(gw->listeners[i].path);
		free(gw->listeners[i].path);
		free(gw->listeners[i].host);
	}
	event_free(gw->sweep);
	vram_buf_done(&gw->head);
	vram_buf_done(&gw->dechunked);
	free(gw->addrs);
	free(gw->token);
	free(gw->api_socket);
	free(gw);
}
