/* SPDX-License-Identifier: MIT */
/*
 * Health probes on the loop: a bufferevent connects to 127.0.0.1:port; for
 * TCP that is the whole check, for HTTP it sends one GET and reads the status
 * line. A model server's probe (VRAM_HEALTH_MODEL) asks GET /health, and
 * GET /v1/models on a second connection when /health is no 2xx and no 503
 * (a server without that route); 503 is a server still loading its model.
 * One timer bounds the whole probe. The callback always comes from the
 * loop (a zero-delay timer for errors found at once), so callers never see it
 * re-enter them.
 */
#include "daemon/supervise.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/units.h"

#define PROBE_STATUS_LINE_MAX 256 /* bytes read before giving up on a status line */

struct vram_health_probe {
	struct event_base *base;
	enum vram_health_kind kind;
	char *path;              /* owned */
	unsigned port;
	uint64_t timeout_ms;
	struct bufferevent *bev;
	struct event *timer;     /* overall timeout, or the deferred result */
	bool finished;
	bool result_ok;
	bool second;             /* MODEL: /health answered, /v1/models is being asked */
	char why[128];
	vram_probe_cb cb;
	void *arg;
};

static void probe_free(struct vram_health_probe *p)
{
	if (p->bev)
		bufferevent_free(p->bev);
	if (p->timer)
		event_free(p->timer);
	free(p->path);
	free(p);
}

static void probe_report(struct vram_health_probe *p)
{
	vram_probe_cb cb = p->cb;
	void *arg = p->arg;
	bool ok = p->result_ok;
	char why[sizeof(p->why)];
	memcpy(why, p->why, sizeof(why));
	probe_free(p);
	cb(ok, why, arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct vram_health_probe *p = arg;
	if (!p->finished) {
		char dur[32];
		p->result_ok = false;
		snprintf(p->why, sizeof(p->why), "no answer on port %u within %s", p->port,
			 vram_units_format_duration_ms(p->timeout_ms, dur, sizeof(dur)));
	}
	probe_report(p);
}

/* Records the result and reports it from the next loop turn. */
static void probe_finish(struct vram_health_probe *p, bool ok, const char *why)
{
	if (p->finished)
		return;
	p->finished = true;
	p->result_ok = ok;
	snprintf(p->why, sizeof(p->why), "%s", why ? why : "");
	if (p->bev) {
		bufferevent_free(p->bev);
		p->bev = NULL;
	}
	struct timeval zero = {0, 0};
	evtimer_del(p->timer);
	evtimer_add(p->timer, &zero);
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short events, void *arg);

/*
 * Connects p to its port (a connection of its own: the last one, if any,
 * is freed), the GET or the TCP verdict following in on_event. Returns 0,
 * the result then coming from the loop, or -errno.
 */
static int probe_connect(struct vram_health_probe *p)
{
	if (p->bev) {
		bufferevent_free(p->bev);
		p->bev = NULL;
	}
	/* not libevent's socket: that one lacks O_CLOEXEC, and processes spawned meanwhile would keep it */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	p->bev = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!p->bev) {
		close(fd);
		return -ENOMEM;
	}
	bufferevent_setcb(p->bev, on_read, NULL, on_event, p);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		/* the bufferevent is still ours; the result comes from the loop */
		probe_finish(p, false, "connect failed");
	}
	return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct vram_health_probe *p = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;
	char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
	if (!line) {
		if (evbuffer_get_length(in) > PROBE_STATUS_LINE_MAX)
			probe_finish(p, false, "no HTTP status line");
		return;
	}
	int code = 0;
	char why[128];
	if (sscanf(line, "HTTP/%*d.%*d %d", &code) != 1) {
		probe_finish(p, false, "not an HTTP answer");
	} else if (code >= 200 && code < 300) {
		probe_finish(p, true, NULL);
	} else if (p->kind == VRAM_HEALTH_MODEL && !p->second && code != 503) {
		/* no /health route: the OpenAI model list answers once the model is loaded */
		p->second = true;
		free(p->path);
		p->path = strdup("/v1/models");
		if (!p->path || probe_connect(p) < 0)
			probe_finish(p, false, "out of memory");
	} else if (p->second && (code == 404 || code == 405)) {
		/* a server with models: but neither route: say how to check it instead */
		snprintf(why, sizeof(why), "GET /health and GET /v1/models answered HTTP %d: "
			 "set health: to a path it has, or tcp", code);
		probe_finish(p, false, why);
	} else {
		snprintf(why, sizeof(why), "GET %s answered HTTP %d%s", p->path, code,
			 code == 503 ? " (still loading)" : "");
		probe_finish(p, false, why);
	}
	free(line);
}

static void on_event(struct bufferevent *bev, short events, void *arg)
{
	struct vram_health_probe *p = arg;
	if (events & BEV_EVENT_CONNECTED) {
		if (p->kind == VRAM_HEALTH_TCP) {
			probe_finish(p, true, NULL);
			return;
		}
		evbuffer_add_printf(bufferevent_get_output(bev),
				    "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
				    "User-Agent: vramd-health\r\nConnection: close\r\n\r\n",
				    p->path, p->port);
		bufferevent_enable(bev, EV_READ);
		return;
	}
	if (events & BEV_EVENT_ERROR) {
		int e = EVUTIL_SOCKET_ERROR();
		char why[128];
		snprintf(why, sizeof(why), "port %u: %s", p->port,
			 e ? evutil_socket_error_to_string(e) : "connection failed");
		probe_finish(p, false, why);
	} else if (events & BEV_EVENT_EOF) {
		probe_finish(p, false, "connection closed before an answer");
	}
}

int vram_health_probe_start(struct event_base *base, enum vram_health_kind kind, const char *path,
			    unsigned port, uint64_t timeout_ms, vram_probe_cb cb, void *arg,
			    struct vram_health_probe **ret)
{
	struct vram_health_probe *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->base = base;
	p->kind = kind;
	p->port = port;
	p->timeout_ms = timeout_ms;
	p->cb = cb;
	p->arg = arg;
	p->path = strdup(kind == VRAM_HEALTH_MODEL ? "/health" : path && path[0] ? path : "/");
	p->timer = evtimer_new(base, on_timer, p);
	if (!p->path || !p->timer) {
		probe_free(p);
		return -ENOMEM;
	}
	if (kind == VRAM_HEALTH_NONE) {
		probe_finish(p, true, NULL);
		*ret = p;
		return 0;
	}
	struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
			     .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
	evtimer_add(p->timer, &tv);
	int r = probe_connect(p);
	if (r < 0) {
		probe_free(p);
		return r;
	}
	*ret = p;
	return 0;
}

void vram_health_probe_cancel(struct vram_health_probe *p)
{
	if (p)
		probe_free(p);
}
