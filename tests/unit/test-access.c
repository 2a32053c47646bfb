/* SPDX-License-Identifier: MIT */
/*
 * The front door's rules for browsers, on request heads as they arrive:
 * a rebinding page's Host is refused while the listen address, loopback
 * names and daemon.allowed_hosts pass; a foreign Origin is refused while
 * vramd's own and daemon.cors.origins pass (and get CORS headers, and
 * preflights an answer); state-changing API bodies must be JSON, body-less
 * POSTs need nothing; unknown methods get a JSON 501 rather than evhttp's
 * HTML page.
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

#include "config/config.h"
#include "daemon/access.h"

static struct vram_config *config(const char *yaml)
{
	struct vram_config *cfg = NULL;
	char *err = NULL;
	int r = vram_config_parse(yaml, strlen(yaml), "t.yaml", NULL, &cfg, &err);
	if (r < 0)
		fail_msg("config: %s", err);
	free(err);
	return cfg;
}

/* Parses head (which must be complete) and runs the Host/Origin rules. */
static enum vram_access_verdict check(const struct vram_access_listener *l,
				      const struct vram_config *cfg, const char *head,
				      struct vram_access *a)
{
	struct vram_h1_head h;
	assert_true(vram_h1_parse_request(head, strlen(head), 16384, &h) > 0);
	vram_access_check(l, cfg, &h, a);
	return a->verdict;
}

static const struct vram_access_listener loopback = { .host = "127.0.0.1", .port = 8600,
						      .local_addr = "127.0.0.1" };

static void test_host(void **state)
{
	struct vram_config *cfg = config("daemon:\n  allowed_hosts: [gpu1.lan, 'box:9000']\n");
	struct vram_access a;
#define HOST(h) "GET /api/status HTTP/1.1\r\nHost: " h "\r\n\r\n"
	/* A DNS-rebinding page names its own host. */
	assert_int_equal(check(&loopback, cfg, HOST("attacker.example"), &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(a.status, 403);
	assert_string_equal(a.code, "forbidden_host");
	assert_non_null(strstr(a.message, "\"attacker.example\""));
	assert_non_null(strstr(a.message, "daemon.allowed_hosts"));
	assert_non_null(strstr(a.message, "127.0.0.1:8600"));
	assert_int_equal(check(&loopback, cfg, HOST("attacker.example:8600"), &a),
			 VRAM_ACCESS_REFUSE);
	/* The listen address with its port; loopback names with any port or none. */
	assert_int_equal(check(&loopback, cfg, HOST("127.0.0.1:8600"), &a), VRAM_ACCESS_PASS);
	assert_string_equal(a.origin, "");
	assert_int_equal(check(&loopback, cfg, HOST("localhost"), &a), VRAM_ACCESS_PASS);
	assert_int_equal(check(&loopback, cfg, HOST("LocalHost:9999"), &a), VRAM_ACCESS_PASS);
	assert_int_equal(check(&loopback, cfg, HOST("127.1.2.3"), &a), VRAM_ACCESS_PASS);
	assert_int_equal(check(&loopback, cfg, HOST("[::1]:8600"), &a), VRAM_ACCESS_PASS);
	/* allowed_hosts: without a port any port, with one that port only. */
	assert_int_equal(check(&loopback, cfg, HOST("GPU1.lan:8600"), &a), VRAM_ACCESS_PASS);
	assert_int_equal(check(&loopback, cfg, HOST("gpu1.lan"), &a), VRAM_ACCESS_PASS);
	assert_int_equal(check(&loopback, cfg, HOST("box:9000"), &a), VRAM_ACCESS_PASS);
	assert_int_equal(check(&loopback, cfg, HOST("box:8600"), &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(check(&loopback, cfg, HOST("box"), &a), VRAM_ACCESS_REFUSE);
	/* Not a host at all; two of them; none (not a browser). */
	assert_int_equal(check(&loopback, cfg, HOST("a b"), &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(a.status, 400);
	assert_int_equal(check(&loopback, cfg, HOST("h:99999"), &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(check(&loopback, cfg, "GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n",
			       &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(a.status, 400);
	assert_int_equal(check(&loopback, cfg, "GET / HTTP/1.0\r\n\r\n", &a), VRAM_ACCESS_PASS);
	/* An absolute target's host counts as the Host. */
	assert_int_equal(check(&loopback, cfg,
			       "GET http://evil.example/api/status HTTP/1.1\r\nHost: localhost\r\n\r\n",
			       &a), VRAM_ACCESS_REFUSE);
	assert_string_equal(a.code, "forbidden_host");
	assert_int_equal(check(&loopback, cfg,
			       "GET http://localhost:8600/api/status HTTP/1.1\r\nHost: localhost\r\n\r\n",
			       &a), VRAM_ACCESS_PASS);

	/* A wildcard listen address: the address the connection came in on, with the port. */
	struct vram_access_listener any = { .host = "0.0.0.0", .port = 8600,
					    .local_addr = "192.168.1.5" };
	assert_int_equal(check(&any, cfg, HOST("192.168.1.5:8600"), &a), VRAM_ACCESS_PASS);
	assert_int_equal(check(&any, cfg, HOST("192.168.1.5:80"), &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(check(&any, cfg, HOST("0.0.0.0:8600"), &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(check(&any, cfg, HOST("192.168.1.6:8600"), &a), VRAM_ACCESS_REFUSE);
	struct vram_access_listener v6 = { .host = "::", .port = 80, .local_addr = "fe80::1" };
	assert_int_equal(check(&v6, cfg, HOST("[FE80:0::1]"), &a), VRAM_ACCESS_PASS);
	/* A named listen address. */
	struct vram_access_listener named = { .host = "gpubox", .port = 8600,
					      .local_addr = "10.0.0.2" };
	assert_int_equal(check(&named, cfg, HOST("GPUBOX:8600"), &a), VRAM_ACCESS_PASS);
	assert_int_equal(check(&named, cfg, HOST("gpubox:8601"), &a), VRAM_ACCESS_REFUSE);

	/* The control socket: no Host rule (clients name the socket's path there). */
	struct vram_access_listener sock = { .unix_socket = true, .host = "127.0.0.1",
					     .port = 8600 };
	assert_int_equal(check(&sock, cfg, HOST("%2Frun%2Fvramd.sock"), &a), VRAM_ACCESS_PASS);
#undef HOST
	vram_config_free(cfg);
}

static void test_origin(void **state)
{
	struct vram_config *cfg =
		config("daemon:\n  cors: {origins: ['http://localhost:3000', 'https://ui.example']}\n");
	struct vram_access a;
#define ORIGIN(o) "POST /api/workloads HTTP/1.1\r\nHost: 127.0.0.1:8600\r\nOrigin: " o "\r\n\r\n"
	/* The CSRF page of the report. */
	assert_int_equal(check(&loopback, cfg, ORIGIN("http://evil.example"), &a),
			 VRAM_ACCESS_REFUSE);
	assert_int_equal(a.status, 403);
	assert_string_equal(a.code, "forbidden_origin");
	assert_non_null(strstr(a.message, "\"http://evil.example\""));
	assert_non_null(strstr(a.message, "daemon.cors.origins"));
	assert_non_null(strstr(a.message, "http://127.0.0.1:8600"));
	/* Another local page (another port) is another origin; so are null and https. */
	assert_int_equal(check(&loopback, cfg, ORIGIN("http://localhost:8080"), &a),
			 VRAM_ACCESS_REFUSE);
	assert_int_equal(check(&loopback, cfg, ORIGIN("null"), &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(check(&loopback, cfg, ORIGIN("https://127.0.0.1:8600"), &a),
			 VRAM_ACCESS_REFUSE);
	assert_int_equal(check(&loopback, cfg, ORIGIN("http://localhost:3000/x"), &a),
			 VRAM_ACCESS_REFUSE);
	/* vramd's own pages. */
	assert_int_equal(check(&loopback, cfg, ORIGIN("http://127.0.0.1:8600"), &a),
			 VRAM_ACCESS_PASS);
	assert_string_equal(a.origin, "http://127.0.0.1:8600");
	assert_int_equal(check(&loopback, cfg, ORIGIN("http://localhost:8600"), &a),
			 VRAM_ACCESS_PASS);
	assert_int_equal(check(&loopback, cfg, ORIGIN("http://[::1]:8600"), &a), VRAM_ACCESS_PASS);
	/* Listed ones, the default port written or not. */
	assert_int_equal(check(&loopback, cfg, ORIGIN("http://LOCALHOST:3000"), &a),
			 VRAM_ACCESS_PASS);
	assert_string_equal(a.origin, "http://LOCALHOST:3000");
	assert_int_equal(check(&loopback, cfg, ORIGIN("https://ui.example:443"), &a),
			 VRAM_ACCESS_PASS);
	assert_int_equal(check(&loopback, cfg, ORIGIN("http://ui.example"), &a),
			 VRAM_ACCESS_REFUSE);
	/* Two of them. */
	assert_int_equal(check(&loopback, cfg,
			       "GET / HTTP/1.1\r\nOrigin: http://localhost:3000\r\nOrigin: "
			       "http://evil.example\r\n\r\n", &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(a.status, 400);
	/* The control socket: the same rule, vramd's own origin is its TCP listener's. */
	struct vram_access_listener sock = { .unix_socket = true, .host = "127.0.0.1",
					     .port = 8600 };
	assert_int_equal(check(&sock, cfg, ORIGIN("http://evil.example"), &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(check(&sock, cfg, ORIGIN("http://localhost:8600"), &a), VRAM_ACCESS_PASS);
#undef ORIGIN

	/* Preflights: answered for allowed origins, refused for others. */
	const char *pre = "OPTIONS /api/workloads HTTP/1.1\r\nHost: localhost:8600\r\n"
			  "Origin: https://ui.example\r\nAccess-Control-Request-Method: POST\r\n"
			  "Access-Control-Request-Headers: content-type, x-stainless-os\r\n\r\n";
	assert_int_equal(check(&loopback, cfg, pre, &a), VRAM_ACCESS_PREFLIGHT);
	struct vram_h1_head h;
	assert_true(vram_h1_parse_request(pre, strlen(pre), 16384, &h) > 0);
	char hdr[VRAM_ACCESS_HEADERS_MAX];
	assert_true(vram_access_preflight_headers(a.origin, &h, hdr, sizeof(hdr)) > 0);
	assert_non_null(strstr(hdr, "Access-Control-Allow-Origin: https://ui.example\r\n"));
	assert_non_null(strstr(hdr, "Access-Control-Allow-Methods: GET, HEAD, POST, PUT, PATCH, "
				    "DELETE, OPTIONS\r\n"));
	assert_non_null(strstr(hdr, "Authorization, Content-Type, X-Api-Key, Mcp-Session-Id, "
				    "Mcp-Protocol-Version"));
	assert_non_null(strstr(hdr, "content-type, x-stainless-os\r\n"));
	assert_non_null(strstr(hdr, "Access-Control-Max-Age: 600\r\n"));
	assert_non_null(strstr(hdr, "Vary: Origin"));
	const char *bad = "OPTIONS /api/workloads HTTP/1.1\r\nOrigin: http://evil.example\r\n"
			  "Access-Control-Request-Method: POST\r\n\r\n";
	assert_int_equal(check(&loopback, cfg, bad, &a), VRAM_ACCESS_REFUSE);
	assert_int_equal(a.status, 403);
	/* OPTIONS without Access-Control-Request-Method is an ordinary request. */
	assert_int_equal(check(&loopback, cfg,
			       "OPTIONS / HTTP/1.1\r\nOrigin: https://ui.example\r\n\r\n", &a),
			 VRAM_ACCESS_PASS);

	int n = vram_access_cors_headers("https://ui.example", hdr, sizeof(hdr));
	assert_int_equal(n, (int)strlen(hdr));
	assert_non_null(strstr(hdr, "Access-Control-Allow-Origin: https://ui.example\r\nVary: Origin\r\n"));
	assert_non_null(strstr(hdr, "Access-Control-Expose-Headers: Mcp-Session-Id"));
	assert_int_equal(vram_access_cors_headers("", hdr, sizeof(hdr)), 0);
	assert_string_equal(hdr, "");
	assert_int_equal(vram_access_cors_headers("https://ui.example", hdr, 20), -ENOSPC);
	struct vram_h1_span acao = { "access-control-allow-origin", 27 }, vary = { "Vary", 4 };
	assert_true(vram_access_is_cors_header(acao));
	assert_false(vram_access_is_cors_header(vary));
	vram_config_free(cfg);
}

static bool api_ok(const char *head, struct vram_access *a)
{
	struct vram_h1_head h;
	assert_true(vram_h1_parse_request(head, strlen(head), 16384, &h) > 0);
	memset(a, 0, sizeof(*a));
	return vram_access_check_api(&h, a);
}

static void test_api(void **state)
{
	struct vram_access a;
	/* The CSRF bodies a page can send without a preflight. */
	static const char *const simple[] = { "text/plain", "application/x-www-form-urlencoded",
					      "multipart/form-data; boundary=x" };
	for (size_t i = 0; i < 3; i++) {
		char head[256];
		snprintf(head, sizeof(head), "POST /api/workloads HTTP/1.1\r\nContent-Type: %s\r\n"
			 "Content-Length: 2\r\n\r\n", simple[i]);
		assert_false(api_ok(head, &a));
		assert_int_equal(a.verdict, VRAM_ACCESS_REFUSE);
		assert_int_equal(a.status, 415);
		assert_string_equal(a.code, "unsupported_media_type");
		assert_non_null(strstr(a.message, "application/json"));
		assert_non_null(strstr(a.message, simple[i]));
	}
	/* No type at all (a Blob body), chunked bodies, PUT, PATCH and DELETE too. */
	assert_false(api_ok("PUT /api/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n", &a));
	assert_non_null(strstr(a.message, "got none"));
	assert_false(api_ok("POST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &a));
	assert_false(api_ok("PATCH /api/x HTTP/1.1\r\nContent-Type: text/json\r\nContent-Length: 2\r\n\r\n", &a));
	assert_false(api_ok("DELETE /api/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n", &a));
	/* JSON, with parameters and any case. */
	assert_true(api_ok("POST /api/workloads HTTP/1.1\r\nContent-Type: application/json\r\n"
			   "Content-Length: 2\r\n\r\n", &a));
	assert_true(api_ok("POST /mcp HTTP/1.1\r\nContent-Type: Application/JSON ; charset=utf-8\r\n"
			   "Transfer-Encoding: chunked\r\n\r\n", &a));
	/* No body: nothing asked (the TTS apps' curl -X POST). GET bodies are not looked at. */
	assert_true(api_ok("POST /api/gpu/offload HTTP/1.1\r\n\r\n", &a));
	assert_true(api_ok("POST /api/gpu/offload HTTP/1.1\r\nContent-Type: text/plain\r\n"
			   "Content-Length: 0\r\n\r\n", &a));
	assert_true(api_ok("GET /api/status HTTP/1.1\r\nContent-Length: 2\r\n\r\n", &a));
	/* Methods the API does not know. */
	assert_false(api_ok("PROPFIND /api/status HTTP/1.1\r\n\r\n", &a));
	assert_int_equal(a.status, 501);
	assert_non_null(strstr(a.message, "PROPFIND"));
	assert_false(api_ok("TRACE / HTTP/1.1\r\n\r\n", &a));
	assert_false(api_ok("get /api/status HTTP/1.1\r\n\r\n", &a));
	assert_true(api_ok("OPTIONS /api/status HTTP/1.1\r\n\r\n", &a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_host),
		cmocka_unit_test(test_origin),
		cmocka_unit_test(test_api),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
