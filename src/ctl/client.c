/* SPDX-License-Identifier: MIT */
/* Blocking HTTP/1.1 client for vramctl; see client.h. */
#include "ctl/client.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/version.h"

int vram_client_parse_url(const char *s, struct vram_client_url *ret, char *err, size_t err_size)
{
	struct vram_client_url u = { 0 };
	if (!s || !*s) {
		snprintf(err, err_size, "empty daemon address");
		return -EINVAL;
	}
	if (strncmp(s, "https://", 8) == 0) {
		snprintf(err, err_size, "%s: https is not supported; use http:// or a socket path", s);
		return -EINVAL;
	}
	if (strncmp(s, "http://", 7) != 0) {
		const char *path = strncmp(s, "unix:", 5) == 0 ? s + 5 : s;
		if (!*path || strlen(path) >= sizeof(u.socket_path)) {
			snprintf(err, err_size, "%s: socket path is empty or too long", s);
			return -EINVAL;
		}
		u.is_unix = true;
		snprintf(u.socket_path, sizeof(u.socket_path), "%s", path);
		*ret = u;
		return 0;
	}
	const char *h = s + 7;
	const char *hend;
	const char *rest;
	if (*h == '[') {
		hend = strchr(h, ']');
		if (!hend) {
			snprintf(err, err_size, "%s: missing ']' after the IPv6 address", s);
			return -EINVAL;
		}
		h++;
		rest = hend + 1;
	} else {
		hend = h + strcspn(h, ":/?#");
		rest = hend;
	}
	size_t hlen = (size_t)(hend - h);
	if (hlen == 0 || hlen >= sizeof(u.host)) {
		snprintf(err, err_size, "%s: missing or too long host", s);
		return -EINVAL;
	}
	memcpy(u.host, h, hlen);
	u.host[hlen] = '\0';
	u.port = 80;
	if (*rest == ':') {
		rest++;
		unsigned long port = 0;
		const char *p = rest;
		while (*p >= '0' && *p <= '9') {
			port = port * 10 + (unsigned long)(*p - '0');
			if (port > 65535)
				break;
			p++;
		}
		if (p == rest || port == 0 || port > 65535 || (*p && *p != '/')) {
			snprintf(err, err_size, "%s: bad port", s);
			return -EINVAL;
		}
		u.port = (unsigned)port;
		rest = p;
	}
	if (*rest && *rest != '/') {
		snprintf(err, err_size, "%s: unexpected \"%s\" after the host", s, rest);
		return -EINVAL;
	}
	size_t plen = strlen(rest);
	while (plen > 0 && rest[plen - 1] == '/')
		plen--;
	if (plen >= sizeof(u.prefix)) {
		snprintf(err, err_size, "%s: path too long", s);
		return -EINVAL;
	}
	memcpy(u.prefix, rest, plen);
	u.prefix[plen] = '\0';
	*ret = u;
	return 0;
}

char *vram_client_default_socket(char *buf, size_t size)
{
	/* The same rule as the config's default state_dir. */
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (geteuid() == 0)
		snprintf(buf, size, "/run/vramd/vramd.sock");
	else if (xdg && xdg[0] == '/')
		snprintf(buf, size, "%s/vramd/vramd.sock", xdg);
	else
		snprintf(buf, size, "/tmp/vramd-%u/vramd.sock", (unsigned)geteuid());
	return buf;
}

char *vram_client_url_format(const struct vram_client_url *url, char *buf, size_t size)
{
	if (url->is_unix)
		snprintf(buf, size, "%s", url->socket_path);
	else if (strchr(url->host, ':'))
		snprintf(buf, size, "http://[%s]:%u%s", url->host, url->port, url->prefix);
	else
		snprintf(buf, size, "http://%s:%u%s", url->host, url->port, url->prefix);
	return buf;
}

void vram_client_response_done(struct vram_client_response *r)
{
	if (!r)
		return;
	free(r->content_type);
	free(r->body);
	free(r->headers);
	*r = (struct vram_client_response){ 0 };
}

const char *vram_client_response_header(const struct vram_client_response *r, const char *name,
					char *buf, size_t size)
{
	size_t nlen = strlen(name);
	for (const char *p = r->headers; p && *p;) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		if (n > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
			const char *v = p + nlen + 1;
			while (v < p + n && (*v == ' ' || *v == '\t'))
				v++;
			size_t vlen = (size_t)(p + n - v);
			while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == ' '))
				vlen--;
			if (vlen >= size)
				return NULL;
			memcpy(buf, v, vlen);
			buf[vlen] = '\0';
			return buf;
		}
		p = eol ? eol + 1 : p + n;
	}
	return NULL;
}

/* Finds "\r\n" (or a bare "\n") from p; returns the line length, or -1. */
static long line_len(const char *p, const char *end, const char **ret_next)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	if (!nl)
		return -1;
	*ret_next = nl + 1;
	if (nl > p && nl[-1] == '\r')
		nl--;
	return (long)(nl - p);
}

static int dechunk(const char *p, const char *end, struct vram_buf *out, char *err, size_t err_size)
{
	for (;;) {
		const char *next;
		long n = line_len(p, end, &next);
		if (n < 0) {
			snprintf(err, err_size, "truncated chunked body");
			return -EPROTO;
		}
		char *stop;
		unsigned long long size = strtoull(p, &stop, 16);
		if (stop == p) {
			snprintf(err, err_size, "bad chunk size");
			return -EPROTO;
		}
		p = next;
		if (size == 0)
			return 0;
		if (size > (unsigned long long)(end - p)) {
			snprintf(err, err_size, "truncated chunk");
			return -EPROTO;
		}
		int r = vram_buf_append(out, p, (size_t)size);
		if (r < 0) {
			snprintf(err, err_size, "response too large");
			return r;
		}
		p += size;
		if (p < end && *p == '\r')
			p++;
		if (p < end && *p == '\n')
			p++;
	}
}

int vram_client_parse_response(const char *raw, size_t len, struct vram_client_response *ret,
			       char *err, size_t err_size)
{
	const char *p = raw, *end = raw + len, *next;
	long n = line_len(p, end, &next);
	int major, minor, status;
	if (n < 12 || sscanf(p, "HTTP/%d.%d %3d", &major, &minor, &status) != 3 || status < 100 ||
	    status > 599) {
		snprintf(err, err_size, "not an HTTP response");
		return -EPROTO;
	}
	p = next;
	const char *headers_start = p;
	struct vram_client_response r = { .status = status };
	long long content_length = -1;
	bool chunked = false;
	for (;;) {
		n = line_len(p, end, &next);
		if (n < 0) {
			snprintf(err, err_size, "truncated headers");
			goto out_proto;
		}
		if (n == 0) {
			r.headers = strndup(headers_start, (size_t)(p - headers_start));
			p = next;
			break;
		}
		const char *colon = memchr(p, ':', (size_t)n);
		if (colon) {
			size_t klen = (size_t)(colon - p);
			const char *v = colon + 1;
			while (v < p + n && (*v == ' ' || *v == '\t'))
				v++;
			size_t vlen = (size_t)(p + n - v);
			if (klen == 14 && strncasecmp(p, "Content-Length", 14) == 0)
				content_length = strtoll(v, NULL, 10);
			else if (klen == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0 &&
				 vlen >= 7 && strncasecmp(v, "chunked", 7) == 0)
				chunked = true;
			else if (klen == 12 && strncasecmp(p, "Content-Type", 12) == 0 && !r.content_type)
				r.content_type = strndup(v, vlen);
		}
		p = next;
	}
	struct vram_buf body;
	vram_buf_init(&body, VRAM_CLIENT_RESPONSE_MAX);
	int e = 0;
	if (chunked) {
		e = dechunk(p, end, &body, err, err_size);
	} else {
		size_t avail = (size_t)(end - p);
		if (content_length >= 0) {
			if ((unsigned long long)content_length > avail) {
				snprintf(err, err_size, "truncated body (%zu of %lld bytes)", avail,
					 content_length);
				e = -EPROTO;
			} else {
				avail = (size_t)content_length;
			}
		}
		if (!e)
			e = vram_buf_append(&body, p, avail);
	}
	if (!e && vram_buf_puts(&body, "") < 0)
		e = -ENOMEM;
	if (e) {
		vram_buf_done(&body);
		if (e != -EPROTO)
			snprintf(err, err_size, "%s", strerror(-e));
		free(r.content_type);
		free(r.headers);
		return e;
	}
	r.body_len = body.len;
	r.body = vram_buf_take(&body);
	*ret = r;
	return 0;

out_proto:
	free(r.content_type);
	free(r.headers);
	return -EPROTO;
}

long long vram_client_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events, within the deadline. Returns 0 or -errno. */
int vram_client_wait_fd(int fd, short events, long long deadline_ms)
{
	for (;;) {
		int timeout = -1;
		if (deadline_ms) {
			long long left = deadline_ms - vram_client_now_ms();
			if (left <= 0)
				return -ETIMEDOUT;
			timeout = left > INT32_MAX ? INT32_MAX : (int)left;
		}
		struct pollfd pfd = { .fd = fd, .events = events };
		int r = poll(&pfd, 1, timeout);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

int vram_client_connect(const struct vram_client_url *url, char *err, size_t err_size)
{
	char where[512];
	vram_client_url_format(url, where, sizeof(where));
	if (url->is_unix) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", url->socket_path);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			int e = errno;
			snprintf(err, err_size, "cannot connect to vramd at %s: %s", where, strerror(e));
			close(fd);
			return -e;
		}
		return fd;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	char port[16];
	snprintf(port, sizeof(port), "%u", url->port);
	int r = getaddrinfo(url->host, port, &hints, &ai);
	if (r != 0) {
		snprintf(err, err_size, "cannot resolve %s: %s", url->host, gai_strerror(r));
		return -EHOSTUNREACH;
	}
	int e = ECONNREFUSED;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
			freeaddrinfo(ai);
			return fd;
		}
		e = errno;
		close(fd);
	}
	freeaddrinfo(ai);
	snprintf(err, err_size, "cannot connect to vramd at %s: %s", where, strerror(e));
	return -e;
}

void vram_client_io_error(const struct vram_client_url *url, int r, int timeout_ms, char *err,
			  size_t err_size)
{
	char where[512];
	vram_client_url_format(url, where, sizeof(where));
	if (r == -ETIMEDOUT)
		snprintf(err, err_size, "vramd at %s did not answer within %d ms", where, timeout_ms);
	else
		snprintf(err, err_size, "talking to vramd at %s: %s", where, strerror(-r));
}

int vram_client_format_request(struct vram_buf *out, const struct vram_client_url *url,
			       const char *method, const char *path, const char *headers,
			       const char *json_body, const char *token)
{
	size_t body_len = json_body ? strlen(json_body) : 0;
	int r = vram_buf_printf(out,
				"%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: vramctl/" VRAM_VERSION "\r\n"
				"Accept: application/json\r\nConnection: close\r\n",
				method, url->prefix, path, url->is_unix ? "localhost" : url->host);
	if (!r && token && *token)
		r = vram_buf_printf(out, "Authorization: Bearer %s\r\n", token);
	if (!r && headers)
		r = vram_buf_puts(out, headers);
	if (!r && json_body)
		r = vram_buf_printf(out, "Content-Type: application/json\r\nContent-Length: %zu\r\n",
				    body_len);
	else if (!r && strcmp(method, "GET") != 0)
		r = vram_buf_puts(out, "Content-Length: 0\r\n");
	if (!r)
		r = vram_buf_puts(out, "\r\n");
	if (!r && json_body)
		r = vram_buf_append(out, json_body, body_len);
	return r;
}

int vram_client_request(const struct vram_client_url *url, const char *method, const char *path,
			const char *json_body, const char *token, int timeout_ms,
			struct vram_client_response *ret, char *err, size_t err_size)
{
	return vram_client_request_headers(url, method, path, NULL, json_body, token, timeout_ms,
					   ret, err, err_size);
}

int vram_client_request_headers(const struct vram_client_url *url, const char *method,
				const char *path, const char *headers, const char *json_body,
				const char *token, int timeout_ms, struct vram_client_response *ret,
				char *err, size_t err_size)
{
	long long deadline = timeout_ms > 0 ? vram_client_now_ms() + timeout_ms : 0;
	int fd = vram_client_connect(url, err, err_size);
	if (fd < 0)
		return fd;

	struct vram_buf req;
	vram_buf_init(&req, (json_body ? strlen(json_body) : 0) + VRAM_CLIENT_HEAD_MAX);
	int r = vram_client_format_request(&req, url, method, path, headers, json_body, token);
	if (r < 0) {
		snprintf(err, err_size, "request too large");
		goto out;
	}

	for (size_t off = 0; off < req.len;) {
		if ((r = vram_client_wait_fd(fd, POLLOUT, deadline)) < 0)
			goto out_io;
		ssize_t n = send(fd, req.data + off, req.len - off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			r = -errno;
			goto out_io;
		}
		off += (size_t)n;
	}

	struct vram_buf resp;
	vram_buf_init(&resp, VRAM_CLIENT_RESPONSE_MAX);
	for (;;) {
		char chunk[16384];
		if ((r = vram_client_wait_fd(fd, POLLIN, deadline)) < 0)
			break;
		ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		if ((r = vram_buf_append(&resp, chunk, (size_t)n)) < 0)
			break;
	}
	if (r < 0) {
		vram_buf_done(&resp);
		if (r == -E2BIG)
			snprintf(err, err_size, "the reply is over %u bytes", VRAM_CLIENT_RESPONSE_MAX);
		else
			goto out_io;
		goto out;
	}
	r = vram_client_parse_response(resp.data ? resp.data : "", resp.len, ret, err, err_size);
	vram_buf_done(&resp);
	goto out;

out_io:
	vram_client_io_error(url, r, timeout_ms, err, err_size);
out:
	vram_buf_done(&req);
	close(fd);
	return r;
}
