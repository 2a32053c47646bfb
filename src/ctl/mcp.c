/* SPDX-License-Identifier: MIT */
/*
 * vramctl mcp: stdio to the daemon's /mcp; see mcp.h. One libevent loop:
 * stdin is read through a bufferevent, each message becomes an exchange (a
 * connection of its own to the daemon, Connection: close, so that its reply
 * ends at end of stream), and each reply is written to stdout whole, as one
 * line, when its exchange ends.
 */
#include "ctl/mcp.h"

#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/base64.h"
#include "common/buf.h"
#include "common/list.h"
#include "ctl/ctl.h"

#define META_VERSION_KEY "io.modelcontextprotocol/protocolVersion"
#define JSONRPC_INVALID_REQUEST (-32600)
#define JSONRPC_INTERNAL_ERROR (-32603)
#define HEADERS_MAX 8192      /* bytes of the MCP headers of one request */
#define NAME_HEADER_MAX 1024  /* bytes of a name mirrored into Mcp-Name; a longer one is not */
#define DELETE_TIMEOUT_MS 5000 /* ms the session's DELETE may take at the end */

struct bridge;

/* A line read while initialize was in flight, waiting for its session. */
struct held {
	struct vram_list link; /* in b->held */
	size_t len;   /* bytes, without the NUL */
	char line[];  /* len bytes and a NUL */
};

/* One message on its way to the daemon, and its reply coming back. */
struct exchange {
	struct bridge *b;
	struct vram_list link;       /* in b->exchanges */
	json_t *id;                  /* the request's id (own reference); NULL for a notification */
	bool initialize;
	bool connected;
	const struct addrinfo *addr; /* TCP: the address being tried (in b->addrs) */
	struct bufferevent *bev;     /* the connection to the daemon, or NULL */
	struct event *deadline;      /* timeout_ms after the start, or NULL */
	struct vram_buf request;     /* the HTTP request, kept to try the next address */
	struct vram_buf reply;       /* the HTTP reply so far; at most VRAM_CLIENT_RESPONSE_MAX */
};

struct bridge {
	struct event_base *base;
	const struct vram_client_url *url; /* borrowed */
	const char *token;                 /* borrowed, may be NULL */
	int timeout_ms;                    /* ms per exchange, 0 = none */
	int out_fd;
	struct bufferevent *in;
	struct addrinfo *addrs;            /* TCP: the daemon's addresses, resolved once */
	char resolve_error[300];           /* TCP: why there are none */
	struct vram_list exchanges;        /* struct exchange in flight, newest first */
	size_t n_exchanges;
	struct vram_list held;             /* struct held waiting for initialize, oldest first */
	size_t n_held;
	bool initializing;                 /* an initialize is in flight */
	bool discarding;                   /* inside a line over VRAM_CTL_MCP_LINE_MAX */
	bool in_done;                      /* end of input */
	bool out_broken;                   /* stdout is gone: stop */
	char session[128];                 /* Mcp-Session-Id, "" before initialize */
	char version[32];                  /* the negotiated revision, "" before initialize */
	char where[512];                   /* the daemon, for messages */
};

static void forward(struct bridge *b, const char *line, size_t len);

/* ------------------------------------------------------------- output */

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* stdout shares a non-blocking file description: wait for room. */
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };
				poll(&pfd, 1, -1);
				continue;
			}
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Writes one message as one line; a JSON dump has no newline in it. */
static void emit(struct bridge *b, json_t *msg)
{
	char *text = b->out_broken ? NULL : json_dumps(msg, JSON_COMPACT);
	if (!text)
		return;
	int r = write_all(b->out_fd, text, strlen(text));
	if (!r)
		r = write_all(b->out_fd, "\n", 1);
	free(text);
	if (r < 0) {
		fprintf(stderr, "vramctl mcp: cannot write to stdout: %s\n", strerror(-r));
		b->out_broken = true;
		event_base_loopexit(b->base, NULL);
	}
}

/* A JSON-RPC error for the request with id; nothing for a notification (id NULL). */
static void emit_error(struct bridge *b, json_t *id, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void emit_error(struct bridge *b, json_t *id, int code, const char *fmt, ...)
{
	if (!id)
		return;
	char message[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	json_t *e = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error",
			      "code", code, "message", message);
	if (e)
		emit(b, e);
	json_decref(e);
}

/* ----------------------------------------------------------- exchanges */

static void maybe_finish(struct bridge *b)
{
	if (b->in_done && vram_list_empty(&b->exchanges) && vram_list_empty(&b->held))
		event_base_loopexit(b->base, NULL);
}

/* Forwards the lines that waited for initialize, in their order. */
static void release_held(struct bridge *b)
{
	while (!vram_list_empty(&b->held) && !b->initializing && !b->out_broken) {
		struct held *h = vram_list_entry(vram_list_first(&b->held), struct held, link);
		vram_list_remove(&h->link);
		b->n_held--;
		forward(b, h->line, h->len);
		free(h);
	}
}

/* Ends an exchange (its reply, if any, is out): frees it and lets the next ones go. */
static void exchange_free(struct exchange *ex)
{
	struct bridge *b = ex->b;
	vram_list_remove(&ex->link);
	b->n_exchanges--;
	if (ex->bev)
		bufferevent_free(ex->bev);
	if (ex->deadline)
		event_free(ex->deadline);
	vram_buf_done(&ex->request);
	vram_buf_done(&ex->reply);
	json_decref(ex->id);
	bool was_initialize = ex->initialize;
	free(ex);
	if (was_initialize) {
		b->initializing = false;
		release_held(b);
	}
	maybe_finish(b);
}

/* The exchange failed before a reply: says why, on stderr and to the client. */
static void exchange_fail(struct exchange *ex, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void exchange_fail(struct exchange *ex, const char *fmt, ...)
{
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vramctl mcp: %s\n", text);
	emit_error(ex->b, ex->id, JSONRPC_INTERNAL_ERROR, "%s", text);
	exchange_free(ex);
}

/* Keeps the session and revision an initialize got. */
static void remember_session(struct bridge *b, const struct vram_client_response *resp,
			     json_t *reply)
{
	char sid[sizeof(b->session)];
	const char *v = json_string_value(
		json_object_get(json_object_get(reply, "result"), "protocolVersion"));
	if (!v || strlen(v) >= sizeof(b->version) || strspn(v, "0123456789-") != strlen(v))
		return;
	if (vram_client_response_header(resp, "Mcp-Session-Id", sid, sizeof(sid)) &&
	    strspn(sid, "0123456789abcdefABCDEF") == strlen(sid))
		snprintf(b->session, sizeof(b->session), "%s", sid);
	else
		b->session[0] = '\0';
	snprintf(b->version, sizeof(b->version), "%s", v);
}

/* The whole reply is in: hands it to the client. */
static void exchange_done(struct exchange *ex)
{
	struct bridge *b = ex->b;
	struct vram_client_response resp = { 0 };
	char err[512];
	if (vram_client_parse_response(ex->reply.data ? ex->reply.data : "", ex->reply.len, &resp,
				       err, sizeof(err)) < 0) {
		exchange_fail(ex, "vramd at %s sent a broken reply: %s", b->where, err);
		return;
	}
	if (resp.status == 202 || resp.body_len == 0)
		goto out; /* a notification, accepted */
	json_t *reply = json_loadb(resp.body, resp.body_len, 0, NULL);
	if (json_is_object(reply) && json_object_get(reply, "jsonrpc")) {
		/* A refusal before the message was read has id null: give it the request's. */
		if (ex->id && json_is_null(json_object_get(reply, "id")) &&
		    json_object_get(reply, "error"))
			json_object_set(reply, "id", ex->id);
		if (ex->initialize && resp.status == 200 && json_object_get(reply, "result"))
			remember_session(b, &resp, reply);
		emit(b, reply);
	} else {
		/* Not MCP: the token check, or a daemon without /mcp. */
		const char *m = json_string_value(
			json_object_get(json_object_get(reply, "error"), "message"));
		fprintf(stderr, "vramctl mcp: vramd at %s answered HTTP %d: %s\n", b->where,
			resp.status, m ? m : "no MCP reply");
		emit_error(b, ex->id, JSONRPC_INTERNAL_ERROR, "vramd at %s answered HTTP %d: %s",
			   b->where, resp.status, m ? m : "no MCP reply");
	}
	json_decref(reply);
out:
	vram_client_response_done(&resp);
	exchange_free(ex);
}

/* Moves what has come from the daemon into ex->reply. Returns 0, or -E2BIG / -ENOMEM. */
static int take_reply(struct exchange *ex)
{
	struct evbuffer *in = bufferevent_get_input(ex->bev);
	char chunk[16384];
	int n, r = 0;
	while (!r && (n = evbuffer_remove(in, chunk, sizeof(chunk))) > 0)
		r = vram_buf_append(&ex->reply, chunk, (size_t)n);
	return r;
}

static void on_reply_read(struct bufferevent *bev, void *arg)
{
	struct exchange *ex = arg;
	if (take_reply(ex) < 0)
		exchange_fail(ex, "the reply of vramd at %s is over %u bytes", ex->b->where,
			      VRAM_CLIENT_RESPONSE_MAX);
}

static void exchange_connect(struct exchange *ex);

/* The connection could not be made (errno e): the daemon's next address, or the end. */
static void connect_failed(struct exchange *ex, int e)
{
	if (ex->addr && ex->addr->ai_next) {
		ex->addr = ex->addr->ai_next;
		exchange_connect(ex);
		return;
	}
	exchange_fail(ex, "cannot connect to vramd at %s: %s", ex->b->where, strerror(e));
}

static void on_reply_event(struct bufferevent *bev, short what, void *arg)
{
	struct exchange *ex = arg;
	struct bridge *b = ex->b;
	if (what & BEV_EVENT_CONNECTED) {
		ex->connected = true;
		return;
	}
	if (what & BEV_EVENT_EOF) {
		if (take_reply(ex) < 0)
			exchange_fail(ex, "the reply of vramd at %s is over %u bytes", b->where,
				      VRAM_CLIENT_RESPONSE_MAX);
		else
			exchange_done(ex);
		return;
	}
	if (ex->connected)
		exchange_fail(ex, "talking to vramd at %s: %s", b->where,
			      strerror(EVUTIL_SOCKET_ERROR()));
	else
		connect_failed(ex, EVUTIL_SOCKET_ERROR());
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct exchange *ex = arg;
	exchange_fail(ex, "vramd at %s did not answer within %d ms", ex->b->where,
		      ex->b->timeout_ms);
}

/* Opens the connection (to ex->addr over TCP) and queues the request on it. */
static void exchange_connect(struct exchange *ex)
{
	struct bridge *b = ex->b;
	if (ex->bev)
		bufferevent_free(ex->bev);
	/* Deferred callbacks: a connect that fails at once reports from the loop, not from here. */
	ex->bev = bufferevent_socket_new(b->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!ex->bev || bufferevent_write(ex->bev, ex->request.data, ex->request.len) < 0) {
		exchange_fail(ex, "out of memory");
		return;
	}
	bufferevent_setcb(ex->bev, on_reply_read, NULL, on_reply_event, ex);
	bufferevent_enable(ex->bev, EV_READ | EV_WRITE);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const struct sockaddr *sa = (const struct sockaddr *)&sun;
	socklen_t sa_len = sizeof(sun);
	if (b->url->is_unix) {
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", b->url->socket_path);
	} else {
		sa = ex->addr->ai_addr;
		sa_len = ex->addr->ai_addrlen;
	}
	/* Refused comes to on_reply_event (deferred); other failures (no such socket) here. */
	if (bufferevent_socket_connect(ex->bev, sa, (int)sa_len) < 0)
		connect_failed(ex, errno ? errno : ECONNREFUSED);
}

/* True when s can be a header value as it is: printable ASCII, no space at either end. */
static bool header_safe(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max || s[0] == ' ' || s[n - 1] == ' ')
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/*
 * Mcp-Name: the name as it is, or "=?base64?...?=" for one a header cannot
 * carry (or one that looks like that form), as the 2026-07-28 Streamable
 * HTTP transport says. A name over NAME_HEADER_MAX goes without the header
 * (the daemon then says what is missing).
 */
static int add_name_header(struct vram_buf *h, const char *name)
{
	size_t n = strlen(name);
	bool sentinel = n >= 11 && strncmp(name, "=?base64?", 9) == 0 &&
			strcmp(name + n - 2, "?=") == 0;
	if (header_safe(name, NAME_HEADER_MAX) && !sentinel)
		return vram_buf_printf(h, "Mcp-Name: %s\r\n", name);
	char enc[VRAM_BASE64_ENCODED_LEN(NAME_HEADER_MAX) + 1];
	if (vram_base64_encode(name, n, enc, sizeof(enc)) < 0)
		return 0;
	return vram_buf_printf(h, "Mcp-Name: =?base64?%s?=\r\n", enc);
}

/*
 * The MCP headers of msg (may be NULL: a line that is not JSON goes as it
 * is, and the daemon answers it): none for initialize; the 2026-07-28 ones
 * for a message naming its revision in params._meta; else the session's.
 */
static int mcp_headers(struct bridge *b, json_t *msg, struct vram_buf *h)
{
	const char *method = json_string_value(json_object_get(msg, "method"));
	json_t *params = json_object_get(msg, "params");
	const char *mv = json_string_value(
		json_object_get(json_object_get(params, "_meta"), META_VERSION_KEY));
	int r = 0;
	if (method && strcmp(method, "initialize") == 0)
		return 0;
	if (mv) {
		if (header_safe(mv, 64))
			r = vram_buf_printf(h, "MCP-Protocol-Version: %s\r\n", mv);
		if (!r && method && header_safe(method, 256))
			r = vram_buf_printf(h, "Mcp-Method: %s\r\n", method);
		const char *name = NULL;
		if (method && (strcmp(method, "tools/call") == 0 || strcmp(method, "prompts/get") == 0))
			name = json_string_value(json_object_get(params, "name"));
		else if (method && strcmp(method, "resources/read") == 0)
			name = json_string_value(json_object_get(params, "uri"));
		if (!r && name)
			r = add_name_header(h, name);
	} else if (b->session[0]) {
		r = vram_buf_printf(h, "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: %s\r\n",
				    b->session, b->version);
	}
	return r;
}

/* Sends line (NUL-terminated, len bytes; msg its parse, may be NULL) to the daemon. */
static void exchange_start(struct bridge *b, json_t *msg, const char *line, size_t len)
{
	struct exchange *ex = calloc(1, sizeof(*ex));
	if (!ex) {
		fprintf(stderr, "vramctl mcp: out of memory\n");
		emit_error(b, json_object_get(msg, "id"), JSONRPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	ex->b = b;
	ex->id = json_incref(json_object_get(msg, "id"));
	const char *method = json_string_value(json_object_get(msg, "method"));
	ex->initialize = method && strcmp(method, "initialize") == 0;
	vram_buf_init(&ex->request, len + VRAM_CLIENT_HEAD_MAX + HEADERS_MAX);
	vram_buf_init(&ex->reply, VRAM_CLIENT_RESPONSE_MAX);
	vram_list_push_front(&b->exchanges, &ex->link);
	b->n_exchanges++;
	if (ex->initialize)
		b->initializing = true;

	struct vram_buf h;
	vram_buf_init(&h, HEADERS_MAX);
	int r = mcp_headers(b, msg, &h);
	if (!r)
		r = vram_client_format_request(&ex->request, b->url, "POST", "/mcp", h.data, line,
					       b->token);
	vram_buf_done(&h);
	if (r < 0) {
		exchange_fail(ex, "%s", r == -ENOMEM ? "out of memory" : "the request is too large");
		return;
	}
	if (!b->url->is_unix && !b->addrs) {
		exchange_fail(ex, "%s", b->resolve_error);
		return;
	}
	if (b->timeout_ms > 0) {
		struct timeval tv = { b->timeout_ms / 1000, (b->timeout_ms % 1000) * 1000 };
		ex->deadline = evtimer_new(b->base, on_deadline, ex);
		if (!ex->deadline || evtimer_add(ex->deadline, &tv) < 0) {
			exchange_fail(ex, "out of memory");
			return;
		}
	}
	ex->addr = b->addrs;
	exchange_connect(ex);
}

/* --------------------------------------------------------------- input */

/* A request past the bound is answered at once; a notification is dropped. */
static void refuse_busy(struct bridge *b, json_t *id, const char *method)
{
	if (!id)
		fprintf(stderr, "vramctl mcp: dropped a %s notification: %d messages in flight\n",
			method ? method : "broken", VRAM_CTL_MCP_IN_FLIGHT_MAX);
	emit_error(b, id, VRAM_CTL_MCP_BUSY,
		   "vramctl mcp has %d messages in flight, its limit: send this again once a "
		   "reply has come",
		   VRAM_CTL_MCP_IN_FLIGHT_MAX);
}

/* Keeps a line until initialize has its answer (and the session its id). */
static void hold(struct bridge *b, const char *line, size_t len)
{
	struct held *h = malloc(sizeof(*h) + len + 1);
	if (!h) {
		fprintf(stderr, "vramctl mcp: out of memory: a message was dropped\n");
		return;
	}
	h->len = len;
	memcpy(h->line, line, len);
	h->line[len] = '\0';
	vram_list_push_back(&b->held, &h->link);
	b->n_held++;
}

/* Stops forwarding the request with id: its connection closes, no reply goes out. */
static void cancel(struct bridge *b, json_t *id)
{
	if (!id)
		return;
	vram_list_for_each_entry(ex, &b->exchanges, struct exchange, link) {
		/* The initialize request is not to be cancelled (the lifecycle page). */
		if (ex->id && !ex->initialize && json_equal(ex->id, id)) {
			exchange_free(ex);
			return;
		}
	}
}

/* One message from the client: line is NUL-terminated, len bytes. */
static void forward(struct bridge *b, const char *line, size_t len)
{
	json_t *msg = json_loadb(line, len, 0, NULL);
	json_t *id = json_object_get(msg, "id");
	const char *method = json_string_value(json_object_get(msg, "method"));
	if (method && !id && strcmp(method, "notifications/cancelled") == 0) {
		/* The stdio way to cancel; over HTTP it is closing the request's connection. */
		cancel(b, json_object_get(json_object_get(msg, "params"), "requestId"));
	} else if (b->n_exchanges + b->n_held >= VRAM_CTL_MCP_IN_FLIGHT_MAX) {
		refuse_busy(b, id, method);
	} else if (b->initializing) {
		hold(b, line, len);
	} else {
		exchange_start(b, msg, line, len);
	}
	json_decref(msg);
}

static void refuse_too_long(struct bridge *b)
{
	fprintf(stderr, "vramctl mcp: a message over %d bytes was dropped\n", VRAM_CTL_MCP_LINE_MAX);
	emit_error(b, json_null(), JSONRPC_INVALID_REQUEST,
		   "a message over %d bytes (the limit of vramctl mcp) was dropped",
		   VRAM_CTL_MCP_LINE_MAX);
}

/* A whole line (its newline gone; line is its own, writable). */
static void take_line(struct bridge *b, char *line, size_t n)
{
	while (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	if (n == 0)
		return;
	if (n > VRAM_CTL_MCP_LINE_MAX) {
		refuse_too_long(b);
		return;
	}
	forward(b, line, n);
}

static void on_input(struct bufferevent *bev, void *arg)
{
	struct bridge *b = arg;
	struct evbuffer *buf = bufferevent_get_input(bev);
	while (!b->out_broken) {
		if (b->discarding) {
			size_t eol_len = 0;
			struct evbuffer_ptr p = evbuffer_search_eol(buf, NULL, &eol_len, EVBUFFER_EOL_LF);
			if (p.pos < 0) {
				evbuffer_drain(buf, evbuffer_get_length(buf));
				return;
			}
			evbuffer_drain(buf, (size_t)p.pos + eol_len);
			b->discarding = false;
			continue;
		}
		size_t n = 0;
		char *line = evbuffer_readln(buf, &n, EVBUFFER_EOL_LF);
		if (!line) {
			if (evbuffer_get_length(buf) > VRAM_CTL_MCP_LINE_MAX) {
				refuse_too_long(b);
				b->discarding = true;
				continue;
			}
			return;
		}
		take_line(b, line, n);
		free(line);
	}
}

static void on_input_event(struct bufferevent *bev, short what, void *arg)
{
	struct bridge *b = arg;
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	if (what & BEV_EVENT_ERROR)
		fprintf(stderr, "vramctl mcp: reading stdin: %s\n", strerror(EVUTIL_SOCKET_ERROR()));
	/* A last line without its newline. */
	struct evbuffer *buf = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(buf);
	char *line = n && !b->discarding ? malloc(n + 1) : NULL;
	if (line) {
		evbuffer_remove(buf, line, n);
		line[n] = '\0';
		take_line(b, line, n);
		free(line);
	}
	b->in_done = true;
	bufferevent_disable(bev, EV_READ);
	maybe_finish(b);
}

/* ---------------------------------------------------------------- main */

/* TCP: the daemon's addresses, once; a failure is said by each exchange. */
static void resolve(struct bridge *b)
{
	if (b->url->is_unix)
		return;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	char port[16];
	snprintf(port, sizeof(port), "%u", b->url->port);
	int r = getaddrinfo(b->url->host, port, &hints, &b->addrs);
	if (r != 0) {
		b->addrs = NULL;
		snprintf(b->resolve_error, sizeof(b->resolve_error), "cannot resolve %.200s: %s",
			 b->url->host, gai_strerror(r));
	}
}

/* End of input ends the session. */
static void end_session(struct bridge *b)
{
	if (!b->session[0])
		return;
	char headers[192];
	snprintf(headers, sizeof(headers), "Mcp-Session-Id: %s\r\n", b->session);
	struct vram_client_response resp = { 0 };
	char err[512];
	if (vram_client_request_headers(b->url, "DELETE", "/mcp", headers, NULL, b->token,
					DELETE_TIMEOUT_MS, &resp, err, sizeof(err)) == 0)
		vram_client_response_done(&resp);
}

int vram_ctl_mcp(const struct vram_client_url *url, const char *token, int timeout_ms, FILE *in,
		 FILE *out)
{
	struct bridge b = { .url = url, .token = token, .timeout_ms = timeout_ms,
			    .out_fd = fileno(out) };
	int exit_code = VRAM_CTL_EXIT_FAILED;
	vram_list_init(&b.exchanges);
	vram_list_init(&b.held);
	vram_client_url_format(url, b.where, sizeof(b.where));
	fflush(out);
	/* A closed stdout is an error from write, not a signal. */
	struct sigaction ignore = { .sa_handler = SIG_IGN }, old_pipe;
	sigaction(SIGPIPE, &ignore, &old_pipe);

	/* poll or select: stdin may be a regular file, which epoll refuses. */
	struct event_config *cfg = event_config_new();
	if (cfg && event_config_require_features(cfg, EV_FEATURE_FDS) == 0)
		b.base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (!b.base) {
		fprintf(stderr, "vramctl mcp: cannot set up the event loop\n");
		goto out;
	}
	b.in = bufferevent_socket_new(b.base, fileno(in), 0);
	if (!b.in) {
		fprintf(stderr, "vramctl mcp: out of memory\n");
		goto out;
	}
	/* Reading pauses while a line over the limit fills the buffer; on_input drains it. */
	bufferevent_setwatermark(b.in, EV_READ, 0, VRAM_CTL_MCP_LINE_MAX + 2);
	bufferevent_setcb(b.in, on_input, NULL, on_input_event, &b);
	bufferevent_enable(b.in, EV_READ);
	resolve(&b);

	event_base_dispatch(b.base);
	end_session(&b);
	exit_code = b.out_broken ? VRAM_CTL_EXIT_FAILED : VRAM_CTL_EXIT_OK;

out:
	/* Left over only when stdout broke. */
	while (!vram_list_empty(&b.held)) {
		struct held *h = vram_list_entry(vram_list_first(&b.held), struct held, link);
		vram_list_remove(&h->link);
		free(h);
	}
	b.in_done = false; /* no loopexit from the frees below */
	while (!vram_list_empty(&b.exchanges)) {
		struct exchange *ex = vram_list_entry(vram_list_first(&b.exchanges), struct exchange, link);
		ex->initialize = false;
		exchange_free(ex);
	}
	if (b.in)
		bufferevent_free(b.in);
	if (b.addrs)
		freeaddrinfo(b.addrs);
	if (b.base)
		event_base_free(b.base);
	sigaction(SIGPIPE, &old_pipe, NULL);
	return exit_code;
}
