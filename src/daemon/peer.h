/* SPDX-License-Identifier: MIT */
/*
 * Who is asking: the identity of an API client as the front end (the
 * gateway) saw it, carried to the REST API and MCP handlers.
 *
 * The gateway owns the public listeners. For the control socket it reads the
 * peer's credentials from the kernel (SO_PEERCRED, SO_PEERGROUPS); for TCP it
 * knows the address and whether a valid token came with the request. It
 * relays API requests to the evhttp server over a private socket, so the
 * identity travels in one request header, VRAM_PEER_HEADER, which the
 * gateway always removes from what a client sent before it adds its own, and
 * never forwards to a workload.
 *
 *   X-Vramd-Peer: unix pid=1234 uid=1000 gid=1000 groups=1000,27
 *   X-Vramd-Peer: tcp addr=127.0.0.1 token=1
 *
 * A request without the header reached the private socket directly, which
 * only vramd's own user can open (mode 0600): it is treated as that user on
 * the Unix socket.
 */
#ifndef VRAM_PEER_H
#define VRAM_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define VRAM_PEER_HEADER "X-Vramd-Peer"
#define VRAM_PEER_GROUPS_MAX 64 /* supplementary groups carried; more are cut */
#define VRAM_PEER_ADDR_MAX 46   /* INET6_ADDRSTRLEN */
#define VRAM_PEER_TEXT_MAX 1024 /* bytes of the header value, NUL included */

enum vram_peer_transport {
	VRAM_PEER_UNIX = 0, /* the control socket: credentials from the kernel */
	VRAM_PEER_TCP,      /* a TCP listener */
};

struct vram_peer {
	enum vram_peer_transport transport;
	bool token;                           /* TCP: the request carried a valid daemon token */
	pid_t pid;                            /* Unix: the peer's pid at connect time */
	uid_t uid;                            /* Unix */
	gid_t gid;                            /* Unix: primary group */
	gid_t groups[VRAM_PEER_GROUPS_MAX];   /* Unix: supplementary groups */
	size_t n_groups;
	char addr[VRAM_PEER_ADDR_MAX];        /* TCP: the client's address, "" if unknown */
};

/*
 * Reads the credentials of the process at the other end of Unix socket fd
 * into *ret (transport VRAM_PEER_UNIX). Supplementary groups come from
 * SO_PEERGROUPS where the kernel has it (Linux 4.13+); without it the list is
 * empty. Returns 0 or -errno; *ret untouched on failure.
 */
int vram_peer_from_unix_socket(int fd, struct vram_peer *ret);

/* The identity of vramd itself (its euid, egid, groups) on the Unix socket. */
void vram_peer_self(struct vram_peer *ret);

/*
 * Writes p as a header value into buf (size bytes; VRAM_PEER_TEXT_MAX is
 * always enough). Returns the length written or -ENOSPC.
 */
int vram_peer_format(const struct vram_peer *p, char *buf, size_t size);

/*
 * Parses a header value written by vram_peer_format. Returns 0 or -EINVAL
 * (anything else, which a caller treats as an error, not as a default
 * identity); *ret untouched on failure.
 */
int vram_peer_parse(const char *value, struct vram_peer *ret);

/* "uid 1000" or "127.0.0.1 (token)"-style text for logs and messages. */
void vram_peer_describe(const struct vram_peer *p, char *buf, size_t size);

/*
 * The owner's share of a limit: whether peer may begin one more thing of a
 * kind of which n are under way, n_tcp of them for TCP clients. At most max
 * in all, and TCP clients never take the last `reserved`, which are kept
 * for the control socket, so that anonymous clients never lock the
 * machine's owner out.
 */
bool vram_peer_share_left(const struct vram_peer *peer, size_t n, size_t n_tcp, size_t max,
			  size_t reserved);
/*
 * Why peer has no share left of max things called what ("event-stream
 * clients"): which share, and what is kept for whom. Into buf.
 */
void vram_peer_share_refusal(const struct vram_peer *peer, const char *what, size_t max,
			     size_t reserved, char *buf, size_t size);

#endif
