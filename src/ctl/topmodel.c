/* SPDX-License-Identifier: MIT */
/* The data of `vramctl top`; see topmodel.h. */
#include "ctl/topmodel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vram_top_init(struct vram_top *t)
{
	memset(t, 0, sizeof(*t));
}

void vram_top_done(struct vram_top *t)
{
	free(t->wls);
	t->wls = NULL;
	t->n_wls = 0;
}

static uint64_t u64(json_t *v)
{
	return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static void copy_str(char *dst, size_t size, json_t *v)
{
	snprintf(dst, size, "%s", json_is_string(v) ? json_string_value(v) : "");
}

static struct vram_top_wl *find_wl(struct vram_top *t, const char *name)
{
	for (size_t i = 0; i < t->n_wls; i++)
		if (strcmp(t->wls[i].name, name) == 0)
			return &t->wls[i];
	return NULL;
}

int vram_top_set_status(struct vram_top *t, json_t *status)
{
	json_t *gpus = json_object_get(status, "gpus"), *wls = json_object_get(status, "workloads");
	if (!json_is_array(gpus) || !json_is_array(wls))
		return -EINVAL;
	size_t i;
	json_t *g;
	t->n_gpus = 0;
	json_array_foreach(gpus, i, g) {
		if (t->n_gpus == VRAM_TOP_GPUS_MAX)
			break;
		struct vram_top_gpu *tg = &t->gpus[t->n_gpus++];
		json_t *mem = json_object_get(g, "memory");
		tg->index = (unsigned)u64(json_object_get(g, "index"));
		copy_str(tg->name, sizeof(tg->name), json_object_get(g, "name"));
		tg->total = u64(json_object_get(mem, "total"));
		tg->used_known = json_is_integer(json_object_get(mem, "used"));
		tg->used = u64(json_object_get(mem, "used"));
		tg->reserve = u64(json_object_get(mem, "reserve"));
	}
	json_t *host = json_object_get(status, "host");
	t->host_budget = u64(json_object_get(host, "budget"));
	t->host_parked = u64(json_object_get(host, "parked"));

	size_t n = json_array_size(wls);
	if (n > VRAM_TOP_WORKLOADS_MAX)
		n = VRAM_TOP_WORKLOADS_MAX;
	struct vram_top_wl *next = calloc(n ? n : 1, sizeof(*next));
	if (!next)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		json_t *w = json_array_get(wls, i);
		struct vram_top_wl *nw = &next[i];
		copy_str(nw->name, sizeof(nw->name), json_object_get(w, "name"));
		copy_str(nw->state, sizeof(nw->state), json_object_get(w, "state"));
		json_t *mem = json_object_get(w, "memory");
		nw->gpu_bytes = u64(json_object_get(mem, "gpu_bytes"));
		nw->host_bytes = u64(json_object_get(mem, "host_bytes"));
		copy_str(nw->declared, sizeof(nw->declared), json_object_get(mem, "declared"));
		nw->idle_s = json_number_value(json_object_get(w, "idle_seconds"));
		copy_str(nw->engine, sizeof(nw->engine),
			 json_object_get(json_object_get(w, "engine"), "name"));
		size_t k, len = 0;
		json_t *ref;
		json_array_foreach(json_object_get(w, "gpus"), k, ref) {
			int m = snprintf(nw->gpus + len, sizeof(nw->gpus) - len, "%s%lld", k ? "," : "",
					 (long long)json_integer_value(json_object_get(ref, "index")));
			if (m < 0 || (size_t)m >= sizeof(nw->gpus) - len)
				break;
			len += (size_t)m;
		}
		/* rates come from /metrics, not from the status: kept across */
		struct vram_top_wl *old = find_wl(t, nw->name);
		nw->requests = old ? old->requests : 0;
		nw->req_rate = old ? old->req_rate : -1;
		nw->seen = true;
	}
	free(t->wls);
	t->wls = next;
	t->n_wls = n;
	vram_top_sort(t);
	return 0;
}

void vram_top_set_metrics(struct vram_top *t, const char *text, size_t len, long long now_ms)
{
	static const char metric[] = "vram_gateway_requests_total{workload=\"";
	/* counts of this read, per workload in t */
	uint64_t *count = calloc(t->n_wls ? t->n_wls : 1, sizeof(*count));
	if (!count)
		return;
	for (const char *p = text, *end = text + len; p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;
		if ((size_t)(eol - p) > sizeof(metric) && memcmp(p, metric, sizeof(metric) - 1) == 0) {
			const char *name = p + sizeof(metric) - 1;
			const char *q = memchr(name, '"', (size_t)(eol - name));
			const char *sp = memchr(name, ' ', (size_t)(eol - name));
			if (q && sp) {
				for (size_t i = 0; i < t->n_wls; i++)
					if (strlen(t->wls[i].name) == (size_t)(q - name) &&
					    memcmp(t->wls[i].name, name, (size_t)(q - name)) == 0)
						count[i] += strtoull(sp + 1, NULL, 10);
			}
		}
		p = eol + 1;
	}
	double dt = t->metrics_ms ? (double)(now_ms - t->metrics_ms) / 1000.0 : 0;
	for (size_t i = 0; i < t->n_wls; i++) {
		struct vram_top_wl *w = &t->wls[i];
		if (dt > 0)
			w->req_rate = count[i] >= w->requests ? (double)(count[i] - w->requests) / dt : 0;
		w->requests = count[i];
	}
	t->metrics_ms = now_ms;
	free(count);
}

bool vram_top_event(struct vram_top *t, const char *workload, const char *to)
{
	struct vram_top_wl *w = find_wl(t, workload);
	if (!w)
		return false;
	snprintf(w->state, sizeof(w->state), "%s", to);
	return true;
}

static int by_memory(const void *a, const void *b)
{
	const struct vram_top_wl *x = a, *y = b;
	if (x->gpu_bytes != y->gpu_bytes)
		return x->gpu_bytes > y->gpu_bytes ? -1 : 1;
	if (x->host_bytes != y->host_bytes)
		return x->host_bytes > y->host_bytes ? -1 : 1;
	return strcmp(x->name, y->name);
}

void vram_top_sort(struct vram_top *t)
{
	if (t->n_wls > 1)
		qsort(t->wls, t->n_wls, sizeof(t->wls[0]), by_memory);
	if (!t->selected[0] || !find_wl(t, t->selected))
		snprintf(t->selected, sizeof(t->selected), "%s", t->n_wls ? t->wls[0].name : "");
}

size_t vram_top_selected_row(struct vram_top *t)
{
	for (size_t i = 0; i < t->n_wls; i++)
		if (strcmp(t->wls[i].name, t->selected) == 0)
			return i;
	return 0;
}

void vram_top_move(struct vram_top *t, int delta)
{
	if (!t->n_wls)
		return;
	long row = (long)vram_top_selected_row(t) + delta;
	if (row < 0)
		row = 0;
	if (row >= (long)t->n_wls)
		row = (long)t->n_wls - 1;
	snprintf(t->selected, sizeof(t->selected), "%s", t->wls[row].name);
}
