/* SPDX-License-Identifier: MIT */
/*
 * vramd: loads the config, opens the GPUs, creates the manager, serves the
 * REST API on TCP and on a Unix socket, and on SIGTERM/SIGINT stops every
 * workload before it exits. SIGHUP reads the config again; SIGUSR2
 * restarts vramd in place (upgrade.h), from the binary on disk, keeping
 * its pid, its workloads and its listening sockets. After such a restart
 * it starts on the sockets it was handed instead of binding them.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/meminfo.h"
#include "common/version.h"
#include "config/config.h"
#include "core/hostplan.h"
#include "daemon/accesslog.h"
#include "daemon/api.h"
#include "daemon/gateway.h"
#include "daemon/http.h"
#include "daemon/manager.h"
#include "daemon/metrics.h"
#include "daemon/relay.h"
#include "daemon/spawn.h"
#include "daemon/notify.h"
#include "daemon/upgrade.h"
#include "gpu/gpu.h"

/* Descriptors the daemon asks for (its soft RLIMIT_NOFILE, up to the hard limit). */
#define VRAM_NOFILE_WANT 65536

/* bytes: larger blocks are always mapped on their own (see main) */
#define VRAM_MMAP_THRESHOLD (512 * 1024)

/* s the daemon waits for the manager to stop its workloads before it gives up. */
#define SHUTDOWN_GUARD_S 120

struct daemon {
	struct event_base *base;
	struct vram_manager *m;
	struct vram_api *api;
	struct vram_metrics *metrics;
	struct vram_gateway *gw;
	struct vram_http *http;
	struct vram_upgrade *up;
	struct vram_accesslog *alog; /* daemon.access_log; NULL: off */
	struct event *sig_term, *sig_int, *sig_hup, *sig_usr2, *guard;
	bool stopping;
};

/* meson defines it as <prefix>/<sysconfdir>/vramd/vramd.yaml */
#ifndef VRAM_DEFAULT_CONFIG
#define VRAM_DEFAULT_CONFIG "/etc/vramd/vramd.yaml"
#endif

static void usage(FILE *f)
{
	fputs("Usage: vramd [--config FILE] [--listen HOST:PORT] [--gpus 2x80GiB]\n"
	      "             [--state-dir DIR] [--log-level error|warn|info|debug]\n"
	      "       vramd --check-config FILE [--gpus ...]\n"
	      "       vramd --help | --version\n"
	      "\n"
	      "Places AI model services on GPUs, caps their memory, starts them on\n"
	      "demand and parks idle ones in host RAM.\n"
	      "\n"
	      "  -c, --config FILE        the YAML config to run (default: " VRAM_DEFAULT_CONFIG ")\n"
	      "      --check-config FILE  validate FILE, print its errors (file:line:col), exit\n"
	      "  -l, --listen HOST:PORT   API address (overrides daemon.listen)\n"
	      "  -g, --gpus LIST          simulated GPUs, e.g. 2x80GiB or 1x24GiB,1x80GiB\n"
	      "  -s, --state-dir DIR      logs and sockets (overrides daemon.state_dir)\n"
	      "  -L, --log-level LEVEL    error, warn, info or debug\n"
	      "  -h, --help               this text\n"
	      "  -V, --version            print the version\n",
	      f);
}

static void on_stopped(void *arg)
{
	struct daemon *d = arg;
	vram_info("All workloads stopped; exiting");
	event_base_loopbreak(d->base);
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	vram_err("Workloads did not stop within %d s; exiting anyway", SHUTDOWN_GUARD_S);
	event_base_loopbreak(d->base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	if (sig == SIGUSR2) {
		char err[1024];
		if (d->stopping)
			return;
		vram_info("SIGUSR2: restarting in place");
		/* the check's failure is logged by the restart itself */
		if (vram_upgrade_start(d->up, "SIGUSR2",
				       vram_manager_config(d->m)->daemon.upgrade_drain_ms, NULL, NULL,
				       err, sizeof(err)) == -EBUSY)
			vram_warn("SIGUSR2 ignored: %s", err);
		return;
	}
	if (sig == SIGHUP) {
		char err[4096];
		json_t *report = NULL;
		if (d->stopping)
			return;
		vram_info("SIGHUP: reading the config again");
		if (vram_manager_reload_file(d->m, &report, err, sizeof(err)) < 0) {
			vram_err("Config reload refused: %s", err);
			return;
		}
		char *text = json_dumps(report, JSON_COMPACT);
		vram_info("Config reloaded: %s", text ? text : "");
		free(text);
		json_decref(report);
		return;
	}
	if (d->stopping) {
		vram_info("%s: already stopping the workloads", strsignal((int)sig));
		return;
	}
	d->stopping = true;
	vram_info("%s: stopping all workloads", strsignal((int)sig));
	vram_notify(VRAM_NOTIFY_STOPPING, "Stopping %zu workload%s (%s)",
		    vram_manager_config(d->m)->n_workloads,
		    vram_manager_config(d->m)->n_workloads == 1 ? "" : "s", strsignal((int)sig));
	vram_upgrade_cancel(d->up);
	vram_gateway_close_clients(d->gw);
	vram_api_close_clients(d->api);
	struct timeval tv = { SHUTDOWN_GUARD_S, 0 };
	d->guard = evtimer_new(d->base, on_guard, d);
	if (d->guard)
		evtimer_add(d->guard, &tv);
	vram_manager_shutdown(d->m, on_stopped, d);
}

/* ---- what a restart in place borrows (upgrade.h) ---- */

static void up_drain_begin(void *arg)
{
	struct daemon *d = arg;
	vram_gateway_drain_begin(d->gw);
	vram_api_end_streams(d->api);
}

static size_t up_drain_left(void *arg, uint64_t idle_grace_ms)
{
	struct daemon *d = arg;
	return vram_gateway_drain_left(d->gw, idle_grace_ms);
}

static void up_drain_cut(void *arg)
{
	struct daemon *d = arg;
	vram_gateway_drain_cut(d->gw);
}

static void up_drain_end(void *arg)
{
	struct daemon *d = arg;
	vram_gateway_drain_end(d->gw);
}

static int up_prepare_exec(void *arg, char *err, size_t err_size)
{
	struct daemon *d = arg;
	return vram_manager_prepare_exec(d->m, err, err_size);
}

static int up_listeners(void *arg, struct vram_listen_fds *ret)
{
	struct daemon *d = arg;
	size_t n = vram_gateway_listener_count(d->gw);
	ret->n = 0;
	for (size_t i = 0; i <= n; i++) {
		bool is_unix = true;
		int fd = i < n ? vram_gateway_listener_fd(d->gw, i, &is_unix) : vram_http_unix_fd(d->http);
		enum vram_listen_role role = i == n ? VRAM_LISTEN_API
					   : is_unix ? VRAM_LISTEN_CONTROL : VRAM_LISTEN_TCP;
		if (fd < 0)
			continue;
		if (ret->n == VRAM_UPGRADE_FDS_MAX)
			return -ENOSPC;
		int r = vram_upgrade_describe_fd(fd, role, &ret->fds[ret->n]);
		if (r < 0)
			return r;
		ret->n++;
	}
	return 0;
}

/* Appends "ROLE ADDR (fd N)" of an inherited listener to buf (size bytes, at *off). */
static void note_inherited(char *buf, size_t size, size_t *off, enum vram_listen_role role,
			   const char *addr, int fd)
{
	if (fd < 0 || *off >= size)
		return;
	int n = snprintf(buf + *off, size - *off, "%s%s %s (fd %d)", *off ? ", " : "",
			 vram_listen_role_name(role), addr, fd);
	if (n > 0)
		*off += (size_t)n;
}

/*
 * The config read when no --config is given: the one under the install's
 * sysconfdir, then /etc/vramd/vramd.yaml (where a /usr/local install still
 * finds what the package or the administrator put in /etc). Returns a
 * static path, or NULL after saying on stderr where it looked.
 */
static const char *default_config(void)
{
	static const char *const paths[] = { VRAM_DEFAULT_CONFIG, "/etc/vramd/vramd.yaml" };
	size_t n = strcmp(paths[0], paths[1]) == 0 ? 1 : 2;
	for (size_t i = 0; i < n; i++)
		if (access(paths[i], F_OK) == 0)
			return paths[i];
	fprintf(stderr, "vramd: no --config given and no config at %s%s%s; "
		"give one with --config FILE (examples: share/vramd/examples of the install)\n",
		paths[0], n > 1 ? " or " : "", n > 1 ? paths[1] : "");
	return NULL;
}

/* Loads the config; prints its errors (file:line:col) to stderr. Returns 0 or -errno. */
static int load_config(const char *path, const struct vram_config_overrides *ov,
		       struct vram_config **ret)
{
	char *error = NULL;
	int r = vram_config_load(path, ov, ret, &error);
	if (r < 0) {
		if (error)
			fprintf(stderr, "%s\n", error);
		else
			fprintf(stderr, "%s: %s\n", path, strerror(-r));
	}
	free(error);
	return r;
}

static int check_config(const char *path, const struct vram_config_overrides *ov)
{
	struct vram_config *cfg = NULL;
	if (load_config(path, ov, &cfg) < 0)
		return 1;
	size_t instances = 0;
	for (size_t i = 0; i < cfg->n_workloads; i++)
		instances += cfg->workloads[i].replicas;
	printf("ok: %s: %zu workload%s (%zu instance%s), gpus backend %s\n", path, cfg->n_workloads,
	       cfg->n_workloads == 1 ? "" : "s", instances, instances == 1 ? "" : "s",
	       vram_gpu_backend_name(cfg->gpus.backend));
	/* the host budget as it would be on this machine */
	struct vram_meminfo mi;
	char host[512];
	vram_host_describe(cfg, vram_meminfo_read(NULL, &mi) == 0 ? mi.total : 0, host, sizeof(host));
	printf("%s\n", host);
	vram_upgrade_check_note(stdout);
	vram_config_free(cfg);
	return 0;
}

int main(int argc, char **argv)
{
	/* vramd run again as a workload's output relay (relay.h): nothing else is set up */
	if (vram_relay_requested(argc, argv))
		return vram_relay_main(argc, argv);
	/*
	 * Restarted in place: the listeners handed over. Read and removed from
	 * the environment before anything can start a process.
	 */
	struct vram_listen_fds inherited;
	char inherit_err[1024] = "";
	int inherit = vram_upgrade_inherit(&inherited, inherit_err, sizeof(inherit_err));
	/* the limit children get, and the image after a restart in place */
	struct rlimit start_nofile;
	bool has_start_nofile = getrlimit(RLIMIT_NOFILE, &start_nofile) == 0;
	/* the kernel's link to this very binary, even if the file is replaced meanwhile */
	vram_relay_set_program("/proc/self/exe");
	/* clients, upstream connections and workload pipes; children keep the old limit */
	rlim_t nofile = vram_spawn_nofile_raise(VRAM_NOFILE_WANT);
	/*
	 * The gateway's request bodies make buffers of up to 17 MiB that live
	 * for one request. glibc raises its mmap threshold to the size of the
	 * largest block freed, after which such buffers come from the heap,
	 * whose free space goes back to the system only from its top: what a
	 * burst of large bodies took would stay with vramd. A fixed threshold
	 * keeps large blocks mapped on their own, and given back when freed.
	 */
	mallopt(M_MMAP_THRESHOLD, VRAM_MMAP_THRESHOLD);

	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", required_argument, NULL, 'C' },
		{ "listen", required_argument, NULL, 'l' },
		{ "gpus", required_argument, NULL, 'g' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "log-level", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	const char *config_path = NULL, *check_path = NULL, *log_level = NULL;
	struct vram_config_overrides ov = { 0 };
	int c;
	while ((c = getopt_long(argc, argv, "c:l:g:s:L:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config_path = optarg; break;
		case 'C': check_path = optarg; break;
		case 'l': ov.listen = optarg; break;
		case 'g': ov.sim_gpus = optarg; break;
		case 's': ov.state_dir = optarg; break;
		case 'L': log_level = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("vramd %s\n", VRAM_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vramd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	enum vram_log_level level = VRAM_LOG_INFO;
	if (log_level && vram_log_level_parse(log_level, &level) < 0) {
		fprintf(stderr, "vramd: --log-level: expected error, warn, info or debug, got \"%s\"\n",
			log_level);
		return 2;
	}
	if (check_path)
		return check_config(check_path, &ov);
	if (!config_path && !(config_path = default_config()))
		return 2;
	vram_log_init(level, NULL);

	int ret = 1;
	struct daemon d = { 0 };
	struct vram_config *cfg = NULL;
	struct vram_gpus *gpus = NULL;
	char note[1024] = "", err[1024] = "";
	int r = load_config(config_path, &ov, &cfg);
	if (r < 0)
		return 1;
	if (!log_level && cfg->daemon.log_level &&
	    vram_log_level_parse(cfg->daemon.log_level, &level) < 0)
		level = VRAM_LOG_INFO;
	/*
	 * The state directory first: sockets, logs and the relays' files go
	 * there, and the daemon log may too. The default /tmp/vramd-$UID can be
	 * made by anyone before vramd starts, so one that is not vramd's own and
	 * private is refused rather than used.
	 */
	if (cfg->daemon.state_dir &&
	    (r = vram_mkdir_private(cfg->daemon.state_dir, err, sizeof(err))) < 0) {
		vram_err("Refusing the state directory %s: %s; %s", cfg->daemon.state_dir, err,
			 r == -EACCES ? "set daemon.state_dir to a directory elsewhere"
				      : "remove it or set daemon.state_dir");
		goto out_config;
	}
	r = vram_log_init(level, cfg->daemon.log);
	if (r < 0)
		vram_warn("Failed to open the log file %s: %s; logging to stderr", cfg->daemon.log,
			  vram_open_strerror(r));
	if (inherit < 0)
		vram_err("Ignoring the listeners handed over by a restart in place: %s; binding them "
			 "anew", inherit_err);

	const char *listen = cfg->daemon.listen ? cfg->daemon.listen : "127.0.0.1:8600";
	char host[256];
	unsigned port;
	if (vram_http_split_hostport(listen, host, sizeof(host), &port) < 0) {
		vram_err("Failed to parse daemon.listen \"%s\": expected HOST:PORT", listen);
		goto out_config;
	}
	if (!vram_http_host_is_loopback(host) && !(cfg->daemon.token && *cfg->daemon.token)) {
		vram_err("Refusing to listen on %s without daemon.token: only loopback addresses may go without one",
			 listen);
		goto out_config;
	}
	char socket_path[PATH_MAX];
	if (cfg->daemon.socket)
		snprintf(socket_path, sizeof(socket_path), "%s", cfg->daemon.socket);
	else
		snprintf(socket_path, sizeof(socket_path), "%s/vramd.sock",
			 cfg->daemon.state_dir ? cfg->daemon.state_dir : ".");

	signal(SIGPIPE, SIG_IGN);
	d.base = event_base_new();
	if (!d.base) {
		vram_err("Failed to create the event loop");
		goto out_config;
	}
	r = vram_gpu_open(cfg, &gpus, note, sizeof(note));
	if (r < 0) {
		vram_log_errno(VRAM_LOG_ERROR, r, "Failed to open the GPUs (%s)", note);
		goto out_base;
	}
	vram_info("GPUs: %s", note);
	/* The manager owns cfg and gpus from here, also when it fails. */
	struct vram_config *cfg_owned = cfg;
	cfg = NULL;
	r = vram_manager_new(d.base, cfg_owned, gpus, &d.m);
	gpus = NULL;
	if (r < 0) {
		vram_log_errno(VRAM_LOG_ERROR, r, "Failed to create the manager");
		goto out_base;
	}
	if (vram_manager_set_source(d.m, config_path, &ov, log_level != NULL) < 0) {
		vram_err("Failed to create the manager: out of memory");
		goto out_manager;
	}
	const struct vram_config *rcfg = vram_manager_config(d.m);
	if (vram_api_new(d.base, d.m, &d.api) < 0) {
		vram_err("Failed to create the API: out of memory");
		goto out_manager;
	}
	/*
	 * The gateway owns the public listeners and speaks HTTP/1.1 itself; what
	 * is not /v1 or /w it relays to the evhttp server (REST API, /mcp,
	 * /metrics), which listens only on a private socket next to the control
	 * socket.
	 */
	char api_socket[PATH_MAX];
	if ((size_t)snprintf(api_socket, sizeof(api_socket), "%s" VRAM_CONFIG_API_SOCKET_SUFFIX,
			     socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		vram_err("Failed to place the API socket: %s" VRAM_CONFIG_API_SOCKET_SUFFIX
			 " is too long for a socket path", socket_path);
		goto out_manager;
	}
	if (vram_metrics_new(d.m, &d.metrics) < 0 ||
	    vram_gateway_new(d.base, d.m, d.api, d.metrics, rcfg->daemon.token, api_socket,
			     &d.gw) < 0) {
		vram_err("Failed to create the gateway: out of memory");
		goto out_gateway;
	}
	if (rcfg->daemon.access_log) {
		r = vram_accesslog_open(rcfg->daemon.access_log, rcfg->daemon.access_log_max_bytes,
					rcfg->daemon.access_log_keep, &d.alog);
		if (r < 0)
			vram_warn("Failed to open the access log %s: %s; requests are not logged",
				  rcfg->daemon.access_log, vram_open_strerror(-r));
		vram_gateway_set_access_log(d.gw, d.alog);
	}
	struct vram_http_options hopt = { .body_max = VRAM_GATEWAY_BODY_MAX };
	if (vram_http_new(d.base, &hopt, vram_gateway_handle, d.gw, &d.http) < 0) {
		vram_err("Failed to create the HTTP server: out of memory");
		goto out_gateway;
	}
	static const struct vram_upgrade_host up_host = {
		.drain_begin = up_drain_begin,
		.drain_left = up_drain_left,
		.drain_cut = up_drain_cut,
		.drain_end = up_drain_end,
		.prepare_exec = up_prepare_exec,
		.listeners = up_listeners,
	};
	struct vram_upgrade_host uhost = up_host;
	uhost.arg = &d;
	char exe[PATH_MAX];
	if ((r = vram_upgrade_self_exe(exe, sizeof(exe))) < 0) {
		vram_log_errno(VRAM_LOG_ERROR, r, "Failed to find vramd's own binary (/proc/self/exe)");
		goto out_http;
	}
	struct vram_upgrade_options uopt = {
		.exe = exe, .argv = argv, .config = config_path, .listen = ov.listen,
		.gpus = ov.sim_gpus, .state_dir = ov.state_dir, .restarts = inherited.restarts,
		.nofile = has_start_nofile ? &start_nofile : NULL,
	};
	if (vram_upgrade_new(d.base, &uopt, &uhost, &d.up) < 0) {
		vram_err("Failed to set up restarts in place: out of memory");
		goto out_http;
	}
	vram_api_set_upgrade(d.api, d.up);
	/*
	 * After a restart in place the listeners the config asks for are the
	 * sockets handed over (connections that arrived meanwhile wait in
	 * their backlogs); any other one handed over is closed before the rest
	 * are bound, since it may hold an address they need.
	 */
	int api_fd = vram_upgrade_take(&inherited, VRAM_LISTEN_API, api_socket);
	int tcp_fd = vram_upgrade_take(&inherited, VRAM_LISTEN_TCP, listen);
	int control_fd = vram_upgrade_take(&inherited, VRAM_LISTEN_CONTROL, socket_path);
	vram_upgrade_close_rest(&inherited);
	char handed[1024] = "";
	size_t handed_len = 0;
	note_inherited(handed, sizeof(handed), &handed_len, VRAM_LISTEN_TCP, listen, tcp_fd);
	note_inherited(handed, sizeof(handed), &handed_len, VRAM_LISTEN_CONTROL, socket_path,
		       control_fd);
	note_inherited(handed, sizeof(handed), &handed_len, VRAM_LISTEN_API, api_socket, api_fd);
	r = api_fd >= 0 ? vram_http_accept_unix(d.http, api_fd, api_socket, err, sizeof(err))
			: vram_http_bind_unix(d.http, api_socket, err, sizeof(err));
	if (r < 0) {
		vram_err("Failed to listen on the API socket: %s", err);
		goto out_http;
	}
	unsigned bound_port = 0;
	r = tcp_fd >= 0 ? vram_gateway_listen_tcp_fd(d.gw, tcp_fd, listen, &bound_port, err, sizeof(err))
			: vram_gateway_listen_tcp(d.gw, listen, &bound_port, err, sizeof(err));
	if (r < 0) {
		vram_err("Failed to listen: %s", err);
		goto out_http;
	}
	gid_t socket_gid = rcfg->daemon.has_socket_group ? rcfg->daemon.socket_gid : (gid_t)-1;
	r = control_fd >= 0
		    ? vram_gateway_listen_unix_fd(d.gw, control_fd, socket_path,
						  rcfg->daemon.socket_mode, socket_gid, err, sizeof(err))
		    : vram_gateway_listen_unix_shared(d.gw, socket_path, rcfg->daemon.socket_mode,
						      socket_gid, err, sizeof(err));
	if (r < 0) {
		vram_err("Failed to listen on the control socket: %s", err);
		goto out_http;
	}
	vram_info("Listening on http://%s%s%s:%u and %s", strchr(host, ':') ? "[" : "", host,
		  strchr(host, ':') ? "]" : "", bound_port, socket_path);

	d.sig_term = evsignal_new(d.base, SIGTERM, on_signal, &d);
	d.sig_int = evsignal_new(d.base, SIGINT, on_signal, &d);
	d.sig_hup = evsignal_new(d.base, SIGHUP, on_signal, &d);
	d.sig_usr2 = evsignal_new(d.base, SIGUSR2, on_signal, &d);
	if (!d.sig_term || !d.sig_int || !d.sig_hup || !d.sig_usr2 ||
	    evsignal_add(d.sig_term, NULL) < 0 || evsignal_add(d.sig_int, NULL) < 0 ||
	    evsignal_add(d.sig_hup, NULL) < 0 || evsignal_add(d.sig_usr2, NULL) < 0) {
		vram_err("Failed to install signal handlers");
		goto out_signals;
	}
	/* blocked across a restart in place until these handlers were there */
	sigset_t handled;
	vram_upgrade_signals(&handled);
	pthread_sigmask(SIG_UNBLOCK, &handled, NULL);
	if ((r = vram_manager_run(d.m)) < 0) {
		vram_log_errno(VRAM_LOG_ERROR, r, "Failed to start the workloads");
		goto out_signals;
	}
	vram_debug("Descriptor limit: %llu (workloads get the one vramd started with)",
		   (unsigned long long)nofile);
	if (inherit > 0)
		vram_info("vramd %s restarted in place (pid %ld, restart %u; listening on the sockets "
			  "handed over: %s), ready with %zu workload%s", VRAM_VERSION, (long)getpid(),
			  vram_upgrade_restarts(d.up), handed[0] ? handed : "none", rcfg->n_workloads,
			  rcfg->n_workloads == 1 ? "" : "s");
	else
		vram_info("vramd %s ready with %zu workload%s", VRAM_VERSION, rcfg->n_workloads,
			  rcfg->n_workloads == 1 ? "" : "s");
	/* also after a restart in place: the new image says READY again (same pid) */
	vram_notify(VRAM_NOTIFY_READY, "Ready with %zu workload%s on %s:%u%s", rcfg->n_workloads,
		    rcfg->n_workloads == 1 ? "" : "s", host, bound_port,
		    inherit > 0 ? " (restarted in place)" : "");
	event_base_dispatch(d.base);
	ret = d.stopping ? 0 : 1;

out_signals:
	if (d.guard)
		event_free(d.guard);
	if (d.sig_term)
		event_free(d.sig_term);
	if (d.sig_int)
		event_free(d.sig_int);
	if (d.sig_hup)
		event_free(d.sig_hup);
	if (d.sig_usr2)
		event_free(d.sig_usr2);
out_http:
	/* before the API goes: a request waiting for the check is answered */
	vram_upgrade_free(d.up);
	vram_gateway_close_clients(d.gw);
	vram_api_close_clients(d.api);
	vram_http_free(d.http);
out_gateway:
	vram_gateway_free(d.gw);
	vram_accesslog_close(d.alog);
	vram_metrics_free(d.metrics);
	vram_api_free(d.api);
out_manager:
	vram_manager_free(d.m);
out_base:
	vram_gpu_close(gpus);
	event_base_free(d.base);
out_config:
	vram_config_free(cfg);
	vram_log_done();
	return ret;
}
