/* SPDX-License-Identifier: MIT */
/*
 * Config reload, a feature on the manager's top floor: what a new config
 * changes, the settings that apply at once, the restarts and removals that
 * wait for the requests in flight, and the configs kept while a workload
 * still runs with them.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/log.h"
#include "config/config.h"
#include "config/diff.h"
#include "core/plan.h"
#include "daemon/liveness.h"
#include "daemon/mps.h"
#include "daemon/notify.h"
#include "daemon/supervise.h"

/* A config replaced by a reload, kept while a workload still runs with it. */
struct retired {
	struct vram_list link;   /* on m->retired */
	struct vram_config *cfg; /* owned */
};

/* Whether w runs with a workload of cfg (or will, after a pending restart). */
static bool uses_config(struct vram_manager *m, const struct vram_config *cfg)
{
	const struct vram_workload_config *lo = cfg->workloads, *hi = lo + cfg->n_workloads;
	for (size_t k = 0; k < m->n_live; k++) {
		const struct vram_workload *w = m->wptrs[k];
		const struct mgr_slot *s = mgr_slot(m, w);
		if ((w->cfg >= lo && w->cfg < hi) || (s->next >= lo && s->next < hi))
			return true;
	}
	return false;
}

/* Frees the replaced configs that no workload runs with any more (from the kick). */
static void retired_reap(struct vram_manager *m)
{
	struct vram_list *pos, *tmp;
	vram_list_for_each_safe(pos, tmp, &m->retired) {
		struct retired *t = vram_list_entry(pos, struct retired, link);
		if (uses_config(m, t->cfg))
			continue;
		vram_list_remove(&t->link);
		vram_config_free(t->cfg);
		free(t);
	}
}

/*
 * Settings that apply to the running process: idle timers now (one set
 * through the API stays unless the config changed that timer), the rest
 * when next read.
 */
static void apply_live(struct vram_manager *m, struct vram_workload *w,
		       const struct vram_workload_config *cfg, size_t index)
{
	if (cfg->idle.offload_after_ms != w->cfg->idle.offload_after_ms)
		w->offload_after_ms = cfg->idle.offload_after_ms;
	if (cfg->idle.release_after_ms != w->cfg->idle.release_after_ms)
		w->release_after_ms = cfg->idle.release_after_ms;
	if (cfg->idle.park_after_ms != w->cfg->idle.park_after_ms)
		w->park_after_ms = cfg->idle.park_after_ms;
	/* a ready workload's next check follows the new interval, not the one pending */
	bool rearm = w->state == VRAM_WL_READY &&
		     (cfg->health.interval_ms != w->cfg->health.interval_ms ||
		      cfg->health.kind != w->cfg->health.kind);
	w->cfg = cfg;
	w->index = index;
	if (rearm)
		mgr_liveness_arm(m, w);
}

/*
 * Gives a stopped w the settings cfg (same name) in place: its instances,
 * engine and idle timers. Returns 0 or -ENOMEM (w unchanged).
 */
static int workload_resettle(struct vram_manager *m, struct vram_workload *w,
			     const struct vram_workload_config *cfg, size_t index)
{
	size_t n = cfg->replicas ? cfg->replicas : 1;
	struct vram_instance *in = calloc(n, sizeof(*in));
	if (!in)
		return -ENOMEM;
	for (size_t i = 0; i < w->n_instances; i++) {
		vram_health_probe_cancel(w->instances[i].probe);
		vram_mps_client_free(w->instances[i].mps_client);
	}
	free(w->instances);
	w->instances = in;
	w->n_instances = n;
	for (size_t i = 0; i < n; i++) {
		in[i].owner = w;
		in[i].replica = (unsigned)i;
	}
	apply_live(m, w, cfg, index);
	w->backoff_step = 0;
	w->next_port_rr = 0;
	w->engine = vram_engine_select(w, &m->host, w->engine_why, sizeof(w->engine_why));
	return 0;
}

/*
 * Carries a reload's pending work on w one step: once no request is in
 * flight and no action runs, stops it, then (restart) gives it the new
 * settings and starts it again, or (removal) frees its slot. From the kick.
 * Returns true when it freed the slot (the live list changed).
 */
static bool reload_step(struct vram_manager *m, struct vram_workload *w)
{
	struct mgr_slot *s = mgr_slot(m, w);
	if ((!s->next && !s->removing) || w->in_flight || w->job || m->shutting_down)
		return false;
	if (!vram_wl_state_settled(w->state) || w->awaiting_room)
		return false; /* starting, restoring, offloading or stopping: wait for it to settle */
	if (mgr_any_process(w) || (w->state != VRAM_WL_STOPPED && w->state != VRAM_WL_FAILED)) {
		mgr_stop_workload(m, w, VRAM_REASON_RELOAD,
				  s->removing ? "removed from the config" : "the config changed: restarting");
		return false;
	}
	if (w->retry_pending) {
		evtimer_del(mgr_slot(m, w)->retry_timer);
		w->retry_pending = false;
		s->start_after = s->start_after || !s->removing;
	}
	if (s->removing) {
		if (mgr_waiter_holds(m, w))
			return false; /* resolved on this loop turn: freed on a later kick */
		vram_info("%s: removed", w->cfg->name);
		mgr_workload_done(m, w); /* clears s too */
		mgr_rebuild_live(m);
		return true;
	}
	if (workload_resettle(m, w, s->next, w->index) < 0) {
		vram_err("%s: out of memory applying the new config; will try again", w->cfg->name);
		return false;
	}
	bool start = s->start_after || w->cfg->start == VRAM_START_EAGER;
	vram_info("%s: now runs with the new config (%s)", w->cfg->name, s->keys);
	s->next = NULL;
	s->start_after = false;
	s->keys[0] = '\0';
	mgr_release_held_waiters(m, w);
	if (!start || mgr_start_logged(m, w, VRAM_REASON_RELOAD, "the config changed") < 0)
		mgr_resolve_waiters(m, w);
	return false;
}

static void reload_steps(struct vram_manager *m)
{
	for (size_t k = 0; k < m->n_live; k++)
		if (reload_step(m, m->wptrs[k]))
			k = (size_t)-1; /* a removal reordered the list: from the start again */
}

/* The slot of the workload named `name` in the config (also one being removed), or NULL. */
static struct vram_workload *find_cfg(struct vram_manager *m, const char *name)
{
	struct vram_workload *w = mgr_find(m, name);
	return w && !mgr_is_adhoc(m, w) ? w : NULL;
}

static int strv_json_append(json_t *a, const char *s)
{
	return json_array_append_new(a, json_string(s));
}

int vram_manager_reload(struct vram_manager *m, struct vram_config *cfg, json_t **ret_report,
			char *err, size_t err_size)
{
	int r = -EINVAL;
	char keys[512];
	struct vram_workload **fresh = NULL; /* slots for the added workloads, in cfg order */
	json_t *rep = NULL; /* the report for the caller */
	const char **names = NULL; /* the reload event's names: added, then changed, then removed */
	struct vram_reload_summary sum = { 0 }; /* the reload event, over names */
	if (m->shutting_down) {
		snprintf(err, err_size, "vramd is shutting down");
		r = -EBUSY;
		goto out_cfg;
	}
	if (!vram_diff_fixed(m->cfg, cfg, keys, sizeof(keys))) {
		snprintf(err, err_size, "%s: changed %s, which only a restart of vramd applies; "
			 "nothing was changed", cfg->path ? cfg->path : "config", keys);
		r = -EPERM;
		goto out_cfg;
	}
	/* Check everything before changing anything. */
	size_t n_free = 0, n_new = 0;
	for (size_t k = 0; k < m->n_cfg; k++)
		n_free += !mgr_live(&m->ws[k]);
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		const struct vram_workload_config *c = &cfg->workloads[i];
		struct vram_workload *w = mgr_find(m, c->name);
		if (w && mgr_is_adhoc(m, w)) {
			snprintf(err, err_size, "%s:%u:%u: workloads.%s: an ad-hoc workload has this name; "
				 "remove it first (vramctl rm %s); nothing was changed",
				 cfg->path ? cfg->path : "config", c->pos.line, c->pos.col, c->name, c->name);
			r = -EEXIST;
			goto out_cfg;
		}
		n_new += !w;
	}
	if (n_new > n_free) {
		snprintf(err, err_size, "%zu new workloads, room for %zu while removed ones stop; "
			 "nothing was changed", n_new, n_free);
		r = -ENOSPC;
		goto out_cfg;
	}
	r = -ENOMEM;
	rep = json_pack("{s:[],s:[],s:[],s:[],s:i}", "added", "removed", "changed", "restarting",
			"unchanged", 0);
	fresh = calloc(n_new ? n_new : 1, sizeof(*fresh));
	/* borrowed from the new config, and the old one (removed: retired, kept past the event) */
	names = calloc(n_new + cfg->n_workloads + m->n_cfg + 1, sizeof(*names));
	if (!rep || !fresh || !names)
		goto out_err;
	sum.added = names;
	sum.changed = names + n_new;
	sum.removed = names + n_new + cfg->n_workloads;
	/* The new workloads' slots, made ready; undone if any fails. */
	size_t j = 0, k = 0;
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		if (mgr_find(m, cfg->workloads[i].name))
			continue;
		while (mgr_live(&m->ws[k]))
			k++;
		fresh[j++] = &m->ws[k++];
		if (mgr_workload_init(m, fresh[j - 1], &cfg->workloads[i], i, false) < 0) {
			while (j-- > 0) {
				mgr_workload_done(m, fresh[j]);
			}
			goto out_err;
		}
	}

	/* From here on nothing fails: the new config takes over. */
	json_t *added = json_object_get(rep, "added"), *removed = json_object_get(rep, "removed");
	json_t *changed = json_object_get(rep, "changed"), *restarting = json_object_get(rep, "restarting");
	json_int_t unchanged = 0;
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		const struct vram_workload_config *c = &cfg->workloads[i];
		struct vram_workload *w = find_cfg(m, c->name);
		if (!w)
			continue; /* one of fresh[] */
		struct mgr_slot *s = mgr_slot(m, w);
		s->removing = false;
		enum vram_diff_kind kind = vram_diff_workload(w->cfg, c, keys, sizeof(keys));
		bool idle = w->state == VRAM_WL_STOPPED || w->state == VRAM_WL_FAILED;
		if (kind == VRAM_DIFF_PROCESS && idle && !mgr_any_process(w) && !w->job &&
		    !w->retry_pending && workload_resettle(m, w, c, i) == 0) {
			kind = VRAM_DIFF_LIVE; /* nothing runs: the new settings apply as they are */
		} else if (kind == VRAM_DIFF_PROCESS) {
			/* running (or about to): again after the restart; offloaded or being
			 * stopped: on the next request */
			s->start_after = s->start_after || w->retry_pending ||
					 w->state == VRAM_WL_READY || w->state == VRAM_WL_STARTING ||
					 w->state == VRAM_WL_RESTORING;
			s->next = c;
			snprintf(s->keys, sizeof(s->keys), "%s", keys);
			w->index = i;
			vram_info("%s: %s changed: restarts once its requests in flight end", c->name,
				  keys);
			strv_json_append(restarting, c->name);
			names[n_new + sum.n_changed++] = c->name;
			json_array_append_new(changed, json_pack("{s:s,s:s,s:s}", "workload", c->name,
								 "keys", keys, "applies", "restart"));
			continue;
		} else {
			apply_live(m, w, c, i);
		}
		if (s->next) {
			/* an earlier reload's restart is no longer needed */
			s->next = NULL;
			s->start_after = false;
			s->keys[0] = '\0';
			mgr_release_held_waiters(m, w);
		}
		if (kind == VRAM_DIFF_SAME) {
			unchanged++;
			continue;
		}
		vram_info("%s: %s changed: applied", c->name, keys);
		names[n_new + sum.n_changed++] = c->name;
		json_array_append_new(changed, json_pack("{s:s,s:s,s:s}", "workload", c->name, "keys",
							 keys, "applies", "now"));
	}
	json_object_set_new(rep, "unchanged", json_integer(unchanged));
	/* Workloads gone from the new config stop once their requests end. */
	for (size_t x = 0; x < m->n_cfg; x++) {
		struct vram_workload *w = &m->ws[x];
		if (!mgr_live(w) || m->slots[x].removing || vram_config_find(cfg, w->cfg->name))
			continue;
		m->slots[x].removing = true;
		m->slots[x].next = NULL;
		m->slots[x].start_after = false;
		mgr_release_held_waiters(m, w);
		vram_info("%s: removed from the config: stops once its requests in flight end",
			  w->cfg->name);
		strv_json_append(removed, w->cfg->name);
		names[n_new + cfg->n_workloads + sum.n_removed++] = w->cfg->name;
	}
	for (size_t y = 0; y < n_new; y++) {
		vram_info("%s: added", fresh[y]->cfg->name);
		strv_json_append(added, fresh[y]->cfg->name);
		names[sum.n_added++] = fresh[y]->cfg->name;
	}
	struct retired *t = malloc(sizeof(*t));
	if (t) {
		t->cfg = m->cfg;
		vram_list_push_front(&m->retired, &t->link);
	} else {
		/* cannot happen in practice; keeping the old config alive forever is the safe side */
		vram_warn("out of memory: the replaced config is kept until vramd exits");
	}
	enum vram_log_level level;
	if (!m->keep_log_level &&
	    vram_log_level_parse(cfg->daemon.log_level ? cfg->daemon.log_level : "info", &level) == 0 &&
	    level != vram_log_get_level()) {
		vram_log_set_level(level);
		vram_info("log level: %s", cfg->daemon.log_level ? cfg->daemon.log_level : "info");
	}
	m->cfg = cfg;
	mgr_rebuild_live(m);
	struct vram_event ev = { .kind = VRAM_EVENT_RELOAD, .reload = &sum };
	mgr_emit(m, &ev);
	for (size_t y = 0; y < n_new; y++) {
		if (fresh[y]->cfg->start == VRAM_START_EAGER)
			mgr_start_logged(m, fresh[y], VRAM_REASON_RELOAD, "added by a config reload");
	}
	free(names);
	free(fresh);
	mgr_kick(m);
	if (ret_report)
		*ret_report = rep;
	else
		json_decref(rep);
	return 0;

out_err:
	snprintf(err, err_size, "out of memory; nothing was changed");
	json_decref(rep);
	free(names);
	free(fresh);
out_cfg:
	vram_config_free(cfg);
	return r;
}

int vram_manager_set_source(struct vram_manager *m, const char *path,
			    const struct vram_config_overrides *ov, bool keep_log_level)
{
	m->keep_log_level = keep_log_level;
	char *p = path ? strdup(path) : NULL;
	char *l = ov && ov->listen ? strdup(ov->listen) : NULL;
	char *g = ov && ov->sim_gpus ? strdup(ov->sim_gpus) : NULL;
	char *d = ov && ov->state_dir ? strdup(ov->state_dir) : NULL;
	if ((path && !p) || (ov && ov->listen && !l) || (ov && ov->sim_gpus && !g) ||
	    (ov && ov->state_dir && !d)) {
		free(p);
		free(l);
		free(g);
		free(d);
		return -ENOMEM;
	}
	free(m->cfg_path);
	free(m->ov_listen);
	free(m->ov_sim_gpus);
	free(m->ov_state_dir);
	m->cfg_path = p;
	m->ov_listen = l;
	m->ov_sim_gpus = g;
	m->ov_state_dir = d;
	return 0;
}

/* A reload's pending work goes on, then the configs nothing runs with any more are freed. */
static void reload_kick(struct vram_manager *m)
{
	reload_steps(m);
	retired_reap(m);
}

static void reload_done(struct vram_manager *m)
{
	struct vram_list *pos, *tmp;
	vram_list_for_each_safe(pos, tmp, &m->retired) {
		struct retired *t = vram_list_entry(pos, struct retired, link);
		vram_list_remove(pos);
		vram_config_free(t->cfg);
		free(t);
	}
	free(m->cfg_path);
	free(m->ov_listen);
	free(m->ov_sim_gpus);
	free(m->ov_state_dir);
}

static void reload_init(struct vram_manager *m)
{
	vram_list_init(&m->retired);
}

const struct mgr_feature mgr_reload_feature = {
	.name = "reload",
	.init = reload_init,
	.kick = reload_kick,
	.done = reload_done,
};

static int reload_file(struct vram_manager *m, json_t **ret_report, char *err, size_t err_size)
{
	if (!m->cfg_path) {
		snprintf(err, err_size, "vramd was started without a config file to read again");
		return -ENOENT;
	}
	struct vram_config_overrides ov = {
		.listen = m->ov_listen, .sim_gpus = m->ov_sim_gpus, .state_dir = m->ov_state_dir,
	};
	struct vram_config *cfg = NULL;
	char *msg = NULL;
	int r = vram_config_load(m->cfg_path, &ov, &cfg, &msg);
	if (r < 0) {
		snprintf(err, err_size, "%s; nothing was changed",
			 msg ? msg : "the config could not be read");
		free(msg);
		return r;
	}
	free(msg);
	return vram_manager_reload(m, cfg, ret_report, err, err_size);
}

/*
 * The one way in for SIGHUP and POST /api/reload, so the service manager
 * hears of both: RELOADING=1 before the file is read, READY=1 after,
 * whether it was applied or refused (a refused reload leaves vramd running
 * the config it had, which is ready).
 */
int vram_manager_reload_file(struct vram_manager *m, json_t **ret_report, char *err,
			     size_t err_size)
{
	vram_notify(VRAM_NOTIFY_RELOADING, "Reloading %s", m->cfg_path ? m->cfg_path : "the config");
	int r = reload_file(m, ret_report, err, err_size);
	if (r < 0)
		vram_notify(VRAM_NOTIFY_READY, "Config reload refused; running the previous config");
	else
		vram_notify(VRAM_NOTIFY_READY, "Config reloaded; %zu workload%s",
			    m->cfg->n_workloads, m->cfg->n_workloads == 1 ? "" : "s");
	return r;
}
