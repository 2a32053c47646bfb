/* SPDX-License-Identifier: MIT */
/* vramctl mcp: stdio to the daemon's /mcp; see mcp.h. */
#include "ctl/mcp.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"

struct bridge {
	const struct vram_client_url *url;
	const char *token;
	int timeout_ms;
	FILE *out;
	char session[128];  /* Mcp-Session-Id, "" before initialize */
	char version[32];   /* the negotiated revision, "" before initialize */
	char where[512];    /* the daemon, for messages */
};

/* Writes one message as one line. */
static void emit(struct bridge *b, json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	if (!text)
		return;
	fprintf(b->out, "%s\n", text);
	fflush(b->out);
	free(text);
}

/* A JSON-RPC error for the request with id (nothing for a notification). */
static void emit_error(struct bridge *b, json_t *id, int code, const char *message)
{
	if (!id)
		return;
	json_t *e = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error",
			      "code", code, "message", message);
	if (e)
		emit(b, e);
	json_decref(e);
}

static void exchange(struct bridge *b, const char *line, size_t len)
{
	json_t *msg = json_loadb(line, len, 0, NULL);
	json_t *id = json_object_get(msg, "id");
	const char *method = json_string_value(json_object_get(msg, "method"));
	bool initialize = method && strcmp(method, "initialize") == 0;

	char headers[512] = "";
	size_t off = 0;
	if (b->session[0] && !initialize)
		off += (size_t)snprintf(headers + off, sizeof(headers) - off,
					"Mcp-Session-Id: %s\r\n", b->session);
	const char *version = b->version[0] ? b->version : NULL;
	if (!version) {
		/* A stateless request names its revision in params._meta. */
		version = json_string_value(json_object_get(
			json_object_get(json_object_get(msg, "params"), "_meta"),
			"io.modelcontextprotocol/protocolVersion"));
	}
	if (version && !initialize && strlen(version) < 32)
		snprintf(headers + off, sizeof(headers) - off, "MCP-Protocol-Version: %s\r\n",
			 version);

	/* The line goes as is: the daemon answers a broken one itself. */
	char *body = strndup(line, len);
	struct vram_client_response resp = { 0 };
	char err[1024];
	int r = body ? vram_client_request_headers(b->url, "POST", "/mcp", headers, body, b->token,
						   b->timeout_ms, &resp, err, sizeof(err))
		     : -ENOMEM;
	free(body);
	if (r < 0) {
		if (r == -ENOMEM)
			snprintf(err, sizeof(err), "out of memory");
		fprintf(stderr, "vramctl mcp: %s\n", err);
		emit_error(b, id, -32603, err);
		goto out;
	}
	if (resp.status == 202 || resp.body_len == 0)
		goto out;
	json_t *reply = json_loadb(resp.body, resp.body_len, 0, NULL);
	if (json_object_get(reply, "jsonrpc")) {
		/* A refusal before the message was read has id null: give it the request's. */
		if (id && json_is_null(json_object_get(reply, "id")) && json_object_get(reply, "error"))
			json_object_set(reply, "id", id);
		if (initialize && resp.status == 200) {
			char sid[128];
			const char *v = json_string_value(
				json_object_get(json_object_get(reply, "result"), "protocolVersion"));
			if (vram_client_response_header(&resp, "Mcp-Session-Id", sid, sizeof(sid)))
				snprintf(b->session, sizeof(b->session), "%s", sid);
			else
				b->session[0] = '\0';
			if (v && strlen(v) < sizeof(b->version))
				snprintf(b->version, sizeof(b->version), "%s", v);
		}
		emit(b, reply);
	} else {
		/* Not MCP: the token check, or a daemon without /mcp. */
		const char *m = json_string_value(
			json_object_get(json_object_get(reply, "error"), "message"));
		char text[1024];
		snprintf(text, sizeof(text), "vramd at %s answered HTTP %d: %s", b->where, resp.status,
			 m ? m : "no MCP reply");
		fprintf(stderr, "vramctl mcp: %s\n", text);
		emit_error(b, id, -32603, text);
	}
	json_decref(reply);
out:
	vram_client_response_done(&resp);
	json_decref(msg);
}

int vram_ctl_mcp(const struct vram_client_url *url, const char *token, int timeout_ms, FILE *in,
		 FILE *out)
{
	struct bridge b = { .url = url, .token = token, .timeout_ms = timeout_ms, .out = out };
	vram_client_url_format(url, b.where, sizeof(b.where));
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, in)) >= 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			n--;
		if (n == 0)
			continue;
		if (n > VRAM_CTL_MCP_LINE_MAX) {
			fprintf(stderr, "vramctl mcp: a message of %zd bytes is over %d; dropped\n", n,
				VRAM_CTL_MCP_LINE_MAX);
			continue;
		}
		exchange(&b, line, (size_t)n);
	}
	free(line);
	if (b.session[0]) {
		/* End of input ends the session. */
		char headers[192];
		snprintf(headers, sizeof(headers), "Mcp-Session-Id: %s\r\n", b.session);
		struct vram_client_response resp = { 0 };
		char err[512];
		if (vram_client_request_headers(url, "DELETE", "/mcp", headers, NULL, token, 5000,
						&resp, err, sizeof(err)) == 0)
			vram_client_response_done(&resp);
	}
	return VRAM_CTL_EXIT_OK;
}
