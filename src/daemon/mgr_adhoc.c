/* SPDX-License-Identifier: MIT */
/*
 * Ad-hoc workloads (vramctl run, POST /api/workloads), a feature on the
 * manager's top floor: the slots reserved for them, their own configs and
 * owners, the per-user limit, removal and the linger of finished ones.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "config/config.h"
#include "core/plan.h"
#include "daemon/peer.h"
#include "daemon/runas.h"

static void adhoc_cfg_done(struct vram_workload_config *c)
{
	free(c->name);
	mgr_strv_free(c->cmd);
	mgr_strv_free(c->env);
	free(c->cwd);
	memset(c, 0, sizeof(*c));
}

/* The ad-hoc record of w, NULL for a workload of the config. */
static struct mgr_adhoc *adhoc_of(struct vram_manager *m, const struct vram_workload *w)
{
	size_t k = (size_t)(w - m->ws);
	return k >= m->n_cfg && k < m->n_ws ? &m->adhoc[k - m->n_cfg] : NULL;
}

/* Whether w has ended and nothing holds it: no process, job, request or waiter. */
static bool adhoc_finished(struct vram_manager *m, struct vram_workload *w)
{
	if ((w->state != VRAM_WL_STOPPED && w->state != VRAM_WL_FAILED) || mgr_any_process(w) ||
	    w->job || w->in_flight || w->awaiting_room || w->retry_pending)
		return false;
	return !mgr_waiter_holds(m, w);
}

static void adhoc_free_slot(struct vram_manager *m, struct vram_workload *w)
{
	struct mgr_adhoc *a = adhoc_of(m, w);
	vram_info("%s: removed", w->cfg->name);
	mgr_workload_done(m, w);
	adhoc_cfg_done(&a->cfg);
	memset(a, 0, sizeof(*a));
	mgr_rebuild_live(m);
}

/* An ad-hoc workload that ended VRAM_MANAGER_ADHOC_LINGER_MS ago is removed (from the tick). */
static void adhoc_tick(struct vram_manager *m, uint64_t now)
{
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		struct mgr_adhoc *a = adhoc_of(m, w);
		const struct mgr_slot *slot = mgr_slot(m, w);
		if (a && slot->exited && vram_wl_state_settled(w->state) && !mgr_any_process(w) &&
		    now - slot->finished_ms >= VRAM_MANAGER_ADHOC_LINGER_MS)
			a->removing = true;
	}
}

/* Frees the slots of removed ad-hoc workloads that have ended (from the kick). */
static void adhoc_reap(struct vram_manager *m)
{
	for (size_t i = 0; m->ws && i < VRAM_MANAGER_ADHOC_MAX; i++) {
		struct vram_workload *w = &m->ws[m->n_cfg + i];
		if (m->adhoc[i].used && m->adhoc[i].removing && adhoc_finished(m, w))
			adhoc_free_slot(m, w);
	}
}

/* A free slot; else the one that ended longest ago is freed for reuse. NULL if none. */
static struct vram_workload *adhoc_slot(struct vram_manager *m)
{
	struct vram_workload *oldest = NULL;
	for (size_t i = 0; i < VRAM_MANAGER_ADHOC_MAX; i++) {
		if (!m->adhoc[i].used)
			return &m->ws[m->n_cfg + i];
	}
	for (size_t i = 0; i < VRAM_MANAGER_ADHOC_MAX; i++) {
		struct vram_workload *w = &m->ws[m->n_cfg + i];
		if (adhoc_finished(m, w) && (!oldest || w->state_since_ms < oldest->state_since_ms))
			oldest = w;
	}
	if (oldest)
		adhoc_free_slot(m, oldest);
	return oldest;
}

/* Copies a NULL-terminated list; NULL on out of memory. Caller frees (strv). */
static char **strv_copy(const char *const *v, size_t n)
{
	char **out = calloc(n + 1, sizeof(*out));
	for (size_t i = 0; out && i < n; i++) {
		out[i] = strdup(v[i]);
		if (!out[i]) {
			mgr_strv_free(out);
			return NULL;
		}
	}
	return out;
}

int mgr_adhoc_create(struct vram_manager *m, const struct vram_adhoc_spec *spec, bool fresh,
		     bool attached, struct vram_workload **ret_w, char *err, size_t err_size)
{
	size_t n_cmd = 0, n_env = 0;
	while (spec->cmd && spec->cmd[n_cmd])
		n_cmd++;
	if (n_cmd == 0 || !spec->cmd[0][0] || n_cmd > VRAM_CONFIG_MAX_ARGS) {
		snprintf(err, err_size, "cmd: expected a command of 1..%d words", VRAM_CONFIG_MAX_ARGS);
		return -EINVAL;
	}
	if (!attached && strcmp(spec->cmd[0], MGR_ATTACHED_CMD) == 0) {
		/* that word marks a workload whose processes vramd never signals */
		snprintf(err, err_size, "cmd: \"%s\" is not a command", MGR_ATTACHED_CMD);
		return -EINVAL;
	}
	for (; spec->env && spec->env[n_env]; n_env++) {
		const char *eq = strchr(spec->env[n_env], '=');
		if (!eq || eq == spec->env[n_env]) {
			snprintf(err, err_size, "env: expected KEY=VALUE, got \"%.64s\"", spec->env[n_env]);
			return -EINVAL;
		}
	}
	if (n_env > VRAM_MANAGER_ADHOC_MAX_ENV) {
		snprintf(err, err_size, "env: more than %d variables", VRAM_MANAGER_ADHOC_MAX_ENV);
		return -EINVAL;
	}
	if (spec->cwd && spec->cwd[0] != '/') {
		snprintf(err, err_size, "cwd: expected an absolute path, got \"%.64s\"", spec->cwd);
		return -EINVAL;
	}
	unsigned gpus = spec->gpus_set ? spec->gpus
				       : (spec->memory.bytes || spec->memory.is_fraction) ? 1 : 0;
	if (gpus > VRAM_PLAN_MAX_GPUS) {
		snprintf(err, err_size, "gpus: expected 0..%d, got %u", VRAM_PLAN_MAX_GPUS, gpus);
		return -EINVAL;
	}
	char name[VRAM_CONFIG_NAME_MAX + 1];
	if (spec->name && spec->name[0]) {
		if (!vram_config_name_ok(spec->name)) {
			snprintf(err, err_size,
				 "name: expected 1..%d of A-Z a-z 0-9 . _ -, got \"%.64s\"",
				 VRAM_CONFIG_NAME_MAX, spec->name);
			return -EINVAL;
		}
		if (!attached && strncmp(spec->name, MGR_ATTACHED_PREFIX, strlen(MGR_ATTACHED_PREFIX)) == 0) {
			/* a user's command must not take the name a Slurm step attaches under */
			snprintf(err, err_size, "name: \"%s...\" is kept for Slurm steps, got \"%.64s\"",
				 MGR_ATTACHED_PREFIX, spec->name);
			return -EINVAL;
		}
		if (mgr_find(m, spec->name)) {
			snprintf(err, err_size, "a workload named \"%s\" exists", spec->name);
			return -EEXIST;
		}
		snprintf(name, sizeof(name), "%s", spec->name);
	} else {
		do
			snprintf(name, sizeof(name), "run-%u", ++m->adhoc_seq);
		while (mgr_find(m, name));
	}
	if (!attached && spec->runas && !spec->runas->as_daemon && spec->runas->uid != 0) {
		/* one user cannot take every slot from the others and the owner */
		unsigned held = 0;
		for (size_t i = 0; i < VRAM_MANAGER_ADHOC_MAX; i++)
			held += m->adhoc[i].used && !m->adhoc[i].removing &&
				m->adhoc[i].runas.uid == spec->runas->uid;
		if (held >= VRAM_MANAGER_ADHOC_PER_USER_MAX) {
			snprintf(err, err_size,
				 "%s holds %u ad-hoc workloads, the most one user may; end one "
				 "first (DELETE /api/workloads/NAME)",
				 spec->runas->user, held);
			return -EDQUOT;
		}
	}
	struct vram_workload *w = adhoc_slot(m);
	if (!w) {
		snprintf(err, err_size, "all %d ad-hoc workload slots are in use; remove one first",
			 VRAM_MANAGER_ADHOC_MAX);
		return -EAGAIN;
	}
	size_t k = (size_t)(w - m->ws);
	struct mgr_adhoc *a = &m->adhoc[k - m->n_cfg];
	struct vram_workload_config *c = &a->cfg;
	if (spec->runas) {
		a->runas = *spec->runas;
	} else {
		/* an in-process caller: vramd itself, as before users were told apart */
		struct vram_peer self;
		vram_peer_self(&self);
		char why[256];
		if (vram_runas_for_peer(&self, &self, m->cfg, &a->runas, why, sizeof(why)) < 0) {
			snprintf(err, err_size, "%s", why);
			return -ENOMEM;
		}
	}
	*c = (struct vram_workload_config){
		.name = strdup(name),
		.cmd = strv_copy(spec->cmd, n_cmd),
		.n_cmd = n_cmd,
		.env = strv_copy(spec->env, n_env),
		.n_env = n_env,
		.cwd = spec->cwd ? strdup(spec->cwd) : NULL,
		.gpus = {.kind = VRAM_GPUS_COUNT, .count = gpus},
		.memory = spec->memory,
		.replicas = 1,
		.placement = VRAM_PLACEMENT_PACK,
		.fallback = VRAM_FALLBACK_NONE,
		.start = VRAM_START_EAGER,
		.health = {.kind = VRAM_HEALTH_NONE, .interval_ms = 500, .timeout_ms = 2000,
			   .start_timeout_ms = 120000},
		.idle = {.offload_after_ms = VRAM_DURATION_NEVER,
			 .release_after_ms = VRAM_DURATION_NEVER,
			 .park_after_ms = VRAM_DURATION_NEVER},
		.offload = VRAM_ENGINE_HOOK,
		.restart = VRAM_RESTART_NEVER,
		.restart_backoff_max_ms = 60000,
		.stop_grace_ms = 10000,
		.share = VRAM_SHARE_NONE,
		.queue_max = 64,
		.queue_timeout_ms = 120000,
	};
	int r = -ENOMEM;
	if (!c->name || !c->cmd || !c->env || (spec->cwd && !c->cwd)) {
		snprintf(err, err_size, "out of memory");
		goto out_free;
	}
	r = mgr_workload_init(m, w, c, k, fresh);
	if (r < 0) {
		snprintf(err, err_size, "out of memory");
		goto out_free;
	}
	a->used = true;
	mgr_slot(m, w)->owner = &a->runas;
	mgr_rebuild_live(m);
	*ret_w = w;
	return 0;

out_free:
	mgr_workload_done(m, w);
	adhoc_cfg_done(c);
	memset(a, 0, sizeof(*a));
	return r;
}

int vram_manager_add_adhoc(struct vram_manager *m, const struct vram_adhoc_spec *spec,
			   const char **ret_name, char *err, size_t err_size)
{
	if (m->shutting_down) {
		snprintf(err, err_size, "vramd is shutting down");
		return -EBUSY;
	}
	struct vram_workload *w;
	int r = mgr_adhoc_create(m, spec, true, false, &w, err, err_size);
	if (r < 0)
		return r;
	r = mgr_begin_start(m, w, VRAM_REASON_RUN, "run by hand", err, err_size);
	if (r < 0) {
		adhoc_free_slot(m, w);
		return r;
	}
	if (ret_name)
		*ret_name = w->cfg->name;
	return 0;
}

struct vram_workload *mgr_adhoc_restore(struct vram_manager *m, const char *name,
					const struct vram_adhoc_spec *spec, char *err,
					size_t err_size)
{
	struct vram_adhoc_spec named = *spec;
	named.name = name;
	struct vram_workload *w;
	bool attached = spec->cmd && spec->cmd[0] && strcmp(spec->cmd[0], MGR_ATTACHED_CMD) == 0;
	if (mgr_adhoc_create(m, &named, false, attached, &w, err, err_size) < 0)
		return NULL;
	/* "run-<n>" names go on after the highest one taken back */
	unsigned n;
	char tail;
	if (sscanf(name, "run-%u%c", &n, &tail) == 1 && n > m->adhoc_seq)
		m->adhoc_seq = n;
	return w;
}

static void adhoc_done(struct vram_manager *m)
{
	for (size_t i = 0; i < VRAM_MANAGER_ADHOC_MAX; i++)
		adhoc_cfg_done(&m->adhoc[i].cfg);
}

const struct mgr_feature mgr_adhoc_feature = {
	.name = "adhoc",
	.kick = adhoc_reap,
	.tick = adhoc_tick,
	.done = adhoc_done,
};

int vram_manager_remove_adhoc(struct vram_manager *m, const char *name, char *err, size_t err_size)
{
	struct vram_workload *w = mgr_find(m, name);
	if (!w) {
		snprintf(err, err_size, "no workload named \"%s\"", name ? name : "");
		return -ENOENT;
	}
	struct mgr_adhoc *a = adhoc_of(m, w);
	if (!a) {
		snprintf(err, err_size, "%s comes from the config; only ad-hoc workloads can be removed "
			 "(stop it instead)", name);
		return -EPERM;
	}
	a->removing = true;
	if ((w->state != VRAM_WL_STOPPED && w->state != VRAM_WL_FAILED) || mgr_any_process(w))
		mgr_stop_workload(m, w, VRAM_REASON_REMOVED, "removed");
	mgr_kick(m);
	return 0;
}

bool vram_manager_adhoc_owner(struct vram_manager *m, const char *name, uid_t *ret_uid, char *user,
			      size_t size)
{
	struct vram_workload *w = mgr_find(m, name);
	struct mgr_adhoc *a = w ? adhoc_of(m, w) : NULL;
	if (!a)
		return false;
	if (ret_uid)
		*ret_uid = a->runas.uid;
	if (user)
		snprintf(user, size, "%s", a->runas.user);
	return true;
}
