/* SPDX-License-Identifier: MIT */
/* The state file: its JSON form, written atomically and read defensively (see statefile.h). */
#include "daemon/statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/fsutil.h"
#include "common/version.h"

static const char *const inst_state_names[] = {
	[VRAM_STATEFILE_READY] = "ready",
	[VRAM_STATEFILE_OFFLOADED] = "offloaded",
	[VRAM_STATEFILE_STARTING] = "starting",
	[VRAM_STATEFILE_PARKED] = "parked",
};

const char *vram_statefile_inst_state_name(enum vram_statefile_inst_state s)
{
	return (unsigned)s < sizeof(inst_state_names) / sizeof(inst_state_names[0])
		       ? inst_state_names[s]
		       : "?";
}

/* ---- freeing ---- */

static void free_strv(char **v, size_t n)
{
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void vram_statefile_done(struct vram_statefile *sf)
{
	if (!sf)
		return;
	for (size_t i = 0; sf->workloads && i < sf->n_workloads; i++) {
		struct vram_statefile_workload *w = &sf->workloads[i];
		free(w->name);
		free_strv(w->adhoc.cmd, w->adhoc.n_cmd);
		free_strv(w->adhoc.env, w->adhoc.n_env);
		free(w->adhoc.cwd);
		free(w->adhoc.owner.groups);
		for (size_t j = 0; w->instances && j < w->n_instances; j++) {
			free_strv(w->instances[j].gpu_uuids, w->instances[j].n_gpus);
			free_strv(w->instances[j].cmdline, w->instances[j].n_cmdline);
			free(w->instances[j].gpu_bytes);
			free(w->instances[j].engine);
		}
		free(w->instances);
	}
	free(sf->workloads);
	for (size_t i = 0; sf->mps && i < sf->n_mps; i++)
		free(sf->mps[i].pipe_dir);
	free(sf->mps);
	memset(sf, 0, sizeof(*sf));
}

/* ---- writing ---- */

/* Adds key: value to obj, stealing value; false on out of memory (or a NULL value). */
static bool put(json_t *obj, const char *key, json_t *value)
{
	return value && json_object_set_new(obj, key, value) == 0;
}

static json_t *strv_json(char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append_new(a, json_string(v[i] ? v[i] : "")) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* A runtime duration: absent when not set, "never", or whole ms. */
static bool put_ms(json_t *obj, const char *key, const struct vram_statefile_ms *v)
{
	if (!v->set)
		return true;
	if (v->ms == VRAM_DURATION_NEVER)
		return put(obj, key, json_string("never"));
	return put(obj, key, json_integer((json_int_t)v->ms));
}

static json_t *u64v_json(const uint64_t *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append_new(a, json_integer((json_int_t)v[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static json_t *instance_json(const struct vram_statefile_instance *in)
{
	json_t *o = json_object();
	if (!o || !put(o, "replica", json_integer(in->replica)) ||
	    !put(o, "pid", json_integer(in->pid)) ||
	    (in->n_cmdline && !put(o, "cmdline", strv_json(in->cmdline, in->n_cmdline))) ||
	    (in->relay_pid > 0 && (!put(o, "relay_pid", json_integer(in->relay_pid)) ||
				   !put(o, "relay_start_ticks",
					json_integer((json_int_t)in->relay_start_ticks)))) ||
	    (in->gpu_bytes && !put(o, "gpu_bytes", u64v_json(in->gpu_bytes, in->n_gpus))) ||
	    (in->mps && !put(o, "mps", json_true())) ||
	    !put(o, "start_ticks", json_integer((json_int_t)in->start_ticks)) ||
	    !put(o, "pgid", json_integer(in->pgid)) || !put(o, "port", json_integer(in->port)) ||
	    !put(o, "gpus", strv_json(in->gpu_uuids, in->n_gpus)) ||
	    (in->engine && !put(o, "engine", json_string(in->engine))) ||
	    !put(o, "state", json_string(vram_statefile_inst_state_name(in->state))) ||
	    (in->state == VRAM_STATEFILE_OFFLOADED &&
	     !put(o, "offloaded_bytes", json_integer((json_int_t)in->offloaded_bytes))) ||
	    (in->state == VRAM_STATEFILE_PARKED &&
	     !put(o, "parked_bytes", json_integer((json_int_t)in->parked_bytes)))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *adhoc_json(const struct vram_statefile_adhoc *a)
{
	json_t *o = json_object(), *owner = json_object(), *groups = json_array();
	bool ok = o && owner && groups;
	for (size_t i = 0; ok && i < a->owner.n_groups; i++)
		ok = json_array_append_new(groups, json_integer(a->owner.groups[i])) == 0;
	ok = ok && put(owner, "as_daemon", json_boolean(a->owner.as_daemon)) &&
	     put(owner, "uid", json_integer(a->owner.uid)) &&
	     put(owner, "gid", json_integer(a->owner.gid)) && put(owner, "groups", groups);
	groups = NULL;
	ok = ok && put(o, "cmd", strv_json(a->cmd, a->n_cmd)) &&
	     put(o, "env", strv_json(a->env, a->n_env)) &&
	     (!a->cwd || put(o, "cwd", json_string(a->cwd))) &&
	     (a->memory.is_fraction ? put(o, "memory_fraction", json_real(a->memory.fraction))
				    : put(o, "memory_bytes", json_integer((json_int_t)a->memory.bytes))) &&
	     put(o, "gpus", json_integer(a->gpus)) && put(o, "owner", owner);
	owner = NULL;
	json_decref(groups);
	json_decref(owner);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *workload_json(const struct vram_statefile_workload *w)
{
	json_t *o = json_object(), *runtime = json_object(), *insts = json_array();
	bool ok = o && runtime && insts && put(o, "name", json_string(w->name ? w->name : "")) &&
		  put_ms(runtime, "offload_after_ms", &w->offload_after) &&
		  put_ms(runtime, "release_after_ms", &w->release_after) &&
		  put_ms(runtime, "park_after_ms", &w->park_after);
	for (size_t i = 0; ok && i < w->n_instances; i++)
		ok = json_array_append_new(insts, instance_json(&w->instances[i])) == 0;
	ok = ok && put(o, "runtime", runtime);
	runtime = NULL;
	ok = ok && put(o, "instances", insts);
	insts = NULL;
	ok = ok && (!w->is_adhoc || put(o, "adhoc", adhoc_json(&w->adhoc)));
	json_decref(runtime);
	json_decref(insts);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *statefile_json(const struct vram_statefile *sf)
{
	json_t *o = json_object(), *ws = json_array(), *mps = json_array();
	bool ok = o && ws && mps && put(o, "format", json_string(VRAM_STATEFILE_FORMAT)) &&
		  put(o, "version", json_integer(VRAM_STATEFILE_VERSION)) &&
		  put(o, "written_by", json_string(VRAM_VERSION)) &&
		  put(o, "written_at", json_integer((json_int_t)time(NULL)));
	for (size_t i = 0; ok && i < sf->n_workloads; i++)
		ok = json_array_append_new(ws, workload_json(&sf->workloads[i])) == 0;
	for (size_t i = 0; ok && i < sf->n_mps; i++) {
		const struct vram_statefile_mps *d = &sf->mps[i];
		json_t *m = json_object();
		ok = m && put(m, "pipe_dir", json_string(d->pipe_dir ? d->pipe_dir : "")) &&
		     put(m, "pid", json_integer(d->pid)) &&
		     put(m, "start_ticks", json_integer((json_int_t)d->start_ticks));
		ok = ok ? json_array_append_new(mps, m) == 0 : (json_decref(m), false);
	}
	ok = ok && put(o, "workloads", ws);
	ws = NULL;
	ok = ok && put(o, "mps", mps);
	mps = NULL;
	json_decref(ws);
	json_decref(mps);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* fsync of the directory holding path, so that the rename itself is on disk. */
static int sync_dir_of(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else if ((size_t)(slash - path) >= sizeof(dir))
		return -ENAMETOOLONG;
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

int vram_statefile_write(const char *path, const struct vram_statefile *sf, char *why,
			 size_t why_size)
{
	char tmp[4096];
	char *text = NULL;
	int fd = -1, r;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		snprintf(why, why_size, "the state file path %s is too long", path);
		return -ENAMETOOLONG;
	}
	json_t *j = statefile_json(sf);
	text = j ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	if (!text) {
		snprintf(why, why_size, "out of memory writing the state file %s", path);
		return -ENOMEM;
	}
	/* a stale temporary file of an earlier crash is replaced; a link there is not followed */
	fd = vram_open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		r = fd;
		snprintf(why, why_size, "cannot create %s: %s", tmp, vram_open_strerror(-r));
		goto out_free;
	}
	/* an existing file keeps its mode otherwise: the state is private */
	if (fchmod(fd, 0600) < 0 || (r = write_all(fd, text, strlen(text))) < 0 ||
	    fsync(fd) < 0) {
		r = r < 0 ? r : -errno;
		snprintf(why, why_size, "cannot write %s: %s", tmp, strerror(-r));
		goto out_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		snprintf(why, why_size, "cannot write %s: %s", tmp, strerror(-r));
		goto out_unlink;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = -errno;
		snprintf(why, why_size, "cannot rename %s to %s: %s", tmp, path, strerror(-r));
		goto out_unlink;
	}
	r = sync_dir_of(path);
	if (r < 0) {
		snprintf(why, why_size, "cannot sync the directory of %s: %s", path, strerror(-r));
		goto out_free;
	}
	r = 0;
	goto out_free;
out_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out_free:
	free(text);
	return r;
}

/* ---- reading ---- */

/* Where the reader is, for the sentence: "workloads[2].instances[0]". */
struct rd {
	const char *name; /* the file, for the sentences */
	char *why;
	size_t why_size;
};

static int bad(struct rd *rd, const char *where, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int bad(struct rd *rd, const char *where, const char *key, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(rd->why, rd->why_size, "%s: %s%s%s: %s", rd->name, where,
		 *where && *key ? "." : "", key, what);
	return -EBADMSG;
}

/* where + key (+ "[i]" when i >= 0) into buf: the path of a nested value, cut at size bytes. */
static const char *sub(char *buf, size_t size, const char *where, const char *key, long i)
{
	char idx[24] = "";
	if (i >= 0)
		snprintf(idx, sizeof(idx), "[%ld]", i);
	const char *parts[] = { where, key, idx };
	size_t len = 0;
	for (size_t p = 0; p < 3; p++)
		for (const char *c = parts[p]; *c && len + 1 < size; c++)
			buf[len++] = *c;
	buf[len] = '\0';
	return buf;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "a number";
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "true or false";
	default: return "null";
	}
}

/* A whole number lo..hi at key; optional keys keep *ret when absent. */
static int get_uint(struct rd *rd, const char *where, json_t *obj, const char *key, bool required,
		    uint64_t lo, uint64_t hi, uint64_t *ret)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return required ? bad(rd, where, key, "missing") : 0;
	json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
	if (!json_is_integer(v) || n < 0 || (uint64_t)n < lo || (uint64_t)n > hi)
		return bad(rd, where, key, "expected a whole number from %llu to %llu, got %s",
			   (unsigned long long)lo, (unsigned long long)hi,
			   json_is_integer(v) ? "one out of range" : type_name(v));
	*ret = (uint64_t)n;
	return 0;
}

/* A string of at most max bytes, no NUL inside; *ret is a copy (caller frees). */
static int get_str(struct rd *rd, const char *where, json_t *obj, const char *key, bool required,
		   size_t max, char **ret)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return required ? bad(rd, where, key, "missing") : 0;
	if (!json_is_string(v))
		return bad(rd, where, key, "expected a string, got %s", type_name(v));
	size_t len = json_string_length(v);
	if (len == 0 || len > max || memchr(json_string_value(v), '\0', len))
		return bad(rd, where, key, "expected 1 to %zu bytes without NUL, got %zu bytes", max,
			   len);
	*ret = strdup(json_string_value(v));
	return *ret ? 0 : -ENOMEM;
}

/* An array of at most max strings (each as get_str); *ret NULL-terminated, caller frees. */
static int get_strv(struct rd *rd, const char *where, json_t *obj, const char *key,
		    size_t min, size_t max, size_t str_max, char ***ret, size_t *ret_n)
{
	json_t *a = json_object_get(obj, key);
	if (!a)
		return min ? bad(rd, where, key, "missing") : 0;
	if (!json_is_array(a) || json_array_size(a) < min || json_array_size(a) > max)
		return bad(rd, where, key, "expected an array of %zu to %zu strings, got %s", min,
			   max, json_is_array(a) ? "another count" : type_name(a));
	size_t n = json_array_size(a);
	char **v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(a, i);
		size_t len = json_is_string(s) ? json_string_length(s) : 0;
		if (!json_is_string(s) || len > str_max || memchr(json_string_value(s), '\0', len)) {
			free_strv(v, i);
			return bad(rd, where, key, "item %zu: expected a string of at most %zu bytes "
						   "without NUL", i, str_max);
		}
		v[i] = strdup(json_string_value(s));
		if (!v[i]) {
			free_strv(v, i);
			return -ENOMEM;
		}
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int get_ms(struct rd *rd, const char *where, json_t *obj, const char *key,
		  struct vram_statefile_ms *ret)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (json_is_string(v) && strcmp(json_string_value(v), "never") == 0) {
		*ret = (struct vram_statefile_ms){ .set = true, .ms = VRAM_DURATION_NEVER };
		return 0;
	}
	uint64_t ms;
	if (!json_is_integer(v))
		return bad(rd, where, key, "expected ms or \"never\", got %s", type_name(v));
	int r = get_uint(rd, where, obj, key, true, 0, VRAM_DURATION_NEVER / 2, &ms);
	if (r == 0)
		*ret = (struct vram_statefile_ms){ .set = true, .ms = ms };
	return r;
}

/* An optional boolean. */
static int get_bool(struct rd *rd, const char *where, json_t *obj, const char *key, bool *ret)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad(rd, where, key, "expected true or false, got %s", type_name(v));
	*ret = json_is_true(v);
	return 0;
}

/* An optional array of exactly n byte counts; *ret (caller frees) stays NULL when absent. */
static int get_u64v(struct rd *rd, const char *where, json_t *obj, const char *key, size_t n,
		    uint64_t **ret)
{
	json_t *a = json_object_get(obj, key);
	if (!a)
		return 0;
	if (!json_is_array(a) || json_array_size(a) != n)
		return bad(rd, where, key, "expected an array of %zu byte counts, one per GPU, got %s",
			   n, json_is_array(a) ? "another count" : type_name(a));
	uint64_t *v = calloc(n + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(a, i);
		json_int_t x = json_is_integer(e) ? json_integer_value(e) : -1;
		if (x < 0) {
			free(v);
			return bad(rd, where, key, "item %zu: expected a whole number of bytes", i);
		}
		v[i] = (uint64_t)x;
	}
	*ret = v;
	return 0;
}

static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > VRAM_STATEFILE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static int want_object(struct rd *rd, const char *where, const char *key, json_t *v)
{
	return json_is_object(v) ? 0 : bad(rd, where, key, "expected an object, got %s",
					    type_name(v));
}

static int read_instance(struct rd *rd, const char *where, json_t *o,
			 struct vram_statefile_instance *in)
{
	uint64_t pid = 0, pgid = 0, port = 0, replica = in->replica, relay = 0;
	int r = want_object(rd, where, "", o);
	if (r == 0)
		r = get_uint(rd, where, o, "replica", false, 0, VRAM_STATEFILE_MAX_INSTANCES - 1,
			     &replica);
	if (r == 0)
		r = get_uint(rd, where, o, "pid", true, 1, VRAM_STATEFILE_PID_MAX, &pid);
	if (r == 0)
		r = get_strv(rd, where, o, "cmdline", 0, VRAM_STATEFILE_MAX_ARGS,
			     VRAM_STATEFILE_STRING_MAX, &in->cmdline, &in->n_cmdline);
	if (r == 0)
		r = get_uint(rd, where, o, "relay_pid", false, 1, VRAM_STATEFILE_PID_MAX, &relay);
	if (r == 0 && relay)
		r = get_uint(rd, where, o, "relay_start_ticks", true, 0, INT64_MAX,
			     &in->relay_start_ticks);
	if (r == 0)
		r = get_bool(rd, where, o, "mps", &in->mps);
	if (r == 0)
		r = get_uint(rd, where, o, "start_ticks", true, 0, INT64_MAX, &in->start_ticks);
	if (r == 0)
		r = get_uint(rd, where, o, "pgid", true, 1, VRAM_STATEFILE_PID_MAX, &pgid);
	if (r == 0)
		r = get_uint(rd, where, o, "port", true, 0, 65535, &port);
	if (r == 0)
		r = get_strv(rd, where, o, "gpus", 0, VRAM_STATEFILE_MAX_GPUS, 128, &in->gpu_uuids,
			     &in->n_gpus);
	if (r == 0)
		r = get_u64v(rd, where, o, "gpu_bytes", in->n_gpus, &in->gpu_bytes);
	if (r == 0)
		r = get_str(rd, where, o, "engine", false, 32, &in->engine);
	if (r < 0)
		return r;
	in->replica = (unsigned)replica;
	in->relay_pid = (pid_t)relay;
	in->pid = (pid_t)pid;
	in->pgid = (pid_t)pgid;
	in->port = (unsigned)port;
	json_t *st = json_object_get(o, "state");
	const char *s = json_is_string(st) ? json_string_value(st) : "";
	size_t k = 0;
	while (k < sizeof(inst_state_names) / sizeof(inst_state_names[0]) &&
	       strcmp(s, inst_state_names[k]) != 0)
		k++;
	if (k == sizeof(inst_state_names) / sizeof(inst_state_names[0]))
		return bad(rd, where, "state",
			   "expected \"ready\", \"offloaded\", \"starting\" or \"parked\"");
	in->state = (enum vram_statefile_inst_state)k;
	if (in->state == VRAM_STATEFILE_OFFLOADED)
		return get_uint(rd, where, o, "offloaded_bytes", true, 0, INT64_MAX,
				&in->offloaded_bytes);
	if (in->state == VRAM_STATEFILE_PARKED)
		return get_uint(rd, where, o, "parked_bytes", true, 0, INT64_MAX, &in->parked_bytes);
	return 0;
}

static int read_adhoc(struct rd *rd, const char *where, json_t *o, struct vram_statefile_adhoc *a)
{
	uint64_t n = 0;
	int r = want_object(rd, where, "", o);
	if (r == 0)
		r = get_strv(rd, where, o, "cmd", 1, VRAM_STATEFILE_MAX_ARGS,
			     VRAM_STATEFILE_STRING_MAX, &a->cmd, &a->n_cmd);
	if (r == 0)
		r = get_strv(rd, where, o, "env", 0, VRAM_STATEFILE_MAX_ENV,
			     VRAM_STATEFILE_STRING_MAX, &a->env, &a->n_env);
	if (r == 0 && !a->env)
		a->env = calloc(1, sizeof(*a->env)), r = a->env ? 0 : -ENOMEM;
	if (r == 0)
		r = get_str(rd, where, o, "cwd", false, VRAM_STATEFILE_STRING_MAX, &a->cwd);
	if (r == 0)
		r = get_uint(rd, where, o, "gpus", true, 0, VRAM_STATEFILE_MAX_GPUS, &n);
	if (r < 0)
		return r;
	a->gpus = (unsigned)n;
	json_t *frac = json_object_get(o, "memory_fraction");
	if (frac) {
		double f = json_is_number(frac) ? json_number_value(frac) : -1;
		if (!(f > 0 && f <= 1))
			return bad(rd, where, "memory_fraction", "expected a number in (0, 1]");
		a->memory = (struct vram_mem){ .is_fraction = true, .fraction = f };
	} else {
		r = get_uint(rd, where, o, "memory_bytes", false, 0, INT64_MAX, &a->memory.bytes);
		if (r < 0)
			return r;
	}
	char at[192];
	sub(at, sizeof(at), where, ".owner", -1);
	json_t *ow = json_object_get(o, "owner");
	if (!ow)
		return bad(rd, where, "owner", "missing");
	if ((r = want_object(rd, where, "owner", ow)) < 0)
		return r;
	json_t *asd = json_object_get(ow, "as_daemon");
	if (asd && !json_is_boolean(asd))
		return bad(rd, at, "as_daemon", "expected true or false, got %s", type_name(asd));
	a->owner.as_daemon = json_is_true(asd);
	uint64_t uid = 0, gid = 0;
	if ((r = get_uint(rd, at, ow, "uid", true, 0, UINT32_MAX - 1, &uid)) < 0 ||
	    (r = get_uint(rd, at, ow, "gid", true, 0, UINT32_MAX - 1, &gid)) < 0)
		return r;
	a->owner.uid = (uint32_t)uid;
	a->owner.gid = (uint32_t)gid;
	json_t *g = json_object_get(ow, "groups");
	if (!g)
		return 0;
	if (!json_is_array(g) || json_array_size(g) > VRAM_STATEFILE_MAX_GROUPS)
		return bad(rd, at, "groups", "expected an array of at most %d group ids",
			   VRAM_STATEFILE_MAX_GROUPS);
	a->owner.groups = calloc(json_array_size(g) + 1, sizeof(*a->owner.groups));
	if (!a->owner.groups)
		return -ENOMEM;
	for (size_t i = 0; i < json_array_size(g); i++) {
		json_t *v = json_array_get(g, i);
		json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
		if (id < 0 || id >= (json_int_t)UINT32_MAX)
			return bad(rd, at, "groups", "item %zu: expected a group id", i);
		a->owner.groups[a->owner.n_groups++] = (uint32_t)id;
	}
	return 0;
}

static int read_workload(struct rd *rd, const char *where, json_t *o,
			 struct vram_statefile_workload *w)
{
	int r = want_object(rd, where, "", o);
	if (r == 0)
		r = get_str(rd, where, o, "name", true, VRAM_STATEFILE_NAME_MAX, &w->name);
	if (r < 0)
		return r;
	if (!name_ok(w->name))
		return bad(rd, where, "name", "expected 1 to %d of A-Z a-z 0-9 . _ -",
			   VRAM_STATEFILE_NAME_MAX);
	json_t *rt = json_object_get(o, "runtime");
	if (rt) {
		char at[192];
		sub(at, sizeof(at), where, ".runtime", -1);
		if ((r = want_object(rd, where, "runtime", rt)) < 0 ||
		    (r = get_ms(rd, at, rt, "offload_after_ms", &w->offload_after)) < 0 ||
		    (r = get_ms(rd, at, rt, "release_after_ms", &w->release_after)) < 0 ||
		    (r = get_ms(rd, at, rt, "park_after_ms", &w->park_after)) < 0)
			return r;
	}
	json_t *ad = json_object_get(o, "adhoc");
	if (ad) {
		char at[192];
		sub(at, sizeof(at), where, ".adhoc", -1);
		w->is_adhoc = true;
		if ((r = read_adhoc(rd, at, ad, &w->adhoc)) < 0)
			return r;
	}
	json_t *insts = json_object_get(o, "instances");
	if (!insts)
		return 0;
	if (!json_is_array(insts) || json_array_size(insts) > VRAM_STATEFILE_MAX_INSTANCES)
		return bad(rd, where, "instances", "expected an array of at most %d instances",
			   VRAM_STATEFILE_MAX_INSTANCES);
	w->instances = calloc(json_array_size(insts) + 1, sizeof(*w->instances));
	if (!w->instances)
		return -ENOMEM;
	for (size_t i = 0; i < json_array_size(insts); i++) {
		char at[192];
		sub(at, sizeof(at), where, ".instances", (long)i);
		w->n_instances = i + 1; /* freed by done even half-filled */
		w->instances[i].replica = (unsigned)i; /* when the file does not say */
		if ((r = read_instance(rd, at, json_array_get(insts, i), &w->instances[i])) < 0)
			return r;
	}
	return 0;
}

static int read_mps(struct rd *rd, const char *where, json_t *o, struct vram_statefile_mps *d)
{
	uint64_t pid = 0;
	int r = want_object(rd, where, "", o);
	if (r == 0)
		r = get_str(rd, where, o, "pipe_dir", true, VRAM_STATEFILE_STRING_MAX, &d->pipe_dir);
	if (r == 0)
		r = get_uint(rd, where, o, "pid", true, 1, VRAM_STATEFILE_PID_MAX, &pid);
	if (r == 0)
		r = get_uint(rd, where, o, "start_ticks", true, 0, INT64_MAX, &d->start_ticks);
	d->pid = (pid_t)pid;
	return r;
}

static int read_root(struct rd *rd, json_t *root, struct vram_statefile *sf)
{
	json_t *fmt = json_is_object(root) ? json_object_get(root, "format") : NULL;
	if (!json_is_string(fmt) || strcmp(json_string_value(fmt), VRAM_STATEFILE_FORMAT) != 0) {
		snprintf(rd->why, rd->why_size,
			 "%s is not a vramd state file (no \"format\": \"" VRAM_STATEFILE_FORMAT
			 "\")", rd->name);
		return -EPROTO;
	}
	json_t *ver = json_object_get(root, "version");
	if (!json_is_integer(ver) || json_integer_value(ver) != VRAM_STATEFILE_VERSION) {
		char got[32] = "none";
		if (json_is_integer(ver))
			snprintf(got, sizeof(got), "%lld", (long long)json_integer_value(ver));
		snprintf(rd->why, rd->why_size,
			 "%s is a vramd state file of version %s; this vramd reads version %d",
			 rd->name, got, VRAM_STATEFILE_VERSION);
		return -EPROTO;
	}
	json_t *by = json_object_get(root, "written_by");
	if (json_is_string(by))
		snprintf(sf->written_by, sizeof(sf->written_by), "%s", json_string_value(by));
	json_t *at = json_object_get(root, "written_at");
	if (json_is_integer(at))
		sf->written_at = json_integer_value(at);

	int r;
	json_t *ws = json_object_get(root, "workloads");
	if (ws) {
		if (!json_is_array(ws) || json_array_size(ws) > VRAM_STATEFILE_MAX_WORKLOADS)
			return bad(rd, "", "workloads", "expected an array of at most %d workloads",
				   VRAM_STATEFILE_MAX_WORKLOADS);
		sf->workloads = calloc(json_array_size(ws) + 1, sizeof(*sf->workloads));
		if (!sf->workloads)
			return -ENOMEM;
		for (size_t i = 0; i < json_array_size(ws); i++) {
			char where[64];
			snprintf(where, sizeof(where), "workloads[%zu]", i);
			sf->n_workloads = i + 1;
			if ((r = read_workload(rd, where, json_array_get(ws, i), &sf->workloads[i])) < 0)
				return r;
			for (size_t k = 0; k < i; k++)
				if (strcmp(sf->workloads[k].name, sf->workloads[i].name) == 0)
					return bad(rd, where, "name", "\"%s\" appears twice",
						   sf->workloads[i].name);
		}
	}
	json_t *mps = json_object_get(root, "mps");
	if (mps) {
		if (!json_is_array(mps) || json_array_size(mps) > VRAM_STATEFILE_MAX_MPS)
			return bad(rd, "", "mps", "expected an array of at most %d MPS daemons",
				   VRAM_STATEFILE_MAX_MPS);
		sf->mps = calloc(json_array_size(mps) + 1, sizeof(*sf->mps));
		if (!sf->mps)
			return -ENOMEM;
		for (size_t i = 0; i < json_array_size(mps); i++) {
			char where[64];
			snprintf(where, sizeof(where), "mps[%zu]", i);
			sf->n_mps = i + 1;
			if ((r = read_mps(rd, where, json_array_get(mps, i), &sf->mps[i])) < 0)
				return r;
		}
	}
	return 0;
}

int vram_statefile_parse(const char *text, size_t size, const char *name,
			 struct vram_statefile *ret, char *why, size_t why_size)
{
	struct rd rd = { .name = name, .why = why, .why_size = why_size };
	json_error_t jerr;
	memset(ret, 0, sizeof(*ret));
	if (size > VRAM_STATEFILE_MAX_BYTES) {
		snprintf(why, why_size, "%s is larger than %d bytes (%zu bytes)", name,
			 VRAM_STATEFILE_MAX_BYTES, size);
		return -EFBIG;
	}
	if (size == 0) {
		snprintf(why, why_size, "%s is empty (truncated)", name);
		return -EBADMSG;
	}
	json_t *root = json_loadb(text, size, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(why, why_size, "%s is not valid JSON (truncated or corrupt): %s at line %d, "
					"column %d", name, jerr.text, jerr.line, jerr.column);
		return -EBADMSG;
	}
	int r = read_root(&rd, root, ret);
	json_decref(root);
	if (r == -ENOMEM)
		snprintf(why, why_size, "out of memory reading %s", name);
	if (r < 0)
		vram_statefile_done(ret);
	return r;
}

int vram_statefile_read(const char *path, struct vram_statefile *ret, char *why, size_t why_size)
{
	struct stat st;
	char *text = NULL;
	memset(ret, 0, sizeof(*ret));
	int fd = vram_open_file(path, O_RDONLY, 0);
	if (fd == -ENOENT) {
		snprintf(why, why_size, "there is no state file %s", path);
		return fd;
	}
	if (fd < 0) {
		snprintf(why, why_size, "the state file %s %s", path, vram_open_strerror(-fd));
		return fd;
	}
	int r;
	if (fstat(fd, &st) < 0) {
		r = -errno;
		snprintf(why, why_size, "cannot read the state file %s: %s", path, strerror(-r));
		goto out_close;
	}
	if (st.st_size > VRAM_STATEFILE_MAX_BYTES) {
		snprintf(why, why_size, "%s is larger than %d bytes (%lld bytes)", path,
			 VRAM_STATEFILE_MAX_BYTES, (long long)st.st_size);
		r = -EFBIG;
		goto out_close;
	}
	/* read to the bound, not to st_size: the file may grow meanwhile */
	ssize_t len = vram_read_bounded(fd, VRAM_STATEFILE_MAX_BYTES + 1, &text);
	if (len < 0) {
		r = (int)len;
		if (r == -ENOMEM)
			snprintf(why, why_size, "out of memory reading %s", path);
		else
			snprintf(why, why_size, "cannot read the state file %s: %s", path, strerror(-r));
		goto out_close;
	}
	r = vram_statefile_parse(text, (size_t)len, path, ret, why, why_size);
	free(text);
out_close:
	close(fd);
	return r;
}
