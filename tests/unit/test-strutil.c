/* SPDX-License-Identifier: MIT */
/*
 * UTF-8 checks and repairs for client text on its way into JSON, and the
 * escaping of control characters for log lines: what jansson refuses is
 * refused here too, a repaired text is always accepted by jansson, and a
 * cut never falls inside a character.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/strutil.h"

/* "é" is c3 a9, "€" is e2 82 ac, U+1F600 is f0 9f 98 80. */
static void test_utf8_valid(void **state)
{
	static const char *const good[] = {
		"", "chat", "caf\xc3\xa9", "\xe2\x82\xac 5", "\xf0\x9f\x98\x80", "\xed\x9f\xbf",
		"\xf4\x8f\xbf\xbf", "\x7f",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!vram_utf8_valid(good[i], strlen(good[i])))
			fail_msg("good[%zu] was refused", i);
	static const char *const bad[] = {
		"\xe2\x82",         /* cut inside a character */
		"ab\xe2",           /* cut after the first byte */
		"\x80",             /* a stray continuation byte */
		"\xc0\xaf",         /* overlong "/" */
		"\xe0\x80\xaf",     /* overlong, three bytes */
		"\xed\xa0\x80",     /* a UTF-16 surrogate, U+D800 */
		"\xf4\x90\x80\x80", /* above U+10FFFF */
		"\xff",             /* never in UTF-8 */
		"\xc3\x28",         /* a lead byte followed by ASCII */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (vram_utf8_valid(bad[i], strlen(bad[i])))
			fail_msg("bad[%zu] was accepted", i);
		/* jansson agrees: these are the strings that turned into 500s */
		assert_null(json_string(bad[i]));
	}
	assert_int_equal(vram_utf8_char_len("\xe2\x82\xac", 3), 3);
	assert_int_equal(vram_utf8_char_len("\xe2\x82\xac", 2), 0);
	assert_int_equal(vram_utf8_char_len("a", 0), 0);
}

static void test_utf8_sanitize(void **state)
{
	char out[64];
	/* each bad byte becomes U+FFFD; good characters stay */
	const char in[] = "ab\xe2\x82 caf\xc3\xa9 \xff";
	size_t n = vram_utf8_sanitize(out, sizeof(out), in, strlen(in));
	assert_string_equal(out, "ab\xef\xbf\xbd\xef\xbf\xbd caf\xc3\xa9 \xef\xbf\xbd");
	assert_int_equal(n, strlen(out));
	assert_true(vram_utf8_valid(out, n));
	json_t *s = json_string(out);
	assert_non_null(s);
	json_decref(s);

	/* a NUL ends the copy */
	vram_utf8_sanitize(out, sizeof(out), "ab\0cd", 5);
	assert_string_equal(out, "ab");

	/* too small: the copy ends before the first character that does not fit */
	char small[5];
	n = vram_utf8_sanitize(small, sizeof(small), "a\xe2\x82\xac" "b", 5);
	assert_string_equal(small, "a\xe2\x82\xac");
	assert_int_equal(n, 4);
	n = vram_utf8_sanitize(small, 4, "a\xe2\x82\xac" "b", 5);
	assert_string_equal(small, "a");
	n = vram_utf8_sanitize(small, 3, "a\xff", 2);
	assert_string_equal(small, "a"); /* U+FFFD does not fit either */
	assert_int_equal(vram_utf8_sanitize(small, 0, "abc", 3), 0);
	n = vram_utf8_sanitize(small, 1, "abc", 3);
	assert_int_equal(n, 0);
	assert_string_equal(small, "");

	/* every cut of a long text of 2- and 3-byte characters is valid UTF-8 */
	char text[200] = "";
	for (int i = 0; i < 30; i++)
		strcat(text, i % 2 ? "\xc3\xa9" : "\xe2\x82\xac");
	for (size_t size = 1; size < sizeof(out); size++) {
		n = vram_utf8_sanitize(out, size, text, strlen(text));
		assert_true(n < size);
		assert_true(vram_utf8_valid(out, n));
	}
}

static void test_escape_control(void **state)
{
	char out[128];
	const char in[] = "x\ninjected line\r\tand \x1b[31mred\x7f \xc3\xa9 \xe2\x82 back\\slash";
	size_t n = vram_str_escape_control(out, sizeof(out), in, strlen(in));
	assert_string_equal(out, "x\\ninjected line\\r\\tand \\x1b[31mred\\x7f \xc3\xa9 \\xe2\\x82 "
				 "back\\slash");
	assert_int_equal(n, strlen(out));
	assert_null(strchr(out, '\n'));
	assert_true(vram_utf8_valid(out, n));

	/* a NUL inside the given length is escaped too */
	vram_str_escape_control(out, sizeof(out), "a\0b", 3);
	assert_string_equal(out, "a\\x00b");

	/* too small: never half an escape or half a character */
	char small[6];
	vram_str_escape_control(small, sizeof(small), "ab\ncd", 5);
	assert_string_equal(small, "ab\\nc");
	vram_str_escape_control(small, sizeof(small), "abc\x01", 4);
	assert_string_equal(small, "abc");
	vram_str_escape_control(small, sizeof(small), "abc\xe2\x82\xac", 6);
	assert_string_equal(small, "abc");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8_valid),
		cmocka_unit_test(test_utf8_sanitize),
		cmocka_unit_test(test_escape_control),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
