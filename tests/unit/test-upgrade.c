/* SPDX-License-Identifier: MIT */
/*
 * Restart in place, the parts that need no daemon: the listeners' variable
 * written and read back (addresses with ',' and '%' too), every malformed
 * value refused with the entry named, each descriptor checked for what the
 * variable says it is (open, a socket, a stream, listening, the family,
 * the address), the variable taken out of the environment at once, the
 * listening sockets of a bad one closed and nothing else, and the
 * inherited listener found for the address the config asks for.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "common/clock.h"
#include "daemon/upgrade.h"

/* ---- helpers ---- */

/* A TCP socket on 127.0.0.1 (port 0: any), listening unless told not to; its port in *port. */
static int tcp_socket(bool listening, unsigned *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 3);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	if (listening)
		assert_int_equal(listen(fd, 8), 0);
	socklen_t sl = sizeof(sa);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static char sock_dir[64];

static int unix_listener(const char *name, char *path, size_t size)
{
	snprintf(path, size, "%s/%s", sock_dir, name);
	unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static int setup(void **state)
{
	(void)state;
	snprintf(sock_dir, sizeof(sock_dir), "/tmp/vram-upgrade-XXXXXX");
	return mkdtemp(sock_dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sock_dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- the variable ---- */

static void test_format_parse_round_trip(void **state)
{
	(void)state;
	struct vram_listen_fds l = { .restarts = 7, .n = 4 };
	l.fds[0] = (struct vram_listen_fd){ VRAM_LISTEN_TCP, 5, "127.0.0.1:8600" };
	l.fds[1] = (struct vram_listen_fd){ VRAM_LISTEN_TCP, 9, "[::1]:8600" };
	l.fds[2] = (struct vram_listen_fd){ VRAM_LISTEN_CONTROL, 6, "/run/a,b%c/vramd.sock" };
	l.fds[3] = (struct vram_listen_fd){ VRAM_LISTEN_API, 12, "/run/a,b%c/vramd.sock.api" };
	char buf[VRAM_UPGRADE_ENV_MAX];
	int n = vram_upgrade_format(&l, buf, sizeof(buf));
	assert_int_equal(n, (int)strlen(buf));
	assert_string_equal(buf, "restarts=7,tcp=5:127.0.0.1:8600,tcp=9:[::1]:8600,"
				 "control=6:/run/a%2Cb%25c/vramd.sock,api=12:/run/a%2Cb%25c/vramd.sock.api");
	struct vram_listen_fds back;
	char err[256];
	assert_int_equal(vram_upgrade_parse(buf, &back, err, sizeof(err)), 0);
	assert_int_equal(back.restarts, 7);
	assert_int_equal(back.n, 4);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(back.fds[i].role, l.fds[i].role);
		assert_int_equal(back.fds[i].fd, l.fds[i].fd);
		assert_string_equal(back.fds[i].addr, l.fds[i].addr);
	}
	/* too small a buffer is said, not cut */
	assert_int_equal(vram_upgrade_format(&l, buf, 40), -ENOSPC);
}

static void expect_refused(const char *value, const char *why)
{
	struct vram_listen_fds l;
	char err[512] = "";
	assert_int_equal(vram_upgrade_parse(value, &l, err, sizeof(err)), -EINVAL);
	if (!strstr(err, why))
		fail_msg("\"%s\": expected \"%s\" in \"%s\"", value, why, err);
}

static void test_parse_refuses_what_is_not_exact(void **state)
{
	(void)state;
	expect_refused("", "expected 1 to");
	expect_refused("tcp=5:127.0.0.1:1", "no restarts=N entry");
	expect_refused("restarts=1,restarts=2", "entry 2 (\"restarts=2\"): restarts given twice");
	expect_refused("restarts=x", "expected a count of restarts");
	expect_refused("restarts=99999999999", "expected a count of restarts");
	expect_refused("restarts=1,", "entry 2 (\"\"): expected restarts=N or ROLE=FD:ADDRESS");
	expect_refused("restarts=1,,tcp=5:1.2.3.4:5", "entry 2");
	expect_refused("restarts=1,udp=5:127.0.0.1:1", "unknown role, expected tcp, control or api");
	expect_refused("restarts=1,tcp=5", "expected FD:ADDRESS after tcp=");
	expect_refused("restarts=1,tcp=2:127.0.0.1:1", "expected a descriptor number of 3 or more");
	expect_refused("restarts=1,tcp=-5:127.0.0.1:1", "expected a descriptor number");
	expect_refused("restarts=1,tcp=+5:127.0.0.1:1", "expected a descriptor number");
	expect_refused("restarts=1,tcp=5:127.0.0.1:1,api=5:/x", "descriptor 5 is named twice");
	expect_refused("restarts=1,control=5:/a,control=6:/b", "a second control socket");
	expect_refused("restarts=1,api=5:/a,api=6:/b", "a second api socket");
	expect_refused("restarts=1,tcp=5:", "expected an address");
	expect_refused("restarts=1,control=5:/a%2", "expected an address");
	expect_refused("restarts=1,control=5:/a%zz", "expected an address");
	expect_refused("restarts=1,control=5:/a%0Ab", "expected an address"); /* a newline */
	expect_refused("restarts=1,control=5:/a%00b", "expected an address");
	char longpath[300];
	memset(longpath, 'x', sizeof(longpath));
	longpath[0] = '/';
	char value[400];
	snprintf(value, sizeof(value), "restarts=1,control=5:%.200s", longpath);
	expect_refused(value, "a socket path of more than 107 bytes");
	/* more listeners than are ever handed over */
	char many[1024] = "restarts=1";
	for (int i = 0; i <= VRAM_UPGRADE_FDS_MAX; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), ",tcp=%d:127.0.0.1:1",
			 10 + i);
	expect_refused(many, "more than 16 listeners");
}

/* ---- the descriptors ---- */

static void expect_fd(int fd, enum vram_listen_role role, const char *addr, int want,
			 const char *why)
{
	struct vram_listen_fd l = { .role = role, .fd = fd };
	snprintf(l.addr, sizeof(l.addr), "%s", addr);
	char err[512] = "";
	assert_int_equal(vram_upgrade_check_fd(&l, err, sizeof(err)), want);
	if (want && !strstr(err, why))
		fail_msg("expected \"%s\" in \"%s\"", why, err);
}

static void test_check_fd(void **state)
{
	(void)state;
	unsigned port, other;
	char addr[64], wrong[64], path[128], expected[256];
	int lfd = tcp_socket(true, &port);
	int quiet = tcp_socket(false, &other);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	snprintf(wrong, sizeof(wrong), "127.0.0.1:%u", port == 65535 ? 1 : port + 1);
	expect_fd(lfd, VRAM_LISTEN_TCP, addr, 0, NULL);
	snprintf(expected, sizeof(expected), "descriptor %d is bound to %s, not %s", lfd, addr, wrong);
	expect_fd(lfd, VRAM_LISTEN_TCP, wrong, -EADDRNOTAVAIL, expected);
	expect_fd(lfd, VRAM_LISTEN_TCP, "[::1]:1", -EADDRNOTAVAIL, "is bound to");
	expect_fd(lfd, VRAM_LISTEN_CONTROL, "/x", -EAFNOSUPPORT, "is an IPv4 socket, expected a Unix socket");
	expect_fd(quiet, VRAM_LISTEN_TCP, addr, -EINVAL, "a socket that is not listening");

	int ufd = unix_listener("ctl.sock", path, sizeof(path));
	expect_fd(ufd, VRAM_LISTEN_CONTROL, path, 0, NULL);
	expect_fd(ufd, VRAM_LISTEN_API, path, 0, NULL);
	expect_fd(ufd, VRAM_LISTEN_CONTROL, "/elsewhere.sock", -EADDRNOTAVAIL, "is bound to");
	expect_fd(ufd, VRAM_LISTEN_TCP, addr, -EAFNOSUPPORT,
		     "is a Unix socket, expected TCP (IPv4 or IPv6)");

	int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	expect_fd(udp, VRAM_LISTEN_TCP, addr, -EPROTOTYPE, "is not a stream socket");
	int file = open("/dev/null", O_RDONLY | O_CLOEXEC);
	expect_fd(file, VRAM_LISTEN_TCP, addr, -ENOTSOCK, "is a character device, not a socket");
	int closed = dup(file);
	close(closed);
	snprintf(expected, sizeof(expected), "descriptor %d is not open", closed);
	expect_fd(closed, VRAM_LISTEN_TCP, addr, -EBADF, expected);

	/* described as the variable carries it, and that description passes the check */
	struct vram_listen_fd d;
	assert_int_equal(vram_upgrade_describe_fd(lfd, VRAM_LISTEN_TCP, &d), 0);
	assert_string_equal(d.addr, addr);
	assert_int_equal(vram_upgrade_describe_fd(ufd, VRAM_LISTEN_CONTROL, &d), 0);
	assert_string_equal(d.addr, path);
	assert_int_equal(vram_upgrade_describe_fd(ufd, VRAM_LISTEN_TCP, &d), -EAFNOSUPPORT);

	close(lfd);
	close(quiet);
	close(ufd);
	close(udp);
	close(file);
}

/* ---- the new image's side ---- */

static void test_inherit_takes_the_variable_out_and_checks(void **state)
{
	(void)state;
	unsigned port;
	char path[128], value[512], err[512];
	struct vram_listen_fds l;
	int lfd = tcp_socket(true, &port);
	int ufd = unix_listener("c.sock", path, sizeof(path));
	/* the image before cleared close-on-exec; the new one sets it again */
	fcntl(lfd, F_SETFD, 0);
	snprintf(value, sizeof(value), "restarts=3,tcp=%d:127.0.0.1:%u,control=%d:%s", lfd, port, ufd,
		 path);
	setenv(VRAM_UPGRADE_ENV, value, 1);
	assert_int_equal(vram_upgrade_inherit(&l, err, sizeof(err)), 1);
	assert_null(getenv(VRAM_UPGRADE_ENV));
	assert_int_equal(l.restarts, 3);
	assert_int_equal(l.n, 2);
	assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);

	/* taken by the address the config names: a name, port 0, or the same path */
	assert_int_equal(vram_upgrade_take(&l, VRAM_LISTEN_CONTROL, "/other.sock"), -ENOENT);
	assert_int_equal(vram_upgrade_take(&l, VRAM_LISTEN_API, path), -ENOENT);
	assert_int_equal(vram_upgrade_take(&l, VRAM_LISTEN_CONTROL, path), ufd);
	char want[64];
	snprintf(want, sizeof(want), "127.0.0.1:%u", port == 65535 ? 1 : port + 1);
	assert_int_equal(vram_upgrade_take(&l, VRAM_LISTEN_TCP, want), -ENOENT);
	assert_int_equal(vram_upgrade_take(&l, VRAM_LISTEN_TCP, "[::1]:0"), -ENOENT);
	snprintf(want, sizeof(want), "localhost:%u", port);
	assert_int_equal(vram_upgrade_take(&l, VRAM_LISTEN_TCP, want), lfd);
	assert_int_equal(l.n, 0);
	l.fds[0] = (struct vram_listen_fd){ VRAM_LISTEN_TCP, lfd, "" };
	snprintf(l.fds[0].addr, sizeof(l.fds[0].addr), "127.0.0.1:%u", port);
	l.n = 1;
	assert_int_equal(vram_upgrade_take(&l, VRAM_LISTEN_TCP, "127.0.0.1:0"), lfd);

	/* unset: nothing inherited */
	assert_int_equal(vram_upgrade_inherit(&l, err, sizeof(err)), 0);
	assert_int_equal(l.n, 0);
	close(lfd);
	close(ufd);
}

static void test_inherit_bad_variable_closes_listeners_only(void **state)
{
	(void)state;
	unsigned port, other;
	char value[512], err[512];
	struct vram_listen_fds l;
	int lfd = tcp_socket(true, &port);
	int wrong = tcp_socket(true, &other);
	int file = open("/dev/null", O_RDONLY | O_CLOEXEC);

	/* a file where a socket should be: refused, the file left open, the listener closed */
	snprintf(value, sizeof(value), "restarts=1,tcp=%d:127.0.0.1:%u,control=%d:/x.sock", lfd, port,
		 file);
	setenv(VRAM_UPGRADE_ENV, value, 1);
	assert_int_equal(vram_upgrade_inherit(&l, err, sizeof(err)), -ENOTSOCK);
	assert_null(getenv(VRAM_UPGRADE_ENV));
	assert_int_equal(l.n, 0);
	assert_non_null(strstr(err, "VRAMD_LISTEN_FDS: the control listener /x.sock: descriptor"));
	assert_non_null(strstr(err, "is a character device, not a socket"));
	assert_true(fd_open(file));
	assert_false(fd_open(lfd));

	/* a listener on another address: closed, so that the address it holds is free */
	snprintf(value, sizeof(value), "restarts=1,tcp=%d:127.0.0.1:%u", wrong,
		 other == 65535 ? 1 : other + 1);
	setenv(VRAM_UPGRADE_ENV, value, 1);
	assert_int_equal(vram_upgrade_inherit(&l, err, sizeof(err)), -EADDRNOTAVAIL);
	assert_non_null(strstr(err, "is bound to 127.0.0.1:"));
	assert_false(fd_open(wrong));

	/* one that does not parse: the listening sockets it names still go */
	lfd = tcp_socket(true, &port);
	snprintf(value, sizeof(value), "tcp=%d:127.0.0.1:%u,control=%d:/x", lfd, port, file);
	setenv(VRAM_UPGRADE_ENV, value, 1);
	assert_int_equal(vram_upgrade_inherit(&l, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "no restarts=N entry"));
	assert_false(fd_open(lfd));
	assert_true(fd_open(file));

	/* a closed descriptor */
	snprintf(value, sizeof(value), "restarts=1,tcp=%d:127.0.0.1:1", file + 100);
	setenv(VRAM_UPGRADE_ENV, value, 1);
	assert_int_equal(vram_upgrade_inherit(&l, err, sizeof(err)), -EBADF);
	assert_non_null(strstr(err, "is not open"));
	close(file);
}

static void test_self_exe(void **state)
{
	(void)state;
	char buf[4096], small[4];
	assert_int_equal(vram_upgrade_self_exe(buf, sizeof(buf)), 0);
	assert_true(buf[0] == '/');
	assert_non_null(strstr(buf, "test-upgrade"));
	assert_int_equal(vram_upgrade_self_exe(small, sizeof(small)), -ENAMETOOLONG);
}


/* ---- the sequence, with a host of the test's own ---- */

struct fake_host {
	unsigned begun, cut, ended, prepared;
	size_t left;      /* what drain_left answers */
	int prepare_r;    /* what prepare_exec returns */
	unsigned answers;
	int result;
	char message[4096];
};

static void f_drain_begin(void *a) { ((struct fake_host *)a)->begun++; }
static size_t f_drain_left(void *a, uint64_t grace) { (void)grace; return ((struct fake_host *)a)->left; }
static void f_drain_cut(void *a) { ((struct fake_host *)a)->cut++; }
static void f_drain_end(void *a) { ((struct fake_host *)a)->ended++; }

static int f_prepare_exec(void *a, char *err, size_t size)
{
	struct fake_host *h = a;
	h->prepared++;
	snprintf(err, size, "the disk is full");
	return h->prepare_r;
}

static int f_listeners(void *a, struct vram_listen_fds *ret)
{
	(void)a;
	ret->n = 0;
	return 0;
}

static void f_answer(int result, const char *message, void *arg)
{
	struct fake_host *h = arg;
	h->answers++;
	h->result = result;
	snprintf(h->message, sizeof(h->message), "%s", message ? message : "");
}

/* A "binary" at sock_dir/name: a shell script with body. */
static void script(const char *name, const char *body, char *path, size_t size)
{
	snprintf(path, size, "%s/%s", sock_dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "#!/bin/sh\n%s", body);
	fclose(f);
	chmod(path, 0755);
}

static struct vram_upgrade *new_upgrade(struct event_base *base, const char *exe,
					struct fake_host *h)
{
	static char *const argv[] = { "vramd", "--config", "c.yaml", NULL };
	struct vram_upgrade_options opt = { .exe = exe, .argv = argv, .config = "c.yaml",
					    .listen = "127.0.0.1:1", .gpus = "1x8GiB",
					    .state_dir = "/tmp/s", .restarts = 4 };
	struct vram_upgrade_host host = { .arg = h, .drain_begin = f_drain_begin,
					  .drain_left = f_drain_left, .drain_cut = f_drain_cut,
					  .drain_end = f_drain_end, .prepare_exec = f_prepare_exec,
					  .listeners = f_listeners };
	struct vram_upgrade *up;
	assert_int_equal(vram_upgrade_new(base, &opt, &host, &up), 0);
	return up;
}

/* Runs the loop until the restart is no longer under way (or 15 s). */
static void run_idle(struct event_base *base, struct vram_upgrade *up)
{
	uint64_t end = vram_now_ms() + 15000;
	for (;;) {
		json_t *st = vram_upgrade_status_json(up, true);
		bool busy = json_is_true(json_object_get(st, "restarting"));
		json_decref(st);
		if (!busy)
			return;
		assert_true(vram_now_ms() < end);
		event_base_loop(base, EVLOOP_ONCE);
	}
}

static const char *last_error(struct vram_upgrade *up, char *buf, size_t size)
{
	json_t *st = vram_upgrade_status_json(up, true);
	assert_true(json_is_true(json_object_get(st, "failed")));
	assert_int_equal(json_integer_value(json_object_get(st, "restarts")), 4);
	snprintf(buf, size, "%s", json_string_value(json_object_get(st, "last_error")));
	json_decref(st);
	return buf;
}

static void test_failed_check_is_answered_with_its_output(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct fake_host h = { 0 };
	char exe[256], err[256], buf[4096];
	script("bad-config", "echo \"args: $*\"; echo 'c.yaml:3:1: bogus: unknown key' >&2; exit 1\n",
	       exe, sizeof(exe));
	struct vram_upgrade *up = new_upgrade(base, exe, &h);
	assert_int_equal(vram_upgrade_start(up, "the test", 1000, f_answer, &h, err, sizeof(err)), 0);
	assert_int_equal(h.answers, 0); /* never from inside start */
	assert_int_equal(vram_upgrade_start(up, "again", 1000, f_answer, &h, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "a restart in place asked by the test is under way (check)"));
	run_idle(base, up);
	assert_int_equal(h.answers, 1);
	assert_int_equal(h.result, -EINVAL);
	assert_non_null(strstr(h.message, "--check-config c.yaml failed (exit status 1): "));
	assert_non_null(strstr(h.message, "args: --check-config c.yaml --listen 127.0.0.1:1 --gpus "
				       "1x8GiB --state-dir /tmp/s"));
	assert_non_null(strstr(h.message, "c.yaml:3:1: bogus: unknown key"));
	assert_int_equal(h.begun, 0);
	assert_int_equal(h.prepared, 0);
	assert_non_null(strstr(last_error(up, buf, sizeof(buf)), "c.yaml:3:1: bogus: unknown key"));

	/* a binary whose check passes but says nothing of the hand-over: too old */
	script("old-vramd", "echo \"ok: $2\"\n", exe, sizeof(exe));
	vram_upgrade_free(up);
	up = new_upgrade(base, exe, &h);
	assert_int_equal(vram_upgrade_start(up, "the test", 1000, f_answer, &h, err, sizeof(err)), 0);
	run_idle(base, up);
	assert_int_equal(h.result, -EINVAL);
	assert_non_null(strstr(h.message, "takes no listening sockets over"));
	assert_int_equal(h.begun, 0);

	/* one that cannot be run at all: said at once */
	chmod(exe, 0644);
	assert_int_equal(vram_upgrade_start(up, "the test", 1000, f_answer, &h, err, sizeof(err)),
			 -EACCES);
	assert_non_null(strstr(err, "Permission denied"));
	vram_upgrade_free(up);
	event_base_free(base);
}

static const char good_check[] = "echo \"ok: $2\"; echo \"" VRAM_UPGRADE_CHECK_NOTE "9.9\"\n";

static void test_manager_refusal_resumes(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct fake_host h = { .prepare_r = -EIO };
	char exe[256], err[256], buf[4096];
	script("good", good_check, exe, sizeof(exe));
	struct vram_upgrade *up = new_upgrade(base, exe, &h);
	assert_int_equal(vram_upgrade_start(up, "the test", 1000, f_answer, &h, err, sizeof(err)), 0);
	run_idle(base, up);
	/* answered when the drain began, then called off: accepting again */
	assert_int_equal(h.answers, 1);
	assert_int_equal(h.result, 0);
	assert_int_equal(h.begun, 1);
	assert_int_equal(h.prepared, 1);
	assert_int_equal(h.cut, 0);
	assert_int_equal(h.ended, 1);
	assert_string_equal(last_error(up, buf, sizeof(buf)),
			    "the manager could not write its state: the disk is full");
	vram_upgrade_free(up);
	event_base_free(base);
}

static void test_drain_cut_when_its_time_is_up(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct fake_host h = { .prepare_r = -EIO, .left = 3 };
	char exe[256], err[256];
	script("good", good_check, exe, sizeof(exe));
	struct vram_upgrade *up = new_upgrade(base, exe, &h);
	assert_int_equal(vram_upgrade_start(up, "the test", 100, NULL, NULL, err, sizeof(err)), 0);
	uint64_t t0 = vram_now_ms();
	run_idle(base, up);
	uint64_t took = vram_now_ms() - t0;
	/* the drain's 100 ms, then the flush's, then the exec (refused here) */
	assert_true(took >= 100 + VRAM_UPGRADE_CUT_FLUSH_MS);
	assert_true(took < 5000);
	assert_int_equal(h.cut, 1);
	assert_int_equal(h.prepared, 1);
	assert_int_equal(h.ended, 1);
	vram_upgrade_free(up);
	event_base_free(base);
}

static void test_stop_during_the_check(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct fake_host h = { 0 };
	char exe[256], err[256], pidfile[300], cmd[400];
	snprintf(pidfile, sizeof(pidfile), "%s/check.pid", sock_dir);
	snprintf(cmd, sizeof(cmd), "echo $$ > %s; exec sleep 30\n", pidfile);
	script("slow", cmd, exe, sizeof(exe));
	struct vram_upgrade *up = new_upgrade(base, exe, &h);
	assert_int_equal(vram_upgrade_start(up, "the test", 1000, f_answer, &h, err, sizeof(err)), 0);
	long pid = 0;
	for (int i = 0; i < 500 && pid <= 0; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		FILE *f = fopen(pidfile, "r");
		if (f) {
			if (fscanf(f, "%ld", &pid) != 1)
				pid = 0;
			fclose(f);
		}
		usleep(10000);
	}
	assert_true(pid > 0);
	uint64_t t0 = vram_now_ms();
	vram_upgrade_free(up);
	assert_true(vram_now_ms() - t0 < 1000);
	assert_int_equal(h.answers, 1);
	assert_int_equal(h.result, -ECANCELED);
	/* the binary went with it (its parent's group was killed) */
	for (int i = 0; i < 200 && kill((pid_t)pid, 0) == 0; i++)
		usleep(10000);
	assert_int_equal(kill((pid_t)pid, 0), -1);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_parse_round_trip),
		cmocka_unit_test(test_parse_refuses_what_is_not_exact),
		cmocka_unit_test(test_check_fd),
		cmocka_unit_test(test_inherit_takes_the_variable_out_and_checks),
		cmocka_unit_test(test_inherit_bad_variable_closes_listeners_only),
		cmocka_unit_test(test_self_exe),
		cmocka_unit_test(test_failed_check_is_answered_with_its_output),
		cmocka_unit_test(test_manager_refusal_resumes),
		cmocka_unit_test(test_drain_cut_when_its_time_is_up),
		cmocka_unit_test(test_stop_during_the_check),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
