/* SPDX-License-Identifier: MIT */
/*
 * `vramctl top`: a live view of vramd in the manner of htop or nvitop,
 * drawn with ncurses. GPU memory bars, the host's budget, the workloads
 * sorted by the GPU memory they hold, with state, GPUs, memory, request
 * rate, idle time and engine. States change as the event stream
 * (/api/events) reports them; the numbers come from /api/status and
 * /metrics once a second. Keys act on the selected workload (start, stop,
 * offload, restore), without waiting: the change shows as it happens.
 * Works wherever vramctl does: the control socket or HTTP.
 *
 * Only the drawing and the keys are here (this file is linked into the
 * vramctl binary alone, with ncurses); what is shown is ctl/topmodel.c.
 */
#include <errno.h>
#include <locale.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curses.h>
#include <jansson.h>

#include "common/units.h"
#include "core/workload.h"
#include "ctl/client.h"
#include "ctl/ctl.h"
#include "ctl/stream.h"
#include "ctl/top.h"
#include "ctl/topmodel.h"

#define TOP_REFRESH_MS 1000      /* ms between reads of /api/status and /metrics */
#define TOP_AFTER_EVENT_MS 150   /* ms after an event before the numbers are read again */
#define TOP_RECONNECT_MS 2000    /* ms between tries to open the event stream again */
#define TOP_REQUEST_TIMEOUT_MS 5000

enum { COLOR_OK = 1, COLOR_BUSY, COLOR_BAD, COLOR_BAR };

struct top {
	const struct vram_client_url *url; /* borrowed */
	const char *token;                 /* borrowed, may be NULL */
	struct vram_top model;
	struct vram_stream *events;        /* NULL while not connected */
	struct vram_sse_reader sse;
	long long next_refresh_ms, next_connect_ms;
	char message[512];                 /* the last action's outcome, or an error */
	const char *confirm;               /* an action waiting for 'y' ("stop"), or NULL */
	char confirm_name[64];
	char where[256];
	bool status_ok;
};

/* GET path into *ret (caller frees); 0, or -1 with the reason in t->message. */
static int get(struct top *t, const char *path, struct vram_client_response *ret)
{
	char err[512];
	if (vram_client_request(t->url, "GET", path, NULL, t->token, TOP_REQUEST_TIMEOUT_MS, ret, err,
				sizeof(err)) < 0) {
		snprintf(t->message, sizeof(t->message), "%s", err);
		return -1;
	}
	if (ret->status != 200) {
		snprintf(t->message, sizeof(t->message), "GET %s: HTTP %d", path, ret->status);
		vram_client_response_done(ret);
		return -1;
	}
	return 0;
}

static void refresh_numbers(struct top *t)
{
	struct vram_client_response resp;
	t->status_ok = false;
	if (get(t, "/api/status", &resp) == 0) {
		json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
		t->status_ok = j && vram_top_set_status(&t->model, j) == 0;
		json_decref(j);
		vram_client_response_done(&resp);
	}
	if (t->status_ok && get(t, "/metrics", &resp) == 0) {
		vram_top_set_metrics(&t->model, resp.body, resp.body_len, vram_client_now_ms());
		vram_client_response_done(&resp);
	}
	t->next_refresh_ms = vram_client_now_ms() + TOP_REFRESH_MS;
}

/* A state event: shown at once; the numbers follow shortly. */
static void on_event(const char *data, void *arg)
{
	struct top *t = arg;
	json_t *j = json_loads(data, 0, NULL);
	const char *w = json_string_value(json_object_get(j, "workload"));
	const char *to = json_string_value(json_object_get(j, "to"));
	if (w && to)
		vram_top_event(&t->model, w, to);
	else
		t->next_refresh_ms = 0; /* a reload: workloads came or went */
	json_decref(j);
	long long soon = vram_client_now_ms() + TOP_AFTER_EVENT_MS;
	if (t->next_refresh_ms > soon)
		t->next_refresh_ms = soon;
}

static void connect_events(struct top *t)
{
	struct vram_client_response refused;
	char err[256];
	t->next_connect_ms = vram_client_now_ms() + TOP_RECONNECT_MS;
	if (vram_stream_open(t->url, "/api/events", t->token, TOP_REQUEST_TIMEOUT_MS, &t->events,
			     &refused, err, sizeof(err)) < 0) {
		t->events = NULL;
		return;
	}
	if (!t->events)
		vram_client_response_done(&refused);
	memset(&t->sse, 0, sizeof(t->sse));
	t->next_refresh_ms = 0; /* what changed while not connected */
}

/* POST the action on the selected workload, without waiting for it to finish. */
static void act(struct top *t, const char *action, const char *name)
{
	char path[256], err[400];
	snprintf(path, sizeof(path), "/api/workloads/%s/%s?wait=0", name, action);
	struct vram_client_response resp;
	if (vram_client_request(t->url, "POST", path, NULL, t->token, TOP_REQUEST_TIMEOUT_MS, &resp,
				err, sizeof(err)) < 0) {
		snprintf(t->message, sizeof(t->message), "%s %s: %s", action, name, err);
		return;
	}
	json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
	const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	const char *state = json_string_value(json_object_get(j, "state"));
	if (resp.status == 200 || resp.status == 202)
		snprintf(t->message, sizeof(t->message), "%s %s: %s (now %s)", action, name,
			 resp.status == 202 ? "accepted" : "done", state ? state : "?");
	else
		snprintf(t->message, sizeof(t->message), "%s %s: %s", action, name,
			 msg ? msg : "refused");
	json_decref(j);
	vram_client_response_done(&resp);
	t->next_refresh_ms = 0;
}

/* "20.0/80.0GiB" */
static void gib_pair(uint64_t used, uint64_t total, char *buf, size_t size)
{
	snprintf(buf, size, "%.1f/%.1fGiB", (double)used / (double)VRAM_GiB,
		 (double)total / (double)VRAM_GiB);
}

/* [|||||     ]: width cells between the brackets, used of total */
static void bar(int y, int x, int width, uint64_t used, uint64_t total)
{
	int fill = total ? (int)((double)used / (double)total * width + 0.5) : 0;
	if (fill > width)
		fill = width;
	mvaddch(y, x, '[');
	if (has_colors())
		attron(COLOR_PAIR(COLOR_BAR));
	for (int i = 0; i < width; i++)
		addch(i < fill ? '|' : ' ');
	if (has_colors())
		attroff(COLOR_PAIR(COLOR_BAR));
	addch(']');
}

static int state_color(const char *state)
{
	enum vram_wl_state st;
	if (vram_wl_state_parse(state, &st) < 0)
		return 0;
	if (st == VRAM_WL_READY)
		return COLOR_OK;
	if (st == VRAM_WL_FAILED)
		return COLOR_BAD;
	if (vram_wl_state_settled(st))
		return 0; /* stopped, offloaded, parked */
	return COLOR_BUSY; /* on its way somewhere */
}

static void fmt_idle(const struct vram_top_wl *w, char *buf, size_t size)
{
	double s = w->idle_s;
	enum vram_wl_state st;
	if (vram_wl_state_parse(w->state, &st) < 0 || st != VRAM_WL_READY || s < 0)
		snprintf(buf, size, "-");
	else if (s < 60)
		snprintf(buf, size, "%.0fs", s);
	else if (s < 3600)
		snprintf(buf, size, "%.0fm", s / 60);
	else
		snprintf(buf, size, "%.1fh", s / 3600);
}

static void draw(struct top *t)
{
	int rows, cols;
	getmaxyx(stdscr, rows, cols);
	erase();
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	char clock[16];
	strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
	char line[1024];
	snprintf(line, sizeof(line), "vramctl top - vramd at %s  %s  events: %s", t->where, clock,
		 t->events ? "live" : "reconnecting");
	attron(A_BOLD);
	mvaddnstr(0, 0, line, cols);
	attroff(A_BOLD);

	int y = 2;
	int bar_w = cols - 36 > 40 ? 40 : cols - 36;
	if (bar_w < 10)
		bar_w = 10;
	for (size_t i = 0; i < t->model.n_gpus && y < rows - 4; i++, y++) {
		const struct vram_top_gpu *g = &t->model.gpus[i];
		char amount[64];
		mvprintw(y, 0, "GPU%-2u", g->index);
		bar(y, 6, bar_w, g->used, g->total);
		if (g->used_known)
			gib_pair(g->used, g->total, amount, sizeof(amount));
		else
			snprintf(amount, sizeof(amount), "?/%.1fGiB", (double)g->total / (double)VRAM_GiB);
		snprintf(line, sizeof(line), " %s  %s", amount, g->name);
		mvaddnstr(y, 8 + bar_w, line, cols - 8 - bar_w > 0 ? cols - 8 - bar_w : 0);
	}
	if (t->model.host_budget && y < rows - 4) {
		char amount[64];
		mvprintw(y, 0, "HOST ");
		bar(y, 6, bar_w, t->model.host_parked, t->model.host_budget);
		gib_pair(t->model.host_parked, t->model.host_budget, amount, sizeof(amount));
		snprintf(line, sizeof(line), " %s offloaded, of the budget", amount);
		mvaddnstr(y, 8 + bar_w, line, cols - 8 - bar_w > 0 ? cols - 8 - bar_w : 0);
		y++;
	}
	y++;
	static const char head[] = "  WORKLOAD              STATE       GPUS   GPU MEM   HOST MEM  REQ/S   IDLE   ENGINE";
	attron(A_BOLD | A_UNDERLINE);
	mvaddnstr(y++, 0, head, cols);
	attroff(A_BOLD | A_UNDERLINE);
	size_t sel = vram_top_selected_row(&t->model);
	for (size_t i = 0; i < t->model.n_wls && y < rows - 2; i++, y++) {
		const struct vram_top_wl *w = &t->model.wls[i];
		char gb[24], hb[24], rate[16], idle[16];
		vram_units_format_bytes(w->gpu_bytes, gb, sizeof(gb));
		vram_units_format_bytes(w->host_bytes, hb, sizeof(hb));
		if (w->req_rate < 0)
			snprintf(rate, sizeof(rate), "-");
		else
			snprintf(rate, sizeof(rate), "%.1f", w->req_rate);
		fmt_idle(w, idle, sizeof(idle));
		bool selected = i == sel;
		if (selected)
			attron(A_REVERSE);
		snprintf(line, sizeof(line), "%c %-20.20s  ", selected ? '>' : ' ', w->name);
		mvaddnstr(y, 0, line, cols);
		int color = state_color(w->state);
		if (color && has_colors())
			attron(COLOR_PAIR(color));
		snprintf(line, sizeof(line), "%-10.10s", w->state);
		addnstr(line, cols - 24 > 0 ? cols - 24 : 0);
		if (color && has_colors())
			attroff(COLOR_PAIR(color));
		snprintf(line, sizeof(line), "  %-5.5s  %-8s  %-8s  %-6s  %-5s  %s", w->gpus[0] ? w->gpus : "-",
			 gb, hb, rate, idle, w->engine[0] ? w->engine : "-");
		addnstr(line, cols - 34 > 0 ? cols - 34 : 0);
		if (selected)
			attroff(A_REVERSE);
	}
	if (!t->model.n_wls)
		mvaddnstr(y, 2, t->status_ok ? "no workloads" : "no status yet", cols - 2);

	static const char keys[] =
		"s start  x stop  o offload  r restore  up/down (j/k) select  q quit";
	mvaddnstr(rows - 2, 0, keys, cols);
	if (t->confirm)
		snprintf(line, sizeof(line), "%s %s? y to confirm, any other key cancels", t->confirm,
			 t->confirm_name);
	else
		snprintf(line, sizeof(line), "%s", t->message);
	mvaddnstr(rows - 1, 0, line, cols);
	refresh();
}

/* One key. Returns false to quit. */
static bool on_key(struct top *t, int ch)
{
	const char *name = t->model.n_wls ? t->model.selected : NULL;
	if (t->confirm) {
		const char *action = t->confirm;
		t->confirm = NULL;
		if (ch == 'y' || ch == 'Y')
			act(t, action, t->confirm_name);
		else
			snprintf(t->message, sizeof(t->message), "%s %s: cancelled", action,
				 t->confirm_name);
		return true;
	}
	switch (ch) {
	case 'q':
	case 'Q':
		return false;
	case KEY_UP:
	case 'k':
		vram_top_move(&t->model, -1);
		break;
	case KEY_DOWN:
	case 'j':
		vram_top_move(&t->model, 1);
		break;
	case 's':
		if (name)
			act(t, "start", name);
		break;
	case 'o':
		if (name)
			act(t, "offload", name);
		break;
	case 'r':
		if (name)
			act(t, "restore", name);
		break;
	case 'x':
		/* stopping ends what it is doing: asked twice */
		if (name) {
			t->confirm = "stop";
			snprintf(t->confirm_name, sizeof(t->confirm_name), "%s", name);
		}
		break;
	default:
		break;
	}
	return true;
}

int vram_top_main(const struct vram_client_url *url, const char *token)
{
	struct top *t = calloc(1, sizeof(*t));
	if (!t)
		return VRAM_CTL_EXIT_FAILED;
	t->url = url;
	t->token = token;
	vram_top_init(&t->model);
	vram_client_url_format(url, t->where, sizeof(t->where));
	/* before the screen is taken: a daemon that cannot be reached is said plainly */
	refresh_numbers(t);
	if (!t->status_ok) {
		fprintf(stderr, "vramctl: top: %s\n", t->message);
		vram_top_done(&t->model);
		free(t);
		return VRAM_CTL_EXIT_FAILED;
	}
	t->message[0] = '\0';
	connect_events(t);

	setlocale(LC_ALL, "");
	initscr();
	cbreak();
	noecho();
	keypad(stdscr, TRUE);
	nodelay(stdscr, TRUE);
	curs_set(0);
	if (has_colors()) {
		start_color();
		use_default_colors();
		init_pair(COLOR_OK, COLOR_GREEN, -1);
		init_pair(COLOR_BUSY, COLOR_YELLOW, -1);
		init_pair(COLOR_BAD, COLOR_RED, -1);
		init_pair(COLOR_BAR, COLOR_CYAN, -1);
	}
	bool running = true;
	while (running) {
		long long now = vram_client_now_ms();
		if (now >= t->next_refresh_ms)
			refresh_numbers(t);
		if (!t->events && now >= t->next_connect_ms)
			connect_events(t);
		draw(t);
		struct pollfd p[2] = { { .fd = STDIN_FILENO, .events = POLLIN },
				       { .fd = t->events ? vram_stream_fd(t->events) : -1,
					 .events = POLLIN } };
		long long until = t->next_refresh_ms;
		if (!t->events && t->next_connect_ms < until)
			until = t->next_connect_ms;
		long long wait = until - vram_client_now_ms();
		if (t->events && vram_stream_buffered(t->events))
			wait = 0;
		if (poll(p, 2, wait < 0 ? 0 : (int)wait) < 0 && errno != EINTR)
			break;
		int ch;
		while (running && (ch = getch()) != ERR)
			running = on_key(t, ch);
		if (t->events && (p[1].revents || vram_stream_buffered(t->events))) {
			char buf[8192], err[256];
			ssize_t n = vram_stream_read(t->events, buf, sizeof(buf), 0, err, sizeof(err));
			if (n > 0) {
				vram_sse_feed(&t->sse, buf, (size_t)n, on_event, t);
			} else if (n != -ETIMEDOUT) {
				vram_stream_close(t->events); /* vramd restarted or went away */
				t->events = NULL;
			}
		}
	}
	endwin();
	vram_stream_close(t->events);
	vram_top_done(&t->model);
	free(t);
	return VRAM_CTL_EXIT_OK;
}
