/* SPDX-License-Identifier: MIT */
/*
 * The manager: every workload's state machine, processes, timers and engine
 * jobs, on the daemon's one loop. All changes go through set_state(), which
 * applies the lifecycle table (core/workload.c), tells subscribers, resolves
 * the waiters of actions and pokes the "kick" event so that work waiting for
 * a change (a start waiting for evicted memory, shutdown waiting for the last
 * child) is reconsidered on the next loop turn rather than re-entrantly.
 *
 * Callbacks to callers (action results) are always delivered from the loop,
 * never from inside vram_manager_act().
 */
#include "daemon/manager.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/strutil.h"
#include "common/units.h"
#include "core/engine.h"
#include "core/plan.h"
#include "core/policy.h"
#include "core/workload.h"
#include "config/diff.h"
#include "daemon/hookchan.h"
#include "daemon/liveness.h"
#include "daemon/mps.h"
#include "daemon/portowner.h"
#include "daemon/supervise.h"
#include "common/workers.h"

#define TICK_MS 500                 /* period of the manager's tick */
#define BACKOFF_BASE_MS 1000        /* first restart delay; doubles per failure */
#define BACKOFF_RESET_MS 30000      /* ready this long: the next crash starts from 1 s again */
#define RETRY_WAIT_EXIT_MS 100      /* restart due while processes still exit: look again */
#define PORT_SEARCH_SPAN 2000       /* ports tried above port_range_start */
#define DEFAULT_PORT_RANGE 20000
#define WORKERS_THREADS 2
#define SIM_RATE_ENV "VRAMD_SIM_BANDWIDTH" /* bytes per second for the sim engine, e.g. 2GiB */
#define MPS_REFRESH_TICKS 10        /* ask the MPS daemons for their servers every 10 ticks (5 s) */

struct vram_manager_waiter {
	struct vram_manager *m;
	struct vram_manager_waiter *next;
	struct vram_workload *w;
	enum vram_action action;
	enum vram_wl_state target;
	vram_action_cb cb;
	void *arg;
	struct event *ev;      /* delivers the result from the loop */
	bool resolved;
	uint64_t started_ms;
	struct vram_action_result res;
	/* an action on one hooked process by pid (w is NULL): */
	struct vram_hookchan_req *hook_req; /* in flight, or NULL */
	bool through_restart; /* a start asked while a reload's restart was pending: resolved after it */
	char hook_workload[VRAM_HOOKCHAN_NAME_MAX]; /* the process's workload, for res.workload */
};

struct vram_manager_sub {
	struct vram_manager *m;
	struct vram_manager_sub *next;
	vram_event_cb cb;
	void *arg;
};

/*
 * A workload of the config and what a reload left for it to do. Such work
 * waits until no request is in flight and no action runs, so that a reload
 * never cuts a request short.
 */
struct cfg_slot {
	bool removing;   /* gone from the config: stopped, then freed */
	bool start_after; /* start again once the restart is done */
	const struct vram_workload_config *next; /* borrowed (m->cfg or a retired config): the
						     settings it restarts with; NULL: none pending */
	char keys[512];  /* the keys that changed, for status and the log */
};

/* A config replaced by a reload, kept while a workload still runs with it. */
struct retired {
	struct vram_config *cfg; /* owned */
	struct retired *next;
};

/* An ad-hoc workload's own config and what it left when it ended. */
struct adhoc {
	bool used;           /* the slot holds a workload */
	struct vram_runas runas; /* who it runs as: its owner */
	bool removing;       /* freed once it has exited and nothing refers to it */
	bool exited;         /* its process ended since the last start */
	int wait_status;     /* waitpid status of that end */
	uint64_t finished_ms; /* monotonic ms it ended */
	struct vram_workload_config cfg; /* owned */
};

struct vram_manager {
	struct event_base *base; /* borrowed */
	struct vram_config *cfg; /* owned */
	struct vram_gpus *gpus;  /* owned */
	struct vram_supervisor *sup;
	struct vram_workers *workers;
	struct vram_engine_host host;
	struct vram_workload *ws; /* owned array: config order, then the ad-hoc slots */
	struct vram_workload **wptrs; /* the live workloads (n_live), for the planner */
	size_t n_ws;          /* n_cfg + VRAM_MANAGER_ADHOC_MAX slots */
	size_t n_cfg;         /* slots for workloads of the config, ws[0..n_cfg): room for a reload */
	struct cfg_slot *slots; /* owned; for ws[0..n_cfg) */
	struct retired *retired; /* configs replaced by reloads, still in use */
	char *cfg_path;       /* owned; the file a reload reads, or NULL */
	char *ov_listen, *ov_sim_gpus, *ov_state_dir; /* owned; the command line's overrides */
	bool keep_log_level;  /* the command line set it: a reload leaves it */
	size_t n_live;
	struct adhoc adhoc[VRAM_MANAGER_ADHOC_MAX]; /* for ws[n_cfg + i] */
	unsigned adhoc_seq;   /* numbers "run-<n>" names */
	struct vram_manager_waiter *waiters;
	struct vram_manager_sub *subs;
	struct event *tick;
	struct event *kick;
	bool running;
	bool shutting_down;
	void (*shutdown_done)(void *arg);
	void *shutdown_arg;
	char *state_dir; /* owned */
	struct vram_mps *mps; /* owned; MPS control daemons for share: mps */
	unsigned ticks;       /* ticks since start, for jobs that run every few ticks */
	bool mps_quitting;    /* shutdown: waiting for the MPS daemons to quit */
	struct vram_hookchan *hookchan; /* owned; NULL when the socket could not be opened */
	bool shared_hook_failed; /* the hook socket for other users could not be opened (logged once) */
	char *hook_library;   /* owned; libvram.so to preload, NULL when not found */
};

static int set_state(struct vram_manager *m, struct vram_workload *w, enum vram_wl_event ev,
		     const char *reason);
static void stop_workload(struct vram_manager *m, struct vram_workload *w, const char *reason);
static int begin_start(struct vram_manager *m, struct vram_workload *w, const char *reason,
		       char *err, size_t err_size);
static void fail_workload(struct vram_manager *m, struct vram_workload *w, enum vram_wl_event ev,
			  bool retry);

static void adhoc_reap(struct vram_manager *m);
static void reload_steps(struct vram_manager *m);
static void retired_reap(struct vram_manager *m);
static void adhoc_cfg_done(struct vram_workload_config *c);

static void kick(struct vram_manager *m)
{
	event_active(m->kick, 0, 0);
}

static struct timeval ms_tv(uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

static double wall_now(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* A free ad-hoc slot has no config; every walk over ws skips it. */
static bool live(const struct vram_workload *w)
{
	return w->cfg != NULL;
}

/* The ad-hoc record of w, NULL for a workload of the config. */
static struct adhoc *adhoc_of(struct vram_manager *m, const struct vram_workload *w)
{
	size_t k = (size_t)(w - m->ws);
	return k >= m->n_cfg && k < m->n_ws ? &m->adhoc[k - m->n_cfg] : NULL;
}

/* The reload record of w, NULL for an ad-hoc workload. */
static struct cfg_slot *slot_of(struct vram_manager *m, const struct vram_workload *w)
{
	size_t k = (size_t)(w - m->ws);
	return k < m->n_cfg ? &m->slots[k] : NULL;
}

/* A workload that a reload removed and that has not stopped yet. */
static bool removing(struct vram_manager *m, const struct vram_workload *w)
{
	const struct cfg_slot *s = slot_of(m, w);
	return s && s->removing;
}

/* Any live workload by name, also one being removed. */
static struct vram_workload *find(struct vram_manager *m, const char *name)
{
	for (size_t i = 0; name && i < m->n_live; i++) {
		if (strcmp(m->wptrs[i]->cfg->name, name) == 0)
			return m->wptrs[i];
	}
	return NULL;
}

static bool any_process(const struct vram_workload *w)
{
	for (size_t i = 0; i < w->n_instances; i++) {
		if (w->instances[i].child)
			return true;
	}
	return false;
}

static void fmt_error(struct vram_workload *w, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fmt_error(struct vram_workload *w, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->last_error, sizeof(w->last_error), fmt, ap);
	va_end(ap);
	w->last_errno = err;
}

/* ---- events and waiters ---- */

static void emit(struct vram_manager *m, struct vram_workload *w, enum vram_wl_state from,
		 const char *reason)
{
	if (!m->subs)
		return;
	json_t *data = json_pack("{s:s,s:s,s:s,s:s,s:f}", "workload", w->cfg->name, "from",
				 vram_wl_state_name(from), "to", vram_wl_state_name(w->state),
				 "reason", reason ? reason : "", "time", wall_now());
	if (!data)
		return;
	for (struct vram_manager_sub *s = m->subs, *next; s; s = next) {
		next = s->next;
		s->cb("state", data, s->arg);
	}
	json_decref(data);
}

static void waiter_unlink(struct vram_manager_waiter *wt)
{
	for (struct vram_manager_waiter **pp = &wt->m->waiters; *pp; pp = &(*pp)->next) {
		if (*pp == wt) {
			*pp = wt->next;
			return;
		}
	}
}

static void waiter_free(struct vram_manager_waiter *wt)
{
	vram_hookchan_cancel(wt->hook_req);
	if (wt->ev)
		event_free(wt->ev);
	free(wt);
}

static void on_waiter(evutil_socket_t fd, short what, void *arg);

/* A waiter for action on w (NULL: on a hooked process), not linked yet. NULL on out of memory. */
static struct vram_manager_waiter *waiter_new(struct vram_manager *m, struct vram_workload *w,
					      enum vram_action action, vram_action_cb cb, void *arg)
{
	struct vram_manager_waiter *wt = calloc(1, sizeof(*wt));
	if (!wt)
		return NULL;
	wt->m = m;
	wt->w = w;
	wt->action = action;
	wt->cb = cb;
	wt->arg = arg;
	wt->started_ms = vram_now_ms();
	wt->ev = event_new(m->base, -1, 0, on_waiter, wt);
	if (!wt->ev) {
		free(wt);
		return NULL;
	}
	return wt;
}

static void on_waiter(evutil_socket_t fd, short what, void *arg)
{
	struct vram_manager_waiter *wt = arg;
	struct vram_manager *m = wt->m;
	waiter_unlink(wt);
	wt->cb(&wt->res, wt->arg);
	waiter_free(wt);
	kick(m); /* an ad-hoc workload this waiter held may be freed now */
}

const char *vram_action_name(enum vram_action action)
{
	static const char *const names[] = {
		[VRAM_ACTION_START] = "start",
		[VRAM_ACTION_STOP] = "stop",
		[VRAM_ACTION_OFFLOAD] = "offload",
		[VRAM_ACTION_RESTORE] = "restore",
		[VRAM_ACTION_RELEASE] = "release",
	};
	return (unsigned)action < sizeof(names) / sizeof(names[0]) ? names[action] : "?";
}

/* Fills the result from the workload's state and schedules the callback. */
static void waiter_resolve(struct vram_manager_waiter *wt, bool ok)
{
	struct vram_workload *w = wt->w;
	struct vram_action_result *res = &wt->res;
	wt->resolved = true;
	res->workload = w->cfg->name;
	res->state = vram_wl_state_name(w->state);
	res->seconds = (double)(vram_now_ms() - wt->started_ms) / 1000.0;
	res->engine = w->engine ? w->engine->name : NULL;
	if (ok) {
		res->error = 0;
		res->http_status = 200;
		if (wt->action == VRAM_ACTION_OFFLOAD || wt->action == VRAM_ACTION_RESTORE)
			res->bytes = w->last_bytes;
		char size[32];
		if (res->bytes)
			snprintf(res->message, sizeof(res->message), "%s is %s (%s %s in %.2fs with %s)",
				 w->cfg->name, res->state,
				 wt->action == VRAM_ACTION_OFFLOAD ? "offloaded" : "restored",
				 vram_units_format_bytes(res->bytes, size, sizeof(size)), res->seconds,
				 res->engine ? res->engine : "?");
		else
			snprintf(res->message, sizeof(res->message), "%s is %s", w->cfg->name,
				 res->state);
	} else if (w->last_errno == -ENOSPC) {
		res->error = -ENOSPC;
		res->http_status = 503;
		snprintf(res->message, sizeof(res->message), "%s", w->last_error);
	} else if (w->state == VRAM_WL_FAILED || (w->state == wt->target && w->last_error[0]) ||
		   w->last_errno) {
		res->error = w->last_errno ? w->last_errno : -EIO;
		res->http_status = 500;
		snprintf(res->message, sizeof(res->message), "%s failed to %s: %s", w->cfg->name,
			 vram_action_name(wt->action), w->last_error[0] ? w->last_error : "unknown error");
	} else {
		res->error = -ECANCELED;
		res->http_status = 409;
		snprintf(res->message, sizeof(res->message),
			 "%s is %s: another action changed it before it could %s", w->cfg->name,
			 res->state, vram_action_name(wt->action));
	}
	event_active(wt->ev, 0, 0);
}

static void resolve_waiters(struct vram_manager *m, struct vram_workload *w)
{
	for (struct vram_manager_waiter *wt = m->waiters; wt; wt = wt->next) {
		if (wt->w != w || wt->resolved || wt->through_restart)
			continue;
		if (w->state == wt->target)
			waiter_resolve(wt, true);
		else if (vram_wl_state_settled(w->state))
			waiter_resolve(wt, false);
	}
}

static int set_state(struct vram_manager *m, struct vram_workload *w, enum vram_wl_event ev,
		     const char *reason)
{
	int to = vram_wl_transition(w->state, ev);
	if (to < 0) {
		vram_debug("%s: event %s not allowed in state %s", w->cfg->name,
			   vram_wl_event_name(ev), vram_wl_state_name(w->state));
		return to;
	}
	enum vram_wl_state from = w->state;
	uint64_t now = vram_now_ms();
	w->state = (enum vram_wl_state)to;
	w->state_since_ms = now;
	if (w->state == VRAM_WL_READY) {
		w->last_used_ms = now;
		w->ready_since_ms = now;
		if (from != VRAM_WL_READY)
			vram_liveness_arm(w); /* the checks of a ready workload begin */
	}
	if (vram_wl_state_settled(w->state))
		w->evicting = false;
	if (from != w->state) {
		vram_info("%s: %s -> %s%s%s", w->cfg->name, vram_wl_state_name(from),
			  vram_wl_state_name(w->state), reason && reason[0] ? ": " : "",
			  reason ? reason : "");
		if (w->log)
			vram_logfile_note(w->log, "%s -> %s%s%s", vram_wl_state_name(from),
					  vram_wl_state_name(w->state), reason && reason[0] ? ": " : "",
					  reason ? reason : "");
		emit(m, w, from, reason);
	}
	resolve_waiters(m, w);
	kick(m);
	return 0;
}

/* ---- ports ---- */

static bool port_taken(struct vram_manager *m, unsigned port)
{
	for (size_t k = 0; k < m->n_live; k++) {
		const struct vram_workload *w = m->wptrs[k];
		if (w->cfg->port && port >= w->cfg->port && port < w->cfg->port + w->n_instances)
			return true;
		for (size_t i = 0; i < w->n_instances; i++) {
			if (w->instances[i].port == port)
				return true;
		}
	}
	return false;
}

static bool port_bindable(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

/* Gives every instance of w a port: the configured one (+ replica), or a free one. */
static int assign_ports(struct vram_manager *m, struct vram_workload *w, char *err, size_t err_size)
{
	unsigned first = m->cfg->daemon.port_range_start ? m->cfg->daemon.port_range_start
							  : DEFAULT_PORT_RANGE;
	for (size_t i = 0; i < w->n_instances; i++) {
		struct vram_instance *in = &w->instances[i];
		if (in->port)
			continue;
		if (w->cfg->port) {
			in->port = w->cfg->port + (unsigned)i;
			continue;
		}
		/*
		 * The scan starts at an offset taken from our pid and wraps, so
		 * that several daemons on one host (tests, a second user) do not
		 * all race for the first ports of the range.
		 */
		unsigned span = PORT_SEARCH_SPAN;
		if (first + span > 65536)
			span = 65536 - first;
		unsigned offset = (unsigned)getpid() * 61u % span;
		for (unsigned k = 0; k < span; k++) {
			unsigned p = first + (offset + k) % span;
			if (!port_taken(m, p) && port_bindable(p)) {
				in->port = p;
				break;
			}
		}
		if (!in->port) {
			snprintf(err, err_size, "%s: no free port in %u..%u", w->cfg->name, first,
				 first + PORT_SEARCH_SPAN - 1);
			return -EADDRINUSE;
		}
	}
	return 0;
}

/* ---- processes ---- */

static void on_child_exit(struct vram_child *c, int status, void *arg);

static int sim_charge(struct vram_manager *m, struct vram_instance *in, bool on)
{
	if (!vram_gpu_is_sim(m->gpus))
		return 0;
	int r = 0;
	for (size_t g = 0; g < in->n_gpus; g++) {
		int e = vram_gpu_sim_charge(m->gpus, in->gpus[g], in->pid, on ? in->bytes_per_gpu : 0);
		if (e < 0 && r == 0)
			r = e;
	}
	return r;
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* Whether w's processes are spawned with libvram.so: its engine is the hook's. */
static bool uses_hook(const struct vram_manager *m, const struct vram_workload *w)
{
	return m->hook_library && m->hookchan && w->engine &&
	       (w->engine->kind == VRAM_ENGINE_HOOK || w->engine->kind == VRAM_ENGINE_HOOK_CHECKPOINT);
}

/* Who w runs as when that is not vramd itself, else NULL. */
static const struct vram_runas *runs_as_other(struct vram_manager *m, const struct vram_workload *w)
{
	const struct adhoc *a = adhoc_of(m, w);
	return a && !a->runas.as_daemon ? &a->runas : NULL;
}

/*
 * A process of another user may register with the shared hook socket for
 * the ad-hoc workloads that run as that user and have a process (workload
 * NULL: for any of them).
 */
static bool hook_authorize(uid_t uid, const char *workload, void *arg)
{
	struct vram_manager *m = arg;
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		const struct vram_runas *r = runs_as_other(m, w);
		if (r && r->uid == uid && any_process(w) &&
		    (!workload || strcmp(workload, w->cfg->name) == 0))
			return true;
	}
	return false;
}

/*
 * The hook socket for w's processes: hook.sock, in the state directory,
 * which is vramd's alone, for processes of vramd's own user or root; for
 * another user, the shared one beside the control socket (hookchan.h),
 * opened the first time it is needed, since that user must already reach
 * the control socket's directory to ask for a command. NULL when the
 * shared one cannot be opened (logged once; such commands then run
 * without the hook).
 */
static const char *hook_socket_for(struct vram_manager *m, const struct vram_workload *w)
{
	const struct vram_runas *r = runs_as_other(m, w);
	if (!r || r->uid == 0 || r->uid == geteuid())
		return vram_hookchan_path(m->hookchan);
	if (vram_hookchan_shared_path(m->hookchan) || m->shared_hook_failed)
		return vram_hookchan_shared_path(m->hookchan);
	char *path = xasprintf("%s" VRAM_MANAGER_SHARED_HOOK_SUFFIX, m->cfg->daemon.socket);
	int r_listen = path ? vram_hookchan_listen_shared(m->hookchan, path, hook_authorize, m) : -ENOMEM;
	if (r_listen < 0) {
		m->shared_hook_failed = true;
		vram_warn("Failed to open the hook socket for other users' commands %s: %s; their "
			  "commands run without the hook", path ? path : "", strerror(-r_listen));
	}
	free(path);
	return vram_hookchan_shared_path(m->hookchan);
}

/*
 * "LD_PRELOAD=<hook>:<pre>", except that a sanitizer runtime at the head of
 * pre stays first (it refuses to start otherwise). Caller frees.
 */
static char *preload_with_hook(const char *hook, const char *pre)
{
	if (!pre || !*pre)
		return xasprintf("LD_PRELOAD=%s", hook);
	size_t first = strcspn(pre, ": ");
	const char *base = pre;
	for (const char *p = pre; p < pre + first; p++)
		if (*p == '/')
			base = p + 1;
	if (strncmp(base, "libasan", 7) == 0 || strncmp(base, "libclang_rt.asan", 16) == 0)
		return pre[first] ? xasprintf("LD_PRELOAD=%.*s:%s:%s", (int)first, pre, hook, pre + first + 1)
				  : xasprintf("LD_PRELOAD=%s:%s", pre, hook);
	return xasprintf("LD_PRELOAD=%s:%s", hook, pre);
}

/*
 * The environment a workload instance gets on top of the daemon's, then
 * extra (NULL-terminated, may be NULL; copied; the MPS client's variables,
 * whose CUDA_VISIBLE_DEVICES wins). Caller frees (strv).
 */
static char **instance_env(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in,
			   char *const *extra)
{
	size_t n_extra = 0;
	while (extra && extra[n_extra])
		n_extra++;
	size_t n = w->cfg->n_env + 12 + VRAM_RUNAS_ENV_MAX + n_extra;
	char **env = calloc(n, sizeof(*env));
	if (!env)
		return NULL;
	size_t k = 0;
	/* another user's command gets none of vramd's environment, so its HOME and names are set */
	const struct vram_runas *r = runs_as_other(m, w);
	int n_id = r ? vram_runas_identity_env(r, w->cfg->env, env) : 0;
	if (n_id < 0) {
		free(env);
		return NULL;
	}
	k += (size_t)n_id;
	for (size_t i = 0; i < w->cfg->n_env; i++)
		env[k++] = strdup(w->cfg->env[i]);

	char uuids[VRAM_PLAN_MAX_GPUS * (VRAM_GPU_UUID_MAX + 1)] = "";
	size_t len = 0;
	for (size_t g = 0; g < in->n_gpus; g++) {
		char idx[16];
		const char *id = vram_gpu_uuid(m->gpus, in->gpus[g]);
		if (!id)
			id = (snprintf(idx, sizeof(idx), "%u", in->gpus[g]), idx);
		len += (size_t)snprintf(uuids + len, sizeof(uuids) - len, "%s%s", g ? "," : "", id);
		if (len >= sizeof(uuids))
			len = sizeof(uuids) - 1;
	}
	env[k++] = xasprintf("CUDA_VISIBLE_DEVICES=%s", uuids);
	env[k++] = xasprintf("CUDA_DEVICE_ORDER=PCI_BUS_ID");
	env[k++] = xasprintf("PORT=%u", in->port);
	env[k++] = xasprintf("GPU_COUNT=%zu", in->n_gpus);
	env[k++] = xasprintf("VRAM_WORKLOAD=%s", w->cfg->name);
	env[k++] = xasprintf("VRAM_REPLICA=%u", in->replica);
	if (in->n_gpus && in->bytes_per_gpu)
		env[k++] = xasprintf("VRAM_MEMORY_LIMIT=%" PRIu64, in->bytes_per_gpu);
	const char *hook_socket = uses_hook(m, w) ? hook_socket_for(m, w) : NULL;
	if (hook_socket) {
		/* the workload's own LD_PRELOAD, else the daemon's, stays after ours */
		const char *pre = getenv("LD_PRELOAD");
		for (size_t i = 0; i < w->cfg->n_env; i++)
			if (strncmp(w->cfg->env[i], "LD_PRELOAD=", 11) == 0)
				pre = w->cfg->env[i] + 11;
		env[k++] = preload_with_hook(m->hook_library, pre);
		env[k++] = xasprintf("VRAM_HOOK_SOCKET=%s", hook_socket);
	}
	for (size_t i = 0; i < n_extra; i++)
		env[k++] = strdup(extra[i]);
	bool ok = true;
	for (size_t i = 0; i < k; i++)
		ok &= env[i] != NULL;
	if (!ok) {
		for (size_t i = 0; i < k; i++)
			free(env[i]);
		free(env);
		return NULL;
	}
	return env;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static int spawn_instance(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in,
			  char *err, size_t err_size)
{
	char **mps_env = NULL;
	if (in->mps_client && vram_mps_client_env(in->mps_client, &mps_env) < 0) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	char **env = instance_env(m, w, in, mps_env);
	vram_mps_env_free(mps_env);
	if (!env) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	const struct vram_runas *as = runs_as_other(m, w);
	struct vram_creds creds = {0};
	if (as)
		creds = (struct vram_creds){.uid = as->uid, .gid = as->gid, .groups = as->groups,
					    .n_groups = as->n_groups};
	struct vram_spawn sp = {
		.argv = w->cfg->cmd,
		.env = env,
		.cwd = w->cfg->cwd,
		.log = w->log,
		.creds = as ? &creds : NULL,
	};
	struct vram_child *c;
	int r = vram_supervisor_spawn(m->sup, &sp, on_child_exit, w, &c, err, err_size);
	strv_free(env);
	if (r < 0)
		return r;
	in->child = c;
	in->pid = vram_child_pid(c);
	struct adhoc *a = adhoc_of(m, w);
	if (a)
		a->exited = false;
	if (in->mps_client)
		vram_mps_client_set_pid(in->mps_client, in->pid);
	in->healthy = false;
	in->port_verified = false;
	in->stop_requested = false;
	in->resident = in->n_gpus > 0;
	(void)sim_charge(m, in, true);
	if (w->log)
		vram_logfile_note(w->log, "replica %u: pid %d, port %u, %zu GPU(s)%s%s%s", in->replica,
				  (int)in->pid, in->port, in->n_gpus, as ? ", as user " : "",
				  as ? as->user : "", uses_hook(m, w) && !hook_socket_for(m, w)
					  ? ", without the hook: its socket for other users could not be opened"
					  : "");
	return 0;
}

static void cancel_timers(struct vram_workload *w)
{
	evtimer_del(w->start_timer);
	evtimer_del(w->probe_timer);
	for (size_t i = 0; i < w->n_instances; i++) {
		vram_health_probe_cancel(w->instances[i].probe);
		w->instances[i].probe = NULL;
	}
}

/* SIGTERM (SIGKILL after the grace) to every process of w; exits are expected. */
static void stop_processes(struct vram_workload *w)
{
	for (size_t i = 0; i < w->n_instances; i++) {
		struct vram_instance *in = &w->instances[i];
		if (!in->child)
			continue;
		in->stop_requested = true;
		vram_child_stop(in->child, w->cfg->stop_grace_ms);
	}
}

static void kill_processes(struct vram_workload *w)
{
	for (size_t i = 0; i < w->n_instances; i++) {
		struct vram_instance *in = &w->instances[i];
		if (!in->child)
			continue;
		in->stop_requested = true;
		vram_child_kill(in->child);
	}
}

/* ---- MPS ---- */

/* Lets go of the MPS clients of instances that have no process (the last one makes the daemon quit). */
static void mps_detach_idle(struct vram_workload *w)
{
	for (size_t i = 0; i < w->n_instances; i++) {
		struct vram_instance *in = &w->instances[i];
		if (in->mps_client && !in->child) {
			vram_mps_client_free(in->mps_client);
			in->mps_client = NULL;
		}
	}
}

/*
 * Decides whether this run of w goes through MPS. Returns 0, or -ENOENT with
 * the message when share: mps cannot run here and no fallback allows it.
 */
static int mps_decide(struct vram_manager *m, struct vram_workload *w, char *err, size_t err_size)
{
	char why[256] = "";
	w->use_mps = false;
	w->mps_note[0] = '\0';
	if (w->cfg->share != VRAM_SHARE_MPS)
		return 0;
	if (vram_mps_available(m->mps, why, sizeof(why))) {
		w->use_mps = true;
		return 0;
	}
	if (w->cfg->fallback == VRAM_FALLBACK_EXCLUSIVE) {
		snprintf(w->mps_note, sizeof(w->mps_note), "fallback exclusive: running without MPS (%s)", why);
		return 0;
	}
	snprintf(err, err_size, "share: mps needs %s; set fallback: exclusive to run without MPS", why);
	return -ENOENT;
}

static void mps_fail(struct vram_manager *m, struct vram_workload *w, int error, const char *what,
		     const char *message)
{
	/* the first line in last_error, everything (the MPS log tail) in log_tail */
	size_t first = strcspn(message, "\n");
	fmt_error(w, error, "%s: %.*s", what, (int)(first < 400 ? first : 400), message);
	if (w->state == VRAM_WL_RESTORING && w->job && !w->engine->keeps_process) {
		struct vram_job *job = w->job;
		job->process_lost = true;
		kill_processes(w);
		cancel_timers(w);
		mps_detach_idle(w);
		vram_job_complete(job, error, 0, "%s", w->last_error);
	} else {
		kill_processes(w);
		fail_workload(m, w, w->state == VRAM_WL_STARTING ? VRAM_WL_EV_START_FAILED : VRAM_WL_EV_CRASH,
			      true);
	}
	snprintf(w->log_tail, sizeof(w->log_tail), "%s", message);
}

static void on_mps_event(struct vram_mps_client *c, enum vram_mps_event ev, const char *message, void *arg)
{
	struct vram_instance *in = arg;
	struct vram_workload *w = in->owner;
	struct vram_manager *m = w->ctx;
	char err[512];

	switch (ev) {
	case VRAM_MPS_READY:
		if (in->child || (w->state != VRAM_WL_STARTING && w->state != VRAM_WL_RESTORING))
			return;
		int r = spawn_instance(m, w, in, err, sizeof(err));
		if (r < 0)
			mps_fail(m, w, r, "spawn", err);
		break;
	case VRAM_MPS_FAILED:
		mps_fail(m, w, -EIO, "the MPS control daemon could not start", message);
		break;
	case VRAM_MPS_CRASHED:
		if (vram_wl_state_settled(w->state) && w->state != VRAM_WL_READY && w->state != VRAM_WL_OFFLOADED)
			return;
		mps_fail(m, w, -EPIPE, "the MPS control daemon died", message);
		break;
	}
}

/* Creates the MPS client of an instance; the process is spawned on READY. */
static int mps_attach(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in,
		      char *err, size_t err_size)
{
	char owner[160];
	char ids[VRAM_PLAN_MAX_GPUS][VRAM_GPU_UUID_MAX];
	const char *id_ptrs[VRAM_PLAN_MAX_GPUS];
	bool have_ids = true;
	for (size_t g = 0; g < in->n_gpus; g++) {
		const char *uuid = vram_gpu_uuid(m->gpus, in->gpus[g]);
		if (!uuid) {
			have_ids = false;
			ids[g][0] = '\0';
		} else {
			snprintf(ids[g], sizeof(ids[g]), "%s", uuid);
		}
		id_ptrs[g] = ids[g];
	}
	snprintf(owner, sizeof(owner), "%s#%u", w->cfg->name, in->replica);
	struct vram_mps_client_spec spec = {
		.owner = owner,
		.gpus = in->gpus,
		.gpu_ids = have_ids ? id_ptrs : NULL,
		.n_gpus = in->n_gpus,
		.mem_limit_bytes = in->bytes_per_gpu,
		.compute_percent = w->cfg->compute_percent,
	};
	return vram_mps_client_new(m->mps, &spec, on_mps_event, in, &in->mps_client, err, err_size);
}

/*
 * Spawns every instance and starts the health checks; an instance that uses
 * MPS is spawned once its MPS control daemon runs. On failure nothing is left
 * running.
 */
static int start_processes(struct vram_manager *m, struct vram_workload *w, char *err,
			   size_t err_size)
{
	int r = assign_ports(m, w, err, err_size);
	if (r < 0)
		return r;
	for (size_t i = 0; i < w->n_instances; i++) {
		struct vram_instance *in = &w->instances[i];
		if (w->use_mps && in->n_gpus > 0)
			r = mps_attach(m, w, in, err, err_size);
		else
			r = spawn_instance(m, w, in, err, err_size);
		if (r < 0) {
			kill_processes(w);
			mps_detach_idle(w);
			return r;
		}
	}
	struct timeval tv = ms_tv(w->cfg->health.start_timeout_ms);
	evtimer_add(w->start_timer, &tv);
	tv = ms_tv(w->cfg->health.kind == VRAM_HEALTH_NONE
			   ? 0
			   : vram_liveness_start_probe_ms(&w->cfg->health));
	evtimer_add(w->probe_timer, &tv);
	return 0;
}

/* Restart after a failure, with the delay doubling from 1 s up to restart_backoff_max. */
static void schedule_retry(struct vram_manager *m, struct vram_workload *w)
{
	if (m->shutting_down || w->cfg->restart == VRAM_RESTART_NEVER)
		return;
	uint64_t delay = BACKOFF_BASE_MS;
	for (unsigned i = 0; i < w->backoff_step && delay < w->cfg->restart_backoff_max_ms; i++)
		delay *= 2;
	if (delay > w->cfg->restart_backoff_max_ms)
		delay = w->cfg->restart_backoff_max_ms;
	w->backoff_step++;
	w->retry_pending = true;
	w->retry_at_ms = vram_now_ms() + delay;
	struct timeval tv = ms_tv(delay);
	evtimer_add(w->retry_timer, &tv);
	vram_info("%s: restarting in %" PRIu64 " ms", w->cfg->name, delay);
}

/* A workload that was ready for BACKOFF_RESET_MS starts its next backoff from 1 s again. */
static void backoff_reset_if_settled(struct vram_workload *w)
{
	if (w->state == VRAM_WL_READY && w->backoff_step && w->ready_since_ms &&
	    vram_now_ms() - w->ready_since_ms >= BACKOFF_RESET_MS)
		w->backoff_step = 0;
}

/* A process died, or a start/restore did not become healthy: go to failed. */
static void fail_workload(struct vram_manager *m, struct vram_workload *w, enum vram_wl_event ev,
			  bool retry)
{
	if (w->log)
		vram_logfile_tail(w->log, w->log_tail, sizeof(w->log_tail));
	cancel_timers(w);
	w->awaiting_room = false;
	if (w->job) {
		vram_job_cancel(w->job);
		w->job = NULL;
	}
	stop_processes(w);
	mps_detach_idle(w);
	w->offloaded_bytes = 0;
	if (w->state != VRAM_WL_FAILED)
		set_state(m, w, ev, w->last_error);
	if (retry && !w->retry_pending)
		schedule_retry(m, w);
}

static void on_child_exit(struct vram_child *c, int status, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	pid_t pid = vram_child_pid(c);
	struct vram_instance *in = NULL;
	for (size_t i = 0; i < w->n_instances; i++) {
		if (w->instances[i].child == c)
			in = &w->instances[i];
	}
	if (!in)
		return;
	char how[96];
	vram_wait_status_format(status, how, sizeof(how));
	(void)sim_charge(m, in, false);
	in->child = NULL;
	in->pid = 0;
	struct adhoc *a = adhoc_of(m, w);
	if (a) {
		a->exited = true;
		a->wait_status = status;
		a->finished_ms = vram_now_ms();
	}
	if (!w->cfg->port)
		in->port = 0; /* auto: the next start takes a port that is free then */
	vram_mps_client_free(in->mps_client); /* the last one makes its MPS daemon quit */
	in->mps_client = NULL;
	in->resident = false;
	in->healthy = false;
	vram_health_probe_cancel(in->probe);
	in->probe = NULL;
	bool expected = in->stop_requested;
	in->stop_requested = false;
	if (w->log)
		vram_logfile_note(w->log, "replica %u (pid %d) %s%s", in->replica, (int)pid, how,
				  expected ? "" : " unexpectedly");
	bool all_gone = !any_process(w);

	if (expected) {
		if (!all_gone)
			return;
		if (w->state == VRAM_WL_STOPPING) {
			w->offloaded_bytes = 0;
			set_state(m, w, VRAM_WL_EV_EXITED, "stopped");
		} else if (w->state == VRAM_WL_OFFLOADING && w->job && !w->engine->keeps_process) {
			vram_job_complete(w->job, 0, w->last_bytes, "processes stopped");
		}
		kick(m);
		return;
	}

	if (w->state == VRAM_WL_STOPPING) {
		if (all_gone)
			set_state(m, w, VRAM_WL_EV_EXITED, how);
		return;
	}
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (clean && w->state == VRAM_WL_READY && w->cfg->restart != VRAM_RESTART_ALWAYS) {
		/* it finished by itself: not a failure, and on-failure does not restart it */
		fmt_error(w, 0, "replica %u (pid %d) %s", in->replica, (int)pid, how);
		if (all_gone) {
			set_state(m, w, VRAM_WL_EV_EXITED, w->last_error);
		} else {
			set_state(m, w, VRAM_WL_EV_STOP, w->last_error);
			stop_processes(w);
		}
		return;
	}
	fmt_error(w, -ECHILD, "replica %u (pid %d) %s while %s", in->replica, (int)pid, how,
		  vram_wl_state_name(w->state));
	bool retry = w->cfg->restart == VRAM_RESTART_ALWAYS || !clean ||
		     w->state != VRAM_WL_READY;
	backoff_reset_if_settled(w);
	fail_workload(m, w, w->state == VRAM_WL_STARTING ? VRAM_WL_EV_START_FAILED
							 : VRAM_WL_EV_CRASH, retry);
}

static void on_all_healthy(struct vram_manager *m, struct vram_workload *w)
{
	cancel_timers(w);
	if (w->state == VRAM_WL_STARTING) {
		w->last_error[0] = '\0';
		w->last_errno = 0;
		set_state(m, w, VRAM_WL_EV_HEALTHY, "healthy");
	} else if (w->state == VRAM_WL_RESTORING && w->job) {
		vram_job_complete(w->job, 0, vram_workload_gpu_bytes(w), "started again");
	}
}

/*
 * A start or restore that cannot become healthy (it timed out, or its port
 * is held by another process): kill what runs and fail, or hand the failure
 * to the restore job, which fails the workload itself. The reason is in
 * last_error.
 */
static void start_give_up(struct vram_manager *m, struct vram_workload *w)
{
	if (w->state == VRAM_WL_RESTORING && w->job && !w->engine->keeps_process) {
		struct vram_job *job = w->job;
		job->process_lost = true;
		kill_processes(w);
		cancel_timers(w);
		vram_job_complete(job, w->last_errno, 0, "%s", w->last_error);
		return;
	}
	kill_processes(w);
	fail_workload(m, w, w->state == VRAM_WL_STARTING ? VRAM_WL_EV_START_FAILED
							 : VRAM_WL_EV_RESTORE_FAILED,
		      w->last_errno != -ENOSPC);
}

/*
 * The probe of a starting instance was answered; whether by the instance is
 * checked here (portowner.h), since the probe (and the gateway after it)
 * reaches whatever listens on the port. A port held by another process
 * fails the start with that process's name and pid; one that nothing holds
 * any more is probed again. Returns whether the instance counts as healthy.
 */
static bool port_is_ours(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in)
{
	if (w->cfg->health.port_owner == VRAM_PORT_OWNER_ANY || w->cfg->health.kind == VRAM_HEALTH_NONE)
		return true;
	struct vram_portowner po;
	int r = vram_portowner_check(in->port, in->pid, &po);
	if (r < 0) {
		/* fail closed: the start times out with this as its last probe */
		snprintf(w->last_probe, sizeof(w->last_probe), "who holds port %u cannot be read: %s",
			 in->port, strerror(-r));
		return false;
	}
	if (po.verdict == VRAM_PORTOWNER_OWNED) {
		in->port_verified = true;
		return true;
	}
	if (po.verdict == VRAM_PORTOWNER_NONE) {
		/* answered, yet nothing listens now: it closed meanwhile; probed again */
		vram_portowner_describe(&po, in->port, w->cfg->name, w->last_probe,
					sizeof(w->last_probe));
		return false;
	}
	char msg[sizeof(w->last_error)];
	vram_portowner_describe(&po, in->port, w->cfg->name, msg, sizeof(msg));
	fmt_error(w, -EADDRINUSE, "%s", msg);
	if (w->log)
		vram_logfile_note(w->log, "replica %u: %s", in->replica, msg);
	start_give_up(m, w);
	return false;
}

static void on_probe(bool ok, const char *why, void *arg)
{
	struct vram_instance *in = arg;
	struct vram_workload *w = in->owner;
	struct vram_manager *m = w->ctx;
	in->probe = NULL;
	if (!ok) {
		snprintf(w->last_probe, sizeof(w->last_probe), "%s", why);
		return;
	}
	if (!port_is_ours(m, w, in))
		return;
	in->healthy = true;
	for (size_t i = 0; i < w->n_instances; i++) {
		if (!w->instances[i].healthy)
			return;
	}
	on_all_healthy(m, w);
}

/* A liveness check of a ready instance ended (liveness.h). */
static void on_live_probe(bool ok, const char *why, void *arg)
{
	struct vram_instance *in = arg;
	struct vram_workload *w = in->owner;
	struct vram_manager *m = w->ctx;
	in->probe = NULL;
	if (w->state != VRAM_WL_READY || !in->child)
		return; /* begun before an offload or a stop: says nothing about now */
	char reason[sizeof(w->last_error)];
	switch (vram_liveness_record(w, in, ok, why, vram_now_ms(), reason, sizeof(reason))) {
	case VRAM_LIVENESS_OK:
	case VRAM_LIVENESS_FAILING:
		return;
	case VRAM_LIVENESS_HELD:
		vram_debug("%s: replica %u fails its health check, kept: a request in flight progresses",
			   w->cfg->name, in->replica);
		return;
	case VRAM_LIVENESS_DEAD:
		break;
	}
	fmt_error(w, -ETIMEDOUT, "%s", reason);
	backoff_reset_if_settled(w);
	/* stop_processes also wakes a stopped (SIGSTOP) process, so that SIGTERM can end it */
	fail_workload(m, w, VRAM_WL_EV_CRASH, true);
}

/*
 * Probe rounds: while starting or restoring, every min(interval, 500 ms) for
 * each instance not healthy yet; while ready, every interval for each
 * instance (liveness). In other states the timer stops; becoming ready
 * arms it again (set_state).
 */
static void on_probe_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	const struct vram_health *h = &w->cfg->health;
	bool live = w->state == VRAM_WL_READY;
	if (live ? !vram_liveness_enabled(h)
		 : w->state != VRAM_WL_STARTING && w->state != VRAM_WL_RESTORING)
		return;
	for (size_t i = 0; i < w->n_instances; i++) {
		struct vram_instance *in = &w->instances[i];
		if (!in->child || in->probe || (in->healthy && !live))
			continue;
		int r = vram_health_probe_start(m->base, h->kind, h->path, in->port, h->timeout_ms,
						live ? on_live_probe : on_probe, in, &in->probe);
		if (r < 0)
			in->probe = NULL;
	}
	struct timeval tv = ms_tv(live ? h->interval_ms : vram_liveness_start_probe_ms(h));
	evtimer_add(w->probe_timer, &tv);
}

static void on_start_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	char dur[32];
	const char *probe = w->last_probe;
	vram_units_format_duration_ms(w->cfg->health.start_timeout_ms, dur, sizeof(dur));
	if (w->awaiting_room) {
		fmt_error(w, -ENOSPC, "no room on the GPUs within %s: evicted workloads did not free enough",
			  dur);
	} else {
		fmt_error(w, -ETIMEDOUT, "not healthy within %s%s%s", dur, probe[0] ? " (last probe: " : "",
			  probe[0] ? probe : "");
		if (probe[0])
			strncat(w->last_error, ")", sizeof(w->last_error) - strlen(w->last_error) - 1);
	}
	start_give_up(m, w);
}

static void on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	if (w->state != VRAM_WL_FAILED || m->shutting_down) {
		w->retry_pending = false;
		return;
	}
	if (any_process(w)) {
		struct timeval tv = ms_tv(RETRY_WAIT_EXIT_MS);
		evtimer_add(w->retry_timer, &tv);
		return;
	}
	w->retry_pending = false;
	w->restarts++;
	char err[512];
	int r = begin_start(m, w, "restart after failure", err, sizeof(err));
	if (r < 0) {
		fmt_error(w, r, "restart: %s", err);
		vram_warn("Failed to restart %s: %s", w->cfg->name, err);
		schedule_retry(m, w);
	}
}

/* ---- engine host ---- */

static int host_stop_processes(void *ctx, struct vram_workload *w, struct vram_job *job)
{
	w->last_bytes = vram_workload_gpu_bytes(w);
	if (!any_process(w)) {
		vram_job_complete(job, 0, w->last_bytes, "no process to stop");
		return 0;
	}
	stop_processes(w);
	return 0;
}

static int host_spawn_processes(void *ctx, struct vram_workload *w, struct vram_job *job)
{
	struct vram_manager *m = ctx;
	char err[512];
	int r = start_processes(m, w, err, sizeof(err));
	if (r < 0) {
		job->process_lost = true;
		vram_job_complete(job, r, 0, "%s", err);
	}
	return 0;
}

/* ---- placement ---- */

static int gpu_infos(struct vram_manager *m, struct vram_gpu_info **ret, size_t *ret_n)
{
	size_t n = vram_gpu_count(m->gpus);
	if (n > VRAM_PLAN_MAX_GPUS)
		n = VRAM_PLAN_MAX_GPUS;
	struct vram_gpu_info *infos = calloc(n ? n : 1, sizeof(*infos));
	if (!infos)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (vram_gpu_query(m->gpus, (unsigned)i, &infos[i]) < 0) {
			infos[i].index = (unsigned)i;
			infos[i].mem_total = 0;
		}
	}
	*ret = infos;
	*ret_n = n;
	return 0;
}

/*
 * Plans w's instances. On success writes the assignment into w (GPUs, bytes)
 * and the victims to evict into *ret_victims. Returns 0, -ENOSPC/-EINVAL (err).
 */
static int plan_workload(struct vram_manager *m, struct vram_workload *w, bool allow_evict,
			 enum vram_policy_where where, struct vram_policy_placement *pl, char *err,
			 size_t err_size)
{
	struct vram_gpu_info *infos;
	size_t n;
	int r = gpu_infos(m, &infos, &n);
	if (r < 0)
		return r;
	struct vram_policy_ledger l;
	r = vram_policy_ledger_build(&l, infos, n, m->cfg->gpus.reserve, m->wptrs, m->n_live, w);
	free(infos);
	if (r < 0)
		return r;
	r = vram_policy_place(&l, w, allow_evict, where, pl);
	vram_policy_ledger_done(&l);
	if (r < 0) {
		snprintf(err, err_size, "%s", pl->message[0] ? pl->message : "does not fit");
		return r == -EINVAL ? -EINVAL : -ENOSPC;
	}
	for (size_t i = 0; i < w->n_instances && i < pl->n_results; i++) {
		struct vram_instance *in = &w->instances[i];
		const struct vram_plan_result *res = &pl->results[i];
		in->n_gpus = res->n_gpus;
		memcpy(in->gpus, res->gpus, res->n_gpus * sizeof(res->gpus[0]));
		memcpy(in->bytes_on_gpu, res->bytes, res->n_gpus * sizeof(res->bytes[0]));
		in->bytes_per_gpu = res->n_gpus ? res->bytes_per_gpu : 0;
	}
	if (pl->message[0])
		vram_info("%s: %s", w->cfg->name, pl->message);
	return 0;
}

static void begin_offload(struct vram_manager *m, struct vram_workload *w, const char *reason);

/* Makes room for w: offloads (or, for engines that cannot, stops) each victim. */
static void evict(struct vram_manager *m, struct vram_workload *w,
		  const struct vram_policy_placement *pl)
{
	for (size_t v = 0; v < pl->n_victims; v++) {
		struct vram_workload *victim = pl->victims[v];
		if (victim->state != VRAM_WL_READY)
			continue;
		char reason[160];
		snprintf(reason, sizeof(reason), "evicted to make room for %s", w->cfg->name);
		victim->evicting = true;
		begin_offload(m, victim, reason);
	}
}

static int begin_start(struct vram_manager *m, struct vram_workload *w, const char *reason,
		       char *err, size_t err_size)
{
	w->engine = vram_engine_select(w, &m->host, w->engine_why, sizeof(w->engine_why));
	char why[512];
	if (mps_decide(m, w, why, sizeof(why)) < 0) {
		/* a clear failed state (visible in status), not a refusal: nothing to retry */
		fmt_error(w, -ENOENT, "%s", why);
		set_state(m, w, VRAM_WL_EV_START, reason);
		set_state(m, w, VRAM_WL_EV_START_FAILED, w->last_error);
		return 0;
	}
	struct vram_policy_placement *pl = calloc(1, sizeof(*pl));
	if (!pl)
		return -ENOMEM;
	int r = plan_workload(m, w, true, VRAM_PLACE_ANY, pl, err, err_size);
	if (r < 0)
		goto out;
	r = assign_ports(m, w, err, err_size);
	if (r < 0)
		goto out;
	w->offloaded_bytes = 0;
	if (pl->n_victims > 0) {
		w->awaiting_room = true;
		set_state(m, w, VRAM_WL_EV_START, "waiting for evicted workloads to free memory");
		struct timeval tv = ms_tv(w->cfg->health.start_timeout_ms);
		evtimer_add(w->start_timer, &tv);
		evict(m, w, pl);
		goto out;
	}
	set_state(m, w, VRAM_WL_EV_START, reason);
	r = start_processes(m, w, why, sizeof(why));
	if (r < 0) {
		fmt_error(w, r, "%s", why);
		set_state(m, w, VRAM_WL_EV_START_FAILED, w->last_error);
		r = 0; /* reported through the state, not as a refusal */
	}
out:
	free(pl);
	return r;
}

static void on_job_done(struct vram_job *job, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	w->job = NULL;
	w->last_action_seconds = job->seconds;
	if (job->kind == VRAM_JOB_OFFLOAD) {
		if (job->error) {
			fmt_error(w, job->error, "offload with %s failed: %s", job->engine->name,
				  job->message);
			if (job->process_lost)
				fail_workload(m, w, VRAM_WL_EV_CRASH, true);
			else
				set_state(m, w, VRAM_WL_EV_OFFLOAD_FAILED, w->last_error);
		} else {
			w->last_bytes = job->bytes;
			w->offloaded_bytes = job->engine->keeps_process ? job->bytes : 0;
			set_state(m, w, VRAM_WL_EV_OFFLOADED, job->message);
		}
	} else {
		if (job->error) {
			fmt_error(w, job->error, "restore with %s failed: %s", job->engine->name,
				  job->message);
			if (job->process_lost || (job->engine->keeps_process && !job->still_offloaded)) {
				fail_workload(m, w, VRAM_WL_EV_RESTORE_FAILED, true);
			} else {
				set_state(m, w, VRAM_WL_EV_RESTORE_ABORTED, w->last_error);
			}
		} else {
			w->last_bytes = job->bytes;
			w->offloaded_bytes = 0;
			w->last_error[0] = '\0';
			w->last_errno = 0;
			set_state(m, w, VRAM_WL_EV_RESTORED, job->message);
		}
	}
	vram_job_free(job);
}

static void begin_offload(struct vram_manager *m, struct vram_workload *w, const char *reason)
{
	struct vram_job *job = vram_job_new(VRAM_JOB_OFFLOAD, w->engine, w, &m->host, on_job_done, w);
	if (!job) {
		fmt_error(w, -ENOMEM, "out of memory");
		return;
	}
	w->last_bytes = vram_workload_gpu_bytes(w);
	w->job = job;
	set_state(m, w, VRAM_WL_EV_OFFLOAD, reason);
	int r = vram_job_start(job);
	if (r < 0) {
		w->job = NULL;
		vram_job_free(job);
		fmt_error(w, r, "offload with %s could not begin: %s", w->engine->name, strerror(-r));
		set_state(m, w, VRAM_WL_EV_OFFLOAD_FAILED, w->last_error);
	}
}

static void run_restore_job(struct vram_manager *m, struct vram_workload *w)
{
	struct vram_job *job = vram_job_new(VRAM_JOB_RESTORE, w->engine, w, &m->host, on_job_done, w);
	if (!job) {
		fmt_error(w, -ENOMEM, "out of memory");
		set_state(m, w, VRAM_WL_EV_RESTORE_ABORTED, w->last_error);
		return;
	}
	w->job = job;
	int r = vram_job_start(job);
	if (r < 0) {
		w->job = NULL;
		vram_job_free(job);
		fmt_error(w, r, "restore with %s could not begin: %s", w->engine->name, strerror(-r));
		set_state(m, w, VRAM_WL_EV_RESTORE_ABORTED, w->last_error);
	}
}

/*
 * Where a restore may put w: a process that stays alive while offloaded comes
 * back on its own GPUs, or, with an engine that can move it (checkpoint), on
 * other GPUs of the same model when its own have no room; a restarted one
 * goes wherever the planner finds room, its own GPUs first.
 */
static enum vram_policy_where restore_where(const struct vram_workload *w)
{
	if (!w->engine || !w->engine->keeps_process)
		return VRAM_PLACE_PREFER;
	return w->engine->can_move ? VRAM_PLACE_SAME_MODEL : VRAM_PLACE_SAME_GPUS;
}

/* "GPU 1 (was GPU 0)" into buf when the plan moved an instance; "" otherwise. */
static void describe_move(const struct vram_workload *w, const unsigned (*old)[VRAM_PLAN_MAX_GPUS],
			  const size_t *old_n, char *buf, size_t size)
{
	buf[0] = '\0';
	for (size_t i = 0; i < w->n_instances; i++) {
		const struct vram_instance *in = &w->instances[i];
		if (in->n_gpus == old_n[i] && memcmp(in->gpus, old[i], old_n[i] * sizeof(unsigned)) == 0)
			continue;
		size_t len = strlen(buf);
		len += (size_t)snprintf(buf + len, size - len, "%sreplica %u onto GPU", len ? "; " : "",
					in->replica);
		for (size_t g = 0; g < in->n_gpus && len < size; g++)
			len += (size_t)snprintf(buf + len, size - len, "%s%u", g ? "," : " ", in->gpus[g]);
		for (size_t g = 0; g < old_n[i] && len < size; g++)
			len += (size_t)snprintf(buf + len, size - len, "%s%u", g ? "," : " (was GPU ",
						old[i][g]);
		if (old_n[i] && len < size)
			snprintf(buf + len, size - len, ")");
	}
}

static int begin_restore(struct vram_manager *m, struct vram_workload *w, const char *reason,
			 char *err, size_t err_size)
{
	struct vram_policy_placement *pl = calloc(1, sizeof(*pl));
	unsigned (*old)[VRAM_PLAN_MAX_GPUS] = calloc(w->n_instances, sizeof(*old));
	size_t *old_n = calloc(w->n_instances, sizeof(*old_n));
	char why[512];
	int r = -ENOMEM;
	if (!pl || !old || !old_n)
		goto out;
	for (size_t i = 0; i < w->n_instances; i++) {
		old_n[i] = w->instances[i].n_gpus;
		memcpy(old[i], w->instances[i].gpus, old_n[i] * sizeof(unsigned));
	}
	r = plan_workload(m, w, true, restore_where(w), pl, err, err_size);
	if (r < 0)
		goto out;
	describe_move(w, old, old_n, why, sizeof(why));
	if (why[0] && !pl->n_victims) {
		size_t len = strlen(why);
		snprintf(why + len, sizeof(why) - len, ": %s", reason);
		reason = why;
	}
	set_state(m, w, VRAM_WL_EV_RESTORE,
		  pl->n_victims ? "waiting for evicted workloads to free memory" : reason);
	if (pl->n_victims > 0) {
		w->awaiting_room = true;
		struct timeval tv = ms_tv(w->cfg->health.start_timeout_ms);
		evtimer_add(w->start_timer, &tv);
		evict(m, w, pl);
		goto out;
	}
	run_restore_job(m, w);
out:
	free(pl);
	free(old);
	free(old_n);
	return r;
}

/* Start/restore waiting for evicted memory: go ahead once it fits. */
static void retry_awaiting(struct vram_manager *m, struct vram_workload *w)
{
	struct vram_policy_placement *pl = calloc(1, sizeof(*pl));
	char err[VRAM_PLAN_MSG_MAX];
	if (!pl)
		return;
	int r = plan_workload(m, w, false,
			      w->state == VRAM_WL_RESTORING ? restore_where(w) : VRAM_PLACE_ANY, pl, err,
			      sizeof(err));
	free(pl);
	if (r < 0) {
		/* still evicting someone: wait for the next change */
		for (size_t k = 0; k < m->n_live; k++) {
			if (m->wptrs[k]->evicting)
				return;
		}
		evtimer_del(w->start_timer);
		w->awaiting_room = false;
		fmt_error(w, -ENOSPC, "%s", err);
		if (w->state == VRAM_WL_STARTING)
			set_state(m, w, VRAM_WL_EV_START_FAILED, w->last_error);
		else
			set_state(m, w, VRAM_WL_EV_RESTORE_ABORTED, w->last_error);
		return;
	}
	w->awaiting_room = false;
	if (w->state == VRAM_WL_RESTORING) {
		evtimer_del(w->start_timer);
		run_restore_job(m, w);
		return;
	}
	char why[512];
	r = start_processes(m, w, why, sizeof(why));
	if (r < 0) {
		evtimer_del(w->start_timer);
		fmt_error(w, r, "%s", why);
		set_state(m, w, VRAM_WL_EV_START_FAILED, w->last_error);
	}
}

static void on_mps_quit(void *arg)
{
	struct vram_manager *m = arg;
	void (*done)(void *) = m->shutdown_done;
	m->shutdown_done = NULL;
	if (done)
		done(m->shutdown_arg);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct vram_manager *m = arg;
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		if (w->awaiting_room && !m->shutting_down)
			retry_awaiting(m, w);
	}
	adhoc_reap(m);
	reload_steps(m);
	retired_reap(m);
	if (m->shutting_down && m->shutdown_done && !m->mps_quitting &&
	    vram_supervisor_live(m->sup) == 0) {
		/* every client is gone: the MPS daemons quit, then shutdown is done */
		m->mps_quitting = true;
		vram_mps_shutdown(m->mps, on_mps_quit, m);
	}
}

/* Stops w whatever it is doing (stop, release, idle release, shutdown). */
static void stop_workload(struct vram_manager *m, struct vram_workload *w, const char *reason)
{
	if (w->state == VRAM_WL_STOPPED)
		return;
	cancel_timers(w);
	evtimer_del(w->retry_timer);
	w->retry_pending = false;
	w->awaiting_room = false;
	if (w->job) {
		vram_job_cancel(w->job);
		w->job = NULL;
	}
	w->offloaded_bytes = 0;
	mps_detach_idle(w);
	if (w->state != VRAM_WL_STOPPING)
		set_state(m, w, VRAM_WL_EV_STOP, reason);
	if (!any_process(w)) {
		set_state(m, w, VRAM_WL_EV_EXITED, "no process left");
		return;
	}
	stop_processes(w);
}

/* ---- the tick ---- */

/*
 * Every TICK_MS:
 *   1. idle timers: offload workloads idle past offload_after, release those
 *      idle past release_after (never one with a request in flight);
 *   2. restart backoff: a workload ready for BACKOFF_RESET_MS starts its next
 *      backoff from 1 s again;
 *   3. room: workloads waiting for evicted memory look again (also done on
 *      every state change through the kick event);
 *   4. MPS: every MPS_REFRESH_TICKS, the running MPS daemons are asked for
 *      their servers and clients (for status).
 */
static void on_mps_refreshed(int result, const char *message, void *arg)
{
}

static bool on_reaped_other(pid_t pid, int wait_status, void *arg)
{
	struct vram_manager *m = arg;
	return m->mps && vram_mps_child_reaped(m->mps, pid, wait_status);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct vram_manager *m = arg;
	uint64_t now = vram_now_ms();
	for (size_t k = 0; k < m->n_live && !m->shutting_down; k++) {
		struct vram_workload *w = m->wptrs[k];
		struct adhoc *a = adhoc_of(m, w);
		if (a && a->exited && vram_wl_state_settled(w->state) && !any_process(w) &&
		    now - a->finished_ms >= VRAM_MANAGER_ADHOC_LINGER_MS)
			a->removing = true;
		char reason[96], dur[32];
		vram_units_format_duration_ms(vram_policy_idle_ms(w, now), dur, sizeof(dur));
		switch (vram_policy_idle_action(w, now)) {
		case VRAM_IDLE_OFFLOAD:
			snprintf(reason, sizeof(reason), "idle for %s", dur);
			begin_offload(m, w, reason);
			break;
		case VRAM_IDLE_RELEASE:
			snprintf(reason, sizeof(reason), "idle for %s: released", dur);
			stop_workload(m, w, reason);
			break;
		case VRAM_IDLE_NONE:
			break;
		}
		backoff_reset_if_settled(w);
	}
	if (++m->ticks % MPS_REFRESH_TICKS == 0 && !m->shutting_down)
		(void)vram_mps_refresh(m->mps, on_mps_refreshed, m);
	kick(m);
}

/* ---- construction ---- */

static const char *default_state_dir(char *buf, size_t size)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	if (getuid() == 0)
		snprintf(buf, size, "/run/vramd");
	else if (xdg && xdg[0])
		snprintf(buf, size, "%s/vramd", xdg);
	else
		snprintf(buf, size, "/tmp/vramd-%u", (unsigned)getuid());
	return buf;
}

/* fresh: the log starts empty (an ad-hoc name used before must not show the old output). */
static int workload_init(struct vram_manager *m, struct vram_workload *w,
			 const struct vram_workload_config *cfg, size_t index, bool fresh)
{
	w->cfg = cfg;
	w->index = index;
	w->ctx = m;
	w->state = VRAM_WL_STOPPED;
	w->state_since_ms = vram_now_ms();
	w->last_used_ms = w->state_since_ms;
	w->offload_after_ms = cfg->idle.offload_after_ms;
	w->release_after_ms = cfg->idle.release_after_ms;
	w->n_instances = cfg->replicas ? cfg->replicas : 1;
	w->instances = calloc(w->n_instances, sizeof(*w->instances));
	if (!w->instances)
		return -ENOMEM;
	for (size_t i = 0; i < w->n_instances; i++) {
		w->instances[i].owner = w;
		w->instances[i].replica = (unsigned)i;
	}
	w->retry_timer = evtimer_new(m->base, on_retry_timer, w);
	w->start_timer = evtimer_new(m->base, on_start_timer, w);
	w->probe_timer = evtimer_new(m->base, on_probe_timer, w);
	if (!w->retry_timer || !w->start_timer || !w->probe_timer)
		return -ENOMEM;
	w->engine = vram_engine_select(w, &m->host, w->engine_why, sizeof(w->engine_why));
	w->log_path = xasprintf("%s/logs/%s.log", m->state_dir, cfg->name);
	if (!w->log_path)
		return -ENOMEM;
	if (fresh)
		(void)unlink(w->log_path);
	int r = vram_logfile_open(w->log_path, m->cfg->daemon.workload_log_max_bytes
					      ? m->cfg->daemon.workload_log_max_bytes
					      : 10 * VRAM_MiB,
				  m->cfg->daemon.workload_log_keep, &w->log);
	if (r < 0) {
		vram_warn("Failed to open the log %s: %s; %s's output is dropped", w->log_path,
			  vram_open_strerror(r), cfg->name);
		w->log = NULL;
	}
	return 0;
}

static void workload_done(struct vram_workload *w)
{
	if (w->job)
		vram_job_cancel(w->job);
	for (size_t i = 0; w->instances && i < w->n_instances; i++) {
		vram_health_probe_cancel(w->instances[i].probe);
		vram_mps_client_free(w->instances[i].mps_client);
	}
	if (w->retry_timer)
		event_free(w->retry_timer);
	if (w->start_timer)
		event_free(w->start_timer);
	if (w->probe_timer)
		event_free(w->probe_timer);
	vram_logfile_close(w->log);
	free(w->log_path);
	free(w->instances);
}

/* ---- ad-hoc workloads ---- */

static void adhoc_cfg_done(struct vram_workload_config *c)
{
	free(c->name);
	strv_free(c->cmd);
	strv_free(c->env);
	free(c->cwd);
	memset(c, 0, sizeof(*c));
}

static int by_index(const void *a, const void *b)
{
	size_t x = (*(struct vram_workload *const *)a)->index;
	size_t y = (*(struct vram_workload *const *)b)->index;
	return x < y ? -1 : x > y;
}

/* The live list, in the order of the config, then workloads being removed, then ad-hoc ones. */
static void rebuild_live(struct vram_manager *m)
{
	m->n_live = 0;
	for (size_t k = 0; k < m->n_cfg; k++)
		if (live(&m->ws[k]) && !m->slots[k].removing)
			m->wptrs[m->n_live++] = &m->ws[k];
	qsort(m->wptrs, m->n_live, sizeof(*m->wptrs), by_index);
	for (size_t k = 0; k < m->n_cfg; k++)
		if (live(&m->ws[k]) && m->slots[k].removing)
			m->wptrs[m->n_live++] = &m->ws[k];
	for (size_t k = m->n_cfg; k < m->n_ws; k++)
		if (live(&m->ws[k]))
			m->wptrs[m->n_live++] = &m->ws[k];
}

/* Whether w has ended and nothing holds it: no process, job, request or waiter. */
static bool adhoc_finished(struct vram_manager *m, struct vram_workload *w)
{
	if ((w->state != VRAM_WL_STOPPED && w->state != VRAM_WL_FAILED) || any_process(w) ||
	    w->job || w->in_flight || w->awaiting_room || w->retry_pending)
		return false;
	for (struct vram_manager_waiter *wt = m->waiters; wt; wt = wt->next)
		if (wt->w == w)
			return false;
	return true;
}

static void adhoc_free_slot(struct vram_manager *m, struct vram_workload *w)
{
	struct adhoc *a = adhoc_of(m, w);
	vram_info("%s: removed", w->cfg->name);
	workload_done(w);
	memset(w, 0, sizeof(*w));
	adhoc_cfg_done(&a->cfg);
	memset(a, 0, sizeof(*a));
	rebuild_live(m);
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
			strv_free(out);
			return NULL;
		}
	}
	return out;
}

int vram_manager_add_adhoc(struct vram_manager *m, const struct vram_adhoc_spec *spec,
			   const char **ret_name, char *err, size_t err_size)
{
	if (m->shutting_down) {
		snprintf(err, err_size, "vramd is shutting down");
		return -EBUSY;
	}
	size_t n_cmd = 0, n_env = 0;
	while (spec->cmd && spec->cmd[n_cmd])
		n_cmd++;
	if (n_cmd == 0 || !spec->cmd[0][0] || n_cmd > VRAM_CONFIG_MAX_ARGS) {
		snprintf(err, err_size, "cmd: expected a command of 1..%d words", VRAM_CONFIG_MAX_ARGS);
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
		if (find(m, spec->name)) {
			snprintf(err, err_size, "a workload named \"%s\" exists", spec->name);
			return -EEXIST;
		}
		snprintf(name, sizeof(name), "%s", spec->name);
	} else {
		do
			snprintf(name, sizeof(name), "run-%u", ++m->adhoc_seq);
		while (find(m, name));
	}
	if (spec->runas && !spec->runas->as_daemon && spec->runas->uid != 0) {
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
	struct adhoc *a = &m->adhoc[k - m->n_cfg];
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
			 .release_after_ms = VRAM_DURATION_NEVER},
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
	r = workload_init(m, w, c, k, true);
	if (r < 0) {
		snprintf(err, err_size, "out of memory");
		goto out_free;
	}
	a->used = true;
	rebuild_live(m);
	r = begin_start(m, w, "run by hand", err, err_size);
	if (r < 0) {
		adhoc_free_slot(m, w);
		return r;
	}
	if (ret_name)
		*ret_name = c->name;
	return 0;

out_free:
	workload_done(w);
	memset(w, 0, sizeof(*w));
	adhoc_cfg_done(c);
	memset(a, 0, sizeof(*a));
	return r;
}

int vram_manager_remove_adhoc(struct vram_manager *m, const char *name, char *err, size_t err_size)
{
	struct vram_workload *w = find(m, name);
	if (!w) {
		snprintf(err, err_size, "no workload named \"%s\"", name ? name : "");
		return -ENOENT;
	}
	struct adhoc *a = adhoc_of(m, w);
	if (!a) {
		snprintf(err, err_size, "%s comes from the config; only ad-hoc workloads can be removed "
			 "(stop it instead)", name);
		return -EPERM;
	}
	a->removing = true;
	if ((w->state != VRAM_WL_STOPPED && w->state != VRAM_WL_FAILED) || any_process(w))
		stop_workload(m, w, "removed");
	kick(m);
	return 0;
}

bool vram_manager_adhoc_owner(struct vram_manager *m, const char *name, uid_t *ret_uid, char *user,
			      size_t size)
{
	struct vram_workload *w = find(m, name);
	struct adhoc *a = w ? adhoc_of(m, w) : NULL;
	if (!a)
		return false;
	if (ret_uid)
		*ret_uid = a->runas.uid;
	if (user)
		snprintf(user, size, "%s", a->runas.user);
	return true;
}

/* ---- config reload ---- */

/* begin_start; a refusal is logged and kept as w's last error. Returns 0 or -errno. */
static int start_logged(struct vram_manager *m, struct vram_workload *w, const char *reason)
{
	char err[VRAM_PLAN_MSG_MAX];
	int r = begin_start(m, w, reason, err, sizeof(err));
	if (r < 0) {
		fmt_error(w, r, "%s", err);
		vram_err("Failed to start %s: %s", w->cfg->name, err);
	}
	return r;
}

/* Whether w runs with a workload of cfg (or will, after a pending restart). */
static bool uses_config(struct vram_manager *m, const struct vram_config *cfg)
{
	const struct vram_workload_config *lo = cfg->workloads, *hi = lo + cfg->n_workloads;
	for (size_t k = 0; k < m->n_live; k++) {
		const struct vram_workload *w = m->wptrs[k];
		const struct cfg_slot *s = slot_of(m, w);
		if ((w->cfg >= lo && w->cfg < hi) || (s && s->next >= lo && s->next < hi))
			return true;
	}
	return false;
}

/* Frees the replaced configs that no workload runs with any more (from the kick). */
static void retired_reap(struct vram_manager *m)
{
	for (struct retired **p = &m->retired; *p;) {
		struct retired *t = *p;
		if (uses_config(m, t->cfg)) {
			p = &t->next;
			continue;
		}
		*p = t->next;
		vram_config_free(t->cfg);
		free(t);
	}
}

/*
 * Settings that apply to the running process: idle timers now (one set
 * through the API stays unless the config changed that timer), the rest
 * when next read.
 */
static void apply_live(struct vram_workload *w, const struct vram_workload_config *cfg, size_t index)
{
	if (cfg->idle.offload_after_ms != w->cfg->idle.offload_after_ms)
		w->offload_after_ms = cfg->idle.offload_after_ms;
	if (cfg->idle.release_after_ms != w->cfg->idle.release_after_ms)
		w->release_after_ms = cfg->idle.release_after_ms;
	/* a ready workload's next check follows the new interval, not the one pending */
	bool rearm = w->state == VRAM_WL_READY &&
		     (cfg->health.interval_ms != w->cfg->health.interval_ms ||
		      cfg->health.kind != w->cfg->health.kind);
	w->cfg = cfg;
	w->index = index;
	if (rearm)
		vram_liveness_arm(w);
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
	apply_live(w, cfg, index);
	w->backoff_step = 0;
	w->next_port_rr = 0;
	w->engine = vram_engine_select(w, &m->host, w->engine_why, sizeof(w->engine_why));
	return 0;
}

/* The start waiters held back by a pending restart take part from here on. */
static void release_held_waiters(struct vram_manager *m, struct vram_workload *w)
{
	for (struct vram_manager_waiter *wt = m->waiters; wt; wt = wt->next)
		if (wt->w == w)
			wt->through_restart = false;
}

/*
 * Carries a reload's pending work on w one step: once no request is in
 * flight and no action runs, stops it, then (restart) gives it the new
 * settings and starts it again, or (removal) frees its slot. From the kick.
 * Returns true when it freed the slot (the live list changed).
 */
static bool reload_step(struct vram_manager *m, struct vram_workload *w)
{
	struct cfg_slot *s = slot_of(m, w);
	if (!s || (!s->next && !s->removing) || w->in_flight || w->job || m->shutting_down)
		return false;
	if (!vram_wl_state_settled(w->state) || w->awaiting_room)
		return false; /* starting, restoring, offloading or stopping: wait for it to settle */
	if (any_process(w) || (w->state != VRAM_WL_STOPPED && w->state != VRAM_WL_FAILED)) {
		stop_workload(m, w, s->removing ? "removed from the config"
						: "the config changed: restarting");
		return false;
	}
	if (w->retry_pending) {
		evtimer_del(w->retry_timer);
		w->retry_pending = false;
		s->start_after = s->start_after || !s->removing;
	}
	if (s->removing) {
		for (struct vram_manager_waiter *wt = m->waiters; wt; wt = wt->next)
			if (wt->w == w)
				return false; /* resolved on this loop turn: freed on a later kick */
		vram_info("%s: removed", w->cfg->name);
		workload_done(w);
		memset(w, 0, sizeof(*w));
		memset(s, 0, sizeof(*s));
		rebuild_live(m);
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
	release_held_waiters(m, w);
	if (!start || start_logged(m, w, "the config changed") < 0)
		resolve_waiters(m, w);
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
	struct vram_workload *w = find(m, name);
	return w && slot_of(m, w) ? w : NULL;
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
	json_t *ev = NULL;  /* the "reload" event: names added, removed, changed */
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
		n_free += !live(&m->ws[k]);
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		const struct vram_workload_config *c = &cfg->workloads[i];
		struct vram_workload *w = find(m, c->name);
		if (w && !slot_of(m, w)) {
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
	ev = json_pack("{s:[],s:[],s:[]}", "added", "removed", "changed");
	fresh = calloc(n_new ? n_new : 1, sizeof(*fresh));
	if (!rep || !ev || !fresh)
		goto out_err;
	/* The new workloads' slots, made ready; undone if any fails. */
	size_t j = 0, k = 0;
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		if (find(m, cfg->workloads[i].name))
			continue;
		while (live(&m->ws[k]))
			k++;
		fresh[j++] = &m->ws[k++];
		if (workload_init(m, fresh[j - 1], &cfg->workloads[i], i, false) < 0) {
			while (j-- > 0) {
				workload_done(fresh[j]);
				memset(fresh[j], 0, sizeof(*fresh[j]));
			}
			goto out_err;
		}
	}

	/* From here on nothing fails: the new config takes over. */
	json_t *added = json_object_get(rep, "added"), *removed = json_object_get(rep, "removed");
	json_t *changed = json_object_get(rep, "changed"), *restarting = json_object_get(rep, "restarting");
	json_t *names_changed = json_object_get(ev, "changed");
	json_int_t unchanged = 0;
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		const struct vram_workload_config *c = &cfg->workloads[i];
		struct vram_workload *w = find_cfg(m, c->name);
		if (!w)
			continue; /* one of fresh[] */
		struct cfg_slot *s = slot_of(m, w);
		s->removing = false;
		enum vram_diff_kind kind = vram_diff_workload(w->cfg, c, keys, sizeof(keys));
		bool idle = w->state == VRAM_WL_STOPPED || w->state == VRAM_WL_FAILED;
		if (kind == VRAM_DIFF_PROCESS && idle && !any_process(w) && !w->job &&
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
			strv_json_append(names_changed, c->name);
			json_array_append_new(changed, json_pack("{s:s,s:s,s:s}", "workload", c->name,
								 "keys", keys, "applies", "restart"));
			continue;
		} else {
			apply_live(w, c, i);
		}
		if (s->next) {
			/* an earlier reload's restart is no longer needed */
			s->next = NULL;
			s->start_after = false;
			s->keys[0] = '\0';
			release_held_waiters(m, w);
		}
		if (kind == VRAM_DIFF_SAME) {
			unchanged++;
			continue;
		}
		vram_info("%s: %s changed: applied", c->name, keys);
		strv_json_append(names_changed, c->name);
		json_array_append_new(changed, json_pack("{s:s,s:s,s:s}", "workload", c->name, "keys",
							 keys, "applies", "now"));
	}
	json_object_set_new(rep, "unchanged", json_integer(unchanged));
	/* Workloads gone from the new config stop once their requests end. */
	for (size_t x = 0; x < m->n_cfg; x++) {
		struct vram_workload *w = &m->ws[x];
		if (!live(w) || m->slots[x].removing || vram_config_find(cfg, w->cfg->name))
			continue;
		m->slots[x].removing = true;
		m->slots[x].next = NULL;
		m->slots[x].start_after = false;
		release_held_waiters(m, w);
		vram_info("%s: removed from the config: stops once its requests in flight end",
			  w->cfg->name);
		strv_json_append(removed, w->cfg->name);
	}
	for (size_t y = 0; y < n_new; y++) {
		vram_info("%s: added", fresh[y]->cfg->name);
		strv_json_append(added, fresh[y]->cfg->name);
	}
	struct retired *t = malloc(sizeof(*t));
	if (t) {
		t->cfg = m->cfg;
		t->next = m->retired;
		m->retired = t;
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
	rebuild_live(m);
	json_object_set(ev, "added", added);
	json_object_set(ev, "removed", removed);
	for (struct vram_manager_sub *sb = m->subs, *next; sb; sb = next) {
		next = sb->next;
		sb->cb("reload", ev, sb->arg);
	}
	json_decref(ev);
	for (size_t y = 0; y < n_new; y++) {
		if (fresh[y]->cfg->start == VRAM_START_EAGER)
			start_logged(m, fresh[y], "added by a config reload");
	}
	free(fresh);
	kick(m);
	if (ret_report)
		*ret_report = rep;
	else
		json_decref(rep);
	return 0;

out_err:
	snprintf(err, err_size, "out of memory; nothing was changed");
	json_decref(rep);
	json_decref(ev);
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

int vram_manager_reload_file(struct vram_manager *m, json_t **ret_report, char *err,
			     size_t err_size)
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
 * libvram.so: daemon.hook_library, else next to the vramd binary: installed
 * (<prefix>/bin/vramd, <prefix>/lib/vramd/libvram.so) or in the build tree
 * (src/daemon/bin/vramd, src/hook/libvram.so). Caller frees; NULL if none.
 */
static char *find_hook_library(const struct vram_config *cfg)
{
	if (cfg->daemon.hook_library) {
		if (access(cfg->daemon.hook_library, R_OK) == 0)
			return strdup(cfg->daemon.hook_library);
		vram_warn("daemon.hook_library %s: %s; workloads run without the hook",
			  cfg->daemon.hook_library, strerror(errno));
		return NULL;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	char *slash = strrchr(exe, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	static const char *const rel[] = {"../lib/vramd/libvram.so", "../../hook/libvram.so"};
	for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
		char *p = xasprintf("%s/%s", exe, rel[i]);
		char real[PATH_MAX];
		if (p && access(p, R_OK) == 0 && realpath(p, real)) {
			free(p);
			return strdup(real);
		}
		free(p);
	}
	return NULL;
}

/* The hook channel (state_dir/hook.sock) and the library; vramd runs on without them. */
static void open_hook(struct vram_manager *m)
{
	m->hook_library = find_hook_library(m->cfg);
	char *path = xasprintf("%s/hook.sock", m->state_dir);
	int r = path ? vram_hookchan_new(m->base, path, &m->hookchan) : -ENOMEM;
	if (r < 0) {
		vram_warn("Failed to open the hook channel %s: %s; the hook engine is off", path ? path : "",
			  strerror(-r));
		m->hookchan = NULL;
	}
	free(path);
	vram_debug("hook library: %s", m->hook_library ? m->hook_library : "none found");
}

int vram_manager_new(struct event_base *base, struct vram_config *cfg, struct vram_gpus *gpus,
		     struct vram_manager **ret)
{
	struct vram_manager *m = calloc(1, sizeof(*m));
	if (!m) {
		vram_config_free(cfg);
		vram_gpu_close(gpus);
		return -ENOMEM;
	}
	m->base = base;
	m->cfg = cfg;
	m->gpus = gpus;
	int r = -ENOMEM;
	char dir[256];
	m->state_dir = strdup(cfg->daemon.state_dir ? cfg->daemon.state_dir
						    : default_state_dir(dir, sizeof(dir)));
	m->tick = event_new(base, -1, EV_PERSIST, on_tick, m);
	m->kick = event_new(base, -1, 0, on_kick, m);
	if (!m->state_dir || !m->tick || !m->kick)
		goto out_free;
	r = vram_supervisor_new(base, &m->sup);
	if (r < 0)
		goto out_free;
	r = vram_workers_new(base, WORKERS_THREADS, &m->workers);
	if (r < 0)
		goto out_free;
	/* MPS binaries missing is no error here: only a share: mps workload that starts says so */
	struct vram_mps_options mps_opt = {.state_dir = m->state_dir};
	r = vram_mps_new(base, &mps_opt, &m->mps);
	if (r < 0)
		goto out_free;
	vram_supervisor_set_reaped_other(m->sup, on_reaped_other, m);
	open_hook(m);
	m->host = (struct vram_engine_host){
		.base = base,
		.gpus = gpus,
		.workers = m->workers,
		.hookchan = m->hookchan,
		.hook_pids = vram_hookchan_pids, .hook_send = vram_hookchan_send, .hook_cancel = vram_hookchan_cancel,
		.hook_library = m->hook_library != NULL,
		.ctx = m,
		.stop_processes = host_stop_processes,
		.spawn_processes = host_spawn_processes,
	};
	const char *rate = getenv(SIM_RATE_ENV);
	uint64_t bps;
	if (rate && vram_units_parse_bytes(rate, &bps) == 0 && bps > 0)
		vram_engine_sim_set_rate(bps, bps);

	r = -ENOMEM;
	/* room for every workload a reload may bring: untouched slots cost address space only */
	m->n_cfg = VRAM_CONFIG_MAX_WORKLOADS;
	m->n_ws = m->n_cfg + VRAM_MANAGER_ADHOC_MAX;
	m->ws = calloc(m->n_ws, sizeof(*m->ws));
	m->wptrs = calloc(m->n_ws, sizeof(*m->wptrs));
	m->slots = calloc(m->n_cfg, sizeof(*m->slots));
	if (!m->ws || !m->wptrs || !m->slots)
		goto out_free;
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		m->wptrs[i] = &m->ws[i];
		m->n_live = i + 1;
		r = workload_init(m, &m->ws[i], &cfg->workloads[i], i, false);
		if (r < 0)
			goto out_free;
	}
	*ret = m;
	return 0;

out_free:
	vram_manager_free(m);
	return r;
}

int vram_manager_run(struct vram_manager *m)
{
	if (m->running)
		return 0;
	struct timeval tv = ms_tv(TICK_MS);
	if (event_add(m->tick, &tv) < 0)
		return -ENOMEM;
	m->running = true;
	for (size_t k = 0; k < m->n_live; k++) {
		if (m->wptrs[k]->cfg->start == VRAM_START_EAGER)
			start_logged(m, m->wptrs[k], "eager start");
	}
	return 0;
}

void vram_manager_shutdown(struct vram_manager *m, void (*done)(void *arg), void *arg)
{
	m->shutting_down = true;
	m->shutdown_done = done;
	m->shutdown_arg = arg;
	evtimer_del(m->tick);
	for (size_t k = 0; k < m->n_live; k++)
		stop_workload(m, m->wptrs[k], "vramd is shutting down");
	kick(m);
}

void vram_manager_free(struct vram_manager *m)
{
	if (!m)
		return;
	while (m->waiters) {
		struct vram_manager_waiter *wt = m->waiters;
		m->waiters = wt->next;
		waiter_free(wt);
	}
	while (m->subs) {
		struct vram_manager_sub *s = m->subs;
		m->subs = s->next;
		free(s);
	}
	/* children first: their output goes into the workloads' log files */
	vram_supervisor_free(m->sup);
	for (size_t i = 0; m->ws && i < m->n_ws; i++)
		workload_done(&m->ws[i]);
	for (size_t i = 0; i < VRAM_MANAGER_ADHOC_MAX; i++)
		adhoc_cfg_done(&m->adhoc[i].cfg);
	vram_workers_free(m->workers);
	vram_mps_free(m->mps); /* after the workloads: they let go of their clients */
	vram_hookchan_free(m->hookchan); /* after the workloads: their jobs let go of requests */
	free(m->hook_library);
	free(m->ws);
	free(m->wptrs);
	free(m->slots);
	while (m->retired) {
		struct retired *t = m->retired;
		m->retired = t->next;
		vram_config_free(t->cfg);
		free(t);
	}
	free(m->cfg_path);
	free(m->ov_listen);
	free(m->ov_sim_gpus);
	free(m->ov_state_dir);
	if (m->tick)
		event_free(m->tick);
	if (m->kick)
		event_free(m->kick);
	free(m->state_dir);
	vram_gpu_close(m->gpus);
	vram_config_free(m->cfg);
	free(m);
}

const struct vram_config *vram_manager_config(const struct vram_manager *m)
{
	return m->cfg;
}

struct vram_mps *vram_manager_mps(struct vram_manager *m)
{
	return m->mps;
}

static void on_mps_by_hand(int result, const char *message, void *arg)
{
	if (result < 0)
		vram_warn("MPS: %s", message);
}

/* Checks GPU indices against the machine. Returns 0 or -EINVAL with err. */
static int check_gpus(struct vram_manager *m, const unsigned *gpus, size_t n, char *err, size_t err_size)
{
	unsigned count = vram_gpu_count(m->gpus);
	for (size_t i = 0; i < n; i++) {
		if (gpus[i] >= count) {
			snprintf(err, err_size, "no GPU %u: this machine has %u (0..%u)", gpus[i], count,
				 count ? count - 1 : 0);
			return -EINVAL;
		}
	}
	return 0;
}

int vram_manager_mps_start(struct vram_manager *m, const unsigned *gpus, size_t n, char *err, size_t err_size)
{
	char ids[VRAM_MPS_MAX_GPUS][VRAM_GPU_UUID_MAX];
	const char *id_ptrs[VRAM_MPS_MAX_GPUS];
	bool have_ids = true;
	if (n == 0 || n > VRAM_MPS_MAX_GPUS) {
		snprintf(err, err_size, "1 to %d GPUs", VRAM_MPS_MAX_GPUS);
		return -EINVAL;
	}
	int r = check_gpus(m, gpus, n, err, err_size);
	if (r < 0)
		return r;
	for (size_t g = 0; g < n; g++) {
		const char *uuid = vram_gpu_uuid(m->gpus, gpus[g]);
		ids[g][0] = '\0';
		if (uuid)
			snprintf(ids[g], sizeof(ids[g]), "%s", uuid);
		else
			have_ids = false;
		id_ptrs[g] = ids[g];
	}
	return vram_mps_start(m->mps, gpus, have_ids ? id_ptrs : NULL, n, on_mps_by_hand, NULL, err, err_size);
}

int vram_manager_mps_stop(struct vram_manager *m, const unsigned *gpus, size_t n, bool force, char *err,
			  size_t err_size)
{
	int r = check_gpus(m, gpus, n, err, err_size);
	if (r < 0)
		return r;
	return vram_mps_stop(m->mps, n ? gpus : NULL, n, force, on_mps_by_hand, NULL, err, err_size);
}

/* ---- actions ---- */

static int wrong_state(struct vram_workload *w, enum vram_action a, char *err, size_t err_size)
{
	static const char *const allowed[] = {
		[VRAM_ACTION_START] = "stopped, failed or offloaded (or already starting/ready)",
		[VRAM_ACTION_STOP] = "any state",
		[VRAM_ACTION_OFFLOAD] = "ready (or already offloading/offloaded)",
		[VRAM_ACTION_RESTORE] = "offloaded (or already restoring/ready)",
		[VRAM_ACTION_RELEASE] = "ready or offloaded (or already stopping/stopped)",
	};
	snprintf(err, err_size, "%s is %s; %s is allowed when it is %s", w->cfg->name,
		 vram_wl_state_name(w->state), vram_action_name(a), allowed[a]);
	return -EBUSY;
}

/*
 * A workload's external processes (from before this vramd started) are not
 * its instances, so a refused offload or restore of the workload says how to
 * reach them. Appends to err.
 */
static void hint_external(struct vram_manager *m, const struct vram_workload *w, enum vram_action action,
			  char *err, size_t err_size)
{
	pid_t pid;
	size_t n = m->hookchan ? vram_hookchan_external_pids(m->hookchan, w->cfg->name, &pid, 1) : 0;
	size_t len = strlen(err);
	if (n == 0 || len + 1 >= err_size)
		return;
	snprintf(err + len, err_size - len,
		 "; %zu process%s of %s from before this vramd started %s still connected, not managed "
		 "as its instance: vramctl %s --pid %d",
		 n, n == 1 ? "" : "es", w->cfg->name, n == 1 ? "is" : "are", vram_action_name(action), (int)pid);
}

static void list_names(struct vram_manager *m, char *buf, size_t size)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t k = 0; k < m->n_live && len + 1 < size; k++)
		len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? ", " : "",
					m->wptrs[k]->cfg->name);
}

int vram_manager_act(struct vram_manager *m, const char *name, enum vram_action action,
		     vram_action_cb cb, void *arg, struct vram_manager_waiter **ret_waiter,
		     char *err, size_t err_size)
{
	struct vram_workload *w = find(m, name);
	if (!w) {
		char names[512];
		list_names(m, names, sizeof(names));
		snprintf(err, err_size, "no workload named \"%s\" (known: %s)", name ? name : "",
			 names[0] ? names : "none");
		return -ENOENT;
	}
	if ((unsigned)action > VRAM_ACTION_RELEASE) {
		snprintf(err, err_size, "unknown action");
		return -EINVAL;
	}
	if (m->shutting_down) {
		snprintf(err, err_size, "vramd is shutting down");
		return -EBUSY;
	}
	struct cfg_slot *slot = slot_of(m, w);
	if (slot && slot->removing && action != VRAM_ACTION_STOP && action != VRAM_ACTION_RELEASE) {
		snprintf(err, err_size, "%s was removed from the config by a reload; it stops once its "
			 "requests in flight end", name);
		return -ENOENT;
	}
	struct vram_manager_waiter *wt = waiter_new(m, w, action, cb, arg);
	if (!wt) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	wt->target = action == VRAM_ACTION_OFFLOAD                                    ? VRAM_WL_OFFLOADED
		     : action == VRAM_ACTION_STOP || action == VRAM_ACTION_RELEASE ? VRAM_WL_STOPPED
										   : VRAM_WL_READY;
	/* registered first: a change made below resolves it (from the loop) */
	wt->next = m->waiters;
	m->waiters = wt;

	int r = 0;
	enum vram_wl_state s = w->state;
	char why[96];
	snprintf(why, sizeof(why), "%s asked", vram_action_name(action));
	if (slot && slot->next) {
		if (action == VRAM_ACTION_START) {
			/* a reload's restart is pending: ready means ready with the new settings */
			wt->through_restart = true;
			slot->start_after = true;
			kick(m);
			goto out;
		}
		if (action == VRAM_ACTION_STOP || action == VRAM_ACTION_RELEASE)
			slot->start_after = false; /* asked to stop: it stays stopped after the restart */
	}
	if (s == wt->target) {
		waiter_resolve(wt, true);
		snprintf(wt->res.message, sizeof(wt->res.message), "%s is already %s", w->cfg->name,
			 vram_wl_state_name(s));
		wt->res.bytes = 0;
		goto out;
	}
	switch (action) {
	case VRAM_ACTION_START:
		if (s == VRAM_WL_STARTING || s == VRAM_WL_RESTORING)
			break;
		if (s == VRAM_WL_STOPPED || s == VRAM_WL_FAILED) {
			evtimer_del(w->retry_timer);
			w->retry_pending = false;
			w->backoff_step = 0;
			r = begin_start(m, w, why, err, err_size);
		} else if (s == VRAM_WL_OFFLOADED) {
			r = begin_restore(m, w, why, err, err_size);
		} else {
			r = wrong_state(w, action, err, err_size);
		}
		break;
	case VRAM_ACTION_STOP:
		if (s != VRAM_WL_STOPPING)
			stop_workload(m, w, why);
		break;
	case VRAM_ACTION_OFFLOAD:
		if (s == VRAM_WL_OFFLOADING)
			break;
		if (s == VRAM_WL_READY)
			begin_offload(m, w, why);
		else
			r = wrong_state(w, action, err, err_size);
		break;
	case VRAM_ACTION_RESTORE:
		if (s == VRAM_WL_RESTORING)
			break;
		if (s == VRAM_WL_OFFLOADED)
			r = begin_restore(m, w, why, err, err_size);
		else
			r = wrong_state(w, action, err, err_size);
		break;
	case VRAM_ACTION_RELEASE:
		if (s == VRAM_WL_STOPPING)
			break;
		if (s == VRAM_WL_READY || s == VRAM_WL_OFFLOADED)
			stop_workload(m, w, why);
		else
			r = wrong_state(w, action, err, err_size);
		break;
	}
out:
	if (r < 0) {
		if (r == -EBUSY && (action == VRAM_ACTION_OFFLOAD || action == VRAM_ACTION_RESTORE))
			hint_external(m, w, action, err, err_size);
		waiter_unlink(wt);
		waiter_free(wt);
		return r;
	}
	if (ret_waiter)
		*ret_waiter = wt;
	return 0;
}

void vram_manager_waiter_cancel(struct vram_manager_waiter *wt)
{
	if (!wt)
		return;
	waiter_unlink(wt);
	waiter_free(wt);
}

/* ---- hooked processes by pid ---- */

/* The hook answered (or the process went away): the result of a waiter by pid. */
static void on_hook_done(const struct vram_hookchan_result *r, void *arg)
{
	struct vram_manager_waiter *wt = arg;
	struct vram_action_result *res = &wt->res;
	struct vram_hookchan_proc_info info;
	wt->hook_req = NULL;
	wt->resolved = true;
	res->workload = wt->hook_workload;
	res->pid = r->pid;
	/* the state as last reported (a process that went away keeps its last one) */
	res->state = vram_hookchan_proc(wt->m->hookchan, r->pid, &info) == 0 ? vram_hookchan_state_name(info.state)
									    : NULL;
	res->seconds = r->seconds;
	res->bytes = r->status == 0 ? r->bytes : 0;
	res->engine = "hook";
	res->error = r->status;
	res->http_status = r->status == 0 ? 200
			   : r->status == -EALREADY ? 409
			   : r->missing ? 503 : 500;
	snprintf(res->message, sizeof(res->message), "pid %d (%s): %s", (int)r->pid,
		 wt->hook_workload[0] ? wt->hook_workload : "no workload",
		 r->text[0] ? r->text : strerror(-r->status));
	event_active(wt->ev, 0, 0);
}

int vram_manager_hook_act(struct vram_manager *m, pid_t pid, enum vram_action action, vram_action_cb cb,
			  void *arg, struct vram_manager_waiter **ret_waiter, char *err, size_t err_size)
{
	if (action != VRAM_ACTION_OFFLOAD && action != VRAM_ACTION_RESTORE) {
		snprintf(err, err_size, "only offload and restore are done by pid");
		return -EINVAL;
	}
	if (m->shutting_down) {
		snprintf(err, err_size, "vramd is shutting down");
		return -EBUSY;
	}
	struct vram_hookchan_proc_info info;
	if (!m->hookchan || vram_hookchan_proc(m->hookchan, pid, &info) < 0 || !info.connected) {
		snprintf(err, err_size, "no process %d is connected to vramd's hook channel%s", (int)pid,
			 m->hookchan ? "" : " (it is not open)");
		return -ENOENT;
	}
	/* never one process of a workload that vramd runs: that would leave it half parked */
	if (!info.external && find(m, info.workload)) {
		snprintf(err, err_size, "process %d is one of workload %s's, which vramd runs: %s the workload "
			 "(vramctl %s %s)", (int)pid, info.workload, vram_action_name(action),
			 vram_action_name(action), info.workload);
		return -EBUSY;
	}
	struct vram_manager_waiter *wt = waiter_new(m, NULL, action, cb, arg);
	if (!wt) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	snprintf(wt->hook_workload, sizeof(wt->hook_workload), "%s", info.workload);
	int r = vram_hookchan_send(m->hookchan, pid,
				   action == VRAM_ACTION_OFFLOAD ? VRAM_HOOKCHAN_OFFLOAD : VRAM_HOOKCHAN_RESTORE, 0,
				   on_hook_done, wt, &wt->hook_req);
	if (r < 0) {
		waiter_free(wt);
		snprintf(err, err_size, "%s", r == -EBUSY ? "an offload or restore of it is running already"
					    : r == -ENOMEM ? "out of memory"
					    : "it could not be sent the command: it went away");
		return r == -EBUSY || r == -ENOMEM ? r : -ENOENT;
	}
	wt->next = m->waiters;
	m->waiters = wt;
	if (ret_waiter)
		*ret_waiter = wt;
	return 0;
}

json_t *vram_manager_hook_json(struct vram_manager *m)
{
	return m->hookchan ? vram_hookchan_json(m->hookchan) : json_array();
}

int vram_manager_set_idle(struct vram_manager *m, const char *name, uint64_t offload_after_ms,
			  uint64_t release_after_ms, char *err, size_t err_size)
{
	struct vram_workload *w = NULL;
	if (name) {
		w = find(m, name);
		if (!w) {
			snprintf(err, err_size, "no workload named \"%s\"", name);
			return -ENOENT;
		}
	}
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *x = m->wptrs[k];
		if (w ? x != w : adhoc_of(m, x) != NULL)
			continue;
		if (offload_after_ms != VRAM_IDLE_KEEP)
			x->offload_after_ms = offload_after_ms;
		if (release_after_ms != VRAM_IDLE_KEEP)
			x->release_after_ms = release_after_ms;
	}
	return 0;
}

int vram_manager_request_begin(struct vram_manager *m, const char *name)
{
	struct vram_workload *w = find(m, name);
	if (!w)
		return -ENOENT;
	w->in_flight++;
	w->last_used_ms = vram_now_ms();
	return 0;
}

int vram_manager_request_end(struct vram_manager *m, const char *name)
{
	struct vram_workload *w = find(m, name);
	if (!w)
		return -ENOENT;
	if (w->in_flight > 0)
		w->in_flight--;
	w->last_used_ms = vram_now_ms();
	const struct cfg_slot *s = slot_of(m, w);
	if (w->in_flight == 0 && s && (s->next || s->removing))
		kick(m); /* a reload waited for this */
	return 0;
}

int vram_manager_note_progress(struct vram_manager *m, const char *name, unsigned port)
{
	struct vram_workload *w = find(m, name);
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

int vram_manager_find_model(struct vram_manager *m, const char *model, const char **ret_name)
{
	for (size_t k = 0; model && k < m->n_live; k++) {
		const struct cfg_slot *s = slot_of(m, m->wptrs[k]);
		if (s && s->removing)
			continue;
		/* a restart pending from a reload: its models route by the new settings already */
		const struct vram_workload_config *c = s && s->next ? s->next : m->wptrs[k]->cfg;
		for (size_t i = 0; i < c->n_models; i++) {
			if (strcmp(c->models[i], model) == 0) {
				*ret_name = c->name;
				return 0;
			}
		}
	}
	return -ENOENT;
}

/*
 * A workload without a health probe (health: none, ad-hoc workloads) is
 * ready at spawn, before anyone has looked at who listens on its port: the
 * first request checks, so that a squatter never receives one. Nothing
 * listening yet is let through (the connection is refused, 502, and the
 * next request checks again); a foreign listener fails the workload with
 * its name. Returns whether in may be sent the request.
 */
static bool endpoint_port_ours(struct vram_manager *m, struct vram_workload *w,
			       struct vram_instance *in)
{
	if (in->port_verified || w->cfg->health.port_owner == VRAM_PORT_OWNER_ANY)
		return true;
	struct vram_portowner po;
	int r = vram_portowner_check(in->port, in->pid, &po);
	if (r == 0 && po.verdict == VRAM_PORTOWNER_OWNED)
		in->port_verified = true;
	if (r == 0 && po.verdict != VRAM_PORTOWNER_FOREIGN)
		return true;
	char msg[sizeof(w->last_error)];
	if (r < 0)
		snprintf(msg, sizeof(msg), "who holds port %u cannot be read: %s", in->port,
			 strerror(-r));
	else
		vram_portowner_describe(&po, in->port, w->cfg->name, msg, sizeof(msg));
	vram_warn("%s: %s; the request is not sent", w->cfg->name, msg);
	fmt_error(w, -EADDRINUSE, "%s", msg);
	if (w->log)
		vram_logfile_note(w->log, "replica %u: %s", in->replica, msg);
	fail_workload(m, w, VRAM_WL_EV_CRASH, true);
	return false;
}

int vram_manager_endpoint(struct vram_manager *m, const char *name, unsigned *ret_port)
{
	struct vram_workload *w = find(m, name);
	if (!w || removing(m, w))
		return -ENOENT;
	const struct cfg_slot *s = slot_of(m, w);
	/* a reload's restart waits for the requests in flight: new ones wait for the new process */
	if (w->state != VRAM_WL_READY || (s && s->next))
		return -EAGAIN;
	for (size_t n = 0; n < w->n_instances; n++) {
		struct vram_instance *in = &w->instances[w->next_port_rr++ % w->n_instances];
		if (in->child && in->healthy && in->port) {
			if (!endpoint_port_ours(m, w, in))
				return -EAGAIN;
			*ret_port = in->port;
			return 0;
		}
	}
	return -EAGAIN;
}

/* ---- status ---- */

static json_t *duration_json(uint64_t ms)
{
	if (ms == VRAM_DURATION_NEVER || ms == VRAM_IDLE_KEEP)
		return json_null();
	return json_real((double)ms / 1000.0);
}

static json_t *gpu_refs_json(struct vram_manager *m, const struct vram_instance *in)
{
	json_t *a = json_array();
	for (size_t g = 0; a && g < in->n_gpus; g++) {
		const char *uuid = vram_gpu_uuid(m->gpus, in->gpus[g]);
		if (!uuid)
			uuid = "";
		json_array_append_new(a, json_pack("{s:i,s:s}", "index", (int)in->gpus[g], "uuid", uuid));
	}
	return a;
}

/* null for share: none; else whether MPS is used, why not, and each instance's client. */
/*
 * A JSON string of text that may hold anything a workload wrote (its log
 * tail, an error that quotes it): bytes that are not UTF-8, or a character
 * the tail's ring cut, become U+FFFD, since jansson refuses such text and
 * the whole workload would drop out of the status. NULL on out of memory.
 */
static json_t *text_json(const char *text)
{
	size_t len = strlen(text);
	if (vram_utf8_valid(text, len))
		return json_string(text);
	size_t size = 3 * len + 1; /* each bad byte becomes 3 */
	char *clean = malloc(size);
	if (!clean)
		return NULL;
	vram_utf8_sanitize(clean, size, text, len);
	json_t *j = json_string(clean);
	free(clean);
	return j;
}

static json_t *workload_mps_json(const struct vram_workload *w)
{
	if (w->cfg->share != VRAM_SHARE_MPS)
		return json_null();
	json_t *clients = json_array();
	for (size_t i = 0; clients && i < w->n_instances; i++) {
		const struct vram_instance *in = &w->instances[i];
		if (!in->mps_client)
			continue;
		json_t *c = vram_mps_client_status_json(in->mps_client);
		if (c) {
			json_object_set_new(c, "replica", json_integer(in->replica));
			json_array_append_new(clients, c);
		}
	}
	return json_pack("{s:b,s:o,s:o,s:o}", "used", w->use_mps, "why",
			 w->mps_note[0] ? text_json(w->mps_note) : json_null(), "compute_percent",
			 w->cfg->compute_percent ? json_integer(w->cfg->compute_percent) : json_null(),
			 "clients", clients ? clients : json_array());
}

/*
 * null when no process of w ever spoke to the hook channel; else its hooked
 * processes, the measured bytes (which beat the declared memory) and a
 * warning when a cap did not parse.
 */
static json_t *workload_hook_json(struct vram_manager *m, const struct vram_workload *w)
{
	if (!m->hookchan)
		return json_null();
	json_t *procs = vram_hookchan_workload_json(m->hookchan, w->cfg->name);
	if (!procs || json_array_size(procs) == 0) {
		json_decref(procs);
		return json_null();
	}
	uint64_t used = 0, nonmovable = 0;
	size_t n = vram_hookchan_usage(m->hookchan, w->cfg->name, &used, &nonmovable);
	return json_pack("{s:o,s:o,s:I,s:o}", "processes", procs, "measured_bytes",
			 n ? json_integer((json_int_t)used) : json_null(), "nonmovable_bytes",
			 (json_int_t)nonmovable, "warning", vram_hookchan_warning_json(m->hookchan, w->cfg->name));
}

/* How an ad-hoc workload's process ended; "status" is what a shell would say (128+signal). */
static json_t *exit_json(int wait_status)
{
	if (WIFSIGNALED(wait_status))
		return json_pack("{s:n,s:i,s:i}", "code", "signal", WTERMSIG(wait_status), "status",
				 128 + WTERMSIG(wait_status));
	int code = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 1;
	return json_pack("{s:i,s:n,s:i}", "code", code, "signal", "status", code);
}

static json_t *workload_json(struct vram_manager *m, struct vram_workload *w)
{
	uint64_t now = vram_now_ms();
	const struct vram_workload_config *c = w->cfg;
	char declared[32];
	vram_units_format_mem(&c->memory, declared, sizeof(declared));
	bool declared_set = c->memory.is_fraction || c->memory.bytes;

	json_t *instances = json_array();
	uint64_t resident = 0;
	for (size_t i = 0; instances && i < w->n_instances; i++) {
		const struct vram_instance *in = &w->instances[i];
		if (in->resident)
			resident += in->bytes_per_gpu * in->n_gpus;
		json_array_append_new(instances,
			json_pack("{s:i,s:o,s:o,s:o,s:I,s:b}", "replica", (int)in->replica, "pid",
				  in->pid ? json_integer(in->pid) : json_null(), "port",
				  in->port ? json_integer(in->port) : json_null(), "gpus",
				  gpu_refs_json(m, in), "bytes_per_gpu", (json_int_t)in->bytes_per_gpu,
				  "healthy", in->healthy));
	}
	const struct vram_instance *first = &w->instances[0];
	json_t *models = json_array();
	for (size_t i = 0; models && i < c->n_models; i++)
		json_array_append_new(models, json_string(c->models[i]));

	json_t *o = json_pack(
		"{s:s,s:s,s:f,s:o,s:o,s:o,s:i,s:o,s:{s:o,s:I,s:I,s:I},s:f,s:i,s:{s:o,s:o},"
		"s:{s:o,s:s,s:f},s:o,s:o,s:i,s:o,s:i,s:s,s:s,s:o,s:o}",
		"name", c->name,
		"state", vram_wl_state_name(w->state),
		"state_seconds", (double)(now - w->state_since_ms) / 1000.0,
		"gpus", gpu_refs_json(m, first),
		"pid", first->pid ? json_integer(first->pid) : json_null(),
		"port", first->port ? json_integer(first->port) : json_null(),
		"replicas", (int)w->n_instances,
		"instances", instances ? instances : json_array(),
		"memory",
		"declared", declared_set ? json_string(declared) : json_null(),
		"per_gpu_bytes", (json_int_t)first->bytes_per_gpu,
		"gpu_bytes", (json_int_t)resident,
		"offloaded_bytes", (json_int_t)w->offloaded_bytes,
		"idle_seconds", (double)vram_policy_idle_ms(w, now) / 1000.0,
		"in_flight", (int)w->in_flight,
		"timeouts",
		"offload_after_seconds", duration_json(w->offload_after_ms),
		"release_after_seconds", duration_json(w->release_after_ms),
		"engine",
		"name", w->engine ? json_string(w->engine->name) : json_null(),
		"why", w->engine_why,
		"last_seconds", w->last_action_seconds,
		"last_error", w->last_error[0] ? text_json(w->last_error) : json_null(),
		"log_tail", w->state == VRAM_WL_FAILED && w->log_tail[0] ? text_json(w->log_tail)
									 : json_null(),
		"restarts", (int)w->restarts,
		"next_restart_seconds",
		w->retry_pending ? json_real((double)(w->retry_at_ms > now ? w->retry_at_ms - now : 0) /
					     1000.0)
				 : json_null(),
		"priority", c->priority,
		"start", c->start == VRAM_START_EAGER ? "eager" : "lazy",
		"log", w->log_path ? w->log_path : "",
		"models", models ? models : json_array(),
		"in_transition", json_boolean(!vram_wl_state_settled(w->state)));
	if (o)
		json_object_set_new(o, "mps", workload_mps_json(w));
	if (o)
		json_object_set_new(o, "hook", workload_hook_json(m, w));
	if (o)
		json_object_set_new(o, "liveness", vram_liveness_json(w, now));
	struct adhoc *a = adhoc_of(m, w);
	if (o)
		json_object_set_new(o, "adhoc", json_boolean(a != NULL));
	if (o && a)
		json_object_set_new(o, "exit", a->exited ? exit_json(a->wait_status) : json_null());
	/* whom an ad-hoc workload runs as, who alone (with root) may act on it */
	if (o)
		json_object_set_new(o, "owner",
				    a ? json_pack("{s:I,s:I,s:s}", "uid", (json_int_t)a->runas.uid, "gid",
						  (json_int_t)a->runas.gid, "user", a->runas.user)
				      : json_null());
	/* what a config reload left for it to do: {"action": "restart"|"remove", "keys"} or null */
	const struct cfg_slot *s = slot_of(m, w);
	if (o)
		json_object_set_new(o, "pending",
				    s && s->removing ? json_pack("{s:s}", "action", "remove")
				    : s && s->next   ? json_pack("{s:s,s:s}", "action", "restart",
								 "keys", s->keys)
						     : json_null());
	return o;
}

static const char *owner_of(struct vram_manager *m, pid_t pid, unsigned *ret_replica)
{
	for (size_t k = 0; pid > 0 && k < m->n_live; k++) {
		for (size_t i = 0; i < m->wptrs[k]->n_instances; i++) {
			if (m->wptrs[k]->instances[i].pid == pid) {
				*ret_replica = (unsigned)i;
				return m->wptrs[k]->cfg->name;
			}
		}
	}
	return NULL;
}

json_t *vram_manager_gpus_json(struct vram_manager *m)
{
	json_t *a = json_array();
	unsigned n = vram_gpu_count(m->gpus);
	for (unsigned i = 0; a && i < n; i++) {
		struct vram_gpu_info info;
		if (vram_gpu_query(m->gpus, i, &info) < 0)
			continue;
		json_t *procs = json_array();
		for (size_t p = 0; procs && info.procs_valid && p < info.n_procs; p++) {
			unsigned replica = 0;
			const char *owner = owner_of(m, info.procs[p].pid, &replica);
			json_array_append_new(procs,
				json_pack("{s:i,s:o,s:o,s:o}", "pid", (int)info.procs[p].pid,
					  "used_bytes",
					  info.procs[p].used_bytes == UINT64_MAX
						  ? json_null()
						  : json_integer((json_int_t)info.procs[p].used_bytes),
					  "workload", owner ? json_string(owner) : json_null(),
					  "replica", owner ? json_integer(replica) : json_null()));
		}
		json_t *g = json_pack(
			"{s:i,s:s,s:s,s:s,s:{s:I,s:I,s:I,s:I},s:o,s:o,s:o}", "index", (int)info.index,
			"name", info.name, "uuid", info.uuid, "pci_bus_id", info.pci_bus_id, "memory",
			"total", (json_int_t)info.mem_total, "used", (json_int_t)info.mem_used, "free",
			(json_int_t)info.mem_free, "reserve", (json_int_t)m->cfg->gpus.reserve,
			"utilization_percent",
			info.util_percent < 0 ? json_null() : json_integer(info.util_percent),
			"processes", info.procs_valid && procs ? procs : json_null(),
			"backend", json_string(vram_gpu_backend_name_of(m->gpus)));
		if (!info.procs_valid)
			json_decref(procs);
		if (g)
			json_array_append_new(a, g);
	}
	return a;
}

json_t *vram_manager_workload_json(struct vram_manager *m, const char *name)
{
	struct vram_workload *w = find(m, name);
	return w ? workload_json(m, w) : NULL;
}

json_t *vram_manager_status_json(struct vram_manager *m)
{
	json_t *ws = json_array();
	for (size_t k = 0; ws && k < m->n_live; k++) {
		json_t *o = workload_json(m, m->wptrs[k]);
		if (o)
			json_array_append_new(ws, o);
	}
	json_t *gpus = vram_manager_gpus_json(m);
	if (!ws || !gpus) {
		json_decref(ws);
		json_decref(gpus);
		return NULL;
	}
	json_t *mps = vram_mps_status_json(m->mps);
	return json_pack("{s:o,s:o,s:s,s:o}", "gpus", gpus, "workloads", ws, "backend",
			 vram_gpu_backend_name_of(m->gpus), "mps", mps ? mps : json_null());
}

json_t *vram_manager_compat_status_json(struct vram_manager *m)
{
	json_t *o = json_object();
	uint64_t now = vram_now_ms();
	const double gib = (double)VRAM_GiB;
	for (size_t k = 0; o && k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		const char *location = "unloaded";
		bool on_gpu = false, running = any_process(w);
		for (size_t i = 0; i < w->n_instances; i++)
			on_gpu |= w->instances[i].resident && w->instances[i].n_gpus > 0;
		if (on_gpu)
			location = "GPU";
		else if (running || w->state == VRAM_WL_OFFLOADED)
			location = "CPU";
		json_t *mem = json_object();
		for (size_t i = 0; mem && i < w->n_instances; i++) {
			const struct vram_instance *in = &w->instances[i];
			for (size_t g = 0; g < in->n_gpus; g++) {
				struct vram_gpu_info info;
				if (vram_gpu_query(m->gpus, in->gpus[g], &info) < 0)
					continue;
				uint64_t used = in->resident ? in->bytes_per_gpu : 0;
				for (size_t p = 0; info.procs_valid && p < info.n_procs; p++) {
					if (in->pid > 0 && info.procs[p].pid == in->pid &&
					    info.procs[p].used_bytes != UINT64_MAX)
						used = info.procs[p].used_bytes;
				}
				char key[32];
				snprintf(key, sizeof(key), "GPU_%u", in->gpus[g]);
				json_object_set_new(mem, key,
					json_pack("{s:f,s:f,s:f}", "allocated_gb", (double)used / gib,
						  "reserved_gb",
						  (double)(in->resident ? in->bytes_per_gpu : 0) / gib,
						  "total_gb", (double)info.mem_total / gib));
			}
		}
		bool monitor = w->offload_after_ms != VRAM_DURATION_NEVER ||
			       w->release_after_ms != VRAM_DURATION_NEVER;
		json_object_set_new(o, w->cfg->name,
			json_pack("{s:s,s:s,s:f,s:o,s:b,s:o,s:s}", "model_name",
				  w->cfg->n_models ? w->cfg->models[0] : w->cfg->name, "location",
				  location, "idle_time_seconds",
				  (double)vram_policy_idle_ms(w, now) / 1000.0,
				  "idle_timeout_seconds", duration_json(w->release_after_ms),
				  "monitor_running", monitor, "gpu_memory", mem ? mem : json_object(),
				  "state", vram_wl_state_name(w->state)));
	}
	return o;
}

const char *vram_manager_log_path(struct vram_manager *m, const char *name)
{
	struct vram_workload *w = find(m, name);
	return w ? w->log_path : NULL;
}

int vram_manager_subscribe(struct vram_manager *m, vram_event_cb cb, void *arg,
			   struct vram_manager_sub **ret_sub)
{
	struct vram_manager_sub *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->m = m;
	s->cb = cb;
	s->arg = arg;
	s->next = m->subs;
	m->subs = s;
	if (ret_sub)
		*ret_sub = s;
	return 0;
}

void vram_manager_unsubscribe(struct vram_manager_sub *sub)
{
	if (!sub)
		return;
	for (struct vram_manager_sub **pp = &sub->m->subs; *pp; pp = &(*pp)->next) {
		if (*pp == sub) {
			*pp = sub->next;
			break;
		}
	}
	free(sub);
}
