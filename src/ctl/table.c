/* SPDX-License-Identifier: MIT */
/*
 * The status table. Columns are sized to their widest cell (in display
 * columns: the bar's block characters are three bytes but one column).
 */
#include "ctl/table.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/units.h"

#define TABLE_MAX_COLS 10
#define TABLE_CELL_MAX 160
#define TABLE_OUT_MAX (4u * 1024 * 1024) /* bytes of rendered text */
#define BAR_WIDTH 10                     /* cells */

char *vram_table_bar(uint64_t used, uint64_t total, unsigned width, char *buf, size_t size)
{
	static const char full[] = "\xe2\x96\x88";  /* U+2588 FULL BLOCK */
	static const char empty[] = "\xe2\x96\x91"; /* U+2591 LIGHT SHADE */
	unsigned filled = 0;
	if (total > 0) {
		double f = (double)used / (double)total;
		if (f > 1)
			f = 1;
		filled = (unsigned)lround(f * width);
		/* Anything in use shows at least one cell. */
		if (used > 0 && filled == 0)
			filled = 1;
	}
	size_t off = 0;
	buf[0] = '\0';
	for (unsigned i = 0; i < width && off + 4 <= size; i++) {
		memcpy(buf + off, i < filled ? full : empty, 3);
		off += 3;
		buf[off] = '\0';
	}
	return buf;
}

char *vram_table_format_seconds(double s, char *buf, size_t size)
{
	if (!(s >= 0) || !isfinite(s)) {
		snprintf(buf, size, "-");
		return buf;
	}
	unsigned long long t = (unsigned long long)s;
	if (t < 60)
		snprintf(buf, size, "%llus", t);
	else if (t < 3600)
		snprintf(buf, size, "%llum", t / 60);
	else if (t < 86400)
		snprintf(buf, size, "%lluh%02llum", t / 3600, t / 60 % 60);
	else
		snprintf(buf, size, "%llud%02lluh", t / 86400, t / 3600 % 24);
	return buf;
}

/* Display columns of a UTF-8 string (each code point counts one). */
static size_t display_width(const char *s)
{
	size_t w = 0;
	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

struct table {
	size_t n_cols;
	size_t n_rows;
	size_t cap_rows;
	char (*cells)[TABLE_MAX_COLS][TABLE_CELL_MAX]; /* rows */
	size_t width[TABLE_MAX_COLS];
};

static char *table_row(struct table *t)
{
	if (t->n_rows == t->cap_rows) {
		size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
		void *p = realloc(t->cells, cap * sizeof(t->cells[0]));
		if (!p)
			return NULL;
		t->cells = p;
		t->cap_rows = cap;
	}
	memset(t->cells[t->n_rows], 0, sizeof(t->cells[0]));
	return (char *)t->cells[t->n_rows++];
}

static void table_set(struct table *t, size_t col, const char *text)
{
	char *cell = t->cells[t->n_rows - 1][col];
	snprintf(cell, TABLE_CELL_MAX, "%s", text ? text : "");
	size_t w = display_width(cell);
	if (w > t->width[col])
		t->width[col] = w;
}

static int table_render(const struct table *t, struct vram_buf *out)
{
	for (size_t r = 0; r < t->n_rows; r++) {
		/* The last column is not padded (no trailing spaces). */
		size_t last = 0;
		for (size_t c = 0; c < t->n_cols; c++)
			if (t->cells[r][c][0])
				last = c;
		for (size_t c = 0; c <= last; c++) {
			const char *cell = t->cells[r][c];
			int e = vram_buf_puts(out, cell);
			if (e < 0)
				return e;
			if (c == last)
				break;
			for (size_t pad = display_width(cell); pad < t->width[c] + 2; pad++)
				if ((e = vram_buf_puts(out, " ")) < 0)
					return e;
		}
		int e = vram_buf_puts(out, "\n");
		if (e < 0)
			return e;
	}
	return 0;
}

/* First of the keys (a NULL-terminated list; "a.b" descends) present in obj. */
static json_t *get_any(json_t *obj, const char *const *keys)
{
	for (; *keys; keys++) {
		const char *k = *keys;
		json_t *v = obj;
		char part[64];
		while (v && *k) {
			size_t n = strcspn(k, ".");
			if (n >= sizeof(part))
				return NULL;
			memcpy(part, k, n);
			part[n] = '\0';
			v = json_object_get(v, part);
			k += n;
			if (*k == '.')
				k++;
		}
		if (v && !json_is_null(v))
			return v;
	}
	return NULL;
}

#define GET(obj, ...) get_any(obj, (const char *const[]){ __VA_ARGS__, NULL })

static bool get_u64(json_t *v, uint64_t *ret)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*ret = (uint64_t)json_integer_value(v);
		return true;
	}
	if (json_is_real(v) && json_real_value(v) >= 0) {
		*ret = (uint64_t)json_real_value(v);
		return true;
	}
	return false;
}

/* "0,1" from an array of GPU indices, "-" when none (CPU). */
static void format_gpus(json_t *gpus, char *buf, size_t size)
{
	size_t off = 0, i;
	json_t *g;
	buf[0] = '\0';
	json_array_foreach(gpus, i, g) {
		json_t *idx = json_is_object(g) ? GET(g, "index") : g;
		if (!json_is_integer(idx))
			continue;
		int n = snprintf(buf + off, size - off, "%s%lld", off ? "," : "",
				 (long long)json_integer_value(idx));
		if (n < 0 || (size_t)n >= size - off)
			break;
		off += (size_t)n;
	}
	if (!buf[0])
		snprintf(buf, size, "-");
}

static void format_pids(json_t *w, char *buf, size_t size)
{
	json_t *pid = GET(w, "pid");
	json_t *pids = GET(w, "pids");
	buf[0] = '\0';
	if (json_is_integer(pid) && json_integer_value(pid) > 0) {
		snprintf(buf, size, "%lld", (long long)json_integer_value(pid));
	} else if (json_is_array(pids)) {
		size_t off = 0, i;
		json_t *p;
		json_array_foreach(pids, i, p) {
			if (!json_is_integer(p) || json_integer_value(p) <= 0)
				continue;
			int n = snprintf(buf + off, size - off, "%s%lld", off ? "," : "",
					 (long long)json_integer_value(p));
			if (n < 0 || (size_t)n >= size - off)
				break;
			off += (size_t)n;
		}
	}
	if (!buf[0])
		snprintf(buf, size, "-");
}

/* "[██░░] 48.0/80.0GiB": a bar and both sides in one unit, which reads best. */
static void format_used_of(uint64_t used, uint64_t total, char *buf, size_t size)
{
	char bar[3 * BAR_WIDTH + 1];
	double div = total >= VRAM_GiB ? (double)VRAM_GiB : (double)VRAM_MiB;
	const char *unit = total >= VRAM_GiB ? "GiB" : "MiB";
	snprintf(buf, size, "[%s] %.1f/%.1f%s", vram_table_bar(used, total, BAR_WIDTH, bar, sizeof(bar)),
		 (double)used / div, (double)total / div, unit);
}

static void render_gpus(json_t *gpus, struct table *t)
{
	char *row = table_row(t);
	if (!row)
		return;
	t->n_cols = 5;
	table_set(t, 0, "GPU");
	table_set(t, 1, "NAME");
	table_set(t, 2, "MEMORY");
	table_set(t, 3, "UTIL");
	table_set(t, 4, "PROCESSES");
	size_t i;
	json_t *g;
	json_array_foreach(gpus, i, g) {
		if (!table_row(t))
			return;
		char buf[TABLE_CELL_MAX], a[32];
		json_t *idx = GET(g, "index");
		snprintf(buf, sizeof(buf), "%lld",
			 json_is_integer(idx) ? (long long)json_integer_value(idx) : (long long)i);
		table_set(t, 0, buf);
		const char *name = json_string_value(GET(g, "name"));
		table_set(t, 1, name ? name : "-");
		uint64_t total = 0, used = 0, free_b = 0;
		bool have_total = get_u64(GET(g, "memory.total"), &total);
		bool have_used = get_u64(GET(g, "memory.used"), &used);
		if (!have_used && have_total && get_u64(GET(g, "memory.free"), &free_b))
			used = free_b <= total ? total - free_b : 0, have_used = true;
		if (have_total) {
			format_used_of(have_used ? used : 0, total, buf, sizeof(buf));
			table_set(t, 2, buf);
		} else {
			table_set(t, 2, "-");
		}
		json_t *util = GET(g, "utilization_percent");
		if (json_is_integer(util) && json_integer_value(util) >= 0)
			snprintf(buf, sizeof(buf), "%lld%%", (long long)json_integer_value(util));
		else
			snprintf(buf, sizeof(buf), "-");
		table_set(t, 3, buf);
		/* Processes as gpustat shows them: name(memory). */
		json_t *procs = GET(g, "processes");
		size_t off = 0, j;
		json_t *p;
		buf[0] = '\0';
		json_array_foreach(procs, j, p) {
			const char *who = json_string_value(GET(p, "workload"));
			json_t *pid = GET(p, "pid");
			uint64_t bytes = 0;
			bool hb = get_u64(GET(p, "used_bytes"), &bytes);
			char who_buf[32];
			if (!who) {
				snprintf(who_buf, sizeof(who_buf), "pid %lld",
					 json_is_integer(pid) ? (long long)json_integer_value(pid) : 0LL);
				who = who_buf;
			}
			int n = snprintf(buf + off, sizeof(buf) - off, "%s%s(%s)", off ? " " : "", who,
					 hb ? vram_units_format_bytes(bytes, a, sizeof(a)) : "?");
			if (n < 0 || (size_t)n >= sizeof(buf) - off) {
				buf[off] = '\0';
				break;
			}
			off += (size_t)n;
		}
		table_set(t, 4, buf[0] ? buf : "-");
	}
}

/*
 * One line for the host's memory: what the workloads hold in RAM (parked
 * and kept) against the budget, the host's total, and each part, with
 * what is parked on disk. Nothing from a daemon that does not report it.
 */
static void render_host(json_t *host, struct vram_buf *out)
{
	if (!json_is_object(host))
		return;
	char line[TABLE_CELL_MAX], a[32];
	uint64_t total = 0, budget = 0, parked = 0, kept = 0, disk = 0;
	bool have_budget = get_u64(GET(host, "budget"), &budget);
	bool have_total = get_u64(GET(host, "total"), &total);
	get_u64(GET(host, "parked"), &parked);
	get_u64(GET(host, "kept"), &kept);
	get_u64(GET(host, "on_disk"), &disk);
	vram_buf_puts(out, "HOST  ");
	if (have_budget) {
		format_used_of(parked + kept, budget, line, sizeof(line));
		vram_buf_printf(out, "%s budget", line);
	} else {
		vram_buf_puts(out, "no budget");
	}
	vram_buf_printf(out, "  total %s", have_total ? vram_units_format_bytes(total, a, sizeof(a)) : "?");
	vram_buf_printf(out, "  parked %s", vram_units_format_bytes(parked, a, sizeof(a)));
	vram_buf_printf(out, "  kept %s", vram_units_format_bytes(kept, a, sizeof(a)));
	vram_buf_printf(out, "  disk %s\n", vram_units_format_bytes(disk, a, sizeof(a)));
}

static void render_workloads(json_t *wls, struct table *t, struct vram_buf *notes)
{
	if (!table_row(t))
		return;
	t->n_cols = 8;
	static const char *const heads[] = { "WORKLOAD", "STATE", "GPUS", "PID", "MEMORY", "IDLE",
					     "ENGINE", "TIMEOUTS" };
	for (size_t c = 0; c < 8; c++)
		table_set(t, c, heads[c]);
	size_t i;
	json_t *w;
	json_array_foreach(wls, i, w) {
		if (!table_row(t))
			return;
		char buf[TABLE_CELL_MAX], a[32], b[32];
		const char *name = json_string_value(GET(w, "name"));
		const char *state = json_string_value(GET(w, "state"));
		table_set(t, 0, name ? name : "?");
		table_set(t, 1, state ? state : "?");
		format_gpus(GET(w, "gpus"), buf, sizeof(buf));
		table_set(t, 2, buf);
		format_pids(w, buf, sizeof(buf));
		table_set(t, 3, buf);
		/*
		 * GPU memory held now; what an offload keeps in host RAM is marked
		 * "host", what a park put in files "disk".
		 */
		uint64_t gpu_bytes = 0, host_bytes = 0, disk_bytes = 0;
		get_u64(GET(w, "memory.gpu_bytes"), &gpu_bytes);
		get_u64(GET(w, "memory.offloaded_bytes"), &host_bytes);
		get_u64(GET(w, "memory.parked_bytes"), &disk_bytes);
		if (gpu_bytes > 0)
			vram_units_format_bytes(gpu_bytes, buf, sizeof(buf));
		else if (host_bytes > 0 && disk_bytes > 0)
			snprintf(buf, sizeof(buf), "%s host, %s disk",
				 vram_units_format_bytes(host_bytes, a, sizeof(a)),
				 vram_units_format_bytes(disk_bytes, b, sizeof(b)));
		else if (host_bytes > 0)
			snprintf(buf, sizeof(buf), "%s host", vram_units_format_bytes(host_bytes, a, sizeof(a)));
		else if (disk_bytes > 0)
			snprintf(buf, sizeof(buf), "%s disk", vram_units_format_bytes(disk_bytes, a, sizeof(a)));
		else
			snprintf(buf, sizeof(buf), "-");
		table_set(t, 4, buf);
		/* Idle time means something only while it holds memory. */
		json_t *idle = GET(w, "idle_seconds");
		bool holds = state && (strcmp(state, "ready") == 0 || strcmp(state, "offloaded") == 0 ||
				       strcmp(state, "parked") == 0);
		table_set(t, 5, vram_table_format_seconds(holds && json_is_number(idle) ? json_number_value(idle) : -1,
							  buf, sizeof(buf)));
		const char *engine = json_string_value(GET(w, "engine.name", "engine"));
		table_set(t, 6, engine ? engine : "-");
		/* offload/release timeouts: "10m/1h", "never" for off; ", park 2h" when that is on. */
		json_t *off_s = GET(w, "timeouts.offload_after_seconds");
		json_t *rel_s = GET(w, "timeouts.release_after_seconds");
		json_t *park_s = GET(w, "timeouts.park_after_seconds");
		int n = snprintf(buf, sizeof(buf), "%s/%s",
			 json_is_number(off_s) ? vram_table_format_seconds(json_number_value(off_s), a, sizeof(a)) : "never",
			 json_is_number(rel_s) ? vram_table_format_seconds(json_number_value(rel_s), b, sizeof(b)) : "never");
		if (json_is_number(park_s) && n > 0 && (size_t)n < sizeof(buf))
			snprintf(buf + n, sizeof(buf) - (size_t)n, ", park %s",
				 vram_table_format_seconds(json_number_value(park_s), a, sizeof(a)));
		table_set(t, 7, buf);
		const char *err = json_string_value(GET(w, "last_error"));
		if (err && *err && name)
			vram_buf_printf(notes, "%s: %s\n", name, err);
	}
}

char *vram_table_status(json_t *status)
{
	struct vram_buf out, notes;
	vram_buf_init(&out, TABLE_OUT_MAX);
	vram_buf_init(&notes, TABLE_OUT_MAX / 4);
	struct table t = { 0 };
	json_t *gpus = GET(status, "gpus");
	json_t *wls = GET(status, "workloads");

	if (json_array_size(gpus) > 0) {
		render_gpus(gpus, &t);
		table_render(&t, &out);
	} else {
		vram_buf_puts(&out, "no GPUs\n");
	}
	render_host(GET(status, "host"), &out);
	vram_buf_puts(&out, "\n");
	free(t.cells);
	t = (struct table){ 0 };
	if (json_array_size(wls) > 0) {
		render_workloads(wls, &t, &notes);
		table_render(&t, &out);
	} else {
		vram_buf_puts(&out, "no workloads\n");
	}
	free(t.cells);
	if (notes.len) {
		vram_buf_puts(&out, "\nlast errors:\n");
		vram_buf_puts(&out, notes.data);
	}
	vram_buf_done(&notes);
	if (vram_buf_puts(&out, "") < 0) {
		vram_buf_done(&out);
		return NULL;
	}
	return vram_buf_take(&out);
}
