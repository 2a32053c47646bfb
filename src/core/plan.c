/* SPDX-License-Identifier: MIT */
/*
 * The placement planner: given a ledger of GPU memory and one request, it
 * picks GPUs, names what would have to be evicted, falls back to fewer GPUs
 * or the CPU as the workload allows, or refuses with the numbers a person
 * needs to fix the config. The rules are written once, at vram_plan_place in
 * plan.h; this file follows them in the same order.
 *
 * Everything here is a pure function of its inputs: the daemon, `vramctl
 * plan` and the tests call the same code. Per-GPU state lives in fixed
 * arrays (at most VRAM_PLAN_MAX_GPUS); the only allocation in
 * vram_plan_place is the list of eviction candidates, built when a request
 * does not fit as it is.
 */
#include "core/plan.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/units.h"

#define NO_POS SIZE_MAX
/* How many residents a refusal message names before "and N more". */
#define MSG_LIST_MAX 6

/* A bounded writer into a result's message; a message that does not fit
 * ends in "..." rather than being cut silently. */
struct msg {
	char *buf;
	size_t size;
	size_t len;
};

__attribute__((format(printf, 2, 3)))
static void msg_add(struct msg *m, const char *fmt, ...)
{
	if (m->len + 1 >= m->size)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(m->buf + m->len, m->size - m->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= m->size - m->len) {
		m->len = m->size - 1;
		if (m->size >= 4)
			memcpy(m->buf + m->size - 4, "...", 3);
		return;
	}
	m->len += (size_t)n;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_sub(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

static size_t pos_of(const struct vram_plan_ledger *l, unsigned index)
{
	if (index < l->n_gpus && l->gpus[index].index == index)
		return index; /* the usual case: indices are positions */
	for (size_t i = 0; i < l->n_gpus; i++)
		if (l->gpus[i].index == index)
			return i;
	return NO_POS;
}

static uint64_t resident_bytes_at(const struct vram_plan_resident *r, size_t slot)
{
	return r->bytes_on_gpu ? r->bytes_on_gpu[slot] : r->bytes_per_gpu;
}

static bool name_in(const char *name, char *const *list, size_t n)
{
	for (size_t i = 0; list && i < n && list[i]; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

static bool name_in_null_terminated(const char *name, const char *const *list)
{
	for (size_t i = 0; list && list[i]; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

uint64_t vram_plan_free_bytes(const struct vram_plan_ledger *ledger, unsigned gpu_index)
{
	size_t pos = pos_of(ledger, gpu_index);
	if (pos == NO_POS)
		return 0;
	const struct vram_plan_gpu *g = &ledger->gpus[pos];
	uint64_t used = sat_add(g->reserve, g->unmanaged);
	for (size_t i = 0; i < ledger->n_residents; i++) {
		const struct vram_plan_resident *r = &ledger->residents[i];
		for (size_t j = 0; j < r->n_gpus; j++)
			if (r->gpus[j] == gpu_index)
				used = sat_add(used, resident_bytes_at(r, j));
	}
	return sat_sub(g->total, used);
}

const char *vram_plan_outcome_name(enum vram_plan_outcome o)
{
	switch (o) {
	case VRAM_PLAN_FITS: return "fits";
	case VRAM_PLAN_EVICT: return "evict";
	case VRAM_PLAN_SHARED: return "shared";
	case VRAM_PLAN_CPU: return "cpu";
	case VRAM_PLAN_REFUSED: return "refused";
	}
	return "unknown";
}

/* ------------------------------------------------------------------ */
/* Planner state for one request                                        */

struct gpu_state {
	uint64_t total;         /* bytes */
	uint64_t free;          /* bytes, after reserve, unmanaged and residents */
	unsigned n_residents;   /* managed instances on it */
	unsigned n_same;        /* instances of the request's workload on it (counted for spread only) */
	bool in_use;            /* residents or unmanaged memory */
	bool other_model;       /* excluded by same_model_as */
	bool preferred;         /* listed in req->prefer */
	const char *avoided_by; /* a resident that makes it excluded by anti-affinity, or NULL */
};

/* Eviction candidates, sorted into eviction order. */
struct victim_key {
	int priority;
	uint64_t last_used_ms;
	size_t resident;
};

struct planner {
	const struct vram_plan_ledger *l;
	const struct vram_plan_request *req;
	const struct vram_workload_config *wl;
	size_t n;                   /* GPUs in the ledger */
	unsigned asked;             /* GPUs per instance as written */
	struct gpu_state g[VRAM_PLAN_MAX_GPUS];
	bool strict[VRAM_PLAN_MAX_GPUS]; /* candidates for the request as written */
	bool strict_invalid;        /* pins to a missing GPU, or more GPUs than exist */
	unsigned missing_pin;       /* the first pin that does not exist */
	bool have_missing_pin;
	struct victim_key *victims; /* owned; NULL until built */
	size_t n_victims;
	bool victims_built;
};

/* One usable GPU for an attempt, with what eviction would cost there. */
struct cand {
	size_t pos;
	uint64_t need;        /* bytes */
	unsigned n_evict;     /* victims needed on this GPU alone; 0 = fits as it is */
	bool evict_equal;     /* one of them has the request's own priority */
	uint64_t evict_bytes; /* bytes those victims free here */
};

/* The outcome of one successful attempt. */
struct choice {
	size_t pos[VRAM_PLAN_MAX_GPUS];
	uint64_t need[VRAM_PLAN_MAX_GPUS];
	size_t n;
	size_t victims[VRAM_PLAN_MAX_VICTIMS]; /* resident indices, eviction order */
	size_t n_victims;
	bool shares_avoided;   /* placed next to a workload it avoids */
};

static void planner_init(struct planner *p, const struct vram_plan_ledger *l,
			 const struct vram_plan_request *req)
{
	memset(p, 0, sizeof(*p));
	p->l = l;
	p->req = req;
	p->wl = req->wl;
	p->n = l->n_gpus;
	for (size_t i = 0; i < p->n; i++) {
		const struct vram_plan_gpu *g = &l->gpus[i];
		p->g[i].total = g->total;
		p->g[i].free = sat_sub(g->total, sat_add(g->reserve, g->unmanaged));
		p->g[i].in_use = g->unmanaged > 0;
		p->g[i].other_model = req->same_model_as && strcmp(g->name, req->same_model_as) != 0;
	}
	for (size_t i = 0; i < req->n_prefer; i++) {
		size_t pos = pos_of(l, req->prefer[i]);
		if (pos != NO_POS)
			p->g[pos].preferred = true;
	}
	const char *me = p->wl->name;
	bool spread = p->wl->placement == VRAM_PLACEMENT_SPREAD;
	for (size_t i = 0; i < l->n_residents; i++) {
		const struct vram_plan_resident *r = &l->residents[i];
		/* Names are compared only where the answer is used (spread counts
		 * siblings, avoid lists); this loop runs for every resident on
		 * every placement. Names usually come from one config: the
		 * pointer is tried first. */
		bool check_avoid = r->name && (p->wl->n_avoid || r->avoid);
		bool same = (spread || check_avoid) &&
			    (r->name == me || (r->name && strcmp(r->name, me) == 0));
		bool avoid = check_avoid && !same &&
			     (name_in(r->name, p->wl->avoid, p->wl->n_avoid) ||
			      name_in_null_terminated(me, r->avoid));
		for (size_t j = 0; j < r->n_gpus; j++) {
			size_t pos = pos_of(l, r->gpus[j]);
			if (pos == NO_POS)
				continue;
			struct gpu_state *g = &p->g[pos];
			g->free = sat_sub(g->free, resident_bytes_at(r, j));
			g->n_residents++;
			g->in_use = true;
			if (same)
				g->n_same++;
			if (avoid && !g->avoided_by)
				g->avoided_by = r->name;
		}
	}
}

static void planner_done(struct planner *p)
{
	free(p->victims);
	p->victims = NULL;
}

static int cmp_victim_key(const void *a, const void *b)
{
	const struct victim_key *x = a, *y = b;
	if (x->priority != y->priority)
		return x->priority < y->priority ? -1 : 1;
	if (x->last_used_ms != y->last_used_ms)
		return x->last_used_ms < y->last_used_ms ? -1 : 1;
	return x->resident < y->resident ? -1 : (x->resident > y->resident);
}

static bool may_evict(const struct planner *p, const struct vram_plan_resident *r)
{
	return r->evictable && r->n_gpus > 0 && r->priority <= p->wl->priority &&
	       !(r->name == p->wl->name || (r->name && strcmp(r->name, p->wl->name) == 0));
}

/* Builds the eviction order once per request. Out of memory leaves it empty:
 * the request is then planned as if nothing could be evicted. */
static void build_victims(struct planner *p)
{
	if (p->victims_built)
		return;
	p->victims_built = true;
	if (p->l->n_residents == 0)
		return;
	p->victims = malloc(p->l->n_residents * sizeof(*p->victims));
	if (!p->victims)
		return;
	for (size_t i = 0; i < p->l->n_residents; i++) {
		const struct vram_plan_resident *r = &p->l->residents[i];
		if (may_evict(p, r))
			p->victims[p->n_victims++] = (struct victim_key){
				.priority = r->priority, .last_used_ms = r->last_used_ms, .resident = i };
	}
	qsort(p->victims, p->n_victims, sizeof(*p->victims), cmp_victim_key);
}

/* The slot of GPU position pos in resident r, or NO_POS. */
static size_t resident_slot(const struct planner *p, const struct vram_plan_resident *r, size_t pos)
{
	unsigned index = p->l->gpus[pos].index;
	for (size_t j = 0; j < r->n_gpus; j++)
		if (r->gpus[j] == index)
			return j;
	return NO_POS;
}

/* Bytes this request needs on GPU pos when spread over k GPUs. */
static uint64_t need_on(const struct planner *p, size_t pos, unsigned k)
{
	const struct vram_mem *m = &p->wl->memory;
	if (m->is_fraction)
		return vram_mem_resolve(m, p->g[pos].total);
	if (k >= p->asked)
		return m->bytes;
	/* The same total over fewer GPUs, rounded up. */
	if (m->bytes > UINT64_MAX / p->asked)
		return UINT64_MAX;
	uint64_t total = m->bytes * p->asked;
	return total / k + (total % k != 0);
}

/* What evicting, in eviction order, would take for GPU c->pos alone. */
static bool cost_eviction(const struct planner *p, struct cand *c)
{
	uint64_t have = p->g[c->pos].free;
	for (size_t i = 0; i < p->n_victims && have < c->need; i++) {
		const struct vram_plan_resident *r = &p->l->residents[p->victims[i].resident];
		size_t slot = resident_slot(p, r, c->pos);
		if (slot == NO_POS)
			continue;
		uint64_t b = resident_bytes_at(r, slot);
		have = sat_add(have, b);
		c->n_evict++;
		c->evict_bytes = sat_add(c->evict_bytes, b);
		if (r->priority == p->wl->priority)
			c->evict_equal = true;
	}
	return have >= c->need;
}

/* Orders candidates: no eviction before eviction (lower priorities, fewer
 * victims, fewer bytes first), then prefer[], then the placement policy, then
 * the GPU index. */
static int cmp_cand(const struct planner *p, const struct cand *a, const struct cand *b)
{
	if ((a->n_evict > 0) != (b->n_evict > 0))
		return a->n_evict > 0 ? 1 : -1;
	if (a->evict_equal != b->evict_equal)
		return a->evict_equal ? 1 : -1;
	if (a->n_evict != b->n_evict)
		return a->n_evict < b->n_evict ? -1 : 1;
	if (a->evict_bytes != b->evict_bytes)
		return a->evict_bytes < b->evict_bytes ? -1 : 1;
	const struct gpu_state *ga = &p->g[a->pos], *gb = &p->g[b->pos];
	if (ga->preferred != gb->preferred)
		return ga->preferred ? -1 : 1;
	switch (p->wl->placement) {
	case VRAM_PLACEMENT_PACK: {
		if (ga->in_use != gb->in_use)
			return ga->in_use ? -1 : 1;
		uint64_t la = sat_sub(ga->free, a->need), lb = sat_sub(gb->free, b->need);
		if (la != lb)
			return la < lb ? -1 : 1;
		break;
	}
	case VRAM_PLACEMENT_SPREAD:
		if (ga->n_same != gb->n_same)
			return ga->n_same < gb->n_same ? -1 : 1;
		if (ga->n_residents != gb->n_residents)
			return ga->n_residents < gb->n_residents ? -1 : 1;
		if (ga->free != gb->free)
			return ga->free > gb->free ? -1 : 1;
		break;
	case VRAM_PLACEMENT_MOST_FREE:
		if (ga->free != gb->free)
			return ga->free > gb->free ? -1 : 1;
		break;
	}
	unsigned ia = p->l->gpus[a->pos].index, ib = p->l->gpus[b->pos].index;
	return ia < ib ? -1 : (ia > ib);
}

static bool all_fit(const struct choice *c, const uint64_t *avail)
{
	for (size_t i = 0; i < c->n; i++)
		if (avail[i] < c->need[i])
			return false;
	return true;
}

/* Adds (sign > 0) or removes the memory victim r frees on the chosen GPUs. */
static bool apply_victim(const struct planner *p, const struct choice *c,
			 const struct vram_plan_resident *r, uint64_t *avail, int sign, bool only_if_short)
{
	bool helps = false;
	for (size_t i = 0; i < c->n; i++) {
		size_t slot = resident_slot(p, r, c->pos[i]);
		if (slot != NO_POS && avail[i] < c->need[i])
			helps = true;
	}
	if (only_if_short && !helps)
		return false;
	for (size_t i = 0; i < c->n; i++) {
		size_t slot = resident_slot(p, r, c->pos[i]);
		if (slot == NO_POS)
			continue;
		uint64_t b = resident_bytes_at(r, slot);
		avail[i] = sign > 0 ? sat_add(avail[i], b) : sat_sub(avail[i], b);
	}
	return true;
}

/* Picks the victims for the chosen GPUs: eviction order, only residents on
 * a GPU that is still short, then drops any that the others made needless
 * (latest first, so the least valuable victims stay the ones evicted). */
static bool choose_victims(const struct planner *p, struct choice *c)
{
	uint64_t avail[VRAM_PLAN_MAX_GPUS];
	for (size_t i = 0; i < c->n; i++)
		avail[i] = p->g[c->pos[i]].free;
	c->n_victims = 0;
	for (size_t v = 0; v < p->n_victims && !all_fit(c, avail); v++) {
		const struct vram_plan_resident *r = &p->l->residents[p->victims[v].resident];
		if (!apply_victim(p, c, r, avail, +1, true))
			continue;
		if (c->n_victims == VRAM_PLAN_MAX_VICTIMS)
			return false;
		c->victims[c->n_victims++] = p->victims[v].resident;
	}
	if (!all_fit(c, avail))
		return false;
	for (size_t k = c->n_victims; k-- > 0;) {
		const struct vram_plan_resident *r = &p->l->residents[c->victims[k]];
		apply_victim(p, c, r, avail, -1, false);
		if (all_fit(c, avail)) {
			memmove(&c->victims[k], &c->victims[k + 1], (c->n_victims - k - 1) * sizeof(c->victims[0]));
			c->n_victims--;
		} else {
			apply_victim(p, c, r, avail, +1, false);
		}
	}
	return true;
}

/* One attempt: k GPUs among eligible[], with or without eviction. */
static bool try_place(struct planner *p, const bool *eligible, unsigned k, bool evict,
		      struct choice *out)
{
	struct cand cands[VRAM_PLAN_MAX_GPUS];
	size_t n_cands = 0;
	if (evict)
		build_victims(p);
	for (size_t pos = 0; pos < p->n; pos++) {
		if (!eligible[pos])
			continue;
		struct cand c = { .pos = pos, .need = need_on(p, pos, k) };
		if (p->g[pos].free < c.need && !(evict && cost_eviction(p, &c)))
			continue;
		/* insertion sort: at most VRAM_PLAN_MAX_GPUS entries */
		size_t at = n_cands;
		while (at > 0 && cmp_cand(p, &c, &cands[at - 1]) < 0) {
			cands[at] = cands[at - 1];
			at--;
		}
		cands[at] = c;
		n_cands++;
	}
	if (n_cands < k)
		return false;
	memset(out, 0, sizeof(*out));
	out->n = k;
	for (size_t i = 0; i < k; i++) {
		out->pos[i] = cands[i].pos;
		out->need[i] = cands[i].need;
		if (p->g[cands[i].pos].avoided_by)
			out->shares_avoided = true;
	}
	if (evict && cands[k - 1].n_evict > 0 && !choose_victims(p, out))
		return false;
	return true;
}

/* ------------------------------------------------------------------ */
/* Messages                                                             */

static void add_instance_name(struct msg *m, const char *name, unsigned replica, bool show_replica)
{
	if (show_replica)
		msg_add(m, "%s#%u", name, replica);
	else
		msg_add(m, "%s", name);
}

static void add_need(struct msg *m, const struct planner *p, unsigned k)
{
	char b[32];
	const struct vram_mem *mem = &p->wl->memory;
	msg_add(m, "%u GPU%s x ", k, k == 1 ? "" : "s");
	if (!mem->is_fraction || p->n == 0) {
		msg_add(m, "%s", vram_units_format_bytes(need_on(p, 0, k), b, sizeof(b)));
		return;
	}
	msg_add(m, "%s", vram_units_format_mem(mem, b, sizeof(b)));
	bool same_size = true;
	for (size_t i = 1; i < p->n; i++)
		if (p->g[i].total != p->g[0].total)
			same_size = false;
	if (same_size)
		msg_add(m, " (%s)", vram_units_format_bytes(need_on(p, 0, k), b, sizeof(b)));
	else
		msg_add(m, " of each GPU");
}

static void add_ask(struct msg *m, const struct planner *p)
{
	add_instance_name(m, p->wl->name, p->req->replica, p->wl->replicas > 1);
	msg_add(m, ": needs ");
	add_need(m, p, p->asked);
	if (p->wl->gpus.kind == VRAM_GPUS_LIST) {
		msg_add(m, " on GPU");
		for (size_t i = 0; i < p->wl->gpus.n_pins; i++)
			msg_add(m, "%s%u", i ? "," : "", p->wl->gpus.pins[i]);
	}
}

static void add_gpu_list(struct msg *m, const struct planner *p, const struct choice *c)
{
	msg_add(m, "GPU");
	for (size_t i = 0; i < c->n; i++)
		msg_add(m, "%s%u", i ? "," : "", p->l->gpus[c->pos[i]].index);
}

static void add_resident(struct msg *m, const struct planner *p, const struct vram_plan_resident *r)
{
	char b[32];
	add_instance_name(m, r->name ? r->name : "?", r->replica, r->replica > 0);
	msg_add(m, " (GPU");
	for (size_t j = 0; j < r->n_gpus; j++)
		msg_add(m, "%s%u", j ? "," : "", r->gpus[j]);
	msg_add(m, ", %s", vram_units_format_bytes(resident_bytes_at(r, 0), b, sizeof(b)));
}

static void add_free_list(struct msg *m, const struct planner *p)
{
	char b[32];
	msg_add(m, "free:");
	if (p->n == 0)
		msg_add(m, " no GPU");
	for (size_t i = 0; i < p->n; i++) {
		msg_add(m, "%s GPU%u %s", i ? "," : "", p->l->gpus[i].index,
			vram_units_format_bytes(p->g[i].free, b, sizeof(b)));
		if (p->g[i].avoided_by)
			msg_add(m, " (holds %s, avoided)", p->g[i].avoided_by);
		else if (p->g[i].other_model)
			msg_add(m, " (other model)");
	}
}

/* Why the request as written does not fit, in a few words. */
static void add_strict_cause(struct msg *m, const struct planner *p)
{
	if (p->have_missing_pin) {
		msg_add(m, "GPU%u does not exist (%zu GPU%s here)", p->missing_pin, p->n,
			p->n == 1 ? "" : "s");
		return;
	}
	if (p->asked > p->n) {
		msg_add(m, "only %zu GPU%s here", p->n, p->n == 1 ? "" : "s");
		return;
	}
	unsigned now = 0, eligible = 0;
	for (size_t i = 0; i < p->n; i++) {
		if (!p->strict[i])
			continue;
		eligible++;
		if (p->g[i].free >= need_on(p, i, p->asked))
			now++;
	}
	if (eligible < p->asked)
		msg_add(m, "%u of the GPUs may be used (anti-affinity or GPU model), %u needed",
			eligible, p->asked);
	else
		msg_add(m, "room on %u of the %u GPU%s needed", now, p->asked, p->asked == 1 ? "" : "s");
}

/* Whether r holds memory on a GPU the request as written could use. */
static bool on_strict_candidate(const struct planner *p, const struct vram_plan_resident *r)
{
	for (size_t j = 0; j < r->n_gpus; j++) {
		size_t pos = pos_of(p->l, r->gpus[j]);
		if (pos != NO_POS && p->strict[pos])
			return true;
	}
	return false;
}

/* What eviction could do on the request's own GPUs, and why it is not enough. */
static void add_eviction_summary(struct msg *m, struct planner *p)
{
	build_victims(p);
	unsigned listed = 0, more = 0;
	for (size_t v = 0; v < p->n_victims; v++) {
		const struct vram_plan_resident *r = &p->l->residents[p->victims[v].resident];
		if (!on_strict_candidate(p, r))
			continue;
		if (listed == MSG_LIST_MAX) {
			more++;
			continue;
		}
		msg_add(m, listed ? ", " : "; could evict: ");
		add_resident(m, p, r);
		msg_add(m, ", priority %d)", r->priority);
		listed++;
	}
	if (more)
		msg_add(m, " and %u more", more);
	if (listed == 0)
		msg_add(m, "; nothing to evict");
	unsigned kept = 0;
	more = 0;
	for (size_t i = 0; i < p->l->n_residents; i++) {
		const struct vram_plan_resident *r = &p->l->residents[i];
		if (r->n_gpus == 0 || may_evict(p, r))
			continue;
		if (!on_strict_candidate(p, r))
			continue;
		if (kept == MSG_LIST_MAX) {
			more++;
			continue;
		}
		msg_add(m, kept ? ", " : "; kept: ");
		add_resident(m, p, r);
		if (r->name && strcmp(r->name, p->wl->name) == 0)
			msg_add(m, ", same workload)");
		else if (!r->evictable)
			msg_add(m, ", busy)");
		else
			msg_add(m, ", priority %d > %d)", r->priority, p->wl->priority);
		kept++;
	}
	if (more)
		msg_add(m, " and %u more", more);
	if (listed > 0 && !p->strict_invalid) {
		unsigned could = 0;
		for (size_t pos = 0; pos < p->n; pos++) {
			if (!p->strict[pos])
				continue;
			uint64_t have = p->g[pos].free;
			for (size_t v = 0; v < p->n_victims; v++) {
				const struct vram_plan_resident *r = &p->l->residents[p->victims[v].resident];
				size_t slot = resident_slot(p, r, pos);
				if (slot != NO_POS)
					have = sat_add(have, resident_bytes_at(r, slot));
			}
			if (have >= need_on(p, pos, p->asked))
				could++;
		}
		msg_add(m, "; evicting all of it leaves room on %u of the %u GPU%s needed", could,
			p->asked, p->asked == 1 ? "" : "s");
	}
}

/* ------------------------------------------------------------------ */
/* vram_plan_place                                                      */

static void fill_result(const struct planner *p, const struct choice *c, enum vram_plan_outcome o,
			struct vram_plan_result *ret)
{
	ret->outcome = o;
	/* ascending GPU index: the order CUDA_VISIBLE_DEVICES lists them in */
	size_t order[VRAM_PLAN_MAX_GPUS];
	for (size_t i = 0; i < c->n; i++) {
		size_t at = i;
		while (at > 0 && p->l->gpus[c->pos[order[at - 1]]].index > p->l->gpus[c->pos[i]].index) {
			order[at] = order[at - 1];
			at--;
		}
		order[at] = i;
	}
	ret->n_gpus = c->n;
	ret->bytes_per_gpu = 0;
	for (size_t i = 0; i < c->n; i++) {
		ret->gpus[i] = p->l->gpus[c->pos[order[i]]].index;
		ret->bytes[i] = c->need[order[i]];
		if (ret->bytes[i] > ret->bytes_per_gpu)
			ret->bytes_per_gpu = ret->bytes[i];
	}
	memcpy(ret->victims, c->victims, c->n_victims * sizeof(c->victims[0]));
	ret->n_victims = c->n_victims;
}

static void add_victims(struct msg *m, const struct planner *p, const struct choice *c)
{
	msg_add(m, "evicts ");
	for (size_t i = 0; i < c->n_victims; i++) {
		const struct vram_plan_resident *r = &p->l->residents[c->victims[i]];
		if (i)
			msg_add(m, ", ");
		add_resident(m, p, r);
		msg_add(m, ", priority %d)", r->priority);
	}
}

static int place_cpu(struct planner *p, struct vram_plan_result *ret, struct msg *m, bool fallback)
{
	ret->outcome = VRAM_PLAN_CPU;
	if (!fallback) {
		msg_add(m, "runs on the CPU (gpus: 0)");
		return 0;
	}
	msg_add(m, "fallback cpu: ");
	add_ask(m, p);
	msg_add(m, "; ");
	add_strict_cause(m, p);
	msg_add(m, "; ");
	add_free_list(m, p);
	return 0;
}

/* Fallback share: fewer GPUs, pins that exist kept, then avoid relaxed. */
static bool try_share(struct planner *p, bool evict, struct choice *c, unsigned *ret_k)
{
	bool relaxed[VRAM_PLAN_MAX_GPUS] = { false };
	unsigned n_relaxed = 0;
	if (p->wl->gpus.kind == VRAM_GPUS_LIST) {
		for (size_t i = 0; i < p->wl->gpus.n_pins; i++) {
			size_t pos = pos_of(p->l, p->wl->gpus.pins[i]);
			if (pos != NO_POS && !relaxed[pos] && !p->g[pos].other_model) {
				relaxed[pos] = true;
				n_relaxed++;
			}
		}
	}
	if (n_relaxed == 0) {
		for (size_t pos = 0; pos < p->n; pos++) {
			relaxed[pos] = !p->g[pos].other_model;
			n_relaxed += relaxed[pos];
		}
	}
	bool respecting[VRAM_PLAN_MAX_GPUS];
	for (size_t pos = 0; pos < p->n; pos++)
		respecting[pos] = relaxed[pos] && !p->g[pos].avoided_by;
	unsigned kmax = p->asked < n_relaxed ? p->asked : n_relaxed;
	for (unsigned k = kmax; k >= 1; k--) {
		bool same_as_strict = k == p->asked && !p->strict_invalid &&
				      memcmp(respecting, p->strict, p->n * sizeof(bool)) == 0;
		if (!same_as_strict && try_place(p, respecting, k, evict, c)) {
			*ret_k = k;
			return true;
		}
		if (try_place(p, relaxed, k, evict, c)) {
			*ret_k = k;
			return true;
		}
	}
	return false;
}

int vram_plan_place(const struct vram_plan_ledger *ledger, const struct vram_plan_request *req,
		    struct vram_plan_result *ret)
{
	const struct vram_workload_config *wl = req->wl;
	ret->outcome = VRAM_PLAN_REFUSED;
	ret->n_gpus = 0;
	ret->bytes_per_gpu = 0;
	ret->n_victims = 0;
	ret->error = 0;
	ret->message[0] = '\0';
	struct msg m = { .buf = ret->message, .size = sizeof(ret->message) };

	if (ledger->n_gpus > VRAM_PLAN_MAX_GPUS) {
		msg_add(&m, "%s: %zu GPUs, at most %d can be planned", wl->name, ledger->n_gpus,
			VRAM_PLAN_MAX_GPUS);
		return ret->error = -EINVAL;
	}
	struct planner p;
	planner_init(&p, ledger, req);
	int r = 0;
	struct choice c;

	if (wl->gpus.kind == VRAM_GPUS_COUNT && wl->gpus.count == 0) {
		r = place_cpu(&p, ret, &m, false);
		goto out;
	}
	p.asked = wl->gpus.kind == VRAM_GPUS_LIST ? (unsigned)wl->gpus.n_pins :
		  wl->gpus.kind == VRAM_GPUS_ANY ? 1 : wl->gpus.count;
	if (p.asked == 0 || p.asked > VRAM_PLAN_MAX_GPUS) {
		add_ask(&m, &p);
		msg_add(&m, ": between 1 and %d GPUs can be asked for", VRAM_PLAN_MAX_GPUS);
		ret->error = r = -EINVAL;
		goto out;
	}

	/* The request as written. */
	if (wl->gpus.kind == VRAM_GPUS_LIST) {
		for (size_t i = 0; i < wl->gpus.n_pins; i++) {
			size_t pos = pos_of(ledger, wl->gpus.pins[i]);
			if (pos == NO_POS) {
				if (!p.have_missing_pin)
					p.missing_pin = wl->gpus.pins[i];
				p.have_missing_pin = true;
				p.strict_invalid = true;
			} else {
				p.strict[pos] = true;
			}
		}
	} else {
		for (size_t pos = 0; pos < p.n; pos++)
			p.strict[pos] = true;
	}
	if (p.asked > p.n)
		p.strict_invalid = true;
	for (size_t pos = 0; pos < p.n; pos++)
		if (p.g[pos].other_model || p.g[pos].avoided_by)
			p.strict[pos] = false;

	if (!p.strict_invalid) {
		if (try_place(&p, p.strict, p.asked, false, &c)) {
			fill_result(&p, &c, VRAM_PLAN_FITS, ret);
			goto out;
		}
		if (req->allow_evict && try_place(&p, p.strict, p.asked, true, &c)) {
			fill_result(&p, &c, c.n_victims ? VRAM_PLAN_EVICT : VRAM_PLAN_FITS, ret);
			if (c.n_victims) {
				add_instance_name(&m, wl->name, req->replica, wl->replicas > 1);
				msg_add(&m, ": ");
				add_victims(&m, &p, &c);
			}
			goto out;
		}
	}

	if (wl->fallback == VRAM_FALLBACK_SHARE) {
		unsigned k = 0;
		bool ok = try_share(&p, false, &c, &k) ||
			  (req->allow_evict && try_share(&p, true, &c, &k));
		if (ok) {
			fill_result(&p, &c, VRAM_PLAN_SHARED, ret);
			msg_add(&m, "fallback share: ");
			add_strict_cause(&m, &p);
			msg_add(&m, "; on ");
			add_gpu_list(&m, &p, &c);
			msg_add(&m, " as ");
			add_need(&m, &p, k);
			if (c.shares_avoided)
				msg_add(&m, ", next to a workload it avoids");
			if (c.n_victims) {
				msg_add(&m, "; ");
				add_victims(&m, &p, &c);
			}
			goto out;
		}
	}
	if (wl->fallback == VRAM_FALLBACK_CPU) {
		r = place_cpu(&p, ret, &m, true);
		goto out;
	}

	/* Refused. */
	ret->outcome = VRAM_PLAN_REFUSED;
	ret->error = r = p.strict_invalid ? -EINVAL : -ENOSPC;
	add_ask(&m, &p);
	msg_add(&m, "; ");
	add_strict_cause(&m, &p);
	msg_add(&m, "; ");
	add_free_list(&m, &p);
	if (req->allow_evict)
		add_eviction_summary(&m, &p);
	if (wl->fallback == VRAM_FALLBACK_SHARE) {
		msg_add(&m, "; fallback share: no room for");
		unsigned kmax = p.asked < p.n ? p.asked : (unsigned)p.n;
		if (kmax == 0)
			msg_add(&m, " any GPU");
		for (unsigned k = kmax; k >= 1; k--) {
			msg_add(&m, k == kmax ? " " : " or ");
			add_need(&m, &p, k);
		}
	} else {
		msg_add(&m, "; fallback: %s", wl->fallback == VRAM_FALLBACK_CPU ? "cpu" : "none");
	}
out:
	planner_done(&p);
	return r;
}

/* ------------------------------------------------------------------ */
/* Whole-config plans                                                   */

void vram_plan_table_free(struct vram_plan_table *t)
{
	if (!t)
		return;
	free(t->rows);
	free((void *)t->gpus);
	free(t);
}

int vram_plan_config(const struct vram_config *cfg, const struct vram_plan_gpu *gpus, size_t n_gpus,
		     struct vram_plan_table **ret_table)
{
	if (n_gpus > VRAM_PLAN_MAX_GPUS)
		return -EINVAL;
	int r = -ENOMEM;
	size_t n_rows = 0;
	for (size_t i = 0; i < cfg->n_workloads; i++)
		n_rows += cfg->workloads[i].replicas ? cfg->workloads[i].replicas : 1;

	struct vram_plan_table *t = calloc(1, sizeof(*t));
	size_t *order = calloc(cfg->n_workloads ? cfg->n_workloads : 1, sizeof(*order));
	struct vram_plan_resident *res = calloc(n_rows ? n_rows : 1, sizeof(*res));
	struct vram_plan_gpu *g = calloc(n_gpus ? n_gpus : 1, sizeof(*g));
	if (!t || !order || !res || !g)
		goto out_free;
	t->rows = calloc(n_rows ? n_rows : 1, sizeof(*t->rows));
	if (!t->rows)
		goto out_free;
	memcpy(g, gpus, n_gpus * sizeof(*g));
	for (size_t i = 0; i < n_gpus; i++)
		if (g[i].reserve < cfg->gpus.reserve)
			g[i].reserve = cfg->gpus.reserve;
	t->gpus = g;
	t->n_gpus = n_gpus;
	g = NULL;

	/* priority descending, file order within a priority (a stable insertion) */
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		size_t at = i;
		while (at > 0 && cfg->workloads[order[at - 1]].priority < cfg->workloads[i].priority) {
			order[at] = order[at - 1];
			at--;
		}
		order[at] = i;
	}

	size_t row = 0;
	for (size_t o = 0; o < cfg->n_workloads; o++) {
		const struct vram_workload_config *wl = &cfg->workloads[order[o]];
		unsigned reps = wl->replicas ? wl->replicas : 1;
		for (unsigned rep = 0; rep < reps; rep++, row++) {
			struct vram_plan_row *rw = &t->rows[row];
			rw->workload = wl->name;
			rw->replica = rep;
			rw->n_replicas = reps;
			/* Rows and residents share indices, so victims name rows. */
			const struct vram_plan_ledger ledger = {
				.gpus = t->gpus, .n_gpus = t->n_gpus, .residents = res, .n_residents = row,
			};
			const struct vram_plan_request req = {
				.wl = wl, .replica = rep, .allow_evict = true,
			};
			vram_plan_place(&ledger, &req, &rw->result);
			struct vram_plan_resident *me = &res[row];
			me->name = wl->name;
			me->replica = rep;
			me->priority = wl->priority;
			me->avoid = (const char *const *)wl->avoid;
			me->last_used_ms = row;
			if (rw->result.outcome == VRAM_PLAN_CPU || rw->result.outcome == VRAM_PLAN_REFUSED)
				continue;
			memcpy(me->gpus, rw->result.gpus, rw->result.n_gpus * sizeof(me->gpus[0]));
			me->n_gpus = rw->result.n_gpus;
			me->bytes_per_gpu = rw->result.bytes_per_gpu;
			me->bytes_on_gpu = rw->result.bytes;
			me->evictable = wl->start == VRAM_START_LAZY;
			for (size_t v = 0; v < rw->result.n_victims; v++) {
				/* evicted: holds nothing from now on */
				res[rw->result.victims[v]].n_gpus = 0;
				res[rw->result.victims[v]].evictable = false;
			}
		}
	}
	t->n_rows = n_rows;
	*ret_table = t;
	t = NULL;
	r = 0;
out_free:
	vram_plan_table_free(t);
	free(g);
	free(res);
	free(order);
	return r;
}

/* The row that evicts row i later in the plan, or NO_POS. */
static size_t evicted_by(const struct vram_plan_table *t, size_t i)
{
	for (size_t j = i + 1; j < t->n_rows; j++)
		for (size_t v = 0; v < t->rows[j].result.n_victims; v++)
			if (t->rows[j].result.victims[v] == i)
				return j;
	return NO_POS;
}

static void row_name(const struct vram_plan_row *rw, char *buf, size_t size)
{
	if (rw->n_replicas > 1)
		snprintf(buf, size, "%s#%u", rw->workload, rw->replica);
	else
		snprintf(buf, size, "%s", rw->workload);
}

static void row_gpus(const struct vram_plan_row *rw, char *buf, size_t size)
{
	struct msg m = { .buf = buf, .size = size };
	buf[0] = '\0';
	if (rw->result.n_gpus == 0)
		msg_add(&m, "-");
	for (size_t i = 0; i < rw->result.n_gpus; i++)
		msg_add(&m, "%s%u", i ? "," : "", rw->result.gpus[i]);
}

/* Bytes planned on GPU position pos by the rows still holding it at the end. */
static uint64_t planned_on(const struct vram_plan_table *t, size_t pos)
{
	uint64_t sum = 0;
	for (size_t i = 0; i < t->n_rows; i++) {
		const struct vram_plan_result *res = &t->rows[i].result;
		if (res->outcome == VRAM_PLAN_CPU || res->outcome == VRAM_PLAN_REFUSED)
			continue;
		if (evicted_by(t, i) != NO_POS)
			continue;
		for (size_t j = 0; j < res->n_gpus; j++)
			if (res->gpus[j] == t->gpus[pos].index)
				sum = sat_add(sum, res->bytes[j]);
	}
	return sum;
}

char *vram_plan_table_format(const struct vram_plan_table *t)
{
	struct vram_buf b;
	vram_buf_init(&b, 4u << 20);
	char s1[32], s2[32], s3[32], s4[32], name[128], gl[256];
	int r = vram_buf_printf(&b, "%-5s %-24s %10s %10s %10s %10s\n", "GPU", "MODEL", "TOTAL",
				"RESERVE", "PLANNED", "FREE");
	for (size_t i = 0; i < t->n_gpus && r >= 0; i++) {
		const struct vram_plan_gpu *g = &t->gpus[i];
		uint64_t planned = planned_on(t, i);
		uint64_t free_bytes = sat_sub(g->total, sat_add(sat_add(g->reserve, g->unmanaged), planned));
		r = vram_buf_printf(&b, "%-5u %-24.24s %10s %10s %10s %10s\n", g->index,
				    g->name[0] ? g->name : "-",
				    vram_units_format_bytes(g->total, s1, sizeof(s1)),
				    vram_units_format_bytes(g->reserve, s2, sizeof(s2)),
				    vram_units_format_bytes(planned, s3, sizeof(s3)),
				    vram_units_format_bytes(free_bytes, s4, sizeof(s4)));
	}
	int wname = 8, wgpus = 4;
	for (size_t i = 0; i < t->n_rows; i++) {
		row_name(&t->rows[i], name, sizeof(name));
		row_gpus(&t->rows[i], gl, sizeof(gl));
		if ((int)strlen(name) > wname)
			wname = (int)strlen(name);
		if ((int)strlen(gl) > wgpus)
			wgpus = (int)strlen(gl);
	}
	if (r >= 0)
		r = vram_buf_printf(&b, "\n%-*s  %-*s  %10s  %-8s  %s\n", wname, "WORKLOAD", wgpus,
				    "GPUS", "MEM/GPU", "OUTCOME", "NOTE");
	for (size_t i = 0; i < t->n_rows && r >= 0; i++) {
		const struct vram_plan_row *rw = &t->rows[i];
		row_name(rw, name, sizeof(name));
		row_gpus(rw, gl, sizeof(gl));
		bool on_gpu = rw->result.n_gpus > 0;
		r = vram_buf_printf(&b, "%-*s  %-*s  %10s  %-8s  ", wname, name, wgpus, gl,
				    on_gpu ? vram_units_format_bytes(rw->result.bytes_per_gpu, s1, sizeof(s1)) : "-",
				    vram_plan_outcome_name(rw->result.outcome));
		size_t by = evicted_by(t, i);
		if (r >= 0 && by != NO_POS) {
			row_name(&t->rows[by], name, sizeof(name));
			r = vram_buf_printf(&b, "evicted later by %s%s", name, rw->result.message[0] ? "; " : "");
		}
		if (r >= 0)
			r = vram_buf_printf(&b, "%s\n", rw->result.message);
	}
	if (r < 0) {
		vram_buf_done(&b);
		return NULL;
	}
	return vram_buf_take(&b);
}

char *vram_plan_table_json(const struct vram_plan_table *t)
{
	json_t *root = json_object();
	json_t *jg = json_array();
	json_t *jw = json_array();
	char *text = NULL;
	if (!root || !jg || !jw)
		goto out;
	for (size_t i = 0; i < t->n_gpus; i++) {
		const struct vram_plan_gpu *g = &t->gpus[i];
		uint64_t planned = planned_on(t, i);
		json_array_append_new(jg, json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:I}",
			"index", (json_int_t)g->index, "name", g->name,
			"total_bytes", (json_int_t)g->total, "reserve_bytes", (json_int_t)g->reserve,
			"unmanaged_bytes", (json_int_t)g->unmanaged, "planned_bytes", (json_int_t)planned,
			"free_bytes", (json_int_t)sat_sub(g->total, sat_add(sat_add(g->reserve, g->unmanaged), planned))));
	}
	for (size_t i = 0; i < t->n_rows; i++) {
		const struct vram_plan_row *rw = &t->rows[i];
		json_t *gl = json_array(), *ev = json_array();
		for (size_t j = 0; j < rw->result.n_gpus; j++)
			json_array_append_new(gl, json_integer(rw->result.gpus[j]));
		for (size_t v = 0; v < rw->result.n_victims; v++) {
			const struct vram_plan_row *vr = &t->rows[rw->result.victims[v]];
			json_array_append_new(ev, json_pack("{s:s, s:I}", "workload", vr->workload,
							    "replica", (json_int_t)vr->replica));
		}
		json_t *o = json_pack("{s:s, s:I, s:s, s:o, s:I, s:o, s:s}",
			"workload", rw->workload, "replica", (json_int_t)rw->replica,
			"outcome", vram_plan_outcome_name(rw->result.outcome), "gpus", gl,
			"bytes_per_gpu", (json_int_t)rw->result.bytes_per_gpu, "evicts", ev,
			"message", rw->result.message);
		if (!o)
			goto out;
		size_t by = evicted_by(t, i);
		if (by != NO_POS)
			json_object_set_new(o, "evicted_by",
					    json_pack("{s:s, s:I}", "workload", t->rows[by].workload,
						      "replica", (json_int_t)t->rows[by].replica));
		if (rw->result.error)
			json_object_set_new(o, "error", json_string(rw->result.error == -EINVAL ?
								    "invalid" : "no_space"));
		json_array_append_new(jw, o);
	}
	json_object_set(root, "gpus", jg);
	json_object_set(root, "workloads", jw);
	text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
out:
	json_decref(jg);
	json_decref(jw);
	json_decref(root);
	return text;
}
