/* SPDX-License-Identifier: MIT */
/*
 * The configuration loader: a positioned YAML tree (yaml.c) is walked once,
 * section by section, into struct vram_config. Each level has a table of
 * its keys; an unknown key is reported with the closest valid one. Values
 * are parsed by small typed helpers that report "expected WHAT, got WHAT" at
 * the value's line:col. Errors are collected (the first VRAM_CONFIG_MAX_ERRORS
 * are kept) so that one run shows everything wrong with a file. `defaults:`
 * is parsed into a workload template that every workload starts from, so
 * runtime code reads final values.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/strutil.h"
#include "config/yaml.h"

#define ERRORS_MAX_BYTES (64 * 1024)
#define PATH_MAX_LEN 512
#define GOT_MAX_LEN 48 /* characters of a bad value quoted back in a message */

/* One collected error; messages are sorted by position before they are
 * handed out, because cross-workload checks run after the walk. */
struct config_error {
	unsigned line, col; /* 1-based; 0 = no position (options), sorted last */
	unsigned seq;       /* order of detection, to keep the sort stable */
	char *text;         /* owned; the whole line */
};

struct ctx {
	const char *name;       /* borrowed; file name for messages */
	struct config_error errs[VRAM_CONFIG_MAX_ERRORS];
	unsigned n_errs;        /* all errors found, kept or not */
	bool oom;
	char path[PATH_MAX_LEN]; /* dotted key path of the value being read */
	size_t path_len;
	struct vram_config *cfg; /* borrowed; being filled */
	struct vram_workload_config defaults; /* template from `defaults:` */
	const struct vram_ynode *listen_at;   /* where daemon.listen was set */
	const struct vram_ynode *socket_at;   /* where daemon.socket was set */
	const struct vram_ynode *state_dir_at; /* where daemon.state_dir was set */
	const struct vram_ynode *socket_mode_at; /* where daemon.socket_mode was set */
	const struct vram_ynode *token_file_at; /* where daemon.token_file was set */
	const struct vram_ynode *tokens_at;     /* where daemon.tokens was set */
};

/* ---- errors and key paths ---- */

static void report(struct ctx *c, unsigned line, unsigned col, const char *path,
		   const char *fmt, va_list ap)
{
	struct vram_buf b;
	unsigned i = c->n_errs++;
	if (i >= VRAM_CONFIG_MAX_ERRORS)
		return;
	vram_buf_init(&b, 4096);
	if (line)
		vram_buf_printf(&b, "%s:%u:%u: ", c->name, line, col);
	else
		vram_buf_printf(&b, "%s: ", c->name);
	if (path && *path)
		vram_buf_printf(&b, "%s: ", path);
	vram_buf_vprintf(&b, fmt, ap);
	c->errs[i] = (struct config_error){ .line = line, .col = col, .seq = i };
	c->errs[i].text = vram_buf_take(&b);
	if (!c->errs[i].text)
		c->oom = true;
}

static void report_at(struct ctx *c, unsigned line, unsigned col, const char *path,
		      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void report_at(struct ctx *c, unsigned line, unsigned col, const char *path,
		      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report(c, line, col, path, fmt, ap);
	va_end(ap);
}

static int error_cmp(const void *a, const void *b)
{
	const struct config_error *x = a, *y = b;
	/* Errors without a position (command-line options) go last. */
	unsigned xl = x->line ? x->line : UINT_MAX, yl = y->line ? y->line : UINT_MAX;
	if (xl != yl)
		return xl < yl ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* An error at node at (NULL: no position), for the current key path. */
static void fail(struct ctx *c, const struct vram_ynode *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(struct ctx *c, const struct vram_ynode *at, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report(c, at ? at->line : 0, at ? at->col : 0, c->path, fmt, ap);
	va_end(ap);
}

/* An error about a command-line override, which has no position. */
static void fail_option(struct ctx *c, const char *option, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail_option(struct ctx *c, const char *option, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report(c, 0, 0, option, fmt, ap);
	va_end(ap);
}

static size_t path_push(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(struct ctx *c, const char *fmt, ...)
{
	size_t old = c->path_len;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(c->path + old, sizeof(c->path) - old, fmt, ap);
	va_end(ap);
	if (n > 0)
		c->path_len += (size_t)n < sizeof(c->path) - old ? (size_t)n : sizeof(c->path) - old - 1;
	return old;
}

static size_t path_push_key(struct ctx *c, const char *key)
{
	return path_push(c, "%s%s", c->path_len ? "." : "", key);
}

static void path_pop(struct ctx *c, size_t old)
{
	c->path_len = old;
	c->path[old] = '\0';
}

/* What a value was, for "got ...": a quoted, shortened scalar or its kind. */
static const char *describe(const struct vram_ynode *v, char *buf, size_t size)
{
	switch (v->type) {
	case VRAM_YNODE_NULL:
		return "nothing";
	case VRAM_YNODE_MAP:
		return "a mapping";
	case VRAM_YNODE_SEQ:
		return "a list";
	case VRAM_YNODE_SCALAR:
		break;
	}
	size_t o = 0;
	buf[o++] = '"';
	const char *s = v->text;
	size_t i;
	for (i = 0; s[i] && i < GOT_MAX_LEN && o + 5 < size; i++)
		buf[o++] = isprint((unsigned char)s[i]) ? s[i] : '?';
	if (s[i] && o + 5 < size) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

#define GOT(v) describe((v), (char[GOT_MAX_LEN + 8]){ 0 }, GOT_MAX_LEN + 8)

static char *xstrdup(struct ctx *c, const char *s)
{
	char *p = strdup(s);
	if (!p)
		c->oom = true;
	return p;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* ---- typed values ---- */

/* The scalar text of v, or NULL after reporting "expected WHAT, got ...". */
static const char *want_scalar(struct ctx *c, const struct vram_ynode *v, const char *expected)
{
	if (v->type == VRAM_YNODE_SCALAR)
		return v->text;
	fail(c, v, "expected %s, got %s", expected, GOT(v));
	return NULL;
}

static bool parse_ll(const char *s, long long *ret)
{
	if (!*s || isspace((unsigned char)*s))
		return false;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end)
		return false;
	*ret = v;
	return true;
}

static bool get_int(struct ctx *c, const struct vram_ynode *v, long long lo, long long hi,
		    long long *ret)
{
	char expected[96];
	snprintf(expected, sizeof(expected), "a whole number from %lld to %lld", lo, hi);
	const char *s = want_scalar(c, v, expected);
	long long n;
	if (!s)
		return false;
	if (!parse_ll(s, &n) || n < lo || n > hi) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return false;
	}
	*ret = n;
	return true;
}

static void get_unsigned(struct ctx *c, const struct vram_ynode *v, unsigned lo, unsigned hi,
			 unsigned *ret)
{
	long long n;
	if (get_int(c, v, lo, hi, &n))
		*ret = (unsigned)n;
}

static bool get_bool(struct ctx *c, const struct vram_ynode *v, bool *ret)
{
	const char *s = want_scalar(c, v, "true or false");
	if (!s)
		return false;
	if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0) {
		*ret = true;
		return true;
	}
	if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0) {
		*ret = false;
		return true;
	}
	fail(c, v, "expected true or false, got %s", GOT(v));
	return false;
}

/* allow_never: "never"/"off" is accepted as VRAM_DURATION_NEVER. */
static void get_duration(struct ctx *c, const struct vram_ynode *v, bool allow_never,
			 uint64_t min_ms, uint64_t *ret_ms)
{
	const char *expected = allow_never ? "a duration like 90s, 10m or 1h, or never"
					   : "a duration like 500ms, 90s, 10m or 1h";
	const char *s = want_scalar(c, v, expected);
	uint64_t ms;
	if (!s)
		return;
	int r = vram_units_parse_duration_ms(s, &ms);
	if (r == -ERANGE) {
		fail(c, v, "out of range, expected at most " VRAM_DURATION_MAX_TEXT ", got %s",
		     GOT(v));
		return;
	}
	if (r < 0 || (ms == VRAM_DURATION_NEVER && !allow_never)) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	if (ms != VRAM_DURATION_NEVER && ms < min_ms) {
		char buf[32];
		fail(c, v, "too short, expected at least %s, got %s",
		     vram_units_format_duration_ms(min_ms, buf, sizeof(buf)), GOT(v));
		return;
	}
	*ret_ms = ms;
}

static void get_bytes(struct ctx *c, const struct vram_ynode *v, bool allow_zero, uint64_t *ret)
{
	static const char expected[] = "a size like 512MiB or 24GiB";
	const char *s = want_scalar(c, v, expected);
	uint64_t bytes;
	if (!s)
		return;
	int r = vram_units_parse_bytes(s, &bytes);
	if (r == -ERANGE) {
		fail(c, v, "out of range, expected a size below 16EiB, got %s", GOT(v));
		return;
	}
	if (r < 0 || (!allow_zero && bytes == 0)) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	*ret = bytes;
}

static void get_mem(struct ctx *c, const struct vram_ynode *v, struct vram_mem *ret)
{
	static const char expected[] = "a size like 24GiB or a fraction like 0.8";
	const char *s = want_scalar(c, v, expected);
	struct vram_mem mem;
	if (!s)
		return;
	if (vram_units_parse_mem(s, &mem) < 0 || (!mem.is_fraction && mem.bytes == 0)) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	*ret = mem;
}

/* Picks one of names (as written in YAML). Returns the index or -1. */
static int get_choice(struct ctx *c, const struct vram_ynode *v, const char *const *names,
		      size_t n)
{
	char expected[160] = "one of ";
	for (size_t i = 0; i < n; i++) {
		strncat(expected, names[i], sizeof(expected) - strlen(expected) - 1);
		if (i + 1 < n)
			strncat(expected, ", ", sizeof(expected) - strlen(expected) - 1);
	}
	const char *s = want_scalar(c, v, expected);
	if (!s)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	const char *near = vram_str_closest(s, names, n);
	if (near)
		fail(c, v, "expected %s, got %s (did you mean '%s'?)", expected, GOT(v), near);
	else
		fail(c, v, "expected %s, got %s", expected, GOT(v));
	return -1;
}

#define CHOICE(c, v, names, ret)                                                   \
	do {                                                                       \
		int i_ = get_choice((c), (v), (names), sizeof(names) / sizeof((names)[0])); \
		if (i_ >= 0)                                                       \
			*(ret) = i_;                                               \
	} while (0)

/* Replaces *slot with a copy of a non-empty string value. */
static void get_string(struct ctx *c, const struct vram_ynode *v, char **slot)
{
	const char *s = want_scalar(c, v, "a non-empty string");
	if (!s)
		return;
	if (!*s) {
		fail(c, v, "expected a non-empty string, got \"\"");
		return;
	}
	char *p = xstrdup(c, s);
	if (!p)
		return;
	free(*slot);
	*slot = p;
}

/*
 * s with each "${env:NAME}" replaced by the variable's value, so that a
 * secret or a path need not be written into the file. NULL after an error
 * (reported at v: the variable is not set, or the reference is not closed)
 * or out of memory; caller frees.
 */
static char *expand_env(struct ctx *c, const struct vram_ynode *v, const char *s)
{
	struct vram_buf b;
	vram_buf_init(&b, VRAM_CONFIG_EXPANDED_MAX);
	const char *p = s;
	for (;;) {
		const char *ref = strstr(p, "${env:");
		if (!ref) {
			if (vram_buf_append(&b, p, strlen(p)) < 0)
				goto out_too_big;
			break;
		}
		if (vram_buf_append(&b, p, (size_t)(ref - p)) < 0)
			goto out_too_big;
		const char *name = ref + 6, *end = strchr(name, '}');
		size_t n = end ? (size_t)(end - name) : 0;
		char var[128];
		if (!end || n == 0 || n >= sizeof(var)) {
			fail(c, v, "expected ${env:NAME} with a variable name of 1 to %zu characters "
			     "and a closing }", sizeof(var) - 1);
			goto out_free;
		}
		memcpy(var, name, n);
		var[n] = '\0';
		const char *val = getenv(var);
		if (!val) {
			fail(c, v, "environment variable %s is not set, expected it set in vramd's "
			     "environment for ${env:%s}", var, var);
			goto out_free;
		}
		if (vram_buf_append(&b, val, strlen(val)) < 0)
			goto out_too_big;
		p = end + 1;
	}
	char *out = vram_buf_take(&b);
	if (!out)
		out = xstrdup(c, "");
	return out;
out_too_big:
	fail(c, v, "expected a value of at most %d bytes once ${env:...} is replaced",
	     VRAM_CONFIG_EXPANDED_MAX);
out_free:
	vram_buf_done(&b);
	return NULL;
}

/* get_string() for daemon keys, which may name environment variables. */
static void get_daemon_string(struct ctx *c, const struct vram_ynode *v, char **slot)
{
	const char *s = want_scalar(c, v, "a non-empty string");
	if (!s)
		return;
	char *x = expand_env(c, v, s);
	if (!x)
		return;
	if (!*x) {
		fail(c, v, "expected a non-empty string, got \"\"%s", strcmp(s, x) ? " after ${env:...}" : "");
		free(x);
		return;
	}
	free(*slot);
	*slot = x;
}

/* Replaces *slot (NULL-terminated, count in *ret_n) with a list of strings. */
/* True when v is a sequence of at most max items; else reports what was expected. */
static bool want_seq(struct ctx *c, const struct vram_ynode *v, size_t max, const char *expected)
{
	if (v->type != VRAM_YNODE_SEQ) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return false;
	}
	if (v->n_items > max) {
		fail(c, v, "%zu entries, expected at most %zu", v->n_items, max);
		return false;
	}
	return true;
}

static void get_string_list(struct ctx *c, const struct vram_ynode *v, size_t max,
			    const char *expected, char ***slot, size_t *ret_n)
{
	if (!want_seq(c, v, max, expected))
		return;
	char **list = calloc(v->n_items + 1, sizeof(*list));
	if (!list) {
		c->oom = true;
		return;
	}
	bool ok = true;
	for (size_t i = 0; i < v->n_items; i++) {
		const struct vram_ynode *it = v->items[i];
		size_t mark = path_push(c, "[%zu]", i);
		const char *s = want_scalar(c, it, "a string");
		if (s && !*s) {
			fail(c, it, "expected a non-empty string, got \"\"");
			s = NULL;
		}
		path_pop(c, mark);
		if (!s) {
			ok = false;
			continue;
		}
		list[i] = xstrdup(c, s);
		if (!list[i]) {
			ok = false;
			break;
		}
	}
	if (!ok) {
		for (size_t i = 0; i < v->n_items; i++)
			free(list[i]);
		free(list);
		return;
	}
	free_strv(*slot);
	*slot = list;
	*ret_n = v->n_items;
}

/* ---- how a reload tells a change: one comparison per key of the tables below ---- */

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* NULL-terminated lists of n entries each. */
static bool strv_eq(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!str_eq(a[i], b[i]))
			return false;
	return true;
}

/* Environments as sets: the order of `env:` entries does not change the process. */
static bool env_eq(const struct vram_workload_config *a, const struct vram_workload_config *b)
{
	if (a->n_env != b->n_env)
		return false;
	for (size_t i = 0; i < a->n_env; i++) {
		bool found = false;
		for (size_t j = 0; !found && j < b->n_env; j++)
			found = strcmp(a->env[i], b->env[j]) == 0;
		if (!found)
			return false;
	}
	return true;
}

static bool gpus_eq(const struct vram_gpu_request *a, const struct vram_gpu_request *b)
{
	if (a->kind != b->kind || a->count != b->count || a->n_pins != b->n_pins)
		return false;
	return a->n_pins == 0 || memcmp(a->pins, b->pins, a->n_pins * sizeof(*a->pins)) == 0;
}

static bool mem_eq(const struct vram_mem *a, const struct vram_mem *b)
{
	return a->is_fraction == b->is_fraction &&
	       (a->is_fraction ? a->fraction == b->fraction : a->bytes == b->bytes);
}

/* same_<key>(a, b): whether two workloads, or two configs, agree on the key. */
#define SAME_WL(key, expr)                                                                   \
	static bool same_##key(const struct vram_workload_config *a,                         \
			       const struct vram_workload_config *b)                         \
	{                                                                                    \
		return (expr);                                                               \
	}
#define SAME_CFG(key, expr)                                                                  \
	static bool same_##key(const struct vram_config *a, const struct vram_config *b)     \
	{                                                                                    \
		return (expr);                                                               \
	}

SAME_WL(cmd, strv_eq(a->cmd, a->n_cmd, b->cmd, b->n_cmd))
SAME_WL(container, str_eq(a->container.image, b->container.image) &&
		   strv_eq(a->container.args, a->container.n_args, b->container.args, b->container.n_args) &&
		   a->container.runtime == b->container.runtime &&
		   strv_eq(a->container.volumes, a->container.n_volumes, b->container.volumes,
			   b->container.n_volumes) &&
		   strv_eq(a->container.env, a->container.n_env, b->container.env, b->container.n_env))
SAME_WL(env, env_eq(a, b))
SAME_WL(cwd, str_eq(a->cwd, b->cwd))
SAME_WL(gpus, gpus_eq(&a->gpus, &b->gpus))
SAME_WL(memory, mem_eq(&a->memory, &b->memory))
SAME_WL(replicas, a->replicas == b->replicas)
SAME_WL(avoid, strv_eq(a->avoid, a->n_avoid, b->avoid, b->n_avoid))
SAME_WL(placement, a->placement == b->placement)
SAME_WL(fallback, a->fallback == b->fallback)
SAME_WL(start, a->start == b->start)
/* path and tcp both set the kind of check */
SAME_WL(health_check, a->health.kind == b->health.kind && str_eq(a->health.path, b->health.path))
SAME_WL(health_interval, a->health.interval_ms == b->health.interval_ms)
SAME_WL(health_timeout, a->health.timeout_ms == b->health.timeout_ms)
SAME_WL(health_start_timeout, a->health.start_timeout_ms == b->health.start_timeout_ms)
SAME_WL(health_failures, a->health.failures == b->health.failures)
SAME_WL(health_port_owner, a->health.port_owner == b->health.port_owner)
SAME_WL(port, a->port == b->port)
SAME_WL(idle_offload_after, a->idle.offload_after_ms == b->idle.offload_after_ms)
SAME_WL(idle_release_after, a->idle.release_after_ms == b->idle.release_after_ms)
SAME_WL(idle_park_after, a->idle.park_after_ms == b->idle.park_after_ms)
SAME_WL(priority, a->priority == b->priority)
SAME_WL(offload, a->offload == b->offload)
SAME_WL(restart_policy, a->restart == b->restart)
SAME_WL(restart_backoff_max, a->restart_backoff_max_ms == b->restart_backoff_max_ms)
SAME_WL(restart_limit, a->restart_limit == b->restart_limit)
SAME_WL(restart_window, a->restart_window_ms == b->restart_window_ms)
SAME_WL(stop_grace, a->stop_grace_ms == b->stop_grace_ms)
SAME_WL(models, strv_eq(a->models, a->n_models, b->models, b->n_models) &&
		       strv_eq(a->model_upstreams, a->n_models, b->model_upstreams, b->n_models))
SAME_WL(share, a->share == b->share)
SAME_WL(compute, a->compute_percent == b->compute_percent)
SAME_WL(max_concurrency, a->max_concurrency == b->max_concurrency)
SAME_WL(queue_max, a->queue_max == b->queue_max)
SAME_WL(queue_timeout, a->queue_timeout_ms == b->queue_timeout_ms)
SAME_WL(first_byte_timeout, a->first_byte_timeout_ms == b->first_byte_timeout_ms)
SAME_WL(stream_timeout, a->stream_timeout_ms == b->stream_timeout_ms)

SAME_CFG(listen, str_eq(a->daemon.listen, b->daemon.listen))
SAME_CFG(socket, str_eq(a->daemon.socket, b->daemon.socket))
SAME_CFG(state_dir, str_eq(a->daemon.state_dir, b->daemon.state_dir))
SAME_CFG(log, str_eq(a->daemon.log, b->daemon.log))
SAME_CFG(log_level, str_eq(a->daemon.log_level, b->daemon.log_level))
SAME_CFG(token, str_eq(a->daemon.token, b->daemon.token))
SAME_CFG(hook_library, str_eq(a->daemon.hook_library, b->daemon.hook_library))
SAME_CFG(workload_log_max, a->daemon.workload_log_max_bytes == b->daemon.workload_log_max_bytes)
SAME_CFG(workload_log_keep, a->daemon.workload_log_keep == b->daemon.workload_log_keep)
SAME_CFG(access_log, str_eq(a->daemon.access_log, b->daemon.access_log))
SAME_CFG(access_log_max, a->daemon.access_log_max_bytes == b->daemon.access_log_max_bytes)
SAME_CFG(access_log_keep, a->daemon.access_log_keep == b->daemon.access_log_keep)
SAME_CFG(port_range_start, a->daemon.port_range_start == b->daemon.port_range_start)
SAME_CFG(upgrade_drain, a->daemon.upgrade_drain_ms == b->daemon.upgrade_drain_ms)
SAME_CFG(allowed_hosts, strv_eq(a->daemon.allowed_hosts, a->daemon.n_allowed_hosts,
				b->daemon.allowed_hosts, b->daemon.n_allowed_hosts))
SAME_CFG(cors_origins, strv_eq(a->daemon.cors_origins, a->daemon.n_cors_origins,
			       b->daemon.cors_origins, b->daemon.n_cors_origins))
SAME_CFG(open_healthz, a->daemon.open_healthz == b->daemon.open_healthz)
SAME_CFG(run_as, str_eq(a->daemon.run_as, b->daemon.run_as))
SAME_CFG(socket_mode, a->daemon.socket_mode == b->daemon.socket_mode)
SAME_CFG(socket_group, str_eq(a->daemon.socket_group, b->daemon.socket_group))
SAME_CFG(backend, a->gpus.backend == b->gpus.backend)
SAME_CFG(reserve, a->gpus.reserve == b->gpus.reserve)
SAME_CFG(visible_devices, a->gpus.visible_devices == b->gpus.visible_devices)
SAME_CFG(host_reserve, a->host.reserve == b->host.reserve)
SAME_CFG(host_limit, a->host.limit == b->host.limit)
SAME_CFG(host_park_dir, str_eq(a->host.park_dir, b->host.park_dir))
SAME_CFG(host_premake, a->host.premake_buffers == b->host.premake_buffers)

static bool same_sim(const struct vram_config *a, const struct vram_config *b)
{
	bool same = a->gpus.n_sim == b->gpus.n_sim;
	for (size_t i = 0; same && i < a->gpus.n_sim; i++)
		same = str_eq(a->gpus.sim[i].name, b->gpus.sim[i].name) &&
		       a->gpus.sim[i].memory == b->gpus.sim[i].memory;
	return same;
}

#undef SAME_WL
#undef SAME_CFG

/* ---- key tables ---- */

typedef void (*key_fn)(struct ctx *c, const struct vram_ynode *v, void *target);

/*
 * One row declares a key completely: how it is read, whether `defaults:`
 * may hold it, and what a reload does when its value changes (its class and
 * how to tell a change), so that a key cannot be added without the reload
 * knowing it (config/diff.c walks these rows; test-diff checks every one).
 */
struct key_def {
	const char *key;
	key_fn fn;        /* NULL: only recorded in at[] */
	bool in_defaults; /* workload keys: may also appear under `defaults:` */
	enum vram_reload reload; /* workload, daemon, gpus and host keys; VRAM_RELOAD_UNSET elsewhere */
	/* Whether two workloads (workload keys) or two configs (daemon, gpus, host) agree on it. */
	bool (*same_wl)(const struct vram_workload_config *a, const struct vram_workload_config *b);
	bool (*same_cfg)(const struct vram_config *a, const struct vram_config *b);
	/*
	 * What a reload names when it changes, when not the key's path: one
	 * name for a group of keys ("health" for each health key, "queue").
	 * A mapping's keys (sub) take their parent's, unless they have their own.
	 */
	const char *reported;
	const struct key_def *sub; /* a mapping's keys, each a key of its own for a reload */
	size_t n_sub;
};

/* The reload part of a row: its class and comparison (same_<name>, above). */
#define WL_PROCESS(name) .reload = VRAM_RELOAD_PROCESS, .same_wl = same_##name
#define WL_LIVE(name) .reload = VRAM_RELOAD_LIVE, .same_wl = same_##name
#define CFG_DAEMON(name) .reload = VRAM_RELOAD_DAEMON, .same_cfg = same_##name
#define CFG_LIVE(name) .reload = VRAM_RELOAD_LIVE, .same_cfg = same_##name

enum walk_mode { WALK_ALL, WALK_DEFAULTS };

/*
 * Walks the mapping map with the key table defs, calling each key's handler
 * with target. at[i] (n_defs entries, may be NULL) receives the value node
 * of defs[i] when present. A NULL node (an empty section) is accepted.
 */
static void walk_map(struct ctx *c, const struct vram_ynode *map, const struct key_def *defs,
		     size_t n_defs, void *target, enum walk_mode mode,
		     const struct vram_ynode **at)
{
	if (map->type == VRAM_YNODE_NULL)
		return;
	if (map->type != VRAM_YNODE_MAP) {
		fail(c, map, "expected a mapping of keys to values, got %s", GOT(map));
		return;
	}
	const char *names[64];
	size_t n_names = 0;
	for (size_t i = 0; i < n_defs && n_names < 64; i++)
		if (mode == WALK_ALL || defs[i].in_defaults)
			names[n_names++] = defs[i].key;

	for (size_t p = 0; p < vram_ynode_pairs(map); p++) {
		const struct vram_ynode *k = vram_ynode_key(map, p);
		const struct vram_ynode *v = vram_ynode_value(map, p);
		size_t mark = path_push_key(c, k->text);
		size_t i;
		for (i = 0; i < n_defs; i++)
			if (strcmp(defs[i].key, k->text) == 0)
				break;
		if (i == n_defs) {
			const char *near = vram_str_closest(k->text, names, n_names);
			if (near) {
				fail(c, k, "unknown key '%s', did you mean '%s'?", k->text, near);
			} else {
				char list[512] = "";
				for (size_t j = 0; j < n_names; j++) {
					strncat(list, names[j], sizeof(list) - strlen(list) - 1);
					if (j + 1 < n_names)
						strncat(list, ", ", sizeof(list) - strlen(list) - 1);
				}
				fail(c, k, "unknown key '%s', expected one of: %s", k->text, list);
			}
		} else if (mode == WALK_DEFAULTS && !defs[i].in_defaults) {
			fail(c, k, "'%s' cannot have a default, expected it under each workload",
			     k->text);
		} else {
			if (at)
				at[i] = v;
			if (defs[i].fn)
				defs[i].fn(c, v, target);
		}
		path_pop(c, mark);
	}
}

#define N_KEYS(defs) (sizeof(defs) / sizeof((defs)[0]))

/* ---- names ---- */

static const char *const placement_names[] = {
	[VRAM_PLACEMENT_PACK] = "pack",
	[VRAM_PLACEMENT_SPREAD] = "spread",
	[VRAM_PLACEMENT_MOST_FREE] = "most-free",
};
static const char *const fallback_names[] = {
	[VRAM_FALLBACK_NONE] = "none",
	[VRAM_FALLBACK_SHARE] = "share",
	[VRAM_FALLBACK_CPU] = "cpu",
	[VRAM_FALLBACK_EXCLUSIVE] = "exclusive",
};
static const char *const start_names[] = {
	[VRAM_START_LAZY] = "lazy",
	[VRAM_START_EAGER] = "eager",
};
static const char *const engine_names[] = {
	[VRAM_ENGINE_AUTO] = "auto",
	[VRAM_ENGINE_HOOK] = "hook",
	[VRAM_ENGINE_CHECKPOINT] = "checkpoint",
	[VRAM_ENGINE_RESTART] = "restart",
	[VRAM_ENGINE_HOOK_CHECKPOINT] = "hook+checkpoint",
	[VRAM_ENGINE_SIM] = "sim",
};
static const char *const restart_names[] = {
	[VRAM_RESTART_ON_FAILURE] = "on-failure",
	[VRAM_RESTART_ALWAYS] = "always",
	[VRAM_RESTART_NEVER] = "never",
};
static const char *const share_names[] = {
	[VRAM_SHARE_NONE] = "none",
	[VRAM_SHARE_MPS] = "mps",
};
static const char *const backend_names[] = {
	[VRAM_GPU_BACKEND_AUTO] = "auto",
	[VRAM_GPU_BACKEND_NVML] = "nvml",
	[VRAM_GPU_BACKEND_SIM] = "sim",
};
static const char *const visible_devices_names[] = {
	[VRAM_VISIBLE_INDEX] = "index",
	[VRAM_VISIBLE_UUID] = "uuid",
};
static const char *const log_level_names[] = { "error", "warn", "info", "debug" };

#define NAME_OF(table, v) \
	((size_t)(v) < sizeof(table) / sizeof((table)[0]) ? (table)[(v)] : "unknown")

const char *vram_placement_name(enum vram_placement p) { return NAME_OF(placement_names, p); }
const char *vram_fallback_name(enum vram_fallback f) { return NAME_OF(fallback_names, f); }
const char *vram_engine_name(enum vram_engine_kind e) { return NAME_OF(engine_names, e); }
const char *vram_restart_name(enum vram_restart_policy r) { return NAME_OF(restart_names, r); }
const char *vram_gpu_backend_name(enum vram_gpu_backend_kind b) { return NAME_OF(backend_names, b); }
const char *vram_start_mode_name(enum vram_start_mode s) { return NAME_OF(start_names, s); }
const char *vram_share_name(enum vram_share_kind s) { return NAME_OF(share_names, s); }

static const char *const container_runtime_names[] = {
	[VRAM_CONTAINER_AUTO] = "auto",
	[VRAM_CONTAINER_PODMAN] = "podman",
	[VRAM_CONTAINER_DOCKER] = "docker",
};

const char *vram_container_runtime_name(enum vram_container_runtime r)
{
	return NAME_OF(container_runtime_names, r);
}

const char *vram_health_kind_name(enum vram_health_kind h)
{
	static const char *const names[] = {
		[VRAM_HEALTH_HTTP] = "http",
		[VRAM_HEALTH_TCP] = "tcp",
		[VRAM_HEALTH_NONE] = "none",
		[VRAM_HEALTH_MODEL] = "model",
	};
	return NAME_OF(names, h);
}

static const char *const port_owner_names[] = {
	[VRAM_PORT_OWNER_WORKLOAD] = "workload",
	[VRAM_PORT_OWNER_ANY] = "any",
};

const char *vram_port_owner_name(enum vram_port_owner o) { return NAME_OF(port_owner_names, o); }

/* ---- workload keys ---- */

#define WL(target) ((struct vram_workload_config *)(target))

static void wl_cmd(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_workload_config *w = WL(t);
	if (v->type == VRAM_YNODE_SCALAR) {
		fail(c, v, "commands are argv lists and never pass through a shell, "
			   "expected a list like [python3, server.py], got %s", GOT(v));
		return;
	}
	if (v->type == VRAM_YNODE_SEQ && v->n_items == 0) {
		fail(c, v, "empty command, expected a list like [python3, server.py]");
		return;
	}
	get_string_list(c, v, VRAM_CONFIG_MAX_ARGS, "an argv list like [python3, server.py]",
			&w->cmd, &w->n_cmd);
}

static bool env_name_ok(const char *s)
{
	if (!*s || isdigit((unsigned char)*s))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

/* Replaces *slot (count in *ret_n) with a mapping of variables as "KEY=VALUE" strings. */
static void get_env_map(struct ctx *c, const struct vram_ynode *v, char ***slot, size_t *ret_n)
{
	if (v->type == VRAM_YNODE_NULL)
		return;
	if (v->type != VRAM_YNODE_MAP) {
		fail(c, v, "expected a mapping like {HF_HOME: /data/hf}, got %s", GOT(v));
		return;
	}
	size_t n = vram_ynode_pairs(v);
	if (n > VRAM_CONFIG_MAX_ARGS) {
		fail(c, v, "%zu variables, expected at most %d", n, VRAM_CONFIG_MAX_ARGS);
		return;
	}
	char **env = calloc(n + 1, sizeof(*env));
	if (!env) {
		c->oom = true;
		return;
	}
	bool ok = true;
	for (size_t i = 0; i < n; i++) {
		const struct vram_ynode *k = vram_ynode_key(v, i);
		const struct vram_ynode *val = vram_ynode_value(v, i);
		size_t mark = path_push_key(c, k->text);
		const char *s = val->type == VRAM_YNODE_NULL ? "" : want_scalar(c, val, "a string");
		if (!env_name_ok(k->text)) {
			fail(c, k, "invalid variable name, expected letters, digits and _, got %s",
			     GOT(k));
			s = NULL;
		}
		path_pop(c, mark);
		if (!s) {
			ok = false;
			continue;
		}
		size_t len = strlen(k->text) + 1 + strlen(s) + 1;
		env[i] = malloc(len);
		if (!env[i]) {
			c->oom = true;
			ok = false;
			break;
		}
		snprintf(env[i], len, "%s=%s", k->text, s);
	}
	if (!ok) {
		for (size_t i = 0; i < n; i++)
			free(env[i]);
		free(env);
		return;
	}
	free_strv(*slot);
	*slot = env;
	*ret_n = n;
}

static void wl_env(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_env_map(c, v, &WL(t)->env, &WL(t)->n_env);
}

static void wl_cwd(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_string(c, v, &WL(t)->cwd);
}

static void wl_gpus(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_workload_config *w = WL(t);
	static const char expected[] =
		"a GPU count like 1, a list of GPU indices like [0, 2], or any";
	long long n;

	if (v->type == VRAM_YNODE_SCALAR && strcmp(v->text, "any") == 0) {
		free(w->gpus.pins);
		w->gpus = (struct vram_gpu_request){ .kind = VRAM_GPUS_ANY, .count = 1 };
		return;
	}
	if (v->type == VRAM_YNODE_SCALAR) {
		if (!parse_ll(v->text, &n) || n < 0 || n > VRAM_CONFIG_MAX_GPUS) {
			fail(c, v, "expected %s (a count from 0 to %d), got %s", expected,
			     VRAM_CONFIG_MAX_GPUS, GOT(v));
			return;
		}
		free(w->gpus.pins);
		w->gpus = (struct vram_gpu_request){ .kind = VRAM_GPUS_COUNT, .count = (unsigned)n };
		return;
	}
	if (v->type != VRAM_YNODE_SEQ) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	if (v->n_items == 0) {
		fail(c, v, "an empty GPU list, expected indices like [0, 2], or gpus: 0 for CPU only");
		return;
	}
	if (v->n_items > VRAM_CONFIG_MAX_GPUS) {
		fail(c, v, "%zu GPUs, expected at most %d", v->n_items, VRAM_CONFIG_MAX_GPUS);
		return;
	}
	unsigned *pins = calloc(v->n_items, sizeof(*pins));
	if (!pins) {
		c->oom = true;
		return;
	}
	bool ok = true;
	for (size_t i = 0; i < v->n_items; i++) {
		const struct vram_ynode *it = v->items[i];
		size_t mark = path_push(c, "[%zu]", i);
		if (it->type != VRAM_YNODE_SCALAR || !parse_ll(it->text, &n) || n < 0 ||
		    n >= VRAM_CONFIG_MAX_GPUS) {
			fail(c, it, "expected a GPU index from 0 to %d, got %s",
			     VRAM_CONFIG_MAX_GPUS - 1, GOT(it));
			ok = false;
		} else {
			pins[i] = (unsigned)n;
			for (size_t j = 0; j < i; j++) {
				if (pins[j] == pins[i]) {
					fail(c, it, "GPU %u is listed twice, expected each GPU once",
					     pins[i]);
					ok = false;
					break;
				}
			}
		}
		path_pop(c, mark);
	}
	if (!ok) {
		free(pins);
		return;
	}
	free(w->gpus.pins);
	w->gpus = (struct vram_gpu_request){
		.kind = VRAM_GPUS_LIST, .count = (unsigned)v->n_items,
		.pins = pins, .n_pins = v->n_items,
	};
}

static void wl_memory(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_mem(c, v, &WL(t)->memory);
}

static void wl_replicas(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_unsigned(c, v, 1, VRAM_CONFIG_MAX_REPLICAS, &WL(t)->replicas);
}

static void wl_avoid(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_workload_config *w = WL(t);
	get_string_list(c, v, VRAM_CONFIG_MAX_WORKLOADS, "a list of workload names like [llm]",
			&w->avoid, &w->n_avoid);
}

static void wl_placement(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, placement_names, &WL(t)->placement);
}

static void wl_fallback(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, fallback_names, &WL(t)->fallback);
}

static void wl_start(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, start_names, &WL(t)->start);
}

#define HEALTH(target) ((struct vram_health *)(target))

static void health_path(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_health *h = HEALTH(t);
	const char *s = want_scalar(c, v, "an HTTP path like /health");
	if (!s)
		return;
	if (s[0] != '/') {
		fail(c, v, "expected an HTTP path like /health, got %s", GOT(v));
		return;
	}
	for (const char *q = s; *q; q++) {
		if ((unsigned char)*q <= ' ' || *q == 0x7f) {
			fail(c, v, "a space or control character at byte %zu, expected an HTTP "
				   "path like /health (percent-encode such characters)",
			     (size_t)(q - s));
			return;
		}
	}
	if (strlen(s) > VRAM_HEALTH_PATH_MAX) {
		fail(c, v, "%zu bytes, expected an HTTP path of at most %d bytes", strlen(s),
		     VRAM_HEALTH_PATH_MAX);
		return;
	}
	char *p = xstrdup(c, s);
	if (!p)
		return;
	free(h->path);
	h->path = p;
	h->kind = VRAM_HEALTH_HTTP;
	h->kind_given = true;
}

static void health_tcp(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_health *h = HEALTH(t);
	bool tcp;
	if (!get_bool(c, v, &tcp) || !tcp)
		return;
	free(h->path);
	h->path = NULL;
	h->kind = VRAM_HEALTH_TCP;
	h->kind_given = true;
}

/* never: no liveness checks once ready (probes while starting still run every 500 ms) */
static void health_interval(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, true, 10, &HEALTH(t)->interval_ms);
}

static void health_timeout(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, false, 10, &HEALTH(t)->timeout_ms);
}

static void health_start_timeout(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, false, 100, &HEALTH(t)->start_timeout_ms);
}

static void health_failures(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_unsigned(c, v, 1, VRAM_HEALTH_FAILURES_MAX, &HEALTH(t)->failures);
}

static void health_port_owner(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, port_owner_names, &HEALTH(t)->port_owner);
}

static const struct key_def health_keys[] = {
	{ "path", health_path, true, WL_LIVE(health_check) },
	{ "tcp", health_tcp, true, WL_LIVE(health_check) },
	{ "interval", health_interval, true, WL_LIVE(health_interval) },
	{ "timeout", health_timeout, true, WL_LIVE(health_timeout) },
	{ "start_timeout", health_start_timeout, true, WL_LIVE(health_start_timeout) },
	{ "failures", health_failures, true, WL_LIVE(health_failures) },
	{ "port_owner", health_port_owner, true, WL_LIVE(health_port_owner) },
};

static void wl_health(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_health *h = &WL(t)->health;
	if (v->type == VRAM_YNODE_MAP) {
		const struct vram_ynode *at[N_KEYS(health_keys)] = { 0 };
		walk_map(c, v, health_keys, N_KEYS(health_keys), h, WALK_ALL, at);
		/* Both given: whichever came last won in the walk; say so instead. */
		if (at[0] && at[1] && at[1]->type == VRAM_YNODE_SCALAR &&
		    (strcmp(at[1]->text, "true") == 0 || strcmp(at[1]->text, "yes") == 0)) {
			size_t mark = path_push_key(c, "tcp");
			fail(c, at[1], "both path and tcp are set, expected one of them");
			path_pop(c, mark);
		}
		return;
	}
	const char *s = want_scalar(c, v, "an HTTP path like /health, tcp or none");
	if (!s)
		return;
	if (strcmp(s, "tcp") == 0 || strcmp(s, "none") == 0) {
		free(h->path);
		h->path = NULL;
		h->kind = s[0] == 't' ? VRAM_HEALTH_TCP : VRAM_HEALTH_NONE;
		h->kind_given = true;
		return;
	}
	if (s[0] != '/') {
		fail(c, v, "expected an HTTP path like /health, tcp or none, got %s", GOT(v));
		return;
	}
	health_path(c, v, h);
}

static void wl_port(struct ctx *c, const struct vram_ynode *v, void *t)
{
	long long n;
	static const char expected[] = "auto or a port from 1 to 65535";
	const char *s = want_scalar(c, v, expected);
	if (!s)
		return;
	if (strcmp(s, "auto") == 0) {
		WL(t)->port = 0;
		return;
	}
	if (!parse_ll(s, &n) || n < 1 || n > 65535) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	WL(t)->port = (unsigned)n;
}

#define IDLE(target) ((struct vram_idle *)(target))

static void idle_offload_after(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, true, 0, &IDLE(t)->offload_after_ms);
}

static void idle_release_after(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, true, 0, &IDLE(t)->release_after_ms);
}

static void idle_park_after(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, true, 0, &IDLE(t)->park_after_ms);
}

static const struct key_def idle_keys[] = {
	{ "offload_after", idle_offload_after, true, WL_LIVE(idle_offload_after) },
	{ "release_after", idle_release_after, true, WL_LIVE(idle_release_after) },
	{ "park_after", idle_park_after, true, WL_LIVE(idle_park_after) },
};

static void wl_idle(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_idle *idle = &WL(t)->idle;
	if (v->type == VRAM_YNODE_SCALAR && (strcmp(v->text, "never") == 0 ||
					     strcmp(v->text, "off") == 0)) {
		idle->offload_after_ms = idle->release_after_ms = VRAM_DURATION_NEVER;
		idle->park_after_ms = VRAM_DURATION_NEVER;
		return;
	}
	if (v->type != VRAM_YNODE_MAP) {
		fail(c, v, "expected a mapping like {offload_after: 10m, release_after: 1h}, "
			   "or never, got %s", GOT(v));
		return;
	}
	walk_map(c, v, idle_keys, N_KEYS(idle_keys), idle, WALK_ALL, NULL);
}

static void wl_priority(struct ctx *c, const struct vram_ynode *v, void *t)
{
	long long n;
	if (get_int(c, v, -1000000, 1000000, &n))
		WL(t)->priority = (int)n;
}

static void wl_offload(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, engine_names, &WL(t)->offload);
}

static void restart_policy(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, restart_names, &WL(t)->restart);
}

static void restart_backoff_max(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, false, 1000, &WL(t)->restart_backoff_max_ms);
}

static void restart_limit(struct ctx *c, const struct vram_ynode *v, void *t)
{
	/* bounded by the failures kept per workload; 0 = no limit */
	get_unsigned(c, v, 0, VRAM_CONFIG_RESTART_LIMIT_MAX, &WL(t)->restart_limit);
}

static void restart_window(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, false, 1, &WL(t)->restart_window_ms);
}

static const struct key_def restart_keys[] = {
	{ "policy", restart_policy, true, WL_LIVE(restart_policy) },
	{ "backoff_max", restart_backoff_max, true, WL_LIVE(restart_backoff_max) },
	{ "limit", restart_limit, true, WL_LIVE(restart_limit) },
	{ "window", restart_window, true, WL_LIVE(restart_window) },
};

static void wl_restart(struct ctx *c, const struct vram_ynode *v, void *t)
{
	if (v->type == VRAM_YNODE_MAP)
		walk_map(c, v, restart_keys, N_KEYS(restart_keys), t, WALK_ALL, NULL);
	else
		restart_policy(c, v, t);
}

static void wl_stop_grace(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, false, 0, &WL(t)->stop_grace_ms);
}

/* One `models:` entry in a mapping: {name: alias, upstream: real-name}. */
static void model_alias(struct ctx *c, const struct vram_ynode *it, const char **ret_name,
			const char **ret_upstream)
{
	for (size_t k = 0; k + 1 < it->n_items; k += 2) {
		const struct vram_ynode *key = it->items[k], *val = it->items[k + 1];
		const char *kname = key->type == VRAM_YNODE_SCALAR ? key->text : "";
		size_t mark = path_push(c, ".%s", kname);
		const char **slot = strcmp(kname, "name") == 0	   ? ret_name
				    : strcmp(kname, "upstream") == 0 ? ret_upstream
								     : NULL;
		if (!slot)
			fail(c, key, "unknown key '%s', expected name or upstream", kname);
		else if ((*slot = want_scalar(c, val, "a model name")) && !**slot) {
			fail(c, val, "expected a non-empty model name, got \"\"");
			*slot = NULL;
		}
		path_pop(c, mark);
	}
	if (!*ret_name)
		fail(c, it, "expected a model name: a string, or {name: alias, upstream: "
			    "the name the model server knows}");
}

/*
 * models: [a, {name: alias, upstream: real-name}, ...]. A plain string is
 * routed and sent upstream as written; an alias is routed by name, and the
 * gateway rewrites a JSON body's "model" to upstream on the way up.
 */
static void wl_models(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "a list of model names like [Qwen/Qwen2.5-7B] or "
				       "{name: alias, upstream: real-name}";
	struct vram_workload_config *w = WL(t);
	if (!want_seq(c, v, VRAM_CONFIG_MAX_ARGS, expected))
		return;
	char **names = calloc(v->n_items + 1, sizeof(*names));
	char **ups = calloc(v->n_items + 1, sizeof(*ups));
	bool ok = names && ups;
	if (!ok)
		c->oom = true;
	for (size_t i = 0; ok && i < v->n_items; i++) {
		const struct vram_ynode *it = v->items[i];
		size_t mark = path_push(c, "[%zu]", i);
		const char *name = NULL, *upstream = NULL;
		if (it->type == VRAM_YNODE_MAP)
			model_alias(c, it, &name, &upstream);
		else if ((name = want_scalar(c, it, "a model name or {name: alias, upstream: "
						    "real-name}")) && !*name) {
			fail(c, it, "expected a non-empty string, got \"\"");
			name = NULL;
		}
		path_pop(c, mark);
		if (!name) {
			ok = false;
			break;
		}
		names[i] = xstrdup(c, name);
		ups[i] = xstrdup(c, upstream ? upstream : name);
		ok = names[i] && ups[i];
	}
	if (!ok) {
		for (size_t i = 0; names && ups && i < v->n_items; i++) {
			free(names[i]);
			free(ups[i]);
		}
		free(names);
		free(ups);
		return;
	}
	free_strv(w->models);
	free_strv(w->model_upstreams);
	w->models = names;
	w->model_upstreams = ups;
	w->n_models = v->n_items;
}

static void wl_share(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, share_names, &WL(t)->share);
}

static void wl_compute(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "a percentage from 1 to 100 like 50%";
	const char *s = want_scalar(c, v, expected);
	char num[32];
	long long n;
	if (!s)
		return;
	size_t len = strlen(s);
	if (len == 0 || len >= sizeof(num)) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	memcpy(num, s, len + 1);
	if (num[len - 1] == '%')
		num[len - 1] = '\0';
	if (!parse_ll(num, &n) || n < 1 || n > 100) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	WL(t)->compute_percent = (unsigned)n;
}

static void wl_max_concurrency(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_unsigned(c, v, 0, 65535, &WL(t)->max_concurrency);
}

static void wl_queue_max(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_unsigned(c, v, 0, 65535, &WL(t)->queue_max);
}

static void wl_queue_timeout(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, false, 0, &WL(t)->queue_timeout_ms);
}

static void wl_first_byte_timeout(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, true, 1000, &WL(t)->first_byte_timeout_ms);
}

static void wl_stream_timeout(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, true, 1000, &WL(t)->stream_timeout_ms);
}

/* ---- container: (a workload that is an image; the daemon's container.c runs it) ---- */

#define CT(target) (&WL(target)->container)

static void container_image(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "an image name like docker.io/library/nginx:1.27";
	const char *s = want_scalar(c, v, expected);
	if (!s)
		return;
	/* it is an argument of the runtime's command line: never an option, never split */
	bool ok = *s && *s != '-' && strlen(s) <= VRAM_CONTAINER_IMAGE_MAX;
	for (const char *p = s; ok && *p; p++)
		ok = isgraph((unsigned char)*p);
	if (!ok) {
		fail(c, v, "expected %s (1 to %d printable characters, no spaces, not beginning "
			   "with '-'), got %s", expected, VRAM_CONTAINER_IMAGE_MAX, GOT(v));
		return;
	}
	get_string(c, v, &CT(t)->image);
}

static void container_args(struct ctx *c, const struct vram_ynode *v, void *t)
{
	if (v->type == VRAM_YNODE_NULL)
		return;
	get_string_list(c, v, VRAM_CONFIG_MAX_ARGS, "a list of arguments after the image, like "
			"[--port, \"${PORT}\"]", &CT(t)->args, &CT(t)->n_args);
}

static void container_runtime(struct ctx *c, const struct vram_ynode *v, void *t)
{
	const char *s = want_scalar(c, v, "auto, podman or docker");
	if (!s)
		return;
	for (size_t i = 0; i < N_KEYS(container_runtime_names); i++) {
		if (strcmp(s, container_runtime_names[i]) == 0) {
			CT(t)->runtime = (enum vram_container_runtime)i;
			return;
		}
	}
	fail(c, v, "expected auto, podman or docker, got %s", GOT(v));
}

/* "SOURCE:/path[:options]": a host path or a named volume, then an absolute path inside. */
static bool volume_ok(const char *s)
{
	const char *colon = strchr(s, ':');
	if (!colon || colon == s || *s == '-' || colon[1] != '/' || strlen(s) > VRAM_CONTAINER_VOLUME_MAX)
		return false;
	for (const char *p = s; *p; p++)
		if (!isgraph((unsigned char)*p))
			return false;
	return true;
}

static void container_volumes(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_container_config *ct = CT(t);
	if (v->type == VRAM_YNODE_NULL)
		return;
	get_string_list(c, v, VRAM_CONTAINER_VOLUMES_MAX, "a list of volumes like [/data/hf:/root/.cache/hf:ro]",
			&ct->volumes, &ct->n_volumes);
	for (size_t i = 0; ct->volumes && i < ct->n_volumes; i++) {
		if (volume_ok(ct->volumes[i]))
			continue;
		size_t mark = path_push(c, "[%zu]", i);
		fail(c, v->items[i], "expected SOURCE:/path[:options] (a host path or a volume name, then an "
				     "absolute path in the container; no spaces; at most %d bytes), got %s",
		     VRAM_CONTAINER_VOLUME_MAX, GOT(v->items[i]));
		path_pop(c, mark);
	}
}

static void container_env(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_env_map(c, v, &CT(t)->env, &CT(t)->n_env);
}

static const struct key_def container_keys[] = {
	{ "image", container_image, false, WL_PROCESS(container) },
	{ "args", container_args, false, WL_PROCESS(container) },
	{ "runtime", container_runtime, false, WL_PROCESS(container) },
	{ "volumes", container_volumes, false, WL_PROCESS(container) },
	{ "env", container_env, false, WL_PROCESS(container) },
};

static void wl_container(struct ctx *c, const struct vram_ynode *v, void *t)
{
	if (v->type != VRAM_YNODE_MAP) {
		fail(c, v, "expected a mapping like {image: ..., args: [...]}, got %s", GOT(v));
		return;
	}
	const struct vram_ynode *at[N_KEYS(container_keys)] = { 0 };
	walk_map(c, v, container_keys, N_KEYS(container_keys), t, WALK_ALL, at);
	if (!at[0])
		fail(c, v, "missing key 'image', expected an image name like docker.io/library/nginx:1.27");
}

static void container_done(struct vram_container_config *ct)
{
	free(ct->image);
	free_strv(ct->args);
	free_strv(ct->volumes);
	free_strv(ct->env);
}

enum {
	K_CMD, K_CONTAINER, K_ENV, K_CWD, K_GPUS, K_MEMORY, K_REPLICAS, K_AVOID, K_PLACEMENT,
	K_FALLBACK, K_START, K_HEALTH, K_PORT, K_IDLE, K_PRIORITY, K_OFFLOAD,
	K_RESTART, K_STOP_GRACE, K_MODELS, K_SHARE, K_COMPUTE, K_MAX_CONCURRENCY,
	K_QUEUE_MAX, K_QUEUE_TIMEOUT, K_FIRST_BYTE_TIMEOUT, K_STREAM_TIMEOUT, N_WL_KEYS
};

/*
 * A workload key's reload class: process (what the process is made of: a
 * change needs a new process) or live (how vramd treats it: read at the
 * moment it is needed, so the running process takes it as it is).
 */
static const struct key_def workload_keys[N_WL_KEYS] = {
	[K_CMD] = { "cmd", wl_cmd, false, WL_PROCESS(cmd) },
	[K_CONTAINER] = { "container", wl_container, false, .reported = "container", .sub = container_keys,
			  .n_sub = N_KEYS(container_keys) },
	[K_ENV] = { "env", wl_env, false, WL_PROCESS(env) },
	[K_CWD] = { "cwd", wl_cwd, false, WL_PROCESS(cwd) },
	[K_GPUS] = { "gpus", wl_gpus, false, WL_PROCESS(gpus) },
	[K_MEMORY] = { "memory", wl_memory, false, WL_PROCESS(memory) },
	[K_REPLICAS] = { "replicas", wl_replicas, false, WL_PROCESS(replicas) },
	[K_AVOID] = { "avoid", wl_avoid, false, WL_LIVE(avoid) },
	[K_PLACEMENT] = { "placement", wl_placement, true, WL_LIVE(placement) },
	[K_FALLBACK] = { "fallback", wl_fallback, true, WL_LIVE(fallback) },
	[K_START] = { "start", wl_start, true, WL_LIVE(start) },
	[K_HEALTH] = { "health", wl_health, true, .reported = "health", .sub = health_keys,
		       .n_sub = N_KEYS(health_keys) },
	[K_PORT] = { "port", wl_port, false, WL_PROCESS(port) },
	[K_IDLE] = { "idle", wl_idle, true, .sub = idle_keys, .n_sub = N_KEYS(idle_keys) },
	[K_PRIORITY] = { "priority", wl_priority, true, WL_LIVE(priority) },
	[K_OFFLOAD] = { "offload", wl_offload, true, WL_PROCESS(offload) },
	[K_RESTART] = { "restart", wl_restart, true, .reported = "restart", .sub = restart_keys,
			.n_sub = N_KEYS(restart_keys) },
	[K_STOP_GRACE] = { "stop_grace", wl_stop_grace, true, WL_LIVE(stop_grace) },
	[K_MODELS] = { "models", wl_models, false, WL_LIVE(models) },
	[K_SHARE] = { "share", wl_share, false, WL_PROCESS(share) },
	[K_COMPUTE] = { "compute", wl_compute, false, WL_PROCESS(compute), .reported = "compute_percent" },
	[K_MAX_CONCURRENCY] = { "max_concurrency", wl_max_concurrency, true, WL_LIVE(max_concurrency) },
	[K_QUEUE_MAX] = { "queue_max", wl_queue_max, true, WL_LIVE(queue_max), .reported = "queue" },
	[K_QUEUE_TIMEOUT] = { "queue_timeout", wl_queue_timeout, true, WL_LIVE(queue_timeout),
			      .reported = "queue" },
	[K_FIRST_BYTE_TIMEOUT] = { "first_byte_timeout", wl_first_byte_timeout, true,
				   WL_LIVE(first_byte_timeout) },
	[K_STREAM_TIMEOUT] = { "stream_timeout", wl_stream_timeout, true, WL_LIVE(stream_timeout) },
};

/* The values a workload has when neither it nor `defaults:` says otherwise. */
static void workload_builtin_defaults(struct vram_workload_config *w)
{
	*w = (struct vram_workload_config){
		.gpus = { .kind = VRAM_GPUS_COUNT, .count = 1 },
		.replicas = 1,
		.placement = VRAM_PLACEMENT_PACK,
		.fallback = VRAM_FALLBACK_NONE,
		.start = VRAM_START_LAZY,
		.health = {
			.kind = VRAM_HEALTH_TCP,
			.interval_ms = 10000,
			.timeout_ms = 2000,
			.start_timeout_ms = 120000,
			.failures = 3,
			.port_owner = VRAM_PORT_OWNER_WORKLOAD,
		},
		.idle = { .offload_after_ms = 10 * 60000, .release_after_ms = 3600000,
			  .park_after_ms = VRAM_DURATION_NEVER },
		.offload = VRAM_ENGINE_AUTO,
		.restart = VRAM_RESTART_ON_FAILURE,
		.restart_backoff_max_ms = 60000,
		.restart_limit = 5,
		.restart_window_ms = 10000,
		.stop_grace_ms = 10000,
		.queue_max = 64,
		.queue_timeout_ms = 120000,
		.first_byte_timeout_ms = 300000,
		.stream_timeout_ms = 600000,
	};
}

static void workload_done(struct vram_workload_config *w)
{
	free(w->name);
	free_strv(w->cmd);
	container_done(&w->container);
	free_strv(w->env);
	free(w->cwd);
	free(w->gpus.pins);
	free_strv(w->avoid);
	free(w->health.path);
	free_strv(w->models);
	free_strv(w->model_upstreams);
}

bool vram_config_name_ok(const char *s)
{
	size_t len = strlen(s);
	if (len < 1 || len > VRAM_CONFIG_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
			return false;
	return true;
}

/* Checks that need several keys of one workload; at[] holds their nodes. */
static void workload_check(struct ctx *c, const struct vram_ynode *key,
			   struct vram_workload_config *w, const struct vram_ynode *const *at)
{
	size_t mark;

	if (!at[K_CMD] && !at[K_CONTAINER])
		fail(c, key, "missing key 'cmd', expected an argv list like [python3, server.py] "
			     "(or container: {image: ...})");
	if (at[K_CMD] && at[K_CONTAINER]) {
		mark = path_push_key(c, "container");
		fail(c, at[K_CONTAINER], "both cmd and container are set, expected one of them "
					 "(a container's command goes into container.args)");
		path_pop(c, mark);
	}
	if (at[K_CONTAINER] && at[K_CWD]) {
		mark = path_push_key(c, "cwd");
		fail(c, at[K_CWD], "cwd does not apply to a container, expected none (the image's "
				   "working directory applies; set it in the image)");
		path_pop(c, mark);
	}

	/*
	 * A model server listens long before its model is loaded (vLLM,
	 * llama.cpp answer 503 meanwhile): a TCP connect would call it ready
	 * and hand it requests it refuses. Its own routes say when it serves.
	 */
	if (!w->health.kind_given && w->n_models)
		w->health.kind = VRAM_HEALTH_MODEL;

	bool cpu_only = w->gpus.kind == VRAM_GPUS_COUNT && w->gpus.count == 0;
	if (cpu_only && at[K_MEMORY]) {
		mark = path_push_key(c, "memory");
		fail(c, at[K_MEMORY], "GPU memory for a CPU-only workload (gpus: 0), "
				      "expected no memory or gpus of 1 or more");
		path_pop(c, mark);
	}
	if (!cpu_only && !at[K_MEMORY] && !w->memory.is_fraction && w->memory.bytes == 0)
		w->memory = (struct vram_mem){ .is_fraction = true, .fraction = 1.0 };

	if (w->fallback == VRAM_FALLBACK_EXCLUSIVE && w->share != VRAM_SHARE_MPS) {
		mark = path_push_key(c, "fallback");
		fail(c, at[K_FALLBACK] ? at[K_FALLBACK] : key,
		     "exclusive only applies to share: mps, expected none, share or cpu");
		path_pop(c, mark);
	}
	if (at[K_COMPUTE] && w->share != VRAM_SHARE_MPS) {
		mark = path_push_key(c, "compute");
		fail(c, at[K_COMPUTE], "a compute share needs share: mps, expected share: mps "
				       "next to it");
		path_pop(c, mark);
	}
	if (w->port && w->replicas > 1) {
		mark = path_push_key(c, "port");
		fail(c, at[K_PORT], "a fixed port cannot serve %u replicas, expected port: auto",
		     w->replicas);
		path_pop(c, mark);
	}
}

static void parse_workloads(struct ctx *c, const struct vram_ynode *v,
			    const struct vram_ynode ***ret_at)
{
	struct vram_config *cfg = c->cfg;
	if (v->type == VRAM_YNODE_NULL)
		return;
	if (v->type != VRAM_YNODE_MAP) {
		fail(c, v, "expected a mapping of workload names to workloads, got %s", GOT(v));
		return;
	}
	size_t n = vram_ynode_pairs(v);
	if (n > VRAM_CONFIG_MAX_WORKLOADS) {
		fail(c, v, "%zu workloads, expected at most %d", n, VRAM_CONFIG_MAX_WORKLOADS);
		return;
	}
	if (n == 0)
		return;
	cfg->workloads = calloc(n, sizeof(*cfg->workloads));
	const struct vram_ynode **at = calloc(n * N_WL_KEYS, sizeof(*at));
	if (!cfg->workloads || !at) {
		free(at);
		c->oom = true;
		return;
	}
	*ret_at = at;

	for (size_t i = 0; i < n && !c->oom; i++) {
		const struct vram_ynode *k = vram_ynode_key(v, i);
		const struct vram_ynode *body = vram_ynode_value(v, i);
		struct vram_workload_config *w = &cfg->workloads[i];
		size_t mark = path_push_key(c, k->text);

		/* Start from the defaults; the only owned field there is the
		 * health path. */
		*w = c->defaults;
		w->health.path = NULL;
		cfg->n_workloads++;
		if (c->defaults.health.path)
			w->health.path = xstrdup(c, c->defaults.health.path);
		w->name = xstrdup(c, k->text);
		w->pos = (struct vram_src_pos){ k->line, k->col };

		if (!vram_config_name_ok(k->text))
			fail(c, k, "invalid workload name, expected 1 to %d characters of "
				   "A-Z a-z 0-9 . _ -, got %s", VRAM_CONFIG_NAME_MAX, GOT(k));

		if (body->type != VRAM_YNODE_MAP) {
			fail(c, body->type == VRAM_YNODE_NULL ? k : body,
			     "expected a mapping with at least cmd, got %s", GOT(body));
		} else {
			walk_map(c, body, workload_keys, N_WL_KEYS, w, WALK_ALL, at + i * N_WL_KEYS);
			workload_check(c, k, w, at + i * N_WL_KEYS);
		}
		path_pop(c, mark);
	}
}

/* Checks across workloads: avoid names, models and fixed ports. */
static void check_workloads(struct ctx *c, const struct vram_ynode *const *all_at)
{
	const struct vram_config *cfg = c->cfg;
	const char **names = calloc(cfg->n_workloads + 1, sizeof(*names));
	if (!names) {
		c->oom = true;
		return;
	}
	for (size_t i = 0; i < cfg->n_workloads; i++)
		names[i] = cfg->workloads[i].name ? cfg->workloads[i].name : "";

	for (size_t i = 0; i < cfg->n_workloads; i++) {
		const struct vram_workload_config *w = &cfg->workloads[i];
		const struct vram_ynode *const *at = all_at + i * N_WL_KEYS;
		size_t mark = path_push(c, "workloads.%s", names[i]);

		for (size_t a = 0; a < w->n_avoid; a++) {
			const char *other = w->avoid[a];
			size_t m2 = path_push(c, ".avoid[%zu]", a);
			const struct vram_ynode *node = at[K_AVOID]->items[a];
			if (strcmp(other, names[i]) == 0) {
				fail(c, node, "a workload cannot avoid itself, expected another "
					      "workload's name");
			} else if (!vram_config_find(cfg, other)) {
				const char *near = vram_str_closest(other, names, cfg->n_workloads);
				if (near)
					fail(c, node, "unknown workload '%s', did you mean '%s'?",
					     other, near);
				else
					fail(c, node, "unknown workload '%s', expected the name "
						      "of a workload in this file", other);
			}
			path_pop(c, m2);
		}

		for (size_t m = 0; m < w->n_models; m++) {
			const char *model = w->models[m];
			const struct vram_ynode *node = at[K_MODELS]->items[m];
			const char *owner = NULL;
			for (size_t j = 0; j <= i && !owner; j++) {
				const struct vram_workload_config *o = &cfg->workloads[j];
				size_t upto = j == i ? m : o->n_models;
				for (size_t k = 0; k < upto; k++)
					if (strcmp(o->models[k], model) == 0)
						owner = names[j];
			}
			if (owner) {
				size_t m2 = path_push(c, ".models[%zu]", m);
				fail(c, node, "model '%s' is already routed to workload '%s', "
					      "expected each model name once", model, owner);
				path_pop(c, m2);
			}
		}

		for (size_t j = 0; w->port && j < i; j++) {
			if (cfg->workloads[j].port == w->port) {
				size_t m2 = path_push(c, ".port");
				fail(c, at[K_PORT], "port %u is already used by workload '%s', "
						    "expected a free port or auto",
				     w->port, names[j]);
				path_pop(c, m2);
				break;
			}
		}
		path_pop(c, mark);
	}
	free(names);
}

/* ---- daemon and gpus sections ---- */

#define CFG(target) ((struct vram_config *)(target))

/* "HOST:PORT" with a non-empty host ([v6] in brackets) and a port 1..65535.
 * Copies the host into host (size bytes) when valid. */
static bool listen_split(const char *s, char *host, size_t size)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s)
		return false;
	size_t hlen = (size_t)(colon - s);
	if (hlen >= size)
		return false;
	if (s[0] == '[') {
		if (hlen < 3 || s[hlen - 1] != ']')
			return false;
	} else if (memchr(s, ':', hlen)) {
		return false; /* a bare IPv6 address: needs brackets */
	}
	long long port;
	if (!parse_ll(colon + 1, &port) || port < 1 || port > 65535 || colon[1] == '+' ||
	    colon[1] == '-')
		return false;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	return true;
}

static bool listen_is_loopback(const char *listen)
{
	char host[256];
	if (!listen_split(listen, host, sizeof(host)))
		return false;
	return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0 ||
	       strcmp(host, "[::1]") == 0;
}

static const char listen_expected[] = "HOST:PORT like 127.0.0.1:8600 or [::1]:8600";

static void d_listen(struct ctx *c, const struct vram_ynode *v, void *t)
{
	char host[256];
	char *listen = NULL;
	get_daemon_string(c, v, &listen);
	if (!listen)
		return;
	/* checked once ${env:...} is replaced: the address is what vramd binds */
	if (!listen_split(listen, host, sizeof(host))) {
		fail(c, v, "expected %s, got %s%s", listen_expected, GOT(v),
		     strcmp(listen, v->text) ? " once ${env:...} is replaced" : "");
		free(listen);
		return;
	}
	free(CFG(t)->daemon.listen);
	CFG(t)->daemon.listen = listen;
	c->listen_at = v;
}

static void d_socket(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_daemon_string(c, v, &CFG(t)->daemon.socket);
	c->socket_at = v;
}

static void d_state_dir(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_daemon_string(c, v, &CFG(t)->daemon.state_dir);
	c->state_dir_at = v;
}
static void d_log(struct ctx *c, const struct vram_ynode *v, void *t) { get_daemon_string(c, v, &CFG(t)->daemon.log); }
static void d_hook_library(struct ctx *c, const struct vram_ynode *v, void *t) { get_daemon_string(c, v, &CFG(t)->daemon.hook_library); }

/* A token is one line of the joined daemon.token: no line break, no blank. */
static bool token_is_valid(const char *s)
{
	for (; *s; s++)
		if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
			return false;
	return true;
}

static void d_token(struct ctx *c, const struct vram_ynode *v, void *t)
{
	char **slot = &CFG(t)->daemon.token;
	get_daemon_string(c, v, slot);
	if (*slot && !token_is_valid(*slot))
		fail(c, v, "expected a token without spaces or control characters");
}

static void d_tokens(struct ctx *c, const struct vram_ynode *v, void *t)
{
	struct vram_config *cfg = CFG(t);
	get_string_list(c, v, VRAM_CONFIG_TOKENS_MAX, "a list of tokens", &cfg->daemon.tokens,
			&cfg->daemon.n_tokens);
	for (size_t i = 0; i < cfg->daemon.n_tokens; i++) {
		char *x = expand_env(c, v->items[i], cfg->daemon.tokens[i]);
		if (!x)
			continue;
		free(cfg->daemon.tokens[i]);
		cfg->daemon.tokens[i] = x;
		if (!*x || !token_is_valid(x)) {
			size_t mark = path_push(c, "[%zu]", i);
			fail(c, v->items[i], "expected a non-empty token without spaces or "
			     "control characters");
			path_pop(c, mark);
		}
	}
	c->tokens_at = v;
}

static void d_token_file(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_daemon_string(c, v, &CFG(t)->daemon.token_file);
	c->token_file_at = v;
}

static void d_log_level(struct ctx *c, const struct vram_ynode *v, void *t)
{
	int i = get_choice(c, v, log_level_names, sizeof(log_level_names) / sizeof(log_level_names[0]));
	if (i >= 0)
		get_string(c, v, &CFG(t)->daemon.log_level);
}

static void d_workload_log_max(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_bytes(c, v, false, &CFG(t)->daemon.workload_log_max_bytes);
}

static void d_workload_log_keep(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_unsigned(c, v, 0, 100, &CFG(t)->daemon.workload_log_keep);
}

static void al_path(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_daemon_string(c, v, &CFG(t)->daemon.access_log);
}

static void al_max_size(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_bytes(c, v, false, &CFG(t)->daemon.access_log_max_bytes);
}

static void al_keep(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_unsigned(c, v, 0, 100, &CFG(t)->daemon.access_log_keep);
}

static const struct key_def access_log_keys[] = {
	{ "path", al_path, false, CFG_DAEMON(access_log) },
	{ "max_size", al_max_size, false, CFG_DAEMON(access_log_max) },
	{ "keep", al_keep, false, CFG_DAEMON(access_log_keep) },
};

/* daemon.access_log: {path, max_size, keep}, or just the path */
static void d_access_log(struct ctx *c, const struct vram_ynode *v, void *t)
{
	if (v->type == VRAM_YNODE_MAP)
		walk_map(c, v, access_log_keys, N_KEYS(access_log_keys), t, WALK_ALL, NULL);
	else
		al_path(c, v, t);
}

static void d_port_range_start(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_unsigned(c, v, 1, 65535, &CFG(t)->daemon.port_range_start);
}

static void d_upgrade_drain(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_duration(c, v, false, 0, &CFG(t)->daemon.upgrade_drain_ms);
}

/* A host name ([A-Za-z0-9.-], labels not starting with '-') or [IPv6]. */
static bool host_ok(const char *h, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	if (h[0] == '[') {
		if (n < 3 || h[n - 1] != ']')
			return false;
		for (size_t i = 1; i + 1 < n; i++)
			if (!isxdigit((unsigned char)h[i]) && h[i] != ':' && h[i] != '.')
				return false;
		return true;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)h[i];
		if (!isalnum(ch) && ch != '.' && ch != '-')
			return false;
		if (ch == '-' && (i == 0 || h[i - 1] == '.'))
			return false;
	}
	return true;
}

/* ":PORT" (1..65535) or nothing, for n bytes at p. */
static bool port_suffix_ok(const char *p, size_t n)
{
	if (n == 0)
		return true;
	if (p[0] != ':' || n < 2 || n > 6)
		return false;
	unsigned long port = 0;
	for (size_t i = 1; i < n; i++) {
		if (!isdigit((unsigned char)p[i]))
			return false;
		port = port * 10 + (unsigned long)(p[i] - '0');
	}
	return port >= 1 && port <= 65535;
}

/* Splits "host[:port]" at the port: the host's length. */
static size_t host_len(const char *s)
{
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		return close ? (size_t)(close - s) + 1 : strlen(s);
	}
	return strcspn(s, ":");
}

static void lower_in_place(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* Checks every entry of a list just read with check(entry) and lower-cases it. */
static void check_list(struct ctx *c, const struct vram_ynode *v, char **list, size_t n,
		       bool (*check)(const char *), const char *expected)
{
	for (size_t i = 0; list && i < n; i++) {
		if (check(list[i])) {
			lower_in_place(list[i]);
			continue;
		}
		size_t mark = path_push(c, "[%zu]", i);
		fail(c, v->items[i], "expected %s, got \"%s\"", expected, list[i]);
		path_pop(c, mark);
	}
}

static bool allowed_host_ok(const char *s)
{
	size_t h = host_len(s);
	return host_ok(s, h) && port_suffix_ok(s + h, strlen(s + h));
}

static void d_allowed_hosts(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "a host name like gpu1.example.com or gpu1:8600";
	struct vram_config *cfg = CFG(t);
	get_string_list(c, v, VRAM_CONFIG_MAX_HOSTS, "a list of host names", &cfg->daemon.allowed_hosts,
			&cfg->daemon.n_allowed_hosts);
	check_list(c, v, cfg->daemon.allowed_hosts, cfg->daemon.n_allowed_hosts, allowed_host_ok,
		   expected);
}

/* "http://host[:port]" or "https://host[:port]": an origin as browsers send it. */
static bool origin_ok(const char *s)
{
	const char *rest;
	if (strncasecmp(s, "http://", 7) == 0)
		rest = s + 7;
	else if (strncasecmp(s, "https://", 8) == 0)
		rest = s + 8;
	else
		return false;
	size_t h = host_len(rest);
	return host_ok(rest, h) && port_suffix_ok(rest + h, strlen(rest + h));
}

static void cors_origins(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "an origin like http://localhost:3000 or "
				       "https://ui.example.com (scheme, host and port, no path)";
	struct vram_config *cfg = CFG(t);
	get_string_list(c, v, VRAM_CONFIG_MAX_HOSTS, "a list of origins", &cfg->daemon.cors_origins,
			&cfg->daemon.n_cors_origins);
	check_list(c, v, cfg->daemon.cors_origins, cfg->daemon.n_cors_origins, origin_ok,
		   expected);
}

static void d_open_healthz(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_bool(c, v, &CFG(t)->daemon.open_healthz);
}

static const struct key_def cors_keys[] = {
	{ "origins", cors_origins, false, CFG_DAEMON(cors_origins) },
};

static void d_cors(struct ctx *c, const struct vram_ynode *v, void *t)
{
	walk_map(c, v, cors_keys, N_KEYS(cors_keys), t, WALK_ALL, NULL);
}

/* A user by name or uid; resolved now, so that a typo fails at load, not at the first run. */
static void d_run_as(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "a user name or uid that exists on this machine";
	struct vram_config *cfg = CFG(t);
	const char *s = want_scalar(c, v, expected);
	if (!s)
		return;
	long long uid;
	struct passwd pw, *found = NULL;
	char buf[4096];
	int e;
	if (parse_ll(s, &uid) && uid >= 0 && uid < UINT32_MAX)
		e = getpwuid_r((uid_t)uid, &pw, buf, sizeof(buf), &found);
	else
		e = getpwnam_r(s, &pw, buf, sizeof(buf), &found);
	if (e != 0 || !found) {
		fail(c, v, "no such user %s, expected %s", GOT(v), expected);
		return;
	}
	get_string(c, v, &cfg->daemon.run_as);
	cfg->daemon.has_run_as = cfg->daemon.run_as != NULL;
	cfg->daemon.run_as_uid = pw.pw_uid;
	cfg->daemon.run_as_gid = pw.pw_gid;
}

static void d_socket_mode(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "0600 (vramd's user), 0660 (and socket_group) or 0666 "
				       "(every local user)";
	const char *s = want_scalar(c, v, expected);
	if (!s)
		return;
	const char *digits = s[0] == '0' && s[1] ? s + 1 : s;
	unsigned mode;
	if (strcmp(digits, "600") == 0)
		mode = 0600;
	else if (strcmp(digits, "660") == 0)
		mode = 0660;
	else if (strcmp(digits, "666") == 0)
		mode = 0666;
	else {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	CFG(t)->daemon.socket_mode = mode;
	c->socket_mode_at = v;
}

/* A group by name or gid; resolved now, so that a typo fails at load. */
static void d_socket_group(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "a group name or gid that exists on this machine";
	struct vram_config *cfg = CFG(t);
	const char *s = want_scalar(c, v, expected);
	if (!s)
		return;
	long long gid;
	struct group gr, *found = NULL;
	char buf[16384];
	int e;
	if (parse_ll(s, &gid) && gid >= 0 && gid < UINT32_MAX)
		e = getgrgid_r((gid_t)gid, &gr, buf, sizeof(buf), &found);
	else
		e = getgrnam_r(s, &gr, buf, sizeof(buf), &found);
	if (e != 0 || !found) {
		fail(c, v, "no such group %s, expected %s", GOT(v), expected);
		return;
	}
	get_string(c, v, &cfg->daemon.socket_group);
	cfg->daemon.has_socket_group = cfg->daemon.socket_group != NULL;
	cfg->daemon.socket_gid = gr.gr_gid;
}

/*
 * A daemon key's reload class: daemon (it shapes vramd itself: a reload
 * refuses to change it) or live (a reload applies it).
 */
static const struct key_def daemon_keys[] = {
	{ "listen", d_listen, false, CFG_DAEMON(listen) },
	{ "socket", d_socket, false, CFG_DAEMON(socket) },
	{ "state_dir", d_state_dir, false, CFG_DAEMON(state_dir) },
	{ "log", d_log, false, CFG_DAEMON(log) },
	{ "log_level", d_log_level, false, CFG_LIVE(log_level) },
	{ "token", d_token, false, CFG_LIVE(token) },
	{ "tokens", d_tokens, false, CFG_LIVE(token) },
	{ "token_file", d_token_file, false, CFG_LIVE(token) },
	{ "hook_library", d_hook_library, false, CFG_DAEMON(hook_library) },
	{ "workload_log_max", d_workload_log_max, false, CFG_DAEMON(workload_log_max) },
	{ "workload_log_keep", d_workload_log_keep, false, CFG_DAEMON(workload_log_keep) },
	{ "access_log", d_access_log, false, .sub = access_log_keys, .n_sub = N_KEYS(access_log_keys) },
	{ "port_range_start", d_port_range_start, false, CFG_DAEMON(port_range_start) },
	{ "upgrade_drain", d_upgrade_drain, false, CFG_DAEMON(upgrade_drain) },
	{ "allowed_hosts", d_allowed_hosts, false, CFG_DAEMON(allowed_hosts) },
	{ "cors", d_cors, false, .sub = cors_keys, .n_sub = N_KEYS(cors_keys) },
	{ "open_healthz", d_open_healthz, false, CFG_LIVE(open_healthz) },
	{ "run_as", d_run_as, false, CFG_DAEMON(run_as) },
	{ "socket_mode", d_socket_mode, false, CFG_DAEMON(socket_mode) },
	{ "socket_group", d_socket_group, false, CFG_DAEMON(socket_group) },
};

static void g_backend(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, backend_names, &CFG(t)->gpus.backend);
}

static void g_reserve(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_bytes(c, v, true, &CFG(t)->gpus.reserve);
}

static void free_sim(struct vram_config *cfg)
{
	for (size_t i = 0; i < cfg->gpus.n_sim; i++)
		free(cfg->gpus.sim[i].name);
	free(cfg->gpus.sim);
	cfg->gpus.sim = NULL;
	cfg->gpus.n_sim = 0;
}

static const char sim_gpu_name[] = "Simulated GPU";

/* Replaces the sim list with n GPUs of the given sizes. Returns false on OOM. */
static bool set_sim_sizes(struct ctx *c, const uint64_t *sizes, size_t n)
{
	struct vram_sim_gpu_config *sim = calloc(n, sizeof(*sim));
	if (!sim) {
		c->oom = true;
		return false;
	}
	free_sim(c->cfg);
	c->cfg->gpus.sim = sim;
	for (size_t i = 0; i < n; i++) {
		sim[i].memory = sizes[i];
		sim[i].name = xstrdup(c, sim_gpu_name);
		c->cfg->gpus.n_sim++;
		if (!sim[i].name)
			return false;
	}
	return true;
}

struct sim_entry {
	char *name;      /* owned */
	uint64_t memory; /* bytes */
};

static void sim_name(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_string(c, v, &((struct sim_entry *)t)->name);
}

static void sim_memory(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_bytes(c, v, false, &((struct sim_entry *)t)->memory);
}

static const struct key_def sim_keys[] = {
	{ "name", sim_name, false },
	{ "memory", sim_memory, false },
};

static void g_sim(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] =
		"a list like 2x80GiB or 1x24GiB,1x80GiB, or a list of {name, memory}";
	struct vram_config *cfg = CFG(t);

	if (v->type == VRAM_YNODE_SCALAR) {
		uint64_t sizes[VRAM_CONFIG_MAX_GPUS];
		char hint[256];
		int n = vram_units_parse_gpu_list(v->text, sizes, VRAM_CONFIG_MAX_GPUS);
		if (n == -ENOMEM)
			c->oom = true;
		else if (n == -E2BIG)
			fail(c, v, "too many GPUs, expected at most %d", VRAM_CONFIG_MAX_GPUS);
		else if (n == -EDOM)
			fail(c, v, "a GPU size needs a unit: %s, not %s",
			     vram_units_gpu_list_hint(v->text, hint, sizeof(hint)), GOT(v));
		else if (n < 0)
			fail(c, v, "expected %s, got %s", expected, GOT(v));
		else
			set_sim_sizes(c, sizes, (size_t)n);
		return;
	}
	if (v->type != VRAM_YNODE_SEQ) {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	if (v->n_items > VRAM_CONFIG_MAX_GPUS) {
		fail(c, v, "%zu GPUs, expected at most %d", v->n_items, VRAM_CONFIG_MAX_GPUS);
		return;
	}
	struct vram_sim_gpu_config *sim = calloc(v->n_items ? v->n_items : 1, sizeof(*sim));
	if (!sim) {
		c->oom = true;
		return;
	}
	free_sim(cfg);
	cfg->gpus.sim = sim;
	for (size_t i = 0; i < v->n_items; i++) {
		const struct vram_ynode *it = v->items[i];
		struct sim_entry e = { 0 };
		const struct vram_ynode *at[N_KEYS(sim_keys)] = { 0 };
		size_t mark = path_push(c, "[%zu]", i);
		if (it->type != VRAM_YNODE_MAP)
			fail(c, it, "expected {name: ..., memory: 80GiB}, got %s", GOT(it));
		else
			walk_map(c, it, sim_keys, N_KEYS(sim_keys), &e, WALK_ALL, at);
		if (it->type == VRAM_YNODE_MAP && !at[1])
			fail(c, it, "missing key 'memory', expected a size like 80GiB");
		path_pop(c, mark);
		sim[i].name = e.name ? e.name : xstrdup(c, sim_gpu_name);
		sim[i].memory = e.memory;
		cfg->gpus.n_sim++;
	}
}

static void g_visible_devices(struct ctx *c, const struct vram_ynode *v, void *t)
{
	CHOICE(c, v, visible_devices_names, &CFG(t)->gpus.visible_devices);
}

static const struct key_def gpus_keys[] = {
	{ "backend", g_backend, false, CFG_DAEMON(backend) },
	{ "reserve", g_reserve, false, CFG_LIVE(reserve) },
	{ "sim", g_sim, false, CFG_DAEMON(sim) },
	{ "visible_devices", g_visible_devices, false, CFG_LIVE(visible_devices) },
};

/* ---- host section ---- */

static void h_reserve(struct ctx *c, const struct vram_ynode *v, void *t)
{
	/* 0 is a choice (nothing kept back), so it is accepted */
	get_bytes(c, v, true, &CFG(t)->host.reserve);
}

static void h_limit(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_bytes(c, v, false, &CFG(t)->host.limit);
}

/*
 * An absolute directory, short enough for the park files' paths that the
 * hook is handed (VRAM_CONFIG_PARK_DIR_MAX); whether it exists and is
 * vramd's alone is checked when it is first used, not here.
 */
static void h_park_dir(struct ctx *c, const struct vram_ynode *v, void *t)
{
	static const char expected[] = "an absolute directory like /var/lib/vramd/park";
	const char *s = want_scalar(c, v, expected);
	if (!s)
		return;
	if (s[0] != '/') {
		fail(c, v, "expected %s, got %s", expected, GOT(v));
		return;
	}
	size_t n = strlen(s);
	if (n > VRAM_CONFIG_PARK_DIR_MAX) {
		fail(c, v, "%zu bytes, expected a path of at most %d bytes (the park files' paths "
			   "must fit what the hook takes)", n, VRAM_CONFIG_PARK_DIR_MAX);
		return;
	}
	get_string(c, v, &CFG(t)->host.park_dir);
}

static void h_premake(struct ctx *c, const struct vram_ynode *v, void *t)
{
	get_bool(c, v, &CFG(t)->host.premake_buffers);
}

/*
 * A host key's reload class: the budget applies at once (live); the park
 * directory holds the files of parked processes, so only a restart of
 * vramd moves it (daemon).
 */
static const struct key_def host_keys[] = {
	{ "reserve", h_reserve, false, CFG_LIVE(host_reserve) },
	{ "limit", h_limit, false, CFG_LIVE(host_limit) },
	{ "park_dir", h_park_dir, false, CFG_DAEMON(host_park_dir) },
	{ "premake_buffers", h_premake, false, CFG_LIVE(host_premake) },
};

#undef WL_PROCESS
#undef WL_LIVE
#undef CFG_DAEMON
#undef CFG_LIVE

/* ---- the keys as a reload sees them ---- */

/* One row as a reload key named prefix + key (parent: the row of its mapping, or NULL). */
static void reload_key(const char *prefix, const struct key_def *parent, const struct key_def *d,
		       struct vram_config_key *ret)
{
	*ret = (struct vram_config_key){ .reload = d->reload, .same_workload = d->same_wl,
					 .same_config = d->same_cfg };
	if (parent)
		snprintf(ret->name, sizeof(ret->name), "%s%s.%s", prefix, parent->key, d->key);
	else
		snprintf(ret->name, sizeof(ret->name), "%s%s", prefix, d->key);
	const char *reported = d->reported ? d->reported : parent ? parent->reported : NULL;
	snprintf(ret->reported, sizeof(ret->reported), "%s", reported ? reported : ret->name);
}

/*
 * The i-th key of defs (a mapping's keys in its place, each its own),
 * named with prefix. Returns true and fills *ret, or false past the last,
 * having counted the keys of defs off *i.
 */
static bool reload_key_at(const struct key_def *defs, size_t n_defs, const char *prefix, size_t *i,
			  struct vram_config_key *ret)
{
	for (size_t k = 0; k < n_defs; k++) {
		const struct key_def *d = &defs[k];
		if (!d->sub) {
			if ((*i)-- == 0) {
				reload_key(prefix, NULL, d, ret);
				return true;
			}
			continue;
		}
		if (*i < d->n_sub) {
			reload_key(prefix, d, &d->sub[*i], ret);
			return true;
		}
		*i -= d->n_sub;
	}
	return false;
}

bool vram_config_workload_key(size_t i, struct vram_config_key *ret)
{
	return reload_key_at(workload_keys, N_WL_KEYS, "", &i, ret);
}

bool vram_config_daemon_key(size_t i, struct vram_config_key *ret)
{
	return reload_key_at(daemon_keys, N_KEYS(daemon_keys), "daemon.", &i, ret) ||
	       reload_key_at(gpus_keys, N_KEYS(gpus_keys), "gpus.", &i, ret) ||
	       reload_key_at(host_keys, N_KEYS(host_keys), "host.", &i, ret);
}

/* ---- top level, overrides, final defaults ---- */

enum { T_DAEMON, T_GPUS, T_HOST, T_DEFAULTS, T_WORKLOADS, N_TOP_KEYS };

static const struct key_def top_keys[N_TOP_KEYS] = {
	[T_DAEMON] = { "daemon", NULL, false },
	[T_GPUS] = { "gpus", NULL, false },
	[T_HOST] = { "host", NULL, false },
	[T_DEFAULTS] = { "defaults", NULL, false },
	[T_WORKLOADS] = { "workloads", NULL, false },
};

static void section(struct ctx *c, const struct vram_ynode *v, const char *key,
		    const struct key_def *defs, size_t n_defs, void *target, enum walk_mode mode)
{
	if (!v)
		return;
	size_t mark = path_push_key(c, key);
	walk_map(c, v, defs, n_defs, target, mode, NULL);
	path_pop(c, mark);
}

static void apply_overrides(struct ctx *c, const struct vram_config_overrides *ov)
{
	struct vram_config *cfg = c->cfg;
	if (!ov)
		return;
	if (ov->listen) {
		char host[256];
		if (!listen_split(ov->listen, host, sizeof(host))) {
			fail_option(c, "--listen", "expected %s, got \"%s\"", listen_expected,
				    ov->listen);
		} else {
			char *p = xstrdup(c, ov->listen);
			if (p) {
				free(cfg->daemon.listen);
				cfg->daemon.listen = p;
				c->listen_at = NULL;
			}
		}
	}
	if (ov->sim_gpus) {
		uint64_t sizes[VRAM_CONFIG_MAX_GPUS];
		int n = vram_units_parse_gpu_list(ov->sim_gpus, sizes, VRAM_CONFIG_MAX_GPUS);
		char hint[256];
		if (n == -ENOMEM) {
			c->oom = true;
		} else if (n == -EDOM) {
			fail_option(c, "--gpus", "a GPU size needs a unit: --gpus %s, not \"%s\"",
				    vram_units_gpu_list_hint(ov->sim_gpus, hint, sizeof(hint)),
				    ov->sim_gpus);
		} else if (n < 0) {
			fail_option(c, "--gpus", "expected a list like 2x80GiB or 1x24GiB,1x80GiB "
				    "(at most %d GPUs), got \"%s\"", VRAM_CONFIG_MAX_GPUS,
				    ov->sim_gpus);
		} else if (set_sim_sizes(c, sizes, (size_t)n)) {
			cfg->gpus.backend = VRAM_GPU_BACKEND_SIM;
		}
	}
	if (ov->state_dir) {
		if (!*ov->state_dir) {
			fail_option(c, "--state-dir", "expected a directory, got \"\"");
		} else {
			char *p = xstrdup(c, ov->state_dir);
			if (p) {
				free(cfg->daemon.state_dir);
				cfg->daemon.state_dir = p;
			}
		}
	}
}

/* /run/vramd as root, else $XDG_RUNTIME_DIR/vramd, else /tmp/vramd-$UID. */
static char *default_state_dir(void)
{
	char buf[PATH_MAX];
	const char *xdg = secure_getenv("XDG_RUNTIME_DIR");
	if (geteuid() == 0)
		snprintf(buf, sizeof(buf), "/run/vramd");
	else if (xdg && xdg[0] == '/')
		snprintf(buf, sizeof(buf), "%s/vramd", xdg);
	else
		snprintf(buf, sizeof(buf), "/tmp/vramd-%u", (unsigned)geteuid());
	return strdup(buf);
}

/*
 * The control socket and the private API socket next to it
 * (<socket>VRAM_CONFIG_API_SOCKET_SUFFIX) must fit in a sockaddr_un: a
 * longer path would fail only when vramd starts.
 */
static void check_socket_path(struct ctx *c)
{
	const struct vram_config *cfg = c->cfg;
	size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1 -
		     (sizeof(VRAM_CONFIG_HOOK_SOCKET_SUFFIX) - 1);
	if (!cfg->daemon.socket || strlen(cfg->daemon.socket) <= max)
		return;
	const char *key = c->socket_at ? "daemon.socket" : "daemon.state_dir";
	const struct vram_ynode *at = c->socket_at ? c->socket_at : c->state_dir_at;
	char what[96];
	snprintf(what, sizeof(what), "the control socket's path%s is %zu bytes",
		 c->socket_at ? "" : " (<state_dir>/vramd.sock)", strlen(cfg->daemon.socket));
	if (at) {
		size_t mark = path_push(c, "%s", key);
		fail(c, at, "%s, expected a path of at most %zu bytes (a Unix socket's limit)",
		     what, max);
		path_pop(c, mark);
	} else {
		fail_option(c, c->socket_at ? "daemon.socket" : "--state-dir",
			    "%s, expected a path of at most %zu bytes (a Unix socket's limit)", what,
			    max);
	}
}

/*
 * A control socket other users may open must be outside the state
 * directory, which is vramd's alone (0700): nobody else could reach it there.
 */
static void check_socket_access(struct ctx *c)
{
	struct vram_config *cfg = c->cfg;
	if (cfg->daemon.has_socket_group && !cfg->daemon.socket_mode)
		cfg->daemon.socket_mode = 0660;
	if (!cfg->daemon.socket_mode)
		cfg->daemon.socket_mode = 0600;
	if (cfg->daemon.socket_mode == 0600 || !cfg->daemon.socket || !cfg->daemon.state_dir)
		return;
	size_t n = strlen(cfg->daemon.state_dir);
	while (n > 1 && cfg->daemon.state_dir[n - 1] == '/')
		n--;
	if (strncmp(cfg->daemon.socket, cfg->daemon.state_dir, n) != 0 ||
	    (cfg->daemon.socket[n] != '/' && n > 1))
		return;
#define INSIDE_MSG                                                                          \
	"the control socket %s is inside the state directory, which only vramd's user may " \
	"enter (0700), so a mode of %04o reaches nobody else; expected daemon.socket "      \
	"outside it, like /run/vramd.sock"
	if (c->socket_mode_at) {
		size_t mark = path_push(c, "daemon.socket_mode");
		fail(c, c->socket_mode_at, INSIDE_MSG, cfg->daemon.socket, cfg->daemon.socket_mode);
		path_pop(c, mark);
	} else {
		fail_option(c, "daemon.socket_group", INSIDE_MSG, cfg->daemon.socket,
			    cfg->daemon.socket_mode);
	}
#undef INSIDE_MSG
}

/*
 * The default park directory, <state_dir>/park, must be as short as a
 * given one: a longer state directory would fail only at the first park.
 */
static void check_park_dir(struct ctx *c)
{
	const struct vram_config *cfg = c->cfg;
	if (cfg->host.park_dir || !cfg->daemon.state_dir)
		return;
	size_t n = strlen(cfg->daemon.state_dir) + sizeof("/park") - 1;
	if (n <= VRAM_CONFIG_PARK_DIR_MAX)
		return;
#define LONG_MSG "the default park directory (<state_dir>/park) would be %zu bytes, expected " \
		 "at most %d bytes, or host.park_dir set to a shorter one"
	if (c->state_dir_at) {
		size_t mark = path_push(c, "daemon.state_dir");
		fail(c, c->state_dir_at, LONG_MSG, n, VRAM_CONFIG_PARK_DIR_MAX);
		path_pop(c, mark);
	} else {
		fail_option(c, "--state-dir", LONG_MSG, n, VRAM_CONFIG_PARK_DIR_MAX);
	}
#undef LONG_MSG
}

/* A workload's fixed port cannot be vramd's own: its requests would loop through vramd. */
static void check_ports_against_listen(struct ctx *c, const struct vram_ynode *const *all_at)
{
	const struct vram_config *cfg = c->cfg;
	char host[256];
	if (!cfg->daemon.listen || !listen_split(cfg->daemon.listen, host, sizeof(host)))
		return;
	unsigned listen_port = (unsigned)strtoul(strrchr(cfg->daemon.listen, ':') + 1, NULL, 10);
	for (size_t i = 0; i < cfg->n_workloads; i++) {
		const struct vram_workload_config *w = &cfg->workloads[i];
		if (w->port != listen_port)
			continue;
		size_t mark = path_push(c, "workloads.%s.port", w->name ? w->name : "");
		fail(c, all_at[i * N_WL_KEYS + K_PORT],
		     "port %u is vramd's own (daemon.listen %s), expected another port or auto",
		     w->port, cfg->daemon.listen);
		path_pop(c, mark);
	}
}


/*
 * Reads daemon.token_file into *list: one token a line, blank lines and
 * lines starting with # skipped. The file holds a secret, so it must be
 * readable by its owner only, and the owner must be vramd's user or root:
 * anyone else could have written a token of their choosing into it.
 */
static void read_token_file(struct ctx *c, struct vram_buf *list, size_t *n)
{
	const char *path = c->cfg->daemon.token_file;
	const struct vram_ynode *at = c->token_file_at;
	size_t mark = path_push(c, "daemon.token_file");
	char *text = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		fail(c, at, "cannot open %s: %s, expected a readable file of tokens, one a line",
		     path, strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		fail(c, at, "cannot stat %s: %s", path, strerror(errno));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		fail(c, at, "%s is not a regular file, expected a file of tokens, one a line", path);
		goto out_close;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		fail(c, at, "%s has mode %04o, expected no access for group and others "
		     "(chmod 600 %s)", path, (unsigned)(st.st_mode & 07777), path);
		goto out_close;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		fail(c, at, "%s is owned by uid %u, expected vramd's user (uid %u) or root", path,
		     (unsigned)st.st_uid, (unsigned)geteuid());
		goto out_close;
	}
	if (st.st_size > VRAM_CONFIG_TOKEN_FILE_MAX) {
		fail(c, at, "%s is %lld bytes, expected at most %d", path, (long long)st.st_size,
		     VRAM_CONFIG_TOKEN_FILE_MAX);
		goto out_close;
	}
	text = malloc(VRAM_CONFIG_TOKEN_FILE_MAX + 1);
	if (!text) {
		c->oom = true;
		goto out_close;
	}
	size_t len = 0;
	for (;;) {
		ssize_t r = read(fd, text + len, VRAM_CONFIG_TOKEN_FILE_MAX + 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fail(c, at, "cannot read %s: %s", path, strerror(errno));
			goto out_close;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > VRAM_CONFIG_TOKEN_FILE_MAX) {
			fail(c, at, "%s is over %d bytes, expected at most %d", path,
			     VRAM_CONFIG_TOKEN_FILE_MAX, VRAM_CONFIG_TOKEN_FILE_MAX);
			goto out_close;
		}
	}
	text[len] = '\0';
	unsigned line_no = 0;
	for (char *line = text, *next; line && *line; line = next) {
		line_no++;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		size_t l = strlen(line);
		while (l && isspace((unsigned char)line[l - 1]))
			line[--l] = '\0';
		while (isspace((unsigned char)*line))
			line++;
		if (!*line || *line == '#')
			continue;
		if (!token_is_valid(line)) {
			fail(c, at, "%s line %u: expected one token without spaces or control "
			     "characters", path, line_no);
			continue;
		}
		if (++*n > VRAM_CONFIG_TOKENS_MAX) {
			fail(c, at, "%s has more than %d tokens, expected at most %d", path,
			     VRAM_CONFIG_TOKENS_MAX, VRAM_CONFIG_TOKENS_MAX);
			break;
		}
		if ((list->len && vram_buf_puts(list, "\n") < 0) || vram_buf_puts(list, line) < 0)
			c->oom = true;
	}
	if (*n == 0 && c->n_errs == 0)
		fail(c, at, "%s holds no token, expected one token a line", path);
	explicit_bzero(text, VRAM_CONFIG_TOKEN_FILE_MAX + 1);
out_close:
	close(fd);
out:
	free(text);
	path_pop(c, mark);
}

/*
 * Joins daemon.token, daemon.tokens and the lines of daemon.token_file into
 * daemon.token, one token a line, which is what the API and the gateway
 * check a request against (any one of them is accepted).
 */
static void join_tokens(struct ctx *c)
{
	struct vram_config *cfg = c->cfg;
	if (!cfg->daemon.n_tokens && !cfg->daemon.token_file)
		return;
	struct vram_buf list;
	size_t n = 0;
	vram_buf_init(&list, (size_t)VRAM_CONFIG_TOKEN_FILE_MAX * 2);
	if (cfg->daemon.token && vram_buf_puts(&list, cfg->daemon.token) < 0)
		c->oom = true;
	n += cfg->daemon.token != NULL;
	for (size_t i = 0; i < cfg->daemon.n_tokens; i++, n++)
		if ((list.len && vram_buf_puts(&list, "\n") < 0) ||
		    vram_buf_puts(&list, cfg->daemon.tokens[i]) < 0)
			c->oom = true;
	if (cfg->daemon.token_file)
		read_token_file(c, &list, &n);
	if (list.len == 0) {
		vram_buf_done(&list);
		return;
	}
	char *joined = vram_buf_take(&list);
	if (!joined) {
		c->oom = true;
		return;
	}
	if (cfg->daemon.token) {
		explicit_bzero(cfg->daemon.token, strlen(cfg->daemon.token));
		free(cfg->daemon.token);
	}
	cfg->daemon.token = joined;
}

static void finish_daemon(struct ctx *c)
{
	struct vram_config *cfg = c->cfg;
	if (!cfg->daemon.listen)
		cfg->daemon.listen = xstrdup(c, "127.0.0.1:8600");
	if (!cfg->daemon.log_level)
		cfg->daemon.log_level = xstrdup(c, "info");
	if (!cfg->daemon.state_dir && !(cfg->daemon.state_dir = default_state_dir()))
		c->oom = true;
	if (!cfg->daemon.socket && cfg->daemon.state_dir) {
		size_t len = strlen(cfg->daemon.state_dir) + sizeof("/vramd.sock");
		cfg->daemon.socket = malloc(len);
		if (cfg->daemon.socket)
			snprintf(cfg->daemon.socket, len, "%s/vramd.sock", cfg->daemon.state_dir);
		else
			c->oom = true;
	}
	join_tokens(c);
	if (cfg->daemon.listen && !cfg->daemon.token && !listen_is_loopback(cfg->daemon.listen)) {
		if (c->listen_at) {
			size_t mark = path_push(c, "daemon.listen");
			fail(c, c->listen_at, "%s is not a loopback address and daemon.token is "
			     "not set, expected a token or a listen address like 127.0.0.1:8600",
			     cfg->daemon.listen);
			path_pop(c, mark);
		} else {
			fail_option(c, "--listen", "%s is not a loopback address and daemon.token "
				    "is not set, expected a token or a listen address like "
				    "127.0.0.1:8600", cfg->daemon.listen);
		}
	}
	if (cfg->gpus.backend == VRAM_GPU_BACKEND_SIM && cfg->gpus.n_sim == 0)
		fail_option(c, "gpus.backend", "sim needs GPUs, expected gpus.sim like 2x80GiB "
			    "or --gpus 2x80GiB");
	unsigned errors = c->n_errs;
	check_socket_path(c);
	/* a state directory too long for the socket is reported once, there */
	if (c->n_errs == errors)
		check_park_dir(c);
	check_socket_access(c);
}

void vram_config_free(struct vram_config *config)
{
	if (!config)
		return;
	free(config->path);
	free(config->daemon.listen);
	free(config->daemon.socket);
	free(config->daemon.state_dir);
	free(config->daemon.log);
	free(config->daemon.log_level);
	free(config->daemon.token);
	free_strv(config->daemon.tokens);
	free(config->daemon.token_file);
	free(config->daemon.hook_library);
	free(config->daemon.access_log);
	free_strv(config->daemon.allowed_hosts);
	free_strv(config->daemon.cors_origins);
	free(config->daemon.run_as);
	free(config->daemon.socket_group);
	free(config->host.park_dir);
	free_sim(config);
	for (size_t i = 0; i < config->n_workloads; i++)
		workload_done(&config->workloads[i]);
	free(config->workloads);
	free(config);
}

const struct vram_workload_config *vram_config_find(const struct vram_config *config,
						    const char *name)
{
	if (!config || !name)
		return NULL;
	for (size_t i = 0; i < config->n_workloads; i++)
		if (config->workloads[i].name && strcmp(config->workloads[i].name, name) == 0)
			return &config->workloads[i];
	return NULL;
}

/* Hands the collected messages, sorted by position, to the caller as one
 * string with a line per error (nothing when ret_error is NULL). */
static void take_errors(struct ctx *c, char **ret_error)
{
	unsigned kept = c->n_errs < VRAM_CONFIG_MAX_ERRORS ? c->n_errs : VRAM_CONFIG_MAX_ERRORS;
	struct vram_buf b;

	if (!ret_error)
		return;
	vram_buf_init(&b, ERRORS_MAX_BYTES);
	qsort(c->errs, kept, sizeof(c->errs[0]), error_cmp);
	for (unsigned i = 0; i < kept; i++)
		vram_buf_printf(&b, "%s%s", i ? "\n" : "", c->errs[i].text ? c->errs[i].text : "");
	if (c->n_errs > kept)
		vram_buf_printf(&b, "\n%s: %u more errors not shown", c->name, c->n_errs - kept);
	*ret_error = vram_buf_take(&b);
}

static void set_error(char **ret_error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char **ret_error, const char *fmt, ...)
{
	if (!ret_error)
		return;
	struct vram_buf b;
	vram_buf_init(&b, ERRORS_MAX_BYTES);
	va_list ap;
	va_start(ap, fmt);
	vram_buf_vprintf(&b, fmt, ap);
	va_end(ap);
	*ret_error = vram_buf_take(&b);
}

int vram_config_parse(const char *text, size_t len, const char *name,
		      const struct vram_config_overrides *ov,
		      struct vram_config **ret_config, char **ret_error)
{
	struct ctx c = { .name = name ? name : "<config>" };
	struct vram_ynode *root = NULL;
	const struct vram_ynode **wl_at = NULL;
	struct vram_yaml_error yerr;
	int r;

	if (ret_error)
		*ret_error = NULL;
	if (len > VRAM_CONFIG_MAX_FILE_BYTES) {
		set_error(ret_error, "%s: the file is %zu bytes, expected at most %d bytes",
			  c.name, len, VRAM_CONFIG_MAX_FILE_BYTES);
		return -EFBIG;
	}

	workload_builtin_defaults(&c.defaults);
	c.cfg = calloc(1, sizeof(*c.cfg));
	if (!c.cfg)
		return -ENOMEM;
	c.cfg->path = xstrdup(&c, c.name);
	c.cfg->daemon.workload_log_max_bytes = 10 * VRAM_MiB;
	c.cfg->daemon.workload_log_keep = 3;
	c.cfg->daemon.access_log_max_bytes = 10 * VRAM_MiB;
	c.cfg->daemon.access_log_keep = 3;
	c.cfg->daemon.port_range_start = 18000;
	c.cfg->daemon.upgrade_drain_ms = 10000;
	c.cfg->daemon.open_healthz = true;
	c.cfg->host.premake_buffers = true;
	c.cfg->host.reserve = VRAM_CONFIG_HOST_RESERVE_DEFAULT;

	r = vram_yaml_parse(text ? text : "", text ? len : 0, &root, &yerr);
	if (r == -EINVAL) {
		report_at(&c, yerr.line, yerr.col, yerr.path, "%s", yerr.msg);
		goto out_errors;
	}
	if (r < 0)
		goto out_free;

	const struct vram_ynode *top[N_TOP_KEYS] = { 0 };
	if (root && root->type != VRAM_YNODE_NULL) {
		if (root->type != VRAM_YNODE_MAP)
			fail(&c, root, "expected a mapping with daemon, gpus, host, defaults "
				       "and workloads, got %s", GOT(root));
		else
			walk_map(&c, root, top_keys, N_TOP_KEYS, NULL, WALK_ALL, top);
	}
	section(&c, top[T_DAEMON], "daemon", daemon_keys, N_KEYS(daemon_keys), c.cfg, WALK_ALL);
	section(&c, top[T_GPUS], "gpus", gpus_keys, N_KEYS(gpus_keys), c.cfg, WALK_ALL);
	section(&c, top[T_HOST], "host", host_keys, N_KEYS(host_keys), c.cfg, WALK_ALL);
	section(&c, top[T_DEFAULTS], "defaults", workload_keys, N_WL_KEYS, &c.defaults,
		WALK_DEFAULTS);
	if (top[T_WORKLOADS]) {
		size_t mark = path_push_key(&c, "workloads");
		parse_workloads(&c, top[T_WORKLOADS], &wl_at);
		path_pop(&c, mark);
	}
	if (wl_at && !c.oom)
		check_workloads(&c, wl_at);
	apply_overrides(&c, ov);
	if (!c.oom)
		finish_daemon(&c);
	if (wl_at && !c.oom)
		check_ports_against_listen(&c, wl_at);

	if (c.oom) {
		r = -ENOMEM;
		goto out_free;
	}
	if (c.n_errs)
		goto out_errors;

	*ret_config = c.cfg;
	c.cfg = NULL;
	r = 0;
	goto out_free;

out_errors:
	take_errors(&c, ret_error);
	r = -EINVAL;
out_free:
	free(wl_at);
	free(c.defaults.health.path);
	vram_ynode_free(root);
	vram_config_free(c.cfg);
	for (unsigned i = 0; i < c.n_errs && i < VRAM_CONFIG_MAX_ERRORS; i++)
		free(c.errs[i].text);
	return r;
}

int vram_config_load(const char *path, const struct vram_config_overrides *ov,
		     struct vram_config **ret_config, char **ret_error)
{
	char *text = NULL;
	size_t len = 0;
	struct stat st;
	int r;

	if (ret_error)
		*ret_error = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		set_error(ret_error, "%s: cannot open: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		set_error(ret_error, "%s: cannot stat: %s", path, strerror(-r));
		goto out_close;
	}
	if (S_ISDIR(st.st_mode)) {
		r = -EISDIR;
		set_error(ret_error, "%s: is a directory, expected a YAML file", path);
		goto out_close;
	}
	/* Read at most one byte past the limit, whatever fstat says, so that
	 * pipes and growing files are bounded too. */
	ssize_t n = vram_read_bounded(fd, VRAM_CONFIG_MAX_FILE_BYTES + 1, &text);
	if (n < 0) {
		r = (int)n;
		if (r != -ENOMEM)
			set_error(ret_error, "%s: cannot read: %s", path, strerror(-r));
		goto out_close;
	}
	len = (size_t)n;
	r = vram_config_parse(text, len, path, ov, ret_config, ret_error);
	free(text);
out_close:
	close(fd);
	return r;
}
