/* SPDX-License-Identifier: MIT */
/*
 * The gateway's pure part: where a request's model is found (JSON, forms,
 * the query). The HTTP framing is tested in test-h1.c, the proxy itself in
 * tests/integration/test_gateway.py.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_from_json),
		cmocka_unit_test(test_model_from_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
