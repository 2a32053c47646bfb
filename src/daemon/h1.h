/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 message framing (RFC 9112) for the gateway's proxy: request and
 * response heads parsed in place (spans into the caller's buffer, no
 * allocation), the body's framing decided from them, a chunked-body scanner
 * that can pass bytes through untouched or hand out the data, and the
 * header rules a proxy needs (hop-by-hop fields, RFC 9110 §7.6.1).
 *
 * The parser is strict where laxness lets a request be read two ways
 * (request smuggling): CRLF line ends only, no space before a colon, no
 * obsolete line folding, Transfer-Encoding other than "chunked" refused in
 * requests, Transfer-Encoding together with Content-Length refused in
 * requests, differing Content-Length values refused.
 */
#ifndef VRAM_H1_H
#define VRAM_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VRAM_H1_HEADERS_MAX 100 /* header lines in one head */
#define VRAM_H1_CHUNK_LINE_MAX 4096 /* bytes of a chunk-size line or a trailer line */

struct vram_h1_span {
	const char *p; /* borrowed: points into the parsed buffer */
	size_t n;      /* bytes */
};

struct vram_h1_header {
	struct vram_h1_span name, value; /* value without surrounding whitespace */
};

enum vram_h1_body {
	VRAM_H1_BODY_NONE,    /* no body (a request without length, HEAD/204/304 replies) */
	VRAM_H1_BODY_LENGTH,  /* Content-Length bytes */
	VRAM_H1_BODY_CHUNKED, /* Transfer-Encoding: chunked */
	VRAM_H1_BODY_CLOSE,   /* a response that ends when the connection closes */
};

struct vram_h1_head {
	struct vram_h1_span method, target; /* requests */
	int status;                         /* responses: 100..999 */
	struct vram_h1_span reason;         /* responses */
	int minor;                          /* HTTP/1.minor: 0 or 1 */
	size_t len;                         /* bytes of the head, blank line included */
	struct vram_h1_header h[VRAM_H1_HEADERS_MAX];
	size_t nh;
	enum vram_h1_body body;
	uint64_t content_length; /* bytes, when body is VRAM_H1_BODY_LENGTH */
	bool keep_alive;         /* the sender allows another message on the connection */
	bool expect_continue;    /* a request with "Expect: 100-continue" */
};

/*
 * Parses the request head at the start of buf (len bytes). Returns the
 * head's length in bytes (> 0) with h filled, 0 when it is not complete yet
 * and len < limit, or: -EMSGSIZE (no end within limit bytes), -E2BIG (more
 * than VRAM_H1_HEADERS_MAX lines), -EPROTONOSUPPORT (not HTTP/1.x), -EBADMSG
 * (malformed, or ambiguous framing; a bare LF or CR as soon as it is in the
 * bytes of the head given, complete or not). Spans in h point into buf.
 */
int vram_h1_parse_request(const char *buf, size_t len, size_t limit, struct vram_h1_head *h);

/*
 * Parses a response head the same way. head_request: the request was HEAD
 * (the response has no body whatever its headers say). A 1xx head is
 * returned like any other; its body is NONE and the real response follows.
 */
int vram_h1_parse_response(const char *buf, size_t len, size_t limit, bool head_request,
			   struct vram_h1_head *h);

/* The first header named name (no case), or NULL. */
const struct vram_h1_header *vram_h1_find(const struct vram_h1_head *h, const char *name);
/* True when span equals s without regard to case. */
bool vram_h1_span_eq(struct vram_h1_span span, const char *s);
/* True when the comma-separated list in value has token (no case). */
bool vram_h1_list_has(struct vram_h1_span value, const char *token);

/*
 * True for a header that belongs to one connection only (RFC 9110 §7.6.1):
 * Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding,
 * Upgrade, and every name listed in a Connection header of h.
 */
bool vram_h1_hop_by_hop(const struct vram_h1_head *h, struct vram_h1_span name);

/* Incremental state of a chunked body; zero it before the first call. */
struct vram_h1_chunked {
	int state;
	uint64_t left;  /* bytes of the current chunk still to come */
	size_t line;    /* bytes of the current size or trailer line so far */
	unsigned digits;
};

/* Receives the data bytes of a chunked body, in order. */
typedef int (*vram_h1_data_fn)(void *arg, const char *p, size_t n);

/*
 * Scans n bytes of a chunked body. data (may be NULL) gets the data bytes;
 * a negative return from it stops the scan and is returned. Returns the bytes
 * consumed: all n, or fewer when the body ended inside them (the rest is the
 * next message) with *done set. -EBADMSG for a malformed body, -EMSGSIZE for
 * a line over VRAM_H1_CHUNK_LINE_MAX or a chunk size over 2^60.
 */
ssize_t vram_h1_chunked_scan(struct vram_h1_chunked *c, const char *p, size_t n, bool *done,
			     vram_h1_data_fn data, void *arg);
/*
 * Whether what c scanned ends on a chunk boundary (or nothing was scanned):
 * a last chunk sent now would end the body well-formed.
 */
bool vram_h1_chunked_between(const struct vram_h1_chunked *c);

#endif
