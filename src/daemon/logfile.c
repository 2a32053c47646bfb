/* SPDX-License-Identifier: MIT */
/*
 * Per-workload log files with size-bounded rotation. Workload output comes
 * through its output relay (relay.c) to the daemon, which writes it here; once
 * the daemon is gone, the relay writes here itself with this same code. So the
 * writer, not the workload, decides how big a file gets: no file ever exceeds
 * max_bytes, and at most `keep` rotated files are kept. The last few KiB also
 * stay in memory so that a failure can carry the log tail without reading
 * files back. A hold keeps the daemon's writes in memory while a relay
 * still writes the file, so that a file has one writer at a time.
 */
#include "daemon/logfile.h"
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct vram_logfile {
	char *path;          /* owned */
	int fd;              /* -1 when the file could not be (re)opened */
	uint64_t size;       /* bytes in the current file */
	uint64_t max_bytes;  /* bytes per file, >= 1 */
	unsigned keep;       /* rotated files kept */
	char tail[VRAM_LOGFILE_TAIL_MAX]; /* ring of the latest bytes */
	size_t tail_start;   /* index of the oldest byte */
	size_t tail_len;     /* bytes in the ring */
	unsigned holds;      /* vram_logfile_hold calls not released yet */
	char *held;          /* owned; what was written while held, up to VRAM_LOGFILE_HOLD_MAX */
	size_t held_len;     /* bytes in held */
	uint64_t held_dropped; /* bytes written while held that did not fit */
};

/*
 * Opens the current file, never through a symbolic link put in its place
 * (the workload's output must not land in a file someone else chose).
 */
static int open_current(struct vram_logfile *l, bool truncate)
{
	int fd = vram_open_file(l->path, O_WRONLY | O_CREAT | (truncate ? O_TRUNC : O_APPEND), 0644);
	if (fd < 0)
		return fd;
	l->fd = fd;
	struct stat st;
	l->size = fstat(l->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
	return 0;
}

int vram_logfile_open(const char *path, uint64_t max_bytes, unsigned keep,
		      struct vram_logfile **ret)
{
	struct vram_logfile *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->fd = -1;
	l->max_bytes = max_bytes ? max_bytes : 1;
	l->keep = keep;
	l->path = strdup(path);
	int r = -ENOMEM;
	if (!l->path)
		goto out_free;
	r = vram_mkdir_p(path, 0755, 0);
	if (r < 0)
		goto out_free;
	r = open_current(l, false);
	if (r < 0)
		goto out_free;
	*ret = l;
	return 0;

out_free:
	vram_logfile_close(l);
	return r;
}

static int rotate(struct vram_logfile *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	if (l->keep > 0) {
		size_t n = strlen(l->path) + 16;
		char *from = malloc(n), *to = malloc(n);
		if (!from || !to) {
			free(from);
			free(to);
			return -ENOMEM;
		}
		for (unsigned i = l->keep; i > 1; i--) {
			snprintf(from, n, "%s.%u", l->path, i - 1);
			snprintf(to, n, "%s.%u", l->path, i);
			(void)rename(from, to); /* a missing older file is fine */
		}
		snprintf(to, n, "%s.1", l->path);
		(void)rename(l->path, to);
		free(from);
		free(to);
	}
	return open_current(l, true);
}

static void tail_add(struct vram_logfile *l, const char *data, size_t len)
{
	if (len >= VRAM_LOGFILE_TAIL_MAX) {
		memcpy(l->tail, data + len - VRAM_LOGFILE_TAIL_MAX, VRAM_LOGFILE_TAIL_MAX);
		l->tail_start = 0;
		l->tail_len = VRAM_LOGFILE_TAIL_MAX;
		return;
	}
	for (size_t i = 0; i < len; i++) {
		size_t pos = (l->tail_start + l->tail_len) % VRAM_LOGFILE_TAIL_MAX;
		l->tail[pos] = data[i];
		if (l->tail_len < VRAM_LOGFILE_TAIL_MAX)
			l->tail_len++;
		else
			l->tail_start = (l->tail_start + 1) % VRAM_LOGFILE_TAIL_MAX;
	}
}

/* Keeps what is written while the file is held, up to VRAM_LOGFILE_HOLD_MAX bytes. */
static void hold_add(struct vram_logfile *l, const char *data, size_t len)
{
	if (!l->held)
		l->held = malloc(VRAM_LOGFILE_HOLD_MAX);
	size_t room = l->held ? VRAM_LOGFILE_HOLD_MAX - l->held_len : 0;
	size_t n = len < room ? len : room;
	if (n > 0)
		memcpy(l->held + l->held_len, data, n);
	l->held_len += n;
	l->held_dropped += len - n;
}

/* Appends to the file, rotating it as it fills. Returns 0 or -errno. */
static int file_write(struct vram_logfile *l, const char *p, size_t len)
{
	int r = 0;
	/* a write that fits in an empty file is not split across two files */
	if (l->fd >= 0 && l->size > 0 && len <= l->max_bytes && l->size + len > l->max_bytes) {
		r = rotate(l);
		if (r < 0)
			return r;
	}
	while (len > 0) {
		if (l->fd < 0 || l->size >= l->max_bytes) {
			r = rotate(l);
			if (r < 0)
				return r;
		}
		uint64_t room = l->max_bytes - l->size;
		size_t chunk = len < room ? len : (size_t)room;
		ssize_t w = write(l->fd, p, chunk);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		l->size += (uint64_t)w;
		p += w;
		len -= (size_t)w;
	}
	return r;
}

int vram_logfile_write(struct vram_logfile *l, const void *data, size_t len)
{
	tail_add(l, data, len);
	if (l->holds > 0) {
		hold_add(l, data, len);
		return 0;
	}
	return file_write(l, data, len);
}

void vram_logfile_hold(struct vram_logfile *l)
{
	l->holds++;
}

void vram_logfile_release(struct vram_logfile *l)
{
	if (l->holds == 0 || --l->holds > 0)
		return;
	/* the other writer appended and may have rotated: the file and its size are its now */
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	(void)open_current(l, false);
	if (l->held_len > 0)
		(void)file_write(l, l->held, l->held_len);
	free(l->held);
	l->held = NULL;
	l->held_len = 0;
	uint64_t dropped = l->held_dropped;
	l->held_dropped = 0;
	if (dropped > 0)
		(void)vram_logfile_note(l, "%llu bytes of output were dropped here while another "
					"process wrote this file (at most %d are kept)",
					(unsigned long long)dropped, VRAM_LOGFILE_HOLD_MAX);
}

int vram_logfile_note(struct vram_logfile *l, const char *fmt, ...)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "[vramd] ");
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return -EINVAL;
	size_t len = strlen(line);
	line[len++] = '\n';
	return vram_logfile_write(l, line, len);
}

size_t vram_logfile_tail(const struct vram_logfile *l, char *buf, size_t size)
{
	if (size == 0)
		return 0;
	size_t n = l->tail_len < size - 1 ? l->tail_len : size - 1;
	size_t skip = l->tail_len - n;
	for (size_t i = 0; i < n; i++)
		buf[i] = l->tail[(l->tail_start + skip + i) % VRAM_LOGFILE_TAIL_MAX];
	buf[n] = '\0';
	/* start at a line boundary when the ring cut a line */
	if (skip > 0 || l->tail_len == VRAM_LOGFILE_TAIL_MAX) {
		char *nl = memchr(buf, '\n', n);
		if (nl && nl + 1 < buf + n) {
			size_t cut = (size_t)(nl + 1 - buf);
			memmove(buf, buf + cut, n - cut + 1);
			n -= cut;
		}
	}
	return n;
}

const char *vram_logfile_path(const struct vram_logfile *l)
{
	return l->path;
}

uint64_t vram_logfile_size(const struct vram_logfile *l)
{
	return l->size;
}

uint64_t vram_logfile_max_bytes(const struct vram_logfile *l)
{
	return l->max_bytes;
}

unsigned vram_logfile_keep(const struct vram_logfile *l)
{
	return l->keep;
}

void vram_logfile_close(struct vram_logfile *l)
{
	if (!l)
		return;
	if (l->fd >= 0)
		close(l->fd);
	free(l->held);
	free(l->path);
	free(l);
}
