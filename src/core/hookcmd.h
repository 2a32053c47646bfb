/* SPDX-License-Identifier: MIT */
/*
 * A command to one hooked process (offload or restore its GPU memory, park
 * its host copy on disk, drop the host buffers it kept) and the process's
 * answer: the part of the hook channel the hook engines use.
 * The types live here, below both, so that the engines (core/engine_hook.c)
 * can drive the channel through the functions struct vram_engine_host
 * lends them without including a daemon header, and the channel
 * (daemon/hookchan.h) implements exactly these.
 */
#ifndef VRAM_HOOKCMD_H
#define VRAM_HOOKCMD_H

#include <stdint.h>
#include <sys/types.h>

struct vram_hookchan;     /* daemon/hookchan.h: the channel, opaque here */
struct vram_hookchan_req; /* one command in flight, opaque */

enum vram_hookchan_op {
	VRAM_HOOKCHAN_OFFLOAD = 0,
	VRAM_HOOKCHAN_RESTORE,   /* of an offloaded or a parked process */
	VRAM_HOOKCHAN_PARK,      /* an offloaded process writes its host copy to a file and frees it */
	VRAM_HOOKCHAN_DROP_HOST, /* a running process frees the host buffers it kept after a restore */
	VRAM_HOOKCHAN_PREPARE_HOST, /* a running process makes its host buffers ahead, in the background */
};

/* What one process answered. */
struct vram_hookchan_result {
	pid_t pid;
	int status;              /* 0 or -errno; -EPIPE: the process went away */
	unsigned state;          /* enum vram_hook_state (proto/hook_proto.h) after the operation */
	uint64_t bytes;          /* bytes moved; PARK: written to the file; DROP_HOST: freed */
	uint64_t nonmovable;     /* bytes that stayed on the device */
	uint64_t missing;        /* bytes a failed restore lacked */
	double seconds;
	char text[256];          /* summary or error, for people */
};

/* Runs once, from the loop, with the answer (borrowed for the call). */
typedef void (*vram_hookchan_done_cb)(const struct vram_hookchan_result *res, void *arg);

/*
 * Overlapped swaps (protocol 4). Command flags: an offload that reports
 * the memory it gives back as it goes (and never takes any back), a restore
 * that creates memory only within its grants.
 */
#define VRAM_HOOKCHAN_PROGRESS 0x2u /* = VRAM_HOOK_OFFLOAD_PROGRESS */
#define VRAM_HOOKCHAN_GRANTED 0x4u  /* = VRAM_HOOK_RESTORE_GRANTED */
#define VRAM_HOOKCHAN_MAX_DEVICES 16 /* device ordinals of a process in PROGRESS and GRANT */

/* From the loop, for each PROGRESS of an offload sent with VRAM_HOOKCHAN_PROGRESS:
 * freed[d], bytes given back so far on the process's device ordinal d. */
typedef void (*vram_hookchan_progress_cb)(const uint64_t freed[VRAM_HOOKCHAN_MAX_DEVICES], void *arg);

#endif
