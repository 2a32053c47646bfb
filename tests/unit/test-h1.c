/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 framing for the gateway: request and response heads, the body
 * framing they imply, the requests a proxy must refuse because two servers
 * could read them two ways, chunked bodies fed in any split, and the
 * hop-by-hop header rule (RFC 9110 §7.6.1).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/h1.h"

static int req(const char *s, struct vram_h1_head *h)
{
	return vram_h1_parse_request(s, strlen(s), 16384, h);
}

static bool span_is(struct vram_h1_span s, const char *v)
{
	return s.n == strlen(v) && memcmp(s.p, v, s.n) == 0;
}

static void test_request_head(void **state)
{
	struct vram_h1_head h;
	const char *s = "POST /v1/chat/completions?x=1 HTTP/1.1\r\n"
			"Host: a\r\n"
			"Content-Type:  application/json \r\n"
			"Content-Length: 12\r\n"
			"\r\n"
			"{\"model\":1}\n";
	int n = req(s, &h);
	assert_int_equal(n, (int)(strstr(s, "\r\n\r\n") - s) + 4);
	assert_true(span_is(h.method, "POST"));
	assert_true(span_is(h.target, "/v1/chat/completions?x=1"));
	assert_int_equal(h.minor, 1);
	assert_int_equal(h.nh, 3);
	assert_true(span_is(vram_h1_find(&h, "content-type")->value, "application/json"));
	assert_int_equal(h.body, VRAM_H1_BODY_LENGTH);
	assert_int_equal(h.content_length, 12);
	assert_true(h.keep_alive);
	assert_false(h.expect_continue);

	/* Incomplete: wait for more; over the limit: refused. */
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a\r\n", &h), 0);
	assert_int_equal(vram_h1_parse_request("GET / HTTP/1.1\r\nHost: a\r\n", 26, 20, &h), -EMSGSIZE);

	/* HTTP/1.0 closes unless it asks; 1.1 keeps unless it says close. */
	assert_true(req("GET / HTTP/1.0\r\n\r\n", &h) > 0);
	assert_false(h.keep_alive);
	assert_true(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h) > 0);
	assert_true(h.keep_alive);
	assert_true(req("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", &h) > 0);
	assert_false(h.keep_alive);
	assert_true(req("PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n", &h) > 0);
	assert_true(h.expect_continue);
	assert_true(req("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", &h) > 0);
	assert_int_equal(h.body, VRAM_H1_BODY_CHUNKED);
	/* "Content-Length: 5, 5" is one length (RFC 9110 §8.6); 0 is no body. */
	assert_true(req("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", &h) > 0);
	assert_int_equal(h.content_length, 5);
	assert_true(req("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &h) > 0);
	assert_int_equal(h.body, VRAM_H1_BODY_NONE);
}

static void test_request_refused(void **state)
{
	struct vram_h1_head h;
	/* Ambiguous framing: the smuggling cases. */
	assert_int_equal(req("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", &h),
			 -EBADMSG);
	assert_int_equal(req("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", &h),
			 -EBADMSG);
	assert_int_equal(req("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("POST / HTTP/1.1\r\nContent-Length: 9999999999999999999\r\n\r\n", &h),
			 -EBADMSG);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost : a\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n", &h), -EBADMSG);
	/* Bare LF or CR: refused at once, not after waiting for a CRLF CRLF that never comes. */
	assert_int_equal(req("GET / HTTP/1.1\n", &h), -EBADMSG);
	assert_int_equal(req("GET / HTTP/1.1\nHost: a\n\n", &h), -EBADMSG);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a\n", &h), -EBADMSG);
	assert_int_equal(req("GET / HTTP/1.1\r\nHost: a\rb", &h), -EBADMSG);
	assert_int_equal(req("\nGET / HTTP/1.1\r\n", &h), -EBADMSG);
	/* A CR at the end of what came so far may still be a CRLF; a LF in the body is data. */
	assert_int_equal(req("GET / HTTP/1.1\r", &h), 0);
	assert_true(req("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na\nb", &h) > 0);
	assert_int_equal(req("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("GET / HTTP/1.1\r\n: a\r\n\r\n", &h), -EBADMSG);
	/* Request lines. */
	assert_int_equal(req("GET /  HTTP/1.1\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("GET / HTTP/2.0\r\n\r\n", &h), -EPROTONOSUPPORT);
	assert_int_equal(req("GET / HTTX/1.1\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("G(T / HTTP/1.1\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("GET\r\n\r\n", &h), -EBADMSG);
	assert_int_equal(req("GET /a\x7f HTTP/1.1\r\n\r\n", &h), -EBADMSG);

	/* More header lines than allowed. */
	char big[8192] = "GET / HTTP/1.1\r\n";
	for (int i = 0; i <= VRAM_H1_HEADERS_MAX; i++)
		strcat(big, "X: 1\r\n");
	strcat(big, "\r\n");
	assert_int_equal(req(big, &h), -E2BIG);
}

static int resp(const char *s, bool head_req, struct vram_h1_head *h)
{
	return vram_h1_parse_response(s, strlen(s), 65536, head_req, h);
}

static void test_response_head(void **state)
{
	struct vram_h1_head h;
	/* A bare LF is refused before the head is complete, as in requests. */
	assert_int_equal(resp("HTTP/1.1 200 OK\n", false, &h), -EBADMSG);
	assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false, &h) > 0);
	assert_int_equal(h.status, 200);
	assert_true(span_is(h.reason, "OK"));
	assert_int_equal(h.body, VRAM_H1_BODY_LENGTH);
	assert_true(h.keep_alive);
	/* No framing: the body runs to the close, and the connection is not reused. */
	assert_true(resp("HTTP/1.1 200 OK\r\n\r\n", false, &h) > 0);
	assert_int_equal(h.body, VRAM_H1_BODY_CLOSE);
	assert_false(h.keep_alive);
	/* No body whatever the headers say. */
	assert_true(resp("HTTP/1.1 204 No Content\r\n\r\n", false, &h) > 0);
	assert_int_equal(h.body, VRAM_H1_BODY_NONE);
	assert_true(resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false, &h) > 0);
	assert_int_equal(h.body, VRAM_H1_BODY_NONE);
	assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, &h) > 0);
	assert_int_equal(h.body, VRAM_H1_BODY_NONE);
	assert_true(resp("HTTP/1.1 100 Continue\r\n\r\n", false, &h) > 0);
	assert_int_equal(h.status, 100);
	assert_int_equal(h.body, VRAM_H1_BODY_NONE);
	/* Chunked wins over a length in a response; an empty reason is fine. */
	assert_true(resp("HTTP/1.1 200\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
			 false, &h) > 0);
	assert_int_equal(h.body, VRAM_H1_BODY_CHUNKED);
	assert_int_equal(h.reason.n, 0);
	assert_true(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, &h) > 0);
	assert_false(h.keep_alive);
	/* Broken ones. */
	assert_int_equal(resp("HTTP/1.1 2x0 OK\r\n\r\n", false, &h), -EBADMSG);
	assert_int_equal(resp("HTTP/1.1 099 Low\r\n\r\n", false, &h), -EBADMSG);
	assert_int_equal(resp("ICY 200 OK\r\n\r\n", false, &h), -EBADMSG);
	assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, &h),
			 -EBADMSG);
}

struct collected {
	char data[256];
	size_t n;
};

static int collect(void *arg, const char *p, size_t n)
{
	struct collected *c = arg;
	memcpy(c->data + c->n, p, n);
	c->n += n;
	return 0;
}

static int refuse(void *arg, const char *p, size_t n)
{
	return -E2BIG;
}

/* Feeds s split at every position, with the decoded data and the bytes used. */
static void chunked_split(const char *s, const char *want, size_t want_used)
{
	size_t len = strlen(s);
	for (size_t cut = 0; cut <= len; cut++) {
		struct vram_h1_chunked ck = { 0 };
		struct collected col = { .n = 0 };
		bool done = false;
		ssize_t a = vram_h1_chunked_scan(&ck, s, cut, &done, collect, &col);
		assert_true(a >= 0);
		size_t used = (size_t)a;
		if (!done) {
			assert_int_equal(used, cut);
			ssize_t b = vram_h1_chunked_scan(&ck, s + cut, len - cut, &done, collect, &col);
			assert_true(b >= 0);
			used += (size_t)b;
		}
		assert_true(done);
		assert_int_equal(used, want_used);
		assert_int_equal(col.n, strlen(want));
		assert_memory_equal(col.data, want, col.n);
	}
}

static void test_chunked(void **state)
{
	const char *body = "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n";
	chunked_split(body, "hello 0123456789", strlen(body));
	/* Trailers, and bytes of the next message after the end. */
	const char *tr = "3\r\nabc\r\n0\r\nX-T: 1\r\nY: 2\r\n\r\nGET / HTTP/1.1";
	chunked_split(tr, "abc", strlen(tr) - strlen("GET / HTTP/1.1"));

	struct vram_h1_chunked ck = { 0 };
	bool done;
	const char *bad[] = { "x\r\n", "5\r\nhelloX\r\n", "5\nhello\r\n", "\r\n",
			      "0\r\nX\nY\r\n\r\n" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&ck, 0, sizeof(ck));
		assert_int_equal(vram_h1_chunked_scan(&ck, bad[i], strlen(bad[i]), &done, NULL, NULL),
				 -EBADMSG);
	}
	memset(&ck, 0, sizeof(ck));
	assert_int_equal(vram_h1_chunked_scan(&ck, "1000000000000000\r\n", 18, &done, NULL, NULL),
			 -EMSGSIZE);
	/* A data callback's error stops the scan. */
	memset(&ck, 0, sizeof(ck));
	assert_int_equal(vram_h1_chunked_scan(&ck, "1\r\na\r\n", 6, &done, refuse, NULL), -E2BIG);
}

static void test_hop_by_hop(void **state)
{
	struct vram_h1_head h;
	const char *s = "GET / HTTP/1.1\r\n"
			"Connection: keep-alive, X-Drop\r\n"
			"connection: X-Drop-Too\r\n"
			"X-Keep: 1\r\n\r\n";
	assert_true(req(s, &h) > 0);
	const char *fixed[] = { "Connection", "keep-alive", "Proxy-Connection", "te", "Trailer",
				"TRANSFER-ENCODING", "Upgrade", "x-drop", "X-DROP-TOO" };
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		assert_true(vram_h1_hop_by_hop(&h, (struct vram_h1_span){ fixed[i], strlen(fixed[i]) }));
	const char *kept[] = { "X-Keep", "X-Dro", "X-Drop-Too-2", "Content-Length", "Authorization" };
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
		assert_false(vram_h1_hop_by_hop(&h, (struct vram_h1_span){ kept[i], strlen(kept[i]) }));
	struct vram_h1_span list = { " ,a , b,,c ", 11 };
	assert_true(vram_h1_list_has(list, "A"));
	assert_true(vram_h1_list_has(list, "b"));
	assert_true(vram_h1_list_has(list, "c"));
	assert_false(vram_h1_list_has(list, ""));
	assert_false(vram_h1_list_has(list, "a , b"));
}

/* Where a body may be ended by a last chunk: only between two chunks, never inside one. */
static void test_chunked_between(void **state)
{
	(void)state;
	static const char body[] = "5\r\nhello\r\n3;x=1\r\nabc\r\n";
	struct vram_h1_chunked ck = { 0 };
	bool done;
	assert_true(vram_h1_chunked_between(&ck)); /* nothing yet */
	size_t len = strlen(body);
	for (size_t i = 0; i < len; i++) {
		assert_int_equal(vram_h1_chunked_scan(&ck, body + i, 1, &done, NULL, NULL), 1);
		/* after "hello\r\n" (index 9) and after "abc\r\n" (the end), nowhere else */
		bool want = i == 9 || i == len - 1;
		if (vram_h1_chunked_between(&ck) != want)
			fail_msg("after %zu bytes: between is %d", i + 1, !want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_head),
		cmocka_unit_test(test_request_refused),
		cmocka_unit_test(test_response_head),
		cmocka_unit_test(test_chunked),
		cmocka_unit_test(test_chunked_between),
		cmocka_unit_test(test_hop_by_hop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
