/* SPDX-License-Identifier: MIT */
/*
 * The front door's rules for browsers: which requests a web page may make
 * of vramd, decided from a request head before anything else is done with
 * it (before the token, before the body is read). The gateway applies them
 * to every route: the REST API, /mcp, /metrics, /v1 and /w.
 *
 *  - Host (DNS rebinding): a page on attacker.example that rebinds its name
 *    to 127.0.0.1 reaches vramd as a same-origin page, but its requests
 *    still say "Host: attacker.example". On TCP the Host must name the
 *    listen address (the host of daemon.listen, or the address the
 *    connection came in on, with the listen port), a loopback name
 *    (localhost, 127.x.x.x, [::1]; any port, as through an SSH tunnel) or
 *    an entry of daemon.allowed_hosts. On the control socket no Host is
 *    checked: no browser reaches a Unix socket, and clients name all sorts
 *    of hosts there (vramctl says localhost, others the socket's path).
 *  - Origin (cross-site requests): a browser names the page's origin on
 *    every cross-origin request and on same-origin ones that change state.
 *    A request with an Origin is refused unless it is vramd's own
 *    (http://<listen host or loopback name>:<listen port>) or listed in
 *    daemon.cors.origins. Allowed cross origins get CORS headers, and their
 *    preflights (OPTIONS with Access-Control-Request-Method) are answered
 *    here, so that neither the API nor a workload decides on its own. This
 *    holds on the control socket too (a browser bridged to it is a browser).
 *  - Content-Type (API routes): a state-changing request with a body must
 *    say application/json. A web page can send text/plain, form or
 *    multipart bodies without a preflight, never JSON, so this makes any
 *    cross-site attempt that an Origin check missed a preflighted one.
 *    Body-less POSTs (curl -X POST .../api/gpu/offload) need nothing.
 *
 * Everything here is a pure function of the head, the listener and the
 * config: no I/O, no allocation.
 */
#ifndef VRAM_ACCESS_H
#define VRAM_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon/h1.h"

struct vram_config;

#define VRAM_ACCESS_ORIGIN_MAX 272   /* bytes of an origin kept, NUL included: scheme, 253-byte host, port */
#define VRAM_ACCESS_HEADERS_MAX 1536 /* bytes of the CORS header lines of one response */
#define VRAM_ACCESS_MAX_AGE_S 600    /* s a browser may cache a preflight's answer */

/* Where a request came in. */
struct vram_access_listener {
	bool unix_socket;       /* the control socket: no Host check */
	const char *host;       /* borrowed; daemon.listen's host without brackets ("127.0.0.1",
				 * "0.0.0.0", "gpu1.lan"); NULL when there is no TCP listener */
	unsigned port;          /* daemon.listen's port (as bound) */
	const char *local_addr; /* borrowed, may be NULL; the numeric address the TCP connection
				 * came in on (for a wildcard listen address) */
};

enum vram_access_verdict {
	VRAM_ACCESS_PASS,      /* go on with the request */
	VRAM_ACCESS_PREFLIGHT, /* an allowed CORS preflight: answer 204 with vram_access_preflight_headers */
	VRAM_ACCESS_REFUSE,    /* answer status with code and message, and serve nothing */
};

struct vram_access {
	enum vram_access_verdict verdict;
	int status;        /* REFUSE: 400, 403, 415, 501 */
	const char *code;  /* REFUSE: static, e.g. "forbidden_host" */
	char message[768]; /* REFUSE: what, and which key or header would change it */
	/* An allowed Origin to echo in Access-Control-Allow-Origin; "" = none. */
	char origin[VRAM_ACCESS_ORIGIN_MAX];
};

/*
 * The Host and Origin rules, and preflights, for a request with head h on
 * listener l under cfg (borrowed: its daemon.allowed_hosts and
 * daemon.cors.origins). Fills *ret; ret->origin is set whenever the request
 * carried an allowed Origin (PASS or PREFLIGHT).
 */
void vram_access_check(const struct vram_access_listener *l, const struct vram_config *cfg,
		       const struct vram_h1_head *h, struct vram_access *ret);

/*
 * The rules of the routes relayed to the REST API (everything but /v1 and
 * /w): a method the API knows (else 501), and application/json for a body
 * of a state-changing method (else 415). Returns true when the request may
 * go on; otherwise fills ret's verdict, status, code and message.
 */
bool vram_access_check_api(const struct vram_h1_head *h, struct vram_access *ret);

/*
 * Writes the header lines ("Name: value\r\n"...) that a response to a
 * request from origin (allowed, see vram_access_check) carries:
 * Access-Control-Allow-Origin, Vary, Access-Control-Expose-Headers.
 * Writes "" for an empty origin. Returns the length, or -ENOSPC.
 */
int vram_access_cors_headers(const char *origin, char *buf, size_t size);

/*
 * The same for the 204 answer to a preflight with head h: also the methods
 * and headers allowed (those the page asked for in
 * Access-Control-Request-Headers, besides Authorization, Content-Type,
 * X-Api-Key, Mcp-Session-Id and Mcp-Protocol-Version) and Max-Age.
 */
int vram_access_preflight_headers(const char *origin, const struct vram_h1_head *h, char *buf,
				  size_t size);

/* True for a header whose name starts Access-Control-: vramd alone sets those. */
bool vram_access_is_cors_header(struct vram_h1_span name);

#endif
