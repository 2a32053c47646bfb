/* SPDX-License-Identifier: MIT */
/*
 * Offload or restore of one hooked process by pid, a feature on the
 * manager's top floor: for a process vramd did not start (a survivor of a
 * vramd restart whose hook reconnected).
 *
 * Also here, the container feature: a container's process is no
 * descendant of the runtime's foreground process that vramd supervises,
 * so it is found by the hook channel instead, which lists it under its
 * host pid, and accounted as the instance's (container_pid). A container
 * taken back from the previous vramd has its hooked process's group
 * claimed, so that the hook engine moves it as one of the workload's.
 */
#include "daemon/manager_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "daemon/hookchan.h"

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
	res->outcome = r->status == 0 ? VRAM_OUTCOME_DONE
		       : r->status == -EALREADY ? VRAM_OUTCOME_PREEMPTED
		       : r->missing ? VRAM_OUTCOME_GONE : VRAM_OUTCOME_FAILED;
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
	if (!info.external && mgr_find(m, info.workload)) {
		snprintf(err, err_size, "process %d is one of workload %s's, which vramd runs: %s the workload "
			 "(vramctl %s %s)", (int)pid, info.workload, vram_action_name(action),
			 vram_action_name(action), info.workload);
		return -EBUSY;
	}
	struct vram_manager_waiter *wt = mgr_waiter_new(m, NULL, action, cb, arg);
	if (!wt) {
		snprintf(err, err_size, "out of memory");
		return -ENOMEM;
	}
	snprintf(wt->hook_workload, sizeof(wt->hook_workload), "%s", info.workload);
	int r = vram_hookchan_send(m->hookchan, pid,
				   action == VRAM_ACTION_OFFLOAD ? VRAM_HOOKCHAN_OFFLOAD : VRAM_HOOKCHAN_RESTORE, 0,
				   on_hook_done, wt, &wt->hook_req);
	if (r < 0) {
		mgr_waiter_free(wt);
		snprintf(err, err_size, "%s", r == -EBUSY ? "an offload or restore of it is running already"
					    : r == -ENOMEM ? "out of memory"
					    : "it could not be sent the command: it went away");
		return r == -EBUSY || r == -ENOMEM ? r : -ENOENT;
	}
	mgr_waiter_link(m, wt);
	if (ret_waiter)
		*ret_waiter = wt;
	return 0;
}

json_t *vram_manager_hook_json(struct vram_manager *m)
{
	return m->hookchan ? vram_hookchan_json(m->hookchan) : json_array();
}

/* ---- containers: their hooked process, by host pid ---- */

#define ENVIRON_MAX 65536 /* bytes of a process's environment read for VRAM_REPLICA */

/* The VRAM_REPLICA of process pid (its environment as it started), or -1 when unknown. */
static long replica_of(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	char *buf = malloc(ENVIRON_MAX + 1);
	ssize_t n = buf ? read(fd, buf, ENVIRON_MAX) : -1;
	close(fd);
	long replica = -1;
	for (ssize_t off = 0; n > 0 && off < n;) {
		buf[n] = '\0';
		const char *e = buf + off;
		if (strncmp(e, "VRAM_REPLICA=", 13) == 0) {
			replica = strtol(e + 13, NULL, 10);
			break;
		}
		off += (ssize_t)strlen(e) + 1;
	}
	free(buf);
	return replica;
}

void mgr_container_forget(struct vram_manager *m, struct vram_instance *in)
{
	if (in->container_pgid && m->hookchan)
		vram_hookchan_unclaim(m->hookchan, in->container_pgid);
	in->container_pgid = 0;
	in->container_pid = 0;
}

/* Finds the hooked process of each running instance of container workload w. */
static void container_find(struct vram_manager *m, struct vram_workload *w)
{
	pid_t pids[VRAM_CONFIG_MAX_REPLICAS];
	/* one that went away (or whose hook disconnected) is looked for again */
	for (size_t i = 0; i < w->n_instances; i++) {
		struct vram_instance *in = &w->instances[i];
		struct vram_hookchan_proc_info info;
		if (in->container_pid &&
		    (vram_hookchan_proc(m->hookchan, in->container_pid, &info) < 0 || !info.connected))
			mgr_container_forget(m, in);
	}
	for (int external = 0; external < 2; external++) {
		size_t n = external ? vram_hookchan_external_pids(m->hookchan, w->cfg->name, pids, VRAM_CONFIG_MAX_REPLICAS)
				    : vram_hookchan_pids(m->hookchan, w->cfg->name, pids, VRAM_CONFIG_MAX_REPLICAS);
		if (n > VRAM_CONFIG_MAX_REPLICAS)
			n = VRAM_CONFIG_MAX_REPLICAS;
		for (size_t k = 0; k < n; k++) {
			long replica = w->n_instances == 1 ? 0 : replica_of(pids[k]);
			if (replica < 0 || (size_t)replica >= w->n_instances)
				continue;
			struct vram_instance *in = &w->instances[replica];
			if (!in->child || in->container_pid)
				continue; /* the first of a container's processes to connect is the one */
			if (external && !mgr_slot(m, w)->adopted)
				continue; /* not one this vramd may take for its own */
			if (external) {
				/* a container taken back: its process is the workload's, not a stranger */
				pid_t pgid = getpgid(pids[k]);
				if (pgid <= 0)
					continue;
				if (in->container_pgid)
					vram_hookchan_unclaim(m->hookchan, in->container_pgid);
				vram_hookchan_claim(m->hookchan, pgid);
				in->container_pgid = pgid;
			}
			in->container_pid = pids[k];
		}
	}
}

int mgr_container_hook_socket(struct vram_manager *m, char *ret_path, size_t size)
{
	const char *sock = m->hookchan ? vram_hookchan_path(m->hookchan) : NULL;
	if (!sock || !m->state_dir)
		return -ENOENT;
	char dir[4096];
	if ((size_t)snprintf(dir, sizeof(dir), "%s/ct", m->state_dir) >= sizeof(dir) ||
	    (size_t)snprintf(ret_path, size, "%s/hook.sock", dir) >= size)
		return -ENAMETOOLONG;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	struct stat want, have;
	if (stat(sock, &want) < 0)
		return -errno;
	if (stat(ret_path, &have) == 0 && have.st_ino == want.st_ino && have.st_dev == want.st_dev)
		return 0;
	(void)unlink(ret_path);
	return link(sock, ret_path) == 0 ? 0 : -errno;
}

static void container_tick(struct vram_manager *m, uint64_t now_ms)
{
	(void)now_ms;
	if (!m->hookchan)
		return;
	bool any = false;
	for (size_t k = 0; k < m->n_live; k++) {
		struct vram_workload *w = m->wptrs[k];
		if (!w->cfg->container.image)
			continue;
		any = true;
		container_find(m, w);
	}
	/* containers taken back from the previous vramd reach the new socket through the link */
	char path[4096];
	if (any)
		(void)mgr_container_hook_socket(m, path, sizeof(path));
}

const struct mgr_feature mgr_container_feature = {
	.name = "container",
	.tick = container_tick,
};
