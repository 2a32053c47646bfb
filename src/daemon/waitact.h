/* SPDX-License-Identifier: MIT */
/*
 * Actions a client waits for: the layer the REST API (api.c) and the MCP
 * server (mcp.c) share, so that neither calls the other for it. A request
 * that waits holds one waiter per workload it acts on (several for the
 * TTS-style routes that act on every workload) and is answered once the
 * last outcome is in, in the REST shape; a client that goes away cancels
 * its waiters, not the actions. Requests that wait are bounded, with a
 * share kept for the control socket (VRAM_WAITACT_UNIX_RESERVED), so that
 * anonymous TCP clients never lock the machine's owner out.
 *
 * Also here, because both front ends must mean the same thing by them: who
 * may act on a workload (an ad-hoc workload is its owner's), the JSON of an
 * action's outcome, and the TTS-style routes' logic (offload or release one
 * or every workload, the idle release timeout).
 *
 * The outcome goes either to an evhttp request (REST) or to a callback
 * (MCP, and any other front end).
 */
#ifndef VRAM_WAITACT_H
#define VRAM_WAITACT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "daemon/manager.h"
#include "daemon/peer.h"

struct evhttp_request;
struct vram_waitact;
struct vram_waitact_req;

#define VRAM_WAITACT_MAX 1024          /* requests waiting for an action at once */
#define VRAM_WAITACT_UNIX_RESERVED 256 /* of them only for clients on the control socket */

/*
 * Called after a call here may have changed what status shows without a
 * state change (an action begun, idle timers set), so that a cached status
 * is dropped.
 */
typedef void (*vram_waitact_changed_cb)(void *arg);

/*
 * Creates the waiting actions over manager m (borrowed; outlives them).
 * changed(arg) may be NULL. Returns 0 or -ENOMEM.
 */
int vram_waitact_new(struct vram_manager *m, vram_waitact_changed_cb changed, void *arg,
		     struct vram_waitact **ret);
/*
 * Cancels every waiter and answers every waiting request 503 ("vramd is
 * shutting down"); the actions go on or stop with vramd. Idempotent.
 */
void vram_waitact_close(struct vram_waitact *wa);
/* Calls vram_waitact_close and frees. Accepts NULL. */
void vram_waitact_free(struct vram_waitact *wa);

/*
 * Whether peer (NULL: vramd itself) may act on workload: anyone who reaches
 * the API on a workload of the config; on an ad-hoc one, those runas.h
 * names. When not, msg says who may and who asked (what is the verb:
 * "stop", "offload", ...). An unknown workload counts as allowed (the
 * action then says it is unknown).
 */
bool vram_waitact_may_act(struct vram_waitact *wa, const struct vram_peer *peer, const char *workload,
			  const char *what, char *msg, size_t msg_size);

/* One action outcome as the REST API reports it (new reference). */
json_t *vram_waitact_result_json(const struct vram_action_result *res, enum vram_action action);
/*
 * The HTTP status of an action's outcome: 200 done; 409 another action
 * changed the workload first; 503 no room on the GPUs, or (by pid) the
 * process went away; 500 failed.
 */
int vram_waitact_status_of(const struct vram_action_result *res);

/*
 * The 404 for a workload name nothing knows, in the manager's own words,
 * with the workloads there are: sets *ret (new reference), returns 404.
 */
int vram_waitact_unknown(struct vram_waitact *wa, json_t **ret, const char *name);

/*
 * Begins action on the workload name, or on the hooked process pid (> 0),
 * for peer (borrowed for the call), whose right to act the caller checked.
 * With wait, req is answered with the outcome once it is in, in the REST
 * shape, and 0 is returned (req is taken; 503 when peer has no share of
 * waiting requests left). Without, the answer is 202 at once. Returns an
 * HTTP status with *ret_body (new reference) when answered at once.
 */
int vram_waitact_act(struct vram_waitact *wa, struct evhttp_request *req, const struct vram_peer *peer,
		     const char *name, pid_t pid, enum vram_action action, bool wait,
		     json_t **ret_body);

/*
 * The TTS-style offload or release (POST /api/gpu/offload|release): of the
 * workload only, or (only NULL) of every workload the action applies to,
 * less the ad-hoc workloads peer (NULL: vramd itself) may not act on. The
 * outcome ({"success", "message", "results"}) goes to req, or, with req
 * NULL, to cb(status, body, arg) exactly once (body borrowed for the call)
 * unless the handle is cancelled first; *ret_handle is valid until then.
 * Returns an HTTP status with *ret_body set (new reference) when it is
 * answered at once (nothing to do, unknown workload, not the owner, busy),
 * or 0.
 */
typedef void (*vram_waitact_cb)(int status, json_t *body, void *arg);
int vram_waitact_compat(struct vram_waitact *wa, struct evhttp_request *req,
			const struct vram_peer *peer, enum vram_action action, const char *only,
			vram_waitact_cb cb, void *arg, struct vram_waitact_req **ret_handle,
			json_t **ret_body);
/* Drops a request's waiters (the actions go on); its cb is not called. Accepts NULL. */
void vram_waitact_cancel(struct vram_waitact_req *h);

/*
 * POST /api/gpu/timeout with its arguments {"timeout", "workload"}
 * (borrowed, keys already checked; the caller checked the right to act).
 * Returns an HTTP status; *ret_body is a new reference.
 */
int vram_waitact_compat_timeout(struct vram_waitact *wa, json_t *args, json_t **ret_body);

#endif
