/* SPDX-License-Identifier: MIT */
/*
 * REST routing and input checks: which route a method and path reach (404
 * vs 405), workload names in paths, and the messages a bad body gets — they
 * say where the JSON is broken and name the field that is wrong; the share
 * of the limits kept for the control socket.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/units.h"
#include "daemon/api.h"
#include "daemon/http.h"
#include "daemon/manager.h"
#include "daemon/peer.h"
#include "daemon/waitact.h"

static const char *route_of(enum vram_api_method m, const char *path, char *name)
{
	struct vram_api_match match;
	if (vram_api_route_find(m, path, &match, NULL) < 0)
		return NULL;
	if (name)
		strcpy(name, match.name);
	return match.route->pattern;
}

static void test_routes(void **state)
{
	char name[VRAM_API_NAME_MAX + 1];
	assert_string_equal(route_of(VRAM_API_GET, "/healthz", NULL), "/healthz");
	assert_string_equal(route_of(VRAM_API_GET, "/api/status", NULL), "/api/status");
	assert_string_equal(route_of(VRAM_API_GET, "/api/workloads/llm", name),
			    "/api/workloads/{name}");
	assert_string_equal(name, "llm");
	assert_string_equal(route_of(VRAM_API_POST, "/api/workloads/llm-2.b_c/offload", name),
			    "/api/workloads/{name}/offload");
	assert_string_equal(name, "llm-2.b_c");
	assert_string_equal(route_of(VRAM_API_PUT, "/api/workloads/x/idle", NULL),
			    "/api/workloads/{name}/idle");
	assert_string_equal(route_of(VRAM_API_GET, "/api/workloads/x/logs", NULL),
			    "/api/workloads/{name}/logs");
	assert_string_equal(route_of(VRAM_API_GET, "/api/events", NULL), "/api/events");
	assert_string_equal(route_of(VRAM_API_POST, "/api/gpu/timeout", NULL), "/api/gpu/timeout");

	/* The action routes carry their action. */
	struct vram_api_match m;
	assert_int_equal(vram_api_route_find(VRAM_API_POST, "/api/workloads/a/release", &m, NULL), 0);
	assert_int_equal(m.route->arg, VRAM_ACTION_RELEASE);
	assert_int_equal(vram_api_route_find(VRAM_API_POST, "/api/workloads/a/start", &m, NULL), 0);
	assert_int_equal(m.route->arg, VRAM_ACTION_START);

	/* Names are URL-decoded; a decoded '/' does not split the path. */
	assert_non_null(route_of(VRAM_API_GET, "/api/workloads/a%2Db", name));
	assert_string_equal(name, "a-b");
	assert_null(route_of(VRAM_API_GET, "/api/workloads/a%2Fb", NULL));
	assert_null(route_of(VRAM_API_GET, "/api/workloads/a%00b", NULL));
}

static void test_not_found_vs_method(void **state)
{
	struct vram_api_match m;
	unsigned allowed = 0;
	assert_int_equal(vram_api_route_find(VRAM_API_GET, "/api/nothing", &m, &allowed), -ENOENT);
	assert_int_equal(vram_api_route_find(VRAM_API_GET, "/api/workloads/", &m, &allowed), -ENOENT);
	assert_int_equal(vram_api_route_find(VRAM_API_GET, "/api/workloads//start", &m, &allowed),
			 -ENOENT);
	assert_int_equal(vram_api_route_find(VRAM_API_GET, "/api/status/", &m, &allowed), -ENOENT);
	assert_int_equal(vram_api_route_find(VRAM_API_GET, "/api/workloads/a/start/x", &m, &allowed),
			 -ENOENT);
	assert_int_equal(vram_api_route_find(VRAM_API_GET, "", &m, &allowed), -ENOENT);

	assert_int_equal(vram_api_route_find(VRAM_API_GET, "/api/workloads/a/start", &m, &allowed),
			 -EPERM);
	assert_int_equal(allowed, VRAM_API_POST);
	assert_int_equal(vram_api_route_find(VRAM_API_DELETE, "/api/status", &m, &allowed), -EPERM);
	assert_int_equal(allowed, VRAM_API_GET);
	assert_int_equal(vram_api_route_find(VRAM_API_OTHER, "/healthz", &m, &allowed), -EPERM);

	char buf[64];
	assert_string_equal(vram_api_methods_format(VRAM_API_GET | VRAM_API_PUT, buf, sizeof(buf)),
			    "GET, PUT");
	assert_string_equal(vram_api_methods_format(0, buf, sizeof(buf)), "");
}

static void test_parse_object(void **state)
{
	char msg[256];
	json_t *obj = (json_t *)1;
	assert_int_equal(vram_api_parse_object("", 0, false, &obj, msg, sizeof(msg)), 0);
	assert_null(obj);
	assert_int_equal(vram_api_parse_object(" \n", 2, false, &obj, msg, sizeof(msg)), 0);
	assert_null(obj);
	assert_int_equal(vram_api_parse_object("", 0, true, &obj, msg, sizeof(msg)), 400);
	assert_string_equal(msg, "a JSON object body is required");

	const char *ok = "{\"a\": 1}";
	assert_int_equal(vram_api_parse_object(ok, strlen(ok), true, &obj, msg, sizeof(msg)), 0);
	assert_true(json_is_object(obj));
	json_decref(obj);

	const char *broken = "{\n  \"a\": 1,\n  \"b\" 2\n}";
	assert_int_equal(vram_api_parse_object(broken, strlen(broken), true, &obj, msg, sizeof(msg)),
			 400);
	assert_non_null(strstr(msg, "invalid JSON at line 3, column 7"));

	const char *arr = "[1]";
	assert_int_equal(vram_api_parse_object(arr, strlen(arr), true, &obj, msg, sizeof(msg)), 400);
	assert_string_equal(msg, "the body must be a JSON object");

	const char *dup = "{\"a\": 1, \"a\": 2}";
	assert_int_equal(vram_api_parse_object(dup, strlen(dup), true, &obj, msg, sizeof(msg)), 400);
	assert_non_null(strstr(msg, "duplicate"));

	/* Nesting deeper than the parser allows is refused, not a crash. */
	static char deep[8192];
	size_t n = 0;
	deep[n++] = '{';
	deep[n++] = '"';
	deep[n++] = 'a';
	deep[n++] = '"';
	deep[n++] = ':';
	while (n < sizeof(deep) - 2)
		deep[n++] = '[';
	deep[n] = '\0';
	assert_int_equal(vram_api_parse_object(deep, n, true, &obj, msg, sizeof(msg)), 400);
}

static void test_check_fields(void **state)
{
	static const char *const allowed[] = { "offload_after", "release_after", NULL };
	char msg[256];
	json_t *o = json_pack("{s:i}", "offload_after", 5);
	assert_int_equal(vram_api_check_fields(o, allowed, msg, sizeof(msg)), 0);
	json_decref(o);
	o = json_pack("{s:i, s:i}", "offload_after", 5, "sleep", 1);
	assert_int_equal(vram_api_check_fields(o, allowed, msg, sizeof(msg)), 400);
	assert_string_equal(msg,
			    "unknown field \"sleep\" (expected \"offload_after\", \"release_after\")");
	json_decref(o);
	static const char *const none[] = { NULL };
	o = json_pack("{s:i}", "x", 1);
	assert_int_equal(vram_api_check_fields(o, none, msg, sizeof(msg)), 400);
	assert_string_equal(msg, "unknown field \"x\" (expected )");
	json_decref(o);
}

static void test_duration_field(void **state)
{
	char msg[256];
	uint64_t ms = 0;
	json_t *v;

	v = json_integer(300);
	assert_int_equal(vram_http_duration_field(v, "timeout", &ms, msg, sizeof(msg)), 0);
	assert_int_equal(ms, 300000);
	json_decref(v);
	v = json_real(1.5);
	assert_int_equal(vram_http_duration_field(v, "timeout", &ms, msg, sizeof(msg)), 0);
	assert_int_equal(ms, 1500);
	json_decref(v);
	v = json_string("10m");
	assert_int_equal(vram_http_duration_field(v, "offload_after", &ms, msg, sizeof(msg)), 0);
	assert_int_equal(ms, 600000);
	json_decref(v);
	v = json_string("never");
	assert_int_equal(vram_http_duration_field(v, "offload_after", &ms, msg, sizeof(msg)), 0);
	assert_true(ms == VRAM_DURATION_NEVER);
	json_decref(v);
	v = json_null();
	ms = 0;
	assert_int_equal(vram_http_duration_field(v, "offload_after", &ms, msg, sizeof(msg)), 0);
	assert_true(ms == VRAM_DURATION_NEVER);

	ms = 7;
	v = json_integer(-1);
	assert_int_equal(vram_http_duration_field(v, "release_after", &ms, msg, sizeof(msg)), 400);
	assert_non_null(strstr(msg, "release_after:"));
	assert_int_equal(ms, 7); /* untouched on failure */
	json_decref(v);
	v = json_string("soon");
	assert_int_equal(vram_http_duration_field(v, "release_after", &ms, msg, sizeof(msg)), 400);
	assert_non_null(strstr(msg, "release_after:"));
	assert_non_null(strstr(msg, "\"soon\""));
	json_decref(v);
	v = json_true();
	assert_int_equal(vram_http_duration_field(v, "release_after", &ms, msg, sizeof(msg)), 400);
	assert_non_null(strstr(msg, "release_after:"));
	v = json_pack("[i]", 1);
	assert_int_equal(vram_http_duration_field(v, "timeout", &ms, msg, sizeof(msg)), 400);
	assert_non_null(strstr(msg, "timeout:"));
	json_decref(v);
	/* out of range, as a string or as seconds: said so, not wrapped around */
	v = json_string("10000000000000000000ms");
	assert_int_equal(vram_http_duration_field(v, "offload_after", &ms, msg, sizeof(msg)), 400);
	assert_string_equal(msg, "offload_after: out of range: at most 100 years (36500d), got "
				 "\"10000000000000000000ms\"");
	json_decref(v);
	v = json_real(1e19);
	assert_int_equal(vram_http_duration_field(v, "timeout", &ms, msg, sizeof(msg)), 400);
	assert_string_equal(msg, "timeout: out of range: at most 100 years (36500d) (3153600000 s), "
				 "got 1e+19");
	json_decref(v);
	assert_int_equal(ms, 7);
}

/* TCP clients never take the share kept for the control socket; the socket may use all. */
static void test_share_left(void **state)
{
	struct vram_peer tcp = { .transport = VRAM_PEER_TCP }, sock = { .transport = VRAM_PEER_UNIX };
	size_t max = VRAM_WAITACT_MAX, kept = VRAM_WAITACT_UNIX_RESERVED;
	assert_true(vram_peer_share_left(&tcp, 0, 0, max, kept));
	assert_true(vram_peer_share_left(&tcp, max - kept - 1, max - kept - 1, max, kept));
	assert_false(vram_peer_share_left(&tcp, max - kept, max - kept, max, kept));
	assert_true(vram_peer_share_left(&sock, max - kept, max - kept, max, kept));
	assert_true(vram_peer_share_left(&sock, max - 1, max - kept, max, kept));
	assert_false(vram_peer_share_left(&sock, max, max - kept, max, kept));
	/* the socket's own requests do not count against TCP clients */
	assert_true(vram_peer_share_left(&tcp, max - 1, 10, max, kept));
	assert_false(vram_peer_share_left(&tcp, max, 10, max, kept));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_not_found_vs_method),
		cmocka_unit_test(test_parse_object),
		cmocka_unit_test(test_check_fields),
		cmocka_unit_test(test_duration_field),
		cmocka_unit_test(test_share_left),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
