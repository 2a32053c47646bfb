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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format_parse_round_trip),
		cmocka_unit_test(test_parse_refuses_what_is_not_exact),
		cmocka_unit_test(test_check_fd),
		cmocka_unit_test(test_inherit_takes_the_variable_out_and_checks),
		cmocka_unit_test(test_inherit_bad_variable_closes_listeners_only),
		cmocka_unit_test(test_self_exe),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
