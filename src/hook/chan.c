/* SPDX-License-Identifier: MIT */
/*
 * The hook's two doors to the outside, served by one thread that starts at
 * the first successful cuInit (and only if one of them is configured):
 *
 *  - VRAM_HOOK_SOCKET: vramd's Unix socket. The hook connects, says HELLO
 *    (pid, VRAM_WORKLOAD, devices, caps), sends USAGE when its numbers change
 *    (at most once a second) and runs the OFFLOAD/RESTORE commands it
 *    receives, answering each with a RESULT (src/proto/hook_proto.h). When
 *    vramd goes away the caps keep working and the hook reconnects every
 *    second or two, to whichever vramd listens on the same path then; each
 *    connection starts with HELLO and a USAGE carrying the current state
 *    (a process the previous vramd offloaded shows as offloaded in the
 *    next). A VRAM_MEMORY_LIMIT that did not parse is flagged in every
 *    HELLO, so vramd can warn about it. PARK and DROP_HOST (protocol 3) are
 *    run like OFFLOAD and RESTORE, and every RESULT comes right after a
 *    USAGE, so that vramd's numbers (the host memory above all) are
 *    already those after the command when it hears the answer.
 *
 *  - VRAM_CONTROL: a socket of the process's own ("%p" in the path becomes
 *    the pid), mode 0600, for offloading by hand without vramd. One command
 *    per line, one answer line each:
 *        offload [drop-host]  ->  ok offload bytes=N nonmovable=N missing=0 usec=N state=offloaded text=...
 *        restore              ->  ok restore ...   or   error restore status=-12 ... missing=N ... text=...
 *        park PATH            ->  ok park bytes=N ... state=parked text=...  (PATH absolute, new)
 *        drop-host            ->  ok drop-host bytes=N ... state=running text=...
 *        status               ->  ok status state=running pid=N ndev=K host_pinned=N host_kept=N parked=N
 *                                 dev0=used:N,resident:N,nonmovable:N,cap:N ...
 *    Lines are at most 255 bytes; a longer one closes the connection.
 *
 * The thread blocks every signal, so it never runs the program's handlers.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hook/hook.h"
#include "proto/hook_proto.h"

#define MAX_CLIENTS 8
#define LINE_MAX_BYTES 256

struct client {
	int fd;
	size_t len;
	char buf[LINE_MAX_BYTES];
};

static pthread_once_t chan_once = PTHREAD_ONCE_INIT;
static char control_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static char daemon_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static pid_t control_owner;
static int listen_fd = -1;
static int daemon_fd = -1;
static struct client clients[MAX_CLIENTS];
static uint8_t daemon_buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
static size_t daemon_len;
static uint32_t send_seq;

static const char *const state_names[] = { "running", "offloading", "offloaded", "restoring", "parking", "parked" };

static const char *state_name(void)
{
	unsigned st = (unsigned)atomic_load(&vram_hook_state);
	return st < sizeof(state_names) / sizeof(state_names[0]) ? state_names[st] : "unknown";
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -errno;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Expands "%p" to the pid. Returns 0 or -ENAMETOOLONG. */
static int expand_path(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *p = in; *p; p++) {
		if (p[0] == '%' && p[1] == 'p') {
			int n = snprintf(out + o, cap - o, "%d", (int)getpid());
			if (n < 0 || (size_t)n >= cap - o)
				return -ENAMETOOLONG;
			o += (size_t)n;
			p++;
			continue;
		}
		if (o + 1 >= cap)
			return -ENAMETOOLONG;
		out[o++] = *p;
	}
	out[o] = '\0';
	return 0;
}

static void fill_devs(struct vram_hook_proto_dev *dev, uint32_t *ret_n)
{
	uint32_t n = (uint32_t)(vram_hook_ndev < VRAM_HOOK_PROTO_MAX_DEVICES ? vram_hook_ndev
									  : VRAM_HOOK_PROTO_MAX_DEVICES);
	for (uint32_t d = 0; d < n; d++) {
		struct vram_hook_usage *u = &vram_hook_usage[d];
		CUuuid uuid;
		memset(&dev[d], 0, sizeof(dev[d]));
		dev[d].index = d;
		if (VRAM_CALL_REAL(cuDeviceGetUuid_v2, &uuid, (CUdevice)d) == CUDA_SUCCESS)
			memcpy(dev[d].uuid, uuid.bytes, 16);
		dev[d].physical = u->physical;
		dev[d].cap = u->cap;
		dev[d].used = atomic_load(&u->used);
		uint64_t off = atomic_load(&u->offloaded);
		dev[d].resident = dev[d].used > off ? dev[d].used - off : 0;
		dev[d].nonmovable = atomic_load(&u->nonmovable);
	}
	*ret_n = n;
}

/* ---------------------------------------------------------------- vramd */

static void daemon_close(void)
{
	if (daemon_fd >= 0)
		close(daemon_fd);
	daemon_fd = -1;
	daemon_len = 0;
}

static int daemon_send(struct vram_hook_proto_msg *m)
{
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	m->seq = ++send_seq;
	long n = vram_hook_proto_encode(m, buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	int r = write_all(daemon_fd, buf, (size_t)n);
	if (r < 0) {
		vram_hook_log(VRAM_HOOK_LOG_INFO, "lost the connection to vramd: %s", strerror(-r));
		daemon_close();
	}
	return r;
}

static void send_usage(void)
{
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_USAGE;
	m.u.usage.state = (uint32_t)atomic_load(&vram_hook_state);
	fill_devs(m.u.usage.dev, &m.u.usage.ndev);
	vram_hook_host_usage(&m.u.usage.host_pinned, &m.u.usage.host_kept, &m.u.usage.parked);
	daemon_send(&m);
}

static void daemon_connect(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, daemon_path, sizeof(sa.sun_path));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return;
	}
	daemon_fd = fd;
	daemon_len = 0;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_HELLO;
	m.u.hello.pid = (uint32_t)getpid();
	const char *w = secure_getenv("VRAM_WORKLOAD");
	snprintf(m.u.hello.workload, sizeof(m.u.hello.workload), "%s", w ? w : "");
	fill_devs(m.u.hello.dev, &m.u.hello.ndev);
	m.u.hello.flags = VRAM_HOOK_HELLO_GROUP;
	const char *bad_limit = vram_hook_limit_invalid_text();
	if (bad_limit) {
		m.u.hello.flags |= VRAM_HOOK_HELLO_LIMIT_INVALID;
		snprintf(m.u.hello.limit_text, sizeof(m.u.hello.limit_text), "%s", bad_limit);
	}
	if (daemon_send(&m) != 0)
		return;
	vram_hook_log(VRAM_HOOK_LOG_INFO, "connected to vramd at %s", daemon_path);
	/*
	 * HELLO has no state: a vramd that restarted while the process was
	 * offloaded learns it from this USAGE, not from the next change.
	 */
	send_usage();
}

/* ------------------------------------------------------- overlapped swaps */

/*
 * The command from vramd being run, for an overlapped swap: an OFFLOAD with
 * the flag PROGRESS sends PROGRESS as memory is given back; a RESTORE with
 * the flag GRANTED reads GRANTs for it while it waits for room. Both run on
 * this (the control) thread, between the command and its RESULT.
 */
struct swap_cmd {
	uint32_t request_id;
	uint64_t grant[VRAM_HOOK_MAX_DEVICES]; /* bytes the restore may create, per device */
	bool cancelled;
};

#define GRANT_WAIT_MS 120000 /* a restore gives up after this long without a grant that suffices */

static void swap_progress(void *arg, const uint64_t freed[VRAM_HOOK_MAX_DEVICES])
{
	struct swap_cmd *sc = arg;
	if (daemon_fd < 0)
		return;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_PROGRESS;
	m.u.grant.request_id = sc->request_id;
	for (int i = 0; i < VRAM_HOOK_MAX_DEVICES && i < VRAM_HOOK_PROTO_MAX_DEVICES; i++)
		m.u.grant.bytes[i] = freed[i];
	daemon_send(&m);
}

/* A message from vramd while a granted restore waits: GRANT, or PING. */
static void swap_message(struct swap_cmd *sc, const struct vram_hook_proto_msg *m)
{
	/* not answered now: the restore holds the allocation lock the numbers
	 * are read under; the USAGE before its RESULT answers it */
	if (m->type == VRAM_HOOK_MSG_PING)
		return;
	if (m->type != VRAM_HOOK_MSG_GRANT || m->u.grant.request_id != sc->request_id) {
		vram_hook_log(VRAM_HOOK_LOG_WARN, "ignoring message type %u from vramd during a restore", m->type);
		return;
	}
	if (m->u.grant.flags & VRAM_HOOK_GRANT_CANCEL)
		sc->cancelled = true;
	for (int i = 0; i < VRAM_HOOK_MAX_DEVICES && i < VRAM_HOOK_PROTO_MAX_DEVICES; i++)
		if (m->u.grant.bytes[i] > sc->grant[i])
			sc->grant[i] = m->u.grant.bytes[i];
}

static int swap_wait_grant(void *arg, int dev, uint64_t need)
{
	struct swap_cmd *sc = arg;
	uint64_t deadline = now_ms() + GRANT_WAIT_MS;
	for (;;) {
		if (sc->cancelled)
			return -ECANCELED;
		if (dev >= 0 && dev < VRAM_HOOK_MAX_DEVICES && sc->grant[dev] >= need)
			return 0;
		if (daemon_fd < 0)
			return -EPIPE;
		/* the messages already read first, then the socket */
		struct vram_hook_proto_msg m;
		long used = vram_hook_proto_decode(daemon_buf, daemon_len, &m);
		if (used < 0) {
			daemon_close();
			return -EPIPE;
		}
		if (used > 0) {
			memmove(daemon_buf, daemon_buf + used, daemon_len - (size_t)used);
			daemon_len -= (size_t)used;
			swap_message(sc, &m);
			continue;
		}
		uint64_t now = now_ms();
		if (now >= deadline)
			return -ETIMEDOUT;
		struct pollfd pfd = { .fd = daemon_fd, .events = POLLIN };
		int r = poll(&pfd, 1, (int)(deadline - now));
		if (r < 0 && errno != EINTR)
			return -EPIPE;
		if (r <= 0)
			continue;
		ssize_t got = recv(daemon_fd, daemon_buf + daemon_len, sizeof(daemon_buf) - daemon_len, 0);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got <= 0) {
			daemon_close();
			return -EPIPE;
		}
		daemon_len += (size_t)got;
	}
}

/*
 * Runs a command (VRAM_HOOK_MSG_*); path: PARK's file; request_id: vramd's
 * (0 for the control socket, which has no swaps).
 */
static void run_command(uint16_t op, uint32_t flags, uint32_t request_id, const char *path, uint64_t limit,
			struct vram_hook_op_result *res)
{
	struct swap_cmd sc = { .request_id = request_id };
	struct vram_hook_swap swap = {
		.progress = swap_progress, .wait_grant = swap_wait_grant, .arg = &sc,
	};
	switch (op) {
	case VRAM_HOOK_MSG_OFFLOAD:
		if (flags & VRAM_HOOK_OFFLOAD_GATE_ONLY)
			vram_hook_gate_hold(res);
		else
			vram_hook_offload(flags & VRAM_HOOK_OFFLOAD_DROP_HOST,
					  (flags & VRAM_HOOK_OFFLOAD_PROGRESS) ? &swap : NULL, res);
		break;
	case VRAM_HOOK_MSG_PARK:
		vram_hook_park(path, res);
		break;
	case VRAM_HOOK_MSG_DROP_HOST:
		vram_hook_drop_host(res);
		break;
	case VRAM_HOOK_MSG_PREPARE_HOST:
		vram_hook_prepare_host(limit, res);
		break;
	default:
		if (flags & VRAM_HOOK_RESTORE_HOLD_GATE)
			vram_hook_restore_hold(res);
		else
			vram_hook_restore((flags & VRAM_HOOK_RESTORE_GRANTED) ? &(struct vram_hook_swap){
						  .wait_grant = swap_wait_grant, .arg = &sc } : NULL, res);
		break;
	}
}

static void daemon_handle(const struct vram_hook_proto_msg *in)
{
	if (in->type == VRAM_HOOK_MSG_PING) {
		send_usage();
		return;
	}
	if (in->type == VRAM_HOOK_MSG_GRANT)
		return; /* for a restore that has ended meanwhile */
	if (in->type != VRAM_HOOK_MSG_OFFLOAD && in->type != VRAM_HOOK_MSG_RESTORE && in->type != VRAM_HOOK_MSG_PARK &&
	    in->type != VRAM_HOOK_MSG_DROP_HOST && in->type != VRAM_HOOK_MSG_PREPARE_HOST) {
		vram_hook_log(VRAM_HOOK_LOG_WARN, "ignoring message type %u from vramd", in->type);
		return;
	}
	struct vram_hook_op_result res;
	run_command(in->type, in->u.command.flags, in->u.command.request_id, in->u.command.path,
		    in->u.command.limit, &res);
	/* the numbers after the command first, so that they are vramd's when it hears the answer */
	send_usage();
	if (daemon_fd < 0)
		return;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_RESULT;
	m.u.result.request_id = in->u.command.request_id;
	m.u.result.op = in->type;
	m.u.result.status = res.status;
	m.u.result.state = (uint32_t)atomic_load(&vram_hook_state);
	m.u.result.bytes = res.bytes;
	m.u.result.nonmovable = res.nonmovable;
	m.u.result.missing = res.missing;
	m.u.result.usec = res.usec;
	snprintf(m.u.result.text, sizeof(m.u.result.text), "%s", res.text);
	daemon_send(&m);
}

static void daemon_read(void)
{
	ssize_t r = recv(daemon_fd, daemon_buf + daemon_len, sizeof(daemon_buf) - daemon_len, 0);
	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) {
		vram_hook_log(VRAM_HOOK_LOG_INFO, "vramd closed the connection");
		daemon_close();
		return;
	}
	daemon_len += (size_t)r;
	for (;;) {
		struct vram_hook_proto_msg m;
		long used = vram_hook_proto_decode(daemon_buf, daemon_len, &m);
		if (used == 0)
			return;
		if (used < 0) {
			vram_hook_log(VRAM_HOOK_LOG_WARN, "bad message from vramd; reconnecting");
			daemon_close();
			return;
		}
		memmove(daemon_buf, daemon_buf + used, daemon_len - (size_t)used);
		daemon_len -= (size_t)used;
		daemon_handle(&m);
		if (daemon_fd < 0)
			return;
	}
}

/* -------------------------------------------------------- control socket */

static int control_listen(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, control_path, sizeof(sa.sun_path));
	/* A live owner keeps its socket; a stale file is replaced. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(fd);
		return -EADDRINUSE;
	}
	unlink(control_path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(control_path, 0600) < 0 ||
	    listen(fd, MAX_CLIENTS) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	control_owner = getpid();
	return fd;
}

static void format_result(char *out, size_t cap, const char *op, const struct vram_hook_op_result *r)
{
	snprintf(out, cap, "%s %s status=%d bytes=%llu nonmovable=%llu missing=%llu usec=%llu state=%s text=%s\n",
		 r->status == 0 ? "ok" : "error", op, r->status, (unsigned long long)r->bytes,
		 (unsigned long long)r->nonmovable, (unsigned long long)r->missing, (unsigned long long)r->usec,
		 state_name(), r->text);
}

static void control_line(struct client *c, char *line)
{
	char out[1024];
	struct vram_hook_op_result res;
	size_t len = strlen(line);
	while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
		line[--len] = '\0';
	if (strcmp(line, "offload") == 0 || strcmp(line, "offload drop-host") == 0) {
		run_command(VRAM_HOOK_MSG_OFFLOAD, line[7] ? VRAM_HOOK_OFFLOAD_DROP_HOST : 0, 0, NULL, 0, &res);
		format_result(out, sizeof(out), "offload", &res);
	} else if (strcmp(line, "restore") == 0) {
		run_command(VRAM_HOOK_MSG_RESTORE, 0, 0, NULL, 0, &res);
		format_result(out, sizeof(out), "restore", &res);
	} else if (strcmp(line, "gate") == 0) {
		run_command(VRAM_HOOK_MSG_OFFLOAD, VRAM_HOOK_OFFLOAD_GATE_ONLY, 0, NULL, 0, &res);
		format_result(out, sizeof(out), "gate", &res);
	} else if (strcmp(line, "restore hold") == 0) {
		run_command(VRAM_HOOK_MSG_RESTORE, VRAM_HOOK_RESTORE_HOLD_GATE, 0, NULL, 0, &res);
		format_result(out, sizeof(out), "restore", &res);
	} else if (strncmp(line, "park ", 5) == 0) {
		run_command(VRAM_HOOK_MSG_PARK, 0, 0, line + 5, 0, &res);
		format_result(out, sizeof(out), "park", &res);
	} else if (strcmp(line, "drop-host") == 0) {
		run_command(VRAM_HOOK_MSG_DROP_HOST, 0, 0, NULL, 0, &res);
		format_result(out, sizeof(out), "drop-host", &res);
	} else if (strcmp(line, "status") == 0) {
		struct vram_hook_proto_dev dev[VRAM_HOOK_PROTO_MAX_DEVICES];
		uint32_t n;
		uint64_t pinned, kept, parked;
		fill_devs(dev, &n);
		vram_hook_host_usage(&pinned, &kept, &parked);
		int o = snprintf(out, sizeof(out), "ok status state=%s pid=%d ndev=%u host_pinned=%llu host_kept=%llu "
				 "parked=%llu", state_name(), (int)getpid(), n, (unsigned long long)pinned,
				 (unsigned long long)kept, (unsigned long long)parked);
		for (uint32_t d = 0; d < n && o > 0 && (size_t)o < sizeof(out) - 2; d++)
			o += snprintf(out + o, sizeof(out) - (size_t)o,
				      " dev%u=used:%llu,resident:%llu,nonmovable:%llu,cap:%llu", d,
				      (unsigned long long)dev[d].used, (unsigned long long)dev[d].resident,
				      (unsigned long long)dev[d].nonmovable, (unsigned long long)dev[d].cap);
		if (o > 0 && (size_t)o < sizeof(out) - 1)
			strcpy(out + o, "\n");
		else
			strcpy(out + sizeof(out) - 2, "\n");
	} else {
		snprintf(out, sizeof(out), "error unknown status=%d text=unknown command; "
			 "expected offload, offload drop-host, restore, park PATH, drop-host or status\n", -EINVAL);
	}
	if (write_all(c->fd, out, strlen(out)) < 0) {
		close(c->fd);
		c->fd = -1;
	}
}

static void client_read(struct client *c)
{
	ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) {
		close(c->fd);
		c->fd = -1;
		return;
	}
	c->len += (size_t)r;
	c->buf[c->len] = '\0';
	char *nl;
	while (c->fd >= 0 && (nl = memchr(c->buf, '\n', c->len))) {
		*nl = '\0';
		size_t used = (size_t)(nl - c->buf) + 1;
		control_line(c, c->buf);
		memmove(c->buf, c->buf + used, c->len - used);
		c->len -= used;
		c->buf[c->len] = '\0';
	}
	if (c->fd >= 0 && c->len >= sizeof(c->buf) - 1) {
		const char *msg = "error unknown status=-22 text=line too long\n";
		write_all(c->fd, msg, strlen(msg));
		close(c->fd);
		c->fd = -1;
	}
}

/* ----------------------------------------------------------------- thread */

static void *chan_main(void *arg)
{
	(void)arg;
	uint64_t next_connect = 0, last_usage = 0;
	unsigned sent_seq = ~0u;
	for (;;) {
		uint64_t now = now_ms();
		if (daemon_path[0] && daemon_fd < 0 && now >= next_connect) {
			daemon_connect();
			next_connect = now + 1000 + (uint64_t)(getpid() % 1000);
		}
		if (daemon_fd >= 0 && now - last_usage >= 1000 &&
		    atomic_load(&vram_hook_usage_seq) != sent_seq) {
			sent_seq = atomic_load(&vram_hook_usage_seq);
			last_usage = now;
			send_usage();
		}

		struct pollfd pfd[2 + MAX_CLIENTS];
		int n = 0, daemon_idx = -1, listen_idx = -1;
		if (daemon_fd >= 0) {
			daemon_idx = n;
			pfd[n++] = (struct pollfd){ .fd = daemon_fd, .events = POLLIN };
		}
		if (listen_fd >= 0) {
			listen_idx = n;
			pfd[n++] = (struct pollfd){ .fd = listen_fd, .events = POLLIN };
		}
		int client_base = n;
		for (int i = 0; i < MAX_CLIENTS; i++)
			pfd[n++] = (struct pollfd){ .fd = clients[i].fd, .events = POLLIN };
		int r = poll(pfd, (nfds_t)n, 500);
		if (r <= 0)
			continue;
		if (daemon_idx >= 0 && pfd[daemon_idx].revents)
			daemon_read();
		if (listen_idx >= 0 && (pfd[listen_idx].revents & POLLIN)) {
			int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
			int slot = -1;
			for (int i = 0; i < MAX_CLIENTS && fd >= 0; i++)
				if (clients[i].fd < 0) {
					slot = i;
					break;
				}
			if (slot >= 0) {
				clients[slot].fd = fd;
				clients[slot].len = 0;
			} else if (fd >= 0) {
				close(fd); /* too many clients */
			}
		}
		for (int i = 0; i < MAX_CLIENTS; i++)
			if (clients[i].fd >= 0 && pfd[client_base + i].fd == clients[i].fd && pfd[client_base + i].revents)
				client_read(&clients[i]);
	}
	return NULL;
}

static void chan_start_once(void)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		clients[i].fd = -1;
	const char *ctl = secure_getenv("VRAM_CONTROL");
	const char *sock = secure_getenv("VRAM_HOOK_SOCKET");
	if (sock && *sock && expand_path(sock, daemon_path, sizeof(daemon_path)) < 0) {
		vram_hook_log(VRAM_HOOK_LOG_ERROR, "Ignoring VRAM_HOOK_SOCKET: path too long");
		daemon_path[0] = '\0';
	}
	if (ctl && *ctl) {
		if (expand_path(ctl, control_path, sizeof(control_path)) < 0) {
			vram_hook_log(VRAM_HOOK_LOG_ERROR, "Ignoring VRAM_CONTROL: path too long");
			control_path[0] = '\0';
		} else {
			listen_fd = control_listen();
			if (listen_fd < 0) {
				vram_hook_log(VRAM_HOOK_LOG_ERROR, "Failed to listen on %s: %s", control_path,
					      strerror(-listen_fd));
				control_path[0] = '\0';
			} else {
				vram_hook_log(VRAM_HOOK_LOG_INFO, "control socket at %s", control_path);
			}
		}
	}
	if (!daemon_path[0] && listen_fd < 0)
		return;

	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t th;
	if (pthread_create(&th, &attr, chan_main, NULL) != 0)
		vram_hook_log(VRAM_HOOK_LOG_ERROR, "Failed to start the control thread");
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void vram_hook_chan_start(void)
{
	pthread_once(&chan_once, chan_start_once);
}

void vram_hook_chan_atfork_child(void)
{
	/* The thread did not survive the fork; the sockets are the parent's. */
	if (listen_fd >= 0)
		close(listen_fd);
	listen_fd = -1;
	daemon_close();
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (clients[i].fd >= 0)
			close(clients[i].fd);
		clients[i].fd = -1;
	}
}

__attribute__((destructor)) static void chan_cleanup(void)
{
	if (control_path[0] && control_owner == getpid())
		unlink(control_path);
	/* best effort: a process killed by a signal runs no destructor, and vramd removes its file */
	vram_hook_park_exit();
}
