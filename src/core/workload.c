/* SPDX-License-Identifier: MIT */
/*
 * The lifecycle table: every allowed (state, event) pair with the state it
 * leads to, as data, so that a reader sees each rule on one line and the
 * tests can walk the whole of it; anything not listed is refused with
 * -EINVAL. The table is short (40 rows) and looked up once per state
 * change, so a scan costs nothing worth an index.
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
	[VRAM_WL_PARKING] = "parking",
	[VRAM_WL_PARKED] = "parked",
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
	[VRAM_WL_EV_ADOPTED_READY] = "adopted-ready",
	[VRAM_WL_EV_ADOPTED_OFFLOADED] = "adopted-offloaded",
	[VRAM_WL_EV_PARK] = "park",
	[VRAM_WL_EV_PARKED] = "parked",
	[VRAM_WL_EV_PARK_FAILED] = "park-failed",
	[VRAM_WL_EV_UNPARK_ABORTED] = "unpark-aborted",
	[VRAM_WL_EV_ADOPTED_PARKED] = "adopted-parked",
};

#define S(x) VRAM_WL_##x
#define E(x) VRAM_WL_EV_##x

/*
 * Every transition, grouped by event: (from, event) → to. A pair that is
 * not here is refused. No pair appears twice (test-workload checks).
 */
const struct vram_wl_transition vram_wl_transitions[] = {
	/* failed → starting is the restart after backoff (or an explicit start) */
	{ S(STOPPED),    E(START),           S(STARTING) },
	{ S(FAILED),     E(START),           S(STARTING) },
	{ S(STARTING),   E(HEALTHY),         S(READY) },
	{ S(STARTING),   E(START_FAILED),    S(FAILED) },
	{ S(READY),      E(OFFLOAD),         S(OFFLOADING) },
	{ S(OFFLOADING), E(OFFLOADED),       S(OFFLOADED) },
	/* the engine gave up before touching anything: still usable */
	{ S(OFFLOADING), E(OFFLOAD_FAILED),  S(READY) },
	{ S(OFFLOADED),  E(RESTORE),         S(RESTORING) },
	{ S(RESTORING),  E(RESTORED),        S(READY) },
	{ S(RESTORING),  E(RESTORE_FAILED),  S(FAILED) },
	{ S(RESTORING),  E(RESTORE_ABORTED), S(OFFLOADED) },
	/* the disk tier: only an offloaded workload is parked (a park of a ready one offloads first) */
	{ S(OFFLOADED),  E(PARK),            S(PARKING) },
	{ S(PARKING),    E(PARKED),          S(PARKED) },
	/* a full disk, a write error: the model stays in host RAM */
	{ S(PARKING),    E(PARK_FAILED),     S(OFFLOADED) },
	{ S(PARKED),     E(RESTORE),         S(RESTORING) },
	{ S(RESTORING),  E(UNPARK_ABORTED),  S(PARKED) },
	/* stop or release: from anything that runs or may run again */
	{ S(STARTING),   E(STOP),            S(STOPPING) },
	{ S(READY),      E(STOP),            S(STOPPING) },
	{ S(OFFLOADING), E(STOP),            S(STOPPING) },
	{ S(OFFLOADED),  E(STOP),            S(STOPPING) },
	{ S(RESTORING),  E(STOP),            S(STOPPING) },
	{ S(FAILED),     E(STOP),            S(STOPPING) },
	{ S(PARKING),    E(STOP),            S(STOPPING) },
	{ S(PARKED),     E(STOP),            S(STOPPING) },
	{ S(STOPPING),   E(EXITED),          S(STOPPED) },
	/* the server finished by itself, exit status 0 */
	{ S(READY),      E(EXITED),          S(STOPPED) },
	{ S(OFFLOADED),  E(EXITED),          S(STOPPED) },
	{ S(PARKED),     E(EXITED),          S(STOPPED) },
	{ S(STARTING),   E(CRASH),           S(FAILED) },
	{ S(READY),      E(CRASH),           S(FAILED) },
	{ S(OFFLOADING), E(CRASH),           S(FAILED) },
	{ S(OFFLOADED),  E(CRASH),           S(FAILED) },
	{ S(RESTORING),  E(CRASH),           S(FAILED) },
	{ S(PARKING),    E(CRASH),           S(FAILED) },
	{ S(PARKED),     E(CRASH),           S(FAILED) },
	/* another replica of a failed workload */
	{ S(FAILED),     E(CRASH),           S(FAILED) },
	/* dying while being stopped is what was asked */
	{ S(STOPPING),   E(CRASH),           S(STOPPED) },
	/* a new vramd takes back the processes of the one before (an adopted start is a start) */
	{ S(STOPPED),    E(ADOPTED_READY),   S(READY) },
	{ S(STOPPED),    E(ADOPTED_OFFLOADED), S(OFFLOADED) },
	{ S(STOPPED),    E(ADOPTED_PARKED),  S(PARKED) },
};

#undef S
#undef E

const size_t vram_wl_n_transitions = sizeof(vram_wl_transitions) / sizeof(vram_wl_transitions[0]);

int vram_wl_transition(enum vram_wl_state from, enum vram_wl_event ev)
{
	for (size_t i = 0; i < vram_wl_n_transitions; i++)
		if (vram_wl_transitions[i].from == from && vram_wl_transitions[i].event == ev)
			return (int)vram_wl_transitions[i].to;
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
	       s == VRAM_WL_PARKED || s == VRAM_WL_FAILED;
}

bool vram_wl_state_on_gpu(enum vram_wl_state s)
{
	return s == VRAM_WL_STARTING || s == VRAM_WL_READY || s == VRAM_WL_OFFLOADING ||
	       s == VRAM_WL_RESTORING;
}
