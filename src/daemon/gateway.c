/* SPDX-License-Identifier: MIT */
/*
 * The gateway's front end and reverse proxy; see gateway.h, and
 * gateway_int.h for how its files divide the work. This one holds what
 * ties them together: creating and freeing the gateway, the sweep that
 * checks every timeout once a second, and the evhttp server's callback.
 */
#include "daemon/gateway_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/random.h>

#include <event2/http.h>
#include <event2/listener.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/units.h"
#include "daemon/api.h"
#include "daemon/http.h"
#include "daemon/metrics.h"

#define GW_SWEEP_S 1            /* s between timeout sweeps */
#define GW_LINGER_S 2           /* s a closing client may keep sending before it is cut */

/* ------------------------------------------------------------- sweep */

/*
 * Once a second: clients idle or slow to send a request past the idle
 * timeout, clients that stopped reading a response, lingering closes, and
 * upstreams of workloads past their first_byte_timeout (no response yet) or
 * stream_timeout (silent in the middle of one). (Relayed API requests have
 * no upstream timeout: an event stream may be quiet for long.)
 */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct vram_gateway *gw = arg;
	time_t now = gw__now_s();
	struct vram_list *pos, *tmp;
	vram_list_for_each_safe(pos, tmp, &gw->clients) {
		struct gw_client *c = vram_list_entry(pos, struct gw_client, link);
		bool drop = false;
		if (c->lingering) {
			drop = now - c->stamp > GW_LINGER_S;
		} else if (gw__client_pending(c) > 0) {
			drop = now - c->out_stamp > VRAM_GATEWAY_CLIENT_STALL_S;
		} else if (!c->req && now - c->stamp > VRAM_HTTP_IDLE_TIMEOUT_S) {
			if (c->in.len && !c->closing)
				gw__client_error(c, 408, NULL, 0, true,
						 "the request did not arrive within %ds",
						 VRAM_HTTP_IDLE_TIMEOUT_S);
			else
				drop = true;
		}
		if (drop) {
			/*
			 * Dropping a client with a request in flight drains its workload's
			 * queue, which may end other clients, the next one included:
			 * start over (only clients past their time are dropped, so the
			 * walk ends).
			 */
			gw__client_drop(c);
			tmp = gw->clients.next;
		}
	}
	vram_list_for_each_safe(pos, tmp, &gw->active) {
		struct gw_req *r = gw__req_of(pos);
		struct gw_up *up = r->up;
		if (!r->wl || !up || up->paused)
			continue;
		/* Until its first byte the upstream is thinking (prefill); after it, streaming. */
		bool first = !up->got_bytes;
		uint64_t limit_ms = first ? r->wl->first_byte_timeout_ms : r->wl->stream_timeout_ms;
		time_t since = first ? r->sent_stamp : up->stamp;
		if (limit_ms == VRAM_DURATION_NEVER || (uint64_t)(now - since) * 1000 <= limit_ms)
			continue;
		char why[128];
		if (first)
			snprintf(why, sizeof(why), "sent no response within %.1fs of the request "
				 "(first_byte_timeout)", (double)limit_ms / 1000.0);
		else
			snprintf(why, sizeof(why), "sent nothing for %.1fs in the middle of its "
				 "response (stream_timeout)", (double)limit_ms / 1000.0);
		gw__up_break(up, 504, "timeout", why);
		tmp = gw->active.next; /* the list may have changed: start over */
	}
	for (size_t i = 0; i < gw->n_wls; i++)
		gw__pool_trim(&gw->wls[i]->pool, VRAM_GATEWAY_IDLE_CONNS_MAX,
			      gw->wls[i]->asleep ? 0 : VRAM_GATEWAY_UPSTREAM_IDLE_S);
	gw__pool_trim(&gw->api_pool, VRAM_GATEWAY_IDLE_CONNS_MAX, VRAM_GATEWAY_UPSTREAM_IDLE_S);
}

/* ----------------------------------------- the evhttp side (relayed) */

void vram_gateway_handle(struct evhttp_request *req, bool trusted, void *arg)
{
	struct vram_gateway *gw = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	if (path && strcmp(path, "/metrics") == 0 && gw->mx) {
		vram_metrics_handle(gw->mx, req);
		return;
	}
	vram_api_handle(req, trusted, gw->api);
}

/*
 * Replaces the tokens a client must show (one a line, config.h; NULL or ""
 * = none): at start, and on each reload, so that a changed daemon.token_file
 * applies without a restart. Out of memory, the old tokens stay.
 */
int gw__set_token(struct vram_gateway *gw, const char *token)
{
	char *copy = NULL;
	if (token && *token && !(copy = strdup(token)))
		return -ENOMEM;
	if (gw->token) {
		explicit_bzero(gw->token, strlen(gw->token));
		free(gw->token);
	}
	gw->token = copy;
	return 0;
}

/* ---------------------------------------------------------- lifecycle */

int vram_gateway_new(struct event_base *base, struct vram_manager *m, struct vram_api *api,
		     struct vram_metrics *mx, const char *token, const char *api_socket,
		     struct vram_gateway **ret)
{
	struct vram_gateway *gw = calloc(1, sizeof(*gw));
	if (!gw)
		return -ENOMEM;
	const struct vram_config *cfg = vram_manager_config(m);
	gw->base = base;
	gw->m = m;
	gw->api = api;
	gw->mx = mx;
	vram_list_init(&gw->active);
	vram_list_init(&gw->clients);
	vram_list_init(&gw->removed);
	vram_list_init(&gw->api_pool.idle);
	vram_buf_init(&gw->head, VRAM_GATEWAY_UP_HEADERS_MAX + 4096);
	vram_buf_init(&gw->dechunked, GW_READ_MAX + VRAM_GATEWAY_UP_HEADERS_MAX);
	int token_r = gw__set_token(gw, token);
	gw->api_socket = strdup(api_socket);
	gw->addrs = calloc(GW_ADDR_SLOTS, sizeof(*gw->addrs));
	if (getrandom(&gw->addr_seed, sizeof(gw->addr_seed), GRND_NONBLOCK) < 0)
		gw->addr_seed = (uint32_t)time(NULL); /* a weaker seed is still a seed */
	gw->body_budget = VRAM_GATEWAY_BODY_BUDGET;
	const char *budget = getenv("VRAMD_BODY_BUDGET");
	uint64_t bytes;
	if (budget && *budget) {
		if (vram_units_parse_bytes(budget, &bytes) == 0 && bytes > 0)
			gw->body_budget = bytes;
		else
			vram_warn("Ignoring VRAMD_BODY_BUDGET=\"%.64s\": expected a size like 64MiB; "
				  "the request body budget stays %llu bytes", budget,
				  (unsigned long long)gw->body_budget);
	}
	gw->sweep = event_new(base, -1, EV_PERSIST, on_sweep, gw);
	struct timeval tv = { GW_SWEEP_S, 0 };
	if (!gw->api_socket || token_r < 0 || !gw->addrs || !gw->sweep ||
	    event_add(gw->sweep, &tv) < 0)
		goto out_free;
	for (size_t i = 0; i < cfg->n_workloads; i++)
		if (gw__wl_add(gw, &cfg->workloads[i]) < 0)
			goto out_free;
	if (vram_manager_subscribe(m, gw__on_event, gw, &gw->sub) < 0)
		goto out_free;
	*ret = gw;
	return 0;

out_free:
	if (gw->sweep)
		event_free(gw->sweep);
	gw__wls_free(gw);
	free(gw->addrs);
	free(gw->token);
	free(gw->api_socket);
	free(gw);
	return -ENOMEM;
}

/* Every listener stops accepting; the sockets stay open (connections wait in the backlog). */
static void listeners_pause(struct vram_gateway *gw)
{
	for (size_t i = 0; i < gw->n_listeners; i++) {
		/* first: a pause in progress would end by enabling the listener */
		vram_accept_guard_free(gw->listeners[i].guard);
		gw->listeners[i].guard = NULL;
		evconnlistener_disable(gw->listeners[i].l);
	}
}

/*
 * Ends every request: those waiting for their workload and those in flight
 * without a response get status 503 with code and message (retry_after > 0
 * adds Retry-After) and their connection closes; a response under way is
 * cut off where it is.
 */
/* Whether r relays a chunked API response, passed on chunked, now between two chunks. */
static bool api_stream_between_chunks(const struct gw_req *r)
{
	return !r->wl && r->up && r->up->head_done && r->up->body == VRAM_H1_BODY_CHUNKED &&
	       !r->dechunk && vram_h1_chunked_between(&r->up->ck);
}

static void end_requests(struct vram_gateway *gw, const char *code, int retry_after,
			 const char *message)
{
	for (size_t i = 0; i < gw->n_wls; i++) {
		struct gw_wl *wl = gw->wls[i];
		if (wl->waiter) {
			vram_manager_waiter_cancel(wl->waiter);
			wl->waiter = NULL;
		}
		while (!vram_list_empty(&wl->queue)) {
			struct gw_req *r = gw__req_of(wl->queue.next);
			r->keep_alive = false;
			gw__fail_req(r, 503, code, retry_after, "%s", message);
		}
	}
	while (!vram_list_empty(&gw->active)) {
		struct gw_req *r = gw__req_of(gw->active.next);
		struct gw_client *c = r->c;
		if (r->replying && api_stream_between_chunks(r)) {
			/*
			 * A stream of the API (the event stream, a followed log) between two
			 * chunks: its last chunk tells the client it ended, rather than a
			 * cut it would take for a failure.
			 */
			static const char last[] = "0\r\n\r\n";
			struct iovec iov = { (void *)last, sizeof(last) - 1 };
			int status = r->status;
			if (gw__client_sendv(c, &iov, 1) < 0)
				continue; /* c and r are gone */
			gw__finish(r, status);
			gw__client_close_soon(c);
		} else if (r->replying) {
			gw__finish(r, 503);
			gw__client_close_soon(c);
		} else {
			r->keep_alive = false;
			gw__fail_req(r, 503, code, retry_after, "%s", message);
		}
	}
}

void vram_gateway_close_clients(struct vram_gateway *gw)
{
	if (!gw)
		return;
	gw->closing = true;
	listeners_pause(gw);
	end_requests(gw, "shutting_down", 0, "vramd is shutting down");
}

/* ------------------------------------------------ restart in place */

/* Calls fn on every request waiting for its workload or in flight. */
static void for_each_request(struct vram_gateway *gw, void (*fn)(struct gw_req *r))
{
	struct vram_list *pos;
	for (size_t i = 0; i < gw->n_wls; i++)
		vram_list_for_each(pos, &gw->wls[i]->queue)
			fn(gw__req_of(pos));
	vram_list_for_each(pos, &gw->active)
		fn(gw__req_of(pos));
}

/* A response not begun yet says "Connection: close", and its connection ends after it. */
static void req_last_on_connection(struct gw_req *r)
{
	if (!r->replying)
		r->keep_alive = false;
}

void vram_gateway_drain_begin(struct vram_gateway *gw)
{
	gw->draining = true;
	listeners_pause(gw);
	/*
	 * A response whose head is out already said keep-alive: its connection
	 * goes back to idle when it ends, and the next request on it is
	 * answered with "Connection: close" (or, if none comes, it is closed
	 * as idle by vram_gateway_drain_left).
	 */
	for_each_request(gw, req_last_on_connection);
}

size_t vram_gateway_drain_left(struct vram_gateway *gw, uint64_t idle_grace_ms)
{
	uint64_t now = vram_now_ms();
	size_t left = 0;
	struct vram_list *pos, *tmp;
	vram_list_for_each_safe(pos, tmp, &gw->clients) {
		struct gw_client *c = vram_list_entry(pos, struct gw_client, link);
		/* answered and shut for writing: what the kernel holds still goes out after exec */
		if (c->lingering)
			continue;
		/* a request in service or half read, an answer being sent */
		if (c->req || c->in.len || gw__client_pending(c) > 0 || c->closing) {
			left++;
			continue;
		}
		/*
		 * Idle: a request may be on its way (a client like wrk sends the
		 * next one as soon as an answer is in), so the connection is left
		 * open for idle_grace_ms before it is closed. It has no request, so
		 * closing it (or dropping it when shutdown fails) ends nothing else.
		 */
		if (!c->drain_idle_ms)
			c->drain_idle_ms = now ? now : 1;
		if (now - c->drain_idle_ms < idle_grace_ms) {
			left++;
			continue;
		}
		gw__client_close_soon(c);
	}
	return left;
}

void vram_gateway_drain_cut(struct vram_gateway *gw)
{
	end_requests(gw, "restarting", VRAM_GATEWAY_RETRY_AFTER_S,
		     "vramd is restarting in place and could not wait for this request "
		     "(daemon.upgrade_drain); try again");
	struct vram_list *pos, *tmp;
	vram_list_for_each_safe(pos, tmp, &gw->clients) {
		struct gw_client *c = vram_list_entry(pos, struct gw_client, link);
		/* half-read requests and idle connections: no request, nothing else ends */
		if (!c->lingering && !c->req)
			gw__client_close_soon(c);
	}
}

void vram_gateway_drain_end(struct vram_gateway *gw)
{
	gw->draining = false;
	struct vram_list *pos;
	vram_list_for_each(pos, &gw->clients)
		vram_list_entry(pos, struct gw_client, link)->drain_idle_ms = 0;
	if (gw->closing)
		return;
	for (size_t i = 0; i < gw->n_listeners; i++) {
		evconnlistener_enable(gw->listeners[i].l);
		if (!gw->listeners[i].guard)
			gw->listeners[i].guard = vram_accept_guard_new(gw->base, gw->listeners[i].l,
								       "gateway");
	}
}

size_t vram_gateway_listener_count(const struct vram_gateway *gw)
{
	return gw->n_listeners;
}

int vram_gateway_listener_fd(const struct vram_gateway *gw, size_t i, bool *ret_unix)
{
	if (i >= gw->n_listeners)
		return -ENOENT;
	*ret_unix = gw->listeners[i].trusted;
	return evconnlistener_get_fd(gw->listeners[i].l);
}

void vram_gateway_set_access_log(struct vram_gateway *gw, struct vram_accesslog *al)
{
	gw->alog = al;
}

void vram_gateway_free(struct vram_gateway *gw)
{
	if (!gw)
		return;
	vram_gateway_close_clients(gw);
	vram_manager_unsubscribe(gw->sub);
	while (!vram_list_empty(&gw->clients))
		gw__client_drop(vram_list_entry(gw->clients.next, struct gw_client, link));
	gw__wls_free(gw);
	gw__pool_trim(&gw->api_pool, 0, 0);
	for (size_t i = 0; i < gw->n_listeners; i++) {
		evconnlistener_free(gw->listeners[i].l);
		if (gw->listeners[i].path)
			unlink(gw->listeners[i].path);
		free(gw->listeners[i].path);
		free(gw->listeners[i].host);
	}
	event_free(gw->sweep);
	vram_buf_done(&gw->head);
	vram_buf_done(&gw->dechunked);
	free(gw->addrs);
	free(gw->token);
	free(gw->api_socket);
	free(gw);
}
