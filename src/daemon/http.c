/* SPDX-License-Identifier: MIT */
/*
 * HTTP server plumbing on evhttp: listeners, limits, token, reply helpers.
 * See http.h. Routing lives in api.c; this file knows nothing of routes.
 */
#include "daemon/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "common/log.h"
#include "common/strutil.h"
#include "common/units.h"

#define VRAM_HTTP_MAX_LISTENERS 8
#define VRAM_HTTP_MAX_SINGLE_WRITE (256 * 1024) /* bytes handed to one write(2) */

struct listener {
	struct vram_http *owner;
	struct evhttp *evh; /* owned */
	int fd;             /* the listening socket, owned by evh */
	bool trusted;       /* Unix socket: no token asked */
	struct vram_accept_guard *guard; /* owned; NULL if it could not be made */
};

struct vram_http {
	struct event_base *base; /* borrowed */
	vram_http_cb cb;
	void *cb_arg;
	char *token; /* owned; NULL = none */
	size_t body_max;
	struct listener listeners[VRAM_HTTP_MAX_LISTENERS];
	size_t n_listeners;
	char *unix_path; /* owned; socket file to remove at free */
};

const char *vram_http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

const char *vram_http_error_code(int status)
{
	switch (status) {
	case 400: return "bad_request";
	case 401: return "unauthorized";
	case 403: return "forbidden";
	case 404: return "not_found";
	case 405: return "method_not_allowed";
	case 409: return "conflict";
	case 408: return "request_timeout";
	case 413: return "payload_too_large";
	case 415: return "unsupported_media_type";
	case 429: return "too_many_requests";
	case 431: return "headers_too_large";
	case 501: return "not_implemented";
	case 502: return "bad_gateway";
	case 503: return "unavailable";
	case 504: return "timeout";
	default: return status >= 500 ? "internal" : "error";
	}
}

/* bytes of an error message once repaired (an invalid byte becomes 3); longer ones are cut */
#define ERROR_MESSAGE_MAX 4096

json_t *vram_http_error_json(int status, const char *code, const char *message)
{
	/*
	 * Messages quote what clients sent (names, paths, header values), often
	 * cut to a length that may fall inside a character: jansson refuses
	 * text that is not UTF-8, so it is repaired here rather than lost.
	 */
	char clean[ERROR_MESSAGE_MAX];
	if (message && !vram_utf8_valid(message, strlen(message))) {
		vram_utf8_sanitize(clean, sizeof(clean), message, strlen(message));
		message = clean;
	}
	return json_pack("{s:{s:s, s:s}}", "error", "code", code ? code : vram_http_error_code(status),
			 "message", message ? message : vram_http_reason(status));
}

int vram_http_error_out(json_t **ret, int status, const char *code, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	*ret = vram_http_error_json(status, code, msg);
	return status;
}

int vram_http_status_of_errno(int err)
{
	switch (err) {
	case -ENOENT: return 404;
	case -EBUSY: return 409;
	case -ENOSPC: return 503;
	case -EINVAL: return 400;
	default: return 500;
	}
}

const char *vram_http_code_of_errno(int err)
{
	switch (err) {
	case -ENOENT: return "not_found";
	case -EBUSY: return "wrong_state";
	case -ENOSPC: return "no_room";
	case -EINVAL: return "bad_request";
	default: return "internal";
	}
}

int vram_http_duration_field(json_t *value, const char *field, uint64_t *ret_ms, char *msg,
			     size_t msg_size)
{
	if (json_is_null(value)) {
		*ret_ms = VRAM_DURATION_NEVER;
		return 0;
	}
	if (json_is_number(value)) {
		double s = json_number_value(value);
		if (!isfinite(s) || s < 0) {
			snprintf(msg, msg_size, "%s: expected a number of seconds >= 0, got %g", field, s);
			return 400;
		}
		if (s > (double)(VRAM_DURATION_MAX_MS / 1000)) {
			snprintf(msg, msg_size, "%s: out of range: at most " VRAM_DURATION_MAX_TEXT
				 " (%llu s), got %g", field,
				 (unsigned long long)(VRAM_DURATION_MAX_MS / 1000), s);
			return 400;
		}
		*ret_ms = (uint64_t)llround(s * 1000.0);
		return 0;
	}
	if (json_is_string(value)) {
		uint64_t ms;
		int r = vram_units_parse_duration_ms(json_string_value(value), &ms);
		if (r == -ERANGE) {
			snprintf(msg, msg_size,
				 "%s: out of range: at most " VRAM_DURATION_MAX_TEXT ", got \"%.64s\"",
				 field, json_string_value(value));
			return 400;
		}
		if (r < 0) {
			snprintf(msg, msg_size,
				 "%s: expected a duration like \"10m\", \"90s\", \"1h\" or \"never\", got \"%.64s\"",
				 field, json_string_value(value));
			return 400;
		}
		*ret_ms = ms;
		return 0;
	}
	snprintf(msg, msg_size, "%s: expected a number of seconds or a duration string like \"10m\"",
		 field);
	return 400;
}

static void free_dumped(const void *data, size_t len, void *arg)
{
	free((void *)data);
}

void vram_http_reply_json(struct evhttp_request *req, int status, json_t *body)
{
	char *text = body ? json_dumps(body, VRAM_HTTP_JSON_FLAGS) : NULL;
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	if (!text) {
		static const char oom[] =
			"{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
		evbuffer_add(out, oom, sizeof(oom) - 1);
		evhttp_send_reply(req, 500, vram_http_reason(500), NULL);
		return;
	}
	size_t len = strlen(text);
	text[len] = '\n'; /* replaces the NUL: the buffer is sent by length */
	if (evbuffer_add_reference(out, text, len + 1, free_dumped, NULL) < 0)
		free(text);
	evhttp_send_reply(req, status, vram_http_reason(status), NULL);
}

void vram_http_reply_text(struct evhttp_request *req, int status, const char *text, size_t len)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; charset=utf-8");
	evbuffer_add(evhttp_request_get_output_buffer(req), text, len);
	evhttp_send_reply(req, status, vram_http_reason(status), NULL);
}

void vram_http_reply_error(struct evhttp_request *req, int status, const char *code, const char *fmt,
			   ...)
{
	char message[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	json_t *body = vram_http_error_json(status, code, message);
	vram_http_reply_json(req, status, body);
	json_decref(body);
}

int vram_http_body(struct evhttp_request *req, size_t body_max, char **ret_body, size_t *ret_len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	if (len > body_max)
		return -E2BIG;
	char *body = malloc(len + 1);
	if (!body)
		return -ENOMEM;
	if (len && evbuffer_copyout(in, body, len) != (ev_ssize_t)len) {
		free(body);
		return -EIO;
	}
	body[len] = '\0';
	*ret_body = body;
	*ret_len = len;
	return 0;
}

bool vram_http_token_equal(const char *given, size_t len, const char *token)
{
	/*
	 * token holds one token a line (config.h). Each is compared in full,
	 * and all of them are, so the time does not tell which one matched or
	 * how far a guess got; the lengths are not secrets worth hiding.
	 */
	bool match = false;
	while (*token) {
		size_t tlen = strcspn(token, "\n");
		unsigned char diff = len != tlen;
		for (size_t i = 0; i < tlen; i++)
			diff |= (unsigned char)token[i] ^ (unsigned char)(i < len ? given[i] : 0);
		match |= diff == 0;
		token += tlen;
		if (*token == '\n')
			token++;
	}
	return match;
}

bool vram_http_token_ok_n(const char *authorization, size_t len, const char *token)
{
	if (!token || !*token)
		return true;
	if (!authorization || len < 7 || strncasecmp(authorization, "Bearer ", 7) != 0)
		return false;
	size_t skip = 7;
	while (skip < len && authorization[skip] == ' ')
		skip++;
	return vram_http_token_equal(authorization + skip, len - skip, token);
}

bool vram_http_token_ok(const char *authorization, const char *token)
{
	return vram_http_token_ok_n(authorization, authorization ? strlen(authorization) : 0, token);
}

int vram_http_split_hostport(const char *hostport, char *host, size_t host_size, unsigned *ret_port)
{
	if (!hostport || !*hostport)
		return -EINVAL;
	const char *colon;
	const char *hstart = hostport;
	size_t hlen;
	if (hostport[0] == '[') {
		const char *close = strchr(hostport, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hstart = hostport + 1;
		hlen = (size_t)(close - hstart);
		colon = close + 1;
	} else {
		colon = strrchr(hostport, ':');
		if (!colon || memchr(hostport, ':', (size_t)(colon - hostport)))
			return -EINVAL;
		hlen = (size_t)(colon - hostport);
	}
	if (hlen == 0 || hlen >= host_size)
		return -EINVAL;
	const char *p = colon + 1;
	if (!*p)
		return -EINVAL;
	unsigned long port = 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		port = port * 10 + (unsigned long)(*p - '0');
		if (port > 65535)
			return -EINVAL;
	}
	memcpy(host, hstart, hlen);
	host[hlen] = '\0';
	*ret_port = (unsigned)port;
	return 0;
}

bool vram_http_host_is_loopback(const char *host)
{
	if (!host)
		return false;
	if (strcmp(host, "localhost") == 0 || strcmp(host, "::1") == 0)
		return true;
	struct in_addr a;
	if (inet_pton(AF_INET, host, &a) == 1)
		return (ntohl(a.s_addr) >> 24) == 127;
	return false;
}

/*
 * Replies leave in one write; with Nagle's algorithm the last partial segment
 * of a large one waits for the client's delayed ACK (40 ms). evhttp 2.1 has
 * no hook at accept, so this runs for each request (a repeat is harmless
 * and cheap).
 */
static void tune_connection(struct evhttp_request *req, bool trusted)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
	int one = 1;
	if (fd >= 0 && !trusted)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A status reply is tens of KiB: one write, not libevent's 16 KiB pieces. */
	if (bev)
		bufferevent_set_max_single_write(bev, VRAM_HTTP_MAX_SINGLE_WRITE);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct listener *l = arg;
	struct vram_http *h = l->owner;
	tune_connection(req, l->trusted);
	if (!l->trusted && h->token) {
		const char *auth =
			evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
		if (!vram_http_token_ok(auth, h->token)) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
					  "Bearer");
			vram_http_reply_error(req, 401, NULL,
					      "this API needs \"Authorization: Bearer <token>\" (daemon.token)");
			return;
		}
	}
	h->cb(req, l->trusted, h->cb_arg);
}

int vram_http_new(struct event_base *base, const struct vram_http_options *opt, vram_http_cb cb,
		  void *arg, struct vram_http **ret)
{
	struct vram_http *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->base = base;
	h->cb = cb;
	h->cb_arg = arg;
	h->body_max = opt && opt->body_max ? opt->body_max : VRAM_HTTP_BODY_MAX;
	if (opt && opt->token && *opt->token) {
		h->token = strdup(opt->token);
		if (!h->token) {
			free(h);
			return -ENOMEM;
		}
	}
	*ret = h;
	return 0;
}

static struct listener *listener_add(struct vram_http *h, bool trusted)
{
	if (h->n_listeners == VRAM_HTTP_MAX_LISTENERS)
		return NULL;
	struct evhttp *evh = evhttp_new(h->base);
	if (!evh)
		return NULL;
	/* The hard limit; vram_http_body applies the smaller one with a JSON reply. */
	size_t hard = h->body_max > VRAM_HTTP_HARD_BODY_MAX ? h->body_max : VRAM_HTTP_HARD_BODY_MAX;
	evhttp_set_max_body_size(evh, (ev_ssize_t)hard);
	/* Above what the gateway relays: evhttp answers a longer head with an HTML page. */
	evhttp_set_max_headers_size(evh, VRAM_HTTP_RELAY_HEADERS_MAX);
	evhttp_set_timeout(evh, VRAM_HTTP_IDLE_TIMEOUT_S);
	/* Accept every method so that routes answer a wrong one with a JSON 405. */
	evhttp_set_allowed_methods(evh, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
						EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	struct listener *l = &h->listeners[h->n_listeners];
	*l = (struct listener){ .owner = h, .evh = evh, .trusted = trusted };
	evhttp_set_gencb(evh, on_request, l);
	return l;
}

static void listener_drop_last(struct vram_http *h)
{
	h->n_listeners--;
	vram_accept_guard_free(h->listeners[h->n_listeners].guard);
	h->listeners[h->n_listeners].guard = NULL;
	evhttp_free(h->listeners[h->n_listeners].evh);
	h->listeners[h->n_listeners].evh = NULL;
}

/* ---- accept errors ---- */

#define ACCEPT_PAUSE_MS 100 /* ms a listener rests after running out of descriptors */
#define ACCEPT_WARN_S 10    /* s between two warnings of one listener */
#define ACCEPT_GUARDS_MAX 16

struct vram_accept_guard {
	struct evconnlistener *l; /* borrowed */
	struct event *resume;     /* owned */
	const char *what;         /* borrowed, static: "gateway", "API" */
	time_t warned;            /* s, coarse monotonic: the last warning; 0: none yet */
};

/*
 * libevent hands an error callback the accept callback's argument, which
 * for evhttp's listeners is evhttp's own; guards are found by listener.
 */
static struct vram_accept_guard *guards[ACCEPT_GUARDS_MAX];

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct vram_accept_guard *g = arg;
	evconnlistener_enable(g->l);
}

/*
 * A failed accept leaves the connection in the backlog, so the listening
 * socket stays readable: out of descriptors (or memory), the listener rests
 * for ACCEPT_PAUSE_MS rather than spin on it, and warns at most every
 * ACCEPT_WARN_S.
 */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct vram_accept_guard *g = NULL;
	for (size_t i = 0; i < ACCEPT_GUARDS_MAX && !g; i++)
		if (guards[i] && guards[i]->l == l)
			g = guards[i];
	int e = EVUTIL_SOCKET_ERROR();
	if (!g)
		return;
	bool exhausted = e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	if (!g->warned || ts.tv_sec - g->warned >= ACCEPT_WARN_S) {
		g->warned = ts.tv_sec ? ts.tv_sec : 1;
		struct rlimit rl;
		char lim[32] = "?";
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
			snprintf(lim, sizeof(lim), "%llu", (unsigned long long)rl.rlim_cur);
		vram_warn("%s: accepting a connection failed: %s (descriptor limit %s)%s", g->what,
			  evutil_socket_error_to_string(e), lim,
			  exhausted ? "; new connections wait in the backlog meanwhile" : "");
	}
	if (exhausted) {
		evconnlistener_disable(l);
		struct timeval tv = { .tv_sec = 0, .tv_usec = ACCEPT_PAUSE_MS * 1000 };
		evtimer_add(g->resume, &tv);
	}
}

struct vram_accept_guard *vram_accept_guard_new(struct event_base *base, struct evconnlistener *l,
						const char *what)
{
	size_t slot = 0;
	while (slot < ACCEPT_GUARDS_MAX && guards[slot])
		slot++;
	if (slot == ACCEPT_GUARDS_MAX)
		return NULL;
	struct vram_accept_guard *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->l = l;
	g->what = what;
	g->resume = evtimer_new(base, on_accept_resume, g);
	if (!g->resume) {
		free(g);
		return NULL;
	}
	guards[slot] = g;
	evconnlistener_set_error_cb(l, on_accept_error);
	return g;
}

void vram_accept_guard_free(struct vram_accept_guard *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < ACCEPT_GUARDS_MAX; i++)
		if (guards[i] == g)
			guards[i] = NULL;
	evconnlistener_set_error_cb(g->l, NULL);
	event_free(g->resume);
	free(g);
}

int vram_http_listen_tcp(const char *hostport, unsigned *ret_port, char *err, size_t err_size)
{
	char host[256], portstr[8];
	unsigned port;
	if (vram_http_split_hostport(hostport, host, sizeof(host), &port) < 0) {
		snprintf(err, err_size, "bad listen address \"%s\": expected HOST:PORT", hostport);
		return -EINVAL;
	}
	snprintf(portstr, sizeof(portstr), "%u", port);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	int g = getaddrinfo(host, portstr, &hints, &ai);
	if (g != 0) {
		snprintf(err, err_size, "cannot listen on %s: %s", hostport, gai_strerror(g));
		return -EADDRNOTAVAIL;
	}
	int e = EADDRNOTAVAIL;
	int fd = -1;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		snprintf(err, err_size, "cannot listen on %s: %s", hostport, strerror(e));
		return -e;
	}
	if (ret_port) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		*ret_port = port;
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
			if (ss.ss_family == AF_INET)
				*ret_port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
			else if (ss.ss_family == AF_INET6)
				*ret_port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		}
	}
	return fd;
}

/* Removes a socket file nobody accepts on. Returns 0 (gone or removed) or -errno. */
static int remove_stale_socket(const char *path, char *err, size_t err_size)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		int e = errno;
		if (e == ENOENT)
			return 0;
		snprintf(err, err_size, "cannot use %s: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, err_size, "%s exists and is not a socket", path);
		return -EEXIST;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int e = errno;
		snprintf(err, err_size, "socket: %s", strerror(e));
		return -e;
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	close(fd);
	if (r == 0) {
		snprintf(err, err_size, "%s is in use: another vramd is running", path);
		return -EADDRINUSE;
	}
	if (e != ECONNREFUSED && e != ENOENT) {
		snprintf(err, err_size, "cannot probe %s: %s", path, strerror(e));
		return -e;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		snprintf(err, err_size, "cannot remove stale socket %s: %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

int vram_http_listen_unix(const char *path, char *err, size_t err_size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen = strlen(path);
	if (plen == 0 || plen >= sizeof(sa.sun_path)) {
		snprintf(err, err_size, "socket path \"%s\" is empty or longer than %zu bytes", path,
			 sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, plen + 1);
	int r = remove_stale_socket(path, err, err_size);
	if (r < 0)
		return r;

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		snprintf(err, err_size, "socket: %s", strerror(errno));
		return r;
	}
	/* Created 0600 from the start: no window where others could connect. */
	mode_t old = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	umask(old);
	if (r < 0) {
		snprintf(err, err_size, "cannot bind %s: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	if (chmod(path, 0600) < 0 || listen(fd, SOMAXCONN) < 0) {
		e = errno;
		snprintf(err, err_size, "cannot listen on %s: %s", path, strerror(e));
		unlink(path);
		close(fd);
		return -e;
	}
	return fd;
}

int vram_http_unix_set_mode(const char *path, mode_t mode, gid_t gid, char *err, size_t err_size)
{
	/* the group first: a 0660 socket with the wrong group would let that group in */
	if ((gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) || chmod(path, mode) < 0) {
		int e = errno;
		snprintf(err, err_size, "cannot give %s group %lu and mode %04o: %s", path,
			 (unsigned long)gid, (unsigned)mode, strerror(e));
		return -e;
	}
	return 0;
}

int vram_http_listen_unix_shared(const char *path, mode_t mode, gid_t gid, char *err,
				 size_t err_size)
{
	int fd = vram_http_listen_unix(path, err, err_size);
	if (fd < 0 || (mode == 0600 && gid == (gid_t)-1))
		return fd;
	int r = vram_http_unix_set_mode(path, mode, gid, err, err_size);
	if (r < 0) {
		unlink(path);
		close(fd);
		return r;
	}
	return fd;
}

/* Hands the listening socket fd (taken) to a new evhttp instance. */
static int listener_accept(struct vram_http *h, int fd, bool trusted, char *err, size_t err_size)
{
	struct listener *l = listener_add(h, trusted);
	if (!l) {
		snprintf(err, err_size, "out of memory or too many listeners");
		close(fd);
		return -ENOMEM;
	}
	h->n_listeners++;
	struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(l->evh, fd);
	if (!bound) {
		int e = errno ? errno : EINVAL;
		snprintf(err, err_size, "cannot accept connections: %s", strerror(e));
		listener_drop_last(h);
		close(fd);
		return -e;
	}
	l->fd = fd;
	/* without it the listener would still work, only spin when out of descriptors */
	l->guard = vram_accept_guard_new(h->base, evhttp_bound_socket_get_listener(bound), "API");
	return 0;
}

int vram_http_bind_tcp(struct vram_http *h, const char *hostport, unsigned *ret_port, char *err,
		       size_t err_size)
{
	int fd = vram_http_listen_tcp(hostport, ret_port, err, err_size);
	return fd < 0 ? fd : listener_accept(h, fd, false, err, err_size);
}

int vram_http_accept_unix(struct vram_http *h, int fd, const char *path, char *err,
			  size_t err_size)
{
	(void)evutil_make_socket_nonblocking(fd); /* made so; an inherited one is checked only */
	int r = listener_accept(h, fd, true, err, err_size);
	if (r < 0) {
		unlink(path);
		return r;
	}
	free(h->unix_path);
	h->unix_path = strdup(path);
	return 0;
}

int vram_http_bind_unix(struct vram_http *h, const char *path, char *err, size_t err_size)
{
	int fd = vram_http_listen_unix(path, err, err_size);
	if (fd < 0)
		return fd;
	return vram_http_accept_unix(h, fd, path, err, err_size);
}

int vram_http_unix_fd(const struct vram_http *h)
{
	for (size_t i = 0; i < h->n_listeners; i++)
		if (h->listeners[i].trusted)
			return h->listeners[i].fd;
	return -ENOENT;
}

void vram_http_free(struct vram_http *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n_listeners; i++) {
		vram_accept_guard_free(h->listeners[i].guard);
		evhttp_free(h->listeners[i].evh);
	}
	if (h->unix_path)
		unlink(h->unix_path);
	free(h->unix_path);
	free(h->token);
	free(h);
}

void vram_http_watch_close(struct evhttp_request *req,
			   void (*closecb)(struct evhttp_connection *, void *), void *arg)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	if (!evcon)
		return;
	evhttp_connection_set_closecb(evcon, closecb, arg);
	/*
	 * evhttp stops reading once a request is in, so a client that goes away
	 * is not noticed until the reply. Read again, with no read callback (data
	 * stays queued, at most 64 KiB, for the next request) and no timeout:
	 * an EOF then reaches evhttp's event callback, which frees the
	 * connection and runs closecb.
	 */
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	bufferevent_data_cb rcb, wcb;
	bufferevent_event_cb ecb;
	void *cbarg;
	bufferevent_getcb(bev, &rcb, &wcb, &ecb, &cbarg);
	bufferevent_setcb(bev, NULL, wcb, ecb, cbarg);
	bufferevent_set_timeouts(bev, NULL, NULL);
	bufferevent_setwatermark(bev, EV_READ, 0, 64 * 1024);
	bufferevent_enable(bev, EV_READ);
}

void vram_http_release_detached(struct evhttp_request *req)
{
	if (!evhttp_request_get_connection(req))
		evhttp_request_free(req);
}

void vram_http_unwatch(struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	if (!evcon)
		return;
	evhttp_connection_set_closecb(evcon, NULL, NULL);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	bufferevent_disable(bev, EV_READ);
	bufferevent_setwatermark(bev, EV_READ, 0, 0);
	evhttp_connection_set_timeout(evcon, VRAM_HTTP_IDLE_TIMEOUT_S);
}
