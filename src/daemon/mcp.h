/* SPDX-License-Identifier: MIT */
/*
 * The MCP server: JSON-RPC 2.0 with the Model Context Protocol's lifecycle
 * and tools, over the streamable HTTP transport at /mcp (vramctl mcp
 * bridges stdio to it). The tools are thin: the GPU tools share the logic of
 * the REST compatibility routes (waitact.h), the workload tools are manager
 * actions, and plan is the planner's dry run.
 *
 * Revisions: 2025-03-26, 2025-06-18 and 2025-11-25 (a session made by
 * initialize, its id in the Mcp-Session-Id header), and 2026-07-28 (stateless: no
 * initialize and no session; each request carries its revision and the
 * client's capabilities in params._meta, mirrored on HTTP by the
 * MCP-Protocol-Version, Mcp-Method and Mcp-Name headers, and each result
 * says resultType and who answered). None of them has JSON-RPC batches.
 *
 * The core (vram_mcp_dispatch) knows nothing of HTTP, so that tests and
 * other transports drive it with parsed messages.
 */
#ifndef VRAM_MCP_H
#define VRAM_MCP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct evhttp_request;
struct vram_manager;
struct vram_waitact;
struct vram_mcp;
struct vram_mcp_call;

/*
 * Sessions belong to who made them (the owner: a uid on the control socket,
 * an address and whether it had the token on TCP); only the owner may use
 * or end one. A new session never pushes out another owner's, unless that
 * one has been idle for VRAM_MCP_SESSION_IDLE_S: past an owner's share its
 * own least recently used goes, and when the table is full and the owner
 * has none, the answer is 503 with Retry-After.
 */
#define VRAM_MCP_SESSIONS_MAX 64         /* sessions kept in all */
#define VRAM_MCP_SESSIONS_PER_OWNER 16   /* an owner's 17th replaces its own least recently used */
#define VRAM_MCP_SESSIONS_TCP_MAX 48     /* held by TCP clients together; the rest is the socket's */
#define VRAM_MCP_SESSION_IDLE_S 600      /* s unused after which a session may make room for another owner's */
#define VRAM_MCP_CALLS_MAX 256           /* tool calls waiting for an action at once */
#define VRAM_MCP_CALLS_UNIX_RESERVED 64  /* of them only for clients on the control socket */
#define VRAM_MCP_WAIT_DEFAULT_S 300      /* s a start/stop/restore tool waits by default */
#define VRAM_MCP_WAIT_MAX_S 3600         /* s at most */
#define VRAM_MCP_SESSION_ID_LEN 32       /* hex characters */

/* JSON-RPC error codes, and those MCP 2026-07-28 defines (its -32020..-32099). */
enum {
	VRAM_MCP_PARSE_ERROR = -32700,
	VRAM_MCP_INVALID_REQUEST = -32600,
	VRAM_MCP_METHOD_NOT_FOUND = -32601,
	VRAM_MCP_INVALID_PARAMS = -32602,
	VRAM_MCP_INTERNAL_ERROR = -32603,
	VRAM_MCP_HEADER_MISMATCH = -32020,
	VRAM_MCP_UNSUPPORTED_VERSION = -32022,
};

/* The revisions served, oldest first, NULL-terminated; and the stateless one. */
extern const char *const vram_mcp_versions[];
#define VRAM_MCP_VERSION_STATELESS "2026-07-28"
/* The newest revision with an initialize handshake. */
#define VRAM_MCP_VERSION_HANDSHAKE_LATEST "2025-11-25"

/* True when version (may be NULL) is one we speak. */
bool vram_mcp_version_supported(const char *version);
/*
 * The revision initialize answers a client asking for requested (may be
 * NULL): requested itself if it is one with a handshake (2025-03-26,
 * 2025-06-18, 2025-11-25), else VRAM_MCP_VERSION_HANDSHAKE_LATEST; the client decides
 * whether to go on. 2026-07-28 has no initialize, so asking for it there
 * gets 2025-11-25 too. Static string.
 */
const char *vram_mcp_negotiate(const char *requested);
/* True for revisions where initialize makes a session. */
bool vram_mcp_version_has_session(const char *version);

/*
 * Creates the server. base, m and wa (the waiting actions it shares with
 * the REST API) are borrowed and outlive it (m and wa may be NULL in tests:
 * tools that need them then fail). Returns 0, -ENOMEM, or -EINVAL if a
 * built-in schema does not parse.
 */
int vram_mcp_new(struct event_base *base, struct vram_manager *m, struct vram_waitact *wa,
		 struct vram_mcp **ret);
/* Answers every waiting call ("vramd is shutting down"). Idempotent. */
void vram_mcp_close_clients(struct vram_mcp *mcp);
/* Calls vram_mcp_close_clients and frees. Accepts NULL. */
void vram_mcp_free(struct vram_mcp *mcp);

/* The tools/list array (borrowed, valid while mcp lives). */
json_t *vram_mcp_tools(struct vram_mcp *mcp);

/*
 * Handles one JSON-RPC message (borrowed) under revision version (a
 * supported one; under 2026-07-28 a request whose params._meta lacks
 * protocolVersion or clientCapabilities is refused with -32602, one naming
 * another revision with -32022). cb(response, arg) is called exactly once,
 * with the response (borrowed for the call) or NULL when the message needs
 * none (a notification, a response). Returns 0 when cb has already run, or
 * 1 when it runs later from the loop; *ret_call (may be NULL) then gets a
 * handle valid until cb runs, for vram_mcp_call_cancel.
 */
typedef void (*vram_mcp_reply_cb)(json_t *response, void *arg);
int vram_mcp_dispatch(struct vram_mcp *mcp, json_t *msg, const char *version, vram_mcp_reply_cb cb,
		      void *arg, struct vram_mcp_call **ret_call);
/* Forgets a waiting call: cb is never called; actions under way go on. */
void vram_mcp_call_cancel(struct vram_mcp_call *call);

/*
 * The streamable HTTP transport for one request to /mcp: POST carries a
 * message, GET is 405 (no server-initiated stream), DELETE ends a session.
 * A request with "MCP-Protocol-Version: 2026-07-28" is served statelessly
 * (Mcp-Session-Id ignored) after its headers are checked against its body;
 * any other request but initialize needs a session, and only the session's
 * owner may use or end it (another owner gets 404, as for an unknown id).
 * The owner is the X-Vramd-Peer header the gateway adds (peer.h); a request
 * without it came over the private socket: vramd's own user. The same
 * identity decides what the tools may do: they act on another user's
 * ad-hoc workload only as the REST routes would (vram_waitact_may_act), and a
 * TCP client's waiting calls leave VRAM_MCP_CALLS_UNIX_RESERVED for the
 * control socket. body is borrowed (body_error -E2BIG when it was over the
 * limit). Always replies, now or later.
 */
void vram_mcp_handle_http(struct vram_mcp *mcp, struct evhttp_request *req, const char *body,
			  size_t body_len, int body_error);

#endif
