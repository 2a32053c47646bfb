/* SPDX-License-Identifier: MIT */
/* vramd's control socket from the Slurm plugins: see vramd_client.h. */
#include "spank/vramd_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int vram_slurm_connect(const char *path, int timeout_s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = { .tv_sec = timeout_s };
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/* Writes all of len bytes; 0 or -errno. */
static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int vram_slurm_request(const char *sock, const char *method, const char *path, const char *body,
		       int timeout_s, char **ret_body)
{
	int fd = vram_slurm_connect(sock, timeout_s);
	if (fd < 0)
		return fd;
	char head[512];
	size_t blen = body ? strlen(body) : 0;
	int n = snprintf(head, sizeof(head),
			 "%s %s HTTP/1.1\r\nHost: vramd\r\nContent-Type: application/json\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			 method, path, blen);
	int r = -ENAMETOOLONG;
	char *resp = NULL;
	if (n < 0 || (size_t)n >= sizeof(head))
		goto out;
	if ((r = write_all(fd, head, (size_t)n)) < 0 || (blen && (r = write_all(fd, body, blen)) < 0))
		goto out;
	size_t cap = 8192, got = 0;
	r = -ENOMEM;
	resp = malloc(cap);
	if (!resp)
		goto out;
	for (;;) {
		if (got + 1 == cap) {
			if (cap >= VRAM_SLURM_RESPONSE_MAX)
				break; /* what is read is enough for the status line and the start */
			char *bigger = realloc(resp, cap * 2);
			if (!bigger)
				goto out;
			resp = bigger;
			cap *= 2;
		}
		ssize_t k = read(fd, resp + got, cap - 1 - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			goto out;
		}
		if (k == 0)
			break;
		got += (size_t)k;
	}
	resp[got] = '\0';
	int status;
	r = -EPROTO;
	if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
		goto out;
	const char *b = strstr(resp, "\r\n\r\n");
	b = b ? b + 4 : resp + got;
	/* a chunked answer's sizes are left in: callers only look for names and messages */
	if (ret_body) {
		memmove(resp, b, strlen(b) + 1);
		*ret_body = resp;
		resp = NULL;
	}
	r = status;
out:
	free(resp);
	close(fd);
	return r;
}

int vram_slurm_socket_path(const char *tmpl, const char *node, char *out, size_t size)
{
	size_t len = 0;
	for (const char *p = tmpl; *p; p++) {
		const char *piece = p[0] == '%' && p[1] == 'n' ? node : NULL;
		size_t plen = piece ? strlen(piece) : 1;
		if (len + plen + sizeof(".hook") > size)
			return -ENAMETOOLONG;
		memcpy(out + len, piece ? piece : p, plen);
		len += plen;
		p += piece ? 1 : 0;
	}
	out[len] = '\0';
	return 0;
}
