/* SPDX-License-Identifier: MIT */
/*
 * Readiness notification to a service manager (systemd Type=notify): the
 * documented NOTIFY_SOCKET protocol, one datagram of "KEY=VALUE" lines to
 * the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an abstract name
 * when it starts with '@'). Written here rather than linked from
 * libsystemd: the protocol is stable and a few dozen lines, and vramd keeps
 * one runtime dependency fewer (it also runs where there is no systemd).
 *
 * Without $NOTIFY_SOCKET every call does nothing. The variable is left in
 * the environment, so the image a restart in place executes (same pid)
 * finds it and says READY again.
 */
#ifndef VRAM_NOTIFY_H
#define VRAM_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

/* bytes: the longest message vramd sends (states plus one STATUS line) */
#define VRAM_NOTIFY_MAX 1024

/*
 * Sends state (borrowed; "KEY=VALUE" lines) to $NOTIFY_SOCKET. Returns 1
 * when sent, 0 when NOTIFY_SOCKET is unset or empty, -EAFNOSUPPORT for an
 * address that is neither a path nor '@'-abstract, -ENAMETOOLONG, or the
 * -errno of socket/sendto. Blocks like sd_notify: the manager reads these
 * at once, and a READY that is dropped fails the start.
 */
int vram_notify_send(const char *state);

/*
 * Formats the message of one step into buf (size bytes): the state lines,
 * then "STATUS=status" with any newline in status made a space (a STATUS
 * is one line). status may be NULL. mono_usec is CLOCK_MONOTONIC in us,
 * used by RELOADING only. Returns the length, or -ENOBUFS when it does not
 * fit (nothing is sent cut).
 */
enum vram_notify_step {
	VRAM_NOTIFY_READY,     /* READY=1 */
	VRAM_NOTIFY_RELOADING, /* RELOADING=1 and MONOTONIC_USEC= (systemd >= 253) */
	VRAM_NOTIFY_STOPPING,  /* STOPPING=1 */
	VRAM_NOTIFY_STATUS,    /* STATUS= only */
};
int vram_notify_format(char *buf, size_t size, enum vram_notify_step step, uint64_t mono_usec,
		       const char *status);

/*
 * Formats step with status (printf format) and the current monotonic time,
 * and sends it. Returns as vram_notify_send; a failure is logged at debug
 * only: a service manager that does not listen is not vramd's error.
 */
int vram_notify(enum vram_notify_step step, const char *status_fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
