/* SPDX-License-Identifier: MIT */
/*
 * A small pool of threads for blocking work (driver checkpoint calls, waiting
 * on a hooked process) so that a single-threaded libevent loop never blocks.
 * Work runs on a thread; its completion callback runs on the loop afterwards.
 * Threads start on the first submission, so a program that never needs them
 * has none. Shared by the daemon and the offload engines (core/engine.h),
 * which get the daemon's pool through struct vram_engine_host.
 */
#ifndef VRAM_WORKERS_H
#define VRAM_WORKERS_H

#include <stddef.h>

struct event_base;
struct vram_workers;

#define VRAM_WORKERS_QUEUE_MAX 256 /* jobs waiting for a thread */

typedef void (*vram_work_fn)(void *arg);      /* runs on a worker thread */
typedef void (*vram_work_done_fn)(void *arg); /* runs on the loop once work returned */

/* n_threads >= 1. base is borrowed and outlives the pool. Returns 0 or -errno. */
int vram_workers_new(struct event_base *base, unsigned n_threads, struct vram_workers **ret);
/*
 * Waits for running work to return, drops queued work without running it or
 * its done callback, joins the threads and frees. Accepts NULL.
 */
void vram_workers_free(struct vram_workers *w);
/* Queues work. Returns 0, -EAGAIN (queue full) or -errno (a thread could not start). */
int vram_workers_submit(struct vram_workers *w, vram_work_fn fn, vram_work_done_fn done,
			void *arg);

#endif
