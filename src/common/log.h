/* SPDX-License-Identifier: MIT */
/*
 * Logging for vramd and vramctl. One line per message, prefixed with a
 * timestamp and level, written to stderr or to the file given at init.
 * When stderr is the journal (systemd sets JOURNAL_STREAM to its
 * "device:inode"), a line is "<N>message" instead: N is the syslog
 * priority, which journald takes off and records, and the journal stamps
 * the time itself.
 * Library code logs at debug only; the caller that decides what to do about
 * an error logs it once ("Failed to <do what>: <why>").
 *
 * The hook (libvram.so) does not use this module: it lives inside foreign
 * processes and has its own sink (src/hook/).
 */
#ifndef VRAM_LOG_H
#define VRAM_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum vram_log_level {
	VRAM_LOG_ERROR = 0,
	VRAM_LOG_WARN = 1,
	VRAM_LOG_INFO = 2,
	VRAM_LOG_DEBUG = 3,
};

/*
 * Sets the threshold and the sink. path NULL or "-" means stderr.
 * Returns 0 or -errno (the file could not be opened; stderr stays the sink).
 */
int vram_log_init(enum vram_log_level level, const char *path);
void vram_log_done(void);

/*
 * Whether fd is the stream JOURNAL_STREAM ("DEV:INO", decimal) names.
 * False when the variable is unset or malformed, or fd cannot be stat'ed.
 */
bool vram_log_fd_is_journal(int fd);

/* Parses "error|warn|info|debug". Returns 0 or -EINVAL. */
int vram_log_level_parse(const char *s, enum vram_log_level *ret_level);
void vram_log_set_level(enum vram_log_level level);
enum vram_log_level vram_log_get_level(void);
bool vram_log_enabled(enum vram_log_level level);

void vram_log(enum vram_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void vram_logv(enum vram_log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* Logs fmt plus ": strerror(-err)" and returns err (a negative errno). */
int vram_log_errno(enum vram_log_level level, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define vram_err(...)   vram_log(VRAM_LOG_ERROR, __VA_ARGS__)
#define vram_warn(...)  vram_log(VRAM_LOG_WARN, __VA_ARGS__)
#define vram_info(...)  vram_log(VRAM_LOG_INFO, __VA_ARGS__)
#define vram_debug(...) do { if (vram_log_enabled(VRAM_LOG_DEBUG)) vram_log(VRAM_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
