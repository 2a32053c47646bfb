/* SPDX-License-Identifier: MIT */
/*
 * The gateway's pure part: where a request's model is found (JSON, forms,
 * the query), and the headers a request carries upstream (identity, token). The HTTP framing is tested in test-h1.c, the proxy itself in
 * tests/integration/test_gateway.py.
 *
 * Reloads of the config, with the manager running demo model servers:
 * removing a workload answers its queued request 503 "removed" while its
 * request in flight streams to the end, after which its entry is freed; a
 * new request for it is answered as for an unknown workload, until a reload
 * adds it back. (gateway_int.h is included to hand its subscriber the
 * manager's "reload" event and to look at its entries.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "daemon/gateway_int.h"
#include "sim-manager.h"

#define DEMO VRAM_BUILD_ROOT "/src/demo/vram-demo-server"

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

/* An alias's rewrite: the model's bytes change, nothing else does. */
static void expect_rewrite(const char *body, const char *upstream, size_t max, int want,
			   const char *want_body)
{
	char *out = NULL;
	size_t len = 0;
	assert_int_equal(vram_gateway_rewrite_model(body, strlen(body), upstream, max, &out, &len),
			 want);
	if (want == 0) {
		assert_int_equal(len, strlen(want_body));
		assert_string_equal(out, want_body);
	} else {
		assert_null(out);
	}
	free(out);
}

static void test_rewrite_model(void **state)
{
	(void)state;
	expect_rewrite("{\"model\":\"a\"}", "Qwen/Q", 1024, 0, "{\"model\":\"Qwen/Q\"}");
	/* whitespace, numbers and a nested "model" as sent */
	expect_rewrite(" {\n \"t\": 0.70, \"x\": {\"model\": \"a\"},\"model\" : \"a\" }", "b", 1024, 0,
		       " {\n \"t\": 0.70, \"x\": {\"model\": \"a\"},\"model\" : \"b\" }");
	/* an escaped key, and an upstream that needs escapes */
	expect_rewrite("{\"\\u006dodel\": \"a\"}", "q\"ü", 1024, 0, "{\"\\u006dodel\": \"q\\\"ü\"}");
	/* every top-level "model" (jansson keeps the last) */
	expect_rewrite("{\"model\":\"a\",\"model\":\"b\"}", "c", 1024, 0, "{\"model\":\"c\",\"model\":\"c\"}");
	/* not a JSON object with a string model: sent as it is */
	expect_rewrite("model=a", "c", 1024, -ENOENT, NULL);
	expect_rewrite("{\"model\": 42}", "c", 1024, -ENOENT, NULL);
	expect_rewrite("[{\"model\": \"a\"}]", "c", 1024, -ENOENT, NULL);
	/* bounded */
	expect_rewrite("{\"model\":\"a\"}", "a-much-longer-name", 20, -E2BIG, NULL);
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

/* A blocking HTTP client on its own thread: one request, the response up to the close. */
struct client {
	const char *socket;   /* borrowed */
	char request[1024];
	char response[16384]; /* NUL-terminated */
	size_t len;
	pthread_t thread;
	atomic_bool done;
};

static void *client_run(void *arg)
{
	struct client *cl = arg;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", cl->socket);
	struct timeval tv = { 30, 0 };
	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    send(fd, cl->request, strlen(cl->request), MSG_NOSIGNAL) == (ssize_t)strlen(cl->request)) {
		ssize_t n;
		while (cl->len + 1 < sizeof(cl->response) &&
		       (n = recv(fd, cl->response + cl->len, sizeof(cl->response) - 1 - cl->len, 0)) > 0)
			cl->len += (size_t)n;
	}
	cl->response[cl->len] = '\0';
	if (fd >= 0)
		close(fd);
	atomic_store(&cl->done, true);
	return NULL;
}

static void client_start(struct client *cl, const char *socket, const char *method,
			 const char *target, const char *body)
{
	memset(cl, 0, sizeof(*cl));
	cl->socket = socket;
	snprintf(cl->request, sizeof(cl->request),
		 "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
		 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
		 method, target, strlen(body), body);
	assert_int_equal(pthread_create(&cl->thread, NULL, client_run, cl), 0);
}

struct reload_ctx {
	struct event_base *base; /* borrowed */
	struct vram_gateway *gw;
	struct client *wait_for[2]; /* the loop runs until these are done */
	int step;                   /* test_reload's: 0 waits to remove, 1 waits for the end */
	time_t deadline;            /* s, monotonic */
};

static void reload(struct vram_gateway *gw, const char *diff)
{
	sim_manager_reload(gw__on_event, gw, diff);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct reload_ctx *c = arg;
	struct vram_gateway *gw = c->gw;
	if (gw__now_s() > c->deadline) {
		event_base_loopbreak(c->base);
		return;
	}
	if (c->step == 0) {
		struct gw_wl *demo = gw__wl_by_name(gw, "demo"), *slow = gw__wl_by_name(gw, "slow");
		if (!demo || !slow || demo->in_flight != 1 || slow->n_queued != 1)
			return;
		reload(gw, "{\"added\": [], \"removed\": [\"slow\", \"demo\"], \"changed\": []}");
		/* slow had nothing in flight: freed now; demo waits for its request */
		assert_int_equal(gw->n_wls, 0);
		assert_ptr_equal(gw->removed.next, &demo->removed_link);
		assert_ptr_equal(demo->removed_link.next, &gw->removed);
		c->step = 1;
		return;
	}
	for (size_t i = 0; i < 2; i++)
		if (c->wait_for[i] && !atomic_load(&c->wait_for[i]->done))
			return;
	event_base_loopbreak(c->base);
}

/* Runs the loop until the clients in c->wait_for are done (30 s at most). */
static void run_until_done(struct reload_ctx *c)
{
	struct event *tick = event_new(c->base, -1, EV_PERSIST, on_tick, c);
	struct timeval tv = { 0, 20 * 1000 };
	event_add(tick, &tv);
	c->deadline = gw__now_s() + 30;
	event_base_dispatch(c->base);
	event_free(tick);
	for (size_t i = 0; i < 2; i++) {
		if (!c->wait_for[i])
			continue;
		pthread_join(c->wait_for[i]->thread, NULL);
		c->wait_for[i] = NULL;
	}
}

static void test_reload(void **state)
{
	char text[2048];
	snprintf(text, sizeof(text),
		 "defaults:\n"
		 "  idle: { offload_after: never, release_after: never }\n"
		 "  stop_grace: 2s\n"
		 "  health: { path: /health, interval: 50ms, start_timeout: 20s }\n"
		 "workloads:\n"
		 "  demo:\n"
		 "    cmd: [%s, --port, \"${PORT}\", --model, demo, --load-time, 50ms, "
		 "--chunks, \"4\", --chunk-delay, 250ms]\n"
		 "    memory: 1GiB\n"
		 "  slow:\n"
		 "    cmd: [%s, --port, \"${PORT}\", --model, slow, --load-time, 10s]\n"
		 "    memory: 1GiB\n",
		 DEMO, DEMO);
	struct sim_manager sm;
	sim_manager_new(&sm, text, true);
	struct reload_ctx c = { .base = sm.base };
	char sock[128], api_sock[128], note[256];
	snprintf(sock, sizeof(sock), "%s/gw.sock", sm.dir);
	snprintf(api_sock, sizeof(api_sock), "%s/api.sock", sm.dir); /* nothing is relayed */
	assert_int_equal(vram_gateway_new(c.base, sm.m, NULL, NULL, NULL, api_sock, &c.gw), 0);
	assert_int_equal(vram_gateway_listen_unix(c.gw, sock, note, sizeof(note)), 0);

	/* demo starts and streams for a second; slow's request waits for its load */
	struct client stream, queued, again;
	client_start(&stream, sock, "POST", "/w/demo/v1/chat/completions",
		     "{\"model\": \"demo\", \"messages\": [], \"stream\": true}");
	client_start(&queued, sock, "GET", "/w/slow/health", "");
	c.wait_for[0] = &stream;
	c.wait_for[1] = &queued;
	run_until_done(&c);
	assert_int_equal(c.step, 1);
	assert_int_equal(c.gw->n_wls, 0);
	assert_true(vram_list_empty(&c.gw->removed)); /* freed after its last request */

	assert_non_null(strstr(queued.response, "HTTP/1.1 503 "));
	assert_non_null(strstr(queued.response, "\r\nRetry-After: 1\r\n"));
	assert_non_null(strstr(queued.response, "{\"error\":{\"code\":\"removed\",\"message\":"
						"\"slow was removed from the config by a reload\"}}"));
	assert_non_null(strstr(stream.response, "HTTP/1.1 200 "));
	assert_non_null(strstr(stream.response, "data: [DONE]"));

	/* gone from the lookup: the answer of any unknown workload */
	client_start(&again, sock, "GET", "/w/demo/health", "");
	c.wait_for[0] = &again;
	run_until_done(&c);
	assert_non_null(strstr(again.response, "HTTP/1.1 404 "));
	assert_non_null(strstr(again.response, "no workload named \\\"demo\\\""));

	/* added back (it still runs): served again; a change keeps its entry */
	reload(c.gw, "{\"added\": [\"demo\"], \"removed\": [], \"changed\": []}");
	assert_int_equal(c.gw->n_wls, 1);
	struct gw_wl *demo = c.gw->wls[0];
	reload(c.gw, "{\"added\": [], \"removed\": [], \"changed\": [\"demo\"]}");
	assert_int_equal(c.gw->n_wls, 1);
	assert_ptr_equal(c.gw->wls[0], demo);
	client_start(&again, sock, "GET", "/w/demo/health", "");
	c.wait_for[0] = &again;
	run_until_done(&c);
	assert_non_null(strstr(again.response, "HTTP/1.1 200 "));

	vram_gateway_free(c.gw);
	sim_manager_free(&sm);
}

/* The request the gateway sends upstream for raw (a client's complete head). */
static char *wire_for(struct vram_gateway *gw, struct gw_client *c, struct gw_wl *wl,
		      const char *raw)
{
	struct vram_h1_head h;
	assert_true(vram_h1_parse_request(raw, strlen(raw), 16384, &h) > 0);
	struct gw_req r = { .gw = gw, .c = c, .wl = wl };
	assert_int_equal(gw__build_request(&r, &h, "/x", "", 0), 0);
	return vram_buf_take(&r.wire);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/*
 * What goes upstream: the API hears who asks from the gateway alone (a
 * client's own X-Vramd-Peer is dropped), a workload never hears it, and
 * vramd's token reaches neither, while other credentials pass unchanged.
 */
static void test_upstream_headers(void **state)
{
	struct vram_gateway gw = { .token = "s3cret" };
	struct gw_client c = { .gw = &gw, .ident = { .transport = VRAM_PEER_TCP, .token = true } };
	strcpy(c.ident.addr, "10.0.0.7");
	struct gw_wl wl = { .gw = &gw, .name = "w" };
	const char *forged = "GET /x HTTP/1.1\r\nHost: localhost\r\n"
			     "X-Vramd-Peer: unix pid=1 uid=0 gid=0 groups=\r\n"
			     "x-vramd-peer: unix pid=2 uid=0 gid=0 groups=\r\n"
			     "Authorization: Bearer s3cret\r\nX-Api-Key: s3cret\r\n\r\n";
	char *api = wire_for(&gw, &c, NULL, forged);
	assert_int_equal(count(api, "X-Vramd-Peer: "), 1);
	assert_non_null(strstr(api, "X-Vramd-Peer: tcp addr=10.0.0.7 token=1\r\n"));
	assert_null(strstr(api, "uid=0"));
	assert_null(strstr(api, "s3cret"));
	free(api);
	char *up = wire_for(&gw, &c, &wl, forged);
	assert_null(strstr(up, "X-Vramd-Peer"));
	assert_null(strstr(up, "x-vramd-peer"));
	assert_null(strstr(up, "s3cret"));
	assert_non_null(strstr(up, "X-Forwarded-For: 10.0.0.7\r\n"));
	free(up);
	/* However the token is spelled; and what is not the token passes. */
	up = wire_for(&gw, &c, &wl, "GET /x HTTP/1.1\r\nauthorization: bearer   s3cret\r\n"
			       "X-Api-Key: sk-upstream\r\n\r\n");
	assert_null(strstr(up, "s3cret"));
	assert_non_null(strstr(up, "X-Api-Key: sk-upstream\r\n"));
	free(up);
	up = wire_for(&gw, &c, &wl, "GET /x HTTP/1.1\r\nAuthorization: Bearer s3cret2\r\n"
			       "X-Api-Key: s3cre\r\n\r\n");
	assert_non_null(strstr(up, "Authorization: Bearer s3cret2\r\n"));
	assert_non_null(strstr(up, "X-Api-Key: s3cre\r\n"));
	free(up);
	/* The control socket: the kernel's credentials, no address. */
	struct gw_client u = { .gw = &gw, .trusted = true };
	vram_peer_self(&u.ident);
	api = wire_for(&gw, &u, NULL, "GET /x HTTP/1.1\r\nX-Vramd-Peer: tcp addr=1.2.3.4 token=1\r\n\r\n");
	char want[VRAM_PEER_TEXT_MAX + 32];
	snprintf(want, sizeof(want), "X-Vramd-Peer: unix pid=%ld uid=%lu ", (long)getpid(),
		 (unsigned long)geteuid());
	assert_non_null(strstr(api, want));
	assert_int_equal(count(api, "X-Vramd-Peer"), 1);
	assert_null(strstr(api, "X-Forwarded-For"));
	free(api);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_from_json),
		cmocka_unit_test(test_model_from_forms),
		cmocka_unit_test(test_rewrite_model),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_upstream_headers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
