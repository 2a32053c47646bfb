/* SPDX-License-Identifier: MIT */
/* The front door's rules for browsers: Host, Origin, Content-Type. See access.h. */
#include "daemon/access.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "daemon/http.h"

#define HOST_MAX 254 /* bytes of a host name (253) with its NUL */
#define REQUESTED_HEADERS_MAX 512 /* bytes of Access-Control-Request-Headers echoed */

/* A host and port as a Host header, an origin or a config entry names them. */
struct authority {
	char host[HOST_MAX]; /* lower case, IPv6 without brackets */
	unsigned port;       /* the port given, else the scheme's default */
	bool has_port;
};

static void refuse(struct vram_access *ret, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void refuse(struct vram_access *ret, int status, const char *code, const char *fmt, ...)
{
	ret->verdict = VRAM_ACCESS_REFUSE;
	ret->status = status;
	ret->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ret->message, sizeof(ret->message), fmt, ap);
	va_end(ap);
}

/*
 * Parses "host", "host:port", "[v6]" or "[v6]:port" (n bytes at p) into *a,
 * with default_port when none is given. Host names are letters, digits, '.',
 * '-' and '_'. Returns false for anything else.
 */
static bool parse_authority(const char *p, size_t n, unsigned default_port, struct authority *a)
{
	const char *host = p, *rest;
	size_t hlen;
	if (n > 0 && p[0] == '[') {
		const char *close = memchr(p, ']', n);
		if (!close)
			return false;
		host = p + 1;
		hlen = (size_t)(close - host);
		rest = close + 1;
		for (size_t i = 0; i < hlen; i++)
			if (!strchr("0123456789abcdefABCDEF:.", host[i]))
				return false;
	} else {
		const char *colon = memchr(p, ':', n);
		hlen = colon ? (size_t)(colon - p) : n;
		rest = p + hlen;
		for (size_t i = 0; i < hlen; i++) {
			char c = host[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			      c == '.' || c == '-' || c == '_'))
				return false;
		}
	}
	if (hlen == 0 || hlen >= sizeof(a->host))
		return false;
	for (size_t i = 0; i < hlen; i++)
		a->host[i] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] + 32 : host[i]);
	a->host[hlen] = '\0';
	size_t left = n - (size_t)(rest - p);
	a->has_port = left > 0;
	a->port = default_port;
	if (!a->has_port)
		return true;
	if (rest[0] != ':' || left < 2 || left > 6)
		return false;
	unsigned port = 0;
	for (size_t i = 1; i < left; i++) {
		if (rest[i] < '0' || rest[i] > '9')
			return false;
		port = port * 10 + (unsigned)(rest[i] - '0');
	}
	if (port == 0 || port > 65535)
		return false;
	a->port = port;
	return true;
}

/* "http://host[:port]" or "https://...": the scheme's default port when none. */
static bool parse_origin(const char *p, size_t n, bool *ret_https, struct authority *a)
{
	if (n > 7 && strncasecmp(p, "http://", 7) == 0) {
		*ret_https = false;
		return parse_authority(p + 7, n - 7, 80, a);
	}
	if (n > 8 && strncasecmp(p, "https://", 8) == 0) {
		*ret_https = true;
		return parse_authority(p + 8, n - 8, 443, a);
	}
	return false;
}

/* The same host: as addresses when both are numeric ("::1" is "0::1"), else as names. */
static bool same_host(const char *a, const char *b)
{
	unsigned char x[16], y[16];
	if (inet_pton(AF_INET, a, x) == 1)
		return inet_pton(AF_INET, b, y) == 1 && memcmp(x, y, 4) == 0;
	if (inet_pton(AF_INET6, a, x) == 1)
		return inet_pton(AF_INET6, b, y) == 1 && memcmp(x, y, 16) == 0;
	return strcasecmp(a, b) == 0;
}

/* A listen host that stands for every address: it names no host a client could use. */
static bool is_wildcard(const char *host)
{
	unsigned char x[16];
	static const unsigned char zero[16];
	if (inet_pton(AF_INET, host, x) == 1)
		return memcmp(x, zero, 4) == 0;
	if (inet_pton(AF_INET6, host, x) == 1)
		return memcmp(x, zero, 16) == 0;
	return !*host;
}

/* host is one of the listener's own addresses: daemon.listen's host, or the connection's. */
static bool is_own_host(const struct vram_access_listener *l, const char *host)
{
	if (l->host && !is_wildcard(l->host) && same_host(host, l->host))
		return true;
	return l->local_addr && *l->local_addr && same_host(host, l->local_addr);
}

static bool host_allowed(const struct vram_access_listener *l, const struct vram_config *cfg,
			 const struct authority *a)
{
	if (vram_http_host_is_loopback(a->host))
		return true;
	if (a->port == l->port && is_own_host(l, a->host))
		return true;
	for (size_t i = 0; cfg && i < cfg->daemon.n_allowed_hosts; i++) {
		const char *e = cfg->daemon.allowed_hosts[i];
		struct authority ea;
		if (parse_authority(e, strlen(e), 80, &ea) && same_host(a->host, ea.host) &&
		    (!ea.has_port || ea.port == a->port))
			return true;
	}
	return false;
}

static bool origin_allowed(const struct vram_access_listener *l, const struct vram_config *cfg,
			   bool https, const struct authority *a)
{
	if (!https && l->host && a->port == l->port &&
	    (vram_http_host_is_loopback(a->host) || is_own_host(l, a->host)))
		return true;
	for (size_t i = 0; cfg && i < cfg->daemon.n_cors_origins; i++) {
		const char *e = cfg->daemon.cors_origins[i];
		struct authority ea;
		bool ehttps;
		if (parse_origin(e, strlen(e), &ehttps, &ea) && ehttps == https &&
		    same_host(a->host, ea.host) && ea.port == a->port)
			return true;
	}
	return false;
}

/* The number of headers named name in h, and the first of them in *ret (may be NULL). */
static size_t count_headers(const struct vram_h1_head *h, const char *name,
			    const struct vram_h1_header **ret)
{
	size_t n = 0;
	*ret = NULL;
	for (size_t i = 0; i < h->nh; i++)
		if (vram_h1_span_eq(h->h[i].name, name) && n++ == 0)
			*ret = &h->h[i];
	return n;
}

/* "127.0.0.1:8600"-style text for messages: the listener's own address. */
static void own_address(const struct vram_access_listener *l, char *buf, size_t size)
{
	const char *host = l->host && !is_wildcard(l->host) ? l->host : "127.0.0.1";
	bool v6 = strchr(host, ':') != NULL;
	snprintf(buf, size, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", l->port);
}

/* The Host rule for one authority (a Host header, or an absolute target's). */
static bool check_host(const struct vram_access_listener *l, const struct vram_config *cfg,
		       struct vram_h1_span v, const char *what, struct vram_access *ret)
{
	struct authority a;
	int shown = (int)(v.n > 200 ? 200 : v.n);
	if (!parse_authority(v.p, v.n, 80, &a)) {
		refuse(ret, 400, "bad_request", "the %s \"%.*s\" is not a host name or address", what,
		       shown, v.p);
		return false;
	}
	if (host_allowed(l, cfg, &a))
		return true;
	char own[HOST_MAX + 32];
	own_address(l, own, sizeof(own));
	refuse(ret, 403, "forbidden_host",
	       "the %s \"%.*s\" does not name vramd: it answers to its listen address (%s), "
	       "loopback names and the hosts listed in daemon.allowed_hosts", what, shown, v.p,
	       own);
	return false;
}

void vram_access_check(const struct vram_access_listener *l, const struct vram_config *cfg,
		       const struct vram_h1_head *h, struct vram_access *ret)
{
	*ret = (struct vram_access){ .verdict = VRAM_ACCESS_PASS };
	const struct vram_h1_header *host, *origin;
	if (count_headers(h, "Host", &host) > 1) {
		refuse(ret, 400, "bad_request", "more than one Host header");
		return;
	}
	if (count_headers(h, "Origin", &origin) > 1) {
		refuse(ret, 400, "bad_request", "more than one Origin header");
		return;
	}
	if (!l->unix_socket) {
		/* An absolute target names the host in place of Host (RFC 9112 §3.2.2). */
		struct vram_h1_span t = h->target;
		size_t skip = t.n > 7 && strncasecmp(t.p, "http://", 7) == 0	 ? 7
			      : t.n > 8 && strncasecmp(t.p, "https://", 8) == 0 ? 8
										 : 0;
		if (skip) {
			struct vram_h1_span auth = { t.p + skip, 0 };
			while (skip + auth.n < t.n && !strchr("/?#", auth.p[auth.n]))
				auth.n++;
			if (!check_host(l, cfg, auth, "request target's host", ret))
				return;
		}
		/* No Host: not a browser (HTTP/1.0 clients, raw tools); nothing to rebind. */
		if (host && !check_host(l, cfg, host->value, "Host", ret))
			return;
	}
	if (!origin)
		return;
	struct vram_h1_span v = origin->value;
	struct authority a;
	bool https = false;
	if (v.n >= sizeof(ret->origin) || !parse_origin(v.p, v.n, &https, &a) ||
	    !origin_allowed(l, cfg, https, &a)) {
		char own[HOST_MAX + 32];
		own_address(l, own, sizeof(own));
		refuse(ret, 403, "forbidden_origin",
		       "Origin \"%.*s\" may not call vramd: only its own pages (http://%s) and the origins "
		       "listed in daemon.cors.origins may", (int)(v.n > 200 ? 200 : v.n), v.p, own);
		return;
	}
	memcpy(ret->origin, v.p, v.n);
	ret->origin[v.n] = '\0';
	if (vram_h1_span_eq(h->method, "OPTIONS") && vram_h1_find(h, "Access-Control-Request-Method"))
		ret->verdict = VRAM_ACCESS_PREFLIGHT;
}

/* Methods are case-sensitive (RFC 9110 §9.1): "get" is not GET, and evhttp refuses it. */
static bool method_is(struct vram_h1_span m, const char *name)
{
	return m.n == strlen(name) && memcmp(m.p, name, m.n) == 0;
}

/* The methods the REST API serves (evhttp's own page answers any other). */
static const char *const api_methods[] = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
					   "OPTIONS" };

bool vram_access_check_api(const struct vram_h1_head *h, struct vram_access *ret)
{
	bool known = false;
	for (size_t i = 0; i < sizeof(api_methods) / sizeof(api_methods[0]) && !known; i++)
		known = method_is(h->method, api_methods[i]);
	int mlen = (int)(h->method.n > 32 ? 32 : h->method.n);
	if (!known) {
		refuse(ret, 501, "not_implemented",
		       "the method %.*s is not served here (expected GET, HEAD, POST, PUT, PATCH, "
		       "DELETE or OPTIONS)", mlen, h->method.p);
		return false;
	}
	bool changes = method_is(h->method, "POST") || method_is(h->method, "PUT") ||
		       method_is(h->method, "PATCH") || method_is(h->method, "DELETE");
	if (!changes || h->body == VRAM_H1_BODY_NONE)
		return true;
	const struct vram_h1_header *ct = vram_h1_find(h, "Content-Type");
	struct vram_h1_span type = { "", 0 };
	if (ct) {
		type = ct->value;
		const char *semi = memchr(type.p, ';', type.n);
		if (semi)
			type.n = (size_t)(semi - type.p);
		while (type.n && (type.p[type.n - 1] == ' ' || type.p[type.n - 1] == '\t'))
			type.n--;
	}
	if (vram_h1_span_eq(type, "application/json"))
		return true;
	char got[160];
	if (ct)
		snprintf(got, sizeof(got), "\"%.*s\"", (int)(ct->value.n > 120 ? 120 : ct->value.n),
			 ct->value.p);
	else
		snprintf(got, sizeof(got), "none");
	refuse(ret, 415, "unsupported_media_type",
	       "a %.*s with a body needs \"Content-Type: application/json\" (got %s)", mlen,
	       h->method.p, got);
	return false;
}

int vram_access_cors_headers(const char *origin, char *buf, size_t size)
{
	if (!origin || !*origin) {
		if (size)
			buf[0] = '\0';
		return 0;
	}
	int n = snprintf(buf, size,
			 "Access-Control-Allow-Origin: %s\r\n"
			 "Vary: Origin\r\n"
			 "Access-Control-Expose-Headers: Mcp-Session-Id, Mcp-Protocol-Version, "
			 "Retry-After, WWW-Authenticate, Location\r\n",
			 origin);
	if (n < 0 || (size_t)n >= size) {
		if (size)
			buf[0] = '\0';
		return -ENOSPC;
	}
	return n;
}

/* The value of Access-Control-Request-Headers when it is a plain list of names. */
static struct vram_h1_span requested_headers(const struct vram_h1_head *h)
{
	const struct vram_h1_header *rh = vram_h1_find(h, "Access-Control-Request-Headers");
	struct vram_h1_span none = { "", 0 };
	if (!rh || rh->value.n > REQUESTED_HEADERS_MAX)
		return none;
	for (size_t i = 0; i < rh->value.n; i++) {
		char c = rh->value.p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("-_., ", c)))
			return none;
	}
	return rh->value;
}

int vram_access_preflight_headers(const char *origin, const struct vram_h1_head *h, char *buf,
				  size_t size)
{
	struct vram_h1_span asked = requested_headers(h);
	int n = snprintf(buf, size,
			 "Access-Control-Allow-Origin: %s\r\n"
			 "Access-Control-Allow-Methods: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n"
			 "Access-Control-Allow-Headers: Authorization, Content-Type, X-Api-Key, "
			 "Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID%s%.*s\r\n"
			 "Access-Control-Max-Age: %d\r\n"
			 "Vary: Origin, Access-Control-Request-Method, Access-Control-Request-Headers\r\n",
			 origin, asked.n ? ", " : "", (int)asked.n, asked.p, VRAM_ACCESS_MAX_AGE_S);
	if (n < 0 || (size_t)n >= size) {
		if (size)
			buf[0] = '\0';
		return -ENOSPC;
	}
	return n;
}

bool vram_access_is_cors_header(struct vram_h1_span name)
{
	return name.n > 15 && strncasecmp(name.p, "Access-Control-", 15) == 0;
}
