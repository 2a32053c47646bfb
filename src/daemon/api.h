/* SPDX-License-Identifier: MIT */
/*
 * The REST API: a table of routes {method, path pattern, handler} over the
 * manager. A handler returns an HTTP status and fills a JSON body, or
 * returns 0 when it has taken the request over (an action that waits for
 * its outcome, the event stream, a text reply).
 *
 * Routes (docs/api.md has each with an example):
 *   GET  /healthz
 *   GET  /api/status
 *   GET  /api/workloads/{name}
 *   POST /api/workloads/{name}/start|stop|offload|restore|release|park  [?wait=0]
 *   PUT  /api/workloads/{name}/idle      {"offload_after": "10m", "release_after": 3600,
 *                                         "park_after": "1h"}
 *   GET  /api/workloads/{name}/logs      [?tail=N]
 *   GET  /api/events                     server-sent events
 *   POST /api/daemon/restart             restart in place (GET: where it stands)
 *   GET  /api/gpu/status, POST /api/gpu/offload|release|timeout   (TTS-style)
 *   POST /mcp (GET, DELETE)              the MCP server, see mcp.h
 *   GET  /, /ui/{file}                   the dashboard's files (web.h)
 *   GET  /api/history, /api/decisions    GPU memory over time (history.h), the last
 *                                        placements and evictions (decisions.h)
 *
 * A call that is refused (bad JSON, unknown field, unknown workload, wrong
 * state) changes nothing.
 *
 * Who asks: the gateway sends every request on with the client's identity
 * in the X-Vramd-Peer header (peer.h); a request without it came to the
 * private API socket directly, which only vramd's own user can open, and
 * counts as vramd itself on the control socket; one whose header does not
 * parse is refused (400). The identity decides whom a command runs as
 * (runas.h), who may act on an ad-hoc workload (its owner, root, token
 * holders), and which share of the limits a client draws from: clients on
 * the control socket have VRAM_WAITACT_UNIX_RESERVED waiting actions
 * (waitact.h) and VRAM_API_SSE_UNIX_RESERVED event streams that TCP clients
 * cannot take, so that anonymous clients never lock the machine's owner out.
 *
 * Actions that wait, who may act, and the TTS-style routes' logic are in
 * waitact.c, which the MCP server (mcp.h) shares; the API owns both.
 */
#ifndef VRAM_API_H
#define VRAM_API_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/manager.h"
#include "daemon/peer.h"

struct event_base;
struct evhttp_request;
struct vram_manager;
struct vram_api;
struct vram_api_call;

#define VRAM_API_SSE_MAX 64            /* event-stream clients at once */
#define VRAM_API_SSE_UNIX_RESERVED 16  /* of them only for clients on the control socket */
#define VRAM_API_SSE_BACKLOG_MAX (1024 * 1024) /* bytes queued to one slow client before it is dropped */
#define VRAM_API_SSE_KEEPALIVE_S 15    /* s between keep-alive comments */
#define VRAM_API_LOG_TAIL_DEFAULT 100  /* lines */
#define VRAM_API_LOG_TAIL_MAX 10000    /* lines */
#define VRAM_API_LOG_BYTES_MAX (1024 * 1024) /* bytes of a log reply */
#define VRAM_API_STATUS_MAX_AGE_MS 1000 /* ms one /api/status text may be served */

enum vram_api_method {
	VRAM_API_GET = 1 << 0,
	VRAM_API_POST = 1 << 1,
	VRAM_API_PUT = 1 << 2,
	VRAM_API_DELETE = 1 << 3,
	VRAM_API_OTHER = 1 << 4,
};

/*
 * Returns an HTTP status and sets *ret_body (a new reference, sent as JSON),
 * or returns 0 when the handler replies itself (now or later).
 */
typedef int (*vram_api_handler)(struct vram_api_call *call, json_t **ret_body);

struct vram_api_route {
	enum vram_api_method method;
	const char *pattern; /* "/api/workloads/{name}/start": {name} matches one path segment */
	vram_api_handler handler;
	int arg; /* handler-specific (the action of an action route) */
};

#define VRAM_API_NAME_MAX 255 /* bytes of a {name} segment, decoded */

struct vram_api_match {
	const struct vram_api_route *route; /* borrowed, static */
	char name[VRAM_API_NAME_MAX + 1];   /* the {name} segment, URL-decoded; "" if none */
};

/*
 * Finds the route for method and path (no query string). Returns 0 and fills
 * *ret; -ENOENT when no pattern matches the path (404); -EPERM when a pattern
 * matches but not for this method (405), with the methods that would be
 * allowed in *ret_allowed (a mask of enum vram_api_method; may be NULL).
 * HEAD matches as GET.
 */
int vram_api_route_find(enum vram_api_method method, const char *path, struct vram_api_match *ret,
			unsigned *ret_allowed);

/* Writes "GET, POST" for a mask into buf; returns buf. */
char *vram_api_methods_format(unsigned mask, char *buf, size_t size);

/*
 * Parses a request body as a JSON object. An empty body gives *ret_obj NULL
 * when !required. Returns 0, or 400 / 413 with a message in msg ("invalid
 * JSON at line 1, column 9: ...", "the body must be a JSON object").
 */
int vram_api_parse_object(const char *body, size_t len, bool required, json_t **ret_obj, char *msg,
			  size_t msg_size);

/*
 * Checks that obj has only keys from allowed (NULL-terminated). Returns 0 or
 * 400 with msg naming the first unknown key.
 */
int vram_api_check_fields(json_t *obj, const char *const *allowed, char *msg, size_t msg_size);

/*
 * Creates the API over manager m (borrowed; outlives the API until
 * vram_api_free). Returns 0 or -ENOMEM.
 */
int vram_api_new(struct event_base *base, struct vram_manager *m, struct vram_api **ret);
/*
 * Ends every event stream (a last chunk) and cancels every waiting action's
 * waiter, replying 503 to its client. Call before the manager shuts down its
 * workloads' streams for good, or at exit. Idempotent.
 */
void vram_api_close_clients(struct vram_api *api);
/* Calls vram_api_close_clients and frees. Accepts NULL. */
void vram_api_free(struct vram_api *api);
/*
 * Ends every event stream (a last chunk), as a restart in place drains:
 * a stream never ends by itself, and its client reconnects to the next
 * image.
 */
void vram_api_end_streams(struct vram_api *api);
/*
 * Offers restart in place at /api/daemon/restart through up (borrowed,
 * outlives the API, or NULL). Without it the route answers 503.
 */
struct vram_upgrade;
void vram_api_set_upgrade(struct vram_api *api, struct vram_upgrade *up);

/* The request callback for vram_http_new (arg is the struct vram_api). */
void vram_api_handle(struct evhttp_request *req, bool trusted, void *arg);

/*
 * The body GET /api/status answers with (JSON and a newline), for the
 * gateway's front end to send without a trip through evhttp. The text is
 * borrowed: valid until control goes back to the event loop. Returns 0 or
 * -ENOMEM.
 */
int vram_api_status_text(struct vram_api *api, const char **ret_text, size_t *ret_len);

#endif
