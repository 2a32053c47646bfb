/* SPDX-License-Identifier: MIT */
/*
 * The manager's ground floor, the registry: the workload slots and the live
 * list, lookup by name, set_state, the waiters of actions, the kick event
 * and the event subscribers. Every state change goes through
 * mgr_set_state(), which applies the lifecycle table (core/workload.c),
 * tells subscribers, resolves the waiters of actions and pokes the kick
 * event, so that work waiting for a change (a start waiting for evicted
 * memory, shutdown waiting for the last child) is reconsidered on the next
 * loop turn rather than re-entrantly. Callbacks to callers (action results)
 * are always delivered from the loop.
 *
 * Calls nothing of the manager above it: the kick's handler is handed in.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/units.h"
#include "config/config.h"
#include "daemon/liveness.h"
#include "daemon/supervise.h"

/* A subscriber to the events (vram_manager_subscribe). */
struct vram_manager_sub {
	struct vram_list link; /* on m->subs */
	vram_event_cb cb;
	void *arg;
};

static void on_waiter(evutil_socket_t fd, short what, void *arg);

/* ---- slots and lookup ---- */

int mgr_registry_init(struct vram_manager *m,
		      void (*on_kick)(evutil_socket_t fd, short what, void *arg))
{
	vram_list_init(&m->waiters);
	vram_list_init(&m->subs);
	m->kick = event_new(m->base, -1, 0, on_kick, m);
	/* room for every workload a reload may bring: untouched slots cost address space only */
	m->n_cfg = VRAM_CONFIG_MAX_WORKLOADS;
	m->n_ws = m->n_cfg + VRAM_MANAGER_ADHOC_MAX;
	m->ws = calloc(m->n_ws, sizeof(*m->ws));
	m->wptrs = calloc(m->n_ws, sizeof(*m->wptrs));
	m->slots = calloc(m->n_ws, sizeof(*m->slots));
	if (!m->kick || !m->ws || !m->wptrs || !m->slots)
		return -ENOMEM;
	return 0;
}

void mgr_registry_done(struct vram_manager *m)
{
	struct vram_list *pos, *tmp;
	vram_list_for_each_safe(pos, tmp, &m->waiters)
		mgr_waiter_free(vram_list_entry(pos, struct vram_manager_waiter, link));
	vram_list_for_each_safe(pos, tmp, &m->subs) {
		vram_list_remove(pos);
		free(vram_list_entry(pos, struct vram_manager_sub, link));
	}
	free(m->ws);
	free(m->wptrs);
	free(m->slots);
	if (m->kick)
		event_free(m->kick);
}

static int by_index(const void *a, const void *b)
{
	size_t x = (*(struct vram_workload *const *)a)->index;
	size_t y = (*(struct vram_workload *const *)b)->index;
	return x < y ? -1 : x > y;
}

void mgr_rebuild_live(struct vram_manager *m)
{
	m->n_live = 0;
	for (size_t k = 0; k < m->n_cfg; k++)
		if (mgr_live(&m->ws[k]) && !m->slots[k].removing)
			m->wptrs[m->n_live++] = &m->ws[k];
	qsort(m->wptrs, m->n_live, sizeof(*m->wptrs), by_index);
	for (size_t k = 0; k < m->n_cfg; k++)
		if (mgr_live(&m->ws[k]) && m->slots[k].removing)
			m->wptrs[m->n_live++] = &m->ws[k];
	for (size_t k = m->n_cfg; k < m->n_ws; k++)
		if (mgr_live(&m->ws[k]))
			m->wptrs[m->n_live++] = &m->ws[k];
}

struct vram_workload *mgr_find(struct vram_manager *m, const char *name)
{
	for (size_t i = 0; name && i < m->n_live; i++) {
		if (strcmp(m->wptrs[i]->cfg->name, name) == 0)
			return m->wptrs[i];
	}
	return NULL;
}

bool mgr_any_process(const struct vram_workload *w)
{
	for (size_t i = 0; i < w->n_instances; i++) {
		if (w->instances[i].child)
			return true;
	}
	return false;
}

int vram_manager_state(struct vram_manager *m, const char *name, enum vram_wl_state *ret_state)
{
	struct vram_workload *w = mgr_find(m, name);
	if (!w)
		return -ENOENT;
	*ret_state = w->state;
	return 0;
}

const char *vram_manager_log_path(struct vram_manager *m, const char *name)
{
	struct vram_workload *w = mgr_find(m, name);
	return w ? w->log_path : NULL;
}

const struct vram_config *vram_manager_config(const struct vram_manager *m)
{
	return m->cfg;
}

void mgr_fmt_error(struct vram_workload *w, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->last_error, sizeof(w->last_error), fmt, ap);
	va_end(ap);
	w->last_errno = err;
}

/* ---- events ---- */

static double wall_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Newest first; a subscriber may unsubscribe itself from its callback. */
void mgr_emit(struct vram_manager *m, const struct vram_event *ev)
{
	struct vram_list *pos, *tmp;
	vram_list_for_each_safe(pos, tmp, &m->subs) {
		struct vram_manager_sub *s = vram_list_entry(pos, struct vram_manager_sub, link);
		s->cb(ev, s->arg);
	}
}

/* The state event of w's change from `from` at now_ms (monotonic). */
static void emit_state(struct vram_manager *m, struct vram_workload *w, enum vram_wl_state from,
		       enum vram_event_reason reason, const char *text, uint64_t now_ms)
{
	mgr_decision_state(m, w, from, reason, text);
	if (vram_list_empty(&m->subs))
		return;
	struct vram_event ev = {
		.kind = VRAM_EVENT_STATE,
		.workload = w->cfg->name,
		.from = from,
		.to = w->state,
		.reason = reason,
		.text = text ? text : "",
		.mono_ms = now_ms,
		.wall_s = wall_now(),
	};
	mgr_emit(m, &ev);
}

int vram_manager_subscribe(struct vram_manager *m, vram_event_cb cb, void *arg,
			   struct vram_manager_sub **ret_sub)
{
	struct vram_manager_sub *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cb = cb;
	s->arg = arg;
	vram_list_push_front(&m->subs, &s->link);
	if (ret_sub)
		*ret_sub = s;
	return 0;
}

void vram_manager_unsubscribe(struct vram_manager_sub *sub)
{
	if (!sub)
		return;
	vram_list_remove(&sub->link);
	free(sub);
}

/* ---- state changes ---- */

int mgr_set_state(struct vram_manager *m, struct vram_workload *w, enum vram_wl_event ev,
		  enum vram_event_reason reason, const char *text)
{
	int to = vram_wl_transition(w->state, ev);
	if (to < 0) {
		vram_debug("%s: event %s not allowed in state %s", w->cfg->name,
			   vram_wl_event_name(ev), vram_wl_state_name(w->state));
		return to;
	}
	enum vram_wl_state from = w->state;
	uint64_t now = vram_now_ms();
	w->state = (enum vram_wl_state)to;
	w->state_since_ms = now;
	if (w->state == VRAM_WL_READY) {
		w->last_used_ms = now;
		w->ready_since_ms = now;
		if (from != VRAM_WL_READY)
			mgr_liveness_arm(m, w); /* the checks of a ready workload begin */
	}
	if (vram_wl_state_settled(w->state))
		w->evicting = false;
	if (from != w->state) {
		vram_info("%s: %s -> %s%s%s", w->cfg->name, vram_wl_state_name(from),
			  vram_wl_state_name(w->state), text && text[0] ? ": " : "",
			  text ? text : "");
		if (w->log)
			vram_logfile_note(w->log, "%s -> %s%s%s", vram_wl_state_name(from),
					  vram_wl_state_name(w->state), text && text[0] ? ": " : "",
					  text ? text : "");
		emit_state(m, w, from, reason, text, now);
	}
	mgr_resolve_waiters(m, w);
	mgr_kick(m);
	return 0;
}

void mgr_liveness_arm(struct vram_manager *m, struct vram_workload *w)
{
	vram_liveness_reset(w);
	struct event *t = mgr_slot(m, w)->probe_timer;
	if (!t)
		return;
	evtimer_del(t);
	const struct vram_health *h = &w->cfg->health;
	if (!vram_liveness_enabled(h))
		return;
	struct timeval tv = mgr_tv(h->interval_ms);
	evtimer_add(t, &tv);
}

/* ---- waiters ---- */

const char *vram_action_name(enum vram_action action)
{
	static const char *const names[] = {
		[VRAM_ACTION_START] = "start",
		[VRAM_ACTION_STOP] = "stop",
		[VRAM_ACTION_OFFLOAD] = "offload",
		[VRAM_ACTION_RESTORE] = "restore",
		[VRAM_ACTION_RELEASE] = "release",
		[VRAM_ACTION_PARK] = "park",
	};
	return (unsigned)action < sizeof(names) / sizeof(names[0]) ? names[action] : "?";
}

struct vram_manager_waiter *mgr_waiter_new(struct vram_manager *m, struct vram_workload *w,
					   enum vram_action action, vram_action_cb cb, void *arg)
{
	struct vram_manager_waiter *wt = calloc(1, sizeof(*wt));
	if (!wt)
		return NULL;
	wt->m = m;
	vram_list_init(&wt->link);
	wt->w = w;
	wt->action = action;
	wt->cb = cb;
	wt->arg = arg;
	wt->started_ms = vram_now_ms();
	wt->ev = event_new(m->base, -1, 0, on_waiter, wt);
	if (!wt->ev) {
		free(wt);
		return NULL;
	}
	return wt;
}

static void on_waiter(evutil_socket_t fd, short what, void *arg)
{
	struct vram_manager_waiter *wt = arg;
	struct vram_manager *m = wt->m;
	vram_list_remove(&wt->link); /* the callback may free what it refers to */
	wt->cb(&wt->res, wt->arg);
	mgr_waiter_free(wt);
	mgr_kick(m); /* an ad-hoc workload this waiter held may be freed now */
}

void mgr_waiter_link(struct vram_manager *m, struct vram_manager_waiter *wt)
{
	vram_list_push_front(&m->waiters, &wt->link);
}

void mgr_waiter_free(struct vram_manager_waiter *wt)
{
	vram_list_remove(&wt->link);
	vram_hookchan_cancel(wt->hook_req);
	if (wt->ev)
		event_free(wt->ev);
	free(wt);
}

void vram_manager_waiter_cancel(struct vram_manager_waiter *wt)
{
	if (!wt)
		return;
	mgr_waiter_free(wt);
}

void mgr_waiter_resolve(struct vram_manager_waiter *wt, bool ok)
{
	struct vram_workload *w = wt->w;
	struct vram_action_result *res = &wt->res;
	wt->resolved = true;
	res->workload = w->cfg->name;
	res->state = vram_wl_state_name(w->state);
	res->seconds = (double)(vram_now_ms() - wt->started_ms) / 1000.0;
	res->engine = w->engine ? w->engine->name : NULL;
	if (ok) {
		res->error = 0;
		res->outcome = VRAM_OUTCOME_DONE;
		if (wt->action == VRAM_ACTION_OFFLOAD || wt->action == VRAM_ACTION_RESTORE ||
		    wt->action == VRAM_ACTION_PARK)
			res->bytes = w->last_bytes;
		char size[32];
		if (res->bytes)
			snprintf(res->message, sizeof(res->message), "%s is %s (%s %s in %.2fs with %s)",
				 w->cfg->name, res->state,
				 wt->action == VRAM_ACTION_OFFLOAD ? "offloaded"
				 : wt->action == VRAM_ACTION_PARK  ? "parked"
								   : "restored",
				 vram_units_format_bytes(res->bytes, size, sizeof(size)), res->seconds,
				 res->engine ? res->engine : "?");
		else
			snprintf(res->message, sizeof(res->message), "%s is %s", w->cfg->name,
				 res->state);
	} else if (w->last_errno == -ENOSPC) {
		res->error = -ENOSPC;
		res->outcome = VRAM_OUTCOME_NO_ROOM;
		snprintf(res->message, sizeof(res->message), "%s", w->last_error);
	} else if (w->state == VRAM_WL_FAILED || (w->state == wt->target && w->last_error[0]) ||
		   w->last_errno) {
		res->error = w->last_errno ? w->last_errno : -EIO;
		res->outcome = VRAM_OUTCOME_FAILED;
		snprintf(res->message, sizeof(res->message), "%s failed to %s: %s", w->cfg->name,
			 vram_action_name(wt->action), w->last_error[0] ? w->last_error : "unknown error");
	} else {
		res->error = -ECANCELED;
		res->outcome = VRAM_OUTCOME_PREEMPTED;
		snprintf(res->message, sizeof(res->message),
			 "%s is %s: another action changed it before it could %s", w->cfg->name,
			 res->state, vram_action_name(wt->action));
	}
	event_active(wt->ev, 0, 0);
}

void mgr_resolve_waiters(struct vram_manager *m, struct vram_workload *w)
{
	struct vram_list *pos;
	vram_list_for_each(pos, &m->waiters) {
		struct vram_manager_waiter *wt = vram_list_entry(pos, struct vram_manager_waiter, link);
		if (wt->w != w || wt->resolved || wt->through_restart)
			continue;
		/* a park of a ready workload passes through offloaded on its way */
		bool on_its_way = (wt->target == VRAM_WL_PARKED && w->park_queued) ||
				  mgr_slot(m, w)->host_wait; /* its offload waits for host memory */
		if (w->state == wt->target)
			mgr_waiter_resolve(wt, true);
		else if (vram_wl_state_settled(w->state) && !on_its_way)
			mgr_waiter_resolve(wt, false);
	}
}

bool mgr_waiter_holds(struct vram_manager *m, const struct vram_workload *w)
{
	struct vram_list *pos;
	vram_list_for_each(pos, &m->waiters) {
		if (vram_list_entry(pos, struct vram_manager_waiter, link)->w == w)
			return true;
	}
	return false;
}

void mgr_release_held_waiters(struct vram_manager *m, struct vram_workload *w)
{
	struct vram_list *pos;
	vram_list_for_each(pos, &m->waiters) {
		struct vram_manager_waiter *wt = vram_list_entry(pos, struct vram_manager_waiter, link);
		if (wt->w == w)
			wt->through_restart = false;
	}
}

/* ---- the kick ---- */

void mgr_kick(struct vram_manager *m)
{
	event_active(m->kick, 0, 0);
}
