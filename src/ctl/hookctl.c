/* SPDX-License-Identifier: MIT */
/* The per-process control socket of libvram.so, from vramctl; see hookctl.h. */
#include "ctl/hookctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl/ctl.h"

#define ENVIRON_MAX (1024 * 1024) /* bytes of /proc/N/environ read */
#define ANSWER_TIMEOUT_S 600      /* an offload of a large process takes seconds */

int vram_hookctl_socket_path(pid_t pid, char *buf, size_t size)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == EACCES || errno == EPERM ? -EACCES : -ENOENT;
	char *env = malloc(ENVIRON_MAX + 1);
	if (!env) {
		close(fd);
		return -ENOMEM;
	}
	size_t len = 0;
	ssize_t n;
	while (len < ENVIRON_MAX && (n = read(fd, env + len, ENVIRON_MAX - len)) > 0)
		len += (size_t)n;
	int read_errno = errno;
	close(fd);
	env[len] = '\0';
	if (len == 0) {
		free(env);
		return read_errno == EACCES || read_errno == EPERM ? -EACCES : -ENOENT;
	}
	const char *value = NULL;
	for (size_t off = 0; off < len; off += strlen(env + off) + 1)
		if (strncmp(env + off, "VRAM_CONTROL=", 13) == 0)
			value = env + off + 13;
	int r = -ENOENT;
	if (value && *value) {
		/* "%p" becomes the pid, as the hook does it */
		size_t o = 0;
		r = 0;
		for (const char *p = value; *p && r == 0; p++) {
			int w;
			if (p[0] == '%' && p[1] == 'p') {
				w = snprintf(buf + o, size - o, "%d", (int)pid);
				p++;
			} else {
				w = snprintf(buf + o, size - o, "%c", *p);
			}
			if (w < 0 || (size_t)w >= size - o)
				r = -ENAMETOOLONG;
			else
				o += (size_t)w;
		}
	}
	free(env);
	return r;
}

int vram_hookctl_request(pid_t pid, const char *op, char *line, size_t size, char *err, size_t err_size)
{
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int r = vram_hookctl_socket_path(pid, path, sizeof(path));
	if (r < 0) {
		snprintf(err, err_size, "%s",
			 r == -ENOENT ? "no such process, or it has no VRAM_CONTROL (is it running with libvram.so?)"
			 : r == -EACCES ? "cannot read its environment (another user's process?)"
			 : r == -ENAMETOOLONG ? "its VRAM_CONTROL path is too long" : strerror(-r));
		return r;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path) + 1);
	struct timeval tv = {.tv_sec = ANSWER_TIMEOUT_S};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		snprintf(err, err_size, "cannot connect to %s: %s (the socket opens at the first cuInit)", path,
			 strerror(errno));
		goto out_close;
	}
	char cmd[64];
	int n = snprintf(cmd, sizeof(cmd), "%s\n", op);
	if (send(fd, cmd, (size_t)n, MSG_NOSIGNAL) != n) {
		r = -errno;
		snprintf(err, err_size, "cannot send to %s: %s", path, strerror(errno));
		goto out_close;
	}
	size_t len = 0;
	while (len + 1 < size) {
		ssize_t got = recv(fd, line + len, 1, 0);
		if (got <= 0) {
			r = got < 0 ? -errno : -EPIPE;
			snprintf(err, err_size, "%s: %s", path,
				 got < 0 ? strerror(errno) : "closed before answering");
			goto out_close;
		}
		if (line[len] == '\n')
			break;
		len++;
	}
	line[len] = '\0';
	r = 0;
out_close:
	close(fd);
	return r;
}

int vram_hookctl_command(pid_t pid, const char *op)
{
	char line[1024], err[512];
	int r = vram_hookctl_request(pid, op, line, sizeof(line), err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "vramctl: %s --pid %d: %s\n", op, (int)pid, err);
		return VRAM_CTL_EXIT_FAILED;
	}
	bool ok = strncmp(line, "ok ", 3) == 0;
	const char *text = strstr(line, " text=");
	if (strcmp(op, "status") == 0 || !text)
		printf("%s\n", line);
	else if (ok)
		printf("%s\n", text + 6);
	else
		fprintf(stderr, "vramctl: %s --pid %d: %s\n", op, (int)pid, text + 6);
	return ok ? VRAM_CTL_EXIT_OK : VRAM_CTL_EXIT_FAILED;
}
