/* SPDX-License-Identifier: MIT */
/*
 * The cheapest possible proxy, as a floor for the gateway benchmark: every
 * accepted connection gets one connection to the upstream port, and bytes
 * are copied both ways with no HTTP parsing, no routing and no accounting.
 * Whatever share of direct throughput this reaches on a machine is the most
 * any user-space proxy over the kernel's sockets can reach there; the
 * gateway is judged against it as well as against direct.
 *
 *   bench-relay --mode epoll|batch|uring --listen PORT --to PORT
 *
 * epoll: one recv and one send per message, like the gateway.
 * batch: epoll for readiness, but the recvs of one wake-up, and then the
 *        sends they produce, go to the kernel in one io_uring_enter each.
 * uring: completion-driven io_uring with no epoll at all: every socket call
 *        of a loop iteration in one io_uring_enter, with deferred task work.
 * batch and uring are built when liburing is found.
 * Prints "port N" once it listens. Never exits on its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef HAVE_LIBURING
#include <liburing.h>
#endif

#define SIDE_BUF (16 * 1024) /* bytes read at once from one side */

/* One direction: bytes read from fd wait in buf until the peer took them. */
struct side {
	int fd;
	struct side *peer;
	bool closed;
	size_t off, len; /* unsent bytes are buf[off, len) */
	char buf[SIDE_BUF];
};

static unsigned up_port;

static int tcp_nodelay(int fd)
{
	int one = 1;
	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* A connected pair for the accepted fd c, or NULL (c is then closed). */
static struct side *pair_new(int c, bool nonblock)
{
	struct side *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)up_port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (!a || !b || u < 0 || connect(u, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    (nonblock && (fcntl(u, F_SETFL, O_NONBLOCK) < 0 || fcntl(c, F_SETFL, O_NONBLOCK) < 0))) {
		perror("bench-relay: upstream");
		if (u >= 0)
			close(u);
		close(c);
		free(a);
		free(b);
		return NULL;
	}
	tcp_nodelay(c);
	tcp_nodelay(u);
	a->fd = c;
	b->fd = u;
	a->peer = b;
	b->peer = a;
	return a;
}

/* Both sides end together; the pair is freed once neither has work in flight. */
static void pair_close(struct side *s)
{
	if (s->closed)
		return;
	s->closed = s->peer->closed = true;
	close(s->fd);
	close(s->peer->fd);
}

static int listen_on(unsigned port)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 1024) < 0 ||
	    getsockname(l, (struct sockaddr *)&sa, &sl) < 0) {
		perror("bench-relay: listen");
		exit(1);
	}
	printf("port %u\n", ntohs(sa.sin_port));
	fflush(stdout);
	return l;
}

/* ---- epoll ---- */

static void ep_watch(int ep, struct side *s, int op)
{
	/* reading stops while the peer still holds unsent bytes of ours */
	struct epoll_event ev = { .events = (s->len ? 0u : EPOLLIN) | (s->peer->len ? EPOLLOUT : 0u),
				  .data.ptr = s };
	epoll_ctl(ep, op, s->fd, &ev);
}

/* Sends what s holds to its peer; false once the pair is closed. */
static bool ep_push(int ep, struct side *s)
{
	while (s->off < s->len) {
		ssize_t n = send(s->peer->fd, s->buf + s->off, s->len - s->off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ep_watch(ep, s, EPOLL_CTL_MOD);
			ep_watch(ep, s->peer, EPOLL_CTL_MOD);
			return true;
		}
		if (n < 0) {
			pair_close(s);
			return false;
		}
		s->off += (size_t)n;
	}
	bool was_held = s->len != 0;
	s->off = s->len = 0;
	if (was_held) {
		ep_watch(ep, s, EPOLL_CTL_MOD);
		ep_watch(ep, s->peer, EPOLL_CTL_MOD);
	}
	return true;
}

/* An epoll set watching the listening socket l (data.ptr NULL). */
static int ep_new(int l)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
	return ep;
}

/* Accepts one client of l and watches it and its new upstream connection. */
static void ep_accept(int ep, int l)
{
	int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	struct side *a = c >= 0 ? pair_new(c, true) : NULL;
	if (a) {
		ep_watch(ep, a, EPOLL_CTL_ADD);
		ep_watch(ep, a->peer, EPOLL_CTL_ADD);
	}
}

static void run_epoll(int l)
{
	int ep = ep_new(l);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			struct side *s = evs[i].data.ptr;
			if (!s) {
				ep_accept(ep, l);
				continue;
			}
			if (s->closed)
				continue; /* closed earlier in this batch (leaked: a benchmark tool) */
			if ((evs[i].events & EPOLLOUT) && !ep_push(ep, s->peer))
				continue;
			if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || s->len)
				continue;
			ssize_t r = recv(s->fd, s->buf, sizeof(s->buf), 0);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0) {
				pair_close(s);
				continue;
			}
			s->off = 0;
			s->len = (size_t)r;
			ep_push(ep, s);
		}
	}
}

/* ---- io_uring ---- */

#ifdef HAVE_LIBURING
enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };

static struct io_uring ring;

static void sqe_set(struct io_uring_sqe *q, struct side *s, unsigned op)
{
	io_uring_sqe_set_data64(q, (uint64_t)(uintptr_t)s | op);
}

static struct io_uring_sqe *sqe_get(void)
{
	struct io_uring_sqe *q = io_uring_get_sqe(&ring);
	if (!q) { /* the queue is full: hand it to the kernel and take a fresh one */
		io_uring_submit(&ring);
		q = io_uring_get_sqe(&ring);
	}
	return q;
}

static void ur_recv(struct side *s)
{
	struct io_uring_sqe *q = sqe_get();
	io_uring_prep_recv(q, s->fd, s->buf, sizeof(s->buf), 0);
	sqe_set(q, s, OP_RECV);
}

static void ur_send(struct side *s)
{
	struct io_uring_sqe *q = sqe_get();
	io_uring_prep_send(q, s->peer->fd, s->buf + s->off, s->len - s->off, MSG_NOSIGNAL);
	sqe_set(q, s, OP_SEND);
}

static int run_uring(int l)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	int r = io_uring_queue_init_params(4096, &ring, &p);
	if (r < 0) {
		fprintf(stderr, "bench-relay: io_uring: %s\n", strerror(-r));
		return 1;
	}
	struct io_uring_sqe *q = sqe_get();
	io_uring_prep_multishot_accept(q, l, NULL, NULL, SOCK_CLOEXEC);
	sqe_set(q, NULL, OP_ACCEPT);
	for (;;) {
		io_uring_submit_and_wait(&ring, 1);
		struct io_uring_cqe *c;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&ring, head, c) {
			seen++;
			unsigned op = (unsigned)(c->user_data & 7);
			struct side *s = (struct side *)(uintptr_t)(c->user_data & ~(uint64_t)7);
			if (op == OP_ACCEPT) {
				struct side *a = c->res >= 0 ? pair_new(c->res, false) : NULL;
				if (a) {
					ur_recv(a);
					ur_recv(a->peer);
				}
				if (!(c->flags & IORING_CQE_F_MORE)) { /* re-arm a stopped accept */
					q = sqe_get();
					io_uring_prep_multishot_accept(q, l, NULL, NULL, SOCK_CLOEXEC);
					sqe_set(q, NULL, OP_ACCEPT);
				}
			} else if (s->closed) {
				continue; /* leaked once closed: a benchmark tool */
			} else if (c->res <= 0) {
				pair_close(s);
			} else if (op == OP_RECV) {
				s->off = 0;
				s->len = (size_t)c->res;
				ur_send(s);
			} else {
				s->off += (size_t)c->res;
				if (s->off < s->len) {
					ur_send(s);
				} else {
					s->off = s->len = 0;
					ur_recv(s);
				}
			}
		}
		io_uring_cq_advance(&ring, seen);
	}
}

/*
 * batch: epoll tells which sockets are ready, and the recvs of one wake-up,
 * then the sends they produce, each go to the kernel in one io_uring_enter.
 */
static int run_batch(int l)
{
	int r = io_uring_queue_init(4096, &ring, 0);
	if (r < 0) {
		fprintf(stderr, "bench-relay: io_uring: %s\n", strerror(-r));
		return 1;
	}
	int ep = ep_new(l);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1), queued = 0;
		for (int i = 0; i < n; i++) {
			struct side *s = evs[i].data.ptr;
			if (!s) {
				ep_accept(ep, l);
				continue;
			}
			if (s->closed || s->len)
				continue;
			ur_recv(s);
			queued++;
		}
		while (queued > 0) {
			io_uring_submit_and_wait(&ring, (unsigned)queued);
			struct io_uring_cqe *c;
			unsigned head, seen = 0;
			queued = 0;
			io_uring_for_each_cqe(&ring, head, c) {
				seen++;
				unsigned op = (unsigned)(c->user_data & 7);
				struct side *s = (struct side *)(uintptr_t)(c->user_data & ~(uint64_t)7);
				if (s->closed)
					continue;
				if (op == OP_RECV && c->res == -EAGAIN)
					continue;
				if (c->res <= 0) {
					pair_close(s);
				} else if (op == OP_RECV) {
					s->off = 0;
					s->len = (size_t)c->res;
					ur_send(s);
					queued++;
				} else {
					s->off += (size_t)c->res;
					if (s->off < s->len) {
						ur_send(s);
						queued++;
					} else {
						s->off = s->len = 0;
					}
				}
			}
			io_uring_cq_advance(&ring, seen);
		}
	}
}
#endif

int main(int argc, char **argv)
{
	const char *mode = NULL;
	long listen_port = -1, to = -1;
	for (int i = 1; i + 1 < argc; i += 2) {
		char *end;
		if (strcmp(argv[i], "--mode") == 0) {
			mode = argv[i + 1];
			continue;
		}
		long v = strtol(argv[i + 1], &end, 10);
		if (*end || v < 0 || v > 65535) {
			fprintf(stderr, "bench-relay: %s: expected a port 0..65535, got \"%s\"\n",
				argv[i], argv[i + 1]);
			return 2;
		}
		if (strcmp(argv[i], "--listen") == 0)
			listen_port = v;
		else if (strcmp(argv[i], "--to") == 0)
			to = v;
	}
	if (!mode || listen_port < 0 || to <= 0 || argc != 7) {
		fprintf(stderr, "usage: bench-relay --mode epoll|batch|uring --listen PORT --to PORT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	up_port = (unsigned)to;
	if (strcmp(mode, "epoll") == 0) {
		run_epoll(listen_on((unsigned)listen_port));
		return 0;
	}
#ifdef HAVE_LIBURING
	if (strcmp(mode, "uring") == 0)
		return run_uring(listen_on((unsigned)listen_port));
	if (strcmp(mode, "batch") == 0)
		return run_batch(listen_on((unsigned)listen_port));
#else
	if (strcmp(mode, "uring") == 0 || strcmp(mode, "batch") == 0) {
		fprintf(stderr, "bench-relay: built without liburing\n");
		return 3;
	}
#endif
	fprintf(stderr, "bench-relay: --mode: expected epoll, batch or uring, got \"%s\"\n", mode);
	return 2;
}
