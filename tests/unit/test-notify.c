/* SPDX-License-Identifier: MIT */
/*
 * The NOTIFY_SOCKET protocol: what a service manager bound on the socket
 * receives (path and abstract addresses), the messages of each step, a
 * STATUS that cannot add a line, and nothing sent without NOTIFY_SOCKET.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/notify.h"

/* A datagram socket bound at name (path, or '@' abstract); returns the fd. */
static int bind_manager(const char *name)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = strlen(name);
	memcpy(sa.sun_path, name, len);
	socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
	if (name[0] == '@')
		sa.sun_path[0] = '\0';
	else
		sl++;
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sl), 0);
	return fd;
}

/* The next datagram, NUL-terminated, in buf (size bytes); does not block. */
static ssize_t receive(int fd, char *buf, size_t size)
{
	ssize_t n = recv(fd, buf, size - 1, MSG_DONTWAIT);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

static void test_ready_to_path(void **state)
{
	char dir[] = "/tmp/vram-test-notify-XXXXXX", path[128], buf[2048];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/notify", dir);
	int fd = bind_manager(path);
	setenv("NOTIFY_SOCKET", path, 1);
	assert_int_equal(vram_notify(VRAM_NOTIFY_READY, "Ready with %d workloads", 3), 1);
	assert_true(receive(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "READY=1\nSTATUS=Ready with 3 workloads\n");
	/* the variable stays: a restart in place must find it */
	assert_string_equal(getenv("NOTIFY_SOCKET"), path);
	close(fd);
	unlink(path);
	rmdir(dir);
	unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_socket(void **state)
{
	char name[64], buf[2048];
	snprintf(name, sizeof(name), "@vram-test-notify-%ld", (long)getpid());
	int fd = bind_manager(name);
	setenv("NOTIFY_SOCKET", name, 1);
	assert_int_equal(vram_notify(VRAM_NOTIFY_STOPPING, "Stopping"), 1);
	assert_true(receive(fd, buf, sizeof(buf)) > 0);
	assert_string_equal(buf, "STOPPING=1\nSTATUS=Stopping\n");
	/* RELOADING carries the monotonic clock systemd >= 253 checks */
	assert_int_equal(vram_notify(VRAM_NOTIFY_RELOADING, NULL), 1);
	assert_true(receive(fd, buf, sizeof(buf)) > 0);
	unsigned long long usec = 0;
	assert_int_equal(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%llu\n", &usec), 1);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	unsigned long long now = (unsigned long long)ts.tv_sec * 1000000ull + ts.tv_nsec / 1000;
	assert_true(usec > 0 && usec <= now && now - usec < 5000000ull);
	close(fd);
	unsetenv("NOTIFY_SOCKET");
}

static void test_no_socket_sends_nothing(void **state)
{
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(vram_notify(VRAM_NOTIFY_READY, "x"), 0);
	setenv("NOTIFY_SOCKET", "", 1);
	assert_int_equal(vram_notify_send("READY=1\n"), 0);
	setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
	assert_int_equal(vram_notify_send("READY=1\n"), -EAFNOSUPPORT);
	char longname[200];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[0] = '/';
	longname[sizeof(longname) - 1] = '\0';
	setenv("NOTIFY_SOCKET", longname, 1);
	assert_int_equal(vram_notify_send("READY=1\n"), -ENAMETOOLONG);
	/* nobody bound there: the error comes back, nothing blocks */
	setenv("NOTIFY_SOCKET", "/nonexistent/vram-notify", 1);
	assert_true(vram_notify_send("READY=1\n") < 0);
	unsetenv("NOTIFY_SOCKET");
}

static void test_format(void **state)
{
	char buf[64];
	/* a newline in STATUS (a config path, say) cannot forge a READY line */
	assert_int_equal(vram_notify_format(buf, sizeof(buf), VRAM_NOTIFY_STATUS, 0, "a\nREADY=1"),
			 (int)strlen("STATUS=a READY=1\n"));
	assert_string_equal(buf, "STATUS=a READY=1\n");
	assert_int_equal(vram_notify_format(buf, sizeof(buf), VRAM_NOTIFY_RELOADING, 42, NULL),
			 (int)strlen("RELOADING=1\nMONOTONIC_USEC=42\n"));
	assert_string_equal(buf, "RELOADING=1\nMONOTONIC_USEC=42\n");
	/* too long: refused, never cut */
	char small[16];
	assert_int_equal(vram_notify_format(small, sizeof(small), VRAM_NOTIFY_READY, 0,
					    "a status longer than the buffer"), -ENOBUFS);
	assert_int_equal(vram_notify_format(small, 4, VRAM_NOTIFY_READY, 0, NULL), -ENOBUFS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ready_to_path),
		cmocka_unit_test(test_abstract_socket),
		cmocka_unit_test(test_no_socket_sends_nothing),
		cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
