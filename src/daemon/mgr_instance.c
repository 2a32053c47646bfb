/* SPDX-License-Identifier: MIT */
/*
 * The manager's instances floor: the processes of a workload. Ports, the
 * environment (CUDA_VISIBLE_DEVICES, PORT, the hook's LD_PRELOAD), spawn
 * (directly, or once its MPS control daemon runs), exit, health probes
 * while starting and liveness checks once ready, whether the port's
 * listener is the instance's own, and the restart backoff.
 *
 * Calls the registry (set_state, lookups) and the modules below the
 * manager; what it needs from the manager proper comes as timers made there.
 */
#include "daemon/manager_int.h"

#include "common/strutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/units.h"
#include "daemon/container.h"
#include "daemon/hookchan.h"
#include "daemon/liveness.h"
#include "daemon/mps.h"
#include "daemon/portowner.h"
#include "daemon/supervise.h"

#define BACKOFF_BASE_MS 1000        /* first restart delay; doubles per failure */
#define BACKOFF_RESET_MS 30000      /* ready this long: the next crash starts from 1 s again */
#define PORT_SEARCH_SPAN 2000       /* ports tried above port_range_start */
#define DEFAULT_PORT_RANGE 20000

static void on_child_exit(struct vram_child *c, int status, void *arg);

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
int mgr_assign_ports(struct vram_manager *m, struct vram_workload *w, char *err, size_t err_size)
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

/* ---- environment and spawn ---- */

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

char *mgr_asprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = vram_str_vprintf(fmt, ap);
	va_end(ap);
	return s;
}

void mgr_strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
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
	const struct vram_runas *o = mgr_slot(m, w)->owner;
	return o && !o->as_daemon ? o : NULL;
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
		if (r && r->uid == uid && mgr_any_process(w) &&
		    (!workload || strcmp(workload, w->cfg->name) == 0))
			return true;
	}
	return false;
}

/* See manager_int.h. */
const char *mgr_shared_hook_socket(struct vram_manager *m)
{
	if (vram_hookchan_shared_path(m->hookchan) || m->shared_hook_failed)
		return vram_hookchan_shared_path(m->hookchan);
	char *path = mgr_asprintf("%s" VRAM_MANAGER_SHARED_HOOK_SUFFIX, m->cfg->daemon.socket);
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
 * The hook socket for w's processes: hook.sock, in the state directory,
 * which is vramd's alone, for processes of vramd's own user or root; for
 * another user, the shared one.
 */
static const char *hook_socket_for(struct vram_manager *m, const struct vram_workload *w)
{
	const struct vram_runas *r = runs_as_other(m, w);
	if (!r || r->uid == 0 || r->uid == geteuid())
		return vram_hookchan_path(m->hookchan);
	return mgr_shared_hook_socket(m);
}

/*
 * "LD_PRELOAD=<hook>:<pre>", except that a sanitizer runtime at the head of
 * pre stays first (it refuses to start otherwise). Caller frees.
 */
static char *preload_with_hook(const char *hook, const char *pre)
{
	if (!pre || !*pre)
		return mgr_asprintf("LD_PRELOAD=%s", hook);
	size_t first = strcspn(pre, ": ");
	const char *base = pre;
	for (const char *p = pre; p < pre + first; p++)
		if (*p == '/')
			base = p + 1;
	if (strncmp(base, "libasan", 7) == 0 || strncmp(base, "libclang_rt.asan", 16) == 0)
		return pre[first] ? mgr_asprintf("LD_PRELOAD=%.*s:%s:%s", (int)first, pre, hook, pre + first + 1)
				  : mgr_asprintf("LD_PRELOAD=%s:%s", pre, hook);
	return mgr_asprintf("LD_PRELOAD=%s:%s", hook, pre);
}


/*
 * An MPS client's CUDA_VISIBLE_DEVICES under index naming, given the MPS
 * daemon's (UUIDs, mps.c): the server renumbers the devices it was started
 * with from 0, so a client names them 0..n-1 in the daemon's order; the
 * host's indices would name other GPUs or none. Caller frees; NULL when out
 * of memory.
 */
static char *mps_client_indices(const char *daemon_visible)
{
	char list[VRAM_PLAN_MAX_GPUS * 4] = "";
	size_t n = *daemon_visible ? 1 : 0, len = 0;
	for (const char *p = daemon_visible; *p; p++)
		n += *p == ',';
	for (size_t g = 0; g < n && len < sizeof(list); g++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%zu", g ? "," : "", g);
	return mgr_asprintf("CUDA_VISIBLE_DEVICES=%s", list);
}

/*
 * The environment a workload instance gets on top of the daemon's, then
 * extra (NULL-terminated, may be NULL; copied; the MPS client's variables,
 * whose CUDA_VISIBLE_DEVICES wins). Caller frees (strv).
 */
static char **instance_env(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in,
			   char *const *extra, size_t *ret_first_own)
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
	*ret_first_own = k;

	char uuids[VRAM_PLAN_MAX_GPUS * (VRAM_GPU_UUID_MAX + 1)] = "";
	size_t len = 0;
	for (size_t g = 0; g < in->n_gpus; g++) {
		char idx[16];
		/*
		 * The backend's index is the CUDA index under PCI_BUS_ID order
		 * (manager.c checks the order at start). vramd itself keeps to
		 * UUIDs (MPS daemons, checkpoint moves); only this names GPUs by
		 * index, the naming every vLLM release accepts.
		 */
		const char *id = m->cfg->gpus.visible_devices == VRAM_VISIBLE_UUID
					 ? vram_gpu_uuid(m->gpus, in->gpus[g])
					 : NULL;
		if (!id)
			id = (snprintf(idx, sizeof(idx), "%u", in->gpus[g]), idx);
		len += (size_t)snprintf(uuids + len, sizeof(uuids) - len, "%s%s", g ? "," : "", id);
		if (len >= sizeof(uuids))
			len = sizeof(uuids) - 1;
	}
	env[k++] = mgr_asprintf("CUDA_VISIBLE_DEVICES=%s", uuids);
	env[k++] = mgr_asprintf("CUDA_DEVICE_ORDER=PCI_BUS_ID");
	env[k++] = mgr_asprintf("PORT=%u", in->port);
	env[k++] = mgr_asprintf("GPU_COUNT=%zu", in->n_gpus);
	env[k++] = mgr_asprintf("VRAM_WORKLOAD=%s", w->cfg->name);
	env[k++] = mgr_asprintf("VRAM_REPLICA=%u", in->replica);
	if (in->n_gpus && in->bytes_per_gpu)
		env[k++] = mgr_asprintf("VRAM_MEMORY_LIMIT=%" PRIu64, in->bytes_per_gpu);
	const char *hook_socket = uses_hook(m, w) ? hook_socket_for(m, w) : NULL;
	if (hook_socket) {
		/*
		 * The workload's own LD_PRELOAD, else the daemon's, stays after
		 * ours; in a container, the one of its env (the host's paths mean
		 * nothing there).
		 */
		const struct vram_container_config *ct = &w->cfg->container;
		char *const *own = ct->image ? ct->env : w->cfg->env;
		size_t n_own = ct->image ? ct->n_env : w->cfg->n_env;
		const char *pre = ct->image ? NULL : getenv("LD_PRELOAD");
		for (size_t i = 0; i < n_own; i++)
			if (strncmp(own[i], "LD_PRELOAD=", 11) == 0)
				pre = own[i] + 11;
		env[k++] = preload_with_hook(m->hook_library, pre);
		env[k++] = mgr_asprintf("VRAM_HOOK_SOCKET=%s", hook_socket);
	}
	for (size_t i = 0; i < n_extra; i++)
		env[k++] = m->cfg->gpus.visible_devices == VRAM_VISIBLE_INDEX &&
				   strncmp(extra[i], "CUDA_VISIBLE_DEVICES=", 21) == 0
			   ? mps_client_indices(extra[i] + 21)
			   : strdup(extra[i]);
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

/* ---- a container (container.h) ---- */

/* Whether env entry e sets variable name (name with its '='). */
static bool env_is(const char *e, const char *name)
{
	return strncmp(e, name, strlen(name)) == 0;
}

/*
 * Builds w's instance in as a container: *ret_argv, the runtime's
 * command line, and *ret_env, the runtime process's own environment (env
 * less LD_PRELOAD: the runtime is never hooked), from env, the instance's
 * environment, whose entries from first_own on are vramd's variables,
 * which go inside. Caller frees both (strv). Returns 0 or -errno with err.
 */
static int container_command(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in,
			     char *const *env, size_t first_own, enum vram_container_runtime runtime,
			     const char *name,
			     char ***ret_argv, char ***ret_env, char *err, size_t err_size)
{
	size_t n = 0;
	while (env[n])
		n++;
	char **inside = calloc(n + 1, sizeof(*inside));
	char **outside = calloc(n + 1, sizeof(*outside));
	char *dirs[3] = {NULL, NULL, NULL};
	char *devices[VRAM_PLAN_MAX_GPUS + 1] = {NULL};
	char idx[VRAM_PLAN_MAX_GPUS][16];
	const char *hook_socket = NULL;
	char *visible = NULL; /* CUDA_VISIBLE_DEVICES renumbered inside, or NULL */
	char *hook_env = NULL, *hook_dir = NULL; /* the hook socket's link, for inside */
	bool real_gpus = !vram_gpu_is_sim(m->gpus) && in->n_gpus > 0;
	int r = -ENOMEM;
	if (!inside || !outside)
		goto out;
	size_t n_in = 0, n_out = 0, n_dirs = 0;
	for (size_t i = 0; i < n; i++) {
		if (!env_is(env[i], "LD_PRELOAD="))
			outside[n_out++] = env[i];
		if (i < first_own)
			continue;
		if (env_is(env[i], "VRAM_HOOK_SOCKET="))
			hook_socket = env[i] + 17;
		if ((env_is(env[i], "CUDA_MPS_PIPE_DIRECTORY=") || env_is(env[i], "CUDA_MPS_LOG_DIRECTORY=")) &&
		    n_dirs < 2)
			dirs[n_dirs++] = strchr(env[i], '=') + 1;
		inside[n_in++] = env[i];
	}
	/*
	 * GPUs passed into a container are numbered from 0 there, in the order
	 * given: index naming names them so; UUIDs stay valid. Simulated GPUs
	 * pass nothing (there is no device, and no CDI spec to name one), and
	 * the names stay the host's.
	 */
	if (real_gpus) {
		for (size_t g = 0; g < in->n_gpus; g++) {
			const char *uuid = m->cfg->gpus.visible_devices == VRAM_VISIBLE_UUID
						   ? vram_gpu_uuid(m->gpus, in->gpus[g]) : NULL;
			snprintf(idx[g], sizeof(idx[g]), "%u", in->gpus[g]);
			devices[g] = uuid ? (char *)uuid : idx[g];
		}
		for (size_t i = 0; i < n_in; i++)
			if (m->cfg->gpus.visible_devices == VRAM_VISIBLE_INDEX &&
			    env_is(inside[i], "CUDA_VISIBLE_DEVICES=") && !in->mps_client) {
				visible = mps_client_indices(inside[i] + 21);
				if (!visible)
					goto out;
				inside[i] = visible;
			}
	}
	/* through a directory of its own, which a container taken back after a restart still sees */
	char hook_link[4096];
	if (hook_socket && mgr_container_hook_socket(m, hook_link, sizeof(hook_link)) == 0) {
		hook_env = mgr_asprintf("VRAM_HOOK_SOCKET=%s", hook_link);
		hook_dir = strdup(hook_link);
		if (!hook_env || !hook_dir)
			goto out;
		*strrchr(hook_dir, '/') = '\0';
		for (size_t i = 0; i < n_in; i++)
			if (env_is(inside[i], "VRAM_HOOK_SOCKET="))
				inside[i] = hook_env;
	}
	struct stat st;
	const char *park = mgr_park_dir(m);
	struct vram_container_run run = {
		.cfg = &w->cfg->container,
		.runtime = runtime,
		.name = name,
		.env = inside,
		.hook_library = hook_socket ? m->hook_library : NULL,
		.hook_socket = hook_socket,
		.hook_dir = hook_dir,
		.park_dir = hook_socket && park && stat(park, &st) == 0 && S_ISDIR(st.st_mode) ? park : NULL,
		.dirs = dirs,
		.ipc_host = in->mps_client != NULL,
		.devices = devices,
	};
	r = vram_container_argv(&run, ret_argv);
	if (r < 0) {
		snprintf(err, err_size, "container %s: %s", name,
			 r == -E2BIG ? "its command line would be too long" : "out of memory");
		goto out;
	}
	/* the strings stay env's: only the array is new */
	char **copy = calloc(n_out + 1, sizeof(*copy));
	for (size_t i = 0; copy && i < n_out; i++) {
		copy[i] = strdup(outside[i]);
		if (!copy[i]) {
			mgr_strv_free(copy);
			copy = NULL;
		}
	}
	if (!copy) {
		mgr_strv_free(*ret_argv);
		r = -ENOMEM;
		snprintf(err, err_size, "out of memory");
		goto out;
	}
	*ret_env = copy;
	r = 0;
out:
	if (r == -ENOMEM && !err[0])
		snprintf(err, err_size, "out of memory");
	free(visible);
	free(hook_env);
	free(hook_dir);
	free(inside);
	free(outside);
	return r;
}

static int spawn_instance(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in,
			  char *err, size_t err_size)
{
	char **mps_env = NULL;
	if (in->mps_client && vram_mps_client_env(in->mps_client, &mps_env) < 0) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	size_t first_own = 0;
	char **env = instance_env(m, w, in, mps_env, &first_own);
	vram_mps_env_free(mps_env);
	if (!env) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	char **ct_argv = NULL;
	const char *runtime = NULL; /* the runtime's program, for a container */
	char ct_name[VRAM_CONTAINER_NAME_MAX] = "";
	if (w->cfg->container.image) {
		enum vram_container_runtime kind = vram_container_resolve(w->cfg->container.runtime);
		runtime = kind != VRAM_CONTAINER_AUTO ? vram_container_runtime_name(kind) : NULL;
		if (!runtime) {
			snprintf(err, err_size, "container: neither podman nor docker is on vramd's PATH");
			mgr_strv_free(env);
			return -ENOENT;
		}
		vram_container_name(w->cfg->name, in->replica, ct_name, sizeof(ct_name));
		char **ct_env = NULL;
		err[0] = '\0';
		int r = container_command(m, w, in, env, first_own, kind, ct_name, &ct_argv, &ct_env, err,
					  err_size);
		mgr_strv_free(env);
		if (r < 0)
			return r;
		env = ct_env;
		/* docker has no run --replace: a leftover of a vramd that crashed goes first */
		if (kind == VRAM_CONTAINER_DOCKER)
			(void)vram_container_remove(runtime, ct_name);
	}
	const struct vram_runas *as = runs_as_other(m, w);
	struct vram_creds creds = {0};
	if (as)
		creds = (struct vram_creds){.uid = as->uid, .gid = as->gid, .groups = as->groups,
					    .n_groups = as->n_groups};
	struct vram_spawn sp = {
		.argv = ct_argv ? ct_argv : w->cfg->cmd,
		.env = env,
		.cwd = w->cfg->cwd,
		.log = w->log,
		.creds = as ? &creds : NULL,
		.container_runtime = runtime,
		.container_name = runtime ? ct_name : NULL,
	};
	struct vram_child *c;
	int r = vram_supervisor_spawn(m->sup, &sp, on_child_exit, w, &c, err, err_size);
	mgr_strv_free(env);
	mgr_strv_free(ct_argv);
	if (r < 0)
		return r;
	in->child = c;
	in->pid = vram_child_pid(c);
	mgr_slot(m, w)->exited = false;
	mgr_slot(m, w)->adopted = false;
	if (in->mps_client)
		vram_mps_client_set_pid(in->mps_client, in->pid);
	in->healthy = false;
	in->port_verified = false;
	in->stop_requested = false;
	in->resident = in->n_gpus > 0;
	(void)sim_charge(m, in, true);
	if (w->log)
		vram_logfile_note(w->log, "replica %u: pid %d, port %u, %zu GPU(s)%s%s%s%s%s%s%s", in->replica,
				  (int)in->pid, in->port, in->n_gpus, runtime ? ", container " : "", ct_name,
				  runtime ? " through " : "", runtime ? runtime : "", as ? ", as user " : "",
				  as ? as->user : "", uses_hook(m, w) && !hook_socket_for(m, w)
					  ? ", without the hook: its socket for other users could not be opened"
					  : "");
	return 0;
}

/* ---- stop ---- */

void mgr_cancel_timers(struct vram_manager *m, struct vram_workload *w)
{
	evtimer_del(mgr_slot(m, w)->start_timer);
	evtimer_del(mgr_slot(m, w)->probe_timer);
	for (size_t i = 0; i < w->n_instances; i++) {
		vram_health_probe_cancel(w->instances[i].probe);
		w->instances[i].probe = NULL;
	}
}

/* SIGTERM (SIGKILL after the grace) to every process of w; exits are expected. */
void mgr_stop_processes(struct vram_workload *w)
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
void mgr_mps_detach_idle(struct vram_workload *w)
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
int mgr_mps_decide(struct vram_manager *m, struct vram_workload *w, char *err, size_t err_size)
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
		snprintf(w->mps_note, sizeof(w->mps_note), "fallback exclusive: running without MPS (%.200s)",
			 why);
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
	mgr_fmt_error(w, error, "%s: %.*s", what, (int)(first < 400 ? first : 400), message);
	if (w->state == VRAM_WL_RESTORING && w->job && !w->engine->keeps_process) {
		struct vram_job *job = w->job;
		job->process_lost = true;
		kill_processes(w);
		mgr_cancel_timers(m, w);
		mgr_mps_detach_idle(w);
		vram_job_complete(job, error, 0, "%s", w->last_error);
	} else {
		kill_processes(w);
		mgr_fail_workload(m, w, w->state == VRAM_WL_STARTING ? VRAM_WL_EV_START_FAILED : VRAM_WL_EV_CRASH,
				  VRAM_REASON_MPS, true);
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

/* ---- start, failure and backoff ---- */

/*
 * Spawns every instance and starts the health checks; an instance that uses
 * MPS is spawned once its MPS control daemon runs. On failure nothing is left
 * running.
 */
int mgr_start_processes(struct vram_manager *m, struct vram_workload *w, char *err,
			size_t err_size)
{
	int r = mgr_assign_ports(m, w, err, err_size);
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
			mgr_mps_detach_idle(w);
			return r;
		}
	}
	mgr_arm_start_checks(m, w);
	return 0;
}

void mgr_arm_start_checks(struct vram_manager *m, struct vram_workload *w)
{
	struct timeval tv = mgr_tv(w->cfg->health.start_timeout_ms);
	evtimer_add(mgr_slot(m, w)->start_timer, &tv);
	tv = mgr_tv(w->cfg->health.kind == VRAM_HEALTH_NONE
			   ? 0
			   : vram_liveness_start_probe_ms(&w->cfg->health));
	evtimer_add(mgr_slot(m, w)->probe_timer, &tv);
}

int mgr_adopt_instance(struct vram_manager *m, struct vram_workload *w, struct vram_instance *in,
		       const struct vram_adopt *a, bool resident, bool mps, char *err,
		       size_t err_size)
{
	int r;
	if (mps) {
		/* its control daemon was taken back first: the client attaches without a start */
		w->use_mps = true;
		r = mps_attach(m, w, in, err, err_size);
		if (r < 0)
			return r;
	}
	struct vram_child *c;
	r = vram_supervisor_adopt(m->sup, a, on_child_exit, w, &c, err, err_size);
	if (r < 0) {
		vram_mps_client_free(in->mps_client);
		in->mps_client = NULL;
		return r;
	}
	if (mgr_is_attached(w)) {
		vram_child_hands_off(c); /* someone else's process: never signalled */
		/* its hooks knock on the shared socket, also after a restart of vramd */
		(void)mgr_shared_hook_socket(m);
	}
	in->child = c;
	in->pid = vram_child_pid(c);
	if (in->mps_client)
		vram_mps_client_set_pid(in->mps_client, in->pid);
	mgr_slot(m, w)->exited = false;
	/* a ready one passed its checks under the previous vramd: the caller says so */
	in->healthy = false;
	in->port_verified = false;
	in->stop_requested = false;
	in->resident = resident && in->n_gpus > 0;
	if (in->resident)
		(void)sim_charge(m, in, true);
	if (m->hookchan)
		vram_hookchan_claim(m->hookchan, in->pid);
	if (w->log)
		vram_logfile_note(w->log, "replica %u: pid %d, port %u, %zu GPU(s), taken back from "
				  "the previous vramd", in->replica, (int)in->pid, in->port,
				  in->n_gpus);
	return 0;
}

/* A process died, or a start/restore did not become healthy: go to failed. */
void mgr_fail_workload(struct vram_manager *m, struct vram_workload *w, enum vram_wl_event ev,
		       enum vram_event_reason reason, bool retry)
{
	if (w->log)
		vram_logfile_tail(w->log, w->log_tail, sizeof(w->log_tail));
	mgr_cancel_timers(m, w);
	w->awaiting_room = false;
	if (w->job) {
		vram_job_cancel(w->job);
		w->job = NULL;
	}
	mgr_stop_processes(w);
	mgr_mps_detach_idle(w);
	mgr_drop_copies(w); /* park files go with the processes' exits */
	if (w->state != VRAM_WL_FAILED)
		mgr_set_state(m, w, ev, reason, w->last_error);
	if (retry && !w->retry_pending)
		mgr_schedule_retry(m, w);
}

/*
 * Records a failed start; at restart.limit of them within restart.window it
 * says so in last_error and the log, and the workload stays failed until a
 * start is asked for (startlimit.h).
 */
static bool mgr_start_limit_hit(struct vram_manager *m, struct vram_workload *w)
{
	const struct vram_workload_config *c = w->cfg;
	if (!vram_startlimit_fail(&mgr_slot(m, w)->start_limit, c->restart_limit,
				  c->restart_window_ms, vram_now_ms()))
		return false;
	char window[32];
	snprintf(w->last_error, sizeof(w->last_error),
		 "failed to start %u times within %s; start it again by hand or with a request",
		 c->restart_limit, vram_units_format_duration_ms(c->restart_window_ms, window,
								  sizeof(window)));
	vram_warn("%s: %s", c->name, w->last_error);
	return true;
}

/* Restart after a failure, with the delay doubling from 1 s up to restart_backoff_max. */
void mgr_schedule_retry(struct vram_manager *m, struct vram_workload *w)
{
	if (m->shutting_down || w->cfg->restart == VRAM_RESTART_NEVER)
		return;
	if (mgr_start_limit_hit(m, w))
		return;
	uint64_t delay = BACKOFF_BASE_MS;
	for (unsigned i = 0; i < w->backoff_step && delay < w->cfg->restart_backoff_max_ms; i++)
		delay *= 2;
	if (delay > w->cfg->restart_backoff_max_ms)
		delay = w->cfg->restart_backoff_max_ms;
	w->backoff_step++;
	w->retry_pending = true;
	w->retry_at_ms = vram_now_ms() + delay;
	vram_startlimit_waiting(&mgr_slot(m, w)->start_limit, delay);
	struct timeval tv = mgr_tv(delay);
	evtimer_add(mgr_slot(m, w)->retry_timer, &tv);
	vram_info("%s: restarting in %" PRIu64 " ms", w->cfg->name, delay);
}

/* A workload that was ready for BACKOFF_RESET_MS starts its next backoff from 1 s again. */
void mgr_backoff_reset_if_settled(struct vram_workload *w)
{
	if (w->state == VRAM_WL_READY && w->backoff_step && w->ready_since_ms &&
	    vram_now_ms() - w->ready_since_ms >= BACKOFF_RESET_MS)
		w->backoff_step = 0;
}

/* ---- exit ---- */

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
	struct mgr_slot *slot = mgr_slot(m, w);
	slot->exited = true;
	slot->wait_status = status;
	slot->finished_ms = vram_now_ms();
	if (m->hookchan)
		vram_hookchan_unclaim(m->hookchan, pid);
	mgr_container_forget(m, in);
	mgr_park_remove(m, w->cfg->name, pid); /* nothing can read it back now */
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
	bool all_gone = !mgr_any_process(w);

	if (expected) {
		if (!all_gone)
			return;
		if (w->state == VRAM_WL_STOPPING) {
			mgr_drop_copies(w);
			mgr_set_state(m, w, VRAM_WL_EV_EXITED, VRAM_REASON_STOPPED, "stopped");
		} else if (w->state == VRAM_WL_OFFLOADING && w->job && !w->engine->keeps_process) {
			vram_job_complete(w->job, 0, w->last_bytes, "processes stopped");
		}
		mgr_kick(m);
		return;
	}

	if (w->state == VRAM_WL_STOPPING) {
		if (all_gone)
			mgr_set_state(m, w, VRAM_WL_EV_EXITED, VRAM_REASON_STOPPED, how);
		return;
	}
	bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	if (clean && (w->state == VRAM_WL_READY || w->state == VRAM_WL_PARKED) &&
	    w->cfg->restart != VRAM_RESTART_ALWAYS) {
		/* it finished by itself: not a failure, and on-failure does not restart it */
		mgr_fmt_error(w, 0, "replica %u (pid %d) %s", in->replica, (int)pid, how);
		if (all_gone) {
			mgr_drop_copies(w);
			mgr_set_state(m, w, VRAM_WL_EV_EXITED, VRAM_REASON_EXITED, w->last_error);
		} else {
			mgr_set_state(m, w, VRAM_WL_EV_STOP, VRAM_REASON_EXITED, w->last_error);
			mgr_stop_processes(w);
		}
		return;
	}
	mgr_fmt_error(w, -ECHILD, "replica %u (pid %d) %s while %s", in->replica, (int)pid, how,
		      vram_wl_state_name(w->state));
	bool retry = w->cfg->restart == VRAM_RESTART_ALWAYS || !clean ||
		     w->state != VRAM_WL_READY;
	mgr_backoff_reset_if_settled(w);
	mgr_fail_workload(m, w, w->state == VRAM_WL_STARTING ? VRAM_WL_EV_START_FAILED
							 : VRAM_WL_EV_CRASH, VRAM_REASON_CRASH, retry);
}

bool mgr_on_reaped_other(pid_t pid, int wait_status, void *arg)
{
	struct vram_manager *m = arg;
	return m->mps && vram_mps_child_reaped(m->mps, pid, wait_status);
}

/* ---- health, liveness and port ownership ---- */

static void on_all_healthy(struct vram_manager *m, struct vram_workload *w)
{
	mgr_cancel_timers(m, w);
	if (w->state == VRAM_WL_STARTING) {
		w->last_error[0] = '\0';
		w->last_errno = 0;
		mgr_set_state(m, w, VRAM_WL_EV_HEALTHY, VRAM_REASON_HEALTHY, "healthy");
	} else if (w->state == VRAM_WL_RESTORING && w->job) {
		vram_job_complete(w->job, 0, vram_workload_gpu_bytes(w), "started again");
	}
}

/*
 * A start or restore that cannot become healthy (it timed out, or its port
 * is held by another process): kill what runs and fail, or hand the failure
 * to the restore job, which fails the workload itself. Why is reason
 * (timeout, no room, port taken), in words in last_error.
 */
static void start_give_up(struct vram_manager *m, struct vram_workload *w,
			  enum vram_event_reason reason)
{
	if (w->state == VRAM_WL_RESTORING && w->job && !w->engine->keeps_process) {
		struct vram_job *job = w->job;
		job->process_lost = true;
		kill_processes(w);
		mgr_cancel_timers(m, w);
		vram_job_complete(job, w->last_errno, 0, "%s", w->last_error);
		return;
	}
	kill_processes(w);
	mgr_fail_workload(m, w, w->state == VRAM_WL_STARTING ? VRAM_WL_EV_START_FAILED
							 : VRAM_WL_EV_RESTORE_FAILED,
			  reason, w->last_errno != -ENOSPC);
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
	/*
	 * A container's listener is in processes of the runtime's monitor, not
	 * of the runtime's foreground process, which is the instance's pid: as
	 * with port_owner: any, it is not checked.
	 */
	if (w->cfg->health.port_owner == VRAM_PORT_OWNER_ANY || w->cfg->health.kind == VRAM_HEALTH_NONE ||
	    w->cfg->container.image)
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
	mgr_fmt_error(w, -EADDRINUSE, "%s", msg);
	if (w->log)
		vram_logfile_note(w->log, "replica %u: %s", in->replica, msg);
	start_give_up(m, w, VRAM_REASON_PORT_TAKEN);
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
	mgr_fmt_error(w, -ETIMEDOUT, "%s", reason);
	mgr_backoff_reset_if_settled(w);
	/* stop_processes also wakes a stopped (SIGSTOP) process, so that SIGTERM can end it */
	mgr_fail_workload(m, w, VRAM_WL_EV_CRASH, VRAM_REASON_LIVENESS, true);
}

/*
 * Probe rounds: while starting or restoring, every min(interval, 500 ms) for
 * each instance not healthy yet; while ready, every interval for each
 * instance (liveness). In other states the timer stops; becoming ready
 * arms it again (set_state).
 */
void mgr_on_probe_timer(evutil_socket_t fd, short what, void *arg)
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
	struct timeval tv = mgr_tv(live ? h->interval_ms : vram_liveness_start_probe_ms(h));
	evtimer_add(mgr_slot(m, w)->probe_timer, &tv);
}

void mgr_on_start_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vram_workload *w = arg;
	struct vram_manager *m = w->ctx;
	char dur[32];
	const char *probe = w->last_probe;
	vram_units_format_duration_ms(w->cfg->health.start_timeout_ms, dur, sizeof(dur));
	if (w->awaiting_room) {
		mgr_fmt_error(w, -ENOSPC, "no room on the GPUs within %s: evicted workloads did not free enough",
			      dur);
	} else {
		mgr_fmt_error(w, -ETIMEDOUT, "not healthy within %s%s%s", dur, probe[0] ? " (last probe: " : "",
			      probe[0] ? probe : "");
		if (probe[0])
			strncat(w->last_error, ")", sizeof(w->last_error) - strlen(w->last_error) - 1);
	}
	start_give_up(m, w, w->awaiting_room ? VRAM_REASON_NO_ROOM : VRAM_REASON_TIMEOUT);
}

/*
 * A workload without a health probe (health: none, ad-hoc workloads) is
 * ready at spawn, before anyone has looked at who listens on its port: the
 * first request checks, so that a squatter never receives one. Nothing
 * listening yet is let through (the connection is refused, 502, and the
 * next request checks again); a foreign listener fails the workload with
 * its name. Returns whether in may be sent the request.
 */
bool mgr_endpoint_port_ours(struct vram_manager *m, struct vram_workload *w,
			    struct vram_instance *in)
{
	if (in->port_verified || w->cfg->health.port_owner == VRAM_PORT_OWNER_ANY || w->cfg->container.image)
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
	mgr_fmt_error(w, -EADDRINUSE, "%s", msg);
	if (w->log)
		vram_logfile_note(w->log, "replica %u: %s", in->replica, msg);
	mgr_fail_workload(m, w, VRAM_WL_EV_CRASH, VRAM_REASON_PORT_TAKEN, true);
	return false;
}

/* ---- the hook library and channel ---- */

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
		char *p = mgr_asprintf("%s/%s", exe, rel[i]);
		char real[PATH_MAX];
		if (p && access(p, R_OK) == 0 && realpath(p, real)) {
			free(p);
			return strdup(real);
		}
		free(p);
	}
#ifdef VRAM_HOOK_LIBRARY
	/* where the install put it, for a vramd binary copied elsewhere */
	if (access(VRAM_HOOK_LIBRARY, R_OK) == 0)
		return strdup(VRAM_HOOK_LIBRARY);
#endif
	return NULL;
}

/* The hook channel (state_dir/hook.sock) and the library; vramd runs on without them. */
void mgr_open_hook(struct vram_manager *m)
{
	m->hook_library = find_hook_library(m->cfg);
	char *path = mgr_asprintf("%s/hook.sock", m->state_dir);
	int r = path ? vram_hookchan_new(m->base, path, &m->hookchan) : -ENOMEM;
	if (r < 0) {
		vram_warn("Failed to open the hook channel %s: %s; the hook engine is off", path ? path : "",
			  strerror(-r));
		m->hookchan = NULL;
	}
	free(path);
	vram_debug("hook library: %s", m->hook_library ? m->hook_library : "none found");
}
