/* SPDX-License-Identifier: MIT */
/*
 * Actions a client waits for; see waitact.h. A waiting request is a
 * struct pending with one item per workload it acts on; each item holds the
 * manager's waiter until its outcome comes. The request is answered and
 * freed when the last outcome is in, or freed when its client goes away
 * (then the waiters are cancelled and the actions go on).
 */
#include "daemon/waitact.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/http.h>

#include "common/list.h"
#include "common/log.h"
#include "common/units.h"
#include "daemon/http.h"
#include "daemon/runas.h"

struct vram_waitact {
	struct vram_manager *m;   /* borrowed */
	struct vram_list pending; /* requests waiting for actions (struct pending), newest first */
	size_t n_pending;
	size_t n_pending_tcp;     /* of them, TCP clients' */
	vram_waitact_changed_cb changed; /* may be NULL */
	void *changed_arg;
};

static void changed(struct vram_waitact *wa)
{
	if (wa->changed)
		wa->changed(wa->changed_arg);
}

/* ------------------------------------------------------------ who asks */

bool vram_waitact_may_act(struct vram_waitact *wa, const struct vram_peer *peer, const char *workload,
			  const char *what, char *msg, size_t msg_size)
{
	struct vram_peer self;
	uid_t owner;
	char user[VRAM_RUNAS_USER_MAX];
	if (!workload || !vram_manager_adhoc_owner(wa->m, workload, &owner, user, sizeof(user)))
		return true;
	if (!peer) {
		vram_peer_self(&self);
		peer = &self;
	}
	if (vram_runas_may_manage(peer, geteuid(), owner))
		return true;
	vram_runas_refusal(peer, workload, owner, user, what, msg, msg_size);
	return false;
}

/* The 503 when peer has no share of waiting requests left. */
static int share_refused(json_t **ret, const struct vram_peer *peer)
{
	char msg[256];
	vram_peer_share_refusal(peer, "requests waiting for actions", VRAM_WAITACT_MAX,
				VRAM_WAITACT_UNIX_RESERVED, msg, sizeof(msg));
	return vram_http_error_out(ret, 503, "busy", "%s", msg);
}

int vram_waitact_unknown(struct vram_waitact *wa, json_t **ret, const char *name)
{
	const struct vram_config *cfg = vram_manager_config(wa->m);
	char known[512] = "";
	size_t off = 0;
	for (size_t i = 0; cfg && i < cfg->n_workloads && off < sizeof(known); i++) {
		int n = snprintf(known + off, sizeof(known) - off, "%s%s", i ? ", " : "",
				 cfg->workloads[i].name);
		if (n < 0)
			break;
		off += (size_t)n;
	}
	return vram_http_error_out(ret, 404, "not_found", "no workload named \"%.64s\" (known: %s)",
				   name, known[0] ? known : "none");
}

/* Current state name of a workload ("" if unknown), into buf. */
static const char *workload_state(struct vram_waitact *wa, const char *name, char *buf, size_t size)
{
	json_t *w = vram_manager_workload_json(wa->m, name);
	const char *s = w ? json_string_value(json_object_get(w, "state")) : NULL;
	snprintf(buf, size, "%s", s ? s : "");
	json_decref(w);
	return buf;
}

/* ---------------------------------------------------- actions that wait */

/*
 * A request waiting for one or more actions (several for the compatibility
 * routes that act on every workload). Freed when the last outcome has been
 * sent, or when the client goes away (the waiters are cancelled then).
 */
struct pending_item {
	struct pending *p;
	struct vram_manager_waiter *waiter; /* NULL once its callback ran */
	char name[VRAM_CONFIG_NAME_MAX + 1];
};

struct pending {
	struct vram_waitact *wa;
	struct evhttp_request *req;
	struct vram_list link;  /* in wa->pending */
	enum vram_action action;
	bool compat;         /* reply in the TTS-style shape */
	bool tcp;            /* a TCP client's: counted in n_pending_tcp */
	size_t n_items, n_left;
	json_t *results;     /* array of result objects, in the order they came */
	int worst_status;    /* first failure's status, 200 when all succeeded */
	json_t *first_error; /* error object of the first failure */
	vram_waitact_cb cb;  /* instead of req: who gets the compat reply */
	void *cb_arg;
	struct pending_item items[];
};

json_t *vram_waitact_result_json(const struct vram_action_result *res, enum vram_action action)
{
	json_t *o = json_pack("{s:s, s:s, s:s?, s:f, s:I, s:s?, s:s, s:b}", "workload",
			      res->workload ? res->workload : "", "action", vram_action_name(action), "state",
			      res->state, "seconds", res->seconds, "bytes", (json_int_t)res->bytes,
			      "engine", res->engine, "message", res->message, "ok", res->error == 0);
	if (o && res->pid > 0)
		json_object_set_new(o, "pid", json_integer(res->pid));
	if (o && res->already)
		json_object_set_new(o, "already", json_true());
	return o;
}

static void pending_unlink(struct pending *p)
{
	struct vram_waitact *wa = p->wa;
	vram_list_remove(&p->link);
	wa->n_pending--;
	wa->n_pending_tcp -= p->tcp;
}

static void pending_free(struct pending *p)
{
	json_decref(p->results);
	json_decref(p->first_error);
	free(p);
}

/* The reply to a pending request once every outcome is in (new reference). */
static json_t *pending_body(struct pending *p, int *ret_status)
{
	json_t *body;
	int status = p->worst_status;
	if (p->compat) {
		char msg[256];
		if (status == 200)
			snprintf(msg, sizeof(msg), "%s done for %zu workload(s)",
				 vram_action_name(p->action), p->n_items);
		else
			snprintf(msg, sizeof(msg), "%s failed: %s", vram_action_name(p->action),
				 json_string_value(json_object_get(p->first_error, "message")));
		/* The TTS apps answer 200 with success false; keep that. */
		body = json_pack("{s:b, s:s, s:O}", "success", status == 200, "message", msg,
				 "results", p->results);
		status = 200;
	} else if (status == 200) {
		body = json_incref(json_array_get(p->results, 0));
	} else {
		json_t *err = json_deep_copy(p->first_error);
		json_t *res = json_array_get(p->results, 0);
		if (err && res) {
			json_object_set(err, "workload", json_object_get(res, "workload"));
			json_object_set(err, "action", json_object_get(res, "action"));
			json_object_set(err, "state", json_object_get(res, "state"));
		}
		body = json_pack("{s:o}", "error", err);
	}
	*ret_status = status;
	return body;
}

static void pending_reply(struct pending *p)
{
	int status;
	json_t *body = pending_body(p, &status);
	if (p->cb)
		p->cb(status, body, p->cb_arg);
	else
		vram_http_reply_json(p->req, status, body);
	json_decref(body);
}

int vram_waitact_status_of(const struct vram_action_result *res)
{
	switch (res->outcome) {
	case VRAM_OUTCOME_DONE:
		return 200;
	case VRAM_OUTCOME_PREEMPTED:
		return 409;
	case VRAM_OUTCOME_NO_ROOM:
	case VRAM_OUTCOME_GONE:
		return 503;
	case VRAM_OUTCOME_FAILED:
		break;
	}
	return 500;
}

static void on_action_done(const struct vram_action_result *res, void *arg)
{
	struct pending_item *it = arg;
	struct pending *p = it->p;
	it->waiter = NULL;
	json_array_append_new(p->results, vram_waitact_result_json(res, p->action));
	if (res->error && p->worst_status == 200) {
		p->worst_status = vram_waitact_status_of(res);
		p->first_error = json_pack("{s:s, s:s}", "code",
					   p->worst_status == 409 ? "wrong_state"
								  : vram_http_error_code(p->worst_status),
					   "message", res->message);
	}
	if (--p->n_left > 0)
		return;
	pending_unlink(p);
	if (p->req)
		vram_http_unwatch(p->req);
	pending_reply(p);
	pending_free(p);
}

/* The client went away: the request is gone; drop the waiters, not the actions. */
static void on_pending_close(struct evhttp_connection *evcon, void *arg)
{
	struct pending *p = arg;
	vram_http_release_detached(p->req);
	vram_waitact_cancel((struct vram_waitact_req *)p);
}

static struct pending *pending_new(struct vram_waitact *wa, struct evhttp_request *req,
				   const struct vram_peer *peer, enum vram_action action, size_t n_items)
{
	struct pending *p = calloc(1, sizeof(*p) + n_items * sizeof(p->items[0]));
	if (!p)
		return NULL;
	p->results = json_array();
	if (!p->results) {
		free(p);
		return NULL;
	}
	p->wa = wa;
	vram_list_init(&p->link);
	p->req = req;
	p->tcp = peer->transport == VRAM_PEER_TCP;
	p->action = action;
	p->n_items = n_items;
	p->n_left = n_items;
	p->worst_status = 200;
	for (size_t i = 0; i < n_items; i++)
		p->items[i].p = p;
	return p;
}

static void pending_link(struct pending *p)
{
	struct vram_waitact *wa = p->wa;
	vram_list_push_front(&wa->pending, &p->link);
	wa->n_pending++;
	wa->n_pending_tcp += p->tcp;
}

static void on_action_ignored(const struct vram_action_result *res, void *arg)
{
	vram_debug("%s %s (not waited for): %s", res->workload ? res->workload : "?",
		   res->state ? res->state : "?", res->message);
}

/* Begins action on a workload (name), or on a hooked process (pid > 0). */
static int begin_action(struct vram_waitact *wa, const char *name, pid_t pid, enum vram_action action,
			vram_action_cb cb, void *arg, struct vram_manager_waiter **ret_waiter, char *err,
			size_t err_size)
{
	if (pid > 0)
		return vram_manager_hook_act(wa->m, pid, action, cb, arg, ret_waiter, err, err_size);
	return vram_manager_act(wa->m, name, action, cb, arg, ret_waiter, err, err_size);
}

int vram_waitact_act(struct vram_waitact *wa, struct evhttp_request *req, const struct vram_peer *peer,
		     const char *name, pid_t pid, enum vram_action action, bool wait,
		     json_t **ret)
{
	if (wait && !vram_peer_share_left(peer, wa->n_pending, wa->n_pending_tcp, VRAM_WAITACT_MAX,
					  VRAM_WAITACT_UNIX_RESERVED))
		return share_refused(ret, peer);

	char err[1024] = "";
	if (!wait) {
		int r = begin_action(wa, name, pid, action, on_action_ignored, NULL, NULL, err,
				     sizeof(err));
		if (r < 0)
			return vram_http_error_out(ret, vram_http_status_of_errno(r),
						   vram_http_code_of_errno(r), "%s",
						   *err ? err : strerror(-r));
		changed(wa);
		if (pid > 0) {
			*ret = json_pack("{s:i, s:s, s:b}", "pid", (int)pid, "action",
					 vram_action_name(action), "accepted", 1);
			return 202;
		}
		char state[32];
		*ret = json_pack("{s:s, s:s, s:s, s:b}", "workload", name, "action",
				 vram_action_name(action), "state", workload_state(wa, name, state, sizeof(state)),
				 "accepted", 1);
		return 202;
	}

	struct pending *p = pending_new(wa, req, peer, action, 1);
	if (!p)
		return vram_http_error_out(ret, 500, NULL, "out of memory");
	snprintf(p->items[0].name, sizeof(p->items[0].name), "%.63s", name);
	int r = begin_action(wa, name, pid, action, on_action_done, &p->items[0], &p->items[0].waiter,
			     err, sizeof(err));
	if (r < 0) {
		pending_free(p);
		return vram_http_error_out(ret, vram_http_status_of_errno(r),
					   vram_http_code_of_errno(r), "%s",
					   *err ? err : strerror(-r));
	}
	changed(wa);
	pending_link(p);
	vram_http_watch_close(req, on_pending_close, p);
	return 0;
}

void vram_waitact_cancel(struct vram_waitact_req *h)
{
	struct pending *p = (struct pending *)h;
	if (!p)
		return;
	for (size_t i = 0; i < p->n_items; i++)
		if (p->items[i].waiter) {
			vram_manager_waiter_cancel(p->items[i].waiter);
			p->items[i].waiter = NULL;
		}
	pending_unlink(p);
	pending_free(p);
}

int vram_waitact_compat(struct vram_waitact *wa, struct evhttp_request *req,
			const struct vram_peer *peer, enum vram_action action, const char *only,
			vram_waitact_cb cb, void *cb_arg, struct vram_waitact_req **ret_handle,
			json_t **ret)
{
	char refusal[1024];
	struct vram_peer self;
	if (!peer) {
		vram_peer_self(&self);
		peer = &self;
	}
	if (!vram_peer_share_left(peer, wa->n_pending, wa->n_pending_tcp, VRAM_WAITACT_MAX,
				  VRAM_WAITACT_UNIX_RESERVED))
		return share_refused(ret, peer);
	if (only && !vram_waitact_may_act(wa, peer, only, vram_action_name(action), refusal,
					  sizeof(refusal)))
		return vram_http_error_out(ret, 403, "not_owner", "%s", refusal);

	/* Which workloads: the one named, or all that hold GPU memory (or any). */
	json_t *names = json_array();
	if (only) {
		json_t *w = vram_manager_workload_json(wa->m, only);
		if (!w) {
			json_decref(names);
			return vram_waitact_unknown(wa, ret, only);
		}
		json_decref(w);
		json_array_append_new(names, json_string(only));
	} else {
		json_t *status = vram_manager_status_json(wa->m);
		json_t *wls = json_object_get(status, "workloads");
		size_t i;
		json_t *w;
		json_array_foreach(wls, i, w) {
			const char *n = json_string_value(json_object_get(w, "name"));
			enum vram_wl_state state;
			if (!n || vram_manager_state(wa->m, n, &state) < 0)
				continue;
			bool applies = action == VRAM_ACTION_OFFLOAD
					       ? state == VRAM_WL_READY
					       : state == VRAM_WL_READY || state == VRAM_WL_OFFLOADED ||
							 state == VRAM_WL_PARKED;
			/* another user's command is theirs: "all" means all this client may touch */
			if (applies && json_is_true(json_object_get(w, "adhoc")))
				applies = vram_waitact_may_act(wa, peer, n, vram_action_name(action),
							       refusal, sizeof(refusal));
			if (applies)
				json_array_append_new(names, json_string(n));
		}
		json_decref(status);
	}
	size_t n = json_array_size(names);
	if (n == 0) {
		json_decref(names);
		*ret = json_pack("{s:b, s:s, s:[]}", "success", 1, "message",
				 action == VRAM_ACTION_OFFLOAD ? "no workload to offload"
							       : "no workload to release",
				 "results");
		return 200;
	}
	struct pending *p = pending_new(wa, req, peer, action, n);
	if (!p) {
		json_decref(names);
		return vram_http_error_out(ret, 500, NULL, "out of memory");
	}
	p->compat = true;
	p->cb = cb;
	p->cb_arg = cb_arg;
	size_t started = 0;
	char err[1024];
	for (size_t i = 0; i < n; i++) {
		struct pending_item *it = &p->items[i];
		snprintf(it->name, sizeof(it->name), "%s", json_string_value(json_array_get(names, i)));
		err[0] = '\0';
		int r = vram_manager_act(wa->m, it->name, action, on_action_done, it, &it->waiter, err,
					 sizeof(err));
		if (r < 0) {
			/* Recorded as a failed result; the others go on. */
			it->waiter = NULL;
			json_array_append_new(p->results,
					      json_pack("{s:s, s:s, s:b, s:s}", "workload", it->name,
							"action", vram_action_name(action), "ok", 0,
							"message", *err ? err : strerror(-r)));
			if (p->worst_status == 200) {
				p->worst_status = vram_http_status_of_errno(r);
				p->first_error = json_pack("{s:s, s:s}", "code", vram_http_code_of_errno(r),
							   "message", *err ? err : strerror(-r));
			}
			p->n_left--;
			continue;
		}
		started++;
	}
	json_decref(names);
	changed(wa);
	if (started == 0) {
		/* Nothing under way: answer now. */
		int st = 0;
		if (cb)
			*ret = pending_body(p, &st);
		else
			pending_reply(p);
		pending_free(p);
		if (cb && !*ret)
			return vram_http_error_out(ret, 500, NULL, "out of memory");
		return st;
	}
	pending_link(p);
	if (req)
		vram_http_watch_close(req, on_pending_close, p);
	else
		*ret_handle = (struct vram_waitact_req *)p;
	return 0;
}

/* ----------------------------------------------------------- idle timers */

int vram_waitact_compat_timeout(struct vram_waitact *wa, json_t *obj, json_t **ret)
{
	int st;
	char msg[512];
	uint64_t ms;
	/* timeout_seconds is what the TTS apps send to the MCP tool; timeout, to the route */
	json_t *ts = json_object_get(obj, "timeout_seconds");
	json_t *t = ts ? ts : json_object_get(obj, "timeout");
	const char *key = ts ? "timeout_seconds" : "timeout";
	json_t *wv = json_object_get(obj, "workload");
	const char *name = NULL;
	if (ts && json_object_get(obj, "timeout")) {
		st = 400;
		snprintf(msg, sizeof(msg), "timeout and timeout_seconds are the same setting: "
					   "expected one of them");
		goto out_bad;
	}
	if (!t) {
		st = 400;
		snprintf(msg, sizeof(msg), "timeout_seconds (or timeout): required (seconds of idle "
					   "time before release)");
		goto out_bad;
	}
	if (json_is_null(t)) {
		st = 400;
		snprintf(msg, sizeof(msg), "%s: expected a number of seconds or a duration string",
			 key);
		goto out_bad;
	}
	if ((st = vram_http_duration_field(t, key, &ms, msg, sizeof(msg))))
		goto out_bad;
	if (wv && !json_is_null(wv)) {
		if (!json_is_string(wv)) {
			st = 400;
			snprintf(msg, sizeof(msg), "workload: expected a workload name (string)");
			goto out_bad;
		}
		name = json_string_value(wv);
	}
	/* The TTS apps treat 0 as "never release". */
	if (ms == 0)
		ms = VRAM_DURATION_NEVER;
	char err[1024] = "";
	struct vram_idle_set set = {.offload_after_ms = VRAM_IDLE_KEEP, .release_after_ms = ms,
				    .park_after_ms = VRAM_IDLE_KEEP};
	int r = vram_manager_set_idle(wa->m, name, &set, err, sizeof(err));
	if (r < 0)
		return vram_http_error_out(ret, vram_http_status_of_errno(r),
					   vram_http_code_of_errno(r), "%s",
					   *err ? err : strerror(-r));
	changed(wa);
	json_t *tv = ms == VRAM_DURATION_NEVER ? json_integer(0) : json_real((double)ms / 1000.0);
	char fmt[32];
	snprintf(msg, sizeof(msg), "idle release timeout set to %s",
		 ms == VRAM_DURATION_NEVER ? "never"
					   : vram_units_format_duration_ms(ms, fmt, sizeof(fmt)));
	/* no "workload" for all of them: its type is string, never null (the MCP output schema) */
	*ret = json_pack("{s:b, s:s, s:o, s:s*}", "success", 1, "message", msg, "timeout", tv,
			 "workload", name);
	return 200;

out_bad:
	*ret = vram_http_error_json(st, NULL, msg);
	return st;
}

/* ------------------------------------------------------------ lifecycle */

int vram_waitact_new(struct vram_manager *m, vram_waitact_changed_cb changed_cb, void *arg,
		     struct vram_waitact **ret)
{
	struct vram_waitact *wa = calloc(1, sizeof(*wa));
	if (!wa)
		return -ENOMEM;
	wa->m = m;
	vram_list_init(&wa->pending);
	wa->changed = changed_cb;
	wa->changed_arg = arg;
	*ret = wa;
	return 0;
}

void vram_waitact_close(struct vram_waitact *wa)
{
	if (!wa)
		return;
	while (!vram_list_empty(&wa->pending)) {
		struct pending *p = vram_list_entry(vram_list_first(&wa->pending), struct pending, link);
		for (size_t i = 0; i < p->n_items; i++)
			if (p->items[i].waiter) {
				vram_manager_waiter_cancel(p->items[i].waiter);
				p->items[i].waiter = NULL;
			}
		pending_unlink(p);
		char msg[128];
		snprintf(msg, sizeof(msg), "vramd is shutting down; the %s goes on or stops with it",
			 vram_action_name(p->action));
		if (p->cb) {
			json_t *body = json_pack("{s:b, s:s, s:[]}", "success", 0, "message", msg,
						 "results");
			p->cb(503, body, p->cb_arg);
			json_decref(body);
		} else {
			vram_http_unwatch(p->req);
			vram_http_reply_error(p->req, 503, "shutting_down", "%s", msg);
		}
		pending_free(p);
	}
}

void vram_waitact_free(struct vram_waitact *wa)
{
	if (!wa)
		return;
	vram_waitact_close(wa);
	free(wa);
}
