/* SPDX-License-Identifier: MIT */
/*
 * A fixed-response HTTP server for the gateway benchmark: every request gets
 * the same small JSON body, so that wrk measures the HTTP path and nothing
 * else. bench/gateway-bench.sh runs it as a workload and loads it both
 * directly and through the gateway.
 *
 *   bench-http-backend --port N    (0 picks a free port; the port is printed)
 *   bench-http-backend             (no port: answers one request on a free port
 *                                   of its own and exits, a self-check)
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

static const char body[] = "{\"object\":\"bench\",\"ok\":true}\n";

struct backend {
	struct event_base *base;
	bool once; /* self-check: stop after the first reply */
	int status; /* self-check: the status it got */
};

static void on_request(struct evhttp_request *req, void *arg)
{
	struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
	evhttp_add_header(oh, "Content-Type", "application/json");
	evbuffer_add_reference(evhttp_request_get_output_buffer(req), body, sizeof(body) - 1, NULL,
			       NULL);
	evhttp_send_reply(req, 200, "OK", NULL);
}

static void on_self_check(struct evhttp_request *req, void *arg)
{
	struct backend *b = arg;
	b->status = req ? evhttp_request_get_response_code(req) : -1;
	event_base_loopexit(b->base, NULL);
}

int main(int argc, char **argv)
{
	long port = -1;
	if (argc == 3 && strcmp(argv[1], "--port") == 0) {
		char *end;
		port = strtol(argv[2], &end, 10);
		if (*end || port < 0 || port > 65535) {
			fprintf(stderr, "--port: expected 0..65535, got \"%s\"\n", argv[2]);
			return 2;
		}
	} else if (argc != 1) {
		fprintf(stderr, "usage: bench-http-backend [--port N]\n");
		return 2;
	}
	struct backend b = { .base = event_base_new(), .once = port < 0 };
	struct evhttp *http = b.base ? evhttp_new(b.base) : NULL;
	if (!http) {
		fprintf(stderr, "Failed to create the server: out of memory\n");
		return 1;
	}
	evhttp_set_gencb(http, on_request, NULL);
	struct evhttp_bound_socket *bs =
		evhttp_bind_socket_with_handle(http, "127.0.0.1", (ev_uint16_t)(port < 0 ? 0 : port));
	if (!bs) {
		fprintf(stderr, "Failed to listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
		return 1;
	}
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sa, &sl);
	unsigned bound = ntohs(sa.sin_port);
	if (b.once) {
		struct evhttp_connection *c =
			evhttp_connection_base_new(b.base, NULL, "127.0.0.1", (ev_uint16_t)bound);
		struct evhttp_request *req = evhttp_request_new(on_self_check, &b);
		evhttp_make_request(c, req, EVHTTP_REQ_GET, "/");
		event_base_dispatch(b.base);
		evhttp_connection_free(c);
		printf("bench-http-backend self-check: %s (status %d); run it with --port N\n",
		       b.status == 200 ? "ok" : "FAILED", b.status);
	} else {
		printf("port %u\n", bound);
		fflush(stdout);
		event_base_dispatch(b.base);
	}
	evhttp_free(http);
	event_base_free(b.base);
	return b.once && b.status != 200;
}
