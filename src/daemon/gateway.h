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
 * The gateway follows reloads of the config (the manager's "reload" event):
 * added workloads are served at once, changed ones take their new limits
 * (max_concurrency, queue_max, queue_timeout) in place, and for a removed
 * one the queued requests are answered 503 while those in flight finish.
 *
 * vram_gateway_handle is the evhttp server's callback for what the gateway
 * relays: it serves /metrics and hands every other request to the REST API.
 */
#ifndef VRAM_GATEWAY_H
#define VRAM_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>

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
#define VRAM_GATEWAY_UPSTREAM_TIMEOUT_S 600    /* s an upstream may stay silent */
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
 * Creates the gateway over manager m, the API api (for relayed paths) and
 * metrics mx (may be NULL); all borrowed and outliving the gateway. token
 * (borrowed, copied; NULL or "" = none) is asked of clients on TCP
 * listeners. api_socket (copied) is where the evhttp server listens for
 * relayed requests. Returns 0 or -ENOMEM.
 */
int vram_gateway_new(struct event_base *base, struct vram_manager *m, struct vram_api *api,
		     struct vram_metrics *mx, const char *token, const char *api_socket,
		     struct vram_gateway **ret);
/*
 * Listens on "HOST:PORT" (clients must give the token, if any) or on a Unix
 * socket at path (mode 0600, trusted: no token). *ret_port (may be NULL)
 * receives the TCP port bound. Return 0 or -errno with a reason in err.
 */
int vram_gateway_listen_tcp(struct vram_gateway *gw, const char *hostport, unsigned *ret_port,
			    char *err, size_t err_size);
int vram_gateway_listen_unix(struct vram_gateway *gw, const char *path, char *err,
			     size_t err_size);
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

#endif
