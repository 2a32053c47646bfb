/* SPDX-License-Identifier: MIT */
/*
 * The gateway's internals, shared by its files; the interface is gateway.h.
 * Types are gw_*, functions one file offers the others gw__*; everything
 * else is static to its file. Only the gateway's files and its unit test
 * include this.
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
 *
 * The files, in the order a request passes them:
 *  - gateway_listen.c: listeners, accepting under the connection limits;
 *  - gateway_client.c: client connections: reading, the front door,
 *    writing, dropping;
 *  - gateway_route.c: which way a complete request goes (by model, by
 *    name, to the API) and the answers given here (/v1/models);
 *  - gateway_queue.c: the workloads served, admission, the queue while a
 *    workload starts, how a request ends, the manager's events;
 *  - gateway_upstream.c: upstream connections and their pools, the heads
 *    that go up and come back, streaming the response;
 *  - gateway_model.c: where a request names its model (pure);
 *  - gateway.c: new and free, the sweep, the evhttp side.
 * Calls go down this list, along a request's way. The calls back are of
 * three kinds only: answering a client (gw__client_reply, _error, _sendv,
 * _close_soon, _next: from the routes, the queue and the upstream), ending
 * a request (gw__finish, gw__fail_req, gw__drain, gw__wl_to_drain: from the
 * upstream and a dropped client), and a dropped client's address slot
 * (gw__addr_release).
 * gateway_model.c calls nothing of the gateway; gateway.c may call any.
 * Only gateway_queue.c links and unlinks requests (queues, the active
 * list), only gateway_upstream.c idle connections (pools); gateway.c walks
 * the lists to time out and to close.
 */
#ifndef VRAM_GATEWAY_INT_H
#define VRAM_GATEWAY_INT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "common/buf.h"
#include "common/list.h"
#include "daemon/access.h"
#include "daemon/accesslog.h"
#include "daemon/gateway.h"
#include "daemon/h1.h"
#include "daemon/http.h"
#include "daemon/manager.h"
#include "daemon/peer.h"

struct evconnlistener;
struct vram_accept_guard;

#define GW_READ_MAX (32 * 1024) /* bytes asked of one read(2) */
#define GW_LISTENERS_MAX 8
/* slots of the per-address connection counts: a power of two, over twice the TCP clients */
#define GW_ADDR_SLOTS 8192

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
	struct vram_list link;     /* in its pool's idle list while idle */
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
	struct vram_list idle; /* of struct gw_up (link), most recently used first */
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
	struct vram_list queue;             /* of struct gw_req (link): waiting for start/restore,
					     * FIFO */
	unsigned n_queued;
	unsigned in_flight;                 /* requests sent upstream */
	struct vram_manager_waiter *waiter; /* the start/restore being waited for */
	bool retry_wake;                    /* act was refused (busy): retry on a state change */
	bool removed;                       /* by a reload: in gw->removed until in_flight is 0 */
	struct vram_list removed_link;      /* in gw->removed while removed */
	bool asleep;                        /* offloaded or parked, or moving between: the same
					     * process on the same port, so its idle connections
					     * stay, with no age limit (see on_state) */
	struct gw_pool pool;
};

struct gw_listener;

/* What the access log says of a request (accesslog.h), gathered while it is served. */
struct gw_access {
	bool pending;                  /* a request is in service and not logged yet */
	char client[VRAM_PEER_ADDR_MAX]; /* TCP address, or "unix" */
	char method[16];
	char target[VRAM_ACCESSLOG_PATH_MAX + 1]; /* as sent, cut */
	char model[VRAM_GATEWAY_MODEL_MAX];
	char workload[VRAM_CONFIG_NAME_MAX + 1];
	struct timespec started;       /* CLOCK_MONOTONIC: its head was read */
	double queue_s;                /* s waited in its workload's queue */
};

struct gw_client {
	struct vram_gateway *gw;
	struct gw_listener *listener;  /* borrowed: where it came in */
	struct vram_list link;         /* in gw->clients */
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
	uint64_t drain_idle_ms;        /* ms, monotonic: idle since, as a drain saw it; 0: not
					* seen idle (vram_gateway_drain_left) */
	bool trusted;                  /* the Unix socket: no token asked */
	bool processing;               /* inside client_process */
	bool dead;                     /* dropped while processing: freed on the way out */
	bool closing;                  /* no more requests: close once out is sent */
	bool lingering;                /* write side shut; reading until EOF */
	bool continue_sent;            /* "100 Continue" sent for the request being read */
	bool admitted;                 /* the request being read passed the front door */
	bool read_paused;              /* the input buffer is full */
	struct gw_access acc;          /* the request being read or answered by the gateway itself;
					* moves into its gw_req when one is made */
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
	struct vram_list link;       /* in its workload's queue or in gw->active */
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
	struct gw_access acc;        /* for the access log */
	uint64_t bytes_out;          /* bytes of the response sent to the client, head included */
	double first_byte_s;         /* s from its head's arrival to the response head going out */
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
	struct vram_list removed;  /* owned, of struct gw_wl (removed_link): removed by a reload,
				   * requests still in flight */
	struct gw_pool api_pool;
	struct vram_list active;   /* of struct gw_req (link): requests sent upstream */
	struct vram_list clients;  /* of struct gw_client (link): every client */
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
	struct vram_accesslog *alog; /* borrowed; NULL: no access log */
	bool closing;
	bool draining;             /* a restart in place: not accepting, every answer closes */
};

enum gw_route {
	GW_ROUTE_API,   /* relayed to the evhttp server: the REST API, /mcp, /metrics */
	GW_ROUTE_MODEL, /* /v1/...: by the request's model */
	GW_ROUTE_NAME,  /* /w/{name}/...: by workload name */
};

/* ----------------------------------------------------- small helpers */

/* s, coarse monotonic: for timeouts of a second or more */
static inline time_t gw__now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return ts.tv_sec;
}

/* s since t0 (CLOCK_MONOTONIC): request durations */
static inline double gw__seconds_since(const struct timespec *t0)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* The request whose link is node: on a queue or the active list (head->next: the first). */
static inline struct gw_req *gw__req_of(struct vram_list *node)
{
	return vram_list_entry(node, struct gw_req, link);
}

/* bytes queued to c, not sent yet */
static inline size_t gw__client_pending(const struct gw_client *c)
{
	return c->out.len - c->out_off;
}

/* A vram_h1_data_fn that appends to the struct vram_buf at arg. */
static inline int gw__append_to_buf(void *arg, const char *p, size_t n)
{
	return vram_buf_append(arg, p, n);
}

/* Replaces gw->token with a copy of token (NULL or "" = none); 0 or -ENOMEM (old kept). */
int gw__set_token(struct vram_gateway *gw, const char *token);

/*
 * True when v carries vramd's token, as "Bearer <token>" (an Authorization
 * value) or bare (an X-Api-Key value); compared in constant time. The
 * front door asks it, and the request that goes upstream leaves such a
 * header out.
 */
static inline bool gw__carries_token(const struct vram_gateway *gw, struct vram_h1_span v,
				     bool bearer)
{
	if (!gw->token)
		return false;
	return bearer ? vram_http_token_ok_n(v.p, v.n, gw->token)
		      : vram_http_token_equal(v.p, v.n, gw->token);
}

/* ---------------------------------------------------- gateway_listen.c */

/* One TCP connection of key fewer; an address with none leaves the table. */
void gw__addr_release(struct vram_gateway *gw, const unsigned char key[16]);

/* ---------------------------------------------------- gateway_client.c */

/* The event callbacks of a client connection (arg: the struct gw_client). */
void gw__client_on_read(evutil_socket_t fd, short what, void *arg);
void gw__client_on_write(evutil_socket_t fd, short what, void *arg);
/*
 * Sends n pieces to c, queueing what the socket does not take. Returns 0,
 * or -errno after dropping c: the caller returns without touching c, its
 * request or that request's upstream.
 */
int gw__client_sendv(struct gw_client *c, struct iovec *iov, int n);
/* A complete response of the gateway's own; close ends the connection after it. */
int gw__client_reply(struct gw_client *c, int status, const char *extra, const char *ctype,
		     const char *body, size_t len, bool close);
/* The JSON error shape; retry_after > 0 adds Retry-After. Returns like gw__client_sendv. */
int gw__client_error(struct gw_client *c, int status, const char *code, int retry_after,
		     bool close, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Ends the connection once what is queued is sent. */
void gw__client_close_soon(struct gw_client *c);
/* The request in service ended: on to the next one if it is already here. */
void gw__client_next(struct gw_client *c);
/* Closes and frees c, its request and that request's upstream (deferred inside client_process). */
void gw__client_drop(struct gw_client *c);

/* ---------------------------------------------------- the access log */

/* A request head of c was read: its access record starts (once per request). */
void gw__access_begin(struct gw_client *c, const struct vram_h1_head *h);
/*
 * a's request ended with status after bytes (first_byte_s < 0: nothing
 * was sent): one line in the access log, and a is done.
 */
void gw__access_end(struct vram_gateway *gw, struct gw_access *a, int status, uint64_t bytes,
		    double first_byte_s);

/* ----------------------------------------------------- gateway_route.c */

/* The origin form of a request-target, or NULL; *ret_len gets its length. */
const char *gw__origin_form(struct vram_h1_span t, size_t *ret_len);
/* The route of an origin-form target (n bytes at t). */
enum gw_route gw__route_of(const char *t, size_t n);
/* Serves a complete request of c that passed the front door (body: blen bytes, NUL after). */
void gw__dispatch(struct gw_client *c, const struct vram_h1_head *h, const char *body,
		  size_t blen);

/* ----------------------------------------------------- gateway_queue.c */

/* Borrowed, valid until a reload removes it and its last request finishes; NULL if none. */
struct gw_wl *gw__wl_by_name(struct vram_gateway *gw, const char *name);
/* Serves workload c (copied) from now on. Returns 0 or -ENOMEM. */
int gw__wl_add(struct vram_gateway *gw, const struct vram_workload_config *c);
/* Frees every workload entry, removed ones too: no request may be left. */
void gw__wls_free(struct vram_gateway *gw);
/* The manager's events (vram_manager_subscribe; arg: the gateway). */
void gw__on_event(const struct vram_event *ev, void *arg);
/* A new request of c, linked nowhere yet; NULL with errno (see gw__build_request). */
struct gw_req *gw__req_new(struct gw_client *c, struct gw_wl *wl, const struct vram_h1_head *h,
			   const char *target, const char *body, size_t blen,
			   const struct timespec *started);
/* Sends a request for wl now, queues it, or refuses it (429, 503). */
void gw__admit(struct gw_client *c, struct gw_wl *wl, const struct vram_h1_head *h,
	       const char *target, const char *body, size_t blen, const struct timespec *started);
/* r leaves the queue (if it was there) and goes upstream to port (0: the API). */
void gw__forward(struct gw_req *r, unsigned port);
/* Sends queued requests of wl upstream while it is ready and under its limit. */
void gw__drain(struct gw_wl *wl, bool after_wake);
/* r's workload if a queue may need draining once r has finished, else NULL. */
struct gw_wl *gw__wl_to_drain(const struct gw_req *r);
/* Ends r with status (0: the client went away) and frees it; see gateway_queue.c. */
void gw__finish(struct gw_req *r, int status);
/* Answers a request whose response has not started, and finishes it. */
void gw__fail_req(struct gw_req *r, int status, const char *code, int retry_after,
		  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* -------------------------------------------------- gateway_upstream.c */

/* Builds r->wire, the request for the upstream. Returns 0, -EMSGSIZE or -ENOMEM. */
int gw__build_request(struct gw_req *r, const struct vram_h1_head *h, const char *target,
		      const char *body, size_t blen);
/* Sends r on a kept-alive connection to port (0: the API socket), or a new one. */
void gw__send_upstream(struct gw_req *r, unsigned port);
/* The upstream failed or timed out: retried once, or the client is answered or cut. */
void gw__up_break(struct gw_up *up, int status, const char *code, const char *why);
/* Reads from up again: its client caught up. */
void gw__up_resume(struct gw_up *up);
/* Closes and frees up; it must not carry a request (see gw__finish). */
void gw__up_close(struct gw_up *up);
/* Closes idle connections of p, oldest first, over keep or older than max_idle_s (0: any age). */
void gw__pool_trim(struct gw_pool *p, unsigned keep, time_t max_idle_s);
/* Counts the age of p's idle connections from now. */
void gw__pool_touch(struct gw_pool *p);

#endif
