/* SPDX-License-Identifier: MIT */
/*
 * Status rendering, a feature on the manager's top floor: the JSON of the
 * workloads, the GPUs and the TTS-style compat object. It only reads.
 */
#include "daemon/manager_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/clock.h"
#include "common/strutil.h"
#include "common/units.h"
#include "core/policy.h"
#include "daemon/container.h"
#include "daemon/hookchan.h"
#include "daemon/liveness.h"
#include "daemon/mps.h"
#include "daemon/supervise.h"

static json_t *duration_json(uint64_t ms)
{
	if (ms == VRAM_DURATION_NEVER || ms == VRAM_IDLE_KEEP)
		return json_null();
	return json_real((double)ms / 1000.0);
}

/*
 * Whether w's GPUs are its own now: a stopped or failed workload keeps its
 * last placement (a restart may prefer it) but holds no GPU, and showing
 * one tells the user it still runs there.
 */
static bool holds_gpus(const struct vram_workload *w)
{
	return w->state != VRAM_WL_STOPPED && w->state != VRAM_WL_FAILED;
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

/* null for share: none; else whether MPS is used, why not, and each instance's client. */
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
	uint64_t used = 0, nonmovable = 0, pinned = 0, kept = 0, parked = 0;
	size_t n = vram_hookchan_usage(m->hookchan, w->cfg->name, &used, &nonmovable);
	/* host numbers: null unless a process reports them (protocol version 3) */
	size_t nh = vram_hookchan_host(m->hookchan, w->cfg->name, &pinned, &kept, &parked);
	return json_pack("{s:o,s:o,s:I,s:o,s:o,s:o,s:o}", "processes", procs, "measured_bytes",
			 n ? json_integer((json_int_t)used) : json_null(), "nonmovable_bytes",
			 (json_int_t)nonmovable, "host_pinned_bytes",
			 nh ? json_integer((json_int_t)(pinned > INT64_MAX ? INT64_MAX : pinned)) : json_null(),
			 "host_kept_bytes",
			 nh ? json_integer((json_int_t)(kept > INT64_MAX ? INT64_MAX : kept)) : json_null(),
			 "parked_bytes",
			 nh ? json_integer((json_int_t)(parked > INT64_MAX ? INT64_MAX : parked)) : json_null(),
			 "warning", vram_hookchan_warning_json(m->hookchan, w->cfg->name));
}

/* How an ad-hoc workload's process ended; "status" is what a shell would say (128+signal). */
static json_t *exit_json(int wait_status)
{
	if (wait_status == VRAM_WAIT_STATUS_UNKNOWN) /* a process taken back: not our child */
		return json_pack("{s:n,s:n,s:n}", "code", "signal", "status");
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
		json_t *inst = json_pack("{s:i,s:o,s:o,s:o,s:I,s:b}", "replica", (int)in->replica, "pid",
					 in->pid ? json_integer(in->pid) : json_null(), "port",
					 in->port ? json_integer(in->port) : json_null(), "gpus",
					 holds_gpus(w) ? gpu_refs_json(m, in) : json_array(), "bytes_per_gpu", (json_int_t)in->bytes_per_gpu,
					 "healthy", in->healthy);
		if (inst && c->container.image) {
			/* pid is the runtime's; the container's own process, by its host pid, is here */
			char name[VRAM_CONTAINER_NAME_MAX];
			vram_container_name(c->name, in->replica, name, sizeof(name));
			json_object_set_new(inst, "container",
					    json_pack("{s:s,s:s,s:o}", "name", name, "image", c->container.image,
						      "pid", in->container_pid ? json_integer(in->container_pid)
									   : json_null()));
		}
		json_array_append_new(instances, inst);
	}
	const struct vram_instance *first = &w->instances[0];
	struct mgr_host_usage host;
	mgr_host_usage(m, w, &host);
	json_t *models = json_array();
	for (size_t i = 0; models && i < c->n_models; i++)
		json_array_append_new(models, json_string(c->models[i]));

	json_t *o = json_pack(
		"{s:s,s:s,s:f,s:o,s:o,s:o,s:i,s:o,s:{s:o,s:I,s:I,s:I,s:I,s:I},s:f,s:i,s:{s:o,s:o,s:o},"
		"s:{s:o,s:s,s:f},s:o,s:o,s:i,s:o,s:i,s:s,s:s,s:o,s:o}",
		"name", c->name,
		"state", vram_wl_state_name(w->state),
		"state_seconds", (double)(now - w->state_since_ms) / 1000.0,
		"gpus", holds_gpus(w) ? gpu_refs_json(m, first) : json_array(),
		"pid", first->pid ? json_integer(first->pid) : json_null(),
		"port", first->port ? json_integer(first->port) : json_null(),
		"replicas", (int)w->n_instances,
		"instances", instances ? instances : json_array(),
		"memory",
		"declared", declared_set ? json_string(declared) : json_null(),
		"per_gpu_bytes", (json_int_t)first->bytes_per_gpu,
		"gpu_bytes", (json_int_t)resident,
		"offloaded_bytes", (json_int_t)w->offloaded_bytes,
		"host_bytes", (json_int_t)(host.held > INT64_MAX ? INT64_MAX : host.held),
		"parked_bytes", (json_int_t)w->parked_bytes,
		"idle_seconds", (double)vram_policy_idle_ms(w, now) / 1000.0,
		"in_flight", (int)w->in_flight,
		"timeouts",
		"offload_after_seconds", duration_json(w->offload_after_ms),
		"release_after_seconds", duration_json(w->release_after_ms),
		"park_after_seconds", duration_json(w->park_after_ms),
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
		json_object_set_new(o, "placement_note",
				    w->placement_note[0] ? text_json(w->placement_note) : json_null());
	if (o)
		json_object_set_new(o, "placement_fallback", json_boolean(w->placement_fallback));
	if (o)
		json_object_set_new(o, "mps", workload_mps_json(w));
	if (o)
		json_object_set_new(o, "hook", workload_hook_json(m, w));
	if (o)
		json_object_set_new(o, "liveness", vram_liveness_json(w, now));
	const struct mgr_slot *s = mgr_slot(m, w);
	bool adhoc = mgr_is_adhoc(m, w);
	if (o)
		json_object_set_new(o, "adhoc", json_boolean(adhoc));
	/* its processes were taken back from the previous vramd (until it spawns anew) */
	if (o)
		json_object_set_new(o, "adopted", json_boolean(s->adopted));
	if (o && adhoc)
		json_object_set_new(o, "exit", s->exited ? exit_json(s->wait_status) : json_null());
	/* whom an ad-hoc workload runs as, who alone (with root) may act on it */
	if (o)
		json_object_set_new(o, "owner",
				    s->owner ? json_pack("{s:I,s:I,s:s}", "uid", (json_int_t)s->owner->uid,
							 "gid", (json_int_t)s->owner->gid, "user",
							 s->owner->user)
				      : json_null());
	/* what a config reload left for it to do: {"action": "restart"|"remove", "keys"} or null */
	if (o)
		json_object_set_new(o, "pending",
				    s->removing ? json_pack("{s:s}", "action", "remove")
				    : s->next   ? json_pack("{s:s,s:s}", "action", "restart",
								 "keys", s->keys)
						     : json_null());
	return o;
}

static const char *owner_of(struct vram_manager *m, pid_t pid, unsigned *ret_replica)
{
	for (size_t k = 0; pid > 0 && k < m->n_live; k++) {
		for (size_t i = 0; i < m->wptrs[k]->n_instances; i++) {
			const struct vram_instance *in = &m->wptrs[k]->instances[i];
			if (in->pid == pid || (in->container_pid > 0 && in->container_pid == pid)) {
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
	struct vram_workload *w = mgr_find(m, name);
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
	json_t *host = vram_manager_host_json(m);
	return json_pack("{s:o,s:o,s:s,s:o,s:o}", "gpus", gpus, "workloads", ws, "backend",
			 vram_gpu_backend_name_of(m->gpus), "mps", mps ? mps : json_null(), "host",
			 host ? host : json_null());
}

/*
 * The host object of status in GB (GiB), the TTS-style routes' unit: each
 * key with "_gb" added, null where status has null. NULL on out of memory.
 */
static json_t *compat_host_json(json_t *host)
{
	static const char *const keys[] = { "total", "available", "reserve", "limit",
					     "budget", "parked", "kept", "on_disk" };
	json_t *o = json_object();
	for (size_t i = 0; o && i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(host, keys[i]);
		char key[32];
		snprintf(key, sizeof(key), "%s_gb", keys[i]);
		json_object_set_new(o, key, json_is_integer(v)
			? json_real((double)json_integer_value(v) / (double)VRAM_GiB) : json_null());
	}
	return o;
}

/* A workload's own host memory in GB, and the host's (the same object in every entry). */
static json_t *compat_host_memory_json(struct vram_manager *m, const struct vram_workload *w,
				       json_t *host)
{
	struct mgr_host_usage u;
	mgr_host_usage(m, w, &u);
	const double gib = (double)VRAM_GiB;
	return json_pack("{s:f,s:f,s:f,s:O}", "allocated_gb", (double)u.held / gib, "kept_gb",
			 (double)u.kept / gib, "on_disk_gb", (double)u.on_disk / gib, "host", host);
}

/* One GPU as the compat status reads it: queried once a call, for every workload. */
struct compat_gpu {
	bool valid;
	uint64_t total; /* bytes */
	pid_t pids[VRAM_GPU_MAX_PROCS];
	uint64_t used[VRAM_GPU_MAX_PROCS]; /* bytes each pid holds; UINT64_MAX = not known */
	size_t n_procs;
};

/*
 * A workload's gpu_memory: one "GPU_<index>" entry for every GPU of the
 * machine, the same keys whether it was ever placed or not (what it does
 * not hold is 0), so that the TTS apps' readers see one shape.
 * allocated_gb: what its process holds (per-process usage where the
 * backend has it, else its reservation); reserved_gb: what vramd reserved
 * for it; total_gb: the GPU's memory (null when the GPU could not be read).
 */
static json_t *compat_gpu_memory_json(const struct vram_workload *w, const struct compat_gpu *gpus,
				      unsigned n_gpus)
{
	const double gib = (double)VRAM_GiB;
	json_t *mem = json_object();
	for (unsigned g = 0; mem && g < n_gpus; g++) {
		uint64_t used = 0, reserved = 0;
		for (size_t i = 0; i < w->n_instances; i++) {
			const struct vram_instance *in = &w->instances[i];
			for (size_t k = 0; k < in->n_gpus; k++) {
				if (in->gpus[k] != g || !in->resident)
					continue;
				uint64_t mine = in->bytes_per_gpu;
				for (size_t p = 0; p < gpus[g].n_procs; p++)
					if (((in->pid > 0 && gpus[g].pids[p] == in->pid) ||
					     (in->container_pid > 0 && gpus[g].pids[p] == in->container_pid)) &&
					    gpus[g].used[p] != UINT64_MAX)
						mine = gpus[g].used[p];
				used += mine;
				reserved += in->bytes_per_gpu;
			}
		}
		char key[32];
		snprintf(key, sizeof(key), "GPU_%u", g);
		json_object_set_new(mem, key,
			json_pack("{s:f,s:f,s:o}", "allocated_gb", (double)used / gib, "reserved_gb",
				  (double)reserved / gib, "total_gb",
				  gpus[g].valid ? json_real((double)gpus[g].total / gib) : json_null()));
	}
	return mem;
}

json_t *vram_manager_compat_status_json(struct vram_manager *m)
{
	unsigned n_gpus = vram_gpu_count(m->gpus);
	struct compat_gpu *gpus = calloc(n_gpus ? n_gpus : 1, sizeof(*gpus));
	struct vram_gpu_info *info = malloc(sizeof(*info));
	if (!gpus || !info) {
		free(gpus);
		free(info);
		return NULL;
	}
	for (unsigned g = 0; g < n_gpus; g++) {
		if (vram_gpu_query(m->gpus, g, info) < 0)
			continue;
		gpus[g].valid = true;
		gpus[g].total = info->mem_total;
		for (size_t p = 0; info->procs_valid && p < info->n_procs; p++) {
			gpus[g].pids[p] = info->procs[p].pid;
			gpus[g].used[p] = info->procs[p].used_bytes;
		}
		gpus[g].n_procs = info->procs_valid ? info->n_procs : 0;
	}
	free(info);
	json_t *o = json_object();
	uint64_t now = vram_now_ms();
	json_t *status_host = vram_manager_host_json(m);
	json_t *host = status_host ? compat_host_json(status_host) : NULL;
	json_decref(status_host);
	if (!host) {
		json_decref(o);
		free(gpus);
		return NULL;
	}
	for (size_t k = 0; o && k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		const char *location = "unloaded";
		bool on_gpu = false, running = mgr_any_process(w);
		for (size_t i = 0; i < w->n_instances; i++)
			on_gpu |= w->instances[i].resident && w->instances[i].n_gpus > 0;
		if (on_gpu)
			location = "GPU";
		else if (w->state == VRAM_WL_PARKED)
			location = "disk";
		else if (running || w->state == VRAM_WL_OFFLOADED)
			location = "CPU";
		json_t *mem = compat_gpu_memory_json(w, gpus, n_gpus);
		bool monitor = w->offload_after_ms != VRAM_DURATION_NEVER ||
			       w->release_after_ms != VRAM_DURATION_NEVER;
		json_object_set_new(o, w->cfg->name,
			json_pack("{s:s,s:s,s:f,s:o,s:b,s:o,s:o,s:s}", "model_name",
				  w->cfg->n_models ? w->cfg->models[0] : w->cfg->name, "location",
				  location, "idle_time_seconds",
				  (double)vram_policy_idle_ms(w, now) / 1000.0,
				  "idle_timeout_seconds", duration_json(w->release_after_ms),
				  "monitor_running", monitor, "gpu_memory", mem ? mem : json_object(),
				  "host_memory", compat_host_memory_json(m, w, host),
				  "state", vram_wl_state_name(w->state)));
	}
	json_decref(host);
	free(gpus);
	return o;
}
