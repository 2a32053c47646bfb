/* SPDX-License-Identifier: MIT */
/*
 * The daemon side of the hook channel over a real Unix socket: registration,
 * usage, a command and its result, several processes of one workload,
 * a process gone mid-offload, a hook of the previous protocol version, the
 * warning for an unparsable VRAM_MEMORY_LIMIT, a process from before the
 * channel opened (external), the disk tier's commands (PARK with its path,
 * DROP_HOST) and host numbers, refused to hooks too old for them, and bad
 * input (garbage, a wrong length, a
 * pid that is not the peer's, a command sent by the hook) closing only the
 * offending connection; the shared socket for other users' processes.
 */
#include <errno.h>
#include <setjmp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "daemon/hookchan.h"
#include "proto/hook_proto.h"

struct fixture {
	struct event_base *base;
	struct vram_hookchan *hc;
	char dir[64];
	char path[128];
};

struct got {
	int calls;
	struct vram_hookchan_result res;
};

static void on_done(const struct vram_hookchan_result *res, void *arg)
{
	struct got *g = arg;
	g->calls++;
	g->res = *res;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/hookchan-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/hook.sock", f->dir);
	f->base = event_base_new();
	assert_non_null(f->base);
	assert_int_equal(vram_hookchan_new(f->base, f->path, &f->hc), 0);
	signal(SIGPIPE, SIG_IGN);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	vram_hookchan_free(f->hc);
	assert_int_equal(access(f->path, F_OK), -1); /* the socket file is gone */
	event_base_free(f->base);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void spin(struct fixture *f)
{
	for (int i = 0; i < 20; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		usleep(2000);
	}
}

static int dial(struct fixture *f)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	assert_true(strlen(f->path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void send_msg(int fd, const struct vram_hook_proto_msg *m)
{
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	long n = vram_hook_proto_encode(m, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(write(fd, buf, (size_t)n), n);
}

static void hello_msg(struct vram_hook_proto_msg *m, pid_t pid, const char *workload, uint64_t used)
{
	memset(m, 0, sizeof(*m));
	m->type = VRAM_HOOK_MSG_HELLO;
	m->u.hello.pid = (uint32_t)pid;
	m->u.hello.ndev = 1;
	snprintf(m->u.hello.workload, sizeof(m->u.hello.workload), "%s", workload);
	m->u.hello.dev[0].used = used;
	m->u.hello.dev[0].resident = used;
	m->u.hello.dev[0].nonmovable = 1 << 20;
	m->u.hello.dev[0].cap = 8ull << 30;
}

static void hello(int fd, pid_t pid, const char *workload, uint64_t used)
{
	struct vram_hook_proto_msg m;
	hello_msg(&m, pid, workload, used);
	send_msg(fd, &m);
}

/* Reads one message from the daemon. */
static void recv_msg(int fd, struct vram_hook_proto_msg *m)
{
	uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		assert_true(n > 0);
		len += (size_t)n;
		long used = vram_hook_proto_decode(buf, len, m);
		assert_true(used >= 0);
		if (used > 0)
			return;
	}
}

static bool closed_by_daemon(int fd)
{
	char c;
	return read(fd, &c, 1) == 0;
}

static void test_register_usage_and_command(void **state)
{
	struct fixture *f = *state;
	int fd = dial(f);
	hello(fd, getpid(), "llm", 3ull << 30);
	spin(f);
	pid_t pids[4];
	assert_int_equal(vram_hookchan_pids(f->hc, "llm", pids, 4), 1);
	assert_int_equal(pids[0], getpid());
	assert_int_equal(vram_hookchan_pids(f->hc, "other", pids, 4), 0);
	uint64_t used, nonmovable;
	assert_int_equal(vram_hookchan_usage(f->hc, "llm", &used, &nonmovable), 1);
	assert_int_equal(used, 3ull << 30);
	assert_int_equal(nonmovable, 1 << 20);

	/* usage replaces the numbers */
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_USAGE;
	m.u.usage.ndev = 1;
	m.u.usage.dev[0].used = 5ull << 30;
	send_msg(fd, &m);
	spin(f);
	vram_hookchan_usage(f->hc, "llm", &used, NULL);
	assert_int_equal(used, 5ull << 30);

	/* a command reaches the hook; its result reaches the callback */
	struct got g = {0};
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_OFFLOAD, VRAM_HOOK_OFFLOAD_DROP_HOST,
					    on_done, &g, NULL), 0);
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_RESTORE, 0, on_done, &g, NULL),
			 -EBUSY);
	struct vram_hook_proto_msg cmd;
	recv_msg(fd, &cmd);
	assert_int_equal(cmd.type, VRAM_HOOK_MSG_OFFLOAD);
	assert_int_equal(cmd.u.command.flags, VRAM_HOOK_OFFLOAD_DROP_HOST);

	/* a result for another request is ignored */
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_RESULT;
	m.u.result.request_id = cmd.u.command.request_id + 100;
	m.u.result.op = VRAM_HOOK_MSG_OFFLOAD;
	send_msg(fd, &m);
	spin(f);
	assert_int_equal(g.calls, 0);

	m.u.result.request_id = cmd.u.command.request_id;
	m.u.result.state = VRAM_HOOK_STATE_OFFLOADED;
	m.u.result.bytes = 4ull << 30;
	m.u.result.nonmovable = 1 << 20;
	m.u.result.usec = 80000;
	snprintf(m.u.result.text, sizeof(m.u.result.text), "offloaded");
	send_msg(fd, &m);
	spin(f);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.res.status, 0);
	assert_int_equal(g.res.pid, getpid());
	assert_int_equal(g.res.bytes, 4ull << 30);
	assert_true(g.res.seconds > 0.07 && g.res.seconds < 0.09);
	assert_string_equal(g.res.text, "offloaded");

	json_t *j = vram_hookchan_workload_json(f->hc, "llm");
	assert_int_equal(json_array_size(j), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "state")), "offloaded");
	assert_true(json_is_true(json_object_get(json_array_get(j, 0), "connected")));
	json_decref(j);

	/* unknown pid */
	assert_int_equal(vram_hookchan_send(f->hc, 1, VRAM_HOOKCHAN_RESTORE, 0, on_done, &g, NULL), -ENOENT);
	close(fd);
	spin(f);
	assert_int_equal(vram_hookchan_pids(f->hc, "llm", pids, 4), 0);
	/* still listed, disconnected, while the process lives */
	j = vram_hookchan_workload_json(f->hc, "llm");
	assert_int_equal(json_array_size(j), 1);
	assert_true(json_is_false(json_object_get(json_array_get(j, 0), "connected")));
	json_decref(j);
}

/* What the status says when the callback runs, that is, when the action's reply goes out. */
struct seen {
	struct vram_hookchan *hc;
	int calls;
	int status;
	struct vram_hookchan_proc_info info;
};

static void on_done_look(const struct vram_hookchan_result *res, void *arg)
{
	struct seen *s = arg;
	s->calls++;
	s->status = res->status;
	assert_int_equal(vram_hookchan_proc(s->hc, res->pid, &s->info), 0);
}

/* Sends op to the process and answers it as the hook would, without a USAGE after it. */
static void command_and_result(struct fixture *f, int fd, struct seen *s, enum vram_hookchan_op op,
			       int status, uint64_t bytes, unsigned state)
{
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), op, 0, on_done_look, s, NULL), 0);
	struct vram_hook_proto_msg cmd, m;
	recv_msg(fd, &cmd);
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_RESULT;
	m.u.result.request_id = cmd.u.command.request_id;
	m.u.result.op = cmd.type;
	m.u.result.status = status;
	m.u.result.state = state;
	m.u.result.bytes = bytes;
	send_msg(fd, &m);
	spin(f);
}

/*
 * The hook reports usage at most once a second, so a status read right
 * after an offload or restore showed the old resident bytes for up to a
 * second (test_hook_reconnect.py saw 64 MiB where 128 MiB was back). The
 * result's bytes apply at once, before the caller hears of the result.
 */
static void test_result_moves_resident_bytes(void **state)
{
	struct fixture *f = *state;
	const uint64_t MiB = 1 << 20;
	int fd = dial(f);
	hello(fd, getpid(), "llm", 128 * MiB);
	spin(f);
	struct seen s = { .hc = f->hc };

	command_and_result(f, fd, &s, VRAM_HOOKCHAN_OFFLOAD, 0, 64 * MiB, VRAM_HOOK_STATE_OFFLOADED);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.info.state, VRAM_HOOK_STATE_OFFLOADED);
	assert_int_equal(s.info.resident, 64 * MiB);
	assert_int_equal(s.info.used, 128 * MiB);

	/* a refused command moved nothing */
	command_and_result(f, fd, &s, VRAM_HOOKCHAN_OFFLOAD, -EALREADY, 0, VRAM_HOOK_STATE_OFFLOADED);
	assert_int_equal(s.calls, 2);
	assert_int_equal(s.info.resident, 64 * MiB);

	command_and_result(f, fd, &s, VRAM_HOOKCHAN_RESTORE, 0, 64 * MiB, VRAM_HOOK_STATE_RUNNING);
	assert_int_equal(s.calls, 3);
	assert_int_equal(s.info.state, VRAM_HOOK_STATE_RUNNING);
	assert_int_equal(s.info.resident, 128 * MiB);

	/* never below 0 nor above what the process uses */
	command_and_result(f, fd, &s, VRAM_HOOKCHAN_OFFLOAD, 0, 512 * MiB, VRAM_HOOK_STATE_OFFLOADED);
	assert_int_equal(s.info.resident, 0);
	command_and_result(f, fd, &s, VRAM_HOOKCHAN_RESTORE, 0, 512 * MiB, VRAM_HOOK_STATE_RUNNING);
	assert_int_equal(s.info.resident, 128 * MiB);

	/* the hook's next USAGE is the truth again */
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_USAGE;
	m.u.usage.ndev = 1;
	m.u.usage.dev[0].used = 128 * MiB;
	m.u.usage.dev[0].resident = 100 * MiB;
	send_msg(fd, &m);
	spin(f);
	struct vram_hookchan_proc_info info;
	assert_int_equal(vram_hookchan_proc(f->hc, getpid(), &info), 0);
	assert_int_equal(info.resident, 100 * MiB);
	close(fd);
	spin(f);
}

static void test_gone_mid_offload(void **state)
{
	struct fixture *f = *state;
	int fd = dial(f);
	hello(fd, getpid(), "tts", 1 << 30);
	spin(f);
	struct got g = {0};
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_OFFLOAD, 0, on_done, &g, NULL), 0);
	close(fd);
	spin(f);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.res.status, -EPIPE);
	assert_non_null(strstr(g.res.text, "went away"));

	/* it comes back: registered again; a cancelled request never calls back */
	fd = dial(f);
	hello(fd, getpid(), "tts", 1 << 30);
	spin(f);
	struct vram_hookchan_req *req;
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_RESTORE, 0, on_done, &g, &req), 0);
	vram_hookchan_cancel(req);
	close(fd);
	spin(f);
	assert_int_equal(g.calls, 1);
}

/* A process's VRAM_WORKLOAD that is not UTF-8 is listed, repaired, rather than lost from JSON. */
static void test_workload_name_not_utf8(void **state)
{
	struct fixture *f = *state;
	int fd = dial(f);
	hello(fd, getpid(), "ab\xff", 1 << 20);
	spin(f);
	json_t *all = vram_hookchan_json(f->hc);
	assert_int_equal(json_array_size(all), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "workload")),
			    "ab\xef\xbf\xbd");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(all, 0), "pid")), getpid());
	json_decref(all);
	close(fd);
	spin(f);
}

static void test_several_processes(void **state)
{
	struct fixture *f = *state;
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t kids[3];
	for (int i = 0; i < 3; i++) {
		kids[i] = fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0) {
			close(go[1]);
			int fd = dial(f);
			hello(fd, getpid(), "rerank", (uint64_t)(i + 1) << 30);
			char c;
			(void)!read(go[0], &c, 1); /* until the parent is done */
			_exit(0);
		}
	}
	close(go[0]);
	for (int t = 0; t < 200 && vram_hookchan_pids(f->hc, "rerank", NULL, 0) < 3; t++)
		spin(f);
	pid_t pids[8];
	assert_int_equal(vram_hookchan_pids(f->hc, "rerank", pids, 8), 3);
	uint64_t used;
	assert_int_equal(vram_hookchan_usage(f->hc, "rerank", &used, NULL), 3);
	assert_int_equal(used, 6ull << 30);
	close(go[1]);
	for (int i = 0; i < 3; i++)
		waitpid(kids[i], NULL, 0);
	spin(f);
	assert_int_equal(vram_hookchan_pids(f->hc, "rerank", pids, 8), 0);
	json_t *j = vram_hookchan_workload_json(f->hc, "rerank"); /* exited: no longer listed */
	assert_int_equal(json_array_size(j), 0);
	json_decref(j);
}

/* A hello flagged with an unparsable VRAM_MEMORY_LIMIT becomes the workload's warning. */
static void test_limit_invalid_warning(void **state)
{
	struct fixture *f = *state;
	int good = dial(f);
	hello(good, getpid(), "llm", 1 << 30);
	spin(f);
	json_t *w = vram_hookchan_warning_json(f->hc, "llm");
	assert_true(json_is_null(w));
	json_decref(w);
	assert_false(vram_hookchan_limit_invalid(f->hc, "llm"));
	close(good);
	spin(f);

	/* the same process reconnects with a bad limit (and a control character in it) */
	int fd = dial(f);
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_HELLO;
	m.u.hello.pid = (uint32_t)getpid();
	m.u.hello.ndev = 1;
	snprintf(m.u.hello.workload, sizeof(m.u.hello.workload), "llm");
	m.u.hello.flags = VRAM_HOOK_HELLO_LIMIT_INVALID;
	snprintf(m.u.hello.limit_text, sizeof(m.u.hello.limit_text), "lots\n");
	send_msg(fd, &m);
	spin(f);
	assert_true(vram_hookchan_limit_invalid(f->hc, "llm"));
	w = vram_hookchan_warning_json(f->hc, "llm");
	char want[160];
	snprintf(want, sizeof(want),
		 "pid %d: VRAM_MEMORY_LIMIT \"lots?\" is not a size or fraction: running without a cap",
		 (int)getpid());
	assert_string_equal(json_string_value(w), want);
	json_decref(w);
	json_t *procs = vram_hookchan_workload_json(f->hc, "llm");
	assert_true(json_is_true(json_object_get(json_array_get(procs, 0), "limit_invalid")));
	json_decref(procs);
	/* other workloads are not warned */
	w = vram_hookchan_warning_json(f->hc, "other");
	assert_true(json_is_null(w));
	json_decref(w);
	close(fd);
	spin(f);
}

/* A version-1 hook registers and gets its commands in version 1. */
static void test_version_1_hook(void **state)
{
	struct fixture *f = *state;
	int fd = dial(f);
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.version = 1;
	m.type = VRAM_HOOK_MSG_HELLO;
	m.u.hello.pid = (uint32_t)getpid();
	m.u.hello.ndev = 1;
	snprintf(m.u.hello.workload, sizeof(m.u.hello.workload), "old");
	m.u.hello.dev[0].used = 2ull << 30;
	send_msg(fd, &m);
	spin(f);
	assert_int_equal(vram_hookchan_pids(f->hc, "old", NULL, 0), 1);
	json_t *w = vram_hookchan_warning_json(f->hc, "old");
	assert_true(json_is_null(w));
	json_decref(w);

	struct got g = {0};
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_OFFLOAD, 0, on_done, &g, NULL), 0);
	struct vram_hook_proto_msg cmd;
	recv_msg(fd, &cmd);
	assert_int_equal(cmd.version, 1);
	assert_int_equal(cmd.type, VRAM_HOOK_MSG_OFFLOAD);
	memset(&m, 0, sizeof(m));
	m.version = 1;
	m.type = VRAM_HOOK_MSG_RESULT;
	m.u.result.request_id = cmd.u.command.request_id;
	m.u.result.op = VRAM_HOOK_MSG_OFFLOAD;
	m.u.result.state = VRAM_HOOK_STATE_OFFLOADED;
	m.u.result.bytes = 1ull << 30;
	send_msg(fd, &m);
	spin(f);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.res.status, 0);
	assert_int_equal(g.res.bytes, 1ull << 30);
	close(fd);
	spin(f);
}

static void test_bad_input(void **state)
{
	struct fixture *f = *state;
	/* garbage */
	int fd = dial(f);
	assert_int_equal(write(fd, "GET / HTTP/1.1\r\n\r\n", 18), 18);
	spin(f);
	assert_true(closed_by_daemon(fd));
	close(fd);

	/* a header announcing an oversized payload */
	fd = dial(f);
	uint8_t hdr[VRAM_HOOK_PROTO_HEADER_SIZE] = {0};
	vram_hook_proto_put32(hdr, VRAM_HOOK_PROTO_MAGIC);
	hdr[4] = VRAM_HOOK_PROTO_VERSION;
	hdr[6] = VRAM_HOOK_MSG_HELLO;
	vram_hook_proto_put32(hdr + 8, 1u << 30);
	assert_int_equal(write(fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
	spin(f);
	assert_true(closed_by_daemon(fd));
	close(fd);

	/* usage before hello */
	fd = dial(f);
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_USAGE;
	send_msg(fd, &m);
	spin(f);
	assert_true(closed_by_daemon(fd));
	close(fd);

	/* a pid that is not the peer's */
	fd = dial(f);
	hello(fd, getpid() + 1, "spoof", 1);
	spin(f);
	assert_true(closed_by_daemon(fd));
	close(fd);
	assert_int_equal(vram_hookchan_pids(f->hc, "spoof", NULL, 0), 0);

	/* a command from the hook's side, after a good hello */
	fd = dial(f);
	hello(fd, getpid(), "ok", 1);
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_OFFLOAD;
	send_msg(fd, &m);
	spin(f);
	assert_true(closed_by_daemon(fd));
	close(fd);

	/* a second hello on one connection */
	fd = dial(f);
	hello(fd, getpid(), "ok", 1);
	hello(fd, getpid(), "ok", 1);
	spin(f);
	assert_true(closed_by_daemon(fd));
	close(fd);

	/* the channel still serves a good process */
	fd = dial(f);
	hello(fd, getpid(), "fine", 1);
	spin(f);
	assert_int_equal(vram_hookchan_pids(f->hc, "fine", NULL, 0), 1);
	close(fd);
	spin(f);
}

/*
 * A process that started before the channel opened (a survivor of a killed
 * vramd, whose hook reconnects to the new one) is listed as external and
 * found by pid, but it is not one of its workload's processes.
 */
static void test_external_process(void **state)
{
	struct fixture *f = *state;
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		close(go[1]);
		char c;
		(void)!read(go[0], &c, 1); /* once the channel is open again */
		int fd = dial(f);
		hello(fd, getpid(), "llm", 2ull << 30);
		(void)!read(go[0], &c, 1); /* until the parent is done */
		_exit(0);
	}
	close(go[0]);
	/* the channel reopens after the process started, as a restarted vramd's does */
	usleep(50000); /* several clock ticks */
	vram_hookchan_free(f->hc);
	assert_int_equal(vram_hookchan_new(f->base, f->path, &f->hc), 0);
	assert_int_equal(write(go[1], "x", 1), 1);
	for (int t = 0; t < 200 && vram_hookchan_external_pids(f->hc, "llm", NULL, 0) == 0; t++)
		spin(f);
	pid_t pids[4];
	assert_int_equal(vram_hookchan_external_pids(f->hc, "llm", pids, 4), 1);
	assert_int_equal(pids[0], kid);
	assert_int_equal(vram_hookchan_pids(f->hc, "llm", pids, 4), 0);
	assert_int_equal(vram_hookchan_usage(f->hc, "llm", NULL, NULL), 0);

	struct vram_hookchan_proc_info info;
	assert_int_equal(vram_hookchan_proc(f->hc, kid, &info), 0);
	assert_true(info.external && info.connected);
	assert_string_equal(info.workload, "llm");
	assert_int_equal(info.used, 2ull << 30);
	assert_int_equal(vram_hookchan_proc(f->hc, kid + 100000, &info), -ENOENT);

	json_t *j = vram_hookchan_workload_json(f->hc, "llm");
	assert_int_equal(json_array_size(j), 1);
	assert_true(json_is_true(json_object_get(json_array_get(j, 0), "external")));
	json_decref(j);
	j = vram_hookchan_json(f->hc);
	assert_int_equal(json_array_size(j), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(j, 0), "workload")), "llm");
	json_decref(j);

	/* a process of the workload started after the channel opened is its own */
	int fd = dial(f);
	hello(fd, getpid(), "llm", 1 << 30);
	spin(f);
	assert_int_equal(vram_hookchan_pids(f->hc, "llm", pids, 4), 1);
	assert_int_equal(pids[0], getpid());
	assert_int_equal(vram_hookchan_external_pids(f->hc, "llm", NULL, 0), 1);
	uint64_t used;
	assert_int_equal(vram_hookchan_usage(f->hc, "llm", &used, NULL), 1);
	assert_int_equal(used, 1 << 30);
	assert_int_equal(vram_hookchan_proc(f->hc, getpid(), &info), 0);
	assert_false(info.external);
	close(fd);
	close(go[1]);
	waitpid(kid, NULL, 0);
	spin(f);
}

/* Grants uid 65534 its workload "mine" only. */
static bool authorize_nobody(uid_t uid, const char *workload, void *arg)
{
	int *calls = arg;
	(*calls)++;
	return uid == 65534 && (!workload || strcmp(workload, "mine") == 0);
}

/*
 * Forks a process that, as uid and gid, connects n times to path (a HELLO
 * for workload on the first connection unless workload is NULL), then waits
 * for a byte on *ret_go and exits with how many of its connections the
 * daemon had closed, or 255 when it could not connect.
 */
static pid_t foreign_process(const char *path, uid_t uid, const char *workload, int n, int *ret_go)
{
	int go[2];
	assert_int_equal(pipe(go), 0);
	pid_t kid = fork();
	assert_true(kid >= 0);
	if (kid > 0) {
		close(go[0]);
		*ret_go = go[1];
		return kid;
	}
	close(go[1]);
	if (setgid(uid) < 0 || setuid(uid) < 0)
		_exit(254);
	int fds[VRAM_HOOKCHAN_MAX_SHARED_CONNS + 8];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path) + 1);
	for (int i = 0; i < n; i++) {
		fds[i] = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0)
			_exit(255);
	}
	if (workload) {
		/*
		 * Not hello(): no cmocka assertion may fail in the child. The daemon
		 * may have closed the connection already (a refused uid), so the
		 * write may fail, which the count of closed connections tells.
		 */
		struct vram_hook_proto_msg m;
		hello_msg(&m, getpid(), workload, 1 << 20);
		uint8_t buf[VRAM_HOOK_PROTO_MAX_MESSAGE];
		long len = vram_hook_proto_encode(&m, buf, sizeof(buf));
		if (len > 0)
			(void)!write(fds[0], buf, (size_t)len);
	}
	char c;
	(void)!read(go[0], &c, 1);
	int closed = 0;
	for (int i = 0; i < n; i++) {
		struct pollfd pfd = {.fd = fds[i], .events = POLLIN};
		closed += poll(&pfd, 1, 20) == 1 && read(fds[i], &c, 1) <= 0; /* EOF or reset */
	}
	_exit(closed);
}

/* Lets the child go on and returns its exit status. */
static int finish(struct fixture *f, pid_t kid, int go)
{
	assert_int_equal(write(go, "x", 1), 1);
	close(go);
	int st = 0;
	while (waitpid(kid, &st, WNOHANG) == 0)
		spin(f);
	assert_true(WIFEXITED(st));
	return WEXITSTATUS(st);
}

/*
 * The shared socket: another user's process reaches it where hook.sock is
 * out of its reach, registers for its own workload only, is closed for any
 * other (a configured workload's name) and when its uid has nothing to
 * register for, and the connections of other users are bounded apart from
 * those of vramd's own processes.
 */
static void test_shared_socket_other_users(void **state)
{
	struct fixture *f = *state;
	if (geteuid() != 0)
		skip(); /* processes of other users need root to make */
	char shared[160];
	snprintf(shared, sizeof(shared), "%s/shared.sock", f->dir);
	int calls = 0;
	assert_int_equal(vram_hookchan_listen_shared(f->hc, shared, authorize_nobody, &calls), 0);
	assert_string_equal(vram_hookchan_shared_path(f->hc), shared);
	assert_int_equal(vram_hookchan_listen_shared(f->hc, "/elsewhere", authorize_nobody, &calls), 0);
	assert_string_equal(vram_hookchan_shared_path(f->hc), shared);
	assert_int_equal(chmod(f->dir, 0755), 0); /* as the directory of a control socket others use */
	int go;

	/* hook.sock stays vramd's alone */
	pid_t kid = foreign_process(f->path, 65534, NULL, 1, &go);
	assert_int_equal(finish(f, kid, go), 255);

	kid = foreign_process(shared, 65534, "mine", 1, &go);
	pid_t pids[4];
	for (int t = 0; t < 200 && vram_hookchan_pids(f->hc, "mine", pids, 4) == 0; t++)
		spin(f);
	assert_int_equal(vram_hookchan_pids(f->hc, "mine", pids, 4), 1);
	assert_int_equal(pids[0], kid);
	assert_int_equal(finish(f, kid, go), 0);

	/* another workload's name: refused, and the connection closed */
	kid = foreign_process(shared, 65534, "llm", 1, &go);
	for (int t = 0; t < 10; t++)
		spin(f);
	assert_int_equal(vram_hookchan_pids(f->hc, "llm", pids, 4), 0);
	assert_int_equal(finish(f, kid, go), 1);

	/* a uid with nothing to register for is closed at once */
	kid = foreign_process(shared, 65533, "mine", 1, &go);
	for (int t = 0; t < 10; t++)
		spin(f);
	assert_int_equal(finish(f, kid, go), 1);
	assert_int_equal(vram_hookchan_pids(f->hc, "mine", pids, 4), 0);

	/* other users get their share; vramd's own processes are not refused for it */
	kid = foreign_process(shared, 65534, NULL, VRAM_HOOKCHAN_MAX_SHARED_CONNS + 5, &go);
	for (int t = 0; t < 20; t++)
		spin(f);
	int fd = dial(f);
	hello(fd, getpid(), "llm", 1 << 20);
	spin(f);
	assert_int_equal(vram_hookchan_pids(f->hc, "llm", pids, 4), 1);
	assert_int_equal(finish(f, kid, go), 5);
	close(fd);
	spin(f);
	vram_hookchan_free(f->hc);
	f->hc = NULL;
	assert_int_equal(access(shared, F_OK), -1); /* removed with the channel */
	assert_int_equal(vram_hookchan_new(f->base, f->path, &f->hc), 0);
}


/* A USAGE of version 3 as the hook sends it, with its host numbers. */
static void usage_v3(int fd, unsigned state, uint64_t used, uint64_t resident, uint64_t pinned, uint64_t kept,
		     uint64_t parked)
{
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_USAGE;
	m.u.usage.state = state;
	m.u.usage.ndev = 1;
	m.u.usage.dev[0].used = used;
	m.u.usage.dev[0].resident = resident;
	m.u.usage.host_pinned = pinned;
	m.u.usage.host_kept = kept;
	m.u.usage.parked = parked;
	send_msg(fd, &m);
}

static void result_msg(int fd, const struct vram_hook_proto_msg *cmd, int status, unsigned state, uint64_t bytes,
		       const char *text)
{
	struct vram_hook_proto_msg m;
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_RESULT;
	m.u.result.request_id = cmd->u.command.request_id;
	m.u.result.op = cmd->type;
	m.u.result.status = status;
	m.u.result.state = state;
	m.u.result.bytes = bytes;
	snprintf(m.u.result.text, sizeof(m.u.result.text), "%s", text);
	send_msg(fd, &m);
}

/* Connects as a hook of "llm" that uses 128 MiB and has offloaded 64 MiB of it to pinned host memory. */
static int offloaded_hook(struct fixture *f)
{
	const uint64_t MiB = 1 << 20;
	int fd = dial(f);
	hello(fd, getpid(), "llm", 128 * MiB);
	usage_v3(fd, VRAM_HOOK_STATE_OFFLOADED, 128 * MiB, 64 * MiB, 64 * MiB, 0, 0);
	spin(f);
	return fd;
}

static uint64_t json_u64(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	assert_true(json_is_integer(v));
	return (uint64_t)json_integer_value(v);
}

/*
 * PARK reaches the hook with its path; the hook's USAGE before its RESULT
 * says where the memory went (parked, no pinned host memory), and the
 * status shows it with the state "parked" as soon as the result is in.
 * DROP_HOST frees the kept buffers. Bad paths are refused before anything
 * is sent.
 */
static void test_park_and_drop_host(void **state)
{
	struct fixture *f = *state;
	const uint64_t MiB = 1 << 20;
	int fd = offloaded_hook(f);
	uint64_t pinned = 1, kept = 1, parked = 1;
	assert_int_equal(vram_hookchan_host(f->hc, "llm", &pinned, &kept, &parked), 1);
	assert_int_equal(pinned, 64 * MiB);
	assert_int_equal(kept, 0);
	assert_int_equal(parked, 0);

	struct got g = {0};
	char path[300];
	/* refused before anything is sent: no path, a relative one, one too long, a path for another op */
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, NULL, on_done, &g, NULL),
			 -EINVAL);
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, on_done, &g, NULL), -EINVAL);
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, "park/x", on_done, &g, NULL),
			 -EINVAL);
	memset(path, 'p', sizeof(path));
	path[0] = '/';
	path[VRAM_HOOKCHAN_PATH_MAX] = '\0';
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, path, on_done, &g, NULL),
			 -EINVAL);
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_RESTORE, 0, "/p", on_done, &g, NULL),
			 -EINVAL);
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), (enum vram_hookchan_op)9, 0, NULL, on_done, &g,
						 NULL), -EINVAL);
	/* the longest path that fits goes through whole */
	path[VRAM_HOOKCHAN_PATH_MAX - 1] = '\0';
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, path, on_done, &g, NULL), 0);
	struct vram_hook_proto_msg cmd;
	recv_msg(fd, &cmd);
	assert_int_equal(cmd.version, VRAM_HOOK_PROTO_VERSION);
	assert_int_equal(cmd.type, VRAM_HOOK_MSG_PARK);
	assert_string_equal(cmd.u.command.path, path);
	/* a full disk: refused, the process stays offloaded in host memory */
	result_msg(fd, &cmd, -ENOSPC, VRAM_HOOK_STATE_OFFLOADED, 0,
		   "Failed to park: no space on /park: wrote 1048576 of 67108864 bytes");
	spin(f);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.res.status, -ENOSPC);
	assert_string_equal(g.res.text, "Failed to park: no space on /park: wrote 1048576 of 67108864 bytes");
	vram_hookchan_host(f->hc, "llm", &pinned, &kept, &parked);
	assert_int_equal(pinned, 64 * MiB);
	assert_int_equal(parked, 0);

	const char *file = "/var/lib/vramd/park/llm-1.park";
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, file, on_done, &g, NULL), 0);
	recv_msg(fd, &cmd);
	assert_string_equal(cmd.u.command.path, file);
	usage_v3(fd, VRAM_HOOK_STATE_PARKED, 128 * MiB, 64 * MiB, 0, 0, 64 * MiB);
	result_msg(fd, &cmd, 0, VRAM_HOOK_STATE_PARKED, 64 * MiB, "parked");
	spin(f);
	assert_int_equal(g.calls, 2);
	assert_int_equal(g.res.status, 0);
	assert_int_equal(g.res.bytes, 64 * MiB);
	struct vram_hookchan_proc_info info;
	assert_int_equal(vram_hookchan_proc(f->hc, getpid(), &info), 0);
	assert_int_equal(info.state, VRAM_HOOK_STATE_PARKED);
	assert_true(info.host_reported);
	assert_int_equal(info.version, VRAM_HOOK_PROTO_VERSION);
	assert_int_equal(info.parked, 64 * MiB);
	assert_int_equal(info.host_pinned, 0);
	assert_int_equal(info.resident, 64 * MiB); /* the USAGE said so: the result is not applied on top */
	json_t *j = vram_hookchan_workload_json(f->hc, "llm");
	json_t *p = json_array_get(j, 0);
	assert_string_equal(json_string_value(json_object_get(p, "state")), "parked");
	assert_int_equal(json_u64(p, "parked_bytes"), 64 * MiB);
	assert_int_equal(json_u64(p, "host_pinned_bytes"), 0);
	assert_int_equal(json_u64(p, "host_kept_bytes"), 0);
	json_decref(j);

	/* restored from the file, keeping the host buffers: the USAGE says so */
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_RESTORE, 0, on_done, &g, NULL), 0);
	recv_msg(fd, &cmd);
	assert_int_equal(cmd.type, VRAM_HOOK_MSG_RESTORE);
	usage_v3(fd, VRAM_HOOK_STATE_RUNNING, 128 * MiB, 128 * MiB, 64 * MiB, 64 * MiB, 0);
	result_msg(fd, &cmd, 0, VRAM_HOOK_STATE_RUNNING, 64 * MiB, "restored");
	spin(f);
	assert_int_equal(g.calls, 3);
	vram_hookchan_host(f->hc, "llm", &pinned, &kept, &parked);
	assert_int_equal(pinned, 64 * MiB);
	assert_int_equal(kept, 64 * MiB);
	assert_int_equal(parked, 0);
	assert_int_equal(vram_hookchan_proc(f->hc, getpid(), &info), 0);
	assert_int_equal(info.resident, 128 * MiB);

	/* DROP_HOST, answered without a USAGE first: the result's bytes apply at once */
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_DROP_HOST, 0, on_done, &g, NULL), 0);
	recv_msg(fd, &cmd);
	assert_int_equal(cmd.type, VRAM_HOOK_MSG_DROP_HOST);
	result_msg(fd, &cmd, 0, VRAM_HOOK_STATE_RUNNING, 64 * MiB, "dropped 67108864 bytes of host buffers");
	spin(f);
	assert_int_equal(g.calls, 4);
	assert_int_equal(g.res.bytes, 64 * MiB);
	vram_hookchan_host(f->hc, "llm", &pinned, &kept, &parked);
	assert_int_equal(pinned, 0);
	assert_int_equal(kept, 0);
	/* a process that went away mid-park fails the park with that */
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, file, on_done, &g, NULL), 0);
	close(fd);
	spin(f);
	assert_int_equal(g.calls, 5);
	assert_int_equal(g.res.status, -EPIPE);
	assert_string_equal(g.res.text, "the process went away during the park");
	/* other workloads and disconnected processes are not counted */
	assert_int_equal(vram_hookchan_host(f->hc, "llm", NULL, NULL, NULL), 0);
	assert_int_equal(vram_hookchan_host(f->hc, "other", NULL, NULL, NULL), 0);
}

/* A park result applies at once when no USAGE came with it. */
static void test_park_result_alone(void **state)
{
	struct fixture *f = *state;
	const uint64_t MiB = 1 << 20;
	int fd = offloaded_hook(f);
	struct seen s = { .hc = f->hc };
	assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, "/p/1", on_done_look, &s,
						 NULL), 0);
	struct vram_hook_proto_msg cmd;
	recv_msg(fd, &cmd);
	result_msg(fd, &cmd, 0, VRAM_HOOK_STATE_PARKED, 64 * MiB, "parked");
	spin(f);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.info.state, VRAM_HOOK_STATE_PARKED);
	assert_int_equal(s.info.parked, 64 * MiB);
	assert_int_equal(s.info.host_pinned, 0);
	command_and_result(f, fd, &s, VRAM_HOOKCHAN_RESTORE, 0, 64 * MiB, VRAM_HOOK_STATE_RUNNING);
	assert_int_equal(s.info.parked, 0);
	assert_int_equal(s.info.resident, 128 * MiB);
	close(fd);
	spin(f);
}

/*
 * A hook of protocol 3 sends its USAGE right before the RESULT: that USAGE
 * is the truth after the command, and the result is not applied on top of
 * it (an offload of 64 MiB out of 128 would otherwise show 0 resident).
 */
static void test_usage_before_result_is_not_applied_twice(void **state)
{
	struct fixture *f = *state;
	const uint64_t MiB = 1 << 20;
	int fd = dial(f);
	hello(fd, getpid(), "llm", 128 * MiB);
	usage_v3(fd, VRAM_HOOK_STATE_RUNNING, 128 * MiB, 128 * MiB, 0, 0, 0);
	spin(f);
	struct seen s = { .hc = f->hc };
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_OFFLOAD, 0, on_done_look, &s, NULL), 0);
	struct vram_hook_proto_msg cmd;
	recv_msg(fd, &cmd);
	usage_v3(fd, VRAM_HOOK_STATE_OFFLOADED, 128 * MiB, 64 * MiB, 64 * MiB, 0, 0);
	result_msg(fd, &cmd, 0, VRAM_HOOK_STATE_OFFLOADED, 64 * MiB, "offloaded");
	spin(f);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.info.resident, 64 * MiB);
	assert_int_equal(s.info.host_pinned, 64 * MiB);
	/* a DROP_HOST whose USAGE says 16 MiB are still pinned: not taken down to 0 by the result */
	command_and_result(f, fd, &s, VRAM_HOOKCHAN_RESTORE, 0, 64 * MiB, VRAM_HOOK_STATE_RUNNING);
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_DROP_HOST, 0, on_done_look, &s, NULL), 0);
	recv_msg(fd, &cmd);
	usage_v3(fd, VRAM_HOOK_STATE_RUNNING, 128 * MiB, 128 * MiB, 16 * MiB, 16 * MiB, 0);
	result_msg(fd, &cmd, 0, VRAM_HOOK_STATE_RUNNING, 48 * MiB, "dropped");
	spin(f);
	assert_int_equal(s.calls, 3);
	assert_int_equal(s.info.host_pinned, 16 * MiB);
	assert_int_equal(s.info.host_kept, 16 * MiB);
	close(fd);
	spin(f);
}

/* Hooks of protocol 1 and 2 know neither PARK nor DROP_HOST, nor report host memory: unknown, not 0. */
static void test_old_hook_no_disk_tier(void **state)
{
	struct fixture *f = *state;
	for (uint16_t version = 1; version <= 2; version++) {
		int fd = dial(f);
		struct vram_hook_proto_msg m;
		hello_msg(&m, getpid(), "old", 1 << 30);
		m.version = version;
		send_msg(fd, &m);
		memset(&m, 0, sizeof(m));
		m.version = version;
		m.type = VRAM_HOOK_MSG_USAGE;
		m.u.usage.state = VRAM_HOOK_STATE_OFFLOADED;
		m.u.usage.ndev = 1;
		send_msg(fd, &m);
		spin(f);
		struct got g = {0};
		assert_int_equal(vram_hookchan_send_path(f->hc, getpid(), VRAM_HOOKCHAN_PARK, 0, "/p/old", on_done, &g,
							 NULL), -EOPNOTSUPP);
		assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_DROP_HOST, 0, on_done, &g, NULL),
				 -EOPNOTSUPP);
		assert_int_equal(g.calls, 0);
		struct vram_hookchan_proc_info info;
		assert_int_equal(vram_hookchan_proc(f->hc, getpid(), &info), 0);
		assert_false(info.host_reported);
		assert_int_equal(info.version, version);
		assert_int_equal(vram_hookchan_host(f->hc, "old", NULL, NULL, NULL), 0);
		json_t *j = vram_hookchan_workload_json(f->hc, "old");
		json_t *p = json_array_get(j, 0);
		assert_true(json_is_null(json_object_get(p, "host_pinned_bytes")));
		assert_true(json_is_null(json_object_get(p, "host_kept_bytes")));
		assert_true(json_is_null(json_object_get(p, "parked_bytes")));
		json_decref(j);
		/* it still offloads and restores, answered in its version */
		assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_RESTORE, 0, on_done, &g, NULL), 0);
		struct vram_hook_proto_msg cmd;
		recv_msg(fd, &cmd);
		assert_int_equal(cmd.version, version);
		close(fd);
		spin(f);
		assert_int_equal(g.calls, 1); /* it went away */
	}
}

struct progress_seen {
	int calls;
	uint64_t freed0;
};

static void on_progress(const uint64_t freed[VRAM_HOOKCHAN_MAX_DEVICES], void *arg)
{
	struct progress_seen *p = arg;
	p->calls++;
	p->freed0 = freed[0];
}

/* Overlapped swaps: an offload's PROGRESS reaches its callback, a granted
 * restore gets its GRANTs and a cancel; a version-3 hook gets neither flag. */
static void test_progress_and_grant(void **state)
{
	struct fixture *f = *state;
	int fd = dial(f);
	hello(fd, getpid(), "llm", 3ull << 30);
	spin(f);
	assert_true(vram_hookchan_can_swap(f->hc, getpid()));
	struct got g = {0};
	struct vram_hookchan_req *req = NULL;
	/* the flags belong to their own commands */
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_RESTORE, VRAM_HOOKCHAN_PROGRESS, on_done,
					    &g, NULL), -EINVAL);
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_OFFLOAD, VRAM_HOOKCHAN_GRANTED, on_done,
					    &g, NULL), -EINVAL);
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_OFFLOAD, VRAM_HOOKCHAN_PROGRESS, on_done,
					    &g, &req), 0);
	struct progress_seen ps = {0};
	vram_hookchan_on_progress(req, on_progress, &ps);
	assert_int_equal(vram_hookchan_grant(req, NULL, false), -EALREADY); /* not a granted restore */
	struct vram_hook_proto_msg cmd, m;
	recv_msg(fd, &cmd);
	assert_int_equal(cmd.u.command.flags, VRAM_HOOK_OFFLOAD_PROGRESS);
	memset(&m, 0, sizeof(m));
	m.type = VRAM_HOOK_MSG_PROGRESS;
	m.u.grant.request_id = cmd.u.command.request_id;
	m.u.grant.bytes[0] = 256 << 20;
	send_msg(fd, &m);
	m.u.grant.request_id = cmd.u.command.request_id + 7; /* another request's: dropped */
	m.u.grant.bytes[0] = 1;
	send_msg(fd, &m);
	spin(f);
	assert_int_equal(ps.calls, 1);
	assert_int_equal(ps.freed0, 256 << 20);
	result_msg(fd, &cmd, 0, VRAM_HOOK_STATE_OFFLOADED, 512 << 20, "");
	spin(f);
	assert_int_equal(g.calls, 1);

	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_RESTORE, VRAM_HOOKCHAN_GRANTED, on_done,
					    &g, &req), 0);
	recv_msg(fd, &cmd);
	assert_int_equal(cmd.type, VRAM_HOOK_MSG_RESTORE);
	assert_int_equal(cmd.u.command.flags, VRAM_HOOK_RESTORE_GRANTED);
	uint64_t grant[VRAM_HOOKCHAN_MAX_DEVICES] = { 128 << 20 };
	assert_int_equal(vram_hookchan_grant(req, grant, false), 0);
	recv_msg(fd, &m);
	assert_int_equal(m.type, VRAM_HOOK_MSG_GRANT);
	assert_int_equal(m.u.grant.request_id, cmd.u.command.request_id);
	assert_int_equal(m.u.grant.flags, 0);
	assert_int_equal(m.u.grant.bytes[0], 128 << 20);
	assert_int_equal(vram_hookchan_grant(req, grant, true), 0);
	recv_msg(fd, &m);
	assert_int_equal(m.u.grant.flags, VRAM_HOOK_GRANT_CANCEL);
	result_msg(fd, &cmd, -ECANCELED, VRAM_HOOK_STATE_OFFLOADED, 0, "cancelled");
	spin(f);
	assert_int_equal(g.calls, 2);
	assert_int_equal(g.res.status, -ECANCELED);
	close(fd);
	spin(f);

	/* a version-3 hook */
	fd = dial(f);
	hello_msg(&m, getpid(), "old", 1 << 30);
	m.version = 3;
	send_msg(fd, &m);
	spin(f);
	assert_false(vram_hookchan_can_swap(f->hc, getpid()));
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_OFFLOAD, VRAM_HOOKCHAN_PROGRESS, on_done,
					    &g, NULL), -EOPNOTSUPP);
	assert_int_equal(vram_hookchan_send(f->hc, getpid(), VRAM_HOOKCHAN_RESTORE, VRAM_HOOKCHAN_GRANTED, on_done,
					    &g, NULL), -EOPNOTSUPP);
	close(fd);
	spin(f);
}

static void test_state_names(void **state)
{
	(void)state;
	assert_string_equal(vram_hookchan_state_name(VRAM_HOOK_STATE_RUNNING), "running");
	assert_string_equal(vram_hookchan_state_name(VRAM_HOOK_STATE_RESTORING), "restoring");
	assert_string_equal(vram_hookchan_state_name(VRAM_HOOK_STATE_PARKING), "parking");
	assert_string_equal(vram_hookchan_state_name(VRAM_HOOK_STATE_PARKED), "parked");
	/* not "running" (what the old table's mask made of 4): a state it does not know */
	assert_string_equal(vram_hookchan_state_name(6), "unknown");
	assert_string_equal(vram_hookchan_state_name(~0u), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_register_usage_and_command, setup, teardown),
		cmocka_unit_test_setup_teardown(test_result_moves_resident_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gone_mid_offload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_several_processes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_workload_name_not_utf8, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limit_invalid_warning, setup, teardown),
		cmocka_unit_test_setup_teardown(test_version_1_hook, setup, teardown),
		cmocka_unit_test_setup_teardown(test_external_process, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_socket_other_users, setup, teardown),
		cmocka_unit_test_setup_teardown(test_park_and_drop_host, setup, teardown),
		cmocka_unit_test_setup_teardown(test_park_result_alone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_usage_before_result_is_not_applied_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_old_hook_no_disk_tier, setup, teardown),
		cmocka_unit_test_setup_teardown(test_progress_and_grant, setup, teardown),
		cmocka_unit_test(test_state_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
