/* SPDX-License-Identifier: MIT */
/*
 * The gateway's pure parts: where a request's model is found (JSON, forms,
 * the query) and which headers stay on one connection (RFC 9110 §7.6.1).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <cmocka.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "daemon/gateway.h"

static int model_of(const char *ctype, const char *body, const char *query, char *out, size_t size)
{
	return vram_gateway_find_model(ctype, body, strlen(body), query, out, size);
}

static void test_model_from_json(void **state)
{
	char m[64];
	assert_int_equal(model_of("application/json", "{\"messages\":[],\"model\":\"qwen-7b\"}", NULL, m,
				  sizeof(m)), 0);
	assert_string_equal(m, "qwen-7b");
	/* Media type parameters and +json types. */
	assert_int_equal(model_of("application/json; charset=utf-8", "{\"model\":\"a\"}", NULL, m,
				  sizeof(m)), 0);
	assert_string_equal(m, "a");
	assert_int_equal(model_of("application/vnd.x+json", "{\"model\":\"b\"}", NULL, m, sizeof(m)), 0);
	assert_string_equal(m, "b");
	/* A JSON body sent as a form (curl -d) or without a type. */
	assert_int_equal(model_of("application/x-www-form-urlencoded", " {\"model\":\"c\"}", NULL, m,
				  sizeof(m)), 0);
	assert_string_equal(m, "c");
	assert_int_equal(model_of(NULL, "{\"model\":\"d\"}", NULL, m, sizeof(m)), 0);
	assert_string_equal(m, "d");
	/* Not a string, missing, empty, broken JSON, not an object. */
	assert_int_equal(model_of("application/json", "{\"model\":7}", NULL, m, sizeof(m)), -ENOENT);
	assert_int_equal(model_of("application/json", "{\"x\":1}", NULL, m, sizeof(m)), -ENOENT);
	assert_int_equal(model_of("application/json", "{\"model\":\"\"}", NULL, m, sizeof(m)), -ENOENT);
	assert_int_equal(model_of("application/json", "{\"model\":", NULL, m, sizeof(m)), -ENOENT);
	assert_int_equal(model_of("application/json", "[\"model\"]", NULL, m, sizeof(m)), -ENOENT);
	/* An embedded NUL is not a name (the parser refuses it); too long does not fit. */
	assert_int_equal(model_of("application/json", "{\"model\":\"a\\u0000b\"}", NULL, m, sizeof(m)),
			 -ENOENT);
	assert_int_equal(model_of("application/json", "{\"model\":\"abcdefgh\"}", NULL, m, 8), -E2BIG);
	/* The body wins over the query; the query is the fallback. */
	assert_int_equal(model_of("application/json", "{\"model\":\"body\"}", "model=query", m,
				  sizeof(m)), 0);
	assert_string_equal(m, "body");
	assert_int_equal(model_of("application/json", "{}", "a=1&model=q%20x", m, sizeof(m)), 0);
	assert_string_equal(m, "q x");
}

static void test_model_from_forms(void **state)
{
	char m[64];
	assert_int_equal(model_of("application/x-www-form-urlencoded", "prompt=hi&model=whisper%2Dlarge",
				  NULL, m, sizeof(m)), 0);
	assert_string_equal(m, "whisper-large");
	assert_int_equal(model_of("application/x-www-form-urlencoded", "prompt=hi", NULL, m, sizeof(m)),
			 -ENOENT);

	const char *mp = "--XyZ\r\n"
			 "Content-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
			 "Content-Type: audio/wav\r\n\r\n"
			 "RIFF model whatever\r\n"
			 "--XyZ\r\n"
			 "content-disposition: form-data; name=\"model\"\r\n\r\n"
			 "whisper-1\r\n"
			 "--XyZ--\r\n";
	assert_int_equal(model_of("multipart/form-data; boundary=XyZ", mp, NULL, m, sizeof(m)), 0);
	assert_string_equal(m, "whisper-1");
	assert_int_equal(model_of("multipart/form-data; boundary=\"XyZ\"", mp, NULL, m, sizeof(m)), 0);
	assert_string_equal(m, "whisper-1");
	/* A part named "model_x" is not "model"; a wrong boundary finds nothing. */
	const char *other = "--b\r\nContent-Disposition: form-data; name=\"model_x\"\r\n\r\nv\r\n--b--\r\n";
	assert_int_equal(model_of("multipart/form-data; boundary=b", other, NULL, m, sizeof(m)), -ENOENT);
	assert_int_equal(model_of("multipart/form-data; boundary=nope", mp, NULL, m, sizeof(m)), -ENOENT);
	assert_int_equal(model_of("multipart/form-data", mp, NULL, m, sizeof(m)), -ENOENT);
	/* Truncated: no closing delimiter after the value. */
	const char *cut = "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nv";
	assert_int_equal(model_of("multipart/form-data; boundary=b", cut, NULL, m, sizeof(m)), -ENOENT);
	/* GET with only a query. */
	assert_int_equal(model_of(NULL, "", "model=embed", m, sizeof(m)), 0);
	assert_string_equal(m, "embed");
	assert_int_equal(model_of(NULL, "", NULL, m, sizeof(m)), -ENOENT);
}

static void test_hop_by_hop(void **state)
{
	const char *fixed[] = { "Connection", "keep-alive", "Proxy-Connection", "te", "Trailer",
				"TRANSFER-ENCODING", "Upgrade" };
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		assert_true(vram_gateway_hop_by_hop(fixed[i], NULL));
	assert_false(vram_gateway_hop_by_hop("Content-Type", NULL));
	assert_false(vram_gateway_hop_by_hop("Content-Length", "close"));
	/* Names listed in Connection, with spaces and empty items. */
	assert_true(vram_gateway_hop_by_hop("X-Secret", "close, x-secret"));
	assert_true(vram_gateway_hop_by_hop("X-Other", " ,X-Other ,"));
	assert_false(vram_gateway_hop_by_hop("X-Secre", "x-secret"));
	assert_false(vram_gateway_hop_by_hop("X-Secret-2", "x-secret"));
}

static void test_copy_headers(void **state)
{
	struct evkeyvalq src, dst;
	TAILQ_INIT(&src);
	TAILQ_INIT(&dst);
	evhttp_add_header(&src, "Host", "example");
	evhttp_add_header(&src, "Connection", "keep-alive, X-Drop");
	evhttp_add_header(&src, "connection", "X-Drop-Too");
	evhttp_add_header(&src, "Keep-Alive", "timeout=5");
	evhttp_add_header(&src, "X-Drop", "1");
	evhttp_add_header(&src, "X-Drop-Too", "1");
	evhttp_add_header(&src, "Transfer-Encoding", "chunked");
	evhttp_add_header(&src, "Authorization", "Bearer t");
	evhttp_add_header(&src, "X-Keep", "1");
	assert_int_equal(vram_gateway_copy_headers(&src, &dst), 3);
	assert_string_equal(evhttp_find_header(&dst, "Host"), "example");
	assert_string_equal(evhttp_find_header(&dst, "Authorization"), "Bearer t");
	assert_string_equal(evhttp_find_header(&dst, "X-Keep"), "1");
	assert_null(evhttp_find_header(&dst, "X-Drop"));
	assert_null(evhttp_find_header(&dst, "X-Drop-Too"));
	assert_null(evhttp_find_header(&dst, "Connection"));
	assert_null(evhttp_find_header(&dst, "Transfer-Encoding"));
	evhttp_clear_headers(&dst);

	/* Too many lines: refused, nothing copied. */
	for (int i = 0; i < VRAM_GATEWAY_HEADERS_COUNT_MAX; i++)
		evhttp_add_header(&src, "X-Many", "1");
	assert_int_equal(vram_gateway_copy_headers(&src, &dst), -E2BIG);
	assert_null(TAILQ_FIRST(&dst));
	evhttp_clear_headers(&src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_from_json),
		cmocka_unit_test(test_model_from_forms),
		cmocka_unit_test(test_hop_by_hop),
		cmocka_unit_test(test_copy_headers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
