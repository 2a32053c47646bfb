/* SPDX-License-Identifier: MIT */
/*
 * Offload or restore of one hooked process by pid, a feature on the
 * manager's top floor: for a process vramd did not start (a survivor of a
 * vramd restart whose hook reconnected).
 */
#include "daemon/manager_int.h"

#include <errno.h>
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
