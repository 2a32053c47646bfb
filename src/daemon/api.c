/* SPDX-License-Identifier: MIT */
/*
 * REST routes over the manager; see api.h. Every handler validates all of
 * its input before it asks the manager for anything, so that a refused call
 * changes nothing.
 */
#include "daemon/api.h"
#include "daemon/api_attach.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/fsutil.h"
#include "common/list.h"
#include "common/log.h"
#include "common/strutil.h"
#include "common/units.h"
#include "daemon/decisions.h"
#include "daemon/history.h"
#include "daemon/http.h"
#include "daemon/logfollow.h"
#include "daemon/manager.h"
#include "daemon/mps.h"
#include "daemon/mcp.h"
#include "daemon/runas.h"
#include "daemon/upgrade.h"
#include "daemon/waitact.h"
#include "daemon/web.h"

struct sse_client;

struct vram_api {
	struct event_base *base;  /* borrowed */
	struct vram_manager *m;   /* borrowed */
	struct vram_waitact *wa;  /* actions clients wait for, shared with MCP */
	struct vram_list sse;     /* event-stream clients (struct sse_client), newest first */
	size_t n_sse;
	size_t n_sse_tcp;         /* of them, TCP clients' */
	uint64_t sse_next_id;
	bool closing;
	struct status_blob *status;    /* the last /api/status reply, or NULL */
	uint64_t status_built_ms;      /* ms, monotonic, when it was built */
	struct vram_manager_sub *status_sub; /* state changes drop it */
	struct vram_mcp *mcp;          /* the MCP server at /mcp */
	struct vram_upgrade *upgrade;  /* borrowed; restart in place; NULL: not offered */
	struct vram_history *history;  /* GPU memory over the last minutes (/api/history) */
	struct vram_logfollow *follow; /* clients following a log (logs?follow=1) */
};

/*
 * The text of a /api/status reply, shared by every reply sent from it
 * (evbuffer references) and freed with the last of them.
 */
struct status_blob {
	unsigned refs;
	size_t len; /* bytes */
	char data[];
};

struct vram_api_call {
	struct vram_api *api;
	struct evhttp_request *req;
	const struct vram_api_match *match;
	struct evkeyvalq query;
	char *body; /* owned, NUL-terminated; "" when none */
	size_t body_len;
	int body_error; /* 0, or -E2BIG when the body was over the limit */
	pid_t pid; /* an action on a hooked process: its pid (the {name} of the route); 0 otherwise */
	struct vram_peer peer; /* who asks (X-Vramd-Peer; vramd itself without it) */
};

/* ---------------------------------------------------------------- routes */

static int h_healthz(struct vram_api_call *c, json_t **ret);
static int h_status(struct vram_api_call *c, json_t **ret);
static int h_workload(struct vram_api_call *c, json_t **ret);
static int h_action(struct vram_api_call *c, json_t **ret);
static int h_create(struct vram_api_call *c, json_t **ret);
static int h_attach(struct vram_api_call *c, json_t **ret);
static int h_remove(struct vram_api_call *c, json_t **ret);
static int h_idle(struct vram_api_call *c, json_t **ret);
static int h_logs(struct vram_api_call *c, json_t **ret);
static int h_events(struct vram_api_call *c, json_t **ret);
static int h_compat_status(struct vram_api_call *c, json_t **ret);
static int h_compat_action(struct vram_api_call *c, json_t **ret);
static int h_compat_timeout(struct vram_api_call *c, json_t **ret);
static int h_mcp(struct vram_api_call *c, json_t **ret);
static int h_mps_status(struct vram_api_call *c, json_t **ret);
static int h_mps_change(struct vram_api_call *c, json_t **ret);
static int h_hook_processes(struct vram_api_call *c, json_t **ret);
static int h_hook_action(struct vram_api_call *c, json_t **ret);
static int h_reload(struct vram_api_call *c, json_t **ret);
static int h_daemon_restart(struct vram_api_call *c, json_t **ret);
static int h_web(struct vram_api_call *c, json_t **ret);
static int h_history(struct vram_api_call *c, json_t **ret);
static int h_decisions(struct vram_api_call *c, json_t **ret);
static int run_action(struct vram_api_call *c, enum vram_action action, json_t **ret);

static const struct vram_api_route routes[] = {
	{ VRAM_API_GET, "/healthz", h_healthz, 0 },
	{ VRAM_API_GET, "/api/status", h_status, 0 },
	{ VRAM_API_GET, "/api/workloads/{name}", h_workload, 0 },
	{ VRAM_API_POST, "/api/workloads", h_create, 0 },
	{ VRAM_API_POST, "/api/attach", h_attach, 0 },
	{ VRAM_API_DELETE, "/api/workloads/{name}", h_remove, 0 },
	{ VRAM_API_POST, "/api/workloads/{name}/start", h_action, VRAM_ACTION_START },
	{ VRAM_API_POST, "/api/workloads/{name}/stop", h_action, VRAM_ACTION_STOP },
	{ VRAM_API_POST, "/api/workloads/{name}/offload", h_action, VRAM_ACTION_OFFLOAD },
	{ VRAM_API_POST, "/api/workloads/{name}/restore", h_action, VRAM_ACTION_RESTORE },
	{ VRAM_API_POST, "/api/workloads/{name}/release", h_action, VRAM_ACTION_RELEASE },
	{ VRAM_API_POST, "/api/workloads/{name}/park", h_action, VRAM_ACTION_PARK },
	{ VRAM_API_PUT, "/api/workloads/{name}/idle", h_idle, 0 },
	{ VRAM_API_GET, "/api/workloads/{name}/logs", h_logs, 0 },
	{ VRAM_API_GET, "/api/events", h_events, 0 },
	{ VRAM_API_POST, "/api/reload", h_reload, 0 },
	{ VRAM_API_GET | VRAM_API_POST, "/api/daemon/restart", h_daemon_restart, 0 },
	{ VRAM_API_GET, "/api/gpu/status", h_compat_status, 0 },
	{ VRAM_API_POST, "/api/gpu/offload", h_compat_action, VRAM_ACTION_OFFLOAD },
	{ VRAM_API_POST, "/api/gpu/release", h_compat_action, VRAM_ACTION_RELEASE },
	{ VRAM_API_POST, "/api/gpu/timeout", h_compat_timeout, 0 },
	{ VRAM_API_GET | VRAM_API_POST | VRAM_API_DELETE, "/mcp", h_mcp, 0 },
	{ VRAM_API_GET, "/api/mps", h_mps_status, 0 },
	{ VRAM_API_POST, "/api/mps/start", h_mps_change, 1 },
	{ VRAM_API_POST, "/api/mps/stop", h_mps_change, 0 },
	{ VRAM_API_GET, "/api/hook/processes", h_hook_processes, 0 },
	{ VRAM_API_POST, "/api/hook/processes/{name}/offload", h_hook_action, VRAM_ACTION_OFFLOAD },
	{ VRAM_API_POST, "/api/hook/processes/{name}/restore", h_hook_action, VRAM_ACTION_RESTORE },
	{ VRAM_API_GET, "/", h_web, 0 },
	{ VRAM_API_GET, VRAM_WEB_PREFIX "{name}", h_web, 0 },
	{ VRAM_API_GET, "/api/history", h_history, 0 },
	{ VRAM_API_GET, "/api/decisions", h_decisions, 0 },
};

/*
 * Matches one pattern against a path, segment by segment. A {name} segment
 * takes any non-empty segment; it is URL-decoded into name.
 * Returns true on a match.
 */
static bool pattern_match(const char *pattern, const char *path, char *name, size_t name_size)
{
	const char *p = pattern, *s = path;
	name[0] = '\0';
	while (*p && *s) {
		if (*p != '/' || *s != '/')
			return false;
		p++;
		s++;
		const char *pend = strchr(p, '/');
		const char *send = strchr(s, '/');
		size_t plen = pend ? (size_t)(pend - p) : strlen(p);
		size_t slen = send ? (size_t)(send - s) : strlen(s);
		if (plen == 6 && memcmp(p, "{name}", 6) == 0) {
			if (slen == 0)
				return false;
			char raw[VRAM_API_NAME_MAX * 3 + 1];
			if (slen >= sizeof(raw))
				return false;
			memcpy(raw, s, slen);
			raw[slen] = '\0';
			size_t dlen = 0;
			char *dec = evhttp_uridecode(raw, 0, &dlen);
			if (!dec)
				return false;
			bool ok = dlen > 0 && dlen < name_size && strlen(dec) == dlen &&
				  !strchr(dec, '/');
			if (ok)
				memcpy(name, dec, dlen + 1);
			free(dec);
			if (!ok)
				return false;
		} else if (plen != slen || memcmp(p, s, plen) != 0) {
			return false;
		}
		p += plen;
		s += slen;
	}
	return *p == '\0' && *s == '\0';
}

int vram_api_route_find(enum vram_api_method method, const char *path, struct vram_api_match *ret,
			unsigned *ret_allowed)
{
	unsigned allowed = 0;
	struct vram_api_match m;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (!pattern_match(routes[i].pattern, path, m.name, sizeof(m.name)))
			continue;
		if (routes[i].method & method) {
			m.route = &routes[i];
			*ret = m;
			return 0;
		}
		allowed |= routes[i].method;
	}
	if (ret_allowed)
		*ret_allowed = allowed;
	return allowed ? -EPERM : -ENOENT;
}

char *vram_api_methods_format(unsigned mask, char *buf, size_t size)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = { { VRAM_API_GET, "GET" }, { VRAM_API_POST, "POST" }, { VRAM_API_PUT, "PUT" },
		      { VRAM_API_DELETE, "DELETE" } };
	size_t off = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (!(mask & names[i].bit))
			continue;
		int n = snprintf(buf + off, size - off, "%s%s", off ? ", " : "", names[i].name);
		if (n < 0 || (size_t)n >= size - off)
			break;
		off += (size_t)n;
	}
	return buf;
}

/* ------------------------------------------------------ input validation */

int vram_api_parse_object(const char *body, size_t len, bool required, json_t **ret_obj, char *msg,
			  size_t msg_size)
{
	size_t i = 0;
	while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
		i++;
	if (i == len) {
		if (required) {
			snprintf(msg, msg_size, "a JSON object body is required");
			return 400;
		}
		*ret_obj = NULL;
		return 0;
	}
	json_error_t jerr;
	json_t *obj = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj) {
		snprintf(msg, msg_size, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
			 jerr.text);
		return 400;
	}
	if (!json_is_object(obj)) {
		json_decref(obj);
		snprintf(msg, msg_size, "the body must be a JSON object");
		return 400;
	}
	*ret_obj = obj;
	return 0;
}

int vram_api_check_fields(json_t *obj, const char *const *allowed, char *msg, size_t msg_size)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v) {
		bool known = false;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(*a, key) == 0)
				known = true;
		if (known)
			continue;
		size_t off = (size_t)snprintf(msg, msg_size, "unknown field \"%s\" (expected ", key);
		for (const char *const *a = allowed; *a && off < msg_size; a++)
			off += (size_t)snprintf(msg + off, msg_size - off, "%s\"%s\"",
						a == allowed ? "" : ", ", *a);
		if (off < msg_size)
			snprintf(msg + off, msg_size - off, ")");
		return 400;
	}
	return 0;
}

/* Parses the body as an object (or none) and checks its keys. */
static int call_object(struct vram_api_call *c, bool required, const char *const *allowed,
		       json_t **ret_obj, json_t **ret_err)
{
	char msg[512];
	if (c->body_error == -E2BIG) {
		snprintf(msg, sizeof(msg), "the request body is over %d bytes", VRAM_HTTP_BODY_MAX);
		*ret_err = vram_http_error_json(413, NULL, msg);
		return 413;
	}
	json_t *obj;
	int st = vram_api_parse_object(c->body, c->body_len, required, &obj, msg, sizeof(msg));
	if (st) {
		*ret_err = vram_http_error_json(st, NULL, msg);
		return st;
	}
	if (obj && allowed && (st = vram_api_check_fields(obj, allowed, msg, sizeof(msg)))) {
		json_decref(obj);
		*ret_err = vram_http_error_json(st, NULL, msg);
		return st;
	}
	*ret_obj = obj;
	return 0;
}

/* A body, if any, must be an empty JSON object. Returns 0, or a status with the error in *ret. */
static int call_no_fields(struct vram_api_call *c, json_t **ret)
{
	static const char *const no_fields[] = { NULL };
	json_t *obj;
	int st = call_object(c, false, no_fields, &obj, ret);
	if (st == 0)
		json_decref(obj);
	return st;
}

/* ------------------------------------------------------------ who asks */

/* Whether c's client may act on workload; if not, *ret is the 403 and its status is returned. */
static int check_may_act(struct vram_api_call *c, const char *workload, const char *what, json_t **ret)
{
	char msg[1024];
	if (vram_waitact_may_act(c->api->wa, &c->peer, workload, what, msg, sizeof(msg)))
		return 0;
	return vram_http_error_out(ret, 403, "not_owner", "%s", msg);
}

/*
 * Who sent req: the X-Vramd-Peer header the gateway adds (exactly one), or
 * vramd itself without one. Returns 0, or -EINVAL with the reason in msg.
 */
static int request_peer(struct evhttp_request *req, struct vram_peer *ret, char *msg, size_t msg_size)
{
	const char *value = NULL;
	struct evkeyval *h;
	TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next) {
		if (evutil_ascii_strcasecmp(h->key, VRAM_PEER_HEADER) != 0)
			continue;
		if (value) {
			snprintf(msg, msg_size, VRAM_PEER_HEADER ": sent more than once");
			return -EINVAL;
		}
		value = h->value;
	}
	if (!value) {
		vram_peer_self(ret);
		return 0;
	}
	if (vram_peer_parse(value, ret) < 0) {
		snprintf(msg, msg_size, VRAM_PEER_HEADER ": expected \"unix pid=N uid=N gid=N groups=N,...\" "
			 "or \"tcp addr=A token=0|1\", got \"%.128s\"", value);
		return -EINVAL;
	}
	return 0;
}

/* ----------------------------------------------------------- plain reads */

static int h_healthz(struct vram_api_call *c, json_t **ret)
{
	*ret = json_pack("{s:s}", "status", "ok");
	return 200;
}

static uint64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void status_blob_unref(const void *data, size_t len, void *arg)
{
	struct status_blob *b = arg;
	if (--b->refs == 0)
		free(b);
}

static void status_drop(struct vram_api *api)
{
	if (api->status)
		status_blob_unref(NULL, 0, api->status);
	api->status = NULL;
}

static void on_state_change(const struct vram_event *ev, void *arg)
{
	status_drop(arg);
}

/* An action begun or idle timers set through waitact.c (REST or MCP): the status changed. */
static void on_waitact_change(void *arg)
{
	status_drop(arg);
}

/*
 * The status of many workloads is costly to build and is what dashboards
 * and scripts poll, so one text serves every request for up to
 * VRAM_API_STATUS_MAX_AGE_MS; any state change or change made through the
 * API drops it at once. Only the idle seconds and measured memory can be
 * that much behind.
 */
/* The current status text (built if there is none or it is too old); NULL when out of memory. */
static struct status_blob *status_blob(struct vram_api *api)
{
	uint64_t now = monotonic_ms();
	if (api->status && now - api->status_built_ms >= VRAM_API_STATUS_MAX_AGE_MS)
		status_drop(api);
	if (!api->status) {
		json_t *j = vram_manager_status_json(api->m);
		char *text = j ? json_dumps(j, VRAM_HTTP_JSON_FLAGS) : NULL;
		json_decref(j);
		size_t len = text ? strlen(text) : 0;
		struct status_blob *b = text ? malloc(sizeof(*b) + len + 1) : NULL;
		if (!b) {
			free(text);
			return NULL;
		}
		b->refs = 1;
		b->len = len + 1;
		memcpy(b->data, text, len);
		b->data[len] = '\n';
		free(text);
		api->status = b;
		api->status_built_ms = now;
	}
	return api->status;
}

int vram_api_status_text(struct vram_api *api, const char **ret_text, size_t *ret_len)
{
	struct status_blob *b = status_blob(api);
	if (!b)
		return -ENOMEM;
	*ret_text = b->data;
	*ret_len = b->len;
	return 0;
}

static int h_status(struct vram_api_call *c, json_t **ret)
{
	struct status_blob *b = status_blob(c->api);
	if (!b)
		return vram_http_error_out(ret, 500, NULL, "out of memory");
	b->refs++;
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type",
			  "application/json");
	if (evbuffer_add_reference(evhttp_request_get_output_buffer(c->req), b->data, b->len,
				   status_blob_unref, b) < 0)
		b->refs--;
	evhttp_send_reply(c->req, 200, "OK", NULL);
	return 0;
}

static int h_workload(struct vram_api_call *c, json_t **ret)
{
	*ret = vram_manager_workload_json(c->api->m, c->match->name);
	if (!*ret)
		return vram_waitact_unknown(c->api->wa, ret, c->match->name);
	return 200;
}

/* --------------------------------------------------- hooked processes */

/* Every process connected (or once connected) to the hook channel, with its workload. */
static int h_hook_processes(struct vram_api_call *c, json_t **ret)
{
	*ret = vram_manager_hook_json(c->api->m);
	return *ret ? 200 : vram_http_error_out(ret, 500, NULL, "out of memory");
}

/* Offload or restore of one hooked process by pid, e.g. one from before a vramd restart. */
static int h_hook_action(struct vram_api_call *c, json_t **ret)
{
	const char *s = c->match->name;
	char *end;
	errno = 0;
	long pid = strtol(s, &end, 10);
	if (errno || end == s || *end || s[0] < '0' || s[0] > '9' || pid <= 0 || pid > 4194304)
		return vram_http_error_out(ret, 400, "bad_request",
					   "expected a process id, got \"%.32s\"", s);
	c->pid = (pid_t)pid;
	return run_action(c, (enum vram_action)c->match->route->arg, ret);
}

/* --------------------------------------------------------------- reload */

/*
 * POST /api/reload: reads the config file again and applies it (see
 * vram_manager_reload). 200 with what changed; 400 when the file does not
 * load (its errors with file:line:col), 409 when it changes what needs a
 * restart of vramd or clashes with ad-hoc workloads, 503 while shutting
 * down. Nothing changes unless the answer is 200.
 */
static int h_reload(struct vram_api_call *c, json_t **ret)
{
	char err[4096];
	json_t *report = NULL;
	int r = vram_manager_reload_file(c->api->m, &report, err, sizeof(err));
	if (r == 0) {
		status_drop(c->api);
		*ret = report;
		return 200;
	}
	vram_warn("Config reload refused: %s", err);
	switch (r) {
	case -EPERM:
		return vram_http_error_out(ret, 409, "needs_restart", "%s", err);
	case -EEXIST:
	case -ENOSPC:
		return vram_http_error_out(ret, 409, "conflict", "%s", err);
	case -EBUSY:
		return vram_http_error_out(ret, 503, "busy", "%s", err);
	case -ENOMEM:
		return vram_http_error_out(ret, 500, NULL, "%s", err);
	default:
		return vram_http_error_out(ret, 400, "bad_config", "%s", err);
	}
}

/* ------------------------------------------------------ restart in place */

/* A POST /api/daemon/restart waiting for the binary's check. */
struct restart_call {
	struct vram_api *api;
	struct evhttp_request *req; /* NULL once the client went away */
};

static void on_restart_close(struct evhttp_connection *evcon, void *arg)
{
	struct restart_call *rc = arg;
	vram_http_release_detached(rc->req);
	rc->req = NULL; /* the restart goes on; its answer finds nobody */
}

static void on_restart_answer(int result, const char *message, void *arg)
{
	struct restart_call *rc = arg;
	struct evhttp_request *req = rc->req;
	struct vram_upgrade *up = rc->api->upgrade;
	free(rc);
	if (!req)
		return;
	vram_http_unwatch(req);
	if (result == 0) {
		json_t *body = vram_upgrade_status_json(up, false);
		json_object_del(body, "last_error");
		json_object_del(body, "failed");
		vram_http_reply_json(req, 202, body);
		json_decref(body);
	} else if (result == -EINVAL) {
		vram_http_reply_error(req, 409, "check_failed",
				      "the restart was called off, vramd runs on unchanged: %s",
				      message);
	} else if (result == -ECANCELED) {
		vram_http_reply_error(req, 503, "shutting_down", "%s", message);
	} else {
		vram_http_reply_error(req, 500, "restart_failed",
				      "the restart was called off, vramd runs on unchanged: %s",
				      message);
	}
}

/*
 * POST /api/daemon/restart: restart in place (upgrade.h). The binary on
 * disk checks the config first; 202 {"restarting": true, "pid", "version",
 * "restarts", ...} once it passed and the drain begins (the new image
 * follows), 409 check_failed with the check's output, 409 restarting while
 * one is under way, 403 for a client that may not, 500 when the check
 * cannot be run. GET: where restarts stand (vramctl daemon restart waits
 * on it); the last failure's text only for those who may restart.
 */
static int h_daemon_restart(struct vram_api_call *c, json_t **ret)
{
	struct vram_api *api = c->api;
	if (!api->upgrade)
		return vram_http_error_out(ret, 503, "unavailable",
					   "this vramd cannot restart in place");
	/* as the owner of the daemon's own processes: its user or root, or a token holder */
	bool may = vram_runas_may_manage(&c->peer, geteuid(), geteuid());
	if (evhttp_request_get_command(c->req) != EVHTTP_REQ_POST) {
		*ret = vram_upgrade_status_json(api->upgrade, may);
		return *ret ? 200 : vram_http_error_out(ret, 500, NULL, "out of memory");
	}
	char who[160];
	vram_peer_describe(&c->peer, who, sizeof(who));
	if (!may)
		return vram_http_error_out(ret, 403, "forbidden",
					   "only vramd's own user or root on the control socket, or a "
					   "client with the daemon's token, may restart vramd; this "
					   "request came from %s", who);
	int st = call_no_fields(c, ret);
	if (st)
		return st;
	struct restart_call *rc = calloc(1, sizeof(*rc));
	if (!rc)
		return vram_http_error_out(ret, 500, NULL, "out of memory");
	rc->api = api;
	rc->req = c->req;
	char err[1024];
	int r = vram_upgrade_start(api->upgrade, who,
				   vram_manager_config(api->m)->daemon.upgrade_drain_ms,
				   on_restart_answer, rc, err, sizeof(err));
	if (r < 0) {
		free(rc);
		if (r == -EBUSY)
			return vram_http_error_out(ret, 409, "restarting", "%s", err);
		return vram_http_error_out(ret, 500, "restart_failed",
					   "the restart was called off, vramd runs on unchanged: %s",
					   err);
	}
	vram_http_watch_close(c->req, on_restart_close, rc);
	return 0;
}

/* ------------------------------------------------------------------ MPS */

static int h_mps_status(struct vram_api_call *c, json_t **ret)
{
	*ret = vram_mps_status_json(vram_manager_mps(c->api->m));
	return *ret ? 200 : vram_http_error_out(ret, 500, NULL, "out of memory");
}

/*
 * POST /api/mps/start {"gpus": [0]} and /api/mps/stop {"gpus": [0], "force": false}.
 * Answers once the change has begun (202) with the MPS status; the daemon's
 * state in /api/mps tells when it has happened.
 */
static int h_mps_change(struct vram_api_call *c, json_t **ret)
{
	static const char *const fields[] = { "gpus", "force", NULL };
	bool start = c->match->route->arg == 1;
	unsigned gpus[VRAM_MPS_MAX_GPUS];
	size_t n = 0;
	json_t *obj = NULL, *v;
	char err[512];
	int st = call_object(c, false, fields, &obj, ret);
	if (st)
		return st;
	v = obj ? json_object_get(obj, "gpus") : NULL;
	if (v && !json_is_array(v)) {
		json_decref(obj);
		return vram_http_error_out(ret, 400, NULL, "gpus must be an array of GPU indices");
	}
	for (size_t i = 0; v && i < json_array_size(v); i++) {
		json_t *g = json_array_get(v, i);
		if (!json_is_integer(g) || json_integer_value(g) < 0 || n == VRAM_MPS_MAX_GPUS ||
		    json_integer_value(g) >= VRAM_MPS_MAX_GPUS) {
			json_decref(obj);
			return vram_http_error_out(ret, 400, NULL,
						   "gpus must hold at most %d GPU indices (0..%d)",
						   VRAM_MPS_MAX_GPUS, VRAM_MPS_MAX_GPUS - 1);
		}
		gpus[n++] = (unsigned)json_integer_value(g);
	}
	v = obj ? json_object_get(obj, "force") : NULL;
	if (v && !json_is_boolean(v)) {
		json_decref(obj);
		return vram_http_error_out(ret, 400, NULL, "force must be true or false");
	}
	bool force = v && json_is_true(v);
	json_decref(obj);
	if (start && n == 0)
		gpus[n++] = 0;
	int r = start ? vram_manager_mps_start(c->api->m, gpus, n, err, sizeof(err))
		      : vram_manager_mps_stop(c->api->m, gpus, n, force, err, sizeof(err));
	if (r < 0)
		return vram_http_error_out(ret,
					   r == -EBUSY ? 409 : r == -EINVAL ? 400 : r == -ENOENT ? 404 : 500,
					   NULL, "%s", err);
	*ret = vram_mps_status_json(vram_manager_mps(c->api->m));
	return *ret ? 202 : vram_http_error_out(ret, 500, NULL, "out of memory");
}

static int h_compat_status(struct vram_api_call *c, json_t **ret)
{
	*ret = vram_manager_compat_status_json(c->api->m);
	return 200;
}

/* ---------------------------------------------------- actions that wait */

static int h_action(struct vram_api_call *c, json_t **ret)
{
	return run_action(c, (enum vram_action)c->match->route->arg, ret);
}

/*
 * Begins action on the {name} workload, or on the hooked process c->pid;
 * replies when it is done (or at once with ?wait=0).
 */
static int run_action(struct vram_api_call *c, enum vram_action action, json_t **ret)
{
	const char *name = c->match->name;
	int st = call_no_fields(c, ret);
	if (st)
		return st;

	bool wait = true;
	const char *w = evhttp_find_header(&c->query, "wait");
	if (w) {
		if (strcmp(w, "0") == 0 || strcmp(w, "false") == 0)
			wait = false;
		else if (strcmp(w, "1") != 0 && strcmp(w, "true") != 0)
			return vram_http_error_out(ret, 400, NULL,
						   "wait: expected 0 or 1, got \"%.32s\"", w);
	}
	if (c->pid == 0 && (st = check_may_act(c, name, vram_action_name(action), ret)))
		return st;
	return vram_waitact_act(c->api->wa, c->req, &c->peer, name, c->pid, action, wait, ret);
}

/*
 * TTS-style offload/release: of the workload named in {"workload": ...}, or
 * of every workload in a state the action applies to. Replies
 * {"success": bool, "message": "...", "results": [...]}.
 */
static int h_compat_action(struct vram_api_call *c, json_t **ret)
{
	enum vram_action action = (enum vram_action)c->match->route->arg;
	static const char *const fields[] = { "workload", NULL };
	json_t *obj;
	int st = call_object(c, false, fields, &obj, ret);
	if (st)
		return st;
	json_t *wv = obj ? json_object_get(obj, "workload") : NULL;
	if (wv && !json_is_null(wv) && !json_is_string(wv)) {
		json_decref(obj);
		return vram_http_error_out(ret, 400, NULL,
					   "workload: expected a workload name (string)");
	}
	st = vram_waitact_compat(c->api->wa, c->req, &c->peer, action, json_string_value(wv), NULL,
				 NULL, NULL, ret);
	json_decref(obj);
	return st;
}

/* ----------------------------------------------------------- idle timers */

static int h_idle(struct vram_api_call *c, json_t **ret)
{
	static const char *const fields[] = { "offload_after", "release_after", "park_after", NULL };
	json_t *obj;
	int st = check_may_act(c, c->match->name, "change the idle timers of", ret);
	if (st)
		return st;
	st = call_object(c, true, fields, &obj, ret);
	if (st)
		return st;
	struct vram_idle_set set = {VRAM_IDLE_KEEP, VRAM_IDLE_KEEP, VRAM_IDLE_KEEP};
	uint64_t *const dst[] = {&set.offload_after_ms, &set.release_after_ms, &set.park_after_ms};
	char msg[512];
	bool any = false;
	for (size_t i = 0; fields[i]; i++) {
		json_t *v = json_object_get(obj, fields[i]);
		if (v && (st = vram_http_duration_field(v, fields[i], dst[i], msg, sizeof(msg))))
			goto out_bad;
		any |= v != NULL;
	}
	if (!any) {
		st = 400;
		snprintf(msg, sizeof(msg),
			 "expected \"offload_after\", \"release_after\" and/or \"park_after\"");
		goto out_bad;
	}
	json_decref(obj);
	char err[1024] = "";
	int r = vram_manager_set_idle(c->api->m, c->match->name, &set, err, sizeof(err));
	if (r < 0)
		return vram_http_error_out(ret, vram_http_status_of_errno(r),
					   vram_http_code_of_errno(r), "%s",
					   *err ? err : strerror(-r));
	status_drop(c->api);
	*ret = vram_manager_workload_json(c->api->m, c->match->name);
	return 200;

out_bad:
	json_decref(obj);
	*ret = vram_http_error_json(st, NULL, msg);
	return st;
}

static int h_compat_timeout(struct vram_api_call *c, json_t **ret)
{
	static const char *const fields[] = { "timeout", "timeout_seconds", "workload", NULL };
	json_t *obj;
	int st = call_object(c, true, fields, &obj, ret);
	if (st)
		return st;
	const char *only = json_string_value(json_object_get(obj, "workload"));
	if ((st = check_may_act(c, only, "change the idle timers of", ret))) {
		json_decref(obj);
		return st;
	}
	st = vram_waitact_compat_timeout(c->api->wa, obj, ret);
	json_decref(obj);
	return st;
}

/* ------------------------------------------------------------------- MCP */

static int h_mcp(struct vram_api_call *c, json_t **ret)
{
	vram_mcp_handle_http(c->api->mcp, c->req, c->body, c->body_len, c->body_error);
	return 0;
}

/* ------------------------------------------------------------- dashboard */

/* GET / and /ui/{file}: the dashboard's files (web.h). */
static int h_web(struct vram_api_call *c, json_t **ret)
{
	vram_web_reply(c->req, c->match->name);
	return 0;
}

/* GET /api/history: GPU memory over the last minutes (history.h). */
static int h_history(struct vram_api_call *c, json_t **ret)
{
	*ret = vram_history_json(c->api->history);
	return 200;
}

/* GET /api/decisions: the last placements and evictions (decisions.h). */
static int h_decisions(struct vram_api_call *c, json_t **ret)
{
	*ret = vram_manager_decisions_json(c->api->m);
	return 200;
}

/* ------------------------------------------------------------------ logs */

/*
 * The log from offset to its end, at most VRAM_API_LOG_BYTES_MAX; from the
 * start when the file is shorter than offset (it was rotated).
 */
static int logs_from(struct vram_api_call *c, const char *path, off_t offset)
{
	char *text = NULL;
	size_t len = 0;
	off_t size = 0;
	int fd = path ? vram_open_file(path, O_RDONLY, 0) : -1; /* not through a link */
	if (fd >= 0) {
		struct stat st;
		if (fstat(fd, &st) == 0)
			size = st.st_size;
		if (offset > size)
			offset = 0;
		size_t want = (size_t)(size - offset);
		if (want > VRAM_API_LOG_BYTES_MAX)
			want = VRAM_API_LOG_BYTES_MAX;
		text = malloc(want + 1);
		if (text && want) {
			ssize_t n = pread(fd, text, want, offset);
			len = n > 0 ? (size_t)n : 0;
		}
		close(fd);
	}
	char end[32];
	snprintf(end, sizeof(end), "%lld", (long long)offset + (long long)len);
	evhttp_add_header(evhttp_request_get_output_headers(c->req), "X-Log-Next-Offset", end);
	vram_http_reply_text(c->req, 200, text ? text : "", len);
	free(text);
	return 0;
}

static int h_logs(struct vram_api_call *c, json_t **ret)
{
	long tail = VRAM_API_LOG_TAIL_DEFAULT;
	const char *ts = evhttp_find_header(&c->query, "tail");
	if (ts) {
		char *end;
		errno = 0;
		tail = strtol(ts, &end, 10);
		if (errno || end == ts || *end || tail < 0 || tail > VRAM_API_LOG_TAIL_MAX)
			return vram_http_error_out(ret, 400, NULL,
						   "tail: expected a number of lines 0..%d, got \"%.32s\"",
						   VRAM_API_LOG_TAIL_MAX, ts);
	}
	/* ?follow=1: the tail, then what is appended, streamed (logfollow.h) */
	bool follow = false;
	const char *fs = evhttp_find_header(&c->query, "follow");
	if (fs) {
		if (strcmp(fs, "1") != 0 && strcmp(fs, "0") != 0)
			return vram_http_error_out(ret, 400, NULL,
						   "follow: expected 1 or 0, got \"%.32s\"", fs);
		follow = fs[0] == '1';
	}
	/* ?offset=N: the bytes from N on (for following a log); X-Log-Next-Offset says where to go on */
	long long offset = -1;
	const char *os = evhttp_find_header(&c->query, "offset");
	if (os) {
		char *end;
		errno = 0;
		offset = strtoll(os, &end, 10);
		if (errno || end == os || *end || offset < 0)
			return vram_http_error_out(ret, 400, NULL,
						   "offset: expected a byte offset, got \"%.32s\"",
						   os);
		if (follow)
			return vram_http_error_out(ret, 400, NULL,
						   "offset and follow=1 do not go together: a "
						   "followed log starts with its last lines (tail)");
	}
	json_t *w = vram_manager_workload_json(c->api->m, c->match->name);
	if (!w)
		return vram_waitact_unknown(c->api->wa, ret, c->match->name);
	json_decref(w);
	int refused = check_may_act(c, c->match->name, "read the log of", ret);
	if (refused)
		return refused;
	if (follow) {
		size_t n, n_tcp;
		vram_logfollow_count(c->api->follow, &n, &n_tcp);
		if (!vram_peer_share_left(&c->peer, n, n_tcp, VRAM_LOGFOLLOW_MAX,
					  VRAM_LOGFOLLOW_UNIX_RESERVED)) {
			char msg[256];
			vram_peer_share_refusal(&c->peer, "clients following a log",
						VRAM_LOGFOLLOW_MAX, VRAM_LOGFOLLOW_UNIX_RESERVED,
						msg, sizeof(msg));
			return vram_http_error_out(ret, 503, "busy", "%s", msg);
		}
		if (vram_logfollow_start(c->api->follow, c->req, c->match->name, tail,
					 c->peer.transport == VRAM_PEER_TCP) < 0)
			return vram_http_error_out(ret, 500, NULL, "out of memory");
		return 0;
	}
	const char *path = vram_manager_log_path(c->api->m, c->match->name);
	if (offset >= 0)
		return logs_from(c, path, (off_t)offset);

	char *text = NULL;
	size_t len = 0;
	off_t end;
	int fd = path ? vram_open_file(path, O_RDONLY, 0) : -1; /* not through a link */
	int r = vram_logfollow_tail(fd, tail, VRAM_API_LOG_BYTES_MAX, &text, &len, &end);
	if (fd >= 0)
		close(fd);
	if (r < 0)
		return vram_http_error_out(ret, 500, NULL, "out of memory");
	vram_http_reply_text(c->req, 200, text ? text : "", len);
	free(text);
	return 0;
}

/* --------------------------------------------------- ad-hoc workloads */

/*
 * POST /api/workloads {"name"?, "cmd": [...], "memory"?, "gpus"?, "env"?, "cwd"?}:
 * starts a command as an ad-hoc workload; 201 with its status once spawned.
 */
static int h_create(struct vram_api_call *c, json_t **ret)
{
	static const char *const fields[] = { "name", "cmd", "memory", "gpus", "env", "cwd", NULL };
	/* whom it would run as comes first: a client that may not run commands learns nothing more */
	struct vram_runas runas;
	struct vram_peer self;
	char why[1024];
	vram_peer_self(&self);
	int r = vram_runas_for_peer(&c->peer, &self, vram_manager_config(c->api->m), &runas, why,
				    sizeof(why));
	if (r < 0)
		return vram_http_error_out(ret, r == -EPERM ? 403 : 500,
					   r == -EPERM ? "cannot_run" : NULL, "%s", why);
	json_t *obj;
	int st = call_object(c, true, fields, &obj, ret);
	if (st)
		return st;
	struct vram_adhoc_spec spec = { .runas = &runas };
	const char **cmd = NULL, **env = NULL;
	json_t *jname = json_object_get(obj, "name"), *jcmd = json_object_get(obj, "cmd");
	json_t *jmem = json_object_get(obj, "memory"), *jgpus = json_object_get(obj, "gpus");
	json_t *jenv = json_object_get(obj, "env"), *jcwd = json_object_get(obj, "cwd");
	if (jname && !json_is_null(jname)) {
		if (!json_is_string(jname)) {
			st = vram_http_error_out(ret, 400, NULL, "name: expected a string");
			goto out;
		}
		spec.name = json_string_value(jname);
	}
	size_t n = json_array_size(jcmd);
	if (!json_is_array(jcmd) || n == 0 || n > VRAM_CONFIG_MAX_ARGS) {
		st = vram_http_error_out(ret, 400, NULL, "cmd: expected a list of 1..%d strings",
					 VRAM_CONFIG_MAX_ARGS);
		goto out;
	}
	cmd = calloc(n + 1, sizeof(*cmd));
	if (!cmd) {
		st = vram_http_error_out(ret, 500, NULL, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		cmd[i] = json_string_value(json_array_get(jcmd, i));
		if (!cmd[i]) {
			st = vram_http_error_out(ret, 400, NULL, "cmd[%zu]: expected a string", i);
			goto out;
		}
	}
	spec.cmd = cmd;
	if (jmem && !json_is_null(jmem) &&
	    (!json_is_string(jmem) || vram_units_parse_mem(json_string_value(jmem), &spec.memory) < 0)) {
		st = vram_http_error_out(ret, 400, NULL,
					 "memory: expected a size like 20GiB or a fraction like 0.8");
		goto out;
	}
	if (jgpus && !json_is_null(jgpus)) {
		if (!json_is_integer(jgpus) || json_integer_value(jgpus) < 0 ||
		    json_integer_value(jgpus) > VRAM_CONFIG_MAX_GPUS) {
			st = vram_http_error_out(ret, 400, NULL,
						 "gpus: expected a number of GPUs 0..%d",
						 VRAM_CONFIG_MAX_GPUS);
			goto out;
		}
		spec.gpus = (unsigned)json_integer_value(jgpus);
		spec.gpus_set = true;
	}
	if (jcwd && !json_is_null(jcwd)) {
		if (!json_is_string(jcwd)) {
			st = vram_http_error_out(ret, 400, NULL, "cwd: expected a string");
			goto out;
		}
		spec.cwd = json_string_value(jcwd);
	}
	if (jenv && !json_is_null(jenv)) {
		size_t ne = json_object_size(jenv), k = 0;
		if (!json_is_object(jenv) || ne > VRAM_MANAGER_ADHOC_MAX_ENV) {
			st = vram_http_error_out(ret, 400, NULL,
						 "env: expected an object of at most %d strings",
						 VRAM_MANAGER_ADHOC_MAX_ENV);
			goto out;
		}
		env = calloc(ne + 1, sizeof(*env));
		if (!env) {
			st = vram_http_error_out(ret, 500, NULL, "out of memory");
			goto out;
		}
		const char *key;
		json_t *val;
		json_object_foreach(jenv, key, val) {
			char *kv = NULL;
			if (!json_is_string(val) || !*key || strchr(key, '=')) {
				st = vram_http_error_out(ret, 400, NULL,
							 "env.%.64s: expected a string", key);
				goto out;
			}
			if (asprintf(&kv, "%s=%s", key, json_string_value(val)) < 0) {
				st = vram_http_error_out(ret, 500, NULL, "out of memory");
				goto out;
			}
			env[k++] = kv;
		}
		spec.env = env;
	}

	char err[1024] = "";
	const char *name = NULL;
	r = vram_manager_add_adhoc(c->api->m, &spec, &name, err, sizeof(err));
	if (r < 0) {
		int status = r == -EINVAL ? 400 : r == -EEXIST ? 409 : r == -EDQUOT ? 429
				  : r == -EAGAIN || r == -ENOSPC || r == -EBUSY ? 503 : 500;
		const char *code = r == -EEXIST ? "name_taken" : r == -EAGAIN ? "no_slot"
				   : r == -EDQUOT ? "user_limit" : r == -ENOSPC ? "no_room" : NULL;
		st = vram_http_error_out(ret, status, code, "%s", *err ? err : strerror(-r));
		goto out;
	}
	status_drop(c->api);
	*ret = vram_manager_workload_json(c->api->m, name);
	st = *ret ? 201 : vram_http_error_out(ret, 500, NULL, "out of memory");
out:
	for (size_t i = 0; env && env[i]; i++)
		free((char *)env[i]);
	free(env);
	free(cmd);
	json_decref(obj);
	return st;
}

/* POST /api/attach: a process group vramd did not start (api_attach.h). */
static int h_attach(struct vram_api_call *c, json_t **ret)
{
	json_t *obj;
	int st = call_object(c, true, vram_api_attach_fields, &obj, ret);
	if (st)
		return st;
	st = vram_api_attach(c->api->m, &c->peer, obj, ret);
	json_decref(obj);
	if (st == 201)
		status_drop(c->api);
	return st;
}

/* DELETE /api/workloads/{name}: stops an ad-hoc workload and removes it (replies once stopped). */
static int h_remove(struct vram_api_call *c, json_t **ret)
{
	char err[1024] = "";
	int st = check_may_act(c, c->match->name, "remove", ret);
	if (st)
		return st;
	int r = vram_manager_remove_adhoc(c->api->m, c->match->name, err, sizeof(err));
	if (r == -ENOENT)
		return vram_waitact_unknown(c->api->wa, ret, c->match->name);
	if (r < 0)
		return vram_http_error_out(ret, r == -EPERM ? 409 : 500,
					   r == -EPERM ? "not_adhoc" : NULL, "%s",
					   *err ? err : strerror(-r));
	status_drop(c->api);
	return run_action(c, VRAM_ACTION_STOP, ret);
}

/* ------------------------------------------------------- event stream */

struct sse_client {
	struct vram_api *api;
	struct evhttp_request *req;
	struct vram_manager_sub *sub;
	struct event *keepalive;
	struct vram_list link; /* in api->sse */
	bool tcp; /* a TCP client's: counted in n_sse_tcp */
};

static void sse_unlink_free(struct sse_client *s)
{
	struct vram_api *api = s->api;
	vram_manager_unsubscribe(s->sub);
	if (s->keepalive)
		event_free(s->keepalive);
	vram_list_remove(&s->link);
	api->n_sse--;
	api->n_sse_tcp -= s->tcp;
	free(s);
}

static void on_sse_close(struct evhttp_connection *evcon, void *arg)
{
	struct sse_client *s = arg;
	vram_http_release_detached(s->req);
	sse_unlink_free(s);
}

/* Sends text as one chunk; a client that does not keep up is dropped. */
static void sse_send(struct sse_client *s, const char *text, size_t len)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(s->req);
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > VRAM_API_SSE_BACKLOG_MAX) {
		vram_warn("Dropping an event-stream client: over %d bytes behind",
			  VRAM_API_SSE_BACKLOG_MAX);
		/* Frees the connection; on_sse_close frees s. */
		evhttp_connection_free(evcon);
		return;
	}
	struct evbuffer *buf = evbuffer_new();
	if (!buf)
		return;
	evbuffer_add(buf, text, len);
	evhttp_send_reply_chunk(s->req, buf);
	evbuffer_free(buf);
}

/* A JSON array of names (new reference; NULL on out of memory). */
static json_t *names_json(const char *const *names, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append_new(a, json_string(names[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/*
 * The event stream's data of ev (new reference; NULL on out of memory),
 * the one place a manager event becomes JSON (docs/api.md, GET /api/events):
 * state: {"workload", "from", "to", "reason" (the sentence), "time" (s since
 * the epoch)}; reload: {"added", "removed", "changed"} (names).
 */
static json_t *event_json(const struct vram_event *ev)
{
	switch (ev->kind) {
	case VRAM_EVENT_STATE:
		return json_pack("{s:s,s:s,s:s,s:s,s:f}", "workload", ev->workload, "from",
				 vram_wl_state_name(ev->from), "to", vram_wl_state_name(ev->to),
				 "reason", ev->text ? ev->text : "", "time", ev->wall_s);
	case VRAM_EVENT_RELOAD: {
		const struct vram_reload_summary *r = ev->reload;
		return json_pack("{s:o,s:o,s:o}", "added", names_json(r->added, r->n_added), "removed",
				 names_json(r->removed, r->n_removed), "changed",
				 names_json(r->changed, r->n_changed));
	}
	}
	return NULL;
}

/* The event's name on the stream ("event: state"). */
static const char *event_name(enum vram_event_kind kind)
{
	return kind == VRAM_EVENT_RELOAD ? "reload" : "state";
}

static void on_sse_event(const struct vram_event *ev, void *arg)
{
	struct sse_client *s = arg;
	json_t *data = event_json(ev);
	char *text = data ? json_dumps(data, VRAM_HTTP_JSON_FLAGS) : NULL;
	json_decref(data);
	if (!text)
		return;
	char head[128];
	int hl = snprintf(head, sizeof(head), "id: %llu\nevent: %s\ndata: ",
			  (unsigned long long)++s->api->sse_next_id, event_name(ev->kind));
	size_t tl = strlen(text);
	char *msg = malloc((size_t)hl + tl + 3);
	if (msg) {
		memcpy(msg, head, (size_t)hl);
		memcpy(msg + hl, text, tl);
		memcpy(msg + hl + tl, "\n\n", 3);
		sse_send(s, msg, (size_t)hl + tl + 2);
	}
	free(msg);
	free(text);
}

static void on_sse_keepalive(evutil_socket_t fd, short what, void *arg)
{
	static const char ka[] = ": keepalive\n\n";
	sse_send(arg, ka, sizeof(ka) - 1);
}

static int h_events(struct vram_api_call *c, json_t **ret)
{
	struct vram_api *api = c->api;
	if (!vram_peer_share_left(&c->peer, api->n_sse, api->n_sse_tcp, VRAM_API_SSE_MAX,
				  VRAM_API_SSE_UNIX_RESERVED)) {
		char msg[256];
		vram_peer_share_refusal(&c->peer, "event-stream clients", VRAM_API_SSE_MAX,
					VRAM_API_SSE_UNIX_RESERVED, msg, sizeof(msg));
		return vram_http_error_out(ret, 503, "busy", "%s", msg);
	}
	struct sse_client *s = calloc(1, sizeof(*s));
	if (!s)
		return vram_http_error_out(ret, 500, NULL, "out of memory");
	s->api = api;
	s->tcp = c->peer.transport == VRAM_PEER_TCP;
	s->req = c->req;
	s->keepalive = event_new(api->base, -1, EV_PERSIST, on_sse_keepalive, s);
	if (!s->keepalive || vram_manager_subscribe(api->m, on_sse_event, s, &s->sub) < 0) {
		if (s->keepalive)
			event_free(s->keepalive);
		free(s);
		return vram_http_error_out(ret, 500, NULL, "out of memory");
	}
	vram_list_push_front(&api->sse, &s->link);
	api->n_sse++;
	api->n_sse_tcp += s->tcp;

	struct evkeyvalq *oh = evhttp_request_get_output_headers(c->req);
	evhttp_add_header(oh, "Content-Type", "text/event-stream");
	evhttp_add_header(oh, "Cache-Control", "no-cache");
	evhttp_add_header(oh, "X-Accel-Buffering", "no");
	evhttp_send_reply_start(c->req, 200, "OK");
	struct evhttp_connection *evcon = evhttp_request_get_connection(c->req);
	evhttp_connection_set_closecb(evcon, on_sse_close, s);
	/*
	 * evhttp keeps reading during a streamed reply to notice the client
	 * closing, under the idle timeout; a quiet stream is not idle. A client
	 * that stops reading is caught by the write timeout and the backlog cap.
	 */
	struct timeval write_tv = { 30, 0 };
	bufferevent_set_timeouts(evhttp_connection_get_bufferevent(evcon), NULL, &write_tv);
	struct timeval ka_tv = { VRAM_API_SSE_KEEPALIVE_S, 0 };
	event_add(s->keepalive, &ka_tv);
	static const char hello[] = "retry: 2000\n: vramd events\n\n";
	sse_send(s, hello, sizeof(hello) - 1);
	return 0;
}

/* ------------------------------------------------------------ dispatch */

static enum vram_api_method method_of(struct evhttp_request *req)
{
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
	case EVHTTP_REQ_HEAD: return VRAM_API_GET;
	case EVHTTP_REQ_POST: return VRAM_API_POST;
	case EVHTTP_REQ_PUT: return VRAM_API_PUT;
	case EVHTTP_REQ_DELETE: return VRAM_API_DELETE;
	default: return VRAM_API_OTHER;
	}
}

void vram_api_handle(struct evhttp_request *req, bool trusted, void *arg)
{
	struct vram_api *api = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (!path || !*path)
		path = "/";
	if (api->closing) {
		vram_http_reply_error(req, 503, "shutting_down", "vramd is shutting down");
		return;
	}

	struct vram_api_match match;
	unsigned allowed = 0;
	int r = vram_api_route_find(method_of(req), path, &match, &allowed);
	if (r == -ENOENT) {
		vram_http_reply_error(req, 404, NULL, "no route %.200s", path);
		return;
	}
	if (r == -EPERM) {
		char methods[64];
		vram_api_methods_format(allowed, methods, sizeof(methods));
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", methods);
		vram_http_reply_error(req, 405, NULL, "%.200s allows %s", path, methods);
		return;
	}

	/*
	 * Workload names are ASCII and pids are digits: a {name} that is not even
	 * UTF-8 (a character cut by a client, or bytes of another encoding) names
	 * nothing, and must not travel on into JSON, which refuses it.
	 */
	if (!vram_utf8_valid(match.name, strlen(match.name))) {
		vram_http_reply_error(req, 400, NULL,
				      "the name in %.200s is not valid UTF-8 (a cut or malformed "
				      "character)",
				      path);
		return;
	}
	struct vram_api_call c = { .api = api, .req = req, .match = &match };
	char why[512];
	if (request_peer(req, &c.peer, why, sizeof(why)) < 0) {
		vram_http_reply_error(req, 400, NULL, "%s", why);
		return;
	}
	TAILQ_INIT(&c.query);
	const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
	if (q && evhttp_parse_query_str(q, &c.query) < 0) {
		vram_http_reply_error(req, 400, NULL, "malformed query string");
		return;
	}
	static char empty[] = "";
	c.body = empty;
	char *body = NULL;
	r = vram_http_body(req, VRAM_HTTP_BODY_MAX, &body, &c.body_len);
	if (r == 0)
		c.body = body;
	else
		c.body_error = r;
	if (r == -ENOMEM) {
		evhttp_clear_headers(&c.query);
		vram_http_reply_error(req, 500, NULL, "out of memory");
		return;
	}

	json_t *out = NULL;
	int status = match.route->handler(&c, &out);
	if (status > 0) {
		if (out)
			vram_http_reply_json(req, status, out);
		else
			vram_http_reply_error(req, 500, NULL, "out of memory");
	}
	json_decref(out);
	free(body);
	evhttp_clear_headers(&c.query);
}

/* ---------------------------------------------------------- lifecycle */

int vram_api_new(struct event_base *base, struct vram_manager *m, struct vram_api **ret)
{
	struct vram_api *api = calloc(1, sizeof(*api));
	if (!api)
		return -ENOMEM;
	api->base = base;
	api->m = m;
	vram_list_init(&api->sse);
	if (vram_manager_subscribe(m, on_state_change, api, &api->status_sub) < 0) {
		free(api);
		return -ENOMEM;
	}
	if (vram_waitact_new(m, on_waitact_change, api, &api->wa) < 0) {
		vram_manager_unsubscribe(api->status_sub);
		free(api);
		return -ENOMEM;
	}
	if (vram_mcp_new(base, m, api->wa, &api->mcp) < 0 ||
	    vram_logfollow_new(base, m, &api->follow) < 0 ||
	    vram_history_new(base, m, &api->history) < 0) {
		vram_logfollow_free(api->follow);
		vram_mcp_free(api->mcp);
		vram_waitact_free(api->wa);
		vram_manager_unsubscribe(api->status_sub);
		free(api);
		return -ENOMEM;
	}
	*ret = api;
	return 0;
}

void vram_api_set_upgrade(struct vram_api *api, struct vram_upgrade *up)
{
	api->upgrade = up;
}

void vram_api_end_streams(struct vram_api *api)
{
	vram_logfollow_end_all(api->follow);
	while (!vram_list_empty(&api->sse)) {
		struct sse_client *s = vram_list_entry(vram_list_first(&api->sse), struct sse_client, link);
		struct evhttp_connection *evcon = evhttp_request_get_connection(s->req);
		if (evcon)
			evhttp_connection_set_closecb(evcon, NULL, NULL);
		evhttp_send_reply_end(s->req);
		sse_unlink_free(s);
	}
}

void vram_api_close_clients(struct vram_api *api)
{
	if (!api)
		return;
	api->closing = true;
	vram_mcp_close_clients(api->mcp);
	vram_api_end_streams(api);
	vram_waitact_close(api->wa);
}

void vram_api_free(struct vram_api *api)
{
	if (!api)
		return;
	vram_api_close_clients(api);
	vram_logfollow_free(api->follow);
	vram_mcp_free(api->mcp);
	vram_history_free(api->history);
	vram_waitact_free(api->wa);
	vram_manager_unsubscribe(api->status_sub);
	status_drop(api);
	free(api);
}
