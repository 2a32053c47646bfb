/* SPDX-License-Identifier: MIT */
/*
 * The lifecycle table. Kept as one switch per event so that a reader sees,
 * for each thing that can happen, every state where it is allowed and where
 * it leads; anything not listed is refused with -EINVAL.
 */
#include "core/workload.h"

#include <errno.h>
#include <string.h>

static const char *const state_names[VRAM_WL_N_STATES] = {
	[VRAM_WL_STOPPED] = "stopped",
	[VRAM_WL_STARTING] = "starting",
	[VRAM_WL_READY] = "ready",
	[VRAM_WL_OFFLOADING] = "offloading",
	[VRAM_WL_OFFLOADED] = "offloaded",
	[VRAM_WL_RESTORING] = "restoring",
	[VRAM_WL_STOPPING] = "stopping",
	[VRAM_WL_FAILED] = "failed",
};

static const char *const event_names[VRAM_WL_N_EVENTS] = {
	[VRAM_WL_EV_START] = "start",
	[VRAM_WL_EV_HEALTHY] = "healthy",
	[VRAM_WL_EV_START_FAILED] = "start-failed",
	[VRAM_WL_EV_OFFLOAD] = "offload",
	[VRAM_WL_EV_OFFLOADED] = "offloaded",
	[VRAM_WL_EV_OFFLOAD_FAILED] = "offload-failed",
	[VRAM_WL_EV_RESTORE] = "restore",
	[VRAM_WL_EV_RESTORED] = "restored",
	[VRAM_WL_EV_RESTORE_FAILED] = "restore-failed",
	[VRAM_WL_EV_RESTORE_ABORTED] = "restore-aborted",
	[VRAM_WL_EV_STOP] = "stop",
	[VRAM_WL_EV_EXITED] = "exited",
	[VRAM_WL_EV_CRASH] = "crash",
};

int vram_wl_transition(enum vram_wl_state from, enum vram_wl_event ev)
{
	if ((unsigned)from >= VRAM_WL_N_STATES)
		return -EINVAL;

	switch (ev) {
	case VRAM_WL_EV_START:
		/* failed → starting is the restart after backoff (or an explicit start) */
		if (from == VRAM_WL_STOPPED || from == VRAM_WL_FAILED)
			return VRAM_WL_STARTING;
		break;
	case VRAM_WL_EV_HEALTHY:
		if (from == VRAM_WL_STARTING)
			return VRAM_WL_READY;
		break;
	case VRAM_WL_EV_START_FAILED:
		if (from == VRAM_WL_STARTING)
			return VRAM_WL_FAILED;
		break;
	case VRAM_WL_EV_OFFLOAD:
		if (from == VRAM_WL_READY)
			return VRAM_WL_OFFLOADING;
		break;
	case VRAM_WL_EV_OFFLOADED:
		if (from == VRAM_WL_OFFLOADING)
			return VRAM_WL_OFFLOADED;
		break;
	case VRAM_WL_EV_OFFLOAD_FAILED:
		/* the engine gave up before touching anything: still usable */
		if (from == VRAM_WL_OFFLOADING)
			return VRAM_WL_READY;
		break;
	case VRAM_WL_EV_RESTORE:
		if (from == VRAM_WL_OFFLOADED)
			return VRAM_WL_RESTORING;
		break;
	case VRAM_WL_EV_RESTORED:
		if (from == VRAM_WL_RESTORING)
			return VRAM_WL_READY;
		break;
	case VRAM_WL_EV_RESTORE_FAILED:
		if (from == VRAM_WL_RESTORING)
			return VRAM_WL_FAILED;
		break;
	case VRAM_WL_EV_RESTORE_ABORTED:
		if (from == VRAM_WL_RESTORING)
			return VRAM_WL_OFFLOADED;
		break;
	case VRAM_WL_EV_STOP:
		switch (from) {
		case VRAM_WL_STARTING:
		case VRAM_WL_READY:
		case VRAM_WL_OFFLOADING:
		case VRAM_WL_OFFLOADED:
		case VRAM_WL_RESTORING:
		case VRAM_WL_FAILED:
			return VRAM_WL_STOPPING;
		default:
			break;
		}
		break;
	case VRAM_WL_EV_EXITED:
		switch (from) {
		case VRAM_WL_STOPPING:
		case VRAM_WL_READY:     /* the server finished by itself, exit status 0 */
		case VRAM_WL_OFFLOADED:
			return VRAM_WL_STOPPED;
		default:
			break;
		}
		break;
	case VRAM_WL_EV_CRASH:
		switch (from) {
		case VRAM_WL_STARTING:
		case VRAM_WL_READY:
		case VRAM_WL_OFFLOADING:
		case VRAM_WL_OFFLOADED:
		case VRAM_WL_RESTORING:
		case VRAM_WL_FAILED:   /* another replica of a failed workload */
			return VRAM_WL_FAILED;
		case VRAM_WL_STOPPING: /* dying while being stopped is what was asked */
			return VRAM_WL_STOPPED;
		default:
			break;
		}
		break;
	default:
		break;
	}
	return -EINVAL;
}

const char *vram_wl_state_name(enum vram_wl_state s)
{
	if ((unsigned)s >= VRAM_WL_N_STATES)
		return "?";
	return state_names[s];
}

const char *vram_wl_event_name(enum vram_wl_event ev)
{
	if ((unsigned)ev >= VRAM_WL_N_EVENTS)
		return "?";
	return event_names[ev];
}

int vram_wl_state_parse(const char *s, enum vram_wl_state *ret_state)
{
	if (!s)
		return -EINVAL;
	for (unsigned i = 0; i < VRAM_WL_N_STATES; i++) {
		if (strcmp(s, state_names[i]) == 0) {
			*ret_state = (enum vram_wl_state)i;
			return 0;
		}
	}
	return -EINVAL;
}

bool vram_wl_state_settled(enum vram_wl_state s)
{
	return s == VRAM_WL_STOPPED || s == VRAM_WL_READY || s == VRAM_WL_OFFLOADED ||
	       s == VRAM_WL_FAILED;
}

bool vram_wl_state_on_gpu(enum vram_wl_state s)
{
	return s == VRAM_WL_STARTING || s == VRAM_WL_READY || s == VRAM_WL_OFFLOADING ||
	       s == VRAM_WL_RESTORING;
}
