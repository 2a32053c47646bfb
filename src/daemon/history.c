/* SPDX-License-Identifier: MIT */
/* GPU memory over the last minutes, sampled on a timer. See history.h. */
#include "daemon/history.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/time.h>

#include <event2/event.h>

#include "daemon/manager.h"

#define USED_UNKNOWN UINT64_MAX /* a GPU that did not answer, or was not there */

struct sample {
	double wall_s;                    /* s since the epoch */
	uint64_t used[VRAM_HISTORY_GPUS]; /* bytes per GPU, or USED_UNKNOWN */
};

struct vram_history {
	struct vram_manager *m; /* borrowed */
	struct event *timer;
	struct sample ring[VRAM_HISTORY_SAMPLES];
	size_t next; /* slot of the next sample */
	size_t n;    /* samples held */
	/* the GPUs as last seen */
	unsigned n_gpus;
	int index[VRAM_HISTORY_GPUS];        /* GPU index */
	uint64_t total[VRAM_HISTORY_GPUS];   /* bytes */
};

static uint64_t num_of(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v)
								 : USED_UNKNOWN;
}

static void take_sample(struct vram_history *h)
{
	json_t *gpus = vram_manager_gpus_json(h->m);
	if (!gpus)
		return; /* out of memory: a gap in the chart */
	struct sample *s = &h->ring[h->next];
	struct timeval tv;
	gettimeofday(&tv, NULL);
	s->wall_s = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
	size_t n = json_array_size(gpus);
	if (n > VRAM_HISTORY_GPUS)
		n = VRAM_HISTORY_GPUS;
	for (size_t i = 0; i < VRAM_HISTORY_GPUS; i++)
		s->used[i] = USED_UNKNOWN;
	for (size_t i = 0; i < n; i++) {
		json_t *g = json_array_get(gpus, i);
		json_t *mem = json_object_get(g, "memory");
		s->used[i] = num_of(mem, "used");
		h->total[i] = num_of(mem, "total");
		h->index[i] = (int)json_integer_value(json_object_get(g, "index"));
	}
	h->n_gpus = (unsigned)n;
	json_decref(gpus);
	h->next = (h->next + 1) % VRAM_HISTORY_SAMPLES;
	if (h->n < VRAM_HISTORY_SAMPLES)
		h->n++;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	take_sample(arg);
}

int vram_history_new(struct event_base *base, struct vram_manager *m, struct vram_history **ret)
{
	struct vram_history *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->m = m;
	h->timer = event_new(base, -1, EV_PERSIST, on_timer, h);
	struct timeval tv = { VRAM_HISTORY_INTERVAL_MS / 1000, (VRAM_HISTORY_INTERVAL_MS % 1000) * 1000 };
	if (!h->timer || event_add(h->timer, &tv) < 0) {
		vram_history_free(h);
		return -ENOMEM;
	}
	take_sample(h);
	*ret = h;
	return 0;
}

void vram_history_free(struct vram_history *h)
{
	if (!h)
		return;
	if (h->timer)
		event_free(h->timer);
	free(h);
}

static json_t *bytes_or_null(uint64_t v)
{
	return v == USED_UNKNOWN ? json_null() : json_integer((json_int_t)v);
}

json_t *vram_history_json(const struct vram_history *h)
{
	json_t *gpus = json_array(), *samples = json_array();
	for (unsigned i = 0; gpus && i < h->n_gpus; i++)
		json_array_append_new(gpus, json_pack("{s:i,s:o}", "index", h->index[i], "total",
						      bytes_or_null(h->total[i])));
	for (size_t k = 0; samples && k < h->n; k++) {
		const struct sample *s =
			&h->ring[(h->next + VRAM_HISTORY_SAMPLES - h->n + k) % VRAM_HISTORY_SAMPLES];
		json_t *used = json_array();
		for (unsigned i = 0; used && i < h->n_gpus; i++)
			json_array_append_new(used, bytes_or_null(s->used[i]));
		json_array_append_new(samples, json_pack("{s:f,s:o}", "time", s->wall_s, "used",
							 used ? used : json_null()));
	}
	if (!gpus || !samples) {
		json_decref(gpus);
		json_decref(samples);
		return NULL;
	}
	return json_pack("{s:f,s:o,s:o}", "interval_seconds", VRAM_HISTORY_INTERVAL_MS / 1000.0,
			 "gpus", gpus, "samples", samples);
}
