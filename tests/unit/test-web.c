/* SPDX-License-Identifier: MIT */
/*
 * The dashboard's files (daemon/web.h): which requests pass the front door
 * without the token (only GET/HEAD of / and /ui/<file>), and the embedded
 * table (every file of web/ is there, with its type and a quoted ETag).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/web.h"

static bool open_for(const char *method, const char *path)
{
	return vram_web_is_public(method, strlen(method), path, strlen(path));
}

static void test_only_the_page_files_are_open(void **state)
{
	assert_true(open_for("GET", "/"));
	assert_true(open_for("HEAD", "/"));
	assert_true(open_for("GET", "/?from=bookmark"));
	assert_true(open_for("GET", "/ui/app.js"));
	assert_true(open_for("GET", "/ui/style.css?v=2"));
	/* the API, other methods, and anything that is not one plain file name */
	assert_false(open_for("POST", "/"));
	assert_false(open_for("PUT", "/ui/app.js"));
	assert_false(open_for("GET", "/api/status"));
	assert_false(open_for("GET", "/healthz"));
	assert_false(open_for("GET", "/metrics"));
	assert_false(open_for("GET", "//api/status"));
	assert_false(open_for("GET", "/ui/"));
	assert_false(open_for("GET", "/ui"));
	assert_false(open_for("GET", "/uix/app.js"));
	assert_false(open_for("GET", "/ui/../api/status"));
	assert_false(open_for("GET", "/ui/a/b.js"));
	assert_false(open_for("GET", "/ui/%2e%2e"));
	assert_false(open_for("GET", "/ui/.hidden"));
	assert_false(open_for("GET", "/w/chat/"));
	assert_false(open_for("GET", "/v1/models"));
}

static void test_the_files_of_web_are_embedded(void **state)
{
	const char *names[] = { "index.html", "app.js", "style.css" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct vram_web_asset *a = vram_web_find(names[i]);
		assert_non_null(a);
		assert_true(a->len > 100);
		assert_true(a->etag[0] == '"' && a->etag[strlen(a->etag) - 1] == '"');
	}
	assert_ptr_equal(vram_web_find(""), vram_web_find("index.html"));
	assert_ptr_equal(vram_web_find(NULL), vram_web_find("index.html"));
	assert_string_equal(vram_web_find("index.html")->content_type, "text/html; charset=utf-8");
	assert_string_equal(vram_web_find("app.js")->content_type, "text/javascript; charset=utf-8");
	assert_null(vram_web_find("embed.py"));
	assert_null(vram_web_find("meson.build"));
	/* the page loads its script from /ui/, never inline (the CSP forbids it) */
	const struct vram_web_asset *html = vram_web_find("index.html");
	assert_non_null(memmem(html->data, html->len, "<script src=\"/ui/app.js\"", 24));
	assert_null(memmem(html->data, html->len, "<script>", 8));
	assert_null(memmem(html->data, html->len, "style=", 6));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_only_the_page_files_are_open),
		cmocka_unit_test(test_the_files_of_web_are_embedded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
