/* SPDX-License-Identifier: MIT */
/*
 * The workloads the gateway serves and their requests (see gateway_int.h):
 * admission (sent at once, queued, or refused), the queue while the manager
 * starts or restores a workload, sending upstream under max_concurrency,
 * how every request ends (gw__finish), and the manager's events: state
 * changes drain or wake a queue, reloads add, change and remove workloads.
 */
#include "daemon/gateway_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "daemon/metrics.h"

/* ------------------------------------------------------------- lookup */

/* The index of name in gw->wls, or -1. A scan: it runs for every request. */
static ssize_t wl_index(const struct vram_gateway *gw, const char *name)
{
	for (size_t i = 0; i < gw->n_wls; i++)
		if (strcmp(gw->wls[i]->name, name) == 0)
			return (ssize_t)i;
	return -1;
}

/* Borrowed, valid until a reload removes it and its last request finishes. */
struct gw_wl *gw__wl_by_name(struct vram_gateway *gw, const char *name)
{
	ssize_t i = name ? wl_index(gw, name) : -1;
	return i < 0 ? NULL : gw->wls[i];
}

/* ------------------------------------------------------------ requests */

static void queue_unlink(struct gw_req *r)
{
	struct gw_wl *wl = r->wl;
	vram_list_remove(&r->link);
	wl->n_queued--;
	vram_metrics_gateway_queue(r->gw->mx, wl->name, wl->n_queued);
}

static void wl_release(struct gw_wl *wl);

/*
 * r's workload when there may be a queue to drain once r has finished: NULL
 * for the API and for a workload a reload removed (it has no queue, and
 * gw__finish may free it).
 */
struct gw_wl *gw__wl_to_drain(const struct gw_req *r)
{
	return r->wl && !r->wl->removed ? r->wl : NULL;
}

/*
 * Takes r out of its list, does the accounting for a request that ended with
 * status (0 = the client went away), breaks off its upstream connection if
 * it still has one, detaches it from its client and frees it. The last
 * request of a workload a reload removed frees that workload too.
 */
void gw__finish(struct gw_req *r, int status)
{
	struct vram_gateway *gw = r->gw;
	struct gw_wl *wl = r->wl;
	if (r->phase == GW_QUEUED) {
		queue_unlink(r);
	} else {
		vram_list_remove(&r->link);
		if (wl) {
			wl->in_flight--;
			vram_manager_request_end(gw->m, wl->name);
		}
	}
	if (r->up) {
		/* Closing it is how the upstream learns that nobody waits any more. */
		r->up->req = NULL;
		gw__up_close(r->up);
	}
	if (wl)
		vram_metrics_gateway_request(gw->mx, wl->name, status,
					     gw__seconds_since(&r->started));
	if (r->acc.pending) {
		if (r->phase == GW_QUEUED)
			r->acc.queue_s = gw__seconds_since(&r->started);
		if (wl)
			vram_metrics_gateway_timing(gw->mx, wl->name, r->bytes_out,
						    r->replying ? r->first_byte_s : -1, r->acc.queue_s);
		gw__access_end(gw, &r->acc, status, r->bytes_out, r->replying ? r->first_byte_s : -1);
	}
	if (r->timeout)
		event_free(r->timeout);
	if (r->c)
		r->c->req = NULL;
	gw->body_bytes -= r->held;
	vram_buf_done(&r->wire);
	free(r);
	if (wl && wl->removed && wl->in_flight == 0 && vram_list_empty(&wl->queue))
		wl_release(wl);
}

void gw__access_end(struct vram_gateway *gw, struct gw_access *a, int status, uint64_t bytes,
		    double first_byte_s)
{
	a->pending = false;
	if (!gw->alog)
		return;
	struct vram_accesslog_entry e = {
		.client = a->client, .method = a->method, .path = a->target, .model = a->model,
		.workload = a->workload, .status = status, .bytes = bytes,
		.total_s = gw__seconds_since(&a->started), .queue_s = a->queue_s,
	};
	e.first_byte_s = first_byte_s < 0 ? (status > 0 ? e.total_s : -1) : first_byte_s;
	vram_accesslog_write(gw->alog, &e);
}

/* Answers a request whose response has not started, and finishes it. */
void gw__fail_req(struct gw_req *r, int status, const char *code, int retry_after,
		  const char *fmt, ...)
{
	char message[1536];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	struct gw_client *c = r->c;
	bool close = !r->keep_alive;
	/* the access line waits for the error reply, to count its bytes */
	if (c && r->acc.pending) {
		c->acc = r->acc;
		if (r->phase == GW_QUEUED)
			c->acc.queue_s = gw__seconds_since(&r->started);
		r->acc.pending = false;
	}
	gw__finish(r, status);
	if (gw__client_error(c, status, code, retry_after, close, "%s", message) == 0 && !close)
		gw__client_next(c);
}

/* r leaves the queue (if it was there) and goes upstream to port. */
void gw__forward(struct gw_req *r, unsigned port)
{
	struct vram_gateway *gw = r->gw;
	struct gw_wl *wl = r->wl;
	if (r->timeout)
		event_del(r->timeout);
	if (r->phase == GW_QUEUED && wl) {
		queue_unlink(r);
		r->acc.queue_s = gw__seconds_since(&r->started);
	}
	r->phase = GW_PROXYING;
	vram_list_push_front(&gw->active, &r->link);
	if (wl) {
		wl->in_flight++;
		vram_manager_request_begin(gw->m, wl->name);
	}
	gw__send_upstream(r, port);
}

/* ---------------------------------------------- waking workloads, queues */

/* Answers every request in wl's queue 503 with code and message. */
static void fail_queue(struct gw_wl *wl, const char *code, const char *message)
{
	while (!vram_list_empty(&wl->queue))
		gw__fail_req(gw__req_of(wl->queue.next), 503, code, VRAM_GATEWAY_RETRY_AFTER_S,
			     "%s", message);
}

static void on_woken(const struct vram_action_result *res, void *arg)
{
	struct gw_wl *wl = arg;
	wl->waiter = NULL;
	if (res->error) {
		char msg[1200];
		snprintf(msg, sizeof(msg), "%s could not be started: %s", wl->name, res->message);
		fail_queue(wl, "unavailable", msg);
		return;
	}
	gw__drain(wl, true);
}

/* Asks the manager to make wl ready for the requests in its queue. */
static void wake(struct gw_wl *wl)
{
	struct vram_gateway *gw = wl->gw;
	if (wl->waiter || vram_list_empty(&wl->queue) || gw->closing)
		return;
	char err[1024];
	wl->retry_wake = false;
	int r = vram_manager_act(gw->m, wl->name, VRAM_ACTION_START, on_woken, wl, &wl->waiter,
				 err, sizeof(err));
	if (r == -EBUSY) {
		/* offloading, parking or stopping: ask again when that is over */
		wl->retry_wake = true;
		return;
	}
	if (r < 0) {
		wl->waiter = NULL;
		char msg[1200];
		snprintf(msg, sizeof(msg), "%s could not be started: %s", wl->name, err);
		fail_queue(wl, "unavailable", msg);
	}
}

/* Sends queued requests upstream while the workload is ready and under its limit. */
void gw__drain(struct gw_wl *wl, bool after_wake)
{
	struct vram_gateway *gw = wl->gw;
	while (!vram_list_empty(&wl->queue) && !gw->closing) {
		unsigned max = wl->max_concurrency;
		if (max && wl->in_flight >= max)
			return;
		unsigned port = 0;
		int r = vram_manager_endpoint(gw->m, wl->name, &port);
		if (r < 0) {
			if (after_wake) {
				char msg[512];
				snprintf(msg, sizeof(msg), "%s is ready but none of its instances "
					 "answers health checks", wl->name);
				fail_queue(wl, "unavailable", msg);
			} else {
				wake(wl);
			}
			return;
		}
		gw__forward(gw__req_of(wl->queue.next), port);
	}
}

static void on_queue_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct gw_req *r = arg;
	/* the time waited: a reload since it was queued may have changed queue_timeout */
	gw__fail_req(r, 503, "unavailable", VRAM_GATEWAY_RETRY_AFTER_S,
		     "%s did not become ready within %.1fs (queue_timeout)", r->wl->name,
		     gw__seconds_since(&r->started));
}

/* A new request of c (not linked anywhere yet); NULL with errno (see gw__build_request). */
struct gw_req *gw__req_new(struct gw_client *c, struct gw_wl *wl,
			   const struct vram_h1_head *h, const char *target,
			   const char *body, size_t blen, const struct timespec *started)
{
	struct gw_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->gw = c->gw;
	vram_list_init(&r->link); /* on no list until admitted or forwarded */
	r->wl = wl;
	r->c = c;
	r->started = *started;
	r->minor = h->minor;
	r->keep_alive = h->keep_alive;
	r->head_request = vram_h1_span_eq(h->method, "HEAD");
	/* the access record goes with the request from here on */
	r->acc = c->acc;
	c->acc.pending = false;
	if (wl)
		snprintf(r->acc.workload, sizeof(r->acc.workload), "%s", wl->name);
	int e = gw__build_request(r, h, target, body, blen);
	if (e < 0) {
		vram_buf_done(&r->wire);
		free(r);
		errno = -e;
		return NULL;
	}
	return r;
}

/*
 * Admits a request for wl: sends it now, queues it, or refuses it (429,
 * 503). target: the upstream request-target.
 */
void gw__admit(struct gw_client *c, struct gw_wl *wl, const struct vram_h1_head *h,
	       const char *target, const char *body, size_t blen,
	       const struct timespec *started)
{
	struct vram_gateway *gw = c->gw;
	unsigned port = 0;
	int ready = vram_manager_endpoint(gw->m, wl->name, &port);
	unsigned max = wl->max_concurrency;
	snprintf(c->acc.workload, sizeof(c->acc.workload), "%s", wl->name);
	if (ready == 0 && vram_list_empty(&wl->queue) && max && wl->in_flight >= max) {
		vram_metrics_gateway_request(gw->mx, wl->name, 429, gw__seconds_since(started));
		gw__client_error(c, 429, "too_many_requests", VRAM_GATEWAY_RETRY_AFTER_S,
				 !h->keep_alive, "%s has %u requests in flight, its "
				 "max_concurrency", wl->name, max);
		return;
	}
	if (ready < 0 && wl->n_queued >= wl->queue_max) {
		vram_metrics_gateway_request(gw->mx, wl->name, 503, gw__seconds_since(started));
		gw__client_error(c, 503, "unavailable", VRAM_GATEWAY_RETRY_AFTER_S, !h->keep_alive,
				 "%s is not ready and its queue is full (queue_max %u)", wl->name,
				 wl->queue_max);
		return;
	}
	struct gw_req *r = gw__req_new(c, wl, h, target, body, blen, started);
	if (!r) {
		gw__client_error(c, 500, NULL, 0, true, "out of memory");
		return;
	}
	c->req = r;
	/* Linked as queued first, so that every path out goes through gw__finish(). */
	r->phase = GW_QUEUED;
	vram_list_push_back(&wl->queue, &r->link);
	wl->n_queued++;
	if (ready == 0 && vram_list_first(&wl->queue) == &r->link) {
		gw__forward(r, port);
		return;
	}
	vram_metrics_gateway_queue(gw->mx, wl->name, wl->n_queued);
	r->timeout = evtimer_new(gw->base, on_queue_timeout, r);
	if (!r->timeout) {
		gw__fail_req(r, 500, NULL, 0, "out of memory");
		return;
	}
	struct timeval tv = { (time_t)(wl->queue_timeout_ms / 1000),
			      (suseconds_t)(wl->queue_timeout_ms % 1000) * 1000 };
	evtimer_add(r->timeout, &tv);
	if (ready == 0)
		gw__drain(wl, false);
	else
		wake(wl);
}

/* A workload changed state. */
static void on_state(struct vram_gateway *gw, const struct vram_event *ev)
{
	struct gw_wl *wl = gw__wl_by_name(gw, ev->workload);
	if (!wl)
		return;
	if (ev->to != VRAM_WL_READY) {
		/*
		 * An offload, a park and a restore keep the process and its
		 * port: its idle connections stay, without an age limit, so
		 * that the first request after a restore goes to a connection
		 * the server has served before. Servers that give each
		 * connection a thread (Python's ThreadingHTTPServer, many
		 * model servers) pay a new thread's first request: 0.6 s more
		 * for a 16-token greedy request of an 8B model in transformers,
		 * with or without the hook (docs/benchmarks.md). A server that
		 * closes them meanwhile is seen by their read event. Otherwise
		 * its processes may change: connections to old ports are
		 * useless.
		 */
		wl->asleep = ev->to == VRAM_WL_OFFLOADING || ev->to == VRAM_WL_OFFLOADED ||
			     ev->to == VRAM_WL_PARKING || ev->to == VRAM_WL_PARKED ||
			     ev->to == VRAM_WL_RESTORING;
		if (!wl->asleep && wl->in_flight == 0)
			gw__pool_trim(&wl->pool, 0, 0);
		if (wl->retry_wake && (ev->to == VRAM_WL_OFFLOADED || ev->to == VRAM_WL_PARKED ||
				       ev->to == VRAM_WL_STOPPED || ev->to == VRAM_WL_FAILED))
			wake(wl);
		return;
	}
	if (wl->asleep)
		gw__pool_touch(&wl->pool);
	wl->asleep = false;
	if (!wl->waiter)
		gw__drain(wl, false);
}

/* ------------------------------------------- the workloads, and reloads */

static void wl_set_limits(struct gw_wl *wl, const struct vram_workload_config *c)
{
	wl->max_concurrency = c->max_concurrency;
	wl->queue_max = c->queue_max;
	wl->queue_timeout_ms = c->queue_timeout_ms;
	wl->first_byte_timeout_ms = c->first_byte_timeout_ms;
	wl->stream_timeout_ms = c->stream_timeout_ms;
}

/* Serves workload c (copied) from now on. Returns 0 or -ENOMEM. */
int gw__wl_add(struct vram_gateway *gw, const struct vram_workload_config *c)
{
	if (gw->n_wls == gw->cap_wls) {
		size_t cap = gw->cap_wls ? 2 * gw->cap_wls : 8;
		struct gw_wl **wls = realloc(gw->wls, cap * sizeof(*wls));
		if (!wls)
			return -ENOMEM;
		gw->wls = wls;
		gw->cap_wls = cap;
	}
	struct gw_wl *wl = calloc(1, sizeof(*wl));
	if (!wl)
		return -ENOMEM;
	wl->gw = gw;
	vram_list_init(&wl->queue);
	vram_list_init(&wl->removed_link);
	vram_list_init(&wl->pool.idle);
	snprintf(wl->name, sizeof(wl->name), "%s", c->name); /* the config checked its length */
	wl_set_limits(wl, c);
	gw->wls[gw->n_wls++] = wl;
	return 0;
}

/* Frees wl and its idle connections; no request may refer to it. */
static void wl_free(struct gw_wl *wl)
{
	if (wl->waiter)
		vram_manager_waiter_cancel(wl->waiter);
	gw__pool_trim(&wl->pool, 0, 0);
	free(wl);
}

/* Frees wl, removed by a reload, once its last request has finished. */
static void wl_release(struct gw_wl *wl)
{
	vram_list_remove(&wl->removed_link);
	wl_free(wl);
}

/*
 * A reload removed gw->wls[i]: its queue is answered 503, its start is no
 * longer waited for, and it leaves the lookup, so that a new request for it
 * gets the answer of any unknown workload. Requests in flight go on; the
 * last of them to finish frees it (gw__finish).
 */
static void wl_remove(struct vram_gateway *gw, size_t i)
{
	struct gw_wl *wl = gw->wls[i];
	memmove(&gw->wls[i], &gw->wls[i + 1], (gw->n_wls - i - 1) * sizeof(*gw->wls));
	gw->n_wls--;
	if (wl->waiter) {
		vram_manager_waiter_cancel(wl->waiter);
		wl->waiter = NULL;
	}
	wl->retry_wake = false;
	char msg[128];
	snprintf(msg, sizeof(msg), "%s was removed from the config by a reload", wl->name);
	fail_queue(wl, "removed", msg);
	if (wl->in_flight == 0) {
		wl_free(wl);
		return;
	}
	wl->removed = true;
	gw__pool_trim(&wl->pool, 0, 0);
	vram_list_push_front(&gw->removed, &wl->removed_link);
}

/* Frees every workload entry, removed ones too: no request may be left. */
void gw__wls_free(struct vram_gateway *gw)
{
	for (size_t i = 0; i < gw->n_wls; i++)
		wl_free(gw->wls[i]);
	free(gw->wls);
	gw->wls = NULL;
	gw->n_wls = gw->cap_wls = 0;
	while (!vram_list_empty(&gw->removed)) {
		struct gw_wl *wl = vram_list_entry(gw->removed.next, struct gw_wl, removed_link);
		vram_list_remove(&wl->removed_link);
		wl_free(wl);
	}
}

/*
 * The manager's config was replaced (sum: the names added, removed and
 * changed; vram_manager_config is already the new one). Added workloads are
 * served from now on; changed ones take their new limits in place, and
 * requests already queued keep waiting (under the queue_timeout they were
 * queued with); removed ones go (wl_remove). A name added that is already
 * served, or changed that is not, is taken for what the config now says.
 */
static void on_reload(struct vram_gateway *gw, const struct vram_reload_summary *sum)
{
	const struct vram_config *cfg = vram_manager_config(gw->m);
	for (size_t k = 0; k < sum->n_removed; k++) {
		ssize_t i = wl_index(gw, sum->removed[k]);
		if (i >= 0)
			wl_remove(gw, (size_t)i);
	}
	const struct {
		const char *const *names;
		size_t n;
	} lists[] = { { sum->added, sum->n_added }, { sum->changed, sum->n_changed } };
	for (size_t n = 0; n < sizeof(lists) / sizeof(lists[0]); n++) {
		for (size_t k = 0; k < lists[n].n; k++) {
			const char *name = lists[n].names[k];
			const struct vram_workload_config *c = vram_config_find(cfg, name);
			if (!c)
				continue;
			struct gw_wl *wl = gw__wl_by_name(gw, name);
			if (!wl) {
				if (gw__wl_add(gw, c) < 0)
					vram_warn("Failed to route requests to workload %s: out of memory",
						  name);
				continue;
			}
			wl_set_limits(wl, c);
			/* a higher max_concurrency may let queued requests go now */
			if (!vram_list_empty(&wl->queue) && !wl->waiter)
				gw__drain(wl, false);
		}
	}
}

void gw__on_event(const struct vram_event *ev, void *arg)
{
	switch (ev->kind) {
	case VRAM_EVENT_STATE:
		on_state(arg, ev);
		break;
	case VRAM_EVENT_RELOAD:
		on_reload(arg, ev->reload);
		if (gw__set_token(arg, vram_manager_config(((struct vram_gateway *)arg)->m)
					       ->daemon.token) < 0)
			vram_warn("Failed to apply the reloaded tokens: out of memory; the old "
				  "ones stay");
		break;
	}
}
