/* SPDX-License-Identifier: MIT */
/*
 * The identity of an API client, read from the kernel and carried in one
 * header from the gateway to the API. See peer.h.
 */
#include "daemon/peer.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

int vram_peer_from_unix_socket(int fd, struct vram_peer *ret)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -errno;
	struct vram_peer p = { .transport = VRAM_PEER_UNIX, .pid = cr.pid, .uid = cr.uid,
			       .gid = cr.gid };
	gid_t groups[VRAM_PEER_GROUPS_MAX];
	socklen_t glen = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &glen) == 0) {
		p.n_groups = glen / sizeof(gid_t);
		memcpy(p.groups, groups, p.n_groups * sizeof(gid_t));
	} else if (errno == ERANGE) {
		/* more than we carry: the first VRAM_PEER_GROUPS_MAX */
		gid_t *all = malloc(glen);
		if (all && getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, all, &glen) == 0) {
			p.n_groups = VRAM_PEER_GROUPS_MAX;
			memcpy(p.groups, all, sizeof(p.groups));
		}
		free(all);
	}
	*ret = p;
	return 0;
}

void vram_peer_self(struct vram_peer *ret)
{
	struct vram_peer p = { .transport = VRAM_PEER_UNIX, .pid = getpid(), .uid = geteuid(),
			       .gid = getegid() };
	int n = getgroups(VRAM_PEER_GROUPS_MAX, p.groups);
	p.n_groups = n > 0 ? (size_t)n : 0;
	*ret = p;
}

int vram_peer_format(const struct vram_peer *p, char *buf, size_t size)
{
	int n;
	if (p->transport == VRAM_PEER_TCP) {
		n = snprintf(buf, size, "tcp addr=%s token=%d", p->addr[0] ? p->addr : "-",
			     p->token ? 1 : 0);
		return n < 0 || (size_t)n >= size ? -ENOSPC : n;
	}
	n = snprintf(buf, size, "unix pid=%ld uid=%lu gid=%lu groups=", (long)p->pid,
		     (unsigned long)p->uid, (unsigned long)p->gid);
	if (n < 0 || (size_t)n >= size)
		return -ENOSPC;
	size_t off = (size_t)n;
	for (size_t i = 0; i < p->n_groups; i++) {
		n = snprintf(buf + off, size - off, "%s%lu", i ? "," : "",
			     (unsigned long)p->groups[i]);
		if (n < 0 || (size_t)n >= size - off)
			return -ENOSPC;
		off += (size_t)n;
	}
	return (int)off;
}

/* Parses a decimal number up to max at *s, advancing *s. */
static bool parse_num(const char **s, uint64_t max, uint64_t *ret)
{
	const char *p = *s;
	uint64_t v = 0;
	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > max)
			return false;
	}
	*s = p;
	*ret = v;
	return true;
}

/* Expects "key=" at *s, advancing past it. */
static bool expect(const char **s, const char *key)
{
	size_t n = strlen(key);
	if (strncmp(*s, key, n) != 0)
		return false;
	*s += n;
	return true;
}

int vram_peer_parse(const char *value, struct vram_peer *ret)
{
	struct vram_peer p = { 0 };
	const char *s = value;
	uint64_t v;
	if (!s)
		return -EINVAL;
	if (expect(&s, "tcp addr=")) {
		size_t n = strcspn(s, " ");
		if (n == 0 || n >= sizeof(p.addr))
			return -EINVAL;
		p.transport = VRAM_PEER_TCP;
		if (!(n == 1 && s[0] == '-'))
			memcpy(p.addr, s, n);
		s += n;
		if (!expect(&s, " token=") || (*s != '0' && *s != '1') || s[1])
			return -EINVAL;
		p.token = *s == '1';
		*ret = p;
		return 0;
	}
	p.transport = VRAM_PEER_UNIX;
	if (!expect(&s, "unix pid=") || !parse_num(&s, INT32_MAX, &v))
		return -EINVAL;
	p.pid = (pid_t)v;
	if (!expect(&s, " uid=") || !parse_num(&s, UINT32_MAX, &v))
		return -EINVAL;
	p.uid = (uid_t)v;
	if (!expect(&s, " gid=") || !parse_num(&s, UINT32_MAX, &v))
		return -EINVAL;
	p.gid = (gid_t)v;
	if (!expect(&s, " groups="))
		return -EINVAL;
	while (*s) {
		if (p.n_groups == VRAM_PEER_GROUPS_MAX || !parse_num(&s, UINT32_MAX, &v))
			return -EINVAL;
		p.groups[p.n_groups++] = (gid_t)v;
		if (*s == ',' && s[1])
			s++;
		else if (*s)
			return -EINVAL;
	}
	*ret = p;
	return 0;
}

void vram_peer_describe(const struct vram_peer *p, char *buf, size_t size)
{
	if (p->transport == VRAM_PEER_TCP)
		snprintf(buf, size, "TCP client %s%s", p->addr[0] ? p->addr : "(unknown)",
			 p->token ? " with the token" : "");
	else
		snprintf(buf, size, "uid %lu (pid %ld) on the control socket", (unsigned long)p->uid,
			 (long)p->pid);
}

bool vram_peer_share_left(const struct vram_peer *peer, size_t n, size_t n_tcp, size_t max,
			  size_t reserved)
{
	return n < max && (peer->transport != VRAM_PEER_TCP || n_tcp < max - reserved);
}

void vram_peer_share_refusal(const struct vram_peer *peer, const char *what, size_t max,
			     size_t reserved, char *buf, size_t size)
{
	if (peer->transport == VRAM_PEER_TCP)
		snprintf(buf, size, "too many %s from TCP clients (%zu; the other %zu are kept for the "
			 "control socket)", what, max - reserved, reserved);
	else
		snprintf(buf, size, "too many %s (%zu)", what, max);
}
