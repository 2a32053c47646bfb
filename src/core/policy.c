/* SPDX-License-Identifier: MIT */
/*
 * Idle timers and eviction. The timers are a pure function of the workload
 * and the time, evaluated by the manager's periodic tick; eviction turns the
 * runtime into the planner's ledger so that placement decisions at run time
 * and in `vramctl plan` come from the same code.
 */
#include "core/policy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/units.h"
#include "core/engine.h"

uint64_t vram_policy_idle_ms(const struct vram_workload *w, uint64_t now_ms)
{
	if (w->in_flight > 0 || now_ms < w->last_used_ms)
		return 0;
	return now_ms - w->last_used_ms;
}

enum vram_idle_action vram_policy_idle_action(const struct vram_workload *w, uint64_t now_ms)
{
	if (w->in_flight > 0 || w->evicting)
		return VRAM_IDLE_NONE;
	if (w->state != VRAM_WL_READY && w->state != VRAM_WL_OFFLOADED && w->state != VRAM_WL_PARKED)
		return VRAM_IDLE_NONE;
	uint64_t idle = vram_policy_idle_ms(w, now_ms);
	if (w->release_after_ms != VRAM_DURATION_NEVER && idle >= w->release_after_ms)
		return VRAM_IDLE_RELEASE;
	if (w->state == VRAM_WL_READY && w->offload_after_ms != VRAM_DURATION_NEVER &&
	    idle >= w->offload_after_ms)
		return VRAM_IDLE_OFFLOAD;
	/* a park that failed (a full disk) is not tried again every tick */
	if (w->state == VRAM_WL_OFFLOADED && w->park_after_ms != VRAM_DURATION_NEVER &&
	    idle >= w->park_after_ms && !w->park_refused && !w->job && w->engine && w->engine->park)
		return VRAM_IDLE_PARK;
	return VRAM_IDLE_NONE;
}

bool vram_policy_evictable(const struct vram_workload *w)
{
	return w->state == VRAM_WL_READY && w->in_flight == 0 && !w->evicting && !w->job;
}

/* Bytes the process of `in` uses on GPU info->index as the backend sees it; 0 if unknown. */
static uint64_t measured_on(const struct vram_gpu_info *info, const struct vram_instance *in)
{
	uint64_t sum = 0;
	if (!info || !info->procs_valid || in->pid <= 0)
		return 0;
	for (size_t p = 0; p < info->n_procs; p++) {
		/* a container's memory is its process's, not the runtime's that vramd started */
		bool ours = info->procs[p].pid == in->pid ||
			    (in->container_pid > 0 && info->procs[p].pid == in->container_pid);
		if (ours && info->procs[p].used_bytes != UINT64_MAX)
			sum += info->procs[p].used_bytes;
	}
	return sum;
}

static const struct vram_gpu_info *info_of(const struct vram_gpu_info *infos, size_t n, unsigned index)
{
	for (size_t i = 0; infos && i < n; i++) {
		if (infos[i].index == index)
			return &infos[i];
	}
	return NULL;
}

/*
 * Appends a resident for `in`. Its bytes on each GPU are the larger of what it
 * was given there and what its process uses there (infos may be NULL).
 */
static int add_resident(struct vram_policy_ledger *l, struct vram_workload *owner,
			const struct vram_instance *in, bool evictable,
			const struct vram_gpu_info *infos, size_t n_infos)
{
	if (l->n_residents == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 16;
		struct vram_plan_resident *r = realloc(l->residents, ncap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		l->residents = r;
		struct vram_workload **o = realloc(l->owners, ncap * sizeof(*o));
		if (!o)
			return -ENOMEM;
		l->owners = o;
		uint64_t *b = realloc(l->bytes, ncap * VRAM_PLAN_MAX_GPUS * sizeof(*b));
		if (!b)
			return -ENOMEM;
		l->bytes = b;
		l->cap = ncap;
		/* the bytes moved: point every resident at its row again */
		for (size_t i = 0; i < l->n_residents; i++) {
			if (l->residents[i].bytes_on_gpu)
				l->residents[i].bytes_on_gpu = &l->bytes[i * VRAM_PLAN_MAX_GPUS];
		}
	}
	struct vram_plan_resident *r = &l->residents[l->n_residents];
	uint64_t *bytes = &l->bytes[l->n_residents * VRAM_PLAN_MAX_GPUS];
	memset(r, 0, sizeof(*r));
	r->name = owner->cfg->name;
	r->replica = in->replica;
	r->n_gpus = in->n_gpus;
	memcpy(r->gpus, in->gpus, in->n_gpus * sizeof(in->gpus[0]));
	r->bytes_per_gpu = 0;
	for (size_t g = 0; g < in->n_gpus; g++) {
		uint64_t given = in->bytes_on_gpu[g] ? in->bytes_on_gpu[g] : in->bytes_per_gpu;
		uint64_t used = measured_on(info_of(infos, n_infos, in->gpus[g]), in);
		/*
		 * An offload that reports its progress (one process on one GPU)
		 * holds less as it goes: what it held when it began, less what
		 * it has given back, which may be granted to a restore.
		 */
		if (in->swap_base && owner->state == VRAM_WL_OFFLOADING && in->n_gpus == 1) {
			bytes[g] = in->swap_base > in->swap_freed ? in->swap_base - in->swap_freed : 0;
			if (bytes[g] > r->bytes_per_gpu)
				r->bytes_per_gpu = bytes[g];
			continue;
		}
		bytes[g] = used > given ? used : given;
		if (bytes[g] > r->bytes_per_gpu)
			r->bytes_per_gpu = bytes[g];
	}
	r->bytes_on_gpu = bytes;
	r->avoid = (const char *const *)owner->cfg->avoid;
	r->priority = owner->cfg->priority;
	r->evictable = evictable;
	r->last_used_ms = owner->last_used_ms;
	l->owners[l->n_residents] = owner;
	l->n_residents++;
	l->ledger.residents = l->residents;
	l->ledger.n_residents = l->n_residents;
	return 0;
}

/* Bytes managed instances account for on GPU index, measured when the backend can. */
static uint64_t managed_on(const struct vram_gpu_info *info, struct vram_workload *const *ws,
			   size_t n_ws)
{
	uint64_t sum = 0;
	for (size_t k = 0; k < n_ws; k++) {
		const struct vram_workload *w = ws[k];
		for (size_t i = 0; i < w->n_instances; i++) {
			const struct vram_instance *in = &w->instances[i];
			bool on_this = false;
			for (size_t g = 0; g < in->n_gpus; g++)
				on_this |= in->gpus[g] == info->index;
			if (!on_this)
				continue;
			if (info->procs_valid && in->pid > 0)
				sum += measured_on(info, in);
			else if (in->resident)
				sum += in->bytes_per_gpu;
		}
	}
	return sum;
}

int vram_policy_ledger_build(struct vram_policy_ledger *l, const struct vram_gpu_info *infos,
			     size_t n_gpus, uint64_t reserve, struct vram_workload *const *ws,
			     size_t n_ws, const struct vram_workload *exclude)
{
	memset(l, 0, sizeof(*l));
	if (n_gpus > VRAM_PLAN_MAX_GPUS)
		n_gpus = VRAM_PLAN_MAX_GPUS;
	for (size_t i = 0; i < n_gpus; i++) {
		struct vram_plan_gpu *g = &l->gpus[i];
		g->index = infos[i].index;
		snprintf(g->name, sizeof(g->name), "%s", infos[i].name);
		g->total = infos[i].mem_total;
		g->reserve = reserve;
		uint64_t managed = managed_on(&infos[i], ws, n_ws);
		g->unmanaged = infos[i].mem_used > managed ? infos[i].mem_used - managed : 0;
	}
	l->n_gpus = n_gpus;
	l->ledger.gpus = l->gpus;
	l->ledger.n_gpus = n_gpus;
	for (size_t k = 0; k < n_ws; k++) {
		struct vram_workload *w = ws[k];
		if (w == exclude)
			continue;
		for (size_t i = 0; i < w->n_instances; i++) {
			const struct vram_instance *in = &w->instances[i];
			if (!in->resident || in->n_gpus == 0)
				continue;
			int r = add_resident(l, w, in, vram_policy_evictable(w), infos, n_gpus);
			if (r < 0) {
				vram_policy_ledger_done(l);
				return r;
			}
		}
	}
	return 0;
}

uint64_t vram_policy_room(const struct vram_policy_ledger *l, unsigned index)
{
	const struct vram_plan_gpu *g = NULL;
	for (size_t i = 0; i < l->n_gpus; i++)
		if (l->gpus[i].index == index)
			g = &l->gpus[i];
	if (!g)
		return 0;
	uint64_t held = g->reserve + g->unmanaged;
	for (size_t i = 0; i < l->n_residents; i++) {
		const struct vram_plan_resident *r = &l->residents[i];
		for (size_t k = 0; k < r->n_gpus; k++)
			if (r->gpus[k] == index)
				held += r->bytes_on_gpu ? r->bytes_on_gpu[k] : r->bytes_per_gpu;
	}
	return g->total > held ? g->total - held : 0;
}

void vram_policy_ledger_done(struct vram_policy_ledger *l)
{
	free(l->residents);
	free(l->owners);
	free(l->bytes);
	l->residents = NULL;
	l->owners = NULL;
	l->bytes = NULL;
	l->n_residents = l->cap = 0;
}

/* The model name of GPU index in the ledger, NULL when unknown. */
static const char *model_of(const struct vram_policy_ledger *l, unsigned index)
{
	for (size_t i = 0; i < l->n_gpus; i++) {
		if (l->gpus[i].index == index)
			return l->gpus[i].name;
	}
	return NULL;
}

/* Takes every resident of victim out of the memory count (it is about to free it all). */
static void drop_victim(struct vram_policy_ledger *l, const struct vram_workload *victim)
{
	for (size_t i = 0; i < l->n_residents; i++) {
		if (l->owners[i] != victim)
			continue;
		l->residents[i].bytes_per_gpu = 0;
		l->residents[i].bytes_on_gpu = NULL;
		l->residents[i].evictable = false;
	}
}

int vram_policy_place(struct vram_policy_ledger *l, const struct vram_workload *w,
		      bool allow_evict, enum vram_policy_where where, struct vram_policy_placement *ret)
{
	memset(ret, 0, sizeof(*ret));
	size_t base_residents = l->n_residents;
	/* victims are dropped from the ledger as they are chosen: keep the residents to hand back */
	struct vram_plan_resident *saved = NULL;
	if (base_residents) {
		saved = malloc(base_residents * sizeof(*saved));
		if (!saved)
			return -ENOMEM;
		memcpy(saved, l->residents, base_residents * sizeof(*saved));
	}
	int r = 0;
	for (size_t i = 0; i < w->n_instances && i < VRAM_CONFIG_MAX_REPLICAS; i++) {
		const struct vram_instance *in = &w->instances[i];
		bool had = where != VRAM_PLACE_ANY && in->n_gpus > 0;
		struct vram_workload_config pinned;
		struct vram_plan_request req = {
			.wl = w->cfg,
			.replica = (unsigned)i,
			.prefer = had ? in->gpus : NULL,
			.n_prefer = had ? in->n_gpus : 0,
			.allow_evict = allow_evict,
		};
		if (had && where == VRAM_PLACE_SAME_MODEL)
			req.same_model_as = model_of(l, in->gpus[0]);
		if (had && where == VRAM_PLACE_SAME_GPUS) {
			/* its process keeps its device memory addresses: only these GPUs, all of them */
			pinned = *w->cfg;
			pinned.gpus.kind = VRAM_GPUS_LIST;
			pinned.gpus.pins = (unsigned *)in->gpus;
			pinned.gpus.n_pins = in->n_gpus;
			pinned.gpus.count = (unsigned)in->n_gpus;
			pinned.fallback = VRAM_FALLBACK_NONE;
			req.wl = &pinned;
		}
		struct vram_plan_result *res = &ret->results[i];
		r = vram_plan_place(&l->ledger, &req, res);
		ret->n_results = i + 1;
		if (res->message[0])
			snprintf(ret->message, sizeof(ret->message), "%s", res->message);
		if (r < 0)
			break;
		for (size_t v = 0; v < res->n_victims; v++) {
			struct vram_workload *victim = l->owners[res->victims[v]];
			bool seen = false;
			for (size_t k = 0; k < ret->n_victims; k++)
				seen |= ret->victims[k] == victim;
			if (!seen && ret->n_victims < VRAM_PLAN_MAX_VICTIMS)
				ret->victims[ret->n_victims++] = victim;
			drop_victim(l, victim);
		}
		/* the placed instance holds its memory for the next replica's plan */
		if (res->n_gpus > 0) {
			struct vram_instance placed = *in;
			placed.n_gpus = res->n_gpus;
			memcpy(placed.gpus, res->gpus, res->n_gpus * sizeof(res->gpus[0]));
			memcpy(placed.bytes_on_gpu, res->bytes, res->n_gpus * sizeof(res->bytes[0]));
			placed.bytes_per_gpu = res->bytes_per_gpu;
			placed.pid = 0;
			r = add_resident(l, (struct vram_workload *)w, &placed, false, NULL, 0);
			if (r < 0)
				break;
		}
	}
	/* hand the ledger back as it was */
	if (saved)
		memcpy(l->residents, saved, base_residents * sizeof(*saved));
	free(saved);
	for (size_t i = 0; i < base_residents; i++)
		l->residents[i].bytes_on_gpu = &l->bytes[i * VRAM_PLAN_MAX_GPUS]; /* l->bytes may have moved */
	l->n_residents = base_residents;
	l->ledger.n_residents = base_residents;
	return r;
}
