/* SPDX-License-Identifier: MIT */
/*
 * vramctl mcp against a fake daemon on a Unix socket: the bridge runs in a
 * child with pipes for stdin and stdout, and the test plays the daemon, so
 * that it decides when and in which order replies come. A second request
 * reaches the daemon while the first is unanswered and its reply comes out
 * first; messages wait for initialize and then carry its session; a
 * 2026-07-28 message gets its headers, with a name a header cannot carry in
 * base64 (no header injection); a daemon that is not there is a JSON-RPC
 * error.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "ctl/ctl.h"
#include "ctl/mcp.h"

struct fake {
	char dir[48];
	char sock[96];
	int listen_fd;
	pid_t child;
	int to_child;   /* the bridge's stdin */
	int from_child; /* the bridge's stdout */
};

static void start(struct fake *f, bool listening)
{
	snprintf(f->dir, sizeof(f->dir), "/tmp/test-ctl-mcp-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/vramd.sock", f->dir);
	f->listen_fd = -1;
	if (listening) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->sock);
		f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(f->listen_fd >= 0);
		assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(listen(f->listen_fd, 64), 0);
	}
	int in[2], out[2];
	assert_int_equal(pipe(in), 0);
	assert_int_equal(pipe(out), 0);
	f->child = fork();
	assert_true(f->child >= 0);
	if (f->child == 0) {
		close(in[1]);
		close(out[0]);
		if (f->listen_fd >= 0)
			close(f->listen_fd);
		struct vram_client_url url = { .is_unix = true };
		snprintf(url.socket_path, sizeof(url.socket_path), "%s", f->sock);
		FILE *cin = fdopen(in[0], "r"), *cout = fdopen(out[1], "w");
		_exit(vram_ctl_mcp(&url, NULL, 10000, cin, cout));
	}
	close(in[0]);
	close(out[1]);
	f->to_child = in[1];
	f->from_child = out[0];
}

/* Closes the bridge's stdin and reaps it; returns its exit status. */
static int finish(struct fake *f)
{
	if (f->to_child >= 0)
		close(f->to_child);
	int status = 0;
	assert_int_equal(waitpid(f->child, &status, 0), f->child);
	close(f->from_child);
	if (f->listen_fd >= 0)
		close(f->listen_fd);
	unlink(f->sock);
	rmdir(f->dir);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void send_line(struct fake *f, const char *line)
{
	size_t n = strlen(line);
	assert_int_equal(write(f->to_child, line, n), (ssize_t)n);
	assert_int_equal(write(f->to_child, "\n", 1), 1);
}

/* The next line the bridge writes (parsed), within timeout_ms; NULL at its end. */
static json_t *recv_line(struct fake *f, int timeout_ms)
{
	static char buf[65536];
	static size_t have;
	for (;;) {
		char *nl = memchr(buf, '\n', have);
		if (nl) {
			*nl = '\0';
			json_t *j = json_loads(buf, 0, NULL);
			assert_non_null(j);
			have -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, have);
			return j;
		}
		struct pollfd p = { .fd = f->from_child, .events = POLLIN };
		assert_int_equal(poll(&p, 1, timeout_ms), 1);
		ssize_t n = read(f->from_child, buf + have, sizeof(buf) - have);
		assert_true(n >= 0);
		if (n == 0)
			return NULL;
		have += (size_t)n;
	}
}

/* True when a connection comes within timeout_ms. */
static bool connection_waiting(struct fake *f, int timeout_ms)
{
	struct pollfd p = { .fd = f->listen_fd, .events = POLLIN };
	return poll(&p, 1, timeout_ms) == 1;
}

/* Accepts one request: its connection, with its head and body in *ret (caller frees). */
static int take_request(struct fake *f, char **ret_head, json_t **ret_body)
{
	assert_true(connection_waiting(f, 5000));
	int fd = accept(f->listen_fd, NULL, NULL);
	assert_true(fd >= 0);
	char buf[65536];
	size_t have = 0;
	char *end = NULL;
	while (!end) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		assert_true(n > 0);
		have += (size_t)n;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	size_t head_len = (size_t)(end - buf) + 4;
	const char *cl = strcasestr(buf, "Content-Length:");
	size_t body_len = cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
	while (have < head_len + body_len) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		assert_true(n > 0);
		have += (size_t)n;
	}
	*ret_head = strndup(buf, head_len);
	*ret_body = body_len ? json_loadb(buf + head_len, body_len, 0, NULL) : NULL;
	return fd;
}

/* Answers a request with a JSON body (and extra header lines) and closes. */
static void answer(int fd, int status, const char *headers, const char *body)
{
	char head[1024];
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%sContent-Length: "
			 "%zu\r\nConnection: close\r\n\r\n",
			 status, headers ? headers : "", strlen(body));
	assert_int_equal(write(fd, head, (size_t)n), n);
	assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
	close(fd);
}

static json_int_t id_of(json_t *j)
{
	return json_integer_value(json_object_get(j, "id"));
}

/* The bridge's next line is the reply to the request with integer id. */
static void expect_reply(struct fake *f, json_int_t id)
{
	json_t *r = recv_line(f, 5000);
	assert_non_null(r);
	assert_int_equal(id_of(r), id);
	json_decref(r);
}

static void test_second_request_answered_first(void **state)
{
	struct fake f;
	start(&f, true);
	send_line(&f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\","
		      "\"params\":{\"name\":\"start_workload\"}}");
	send_line(&f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\"}");
	/* Both reach the daemon while neither is answered. */
	char *h1, *h2;
	json_t *b1, *b2;
	int c1 = take_request(&f, &h1, &b1);
	int c2 = take_request(&f, &h2, &b2);
	if (id_of(b1) == 2) {
		int c = c1;
		c1 = c2;
		c2 = c;
	}
	answer(c2, 200, NULL, "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[]}}");
	expect_reply(&f, 2);
	answer(c1, 200, NULL, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}");
	expect_reply(&f, 1);
	assert_int_equal(finish(&f), VRAM_CTL_EXIT_OK);
	free(h1);
	free(h2);
	json_decref(b1);
	json_decref(b2);
}

static void test_messages_wait_for_initialize(void **state)
{
	struct fake f;
	start(&f, true);
	send_line(&f, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
		      "{\"protocolVersion\":\"2025-11-25\"}}");
	send_line(&f, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}");
	char *head;
	json_t *body;
	int c = take_request(&f, &head, &body);
	assert_string_equal(json_string_value(json_object_get(body, "method")), "initialize");
	assert_null(strcasestr(head, "Mcp-Session-Id"));
	free(head);
	json_decref(body);
	/* The ping waits for the session. */
	assert_false(connection_waiting(&f, 200));
	answer(c, 200, "Mcp-Session-Id: 0123abcd\r\n",
	       "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-11-25\"}}");
	expect_reply(&f, 1);
	c = take_request(&f, &head, &body);
	assert_non_null(strstr(head, "Mcp-Session-Id: 0123abcd\r\n"));
	assert_non_null(strstr(head, "MCP-Protocol-Version: 2025-11-25\r\n"));
	assert_int_equal(id_of(body), 2);
	free(head);
	json_decref(body);
	/* A refusal with id null gets the request's id. */
	answer(c, 400, NULL,
	       "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"no\"}}");
	expect_reply(&f, 2);
	/* End of input ends the session. */
	close(f.to_child);
	f.to_child = -1;
	c = take_request(&f, &head, &body);
	assert_true(strncmp(head, "DELETE /mcp ", 12) == 0);
	assert_non_null(strstr(head, "Mcp-Session-Id: 0123abcd\r\n"));
	answer(c, 204, NULL, "");
	free(head);
	assert_null(recv_line(&f, 5000));
	assert_int_equal(finish(&f), VRAM_CTL_EXIT_OK);
}

static void test_stateless_headers(void **state)
{
	struct fake f;
	start(&f, true);
	/* A name with a line break must not become a header line of its own. */
	send_line(&f, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{"
		      "\"name\":\"a\\r\\nX-Injected: 1\",\"_meta\":{"
		      "\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
		      "\"io.modelcontextprotocol/clientCapabilities\":{}}}}");
	char *head;
	json_t *body;
	int c = take_request(&f, &head, &body);
	assert_non_null(strstr(head, "\r\nMCP-Protocol-Version: 2026-07-28\r\n"));
	assert_non_null(strstr(head, "\r\nMcp-Method: tools/call\r\n"));
	/* base64("a\r\nX-Injected: 1") */
	assert_non_null(strstr(head, "\r\nMcp-Name: =?base64?YQ0KWC1JbmplY3RlZDogMQ==?=\r\n"));
	assert_null(strstr(head, "\r\nX-Injected"));
	assert_null(strcasestr(head, "Mcp-Session-Id"));
	answer(c, 200, NULL, "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"resultType\":\"complete\"}}");
	expect_reply(&f, 7);
	free(head);
	json_decref(body);
	assert_int_equal(finish(&f), VRAM_CTL_EXIT_OK);
}

static void test_no_daemon(void **state)
{
	struct fake f;
	start(&f, false);
	send_line(&f, "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"ping\"}");
	json_t *r = recv_line(&f, 5000);
	assert_string_equal(json_string_value(json_object_get(r, "id")), "x");
	json_t *e = json_object_get(r, "error");
	assert_int_equal(json_integer_value(json_object_get(e, "code")), -32603);
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")),
			       "cannot connect to vramd at"));
	json_decref(r);
	/* A notification that cannot go gets no reply at all. */
	send_line(&f, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
	close(f.to_child);
	f.to_child = -1;
	assert_null(recv_line(&f, 5000));
	assert_int_equal(finish(&f), VRAM_CTL_EXIT_OK);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_second_request_answered_first),
		cmocka_unit_test(test_messages_wait_for_initialize),
		cmocka_unit_test(test_stateless_headers),
		cmocka_unit_test(test_no_daemon),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
