/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the gateway's HTTP/1.1 framing (daemon/h1.c): the input is
 * parsed as a request head and as a response head, every span the parser
 * hands out must lie inside the input, and the bytes after a head are
 * scanned as a chunked body, whole and split at a point the first byte
 * picks, with the same outcome both ways. A request head also goes through
 * the front door's rules (daemon/access.c): Host, Origin and the preflight
 * and CORS header lines they lead to, and the API's method and body type.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/access.h"
#include "daemon/h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_span(struct vram_h1_span s, const char *buf, size_t size)
{
	if (s.n && (s.p < buf || s.p + s.n > buf + size))
		abort();
}

static void check_head(const struct vram_h1_head *h, int r, const char *buf, size_t size)
{
	if (r <= 0)
		return;
	if ((size_t)r > size || h->len != (size_t)r || h->nh > VRAM_H1_HEADERS_MAX)
		abort();
	check_span(h->method, buf, size);
	check_span(h->target, buf, size);
	check_span(h->reason, buf, size);
	for (size_t i = 0; i < h->nh; i++) {
		check_span(h->h[i].name, buf, size);
		check_span(h->h[i].value, buf, size);
		(void)vram_h1_hop_by_hop(h, h->h[i].name);
	}
}

struct count {
	size_t bytes;
};

static int count_data(void *arg, const char *p, size_t n)
{
	((struct count *)arg)->bytes += n;
	return 0;
}

/* The front door on a parsed request head: its texts stay NUL-terminated within bounds. */
static void check_access(const struct vram_h1_head *h, bool unix_socket)
{
	struct vram_access_listener l = { .unix_socket = unix_socket, .host = "0.0.0.0",
					  .port = 8600, .local_addr = "127.0.0.1" };
	struct vram_access a;
	vram_access_check(&l, NULL, h, &a);
	if (!memchr(a.message, '\0', sizeof(a.message)) || !memchr(a.origin, '\0', sizeof(a.origin)))
		abort();
	if (a.verdict == VRAM_ACCESS_REFUSE && (!a.code || a.status < 400))
		abort();
	char hdr[VRAM_ACCESS_HEADERS_MAX];
	if (a.verdict == VRAM_ACCESS_PREFLIGHT &&
	    (vram_access_preflight_headers(a.origin, h, hdr, sizeof(hdr)) < 0 ||
	     strlen(hdr) >= sizeof(hdr)))
		abort();
	if (vram_access_cors_headers(a.origin, hdr, sizeof(hdr)) < 0)
		abort();
	if (!vram_access_check_api(h, &a) && (a.status < 400 || !memchr(a.message, '\0', sizeof(a.message))))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct vram_h1_head h;
	int r = vram_h1_parse_request(buf, size, 16384, &h);
	check_head(&h, r, buf, size);
	if (r > 0)
		check_access(&h, size && (data[0] & 2));
	r = vram_h1_parse_response(buf, size, 65536, size && (data[0] & 1), &h);
	check_head(&h, r, buf, size);

	size_t off = r > 0 ? (size_t)r : 0;
	const char *body = buf + off;
	size_t n = size - off;
	struct vram_h1_chunked whole = { 0 }, split = { 0 };
	struct count cw = { 0 }, cs = { 0 };
	bool dw = false, ds = false;
	ssize_t a = vram_h1_chunked_scan(&whole, body, n, &dw, count_data, &cw);
	size_t cut = size ? data[0] % (n + 1) : 0;
	ssize_t b = vram_h1_chunked_scan(&split, body, cut, &ds, count_data, &cs);
	if (b >= 0 && !ds) {
		ssize_t b2 = vram_h1_chunked_scan(&split, body + cut, n - cut, &ds, count_data, &cs);
		b = b2 < 0 ? b2 : b + b2;
	}
	if ((a < 0) != (b < 0))
		abort(); /* an error seen whole is seen split too, and only then */
	if (a >= 0 && ((size_t)a > n || a != b || dw != ds || cw.bytes != cs.bytes))
		abort();
	return 0;
}
