/* SPDX-License-Identifier: MIT */
/* The progress line of a waiting action; see progress.h. */
#include "ctl/progress.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl/stream.h"

bool vram_progress_wanted(void)
{
	const char *term = getenv("TERM");
	return isatty(STDERR_FILENO) && term && *term && strcmp(term, "dumb") != 0;
}

char *vram_progress_line(const char *workload, const char *action, const char *state,
			 const char *reason, double seconds, char *buf, size_t size)
{
	bool say_reason = state && reason && *reason;
	snprintf(buf, size, "%s: %s%s%.160s%s, %.1f s", workload, state ? state : action,
		 say_reason ? " (" : "", say_reason ? reason : "", say_reason ? ")" : "", seconds);
	return buf;
}

/* The request, made on a thread while the line is drawn. */
struct call {
	const struct vram_client_url *url;
	const char *method, *path, *body, *token;
	int timeout_ms;
	struct vram_client_response *resp;
	char *err;
	size_t err_size;
	int result;
	int done_fd; /* written once the reply is in */
};

static void *call_thread(void *arg)
{
	struct call *c = arg;
	c->result = vram_client_request(c->url, c->method, c->path, c->body, c->token, c->timeout_ms,
					c->resp, c->err, c->err_size);
	char one = 1;
	ssize_t n = write(c->done_fd, &one, 1);
	(void)n;
	return NULL;
}

/* What the event stream said of the workload last. */
struct seen {
	const char *workload; /* borrowed */
	char state[32];
	char reason[256];
	struct vram_sse_reader sse;
};

/* One event: a state change of our workload is noted. */
static void on_event(const char *data, void *arg)
{
	struct seen *s = arg;
	json_t *j = json_loads(data, 0, NULL);
	const char *w = json_string_value(json_object_get(j, "workload"));
	const char *to = json_string_value(json_object_get(j, "to"));
	const char *why = json_string_value(json_object_get(j, "reason"));
	if (w && to && strcmp(w, s->workload) == 0) {
		snprintf(s->state, sizeof(s->state), "%s", to);
		snprintf(s->reason, sizeof(s->reason), "%s", why ? why : "");
	}
	json_decref(j);
}

int vram_progress_request(const struct vram_client_url *url, const char *method, const char *path,
			  const char *body, const char *token, int timeout_ms, const char *workload,
			  const char *action, struct vram_client_response *ret, char *err,
			  size_t err_size)
{
	int pipefd[2];
	if (pipe(pipefd) < 0)
		return vram_client_request(url, method, path, body, token, timeout_ms, ret, err,
					   err_size);
	/* the events first, so that no change between the two is missed */
	struct vram_stream *events = NULL;
	struct vram_client_response refused;
	char serr[256];
	if (vram_stream_open(url, "/api/events", token, 2000, &events, &refused, serr,
			     sizeof(serr)) == 0 &&
	    !events)
		vram_client_response_done(&refused); /* no events: the time alone is shown */

	struct call c = { .url = url, .method = method, .path = path, .body = body, .token = token,
			  .timeout_ms = timeout_ms, .resp = ret, .err = err, .err_size = err_size,
			  .done_fd = pipefd[1] };
	pthread_t th;
	if (pthread_create(&th, NULL, call_thread, &c) != 0) {
		vram_stream_close(events);
		close(pipefd[0]);
		close(pipefd[1]);
		return vram_client_request(url, method, path, body, token, timeout_ms, ret, err,
					   err_size);
	}
	struct seen *s = calloc(1, sizeof(*s));
	if (s)
		s->workload = workload;
	long long t0 = vram_client_now_ms(), next_draw = t0;
	for (bool done = false; !done;) {
		long long now = vram_client_now_ms();
		if (now >= next_draw && s) {
			char line[512];
			vram_progress_line(workload, action, s->state[0] ? s->state : NULL, s->reason,
					   (double)(now - t0) / 1000.0, line, sizeof(line));
			fprintf(stderr, "\r\033[K%s", line);
			fflush(stderr);
			next_draw = now + VRAM_PROGRESS_REDRAW_MS;
		}
		struct pollfd p[2] = { { .fd = pipefd[0], .events = POLLIN },
				       { .fd = events ? vram_stream_fd(events) : -1, .events = POLLIN } };
		int wait = (int)(next_draw - vram_client_now_ms());
		if (events && vram_stream_buffered(events))
			wait = 0;
		if (poll(p, 2, wait < 0 ? 0 : wait) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			done = true;
		if (events && ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) ||
			       vram_stream_buffered(events))) {
			char buf[4096];
			ssize_t n = vram_stream_read(events, buf, sizeof(buf), 0, serr, sizeof(serr));
			if (n > 0 && s)
				vram_sse_feed(&s->sse, buf, (size_t)n, on_event, s);
			else if (n != -ETIMEDOUT) {
				vram_stream_close(events); /* ended or broken: the time goes on alone */
				events = NULL;
			}
		}
	}
	pthread_join(th, NULL);
	fputs("\r\033[K", stderr);
	fflush(stderr);
	free(s);
	vram_stream_close(events);
	close(pipefd[0]);
	close(pipefd[1]);
	return c.result;
}
