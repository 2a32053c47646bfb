/* SPDX-License-Identifier: MIT */
/*
 * Legacy CUDA IPC (cuIpcGetMemHandle, cuIpcOpenMemHandle, cuIpcCloseMemHandle)
 * on the hook's movable memory.
 *
 * The driver refuses cuIpcGetMemHandle on VMM memory, and every cuMemAlloc
 * allocation is VMM memory under the hook. So for an allocation of ours the
 * hook answers with a handle of its own (the 64 opaque bytes, layout below)
 * naming this process and an export id; the physical memory (created with
 * the POSIX file descriptor handle type, see alloc.c) is handed over as a
 * file descriptor when the importing process asks:
 *
 *  - every exporting process listens on the abstract Unix socket
 *    "\0vram-ipc-<uid>-<pid>" (started at its first export; a thread that
 *    answers one short request per connection);
 *  - the importer's hook connects, checks with SO_PEERCRED that the peer is
 *    the pid of the handle and of its own uid, and asks for the id; the
 *    exporter checks the importer's uid the same way and answers with the
 *    size and the descriptor (SCM_RIGHTS);
 *  - the importer imports it (cuMemImportFromShareableHandle), reserves an
 *    address range, maps it and grants its current device read-write
 *    access; cuIpcCloseMemHandle unmaps it and tells the exporter.
 *
 * An allocation opened by another process stays resident while it is open
 * (counted non-movable, so an offload reports it): moving it would leave
 * the importer on the old memory. An export request that arrives while the
 * exporter is not running (offloading, offloaded, parked) is refused and the
 * importer's cuIpcOpenMemHandle fails with CUDA_ERROR_INVALID_HANDLE.
 * Handles the driver made (memory the hook does not own) pass through.
 *
 * Lock order: ipc_lock, then vram_hook_lock.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hook/hook.h"

/* The handle's 64 bytes, little-endian as the host. */
struct ipc_handle {
	char magic[8];                 /* IPC_MAGIC */
	uint32_t pid;                  /* the exporting process */
	uint32_t uid;                  /* its user */
	uint64_t start_ticks;          /* its start time (pid reuse), clock ticks since boot */
	uint64_t id;                   /* the export, unique in the process */
	uint64_t size;                 /* bytes of the allocation */
	uint8_t zero[24];
};
_Static_assert(sizeof(struct ipc_handle) == 64, "an IPC handle is 64 bytes");
static const char IPC_MAGIC[8] = { 'V', 'R', 'A', 'M', 'I', 'P', 'C', '1' };

/*
 * OPEN: a process maps the allocation (counted); REOPEN: an importer maps it
 * again after its own restore (not counted again); CLOSE: it unmapped it
 * for good; STATE: the answer's status is the process's enum
 * vram_hook_state_e (asked by an exporter about its importers).
 */
enum { IPC_OP_OPEN = 1, IPC_OP_CLOSE = 2, IPC_OP_REOPEN = 3, IPC_OP_STATE = 4 };

struct ipc_request {
	uint32_t op;
	uint32_t zero;
	uint64_t id;
	uint64_t start_ticks;          /* the exporter's, from the handle */
};

struct ipc_answer {
	int32_t status;                /* 0 or -errno */
	uint32_t zero;
	uint64_t size;                 /* bytes */
};

#define IPC_IO_TIMEOUT_MS 5000     /* a peer that does not answer in time is dropped */
#define IPC_MAX_IMPORTS 4096       /* handles open at once in one process */
#define IPC_MAX_IMPORTERS 16       /* processes one export keeps track of; beyond, it never moves */
#define IPC_GATE_WAIT_MS 2000      /* an offload waits this long for the importers to be gated too */
#define IPC_REOPEN_WAIT_MS 60000   /* a restore waits this long for an exporter to be back */

/* The processes that have one of our exports open (IPC_OP_OPEN minus CLOSE). */
struct export_info {
	uint64_t id;
	pid_t pids[IPC_MAX_IMPORTERS];
	unsigned npids;
	bool overflow;                 /* more importers than pids holds */
	struct export_info *next;
};

/* An allocation of another process mapped here. */
struct import {
	uint32_t pid;
	uint64_t id, start_ticks;
	CUdeviceptr va;
	uint64_t size;                 /* bytes mapped */
	CUmemGenericAllocationHandle real; /* 0 while unmapped for an offload */
	int dev;                       /* the device granted access */
	unsigned refs;                 /* opens of the same handle */
	struct import *next;
};

static pthread_mutex_t ipc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct import *imports;
static unsigned nimports;
static struct vram_hook_table exports;   /* id -> struct vram_hook_phys; under vram_hook_lock */
static struct export_info *export_infos; /* under vram_hook_lock */
static uint64_t next_id = 2;             /* 0 and 1 are the table's */
static pthread_once_t server_once = PTHREAD_ONCE_INIT;
static int server_fd = -1;
static uint64_t self_ticks;

static void socket_name(struct sockaddr_un *sa, socklen_t *len, uint32_t uid, uint32_t pid)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	int n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "vram-ipc-%u-%u", uid, pid);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static int set_timeouts(int fd)
{
	struct timeval tv = { IPC_IO_TIMEOUT_MS / 1000, (IPC_IO_TIMEOUT_MS % 1000) * 1000 };
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

/* The peer's credentials; 0 or -errno. */
static int peer_cred(int fd, struct ucred *ret)
{
	socklen_t len = sizeof(*ret);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ret, &len) < 0)
		return -errno;
	return 0;
}

static int read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, (char *)buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -ECONNRESET;
		got += (size_t)r;
	}
	return 0;
}

/* Sends the answer, with fd attached when fd >= 0. */
static int send_answer(int sock, const struct ipc_answer *a, int fd)
{
	struct iovec iov = { (void *)a, sizeof(*a) };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	ssize_t r;
	do
		r = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r == (ssize_t)sizeof(*a) ? 0 : -EIO;
}

/* Receives the answer and the descriptor that may come with it (*ret_fd, -1 if none). */
static int recv_answer(int sock, struct ipc_answer *a, int *ret_fd)
{
	struct iovec iov = { a, sizeof(*a) };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	*ret_fd = -1;
	ssize_t r;
	do
		r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); r > 0 && c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(ret_fd, CMSG_DATA(c), sizeof(int));
	if (r != (ssize_t)sizeof(*a)) {
		if (*ret_fd >= 0)
			close(*ret_fd);
		*ret_fd = -1;
		return -EIO;
	}
	return 0;
}

/* ------------------------------------------------------------ exporter */

static struct export_info *info_of(uint64_t id, bool create)
{
	for (struct export_info *e = export_infos; e; e = e->next)
		if (e->id == id)
			return e;
	if (!create)
		return NULL;
	struct export_info *e = calloc(1, sizeof(*e));
	if (e) {
		e->id = id;
		e->next = export_infos;
		export_infos = e;
	}
	return e;
}

/* Called with vram_hook_lock held: pid opened (on) or closed id. */
static void note_importer(uint64_t id, pid_t pid, bool on)
{
	struct export_info *e = info_of(id, on);
	if (!e) {
		if (on)
			vram_hook_log(VRAM_HOOK_LOG_WARN, "IPC export %llu: out of memory for its importers",
				      (unsigned long long)id);
		return;
	}
	for (unsigned i = 0; i < e->npids; i++) {
		if (e->pids[i] == pid) {
			if (!on)
				e->pids[i] = e->pids[--e->npids];
			return; /* a second open of one process is one importer */
		}
	}
	if (!on)
		return;
	if (e->npids < IPC_MAX_IMPORTERS)
		e->pids[e->npids++] = pid;
	else
		e->overflow = true;
}

/* May p be handed to an importer now? Called with vram_hook_lock held. */
static bool exportable_now(const struct vram_hook_phys *p)
{
	int state = atomic_load(&vram_hook_state);
	/*
	 * Running; or restoring with p already back (an importer that is
	 * being restored too maps the new memory before either gate opens).
	 * Never while offloading: the offload lists what it moves under this
	 * lock once the state has left running, and what is shared from now
	 * on would move under the importer.
	 */
	return p->real && !p->offloaded && (state == VRAM_HOOK_RUNNING || state == VRAM_HOOK_RESTORING);
}

/*
 * vram_hook_lock, if it can be had within about a second: an offload or a
 * restore holds it while it copies, and the importer asking (whose restore
 * may be waiting on us) is better told to ask again than kept past its
 * timeout.
 */
static bool lock_briefly(void)
{
	for (int i = 0; i < 1000; i++) {
		if (pthread_mutex_trylock(&vram_hook_lock) == 0)
			return true;
		usleep(1000);
	}
	return false;
}

/* Answers one request on sock from process peer of our uid. */
static void serve_one(int sock, pid_t peer)
{
	struct ipc_request q;
	struct ipc_answer a = { 0 };
	int fd = -1;
	if (read_full(sock, &q, sizeof(q)) < 0)
		return;
	if (q.op == IPC_OP_STATE) {
		a.status = atomic_load(&vram_hook_state);
		goto out_answer;
	}
	if (q.start_ticks != self_ticks) {
		a.status = -ESRCH; /* a handle of an earlier process with this pid */
		goto out_answer;
	}
	/* A close always counts, however long it waits (the importer may stop waiting). */
	if (q.op == IPC_OP_CLOSE)
		pthread_mutex_lock(&vram_hook_lock);
	else if (!lock_briefly()) {
		a.status = -EAGAIN;
		goto out_answer;
	}
	struct vram_hook_phys *p = q.id > 1 ? vram_hook_table_get(&exports, q.id) : NULL;
	if (!p) {
		a.status = -ENOENT; /* freed */
	} else if (q.op == IPC_OP_CLOSE) {
		note_importer(q.id, peer, false);
		vram_hook_phys_share(p, false);
	} else if (q.op != IPC_OP_OPEN && q.op != IPC_OP_REOPEN) {
		a.status = -EINVAL;
	} else if (!exportable_now(p)) {
		a.status = -EAGAIN;
	} else if (VRAM_REAL(cuMemExportToShareableHandle)(&fd, p->real, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
							      0) != CUDA_SUCCESS) {
		fd = -1;
		a.status = -EOPNOTSUPP;
	} else {
		a.size = p->size;
		if (q.op == IPC_OP_OPEN) {
			note_importer(q.id, peer, true);
			vram_hook_phys_share(p, true);
		}
	}
	pthread_mutex_unlock(&vram_hook_lock);
out_answer:
	if (send_answer(sock, &a, fd) < 0 && q.op == IPC_OP_OPEN && a.status == 0) {
		/* The importer never got it: not shared after all. */
		pthread_mutex_lock(&vram_hook_lock);
		struct vram_hook_phys *p2 = vram_hook_table_get(&exports, q.id);
		if (p2) {
			note_importer(q.id, peer, false);
			vram_hook_phys_share(p2, false);
		}
		pthread_mutex_unlock(&vram_hook_lock);
	}
	if (fd >= 0)
		close(fd);
}

static void *server_main(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept4(server_fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				usleep(100000);
				continue;
			}
			vram_hook_log(VRAM_HOOK_LOG_ERROR, "IPC export socket failed: %s", strerror(errno));
			return NULL;
		}
		struct ucred cr;
		if (peer_cred(c, &cr) == 0 && cr.uid == getuid() && set_timeouts(c) == 0)
			serve_one(c, cr.pid);
		else
			vram_hook_log(VRAM_HOOK_LOG_WARN, "IPC export: refused a connection from another user");
		close(c);
	}
	return NULL;
}

static void server_start(void)
{
	if (vram_hook_self_start_ticks(&self_ticks) < 0)
		return;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	struct sockaddr_un sa;
	socklen_t len;
	socket_name(&sa, &len, (uint32_t)getuid(), (uint32_t)getpid());
	if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 64) < 0) {
		vram_hook_log(VRAM_HOOK_LOG_ERROR, "Failed to listen for IPC imports: %s", strerror(errno));
		close(fd);
		return;
	}
	server_fd = fd;
	pthread_t t;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old); /* the program's signals are not ours to take */
	if (pthread_create(&t, &attr, server_main, NULL) != 0) {
		close(fd);
		server_fd = -1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
}

void vram_hook_ipc_forget(struct vram_hook_phys *p)
{
	if (p->ipc_id) {
		vram_hook_table_del(&exports, p->ipc_id);
		for (struct export_info **pp = &export_infos; *pp; pp = &(*pp)->next) {
			if ((*pp)->id == p->ipc_id) {
				struct export_info *e = *pp;
				*pp = e->next;
				free(e);
				break;
			}
		}
	}
	p->ipc_id = 0;
}

void vram_hook_ipc_atfork_child(void)
{
	/* The listener and its thread stay with the parent; a child exports anew. */
	if (server_fd >= 0)
		close(server_fd);
	server_fd = -1;
	server_once = (pthread_once_t)PTHREAD_ONCE_INIT;
}

static CUresult ipc_export(CUipcMemHandle *ret, struct vram_hook_phys *p)
{
	pthread_once(&server_once, server_start);
	if (server_fd < 0)
		return CUDA_ERROR_OPERATING_SYSTEM;
	if (!(p->prop.requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR))
		return CUDA_ERROR_NOT_SUPPORTED; /* made before export was possible (see alloc.c) */
	if (!p->ipc_id) {
		p->ipc_id = next_id++;
		if (vram_hook_table_put(&exports, p->ipc_id, p) < 0) {
			p->ipc_id = 0;
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
	}
	struct ipc_handle h = { .pid = (uint32_t)getpid(), .uid = (uint32_t)getuid(), .start_ticks = self_ticks,
				.id = p->ipc_id, .size = p->size };
	memcpy(h.magic, IPC_MAGIC, sizeof(h.magic));
	memset(ret, 0, sizeof(*ret));
	memcpy(ret, &h, sizeof(h));
	return CUDA_SUCCESS;
}

VRAM_HOOK_EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *pHandle, CUdeviceptr dptr)
{
	GATED_BEGIN();
	CUresult r;
	pthread_mutex_lock(&vram_hook_lock);
	struct vram_hook_phys *p = pHandle && dptr ? vram_hook_alloc_lookup(dptr) : NULL;
	if (p)
		r = ipc_export(pHandle, p);
	pthread_mutex_unlock(&vram_hook_lock);
	if (!p)
		r = vram_hook_ipc_passthrough_get(pHandle, dptr);
	GATED_END(r);
}

/* ------------------------------------------------------------ importer */

static bool is_ours(const CUipcMemHandle *handle)
{
	return memcmp(handle, IPC_MAGIC, sizeof(IPC_MAGIC)) == 0;
}

/* Asks the exporter of h; for an open, *ret_fd gets the descriptor. Returns 0 or -errno. */
static int ipc_ask(const struct ipc_handle *h, uint32_t op, int *ret_fd, uint64_t *ret_size)
{
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -errno;
	int err;
	struct sockaddr_un sa;
	socklen_t len;
	socket_name(&sa, &len, h->uid, h->pid);
	if (set_timeouts(sock) < 0 || connect(sock, (struct sockaddr *)&sa, len) < 0) {
		err = -errno;
		goto out_close;
	}
	struct ucred cr;
	/* The name is not proof: check who listens on it. */
	if (peer_cred(sock, &cr) < 0 || cr.uid != getuid() || (uint32_t)cr.pid != h->pid) {
		err = -EPERM;
		goto out_close;
	}
	struct ipc_request q = { .op = op, .id = h->id, .start_ticks = h->start_ticks };
	if (write(sock, &q, sizeof(q)) != (ssize_t)sizeof(q)) {
		err = -EIO;
		goto out_close;
	}
	struct ipc_answer a;
	int fd = -1;
	err = recv_answer(sock, &a, &fd);
	if (err == 0 && a.status < 0)
		err = a.status;
	if (err == 0 && op == IPC_OP_STATE)
		err = a.status;
	if (err == 0 && (op == IPC_OP_OPEN || op == IPC_OP_REOPEN) && (fd < 0 || a.size != h->size))
		err = -EPROTO;
	if (err < 0 && fd >= 0)
		close(fd);
	if (err == 0 && ret_fd)
		*ret_fd = fd;
	else if (err == 0 && fd >= 0)
		close(fd);
	if (err == 0 && ret_size)
		*ret_size = a.size;
out_close:
	close(sock);
	return err;
}

/* Maps the memory behind fd at im->va (reserved), read-write for im->dev. */
static CUresult map_fd(int fd, struct import *im)
{
	CUresult r = VRAM_REAL(cuMemImportFromShareableHandle)(&im->real, (void *)(intptr_t)fd,
								 CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
	if (r != CUDA_SUCCESS) {
		im->real = 0;
		return r;
	}
	r = VRAM_REAL(cuMemMap)(im->va, im->size, 0, im->real, 0);
	if (r != CUDA_SUCCESS)
		goto out_release;
	CUmemAccessDesc access = { { CU_MEM_LOCATION_TYPE_DEVICE, im->dev }, CU_MEM_ACCESS_FLAGS_PROT_READWRITE };
	r = VRAM_REAL(cuMemSetAccess)(im->va, im->size, &access, 1);
	if (r == CUDA_SUCCESS)
		return r;
	VRAM_REAL(cuMemUnmap)(im->va, im->size);
out_release:
	VRAM_REAL(cuMemRelease)(im->real);
	im->real = 0;
	return r;
}

static void unmap_import(struct import *im)
{
	if (!im->real)
		return;
	VRAM_REAL(cuMemUnmap)(im->va, im->size);
	VRAM_REAL(cuMemRelease)(im->real);
	im->real = 0;
}

static CUresult map_import(const struct ipc_handle *h, int fd, struct import *im)
{
	im->dev = vram_hook_current_device();
	if (im->dev < 0)
		return CUDA_ERROR_INVALID_CONTEXT;
	im->size = h->size;
	CUresult r = VRAM_REAL(cuMemAddressReserve)(&im->va, im->size, 0, 0, 0);
	if (r != CUDA_SUCCESS)
		return r;
	r = map_fd(fd, im);
	if (r != CUDA_SUCCESS)
		VRAM_REAL(cuMemAddressFree)(im->va, im->size);
	return r;
}

static CUresult ipc_import(CUdeviceptr *pdptr, const CUipcMemHandle *handle)
{
	struct ipc_handle h;
	memcpy(&h, handle, sizeof(h));
	if (!pdptr)
		return CUDA_ERROR_INVALID_VALUE;
	/* The exporter asks an importer whether it is gated before it moves shared memory. */
	pthread_once(&server_once, server_start);
	if (server_fd < 0)
		return CUDA_ERROR_OPERATING_SYSTEM;
	pthread_mutex_lock(&ipc_lock);
	CUresult r = CUDA_SUCCESS;
	for (struct import *im = imports; im; im = im->next) {
		if (im->pid == h.pid && im->id == h.id && im->start_ticks == h.start_ticks) {
			im->refs++;
			*pdptr = im->va;
			goto out_unlock;
		}
	}
	if (nimports >= IPC_MAX_IMPORTS) {
		r = CUDA_ERROR_OUT_OF_MEMORY;
		goto out_unlock;
	}
	int fd = -1;
	int err = ipc_ask(&h, IPC_OP_OPEN, &fd, NULL);
	if (err < 0) {
		vram_hook_log(VRAM_HOOK_LOG_WARN, "Failed to open an IPC handle of pid %u: %s", h.pid,
			      strerror(-err));
		r = CUDA_ERROR_INVALID_HANDLE;
		goto out_unlock;
	}
	struct import *im = calloc(1, sizeof(*im));
	if (!im) {
		r = CUDA_ERROR_OUT_OF_MEMORY;
	} else {
		im->pid = h.pid;
		im->id = h.id;
		im->start_ticks = h.start_ticks;
		im->refs = 1;
		r = map_import(&h, fd, im);
	}
	close(fd);
	if (r != CUDA_SUCCESS) {
		free(im);
		(void)ipc_ask(&h, IPC_OP_CLOSE, NULL, NULL);
		goto out_unlock;
	}
	im->next = imports;
	imports = im;
	nimports++;
	*pdptr = im->va;
out_unlock:
	pthread_mutex_unlock(&ipc_lock);
	return r;
}

VRAM_HOOK_EXPORT CUresult cuIpcOpenMemHandle(CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int Flags)
{
	GATED_BEGIN();
	if (is_ours(&handle))
		GATED_END(ipc_import(pdptr, &handle));
	GATED_END(vram_hook_ipc_passthrough_open(VRAM_REAL(cuIpcOpenMemHandle), pdptr, handle, Flags));
}

VRAM_HOOK_EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pdptr, CUipcMemHandle handle, unsigned int Flags)
{
	GATED_BEGIN();
	if (is_ours(&handle))
		GATED_END(ipc_import(pdptr, &handle));
	GATED_END(vram_hook_ipc_passthrough_open(VRAM_REAL(cuIpcOpenMemHandle_v2), pdptr, handle, Flags));
}

VRAM_HOOK_EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr dptr)
{
	GATED_BEGIN();
	pthread_mutex_lock(&ipc_lock);
	struct import **pp = &imports, *im = NULL;
	for (; *pp; pp = &(*pp)->next) {
		if ((*pp)->va == dptr) {
			im = *pp;
			break;
		}
	}
	if (im && --im->refs == 0) {
		*pp = im->next;
		nimports--;
	} else if (im) {
		im = NULL; /* still open through another cuIpcOpenMemHandle */
		pthread_mutex_unlock(&ipc_lock);
		GATED_END(CUDA_SUCCESS);
	}
	pthread_mutex_unlock(&ipc_lock);
	if (!im)
		GATED_END(vram_hook_ipc_passthrough_close(dptr));
	/* cuIpcCloseMemHandle waits for the work that may use the mapping. */
	VRAM_CALL_REAL(cuCtxSynchronize);
	unmap_import(im);
	VRAM_REAL(cuMemAddressFree)(im->va, im->size);
	struct ipc_handle h = { .pid = im->pid, .uid = (uint32_t)getuid(), .start_ticks = im->start_ticks,
				.id = im->id };
	(void)ipc_ask(&h, IPC_OP_CLOSE, NULL, NULL); /* best effort: the exporter may be gone */
	free(im);
	GATED_END(CUDA_SUCCESS);
}

/* ------------------------------------------------------------ offload */

/* true for the states in which a process runs nothing on the device. */
static bool gated_state(int state)
{
	return state == VRAM_HOOK_OFFLOADING || state == VRAM_HOOK_OFFLOADED || state == VRAM_HOOK_PARKING ||
	       state == VRAM_HOOK_PARKED;
}

/* Asks pid (of our uid) for its state; -errno when it does not answer. */
static int state_of(pid_t pid)
{
	struct ipc_handle h = { .pid = (uint32_t)pid, .uid = (uint32_t)getuid() };
	return ipc_ask(&h, IPC_OP_STATE, NULL, NULL);
}

void vram_hook_ipc_offload_begin(void)
{
	struct shared {
		uint64_t id;
		pid_t pids[IPC_MAX_IMPORTERS];
		unsigned npids;
	} *list = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&vram_hook_lock);
	for (struct export_info *e = export_infos; e; e = e->next) {
		struct vram_hook_phys *p = vram_hook_table_get(&exports, e->id);
		if (!p || !p->ipc_pinned || e->overflow || !e->npids)
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct shared *nl = realloc(list, ncap * sizeof(*nl));
			if (!nl)
				break;
			list = nl;
			cap = ncap;
		}
		list[n].id = e->id;
		list[n].npids = e->npids;
		memcpy(list[n].pids, e->pids, e->npids * sizeof(pid_t));
		n++;
	}
	pthread_mutex_unlock(&vram_hook_lock);
	if (!n) {
		free(list);
		return;
	}

	/*
	 * Shared memory moves only when every process that maps it is gated
	 * too (the processes of one workload, offloaded together): give them
	 * a moment to get there, then leave the rest resident.
	 */
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < n; i++) {
		for (unsigned k = 0; k < list[i].npids;) {
			int st = state_of(list[i].pids[k]);
			if (st >= 0 && gated_state(st)) {
				k++;
				continue;
			}
			clock_gettime(CLOCK_MONOTONIC, &now);
			long ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
			if (st < 0 || ms >= IPC_GATE_WAIT_MS) {
				vram_hook_log(VRAM_HOOK_LOG_INFO, "IPC export %llu stays on the device: pid %d, which "
					      "has it open, is %s", (unsigned long long)list[i].id,
					      (int)list[i].pids[k], st < 0 ? "not answering" : "running");
				list[i].npids = 0; /* stays */
				break;
			}
			usleep(10000);
		}
	}

	pthread_mutex_lock(&vram_hook_lock);
	for (size_t i = 0; i < n; i++) {
		struct vram_hook_phys *p = vram_hook_table_get(&exports, list[i].id);
		if (!list[i].npids || !p || !p->ipc_pinned)
			continue;
		p->ipc_pinned = false;
		p->ipc_moving = true;
		p->movable = true;
		vram_hook_nonmovable_sub(p->dev, p->size);
	}
	pthread_mutex_unlock(&vram_hook_lock);
	free(list);
}

void vram_hook_ipc_offloaded(void)
{
	/*
	 * Nothing runs on the device now: the imported mappings go, so that
	 * an exporter that moves the memory really frees it, and the restore
	 * maps whatever memory the exporter has then.
	 */
	pthread_mutex_lock(&ipc_lock);
	for (struct import *im = imports; im; im = im->next)
		unmap_import(im);
	pthread_mutex_unlock(&ipc_lock);
}

int vram_hook_ipc_restored(char *why, size_t cap)
{
	/* Exports that moved are shared again: resident until closed. */
	pthread_mutex_lock(&vram_hook_lock);
	for (struct vram_hook_phys *p = vram_hook_phys_list; p; p = p->next) {
		if (!p->ipc_moving || p->offloaded)
			continue;
		p->ipc_moving = false;
		if (p->ipc_opens && p->movable) {
			p->ipc_pinned = true;
			p->movable = false;
			vram_hook_nonmovable_add(p->dev, p->size);
		}
	}
	pthread_mutex_unlock(&vram_hook_lock);

	/* Imports: the exporter's memory as it is now, at the same addresses. */
	int err = 0;
	pthread_mutex_lock(&ipc_lock);
	for (struct import *im = imports; im; im = im->next) {
		if (im->real)
			continue;
		struct ipc_handle h = { .pid = im->pid, .uid = (uint32_t)getuid(), .start_ticks = im->start_ticks,
					.id = im->id, .size = im->size };
		int fd = -1, r;
		struct timespec t0, now;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (;;) {
			r = ipc_ask(&h, IPC_OP_REOPEN, &fd, NULL);
			clock_gettime(CLOCK_MONOTONIC, &now);
			long ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
			if (r != -EAGAIN || ms >= IPC_REOPEN_WAIT_MS)
				break;
			usleep(5000); /* the exporter is offloaded or being restored */
		}
		if (r == 0 && map_fd(fd, im) != CUDA_SUCCESS)
			r = -EIO;
		if (fd >= 0)
			close(fd);
		if (r < 0 && !err) {
			err = r;
			vram_hook_textf(why, cap, "the memory opened from pid %u (IPC) could not be mapped again: %s",
					im->pid, r == -EAGAIN ? "its exporter was not restored in time" : strerror(-r));
		}
	}
	pthread_mutex_unlock(&ipc_lock);
	return err;
}
