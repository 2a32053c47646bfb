/* SPDX-License-Identifier: MIT */
/*
 * The gateway's listeners (see gateway_int.h): TCP and the control socket,
 * accepting a connection as a client under the limits on clients and on
 * connections per address, and refusing the rest with a warning at most
 * every GW_REFUSE_WARN_S.
 */
#include "daemon/gateway_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/listener.h>

#include "common/log.h"
#include "daemon/http.h"

#define GW_CHUNK_SLACK (1024 * 1024) /* bytes of chunked framing allowed on top of a body */
#define GW_REFUSE_WARN_S 10     /* s between two warnings about refused connections */
/* bytes queued to a client: the backlog limit plus what one upstream read adds */
#define GW_CLIENT_OUT_MAX (VRAM_GATEWAY_BACKLOG_MAX + 2 * GW_READ_MAX + VRAM_GATEWAY_UP_HEADERS_MAX)

/* ---------------------------------------------------------- listeners */

/* The home slot of an address in gw->addrs. */
static size_t addr_slot(const struct vram_gateway *gw, const unsigned char key[16])
{
	uint32_t h = 2166136261u ^ gw->addr_seed; /* FNV-1a */
	for (size_t i = 0; i < 16; i++) {
		h ^= key[i];
		h *= 16777619u;
	}
	return h & (GW_ADDR_SLOTS - 1);
}

/* The entry of key, or the free slot where it goes (the table is never full). */
static struct gw_addr_count *addr_find(struct vram_gateway *gw, const unsigned char key[16])
{
	size_t i = addr_slot(gw, key);
	while (gw->addrs[i].n && memcmp(gw->addrs[i].addr, key, 16) != 0)
		i = (i + 1) & (GW_ADDR_SLOTS - 1);
	return &gw->addrs[i];
}

/* One connection of key fewer; an address with none leaves the table. */
void gw__addr_release(struct vram_gateway *gw, const unsigned char key[16])
{
	const size_t mask = GW_ADDR_SLOTS - 1;
	struct gw_addr_count *e = addr_find(gw, key);
	if (!e->n || --e->n)
		return;
	/* Linear probing without tombstones: later entries of the run move into the hole. */
	size_t hole = (size_t)(e - gw->addrs);
	for (size_t j = (hole + 1) & mask; gw->addrs[j].n; j = (j + 1) & mask) {
		size_t home = addr_slot(gw, gw->addrs[j].addr);
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			gw->addrs[hole] = gw->addrs[j];
			gw->addrs[j].n = 0;
			hole = j;
		}
	}
}

/*
 * The text of a TCP address (IPv4-mapped IPv6 as IPv4) and the key it is
 * counted under: the address, or for IPv6 its /64, which one host or one
 * network usually has to itself.
 */
static void addr_of(const struct sockaddr *sa, char *text, size_t size, unsigned char key[16])
{
	static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
	memset(key, 0, 16);
	text[0] = '\0';
	if (sa->sa_family == AF_INET) {
		memcpy(key, mapped, 12);
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		inet_ntop(AF_INET, key + 12, text, (socklen_t)size);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		if (memcmp(key, mapped, 12) == 0) {
			inet_ntop(AF_INET, key + 12, text, (socklen_t)size);
		} else {
			inet_ntop(AF_INET6, key, text, (socklen_t)size);
			memset(key + 8, 0, 8);
		}
	}
}

/* Closes a connection over a limit: a debug line each, a warning every GW_REFUSE_WARN_S. */
static void refuse_connection(struct vram_gateway *gw, int fd, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void refuse_connection(struct vram_gateway *gw, int fd, const char *fmt, ...)
{
	close(fd);
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	vram_debug("gateway: refusing a connection: %s", why);
	gw->n_refused++;
	time_t now = gw__now_s();
	if (gw->refuse_warned && now - gw->refuse_warned < GW_REFUSE_WARN_S)
		return;
	vram_warn("gateway: refused %u connection%s since the last warning, the last one: %s",
		  gw->n_refused, gw->n_refused == 1 ? "" : "s", why);
	gw->refuse_warned = now ? now : 1;
	gw->n_refused = 0;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		      void *arg)
{
	struct gw_listener *gl = arg;
	struct vram_gateway *gw = gl->gw;
	bool tcp = !gl->trusted;
	if (gw->closing) {
		vram_debug("gateway: refusing a connection: shutting down");
		close(fd);
		return;
	}
	char addr[INET6_ADDRSTRLEN] = "";
	unsigned char key[16];
	struct gw_addr_count *count = NULL;
	if (tcp) {
		addr_of(sa, addr, sizeof(addr), key);
		count = addr_find(gw, key);
		if (gw->n_tcp_clients >= VRAM_GATEWAY_CLIENTS_MAX - VRAM_GATEWAY_UNIX_RESERVED ||
		    gw->n_clients >= VRAM_GATEWAY_CLIENTS_MAX) {
			refuse_connection(gw, fd, "%u TCP clients are connected, the most there may be "
					  "(%u of %u kept for the control socket)", gw->n_tcp_clients,
					  VRAM_GATEWAY_UNIX_RESERVED, VRAM_GATEWAY_CLIENTS_MAX);
			return;
		}
		if (count->n >= VRAM_GATEWAY_CLIENTS_PER_ADDR_MAX) {
			refuse_connection(gw, fd, "%s has %u connections open, the most one address may",
					  addr, count->n);
			return;
		}
	} else if (gw->n_clients >= VRAM_GATEWAY_CLIENTS_MAX) {
		refuse_connection(gw, fd, "%u clients are connected, the most there may be",
				  gw->n_clients);
		return;
	}
	struct gw_client *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->gw = gw;
	c->listener = gl;
	c->fd = fd;
	c->trusted = gl->trusted;
	vram_buf_init(&c->in, VRAM_HTTP_HEADERS_MAX + VRAM_GATEWAY_BODY_MAX + GW_CHUNK_SLACK);
	vram_buf_init(&c->out, GW_CLIENT_OUT_MAX);
	vram_buf_init(&c->body, VRAM_GATEWAY_BODY_MAX);
	if (tcp) {
		c->ident.transport = VRAM_PEER_TCP;
		snprintf(c->ident.addr, sizeof(c->ident.addr), "%s", addr);
		memcpy(c->addr_key, key, sizeof(key));
		struct sockaddr_storage local;
		socklen_t llen = sizeof(local);
		unsigned char unused[16];
		if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
			addr_of((struct sockaddr *)&local, c->local_addr, sizeof(c->local_addr), unused);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	} else {
		int r = vram_peer_from_unix_socket(fd, &c->ident);
		if (r < 0) {
			/* the kernel always knows the peer of a connected Unix socket */
			vram_debug("gateway: refusing a connection: its credentials: %s", strerror(-r));
			close(fd);
			free(c);
			return;
		}
	}
	c->rev = event_new(gw->base, fd, EV_READ | EV_PERSIST, gw__client_on_read, c);
	c->wev = event_new(gw->base, fd, EV_WRITE, gw__client_on_write, c);
	if (!c->rev || !c->wev || event_add(c->rev, NULL) < 0) {
		if (c->rev)
			event_free(c->rev);
		if (c->wev)
			event_free(c->wev);
		close(fd);
		free(c);
		return;
	}
	if (tcp) {
		memcpy(count->addr, key, sizeof(key));
		count->n++;
		gw->n_tcp_clients++;
	}
	c->stamp = c->out_stamp = gw__now_s();
	vram_list_push_front(&gw->clients, &c->link);
	gw->n_clients++;
}

/* Listens on fd (taken): a Unix socket at path, or TCP on host (copied) and port. */
static int listener_add(struct vram_gateway *gw, int fd, bool trusted, const char *path,
			const char *host, unsigned port, char *err, size_t err_size)
{
	if (gw->n_listeners == GW_LISTENERS_MAX) {
		snprintf(err, err_size, "too many listeners");
		close(fd);
		return -ENOSPC;
	}
	struct gw_listener *gl = &gw->listeners[gw->n_listeners];
	*gl = (struct gw_listener){ .gw = gw, .trusted = trusted, .port = port };
	gl->path = path ? strdup(path) : NULL;
	gl->host = host ? strdup(host) : NULL;
	gl->l = evconnlistener_new(gw->base, on_accept, gl,
				   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (!gl->l || (path && !gl->path) || (host && !gl->host)) {
		snprintf(err, err_size, "out of memory");
		if (gl->l)
			evconnlistener_free(gl->l);
		else
			close(fd);
		free(gl->path);
		free(gl->host);
		return -ENOMEM;
	}
	/* without it the listener would still work, only spin when out of descriptors */
	gl->guard = vram_accept_guard_new(gw->base, gl->l, "gateway");
	gw->n_listeners++;
	return 0;
}

/* Listens on the TCP socket fd (taken), bound for hostport. */
static int listen_tcp_on(struct vram_gateway *gw, int fd, const char *hostport, unsigned port,
			 unsigned *ret_port, char *err, size_t err_size)
{
	char host[256];
	if (vram_http_split_hostport(hostport, host, sizeof(host), &(unsigned){ 0 }) < 0)
		host[0] = '\0'; /* vram_http_listen_tcp split it already */
	if (ret_port)
		*ret_port = port;
	return listener_add(gw, fd, false, NULL, host, port, err, err_size);
}

int vram_gateway_listen_tcp(struct vram_gateway *gw, const char *hostport, unsigned *ret_port,
			    char *err, size_t err_size)
{
	unsigned port = 0;
	int fd = vram_http_listen_tcp(hostport, &port, err, err_size);
	if (fd < 0)
		return fd;
	return listen_tcp_on(gw, fd, hostport, port, ret_port, err, err_size);
}

int vram_gateway_listen_tcp_fd(struct vram_gateway *gw, int fd, const char *hostport,
			       unsigned *ret_port, char *err, size_t err_size)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	unsigned port = 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
						: ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (evutil_make_socket_nonblocking(fd) < 0) {
		snprintf(err, err_size, "descriptor %d: cannot make it non-blocking", fd);
		close(fd);
		return -EINVAL;
	}
	return listen_tcp_on(gw, fd, hostport, port, ret_port, err, err_size);
}

int vram_gateway_listen_unix(struct vram_gateway *gw, const char *path, char *err, size_t err_size)
{
	return vram_gateway_listen_unix_shared(gw, path, 0600, (gid_t)-1, err, err_size);
}

int vram_gateway_listen_unix_shared(struct vram_gateway *gw, const char *path, mode_t mode,
				    gid_t gid, char *err, size_t err_size)
{
	int fd = vram_http_listen_unix_shared(path, mode, gid, err, err_size);
	if (fd < 0)
		return fd;
	int r = listener_add(gw, fd, true, path, NULL, 0, err, err_size);
	if (r < 0)
		unlink(path);
	return r;
}

int vram_gateway_listen_unix_fd(struct vram_gateway *gw, int fd, const char *path, mode_t mode,
				gid_t gid, char *err, size_t err_size)
{
	/* the config's mode and group now, which may differ from the image's before */
	int r = vram_http_unix_set_mode(path, mode, gid, err, err_size);
	if (r == 0 && evutil_make_socket_nonblocking(fd) < 0) {
		snprintf(err, err_size, "descriptor %d: cannot make it non-blocking", fd);
		r = -EINVAL;
	}
	if (r < 0) {
		close(fd);
		return r;
	}
	r = listener_add(gw, fd, true, path, NULL, 0, err, err_size);
	if (r < 0)
		unlink(path);
	return r;
}
