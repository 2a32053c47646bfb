/* SPDX-License-Identifier: MIT */
/*
 * vramd's HTTP server on libevent's evhttp: listeners (TCP and a Unix
 * socket), limits on what a client may send, the bearer-token check, and the
 * reply helpers every route uses (JSON bodies, the JSON error shape
 * {"error": {"code": "...", "message": "..."}}).
 *
 * One evhttp instance per listener, so that each knows whether it is the
 * Unix socket (trusted by its 0600 permissions: no token asked) or TCP.
 * All of them hand requests to one callback.
 */
#ifndef VRAM_HTTP_H
#define VRAM_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct evhttp_request;
struct evhttp_connection;
struct vram_http;
struct evconnlistener;
struct vram_accept_guard;

/* A request body above this is refused by libevent itself (413, its own page). */
#define VRAM_HTTP_HARD_BODY_MAX (1024 * 1024)     /* bytes */
/* A request body above this is refused with a JSON 413 by vram_http_body. */
#define VRAM_HTTP_BODY_MAX (64 * 1024)            /* bytes */
#define VRAM_HTTP_HEADERS_MAX (16 * 1024)         /* bytes, request line + headers */
/*
 * The API server's limit on a head: what the gateway relays to it is a
 * client's head of up to VRAM_HTTP_HEADERS_MAX plus the fields the gateway
 * adds (Via, X-Forwarded-For, X-Vramd-Peer, Content-Length, Host; about
 * 1.3 KiB at most), and evhttp answers a head over its limit with an HTML
 * page, not JSON.
 */
#define VRAM_HTTP_RELAY_HEADERS_MAX (VRAM_HTTP_HEADERS_MAX + 8 * 1024) /* bytes */
#define VRAM_HTTP_IDLE_TIMEOUT_S 60               /* s a keep-alive connection may sit idle */
/* Replies: compact, and 0.455 rather than 0.45500000000000002. */
#define VRAM_HTTP_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/*
 * Called for every request that passed the limits and the token check.
 * trusted: it came through the Unix socket.
 */
typedef void (*vram_http_cb)(struct evhttp_request *req, bool trusted, void *arg);

struct vram_http_options {
	const char *token; /* borrowed, copied; NULL or "" = no token required */
	size_t body_max;   /* bytes; 0 = VRAM_HTTP_BODY_MAX */
};

/*
 * Creates a server on base (borrowed, outlives it). cb(arg) handles requests.
 * Returns 0 or -errno; *ret set on success (free with vram_http_free).
 */
int vram_http_new(struct event_base *base, const struct vram_http_options *opt, vram_http_cb cb,
		  void *arg, struct vram_http **ret);
/*
 * Frees the server: closes listeners and every open connection (their close
 * callbacks run, so waiters and subscriptions are dropped). Removes the Unix
 * socket file it created. Accepts NULL.
 */
void vram_http_free(struct vram_http *h);

/*
 * Listens on "HOST:PORT" (IPv4, IPv6 in brackets, or a name). Port 0 picks a
 * free port; *ret_port (may be NULL) receives the port bound. Returns 0 or
 * -errno with a reason in err.
 */
int vram_http_bind_tcp(struct vram_http *h, const char *hostport, unsigned *ret_port, char *err,
		       size_t err_size);
/*
 * Listens on a Unix socket at path with mode 0600. A stale socket file (no
 * one accepting on it) is removed first; a live one is -EADDRINUSE; a file
 * that is not a socket is -EEXIST. Returns 0 or -errno with a reason in err.
 */
int vram_http_bind_unix(struct vram_http *h, const char *path, char *err, size_t err_size);

/*
 * Opens a listening TCP socket (non-blocking, close-on-exec) on "HOST:PORT";
 * *ret_port (may be NULL) receives the port bound. Returns the socket (caller
 * closes) or -errno with a reason in err.
 */
int vram_http_listen_tcp(const char *hostport, unsigned *ret_port, char *err, size_t err_size);
/*
 * Opens a listening Unix socket at path, mode 0600, the way
 * vram_http_bind_unix describes. Returns the socket (caller closes and
 * unlinks path) or -errno with a reason in err.
 */
int vram_http_listen_unix(const char *path, char *err, size_t err_size);
/*
 * The same, then gives the socket file group gid (unless it is (gid_t)-1)
 * and mode (0600, 0660 or 0666): the socket is 0600 until both are set.
 */
int vram_http_listen_unix_shared(const char *path, mode_t mode, gid_t gid, char *err,
				 size_t err_size);
/*
 * Gives the socket file at path group gid (unless it is (gid_t)-1), then
 * mode. Returns 0 or -errno with a reason in err.
 */
int vram_http_unix_set_mode(const char *path, mode_t mode, gid_t gid, char *err, size_t err_size);
/*
 * Serves on fd (taken), a listening Unix socket at path handed over by the
 * image before a restart in place (upgrade.h), as vram_http_bind_unix
 * would have made it. Returns 0 or -errno with a reason in err.
 */
int vram_http_accept_unix(struct vram_http *h, int fd, const char *path, char *err,
			  size_t err_size);
/* The listening socket of the Unix listener (for the hand-over), or -ENOENT. */
int vram_http_unix_fd(const struct vram_http *h);

/*
 * Splits "HOST:PORT" / "[v6]:PORT" into host (NUL-terminated, brackets
 * removed) and port. Returns 0 or -EINVAL.
 */
/*
 * Out of descriptors (or memory), a listener whose accept fails would find
 * its socket readable again at once and spin. A guard installed on l makes
 * it rest 100 ms at a time instead (connections wait in the backlog) and
 * warns at most every 10 s, naming what ("gateway", "API"; static). At most
 * 16 guards at once. Returns NULL when out of memory or slots. Free it before
 * l, and before disabling l for good (a pause ends by enabling it).
 */
struct vram_accept_guard *vram_accept_guard_new(struct event_base *base, struct evconnlistener *l,
						const char *what);
void vram_accept_guard_free(struct vram_accept_guard *g); /* accepts NULL */

int vram_http_split_hostport(const char *hostport, char *host, size_t host_size, unsigned *ret_port);
/* True for 127.0.0.0/8, ::1 and "localhost". */
bool vram_http_host_is_loopback(const char *host);

/*
 * Checks an Authorization header against token: "Bearer <token>", compared in
 * constant time. token may hold several tokens, one a line: any one is accepted. A NULL or empty token accepts everything.
 */
bool vram_http_token_ok(const char *authorization, const char *token);
/* The same for len bytes at authorization (no NUL needed). */
bool vram_http_token_ok_n(const char *authorization, size_t len, const char *token);
/* True when the len bytes at given are token, or one line of it (not NULL), compared in
 * constant time. */
bool vram_http_token_equal(const char *given, size_t len, const char *token);

/* "Bad Request", … for a status; "Error" for one it does not know. */
const char *vram_http_reason(int status);
/* The error code string for a status: "bad_request", "not_found", … */
const char *vram_http_error_code(int status);

/*
 * Builds {"error": {"code": code, "message": message}} (new reference;
 * NULL on out of memory). code NULL = vram_http_error_code(status). A
 * message that is not UTF-8 (client text, or text cut inside a character)
 * has each bad byte replaced with U+FFFD.
 */
json_t *vram_http_error_json(int status, const char *code, const char *message);

/*
 * Sets *ret to the error shape for status (code NULL = from status) with
 * the formatted message, and returns status: `return vram_http_error_out(
 * ret, 404, "not_found", "no workload %s", name);` in a handler.
 */
int vram_http_error_out(json_t **ret, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/*
 * The HTTP status and error code for what the manager's calls return:
 * -ENOENT 404 not_found, -EBUSY 409 wrong_state, -ENOSPC 503 no_room,
 * -EINVAL 400 bad_request, anything else 500 internal.
 */
int vram_http_status_of_errno(int err);
const char *vram_http_code_of_errno(int err);

/*
 * Reads a duration field of a JSON body: a number of seconds (>= 0), a
 * string like "10m" or "never"/"off", or null (never). Returns 0 with
 * *ret_ms (VRAM_DURATION_NEVER for never), or 400 with msg naming the
 * field.
 */
int vram_http_duration_field(json_t *value, const char *field, uint64_t *ret_ms, char *msg,
			     size_t msg_size);

/* Sends body (borrowed) as JSON with status. A NULL body sends 500. */
void vram_http_reply_json(struct evhttp_request *req, int status, json_t *body);
/* Sends text as text/plain with status. */
void vram_http_reply_text(struct evhttp_request *req, int status, const char *text, size_t len);
/* Sends the JSON error shape; code NULL = from status. */
void vram_http_reply_error(struct evhttp_request *req, int status, const char *code, const char *fmt,
			   ...) __attribute__((format(printf, 4, 5)));

/*
 * Copies the request body into a NUL-terminated string (caller frees) and its
 * length into *ret_len. Returns 0, -E2BIG (over the body limit of the server
 * that got it) or -ENOMEM.
 */
int vram_http_body(struct evhttp_request *req, size_t body_max, char **ret_body, size_t *ret_len);

/*
 * Lets a request wait for an event that may take long (an action, an event
 * stream): drops the connection's idle timeout and watches it for the client
 * closing, so that closecb(arg) runs when it goes away (the request is then
 * freed by libevent and must not be touched). Call vram_http_unwatch before
 * replying.
 */
void vram_http_watch_close(struct evhttp_request *req,
			   void (*closecb)(struct evhttp_connection *, void *), void *arg);
/*
 * For close callbacks: when the client goes away in the middle of a reply
 * that was not finished (a waiting action, an event stream), libevent
 * detaches the request from the connection and leaves it to its user; this
 * frees it then. Otherwise (the server itself is closing the connection)
 * libevent frees it and this does nothing.
 */
void vram_http_release_detached(struct evhttp_request *req);

/* Undoes vram_http_watch_close; the connection gets its idle timeout back. */
void vram_http_unwatch(struct evhttp_request *req);

#endif
