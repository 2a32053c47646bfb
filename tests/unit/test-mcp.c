/* SPDX-License-Identifier: MIT */
/*
 * The MCP core without HTTP: which revision a client gets, the JSON-RPC
 * error code of each kind of broken message, and what a tool call with bad
 * arguments answers (a protocol error in 2025-06-18, a tool result a model
 * can read and correct from 2025-11-25 on). plan runs for real: it needs no
 * daemon state when given a config and GPUs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "common/version.h"
#include "daemon/mcp.h"

struct fixture {
	struct event_base *base;
	struct vram_mcp *mcp;
	json_t *last; /* the last response, or NULL */
	int calls;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->base = event_base_new();
	assert_non_null(f->base);
	assert_int_equal(vram_mcp_new(f->base, NULL, NULL, &f->mcp), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	json_decref(f->last);
	vram_mcp_free(f->mcp);
	event_base_free(f->base);
	free(f);
	return 0;
}

static void on_reply(json_t *resp, void *arg)
{
	struct fixture *f = arg;
	json_decref(f->last);
	f->last = json_incref(resp);
	f->calls++;
}

/* Sends text under version; returns the response (borrowed from f). */
static json_t *send_msg(struct fixture *f, const char *version, const char *text)
{
	json_error_t jerr;
	json_t *msg = json_loads(text, JSON_DECODE_ANY, &jerr);
	assert_non_null(msg);
	int before = f->calls;
	assert_int_equal(vram_mcp_dispatch(f->mcp, msg, version, on_reply, f, NULL), 0);
	assert_int_equal(f->calls, before + 1);
	json_decref(msg);
	return f->last;
}

static int error_code(json_t *resp)
{
	json_t *e = json_object_get(resp, "error");
	assert_non_null(e);
	return (int)json_integer_value(json_object_get(e, "code"));
}

static const char *error_message(json_t *resp)
{
	return json_string_value(json_object_get(json_object_get(resp, "error"), "message"));
}

static void test_negotiate(void **state)
{
	assert_string_equal(vram_mcp_negotiate("2025-06-18"), "2025-06-18");
	assert_string_equal(vram_mcp_negotiate("2025-11-25"), "2025-11-25");
	/* Older or unknown: our latest with a handshake, and the client decides
	 * whether to go on; 2026-07-28 has no initialize to answer with it. */
	assert_string_equal(vram_mcp_negotiate("2024-11-05"), "2025-11-25");
	/* 2025-03-26, which many clients still send, is answered with itself */
	assert_string_equal(vram_mcp_negotiate("2025-03-26"), "2025-03-26");
	assert_string_equal(vram_mcp_negotiate("2099-01-01"), "2025-11-25");
	assert_string_equal(vram_mcp_negotiate("2026-07-28"), "2025-11-25");
	assert_string_equal(vram_mcp_negotiate(NULL), "2025-11-25");
	assert_true(vram_mcp_version_supported("2025-11-25"));
	assert_true(vram_mcp_version_supported("2025-03-26"));
	assert_false(vram_mcp_version_supported("2024-11-05"));
	assert_false(vram_mcp_version_supported(NULL));
	assert_true(vram_mcp_version_has_session("2025-06-18"));
	assert_true(vram_mcp_version_has_session("2025-11-25"));
	assert_false(vram_mcp_version_has_session("2026-07-28"));
}

static void test_initialize(void **state)
{
	struct fixture *f = *state;
	json_t *r = send_msg(f, "2025-11-25",
			     "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":"
			     "{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},"
			     "\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}");
	json_t *res = json_object_get(r, "result");
	assert_string_equal(json_string_value(json_object_get(res, "protocolVersion")), "2025-06-18");
	assert_non_null(json_object_get(json_object_get(res, "capabilities"), "tools"));
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(res, "serverInfo"), "name")), "vramd");
	/* The project() version of meson.build, not a placeholder. */
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(res, "serverInfo"), "version")),
		VRAM_VERSION);
	assert_string_not_equal(VRAM_VERSION, "unknown");
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 1);

	r = send_msg(f, "2025-11-25",
		     "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"initialize\",\"params\":"
		     "{\"protocolVersion\":\"2024-11-05\"}}");
	res = json_object_get(r, "result");
	assert_string_equal(json_string_value(json_object_get(res, "protocolVersion")), "2025-11-25");
	assert_string_equal(json_string_value(json_object_get(r, "id")), "a");
	/* Results of handshake revisions have no resultType. */
	assert_null(json_object_get(res, "resultType"));

	r = send_msg(f, "2025-11-25", "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"initialize\"}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	assert_non_null(strstr(error_message(r), "protocolVersion"));

	r = send_msg(f, "2025-11-25", "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\"}");
	assert_true(json_is_object(json_object_get(r, "result")));
}

#define META_2026                                                                  \
	"\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","       \
	"\"io.modelcontextprotocol/clientCapabilities\":{}}"

/* The server's version in a 2026-07-28 result's _meta. */
static const char *result_server_version(json_t *res)
{
	json_t *info = json_object_get(json_object_get(res, "_meta"),
				       "io.modelcontextprotocol/serverInfo");
	return json_string_value(json_object_get(info, "version"));
}

static void test_stateless(void **state)
{
	struct fixture *f = *state;
	const char *v = "2026-07-28";
	/* server/discover: the revisions, what we offer, how long it holds. */
	json_t *r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"server/discover\","
				   "\"params\":{" META_2026 "}}");
	json_t *res = json_object_get(r, "result");
	json_t *sv = json_object_get(res, "supportedVersions");
	assert_int_equal(json_array_size(sv), 4);
	assert_string_equal(json_string_value(json_array_get(sv, 0)), "2025-03-26");
	assert_string_equal(json_string_value(json_array_get(sv, 3)), "2026-07-28");
	assert_non_null(json_object_get(json_object_get(res, "capabilities"), "tools"));
	assert_string_equal(json_string_value(json_object_get(res, "resultType")), "complete");
	assert_true(json_integer_value(json_object_get(res, "ttlMs")) > 0);
	assert_string_equal(json_string_value(json_object_get(res, "cacheScope")), "public");
	assert_string_equal(result_server_version(res), VRAM_VERSION);

	/* Every request names its revision and capabilities in _meta. */
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/list\"}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	assert_non_null(strstr(error_message(r), "io.modelcontextprotocol/protocolVersion"));
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/list\",\"params\":"
			   "{\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	assert_non_null(strstr(error_message(r), "clientCapabilities"));
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"tools/list\",\"params\":"
			   "{\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"1900-01-01\","
			   "\"io.modelcontextprotocol/clientCapabilities\":{}}}}");
	assert_int_equal(error_code(r), VRAM_MCP_UNSUPPORTED_VERSION);
	json_t *data = json_object_get(json_object_get(r, "error"), "data");
	assert_string_equal(json_string_value(json_object_get(data, "requested")), "1900-01-01");
	assert_int_equal(json_array_size(json_object_get(data, "supported")), 4);

	/* tools/list may be cached; a result says what it is and who sent it. */
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/list\",\"params\":{"
			   META_2026 "}}");
	res = json_object_get(r, "result");
	assert_int_equal(json_array_size(json_object_get(res, "tools")), 10);
	assert_true(json_integer_value(json_object_get(res, "ttlMs")) > 0);
	assert_string_equal(json_string_value(json_object_get(res, "resultType")), "complete");
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"tools/call\",\"params\":{"
			   "\"name\":\"plan\",\"arguments\":{\"gpus\":\"1x24GiB\"}," META_2026 "}}");
	res = json_object_get(r, "result");
	assert_true(json_is_true(json_object_get(res, "isError")));
	assert_string_equal(json_string_value(json_object_get(res, "resultType")), "complete");
	assert_string_equal(result_server_version(res), VRAM_VERSION);

	/* 2026-07-28 removed ping. */
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\",\"params\":{"
			   META_2026 "}}");
	assert_int_equal(error_code(r), VRAM_MCP_METHOD_NOT_FOUND);
}

/* tools/list hands out no cursors, so any cursor is an invalid one. */
static void test_tools_list_cursor(void **state)
{
	struct fixture *f = *state;
	json_t *r = send_msg(f, "2025-11-25", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
					      "\"tools/list\",\"params\":{\"cursor\":\"abc\"}}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	assert_non_null(strstr(error_message(r), "cursor"));
	r = send_msg(f, "2025-11-25", "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/list\","
				      "\"params\":{}}");
	assert_null(json_object_get(json_object_get(r, "result"), "nextCursor"));
	assert_int_equal(json_array_size(json_object_get(json_object_get(r, "result"), "tools")), 10);
}

static void test_jsonrpc_errors(void **state)
{
	struct fixture *f = *state;
	const char *v = "2025-11-25";
	json_t *r = send_msg(f, v, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_REQUEST);
	assert_non_null(strstr(error_message(r), "batch"));
	assert_true(json_is_null(json_object_get(r, "id")));

	r = send_msg(f, v, "\"ping\"");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_REQUEST);
	r = send_msg(f, v, "{\"id\":1,\"method\":\"ping\"}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_REQUEST);
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 1);
	r = send_msg(f, v, "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_REQUEST);
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"ping\"}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_REQUEST);
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":1}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_REQUEST);
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":7}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_REQUEST);
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"resources/list\"}");
	assert_int_equal(error_code(r), VRAM_MCP_METHOD_NOT_FOUND);
	assert_non_null(strstr(error_message(r), "resources/list"));
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"params\":[1]}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);

	/* Notifications and responses get no answer at all. */
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
	assert_null(r);
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"method\":\"no/such/notification\"}");
	assert_null(r);
	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}");
	assert_null(r);
}

static void test_tools_list(void **state)
{
	struct fixture *f = *state;
	static const char *const names[] = { "get_gpu_status", "offload_gpu", "release_gpu",
					     "update_gpu_timeout", "list_workloads", "start_workload",
					     "stop_workload", "restore_workload", "park_workload",
					     "plan" };
	json_t *r = send_msg(f, "2025-06-18", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}");
	json_t *list = json_object_get(json_object_get(r, "result"), "tools");
	assert_int_equal(json_array_size(list), sizeof(names) / sizeof(names[0]));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		json_t *t = json_array_get(list, i);
		assert_string_equal(json_string_value(json_object_get(t, "name")), names[i]);
		json_t *in = json_object_get(t, "inputSchema");
		assert_string_equal(json_string_value(json_object_get(in, "type")), "object");
		assert_true(json_is_false(json_object_get(in, "additionalProperties")));
		assert_non_null(json_object_get(t, "outputSchema"));
		assert_true(strlen(json_string_value(json_object_get(t, "description"))) > 20);
	}
	json_t *start = json_array_get(list, 5);
	json_t *req = json_object_get(json_object_get(start, "inputSchema"), "required");
	assert_string_equal(json_string_value(json_array_get(req, 0)), "workload");
}

/* A tools/call; returns the response. */
static json_t *call_tool(struct fixture *f, const char *version, const char *name,
			 const char *args)
{
	char text[4096];
	bool stateless = strcmp(version, "2026-07-28") == 0;
	snprintf(text, sizeof(text),
		 "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"%s\"%s%s%s}}",
		 name, args ? ",\"arguments\":" : "", args ? args : "", stateless ? "," META_2026 : "");
	return send_msg(f, version, text);
}

/* The text of an isError result. */
static const char *tool_error_text(json_t *resp)
{
	json_t *res = json_object_get(resp, "result");
	if (!res)
		print_error("not a result: %s\n", error_message(resp));
	assert_non_null(res);
	assert_true(json_is_true(json_object_get(res, "isError")));
	return json_string_value(json_object_get(json_array_get(json_object_get(res, "content"), 0),
						 "text"));
}

static void test_tool_arguments(void **state)
{
	struct fixture *f = *state;
	const char *v = "2025-11-25";
	json_t *r = call_tool(f, v, "start_everything", "{}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	assert_non_null(strstr(error_message(r), "start_everything"));
	assert_non_null(strstr(error_message(r), "start_workload"));

	r = send_msg(f, v, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	r = call_tool(f, v, "start_workload", "[\"chat\"]");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);

	/* From 2025-11-25 on, bad arguments are results the model can read. */
	const char *text = tool_error_text(call_tool(f, v, "start_workload", "{}"));
	assert_string_equal(text, "start_workload: workload: required");
	text = tool_error_text(call_tool(f, v, "start_workload", NULL));
	assert_string_equal(text, "start_workload: workload: required");
	text = tool_error_text(call_tool(f, v, "start_workload", "{\"workload\": 3}"));
	assert_string_equal(text, "start_workload: workload: expected a string, got number");
	text = tool_error_text(call_tool(f, v, "stop_workload", "{\"workload\":\"a\",\"wait\":1}"));
	assert_string_equal(text,
			    "stop_workload: unknown argument \"wait\" (expected \"workload\", \"timeout\")");
	text = tool_error_text(call_tool(f, v, "restore_workload", "{\"workload\":\"a\",\"timeout\":0}"));
	assert_string_equal(text, "restore_workload: timeout: expected a number from 1 to 3600, got 0");
	text = tool_error_text(call_tool(f, v, "get_gpu_status", "{\"x\":1}"));
	assert_string_equal(text, "get_gpu_status: unknown argument \"x\" (expected none)");
	text = tool_error_text(call_tool(f, v, "update_gpu_timeout", "{\"timeout\":true}"));
	assert_string_equal(text,
			    "update_gpu_timeout: timeout: expected a number or string, got boolean");
	text = tool_error_text(call_tool(f, "2026-07-28", "update_gpu_timeout", "{}"));
	assert_string_equal(text, "update_gpu_timeout: timeout_seconds or timeout: required");

	/* In 2025-06-18 they are protocol errors. */
	r = call_tool(f, "2025-06-18", "start_workload", "{}");
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	assert_string_equal(error_message(r), "start_workload: workload: required");

	/*
	 * Client text quoted with "%.64s" is cut inside a character ('a' and
	 * then 2-byte characters): jansson refused the message, the response
	 * was NULL and HTTP answered an empty 202. Now it is an error with the
	 * id, the cut character replaced with U+FFFD.
	 */
	char key[128] = "a";
	for (int i = 0; i < 40; i++)
		strcat(key, "\xc3\xa9");
	char args[256], want[256];
	snprintf(args, sizeof(args), "{\"%s\": 1}", key);
	r = call_tool(f, "2025-06-18", "offload_gpu", args);
	assert_non_null(r);
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 7);
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	snprintf(want, sizeof(want), "offload_gpu: unknown argument \"%.63s\xef\xbf\xbd\" (expected \"workload\")",
		 key);
	assert_string_equal(error_message(r), want);
	/* the same from 2025-11-25 on, as a tool result that has its text */
	text = tool_error_text(call_tool(f, v, "offload_gpu", args));
	assert_string_equal(text, want);
	r = call_tool(f, v, key, "{}");
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 7);
	assert_int_equal(error_code(r), VRAM_MCP_INVALID_PARAMS);
	assert_non_null(strstr(error_message(r), "\xef\xbf\xbd\" (tools: "));
}

static void test_plan(void **state)
{
	struct fixture *f = *state;
	const char *cfg =
		"{\"gpus\":\"1x24GiB\",\"config\":\"workloads:\\n"
		"  big:\\n    cmd: [sleep, \\\"1\\\"]\\n    gpus: 1\\n    memory: 30GiB\\n"
		"  small:\\n    cmd: [sleep, \\\"1\\\"]\\n    gpus: 1\\n    memory: 8GiB\\n\"}";
	json_t *r = call_tool(f, "2025-11-25", "plan", cfg);
	json_t *res = json_object_get(r, "result");
	assert_non_null(res);
	assert_true(json_is_false(json_object_get(res, "isError")));
	json_t *sc = json_object_get(res, "structuredContent");
	assert_true(json_is_false(json_object_get(sc, "fits")));
	json_t *rows = json_object_get(sc, "workloads");
	assert_int_equal(json_array_size(rows), 2);
	json_t *row;
	size_t i;
	int refused = 0, fits = 0;
	json_array_foreach(rows, i, row) {
		const char *o = json_string_value(json_object_get(row, "outcome"));
		refused += strcmp(o, "refused") == 0;
		fits += strcmp(o, "fits") == 0;
	}
	assert_int_equal(refused, 1);
	assert_int_equal(fits, 1);
	/* The text is the table a person reads, then the JSON (for clients
	 * that do not read structuredContent). */
	json_t *content = json_object_get(res, "content");
	assert_int_equal(json_array_size(content), 2);
	const char *text = json_string_value(json_object_get(json_array_get(content, 0), "text"));
	assert_non_null(strstr(text, "refused"));
	json_t *again = json_loads(
		json_string_value(json_object_get(json_array_get(content, 1), "text")), 0, NULL);
	assert_true(json_equal(again, sc));
	json_decref(again);

	text = tool_error_text(call_tool(f, "2025-11-25", "plan",
					 "{\"gpus\":\"lots\",\"config\":\"workloads: {}\\n\"}"));
	assert_non_null(strstr(text, "gpus: expected a list like"));
	text = tool_error_text(call_tool(f, "2025-11-25", "plan",
					 "{\"gpus\":\"1x24GiB\",\"config\":\"workloads: [\\n\"}"));
	assert_true(strncmp(text, "config: ", 8) == 0);
	/* Without a daemon, there is no config of its own. */
	text = tool_error_text(call_tool(f, "2025-11-25", "plan", "{\"gpus\":\"1x24GiB\"}"));
	assert_non_null(strstr(text, "no config"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_negotiate),
		cmocka_unit_test_setup_teardown(test_initialize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jsonrpc_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stateless, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tools_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tools_list_cursor, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tool_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_plan, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
