/* SPDX-License-Identifier: MIT */
/* vramctl's command line and commands; see ctl.h. */
#include "ctl/ctl.h"
#include "ctl/slurmgres.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/units.h"
#include "common/version.h"
#include "config/config.h"
#include "core/hostplan.h"
#include "core/plan.h"
#include "ctl/client.h"
#include "ctl/hookctl.h"
#include "ctl/mcp.h"
#include "ctl/progress.h"
#include "ctl/stream.h"
#include "ctl/table.h"

#define CTL_MAX_ARGS 16
#define CTL_STATUS_TIMEOUT_MS 10000      /* ms for reads */
#define CTL_ACTION_TIMEOUT_MS (15 * 60000) /* ms an action may take (a slow start) */
/* ms a restart in place may take: the check (10 s at most), the drain (10 s by default), the start */
#define CTL_RESTART_TIMEOUT_MS 60000
#define CTL_RESTART_POLL_US 100000 /* us between two looks at a restart */

struct ctl {
	const char *url;
	const char *gpus;
	bool json;
	bool no_wait;
	bool offload; /* timeout: set offload_after rather than release_after */
	bool park;    /* timeout: set park_after rather than release_after */
	bool force;   /* mps stop: even with workers attached */
	bool follow;  /* logs -f: go on with what is appended */
	long tail;
	long timeout_s; /* 0 = the command's default */
	long pid;       /* offload|restore|status --pid: a hooked process by hand; 0 = none */
	const char *args[CTL_MAX_ARGS];
	size_t n_args;
	const char *name;   /* run --name */
	const char *memory; /* run --memory */
	const char *host_memory; /* plan --host-memory: the host's RAM, as a size */
	char **cmd;         /* run: the words after --; borrowed from argv */
	size_t n_cmd;
};

static void usage(FILE *f)
{
	fputs("Usage: vramctl [--url URL] COMMAND [ARGS]\n"
	      "\n"
	      "Commands:\n"
	      "  status [--json]                      GPUs and workloads at a glance\n"
	      "  top                                  a live view: GPUs, workloads, request rates;\n"
	      "                                       keys start, stop, offload, restore (q quits)\n"
	      "  plan CONFIG --gpus 4x40GiB [--json]  where the config's workloads would go (no daemon)\n"
	      "       [--host-memory 64GiB]           and what they would hold in host RAM, offloaded\n"
	      "  start NAME                           start a workload and wait until it is ready\n"
	      "  stop NAME                            stop it\n"
	      "  offload NAME                         park its GPU memory in host RAM\n"
	      "  restore NAME                         bring it back onto the GPUs\n"
	      "  park NAME                            put its GPU memory on disk and free host RAM\n"
	      "                                       (a ready one is offloaded first)\n"
	      "  offload|restore|status --pid N       a process running with libvram.so, through its\n"
	      "                                       control socket (VRAM_CONTROL), without vramd;\n"
	      "                                       without one, through vramd's hook channel\n"
	      "  release NAME                         stop it and free GPU and host memory\n"
	      "  timeout NAME DURATION [--offload|--park]\n"
	      "                                       idle time before release (or offload, or park\n"
	      "                                       once offloaded): 10m, 1h, never\n"
	      "  logs NAME [-n LINES] [-f]            the end of the workload's log; -f: then follow it\n"
	      "                                       until interrupted or the workload is removed\n"
	      "  run [--name N] [--memory 20GiB] [--gpus N] -- CMD ARGS...\n"
	      "                                       run a command with libvram.so as an ad-hoc\n"
	      "                                       workload; its output here, its exit status\n"
	      "  reload                               read the daemon's config file again and apply it\n"
	      "  daemon restart                       restart vramd in place from the binary on disk\n"
	      "                                       (same pid, workloads and sockets); waits for the\n"
	      "                                       new one to answer\n"
	      "  slurm-gres [--memory 1GiB] [--name NODE] [DEVDIR]\n"
	      "                                       gres.conf/slurm.conf lines for this node's GPUs,\n"
	      "                                       one shard = --memory of GPU memory\n"
	      "  mcp                                  MCP over stdio, bridged to the daemon's /mcp\n"
	      "  mps status|start|stop [--gpus 0,1] [--force]\n"
	      "                                       MPS control daemons: show, start, stop (--force: with workers)\n"
	      "\n"
	      "Options:\n"
	      "  --url URL        the daemon: http://HOST:PORT or a socket path\n"
	      "                   (default $VRAMD_URL, else the daemon's default socket)\n"
	      "  --json           print the daemon's JSON as is\n"
	      "  --no-wait        actions: return once the action is accepted\n"
	      "  --timeout SECS   give up waiting for the daemon after SECS\n"
	      "  --token-file F   the token, from the file F (or $VRAMD_TOKEN_FILE)\n"
	      "  -h, --help       this text\n"
	      "  -V, --version    print the version\n"
	      "\n"
	      "The token for a daemon that asks for one is read from $VRAMD_TOKEN, or\n"
	      "from --token-file (its first token: the file daemon.token_file names).\n"
	      "Exit status: 0 ok, 1 failed, 2 usage.\n",
	      f);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define TOKEN_FILE_MAX 4096 /* bytes read of a token file */

/*
 * The first token of path, into $VRAMD_TOKEN for every
 * request this run makes. Returns 0, or 2 (a usage error: the message said
 * what is wrong with the file).
 */
static int load_token_file(const char *path)
{
	char buf[TOKEN_FILE_MAX + 1];
	FILE *f = fopen(path, "re");
	if (!f)
		return usage_error("--token-file %s: %s", path, strerror(errno));
	size_t n = fread(buf, 1, TOKEN_FILE_MAX, f);
	fclose(f);
	buf[n] = '\0';
	/* as daemon.token_file reads it: one token a line, blank lines and # comments skipped */
	for (char *line = buf, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		line += strspn(line, " \t");
		size_t len = strcspn(line, " \t\r");
		if (len && line[0] != '#') {
			line[len] = '\0';
			setenv("VRAMD_TOKEN", line, 1);
			return 0;
		}
	}
	return usage_error("--token-file %s: expected a token on a line of its own, found none", path);
}
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "vramctl: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\nTry 'vramctl --help'.\n");
	va_end(ap);
	return VRAM_CTL_EXIT_USAGE;
}

/* Parses the whole command line; options may come anywhere. Returns 0 or an exit code. */
static int parse_args(int argc, char **argv, struct ctl *c)
{
	*c = (struct ctl){ .tail = -1 };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = NULL;
		const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
		char opt[32];
		if (eq) {
			size_t n = (size_t)(eq - a);
			if (n >= sizeof(opt))
				return usage_error("unknown option %s", a);
			memcpy(opt, a, n);
			opt[n] = '\0';
			val = eq + 1;
			a = opt;
		}
#define TAKE_VALUE()                                                              \
	do {                                                                          \
		if (!val) {                                                               \
			if (i + 1 >= argc)                                                    \
				return usage_error("%s needs a value", a);                        \
			val = argv[++i];                                                      \
		}                                                                         \
	} while (0)
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return -1;
		} else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			printf("vramctl %s\n", VRAM_VERSION);
			return -1;
		} else if (strcmp(a, "--url") == 0) {
			TAKE_VALUE();
			c->url = val;
		} else if (strcmp(a, "--token-file") == 0) {
			TAKE_VALUE();
			int r = load_token_file(val);
			if (r)
				return r;
		} else if (strcmp(a, "--gpus") == 0) {
			TAKE_VALUE();
			c->gpus = val;
		} else if (strcmp(a, "--json") == 0) {
			c->json = true;
		} else if (strcmp(a, "--no-wait") == 0) {
			c->no_wait = true;
		} else if (strcmp(a, "--offload") == 0) {
			c->offload = true;
		} else if (strcmp(a, "--park") == 0) {
			c->park = true;
		} else if (strcmp(a, "--force") == 0) {
			c->force = true;
		} else if (strcmp(a, "-f") == 0 || strcmp(a, "--follow") == 0) {
			c->follow = true;
		} else if (strcmp(a, "-n") == 0 || strcmp(a, "--tail") == 0 || strcmp(a, "--lines") == 0) {
			TAKE_VALUE();
			char *end;
			errno = 0;
			c->tail = strtol(val, &end, 10);
			if (errno || end == val || *end || c->tail < 0)
				return usage_error("-n: expected a number of lines, got \"%s\"", val);
		} else if (strcmp(a, "--pid") == 0) {
			TAKE_VALUE();
			char *end;
			errno = 0;
			c->pid = strtol(val, &end, 10);
			if (errno || end == val || *end || c->pid <= 0 || c->pid > 4194304)
				return usage_error("--pid: expected a process id, got \"%s\"", val);
		} else if (strcmp(a, "--timeout") == 0) {
			TAKE_VALUE();
			char *end;
			errno = 0;
			c->timeout_s = strtol(val, &end, 10);
			if (errno || end == val || *end || c->timeout_s <= 0 || c->timeout_s > 86400)
				return usage_error("--timeout: expected seconds (1..86400), got \"%s\"", val);
		} else if (strcmp(a, "--name") == 0) {
			TAKE_VALUE();
			c->name = val;
		} else if (strcmp(a, "--memory") == 0) {
			TAKE_VALUE();
			c->memory = val;
		} else if (strcmp(a, "--host-memory") == 0) {
			TAKE_VALUE();
			c->host_memory = val;
		} else if (strcmp(a, "--") == 0) {
			c->cmd = argv + i + 1;
			c->n_cmd = (size_t)(argc - i - 1);
			break;
		} else if (a[0] == '-' && a[1] != '\0') {
			return usage_error("unknown option %s", argv[i]);
		} else {
			if (c->n_args == CTL_MAX_ARGS)
				return usage_error("too many arguments (%s)", a);
			c->args[c->n_args++] = a;
		}
#undef TAKE_VALUE
	}
	return 0;
}

static int connect_url(const struct ctl *c, struct vram_client_url *url)
{
	char err[512], def[VRAM_CLIENT_PATH_MAX];
	const char *where = c->url;
	if (!where || !*where)
		where = getenv("VRAMD_URL");
	if (!where || !*where)
		where = vram_client_default_socket(def, sizeof(def));
	if (vram_client_parse_url(where, url, err, sizeof(err)) < 0) {
		fprintf(stderr, "vramctl: %s\n", err);
		return VRAM_CTL_EXIT_USAGE;
	}
	return 0;
}

/*
 * One request. Returns 0 with *resp filled (any HTTP status), or an exit
 * code after printing why it could not talk to the daemon.
 */
static int call(const struct ctl *c, const char *method, const char *path, const char *body,
		int default_timeout_ms, struct vram_client_response *resp)
{
	struct vram_client_url url;
	int r = connect_url(c, &url);
	if (r)
		return r;
	char err[1024];
	int timeout_ms = c->timeout_s > 0 ? (int)(c->timeout_s * 1000) : default_timeout_ms;
	r = vram_client_request(&url, method, path, body, getenv("VRAMD_TOKEN"), timeout_ms, resp, err,
				sizeof(err));
	if (r < 0) {
		fprintf(stderr, "vramctl: %s\n", err);
		if (url.is_unix && !c->url && !getenv("VRAMD_URL"))
			fprintf(stderr, "vramctl: is vramd running? Point to it with --url or VRAMD_URL.\n");
		return VRAM_CTL_EXIT_FAILED;
	}
	return 0;
}

/* Prints the daemon's error message for a failed reply; returns EXIT_FAILED. */
static int report_error(const char *what, const struct vram_client_response *resp)
{
	json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);
	const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	if (!msg)
		msg = json_string_value(json_object_get(j, "message"));
	if (msg)
		fprintf(stderr, "vramctl: %s: %s\n", what, msg);
	else
		fprintf(stderr, "vramctl: %s: HTTP %d %.*s\n", what, resp->status,
			(int)(resp->body_len > 300 ? 300 : resp->body_len), resp->body);
	json_decref(j);
	return VRAM_CTL_EXIT_FAILED;
}

/* call() that also takes any status but `expect` as the failure of `what` (reported). */
static int call_ok(const struct ctl *c, const char *method, const char *path, const char *body,
		   int timeout_ms, int expect, const char *what, struct vram_client_response *resp)
{
	int r = call(c, method, path, body, timeout_ms, resp);
	if (r)
		return r;
	if (resp->status != expect) {
		r = report_error(what, resp);
		vram_client_response_done(resp);
		return r;
	}
	return 0;
}

static int cmd_status(const struct ctl *c)
{
	if (c->n_args != 1)
		return usage_error("status takes no arguments (got %s)", c->args[1]);
	struct vram_client_response resp;
	int r = call_ok(c, "GET", "/api/status", NULL, CTL_STATUS_TIMEOUT_MS, 200, "status", &resp);
	if (r)
		return r;
	if (c->json) {
		fwrite(resp.body, 1, resp.body_len, stdout);
		if (resp.body_len && resp.body[resp.body_len - 1] != '\n')
			putchar('\n');
		vram_client_response_done(&resp);
		return 0;
	}
	json_error_t jerr;
	json_t *j = json_loadb(resp.body, resp.body_len, 0, &jerr);
	vram_client_response_done(&resp);
	if (!j) {
		fprintf(stderr, "vramctl: status: the daemon sent invalid JSON: %s\n", jerr.text);
		return VRAM_CTL_EXIT_FAILED;
	}
	char *text = vram_table_status(j);
	json_decref(j);
	if (!text) {
		fprintf(stderr, "vramctl: out of memory\n");
		return VRAM_CTL_EXIT_FAILED;
	}
	fputs(text, stdout);
	free(text);
	return 0;
}

char *vram_ctl_action_line(const char *workload, const char *action, double seconds, uint64_t bytes,
			   const char *engine, char *buf, unsigned size)
{
	static const struct {
		const char *action, *done;
	} past[] = { { "start", "started" },     { "stop", "stopped" },
		     { "offload", "offloaded" }, { "restore", "restored" },
		     { "release", "released" },  { "park", "parked" } };
	const char *done = action;
	for (size_t i = 0; i < sizeof(past) / sizeof(past[0]); i++)
		if (strcmp(past[i].action, action) == 0)
			done = past[i].done;
	char b[32];
	int n = snprintf(buf, size, "%s: %s in %.2f s", workload, done, seconds);
	if (n > 0 && (unsigned)n < size && bytes > 0)
		n += snprintf(buf + n, size - (unsigned)n, " (%s)",
			      vram_units_format_bytes(bytes, b, sizeof(b)));
	if (n > 0 && (unsigned)n < size && engine && *engine &&
	    (strcmp(action, "offload") == 0 || strcmp(action, "park") == 0))
		snprintf(buf + n, size - (unsigned)n, " via %s", engine);
	return buf;
}

/* The workload's JSON (caller decrefs), NULL when it cannot be read. */
static json_t *get_workload(const struct ctl *c, const char *name)
{
	char path[256];
	snprintf(path, sizeof(path), "/api/workloads/%s", name);
	struct vram_client_response resp;
	if (call(c, "GET", path, NULL, CTL_STATUS_TIMEOUT_MS, &resp))
		return NULL;
	json_t *j = resp.status == 200 ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
	vram_client_response_done(&resp);
	return j;
}

/*
 * After a failed action: the end of the workload's log, where the reason
 * is (a CUDA out of memory, a traceback), on stderr, indented. At most
 * CTL_LOG_TAIL_LINES lines.
 */
#define CTL_LOG_TAIL_LINES 20
static void print_log_tail(const struct ctl *c, const char *name)
{
	json_t *w = get_workload(c, name);
	const char *tail = json_string_value(json_object_get(w, "log_tail"));
	if (tail && *tail) {
		size_t len = strlen(tail);
		while (len > 0 && tail[len - 1] == '\n')
			len--;
		size_t start = len;
		for (int lines = 0; start > 0; start--)
			if (tail[start - 1] == '\n' && ++lines == CTL_LOG_TAIL_LINES)
				break;
		fprintf(stderr, "%s: the end of its log:\n", name);
		for (const char *p = tail + start; p < tail + len;) {
			const char *nl = memchr(p, '\n', (size_t)(tail + len - p));
			size_t n = nl ? (size_t)(nl - p) : (size_t)(tail + len - p);
			fprintf(stderr, "    %.*s\n", (int)n, p);
			p += n + 1;
		}
	}
	json_decref(w);
}

/* After a start or restore: a fallback placement (fewer GPUs than asked, the CPU) is said. */
static void print_placement_note(const struct ctl *c, const char *name)
{
	json_t *w = get_workload(c, name);
	const char *note = json_string_value(json_object_get(w, "placement_note"));
	if (note && json_is_true(json_object_get(w, "placement_fallback")))
		fprintf(stderr, "%s: placed by its fallback, not as asked: %s\n", name, note);
	json_decref(w);
}

static int cmd_action(const struct ctl *c, const char *action)
{
	if (c->n_args != 2)
		return usage_error("%s needs one workload name", action);
	const char *name = c->args[1];
	if (!vram_config_name_ok(name))
		return usage_error("\"%s\" is not a workload name", name);
	char path[256];
	snprintf(path, sizeof(path), "/api/workloads/%s/%s%s", name, action,
		 c->no_wait ? "?wait=0" : "");
	struct vram_client_response resp;
	int r;
	if (!c->no_wait && vram_progress_wanted()) {
		struct vram_client_url url;
		if ((r = connect_url(c, &url)))
			return r;
		char err[1024];
		int timeout_ms = c->timeout_s > 0 ? (int)(c->timeout_s * 1000) : CTL_ACTION_TIMEOUT_MS;
		if (vram_progress_request(&url, "POST", path, NULL, getenv("VRAMD_TOKEN"), timeout_ms,
					  name, action, &resp, err, sizeof(err)) < 0) {
			fprintf(stderr, "vramctl: %s\n", err);
			return VRAM_CTL_EXIT_FAILED;
		}
	} else if ((r = call(c, "POST", path, NULL, CTL_ACTION_TIMEOUT_MS, &resp))) {
		return r;
	}
	if (resp.status != 200 && resp.status != 202) {
		char what[128];
		snprintf(what, sizeof(what), "%s %s", action, name);
		r = report_error(what, &resp);
		int status = resp.status;
		vram_client_response_done(&resp);
		if (status >= 500) /* it ran and failed: the reason is in its log */
			print_log_tail(c, name);
		return r;
	}
	if (c->json) {
		fwrite(resp.body, 1, resp.body_len, stdout);
		vram_client_response_done(&resp);
		return 0;
	}
	json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
	int status = resp.status;
	vram_client_response_done(&resp);
	const char *state = json_string_value(json_object_get(j, "state"));
	if (status == 202) {
		printf("%s: %s accepted (now %s)\n", name, action, state ? state : "?");
	} else if (json_is_true(json_object_get(j, "already"))) {
		/* nothing was done: no "started in 0.00 s" */
		printf("%s: already %s\n", name, state ? state : "there");
	} else {
		char line[512];
		json_t *bytes = json_object_get(j, "bytes");
		printf("%s\n", vram_ctl_action_line(
				       name, action, json_number_value(json_object_get(j, "seconds")),
				       json_is_integer(bytes) ? (uint64_t)json_integer_value(bytes) : 0,
				       json_string_value(json_object_get(j, "engine")), line,
				       sizeof(line)));
		fflush(stdout);
		if (strcmp(action, "start") == 0 || strcmp(action, "restore") == 0)
			print_placement_note(c, name);
	}
	json_decref(j);
	return 0;
}

/* status --pid N through vramd: the process as its hook last reported it. */
static int pid_status(const struct ctl *c)
{
	struct vram_client_response resp;
	int r = call(c, "GET", "/api/hook/processes", NULL, CTL_STATUS_TIMEOUT_MS, &resp);
	if (r) {
		fprintf(stderr, "vramctl: status --pid %ld: it has no VRAM_CONTROL socket either\n", c->pid);
		return r;
	}
	if (resp.status != 200) {
		r = report_error("status --pid", &resp);
		vram_client_response_done(&resp);
		return r;
	}
	json_t *all = json_loadb(resp.body, resp.body_len, 0, NULL);
	vram_client_response_done(&resp);
	json_t *p = NULL, *it;
	size_t i;
	json_array_foreach(all, i, it)
		if (json_integer_value(json_object_get(it, "pid")) == c->pid)
			p = it;
	r = VRAM_CTL_EXIT_OK;
	if (!p) {
		fprintf(stderr, "vramctl: status --pid %ld: not connected to vramd's hook channel, and it "
			"has no VRAM_CONTROL socket (is it running with libvram.so?)\n", c->pid);
		r = VRAM_CTL_EXIT_FAILED;
	} else if (c->json) {
		json_dumpf(p, stdout, JSON_COMPACT);
		putchar('\n');
	} else {
		json_t *cap = json_object_get(p, "cap_bytes");
		printf("pid=%ld workload=%s state=%s connected=%s external=%s used=%lld resident=%lld "
		       "nonmovable=%lld cap=%lld\n", c->pid,
		       json_string_value(json_object_get(p, "workload")) ?: "",
		       json_string_value(json_object_get(p, "state")) ?: "?",
		       json_is_true(json_object_get(p, "connected")) ? "yes" : "no",
		       json_is_true(json_object_get(p, "external")) ? "yes" : "no",
		       (long long)json_integer_value(json_object_get(p, "used_bytes")),
		       (long long)json_integer_value(json_object_get(p, "resident_bytes")),
		       (long long)json_integer_value(json_object_get(p, "nonmovable_bytes")),
		       json_is_integer(cap) ? (long long)json_integer_value(cap) : 0LL);
	}
	json_decref(all);
	return r;
}

/*
 * offload|restore|status --pid N: through the process's own control socket
 * when it has one (VRAM_CONTROL; works without vramd), else through vramd,
 * which reaches every process connected to its hook channel (one from
 * before a vramd restart included).
 */
static int cmd_pid(const struct ctl *c, const char *op)
{
	char sock[VRAM_CLIENT_PATH_MAX];
	int r = vram_hookctl_socket_path((pid_t)c->pid, sock, sizeof(sock));
	if (r != -ENOENT && r != -EACCES)
		return vram_hookctl_command((pid_t)c->pid, op);
	if (strcmp(op, "status") == 0)
		return pid_status(c);
	char path[96];
	snprintf(path, sizeof(path), "/api/hook/processes/%ld/%s%s", c->pid, op, c->no_wait ? "?wait=0" : "");
	struct vram_client_response resp;
	r = call(c, "POST", path, NULL, CTL_ACTION_TIMEOUT_MS, &resp);
	if (r) {
		fprintf(stderr, "vramctl: %s --pid %ld: it has no VRAM_CONTROL socket either\n", op, c->pid);
		return r;
	}
	char what[64];
	snprintf(what, sizeof(what), "%s --pid %ld", op, c->pid);
	if (resp.status != 200 && resp.status != 202) {
		r = report_error(what, &resp);
		if (resp.status == 404)
			fprintf(stderr, "vramctl: %s: it has no VRAM_CONTROL socket either "
				"(is it running with libvram.so?)\n", what);
		vram_client_response_done(&resp);
		return r;
	}
	if (c->json) {
		fwrite(resp.body, 1, resp.body_len, stdout);
		putchar('\n');
	} else {
		json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
		const char *msg = json_string_value(json_object_get(j, "message"));
		printf("%s\n", resp.status == 202 ? "accepted" : msg ? msg : "done");
		json_decref(j);
	}
	vram_client_response_done(&resp);
	return VRAM_CTL_EXIT_OK;
}

static int cmd_timeout(const struct ctl *c)
{
	if (c->n_args != 3)
		return usage_error("%s", "timeout needs a workload name and a duration (10m, 1h, never)");
	const char *name = c->args[1], *dur = c->args[2];
	if (!vram_config_name_ok(name))
		return usage_error("\"%s\" is not a workload name", name);
	uint64_t ms;
	int r = vram_units_parse_duration_ms(dur, &ms);
	if (r == -ERANGE)
		return usage_error("\"%s\" is out of range: at most " VRAM_DURATION_MAX_TEXT, dur);
	if (r < 0)
		return usage_error("\"%s\" is not a duration (like 90s, 10m, 1h or never)", dur);
	if (c->offload && c->park)
		return usage_error("%s", "timeout takes --offload or --park, not both");
	const char *field = c->offload ? "offload_after" : c->park ? "park_after" : "release_after";
	json_t *body = json_pack("{s:s}", field, dur);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text)
		return VRAM_CTL_EXIT_FAILED;
	char path[256];
	snprintf(path, sizeof(path), "/api/workloads/%s/idle", name);
	struct vram_client_response resp;
	r = call(c, "PUT", path, text, CTL_STATUS_TIMEOUT_MS, &resp);
	free(text);
	if (r)
		return r;
	if (resp.status != 200) {
		char what[128];
		snprintf(what, sizeof(what), "timeout %s", name);
		r = report_error(what, &resp);
	} else if (c->json) {
		fwrite(resp.body, 1, resp.body_len, stdout);
	} else {
		char b[32];
		const char *what = c->offload ? "offload" : c->park ? "park (once offloaded)" : "release";
		if (ms == VRAM_DURATION_NEVER)
			printf("%s: no %s when idle\n", name, c->park ? "park" : what);
		else
			printf("%s: %s after %s idle\n", name, what,
			       vram_units_format_duration_ms(ms, b, sizeof(b)));
	}
	vram_client_response_done(&resp);
	return r;
}

/*
 * logs -f: GET .../logs?follow=1 as a stream, each piece written out as it
 * comes, until the daemon ends it (the workload was removed, vramd drains)
 * or vramctl is interrupted.
 */
static int logs_follow(const struct ctl *c, const char *name, const char *path)
{
	struct vram_client_url url;
	int r = connect_url(c, &url);
	if (r)
		return r;
	char err[1024];
	struct vram_stream *s = NULL;
	struct vram_client_response resp;
	r = vram_stream_open(&url, path, getenv("VRAMD_TOKEN"), CTL_STATUS_TIMEOUT_MS, &s, &resp, err,
			     sizeof(err));
	if (r < 0) {
		fprintf(stderr, "vramctl: %s\n", err);
		return VRAM_CTL_EXIT_FAILED;
	}
	if (!s) {
		char what[128];
		snprintf(what, sizeof(what), "logs %s", name);
		r = report_error(what, &resp);
		vram_client_response_done(&resp);
		return r;
	}
	char buf[16384];
	ssize_t n;
	while ((n = vram_stream_read(s, buf, sizeof(buf), -1, err, sizeof(err))) > 0) {
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n || fflush(stdout) != 0)
			break; /* the reader went away (a pipe into head) */
	}
	vram_stream_close(s);
	if (n < 0) {
		fprintf(stderr, "vramctl: logs %s: %s\n", name, err);
		return VRAM_CTL_EXIT_FAILED;
	}
	return 0;
}

static int cmd_logs(const struct ctl *c)
{
	if (c->n_args != 2)
		return usage_error("%s", "logs needs one workload name");
	const char *name = c->args[1];
	if (!vram_config_name_ok(name))
		return usage_error("\"%s\" is not a workload name", name);
	char path[256];
	int len = snprintf(path, sizeof(path), "/api/workloads/%s/logs", name);
	const char *sep = "?";
	if (c->tail >= 0) {
		len += snprintf(path + len, sizeof(path) - (size_t)len, "%stail=%ld", sep, c->tail);
		sep = "&";
	}
	if (c->follow) {
		snprintf(path + len, sizeof(path) - (size_t)len, "%sfollow=1", sep);
		return logs_follow(c, name, path);
	}
	struct vram_client_response resp;
	int r = call(c, "GET", path, NULL, CTL_STATUS_TIMEOUT_MS, &resp);
	if (r)
		return r;
	if (resp.status != 200) {
		char what[128];
		snprintf(what, sizeof(what), "logs %s", name);
		r = report_error(what, &resp);
	} else {
		fwrite(resp.body, 1, resp.body_len, stdout);
	}
	vram_client_response_done(&resp);
	return r;
}

/*
 * Adds the host part to a plan's text (*text, replaced): a table of what
 * each workload would hold in host RAM when offloaded and a line against
 * the budget, or with --json a "host" object. Returns 0 or -ENOMEM.
 */
static int plan_add_host(const struct ctl *c, const struct vram_config *cfg,
			 const struct vram_plan_table *t, uint64_t host_total, char **text)
{
	struct vram_host_plan *hp = NULL;
	int r = vram_host_plan_config(cfg, t, host_total, &hp);
	if (r < 0)
		return r;
	char *out = NULL;
	if (c->json) {
		json_t *root = json_loads(*text, 0, NULL);
		json_t *host = vram_host_plan_json(hp);
		if (root && host && json_object_set_new(root, "host", host) == 0) {
			host = NULL;
			out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		}
		json_decref(host);
		json_decref(root);
	} else {
		char *part = vram_host_plan_format(hp);
		if (part && asprintf(&out, "%s\n%s", *text, part) < 0)
			out = NULL;
		free(part);
	}
	vram_host_plan_free(hp);
	if (!out)
		return -ENOMEM;
	free(*text);
	*text = out;
	return 0;
}

static int cmd_plan(const struct ctl *c)
{
	if (c->n_args != 2)
		return usage_error("%s", "plan needs a config file: vramctl plan CONFIG --gpus 4x40GiB");
	uint64_t host_total = 0;
	if (c->host_memory && (vram_units_parse_bytes(c->host_memory, &host_total) < 0 || !host_total))
		return usage_error("--host-memory: expected a size like 64GiB, got \"%s\"",
				   c->host_memory);
	const char *path = c->args[1];
	struct vram_config_overrides ov = { .sim_gpus = c->gpus };
	struct vram_config *cfg = NULL;
	char *error = NULL;
	int r = vram_config_load(path, &ov, &cfg, &error);
	if (r < 0) {
		fprintf(stderr, "%s\n", error ? error : strerror(-r));
		free(error);
		return VRAM_CTL_EXIT_FAILED;
	}
	free(error);

	struct vram_plan_gpu gpus[VRAM_PLAN_MAX_GPUS];
	size_t n_gpus = 0;
	if (c->gpus) {
		uint64_t sizes[VRAM_PLAN_MAX_GPUS];
		int n = vram_units_parse_gpu_list(c->gpus, sizes, VRAM_PLAN_MAX_GPUS);
		if (n == -EDOM) {
			char hint[256];
			vram_config_free(cfg);
			return usage_error("--gpus: a GPU size needs a unit: --gpus %s, not \"%s\"",
					   vram_units_gpu_list_hint(c->gpus, hint, sizeof(hint)), c->gpus);
		}
		if (n <= 0) {
			vram_config_free(cfg);
			return usage_error("--gpus: expected a list like 4x40GiB or 1x24GiB,1x80GiB, got \"%s\"",
					   c->gpus);
		}
		for (int i = 0; i < n; i++) {
			gpus[n_gpus] = (struct vram_plan_gpu){ .index = (unsigned)i, .total = sizes[i],
							       .reserve = cfg->gpus.reserve };
			/* Same size, same model: the planner moves only between alike GPUs. */
			char b[32];
			snprintf(gpus[n_gpus].name, sizeof(gpus[n_gpus].name), "%s GPU",
				 vram_units_format_bytes(sizes[i], b, sizeof(b)));
			n_gpus++;
		}
	} else {
		for (size_t i = 0; i < cfg->gpus.n_sim && n_gpus < VRAM_PLAN_MAX_GPUS; i++) {
			gpus[n_gpus] = (struct vram_plan_gpu){ .index = (unsigned)i,
							       .total = cfg->gpus.sim[i].memory,
							       .reserve = cfg->gpus.reserve };
			snprintf(gpus[n_gpus].name, sizeof(gpus[n_gpus].name), "%s",
				 cfg->gpus.sim[i].name ? cfg->gpus.sim[i].name : "GPU");
			n_gpus++;
		}
	}
	if (n_gpus == 0) {
		vram_config_free(cfg);
		return usage_error("%s", "plan needs --gpus (like 4x40GiB) or simulated GPUs in the config");
	}
	struct vram_plan_table *t = NULL;
	r = vram_plan_config(cfg, gpus, n_gpus, &t);
	if (r < 0) {
		fprintf(stderr, "vramctl: plan: %s\n", strerror(-r));
		vram_config_free(cfg);
		return VRAM_CTL_EXIT_FAILED;
	}
	char *text = c->json ? vram_plan_table_json(t) : vram_plan_table_format(t);
	if (text && host_total && plan_add_host(c, cfg, t, host_total, &text) < 0) {
		free(text);
		text = NULL;
	}
	if (text) {
		fputs(text, stdout);
		if (*text && text[strlen(text) - 1] != '\n')
			putchar('\n');
	}
	/* A plan that refuses a workload is a failed plan for scripts. */
	int ret = text ? VRAM_CTL_EXIT_OK : VRAM_CTL_EXIT_FAILED;
	for (size_t i = 0; i < t->n_rows; i++)
		if (t->rows[i].result.outcome == VRAM_PLAN_REFUSED)
			ret = VRAM_CTL_EXIT_FAILED;
	free(text);
	vram_plan_table_free(t);
	vram_config_free(cfg);
	return ret;
}

/* ---- mps ---- */

#define CTL_MPS_WAIT_MS 30000 /* ms to wait for an MPS daemon to start or quit */

/* "0,1" into a JSON array of GPU indices; NULL (with a usage error printed) if malformed. */
static json_t *mps_gpu_list(const char *s, int *ret_exit)
{
	json_t *a = json_array();
	const char *p = s;
	while (a && *p) {
		char *end;
		errno = 0;
		long v = strtol(p, &end, 10);
		if (errno || end == p || v < 0 || v > 63 || (*end && *end != ',')) {
			json_decref(a);
			*ret_exit = usage_error("--gpus: expected GPU indices like 0 or 0,1, got \"%s\"", s);
			return NULL;
		}
		json_array_append_new(a, json_integer(v));
		p = *end ? end + 1 : end;
	}
	if (!a)
		*ret_exit = VRAM_CTL_EXIT_FAILED;
	return a;
}

/* GET /api/mps, parsed; NULL with an exit code. */
static json_t *mps_get(const struct ctl *c, int *ret_exit)
{
	struct vram_client_response resp;
	*ret_exit = call(c, "GET", "/api/mps", NULL, CTL_STATUS_TIMEOUT_MS, &resp);
	if (*ret_exit)
		return NULL;
	if (resp.status != 200) {
		*ret_exit = report_error("mps status", &resp);
		vram_client_response_done(&resp);
		return NULL;
	}
	json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
	vram_client_response_done(&resp);
	if (!j) {
		fprintf(stderr, "vramctl: mps: the daemon sent invalid JSON\n");
		*ret_exit = VRAM_CTL_EXIT_FAILED;
	}
	return j;
}

/* The daemon of exactly these GPUs in an /api/mps reply, or NULL. */
static json_t *mps_find(json_t *st, json_t *gpus)
{
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(st, "daemons"), i, d) {
		if (json_equal(json_object_get(d, "gpus"), gpus))
			return d;
	}
	return NULL;
}

static void mps_gpus_text(json_t *gpus, char *buf, size_t size)
{
	size_t i, len = 0;
	json_t *g;
	buf[0] = '\0';
	json_array_foreach(gpus, i, g) {
		int n = snprintf(buf + len, size - len, "%s%lld", i ? "," : "", (long long)json_integer_value(g));
		if (n < 0 || (size_t)n >= size - len)
			break;
		len += (size_t)n;
	}
}

static void mps_print(json_t *st)
{
	size_t i, k;
	json_t *d, *cl;
	if (json_is_true(json_object_get(st, "available")))
		printf("MPS control: %s\n", json_string_value(json_object_get(st, "control")));
	else
		printf("MPS not available: %s\n", json_string_value(json_object_get(st, "why")));
	if (json_array_size(json_object_get(st, "daemons")) == 0) {
		printf("no MPS daemon running\n");
		return;
	}
	printf("%-8s %-9s %-8s %-8s %s\n", "GPUS", "STATE", "CONTROL", "SERVERS", "CLIENTS");
	json_array_foreach(json_object_get(st, "daemons"), i, d) {
		char gpus[128], servers[128] = "-";
		size_t len = 0;
		json_t *sv;
		mps_gpus_text(json_object_get(d, "gpus"), gpus, sizeof(gpus));
		json_array_foreach(json_object_get(d, "servers"), k, sv) {
			int n = snprintf(servers + len, sizeof(servers) - len, "%s%lld", k ? "," : "",
					 (long long)json_integer_value(json_object_get(sv, "pid")));
			if (n < 0 || (size_t)n >= sizeof(servers) - len)
				break;
			len += (size_t)n;
		}
		json_t *pid = json_object_get(d, "control_pid");
		printf("%-8s %-9s %-8lld %-8s %zu%s\n", gpus, json_string_value(json_object_get(d, "state")),
		       json_is_integer(pid) ? (long long)json_integer_value(pid) : 0LL, servers,
		       json_array_size(json_object_get(d, "clients")),
		       json_is_true(json_object_get(d, "manual")) ? " (started by hand)" : "");
		json_array_foreach(json_object_get(d, "clients"), k, cl) {
			json_t *cpid = json_object_get(cl, "pid"), *pct = json_object_get(cl, "compute_percent");
			const char *lim = json_string_value(json_object_get(cl, "mem_limit"));
			char compute[16] = "-";
			if (json_is_integer(pct))
				snprintf(compute, sizeof(compute), "%lld%%", (long long)json_integer_value(pct));
			printf("  %-20s pid %-8lld memory %-10s compute %s\n",
			       json_string_value(json_object_get(cl, "owner")),
			       json_is_integer(cpid) ? (long long)json_integer_value(cpid) : 0LL, lim ? lim : "-",
			       compute);
		}
		const char *err = json_string_value(json_object_get(d, "error"));
		if (err)
			printf("  error: %s\n%s\n", err, json_string_value(json_object_get(d, "log_tail")));
	}
}

static int cmd_mps(const struct ctl *c)
{
	const char *sub = c->n_args >= 2 ? c->args[1] : NULL;
	int r = 0;
	if (!sub || c->n_args != 2 ||
	    (strcmp(sub, "status") && strcmp(sub, "start") && strcmp(sub, "stop")))
		return usage_error("%s", "mps needs one of status, start, stop");
	if (strcmp(sub, "status") == 0) {
		if (c->json) {
			struct vram_client_response resp;
			r = call(c, "GET", "/api/mps", NULL, CTL_STATUS_TIMEOUT_MS, &resp);
			if (r)
				return r;
			if (resp.status != 200)
				r = report_error("mps status", &resp);
			else
				fwrite(resp.body, 1, resp.body_len, stdout);
			vram_client_response_done(&resp);
			return r;
		}
		json_t *st = mps_get(c, &r);
		if (!st)
			return r;
		mps_print(st);
		json_decref(st);
		return 0;
	}
	bool start = strcmp(sub, "start") == 0;
	json_t *gpus = c->gpus ? mps_gpu_list(c->gpus, &r) : json_array();
	if (!gpus)
		return r ? r : VRAM_CTL_EXIT_FAILED;
	if (start && json_array_size(gpus) == 0)
		json_array_append_new(gpus, json_integer(0));
	json_t *body = json_pack("{s:O}", "gpus", gpus);
	if (!start && c->force)
		json_object_set_new(body, "force", json_true());
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	struct vram_client_response resp;
	r = text ? call(c, "POST", start ? "/api/mps/start" : "/api/mps/stop", text, CTL_STATUS_TIMEOUT_MS, &resp)
		 : VRAM_CTL_EXIT_FAILED;
	free(text);
	if (r) {
		json_decref(gpus);
		return r;
	}
	if (resp.status != 202 && resp.status != 200) {
		r = report_error(start ? "mps start" : "mps stop", &resp);
		vram_client_response_done(&resp);
		json_decref(gpus);
		return r;
	}
	vram_client_response_done(&resp);
	char what[128];
	if (json_array_size(gpus))
		mps_gpus_text(gpus, what, sizeof(what));
	else
		snprintf(what, sizeof(what), "every GPU");
	/* wait until the daemon runs (start) or is gone (stop) */
	for (int waited = 0; !c->no_wait; waited += 100) {
		json_t *st = mps_get(c, &r);
		if (!st)
			break;
		json_t *d = json_array_size(gpus) ? mps_find(st, gpus)
						  : json_array_get(json_object_get(st, "daemons"), 0);
		const char *state = d ? json_string_value(json_object_get(d, "state")) : NULL;
		if (start && state && strcmp(state, "running") == 0) {
			printf("MPS on GPU %s: running (control pid %lld)\n", what,
			       (long long)json_integer_value(json_object_get(d, "control_pid")));
			json_decref(st);
			break;
		}
		if (start && state && (strcmp(state, "failed") == 0 || strcmp(state, "crashed") == 0)) {
			fprintf(stderr, "vramctl: mps start: %s\n%s\n",
				json_string_value(json_object_get(d, "error")),
				json_string_value(json_object_get(d, "log_tail")));
			json_decref(st);
			r = VRAM_CTL_EXIT_FAILED;
			break;
		}
		if (!start && !d) {
			printf("MPS on %s%s: stopped\n", json_array_size(gpus) ? "GPU " : "", what);
			json_decref(st);
			break;
		}
		json_decref(st);
		if (waited >= CTL_MPS_WAIT_MS) {
			fprintf(stderr, "vramctl: mps %s: not done after %d s (now %s)\n", sub,
				CTL_MPS_WAIT_MS / 1000, state ? state : "gone");
			r = VRAM_CTL_EXIT_FAILED;
			break;
		}
		usleep(100000);
	}
	if (c->no_wait)
		printf("MPS on %s: %s asked\n", what, sub);
	json_decref(gpus);
	return r;
}

/* ---- run ---- */

#define CTL_RUN_POLL_US 200000 /* µs between looks at the log and the state */

/* Not passed to an ad-hoc workload: vramctl's own settings and what vramd sets itself. */
static const char *const run_env_denied[] = {
	"VRAMD_URL", "VRAMD_TOKEN", "VRAMD_TOKEN_FILE", "VRAM_HOOK_SOCKET", "VRAM_CONTROL", "VRAM_WORKLOAD",
	"VRAM_REPLICA", "VRAM_MEMORY_LIMIT", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
	"PORT", "GPU_COUNT", NULL,
};

extern char **environ;
static volatile sig_atomic_t run_signal;

static void on_run_signal(int sig)
{
	run_signal = sig;
}

/* The caller's environment less run_env_denied, as a JSON object; NULL on out of memory. */
static json_t *run_env(void)
{
	json_t *env = json_object();
	for (char **e = environ; env && e && *e; e++) {
		const char *eq = strchr(*e, '=');
		if (!eq || eq == *e)
			continue;
		char key[256];
		size_t n = (size_t)(eq - *e);
		if (n >= sizeof(key))
			continue;
		memcpy(key, *e, n);
		key[n] = '\0';
		bool denied = false;
		for (size_t i = 0; run_env_denied[i]; i++)
			denied |= strcmp(key, run_env_denied[i]) == 0;
		if (!denied)
			json_object_set_new(env, key, json_string(eq + 1));
	}
	return env;
}

/*
 * Prints what the log gained since *offset, less vramd's own notes, whole
 * lines only unless flush. partial holds an unfinished line between calls.
 */
static void run_follow(const struct ctl *c, const char *name, long long *offset, char *partial,
		       size_t partial_size, bool flush)
{
	char path[256];
	snprintf(path, sizeof(path), "/api/workloads/%s/logs?offset=%lld", name, *offset);
	struct vram_client_response resp;
	if (call(c, "GET", path, NULL, CTL_STATUS_TIMEOUT_MS, &resp))
		return;
	if (resp.status != 200) {
		vram_client_response_done(&resp);
		return;
	}
	char next[32];
	if (vram_client_response_header(&resp, "X-Log-Next-Offset", next, sizeof(next)))
		*offset = strtoll(next, NULL, 10);
	size_t have = strlen(partial);
	const char *p = resp.body, *end = resp.body + resp.body_len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl) {
			size_t n = (size_t)(end - p);
			if (have + n >= partial_size) {
				fwrite(partial, 1, have, stdout);
				have = 0;
			}
			if (n >= partial_size) {
				fwrite(p, 1, n, stdout);
			} else {
				memcpy(partial + have, p, n);
				have += n;
			}
			break;
		}
		bool note = have == 0 && strncmp(p, "[vramd] ", 8) == 0;
		if (!note) {
			fwrite(partial, 1, have, stdout);
			fwrite(p, 1, (size_t)(nl + 1 - p), stdout);
		}
		have = 0;
		p = nl + 1;
	}
	if (flush && have) {
		fwrite(partial, 1, have, stdout);
		have = 0;
	}
	partial[have] = '\0';
	fflush(stdout);
	vram_client_response_done(&resp);
}

static int cmd_run(const struct ctl *c)
{
	if (c->n_cmd == 0)
		return usage_error("%s", "run needs a command: vramctl run [--memory 20GiB] -- CMD ARGS...");
	if (c->n_args != 1)
		return usage_error("run takes its command after -- (got %s)", c->args[1]);
	if (c->name && !vram_config_name_ok(c->name))
		return usage_error("\"%s\" is not a workload name", c->name);
	struct vram_mem mem;
	if (c->memory && vram_units_parse_mem(c->memory, &mem) < 0)
		return usage_error("--memory: expected a size like 20GiB or a fraction like 0.8, got \"%s\"",
				   c->memory);
	long gpus = -1;
	if (c->gpus) {
		char *end;
		errno = 0;
		gpus = strtol(c->gpus, &end, 10);
		if (errno || end == c->gpus || *end || gpus < 0 || gpus > VRAM_CONFIG_MAX_GPUS)
			return usage_error("--gpus: expected a number of GPUs, got \"%s\"", c->gpus);
	}
	char cwd[4096];
	json_t *cmd = json_array();
	for (size_t i = 0; cmd && i < c->n_cmd; i++)
		json_array_append_new(cmd, json_string(c->cmd[i]));
	json_t *body = json_pack("{s:o,s:o}", "cmd", cmd, "env", run_env());
	if (!body)
		return VRAM_CTL_EXIT_FAILED;
	if (getcwd(cwd, sizeof(cwd)))
		json_object_set_new(body, "cwd", json_string(cwd));
	if (c->name)
		json_object_set_new(body, "name", json_string(c->name));
	if (c->memory)
		json_object_set_new(body, "memory", json_string(c->memory));
	if (gpus >= 0)
		json_object_set_new(body, "gpus", json_integer(gpus));
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (!text)
		return VRAM_CTL_EXIT_FAILED;

	/* signals from here on become a stop of the workload */
	struct sigaction sa = { .sa_handler = on_run_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct vram_client_response resp;
	int r = call_ok(c, "POST", "/api/workloads", text, CTL_ACTION_TIMEOUT_MS, 201, "run", &resp);
	free(text);
	if (r)
		return r;
	json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
	vram_client_response_done(&resp);
	char name[VRAM_CONFIG_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%s", json_string_value(json_object_get(j, "name")) ?: "");
	json_decref(j);
	if (!name[0])
		return VRAM_CTL_EXIT_FAILED;

	long long offset = 0;
	char partial[4096] = "";
	bool stop_sent = false;
	int exit_code = VRAM_CTL_EXIT_FAILED;
	for (;;) {
		if (run_signal && !stop_sent) {
			char path[256];
			snprintf(path, sizeof(path), "/api/workloads/%s/stop?wait=0", name);
			if (call(c, "POST", path, NULL, CTL_STATUS_TIMEOUT_MS, &resp) == 0)
				vram_client_response_done(&resp);
			stop_sent = true;
		}
		run_follow(c, name, &offset, partial, sizeof(partial), false);
		json_t *w = get_workload(c, name);
		if (!w) {
			fprintf(stderr, "vramctl: run %s: the workload is gone\n", name);
			break;
		}
		const char *state = json_string_value(json_object_get(w, "state"));
		json_t *ex = json_object_get(w, "exit");
		bool ended = state && (strcmp(state, "stopped") == 0 || strcmp(state, "failed") == 0) &&
			     json_is_null(json_object_get(w, "pid"));
		if (ended) {
			run_follow(c, name, &offset, partial, sizeof(partial), true);
			json_t *st = json_is_object(ex) ? json_object_get(ex, "status") : NULL;
			if (json_is_integer(st)) {
				exit_code = (int)json_integer_value(st);
			} else if (json_is_object(ex)) {
				/* a process a restarted vramd took back is not its child */
				fprintf(stderr, "vramctl: run %s: it ended; its exit status is unknown "
						"(vramd was restarted while it ran)\n", name);
				exit_code = 1;
			} else {
				const char *why = json_string_value(json_object_get(w, "last_error"));
				fprintf(stderr, "vramctl: run %s: %s\n", name, why ? why : state);
			}
			json_decref(w);
			break;
		}
		json_decref(w);
		usleep(CTL_RUN_POLL_US);
	}
	char path[256];
	snprintf(path, sizeof(path), "/api/workloads/%s", name);
	if (call(c, "DELETE", path, NULL, CTL_STATUS_TIMEOUT_MS, &resp) == 0)
		vram_client_response_done(&resp);
	return exit_code;
}

/* Names of a JSON array of strings, "a, b", into buf. */
static const char *names_of(json_t *a, char *buf, size_t size)
{
	size_t off = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < json_array_size(a) && off + 1 < size; i++) {
		int n = snprintf(buf + off, size - off, "%s%s", i ? ", " : "",
				 json_string_value(json_array_get(a, i)) ?: "?");
		if (n < 0)
			break;
		off += (size_t)n;
	}
	return buf;
}

static int cmd_reload(const struct ctl *c)
{
	if (c->n_args != 1)
		return usage_error("%s", "reload takes no arguments");
	struct vram_client_response resp;
	int r = call_ok(c, "POST", "/api/reload", NULL, CTL_STATUS_TIMEOUT_MS, 200, "reload", &resp);
	if (r)
		return r;
	if (c->json) {
		fwrite(resp.body, 1, resp.body_len, stdout);
		vram_client_response_done(&resp);
		return 0;
	}
	json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
	vram_client_response_done(&resp);
	char names[2048];
	json_t *changed = json_object_get(j, "changed");
	if (json_array_size(json_object_get(j, "added")))
		printf("added: %s\n", names_of(json_object_get(j, "added"), names, sizeof(names)));
	if (json_array_size(json_object_get(j, "removed")))
		printf("removed (stops once its requests end): %s\n",
		       names_of(json_object_get(j, "removed"), names, sizeof(names)));
	for (size_t i = 0; i < json_array_size(changed); i++) {
		json_t *o = json_array_get(changed, i);
		const char *applies = json_string_value(json_object_get(o, "applies"));
		printf("%s: %s changed: %s\n", json_string_value(json_object_get(o, "workload")) ?: "?",
		       json_string_value(json_object_get(o, "keys")) ?: "?",
		       applies && strcmp(applies, "restart") == 0
			       ? "restarts once its requests in flight end"
			       : "applied");
	}
	printf("reloaded: %zu added, %zu removed, %zu changed, %lld unchanged\n",
	       json_array_size(json_object_get(j, "added")),
	       json_array_size(json_object_get(j, "removed")), json_array_size(changed),
	       (long long)json_integer_value(json_object_get(j, "unchanged")));
	json_decref(j);
	return 0;
}

/* ---- daemon restart ---- */

/*
 * GET /api/daemon/restart, quietly: NULL while the daemon cannot be
 * reached or answers nothing usable (it may be between two images).
 */
static json_t *restart_state(const struct vram_client_url *url, int timeout_ms)
{
	struct vram_client_response resp;
	char err[512];
	if (vram_client_request(url, "GET", "/api/daemon/restart", NULL, getenv("VRAMD_TOKEN"),
				timeout_ms, &resp, err, sizeof(err)) < 0)
		return NULL;
	json_t *j = resp.status == 200 ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
	vram_client_response_done(&resp);
	return j;
}

/*
 * vramctl daemon restart: asks for a restart in place, then waits until the
 * new image answers (its count of restarts is one up) and /api/status
 * answers too, or until the old one says why it did not happen.
 */
static int cmd_daemon(const struct ctl *c)
{
	if (c->n_args != 2 || strcmp(c->args[1], "restart") != 0)
		return usage_error("%s", "daemon takes one command: restart");
	uint64_t limit_ms = c->timeout_s > 0 ? (uint64_t)c->timeout_s * 1000 : CTL_RESTART_TIMEOUT_MS;
	uint64_t deadline = vram_now_ms() + limit_ms;
	struct vram_client_url url;
	int r = connect_url(c, &url);
	if (r)
		return r;
	struct vram_client_response resp;
	r = call_ok(c, "POST", "/api/daemon/restart", NULL, (int)limit_ms, 202, "daemon restart", &resp);
	if (r)
		return r;
	json_t *asked = json_loadb(resp.body, resp.body_len, 0, NULL);
	vram_client_response_done(&resp);
	json_int_t before = json_integer_value(json_object_get(asked, "restarts"));
	json_int_t pid = json_integer_value(json_object_get(asked, "pid"));
	char old_version[64];
	snprintf(old_version, sizeof(old_version), "%s",
		 json_string_value(json_object_get(asked, "version")) ?: "?");
	json_decref(asked);
	if (c->no_wait) {
		printf("vramd (pid %lld) restarts in place\n", (long long)pid);
		return 0;
	}
	/* new connections wait in the listeners' backlog while the old image drains */
	json_t *st = NULL;
	for (;;) {
		uint64_t now = vram_now_ms();
		if (now >= deadline)
			break;
		st = restart_state(&url, (int)(deadline - now));
		if (st && json_integer_value(json_object_get(st, "restarts")) > before)
			break;
		if (st && json_is_false(json_object_get(st, "restarting")) &&
		    json_is_true(json_object_get(st, "failed"))) {
			const char *why = json_string_value(json_object_get(st, "last_error"));
			fprintf(stderr, "vramctl: daemon restart: %s; vramd (pid %lld) runs on\n",
				why ? why : "it failed (vramd's log says why)", (long long)pid);
			json_decref(st);
			return VRAM_CTL_EXIT_FAILED;
		}
		json_decref(st);
		st = NULL;
		usleep(CTL_RESTART_POLL_US);
	}
	if (!st) {
		fprintf(stderr, "vramctl: daemon restart: no answer from the restarted vramd within %llu s\n",
			(unsigned long long)(limit_ms / 1000));
		return VRAM_CTL_EXIT_FAILED;
	}
	uint64_t now = vram_now_ms();
	r = call_ok(c, "GET", "/api/status", NULL, now < deadline ? (int)(deadline - now) : 1000, 200,
		    "daemon restart: status", &resp);
	if (r) {
		json_decref(st);
		return r;
	}
	vram_client_response_done(&resp);
	if (c->json) {
		char *text = json_dumps(st, JSON_COMPACT);
		if (text)
			puts(text);
		free(text);
	} else {
		printf("vramd restarted in place: pid %lld, version %s (was %s), restart %lld\n",
		       (long long)json_integer_value(json_object_get(st, "pid")),
		       json_string_value(json_object_get(st, "version")) ?: "?", old_version,
		       (long long)json_integer_value(json_object_get(st, "restarts")));
	}
	json_decref(st);
	return 0;
}

static vram_ctl_top_fn top_fn; /* the binary's `top`, NULL where there is none (tests) */

void vram_ctl_set_top(vram_ctl_top_fn top)
{
	top_fn = top;
}

static int cmd_top(const struct ctl *c)
{
	if (c->n_args != 1)
		return usage_error("%s", "top takes no arguments");
	if (!top_fn) {
		fprintf(stderr, "vramctl: top is not part of this build\n");
		return VRAM_CTL_EXIT_FAILED;
	}
	struct vram_client_url url;
	int r = connect_url(c, &url);
	if (r)
		return r;
	return top_fn(&url, getenv("VRAMD_TOKEN"));
}

/* slurm-gres [--memory SHARD_SIZE] [--name NODENAME] [DEVICE_DIR]: slurmgres.h */
static int cmd_slurm_gres(const struct ctl *c)
{
	if (c->n_args > 2)
		return usage_error("slurm-gres takes at most a device directory (got %s)", c->args[2]);
	uint64_t shard = VRAM_SLURM_GRES_DEFAULT_SHARD;
	if (c->memory && (vram_units_parse_bytes(c->memory, &shard) < 0 || shard == 0))
		return usage_error("--memory: expected the size of one shard like 1GiB, got \"%s\"",
				   c->memory);
	char host[256] = "";
	if (!c->name && gethostname(host, sizeof(host) - 1) == 0)
		host[strcspn(host, ".")] = '\0';
	struct vram_client_response resp;
	int r = call_ok(c, "GET", "/api/status", NULL, CTL_STATUS_TIMEOUT_MS, 200, "status", &resp);
	if (r)
		return r;
	json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
	vram_client_response_done(&resp);
	char err[256];
	char *text = j ? vram_slurm_gres_lines(j, shard, c->name ? c->name : host,
					       c->n_args == 2 ? c->args[1] : "/dev", err, sizeof(err))
		       : NULL;
	json_decref(j);
	if (!text) {
		fprintf(stderr, "vramctl: slurm-gres: %s\n", j ? err : "the daemon sent invalid JSON");
		return VRAM_CTL_EXIT_FAILED;
	}
	fputs(text, stdout);
	free(text);
	return 0;
}

int vram_ctl_main(int argc, char **argv)
{
	struct ctl c;
	int r = parse_args(argc, argv, &c);
	if (r < 0)
		return VRAM_CTL_EXIT_OK; /* --help, --version */
	if (r)
		return r;
	const char *token_file = getenv("VRAMD_TOKEN_FILE");
	if (token_file && token_file[0] && !getenv("VRAMD_TOKEN") && (r = load_token_file(token_file)) != 0)
		return r;
	if (c.n_args == 0) {
		usage(stderr);
		return VRAM_CTL_EXIT_USAGE;
	}
	const char *cmd = c.args[0];
	if (c.pid && (strcmp(cmd, "offload") == 0 || strcmp(cmd, "restore") == 0 ||
		      strcmp(cmd, "status") == 0)) {
		if (c.n_args != 1)
			return usage_error("%s --pid takes no workload name", cmd);
		return cmd_pid(&c, cmd);
	}
	if (c.pid)
		return usage_error("--pid goes with offload, restore or status (not %s)", cmd);
	if (c.cmd && strcmp(cmd, "run") != 0)
		return usage_error("%s takes no command after --", cmd);
	if (c.host_memory && strcmp(cmd, "plan") != 0)
		return usage_error("--host-memory goes with plan (not %s)", cmd);
	if (strcmp(cmd, "status") == 0)
		return cmd_status(&c);
	if (strcmp(cmd, "plan") == 0)
		return cmd_plan(&c);
	if (strcmp(cmd, "start") == 0 || strcmp(cmd, "stop") == 0 || strcmp(cmd, "offload") == 0 ||
	    strcmp(cmd, "restore") == 0 || strcmp(cmd, "release") == 0 || strcmp(cmd, "park") == 0)
		return cmd_action(&c, cmd);
	if (strcmp(cmd, "timeout") == 0)
		return cmd_timeout(&c);
	if (strcmp(cmd, "mps") == 0)
		return cmd_mps(&c);
	if (strcmp(cmd, "logs") == 0)
		return cmd_logs(&c);
	if (strcmp(cmd, "top") == 0)
		return cmd_top(&c);
	if (strcmp(cmd, "run") == 0)
		return cmd_run(&c);
	if (strcmp(cmd, "reload") == 0)
		return cmd_reload(&c);
	if (strcmp(cmd, "daemon") == 0)
		return cmd_daemon(&c);
	if (strcmp(cmd, "slurm-gres") == 0)
		return cmd_slurm_gres(&c);
	if (strcmp(cmd, "mcp") == 0) {
		struct vram_client_url url;
		if (c.n_args != 1)
			return usage_error("%s", "mcp takes no arguments");
		if ((r = connect_url(&c, &url)))
			return r;
		return vram_ctl_mcp(&url, getenv("VRAMD_TOKEN"),
				    c.timeout_s > 0 ? (int)(c.timeout_s * 1000) : CTL_ACTION_TIMEOUT_MS,
				    stdin, stdout);
	}
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return VRAM_CTL_EXIT_OK;
	}
	return usage_error("unknown command \"%s\"", cmd);
}
