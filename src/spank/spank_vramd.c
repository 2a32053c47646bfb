/* SPDX-License-Identifier: MIT */
/*
 * spank_vramd.so: a SPANK plugin that puts a Slurm step's tasks under
 * vramd's hook and registers the step with the node's vramd.
 *
 * Options (srun/sbatch/salloc, or defaults as plugin arguments in
 * plugstack.conf): --vram-memory=SIZE|FRACTION (memory=), the cap per GPU;
 * --vram-offload-after=DURATION (offload_after=), the idle timer;
 * --vram-priority=N (priority=). Other plugin arguments: socket= (vramd's
 * control socket, default /run/vramd/vramd.sock; %n is the node's name),
 * hook= (libvram.so),
 * shard_size= (the memory one gres/shard stands for: a job's shards on the
 * node times this is its cap unless --vram-memory is given).
 *
 * A step that asks for none of these (no shards, no option, no default) is
 * left exactly as it is. For the others, in each task before exec
 * (slurm_spank_task_init, as the user): libvram.so is put first in
 * LD_PRELOAD, VRAM_MEMORY_LIMIT, VRAM_WORKLOAD=slurm-JOBID.STEP and
 * VRAM_HOOK_SOCKET (<socket>.hook) are set. In slurmstepd as root, after
 * the tasks are forked and before any of them executes
 * (slurm_spank_task_post_fork for local task 0, the leader of the step's
 * process group): POST /api/attach on the control socket. At the step's end
 * (slurm_spank_exit): DELETE /api/workloads/slurm-JOBID.STEP, which lets go
 * of it without a signal.
 *
 * Nothing here fails a step: every error is one line in slurmd's log (and,
 * when vramd cannot be reached, one line on the task's stderr), and the
 * hook still enforces the cap inside the tasks.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "common/units.h"
#include "spank/vramd_client.h"

SPANK_PLUGIN(vramd, 1);

#define DEFAULT_HOOK "/usr/lib/vramd/libvram.so"
#define HOOK_SUFFIX ".hook"
#define ARG_MAX_LEN 256 /* bytes of one option or argument value */

/* Settings: plugin arguments first, options over them. Strings are owned copies. */
static char *opt_memory;        /* --vram-memory or memory= */
static char *opt_offload_after; /* --vram-offload-after or offload_after= */
static char *opt_priority;      /* --vram-priority or priority= */
static char *arg_socket;        /* socket= */
static char *arg_hook;          /* hook= */
static uint64_t shard_bytes;    /* shard_size=, bytes; 0: shards give no cap */
static bool registered;         /* slurmstepd: the step was attached */
static char workload[64];       /* "slurm-JOBID.STEP" */

static int set_str(char **dst, const char *val)
{
	if (!val || strlen(val) > ARG_MAX_LEN)
		return -1;
	char *copy = strdup(val);
	if (!copy)
		return -1;
	free(*dst);
	*dst = copy;
	return 0;
}

static int check_memory(const char *val)
{
	struct vram_mem mem;
	return val && vram_units_parse_mem(val, &mem) == 0 ? 0 : -1;
}

static int check_duration(const char *val)
{
	uint64_t ms;
	return val && vram_units_parse_duration_ms(val, &ms) == 0 ? 0 : -1;
}

static int check_priority(const char *val)
{
	char *end;
	long v = val ? strtol(val, &end, 10) : 0;
	return val && *val && !*end && v >= -1000000 && v <= 1000000 ? 0 : -1;
}

static int cb_memory(int val, const char *optarg, int remote)
{
	if (check_memory(optarg) < 0) {
		slurm_error("vramd: --vram-memory=%s: expected a size like 20GiB or a fraction like 0.5",
			    optarg ? optarg : "");
		return -1;
	}
	return set_str(&opt_memory, optarg);
}

static int cb_offload_after(int val, const char *optarg, int remote)
{
	if (check_duration(optarg) < 0) {
		slurm_error("vramd: --vram-offload-after=%s: expected a duration like 30s or 5m",
			    optarg ? optarg : "");
		return -1;
	}
	return set_str(&opt_offload_after, optarg);
}

static int cb_priority(int val, const char *optarg, int remote)
{
	if (check_priority(optarg) < 0) {
		slurm_error("vramd: --vram-priority=%s: expected an integer", optarg ? optarg : "");
		return -1;
	}
	return set_str(&opt_priority, optarg);
}

static struct spank_option options[] = {
	{ "vram-memory", "SIZE|FRACTION",
	  "GPU memory cap per GPU for each task, enforced by vramd's hook (20GiB, 0.5)", 1, 0,
	  cb_memory },
	{ "vram-offload-after", "DURATION",
	  "move the step's GPU memory to host RAM after it has been idle this long", 1, 0,
	  cb_offload_after },
	{ "vram-priority", "N", "the step's priority in vramd (higher is evicted last)", 1, 0,
	  cb_priority },
	SPANK_OPTIONS_TABLE_END
};

/* One plugin argument KEY=VALUE from plugstack.conf; -1 (logged) when wrong. */
static int parse_arg(const char *arg)
{
	const char *eq = strchr(arg, '=');
	const char *val = eq ? eq + 1 : "";
	size_t klen = eq ? (size_t)(eq - arg) : strlen(arg);
#define KEY(k) (klen == strlen(k) && strncmp(arg, k, klen) == 0)
	int r = -1;
	if (KEY("socket") && val[0] == '/')
		r = set_str(&arg_socket, val);
	else if (KEY("hook") && val[0] == '/')
		r = set_str(&arg_hook, val);
	else if (KEY("shard_size"))
		r = vram_units_parse_bytes(val, &shard_bytes) == 0 && shard_bytes ? 0 : -1;
	else if (KEY("memory") && check_memory(val) == 0)
		r = set_str(&opt_memory, val);
	else if (KEY("offload_after") && check_duration(val) == 0)
		r = set_str(&opt_offload_after, val);
	else if (KEY("priority") && check_priority(val) == 0)
		r = set_str(&opt_priority, val);
#undef KEY
	if (r < 0)
		slurm_error("vramd: plugstack.conf argument \"%s\" ignored: expected socket=/PATH, "
			    "hook=/PATH, shard_size=SIZE, memory=SIZE|FRACTION, "
			    "offload_after=DURATION or priority=N", arg);
	return r;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	for (int i = 0; i < ac; i++)
		(void)parse_arg(av[i]);
	for (struct spank_option *o = options; o->name; o++)
		if (spank_option_register(sp, o) != ESPANK_SUCCESS)
			slurm_error("vramd: failed to register --%s", o->name);
	return 0;
}

/* The step's shards on this node (SLURM_SHARDS_ON_NODE, set by gres/shard), 0 if none. */
static uint64_t step_shards(spank_t sp)
{
	char buf[32];
	if (spank_getenv(sp, "SLURM_SHARDS_ON_NODE", buf, sizeof(buf)) != ESPANK_SUCCESS)
		return 0;
	char *end;
	unsigned long long n = strtoull(buf, &end, 10);
	return *buf && !*end ? n : 0;
}

/*
 * The cap for the step's tasks into buf ("" when none): --vram-memory, else
 * its shards times shard_size. Returns whether the step asked for anything
 * of vramd.
 */
static bool step_settings(spank_t sp, char *buf, size_t size)
{
	buf[0] = '\0';
	uint64_t shards = step_shards(sp);
	if (opt_memory)
		snprintf(buf, size, "%s", opt_memory);
	else if (shards && shard_bytes && shards <= UINT64_MAX / shard_bytes)
		snprintf(buf, size, "%" PRIu64, shards * shard_bytes);
	return buf[0] || opt_offload_after || opt_priority;
}

/* "slurm-JOBID.STEP" of this step into workload; -1 when Slurm does not say. */
static int step_name(spank_t sp)
{
	uint32_t job = 0, step = 0;
	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS)
		return -1;
	if (step == SLURM_BATCH_SCRIPT)
		snprintf(workload, sizeof(workload), "slurm-%" PRIu32 ".batch", job);
	else if (step == SLURM_EXTERN_CONT)
		snprintf(workload, sizeof(workload), "slurm-%" PRIu32 ".extern", job);
	else if (step == SLURM_INTERACTIVE_STEP)
		snprintf(workload, sizeof(workload), "slurm-%" PRIu32 ".interactive", job);
	else
		snprintf(workload, sizeof(workload), "slurm-%" PRIu32 ".%" PRIu32, job, step);
	return 0;
}

static char sock_path[108]; /* socket= with %n replaced; set by resolve_socket */

/*
 * socket= (or the default) with "%n" replaced by the node's name
 * (SLURMD_NODENAME, else the host name): several slurmd on one host (-N)
 * each have their vramd. Returns -1 (logged) when it does not fit.
 */
static int resolve_socket(spank_t sp)
{
	const char *tmpl = arg_socket ? arg_socket : VRAM_SLURM_DEFAULT_SOCKET;
	char node[128] = "";
	if (strstr(tmpl, "%n") && spank_getenv(sp, "SLURMD_NODENAME", node, sizeof(node)) != ESPANK_SUCCESS) {
		/*
		 * slurmstepd sets SLURMD_NODENAME only in each task's own
		 * environment; the step's has SLURM_TOPOLOGY_ADDR, which ends
		 * with this node's name ("n1", "s0.s1.n1").
		 */
		if (spank_getenv(sp, "SLURM_TOPOLOGY_ADDR", node, sizeof(node)) == ESPANK_SUCCESS) {
			const char *dot = strrchr(node, '.');
			if (dot)
				memmove(node, dot + 1, strlen(dot + 1) + 1);
		} else if (gethostname(node, sizeof(node) - 1) < 0) {
			node[0] = '\0';
		}
	}
	if (vram_slurm_socket_path(tmpl, node, sock_path, sizeof(sock_path)) < 0) {
		slurm_error("vramd: socket=%s is too long", tmpl);
		return -1;
	}
	return 0;
}

static const char *socket_path(void)
{
	return sock_path;
}

/*
 * One request on vramd's control socket: the HTTP status with the start of
 * the body in msg, or -errno.
 */
static int vramd_request(const char *method, const char *path, const char *body, char *msg,
			 size_t msg_size)
{
	char *resp = NULL;
	int st = vram_slurm_request(socket_path(), method, path, body, VRAM_SLURM_IO_TIMEOUT_S, &resp);
	snprintf(msg, msg_size, "%.300s", resp ? resp : "");
	free(resp);
	return st;
}

/*
 * The GPUs gres gave the step, as node indices ("0,1" of
 * CUDA_VISIBLE_DEVICES without device cgroups) into a JSON list; "[]" when
 * there are none or they are not indices (UUIDs, MIG).
 */
static void step_gpus_json(spank_t sp, char *out, size_t size)
{
	char buf[256];
	snprintf(out, size, "[]");
	if (spank_getenv(sp, "CUDA_VISIBLE_DEVICES", buf, sizeof(buf)) != ESPANK_SUCCESS)
		return;
	char list[256] = "[";
	size_t len = 1;
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *end;
		long v = strtol(tok, &end, 10);
		if (!*tok || *end || v < 0 || v > 63)
			return;
		int w = snprintf(list + len, sizeof(list) - len, "%s%ld", len > 1 ? "," : "", v);
		if (w < 0 || (size_t)w >= sizeof(list) - len)
			return;
		len += (size_t)w;
	}
	if (len + 2 > sizeof(list))
		return;
	list[len++] = ']';
	list[len] = '\0';
	snprintf(out, size, "%s", list);
}

/* A JSON string member or null: the values were checked by the option parsers (no quotes). */
static void json_str(char *out, size_t size, const char *val)
{
	if (val)
		snprintf(out, size, "\"%s\"", val);
	else
		snprintf(out, size, "null");
}

/* slurmstepd, as root, after fork and before exec: local task 0 attaches the step. */
int slurm_spank_task_post_fork(spank_t sp, int ac, char **av)
{
	int task = -1;
	pid_t pid = 0;
	uid_t uid;
	gid_t gid;
	char cap[64];
	if (!spank_remote(sp) || !step_settings(sp, cap, sizeof(cap)) ||
	    spank_get_item(sp, S_TASK_ID, &task) != ESPANK_SUCCESS || task != 0 ||
	    spank_get_item(sp, S_TASK_PID, &pid) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS ||
	    spank_get_item(sp, S_JOB_GID, &gid) != ESPANK_SUCCESS || step_name(sp) < 0 ||
	    resolve_socket(sp) < 0)
		return 0;
	char gpus[300], mem[80], idle[300], body[1024], msg[400];
	step_gpus_json(sp, gpus, sizeof(gpus));
	json_str(mem, sizeof(mem), cap[0] ? cap : NULL);
	json_str(idle, sizeof(idle), opt_offload_after);
	snprintf(body, sizeof(body),
		 "{\"name\":\"%s\",\"pid\":%d,\"uid\":%lu,\"gid\":%lu,\"memory\":%s,\"gpus\":%s,"
		 "\"offload_after\":%s,\"priority\":%s}",
		 workload, (int)pid, (unsigned long)uid, (unsigned long)gid, mem, gpus, idle,
		 opt_priority ? opt_priority : "null");
	int st = vramd_request("POST", "/api/attach", body, msg, sizeof(msg));
	if (st == 201) {
		registered = true;
		slurm_info("vramd: %s attached (pid %d, cap %s)", workload, (int)pid,
			   cap[0] ? cap : "none");
	} else if (st < 0) {
		slurm_info("vramd: no vramd at %s (%s): %s runs capped by the hook alone",
			   socket_path(), strerror(-st), workload);
	} else {
		slurm_error("vramd: %s not attached (HTTP %d): %s", workload, st, msg);
	}
	return 0;
}

/* In the task, as the user, right before exec. */
int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	char cap[64], buf[4096];
	if (!spank_remote(sp) || !step_settings(sp, cap, sizeof(cap)) || step_name(sp) < 0 ||
	    resolve_socket(sp) < 0)
		return 0;
	const char *hook = arg_hook ? arg_hook : DEFAULT_HOOK;
	if (access(hook, R_OK) < 0) {
		fprintf(stderr, "vramd: %s is not readable (%s): this step runs without a GPU "
			"memory cap\n", hook, strerror(errno));
		return 0;
	}
	char pre[2048] = "";
	spank_err_t e = spank_getenv(sp, "LD_PRELOAD", pre + 1, sizeof(pre) - 1);
	if (e == ESPANK_SUCCESS && pre[1])
		pre[0] = ':';
	else
		pre[1] = '\0';
	int n = snprintf(buf, sizeof(buf), "%s%s", hook, pre);
	if (e == ESPANK_NOSPACE || n < 0 || (size_t)n >= sizeof(buf)) {
		fprintf(stderr, "vramd: LD_PRELOAD is too long to add the hook: this step runs "
			"without a GPU memory cap\n");
		return 0;
	}
	char hook_socket[200];
	snprintf(hook_socket, sizeof(hook_socket), "%s" HOOK_SUFFIX, socket_path());
	if (spank_setenv(sp, "LD_PRELOAD", buf, 1) != ESPANK_SUCCESS ||
	    spank_setenv(sp, "VRAM_WORKLOAD", workload, 1) != ESPANK_SUCCESS ||
	    spank_setenv(sp, "VRAM_HOOK_SOCKET", hook_socket, 1) != ESPANK_SUCCESS ||
	    (cap[0] && spank_setenv(sp, "VRAM_MEMORY_LIMIT", cap, 1) != ESPANK_SUCCESS)) {
		fprintf(stderr, "vramd: the step's environment could not be set: it runs without "
			"the hook\n");
		spank_unsetenv(sp, "LD_PRELOAD");
		if (pre[0])
			spank_setenv(sp, "LD_PRELOAD", pre + 1, 1);
		return 0;
	}
	/* the shared hook socket exists once vramd has attached a step: else say so, once a node */
	int task = -1;
	int fd = spank_get_item(sp, S_TASK_ID, &task) == ESPANK_SUCCESS && task == 0
			 ? vram_slurm_connect(hook_socket, VRAM_SLURM_IO_TIMEOUT_S) : 0;
	if (fd < 0)
		fprintf(stderr, "vramd: no vramd on this node (%s: %s): running capped by the hook "
			"alone (%s)\n", hook_socket, strerror(-fd), cap[0] ? cap : "no cap");
	else if (fd > 0)
		close(fd);
	return 0;
}

/* slurmstepd, as root, once at the step's end: the workload is let go of and removed. */
int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	if (!spank_remote(sp) || !registered)
		return 0;
	char path[128], msg[400];
	snprintf(path, sizeof(path), "/api/workloads/%s", workload);
	int st = vramd_request("DELETE", path, NULL, msg, sizeof(msg));
	if ((st < 200 || st > 299) && st != 404)
		slurm_error("vramd: %s not removed (%d): %s", workload, st, msg);
	registered = false;
	return 0;
}
