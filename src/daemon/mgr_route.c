/* SPDX-License-Identifier: MIT */
/*
 * What the gateway asks the manager, a feature on its top floor: which
 * workload serves a model, the endpoint of a ready instance, request
 * accounting for the idle timers and progress for the liveness checks.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <string.h>

#include "common/clock.h"

/* A workload that a reload removed and that has not stopped yet. */
static bool removing(struct vram_manager *m, const struct vram_workload *w)
{
	return mgr_slot(m, w)->removing;
}

int vram_manager_request_begin(struct vram_manager *m, const char *name)
{
	struct vram_workload *w = mgr_find(m, name);
	if (!w)
		return -ENOENT;
	w->in_flight++;
	w->last_used_ms = vram_now_ms();
	return 0;
}

int vram_manager_request_end(struct vram_manager *m, const char *name)
{
	struct vram_workload *w = mgr_find(m, name);
	if (!w)
		return -ENOENT;
	if (w->in_flight > 0)
		w->in_flight--;
	w->last_used_ms = vram_now_ms();
	const struct mgr_slot *s = mgr_slot(m, w);
	if (w->in_flight == 0 && (s->next || s->removing))
		mgr_kick(m); /* a reload waited for this */
	return 0;
}

int vram_manager_note_progress(struct vram_manager *m, const char *name, unsigned port)
{
	struct vram_workload *w = mgr_find(m, name);
	if (!w)
		return -ENOENT;
	for (size_t i = 0; i < w->n_instances; i++) {
		if (w->instances[i].port == port && port) {
			w->instances[i].progress_ms = vram_now_ms();
			return 0;
		}
	}
	return -ENOENT;
}

int vram_manager_find_model(struct vram_manager *m, const char *model, const char **ret_name,
			    const char **ret_upstream)
{
	for (size_t k = 0; model && k < m->n_live; k++) {
		const struct mgr_slot *s = mgr_slot(m, m->wptrs[k]);
		if (s->removing)
			continue;
		/* a restart pending from a reload: its models route by the new settings already */
		const struct vram_workload_config *c = s->next ? s->next : m->wptrs[k]->cfg;
		for (size_t i = 0; i < c->n_models; i++) {
			if (strcmp(c->models[i], model) == 0) {
				*ret_name = c->name;
				if (ret_upstream)
					*ret_upstream = c->model_upstreams[i];
				return 0;
			}
		}
	}
	return -ENOENT;
}

int vram_manager_endpoint(struct vram_manager *m, const char *name, unsigned *ret_port)
{
	struct vram_workload *w = mgr_find(m, name);
	if (!w || removing(m, w))
		return -ENOENT;
	const struct mgr_slot *s = mgr_slot(m, w);
	/* a reload's restart waits for the requests in flight: new ones wait for the new process */
	if (w->state != VRAM_WL_READY || s->next)
		return -EAGAIN;
	for (size_t n = 0; n < w->n_instances; n++) {
		struct vram_instance *in = &w->instances[w->next_port_rr++ % w->n_instances];
		if (in->child && in->healthy && in->port) {
			if (!mgr_endpoint_port_ours(m, w, in))
				return -EAGAIN;
			*ret_port = in->port;
			return 0;
		}
	}
	return -EAGAIN;
}
