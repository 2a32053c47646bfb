/* SPDX-License-Identifier: MIT */
/*
 * The host ledger and its room-making decision; the rules are written once,
 * at the top of hostplan.h. Sizes are added and subtracted saturating, so
 * that a wild report (a hook that claims exabytes) cannot wrap a sum into a
 * small number and make room look free.
 */
#include "core/hostplan.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/units.h"

#define NO_ENTRY SIZE_MAX
#define MSG_LIST_MAX 4 /* workloads named in a refusal's "not touched" list */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_sub(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

uint64_t vram_host_reserve(uint64_t total, uint64_t configured)
{
	if (configured != VRAM_CONFIG_HOST_RESERVE_DEFAULT)
		return configured;
	uint64_t share = total / 100 * VRAM_HOST_RESERVE_PERCENT +
			 total % 100 * VRAM_HOST_RESERVE_PERCENT / 100;
	return share > VRAM_HOST_RESERVE_MIN ? share : VRAM_HOST_RESERVE_MIN;
}

uint64_t vram_host_budget(uint64_t total, uint64_t reserve, uint64_t limit)
{
	if (total == 0)
		return limit ? limit : VRAM_HOST_UNKNOWN;
	uint64_t budget = sat_sub(total, reserve);
	return limit && limit < budget ? limit : budget;
}

/* "16GiB" into a buffer of the caller's. */
#define SIZE(v) vram_units_format_bytes((v), (char[32]){ 0 }, 32)

void vram_host_describe(const struct vram_config *cfg, uint64_t total, char *buf, size_t size)
{
	uint64_t reserve = vram_host_reserve(total, cfg->host.reserve);
	uint64_t budget = vram_host_budget(total, reserve, cfg->host.limit);
	bool by_default = cfg->host.reserve == VRAM_CONFIG_HOST_RESERVE_DEFAULT;
	char limit[48] = "no limit";
	if (cfg->host.limit)
		snprintf(limit, sizeof(limit), "limit %s", SIZE(cfg->host.limit));
	char dir[VRAM_CONFIG_PARK_DIR_MAX + 64];
	if (cfg->host.park_dir)
		snprintf(dir, sizeof(dir), "%s", cfg->host.park_dir);
	else
		snprintf(dir, sizeof(dir), "%s/park", cfg->daemon.state_dir ? cfg->daemon.state_dir : ".");
	if (total == 0)
		snprintf(buf, size, "host: budget %s (MemTotal not known; reserve %s%s; %s); park_dir %s",
			 budget == VRAM_HOST_UNKNOWN ? "not known" : SIZE(budget),
			 by_default ? "10 % of MemTotal, at least " : "", SIZE(reserve), limit, dir);
	else
		snprintf(buf, size, "host: budget %s of %s (reserve %s%s; %s); park_dir %s", SIZE(budget),
			 SIZE(total), SIZE(reserve),
			 by_default ? ": 10 % of MemTotal, at least 4GiB" : "", limit, dir);
}

uint64_t vram_host_held(const struct vram_host_ledger *l)
{
	uint64_t held = 0;
	for (size_t i = 0; i < l->n_entries; i++)
		held = sat_add(held, l->entries[i].held);
	return held;
}

const char *vram_host_action_name(enum vram_host_action a)
{
	switch (a) {
	case VRAM_HOST_DROP_KEPT:
		return "drop_kept";
	case VRAM_HOST_PARK:
		return "park";
	case VRAM_HOST_RELEASE:
		return "release";
	}
	return "?";
}

/*
 * Bytes to free before need more fits: past the budget, or into the
 * reserve of what is available (each freed byte counts once against both:
 * it leaves the ledger and becomes available again).
 */
static uint64_t shortfall(const struct vram_host_ledger *l, uint64_t held, uint64_t need)
{
	uint64_t s = 0;
	if (l->budget != VRAM_HOST_UNKNOWN)
		s = sat_sub(sat_add(held, need), l->budget);
	if (l->available != VRAM_HOST_UNKNOWN) {
		uint64_t s2 = sat_sub(sat_add(need, l->reserve), l->available);
		if (s2 > s)
			s = s2;
	}
	return s;
}

/* The one decision being made: the ledger, who asks, and what is taken so far. */
struct room {
	const struct vram_host_ledger *l;
	size_t asking;      /* entry index, or NO_ENTRY */
	const struct vram_workload *asking_w;
	int priority;       /* the asking workload's */
	bool *taken;        /* n_entries; an entry already a step */
	size_t idx[VRAM_HOST_MAX_STEPS]; /* entry of each step */
	uint64_t park_left; /* bytes the disk tier still takes; VRAM_HOST_UNKNOWN = not known */
	struct vram_host_room *ret;
};

/* Whether entry e may lose its kept buffers for this ask. */
static bool may_drop(const struct room *rm, size_t i)
{
	const struct vram_host_entry *e = &rm->l->entries[i];
	return i != rm->asking && e->w != rm->asking_w && !e->busy && e->state == VRAM_WL_READY &&
	       e->can_drop_kept && e->kept > 0;
}

/* Whether entry e may leave RAM (parked or released) for this ask. */
static bool may_evict(const struct room *rm, size_t i)
{
	const struct vram_host_entry *e = &rm->l->entries[i];
	return i != rm->asking && e->w != rm->asking_w && !e->busy &&
	       e->state == VRAM_WL_OFFLOADED && e->priority <= rm->priority && e->held > 0;
}

static bool park_fits(const struct room *rm, const struct vram_host_entry *e)
{
	return rm->l->park_usable && e->can_park &&
	       (rm->park_left == VRAM_HOST_UNKNOWN || e->held <= rm->park_left);
}

/* Whether entry a goes before entry b: lower priority first (when by_priority), then LRU. */
static bool before(const struct room *rm, size_t a, size_t b, bool by_priority)
{
	const struct vram_host_entry *x = &rm->l->entries[a], *y = &rm->l->entries[b];
	if (by_priority && x->priority != y->priority)
		return x->priority < y->priority;
	if (x->last_used_ms != y->last_used_ms)
		return x->last_used_ms < y->last_used_ms;
	return a < b;
}

/* The next entry for action, or NO_ENTRY. */
static size_t pick(const struct room *rm, enum vram_host_action action)
{
	size_t best = NO_ENTRY;
	for (size_t i = 0; i < rm->l->n_entries; i++) {
		if (rm->taken[i])
			continue;
		bool ok = action == VRAM_HOST_DROP_KEPT ? may_drop(rm, i)
			  : action == VRAM_HOST_PARK	? may_evict(rm, i) &&
								  park_fits(rm, &rm->l->entries[i])
							: may_evict(rm, i);
		if (ok && (best == NO_ENTRY || before(rm, i, best, action != VRAM_HOST_DROP_KEPT)))
			best = i;
	}
	return best;
}

static void add_step(struct room *rm, size_t i, enum vram_host_action action)
{
	const struct vram_host_entry *e = &rm->l->entries[i];
	struct vram_host_room *ret = rm->ret;
	uint64_t bytes = action == VRAM_HOST_DROP_KEPT ? e->kept : e->held;
	rm->taken[i] = true;
	rm->idx[ret->n_steps] = i;
	ret->steps[ret->n_steps++] = (struct vram_host_step){ .w = e->w, .name = e->name,
							      .action = action, .bytes = bytes };
	ret->freed = sat_add(ret->freed, bytes);
	if (action == VRAM_HOST_PARK && rm->park_left != VRAM_HOST_UNKNOWN)
		rm->park_left -= bytes;
}

/* Takes steps of one kind until enough is freed or none is left. */
static void take(struct room *rm, enum vram_host_action action)
{
	struct vram_host_room *ret = rm->ret;
	while (ret->freed < ret->shortfall && ret->n_steps < VRAM_HOST_MAX_STEPS) {
		size_t i = pick(rm, action);
		if (i == NO_ENTRY)
			return;
		add_step(rm, i, action);
	}
}

/*
 * Drops the steps that the later ones made unneeded (the last one taken is
 * always needed), then parks, rather than releases, those that now fit on
 * the disk tier again.
 */
static void prune(struct room *rm)
{
	struct vram_host_room *ret = rm->ret;
	for (size_t k = ret->n_steps - 1; k-- > 0;) {
		if (ret->freed - ret->steps[k].bytes < ret->shortfall)
			continue;
		ret->freed -= ret->steps[k].bytes;
		if (ret->steps[k].action == VRAM_HOST_PARK && rm->park_left != VRAM_HOST_UNKNOWN)
			rm->park_left += ret->steps[k].bytes;
		memmove(&ret->steps[k], &ret->steps[k + 1], (ret->n_steps - k - 1) * sizeof(ret->steps[0]));
		memmove(&rm->idx[k], &rm->idx[k + 1], (ret->n_steps - k - 1) * sizeof(rm->idx[0]));
		ret->n_steps--;
	}
	for (size_t k = 0; k < ret->n_steps; k++) {
		const struct vram_host_entry *e = &rm->l->entries[rm->idx[k]];
		if (ret->steps[k].action != VRAM_HOST_RELEASE || !park_fits(rm, e))
			continue;
		ret->steps[k].action = VRAM_HOST_PARK;
		if (rm->park_left != VRAM_HOST_UNKNOWN)
			rm->park_left -= e->held;
	}
}

/* Copies text into the result's message, ending in "..." when it is cut. */
static void set_message(struct vram_host_room *ret, struct vram_buf *b)
{
	const char *text = b->data ? b->data : "";
	size_t n = strlen(text);
	if (n < sizeof(ret->message)) {
		memcpy(ret->message, text, n + 1);
		return;
	}
	memcpy(ret->message, text, sizeof(ret->message) - 4);
	memcpy(ret->message + sizeof(ret->message) - 4, "...", 4);
}

static void describe_steps(struct vram_host_room *ret, const char *name)
{
	struct vram_buf b;
	vram_buf_init(&b, 4 * VRAM_HOST_MSG_MAX);
	vram_buf_printf(&b, "room for %s of host memory for %s's offload: ", SIZE(ret->need), name);
	for (size_t k = 0; k < ret->n_steps; k++) {
		const struct vram_host_step *s = &ret->steps[k];
		const char *who = s->name ? s->name : "?";
		if (s->action == VRAM_HOST_DROP_KEPT)
			vram_buf_printf(&b, "%sdrop %s's kept buffers (%s)", k ? ", " : "", who,
					SIZE(s->bytes));
		else
			vram_buf_printf(&b, "%s%s %s (%s)", k ? ", " : "",
					s->action == VRAM_HOST_PARK ? "park" : "release", who,
					SIZE(s->bytes));
	}
	set_message(ret, &b);
	vram_buf_done(&b);
}

/*
 * The refusal: what was asked, the budget, what is held and by whom, what
 * could be freed, the available memory and its reserve, and why the rest
 * is out of reach.
 */
static void describe_refusal(const struct room *rm, const char *name)
{
	const struct vram_host_ledger *l = rm->l;
	struct vram_host_room *ret = rm->ret;
	uint64_t copies = 0, kept = 0;
	unsigned n_copies = 0, n_kept = 0;
	for (size_t i = 0; i < l->n_entries; i++) {
		const struct vram_host_entry *e = &l->entries[i];
		uint64_t k = e->kept < e->held ? e->kept : e->held;
		if (e->held - k > 0) {
			copies = sat_add(copies, e->held - k);
			n_copies++;
		}
		if (k > 0) {
			kept = sat_add(kept, k);
			n_kept++;
		}
	}
	struct vram_buf b;
	vram_buf_init(&b, 4 * VRAM_HOST_MSG_MAX);
	vram_buf_printf(&b, "needs %s of host memory for %s's offload: ", SIZE(ret->need), name);
	if (l->budget == VRAM_HOST_UNKNOWN)
		vram_buf_puts(&b, "no budget known");
	else
		vram_buf_printf(&b, "budget %s", SIZE(l->budget));
	vram_buf_printf(&b, ", %s held by %u offloaded workload%s", SIZE(copies), n_copies,
			n_copies == 1 ? "" : "s");
	if (n_kept)
		vram_buf_printf(&b, " and %s kept by %u ready workload%s", SIZE(kept), n_kept,
				n_kept == 1 ? "" : "s");
	vram_buf_printf(&b, ", %s could be freed", SIZE(ret->freeable));
	if (l->available != VRAM_HOST_UNKNOWN)
		vram_buf_printf(&b, "; %s available, of which %s stays in reserve",
				SIZE(l->available), SIZE(l->reserve));
	/* what holds memory and may not give it up for this ask */
	unsigned listed = 0, more = 0;
	for (size_t i = 0; i < l->n_entries; i++) {
		const struct vram_host_entry *e = &l->entries[i];
		if (i == rm->asking || e->w == rm->asking_w || e->held == 0 || may_drop(rm, i) ||
		    may_evict(rm, i))
			continue;
		if (listed == MSG_LIST_MAX) {
			more++;
			continue;
		}
		vram_buf_printf(&b, "%s%s (", listed ? ", " : "; not touched: ", e->name ? e->name : "?");
		if (e->busy)
			vram_buf_puts(&b, "busy");
		else if (e->state == VRAM_WL_OFFLOADED)
			vram_buf_printf(&b, "priority %d, above %d", e->priority, rm->priority);
		else if (e->state == VRAM_WL_READY && !e->can_drop_kept)
			vram_buf_puts(&b, "its engine cannot drop kept buffers");
		else
			vram_buf_printf(&b, "%s", vram_wl_state_name(e->state));
		vram_buf_printf(&b, ", %s)", SIZE(e->held));
		listed++;
	}
	if (more)
		vram_buf_printf(&b, " and %u more", more);
	if (!l->park_usable)
		vram_buf_puts(&b, "; no disk tier to park on");
	else if (l->park_free != VRAM_HOST_UNKNOWN)
		vram_buf_printf(&b, "; %s free on the disk tier", SIZE(l->park_free));
	if (ret->freeable >= ret->shortfall)
		vram_buf_printf(&b, "; more than %d steps would be needed", VRAM_HOST_MAX_STEPS);
	set_message(ret, &b);
	vram_buf_done(&b);
}

int vram_host_make_room(const struct vram_host_ledger *l, const struct vram_workload *asking,
			uint64_t need_bytes, struct vram_host_room *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->need = need_bytes;
	if (!l || !asking) {
		ret->error = -EINVAL;
		snprintf(ret->message, sizeof(ret->message), "no ledger or no workload asking");
		return ret->error;
	}
	ret->held = vram_host_held(l);
	ret->shortfall = shortfall(l, ret->held, need_bytes);
	if (ret->shortfall == 0)
		return 0;

	struct room rm = { .l = l, .asking = NO_ENTRY, .asking_w = asking, .ret = ret,
			   .park_left = l->park_free };
	for (size_t i = 0; i < l->n_entries; i++)
		if (l->entries[i].w == asking)
			rm.asking = i;
	const struct vram_host_entry *me = rm.asking != NO_ENTRY ? &l->entries[rm.asking] : NULL;
	rm.priority = me ? me->priority : asking->cfg ? asking->cfg->priority : 0;
	const char *name = me && me->name ? me->name : asking->cfg ? asking->cfg->name : "?";
	rm.taken = calloc(l->n_entries ? l->n_entries : 1, sizeof(*rm.taken));
	if (!rm.taken) {
		ret->error = -ENOMEM;
		snprintf(ret->message, sizeof(ret->message), "out of memory");
		return ret->error;
	}
	for (size_t i = 0; i < l->n_entries; i++) {
		if (may_drop(&rm, i))
			ret->freeable = sat_add(ret->freeable, l->entries[i].kept);
		else if (may_evict(&rm, i))
			ret->freeable = sat_add(ret->freeable, l->entries[i].held);
	}

	take(&rm, VRAM_HOST_DROP_KEPT);
	take(&rm, VRAM_HOST_PARK);
	take(&rm, VRAM_HOST_RELEASE);
	if (ret->freed >= ret->shortfall) {
		prune(&rm);
		describe_steps(ret, name);
		ret->error = 0;
	} else {
		describe_refusal(&rm, name);
		ret->n_steps = 0;
		ret->freed = 0;
		ret->error = -ENOSPC;
	}
	free(rm.taken);
	return ret->error;
}

/* ---- the host part of `vramctl plan` ---- */

int vram_host_plan_config(const struct vram_config *cfg, const struct vram_plan_table *t,
			  uint64_t total, struct vram_host_plan **ret)
{
	struct vram_host_plan *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->rows = calloc(cfg->n_workloads ? cfg->n_workloads : 1, sizeof(*p->rows));
	if (!p->rows) {
		free(p);
		return -ENOMEM;
	}
	p->total = total;
	p->reserve = vram_host_reserve(total, cfg->host.reserve);
	p->limit = cfg->host.limit;
	p->budget = vram_host_budget(total, p->reserve, p->limit);
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		const struct vram_workload_config *wc = &cfg->workloads[i];
		struct vram_host_plan_row *row = &p->rows[p->n_rows++];
		row->workload = wc->name;
		/* the restart engine stops the process: nothing of it stays in RAM */
		if (wc->offload == VRAM_ENGINE_RESTART)
			continue;
		for (size_t k = 0; k < t->n_rows; k++) {
			const struct vram_plan_row *rw = &t->rows[k];
			if (strcmp(rw->workload, wc->name) != 0 ||
			    rw->result.outcome == VRAM_PLAN_REFUSED || rw->result.outcome == VRAM_PLAN_CPU)
				continue;
			for (size_t g = 0; g < rw->result.n_gpus; g++)
				row->bytes = sat_add(row->bytes, rw->result.bytes[g]);
		}
		p->offloaded = sat_add(p->offloaded, row->bytes);
	}
	*ret = p;
	return 0;
}

void vram_host_plan_free(struct vram_host_plan *p)
{
	if (!p)
		return;
	free(p->rows);
	free(p);
}

char *vram_host_plan_format(const struct vram_host_plan *p)
{
	struct vram_buf b;
	vram_buf_init(&b, 4u << 20);
	int wname = 8;
	for (size_t i = 0; i < p->n_rows; i++)
		if ((int)strlen(p->rows[i].workload) > wname)
			wname = (int)strlen(p->rows[i].workload);
	int r = vram_buf_printf(&b, "%-*s  %s\n", wname, "WORKLOAD", "HOST WHEN OFFLOADED");
	for (size_t i = 0; i < p->n_rows && r >= 0; i++)
		r = vram_buf_printf(&b, "%-*s  %s\n", wname, p->rows[i].workload,
				    p->rows[i].bytes ? SIZE(p->rows[i].bytes) : "-");
	if (r >= 0)
		r = vram_buf_printf(&b, "\nhost %s: reserve %s, limit %s, budget %s; all offloaded "
					"at once: %s, ",
				    SIZE(p->total), SIZE(p->reserve), p->limit ? SIZE(p->limit) : "none",
				    SIZE(p->budget), SIZE(p->offloaded));
	if (r >= 0 && p->offloaded <= p->budget)
		r = vram_buf_printf(&b, "fits (%s left)\n", SIZE(p->budget - p->offloaded));
	else if (r >= 0)
		r = vram_buf_printf(&b, "%s over the budget: the least recently used are parked "
					"on disk or released to make room\n",
				    SIZE(p->offloaded - p->budget));
	if (r < 0) {
		vram_buf_done(&b);
		return NULL;
	}
	return vram_buf_take(&b);
}

json_t *vram_host_plan_json(const struct vram_host_plan *p)
{
	json_t *rows = json_array();
	for (size_t i = 0; rows && i < p->n_rows; i++)
		if (json_array_append_new(rows, json_pack("{s:s, s:I}", "workload", p->rows[i].workload,
							  "offloaded_bytes",
							  (json_int_t)p->rows[i].bytes)) < 0) {
			json_decref(rows);
			return NULL;
		}
	if (!rows)
		return NULL;
	return json_pack("{s:I, s:I, s:o, s:I, s:I, s:b, s:o}", "total_bytes", (json_int_t)p->total,
			 "reserve_bytes", (json_int_t)p->reserve, "limit_bytes",
			 p->limit ? json_integer((json_int_t)p->limit) : json_null(), "budget_bytes",
			 (json_int_t)p->budget, "offloaded_bytes", (json_int_t)p->offloaded, "fits",
			 p->offloaded <= p->budget, "workloads", rows);
}
