/* SPDX-License-Identifier: MIT */
/*
 * Logging sink: a threshold and one FILE. The daemon is single-threaded on
 * its event loop, but worker-pool threads may log too, so a line is written
 * with one fprintf under the stdio lock.
 *
 * Messages carry client text (names, paths, MCP methods), so every message
 * is escaped as a whole before it is written: a control character or a
 * byte that is not UTF-8 becomes \n, \r, \t or \xNN, and one call is
 * always one line, whatever its arguments held.
 */
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/strutil.h"

static enum vram_log_level log_level = VRAM_LOG_INFO;
static FILE *log_file; /* NULL means stderr; owned when not NULL */
static bool log_journal; /* the sink is stderr and stderr is the journal */

/* syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static const int level_priorities[] = {
	[VRAM_LOG_ERROR] = 3,
	[VRAM_LOG_WARN] = 4,
	[VRAM_LOG_INFO] = 6,
	[VRAM_LOG_DEBUG] = 7,
};

static const char *const level_names[] = {
	[VRAM_LOG_ERROR] = "error",
	[VRAM_LOG_WARN] = "warn",
	[VRAM_LOG_INFO] = "info",
	[VRAM_LOG_DEBUG] = "debug",
};

int vram_log_init(enum vram_log_level level, const char *path)
{
	log_level = level;
	vram_log_done();
	if (!path || !*path || strcmp(path, "-") == 0) {
		log_journal = vram_log_fd_is_journal(STDERR_FILENO);
		return 0;
	}
	/* not through a symbolic link someone put in its place; not inherited by children */
	int fd = vram_open_file(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0)
		return fd;
	FILE *f = fdopen(fd, "a");
	if (!f) {
		int r = -errno;
		close(fd);
		return r;
	}
	setvbuf(f, NULL, _IOLBF, 0);
	log_file = f;
	return 0;
}

bool vram_log_fd_is_journal(int fd)
{
	const char *e = getenv("JOURNAL_STREAM");
	if (!e || !*e)
		return false;
	char *end;
	errno = 0;
	unsigned long long dev = strtoull(e, &end, 10);
	if (errno || end == e || *end != ':')
		return false;
	const char *ino_s = end + 1;
	unsigned long long ino = strtoull(ino_s, &end, 10);
	if (errno || end == ino_s || *end)
		return false;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void vram_log_done(void)
{
	log_journal = false;
	if (log_file) {
		fclose(log_file);
		log_file = NULL;
	}
}

int vram_log_level_parse(const char *s, enum vram_log_level *ret_level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*ret_level = (enum vram_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void vram_log_set_level(enum vram_log_level level) { log_level = level; }
enum vram_log_level vram_log_get_level(void) { return log_level; }
bool vram_log_enabled(enum vram_log_level level) { return level <= log_level; }

void vram_logv(enum vram_log_level level, const char *fmt, va_list ap)
{
	if (!vram_log_enabled(level))
		return;
	char msg[2048];
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	/* each byte becomes at most 4 ("\xNN"): the escaped text is never cut */
	char line[4 * sizeof(msg)];
	vram_str_escape_control(line, sizeof(line), msg,
				n < 0 ? 0 : (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);

	if (log_journal && !log_file) {
		fprintf(stderr, "<%d>%s\n", level_priorities[level], line);
		return;
	}

	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	char when[32];
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);

	FILE *out = log_file ? log_file : stderr;
	fprintf(out, "%s.%03ld %-5s %s\n", when, ts.tv_nsec / 1000000L,
		level_names[level], line);
}

void vram_log(enum vram_log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vram_logv(level, fmt, ap);
	va_end(ap);
}

int vram_log_errno(enum vram_log_level level, int err, const char *fmt, ...)
{
	if (vram_log_enabled(level)) {
		char msg[1536];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		vram_log(level, "%s: %s", msg, strerror(err < 0 ? -err : err));
	}
	return err;
}
