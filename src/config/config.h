/* SPDX-License-Identifier: MIT */
/*
 * vramd's configuration: YAML (libfyaml) → struct vram_config.
 *
 * The loader validates everything up front and resolves `defaults:` into each
 * workload, so runtime code reads final values and never re-checks them.
 * Every error names file:line:col, the key and what was expected; an unknown
 * key gets a "did you mean". The struct is plain data once loaded: it is
 * never mutated by the daemon (runtime changes such as an idle timeout set
 * through the API live in the workload's runtime object).
 */
#ifndef VRAM_CONFIG_H
#define VRAM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/units.h"

#define VRAM_CONFIG_MAX_WORKLOADS 1024
#define VRAM_CONFIG_MAX_GPUS 64
#define VRAM_CONFIG_MAX_REPLICAS 64
#define VRAM_CONFIG_MAX_ARGS 256
#define VRAM_CONFIG_NAME_MAX 63 /* workload names: [A-Za-z0-9._-], 1..63 chars */
#define VRAM_CONFIG_MAX_FILE_BYTES (1024 * 1024) /* bytes; larger files are refused */
#define VRAM_CONFIG_MAX_HOSTS 64 /* entries of daemon.allowed_hosts and daemon.cors.origins */
#define VRAM_CONFIG_MAX_ERRORS 20
#define VRAM_CONFIG_TOKENS_MAX 64          /* tokens in daemon.tokens, and in daemon.token_file */
#define VRAM_CONFIG_TOKEN_FILE_MAX 16384   /* bytes of daemon.token_file */
#define VRAM_CONFIG_EXPANDED_MAX 4096      /* bytes of a daemon value once ${env:...} is replaced */
#define VRAM_CONFIG_RESTART_LIMIT_MAX 100 /* restart.limit: failures kept per workload */
#define VRAM_HEALTH_PATH_MAX 1024 /* bytes of a health check path */
/* The private API socket is the control socket's path with this appended. */
#define VRAM_CONFIG_API_SOCKET_SUFFIX ".api"
/* The hook socket for other users' processes: the control socket's path with this appended. */
#define VRAM_CONFIG_HOOK_SOCKET_SUFFIX ".hook" /* errors listed in one message; the rest are counted */

/* Where a value stood in the file, for runtime errors that point back. */
struct vram_src_pos {
	unsigned line; /* 1-based; 0 when unknown (defaults, overrides) */
	unsigned col;  /* 1-based */
};

enum vram_gpu_backend_kind {
	VRAM_GPU_BACKEND_AUTO = 0, /* nvml when the driver loads and shows a GPU, else sim */
	VRAM_GPU_BACKEND_NVML,
	VRAM_GPU_BACKEND_SIM,
};

/* How CUDA_VISIBLE_DEVICES names a workload's GPUs. */
enum vram_visible_devices {
	VRAM_VISIBLE_INDEX = 0, /* CUDA indices under CUDA_DEVICE_ORDER=PCI_BUS_ID (default):
				 * every vLLM release accepts them */
	VRAM_VISIBLE_UUID,      /* GPU UUIDs */
};

enum vram_placement {
	VRAM_PLACEMENT_PACK = 0,  /* fill used GPUs first; keep whole GPUs free */
	VRAM_PLACEMENT_SPREAD,    /* replicas/workloads on distinct GPUs where possible */
	VRAM_PLACEMENT_MOST_FREE, /* the GPUs with the most free memory */
};

enum vram_fallback {
	VRAM_FALLBACK_NONE = 0,  /* refuse when it doesn't fit */
	VRAM_FALLBACK_SHARE,     /* fewer GPUs than asked (GPUs shared by the instances) */
	VRAM_FALLBACK_CPU,       /* run without GPUs (CUDA_VISIBLE_DEVICES="") */
	VRAM_FALLBACK_EXCLUSIVE, /* share: mps only: run without MPS, one per GPU */
};

enum vram_start_mode {
	VRAM_START_LAZY = 0, /* on the first request or an explicit start */
	VRAM_START_EAGER,    /* when the daemon starts */
};

enum vram_health_kind {
	VRAM_HEALTH_HTTP = 0, /* GET health.path on the port, 2xx = healthy */
	VRAM_HEALTH_TCP,      /* a TCP connect to the port succeeds */
	VRAM_HEALTH_NONE,     /* healthy as soon as it is spawned */
	VRAM_HEALTH_MODEL,    /* a model server's own routes: GET /health 2xx, or, when that is
			       * no 2xx and no 503 (loading), GET /v1/models 2xx; the default
			       * of a workload with models: and no health check chosen */
};

enum vram_engine_kind {
	VRAM_ENGINE_AUTO = 0,        /* hook, then checkpoint, then restart */
	VRAM_ENGINE_HOOK,
	VRAM_ENGINE_CHECKPOINT,
	VRAM_ENGINE_RESTART,
	VRAM_ENGINE_HOOK_CHECKPOINT, /* hook moves the data, checkpoint frees the rest */
	VRAM_ENGINE_SIM,             /* simulated GPUs only */
};

enum vram_restart_policy {
	VRAM_RESTART_ON_FAILURE = 0, /* restart after a crash (non-zero exit or signal) */
	VRAM_RESTART_ALWAYS,         /* restart after any exit not asked for */
	VRAM_RESTART_NEVER,
};

enum vram_share_kind {
	VRAM_SHARE_NONE = 0,
	VRAM_SHARE_MPS,
};

enum vram_gpus_kind {
	VRAM_GPUS_COUNT = 0, /* `gpus: N`: N GPUs chosen by the planner (0 = CPU only) */
	VRAM_GPUS_LIST,      /* `gpus: [0, 2]`: exactly these GPU indices */
	VRAM_GPUS_ANY,       /* `gpus: any`: one GPU, whichever fits */
};

struct vram_gpu_request {
	enum vram_gpus_kind kind;
	unsigned count;  /* GPUs per instance (for LIST: n_pins; for ANY: 1) */
	unsigned *pins;  /* owned; GPU indices, for LIST */
	size_t n_pins;
};

struct vram_idle {
	uint64_t offload_after_ms; /* ms idle before offload; VRAM_DURATION_NEVER = off */
	uint64_t release_after_ms; /* ms idle before release (stop); VRAM_DURATION_NEVER = off */
	uint64_t park_after_ms;    /* ms idle before an offloaded one is parked (disk); VRAM_DURATION_NEVER = off */
};

/* Whose listener on a workload's port counts (health.port_owner). */
enum vram_port_owner {
	VRAM_PORT_OWNER_WORKLOAD = 0, /* a process of the workload's instance (the default) */
	VRAM_PORT_OWNER_ANY,          /* anyone: not checked (a proxy such as docker-proxy holds it) */
};

#define VRAM_HEALTH_FAILURES_MAX 1000 /* health.failures */

struct vram_health {
	enum vram_health_kind kind;
	bool kind_given;        /* the kind was written (path, tcp, none), here or in defaults: */
	char *path;             /* owned; HTTP path beginning with '/', for HTTP */
	uint64_t interval_ms;   /* ms between liveness checks of a ready workload, VRAM_DURATION_NEVER
				   = none; while starting, probes run every min(interval, 500 ms) */
	uint64_t timeout_ms;    /* ms one probe may take */
	uint64_t start_timeout_ms; /* ms from spawn to healthy before the start fails */
	unsigned failures;      /* consecutive failed liveness checks before it is declared dead, >= 1 */
	enum vram_port_owner port_owner;
};

/* Which program runs a workload's container (container.runtime). */
enum vram_container_runtime {
	VRAM_CONTAINER_AUTO = 0, /* podman if it is on PATH, else docker */
	VRAM_CONTAINER_PODMAN,
	VRAM_CONTAINER_DOCKER,
};

#define VRAM_CONTAINER_IMAGE_MAX 255  /* bytes of container.image */
#define VRAM_CONTAINER_VOLUMES_MAX 64 /* entries of container.volumes */
#define VRAM_CONTAINER_VOLUME_MAX 1024 /* bytes of one volume */

/*
 * A workload that is a container image rather than a command (container:).
 * image == NULL: the workload has cmd instead.
 */
struct vram_container_config {
	char *image;             /* owned; "name[:tag]" as the runtime takes it; never begins with '-' */
	char **args;             /* owned, NULL-terminated; after the image; ${VAR} left unexpanded */
	size_t n_args;
	enum vram_container_runtime runtime;
	char **volumes;          /* owned, NULL-terminated; "SOURCE:/path[:options]" as -v takes them */
	size_t n_volumes;
	char **env;              /* owned, NULL-terminated; "KEY=VALUE", set inside the container */
	size_t n_env;
};

struct vram_workload_config {
	char *name;              /* owned; the key under `workloads:` */
	struct vram_src_pos pos; /* of the key */

	char **cmd;              /* owned; argv, NULL-terminated; ${VAR} left unexpanded;
				    NULL for a container */
	size_t n_cmd;
	struct vram_container_config container; /* container.image set: the workload is a container */
	char **env;              /* owned; "KEY=VALUE" strings, NULL-terminated */
	size_t n_env;
	char *cwd;               /* owned; NULL = the daemon's working directory */

	struct vram_gpu_request gpus;
	struct vram_mem memory;  /* per GPU; bytes == 0 && !is_fraction means "not declared" */
	unsigned replicas;       /* >= 1 */
	char **avoid;            /* owned; names of workloads not to share a GPU with, NULL-terminated */
	size_t n_avoid;
	enum vram_placement placement;
	enum vram_fallback fallback;
	enum vram_start_mode start;
	struct vram_health health;
	unsigned port;           /* 0 = auto (allocated by the daemon) */
	struct vram_idle idle;
	int priority;            /* higher wins; idle lower-priority workloads are evicted first */
	enum vram_engine_kind offload;
	enum vram_restart_policy restart;
	uint64_t restart_backoff_max_ms; /* ms; backoff doubles from 1 s up to this */
	unsigned restart_limit;  /* failed starts within restart_window that stop the retries;
				    0 = no limit; <= VRAM_CONFIG_RESTART_LIMIT_MAX */
	uint64_t restart_window_ms; /* ms of trying (waits between retries not counted) */
	uint64_t stop_grace_ms;  /* ms between SIGTERM and SIGKILL */
	char **models;           /* owned; OpenAI "model" names routed here, NULL-terminated */
	char **model_upstreams;  /* owned, NULL-terminated, n_models entries: the name the
				  * model server knows models[i] by (`{name: alias, upstream:
				  * real}`), models[i]'s own text when it is no alias */
	size_t n_models;
	enum vram_share_kind share;
	unsigned compute_percent; /* MPS active thread percentage; 0 = not set */
	unsigned max_concurrency; /* gateway in-flight limit; 0 = unlimited */
	unsigned queue_max;       /* gateway requests waiting for start/restore */
	uint64_t queue_timeout_ms; /* ms a request waits for start/restore */
	uint64_t first_byte_timeout_ms; /* ms from a request sent upstream to its first response byte */
	uint64_t stream_timeout_ms;     /* ms a response, once begun, may stay silent */
};

struct vram_sim_gpu_config {
	char *name;      /* owned; e.g. "Simulated GPU" */
	uint64_t memory; /* bytes */
};

/* struct vram_config has the host: section (another branch's code tests for it). */
#define VRAM_CONFIG_HAS_HOST 1
/* host.reserve when not given: resolved against MemTotal by vram_host_reserve(). */
#define VRAM_CONFIG_HOST_RESERVE_DEFAULT UINT64_MAX
/*
 * Bytes of host.park_dir: the hook is handed a park file's path of at most
 * 255 bytes, and a file name adds the workload's name (63) and its pid.
 */
#define VRAM_CONFIG_PARK_DIR_MAX 160

struct vram_config {
	char *path; /* owned; the file it was loaded from, or the name given to parse */

	struct {
		char *listen;    /* owned; "HOST:PORT"; default "127.0.0.1:8600" */
		char *socket;    /* owned; Unix socket path for vramctl; default <state_dir>/vramd.sock */
		char *state_dir; /* owned; logs, sockets, MPS dirs; default /run/vramd as root, else $XDG_RUNTIME_DIR/vramd or /tmp/vramd-$UID */
		char *log;       /* owned; daemon log file; NULL = stderr */
		char *log_level; /* owned; error|warn|info|debug; default info */
		char *token;     /* owned; the bearer tokens accepted, one a line (daemon.token,
				  * daemon.tokens and daemon.token_file joined); required when
				  * listen is not loopback */
		char **tokens;   /* owned, NULL-terminated; daemon.tokens as written (joined into token) */
		size_t n_tokens;
		char *token_file; /* owned; daemon.token_file: tokens, one a line (joined into token) */
		uint64_t workload_log_max_bytes; /* bytes per workload log before rotation */
		unsigned workload_log_keep;      /* rotated files kept */
		char *access_log;                /* owned; daemon.access_log.path: the gateway's
						  * access log; NULL = off */
		uint64_t access_log_max_bytes;   /* bytes per access log file before rotation */
		unsigned access_log_keep;        /* rotated access log files kept */
		unsigned port_range_start;       /* first port for `port: auto` */
		uint64_t upgrade_drain_ms;       /* ms a restart in place waits for the requests in
						  * flight before it executes the new binary */
		char *hook_library; /* owned; libvram.so; NULL = next to vramd (<prefix>/lib/vramd, or the build tree) */
		char **allowed_hosts;  /* owned, NULL-terminated; Host values accepted besides the
					* listen address and loopback names: "name" or "name:port" */
		size_t n_allowed_hosts;
		char **cors_origins;   /* owned, NULL-terminated; browser origins allowed to call the
					* API: "scheme://host[:port]", lower case, no path */
		size_t n_cors_origins;
		bool open_healthz;     /* GET /healthz answers without a token (liveness only);
					* default true */
		char *run_as;          /* owned; the user (name or uid, as written) ad-hoc workloads
					* asked for over TCP run as; NULL = such requests are refused */
		unsigned socket_mode;  /* permission bits of the control socket: 0600 (default),
					* 0660 or 0666 */
		char *socket_group;    /* owned; the control socket's group (name or gid, as
					* written); NULL = vramd's own group */
		bool has_socket_group; /* socket_group is set and was resolved: */
		gid_t socket_gid;      /*   its gid */
		bool has_run_as;       /* run_as is set and was resolved: */
		uid_t run_as_uid;      /*   its uid */
		gid_t run_as_gid;      /*   its primary group */
	} daemon;

	struct {
		enum vram_gpu_backend_kind backend;
		uint64_t reserve; /* bytes kept free on every GPU */
		enum vram_visible_devices visible_devices;
		struct vram_sim_gpu_config *sim; /* owned array */
		size_t n_sim;
	} gpus;

	/*
	 * The host: section: how much host memory the parked and kept copies
	 * of GPU memory may take (core/hostplan.h turns it into a budget).
	 */
	struct {
		uint64_t reserve; /* bytes of host memory they never eat into;
				     VRAM_CONFIG_HOST_RESERVE_DEFAULT = 10 % of MemTotal, at least 4 GiB */
		uint64_t limit;   /* bytes they may take in total; 0 = no limit */
		char *park_dir;   /* owned; absolute; NULL = <state_dir>/park */
		bool premake_buffers; /* a ready hooked workload makes the pinned buffers of its
					 first offload ahead, where the budget has room (default on) */
	} host;

	struct vram_workload_config *workloads; /* owned array, in file order */
	size_t n_workloads;
};

/* Command-line overrides applied after the file is read (NULL = keep). */
struct vram_config_overrides {
	const char *listen;   /* --listen HOST:PORT */
	const char *sim_gpus; /* --gpus 2x80GiB: forces the sim backend with these GPUs */
	const char *state_dir;
};

/*
 * Loads and validates a file. On success *ret_config is set (caller frees
 * with vram_config_free) and returns 0. On failure returns -errno (-EINVAL
 * for any content error) and, if ret_error is not NULL, sets *ret_error to a
 * message (caller frees) such as
 *   "demo.yaml:12:5: workloads.llm.memory: expected a size like 24GiB or a fraction like 0.8, got \"lots\""
 * One message may hold several errors, one per line.
 */
int vram_config_load(const char *path, const struct vram_config_overrides *ov,
		     struct vram_config **ret_config, char **ret_error);

/* The same from a string; name is used in error messages in place of a path. */
int vram_config_parse(const char *text, size_t len, const char *name,
		      const struct vram_config_overrides *ov,
		      struct vram_config **ret_config, char **ret_error);

/* Accepts NULL and half-built configs. */
void vram_config_free(struct vram_config *config);

/* Whether s is a valid workload name: 1..VRAM_CONFIG_NAME_MAX of [A-Za-z0-9._-]. */
bool vram_config_name_ok(const char *s);

/* Borrowed, valid while config lives; NULL if there is no such workload. */
const struct vram_workload_config *vram_config_find(const struct vram_config *config,
						    const char *name);

/*
 * What a reload must do when a key's value changes. Each key's row in the
 * loader's tables (config.c) declares its class next to how it is read, and
 * config/diff.c walks the rows, so that no key can be added without the
 * reload knowing it.
 */
enum vram_reload {
	VRAM_RELOAD_UNSET = 0, /* not declared: a defect (test-diff checks every key) */
	VRAM_RELOAD_LIVE,      /* a reload applies it as it is (timers, limits, routing, policy) */
	VRAM_RELOAD_PROCESS,   /* a workload's: needs a new process (command, environment, GPUs) */
	VRAM_RELOAD_DAEMON,    /* shapes vramd itself: a reload refuses to change it */
};

#define VRAM_CONFIG_KEY_NAME_MAX 64 /* bytes of a key's path, NUL included */

/* A key as a reload sees it: one row of the loader's tables. */
struct vram_config_key {
	char name[VRAM_CONFIG_KEY_NAME_MAX];     /* its path: "cmd", "idle.offload_after",
						    "daemon.cors.origins" */
	char reported[VRAM_CONFIG_KEY_NAME_MAX]; /* what a reload names when it changes: the path,
						    or its group's name ("health", "queue") */
	enum vram_reload reload;
	/* Whether two workloads agree on it: workload keys; NULL for the others. */
	bool (*same_workload)(const struct vram_workload_config *a,
			      const struct vram_workload_config *b);
	/* Whether two configs agree on it: daemon, gpus and host keys; NULL for the others. */
	bool (*same_config)(const struct vram_config *a, const struct vram_config *b);
};

/*
 * The i-th (from 0) key of a workload, a mapping's keys each on their own
 * ("health.interval"), in the order of the table, into *ret. Returns false
 * past the last.
 */
bool vram_config_workload_key(size_t i, struct vram_config_key *ret);
/*
 * The same for the keys of the daemon:, gpus: and host: sections
 * ("daemon.listen", "gpus.sim", "host.reserve").
 */
bool vram_config_daemon_key(size_t i, struct vram_config_key *ret);

/* Names for enums, as written in the YAML. */
const char *vram_placement_name(enum vram_placement p);
const char *vram_fallback_name(enum vram_fallback f);
const char *vram_engine_name(enum vram_engine_kind e);
const char *vram_restart_name(enum vram_restart_policy r);
const char *vram_gpu_backend_name(enum vram_gpu_backend_kind b);
const char *vram_start_mode_name(enum vram_start_mode s);
const char *vram_share_name(enum vram_share_kind s);
const char *vram_container_runtime_name(enum vram_container_runtime r);
const char *vram_health_kind_name(enum vram_health_kind h); /* "http", "tcp", "none", "model" */
const char *vram_port_owner_name(enum vram_port_owner o); /* "workload", "any" */

#endif
