/* SPDX-License-Identifier: MIT */
/* The gateway's access log; see accesslog.h. */
#include "daemon/accesslog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/strutil.h"
#include "daemon/logfile.h"

struct vram_accesslog {
	struct vram_logfile *file; /* owned */
};

int vram_accesslog_open(const char *path, uint64_t max_bytes, unsigned keep,
			struct vram_accesslog **ret)
{
	struct vram_accesslog *al = calloc(1, sizeof(*al));
	if (!al)
		return -ENOMEM;
	int r = vram_logfile_open(path, max_bytes, keep, &al->file);
	if (r < 0) {
		free(al);
		return r;
	}
	*ret = al;
	return 0;
}

void vram_accesslog_close(struct vram_accesslog *al)
{
	if (!al)
		return;
	vram_logfile_close(al->file);
	free(al);
}

/*
 * s as a JSON string, cut at max bytes and made UTF-8 (an invalid byte
 * becomes U+FFFD, 3 bytes: room for all of them). New reference, NULL on OOM.
 */
static json_t *text(const char *s, size_t max)
{
	char buf[3 * VRAM_ACCESSLOG_PATH_MAX + 1];
	size_t len = s ? strlen(s) : 0;
	if (max > VRAM_ACCESSLOG_PATH_MAX)
		max = VRAM_ACCESSLOG_PATH_MAX;
	size_t n = vram_utf8_sanitize(buf, sizeof(buf), s ? s : "", len < max ? len : max);
	return json_stringn(buf, n);
}

/* ms with 0.1 ms resolution, as a JSON number */
static json_t *ms(double s)
{
	return json_real((double)(long long)(s * 10000.0 + 0.5) / 10.0);
}

int vram_accesslog_format(const struct vram_accesslog_entry *e, int64_t wall_ms, char *buf,
			  size_t size)
{
	time_t secs = (time_t)(wall_ms / 1000);
	struct tm tm;
	char when[40];
	gmtime_r(&secs, &tm);
	size_t wl = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + wl, sizeof(when) - wl, ".%03dZ", (int)(wall_ms % 1000));
	json_t *o = json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:i,s:I,s:o,s:o,s:o}", "time", when,
			      "client", text(e->client, 64), "method", text(e->method, 32),
			      "path", text(e->path, VRAM_ACCESSLOG_PATH_MAX), "model",
			      text(e->model, 256), "workload", text(e->workload, 256), "status",
			      e->status, "bytes", (json_int_t)e->bytes, "first_byte_ms",
			      e->first_byte_s < 0 ? json_null() : ms(e->first_byte_s),
			      "total_ms", ms(e->total_s), "queue_ms", ms(e->queue_s));
	if (!o)
		return -ENOMEM;
	size_t n = json_dumpb(o, buf, size, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
	json_decref(o);
	if (n == 0)
		return -ENOMEM;
	if (n + 1 >= size)
		return -E2BIG;
	buf[n++] = '\n';
	buf[n] = '\0';
	return (int)n;
}

void vram_accesslog_write(struct vram_accesslog *al, const struct vram_accesslog_entry *e)
{
	if (!al)
		return;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	char line[VRAM_ACCESSLOG_LINE_MAX];
	int n = vram_accesslog_format(e, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, line,
				      sizeof(line));
	if (n > 0)
		(void)vram_logfile_write(al->file, line, (size_t)n);
}
