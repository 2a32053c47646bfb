/* SPDX-License-Identifier: MIT */
/*
 * Base64: the RFC 4648 test vectors both ways, the values MCP's header
 * encoding is for (non-ASCII, newlines), and that a value from a client
 * cannot overrun the buffer it is decoded into.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/base64.h"

static const char *const vectors[][2] = {
	{ "", "" },	    { "f", "Zg==" },	     { "fo", "Zm8=" },	       { "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	/* The examples of the MCP Streamable HTTP transport's value encoding. */
	{ "Hello, \xe4\xb8\x96\xe7\x95\x8c", "SGVsbG8sIOS4lueVjA==" },
	{ "line1\nline2", "bGluZTEKbGluZTI=" },
};

static void test_vectors(void **state)
{
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		char enc[64], dec[64];
		size_t n = 0;
		assert_int_equal(vram_base64_encode(vectors[i][0], strlen(vectors[i][0]), enc,
						    sizeof(enc)),
				 0);
		assert_string_equal(enc, vectors[i][1]);
		assert_int_equal(strlen(enc), VRAM_BASE64_ENCODED_LEN(strlen(vectors[i][0])));
		assert_int_equal(vram_base64_decode(enc, strlen(enc), dec, sizeof(dec), &n), 0);
		assert_int_equal(n, strlen(vectors[i][0]));
		assert_string_equal(dec, vectors[i][0]);
	}
}

static void test_bounds_and_bad_text(void **state)
{
	char small[4] = "xyz";
	size_t n = 99;
	/* "foobar" needs 9 bytes encoded, 7 decoded. */
	assert_int_equal(vram_base64_encode("foobar", 6, small, sizeof(small)), -ENOSPC);
	assert_string_equal(small, "xyz");
	assert_int_equal(vram_base64_decode("Zm9vYmFy", 8, small, sizeof(small), &n), -ENOSPC);
	assert_string_equal(small, "xyz");
	assert_int_equal(n, 99);

	char out[16];
	static const char *const bad[] = { "Zm9", "Zm9v!A==", "Z=9v", "====", "Zm 9", "A===" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(vram_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n),
				 -EINVAL);
	assert_int_equal(n, 99);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_bounds_and_bad_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
