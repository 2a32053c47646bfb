/* SPDX-License-Identifier: MIT */
/*
 * The gateway's routes (see gateway_int.h): which way a complete request
 * goes, by its target. /v1/... by the model it names, /w/{name}/... by
 * workload name, GET /v1/models answered here, /api/status from the API's
 * rendered text, everything else relayed to the evhttp server.
 */
#include "daemon/gateway_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

#include "daemon/api.h"
#include "daemon/http.h"
#include "daemon/metrics.h"

/* ------------------------------------------------------------- routes */

/* "a, b, c": every model name, or every workload name when models is false. */
static void list_known(struct vram_gateway *gw, bool models, char *buf, size_t size)
{
	const struct vram_config *cfg = vram_manager_config(gw->m);
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < cfg->n_workloads && len + 1 < size; i++) {
		const struct vram_workload_config *c = &cfg->workloads[i];
		if (!models) {
			len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "", c->name);
			continue;
		}
		for (size_t k = 0; k < c->n_models && len + 1 < size; k++)
			len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "",
						c->models[k]);
	}
	if (len >= size)
		buf[size - 1] = '\0';
}

/* Relays a request for the REST API, /mcp or /metrics to the evhttp server. */
static void relay_api(struct gw_client *c, const struct vram_h1_head *h, const char *target,
		      const char *body, size_t blen, const struct timespec *started)
{
	struct gw_req *r = gw__req_new(c, NULL, h, target, body, blen, started);
	if (!r && errno == EMSGSIZE) {
		gw__client_error(c, 431, NULL, 0, true, "the request head, with the fields vramd "
				 "adds, is over %d bytes", VRAM_HTTP_RELAY_HEADERS_MAX);
		return;
	}
	if (!r) {
		gw__client_error(c, 500, NULL, 0, true, "out of memory");
		return;
	}
	c->req = r;
	r->phase = GW_PROXYING; /* linked by gw__forward */
	gw__forward(r, 0);
}

static void reply_json(struct gw_client *c, int status, json_t *body, bool close)
{
	char *text = body ? json_dumps(body, VRAM_HTTP_JSON_FLAGS) : NULL;
	if (!text) {
		gw__client_error(c, 500, NULL, 0, true, "out of memory");
		return;
	}
	gw__client_reply(c, status, NULL, "application/json", text, strlen(text), close);
	free(text);
}

static void reply_models(struct gw_client *c, const char *one, bool close)
{
	struct vram_gateway *gw = c->gw;
	const struct vram_config *config = vram_manager_config(gw->m);
	json_t *data = json_array();
	json_t *found = NULL;
	for (size_t i = 0; data && i < config->n_workloads; i++) {
		const struct vram_workload_config *cfg = &config->workloads[i];
		for (size_t k = 0; k < cfg->n_models; k++) {
			json_t *m = json_pack("{s:s,s:s,s:i,s:s}", "id", cfg->models[k], "object",
					      "model", "created", 0, "owned_by", cfg->name);
			if (one && !found && strcmp(one, cfg->models[k]) == 0)
				found = json_incref(m);
			json_array_append_new(data, m);
		}
	}
	if (one) {
		if (found) {
			reply_json(c, 200, found, close);
		} else {
			char known[1024];
			list_known(gw, true, known, sizeof(known));
			gw__client_error(c, 404, "model_not_found", 0, close,
					 "no workload serves model \"%.256s\" (known: %s)", one,
					 known[0] ? known : "none");
		}
		json_decref(found);
		json_decref(data);
		return;
	}
	json_t *body = json_pack("{s:s,s:o}", "object", "list", "data", data ? data : json_array());
	reply_json(c, 200, body, close);
	json_decref(body);
}

/* /w/{name}[/rest]: the workload by name, the rest as the upstream target. */
static void route_by_name(struct gw_client *c, const struct vram_h1_head *h, const char *target,
			  const char *body, size_t blen, const struct timespec *started)
{
	struct vram_gateway *gw = c->gw;
	const char *seg = target + 3;
	size_t seglen = strcspn(seg, "/?");
	char name[VRAM_API_NAME_MAX + 1];
	size_t dlen = 0;
	char raw[VRAM_API_NAME_MAX * 3 + 1];
	char *dec = NULL;
	if (seglen > 0 && seglen < sizeof(raw)) {
		memcpy(raw, seg, seglen);
		raw[seglen] = '\0';
		dec = evhttp_uridecode(raw, 0, &dlen);
	}
	if (!dec || dlen == 0 || dlen >= sizeof(name) || strlen(dec) != dlen) {
		free(dec);
		gw__client_error(c, 404, NULL, 0, !h->keep_alive, "expected /w/<workload>/<path>");
		return;
	}
	memcpy(name, dec, dlen + 1);
	free(dec);
	struct gw_wl *wl = gw__wl_by_name(gw, name);
	if (!wl) {
		char known[1024];
		list_known(gw, false, known, sizeof(known));
		gw__client_error(c, 404, NULL, 0, !h->keep_alive,
				 "no workload named \"%s\" (known: %s)", name,
				 known[0] ? known : "none");
		return;
	}
	const char *rest = seg + seglen;
	char up_target[VRAM_HTTP_HEADERS_MAX + 2];
	snprintf(up_target, sizeof(up_target), "%s%s", *rest == '/' ? "" : "/", rest);
	gw__admit(c, wl, h, up_target, body, blen, started);
}

/* /v1/...: the workload serving the request's model. */
static void route_by_model(struct gw_client *c, const struct vram_h1_head *h, const char *target,
			   const char *path, const char *query, const char *body, size_t blen,
			   const struct timespec *started)
{
	struct vram_gateway *gw = c->gw;
	bool close = !h->keep_alive;
	bool get = vram_h1_span_eq(h->method, "GET") || vram_h1_span_eq(h->method, "HEAD");
	if (get && strcmp(path, "/v1/models") == 0) {
		reply_models(c, NULL, close);
		return;
	}
	if (get && strncmp(path, "/v1/models/", 11) == 0 && path[11]) {
		char *one = evhttp_uridecode(path + 11, 0, NULL);
		reply_models(c, one ? one : path + 11, close);
		free(one);
		return;
	}
	char ctype[512] = "";
	const struct vram_h1_header *ct = vram_h1_find(h, "Content-Type");
	if (ct && ct->value.n < sizeof(ctype)) {
		memcpy(ctype, ct->value.p, ct->value.n);
		ctype[ct->value.n] = '\0';
	}
	char model[VRAM_GATEWAY_MODEL_MAX];
	int r = vram_gateway_find_model(ctype[0] ? ctype : NULL, body, blen, query, model,
					sizeof(model));
	char known[1024];
	if (r == -ENOENT || r == -E2BIG) {
		list_known(gw, true, known, sizeof(known));
		gw__client_error(c, 400, NULL, 0, close,
				 "%s names no model: give one in a JSON \"model\" field, a form "
				 "field or ?model= (known: %s)", path, known[0] ? known : "none");
		return;
	}
	if (r < 0) {
		gw__client_error(c, 500, NULL, 0, true, "out of memory");
		return;
	}
	snprintf(c->acc.model, sizeof(c->acc.model), "%s", model);
	const char *name = NULL, *upstream = NULL;
	struct gw_wl *wl = NULL;
	if (vram_manager_find_model(gw->m, model, &name, &upstream) == 0 && name)
		wl = gw__wl_by_name(gw, name);
	if (!wl) {
		list_known(gw, true, known, sizeof(known));
		vram_metrics_gateway_request(gw->mx, "", 404, gw__seconds_since(started));
		gw__client_error(c, 404, "model_not_found", 0, close,
				 "no workload serves model \"%s\" (known: %s)", model,
				 known[0] ? known : "none");
		return;
	}
	char *rewritten = NULL;
	if (upstream && strcmp(upstream, model) != 0) {
		/* an alias: the model server knows the model by its upstream name */
		r = vram_gateway_rewrite_model(body, blen, upstream, VRAM_GATEWAY_BODY_MAX,
					       &rewritten, &blen);
		if (r == -E2BIG) {
			gw__client_error(c, 413, NULL, 0, close,
					 "the body with model \"%s\" written as \"%s\" is over %u "
					 "bytes, or names \"model\" more than 8 times", model,
					 upstream, VRAM_GATEWAY_BODY_MAX);
			return;
		}
		if (r < 0 && r != -ENOENT) {
			gw__client_error(c, 500, NULL, 0, true, "failed to write model \"%s\" as "
					 "\"%s\": %s", model, upstream, strerror(-r));
			return;
		}
	}
	gw__admit(c, wl, h, target, rewritten ? rewritten : body, blen, started);
	free(rewritten);
}

/*
 * The origin form of target t: "http://host/p?q" is "/p?q" (RFC 9112
 * §3.2.2), "http://host" is "/". NULL for a target that is neither a path
 * nor "*"; *ret_len gets the length.
 */
const char *gw__origin_form(struct vram_h1_span t, size_t *ret_len)
{
	const char *p = t.p;
	size_t n = t.n;
	if (n > 7 && (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0)) {
		const char *auth = (const char *)memchr(p, ':', n) + 3;
		const char *slash = memchr(auth, '/', n - (size_t)(auth - p));
		n = slash ? n - (size_t)(slash - p) : 1;
		p = slash ? slash : "/";
	}
	if (p[0] != '/' && !(n == 1 && p[0] == '*'))
		return NULL;
	*ret_len = n;
	return p;
}

/* The route of an origin-form target (n bytes at t). */
enum gw_route gw__route_of(const char *t, size_t n)
{
	size_t plen = 0;
	while (plen < n && t[plen] != '?' && t[plen] != '#')
		plen++;
	if (plen >= 3 && memcmp(t, "/v1", 3) == 0 && (plen == 3 || t[3] == '/'))
		return GW_ROUTE_MODEL;
	if (plen >= 3 && memcmp(t, "/w/", 3) == 0)
		return GW_ROUTE_NAME;
	return GW_ROUTE_API;
}

/*
 * Serves one complete request of c that passed the front door: head h,
 * body (blen bytes, NUL after).
 */
void gw__dispatch(struct gw_client *c, const struct vram_h1_head *h, const char *body,
		  size_t blen)
{
	struct vram_gateway *gw = c->gw;
	struct timespec started;
	clock_gettime(CLOCK_MONOTONIC, &started);
	bool close = !h->keep_alive;

	size_t tlen = 0;
	const char *t = gw__origin_form(h->target, &tlen); /* the front door checked it */
	char target[VRAM_HTTP_HEADERS_MAX + 1];
	memcpy(target, t, tlen);
	target[tlen] = '\0';
	char path[VRAM_HTTP_HEADERS_MAX + 1];
	size_t plen = strcspn(target, "?#");
	memcpy(path, target, plen);
	path[plen] = '\0';
	const char *query = target[plen] == '?' ? target + plen + 1 : NULL;

	enum gw_route route = gw__route_of(target, tlen);
	if (!query && strcmp(path, "/api/status") == 0 && vram_h1_span_eq(h->method, "GET")) {
		/*
		 * What dashboards and scripts poll, served here from the API's
		 * rendered text: a relay hop through evhttp would double its cost.
		 */
		const char *text;
		size_t len;
		if (vram_api_status_text(gw->api, &text, &len) == 0) {
			gw__client_reply(c, 200, NULL, "application/json", text, len, close);
			return;
		}
	}
	if (route == GW_ROUTE_API) {
		relay_api(c, h, target, body, blen, &started);
		return;
	}
	if (gw->closing) {
		gw__client_error(c, 503, "shutting_down", 0, true, "vramd is shutting down");
		return;
	}
	if (route == GW_ROUTE_NAME)
		route_by_name(c, h, target, body, blen, &started);
	else
		route_by_model(c, h, target, path, query, body, blen, &started);
}
