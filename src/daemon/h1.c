/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 heads and chunked bodies; see h1.h. Everything here works on
 * bytes already received: no I/O, no allocation.
 */
#include "daemon/h1.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 §5.6.2 tchar */
static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool vram_h1_span_eq(struct vram_h1_span span, const char *s)
{
	size_t n = strlen(s);
	return span.n == n && strncasecmp(span.p, s, n) == 0;
}

bool vram_h1_list_has(struct vram_h1_span value, const char *token)
{
	size_t tlen = strlen(token);
	const char *p = value.p, *end = value.p + value.n;
	while (p < end) {
		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		const char *e = p;
		while (e < end && *e != ',')
			e++;
		const char *t = e;
		while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
			t--;
		if ((size_t)(t - p) == tlen && tlen && strncasecmp(p, token, tlen) == 0)
			return true;
		p = e;
	}
	return false;
}

const struct vram_h1_header *vram_h1_find(const struct vram_h1_head *h, const char *name)
{
	for (size_t i = 0; i < h->nh; i++)
		if (vram_h1_span_eq(h->h[i].name, name))
			return &h->h[i];
	return NULL;
}

bool vram_h1_hop_by_hop(const struct vram_h1_head *h, struct vram_h1_span name)
{
	static const char *const fixed[] = { "Connection", "Keep-Alive", "Proxy-Connection", "TE",
					     "Trailer", "Transfer-Encoding", "Upgrade" };
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (vram_h1_span_eq(name, fixed[i]))
			return true;
	/* Several Connection lines are one list (RFC 9110 §5.3). */
	char tok[128];
	if (name.n >= sizeof(tok))
		return false;
	memcpy(tok, name.p, name.n);
	tok[name.n] = '\0';
	for (size_t i = 0; i < h->nh; i++)
		if (vram_h1_span_eq(h->h[i].name, "Connection") && vram_h1_list_has(h->h[i].value, tok))
			return true;
	return false;
}

/* "HTTP/1.x" at p (8 bytes available); the minor version or -1. */
static int version_at(const char *p)
{
	if (memcmp(p, "HTTP/1.", 7) != 0)
		return -1;
	if (p[7] == '0' || p[7] == '1')
		return p[7] - '0';
	return -1;
}

/* Content-Length: 1*DIGIT, at most 18 of them. */
static int parse_length(struct vram_h1_span v, uint64_t *ret)
{
	if (v.n == 0 || v.n > 18)
		return -EBADMSG;
	uint64_t n = 0;
	for (size_t i = 0; i < v.n; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return -EBADMSG;
		n = n * 10 + (uint64_t)(v.p[i] - '0');
	}
	*ret = n;
	return 0;
}

/*
 * Parses the header lines from p (just after the start line) to the blank
 * line at end (which points at its CRLF), then decides framing fields that
 * both kinds of message share. Returns 0 or -errno.
 */
static int parse_fields(const char *p, const char *end, struct vram_h1_head *h)
{
	h->nh = 0;
	while (p < end) {
		const char *eol = memchr(p, '\r', (size_t)(end - p) + 1);
		if (!eol || eol[1] != '\n')
			return -EBADMSG;
		if (h->nh == VRAM_H1_HEADERS_MAX)
			return -E2BIG;
		const char *colon = p;
		while (colon < eol && is_tchar((unsigned char)*colon))
			colon++;
		/* No name, a space before the colon, or obs-fold (a line starting with space). */
		if (colon == p || colon == eol || *colon != ':')
			return -EBADMSG;
		const char *v = colon + 1, *ve = eol;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (const char *c = v; c < ve; c++)
			if (((unsigned char)*c < 0x20 && *c != '\t') || (unsigned char)*c == 0x7f)
				return -EBADMSG;
		struct vram_h1_header *hd = &h->h[h->nh++];
		hd->name = (struct vram_h1_span){ p, (size_t)(colon - p) };
		hd->value = (struct vram_h1_span){ v, (size_t)(ve - v) };
		p = eol + 2;
	}

	bool has_length = false, has_te = false, te_chunked = false, close = false, ka = false;
	h->content_length = 0;
	h->expect_continue = false;
	for (size_t i = 0; i < h->nh; i++) {
		struct vram_h1_span n = h->h[i].name, v = h->h[i].value;
		if (vram_h1_span_eq(n, "Content-Length")) {
			/* A list "5, 5" is allowed only if every member is the same (RFC 9110 §8.6). */
			const char *s = v.p, *e = v.p + v.n;
			while (s < e) {
				const char *c = memchr(s, ',', (size_t)(e - s));
				const char *ie = c ? c : e;
				struct vram_h1_span one = { s, (size_t)(ie - s) };
				while (one.n && (one.p[0] == ' ' || one.p[0] == '\t')) {
					one.p++;
					one.n--;
				}
				while (one.n && (one.p[one.n - 1] == ' ' || one.p[one.n - 1] == '\t'))
					one.n--;
				uint64_t len;
				if (parse_length(one, &len) < 0)
					return -EBADMSG;
				if (has_length && len != h->content_length)
					return -EBADMSG;
				h->content_length = len;
				has_length = true;
				s = c ? c + 1 : e;
			}
		} else if (vram_h1_span_eq(n, "Transfer-Encoding")) {
			has_te = true;
			/* chunked must be the last coding; we accept it alone. */
			te_chunked = vram_h1_span_eq(v, "chunked");
		} else if (vram_h1_span_eq(n, "Connection")) {
			close |= vram_h1_list_has(v, "close");
			ka |= vram_h1_list_has(v, "keep-alive");
		} else if (vram_h1_span_eq(n, "Expect")) {
			h->expect_continue = vram_h1_span_eq(v, "100-continue");
		}
	}
	h->keep_alive = h->minor >= 1 ? !close : (ka && !close);
	if (has_te) {
		if (!te_chunked || (has_length && h->method.p))
			return -EBADMSG; /* ambiguous or unknown framing (RFC 9112 §6.1, §6.3) */
		h->body = VRAM_H1_BODY_CHUNKED;
	} else if (has_length) {
		h->body = h->content_length ? VRAM_H1_BODY_LENGTH : VRAM_H1_BODY_NONE;
	} else {
		h->body = VRAM_H1_BODY_NONE;
	}
	return 0;
}

/*
 * Finds the head's end; returns its length, 0 (not yet), -EMSGSIZE, or
 * -EBADMSG for a CR or LF that is not part of a CRLF in the bytes of the
 * head received so far. The last must be known before the head is complete:
 * a sender that ends its lines with LF alone never sends the CRLF CRLF that
 * completes a head, and would wait for the idle timeout instead of an answer.
 */
static int head_end(const char *buf, size_t len, size_t limit)
{
	size_t scan = len < limit ? len : limit;
	const char *e = memmem(buf, scan, "\r\n\r\n", 4);
	const char *end = e ? e + 4 : buf + scan;
	for (const char *p = buf; (p = memchr(p, '\n', (size_t)(end - p))); p++)
		if (p == buf || p[-1] != '\r')
			return -EBADMSG;
	for (const char *p = buf; (p = memchr(p, '\r', (size_t)(end - p))); p++)
		if (p + 1 < end && p[1] != '\n')
			return -EBADMSG;
	if (!e)
		return len >= limit ? -EMSGSIZE : 0;
	return (int)(end - buf);
}

int vram_h1_parse_request(const char *buf, size_t len, size_t limit, struct vram_h1_head *h)
{
	/* Robustness (RFC 9112 §2.2): empty lines before a request are ignored by the caller. */
	int hl = head_end(buf, len, limit);
	if (hl <= 0)
		return hl;
	memset(h, 0, offsetof(struct vram_h1_head, h));
	const char *p = buf, *end = buf + hl - 2; /* end: the blank line's CRLF */
	const char *eol = memchr(p, '\r', (size_t)(end - p) + 1);
	const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
	if (!sp1 || sp1 == p)
		return -EBADMSG;
	for (const char *c = p; c < sp1; c++)
		if (!is_tchar((unsigned char)*c))
			return -EBADMSG;
	const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	if (!sp2 || sp2 == sp1 + 1 || eol - sp2 - 1 != 8)
		return -EBADMSG;
	for (const char *c = sp1 + 1; c < sp2; c++)
		if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f)
			return -EBADMSG;
	if (memcmp(sp2 + 1, "HTTP/", 5) != 0)
		return -EBADMSG;
	h->minor = version_at(sp2 + 1);
	if (h->minor < 0)
		return -EPROTONOSUPPORT;
	h->method = (struct vram_h1_span){ p, (size_t)(sp1 - p) };
	h->target = (struct vram_h1_span){ sp1 + 1, (size_t)(sp2 - sp1 - 1) };
	h->len = (size_t)hl;
	int r = parse_fields(eol + 2, end, h);
	return r < 0 ? r : hl;
}

int vram_h1_parse_response(const char *buf, size_t len, size_t limit, bool head_request,
			   struct vram_h1_head *h)
{
	int hl = head_end(buf, len, limit);
	if (hl <= 0)
		return hl;
	memset(h, 0, offsetof(struct vram_h1_head, h));
	const char *p = buf, *end = buf + hl - 2;
	const char *eol = memchr(p, '\r', (size_t)(end - p) + 1);
	/* "HTTP/1.1 200 OK": the reason may be empty, the space before it may be missing. */
	if (eol - p < 12 || p[8] != ' ' || (eol - p > 12 && p[12] != ' '))
		return -EBADMSG;
	if (memcmp(p, "HTTP/", 5) != 0)
		return -EBADMSG;
	h->minor = version_at(p);
	if (h->minor < 0)
		return -EPROTONOSUPPORT;
	int status = 0;
	for (int i = 9; i < 12; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EBADMSG;
		status = status * 10 + (p[i] - '0');
	}
	if (status < 100)
		return -EBADMSG;
	h->status = status;
	h->reason = eol - p > 12 ? (struct vram_h1_span){ p + 13, (size_t)(eol - p - 13) }
				 : (struct vram_h1_span){ p + 12, 0 };
	h->len = (size_t)hl;
	int r = parse_fields(eol + 2, end, h);
	if (r < 0)
		return r;
	/* RFC 9112 §6.3: these never have a body; without framing, the body runs to close. */
	if (head_request || status < 200 || status == 204 || status == 304)
		h->body = VRAM_H1_BODY_NONE;
	else if (h->body == VRAM_H1_BODY_NONE && !vram_h1_find(h, "Content-Length"))
		h->body = VRAM_H1_BODY_CLOSE;
	if (h->body == VRAM_H1_BODY_CLOSE)
		h->keep_alive = false;
	return hl;
}

enum {
	CK_SIZE,     /* hex digits of a chunk size */
	CK_EXT,      /* chunk extensions up to CR */
	CK_SIZE_LF,  /* LF after the size line */
	CK_DATA,     /* chunk data */
	CK_DATA_CR,  /* CR after the data */
	CK_DATA_LF,  /* LF after the data */
	CK_TRAILER,  /* start of a trailer line (or the final CRLF) */
	CK_TRAILER_LINE, /* inside a trailer line */
	CK_TRAILER_LF,   /* LF after a trailer line */
	CK_END_LF,       /* LF of the final CRLF */
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool vram_h1_chunked_between(const struct vram_h1_chunked *c)
{
	return c->state == CK_SIZE && c->digits == 0;
}

ssize_t vram_h1_chunked_scan(struct vram_h1_chunked *c, const char *p, size_t n, bool *done,
			     vram_h1_data_fn data, void *arg)
{
	size_t i = 0;
	*done = false;
	while (i < n) {
		char ch = p[i];
		switch (c->state) {
		case CK_SIZE: {
			int v = hexval(ch);
			if (v >= 0) {
				if (c->digits == 15)
					return -EMSGSIZE;
				c->left = c->left * 16 + (uint64_t)v;
				c->digits++;
				i++;
				break;
			}
			if (c->digits == 0)
				return -EBADMSG;
			c->state = CK_EXT;
			c->line = c->digits;
			break; /* look at ch again as an extension byte */
		}
		case CK_EXT:
			if (ch == '\r') {
				c->state = CK_SIZE_LF;
			} else if (ch == '\n' || ((unsigned char)ch < 0x20 && ch != '\t')) {
				return -EBADMSG;
			} else if (++c->line > VRAM_H1_CHUNK_LINE_MAX) {
				return -EMSGSIZE;
			}
			i++;
			break;
		case CK_SIZE_LF:
			if (ch != '\n')
				return -EBADMSG;
			i++;
			c->state = c->left ? CK_DATA : CK_TRAILER;
			c->line = 0;
			break;
		case CK_DATA: {
			size_t take = n - i;
			if ((uint64_t)take > c->left)
				take = (size_t)c->left;
			if (data) {
				int r = data(arg, p + i, take);
				if (r < 0)
					return r;
			}
			i += take;
			c->left -= take;
			if (c->left == 0)
				c->state = CK_DATA_CR;
			break;
		}
		case CK_DATA_CR:
			if (ch != '\r')
				return -EBADMSG;
			i++;
			c->state = CK_DATA_LF;
			break;
		case CK_DATA_LF:
			if (ch != '\n')
				return -EBADMSG;
			i++;
			c->state = CK_SIZE;
			c->digits = 0;
			c->left = 0;
			break;
		case CK_TRAILER:
			i++;
			if (ch == '\r') {
				c->state = CK_END_LF;
			} else if (ch == '\n') {
				return -EBADMSG;
			} else {
				c->state = CK_TRAILER_LINE;
				c->line = 1;
			}
			break;
		case CK_TRAILER_LINE:
			i++;
			if (ch == '\r')
				c->state = CK_TRAILER_LF;
			else if (ch == '\n')
				return -EBADMSG;
			else if (++c->line > VRAM_H1_CHUNK_LINE_MAX)
				return -EMSGSIZE;
			break;
		case CK_TRAILER_LF:
			if (ch != '\n')
				return -EBADMSG;
			i++;
			c->state = CK_TRAILER;
			break;
		case CK_END_LF:
			if (ch != '\n')
				return -EBADMSG;
			i++;
			*done = true;
			return (ssize_t)i;
		default:
			return -EBADMSG;
		}
	}
	return (ssize_t)i;
}
