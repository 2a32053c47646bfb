/* SPDX-License-Identifier: MIT */
/*
 * Worker pool: a mutex-protected queue of jobs for the threads, a list of
 * finished jobs for the loop (both common/list.h lists), and a pipe whose
 * read end is an event on the loop, written once per finished job to wake
 * it. No libevent locking is needed because only the loop thread touches
 * libevent.
 */
#include "common/workers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/list.h"

struct work {
	struct vram_list link; /* in queue or finished */
	vram_work_fn fn;
	vram_work_done_fn done;
	void *arg;
};

struct vram_workers {
	struct event_base *base;
	unsigned n_threads;
	pthread_t *threads;
	unsigned n_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct vram_list queue;          /* struct work waiting for a thread, oldest first */
	size_t queued;
	struct vram_list finished;       /* struct work waiting for the loop, in completion order */
	bool stopping;
	int wake[2];                     /* pipe: threads write, the loop reads */
	struct event *wake_ev;
};

static void *thread_main(void *arg)
{
	struct vram_workers *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (vram_list_empty(&w->queue) && !w->stopping)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->stopping)
			break;
		struct work *job = vram_list_entry(vram_list_first(&w->queue), struct work, link);
		vram_list_remove(&job->link);
		w->queued--;
		pthread_mutex_unlock(&w->lock);

		job->fn(job->arg);

		pthread_mutex_lock(&w->lock);
		vram_list_push_back(&w->finished, &job->link);
		char one = 1;
		while (write(w->wake[1], &one, 1) < 0 && errno == EINTR)
			;
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	struct vram_workers *w = arg;
	char buf[64];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	struct vram_list done;
	vram_list_init(&done);
	pthread_mutex_lock(&w->lock);
	vram_list_move(&w->finished, &done);
	pthread_mutex_unlock(&w->lock);
	/* callbacks in completion order */
	while (!vram_list_empty(&done)) {
		struct work *job = vram_list_entry(vram_list_first(&done), struct work, link);
		vram_list_remove(&job->link);
		if (job->done)
			job->done(job->arg);
		free(job);
	}
}

int vram_workers_new(struct event_base *base, unsigned n_threads, struct vram_workers **ret)
{
	struct vram_workers *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->base = base;
	vram_list_init(&w->queue);
	vram_list_init(&w->finished);
	w->n_threads = n_threads ? n_threads : 1;
	w->wake[0] = w->wake[1] = -1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	int r = -ENOMEM;
	w->threads = calloc(w->n_threads, sizeof(*w->threads));
	if (!w->threads)
		goto out_free;
	if (pipe2(w->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		goto out_free;
	}
	w->wake_ev = event_new(base, w->wake[0], EV_READ | EV_PERSIST, on_wake, w);
	if (!w->wake_ev || event_add(w->wake_ev, NULL) < 0)
		goto out_free;
	*ret = w;
	return 0;

out_free:
	vram_workers_free(w);
	return r;
}

void vram_workers_free(struct vram_workers *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	for (unsigned i = 0; i < w->n_started; i++)
		pthread_join(w->threads[i], NULL);
	struct vram_list *lists[2] = {&w->queue, &w->finished};
	for (int i = 0; i < 2; i++) {
		while (!vram_list_empty(lists[i])) {
			struct work *job = vram_list_entry(vram_list_first(lists[i]), struct work, link);
			vram_list_remove(&job->link);
			free(job);
		}
	}
	if (w->wake_ev)
		event_free(w->wake_ev);
	if (w->wake[0] >= 0)
		close(w->wake[0]);
	if (w->wake[1] >= 0)
		close(w->wake[1]);
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w->threads);
	free(w);
}

int vram_workers_submit(struct vram_workers *w, vram_work_fn fn, vram_work_done_fn done,
			void *arg)
{
	struct work *job = calloc(1, sizeof(*job));
	if (!job)
		return -ENOMEM;
	job->fn = fn;
	job->done = done;
	job->arg = arg;
	int r = 0;
	pthread_mutex_lock(&w->lock);
	if (w->queued >= VRAM_WORKERS_QUEUE_MAX) {
		r = -EAGAIN;
		goto out_unlock;
	}
	/* one more thread per submission until the pool is full */
	if (w->n_started < w->n_threads) {
		int e = pthread_create(&w->threads[w->n_started], NULL, thread_main, w);
		if (e != 0 && w->n_started == 0) {
			r = -e;
			goto out_unlock;
		}
		if (e == 0)
			w->n_started++;
	}
	vram_list_push_back(&w->queue, &job->link);
	w->queued++;
	pthread_cond_signal(&w->cond);
	job = NULL;
out_unlock:
	pthread_mutex_unlock(&w->lock);
	free(job);
	return r;
}
