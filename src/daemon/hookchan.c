/* SPDX-License-Identifier: MIT */
/*
 * The hook channel on the daemon's loop. Each connection reads into a buffer
 * of one maximum message; every complete message is decoded with the
 * protocol header's decoder, and anything it rejects closes the connection
 * (the stream cannot be resynchronized). The first message must be HELLO;
 * its pid must be the peer's (SO_PEERCRED), so one process cannot speak for
 * another. A process has at most one command in flight: the hook runs them
 * one at a time anyway.
 *
 * A process that started before the channel opened cannot have been spawned
 * by this vramd: it is a survivor of an earlier vramd (its hook reconnects
 * to the same socket when vramd comes back) or was started by hand. Such a
 * process is listed as external and left out of the workload's pids and
 * usage, so that the workload's engine never moves the memory of a process
 * that is not one of its instances; it is driven by pid instead. The start
 * time is the process's, from /proc/<pid>/stat, in clock ticks since boot.
 *
 * A connection on the shared socket from a uid other than vramd's or
 * root's is foreign: it is counted apart (so that other users cannot take
 * the connections vramd's own workloads need) and may register only for
 * what the authorize callback grants.
 */
#include "daemon/hookchan.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/list.h"
#include "common/log.h"
#include "common/proc.h"
#include "common/strutil.h"
#include "proto/hook_proto.h"

_Static_assert(VRAM_HOOKCHAN_NAME_MAX == VRAM_HOOK_PROTO_NAME_MAX, "workload names as on the wire");
_Static_assert(VRAM_HOOKCHAN_PROGRESS == VRAM_HOOK_OFFLOAD_PROGRESS && VRAM_HOOKCHAN_GRANTED == VRAM_HOOK_RESTORE_GRANTED,
	       "swap flags as on the wire");
_Static_assert(VRAM_HOOKCHAN_MAX_DEVICES == VRAM_HOOK_PROTO_MAX_DEVICES, "devices as on the wire");

struct conn;

struct proc {
	struct vram_list link; /* in hc->procs */
	pid_t pid;
	char workload[VRAM_HOOK_PROTO_NAME_MAX];
	struct conn *conn;  /* NULL once disconnected */
	unsigned state;     /* enum vram_hook_state */
	unsigned ndev;
	uint64_t used, resident, nonmovable, cap; /* bytes */
	bool limit_invalid;
	char limit_text[VRAM_HOOK_PROTO_LIMIT_TEXT_MAX]; /* printable ASCII; "" unless limit_invalid */
	bool external;      /* started before the channel opened: not spawned by this vramd */
	bool group;         /* its hook moves with a group (VRAM_HOOK_HELLO_GROUP) */
	unsigned version;   /* protocol version of its hook */
	bool host_reported; /* a USAGE of version 3 or later came: the three below are known */
	uint64_t host_pinned, host_kept, parked; /* bytes, as last reported */
	bool premade_asked; /* asked to make its host buffers ahead */
};

struct vram_hookchan_req {
	struct vram_hookchan *hc;
	struct conn *conn;
	uint32_t id;
	enum vram_hookchan_op op;
	vram_hookchan_done_cb cb;
	void *arg;
	unsigned flags;                      /* as sent: VRAM_HOOKCHAN_PROGRESS, _GRANTED */
	vram_hookchan_progress_cb progress;  /* for PROGRESS; may be NULL */
	void *progress_arg;
	struct event *timer;
	uint64_t sent_ms;
};

struct conn {
	struct vram_list link; /* in hc->conns */
	struct vram_hookchan *hc;
	int fd;
	pid_t peer;         /* from SO_PEERCRED; 0 if unknown */
	uid_t uid;          /* from SO_PEERCRED */
	bool foreign;       /* on the shared socket, of a uid not vramd's nor root's */
	uint16_t version;   /* protocol version of its HELLO, used for the answers; 0 until then */
	struct event *ev;
	struct proc *proc;  /* NULL until HELLO */
	struct vram_hookchan_req *req; /* in flight, or NULL */
	bool usage_since_send; /* a USAGE came after the command in flight was sent */
	size_t len;
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
};

struct vram_hookchan {
	struct event_base *base;
	char *path;
	int fd;
	struct event *accept_ev;
	struct vram_list conns; /* struct conn, newest first */
	size_t n_conns;     /* every connection, foreign ones included */
	size_t n_foreign;
	char *shared_path;  /* the shared socket, NULL until it listens */
	int shared_fd;
	struct event *shared_ev;
	vram_hookchan_authorize_cb authorize;
	void *authorize_arg;
	struct vram_list procs; /* struct proc, in registration order */
	size_t n_procs;
	uint32_t next_id;
	uint32_t seq;
	uint64_t opened_ticks; /* clock ticks since boot when it opened; 0 if unknown */
	pid_t *claimed;        /* owned; process groups claimed as ours (vram_hookchan_claim) */
	size_t n_claimed, claimed_cap;
};

const char *vram_hookchan_path(const struct vram_hookchan *hc)
{
	return hc->path;
}

/* ---- processes ---- */

static bool pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

static void proc_unlink(struct vram_hookchan *hc, struct proc *p)
{
	vram_list_remove(&p->link);
	hc->n_procs--;
	free(p);
}

/* Drops disconnected processes that have exited; then the oldest disconnected beyond the bound. */
static void procs_prune(struct vram_hookchan *hc)
{
	struct vram_list *pos, *tmp;
	vram_list_for_each_safe(pos, tmp, &hc->procs) {
		struct proc *p = vram_list_entry(pos, struct proc, link);
		if (!p->conn && !pid_alive(p->pid))
			proc_unlink(hc, p);
	}
	vram_list_for_each_safe(pos, tmp, &hc->procs) {
		struct proc *p = vram_list_entry(pos, struct proc, link);
		if (hc->n_procs <= VRAM_HOOKCHAN_MAX_PROCS)
			break;
		if (!p->conn)
			proc_unlink(hc, p);
	}
}

/*
 * Whether pid started before hc opened, so that this vramd cannot have
 * spawned it. An unknown start time counts as not; so does the daemon's own
 * process (it never loads the hook; tests speak for a hook from it).
 */
static bool started_before(const struct vram_hookchan *hc, pid_t pid)
{
	uint64_t start = 0;
	return hc->opened_ticks && pid != getpid() && vram_proc_start_ticks(pid, &start) == 0 &&
	       start < hc->opened_ticks;
}

static bool group_claimed(const struct vram_hookchan *hc, pid_t pid)
{
	pid_t pgid = hc->n_claimed ? getpgid(pid) : -1;
	for (size_t i = 0; pgid > 0 && i < hc->n_claimed; i++)
		if (hc->claimed[i] == pgid)
			return true;
	return false;
}

/* Whether p is external: started before the channel, in no group claimed as ours. */
static bool proc_external(const struct vram_hookchan *hc, pid_t pid)
{
	return started_before(hc, pid) && !group_claimed(hc, pid);
}

static void procs_reclassify(struct vram_hookchan *hc)
{
	vram_list_for_each_entry(p, &hc->procs, struct proc, link)
		if (p->conn)
			p->external = proc_external(hc, p->pid);
}

void vram_hookchan_claim(struct vram_hookchan *hc, pid_t pgid)
{
	if (!hc || pgid <= 0)
		return;
	for (size_t i = 0; i < hc->n_claimed; i++)
		if (hc->claimed[i] == pgid)
			return;
	if (hc->n_claimed == hc->claimed_cap) {
		size_t ncap = hc->claimed_cap ? hc->claimed_cap * 2 : 16;
		pid_t *n = ncap <= VRAM_HOOKCHAN_MAX_PROCS ? realloc(hc->claimed, ncap * sizeof(*n))
							   : NULL;
		if (!n) {
			vram_warn("hook: cannot claim process group %d as this vramd's: %zu claimed "
				  "already; its processes are listed as external", (int)pgid,
				  hc->n_claimed);
			return;
		}
		hc->claimed = n;
		hc->claimed_cap = ncap;
	}
	hc->claimed[hc->n_claimed++] = pgid;
	procs_reclassify(hc);
}

void vram_hookchan_unclaim(struct vram_hookchan *hc, pid_t pgid)
{
	for (size_t i = 0; hc && i < hc->n_claimed; i++) {
		if (hc->claimed[i] == pgid) {
			hc->claimed[i] = hc->claimed[--hc->n_claimed];
			return;
		}
	}
}

static struct proc *proc_find(struct vram_hookchan *hc, pid_t pid)
{
	vram_list_for_each_entry(p, &hc->procs, struct proc, link)
		if (p->pid == pid)
			return p;
	return NULL;
}

/* The command a channel op is sent as, and a result answers. */
static uint32_t op_msg(enum vram_hookchan_op op)
{
	switch (op) {
	case VRAM_HOOKCHAN_OFFLOAD: return VRAM_HOOK_MSG_OFFLOAD;
	case VRAM_HOOKCHAN_RESTORE: return VRAM_HOOK_MSG_RESTORE;
	case VRAM_HOOKCHAN_PARK: return VRAM_HOOK_MSG_PARK;
	case VRAM_HOOKCHAN_DROP_HOST: return VRAM_HOOK_MSG_DROP_HOST;
	case VRAM_HOOKCHAN_PREPARE_HOST: return VRAM_HOOK_MSG_PREPARE_HOST;
	}
	return 0;
}

static void proc_set_devs(struct proc *p, const struct vram_hook_proto_dev *dev, uint32_t ndev)
{
	p->ndev = ndev;
	p->used = p->resident = p->nonmovable = p->cap = 0;
	for (uint32_t i = 0; i < ndev; i++) {
		p->used += dev[i].used;
		p->resident += dev[i].resident;
		p->nonmovable += dev[i].nonmovable;
		if (dev[i].cap > p->cap)
			p->cap = dev[i].cap;
	}
}

/* ---- requests ---- */

/* Detaches req, frees it, then tells its owner. */
static void req_finish(struct vram_hookchan_req *req, struct vram_hookchan_result *res)
{
	vram_hookchan_done_cb cb = req->cb;
	void *arg = req->arg;
	if (req->conn && req->conn->req == req)
		req->conn->req = NULL;
	res->seconds = res->seconds > 0 ? res->seconds : 0;
	event_free(req->timer);
	free(req);
	if (cb)
		cb(res, arg);
}

/* A channel op's name, for messages. */
static const char *op_name(enum vram_hookchan_op op)
{
	switch (op) {
	case VRAM_HOOKCHAN_OFFLOAD: return "offload";
	case VRAM_HOOKCHAN_RESTORE: return "restore";
	case VRAM_HOOKCHAN_PARK: return "park";
	case VRAM_HOOKCHAN_DROP_HOST: return "drop of host buffers";
	case VRAM_HOOKCHAN_PREPARE_HOST: return "making of host buffers";
	}
	return "command";
}

/* Fails req with "<why> the <offload|restore|park|...>". */
static void req_fail(struct vram_hookchan_req *req, pid_t pid, int status, const char *why)
{
	struct vram_hookchan_result res = {.pid = pid, .status = status};
	snprintf(res.text, sizeof(res.text), "%s the %s", why, op_name(req->op));
	req_finish(req, &res);
}

static void on_req_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct vram_hookchan_req *req = arg;
	pid_t pid = req->conn && req->conn->proc ? req->conn->proc->pid : 0;
	req_fail(req, pid, -ETIMEDOUT, "the hook took too long to answer");
}

static int conn_send(struct conn *c, const struct vram_hook_proto_msg *m);

void vram_hookchan_cancel(struct vram_hookchan_req *req)
{
	if (!req)
		return;
	if (req->conn && req->conn->req == req && (req->flags & VRAM_HOOKCHAN_GRANTED)) {
		/* a restore waiting for room would wait for its own timeout: give it up now */
		struct vram_hook_proto_msg m;
		memset(&m, 0, sizeof(m));
		m.type = VRAM_HOOK_MSG_GRANT;
		m.seq = req->hc->seq++;
		m.u.grant.request_id = req->id;
		m.u.grant.flags = VRAM_HOOK_GRANT_CANCEL;
		(void)conn_send(req->conn, &m); /* best effort: the hook gives up on its own later */
	}
	if (req->conn && req->conn->req == req)
		req->conn->req = NULL;
	event_free(req->timer);
	free(req);
}

/* ---- connections ---- */

static void conn_close(struct conn *c, const char *why)
{
	struct vram_hookchan *hc = c->hc;
	vram_list_remove(&c->link);
	hc->n_conns--;
	hc->n_foreign -= c->foreign;
	struct vram_hookchan_req *req = c->req;
	pid_t pid = c->proc ? c->proc->pid : c->peer;
	if (c->proc) {
		c->proc->conn = NULL;
		vram_info("hook: process %d (%s) disconnected%s%s", (int)pid, c->proc->workload,
			  why ? ": " : "", why ? why : "");
	} else if (why) {
		vram_debug("hook: connection closed: %s", why);
	}
	event_free(c->ev);
	close(c->fd);
	free(c);
	if (req) {
		req->conn = NULL;
		req_fail(req, pid, -EPIPE, "the process went away during");
	}
}

/* Sends m in the version the hook spoke, so that older hooks understand it. */
static int conn_send(struct conn *c, const struct vram_hook_proto_msg *m)
{
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	struct vram_hook_proto_msg out = *m;
	out.version = c->version;
	long n = vram_hook_proto_encode(&out, buf, sizeof(buf));
	if (n < 0)
		return (int)n;
	ssize_t w = send(c->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w != n)
		return w < 0 ? -errno : -EIO;
	return 0;
}

/* Copies the hook's text of a bad limit, with anything unprintable as '?'. */
static void copy_printable(char *out, const char *in, size_t cap)
{
	size_t i = 0;
	for (; i + 1 < cap && in[i]; i++)
		out[i] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : '?';
	out[i] = '\0';
}

static int on_hello(struct conn *c, uint16_t version, const struct vram_hook_proto_hello *h)
{
	struct vram_hookchan *hc = c->hc;
	if (c->proc)
		return -EPROTO; /* a second hello */
	/*
	 * A process in a container (a pid namespace of its own) knows itself by
	 * its pid there, while the kernel gives vramd its pid here: that is the
	 * one it is listed, signalled and accounted under.
	 */
	pid_t pid = (pid_t)h->pid, inner;
	if (c->peer > 0 && pid != c->peer && vram_proc_inner_pid(c->peer, &inner) == 0 && inner == pid &&
	    inner != c->peer) {
		vram_debug("hook: process %d is pid %d in its own pid namespace", (int)c->peer, (int)pid);
		pid = c->peer;
	}
	if (pid == 0 || (c->peer > 0 && pid != c->peer)) {
		vram_warn("hook: a process said it was pid %u but is %d; closing", h->pid, (int)c->peer);
		return -EPERM;
	}
	if (c->foreign && !hc->authorize(c->uid, h->workload, hc->authorize_arg)) {
		char name[VRAM_HOOKCHAN_NAME_MAX];
		copy_printable(name, h->workload, sizeof(name));
		vram_warn("hook: process %d of uid %lu named workload \"%s\", which does not run as "
			  "that user; closing", (int)c->peer, (unsigned long)c->uid, name);
		return -EPERM;
	}
	struct proc *p = proc_find(hc, pid);
	if (p && p->conn) {
		/* the same process again: the new connection wins */
		p->conn->proc = NULL;
		conn_close(p->conn, "replaced by a new connection");
	}
	if (!p) {
		procs_prune(hc);
		p = calloc(1, sizeof(*p));
		if (!p)
			return -ENOMEM;
		vram_list_push_back(&hc->procs, &p->link);
		hc->n_procs++;
	}
	p->pid = pid;
	/* the process's VRAM_WORKLOAD, whatever it holds: it goes into JSON, which wants UTF-8 */
	vram_utf8_sanitize(p->workload, sizeof(p->workload), h->workload, strlen(h->workload));
	p->conn = c;
	p->state = VRAM_HOOK_STATE_RUNNING;
	proc_set_devs(p, h->dev, h->ndev);
	p->limit_invalid = (h->flags & VRAM_HOOK_HELLO_LIMIT_INVALID) != 0;
	p->group = (h->flags & VRAM_HOOK_HELLO_GROUP) != 0;
	copy_printable(p->limit_text, p->limit_invalid ? h->limit_text : "", sizeof(p->limit_text));
	p->external = proc_external(hc, p->pid);
	p->version = version;
	/* unknown until its first USAGE (which follows the HELLO at once) */
	p->host_reported = false;
	p->host_pinned = p->host_kept = p->parked = 0;
	c->proc = p;
	c->version = version;
	vram_info("hook: process %d registered for %s (%u device(s), protocol %u)%s", (int)p->pid,
		  p->workload[0] ? p->workload : "(no workload)", h->ndev, (unsigned)version,
		  p->external ? "; it started before this vramd, so it is external: offload and restore it by pid" : "");
	if (p->limit_invalid)
		vram_warn("hook: process %d (%s): VRAM_MEMORY_LIMIT \"%s\" did not parse; it runs without a cap",
			  (int)p->pid, p->workload, p->limit_text);
	procs_prune(hc);
	return 0;
}

/*
 * What a successful command moved, applied to the process's numbers at
 * once: whoever asked for the command reads the status as soon as it is
 * answered. A hook of protocol 3 sends a USAGE right before each RESULT,
 * and then that USAGE already says it all (usage_since_send); an older
 * hook's next USAGE comes up to a second later (it reports at most once a
 * second), so meanwhile: an offload takes bytes off the device, a restore
 * puts them back, a park moves the host copy to the file, a drop frees the
 * kept buffers. USAGE stays the source of truth and overwrites this when it
 * comes.
 */
static void proc_apply_result(struct proc *p, bool usage_since_send, const struct vram_hook_proto_result *r)
{
	if (r->status != 0 || usage_since_send)
		return;
	switch (r->op) {
	case VRAM_HOOK_MSG_OFFLOAD:
		p->resident = p->resident > r->bytes ? p->resident - r->bytes : 0;
		break;
	case VRAM_HOOK_MSG_RESTORE: {
		uint64_t room = p->used > p->resident ? p->used - p->resident : 0;
		p->resident += r->bytes < room ? r->bytes : room;
		p->parked = 0; /* a parked process's file is gone once it is back */
		break;
	}
	case VRAM_HOOK_MSG_PARK:
		p->parked = r->bytes;
		p->host_pinned = p->host_kept = 0; /* its pinned buffers are freed */
		break;
	case VRAM_HOOK_MSG_DROP_HOST:
		p->host_pinned = p->host_pinned > r->bytes ? p->host_pinned - r->bytes : 0;
		p->host_kept = 0;
		break;
	default:
		break;
	}
}

static void on_result(struct conn *c, const struct vram_hook_proto_result *r)
{
	struct vram_hookchan_req *req = c->req;
	c->proc->state = r->state;
	proc_apply_result(c->proc, c->usage_since_send, r);
	if (!req || req->id != r->request_id || r->op != op_msg(req->op)) {
		vram_debug("hook: process %d: result %u answers nothing in flight", (int)c->proc->pid,
			   r->request_id);
		return;
	}
	struct vram_hookchan_result res = {
		.pid = c->proc->pid,
		.status = r->status,
		.state = r->state,
		.bytes = r->bytes,
		.nonmovable = r->nonmovable,
		.missing = r->missing,
		.seconds = (double)r->usec / 1e6,
	};
	snprintf(res.text, sizeof(res.text), "%s", r->text);
	req_finish(req, &res);
}

/* Handles one decoded message. Returns 0, or -errno to close the connection. */
static int conn_handle(struct conn *c, const struct vram_hook_proto_msg *m)
{
	if (m->type == VRAM_HOOK_MSG_HELLO)
		return on_hello(c, m->version, &m->u.hello);
	if (!c->proc)
		return -EPROTO; /* nothing before hello */
	switch (m->type) {
	case VRAM_HOOK_MSG_USAGE:
		c->proc->state = m->u.usage.state;
		proc_set_devs(c->proc, m->u.usage.dev, m->u.usage.ndev);
		if (m->version >= VRAM_HOOK_PROTO_VERSION_PARK) {
			c->proc->host_reported = true;
			c->proc->host_pinned = m->u.usage.host_pinned;
			c->proc->host_kept = m->u.usage.host_kept;
			c->proc->parked = m->u.usage.parked;
		}
		c->usage_since_send = true;
		return 0;
	case VRAM_HOOK_MSG_RESULT:
		on_result(c, &m->u.result);
		return 0;
	case VRAM_HOOK_MSG_PROGRESS: {
		struct vram_hookchan_req *req = c->req;
		/* a late one, after its offload was answered or given up, is dropped */
		if (req && req->id == m->u.grant.request_id && req->op == VRAM_HOOKCHAN_OFFLOAD && req->progress)
			req->progress(m->u.grant.bytes, req->progress_arg);
		return 0;
	}
	default:
		return -EPROTO; /* commands go the other way */
	}
}

static void on_conn_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	ssize_t n = recv(fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c, n < 0 ? strerror(errno) : NULL);
		return;
	}
	c->len += (size_t)n;
	size_t off = 0;
	while (off < c->len) {
		struct vram_hook_proto_msg m;
		long used = vram_hook_proto_decode(c->buf + off, c->len - off, &m);
		if (used == 0)
			break;
		if (used < 0) {
			vram_warn("hook: process %d sent a malformed message; closing",
				  c->proc ? (int)c->proc->pid : (int)c->peer);
			conn_close(c, "malformed message");
			return;
		}
		off += (size_t)used;
		int r = conn_handle(c, &m);
		if (r < 0) {
			conn_close(c, strerror(-r));
			return;
		}
	}
	memmove(c->buf, c->buf + off, c->len - off);
	c->len -= off;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct vram_hookchan *hc = arg;
	int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (cfd < 0)
		return;
	struct ucred cred = { .uid = (uid_t)-1 };
	socklen_t len = sizeof(cred);
	bool known = getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
	/* on hook.sock (vramd's own, mode 0600) only vramd's user or root can be connected */
	bool foreign = fd == hc->shared_fd && !(known && (cred.uid == geteuid() || cred.uid == 0));
	if (foreign && (!known || !hc->authorize(cred.uid, NULL, hc->authorize_arg))) {
		vram_debug("hook: uid %lu has no workload that runs as it; closing its connection",
			   (unsigned long)cred.uid);
		close(cfd);
		return;
	}
	if (foreign ? hc->n_foreign >= VRAM_HOOKCHAN_MAX_SHARED_CONNS
		    : hc->n_conns - hc->n_foreign >= VRAM_HOOKCHAN_MAX_CONNS) {
		vram_warn("hook: %d processes%s connected already; refusing another",
			  foreign ? VRAM_HOOKCHAN_MAX_SHARED_CONNS : VRAM_HOOKCHAN_MAX_CONNS,
			  foreign ? " of other users" : "");
		close(cfd);
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(cfd);
		return;
	}
	if (known) {
		c->peer = cred.pid;
		c->uid = cred.uid;
	}
	c->foreign = foreign;
	c->hc = hc;
	c->fd = cfd;
	c->ev = event_new(hc->base, cfd, EV_READ | EV_PERSIST, on_conn_read, c);
	if (!c->ev || event_add(c->ev, NULL) < 0) {
		if (c->ev)
			event_free(c->ev);
		close(cfd);
		free(c);
		return;
	}
	vram_list_push_front(&hc->conns, &c->link);
	hc->n_conns++;
	hc->n_foreign += foreign;
}

/* ---- public ---- */

/*
 * A listening socket at path (an old one there is replaced) with mode,
 * accepted on the loop into hc. Sets *ret_fd and *ret_ev. Returns 0 or
 * -errno; on failure nothing is left open.
 */
static int listen_at(struct vram_hookchan *hc, const char *path, mode_t mode, int *ret_fd,
		     struct event **ret_ev)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	(void)unlink(path);
	/* created 0600, opened up only once it is ours: no window for others to connect first */
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (r < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	if (chmod(path, mode) < 0 || listen(fd, 64) < 0) {
		r = -errno;
		goto out_unlink;
	}
	struct event *ev = event_new(hc->base, fd, EV_READ | EV_PERSIST, on_accept, hc);
	if (!ev || event_add(ev, NULL) < 0) {
		if (ev)
			event_free(ev);
		r = -ENOMEM;
		goto out_unlink;
	}
	*ret_fd = fd;
	*ret_ev = ev;
	return 0;

out_unlink:
	(void)unlink(path);
	close(fd);
	return r;
}

int vram_hookchan_new(struct event_base *base, const char *path, struct vram_hookchan **ret)
{
	struct vram_hookchan *hc = calloc(1, sizeof(*hc));
	if (!hc)
		return -ENOMEM;
	hc->base = base;
	vram_list_init(&hc->conns);
	vram_list_init(&hc->procs);
	hc->fd = -1;
	hc->shared_fd = -1;
	hc->next_id = 1;
	hc->opened_ticks = vram_proc_boot_ticks_now();
	int r = -ENOMEM;
	hc->path = strdup(path);
	if (!hc->path)
		goto out_free;
	r = listen_at(hc, path, 0600, &hc->fd, &hc->accept_ev);
	if (r < 0)
		goto out_free;
	*ret = hc;
	return 0;

out_free:
	vram_hookchan_free(hc);
	return r;
}

int vram_hookchan_listen_shared(struct vram_hookchan *hc, const char *path,
				vram_hookchan_authorize_cb authorize, void *arg)
{
	if (hc->shared_path)
		return 0;
	char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	int r = listen_at(hc, path, 0666, &hc->shared_fd, &hc->shared_ev);
	if (r < 0) {
		free(copy);
		return r;
	}
	hc->shared_path = copy;
	hc->authorize = authorize;
	hc->authorize_arg = arg;
	return 0;
}

const char *vram_hookchan_shared_path(const struct vram_hookchan *hc)
{
	return hc->shared_path;
}

void vram_hookchan_free(struct vram_hookchan *hc)
{
	if (!hc)
		return;
	while (!vram_list_empty(&hc->conns)) {
		struct conn *c = vram_list_entry(vram_list_first(&hc->conns), struct conn, link);
		if (c->req) {
			c->req->cb = NULL; /* nobody is listening any more */
			c->req->conn = NULL;
			vram_hookchan_cancel(c->req);
			c->req = NULL;
		}
		if (c->proc)
			c->proc->conn = NULL;
		vram_list_remove(&c->link);
		event_free(c->ev);
		close(c->fd);
		free(c);
	}
	while (!vram_list_empty(&hc->procs)) {
		struct proc *p = vram_list_entry(vram_list_first(&hc->procs), struct proc, link);
		vram_list_remove(&p->link);
		free(p);
	}
	free(hc->claimed);
	if (hc->accept_ev)
		event_free(hc->accept_ev);
	if (hc->fd >= 0) {
		close(hc->fd);
		if (hc->path)
			(void)unlink(hc->path);
	}
	if (hc->shared_ev)
		event_free(hc->shared_ev);
	if (hc->shared_fd >= 0) {
		close(hc->shared_fd);
		(void)unlink(hc->shared_path);
	}
	free(hc->shared_path);
	free(hc->path);
	free(hc);
}

/* Whether p is one of workload's connected processes, of this vramd's (external false) or not. */
static bool proc_matches(const struct proc *p, const char *workload, bool external)
{
	return p->conn && p->external == external && strcmp(p->workload, workload) == 0;
}

static size_t collect_pids(struct vram_hookchan *hc, const char *workload, bool external, pid_t *pids,
			   size_t max)
{
	size_t n = 0;
	vram_list_for_each_entry(p, &hc->procs, struct proc, link) {
		if (!proc_matches(p, workload, external))
			continue;
		if (n < max)
			pids[n] = p->pid;
		n++;
	}
	return n;
}

size_t vram_hookchan_pids(struct vram_hookchan *hc, const char *workload, pid_t *pids, size_t max)
{
	return collect_pids(hc, workload, false, pids, max);
}

bool vram_hookchan_group(struct vram_hookchan *hc, pid_t pid)
{
	struct proc *p = proc_find(hc, pid);
	return p && p->conn && p->group;
}

size_t vram_hookchan_external_pids(struct vram_hookchan *hc, const char *workload, pid_t *pids, size_t max)
{
	return collect_pids(hc, workload, true, pids, max);
}

size_t vram_hookchan_usage(struct vram_hookchan *hc, const char *workload, uint64_t *ret_used,
			   uint64_t *ret_nonmovable)
{
	size_t n = 0;
	uint64_t used = 0, nonmovable = 0;
	vram_list_for_each_entry(p, &hc->procs, struct proc, link) {
		if (!proc_matches(p, workload, false))
			continue;
		used += p->used;
		nonmovable += p->nonmovable;
		n++;
	}
	if (ret_used)
		*ret_used = used;
	if (ret_nonmovable)
		*ret_nonmovable = nonmovable;
	return n;
}

size_t vram_hookchan_host(struct vram_hookchan *hc, const char *workload, uint64_t *pinned, uint64_t *kept,
			  uint64_t *parked)
{
	size_t n = 0;
	uint64_t sum_pinned = 0, sum_kept = 0, sum_parked = 0;
	vram_list_for_each_entry(p, &hc->procs, struct proc, link) {
		if (!proc_matches(p, workload, false) || !p->host_reported)
			continue;
		sum_pinned += p->host_pinned;
		sum_kept += p->host_kept;
		sum_parked += p->parked;
		n++;
	}
	if (pinned)
		*pinned = sum_pinned;
	if (kept)
		*kept = sum_kept;
	if (parked)
		*parked = sum_parked;
	return n;
}

int vram_hookchan_proc(struct vram_hookchan *hc, pid_t pid, struct vram_hookchan_proc_info *ret)
{
	procs_prune(hc);
	const struct proc *p = proc_find(hc, pid);
	if (!p)
		return -ENOENT;
	*ret = (struct vram_hookchan_proc_info){
		.pid = p->pid,
		.connected = p->conn != NULL,
		.state = p->state,
		.ndev = p->ndev,
		.used = p->used,
		.resident = p->resident,
		.nonmovable = p->nonmovable,
		.cap = p->cap,
		.limit_invalid = p->limit_invalid,
		.external = p->external,
		.host_pinned = p->host_pinned,
		.host_kept = p->host_kept,
		.parked = p->parked,
		.host_reported = p->host_reported,
		.version = p->version,
		.premade_asked = p->premade_asked,
	};
	snprintf(ret->workload, sizeof(ret->workload), "%s", p->workload);
	return 0;
}

bool vram_hookchan_limit_invalid(struct vram_hookchan *hc, const char *workload)
{
	vram_list_for_each_entry(p, &hc->procs, struct proc, link)
		if (p->limit_invalid && strcmp(p->workload, workload) == 0)
			return true;
	return false;
}

json_t *vram_hookchan_warning_json(struct vram_hookchan *hc, const char *workload)
{
	const struct proc *first = NULL;
	size_t more = 0;
	vram_list_for_each_entry(p, &hc->procs, const struct proc, link) {
		if (!p->limit_invalid || strcmp(p->workload, workload) != 0)
			continue;
		if (first)
			more++;
		else
			first = p;
	}
	if (!first)
		return json_null();
	char text[2 * VRAM_HOOK_PROTO_LIMIT_TEXT_MAX];
	int n = snprintf(text, sizeof(text),
			 "pid %d: VRAM_MEMORY_LIMIT \"%s\" is not a size or fraction: running without a cap",
			 (int)first->pid, first->limit_text);
	if (more && n > 0 && (size_t)n < sizeof(text))
		snprintf(text + n, sizeof(text) - (size_t)n, " (and %zu more process%s)", more,
			 more == 1 ? "" : "es");
	return json_string(text);
}

const char *vram_hookchan_state_name(unsigned state)
{
	static const char *const states[] = {"running", "offloading", "offloaded", "restoring", "parking", "parked"};
	_Static_assert(sizeof(states) / sizeof(states[0]) == VRAM_HOOK_STATE_PARKED + 1, "a name per state");
	return state < sizeof(states) / sizeof(states[0]) ? states[state] : "unknown";
}

/* One listed process; with_workload adds its workload's name. New reference, NULL on out of memory. */
static json_t *proc_json(const struct proc *p, bool with_workload)
{
	json_t *o = json_pack("{s:i,s:b,s:s,s:i,s:I,s:I,s:I,s:o,s:b,s:b}",
		"pid", (int)p->pid, "connected", p->conn != NULL,
		"state", vram_hookchan_state_name(p->state), "devices", (int)p->ndev,
		"used_bytes", (json_int_t)p->used, "resident_bytes", (json_int_t)p->resident,
		"nonmovable_bytes", (json_int_t)p->nonmovable,
		"cap_bytes", p->cap ? json_integer((json_int_t)p->cap) : json_null(),
		"limit_invalid", p->limit_invalid, "external", p->external);
	if (o) {
		/* unknown, not 0, for a hook too old to report them */
		json_object_set_new(o, "host_pinned_bytes",
				    p->host_reported ? json_integer((json_int_t)p->host_pinned) : json_null());
		json_object_set_new(o, "host_kept_bytes",
				    p->host_reported ? json_integer((json_int_t)p->host_kept) : json_null());
		json_object_set_new(o, "parked_bytes",
				    p->host_reported ? json_integer((json_int_t)p->parked) : json_null());
	}
	if (o && with_workload)
		json_object_set_new(o, "workload", json_string(p->workload));
	return o;
}

/* Listed processes of workload (every one when workload is NULL), as a JSON array. */
static json_t *procs_json(struct vram_hookchan *hc, const char *workload)
{
	procs_prune(hc);
	json_t *a = json_array();
	vram_list_for_each_entry(p, &hc->procs, struct proc, link) {
		if (!a)
			break;
		if (workload && strcmp(p->workload, workload) != 0)
			continue;
		json_array_append_new(a, proc_json(p, !workload));
	}
	return a;
}

json_t *vram_hookchan_workload_json(struct vram_hookchan *hc, const char *workload)
{
	return procs_json(hc, workload);
}

json_t *vram_hookchan_json(struct vram_hookchan *hc)
{
	return procs_json(hc, NULL);
}

int vram_hookchan_send(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op, unsigned flags,
		       vram_hookchan_done_cb cb, void *arg, struct vram_hookchan_req **ret_req)
{
	return vram_hookchan_send_path(hc, pid, op, flags, NULL, cb, arg, ret_req);
}

/* Whether path may name a park file: absolute, and short enough for the protocol's field. */
static bool park_path_ok(const char *path)
{
	return path && path[0] == '/' && strnlen(path, VRAM_HOOK_PROTO_PATH_MAX) < VRAM_HOOK_PROTO_PATH_MAX;
}

static int send_cmd(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op, unsigned flags,
		    const char *path, uint64_t limit, vram_hookchan_done_cb cb, void *arg,
		    struct vram_hookchan_req **ret_req);

int vram_hookchan_send_path(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op, unsigned flags,
			    const char *path, vram_hookchan_done_cb cb, void *arg,
			    struct vram_hookchan_req **ret_req)
{
	if (op == VRAM_HOOKCHAN_PREPARE_HOST)
		return -EINVAL; /* it takes a limit: vram_hookchan_prepare_host */
	return send_cmd(hc, pid, op, flags, path, 0, cb, arg, ret_req);
}

int vram_hookchan_prepare_host(struct vram_hookchan *hc, pid_t pid, uint64_t limit, vram_hookchan_done_cb cb,
			       void *arg)
{
	return send_cmd(hc, pid, VRAM_HOOKCHAN_PREPARE_HOST, 0, NULL, limit, cb, arg, NULL);
}

static int send_cmd(struct vram_hookchan *hc, pid_t pid, enum vram_hookchan_op op, unsigned flags,
		    const char *path, uint64_t limit, vram_hookchan_done_cb cb, void *arg,
		    struct vram_hookchan_req **ret_req)
{
	if (!op_msg(op) || (op == VRAM_HOOKCHAN_PARK ? !park_path_ok(path) : path != NULL))
		return -EINVAL;
	struct proc *p = proc_find(hc, pid);
	if (!p || !p->conn)
		return -ENOENT;
	struct conn *c = p->conn;
	if ((op == VRAM_HOOKCHAN_PARK || op == VRAM_HOOKCHAN_DROP_HOST) && c->version < VRAM_HOOK_PROTO_VERSION_PARK)
		return -EOPNOTSUPP; /* the hook predates the disk tier */
	if (((flags & (VRAM_HOOKCHAN_PROGRESS | VRAM_HOOKCHAN_GRANTED)) || op == VRAM_HOOKCHAN_PREPARE_HOST) &&
	    c->version < VRAM_HOOK_PROTO_VERSION_GRANT)
		return -EOPNOTSUPP; /* the hook predates overlapped swaps and buffers made ahead */
	if ((flags & VRAM_HOOKCHAN_PROGRESS) && op != VRAM_HOOKCHAN_OFFLOAD)
		return -EINVAL;
	if ((flags & VRAM_HOOKCHAN_GRANTED) && op != VRAM_HOOKCHAN_RESTORE)
		return -EINVAL;
	if (c->req)
		return -EBUSY;
	struct vram_hookchan_req *req = calloc(1, sizeof(*req));
	if (!req)
		return -ENOMEM;
	req->timer = evtimer_new(hc->base, on_req_timeout, req);
	if (!req->timer) {
		free(req);
		return -ENOMEM;
	}
	req->hc = hc;
	req->conn = c;
	req->id = hc->next_id++;
	if (hc->next_id == 0)
		hc->next_id = 1;
	req->op = op;
	req->cb = cb;
	req->arg = arg;
	req->flags = flags;

	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = (uint16_t)op_msg(op);
	m.seq = hc->seq++;
	m.u.command.request_id = req->id;
	m.u.command.flags = flags;
	if (path)
		snprintf(m.u.command.path, sizeof(m.u.command.path), "%s", path);
	m.u.command.limit = limit;
	int r = conn_send(c, &m);
	if (r < 0) {
		event_free(req->timer);
		free(req);
		conn_close(c, "could not send a command");
		return r;
	}
	struct timeval tv = {.tv_sec = VRAM_HOOKCHAN_TIMEOUT_MS / 1000};
	evtimer_add(req->timer, &tv);
	c->req = req;
	c->usage_since_send = false;
	if (ret_req)
		*ret_req = req;
	return 0;
}

void vram_hookchan_on_progress(struct vram_hookchan_req *req, vram_hookchan_progress_cb progress, void *arg)
{
	if (!req)
		return;
	req->progress = progress;
	req->progress_arg = arg;
}

int vram_hookchan_grant(struct vram_hookchan_req *req, const uint64_t bytes[VRAM_HOOKCHAN_MAX_DEVICES], bool cancel)
{
	if (!req || !req->conn || req->conn->req != req || !(req->flags & VRAM_HOOKCHAN_GRANTED))
		return -EALREADY;
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_GRANT;
	m.seq = req->hc->seq++;
	m.u.grant.request_id = req->id;
	m.u.grant.flags = cancel ? VRAM_HOOK_GRANT_CANCEL : 0;
	for (int i = 0; i < VRAM_HOOKCHAN_MAX_DEVICES && i < VRAM_HOOK_PROTO_MAX_DEVICES; i++)
		m.u.grant.bytes[i] = bytes ? bytes[i] : 0;
	struct conn *c = req->conn;
	int r = conn_send(c, &m);
	if (r < 0)
		conn_close(c, "could not send a grant"); /* fails req too */
	return r;
}

bool vram_hookchan_can_swap(struct vram_hookchan *hc, pid_t pid)
{
	struct proc *p = proc_find(hc, pid);
	return p && p->conn && p->conn->version >= VRAM_HOOK_PROTO_VERSION_GRANT;
}

void vram_hookchan_mark_premade(struct vram_hookchan *hc, pid_t pid)
{
	struct proc *p = proc_find(hc, pid);
	if (p)
		p->premade_asked = true;
}
