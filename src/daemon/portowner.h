/* SPDX-License-Identifier: MIT */
/*
 * Port ownership: whether the socket listening on a workload's port belongs
 * to that workload, so that a process that took the port first (a fixed
 * port, or an auto port in the moment between vramd choosing it and the
 * workload binding it) is never taken for the workload.
 *
 * The health probe and the gateway connect to 127.0.0.1:port, so the
 * listeners that count are those such a connection can reach: IPv4 on
 * 127.0.0.1 or 0.0.0.0, IPv6 on :: (unless IPV6_V6ONLY), ::ffff:127.0.0.1
 * or ::ffff:0.0.0.0. They are found with sock_diag (the kernel filters
 * listeners by port), or in /proc/net/tcp and tcp6 where sock_diag is not
 * available. Each listener's socket inode must then appear as
 * "socket:[inode]" in /proc/PID/fd of a process of the instance: its
 * process, that process's descendants (through /proc/PID/task/TID/children),
 * or a member of its process group (the supervisor makes each workload
 * process a group leader; an orphan of the group is found that way).
 *
 * The common case costs one netlink dump per address family and a readdir
 * of the instance's processes' descriptors. Only when a listener is not the
 * instance's is every process in /proc looked at, to name the holder.
 */
#ifndef VRAM_PORTOWNER_H
#define VRAM_PORTOWNER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define VRAM_PORTOWNER_LISTENERS_MAX 16 /* listeners on one port looked at; more are ignored */
#define VRAM_PORTOWNER_PROCS_MAX 4096   /* processes of one instance scanned */
#define VRAM_PORTOWNER_COMM_MAX 16      /* a process name with its NUL (TASK_COMM_LEN) */

enum vram_portowner_verdict {
	VRAM_PORTOWNER_OWNED = 0, /* every listener that counts is held by the instance */
	VRAM_PORTOWNER_NONE,      /* nothing that counts listens on the port */
	VRAM_PORTOWNER_FOREIGN,   /* a listener is held by another process: pid, comm */
	VRAM_PORTOWNER_UNKNOWN,   /* a listener held by no process vramd may inspect: uid */
};

struct vram_portowner {
	enum vram_portowner_verdict verdict;
	unsigned long inode;  /* FOREIGN, UNKNOWN: the socket in question */
	uid_t uid;            /* FOREIGN, UNKNOWN: the socket's owner */
	pid_t pid;            /* FOREIGN: a process that holds it */
	char comm[VRAM_PORTOWNER_COMM_MAX]; /* FOREIGN: its name, printable ASCII only */
};

/*
 * Checks who holds the listeners on TCP port that 127.0.0.1:port reaches,
 * against the instance whose process is pid. Runs on the caller's thread
 * (reads of /proc and one netlink socket; nothing blocks for long). Returns
 * 0 with *ret filled, or -errno when the socket table cannot be read at all.
 */
int vram_portowner_check(unsigned port, pid_t pid, struct vram_portowner *ret);

/*
 * What a verdict that is not OWNED means, for status and the log:
 * "port 8123 is held by nginx (pid 4242, uid 1000), not by workload chat".
 * Returns buf.
 */
char *vram_portowner_describe(const struct vram_portowner *r, unsigned port, const char *workload,
			      char *buf, size_t size);

/* ---- parsers, exposed for the tests ---- */

struct vram_portowner_listener {
	unsigned long inode;
	uid_t uid;
};

/*
 * The listeners on port that count (see above), from the text of
 * /proc/net/tcp (v6 false) or /proc/net/tcp6 (v6 true), appended to
 * out[*n..max). Lines that do not parse are skipped.
 */
void vram_portowner_parse_net(const char *text, bool v6, unsigned port,
			      struct vram_portowner_listener *out, size_t *n, size_t max);
/*
 * From the text of /proc/PID/stat: the name (cut to size, made printable)
 * and the process group. Returns 0 or -EINVAL.
 */
int vram_portowner_parse_stat(const char *text, char *comm, size_t size, pid_t *ret_pgrp);
/* The inode of a descriptor's link "socket:[12345]"; false for anything else. */
bool vram_portowner_parse_socket(const char *link, unsigned long *ret_inode);

#endif
