/* SPDX-License-Identifier: MIT */
/*
 * /metrics in the Prometheus text format; see metrics.h. One scrape is
 * built into one buffer and sent in one reply.
 */
#include "daemon/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>

#include "common/buf.h"
#include "common/log.h"
#include "core/workload.h"
#include "daemon/http.h"
#include "daemon/manager.h"

/* s: offloads and restores take from milliseconds (hook) to a minute (checkpoint, restart). */
static const double action_bounds[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120 };
/* s: gateway requests, from a cached answer to a long generation. */
static const double request_bounds[] = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
					  0.5,   1,     2.5,  5,     10,   30,  60 };
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

enum code_class { CC_1XX, CC_2XX, CC_3XX, CC_4XX, CC_5XX, CC_CLOSED, CC_N };
static const char *const code_class_names[CC_N] = { "1xx", "2xx", "3xx", "4xx", "5xx",
						    "client_closed" };

/* What is counted for one workload, under a copy of its name. */
struct wl_metrics {
	char name[VRAM_CONFIG_NAME_MAX + 1]; /* "" for requests that matched no workload */
	uint64_t offloads, restores, evictions;
	/* ms of the monotonic clock when the offload/restore began (vram_event.mono_ms); 0 = none */
	uint64_t offloading_since_ms, restoring_since_ms;
	struct vram_histogram offload_seconds, restore_seconds;
	uint64_t requests[CC_N];
	struct vram_histogram request_seconds;
	uint64_t response_bytes;                 /* bytes sent to clients, heads included */
	struct vram_histogram first_byte_seconds; /* arrival to the response's first byte */
	struct vram_histogram queue_seconds;     /* time waited for a start or restore */
	unsigned queue_depth;
};

/*
 * Entries are found by name, never by a workload's place in the config: a
 * reload adds, removes and reorders workloads (and frees the old config).
 */
struct vram_metrics {
	struct vram_manager *m;  /* borrowed */
	struct vram_manager_sub *sub;
	struct wl_metrics *wls;  /* owned array: one per workload of the config, in no order */
	size_t n_wls, cap_wls;
	struct wl_metrics none;  /* gateway requests that matched no workload */
};

/* ---------------------------------------------------------- text helpers */

void vram_histogram_init(struct vram_histogram *h, const double *bounds, size_t n_bounds)
{
	memset(h, 0, sizeof(*h));
	h->bounds = bounds;
	h->n_bounds = n_bounds < VRAM_HISTOGRAM_BUCKETS_MAX ? n_bounds : VRAM_HISTOGRAM_BUCKETS_MAX;
}

void vram_histogram_observe(struct vram_histogram *h, double value)
{
	if (isnan(value))
		return;
	for (size_t i = 0; i < h->n_bounds; i++) {
		if (value <= h->bounds[i]) {
			h->buckets[i]++;
			break;
		}
	}
	h->count++;
	h->sum += value;
}

int vram_metrics_escape_label(struct vram_buf *out, const char *value)
{
	for (const char *p = value; *p; p++) {
		const char *rep = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
		int r = rep ? vram_buf_puts(out, rep) : vram_buf_append(out, p, 1);
		if (r < 0)
			return r;
	}
	return 0;
}

int vram_histogram_write(struct vram_buf *out, const char *name, const char *labels,
			 const struct vram_histogram *h)
{
	const char *sep = labels && *labels ? "," : "";
	const char *lb = labels ? labels : "";
	uint64_t cum = 0;
	int r = 0;
	for (size_t i = 0; r == 0 && i < h->n_bounds; i++) {
		cum += h->buckets[i];
		r = vram_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, lb, sep, h->bounds[i],
				    (unsigned long long)cum);
	}
	if (r == 0)
		r = vram_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, lb, sep,
				    (unsigned long long)h->count);
	if (r == 0)
		r = vram_buf_printf(out, "%s_sum{%s} %.17g\n%s_count{%s} %llu\n", name, lb, h->sum,
				    name, lb, (unsigned long long)h->count);
	return r;
}

static int meta(struct vram_buf *out, const char *name, const char *type, const char *help)
{
	return vram_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{key="value"} number, the value escaped. */
static int sample1(struct vram_buf *out, const char *name, const char *key, const char *value,
		   double number)
{
	int r = vram_buf_printf(out, "%s{%s=\"", name, key);
	if (r == 0)
		r = vram_metrics_escape_label(out, value);
	if (r == 0)
		r = vram_buf_printf(out, "\"} %.17g\n", number);
	return r;
}

/* workload="escaped" into a small buffer, for histograms. */
static int wl_labels(struct vram_buf *lb, const char *workload)
{
	vram_buf_reset(lb);
	int r = vram_buf_puts(lb, "workload=\"");
	if (r == 0)
		r = vram_metrics_escape_label(lb, workload);
	if (r == 0)
		r = vram_buf_puts(lb, "\"");
	return r;
}

/* ------------------------------------------------------------ counters */

static void wl_init(struct wl_metrics *w, const char *name)
{
	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "%s", name); /* the config checked its length */
	vram_histogram_init(&w->offload_seconds, action_bounds, N_OF(action_bounds));
	vram_histogram_init(&w->restore_seconds, action_bounds, N_OF(action_bounds));
	vram_histogram_init(&w->request_seconds, request_bounds, N_OF(request_bounds));
	vram_histogram_init(&w->first_byte_seconds, request_bounds, N_OF(request_bounds));
	vram_histogram_init(&w->queue_seconds, request_bounds, N_OF(request_bounds));
}

/* The entry of workload name, or NULL. A scan: the gateway calls it for every request. */
static struct wl_metrics *wl_find(struct vram_metrics *mx, const char *name)
{
	for (size_t i = 0; i < mx->n_wls; i++)
		if (strcmp(mx->wls[i].name, name) == 0)
			return &mx->wls[i];
	return NULL;
}

/* The entry for name, mx->none for "", NULL for a workload no longer counted. */
static struct wl_metrics *wl_of(struct vram_metrics *mx, const char *name)
{
	if (!mx || !name)
		return NULL;
	return name[0] ? wl_find(mx, name) : &mx->none;
}

/* Counts workload name from zero, unless it is counted already. Returns 0 or -ENOMEM. */
static int wl_add(struct vram_metrics *mx, const char *name)
{
	if (wl_find(mx, name))
		return 0;
	if (mx->n_wls == mx->cap_wls) {
		size_t cap = mx->cap_wls ? 2 * mx->cap_wls : 8;
		struct wl_metrics *wls = realloc(mx->wls, cap * sizeof(*wls));
		if (!wls)
			return -ENOMEM;
		mx->wls = wls;
		mx->cap_wls = cap;
	}
	wl_init(&mx->wls[mx->n_wls++], name);
	return 0;
}

static void wl_drop(struct vram_metrics *mx, const char *name)
{
	struct wl_metrics *w = wl_find(mx, name);
	if (!w)
		return;
	size_t i = (size_t)(w - mx->wls);
	memmove(&mx->wls[i], &mx->wls[i + 1], (mx->n_wls - i - 1) * sizeof(*mx->wls));
	mx->n_wls--;
}

/*
 * The config was replaced (sum: the workload names added, removed and
 * changed). Removed workloads stop being counted and leave the scrape;
 * added ones start from zero; changed ones keep their counts.
 */
static void on_reload(struct vram_metrics *mx, const struct vram_reload_summary *sum)
{
	for (size_t i = 0; i < sum->n_removed; i++)
		wl_drop(mx, sum->removed[i]);
	const struct {
		const char *const *names;
		size_t n;
	} lists[] = { { sum->added, sum->n_added }, { sum->changed, sum->n_changed } };
	for (size_t k = 0; k < N_OF(lists); k++)
		for (size_t i = 0; i < lists[k].n; i++)
			if (lists[k].names[i][0] && wl_add(mx, lists[k].names[i]) < 0)
				vram_warn("Failed to count metrics of workload %s: out of memory",
					  lists[k].names[i]);
}

/* Seconds from since_ms to now_ms (monotonic), or a negative number when since_ms is none. */
static double since_s(uint64_t since_ms, uint64_t now_ms)
{
	return since_ms && now_ms >= since_ms ? (double)(now_ms - since_ms) / 1000.0 : -1.0;
}

/*
 * A workload changed state. Evictions are told by the event's reason, not
 * its words; durations come from the monotonic clock, so that a step of the
 * wall clock does not skew them.
 */
static void on_state(struct vram_metrics *mx, const struct vram_event *ev)
{
	struct wl_metrics *w = wl_of(mx, ev->workload);
	if (!w || w == &mx->none)
		return;
	double s;
	if (ev->to == VRAM_WL_OFFLOADING) {
		w->offloading_since_ms = ev->mono_ms;
		if (ev->reason == VRAM_REASON_EVICTED)
			w->evictions++;
	} else if (ev->from == VRAM_WL_OFFLOADING && ev->to == VRAM_WL_OFFLOADED) {
		w->offloads++;
		if ((s = since_s(w->offloading_since_ms, ev->mono_ms)) >= 0)
			vram_histogram_observe(&w->offload_seconds, s);
	}
	if (ev->to == VRAM_WL_RESTORING) {
		w->restoring_since_ms = ev->mono_ms;
	} else if (ev->from == VRAM_WL_RESTORING && ev->to == VRAM_WL_READY) {
		w->restores++;
		if ((s = since_s(w->restoring_since_ms, ev->mono_ms)) >= 0)
			vram_histogram_observe(&w->restore_seconds, s);
	}
}

static void on_event(const struct vram_event *ev, void *arg)
{
	switch (ev->kind) {
	case VRAM_EVENT_STATE:
		on_state(arg, ev);
		break;
	case VRAM_EVENT_RELOAD:
		on_reload(arg, ev->reload);
		break;
	}
}

void vram_metrics_gateway_request(struct vram_metrics *mx, const char *workload, int status,
				  double seconds)
{
	struct wl_metrics *w = wl_of(mx, workload);
	if (!w)
		return;
	enum code_class cc = status <= 0 ? CC_CLOSED : status < 200 ? CC_1XX : status < 300 ? CC_2XX
			   : status < 400 ? CC_3XX : status < 500 ? CC_4XX : CC_5XX;
	w->requests[cc]++;
	vram_histogram_observe(&w->request_seconds, seconds);
}

void vram_metrics_gateway_timing(struct vram_metrics *mx, const char *workload, uint64_t bytes,
				 double first_byte_s, double queue_s)
{
	struct wl_metrics *w = wl_of(mx, workload);
	if (!w)
		return;
	w->response_bytes += bytes;
	if (first_byte_s >= 0)
		vram_histogram_observe(&w->first_byte_seconds, first_byte_s);
	vram_histogram_observe(&w->queue_seconds, queue_s);
}

void vram_metrics_gateway_queue(struct vram_metrics *mx, const char *workload, unsigned depth)
{
	struct wl_metrics *w = wl_of(mx, workload);
	if (w)
		w->queue_depth = depth;
}

/* ------------------------------------------------------------- render */

static double num(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	return json_is_number(v) ? json_number_value(v) : NAN;
}

static int render_gpus(struct vram_metrics *mx, struct vram_buf *out)
{
	static const struct {
		const char *name, *key, *help;
	} rows[] = {
		{ "vram_gpu_memory_total_bytes", "total", "Memory of the GPU." },
		{ "vram_gpu_memory_used_bytes", "used", "Memory in use on the GPU, by any process." },
		{ "vram_gpu_memory_reserved_bytes", "reserve",
		  "Memory vramd keeps free on the GPU (gpus.reserve)." },
	};
	json_t *gpus = vram_manager_gpus_json(mx->m);
	if (!gpus)
		return -ENOMEM;
	int r = 0;
	for (size_t k = 0; r == 0 && k < N_OF(rows); k++) {
		r = meta(out, rows[k].name, "gauge", rows[k].help);
		size_t i;
		json_t *g;
		json_array_foreach(gpus, i, g) {
			double v = num(json_object_get(g, "memory"), rows[k].key);
			if (r < 0 || isnan(v))
				continue; /* not known: left out, never 0 */
			char idx[16];
			snprintf(idx, sizeof(idx), "%d", (int)json_integer_value(json_object_get(g, "index")));
			r = vram_buf_printf(out, "%s{gpu=\"%s\",name=\"", rows[k].name, idx);
			if (r == 0)
				r = vram_metrics_escape_label(out, json_string_value(json_object_get(g, "name")) ?: "");
			if (r == 0)
				r = vram_buf_printf(out, "\"} %.17g\n", v);
		}
	}
	json_decref(gpus);
	return r;
}

/*
 * The host's memory as status shows it: one gauge, its kind a label. A
 * size not known (MemTotal unread, MemAvailable on an old kernel) is left
 * out, never 0.
 */
static int render_host(struct vram_metrics *mx, struct vram_buf *out)
{
	static const char *const kinds[] = { "total", "available", "budget", "parked", "kept",
					     "on_disk" };
	json_t *host = vram_manager_host_json(mx->m);
	if (!host)
		return -ENOMEM;
	int r = meta(out, "vram_host_memory_bytes", "gauge",
		     "Host memory: total and available (/proc/meminfo), the budget of what "
		     "workloads may hold (host.reserve, host.limit), and what they hold: parked "
		     "(offloaded copies in RAM), kept (buffers ready workloads kept), on_disk "
		     "(parked on the disk tier).");
	for (size_t k = 0; r == 0 && k < N_OF(kinds); k++) {
		double v = num(host, kinds[k]);
		if (!isnan(v))
			r = sample1(out, "vram_host_memory_bytes", "kind", kinds[k], v);
	}
	json_decref(host);
	return r;
}

/*
 * The gauges read from the manager, for every workload of the config, then
 * every ad-hoc one (vramctl run, attached Slurm steps) in status order
 * (borrowed for the call).
 */
static int render_workloads(struct vram_metrics *mx, const struct vram_config *cfg,
			    struct vram_buf *out, struct vram_buf *lb)
{
	json_t *status = vram_manager_status_json(mx->m);
	json_t *all = json_object_get(status, "workloads");
	size_t n = cfg->n_workloads, n_all = json_array_size(all);
	json_t **ws = calloc(n + n_all + 1, sizeof(*ws));
	const char **names = calloc(n + n_all + 1, sizeof(*names));
	if (!ws || !names) {
		free(ws);
		free(names);
		json_decref(status);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		names[i] = cfg->workloads[i].name;
		ws[i] = vram_manager_workload_json(mx->m, names[i]);
	}
	for (size_t k = 0; k < n_all; k++) {
		json_t *w = json_array_get(all, k);
		const char *name = json_string_value(json_object_get(w, "name"));
		if (name && json_is_true(json_object_get(w, "adhoc"))) {
			names[n] = name; /* borrowed from status, freed last */
			ws[n++] = json_incref(w);
		}
	}
	int r = meta(out, "vram_workload_state", "gauge",
		     "1 for the state the workload is in, 0 for the others.");
	for (size_t i = 0; r == 0 && i < n; i++) {
		const char *state = json_string_value(json_object_get(ws[i], "state"));
		for (int s = 0; r == 0 && s < VRAM_WL_N_STATES; s++) {
			const char *sn = vram_wl_state_name((enum vram_wl_state)s);
			r = wl_labels(lb, names[i]);
			if (r == 0)
				r = vram_buf_printf(out, "vram_workload_state{%s,state=\"%s\"} %d\n",
						    lb->data, sn, state && strcmp(state, sn) == 0);
		}
	}
	static const struct {
		const char *name, *type, *group, *key, *help;
	} rows[] = {
		{ "vram_workload_gpu_memory_bytes", "gauge", "memory", "gpu_bytes",
		  "GPU memory the workload holds, over all its GPUs and replicas." },
		{ "vram_workload_host_memory_bytes", "gauge", "memory", "offloaded_bytes",
		  "Host memory holding the workload's offloaded GPU memory." },
		{ "vram_workload_host_bytes", "gauge", "memory", "host_bytes",
		  "Host RAM the workload holds: its offloaded copy and the buffers it kept after "
		  "a restore (what counts against the host budget)." },
		{ "vram_workload_parked_bytes", "gauge", "memory", "parked_bytes",
		  "Bytes of the workload's GPU memory parked in files on disk." },
		{ "vram_workload_restarts_total", "counter", NULL, "restarts",
		  "Restarts after a crash or a failed start." },
		{ "vram_workload_in_flight_requests", "gauge", NULL, "in_flight",
		  "Gateway requests sent to the workload and not finished." },
		{ "vram_workload_health_failures", "gauge", "liveness", "failures",
		  "Liveness checks of the ready workload failed in a row (the most of its replicas)." },
	};
	for (size_t k = 0; r == 0 && k < N_OF(rows); k++) {
		r = meta(out, rows[k].name, rows[k].type, rows[k].help);
		for (size_t i = 0; r == 0 && i < n; i++) {
			json_t *obj = rows[k].group ? json_object_get(ws[i], rows[k].group) : ws[i];
			double v = num(obj, rows[k].key);
			if (!isnan(v))
				r = sample1(out, rows[k].name, "workload", names[i], v);
		}
	}
	for (size_t i = 0; i < n; i++)
		json_decref(ws[i]);
	free(ws);
	free(names);
	json_decref(status);
	return r;
}

/*
 * What is counted here, for every workload of the config in its order (one
 * whose entry could not be made is left out, not shown as 0), then, for the
 * gateway's rows, for requests that matched no workload.
 */
static int render_counters(struct vram_metrics *mx, const struct vram_config *cfg,
			   struct vram_buf *out, struct vram_buf *lb)
{
	const struct wl_metrics **ws = calloc(cfg->n_workloads + 1, sizeof(*ws));
	if (!ws)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < cfg->n_workloads; i++)
		if ((ws[n] = wl_find(mx, cfg->workloads[i].name)))
			n++;
	ws[n] = &mx->none;
	static const struct {
		const char *name, *help;
		size_t offset;
	} counters[] = {
		{ "vram_workload_offloads_total", "Offloads finished.",
		  offsetof(struct wl_metrics, offloads) },
		{ "vram_workload_restores_total", "Restores finished.",
		  offsetof(struct wl_metrics, restores) },
		{ "vram_evictions_total", "Offloads begun to make room for another workload.",
		  offsetof(struct wl_metrics, evictions) },
	};
	int r = 0;
	for (size_t k = 0; r == 0 && k < N_OF(counters); k++) {
		r = meta(out, counters[k].name, "counter", counters[k].help);
		for (size_t i = 0; r == 0 && i < n; i++) {
			uint64_t v = *(const uint64_t *)((const char *)ws[i] + counters[k].offset);
			r = sample1(out, counters[k].name, "workload", ws[i]->name, (double)v);
		}
	}
	static const struct {
		const char *name, *help;
		size_t offset;
	} hists[] = {
		{ "vram_workload_offload_duration_seconds", "Time from the start of an offload to its end.",
		  offsetof(struct wl_metrics, offload_seconds) },
		{ "vram_workload_restore_duration_seconds",
		  "Time from the start of a restore (waiting for room included) to ready.",
		  offsetof(struct wl_metrics, restore_seconds) },
	};
	for (size_t k = 0; r == 0 && k < N_OF(hists); k++) {
		r = meta(out, hists[k].name, "histogram", hists[k].help);
		for (size_t i = 0; r == 0 && i < n; i++) {
			r = wl_labels(lb, ws[i]->name);
			if (r == 0)
				r = vram_histogram_write(out, hists[k].name, lb->data,
					(const struct vram_histogram *)((const char *)ws[i] +
									hists[k].offset));
		}
	}
	/* Gateway: one more row for requests that named no known workload. */
	if (r == 0)
		r = meta(out, "vram_gateway_requests_total", "counter",
			 "Gateway requests by workload (\"\" when none matched) and status class "
			 "(client_closed: the client went away first).");
	for (size_t i = 0; r == 0 && i <= n; i++) {
		r = wl_labels(lb, ws[i]->name);
		for (int c = 0; r == 0 && c < CC_N; c++)
			if (ws[i]->requests[c] || c == CC_2XX)
				r = vram_buf_printf(out, "vram_gateway_requests_total{%s,code=\"%s\"} %llu\n",
						    lb->data, code_class_names[c],
						    (unsigned long long)ws[i]->requests[c]);
	}
	static const struct {
		const char *name, *help;
		size_t offset;
	} gw_hists[] = {
		{ "vram_gateway_request_duration_seconds",
		  "Time from a gateway request's arrival to the end of its response.",
		  offsetof(struct wl_metrics, request_seconds) },
		{ "vram_gateway_first_byte_seconds",
		  "Time from a gateway request's arrival to the first byte of its response.",
		  offsetof(struct wl_metrics, first_byte_seconds) },
		{ "vram_gateway_queue_wait_seconds",
		  "Time a gateway request waited for its workload to start or restore.",
		  offsetof(struct wl_metrics, queue_seconds) },
	};
	for (size_t k = 0; r == 0 && k < N_OF(gw_hists); k++) {
		r = meta(out, gw_hists[k].name, "histogram", gw_hists[k].help);
		/* request durations have a row for requests that matched no workload */
		size_t rows = k == 0 ? n + 1 : n;
		for (size_t i = 0; r == 0 && i < rows; i++) {
			r = wl_labels(lb, ws[i]->name);
			if (r == 0)
				r = vram_histogram_write(out, gw_hists[k].name, lb->data,
					(const struct vram_histogram *)((const char *)ws[i] +
									gw_hists[k].offset));
		}
	}
	if (r == 0)
		r = meta(out, "vram_gateway_response_bytes_total", "counter",
			 "Bytes of gateway responses sent to clients, heads included.");
	for (size_t i = 0; r == 0 && i < n; i++)
		r = sample1(out, "vram_gateway_response_bytes_total", "workload", ws[i]->name,
			    (double)ws[i]->response_bytes);
	if (r == 0)
		r = meta(out, "vram_gateway_queue_depth", "gauge",
			 "Gateway requests waiting for the workload to start or restore.");
	for (size_t i = 0; r == 0 && i < n; i++)
		r = sample1(out, "vram_gateway_queue_depth", "workload", ws[i]->name,
			    ws[i]->queue_depth);
	free(ws);
	return r;
}

int vram_metrics_render(struct vram_metrics *mx, struct vram_buf *out)
{
	struct vram_buf lb;
	vram_buf_init(&lb, 4096);
	/* the config of now: a reload may have freed the one of the last scrape */
	const struct vram_config *cfg = vram_manager_config(mx->m);
	int r = render_gpus(mx, out);
	if (r == 0)
		r = render_host(mx, out);
	if (r == 0)
		r = render_workloads(mx, cfg, out, &lb);
	if (r == 0)
		r = render_counters(mx, cfg, out, &lb);
	vram_buf_done(&lb);
	return r;
}

static void free_text(const void *data, size_t len, void *arg)
{
	free((void *)data);
}

void vram_metrics_handle(struct vram_metrics *mx, struct evhttp_request *req)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
		vram_http_reply_error(req, 405, NULL, "/metrics allows GET");
		return;
	}
	struct vram_buf out;
	vram_buf_init(&out, VRAM_METRICS_TEXT_MAX);
	int r = vram_metrics_render(mx, &out);
	if (r < 0) {
		vram_buf_done(&out);
		vram_http_reply_error(req, 500, NULL, "could not build the metrics: %s", strerror(-r));
		return;
	}
	size_t len = out.len;
	char *text = vram_buf_take(&out);
	if (!text) {
		vram_http_reply_error(req, 500, NULL, "out of memory");
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	if (evbuffer_add_reference(evhttp_request_get_output_buffer(req), text, len, free_text,
				   NULL) < 0)
		free(text);
	evhttp_send_reply(req, 200, vram_http_reason(200), NULL);
}

/* ---------------------------------------------------------- lifecycle */

int vram_metrics_new(struct vram_manager *m, struct vram_metrics **ret)
{
	struct vram_metrics *mx = calloc(1, sizeof(*mx));
	if (!mx)
		return -ENOMEM;
	mx->m = m;
	wl_init(&mx->none, "");
	const struct vram_config *cfg = vram_manager_config(m);
	for (size_t i = 0; i < cfg->n_workloads; i++)
		if (wl_add(mx, cfg->workloads[i].name) < 0)
			goto out_free;
	if (vram_manager_subscribe(m, on_event, mx, &mx->sub) < 0)
		goto out_free;
	*ret = mx;
	return 0;

out_free:
	free(mx->wls);
	free(mx);
	return -ENOMEM;
}

void vram_metrics_free(struct vram_metrics *mx)
{
	if (!mx)
		return;
	vram_manager_unsubscribe(mx->sub);
	free(mx->wls);
	free(mx);
}
