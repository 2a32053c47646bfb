/* SPDX-License-Identifier: MIT */
/*
 * POST /api/attach {"name", "pid", "uid", "gid", "memory"?, "gpus"?,
 * "offload_after"?, "priority"?}: see api_attach.h.
 */
#include "daemon/api_attach.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "common/units.h"
#include "daemon/http.h"

const char *const vram_api_attach_fields[] = { "name", "pid", "uid", "gid", "memory", "gpus",
					       "offload_after", "priority", NULL };

/* An integer member key of obj in [lo, hi] into *ret; 0 or a 400 in *err. */
static int int_field(json_t *obj, const char *key, bool required, long long lo, long long hi,
		     long long *ret, json_t **err)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v)) {
		if (!required)
			return 0;
		return vram_http_error_out(err, 400, NULL, "%s: required, expected an integer", key);
	}
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return vram_http_error_out(err, 400, NULL, "%s: expected an integer %lld..%lld", key,
					   lo, hi);
	*ret = json_integer_value(v);
	return 0;
}

int vram_api_attach(struct vram_manager *m, const struct vram_peer *peer, json_t *obj, json_t **ret)
{
	/* a pid and a uid are vouched for here: the node's administrator only */
	if (peer->transport != VRAM_PEER_UNIX || (peer->uid != 0 && peer->uid != geteuid()))
		return vram_http_error_out(ret, 403, "forbidden",
					   "attaching a process group is for root and vramd's own "
					   "user on the control socket (the Slurm plugin runs as "
					   "root in slurmstepd)");
	struct vram_attach_spec spec = { .offload_after_ms = VRAM_DURATION_NEVER };
	json_t *jname = json_object_get(obj, "name");
	if (!json_is_string(jname))
		return vram_http_error_out(ret, 400, NULL, "name: required, expected a string");
	spec.name = json_string_value(jname);
	long long v = 0;
	int st;
	if ((st = int_field(obj, "pid", true, 2, INT_MAX, &v, ret)))
		return st;
	spec.pid = (pid_t)v;
	if ((st = int_field(obj, "uid", true, 0, UINT_MAX - 1, &v, ret)))
		return st;
	spec.uid = (uid_t)v;
	if ((st = int_field(obj, "gid", true, 0, UINT_MAX - 1, &v, ret)))
		return st;
	spec.gid = (gid_t)v;
	v = 0;
	if ((st = int_field(obj, "priority", false, -1000000, 1000000, &v, ret)))
		return st;
	spec.priority = (int)v;
	json_t *jmem = json_object_get(obj, "memory");
	if (jmem && !json_is_null(jmem) &&
	    (!json_is_string(jmem) || vram_units_parse_mem(json_string_value(jmem), &spec.memory) < 0))
		return vram_http_error_out(ret, 400, NULL,
					   "memory: expected a size like 20GiB or a fraction like 0.8");
	json_t *jidle = json_object_get(obj, "offload_after");
	if (jidle && !json_is_null(jidle) &&
	    (!json_is_string(jidle) ||
	     vram_units_parse_duration_ms(json_string_value(jidle), &spec.offload_after_ms) < 0))
		return vram_http_error_out(ret, 400, NULL,
					   "offload_after: expected a duration like 30s, 5m or never");
	json_t *jgpus = json_object_get(obj, "gpus");
	if (jgpus && !json_is_null(jgpus)) {
		size_t n = json_array_size(jgpus);
		if (!json_is_array(jgpus) || n > VRAM_PLAN_MAX_GPUS)
			return vram_http_error_out(ret, 400, NULL,
						   "gpus: expected a list of at most %d GPU indices",
						   VRAM_PLAN_MAX_GPUS);
		for (size_t i = 0; i < n; i++) {
			json_t *g = json_array_get(jgpus, i);
			if (!json_is_integer(g) || json_integer_value(g) < 0 ||
			    json_integer_value(g) >= VRAM_PLAN_MAX_GPUS)
				return vram_http_error_out(ret, 400, NULL,
							   "gpus[%zu]: expected a GPU index 0..%d", i,
							   VRAM_PLAN_MAX_GPUS - 1);
			spec.gpus[i] = (unsigned)json_integer_value(g);
		}
		spec.n_gpus = n;
	}
	char err[1024] = "";
	const char *name = NULL, *hook_socket = NULL;
	int r = vram_manager_attach(m, &spec, &name, &hook_socket, err, sizeof(err));
	if (r < 0) {
		int status = r == -EINVAL ? 400 : r == -ESRCH ? 404 : r == -EEXIST ? 409
			     : r == -EPERM ? 403 : r == -EAGAIN || r == -EBUSY ? 503 : 500;
		const char *code = r == -EEXIST ? "name_taken" : r == -EAGAIN ? "no_slot"
				   : r == -EBUSY ? "shutting_down" : r == -ESRCH ? "not_found"
				   : r == -EPERM ? "forbidden" : NULL;
		return vram_http_error_out(ret, status, code, "%s", *err ? err : strerror(-r));
	}
	*ret = vram_manager_workload_json(m, name);
	if (!*ret)
		return vram_http_error_out(ret, 500, NULL, "out of memory");
	json_object_set_new(*ret, "hook_socket", hook_socket ? json_string(hook_socket) : json_null());
	return 201;
}
