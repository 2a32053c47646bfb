/* SPDX-License-Identifier: MIT */
/*
 * The NOTIFY_SOCKET protocol (sd_notify(3), "Notification socket"): a new
 * datagram socket per message, as sd_notify does, so nothing stays open
 * across a restart in place or leaks into a workload. The kernel attaches
 * the sender's credentials itself (the manager sets SO_PASSCRED), which is
 * how systemd tells the main pid's messages from others'.
 */
#include "daemon/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

int vram_notify_send(const char *state)
{
	const char *addr = getenv("NOTIFY_SOCKET");
	if (!addr || !*addr)
		return 0;
	/* "vsock:" addresses (VMs) are not supported: vramd runs on the GPU host */
	if (addr[0] != '/' && addr[0] != '@')
		return -EAFNOSUPPORT;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(addr);
	if (len >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, addr, len);
	socklen_t sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	if (addr[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: the name is exactly len bytes, no NUL */
	else
		sa_len++;              /* a path: with its NUL */

	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r = 1;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sa_len) < 0)
		r = -errno;
	close(fd);
	return r;
}

int vram_notify_format(char *buf, size_t size, enum vram_notify_step step, uint64_t mono_usec,
		       const char *status)
{
	int n;
	switch (step) {
	case VRAM_NOTIFY_READY:
		n = snprintf(buf, size, "READY=1\n");
		break;
	case VRAM_NOTIFY_RELOADING:
		n = snprintf(buf, size, "RELOADING=1\nMONOTONIC_USEC=%llu\n",
			     (unsigned long long)mono_usec);
		break;
	case VRAM_NOTIFY_STOPPING:
		n = snprintf(buf, size, "STOPPING=1\n");
		break;
	default:
		n = snprintf(buf, size, "%s", "");
		break;
	}
	if (n < 0 || (size_t)n >= size)
		return -ENOBUFS;
	size_t off = (size_t)n;
	if (status) {
		size_t slen = strlen(status);
		if (off + 7 + slen + 2 > size)
			return -ENOBUFS;
		memcpy(buf + off, "STATUS=", 7);
		off += 7;
		for (size_t i = 0; i < slen; i++)
			buf[off++] = status[i] == '\n' || status[i] == '\r' ? ' ' : status[i];
		buf[off++] = '\n';
		buf[off] = '\0';
	}
	return (int)off;
}

int vram_notify(enum vram_notify_step step, const char *status_fmt, ...)
{
	if (!getenv("NOTIFY_SOCKET"))
		return 0;
	char status[VRAM_NOTIFY_MAX / 2];
	if (status_fmt) {
		va_list ap;
		va_start(ap, status_fmt);
		vsnprintf(status, sizeof(status), status_fmt, ap);
		va_end(ap);
	}
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t usec = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	char msg[VRAM_NOTIFY_MAX];
	int r = vram_notify_format(msg, sizeof(msg), step, usec, status_fmt ? status : NULL);
	if (r < 0)
		return r;
	r = vram_notify_send(msg);
	if (r < 0)
		vram_debug("Failed to notify the service manager: %s", strerror(-r));
	return r;
}
