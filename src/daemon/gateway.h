/* SPDX-License-Identifier: MIT */
/*
 * The gateway: vramd's HTTP front end and a reverse proxy in front of the
 * workloads, on the daemon's loop. It owns the public listeners (TCP and the
 * control socket) and speaks HTTP/1.1 itself (h1.c), so that a proxied
 * request costs one read and one write on each side:
 *  - /v1/... goes to the workload that lists the request's OpenAI "model"
 *    (JSON body, urlencoded or multipart form, or ?model=); GET /v1/models
 *    lists every model without starting anything;
 *  - /w/{name}/... goes to a workload by name, with the prefix removed;
 *  - everything else (the REST API, /mcp, /metrics, the dashboard) is relayed
 *    over kept-alive connections to the daemon's evhttp server, which listens
 *    on a private Unix socket only the gateway uses.
 * A request for a workload that is not ready waits in a bounded per-workload
 * queue while the manager starts or restores it. Responses stream through as
 * they arrive, with backpressure; a client that goes away cancels its
 * upstream request.
 *
 * Before anything else, the head of each request passes the front door:
 * the Host and Origin rules for browsers (access.h), the token on TCP, and
 * for the API a known method and JSON bodies; a refused request is answered
 * and its connection closed without reading its body. The gateway tells the
 * API who asks in one header (peer.h) and never hands vramd's token or that
 * header to a workload.
 *
 * The gateway follows reloads of the config (the manager's "reload" event):
 * added workloads are served at once, changed ones take their new limits
 * (max_concurrency, queue_max, queue_timeout, first_byte_timeout,
 * stream_timeout) in place, and for a removed
 * one the queued requests are answered 503 while those in flight finish.
 *
 * vram_gateway_handle is the evhttp server's callback for what the gateway
 * relays: it serves /metrics and hands every other request to the REST API.
 */
#ifndef VRAM_GATEWAY_H
#define VRAM_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct evhttp_request;
struct vram_api;
struct vram_manager;
struct vram_metrics;
struct vram_gateway;

#define VRAM_GATEWAY_BODY_MAX (16u * 1024 * 1024)         /* bytes of a request body */
#define VRAM_GATEWAY_RESPONSE_MAX (4ull * 1024 * 1024 * 1024) /* bytes of one upstream response */
#define VRAM_GATEWAY_HEADERS_COUNT_MAX 100                 /* request or response header lines */
#define VRAM_GATEWAY_UP_HEADERS_MAX (64 * 1024)           /* bytes of upstream status + headers */
#define VRAM_GATEWAY_BACKLOG_MAX (1024 * 1024) /* bytes queued to a client before upstream reads pause */
#define VRAM_GATEWAY_CLIENT_STALL_S 600 /* s a client may leave a response unread before it is cut */
/*
 * Idle upstream connections kept per workload. The pool only grows to the
 * peak of concurrent requests; below this cap that peak is kept (a lower
 * cap closed and reopened connections on every request once more were in
 * flight), and connections unused for VRAM_GATEWAY_UPSTREAM_IDLE_S close.
 */
#define VRAM_GATEWAY_IDLE_CONNS_MAX 256
#define VRAM_GATEWAY_UPSTREAM_IDLE_S 30 /* s an idle upstream connection is kept */
#define VRAM_GATEWAY_RETRY_AFTER_S 1           /* Retry-After on 503 and 429 */
#define VRAM_GATEWAY_MODEL_MAX 256             /* bytes of a model name */
#define VRAM_GATEWAY_CLIENTS_MAX 4096          /* client connections at once */
/*
 * Of those, kept for the control socket: TCP clients, anonymous on a
 * loopback listener, may hold the rest, never these, so that the owner's
 * vramctl always gets in. One address may hold VRAM_GATEWAY_CLIENTS_PER_ADDR_MAX
 * TCP connections. A connection over either limit is closed as it is
 * accepted.
 */
#define VRAM_GATEWAY_UNIX_RESERVED 256
#define VRAM_GATEWAY_CLIENTS_PER_ADDR_MAX 1024
/*
 * Bytes of buffer an idle client connection keeps, whatever it carried:
 * buffers a large request or response grew go back to this size when it
 * ends, and a client sending ahead while its request is served is read no
 * further than this.
 */
#define VRAM_GATEWAY_IDLE_BUF_MAX (64 * 1024)
/* bytes of a body relayed to the REST API (whose own limit is smaller; it answers that in JSON) */
#define VRAM_GATEWAY_API_BODY_MAX (1024 * 1024)
/*
 * The request bodies TCP clients may have buffered in the gateway at once,
 * over all connections (bytes). A body over VRAM_GATEWAY_SMALL_BODY_MAX
 * counts from its head (its Content-Length; a chunked one as it arrives)
 * until its request ends; a body that does not fit gets 503 "busy" with
 * Retry-After, before it is read. Bodies on the control socket do not count.
 * The environment variable VRAMD_BODY_BUDGET (bytes, read when vramd
 * starts) replaces the value, for tests and for operators who want another.
 */
#define VRAM_GATEWAY_BODY_BUDGET (256ull * 1024 * 1024)
#define VRAM_GATEWAY_SMALL_BODY_MAX (64 * 1024) /* bytes: bodies up to this do not count */

/*
 * Creates the gateway over manager m, the API api (for relayed paths) and
 * metrics mx (may be NULL); all borrowed and outliving the gateway. token
 * (borrowed, copied; NULL or "" = none) is asked of clients on TCP
 * listeners. api_socket (copied) is where the evhttp server listens for
 * relayed requests. Returns 0 or -ENOMEM.
 */
int vram_gateway_new(struct event_base *base, struct vram_manager *m, struct vram_api *api,
		     struct vram_metrics *mx, const char *token, const char *api_socket,
		     struct vram_gateway **ret);
/* Writes a line per request to al (borrowed, outlives the gateway; NULL: none). */
struct vram_accesslog;
void vram_gateway_set_access_log(struct vram_gateway *gw, struct vram_accesslog *al);
/*
 * Listens on "HOST:PORT" (clients must give the token, if any) or on a Unix
 * socket at path (mode 0600, trusted: no token). *ret_port (may be NULL)
 * receives the TCP port bound. Return 0 or -errno with a reason in err.
 */
int vram_gateway_listen_tcp(struct vram_gateway *gw, const char *hostport, unsigned *ret_port,
			    char *err, size_t err_size);
int vram_gateway_listen_unix(struct vram_gateway *gw, const char *path, char *err,
			     size_t err_size);
/* The same with the socket file's mode and group (vram_http_listen_unix_shared). */
int vram_gateway_listen_unix_shared(struct vram_gateway *gw, const char *path, mode_t mode,
				    gid_t gid, char *err, size_t err_size);
/*
 * The same on a listening socket handed over by the image before a
 * restart in place (upgrade.h), instead of binding: fd (taken) is a TCP
 * socket bound for hostport, or the control socket at path, whose file
 * then gets mode and gid as the config has them now. Same returns.
 */
int vram_gateway_listen_tcp_fd(struct vram_gateway *gw, int fd, const char *hostport,
			       unsigned *ret_port, char *err, size_t err_size);
int vram_gateway_listen_unix_fd(struct vram_gateway *gw, int fd, const char *path, mode_t mode,
				gid_t gid, char *err, size_t err_size);
/* The listeners, to hand over: how many, and the socket of the i-th (*ret_unix: the control socket). */
size_t vram_gateway_listener_count(const struct vram_gateway *gw);
int vram_gateway_listener_fd(const struct vram_gateway *gw, size_t i, bool *ret_unix);

/*
 * The drain of a restart in place (upgrade.h). drain_begin: every listener
 * stops accepting and its socket stays open, so that new connections wait
 * in the kernel's backlog for the next image; every answer from now on
 * says "Connection: close" and ends its connection, also one to a request
 * that arrives on a kept-alive connection during the drain. A response
 * whose head went out before goes on to its end (streams too).
 * drain_left: what is still going on (requests waiting or in flight, half
 * read, answers not yet handed to the kernel); a connection idle for
 * idle_grace_ms is closed (its write side shut) and counts no more.
 * drain_cut: the drain's time is up: the requests left are answered 503
 * "restarting" with Retry-After, responses under way are cut, idle and
 * half-read connections closed. drain_end: no restart after all: accepting
 * again, keep-alive as before.
 */
void vram_gateway_drain_begin(struct vram_gateway *gw);
size_t vram_gateway_drain_left(struct vram_gateway *gw, uint64_t idle_grace_ms);
void vram_gateway_drain_cut(struct vram_gateway *gw);
void vram_gateway_drain_end(struct vram_gateway *gw);
/*
 * Answers every waiting request 503 and cancels every request in flight
 * (closing its client); stops accepting. Call before the manager shuts down.
 * Idempotent.
 */
void vram_gateway_close_clients(struct vram_gateway *gw);
/* Calls vram_gateway_close_clients, closes every connection and frees. Accepts NULL. */
void vram_gateway_free(struct vram_gateway *gw);

/* The request callback for vram_http_new (arg is the struct vram_gateway). */
void vram_gateway_handle(struct evhttp_request *req, bool trusted, void *arg);

/*
 * Finds the OpenAI "model" of a request: in a JSON object body, an
 * application/x-www-form-urlencoded or multipart/form-data body (by
 * content_type, may be NULL), else in the query string (may be NULL).
 * Copies it into ret (NUL-terminated). Returns 0, -ENOENT when there is
 * none, -E2BIG when it does not fit in size.
 */
int vram_gateway_find_model(const char *content_type, const char *body, size_t len,
			    const char *query, char *ret, size_t size);

/*
 * An alias's rewrite: a copy of the JSON object body (len bytes) with the
 * string value of each of its top-level "model" keys replaced by upstream
 * (UTF-8), every other byte as sent. *ret_body (caller frees, NUL after)
 * gets at most max bytes. Returns 0, -ENOENT when body is no JSON object
 * with a top-level string "model" (a form, a query: sent as it is),
 * -E2BIG past max, -EINVAL for an upstream jansson cannot encode, -ENOMEM.
 */
int vram_gateway_rewrite_model(const char *body, size_t len, const char *upstream, size_t max,
			       char **ret_body, size_t *ret_len);

#endif
