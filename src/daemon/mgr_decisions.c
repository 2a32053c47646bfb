/* SPDX-License-Identifier: MIT */
/*
 * The ring of the manager's last decisions (decisions.h). Fed from two
 * places: the planner's outcome in manager.c (plan_workload) and the state
 * changes in mgr_registry.c (emit_state), which it filters for those whose
 * reason is a decision. Allocated on the first record, so a manager that
 * never decides anything costs nothing; freed with the manager.
 */
#include "daemon/manager_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "core/policy.h"
#include "daemon/decisions.h"

#define NAME_MAX_BYTES 128 /* bytes of a workload name kept */
#define GPUS_MAX 16        /* GPUs of a placement listed */
#define EVICTS_MAX 8       /* victims of a placement listed */

enum decision_kind {
	DECISION_PLACED,    /* the planner placed a start or restore */
	DECISION_REFUSED,   /* the planner found no room (first try) */
	DECISION_EVICTED,   /* offloaded to make room for another workload */
	DECISION_IDLE,      /* offloaded or released by an idle timer */
	DECISION_HOST_ROOM, /* parked or released to make room in host memory */
	DECISION_NO_ROOM,   /* a start or restore given up for want of room */
};

/* The names in the JSON ("kind"), by enum decision_kind. */
static const char *const kind_names[] = {
	[DECISION_PLACED] = "placed",       [DECISION_REFUSED] = "refused",
	[DECISION_EVICTED] = "evicted",     [DECISION_IDLE] = "idle",
	[DECISION_HOST_ROOM] = "host_room", [DECISION_NO_ROOM] = "no_room",
};

struct decision {
	uint64_t id;            /* 1, 2, ...: grows by one a record */
	double wall_s;          /* s since the epoch */
	enum decision_kind kind;
	char workload[NAME_MAX_BYTES];
	char reason[VRAM_DECISIONS_TEXT_MAX];
	unsigned gpus[GPUS_MAX]; /* placed: the GPUs of every instance, in order, without repeats */
	size_t n_gpus;
	uint64_t bytes_per_gpu;  /* placed: bytes on each GPU (the first instance's) */
	char evicts[EVICTS_MAX][NAME_MAX_BYTES]; /* placed: the workloads it evicts */
	size_t n_evicts;
	const char *from, *to;   /* a state change's: static state names; NULL otherwise */
};

struct mgr_decisions {
	struct decision ring[VRAM_DECISIONS_MAX];
	size_t next;      /* slot of the next record */
	size_t n;         /* records held, at most VRAM_DECISIONS_MAX */
	uint64_t last_id;
};

static double wall_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* A fresh record at the ring's head (the oldest is dropped); NULL on out of memory. */
static struct decision *record(struct vram_manager *m, enum decision_kind kind, const char *workload,
			       const char *reason)
{
	if (!m->decisions) {
		m->decisions = calloc(1, sizeof(*m->decisions));
		if (!m->decisions)
			return NULL;
	}
	struct mgr_decisions *d = m->decisions;
	struct decision *r = &d->ring[d->next];
	memset(r, 0, sizeof(*r));
	d->next = (d->next + 1) % VRAM_DECISIONS_MAX;
	if (d->n < VRAM_DECISIONS_MAX)
		d->n++;
	r->id = ++d->last_id;
	r->wall_s = wall_now();
	r->kind = kind;
	snprintf(r->workload, sizeof(r->workload), "%s", workload);
	snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
	return r;
}

void mgr_decision_plan(struct vram_manager *m, const struct vram_workload *w,
		       const struct vram_policy_placement *pl, int result, bool first_try)
{
	/* a start waiting on evictions plans again on every change: only its outcome counts */
	if (result < 0 && !first_try)
		return;
	if (result < 0) {
		record(m, DECISION_REFUSED, w->cfg->name, pl->message[0] ? pl->message : "does not fit");
		return;
	}
	struct decision *r = record(m, DECISION_PLACED, w->cfg->name, pl->message);
	if (!r)
		return;
	for (size_t i = 0; i < pl->n_results; i++) {
		const struct vram_plan_result *res = &pl->results[i];
		if (i == 0)
			r->bytes_per_gpu = res->bytes_per_gpu;
		for (size_t g = 0; g < res->n_gpus && r->n_gpus < GPUS_MAX; g++) {
			bool seen = false;
			for (size_t k = 0; k < r->n_gpus; k++)
				seen |= r->gpus[k] == res->gpus[g];
			if (!seen)
				r->gpus[r->n_gpus++] = res->gpus[g];
		}
	}
	for (size_t v = 0; v < pl->n_victims && r->n_evicts < EVICTS_MAX; v++)
		snprintf(r->evicts[r->n_evicts++], NAME_MAX_BYTES, "%s", pl->victims[v]->cfg->name);
	if (!r->reason[0]) {
		size_t len = (size_t)snprintf(r->reason, sizeof(r->reason), "fits on GPU");
		for (size_t k = 0; k < r->n_gpus && len < sizeof(r->reason); k++)
			len += (size_t)snprintf(r->reason + len, sizeof(r->reason) - len, "%s%u",
						k ? ", " : " ", r->gpus[k]);
	}
}

/* The kind of record a state change's reason makes into *ret; false when it is no decision. */
static bool kind_of(enum vram_event_reason reason, enum decision_kind *ret)
{
	switch (reason) {
	case VRAM_REASON_EVICTED: *ret = DECISION_EVICTED; return true;
	case VRAM_REASON_IDLE: *ret = DECISION_IDLE; return true;
	case VRAM_REASON_HOST_ROOM: *ret = DECISION_HOST_ROOM; return true;
	case VRAM_REASON_NO_ROOM: *ret = DECISION_NO_ROOM; return true;
	default: return false;
	}
}

void mgr_decision_state(struct vram_manager *m, const struct vram_workload *w,
			enum vram_wl_state from, enum vram_event_reason reason, const char *text)
{
	enum decision_kind kind;
	if (!kind_of(reason, &kind))
		return;
	struct decision *r = record(m, kind, w->cfg->name, text && *text ? text : kind_names[kind]);
	if (r) {
		r->from = vram_wl_state_name(from);
		r->to = vram_wl_state_name(w->state);
	}
}

json_t *vram_manager_decisions_json(struct vram_manager *m)
{
	json_t *a = json_array();
	struct mgr_decisions *d = m->decisions;
	for (size_t i = 0; a && d && i < d->n; i++) {
		const struct decision *r =
			&d->ring[(d->next + VRAM_DECISIONS_MAX - d->n + i) % VRAM_DECISIONS_MAX];
		json_t *o = json_pack("{s:I,s:f,s:s,s:s,s:s}", "id", (json_int_t)r->id, "time",
				      r->wall_s, "kind", kind_names[r->kind], "workload", r->workload, "reason",
				      r->reason);
		if (o && r->kind == DECISION_PLACED) {
			json_t *gpus = json_array(), *evicts = json_array();
			for (size_t k = 0; gpus && k < r->n_gpus; k++)
				json_array_append_new(gpus, json_integer(r->gpus[k]));
			for (size_t k = 0; evicts && k < r->n_evicts; k++)
				json_array_append_new(evicts, json_string(r->evicts[k]));
			json_object_set_new(o, "gpus", gpus ? gpus : json_null());
			json_object_set_new(o, "bytes_per_gpu", json_integer((json_int_t)r->bytes_per_gpu));
			json_object_set_new(o, "evicts", evicts ? evicts : json_null());
		}
		if (o && r->from) {
			json_object_set_new(o, "from", json_string(r->from));
			json_object_set_new(o, "to", json_string(r->to));
		}
		if (!o || json_array_append_new(a, o) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a ? json_pack("{s:o,s:i}", "decisions", a, "max", VRAM_DECISIONS_MAX) : NULL;
}

static void decisions_done(struct vram_manager *m)
{
	free(m->decisions);
	m->decisions = NULL;
}

const struct mgr_feature mgr_decisions_feature = {
	.name = "decisions",
	.done = decisions_done,
};
