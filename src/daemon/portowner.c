/* SPDX-License-Identifier: MIT */
/*
 * Port ownership (see portowner.h): the listeners on a port from sock_diag or
 * /proc/net/tcp*, then their socket inodes looked for in the descriptors of
 * the instance's processes, and only when one is missing, in every process.
 */
#include "daemon/portowner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define NET_TEXT_MAX (64u << 20)  /* bytes of /proc/net/tcp* read (about 400,000 sockets) */
#define PROC_TEXT_MAX (256u << 10) /* bytes of a stat or children file read */
#define NET_LINE_MAX 512          /* a line of /proc/net/tcp* is about 150 bytes */
#define DIAG_TIMEOUT_MS 1000      /* a sock_diag answer that takes longer: fall back to /proc */
#define TCP_STATE_LISTEN 0x0A     /* "st" in /proc/net/tcp* (TCP_LISTEN) */

/* ---- parsing ---- */

static const uint8_t addr_any[16];
static const uint8_t v4_loopback[4] = {127, 0, 0, 1};
static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/*
 * Whether a listener bound to addr (4 bytes for IPv4, 16 for IPv6) receives
 * a connection to 127.0.0.1, as the health probe and the gateway make it.
 * v6only: 1 or 0, or -1 when not known (/proc does not say): then :: counts,
 * so that a listener that may receive it is never left out.
 */
static bool reaches_loopback(const uint8_t *addr, bool v6, int v6only)
{
	if (!v6)
		return memcmp(addr, v4_loopback, 4) == 0 || memcmp(addr, addr_any, 4) == 0;
	if (memcmp(addr, addr_any, 16) == 0)
		return v6only != 1;
	if (memcmp(addr, v4_mapped_prefix, 12) == 0)
		return memcmp(addr + 12, v4_loopback, 4) == 0 || memcmp(addr + 12, addr_any, 4) == 0;
	return false;
}

static void add_listener(struct vram_portowner_listener *out, size_t *n, size_t max,
			 unsigned long inode, uid_t uid)
{
	for (size_t i = 0; i < *n; i++)
		if (out[i].inode == inode)
			return;
	if (*n < max)
		out[(*n)++] = (struct vram_portowner_listener){.inode = inode, .uid = uid};
}

/*
 * The kernel prints an address as the 32-bit words of its bytes in memory,
 * each with %08X: reading each word back and storing it the same way gives
 * the bytes on any byte order.
 */
static bool parse_hex_addr(const char *hex, size_t len, uint8_t *addr)
{
	if (len != 8 && len != 32)
		return false;
	for (size_t w = 0; w < len / 8; w++) {
		char word[9];
		memcpy(word, hex + w * 8, 8);
		word[8] = '\0';
		char *end;
		uint32_t v = (uint32_t)strtoul(word, &end, 16);
		if (*end)
			return false;
		memcpy(addr + w * 4, &v, 4);
	}
	return true;
}

void vram_portowner_parse_net(const char *text, bool v6, unsigned port,
			      struct vram_portowner_listener *out, size_t *n, size_t max)
{
	for (const char *line = text; line && *line;) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);
		char buf[NET_LINE_MAX];
		char hex[33];
		unsigned lport, state, uid;
		unsigned long inode;
		if (len < sizeof(buf)) {
			memcpy(buf, line, len);
			buf[len] = '\0';
			/* sl: local rem st tx:rx tr:when retrnsmt uid timeout inode */
			uint8_t addr[16];
			if (sscanf(buf, " %*u: %32[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %u %*s %lu", hex,
				   &lport, &state, &uid, &inode) == 5 &&
			    state == TCP_STATE_LISTEN && lport == port && inode &&
			    strlen(hex) == (v6 ? 32u : 8u) && parse_hex_addr(hex, strlen(hex), addr) &&
			    reaches_loopback(addr, v6, -1))
				add_listener(out, n, max, inode, (uid_t)uid);
		}
		line = eol ? eol + 1 : NULL;
	}
}

int vram_portowner_parse_stat(const char *text, char *comm, size_t size, pid_t *ret_pgrp)
{
	/* "pid (comm) state ppid pgrp ...": comm may hold spaces and ')' itself */
	const char *open = strchr(text, '(');
	const char *close = strrchr(text, ')');
	if (!open || !close || close < open)
		return -EINVAL;
	char state;
	int ppid, pgrp;
	if (sscanf(close + 1, " %c %d %d", &state, &ppid, &pgrp) != 3)
		return -EINVAL;
	size_t k = 0;
	for (const char *p = open + 1; p < close && k + 1 < size; p++)
		comm[k++] = *p >= 0x20 && *p < 0x7f ? *p : '?'; /* a name is whatever the process set */
	if (size)
		comm[k] = '\0';
	*ret_pgrp = (pid_t)pgrp;
	return 0;
}

bool vram_portowner_parse_socket(const char *link, unsigned long *ret_inode)
{
	if (strncmp(link, "socket:[", 8) != 0 || link[8] < '0' || link[8] > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long v = strtoul(link + 8, &end, 10);
	if (errno || strcmp(end, "]") != 0)
		return false;
	*ret_inode = v;
	return true;
}

/* ---- reading ---- */

/* Reads a whole (proc) file of at most max bytes into *ret (NUL-terminated; caller frees). */
static int read_text(const char *path, size_t max, char **ret)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	int r = 0;
	while (buf) {
		if (len + 1 >= cap) {
			if (cap >= max) {
				r = -EFBIG;
				break;
			}
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				r = -ENOMEM;
				break;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (!buf)
		return -ENOMEM;
	if (r < 0) {
		free(buf);
		return r;
	}
	buf[len] = '\0';
	*ret = buf;
	return 0;
}

/* The listeners of one address family from sock_diag. Returns 0 or -errno. */
static int diag_listeners(int family, unsigned port, struct vram_portowner_listener *out,
			  size_t *n, size_t max)
{
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	struct timeval tv = {.tv_sec = DIAG_TIMEOUT_MS / 1000,
			     .tv_usec = (DIAG_TIMEOUT_MS % 1000) * 1000};
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} msg = {
		.nlh = {.nlmsg_len = sizeof(msg), .nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1},
		.req = {.sdiag_family = (uint8_t)family, .sdiag_protocol = IPPROTO_TCP,
			.idiag_states = 1u << TCP_LISTEN,
			.id = {.idiag_sport = htons((uint16_t)port)}},
	};
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	int r = 0;
	if (sendto(fd, &msg, sizeof(msg), 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		goto out_close;
	}
	long buf[8192 / sizeof(long)]; /* long: aligned for the netlink headers read out of it */
	for (;;) {
		int len = (int)recv(fd, buf, sizeof(buf), 0);
		if (len < 0 && errno == EINTR)
			continue;
		if (len <= 0) {
			r = len < 0 ? -errno : -EIO;
			goto out_close;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len);
		     h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_type == NLMSG_DONE)
				goto out_close;
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);
				r = h->nlmsg_len >= NLMSG_LENGTH(sizeof(*e)) && e->error < 0 ? e->error
											 : -EIO;
				goto out_close;
			}
			if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
			    h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
				continue;
			const struct inet_diag_msg *m = NLMSG_DATA(h);
			int v6only = -1;
			int alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));
			for (const struct rtattr *a = (const struct rtattr *)(m + 1); RTA_OK(a, alen);
			     a = RTA_NEXT(a, alen)) {
				if (a->rta_type == INET_DIAG_SKV6ONLY && RTA_PAYLOAD(a) >= 1)
					v6only = *(const uint8_t *)RTA_DATA(a) ? 1 : 0;
			}
			uint8_t addr[16];
			memcpy(addr, m->id.idiag_src, sizeof(addr));
			if (m->idiag_state == TCP_LISTEN && ntohs(m->id.idiag_sport) == port &&
			    m->idiag_inode && reaches_loopback(addr, family == AF_INET6, v6only))
				add_listener(out, n, max, m->idiag_inode, (uid_t)m->idiag_uid);
		}
	}
out_close:
	close(fd);
	return r;
}

/*
 * The listeners on port that count. root: "/proc", or a test's copy (then
 * only its net/ files are read). Returns 0 or -errno.
 */
static int find_listeners(const char *root, bool diag, unsigned port,
			  struct vram_portowner_listener *out, size_t *n)
{
	*n = 0;
	if (diag) {
		int r = diag_listeners(AF_INET, port, out, n, VRAM_PORTOWNER_LISTENERS_MAX);
		if (r == 0)
			r = diag_listeners(AF_INET6, port, out, n, VRAM_PORTOWNER_LISTENERS_MAX);
		if (r == 0)
			return 0;
		*n = 0; /* no sock_diag here (a module not loaded, a seccomp filter): read /proc */
	}
	for (int v6 = 0; v6 <= 1; v6++) {
		char path[PATH_MAX];
		char *text = NULL;
		snprintf(path, sizeof(path), "%s/net/%s", root, v6 ? "tcp6" : "tcp");
		int r = read_text(path, NET_TEXT_MAX, &text);
		if (r == -ENOENT && v6)
			continue; /* IPv6 is off */
		if (r < 0)
			return r;
		vram_portowner_parse_net(text, v6, port, out, n, VRAM_PORTOWNER_LISTENERS_MAX);
		free(text);
	}
	return 0;
}

/* ---- processes ---- */

struct scan {
	const char *root;
	pid_t pid;                 /* the instance's process, its group's leader */
	const struct vram_portowner_listener *want;
	size_t n_want;
	uint32_t found;            /* bit i: want[i] is held by the instance */
	pid_t seen[VRAM_PORTOWNER_PROCS_MAX]; /* the instance's processes, scanned */
	size_t n_seen;
};

static bool seen(const struct scan *s, pid_t p)
{
	for (size_t i = 0; i < s->n_seen; i++)
		if (s->seen[i] == p)
			return true;
	return false;
}

/* Bit i set: process p holds want[i]. 0 also when its descriptors cannot be read. */
static uint32_t held_by(const struct scan *s, pid_t p)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%d/fd", s->root, (int)p);
	DIR *d = opendir(path);
	if (!d)
		return 0;
	uint32_t mask = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char link[64];
		ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof(link) - 1);
		if (len <= 0)
			continue;
		link[len] = '\0';
		unsigned long inode;
		if (!vram_portowner_parse_socket(link, &inode))
			continue;
		for (size_t i = 0; i < s->n_want; i++)
			if (s->want[i].inode == inode)
				mask |= 1u << i;
	}
	closedir(d);
	return mask;
}

/* Appends the children of every thread of p (CONFIG_PROC_CHILDREN) to the scan list. */
static void add_children(struct scan *s, pid_t p)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%d/task", s->root, (int)p);
	DIR *d = opendir(path);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) && s->n_seen < VRAM_PORTOWNER_PROCS_MAX) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char *text = NULL;
		snprintf(path, sizeof(path), "%s/%d/task/%s/children", s->root, (int)p, e->d_name);
		if (read_text(path, PROC_TEXT_MAX, &text) < 0)
			continue;
		char *cur = text, *end;
		for (;;) {
			long c = strtol(cur, &end, 10);
			if (end == cur)
				break;
			cur = end;
			if (c > 0 && !seen(s, (pid_t)c) && s->n_seen < VRAM_PORTOWNER_PROCS_MAX)
				s->seen[s->n_seen++] = (pid_t)c;
		}
		free(text);
	}
	closedir(d);
}

/* Name and group of p. Returns 0 or -errno (gone). */
static int proc_stat(const struct scan *s, pid_t p, char *comm, size_t size, pid_t *ret_pgrp)
{
	char path[PATH_MAX];
	char *text = NULL;
	snprintf(path, sizeof(path), "%s/%d/stat", s->root, (int)p);
	int r = read_text(path, PROC_TEXT_MAX, &text);
	if (r < 0)
		return r;
	r = vram_portowner_parse_stat(text, comm, size, ret_pgrp);
	free(text);
	return r;
}

static size_t first_missing(const struct scan *s)
{
	size_t i = 0;
	while (i < s->n_want && (s->found & (1u << i)))
		i++;
	return i;
}

/*
 * Every process not scanned yet, for the listeners the instance's tree did
 * not hold: one of the instance's group that left the tree (an orphan) makes
 * it the instance's; any other holder is the answer.
 */
static void scan_everyone(struct scan *s, struct vram_portowner *ret)
{
	DIR *d = opendir(s->root);
	if (!d)
		return;
	struct dirent *e;
	uint32_t all = s->n_want >= 32 ? UINT32_MAX : (1u << s->n_want) - 1;
	while ((e = readdir(d)) && s->found != all) {
		char *end;
		long p = strtol(e->d_name, &end, 10);
		if (*end || p <= 0 || seen(s, (pid_t)p))
			continue;
		uint32_t mask = held_by(s, (pid_t)p) & ~s->found;
		if (!mask)
			continue;
		char comm[VRAM_PORTOWNER_COMM_MAX];
		pid_t pgrp;
		if (proc_stat(s, (pid_t)p, comm, sizeof(comm), &pgrp) < 0)
			continue; /* gone meanwhile, and its descriptors with it */
		if (pgrp == s->pid) {
			s->found |= mask;
			continue;
		}
		size_t i = 0;
		while (!(mask & (1u << i)))
			i++;
		ret->verdict = VRAM_PORTOWNER_FOREIGN;
		ret->inode = s->want[i].inode;
		ret->uid = s->want[i].uid;
		ret->pid = (pid_t)p;
		snprintf(ret->comm, sizeof(ret->comm), "%s", comm);
		break;
	}
	closedir(d);
}

static int check_at(const char *root, bool diag, unsigned port, pid_t pid,
		    struct vram_portowner *ret)
{
	struct vram_portowner_listener want[VRAM_PORTOWNER_LISTENERS_MAX];
	size_t n_want;
	int r = find_listeners(root, diag, port, want, &n_want);
	if (r < 0)
		return r;
	struct vram_portowner res = {.verdict = VRAM_PORTOWNER_NONE};
	if (n_want == 0) {
		*ret = res;
		return 0;
	}
	struct scan *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->root = root;
	s->pid = pid;
	s->want = want;
	s->n_want = n_want;
	s->seen[s->n_seen++] = pid;
	/* the instance's tree, breadth first: the list grows while it is walked */
	for (size_t i = 0; i < s->n_seen && first_missing(s) < n_want; i++) {
		s->found |= held_by(s, s->seen[i]);
		add_children(s, s->seen[i]);
	}
	if (first_missing(s) < n_want)
		scan_everyone(s, &res);
	size_t missing = first_missing(s);
	if (res.verdict == VRAM_PORTOWNER_FOREIGN) {
		/* found */
	} else if (missing < n_want) {
		res.verdict = VRAM_PORTOWNER_UNKNOWN;
		res.inode = want[missing].inode;
		res.uid = want[missing].uid;
	} else {
		res.verdict = VRAM_PORTOWNER_OWNED;
	}
	free(s);
	*ret = res;
	return 0;
}

int vram_portowner_check(unsigned port, pid_t pid, struct vram_portowner *ret)
{
	return check_at("/proc", true, port, pid, ret);
}

char *vram_portowner_describe(const struct vram_portowner *r, unsigned port, const char *workload,
			      char *buf, size_t size)
{
	switch (r->verdict) {
	case VRAM_PORTOWNER_OWNED:
		snprintf(buf, size, "port %u is held by workload %s", port, workload);
		break;
	case VRAM_PORTOWNER_NONE:
		snprintf(buf, size, "nothing listens on port %u", port);
		break;
	case VRAM_PORTOWNER_FOREIGN:
		snprintf(buf, size, "port %u is held by %s (pid %d, uid %u), not by workload %s", port,
			 r->comm[0] ? r->comm : "?", (int)r->pid, (unsigned)r->uid, workload);
		break;
	case VRAM_PORTOWNER_UNKNOWN:
		snprintf(buf, size,
			 "port %u is held by a process of uid %u that vramd cannot inspect "
			 "(socket inode %lu), not by workload %s",
			 port, (unsigned)r->uid, r->inode, workload);
		break;
	}
	return buf;
}
