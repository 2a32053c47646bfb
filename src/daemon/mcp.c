/* SPDX-License-Identifier: MIT */
/*
 * The MCP server; see mcp.h. Messages are checked in the order JSON-RPC
 * asks (parse, shape, method, params) and each failure has its own code, so
 * that a client can tell a broken message from a broken call. A tool that
 * runs but fails (unknown workload, wrong state, no room) answers a result
 * with isError and a sentence a person can act on.
 */
#include "daemon/mcp.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/base64.h"
#include "common/list.h"
#include "common/log.h"
#include "common/strutil.h"
#include "common/units.h"
#include "common/version.h"
#include "config/config.h"
#include "core/plan.h"
#include "daemon/http.h"
#include "daemon/manager.h"
#include "daemon/peer.h"
#include "daemon/waitact.h"

const char *const vram_mcp_versions[] = { "2025-03-26", "2025-06-18",
					  VRAM_MCP_VERSION_HANDSHAKE_LATEST,
					  VRAM_MCP_VERSION_STATELESS, NULL };
#define SUPPORTED_TEXT "2025-03-26, 2025-06-18, 2025-11-25, 2026-07-28"
/* The per-request fields of 2026-07-28, in params._meta and result._meta. */
#define META_VERSION_KEY "io.modelcontextprotocol/protocolVersion"
#define META_CAPABILITIES_KEY "io.modelcontextprotocol/clientCapabilities"
#define META_SERVER_INFO_KEY "io.modelcontextprotocol/serverInfo"
/* ms a 2026-07-28 client may cache tools/list and server/discover: they are
 * fixed for the life of the daemon, and a newer vramd may change them. */
#define LIST_TTL_MS 600000
#define INSTRUCTIONS                                                                   \
	"vramd places model services on GPUs, starts them on first request, parks idle "  \
	"ones in host RAM and restores them on demand. Use list_workloads or "            \
	"get_gpu_status first; workload names come from there."

/* Who made a session: "uid 1000", "tcp 127.0.0.1" or "tcp 127.0.0.1 token". */
#define OWNER_MAX (VRAM_PEER_ADDR_MAX + 16)

struct session {
	char id[VRAM_MCP_SESSION_ID_LEN + 1];
	char version[16];
	char owner[OWNER_MAX]; /* only this owner may use or end it */
	bool tcp;              /* the owner came over TCP: counts against VRAM_MCP_SESSIONS_TCP_MAX */
	uint64_t last_used_ms; /* ms, monotonic */
	struct vram_list link; /* in mcp->sessions */
};

struct vram_mcp {
	struct event_base *base;  /* borrowed */
	struct vram_manager *m;   /* borrowed, may be NULL */
	struct vram_waitact *wa;  /* borrowed, may be NULL */
	json_t *tools;            /* the tools/list array */
	struct vram_list sessions; /* struct session, most recently used first */
	size_t n_sessions;
	struct vram_list calls;   /* waiting tool calls (struct vram_mcp_call), newest first */
	size_t n_calls;
	size_t n_calls_tcp;       /* of them, TCP clients' */
	const struct vram_peer *peer; /* who sent the message being dispatched; NULL: vramd itself */
	struct vram_list http;    /* HTTP requests waiting for a call (struct http_wait) */
	bool closing;
};

struct vram_mcp_call {
	struct vram_mcp *mcp;
	struct vram_list link; /* in mcp->calls while it waits */
	json_t *id;
	const char *version; /* static: an entry of vram_mcp_versions */
	vram_mcp_reply_cb cb;
	void *arg;
	enum vram_action action;
	char workload[VRAM_CONFIG_NAME_MAX + 1];
	unsigned wait_s;
	struct vram_manager_waiter *waiter; /* a workload action, or NULL */
	struct vram_waitact_req *compat;    /* a compat offload/release, or NULL */
	struct event *timer;                /* the wait bound */
	bool tcp;                           /* a TCP client's: counted in n_calls_tcp */
};

/* ------------------------------------------------------------- revisions */

/* Our static copy of a supported version, or NULL. */
static const char *version_static(const char *version)
{
	for (size_t i = 0; version && vram_mcp_versions[i]; i++)
		if (strcmp(version, vram_mcp_versions[i]) == 0)
			return vram_mcp_versions[i];
	return NULL;
}

const char *vram_mcp_negotiate(const char *requested)
{
	const char *v = version_static(requested);
	return v && vram_mcp_version_has_session(v) ? v : VRAM_MCP_VERSION_HANDSHAKE_LATEST;
}

bool vram_mcp_version_has_session(const char *version)
{
	return version && strcmp(version, VRAM_MCP_VERSION_STATELESS) != 0;
}

static bool is_stateless(const char *version)
{
	return !vram_mcp_version_has_session(version);
}

bool vram_mcp_version_supported(const char *version)
{
	return version_static(version) != NULL;
}

/* SEP-1303 (2025-11-25): bad tool arguments are a tool result, not a protocol error. */
static bool args_errors_are_results(const char *version)
{
	return strcmp(version, "2025-03-26") != 0 && strcmp(version, "2025-06-18") != 0;
}

/* ------------------------------------------------------------------ tools */

enum tool_kind {
	TOOL_GPU_STATUS,
	TOOL_COMPAT_ACTION,
	TOOL_GPU_TIMEOUT,
	TOOL_LIST,
	TOOL_ACTION,
	TOOL_PLAN,
};

struct tool {
	const char *name;
	const char *title;
	const char *description;
	const char *input_schema;  /* JSON text */
	const char *output_schema; /* JSON text */
	enum tool_kind kind;
	enum vram_action action;
	/*
	 * The hints of the tool's annotations (MCP 2025-03-26 on), for a
	 * client deciding what to ask its user before a call: changes nothing
	 * (read_only); may end something a user would miss, processes and
	 * their loaded models (destructive); a repeat does no more (idempotent).
	 * openWorldHint is false for every tool: they reach this vramd only.
	 */
	bool read_only, destructive, idempotent;
};

#define WORKLOAD_OPT "\"workload\": {\"type\": \"string\", \"description\": \"a workload name; all when left out\"}"
#define WORKLOAD_REQ "\"workload\": {\"type\": \"string\", \"description\": \"the workload name (see list_workloads)\"}"
#define WAIT_PROP                                                                          \
	"\"timeout\": {\"type\": \"number\", \"minimum\": 1, \"maximum\": 3600, "              \
	"\"description\": \"seconds to wait for the outcome (default 300); the action goes on after\"}"
#define COMPAT_OUT                                                                         \
	"{\"type\": \"object\", \"properties\": {\"success\": {\"type\": \"boolean\"}, "       \
	"\"message\": {\"type\": \"string\"}, \"results\": {\"type\": \"array\"}}, "           \
	"\"required\": [\"success\", \"message\"]}"
#define ACTION_OUT                                                                         \
	"{\"type\": \"object\", \"properties\": {\"workload\": {\"type\": \"string\"}, "       \
	"\"action\": {\"type\": \"string\"}, \"state\": {\"type\": \"string\"}, "              \
	"\"seconds\": {\"type\": \"number\"}, \"bytes\": {\"type\": \"integer\"}, "            \
	"\"message\": {\"type\": \"string\"}, \"ok\": {\"type\": \"boolean\"}}, "              \
	"\"required\": [\"workload\", \"action\", \"state\", \"ok\"]}"

static const struct tool tools[] = {
	{ "get_gpu_status", "GPU status",
	  "Each workload's state, where its memory is (gpu, cpu or unloaded), its GPU memory in GiB "
	  "and idle timers: the same object as GET /api/gpu/status.",
	  "{\"type\": \"object\", \"properties\": {}, \"additionalProperties\": false}",
	  "{\"type\": \"object\", \"additionalProperties\": {\"type\": \"object\"}}",
	  TOOL_GPU_STATUS, 0, .read_only = true, .idempotent = true },
	{ "offload_gpu", "Offload to host RAM",
	  "Park a workload's GPU memory in host RAM (or every ready workload's when no workload is "
	  "given); it is restored on its next request. Same as POST /api/gpu/offload.",
	  "{\"type\": \"object\", \"properties\": {" WORKLOAD_OPT "}, \"additionalProperties\": false}",
	  COMPAT_OUT, TOOL_COMPAT_ACTION, VRAM_ACTION_OFFLOAD, .idempotent = true },
	{ "release_gpu", "Release GPU and host memory",
	  "Stop a workload and free its GPU and host memory (or every loaded workload's when no "
	  "workload is given); it starts again on its next request. Same as POST /api/gpu/release.",
	  "{\"type\": \"object\", \"properties\": {" WORKLOAD_OPT "}, \"additionalProperties\": false}",
	  COMPAT_OUT, TOOL_COMPAT_ACTION, VRAM_ACTION_RELEASE, .destructive = true,
	  .idempotent = true },
	{ "update_gpu_timeout", "Set the idle release timeout",
	  "Seconds of idle time before a workload (or every workload) is released; 0 means never. "
	  "Same as POST /api/gpu/timeout.",
	  "{\"type\": \"object\", \"properties\": {\"timeout_seconds\": {\"type\": [\"number\", "
	  "\"string\"], \"description\": \"seconds (0 = never), or a duration like \\\"10m\\\" or "
	  "\\\"never\\\"; required unless timeout is given\"}, \"timeout\": {\"type\": [\"number\", "
	  "\"string\"], \"description\": \"the same as timeout_seconds (the REST route's name)\"}, "
	  WORKLOAD_OPT "}, \"anyOf\": [{\"required\": [\"timeout_seconds\"]}, "
	  "{\"required\": [\"timeout\"]}], \"additionalProperties\": false}",
	  "{\"type\": \"object\", \"properties\": {\"success\": {\"type\": \"boolean\"}, "
	  "\"message\": {\"type\": \"string\"}, \"timeout\": {\"type\": \"number\"}, "
	  "\"workload\": {\"type\": \"string\"}}, \"required\": [\"success\", \"timeout\"]}",
	  TOOL_GPU_TIMEOUT, 0, .idempotent = true },
	{ "list_workloads", "List workloads",
	  "The GPUs and every workload with its state, placement, memory, idle timers and the "
	  "models it serves: the same as GET /api/status.",
	  "{\"type\": \"object\", \"properties\": {}, \"additionalProperties\": false}",
	  "{\"type\": \"object\", \"properties\": {\"gpus\": {\"type\": \"array\"}, "
	  "\"workloads\": {\"type\": \"array\"}}, \"required\": [\"gpus\", \"workloads\"]}",
	  TOOL_LIST, 0, .read_only = true, .idempotent = true },
	{ "start_workload", "Start a workload",
	  "Start a stopped workload and wait until it is ready (bounded by timeout).",
	  "{\"type\": \"object\", \"properties\": {" WORKLOAD_REQ ", " WAIT_PROP "}, "
	  "\"required\": [\"workload\"], \"additionalProperties\": false}",
	  ACTION_OUT, TOOL_ACTION, VRAM_ACTION_START, .idempotent = true },
	{ "stop_workload", "Stop a workload",
	  "Stop a workload (SIGTERM, then SIGKILL after its grace) and wait until it has stopped.",
	  "{\"type\": \"object\", \"properties\": {" WORKLOAD_REQ ", " WAIT_PROP "}, "
	  "\"required\": [\"workload\"], \"additionalProperties\": false}",
	  ACTION_OUT, TOOL_ACTION, VRAM_ACTION_STOP, .destructive = true, .idempotent = true },
	{ "restore_workload", "Restore a workload",
	  "Bring an offloaded or parked workload back onto its GPUs and wait until it is ready.",
	  "{\"type\": \"object\", \"properties\": {" WORKLOAD_REQ ", " WAIT_PROP "}, "
	  "\"required\": [\"workload\"], \"additionalProperties\": false}",
	  ACTION_OUT, TOOL_ACTION, VRAM_ACTION_RESTORE, .idempotent = true },
	{ "park_workload", "Park a workload on disk",
	  "Move a workload's GPU memory to disk (one file per process) and free the host RAM it "
	  "held; a ready workload is offloaded first. The process lives on: its next request or "
	  "restore_workload reads it back, in seconds rather than a cold start. Waits until it is "
	  "parked. Same as POST /api/workloads/{name}/park.",
	  "{\"type\": \"object\", \"properties\": {" WORKLOAD_REQ ", " WAIT_PROP "}, "
	  "\"required\": [\"workload\"], \"additionalProperties\": false}",
	  ACTION_OUT, TOOL_ACTION, VRAM_ACTION_PARK, .idempotent = true },
	{ "plan", "Plan placement (dry run)",
	  "Where every workload would go if all started at once, changing nothing: the daemon's "
	  "config on its GPUs, or on hypothetical GPUs (\"4x40GiB\"), or another config (YAML text).",
	  "{\"type\": \"object\", \"properties\": {\"gpus\": {\"type\": \"string\", "
	  "\"description\": \"hypothetical GPUs like \\\"4x40GiB\\\" or \\\"1x24GiB,1x80GiB\\\"\"}, "
	  "\"config\": {\"type\": \"string\", \"description\": \"a config file's text (YAML)\"}}, "
	  "\"additionalProperties\": false}",
	  "{\"type\": \"object\", \"properties\": {\"gpus\": {\"type\": \"array\"}, "
	  "\"workloads\": {\"type\": \"array\"}, \"fits\": {\"type\": \"boolean\"}}, "
	  "\"required\": [\"gpus\", \"workloads\", \"fits\"]}",
	  TOOL_PLAN, 0, .read_only = true, .idempotent = true },
};
#define N_TOOLS (sizeof(tools) / sizeof(tools[0]))

static const struct tool *tool_find(const char *name)
{
	for (size_t i = 0; i < N_TOOLS; i++)
		if (strcmp(tools[i].name, name) == 0)
			return &tools[i];
	return NULL;
}

static const char *type_name(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_INTEGER:
	case JSON_REAL: return "number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	default: return "null";
	}
}

static bool type_ok(json_t *v, const char *type)
{
	if (strcmp(type, "number") == 0)
		return json_is_number(v);
	if (strcmp(type, "integer") == 0)
		return json_is_integer(v);
	return strcmp(type, type_name(v)) == 0;
}

/*
 * Checks args against one of our input schemas (the subset they use: type,
 * properties, required, additionalProperties false, minimum, maximum).
 * Returns true, or false with a message naming the argument.
 */
static bool args_valid(json_t *schema, json_t *args, char *msg, size_t msg_size)
{
	json_t *props = json_object_get(schema, "properties");
	const char *key;
	json_t *v;
	json_object_foreach(args, key, v) {
		json_t *p = json_object_get(props, key);
		if (!p) {
			size_t off = (size_t)snprintf(msg, msg_size, "unknown argument \"%.64s\" (expected ",
						      key);
			const char *k2;
			json_t *p2;
			bool first = true;
			json_object_foreach(props, k2, p2) {
				if (off >= msg_size)
					break;
				off += (size_t)snprintf(msg + off, msg_size - off, "%s\"%s\"",
							first ? "" : ", ", k2);
				first = false;
			}
			if (off < msg_size)
				snprintf(msg + off, msg_size - off, "%s)", first ? "none" : "");
			return false;
		}
		json_t *t = json_object_get(p, "type");
		bool ok = false;
		if (json_is_string(t)) {
			ok = type_ok(v, json_string_value(t));
		} else {
			size_t i;
			json_t *ti;
			json_array_foreach(t, i, ti)
				ok = ok || type_ok(v, json_string_value(ti));
		}
		if (!ok) {
			char want[64] = "";
			if (json_is_string(t))
				snprintf(want, sizeof(want), "%s", json_string_value(t));
			else
				snprintf(want, sizeof(want), "%s or %s",
					 json_string_value(json_array_get(t, 0)),
					 json_string_value(json_array_get(t, 1)));
			snprintf(msg, msg_size, "%s: expected a %s, got %s", key, want, type_name(v));
			return false;
		}
		json_t *min = json_object_get(p, "minimum"), *max = json_object_get(p, "maximum");
		if (json_is_number(v) &&
		    ((min && json_number_value(v) < json_number_value(min)) ||
		     (max && json_number_value(v) > json_number_value(max)) ||
		     !isfinite(json_number_value(v)))) {
			snprintf(msg, msg_size, "%s: expected a number from %g to %g, got %g", key,
				 json_number_value(min), json_number_value(max), json_number_value(v));
			return false;
		}
	}
	size_t i;
	json_t *r;
	json_array_foreach(json_object_get(schema, "required"), i, r) {
		if (!json_object_get(args, json_string_value(r))) {
			snprintf(msg, msg_size, "%s: required", json_string_value(r));
			return false;
		}
	}
	/* anyOf: [{required: [a]}, {required: [b]}]: one of a, b (a name and its alias) */
	json_t *any = json_object_get(schema, "anyOf");
	bool one = json_array_size(any) == 0;
	json_array_foreach(any, i, r)
		one = one || json_object_get(args, json_string_value(json_array_get(
							   json_object_get(r, "required"), 0)));
	if (!one) {
		size_t off = 0;
		json_array_foreach(any, i, r)
			if (off < msg_size)
				off += (size_t)snprintf(msg + off, msg_size - off, "%s%s",
							i ? " or " : "",
							json_string_value(json_array_get(
								json_object_get(r, "required"), 0)));
		if (off < msg_size)
			snprintf(msg + off, msg_size - off, ": required");
		return false;
	}
	return true;
}

/* ---------------------------------------------------------------- replies */

/*
 * Formats a message into out (size bytes) as UTF-8. Messages quote what
 * clients sent, cut with "%.64s" and the like, possibly inside a
 * character; jansson refuses such text, and the reply would be lost.
 */
static void vformat_utf8(char *out, size_t size, const char *fmt, va_list ap)
{
	char raw[2048];
	int n = vsnprintf(raw, sizeof(raw), fmt, ap);
	size_t len = n < 0 ? 0 : (size_t)n < sizeof(raw) ? (size_t)n : sizeof(raw) - 1;
	vram_utf8_sanitize(out, size, raw, len);
}

/* result is borrowed. */
static json_t *response(json_t *id, json_t *result)
{
	return json_pack("{s:s, s:O, s:O}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result",
			 result);
}

/* An error response; data (stolen, may be NULL) becomes error.data. */
static json_t *error_response_data(json_t *id, int code, json_t *data, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static json_t *error_response_data(json_t *id, int code, json_t *data, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vformat_utf8(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_t *r = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
			      id ? id : json_null(), "error", "code", code, "message", msg);
	if (r && data)
		json_object_set(json_object_get(r, "error"), "data", data);
	json_decref(data);
	return r;
}

#define error_response(id, code, ...) error_response_data(id, code, NULL, __VA_ARGS__)

/* MCP 2026-07-28's UnsupportedProtocolVersionError, for any revision we do not speak. */
static json_t *unsupported_version(json_t *id, const char *requested)
{
	json_t *supported = json_array();
	for (size_t i = 0; supported && vram_mcp_versions[i]; i++)
		json_array_append_new(supported, json_string(vram_mcp_versions[i]));
	json_t *data = supported ? json_pack("{s:o, s:s}", "supported", supported, "requested",
					     requested)
				 : NULL;
	return error_response_data(id, VRAM_MCP_UNSUPPORTED_VERSION, data,
				   "Unsupported protocol version \"%.32s\" (supported: " SUPPORTED_TEXT
				   ")",
				   requested);
}

static json_t *server_info(void)
{
	return json_pack("{s:s, s:s, s:s}", "name", "vramd", "title", "vramd GPU workload manager",
			 "version", VRAM_VERSION);
}

/*
 * What every result carries from 2026-07-28 on: resultType, and the server
 * in _meta. result may be NULL (out of memory: the caller answers that).
 */
static void result_finish(json_t *result, const char *version)
{
	if (!result || !is_stateless(version))
		return;
	json_object_set_new(result, "resultType", json_string("complete"));
	json_t *meta = json_object_get(result, "_meta");
	if (!meta) {
		meta = json_object();
		json_object_set_new(result, "_meta", meta);
	}
	json_object_set_new(meta, META_SERVER_INFO_KEY, server_info());
}

/* tools/list and server/discover may be cached (2026-07-28, CacheableResult). */
static void result_cacheable(json_t *result, const char *version)
{
	if (!result || !is_stateless(version))
		return;
	json_object_set_new(result, "ttlMs", json_integer(LIST_TTL_MS));
	json_object_set_new(result, "cacheScope", json_string("public"));
}

/*
 * A tools/call result. structured (stolen, may be NULL) goes into
 * structuredContent and, as JSON, into a text block, as the tools page of
 * each revision asks for compatibility; text, when given, is a text block
 * for a person before it (plan's table).
 */
static json_t *tool_result(json_t *structured, bool is_error, const char *text)
{
	char *dumped = structured ? json_dumps(structured, VRAM_HTTP_JSON_FLAGS) : NULL;
	json_t *content = json_array();
	json_t *r = content ? json_pack("{s:o, s:b}", "content", content, "isError", is_error) : NULL;
	if (r && text)
		json_array_append_new(content, json_pack("{s:s, s:s}", "type", "text", "text", text));
	if (r && (dumped || !text))
		json_array_append_new(content, json_pack("{s:s, s:s}", "type", "text", "text",
							 dumped ? dumped : ""));
	if (r && structured)
		json_object_set(r, "structuredContent", structured);
	json_decref(structured);
	free(dumped);
	return r;
}

static json_t *tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *tool_error(const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vformat_utf8(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return tool_result(NULL, true, msg);
}

/* The message of a REST error body {"error": {"message"}}, or a fallback. */
static const char *rest_message(json_t *body)
{
	const char *msg = json_string_value(json_object_get(json_object_get(body, "error"), "message"));
	if (!msg)
		msg = json_string_value(json_object_get(body, "message"));
	return msg ? msg : "failed";
}

/* A compat route's reply as a tool result: isError unless it says success. */
static json_t *compat_result(int status, json_t *body)
{
	if (status != 200 || !json_is_true(json_object_get(body, "success")))
		return tool_error("%s", rest_message(body));
	return tool_result(json_incref(body), false, NULL);
}

/* ------------------------------------------------------- calls that wait */

static void call_unlink(struct vram_mcp_call *c)
{
	struct vram_mcp *mcp = c->mcp;
	vram_list_remove(&c->link);
	mcp->n_calls--;
	mcp->n_calls_tcp -= c->tcp;
}

static void call_free(struct vram_mcp_call *c)
{
	if (c->timer)
		event_free(c->timer);
	json_decref(c->id);
	free(c);
}

/* Sends the result of a waiting call and frees it. result is stolen. */
static void call_finish(struct vram_mcp_call *c, json_t *result)
{
	call_unlink(c);
	result_finish(result, c->version);
	json_t *resp = result ? response(c->id, result) : NULL;
	if (!resp)
		resp = error_response(c->id, VRAM_MCP_INTERNAL_ERROR, "out of memory");
	c->cb(resp, c->arg);
	json_decref(resp);
	json_decref(result);
	call_free(c);
}

/* Stops waiting for the action's outcome; the action goes on. */
static void call_stop_waiting(struct vram_mcp_call *c)
{
	if (c->waiter)
		vram_manager_waiter_cancel(c->waiter);
	c->waiter = NULL;
	if (c->compat)
		vram_waitact_cancel(c->compat);
	c->compat = NULL;
}

void vram_mcp_call_cancel(struct vram_mcp_call *c)
{
	if (!c)
		return;
	call_stop_waiting(c);
	call_unlink(c);
	call_free(c);
}

static void on_action_done(const struct vram_action_result *res, void *arg)
{
	struct vram_mcp_call *c = arg;
	c->waiter = NULL;
	json_t *out = vram_waitact_result_json(res, c->action);
	json_t *result = res->error ? tool_error("%s %s failed: %s", vram_action_name(c->action),
						 c->workload, res->message)
				    : tool_result(out, false, NULL);
	if (res->error)
		json_decref(out);
	call_finish(c, result);
}

static void on_compat_done(int status, json_t *body, void *arg)
{
	struct vram_mcp_call *c = arg;
	c->compat = NULL;
	call_finish(c, compat_result(status, body));
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct vram_mcp_call *c = arg;
	call_stop_waiting(c);
	call_finish(c, tool_error("the %s of %s is not done after %u s; it goes on (see list_workloads)",
				  vram_action_name(c->action), c->workload[0] ? c->workload : "workloads",
				  c->wait_s));
}

/* ------------------------------------------------------------ tool bodies */

/* Builds the planner's GPUs from a "4x40GiB" list, or from the daemon's GPUs. */
static int plan_gpus(struct vram_mcp *mcp, const char *list, uint64_t reserve,
		     struct vram_plan_gpu *gpus, size_t *ret_n, char *msg, size_t msg_size)
{
	size_t n = 0;
	if (list) {
		uint64_t sizes[VRAM_PLAN_MAX_GPUS];
		int k = vram_units_parse_gpu_list(list, sizes, VRAM_PLAN_MAX_GPUS);
		if (k <= 0) {
			snprintf(msg, msg_size,
				 "gpus: expected a list like \"4x40GiB\" or \"1x24GiB,1x80GiB\", got \"%.64s\"",
				 list);
			return -EINVAL;
		}
		for (int i = 0; i < k; i++, n++) {
			char b[32];
			gpus[n] = (struct vram_plan_gpu){ .index = (unsigned)i, .total = sizes[i],
							  .reserve = reserve };
			snprintf(gpus[n].name, sizeof(gpus[n].name), "%s GPU",
				 vram_units_format_bytes(sizes[i], b, sizeof(b)));
		}
	} else {
		json_t *a = vram_manager_gpus_json(mcp->m);
		size_t i;
		json_t *g;
		json_array_foreach(a, i, g) {
			if (n >= VRAM_PLAN_MAX_GPUS)
				break;
			json_t *mem = json_object_get(g, "memory");
			gpus[n] = (struct vram_plan_gpu){
				.index = (unsigned)json_integer_value(json_object_get(g, "index")),
				.total = (uint64_t)json_integer_value(json_object_get(mem, "total")),
				.reserve = reserve,
			};
			const char *name = json_string_value(json_object_get(g, "name"));
			snprintf(gpus[n].name, sizeof(gpus[n].name), "%s", name ? name : "GPU");
			n++;
		}
		json_decref(a);
	}
	if (n == 0) {
		snprintf(msg, msg_size, "no GPUs to plan on: give gpus, like \"4x40GiB\"");
		return -EINVAL;
	}
	*ret_n = n;
	return 0;
}

static json_t *run_plan(struct vram_mcp *mcp, json_t *args)
{
	const char *list = json_string_value(json_object_get(args, "gpus"));
	json_t *text = json_object_get(args, "config");
	struct vram_config *own = NULL;
	const struct vram_config *cfg = NULL;
	json_t *result = NULL;
	if (text) {
		char *error = NULL;
		int r = vram_config_parse(json_string_value(text), json_string_length(text), "config",
					  NULL, &own, &error);
		if (r < 0) {
			result = tool_error("config: %s", error ? error : strerror(-r));
			free(error);
			return result;
		}
		free(error);
		cfg = own;
	} else if (mcp->m) {
		cfg = vram_manager_config(mcp->m);
	}
	if (!cfg)
		return tool_error("no config to plan: give config");

	struct vram_plan_gpu gpus[VRAM_PLAN_MAX_GPUS];
	size_t n = 0;
	char msg[512];
	struct vram_plan_table *t = NULL;
	if (plan_gpus(mcp, list, cfg->gpus.reserve, gpus, &n, msg, sizeof(msg)) < 0) {
		result = tool_error("%s", msg);
		goto out;
	}
	int r = vram_plan_config(cfg, gpus, n, &t);
	if (r < 0) {
		result = tool_error("plan: %s", strerror(-r));
		goto out;
	}
	char *js = vram_plan_table_json(t);
	char *table = vram_plan_table_format(t);
	json_t *plan = js ? json_loads(js, 0, NULL) : NULL;
	if (plan) {
		bool fits = true;
		for (size_t i = 0; i < t->n_rows; i++)
			if (t->rows[i].result.outcome == VRAM_PLAN_REFUSED)
				fits = false;
		json_object_set_new(plan, "fits", json_boolean(fits));
		result = tool_result(plan, false, table);
	} else {
		result = tool_error("plan: out of memory");
	}
	free(js);
	free(table);
out:
	vram_plan_table_free(t);
	vram_config_free(own);
	return result;
}

/*
 * Runs a tool whose arguments passed their schema. Returns the result (new
 * reference), or NULL when c now waits (c has been linked; c->cb runs later).
 */
static json_t *run_tool(struct vram_mcp *mcp, const struct tool *t, json_t *args,
			struct vram_mcp_call *c)
{
	if (!mcp->m || (!mcp->wa && (t->kind == TOOL_COMPAT_ACTION || t->kind == TOOL_GPU_TIMEOUT)))
		return t->kind == TOOL_PLAN ? run_plan(mcp, args) : tool_error("no daemon state here");
	switch (t->kind) {
	case TOOL_GPU_STATUS: {
		json_t *s = vram_manager_compat_status_json(mcp->m);
		return s ? tool_result(s, false, NULL) : tool_error("out of memory");
	}
	case TOOL_LIST: {
		json_t *s = vram_manager_status_json(mcp->m);
		return s ? tool_result(s, false, NULL) : tool_error("out of memory");
	}
	case TOOL_GPU_TIMEOUT: {
		json_t *body = NULL;
		const char *only = json_string_value(json_object_get(args, "workload"));
		char refusal[1024];
		if (!vram_waitact_may_act(mcp->wa, mcp->peer, only, "change the idle timers of", refusal,
					  sizeof(refusal)))
			return tool_error("%s", refusal);
		int st = vram_waitact_compat_timeout(mcp->wa, args, &body);
		json_t *r = compat_result(st, body);
		json_decref(body);
		return r;
	}
	case TOOL_PLAN:
		return run_plan(mcp, args);
	case TOOL_COMPAT_ACTION:
	case TOOL_ACTION:
		break;
	}

	/* Actions that take time. */
	struct vram_peer self;
	const struct vram_peer *peer = mcp->peer;
	if (!peer) {
		vram_peer_self(&self);
		peer = &self;
	}
	if (!vram_peer_share_left(peer, mcp->n_calls, mcp->n_calls_tcp, VRAM_MCP_CALLS_MAX,
				  VRAM_MCP_CALLS_UNIX_RESERVED))
		return tool_error("too many tool calls waiting for actions (%d, %d of them kept for the "
				  "control socket); try again later", VRAM_MCP_CALLS_MAX,
				  VRAM_MCP_CALLS_UNIX_RESERVED);
	const char *name = json_string_value(json_object_get(args, "workload"));
	char refusal[1024];
	if (t->kind == TOOL_ACTION && !vram_waitact_may_act(mcp->wa, peer, name,
							    vram_action_name(t->action), refusal,
							    sizeof(refusal)))
		return tool_error("%s", refusal);
	json_t *tv = json_object_get(args, "timeout");
	c->action = t->action;
	c->wait_s = tv ? (unsigned)ceil(json_number_value(tv)) : VRAM_MCP_WAIT_DEFAULT_S;
	snprintf(c->workload, sizeof(c->workload), "%s", name ? name : "");
	c->timer = evtimer_new(mcp->base, on_wait_timeout, c);
	if (!c->timer)
		return tool_error("out of memory");
	/* Linked first: a callback may run before the action call returns. */
	vram_list_push_front(&mcp->calls, &c->link);
	mcp->n_calls++;
	c->tcp = peer->transport == VRAM_PEER_TCP;
	mcp->n_calls_tcp += c->tcp;

	int r;
	char err[1024] = "";
	json_t *now = NULL;
	if (t->kind == TOOL_COMPAT_ACTION) {
		r = vram_waitact_compat(mcp->wa, NULL, peer, t->action, name, on_compat_done, c,
					&c->compat, &now);
		if (r > 0) {
			call_unlink(c);
			json_t *res = compat_result(r, now);
			json_decref(now);
			return res;
		}
	} else {
		r = vram_manager_act(mcp->m, name, t->action, on_action_done, c, &c->waiter, err,
				     sizeof(err));
		if (r < 0) {
			call_unlink(c);
			return tool_error("%s", *err ? err : strerror(-r));
		}
	}
	struct timeval tv_wait = { (time_t)c->wait_s, 0 };
	evtimer_add(c->timer, &tv_wait);
	return NULL;
}

/* ------------------------------------------------------------- dispatch */

static json_t *initialize_result(const char *version)
{
	json_t *r = json_pack("{s:s, s:{s:{s:b}}, s:s}", "protocolVersion", version, "capabilities",
			      "tools", "listChanged", 0, "instructions", INSTRUCTIONS);
	if (r)
		json_object_set_new(r, "serverInfo", server_info());
	return r;
}

/* 2026-07-28's DiscoverResult: every revision we speak, what we offer. */
static json_t *discover_result(void)
{
	json_t *sv = json_array();
	for (size_t i = 0; sv && vram_mcp_versions[i]; i++)
		json_array_append_new(sv, json_string(vram_mcp_versions[i]));
	json_t *r = sv ? json_pack("{s:o, s:{s:{s:b}}, s:s}", "supportedVersions", sv,
				   "capabilities", "tools", "listChanged", 0, "instructions",
				   INSTRUCTIONS)
		       : NULL;
	result_cacheable(r, VRAM_MCP_VERSION_STATELESS);
	return r;
}

/*
 * 2026-07-28: a request carries its revision and the client's capabilities
 * in params._meta. Returns NULL when it does, else the error response (new
 * reference): -32602 for a missing field, -32022 for another revision.
 */
static json_t *stateless_meta_error(json_t *msg)
{
	json_t *id = json_object_get(msg, "id");
	json_t *meta = json_object_get(json_object_get(msg, "params"), "_meta");
	json_t *pv = json_object_get(meta, META_VERSION_KEY);
	if (!json_is_string(pv))
		return error_response(id, VRAM_MCP_INVALID_PARAMS,
				      "params._meta[\"" META_VERSION_KEY "\"]: required (\"%s\")",
				      VRAM_MCP_VERSION_STATELESS);
	if (strcmp(json_string_value(pv), VRAM_MCP_VERSION_STATELESS) != 0)
		return unsupported_version(id, json_string_value(pv));
	if (!json_is_object(json_object_get(meta, META_CAPABILITIES_KEY)))
		return error_response(id, VRAM_MCP_INVALID_PARAMS,
				      "params._meta[\"" META_CAPABILITIES_KEY
				      "\"]: required (an object, {} for none)");
	return NULL;
}

int vram_mcp_dispatch(struct vram_mcp *mcp, json_t *msg, const char *version, vram_mcp_reply_cb cb,
		      void *arg, struct vram_mcp_call **ret_call)
{
	json_t *resp = NULL, *result = NULL;
	json_t *id = json_object_get(msg, "id");
	version = version_static(version);
	if (!version)
		version = VRAM_MCP_VERSION_HANDSHAKE_LATEST; /* not reached: callers check */
	if (!json_is_object(msg)) {
		resp = error_response(NULL, VRAM_MCP_INVALID_REQUEST,
				      json_is_array(msg) ? "batches are not supported in MCP %s"
							 : "a JSON-RPC message must be an object (MCP %s)",
				      version);
		goto out_reply;
	}
	if (id && !json_is_string(id) && !json_is_integer(id)) {
		resp = error_response(NULL, VRAM_MCP_INVALID_REQUEST,
				      "id: expected a string or an integer, got %s", type_name(id));
		goto out_reply;
	}
	const char *jsonrpc = json_string_value(json_object_get(msg, "jsonrpc"));
	if (!jsonrpc || strcmp(jsonrpc, "2.0") != 0) {
		resp = error_response(id, VRAM_MCP_INVALID_REQUEST, "jsonrpc: expected \"2.0\"");
		goto out_reply;
	}
	json_t *mv = json_object_get(msg, "method");
	if (!mv) {
		/* A response to a request of ours: we send none; nothing to say. */
		if (id && (json_object_get(msg, "result") || json_object_get(msg, "error")))
			goto out_reply;
		resp = error_response(id, VRAM_MCP_INVALID_REQUEST, "method: required");
		goto out_reply;
	}
	if (!json_is_string(mv)) {
		resp = error_response(id, VRAM_MCP_INVALID_REQUEST, "method: expected a string");
		goto out_reply;
	}
	const char *method = json_string_value(mv);
	json_t *params = json_object_get(msg, "params");
	if (!id) {
		/* Notifications (initialized, cancelled, …) need no answer. */
		vram_debug("MCP notification %s", method);
		goto out_reply;
	}
	if (params && !json_is_object(params)) {
		resp = error_response(id, VRAM_MCP_INVALID_PARAMS, "params: expected an object");
		goto out_reply;
	}
	bool handshake = strcmp(method, "initialize") == 0;
	if (is_stateless(version) && !handshake && (resp = stateless_meta_error(msg)))
		goto out_reply;

	if (handshake) {
		/* Always a handshake revision: initialize selects one (2026-07-28 has none). */
		json_t *pv = json_object_get(params, "protocolVersion");
		if (!json_is_string(pv)) {
			resp = error_response(id, VRAM_MCP_INVALID_PARAMS,
					      "protocolVersion: required (a revision like \"%s\")",
					      VRAM_MCP_VERSION_HANDSHAKE_LATEST);
			goto out_reply;
		}
		version = vram_mcp_negotiate(json_string_value(pv));
		result = initialize_result(version);
	} else if (strcmp(method, "server/discover") == 0) {
		result = discover_result();
	} else if (strcmp(method, "ping") == 0 && !is_stateless(version)) {
		/* 2026-07-28 removed ping: method not found there. */
		result = json_object();
	} else if (strcmp(method, "tools/list") == 0) {
		json_t *cursor = json_object_get(params, "cursor");
		if (cursor && !json_is_null(cursor)) {
			/* The pagination page: an invalid cursor is -32602. */
			resp = error_response(id, VRAM_MCP_INVALID_PARAMS,
					      "cursor: not one of ours (every tool comes in one "
					      "page, without nextCursor)");
			goto out_reply;
		}
		result = json_pack("{s:O}", "tools", mcp->tools);
		result_cacheable(result, version);
	} else if (strcmp(method, "tools/call") == 0) {
		json_t *nv = json_object_get(params, "name");
		json_t *args = json_object_get(params, "arguments");
		if (!json_is_string(nv)) {
			resp = error_response(id, VRAM_MCP_INVALID_PARAMS, "name: required (a tool name)");
			goto out_reply;
		}
		const struct tool *t = tool_find(json_string_value(nv));
		if (!t) {
			char names[512];
			size_t off = 0;
			for (size_t i = 0; i < N_TOOLS && off < sizeof(names); i++)
				off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s",
							i ? ", " : "", tools[i].name);
			resp = error_response(id, VRAM_MCP_INVALID_PARAMS, "unknown tool \"%.64s\" (tools: %s)",
					      json_string_value(nv), names);
			goto out_reply;
		}
		if (args && !json_is_object(args) && !json_is_null(args)) {
			resp = error_response(id, VRAM_MCP_INVALID_PARAMS,
					      "arguments: expected an object, got %s", type_name(args));
			goto out_reply;
		}
		json_t *empty = json_object();
		if (!json_is_object(args))
			args = empty;
		char why[1024];
		json_t *schema = json_object_get(json_array_get(mcp->tools, (size_t)(t - tools)),
						 "inputSchema");
		if (!args_valid(schema, args, why, sizeof(why))) {
			json_decref(empty);
			if (args_errors_are_results(version))
				result = tool_error("%s: %s", t->name, why);
			else
				resp = error_response(id, VRAM_MCP_INVALID_PARAMS, "%s: %s", t->name, why);
			goto out_reply;
		}
		struct vram_mcp_call *c = calloc(1, sizeof(*c));
		if (!c) {
			json_decref(empty);
			resp = error_response(id, VRAM_MCP_INTERNAL_ERROR, "out of memory");
			goto out_reply;
		}
		c->mcp = mcp;
		vram_list_init(&c->link);
		c->id = json_incref(id);
		c->version = version;
		c->cb = cb;
		c->arg = arg;
		result = run_tool(mcp, t, args, c);
		json_decref(empty);
		if (!result) {
			if (ret_call)
				*ret_call = c;
			return 1;
		}
		call_free(c);
	} else {
		resp = error_response(id, VRAM_MCP_METHOD_NOT_FOUND, "method not found: %.64s", method);
		goto out_reply;
	}
	if (!result)
		resp = error_response(id, VRAM_MCP_INTERNAL_ERROR, "out of memory");

out_reply:
	if (result) {
		result_finish(result, version);
		resp = response(id, result);
		json_decref(result);
	}
	cb(resp, arg);
	json_decref(resp);
	return 0;
}

/* ------------------------------------------------------ streamable HTTP */

/* An HTTP request waiting for its call. */
struct http_wait {
	struct vram_mcp *mcp;
	struct evhttp_request *req;
	struct vram_mcp_call *call;
	struct vram_list link;       /* in mcp->http while the call waits; on none otherwise */
	struct session *new_session; /* made by this initialize, or NULL */
	bool stateless;              /* served under 2026-07-28 */
	bool request;                /* the message has an id and a method: it must be answered */
};

static uint64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The owner text of a peer, into buf (OWNER_MAX bytes). */
static void owner_of(const struct vram_peer *p, char *buf, size_t size)
{
	if (p->transport == VRAM_PEER_TCP)
		snprintf(buf, size, "tcp %s%s", p->addr[0] ? p->addr : "-", p->token ? " token" : "");
	else
		snprintf(buf, size, "uid %lu", (unsigned long)p->uid);
}

/* The session id if owner made it; another owner's is not there for them. */
static struct session *session_find(struct vram_mcp *mcp, const char *id, const char *owner)
{
	struct vram_list *pos;
	vram_list_for_each(pos, &mcp->sessions) {
		struct session *s = vram_list_entry(pos, struct session, link);
		if (strcmp(s->id, id) == 0)
			return strcmp(s->owner, owner) == 0 ? s : NULL;
	}
	return NULL;
}

static void session_unlink(struct vram_mcp *mcp, struct session *s)
{
	vram_list_remove(&s->link);
	mcp->n_sessions--;
}

static void session_push(struct vram_mcp *mcp, struct session *s)
{
	vram_list_push_front(&mcp->sessions, &s->link);
	mcp->n_sessions++;
	s->last_used_ms = monotonic_ms();
}

/* The least recently used session of owner (NULL: any owner; tcp_only: TCP owners'), or NULL. */
static struct session *session_lru(struct vram_mcp *mcp, const char *owner, bool tcp_only,
				   size_t *ret_count)
{
	struct session *lru = NULL;
	size_t n = 0;
	struct vram_list *pos;
	vram_list_for_each(pos, &mcp->sessions) {
		struct session *s = vram_list_entry(pos, struct session, link);
		if ((owner && strcmp(s->owner, owner) != 0) || (tcp_only && !s->tcp))
			continue;
		lru = s; /* most recently used first: the last one seen */
		n++;
	}
	if (ret_count)
		*ret_count = n;
	return lru;
}

/*
 * Which session must go before owner may have a new one, into *ret_victim
 * (NULL: none). Returns 0, or -EBUSY with *ret_retry_s (s until a session
 * of the full pool has been idle long enough to go) when none may.
 */
static int session_room(struct vram_mcp *mcp, const char *owner, bool tcp,
			struct session **ret_victim, unsigned *ret_retry_s)
{
	size_t own, n_tcp;
	struct session *own_lru = session_lru(mcp, owner, false, &own);
	struct session *tcp_lru = session_lru(mcp, NULL, true, &n_tcp);
	*ret_victim = NULL;
	if (own >= VRAM_MCP_SESSIONS_PER_OWNER) {
		*ret_victim = own_lru;
		return 0;
	}
	bool tcp_full = tcp && n_tcp >= VRAM_MCP_SESSIONS_TCP_MAX;
	if (mcp->n_sessions < VRAM_MCP_SESSIONS_MAX && !tcp_full)
		return 0;
	if (own_lru) {
		*ret_victim = own_lru;
		return 0;
	}
	/* another owner's, only once its owner has left it unused for long */
	struct session *oldest = tcp_full ? tcp_lru : session_lru(mcp, NULL, false, NULL);
	uint64_t idle_ms = monotonic_ms() - oldest->last_used_ms;
	if (idle_ms >= (uint64_t)VRAM_MCP_SESSION_IDLE_S * 1000) {
		*ret_victim = oldest;
		return 0;
	}
	*ret_retry_s = (unsigned)(((uint64_t)VRAM_MCP_SESSION_IDLE_S * 1000 - idle_ms + 999) / 1000);
	return -EBUSY;
}

/*
 * A new session for version, made by owner, into *ret. Returns 0, -ENOMEM,
 * or -EBUSY with *ret_retry_s when there is no room for it (see mcp.h).
 */
static int session_new(struct vram_mcp *mcp, const char *version, const char *owner, bool tcp,
		       struct session **ret, unsigned *ret_retry_s)
{
	struct session *victim;
	int r = session_room(mcp, owner, tcp, &victim, ret_retry_s);
	if (r < 0)
		return r;
	struct session *s = calloc(1, sizeof(*s));
	unsigned char raw[VRAM_MCP_SESSION_ID_LEN / 2];
	if (!s || getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		free(s);
		return -ENOMEM;
	}
	if (victim) {
		vram_debug("MCP: session %.8s… of %s makes room for one of %s", victim->id,
			   victim->owner, owner);
		session_unlink(mcp, victim);
		free(victim);
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(s->id + 2 * i, 3, "%02x", raw[i]);
	snprintf(s->version, sizeof(s->version), "%s", version);
	snprintf(s->owner, sizeof(s->owner), "%s", owner);
	s->tcp = tcp;
	session_push(mcp, s);
	*ret = s;
	return 0;
}

/* A transport-level refusal: the HTTP status, with a JSON-RPC error body. */
static void http_refuse(struct evhttp_request *req, int status, json_t *id, int code,
			const char *msg)
{
	json_t *body = error_response(id, code, "%s", msg);
	vram_http_reply_json(req, status, body);
	json_decref(body);
}

/* The same with a built error response (stolen). */
static void http_refuse_with(struct evhttp_request *req, int status, json_t *body)
{
	vram_http_reply_json(req, status, body);
	json_decref(body);
}

static void http_wait_free(struct http_wait *w)
{
	vram_list_remove(&w->link); /* nothing when it is on none */
	free(w);
}

/*
 * The HTTP status of a JSON-RPC response: 400 for an error that answers no
 * request (the message could not be read as one: the transport pages say an
 * unacceptable message gets an HTTP error); from 2026-07-28 on, 404 for an
 * unknown method and 400 for the errors its transport page lists; else 200.
 */
static int http_status_of(json_t *resp, bool stateless)
{
	json_t *err = json_object_get(resp, "error");
	if (!err)
		return 200;
	if (json_is_null(json_object_get(resp, "id")))
		return 400;
	json_int_t code = json_integer_value(json_object_get(err, "code"));
	if (stateless && code == VRAM_MCP_METHOD_NOT_FOUND)
		return 404;
	if (stateless && (code == VRAM_MCP_HEADER_MISMATCH || code == VRAM_MCP_UNSUPPORTED_VERSION))
		return 400;
	return 200;
}

static void on_http_reply(json_t *resp, void *arg)
{
	struct http_wait *w = arg;
	struct vram_mcp *mcp = w->mcp;
	if (vram_list_linked(&w->link))
		vram_http_unwatch(w->req);
	if (w->new_session && (!resp || json_object_get(resp, "error"))) {
		/* initialize failed: the session it made goes. */
		evhttp_remove_header(evhttp_request_get_output_headers(w->req), "Mcp-Session-Id");
		session_unlink(mcp, w->new_session);
		free(w->new_session);
	}
	if (resp) {
		vram_http_reply_json(w->req, http_status_of(resp, w->stateless), resp);
	} else if (w->request) {
		/* no response could be built (out of memory): still an answer, never a bare 202 */
		static const char oom[] = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,"
					  "\"message\":\"out of memory\"}}\n";
		evhttp_add_header(evhttp_request_get_output_headers(w->req), "Content-Type",
				  "application/json");
		evbuffer_add(evhttp_request_get_output_buffer(w->req), oom, sizeof(oom) - 1);
		evhttp_send_reply(w->req, 500, "Internal Server Error", NULL);
	} else {
		evhttp_send_reply(w->req, 202, "Accepted", NULL);
	}
	http_wait_free(w);
}

static void on_http_close(struct evhttp_connection *evcon, void *arg)
{
	struct http_wait *w = arg;
	vram_http_release_detached(w->req);
	vram_mcp_call_cancel(w->call);
	http_wait_free(w);
}

/* Header values are ASCII, so the "=?base64?...?=" form carries any other text. */
#define HEADER_B64_PREFIX "=?base64?"
#define HEADER_B64_SUFFIX "?="
#define HEADER_VALUE_MAX 1024 /* bytes of a decoded Mcp-Name we compare */

/* True when header value hv stands for the body's text (borrowed, may be NULL). */
static bool header_matches(const char *hv, const char *text)
{
	if (!text)
		return false;
	size_t n = strlen(hv), pre = strlen(HEADER_B64_PREFIX), suf = strlen(HEADER_B64_SUFFIX);
	if (n < pre + suf || strncmp(hv, HEADER_B64_PREFIX, pre) != 0 ||
	    strcmp(hv + n - suf, HEADER_B64_SUFFIX) != 0)
		return strcmp(hv, text) == 0;
	char decoded[HEADER_VALUE_MAX];
	size_t len;
	if (vram_base64_decode(hv + pre, n - pre - suf, decoded, sizeof(decoded), &len) < 0)
		return false;
	return len == strlen(text) && memcmp(decoded, text, len) == 0;
}

/* The body field that Mcp-Name mirrors for method, or NULL when it has none. */
static const char *name_field(const char *method)
{
	if (strcmp(method, "tools/call") == 0 || strcmp(method, "prompts/get") == 0)
		return "name";
	if (strcmp(method, "resources/read") == 0)
		return "uri";
	return NULL;
}

/*
 * The checks of 2026-07-28's Streamable HTTP "Server Validation": the
 * MCP-Protocol-Version, Mcp-Method and Mcp-Name headers are there and say
 * what the body says; then the request's own _meta. Returns NULL, or the
 * error response (new reference) to send with 400.
 */
static json_t *stateless_http_error(struct evkeyvalq *in, json_t *msg)
{
	json_t *id = json_object_get(msg, "id");
	const char *hv = evhttp_find_header(in, "MCP-Protocol-Version");
	if (!hv)
		return error_response(id, VRAM_MCP_HEADER_MISMATCH,
				      "Header mismatch: MCP-Protocol-Version is required (%s)",
				      VRAM_MCP_VERSION_STATELESS);
	/* The revision gives no header rules for notifications. */
	if (!json_is_object(msg) || !id)
		return NULL;
	json_t *params = json_object_get(msg, "params");
	const char *mv = json_string_value(
		json_object_get(json_object_get(params, "_meta"), META_VERSION_KEY));
	if (mv && strcmp(mv, hv) != 0)
		return error_response(id, VRAM_MCP_HEADER_MISMATCH,
				      "Header mismatch: MCP-Protocol-Version \"%.32s\" is not the "
				      "body's \"%.32s\"",
				      hv, mv);
	json_t *err = stateless_meta_error(msg);
	if (err)
		return err;
	const char *method = json_string_value(json_object_get(msg, "method"));
	const char *hm = evhttp_find_header(in, "Mcp-Method");
	if (!method)
		return NULL; /* dispatch says what is wrong with it */
	if (!hm || strcmp(hm, method) != 0)
		return error_response(id, VRAM_MCP_HEADER_MISMATCH,
				      hm ? "Header mismatch: Mcp-Method \"%.64s\" is not the body's "
					   "method \"%.64s\""
					 : "Header mismatch: Mcp-Method is required (the body's "
					   "method, \"%.64s\")",
				      hm ? hm : method, method);
	const char *field = name_field(method);
	const char *name = field ? json_string_value(json_object_get(params, field)) : NULL;
	const char *hn = evhttp_find_header(in, "Mcp-Name");
	if (name && !hn)
		return error_response(id, VRAM_MCP_HEADER_MISMATCH,
				      "Header mismatch: Mcp-Name is required for %s (params.%s)",
				      method, field);
	if (name && !header_matches(hn, name))
		return error_response(id, VRAM_MCP_HEADER_MISMATCH,
				      "Header mismatch: Mcp-Name \"%.64s\" is not params.%s \"%.64s\"",
				      hn, field, name);
	return NULL;
}

void vram_mcp_handle_http(struct vram_mcp *mcp, struct evhttp_request *req, const char *body,
			  size_t body_len, int body_error)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	/* Origin: the gateway's front door refuses other origins for every route (access.h). */
	/* who asks: the gateway says so; without its header, vramd's own user on the private socket */
	struct vram_peer peer;
	const char *ph = evhttp_find_header(in, VRAM_PEER_HEADER);
	if (!ph) {
		vram_peer_self(&peer);
	} else if (vram_peer_parse(ph, &peer) < 0) {
		http_refuse(req, 400, NULL, VRAM_MCP_INVALID_REQUEST,
			    VRAM_PEER_HEADER ": not a peer identity (the gateway's header)");
		return;
	}
	char owner[OWNER_MAX];
	owner_of(&peer, owner, sizeof(owner));
	const char *sid = evhttp_find_header(in, "Mcp-Session-Id");
	const char *hv = evhttp_find_header(in, "MCP-Protocol-Version");
	bool stateless = hv && strcmp(hv, VRAM_MCP_VERSION_STATELESS) == 0;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	if (cmd == EVHTTP_REQ_DELETE && !stateless) {
		struct session *s = sid ? session_find(mcp, sid, owner) : NULL;
		if (!s) {
			http_refuse(req, sid ? 404 : 400, NULL, VRAM_MCP_INVALID_REQUEST,
				    sid ? "no such session" : "Mcp-Session-Id: required");
			return;
		}
		session_unlink(mcp, s);
		free(s);
		evhttp_send_reply(req, 204, "No Content", NULL);
		return;
	}
	if (cmd != EVHTTP_REQ_POST) {
		evhttp_add_header(out, "Allow", stateless ? "POST" : "POST, DELETE");
		http_refuse(req, 405, NULL, VRAM_MCP_INVALID_REQUEST,
			    stateless ? "MCP 2026-07-28 has no session to end and no stream "
					"to open: POST messages to /mcp"
				      : "vramd offers no server-initiated stream: POST messages "
					"to /mcp");
		return;
	}
	if (body_error == -E2BIG) {
		char msg[128];
		snprintf(msg, sizeof(msg), "the message is over %d bytes", VRAM_HTTP_BODY_MAX);
		http_refuse(req, 413, NULL, VRAM_MCP_INVALID_REQUEST, msg);
		return;
	}
	json_error_t jerr;
	json_t *msg = json_loadb(body, body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!msg) {
		char text[512];
		snprintf(text, sizeof(text), "parse error at line %d, column %d: %s", jerr.line,
			 jerr.column, jerr.text);
		http_refuse(req, 400, NULL, VRAM_MCP_PARSE_ERROR, text);
		return;
	}
	json_t *id = json_object_get(msg, "id");
	const char *method = json_string_value(json_object_get(msg, "method"));
	const char *mv = json_string_value(
		json_object_get(json_object_get(json_object_get(msg, "params"), "_meta"),
				META_VERSION_KEY));
	const char *version = NULL;
	struct session *new_session = NULL;
	char text[256];
	bool initialize = method && strcmp(method, "initialize") == 0;
	if (hv && !initialize && !vram_mcp_version_supported(hv)) {
		http_refuse_with(req, 400, unsupported_version(id, hv));
		goto out;
	}
	if (initialize) {
		/* initialize selects a handshake revision and a session (2026-07-28 has none). */
		const char *want = json_string_value(
			json_object_get(json_object_get(msg, "params"), "protocolVersion"));
		version = vram_mcp_negotiate(want);
		if (want && (json_is_string(id) || json_is_integer(id))) {
			unsigned retry_s = 0;
			int r = session_new(mcp, version, owner, peer.transport == VRAM_PEER_TCP,
					    &new_session, &retry_s);
			if (r == -EBUSY) {
				char wait[16];
				snprintf(wait, sizeof(wait), "%u", retry_s);
				evhttp_add_header(out, "Retry-After", wait);
				snprintf(text, sizeof(text),
					 "too many MCP sessions (%d, %d of them for TCP clients), none of "
					 "them yours and none unused for %d s: try again in %u s",
					 VRAM_MCP_SESSIONS_MAX, VRAM_MCP_SESSIONS_TCP_MAX,
					 VRAM_MCP_SESSION_IDLE_S, retry_s);
				http_refuse(req, 503, id, VRAM_MCP_INTERNAL_ERROR, text);
				goto out;
			}
			if (r < 0) {
				http_refuse(req, 500, id, VRAM_MCP_INTERNAL_ERROR, "out of memory");
				goto out;
			}
			evhttp_add_header(out, "Mcp-Session-Id", new_session->id);
		}
	} else if (stateless || (!hv && !sid && mv)) {
		/* Stateless: a session id is ignored, none is made. */
		json_t *err = stateless_http_error(in, msg);
		if (err) {
			http_refuse_with(req, 400, err);
			goto out;
		}
		version = VRAM_MCP_VERSION_STATELESS;
		stateless = true;
	} else if (!sid) {
		http_refuse(req, 400, id, VRAM_MCP_INVALID_REQUEST,
			    "Mcp-Session-Id: required (initialize first), or MCP-Protocol-Version: "
			    VRAM_MCP_VERSION_STATELESS " with params._meta for a stateless request");
		goto out;
	} else {
		struct session *s = session_find(mcp, sid, owner);
		if (!s) {
			http_refuse(req, 404, id, VRAM_MCP_INVALID_REQUEST,
				    "no such session (it ended or was dropped): initialize again");
			goto out;
		}
		/*
		 * The header names a revision we speak (checked above), maybe not
		 * the session's: clients send 2025-03-26 on a session they
		 * negotiated otherwise (the conformance suite's multiple-streams
		 * scenario does), and the official SDK's server serves them. The
		 * session's revision is the one that answers. 2026-07-28 was
		 * served statelessly above.
		 */
		session_unlink(mcp, s);
		session_push(mcp, s);
		version = s->version;
	}

	struct http_wait *w = calloc(1, sizeof(*w));
	if (!w) {
		if (new_session) {
			session_unlink(mcp, new_session);
			free(new_session);
		}
		http_refuse(req, 500, id, VRAM_MCP_INTERNAL_ERROR, "out of memory");
		goto out;
	}
	w->mcp = mcp;
	vram_list_init(&w->link);
	w->req = req;
	w->stateless = stateless;
	w->request = id && json_object_get(msg, "method");
	w->new_session = new_session;
	mcp->peer = &peer; /* for the tools; the dispatch reads it before it returns */
	int dispatched = vram_mcp_dispatch(mcp, msg, version, on_http_reply, w, &w->call);
	mcp->peer = NULL;
	if (dispatched == 1) {
		vram_list_push_front(&mcp->http, &w->link);
		vram_http_watch_close(req, on_http_close, w);
	}
out:
	json_decref(msg);
}

/* ------------------------------------------------------------- lifecycle */

int vram_mcp_new(struct event_base *base, struct vram_manager *m, struct vram_waitact *wa,
		 struct vram_mcp **ret)
{
	struct vram_mcp *mcp = calloc(1, sizeof(*mcp));
	if (!mcp)
		return -ENOMEM;
	mcp->base = base;
	mcp->m = m;
	mcp->wa = wa;
	vram_list_init(&mcp->sessions);
	vram_list_init(&mcp->calls);
	vram_list_init(&mcp->http);
	mcp->tools = json_array();
	int r = mcp->tools ? 0 : -ENOMEM;
	for (size_t i = 0; !r && i < N_TOOLS; i++) {
		json_t *in = json_loads(tools[i].input_schema, 0, NULL);
		json_t *outs = json_loads(tools[i].output_schema, 0, NULL);
		const struct tool *d = &tools[i];
		json_t *t = in && outs ? json_pack("{s:s, s:s, s:s, s:O, s:O, s:{s:s, s:b, s:b, s:b, s:b}}",
						   "name", d->name, "title", d->title,
						   "description", d->description, "inputSchema", in,
						   "outputSchema", outs, "annotations", "title",
						   d->title, "readOnlyHint", d->read_only,
						   "destructiveHint", d->destructive,
						   "idempotentHint", d->idempotent,
						   "openWorldHint", 0)
				       : NULL;
		if (!t || json_array_append_new(mcp->tools, t) < 0)
			r = in && outs ? -ENOMEM : -EINVAL;
		json_decref(in);
		json_decref(outs);
	}
	if (r < 0) {
		vram_mcp_free(mcp);
		return r;
	}
	*ret = mcp;
	return 0;
}

void vram_mcp_close_clients(struct vram_mcp *mcp)
{
	if (!mcp)
		return;
	mcp->closing = true;
	while (!vram_list_empty(&mcp->calls)) {
		struct vram_mcp_call *c = vram_list_entry(vram_list_first(&mcp->calls),
							  struct vram_mcp_call, link);
		call_stop_waiting(c);
		call_finish(c, tool_error("vramd is shutting down; the %s goes on or stops with it",
					  vram_action_name(c->action)));
	}
}

void vram_mcp_free(struct vram_mcp *mcp)
{
	if (!mcp)
		return;
	vram_mcp_close_clients(mcp);
	while (!vram_list_empty(&mcp->sessions)) {
		struct session *s = vram_list_entry(vram_list_first(&mcp->sessions), struct session, link);
		session_unlink(mcp, s);
		free(s);
	}
	json_decref(mcp->tools);
	free(mcp);
}

json_t *vram_mcp_tools(struct vram_mcp *mcp)
{
	return mcp->tools;
}
